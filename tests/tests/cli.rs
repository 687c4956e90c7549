//! Command-line tests: exit code, stdout and stderr together, for each output format and the
//! error paths.

mod common;

use common::*;

fn transcript(args: &[&str], stdin: &[u8]) -> String {
    let (code, out, err) = polc(args, stdin);
    format!("exit: {code}\n--- stdout\n{out}--- stderr\n{err}")
}

/// Runs from the workspace root so paths in the output are repository-relative.
fn in_root<R>(f: impl FnOnce() -> R) -> R {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let prev = std::env::current_dir().unwrap();
    std::env::set_current_dir(root()).unwrap();
    let r = f();
    std::env::set_current_dir(prev).unwrap();
    r
}

const MIXED: &str = "tests/cli-fixtures/mixed.yaml";

#[test]
fn lint_human() {
    in_root(|| insta::assert_snapshot!(transcript(&["lint", "--color", "never", MIXED], b"")));
}

#[test]
fn lint_json() {
    in_root(|| insta::assert_snapshot!(transcript(&["lint", "--format", "json", MIXED], b"")));
}

#[test]
fn lint_sarif() {
    in_root(|| {
        let (code, out, err) = polc(&["lint", "--format", "sarif", MIXED], b"");
        assert_eq!(code, 1);
        assert!(err.is_empty());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["version"], "2.1.0");
        let run = &v["runs"][0];
        let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
        for r in run["results"].as_array().unwrap() {
            let idx = r["ruleIndex"].as_u64().unwrap() as usize;
            assert_eq!(rules[idx]["id"], r["ruleId"]);
            let region = &r["locations"][0]["physicalLocation"]["region"];
            assert!(region["startLine"].as_u64().unwrap() >= 1);
            assert!(region["startColumn"].as_u64().unwrap() >= 1);
        }
        assert_eq!(rules.len(), polc_compiler::diag::Code::ALL.len());
        // The rule table is the catalogue; snapshot what depends on the input.
        let results = serde_json::to_string_pretty(&run["results"]).unwrap();
        insta::assert_snapshot!(format!("exit: {code}\n{results}"));
    });
}

#[test]
fn lint_github() {
    in_root(|| insta::assert_snapshot!(transcript(&["lint", "--format", "github", MIXED], b"")));
}

#[test]
fn clean_input_exits_zero() {
    let policy = b"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: web
  namespace: shop
spec:
  endpointSelector:
    matchLabels:
      app: web
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: frontend
    toPorts:
    - ports:
      - port: \"8080\"
        protocol: TCP
";
    insta::assert_snapshot!(transcript(&["lint", "--color", "never", "-"], policy));
}

#[test]
fn warnings_fail_only_with_deny_warnings() {
    let policy = b"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: web
spec:
  endpointSelector: {}
  ingress:
  - toPorts:
    - ports:
      - port: \"80\"
";
    let (code, _, _) = polc(&["lint", "-"], policy);
    assert_eq!(code, 0);
    let (code, out, _) = polc(&["lint", "--deny-warnings", "-"], policy);
    assert_eq!(code, 1);
    assert!(out.contains("L0302"), "{out}");
}

#[test]
fn missing_file_exits_two() {
    in_root(|| {
        insta::assert_snapshot!(transcript(
            &["lint", "--color", "never", "does/not/exist.yaml"],
            b""
        ))
    });
}

#[test]
fn usage_errors_exit_two() {
    let (code, _, err) = polc(&["lint"], b"");
    assert_eq!(code, 2);
    assert!(err.contains("PATH"), "{err}");
    let (code, _, err) = polc(&["lint", "--cilium-version", "1.12", "-"], b"");
    assert_eq!(code, 2);
    assert!(err.contains("1.17, 1.18 or 1.19"), "{err}");
    let (code, _, _) = polc(&["frobnicate"], b"");
    assert_eq!(code, 2);
}

#[test]
fn explain_code() {
    insta::assert_snapshot!(transcript(&["explain-code", "S0218"], b""));
    let (code, out, _) = polc(&["explain-code", "combined-peer-kinds"], b"");
    assert_eq!(code, 0);
    assert!(out.starts_with("S0218 combined-peer-kinds (error)"));
    let (code, _, err) = polc(&["explain-code", "X0000"], b"");
    assert_eq!(code, 2);
    assert!(err.contains("not a polc diagnostic code"));
    let (code, out, _) = polc(&["explain-code"], b"");
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), polc_compiler::diag::Code::ALL.len());
}

#[test]
fn a_bad_document_does_not_hide_the_others() {
    let stream = b"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a}
spec:
  endpointSelector: {}
  egress: [{toEntities: [wrold]}]
---
this: [is: broken
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b}
spec:
  endpointSelector: {}
  ingress: [{fromCIDR: [10.0.0.1]}]
";
    let (code, out, _) = polc(&["lint", "--format", "json", "-"], stream);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let codes: Vec<_> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap().to_string(),
                d["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(codes.contains(&("S0220".to_string(), 6)), "{codes:?}");
    assert!(
        codes.contains(&("P0101".to_string(), 8)) || codes.iter().any(|c| c.0 == "P0101"),
        "{codes:?}"
    );
    assert!(codes.contains(&("S0244".to_string(), 15)), "{codes:?}");
}

#[test]
fn hostile_inputs_get_diagnostics_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str, i32)> = vec![
        ("empty.yaml", Vec::new(), "P0108", 1),
        (
            "binary.yaml",
            vec![0x7f, b'E', b'L', b'F', 0, 1, 2, 3, 0xff, 0xfe],
            "P0104",
            2,
        ),
        ("latin1.yaml", b"name: caf\xe9\n".to_vec(), "P0104", 2),
        (
            "tabs.yaml",
            b"apiVersion: v1\nkind: Namespace\nmetadata:\n\tname: x\n".to_vec(),
            "P0102",
            1,
        ),
        (
            "dup.yaml",
            b"apiVersion: v1\nkind: Namespace\nkind: Pod\n".to_vec(),
            "P0103",
            1,
        ),
        ("deep.yaml", "[".repeat(100_000).into_bytes(), "P0106", 1),
        ("scalar.yaml", b"just a string\n".to_vec(), "P0110", 1),
        ("list.json", b"[1, 2, 3]".to_vec(), "P0110", 1),
    ];
    for (name, bytes, code, exit) in &cases {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let (got, out, _) = polc(&["lint", "--format", "json", p.to_str().unwrap()], b"");
        assert_eq!(got, *exit, "{name}: {out}");
        assert!(
            out.contains(&format!("\"code\": \"{code}\"")),
            "{name}: expected {code} in {out}"
        );
    }
    // Billion laughs.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let (got, out, _) = polc(&["lint", "--format", "json", "-"], bomb.as_bytes());
    assert_eq!(got, 1);
    assert!(out.contains("P0105"), "{out}");
    // Over the size limit.
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; 4096]).unwrap();
    let (got, out, _) = polc(
        &[
            "lint",
            "--format",
            "json",
            "--max-file-size",
            "1024",
            big.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(got, 2);
    assert!(out.contains("P0107"), "{out}");
}

#[test]
fn a_50_megabyte_file_is_read_and_rejected_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.yaml");
    // 50 MB of one long plain scalar: a single document that is not an object.
    std::fs::write(&p, vec![b'a'; 50 * 1024 * 1024]).unwrap();
    let (got, out, _) = polc(&["lint", "--format", "json", p.to_str().unwrap()], b"");
    assert_eq!(got, 1, "{}", &out[..out.len().min(2000)]);
    assert!(out.contains("P0110"));
}

#[test]
fn kubectl_list_dumps_are_read() {
    let dump = b"apiVersion: v1
kind: List
items:
- apiVersion: cilium.io/v2
  kind: CiliumNetworkPolicy
  metadata: {name: a, namespace: shop}
  spec:
    endpointSelector: {}
    ingress: [{fromEntities: [cluster]}]
- apiVersion: v1
  kind: Namespace
  metadata: {name: shop}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: web}
metadata:
  resourceVersion: \"\"
";
    let (code, out, _) = polc(&["lint", "--format", "json", "-"], dump);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summary"]["objects"], 2);
    assert_eq!(v["diagnostics"][0]["code"], "P0111");
}

#[test]
fn a_directory_without_policy_files_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a policy").unwrap();
    let (code, out, _) = polc(
        &["lint", "--format", "json", dir.path().to_str().unwrap()],
        b"",
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("P0109") && out.contains("no `.yaml`"), "{out}");
}

#[test]
fn strict_fields_turns_unknown_fields_into_errors() {
    let policy = b"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
description: top-level text the API server does not know
metadata:
  name: web
spec:
  endpointSelector: {}
  ingress:
  - fromEntities: [cluster]
";
    let (code, out, _) = polc(&["lint", "--format", "json", "-"], policy);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"severity\": \"warning\""), "{out}");
    let (code, out, _) = polc(
        &["lint", "--strict-fields", "--format", "json", "-"],
        policy,
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("S0203") && out.contains("\"severity\": \"error\""),
        "{out}"
    );
}

#[test]
fn webhook_review_judges_one_file_and_exits() {
    in_root(|| {
        let review = |file: &str| {
            polc(
                &[
                    "webhook",
                    "--review",
                    file,
                    "--policies",
                    "policies/admission/cluster",
                ],
                b"",
            )
        };
        let (code, out, err) = review("policies/admission/create-shadowed-cnp.json");
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["response"]["allowed"], true);
        assert!(
            v["response"]["warnings"].to_string().contains("V0404"),
            "{v}"
        );
        let (code, out, _) = review("policies/admission/create-invalid-cnp.json");
        assert_eq!(code, 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["response"]["allowed"], false);
        // From standard input; without a policy set, no V04xx is looked for.
        let body = std::fs::read("policies/admission/create-shadowed-cnp.json").unwrap();
        let (code, out, _) = polc(&["webhook", "--review", "-"], &body);
        assert_eq!(code, 0);
        assert!(!out.contains("V0404"), "{out}");
        // Not a review: HTTP 400's body, exit 2.
        let (code, out, _) = polc(&["webhook", "--review", "-"], b"{}");
        assert_eq!(code, 2);
        assert!(
            out.contains("not an admission.k8s.io/v1 AdmissionReview"),
            "{out}"
        );
        let (code, _, err) = review("policies/admission/no-such-file.json");
        assert_eq!(code, 2);
        assert!(err.contains("no-such-file.json"), "{err}");
    });
}
