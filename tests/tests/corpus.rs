//! Corpus tests: every policy under `policies/` outside `invalid/` lints without errors, and
//! every fixture under `policies/invalid/<CODE>/` yields `<CODE>` at the lines it marks and
//! no other error.

mod common;

use common::*;
use polc_compiler::diag::{Code, Severity};
use std::collections::BTreeSet;

#[test]
fn valid_policies_lint_without_errors() {
    let root = root();
    let mut checked = 0;
    for path in files_under(&root.join("policies")) {
        let rel = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.starts_with("policies/invalid/")
            || !(rel.ends_with(".yaml") || rel.ends_with(".yml") || rel.ends_with(".json"))
        {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let (_, diags) = lint_text(&rel, bytes, FixtureArgs::default());
        let errors: Vec<_> = diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| format!("{} {}", d.code, d.message))
            .collect();
        assert!(errors.is_empty(), "{rel}: {errors:#?}");
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} valid policy files found");
}

#[test]
fn every_invalid_fixture_yields_its_code_at_the_marked_line() {
    let root = root();
    let dir = root.join("policies/invalid");
    let mut covered = BTreeSet::new();
    for path in files_under(&dir) {
        let (rel, code_dir) = fixture(&path);
        let code =
            Code::lookup(&code_dir).unwrap_or_else(|| panic!("{rel}: `{code_dir}` is not a code"));
        assert_eq!(
            code.as_str(),
            code_dir,
            "{rel}: directory must be named by code"
        );
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let args = fixture_args(&text);
        let (sources, diags) = lint_text(&rel, bytes, args);
        for d in &diags {
            assert!(
                d.help.is_some(),
                "{rel}: {} has no help line: {}",
                d.code,
                d.message
            );
        }
        let found: Vec<_> = diags.iter().filter(|d| d.code == code).collect();
        assert!(
            !found.is_empty(),
            "{rel}: expected {code}, got {:#?}",
            diags
                .iter()
                .map(|d| (d.code, &d.message))
                .collect::<Vec<_>>()
        );
        let mut lines = expected_lines(&text, code.as_str());
        if lines.is_empty() {
            lines.push(1);
        }
        for line in &lines {
            assert!(
                found.iter().any(|d| sources.line_col(d.loc).line == *line),
                "{rel}: expected {code} at line {line}, found it at lines {:?}",
                found
                    .iter()
                    .map(|d| sources.line_col(d.loc).line)
                    .collect::<Vec<_>>()
            );
        }
        let other_errors: Vec<_> = diags
            .iter()
            .filter(|d| d.severity == Severity::Error && d.code != code)
            .map(|d| {
                format!(
                    "{} at line {}: {}",
                    d.code,
                    sources.line_col(d.loc).line,
                    d.message
                )
            })
            .collect();
        assert!(
            other_errors.is_empty(),
            "{rel}: must fail with exactly {code}, also got {other_errors:#?}"
        );
        covered.insert(code);
    }
    // Every code has a fixture, except the one that needs an unreadable path, flow-file
    // errors, the compile-only overflow, the solver running out of time, and the backend's
    // load and lab errors (not reproducible from a policy file; `load_cli.rs` and `lab.rs`
    // cover those), the webhook's warning on a DELETE (`webhook_review.rs`), and a cluster
    // that cannot be read (`live_cli.rs`).
    let missing: Vec<_> = Code::ALL
        .iter()
        .filter(|c| {
            !covered.contains(c)
                && **c != Code::UnreadableInput
                && !c.as_str().starts_with("Q04")
                && !c.as_str().starts_with("B05")
                && **c != Code::PolicyMapOverflow
                && **c != Code::Undecided
                && **c != Code::Unisolated
                && **c != Code::ClusterUnreadable
        })
        .map(|c| format!("{} {}", c.as_str(), c.name()))
        .collect();
    assert!(
        missing.is_empty(),
        "codes without a fixture under policies/invalid/: {missing:#?}"
    );
}
