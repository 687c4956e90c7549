//! `polc diff OLD NEW --inventory`: widened and narrowed flows of a change, in classes.

mod common;

use common::{polc, root};
use std::path::Path;

fn copy_demo(to: &Path, edit: impl Fn(&str, String) -> String) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(root().join("policies/demo/policies")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(to.join(&name), edit(&name, text)).unwrap();
    }
}

fn diff(old: &Path, new: &Path, extra: &[&str]) -> (i32, String, String) {
    let inv = root().join("policies/demo/cluster");
    let mut args = vec![
        "diff",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
        "--inventory",
        inv.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    polc(&args, b"")
}

#[test]
fn identical_policies_have_no_diff() {
    let tmp = tempfile::tempdir().unwrap();
    copy_demo(tmp.path(), |_, t| t);
    let old = root().join("policies/demo/policies");
    let (code, out, err) = diff(&old, tmp.path(), &["--fail-on", "any"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 widened"), "{out}");
}

#[test]
fn a_wider_port_range_is_one_widened_class_and_the_reverse_narrows() {
    let tmp = tempfile::tempdir().unwrap();
    copy_demo(tmp.path(), |name, t| match name {
        "knp-shop-postgres-ingress.yaml" => t.replacen(
            "      port: 5432\n",
            "      port: 5432\n      endPort: 5440\n",
            1,
        ),
        "shop-backend-egress.yaml" => t.replacen(
            "      - port: \"5432\"",
            "      - port: \"5432\"\n        endPort: 5440",
            1,
        ),
        _ => t,
    });
    let old = root().join("policies/demo/policies");
    let (code, out, err) = diff(
        &old,
        tmp.path(),
        &["--format", "json", "--fail-on", "widen"],
    );
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["widened"], 1, "{out}");
    assert_eq!(v["narrowed"], 0, "{out}");
    let c = &v["changes"][0];
    assert_eq!(c["ports"], serde_json::json!([5433, 5440]), "{out}");
    assert!(c["from"].as_str().unwrap().contains("app=backend"), "{out}");
    assert!(c["to"].as_str().unwrap().contains("app=postgres"), "{out}");
    assert!(
        c["example"].as_str().unwrap().ends_with("TCP/5433"),
        "{out}"
    );
    // The example really is a flow the new policies allow and the old ones deny.
    let (_, before, _) = polc(
        &[
            "explain",
            "--policies",
            old.to_str().unwrap(),
            "--inventory",
            root().join("policies/demo/cluster").to_str().unwrap(),
            "--from",
            "shop/backend-5c8d9f7b6-h4jkl",
            "--to",
            "shop/postgres-0",
            "--proto",
            "tcp",
            "--port",
            "5433",
            "--format",
            "json",
        ],
        b"",
    );
    assert!(before.contains("\"verdict\": \"deny\""), "{before}");
    // Reversed, the same class narrows.
    let (code, out, _) = diff(tmp.path(), &old, &["--fail-on", "widen"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("0 widened (+, newly allowed), 1 narrowed"),
        "{out}"
    );
    assert!(out.lines().next().unwrap().starts_with("- "), "{out}");
}

#[test]
fn without_an_inventory_identical_sets_have_no_difference() {
    let old = root().join("policies/demo/policies");
    let (code, out, err) = polc(
        &[
            "diff",
            old.to_str().unwrap(),
            old.to_str().unwrap(),
            "--fail-on",
            "any",
        ],
        b"",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("0 widened (+, newly allowed), 0 narrowed"),
        "{out}"
    );
}

/// A new L4-only port range over a port whose only rule has HTTP rules opens every request
/// on it: the symbolic diff finds that widening though the changed rule has no L7 rules (a
/// case the soundness property test found).
#[test]
fn an_l4_range_over_an_http_port_widens_its_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let old = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p0, namespace: b}
spec:
  endpointSelector: {}
  ingress:
  - toPorts:
    - ports: [{port: '80', protocol: TCP}]
      rules:
        http: [{method: GET}]
  enableDefaultDeny: {ingress: false, egress: false}
";
    let new = format!(
        "{old}---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {{name: c1}}
spec:
  endpointSelector: {{}}
  ingress:
  - toPorts:
    - ports: [{{port: '1', endPort: 1023, protocol: TCP}}]
"
    );
    let (o, n) = (tmp.path().join("old.yaml"), tmp.path().join("new.yaml"));
    std::fs::write(&o, old).unwrap();
    std::fs::write(&n, new).unwrap();
    let (_, out, err) = polc(&["diff", o.to_str().unwrap(), n.to_str().unwrap()], b"");
    assert!(out.contains("1 widened (+, newly allowed)"), "{out}{err}");
}

/// `polc graph`: workloads as nodes, allowed ports on the edges, in every format.
#[test]
fn graph_of_the_demo() {
    let pol = root().join("policies/demo/policies");
    let inv = root().join("policies/demo/cluster");
    let run = |format: &str| {
        let (code, out, err) = polc(
            &[
                "graph",
                "--policies",
                pol.to_str().unwrap(),
                "--inventory",
                inv.to_str().unwrap(),
                "--format",
                format,
            ],
            b"",
        );
        assert_eq!(code, 0, "{err}");
        out
    };
    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    let nodes = json["nodes"].as_array().unwrap();
    let id = |needle: &str| {
        nodes
            .iter()
            .find(|n| {
                n["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m.as_str().unwrap().contains(needle))
            })
            .unwrap()["id"]
            .clone()
    };
    let (frontend, backend, postgres) = (id("app=frontend"), id("app=backend"), id("app=postgres"));
    let edge = |a: &serde_json::Value, b: &serde_json::Value| {
        json["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["from"] == *a && e["to"] == *b)
            .map(|e| e["allowed"].as_str().unwrap().to_string())
    };
    assert_eq!(
        edge(&frontend, &backend).as_deref(),
        Some("TCP 8080"),
        "{json:#}"
    );
    assert_eq!(edge(&frontend, &postgres), None, "{json:#}");
    assert!(
        edge(&backend, &postgres).unwrap().contains("TCP 5432"),
        "{json:#}"
    );
    assert!(run("dot").starts_with("digraph polc {"));
    assert!(run("mermaid").starts_with("flowchart LR"));
}
