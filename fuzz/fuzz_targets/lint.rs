//! Fuzzes the polc front end: bytes -> `decode_text` -> YAML -> raw objects -> validation.
//!
//! Besides panics, hangs and runaway memory (which libFuzzer catches by itself), it checks
//! one invariant the renderer relies on: every diagnostic's span (and every related span)
//! lies inside the file's text and starts and ends on UTF-8 character boundaries.

#![no_main]

use libfuzzer_sys::fuzz_target;
use polc_compiler::diag::Diagnostic;
use polc_compiler::source::{Loc, SourceFile, SourceMap};
use polc_compiler::{CiliumVersion, Options};

fn check_loc(text: &str, loc: Loc, what: &str, d: &Diagnostic) {
    let (start, end) = (loc.start as usize, loc.end as usize);
    assert!(
        loc.file.0 == 0,
        "{what} of {} points at file {:?}, but there is only one file",
        d.code.as_str(),
        loc.file
    );
    assert!(
        start <= end && end <= text.len(),
        "{what} {start}..{end} of {} lies outside the text (len {}): {:?}",
        d.code.as_str(),
        text.len(),
        d.message
    );
    assert!(
        text.is_char_boundary(start) && text.is_char_boundary(end),
        "{what} {start}..{end} of {} splits a character: {:?}",
        d.code.as_str(),
        d.message
    );
}

fn check_all<'a>(text: &str, diags: impl IntoIterator<Item = &'a Diagnostic>) {
    for d in diags {
        check_loc(text, d.loc, "loc", d);
        for r in &d.related {
            check_loc(text, r.loc, "related loc", d);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = match polc_compiler::decode_text(data.to_vec()) {
        Ok(text) => text,
        Err(d) => {
            // The decode error is anchored at the start of the (empty) placeholder file.
            check_all("", [&d]);
            return;
        }
    };
    let mut map = SourceMap::new();
    map.add(SourceFile::new("f.yaml", text.clone()));
    let opts = Options::default();
    let (objects, diags) = polc_compiler::lint(&map, &opts);
    check_all(&text, diags.iter());

    // The rules that differ between releases: validate the same objects for the others too.
    for &version in CiliumVersion::ALL {
        if version == opts.version {
            continue;
        }
        let opts = Options { version, ..opts };
        let diags = polc_compiler::validate::check(&objects, &opts);
        check_all(&text, diags.iter());
    }
});
