//! `polc webhook`'s judgement of AdmissionReviews built like the API server's (fixtures in
//! `policies/admission/`), and of bodies that are not AdmissionReviews.

mod common;

use common::root;
use polc_cli::webhook::review::{MAX_BODY, Reply, Settings, review};
use polc_cli::webhook::store::Snapshot;
use polc_compiler::version::CiliumVersion;
use serde_json::Value;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("policies/admission").join(name)).unwrap()
}

fn answer(body: &[u8], settings: &Settings) -> (u16, Value) {
    answer_with(body, settings, None)
}

fn answer_with(body: &[u8], settings: &Settings, set: Option<&Snapshot>) -> (u16, Value) {
    let Reply { status, body, .. } = review(body, settings, set);
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(json["kind"], "AdmissionReview");
    (status, json)
}

fn response(name: &str, settings: &Settings) -> Value {
    response_with(name, settings, None)
}

fn response_with(name: &str, settings: &Settings, set: Option<&Snapshot>) -> Value {
    let (status, json) = answer_with(&fixture(name), settings, set);
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

/// The policy set of `policies/admission/cluster`.
fn cluster() -> Snapshot {
    Snapshot::read(
        &root().join("policies/admission/cluster"),
        CiliumVersion::V1_19,
    )
    .unwrap()
}

/// The codes of a response's warnings, in order.
fn warning_codes(r: &Value) -> Vec<String> {
    r["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|w| w.as_str())
                .filter_map(|w| {
                    w.split_whitespace()
                        .find(|t| t.len() == 5 && t.starts_with(['S', 'L', 'V']))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn objects_are_judged_against_the_policy_set() {
    let set = cluster();
    let settings = Settings::default();
    let mut all = Vec::new();
    for (name, allowed, codes) in [
        // Its item is shadowed by the set's deny rule.
        ("create-shadowed-cnp.json", true, &["V0404"][..]),
        // Its item bypasses the HTTP rules of the set's `api-ingress`.
        ("create-bypassing-cnp.json", true, &["V0405"][..]),
        // The set's `frontend-open` already allows what it allows.
        ("create-redundant-cnp.json", true, &["V0406"][..]),
        // It puts `billing` into egress default-deny without DNS.
        ("create-dns-cut-off-cnp.json", true, &["V0403"][..]),
        // Its deny shadows the set's `api-ingress`.
        (
            "create-deny-shadowing-others-cnp.json",
            true,
            &["V0404"][..],
        ),
        // The set has the CIDR group it names: no L0321.
        ("create-cidr-group-ref-cnp.json", true, &[][..]),
        // The group moves into a range the set denies: `office-admin`'s item is shadowed.
        (
            "update-cidrgroup-into-denied-range.json",
            true,
            &["V0404"][..],
        ),
        // Nothing else isolates `app: frontend` pods.
        ("delete-last-isolating-cnp.json", true, &["V0410"][..]),
        // `api-ingress` still isolates `app: api` pods.
        ("delete-covered-cnp.json", true, &[][..]),
        // Valid and unrelated to the set: nothing to say.
        ("create-valid-cnp.json", true, &[][..]),
        // Invalid objects are denied before the verifier looks.
        ("create-invalid-cnp.json", false, &[][..]),
    ] {
        let r = response_with(name, &settings, Some(&set));
        assert_eq!(r["allowed"], allowed, "{name}: {r}");
        assert_eq!(warning_codes(&r), codes, "{name}: {r}");
        all.push(format!(
            "{name}:\n{}",
            serde_json::to_string_pretty(&r).unwrap()
        ));
    }
    insta::assert_snapshot!(all.join("\n\n"));
}

#[test]
fn findings_about_other_policies_name_them() {
    let set = cluster();
    let r = response_with(
        "create-deny-shadowing-others-cnp.json",
        &Settings::default(),
        Some(&set),
    );
    let w = r["warnings"][0].as_str().unwrap();
    assert!(
        w.starts_with("CiliumNetworkPolicy shop/api-ingress spec.ingress[0]: V0404 "),
        "{w}"
    );
    // Denying a finding's code denies the request, with the finding in the message.
    let strict = Settings {
        deny: vec!["V0404".into()],
        ..Settings::default()
    };
    let r = response_with("create-shadowed-cnp.json", &strict, Some(&set));
    assert_eq!(r["allowed"], false, "{r}");
    let message = r["status"]["message"].as_str().unwrap();
    assert!(message.contains("spec.ingress[0]: V0404 "), "{message}");
    assert!(message.contains("for example"), "{message}");
}

#[test]
fn without_a_policy_set_a_cidr_group_reference_is_unresolved() {
    let r = response("create-cidr-group-ref-cnp.json", &Settings::default());
    assert_eq!(warning_codes(&r), ["L0321"], "{r}");
}

/// A CIDR group update as the API server sends it: `name` goes from `old` to `new`.
fn group_update(name: &str, old: &[&str], new: &[&str]) -> Vec<u8> {
    let kind =
        serde_json::json!({"group": "cilium.io", "version": "v2", "kind": "CiliumCIDRGroup"});
    let group = |cidrs: &[&str]| {
        serde_json::json!({
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumCIDRGroup",
            "metadata": {"name": name},
            "spec": {"externalCIDRs": cidrs},
        })
    };
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "3f0c6b1e-0d55-4a8e-9d71-5b2b8c1e7a10",
            "kind": kind,
            "resource": {"group": "cilium.io", "version": "v2", "resource": "ciliumcidrgroups"},
            "name": name,
            "operation": "UPDATE",
            "userInfo": {"username": "ipam-sync"},
            "object": group(new),
            "oldObject": group(old),
        }
    }))
    .unwrap()
}

/// A group's new addresses change what the policies using it do to other policies' items
/// on those addresses: an item of another policy that the group's deny user now shadows,
/// one that its allow user now makes redundant. Items elsewhere are not asked about again.
#[test]
fn cidr_group_changes_reach_the_items_on_their_addresses() {
    let yaml = r#"
apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata: {name: blocklist}
spec: {externalCIDRs: ["198.51.100.0/24"]}
---
apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata: {name: office}
spec: {externalCIDRs: ["203.0.113.0/24"]}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: blocklist-deny, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingressDeny:
  - fromCIDRSet: [{cidrGroupRef: blocklist}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: office-admin, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromCIDRSet: [{cidrGroupRef: office}]
    toPorts: [{ports: [{port: "8443", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: partners, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromCIDR: ["192.0.2.0/24"]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
  - fromCIDR: ["100.64.1.0/24"]
    toPorts: [{ports: [{port: "8443", protocol: TCP}]}]
  - fromCIDR: ["10.20.0.0/16"]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
"#;
    let mut sources = polc_compiler::source::SourceMap::new();
    sources.add(polc_compiler::source::SourceFile::new(
        "set.yaml",
        yaml.to_string(),
    ));
    let set = Snapshot::from_sources(&sources, CiliumVersion::V1_19);
    let settings = Settings::default();
    let warnings = |body: Vec<u8>| {
        let (status, json) = answer_with(&body, &settings, Some(&set));
        assert_eq!(status, 200, "{json}");
        assert_eq!(json["response"]["allowed"], true, "{json}");
        let list = json["response"]["warnings"].as_array().cloned();
        list.unwrap_or_default()
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // The blocklist grows over the partners' first range: that item is shadowed.
    let w = warnings(group_update(
        "blocklist",
        &["198.51.100.0/24"],
        &["198.51.100.0/24", "192.0.2.0/24"],
    ));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("CiliumNetworkPolicy shop/partners spec.ingress[0]: V0404 "),
        "{w:?}"
    );
    // The office grows over the partners' second range: that item is redundant.
    let w = warnings(group_update(
        "office",
        &["203.0.113.0/24"],
        &["203.0.113.0/24", "100.64.0.0/16"],
    ));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("CiliumNetworkPolicy shop/partners spec.ingress[1]: V0406 "),
        "{w:?}"
    );
    // Addresses no other item holds: nothing to say.
    assert!(
        warnings(group_update(
            "blocklist",
            &["198.51.100.0/24"],
            &["198.51.100.0/25"],
        ))
        .is_empty()
    );
}
