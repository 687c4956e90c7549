//! The polc front end: policy YAML to located raw types, validated the way the API server and
//! the Cilium agent validate them.
//!
//! ```text
//! bytes --source--> SourceFile --yaml--> Node tree --raw--> Object --validate--> Diagnostics
//! ```
//!
//! **This crate does no IO**: callers hand it file contents and get values back.

pub mod compile;
pub mod connectivity;
pub mod diag;
pub mod eval;
pub mod flows;
/// The benchmark and test generator: a synthetic cluster (inventory and policies) at a given
/// scale, as YAML text. (`gen` is a reserved word in Rust 2024, hence `r#gen`.)
pub mod r#gen;
pub mod identity;
pub mod inventory;
pub mod ir;
pub mod labels;
pub mod lower;
pub mod mapstate;
pub mod model;
pub mod raw;
pub mod source;
pub mod validate;
pub mod version;
pub mod yaml;

use diag::{Code, Diagnostic, Diagnostics};
use raw::Object;
use source::{FileId, Loc, SourceFile, SourceMap};
pub use version::CiliumVersion;

/// Settings for reading and checking.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// The Cilium release whose rules apply.
    pub version: CiliumVersion,
    /// Bounds on the work done per input.
    pub limits: yaml::Limits,
}

/// Turns raw file bytes into text, or explains why they are not UTF-8 text.
pub fn decode_text(bytes: Vec<u8>) -> Result<String, Diagnostic> {
    let binary_at = bytes.iter().position(|&b| b == 0);
    match String::from_utf8(bytes) {
        Ok(text) if binary_at.is_none() => {
            // A byte-order mark is allowed by YAML; drop it so columns on line 1 are right.
            Ok(match text.strip_prefix('\u{feff}') {
                Some(t) => t.to_string(),
                None => text,
            })
        }
        Ok(_) => Err(not_text(
            binary_at.unwrap_or(0),
            "the file contains NUL bytes: it looks like a binary file",
        )),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            Err(not_text(
                at,
                &format!("the file is not valid UTF-8 (line {line}, byte {at})"),
            ))
        }
    }
}

fn not_text(at: usize, message: &str) -> Diagnostic {
    Diagnostic::new(
        Code::NotUtf8,
        Loc::new(FileId(0), 0, 0),
        message.to_string(),
    )
    .label(format!("first bad byte at offset {at}"))
    .help("Kubernetes manifests are UTF-8 text; re-encode the file or leave it out")
}

/// Reads every object of one file. Documents that fail to parse are reported and skipped;
/// the others are returned.
pub fn read_file(id: FileId, file: &SourceFile, opts: &Options) -> (Vec<Object>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let docs = yaml::parse_stream(id, file, opts.limits, &mut diags);
    if docs.iter().all(|d| d.root.is_null()) && diags.is_empty() {
        diags.push(
            Diagnostic::new(
                Code::EmptyInput,
                Loc::new(id, 0, 0),
                "the file contains no YAML documents",
            )
            .label("empty")
            .help("remove the file from the paths given to polc, or add a policy"),
        );
    }
    let mut objects = Vec::new();
    for doc in &docs {
        objects.extend(raw::read_document(&doc.root, &mut diags));
    }
    (objects, diags)
}

/// Reads and checks every file of `sources`: parse errors, schema and agent validation, and
/// lint warnings, sorted by position.
pub fn lint(sources: &SourceMap, opts: &Options) -> (Vec<Object>, Diagnostics) {
    let mut objects = Vec::new();
    let mut diags = Diagnostics::new();
    for (id, file) in sources.files().filter(|(_, f)| f.readable) {
        let (objs, d) = read_file(id, file, opts);
        objects.extend(objs);
        for d in d {
            diags.push(d);
        }
    }
    diags.extend(validate::check(&objects, opts));
    // What only shows when the objects are put together: dangling CIDR groups, duplicate
    // inventory objects.
    let (_, lowered) = lower::lower(&objects, opts.version);
    let (_, inventory) = inventory::Inventory::from_objects(&objects, "default");
    for d in lowered.into_iter().chain(inventory) {
        diags.push(d);
    }
    diags.sort();
    (objects, diags)
}
