//! `polc test` and `polc diff` without an inventory: expectations and changes are checked for
//! every pod that could exist, and every counterexample or example is one the reference
//! evaluator has replayed. Transcripts (exit code, stdout, stderr) are snapshotted with the
//! temporary directories written as `[TMP]` and the repository as `[ROOT]`.

mod common;

use common::{polc, root};
use std::path::Path;

/// Exit code, stdout and stderr together, with the temporary directory and the repository
/// replaced by placeholders.
fn transcript(args: &[&str], tmp: &Path) -> (i32, String) {
    let (code, out, err) = polc(args, b"");
    let text = format!("exit: {code}\n--- stdout\n{out}--- stderr\n{err}");
    let text = text
        .replace(tmp.to_str().unwrap(), "[TMP]")
        .replace(root().to_str().unwrap(), "[ROOT]");
    (code, text)
}

/// A small shop: default-deny, the frontend calls the backend's HTTP API on 8080, and no pod
/// reaches the cloud metadata address.
const MINI: &[(&str, &str)] = &[
    (
        "default-deny.yaml",
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: default-deny
  namespace: shop
spec:
  endpointSelector: {}
  ingress:
  - {}
  egress:
  - {}
",
    ),
    (
        "backend-ingress.yaml",
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: backend-ingress
  namespace: shop
spec:
  endpointSelector:
    matchLabels:
      app: backend
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: frontend
    toPorts:
    - ports:
      - port: \"8080\"
        protocol: TCP
      rules:
        http:
        - method: \"GET|POST\"
          path: \"/api/.*\"
",
    ),
    (
        "frontend-egress.yaml",
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: frontend-egress
  namespace: shop
spec:
  endpointSelector:
    matchLabels:
      app: frontend
  egress:
  - toEndpoints:
    - matchLabels:
        app: backend
    toPorts:
    - ports:
      - port: \"8080\"
        protocol: TCP
",
    ),
    (
        "deny-metadata.yaml",
        "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: deny-metadata
spec:
  endpointSelector: {}
  enableDefaultDeny:
    egress: false
  egressDeny:
  - toCIDR:
    - 169.254.169.254/32
",
    ),
];

/// Writes the small shop into `dir`, each file passed through `edit`.
fn write_mini(dir: &Path, edit: impl Fn(&str, &str) -> String) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in MINI {
        std::fs::write(dir.join(name), edit(name, text)).unwrap();
    }
}

/// Copies the demo's policies into `to`, each file passed through `edit` (`None` leaves the
/// file out).
fn copy_demo(to: &Path, edit: impl Fn(&str, String) -> Option<String>) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(root().join("policies/demo/policies")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&p).unwrap();
        if let Some(t) = edit(&name, text) {
            std::fs::write(to.join(&name), t).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// polc test

#[test]
fn symbolic_expectations_on_a_small_policy_dir() {
    let tmp = tempfile::tempdir().unwrap();
    write_mini(&tmp.path().join("policies"), |_, t| t.to_string());
    let polt = tmp.path().join("shop.polt");
    std::fs::write(
        &polt,
        "# No inventory: every expectation covers every pod that could exist.\n\
         policies \"policies/\"\n\
         expect allow shop/{app=frontend} -> shop/{app=backend} tcp/8080\n\
         expect allow shop/{app=frontend} -> shop/{app=backend} tcp/8080 http GET \"/api/v1/items\"\n\
         expect deny  shop/{app=frontend} -> shop/{app=backend} tcp/8080 http DELETE \"/api/v1/items\"\n\
         expect deny  shop/{app=backend} -> shop/{app=frontend} any\n\
         expect deny  */{} -> ip 169.254.169.254 tcp/80\n\
         expect allow shop/{} -> shop/{app=backend} tcp/8080\n\
         expect allow shop/{app=frontend} -> shop/{app=backend} tcp/8080-8081\n",
    )
    .unwrap();
    let (code, text) = transcript(&["test", polt.to_str().unwrap()], tmp.path());
    assert_eq!(code, 1, "{text}");
    // The two failing expectations each show a counterexample the evaluator replayed.
    assert_eq!(text.matches("counterexample:").count(), 2, "{text}");
    assert!(text.contains("7 expectations, 5 hold, 2 fail"), "{text}");
    insta::assert_snapshot!(text);

    // Without the failing lines the file passes.
    let passing: String = std::fs::read_to_string(&polt)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("shop/{} ->") && !l.contains("8080-8081"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&polt, passing).unwrap();
    let (code, text) = transcript(&["test", polt.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("5 expectations, 5 hold, 0 fail"), "{text}");
}

#[test]
fn a_broken_demo_policy_fails_the_right_expectation_symbolically() {
    let tmp = tempfile::tempdir().unwrap();
    let polt = tmp.path().join("t.polt");
    std::fs::write(
        &polt,
        "policies \"policies/\"\n\
         expect allow shop/{app=frontend} -> shop/{app=backend} tcp/8080 http GET \"/healthz\"\n\
         expect deny  shop/{app=frontend} -> shop/{app=backend} tcp/8080 http DELETE \"/api/v1/products\"\n",
    )
    .unwrap();
    // The demo's own policies meet both expectations for every pod that could exist.
    copy_demo(&tmp.path().join("policies"), |_, t| Some(t));
    let (code, text) = transcript(&["test", polt.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("2 expectations, 2 hold, 0 fail"), "{text}");

    // Break the backend's L7 allow-list: any method on any path.
    std::fs::remove_dir_all(tmp.path().join("policies")).unwrap();
    copy_demo(&tmp.path().join("policies"), |name, t| {
        Some(if name == "shop-backend-ingress-http.yaml" {
            t.replace("method: \"GET|POST|DELETE\"", "method: \".*\"")
                .replace("path: \"/api/v1/cart(/.*)?\"", "path: \"/.*\"")
        } else {
            t
        })
    });
    let (code, text) = transcript(&["test", polt.to_str().unwrap()], tmp.path());
    assert_eq!(code, 1, "{text}");
    let fail = text.lines().position(|l| l.starts_with("FAIL")).unwrap();
    assert!(
        text.lines().nth(fail).unwrap().contains(":3 expect deny"),
        "{text}"
    );
    let cx = text.lines().nth(fail + 1).unwrap();
    assert!(
        cx.contains("counterexample:") && cx.contains("http DELETE") && cx.ends_with(": allow"),
        "{text}"
    );
    assert!(
        text.contains("CiliumNetworkPolicy shop/backend-ingress-http spec.ingress[0]"),
        "{text}"
    );
    insta::assert_snapshot!(text);
}

#[test]
fn inventory_names_without_an_inventory_fail_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    write_mini(&tmp.path().join("policies"), |_, t| t.to_string());
    let polt = tmp.path().join("t.polt");
    std::fs::write(
        &polt,
        "policies \"policies/\"\n\
         expect allow pod shop/frontend-0 -> shop/{app=backend} tcp/8080\n\
         expect allow shop/{app=frontend} -> shop/{app=backend} tcp/8080\n",
    )
    .unwrap();
    let (code, text) = transcript(&["test", polt.to_str().unwrap()], tmp.path());
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("`pod shop/frontend-0` names an inventory pod"),
        "{text}"
    );
    insta::assert_snapshot!(text);
}

// ---------------------------------------------------------------------------------------------
// polc diff

/// Runs `polc diff OLD NEW` without an inventory.
fn diff(old: &Path, new: &Path, extra: &[&str], tmp: &Path) -> (i32, String) {
    let mut args = vec!["diff", old.to_str().unwrap(), new.to_str().unwrap()];
    args.extend_from_slice(extra);
    transcript(&args, tmp)
}

/// The exit codes of `--fail-on widen`, `narrow` and `any`.
fn gates(old: &Path, new: &Path, tmp: &Path) -> [i32; 3] {
    ["widen", "narrow", "any"].map(|g| diff(old, new, &["--fail-on", g], tmp).0)
}

/// The small shop with its port widened to 8080-8090 at both ends.
fn widened_mini(tmp: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (old, new) = (tmp.join("old"), tmp.join("new"));
    write_mini(&old, |_, t| t.to_string());
    write_mini(&new, |_, t| {
        t.replace(
            "      - port: \"8080\"\n",
            "      - port: \"8080\"\n        endPort: 8090\n",
        )
    });
    (old, new)
}

#[test]
fn a_widened_port_range_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = widened_mini(tmp.path());
    for format in ["human", "json", "markdown", "sarif"] {
        let (code, text) = diff(&old, &new, &["--format", format], tmp.path());
        assert_eq!(code, 0, "{text}");
        insta::assert_snapshot!(format!("widened_port_range_{format}"), text);
    }
    let (_, json, _) = polc(
        &[
            "diff",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
            "--format",
            "json",
        ],
        b"",
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["widened"], 2, "{json}");
    assert_eq!(v["narrowed"], 0, "{json}");
    assert_eq!(v["unknown"], serde_json::json!([]), "{json}");
    for c in v["changes"].as_array().unwrap() {
        // The example is on a newly opened port, allowed now and denied before.
        let example = c["example"].as_str().unwrap();
        let port: u16 = example.rsplit("TCP/").next().unwrap().parse().unwrap();
        assert!((8081..=8090).contains(&port), "{json}");
        assert_eq!((&c["old"], &c["new"]), (&"deny".into(), &"allow".into()));
    }
    assert_eq!(gates(&old, &new, tmp.path()), [1, 0, 1]);
}

#[test]
fn removing_an_http_method_narrows_with_the_request_as_example() {
    let tmp = tempfile::tempdir().unwrap();
    let new = tmp.path().join("new");
    copy_demo(&new, |name, t| {
        Some(if name == "shop-backend-ingress-http.yaml" {
            t.replace("method: \"GET|POST|DELETE\"", "method: \"GET|POST\"")
        } else {
            t
        })
    });
    let old = root().join("policies/demo/policies");
    let (code, text) = diff(&old, &new, &[], tmp.path());
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("0 widened (+, newly allowed), 1 narrowed"),
        "{text}"
    );
    assert!(text.contains("http DELETE \"/api/v1/cart"), "{text}");
    insta::assert_snapshot!(text);
    assert_eq!(gates(&old, &new, tmp.path()), [0, 1, 1]);
}

#[test]
fn removing_a_deny_policy_widens() {
    let tmp = tempfile::tempdir().unwrap();
    let new = tmp.path().join("new");
    copy_demo(&new, |name, t| {
        (name != "ccnp-deny-cloud-metadata.yaml").then_some(t)
    });
    let old = root().join("policies/demo/policies");
    let (code, text) = diff(&old, &new, &[], tmp.path());
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("1 widened (+, newly allowed), 0 narrowed"),
        "{text}"
    );
    assert!(text.contains("-> 169.254.169.254 "), "{text}");
    insta::assert_snapshot!(text);
    assert_eq!(gates(&old, &new, tmp.path()), [1, 0, 1]);
}

#[test]
fn identical_sets_make_no_difference() {
    let tmp = tempfile::tempdir().unwrap();
    let new = tmp.path().join("new");
    copy_demo(&new, |_, t| Some(t));
    let old = root().join("policies/demo/policies");
    let (code, text) = diff(&old, &new, &["--fail-on", "any"], tmp.path());
    assert_eq!(code, 0, "{text}");
    insta::assert_snapshot!(text);
    assert_eq!(gates(&old, &new, tmp.path()), [0, 0, 0]);
}

// ---------------------------------------------------------------------------------------------
// Discrepancies the property tests once found between the symbolic answers and the reference
// evaluator, kept as regression tests.

/// Writes `files` into `dir`.
fn write_files(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

#[test]
fn regression_unenforced_direction_with_http_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: l7
  namespace: a
spec:
  endpointSelector: {}
  enableDefaultDeny:
    egress: false
  egress:
  - toPorts:
    - ports:
      - port: \"80\"
        protocol: TCP
      rules:
        http:
        - method: GET
";
    write_files(&tmp.path().join("new"), &[("l7.yaml", policy)]);
    std::fs::create_dir_all(tmp.path().join("old")).unwrap();
    // eval: a POST from a pod in `a` to port 80 is refused by the proxy (L7Denied).
    let polt = tmp.path().join("t.polt");
    std::fs::write(
        &polt,
        "policies \"new/\"\nexpect allow a/{} -> b/{} tcp/80 http POST \"/x\"\n",
    )
    .unwrap();
    let (code, text) = transcript(&["test", polt.to_str().unwrap()], tmp.path());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("counterexample:"), "{text}");
    // Adding the policy narrows: POSTs were allowed before.
    let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
    let (code, text) = diff(&old, &new, &["--fail-on", "narrow"], tmp.path());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("1 narrowed"), "{text}");
}

#[test]
fn regression_namespace_labels_differ_within_a_namespace() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: deny-team-b-api
spec:
  endpointSelector:
    matchLabels:
      k8s:io.cilium.k8s.namespace.labels.team: tb
      app: api
  ingressDeny:
  - fromEntities: [all]
";
    write_files(&tmp.path().join("policies"), &[("p.yaml", policy)]);
    let polt = tmp.path().join("t.polt");
    std::fs::write(
        &polt,
        "policies \"policies/\"\n\
         expect allow a/{} -> a/{app=api,io.cilium.k8s.namespace.labels.team=tb} tcp/80\n",
    )
    .unwrap();
    // Namespace `a` labelled team=tb: its api pods deny every ingress.
    let (code, text) = transcript(&["test", polt.to_str().unwrap()], tmp.path());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("counterexample:"), "{text}");
}

#[test]
fn regression_labels_the_identity_filter_drops() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: by-hash
  namespace: a
spec:
  endpointSelector:
    matchLabels:
      pod-template-hash: abc
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: web
";
    write_files(&tmp.path().join("policies"), &[("p.yaml", policy)]);
    let polt = tmp.path().join("t.polt");
    std::fs::write(
        &polt,
        "policies \"policies/\"\nexpect allow a/{} -> a/{} tcp/80\n",
    )
    .unwrap();
    // No identity carries pod-template-hash, so the policy selects no pod.
    let (code, text) = transcript(&["test", polt.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("internal error"), "{text}");
}

#[test]
fn regression_named_ports_make_unrelated_changes_undecided() {
    let tmp = tempfile::tempdir().unwrap();
    let new = tmp.path().join("new");
    // Widen postgres' ingress port, which no client's egress allows: no flow changes.
    copy_demo(&new, |name, t| {
        Some(if name == "knp-shop-postgres-ingress.yaml" {
            t.replacen(
                "      port: 5432\n",
                "      port: 5432\n      endPort: 5440\n",
                1,
            )
        } else {
            t
        })
    });
    let old = root().join("policies/demo/policies");
    let (code, text) = diff(&old, &new, &["--fail-on", "any"], tmp.path());
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("unknown"), "{text}");
}

/// A host policy that neither set changes, beside a changed pod policy with an item towards
/// the kube-apiserver: the hosts' unmodelled decisions are one fact in both sets, so the
/// unchanged item does not seem to change flows to the hosts.
#[test]
fn regression_unchanged_host_policies_are_the_same_in_both_sets() {
    const HOST: &str = "\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: ssh}
spec:
  nodeSelector: {matchLabels: {node.kubernetes.io/instance-type: m7g.4xlarge}}
  ingress:
  - fromCIDRSet: [{cidr: 10.20.182.0/24}]
    toPorts: [{ports: [{port: '22', protocol: TCP}]}]
";
    let pod = |port: &str| {
        format!(
            "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: nginx, namespace: kube-system}}
spec:
  endpointSelector: {{matchLabels: {{app: nginx}}}}
  egress:
  - toEndpoints: [{{matchExpressions: [{{key: k8s:io.kubernetes.pod.namespace, operator: Exists}}]}}]
    toPorts: [{{ports: [{{port: '{port}', protocol: TCP}}]}}]
  - toEntities: [kube-apiserver]
    toPorts: [{{ports: [{{port: '6443', protocol: TCP}}]}}]
"
        )
    };
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
    let (a, b) = (pod("8080"), pod("8081"));
    write_files(&old, &[("host.yaml", HOST), ("pod.yaml", &a)]);
    write_files(&new, &[("host.yaml", HOST), ("pod.yaml", &b)]);
    let (code, text) = diff(&old, &new, &["--fail-on", "any"], tmp.path());
    assert_eq!(code, 1, "{text}");
    assert!(!text.contains("unknown"), "{text}");
    assert!(
        text.contains("1 widened") && text.contains("1 narrowed"),
        "{text}"
    );
}

/// A DNS pattern narrowed to one name: the lookups it no longer allows are a class of their
/// own, with a query as example; the reverse change widens.
#[test]
fn narrowing_a_dns_pattern_narrows_with_a_query_as_example() {
    const DNS: &str = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-dns, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}}]
    toPorts:
    - ports: [{port: '53', protocol: UDP}]
      rules:
        dns: [{matchPattern: '*.example.com'}]
";
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
    write_files(&old, &[("dns.yaml", DNS)]);
    let narrowed = DNS.replace(
        "matchPattern: '*.example.com'",
        "matchName: api.example.com",
    );
    write_files(&new, &[("dns.yaml", &narrowed)]);
    let (code, text) = diff(&old, &new, &["--format", "json"], tmp.path());
    assert_eq!(code, 0, "{text}");
    let json: serde_json::Value = serde_json::from_str(
        text.split("--- stdout\n")
            .nth(1)
            .unwrap()
            .split("--- stderr")
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json["widened"], 0, "{text}");
    assert_eq!(json["narrowed"], 1, "{text}");
    let change = &json["changes"][0];
    assert_eq!(change["l7_protocol"], "DNS", "{text}");
    let example = change["example"].as_str().unwrap();
    assert!(
        example.contains(" dns \"") && example.contains(".example.com.\""),
        "{text}"
    );
    assert!(!example.contains("\"api.example.com.\""), "{text}");
    assert!(json["unknown"].as_array().unwrap().is_empty(), "{text}");
    // The other way round: the same lookups are allowed again.
    assert_eq!(gates(&new, &old, tmp.path()), [1, 0, 1]);
}

/// A `toFQDNs` item removed: the flows it allowed are a class, with an example that says
/// which DNS answer it assumes, replayed with that answer.
#[test]
fn removing_a_fqdn_item_narrows_with_the_dns_answer_in_the_example() {
    const FQDN: &str = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-out, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}}]
    toPorts:
    - ports: [{port: '53', protocol: UDP}]
      rules:
        dns: [{matchPattern: '*'}]
  - toFQDNs: [{matchName: api.stripe.com}, {matchPattern: '*.s3.amazonaws.com'}]
    toPorts: [{ports: [{port: '443', protocol: TCP}]}]
";
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
    write_files(&old, &[("web.yaml", FQDN)]);
    let without = FQDN.replace(
        "toFQDNs: [{matchName: api.stripe.com}, {matchPattern: '*.s3.amazonaws.com'}]",
        "toFQDNs: [{matchName: api.stripe.com}]",
    );
    write_files(&new, &[("web.yaml", &without)]);
    let (code, text) = diff(&old, &new, &["--fail-on", "narrow"], tmp.path());
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("0 widened (+, newly allowed), 1 narrowed"),
        "{text}"
    );
    assert!(!text.contains("unknown"), "{text}");
    assert!(
        text.contains("after the DNS proxy answered polc.s3.amazonaws.com. with"),
        "{text}"
    );
}

/// `polc diff --git REV PATH`: the working tree's policies against their committed version.
#[test]
fn diff_against_a_git_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let pol = repo.join("policies");
    write_mini(&pol, |_, t| t.to_string());
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "-q",
        "-m",
        "policies",
    ]);
    // Unchanged: no difference.
    let (code, out, err) = polc(
        &[
            "diff",
            "--git",
            "HEAD",
            pol.to_str().unwrap(),
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
    // Widened in the working tree.
    write_mini(&pol, |_, t| {
        t.replace(
            "      - port: \"8080\"\n",
            "      - port: \"8080\"\n        endPort: 8090\n",
        )
    });
    let (code, out, err) = polc(
        &[
            "diff",
            "--git",
            "HEAD",
            pol.to_str().unwrap(),
            "--fail-on",
            "widen",
        ],
        b"",
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("+ "), "{out}");
    // A revision that does not exist is bad input.
    let (code, _, err) = polc(
        &["diff", "--git", "no-such-rev", pol.to_str().unwrap()],
        b"",
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no-such-rev"), "{err}");
}
