//! `polc test`: the demo's policy tests pass; a broken copy of a demo policy makes the right
//! expectation fail with a counterexample; parse errors point at line and column.

mod common;

use common::{polc, root};

#[test]
fn demo_policy_tests_pass() {
    let demo = root().join("policies/demo");
    let (code, out, err) = polc(&["test", demo.to_str().unwrap()], b"");
    assert_eq!(code, 0, "{out}{err}");
    // 17 against the demo cluster (demo.polt), 9 for every pod that could exist (symbolic.polt).
    assert!(out.contains("26 expectations, 26 hold, 0 fail"), "{out}");
}

#[test]
fn a_broken_policy_fails_the_right_expectation_with_a_counterexample() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = root().join("policies/demo");
    let policies = tmp.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    for e in std::fs::read_dir(demo.join("policies")).unwrap() {
        let p = e.unwrap().path();
        let mut text = std::fs::read_to_string(&p).unwrap();
        // Break the backend's L7 allow-list: any method on any path.
        if p.file_name().unwrap() == "shop-backend-ingress-http.yaml" {
            text = text.replace("method: \"GET|POST|DELETE\"", "method: \".*\"");
            text = text.replace("path: \"/api/v1/cart(/.*)?\"", "path: \"/.*\"");
        }
        std::fs::write(policies.join(p.file_name().unwrap()), text).unwrap();
    }
    let polt = tmp.path().join("t.polt");
    std::fs::write(
        &polt,
        format!(
            "inventory \"{}\"\npolicies \"policies/\"\n\
             expect allow shop/{{app=frontend}} -> shop/{{app=backend}} tcp/8080 http GET \"/healthz\"\n\
             expect deny  shop/{{app=frontend}} -> shop/{{app=backend}} tcp/8080 http DELETE \"/api/v1/products\"\n",
            demo.join("cluster").display()
        ),
    )
    .unwrap();
    let (code, out, err) = polc(&["test", polt.to_str().unwrap()], b"");
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("ok   "), "{out}");
    let fail = out.lines().position(|l| l.starts_with("FAIL")).unwrap();
    assert!(
        out.lines().nth(fail).unwrap().contains(":4 expect deny"),
        "{out}"
    );
    let cx = out.lines().nth(fail + 1).unwrap();
    assert!(
        cx.contains("counterexample: shop/frontend-")
            && cx.contains("-> shop/backend-")
            && cx.ends_with(": allow"),
        "{out}"
    );
    assert!(
        out.contains("CiliumNetworkPolicy shop/backend-ingress-http"),
        "{out}"
    );
    assert!(out.contains("2 expectations, 1 hold, 1 fail"), "{out}");
}

#[test]
fn parse_errors_point_at_line_and_column_and_exit_two() {
    let tmp = tempfile::tempdir().unwrap();
    let polt = tmp.path().join("bad.polt");
    std::fs::write(&polt, "# ok\nexpect allow a/{} -> b/{} tcp/99999\n").unwrap();
    let (code, out, err) = polc(&["test", polt.to_str().unwrap()], b"");
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("bad.polt:2:"), "{err}");
    assert!(err.contains("a port is 0-65535"), "{err}");
    std::fs::write(&polt, "expect allow a/{} -> b/{} tcp/80\n").unwrap();
    let (code, _, err) = polc(&["test", polt.to_str().unwrap()], b"");
    assert_eq!(code, 2);
    assert!(err.contains("no policies"), "{err}");
    let demo = root().join("policies/demo/policies");
    let (code, _, err) = polc(
        &[
            "test",
            polt.to_str().unwrap(),
            "--policies",
            demo.to_str().unwrap(),
        ],
        b"",
    );
    // Without an inventory the expectation is checked for every pod that could exist.
    assert!(code == 0 || code == 1, "{err}");
    assert!(err.is_empty(), "{err}");
    let (code, _, err) = polc(&["test", tmp.path().join("none").to_str().unwrap()], b"");
    assert_eq!(code, 2, "{err}");
}
