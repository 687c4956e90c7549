//! One insta snapshot of the rendered (human) diagnostics per fixture under
//! `policies/invalid/<CODE>/`, so every code's rendering is reviewed when it changes.

mod common;

use common::*;
use polc_cli::render::{self, Summary};

#[test]
fn rendered_diagnostics_per_code() {
    let root = root();
    let mut n = 0;
    for path in files_under(&root.join("policies/invalid")) {
        let (rel, code) = fixture(&path);
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let args = fixture_args(&String::from_utf8_lossy(&bytes));
        let (sources, mut diags) = lint_text(&rel, bytes, args);
        diags.sort_by_key(|d| (d.loc.file, d.loc.start, d.code));
        let summary = Summary::new(1, &[], &diags);
        let out = render::human(&sources, &diags, &summary, false);
        insta::assert_snapshot!(format!("{code}-{stem}"), out);
        n += 1;
    }
    assert!(n > 0);
}
