//! `polc webhook`'s judgement of AdmissionReviews built like the API server's (fixtures in
//! `policies/admission/`), and of bodies that are not.

mod common;

use common::root;
use polc_cli::webhook::review::{MAX_BODY, Reply, Settings, review};
use serde_json::Value;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("policies/admission").join(name)).unwrap()
}

fn answer(body: &[u8], settings: &Settings) -> (u16, Value) {
    let Reply { status, body } = review(body, settings);
    let json: Value = serde_json::from_slice(&body).unwrap();
    (status, json)
}

#[test]
fn print_fixtures() {
    for f in ["create-valid-cnp.json", "create-invalid-cnp.json"] {
        let (status, json) = answer(&fixture(f), &Settings::default());
        eprintln!(
            "{f}: {status}\n{}",
            serde_json::to_string_pretty(&json).unwrap()
        );
    }
    let _ = MAX_BODY;
}
