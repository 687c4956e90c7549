//! `polc webhook`'s judgement of AdmissionReviews built like the API server's (fixtures in
//! `policies/admission/`), and of bodies that are not AdmissionReviews.

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
    assert_eq!(json["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(json["kind"], "AdmissionReview");
    (status, json)
}

fn response(name: &str, settings: &Settings) -> Value {
    let (status, json) = answer(&fixture(name), settings);
    assert_eq!(status, 200, "{json}");
    let request: Value = serde_json::from_slice(&fixture(name)).unwrap();
    assert_eq!(json["response"]["uid"], request["request"]["uid"], "{json}");
    json["response"].clone()
}

#[test]
fn every_fixture_gets_the_answer_it_should() {
    let plain = Settings::default();
    let mut all = Vec::new();
    for (name, allowed) in [
        ("create-valid-cnp.json", true),
        ("create-invalid-cnp.json", false),
        ("create-invalid-cnp-dry-run.json", false),
        ("create-warning-cnp.json", true),
        ("update-valid-ccnp.json", true),
        ("delete-cnp.json", true),
        ("create-invalid-cidrgroup.json", false),
        ("create-invalid-networkpolicy.json", false),
        ("create-pod.json", true),
        ("create-cnp-spec-not-an-object.json", false),
    ] {
        let r = response(name, &plain);
        assert_eq!(r["allowed"], allowed, "{name}: {r}");
        all.push(format!(
            "{name}:\n{}",
            serde_json::to_string_pretty(&r).unwrap()
        ));
    }
    insta::assert_snapshot!(all.join("\n\n"));
}

#[test]
fn errors_are_listed_with_their_field_paths_and_fixes() {
    let r = response("create-invalid-cnp.json", &Settings::default());
    let message = r["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "polc: CiliumNetworkPolicy shop/backend-ingress is not valid Cilium policy \
             (2 problems):"
        ),
        "{message}"
    );
    assert!(
        message.contains("\n- spec.ingress[0].toPorts[0].ports[0].port: S0227 "),
        "{message}"
    );
    assert!(
        message.contains("\n- spec.ingress[0].fromCIDR: S0218 "),
        "{message}"
    );
    assert!(message.contains("(fix: "), "{message}");
    // A dry run gets the same answer.
    let dry = response("create-invalid-cnp-dry-run.json", &Settings::default());
    assert_eq!(dry["status"], r["status"]);
}

#[test]
fn warnings_warn_unless_their_code_is_denied() {
    let r = response("create-warning-cnp.json", &Settings::default());
    assert_eq!(r["allowed"], true);
    let warnings = r["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{r}");
    let text = warnings[0].as_str().unwrap();
    assert!(
        text.starts_with("spec.ingress[1].fromEndpoints: L0305 "),
        "{text}"
    );
    let code = "L0305".to_string();
    let strict = Settings {
        deny: vec![code],
        ..Settings::default()
    };
    let r = response("create-warning-cnp.json", &strict);
    assert_eq!(r["allowed"], false, "{r}");
    assert!(r.get("warnings").is_none(), "{r}");
}

#[test]
fn bodies_that_are_not_admission_reviews_get_400_and_a_reason() {
    let cases: [(&[u8], u16, &str); 5] = [
        (
            b"{\"apiVersion\": ",
            400,
            "is not an admission.k8s.io/v1 AdmissionReview",
        ),
        (
            b"not json at all",
            400,
            "is not an admission.k8s.io/v1 AdmissionReview",
        ),
        (
            b"[1, 2, 3]",
            400,
            "is not an admission.k8s.io/v1 AdmissionReview",
        ),
        (
            b"{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": \"AdmissionReview\"}",
            400,
            "has no `request`",
        ),
        (b"", 400, "is not an admission.k8s.io/v1 AdmissionReview"),
    ];
    for (body, want, says) in cases {
        let (status, json) = answer(body, &Settings::default());
        assert_eq!(status, want, "{json}");
        assert_eq!(json["response"]["allowed"], false, "{json}");
        let message = json["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
}

#[test]
fn a_body_over_the_limit_is_refused_unread() {
    let mut body = fixture("create-valid-cnp.json");
    body.resize(MAX_BODY + 1, b' ');
    let (status, json) = answer(&body, &Settings::default());
    assert_eq!(status, 413, "{json}");
    let message = json["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("more than the"), "{message}");
}
