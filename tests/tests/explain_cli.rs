//! `polc explain` end to end on the demo cluster (`policies/demo`): human and JSON output of
//! single flows (allowed, default-denied, denied by a deny rule, rejected at L7), the rule
//! locations and map entries they cite, the bad-query and bad-input errors, hostile flows
//! files, and `--flows` with failing expectations.

mod common;

use common::{polc, root};
use serde_json::Value;
use std::path::Path;

const FRONTEND: &str = "shop/frontend-7f9c6d8b54-2lmnp";
const FRONTEND_2: &str = "shop/frontend-7f9c6d8b54-8vtxz";
const BACKEND: &str = "shop/backend-5c8d9f7b6-h4jkl";
const NGINX: &str = "kube-system/ingress-nginx-controller-6b8c5f7d9f-qw8rt";
const REDIS: &str = "shop/redis-0";
const COREDNS: &str = "kube-system/coredns-5d78c9869d-4xkqp";

/// First identity of a CIDR (local-scope) identity.
const CIDR_IDENTITY_BASE: u64 = 1 << 24;

fn path(rel: &str) -> String {
    root().join(rel).to_string_lossy().into_owned()
}

/// `explain --policies <demo policies> --inventory <demo cluster>` followed by `extra`.
fn explain(extra: &[&str]) -> (i32, String, String) {
    let policies = path("policies/demo/policies");
    let inventory = path("policies/demo/cluster");
    let mut args = vec![
        "explain",
        "--policies",
        policies.as_str(),
        "--inventory",
        inventory.as_str(),
    ];
    args.extend_from_slice(extra);
    polc(&args, b"")
}

/// `explain ... --format json` of one flow: exit 0, nothing on stderr, the parsed document.
fn explain_json(extra: &[&str]) -> Value {
    let mut args = extra.to_vec();
    args.extend_from_slice(&["--format", "json"]);
    let (code, out, err) = explain(&args);
    assert_eq!(code, 0, "explain {extra:?}: {err}");
    assert!(err.is_empty(), "explain {extra:?} wrote to stderr: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `explain ... --format human` of one flow: exit 0, nothing on stderr, the text.
fn explain_human(extra: &[&str]) -> String {
    let (code, out, err) = explain(extra);
    assert_eq!(code, 0, "explain {extra:?}: {err}");
    assert!(err.is_empty(), "explain {extra:?} wrote to stderr: {err}");
    out
}

/// Line `line` (one-based) of `file`.
fn line_of(file: &str, line: u64) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    let n = usize::try_from(line).unwrap();
    assert!(n >= 1, "{file}: line 0");
    text.lines()
        .nth(n - 1)
        .unwrap_or_else(|| panic!("{file} has no line {line}"))
        .to_string()
}

/// The reasons of a JSON explanation.
fn reasons(v: &Value) -> &Vec<Value> {
    v["reasons"].as_array().unwrap()
}

/// The reason of `endpoint` in `direction`.
fn reason<'a>(v: &'a Value, endpoint: &str, direction: &str) -> &'a Value {
    reasons(v)
        .iter()
        .find(|r| r["endpoint"] == endpoint && r["direction"] == direction)
        .unwrap_or_else(|| panic!("no {direction} reason of {endpoint} in {v:#}"))
}

/// The rule of `policy` cited by a reason.
fn rule<'a>(r: &'a Value, policy: &str) -> &'a Value {
    r["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["policy"] == policy)
        .unwrap_or_else(|| panic!("{policy} is not among the rules of {r:#}"))
}

/// Checks that a cited rule points into `file_suffix` at a line that contains `text`, and
/// that its column is inside that line.
fn assert_rule_points_at(rule: &Value, file_suffix: &str, text: &str) {
    let file = rule["file"].as_str().unwrap();
    assert!(
        file.replace('\\', "/").ends_with(file_suffix),
        "{file} is not {file_suffix}"
    );
    let line = rule["line"].as_u64().unwrap();
    let col = rule["column"].as_u64().unwrap();
    let at = line_of(file, line);
    assert!(
        at.contains(text),
        "{} {} points at {file}:{line}, `{at}`, which does not contain `{text}`",
        rule["policy"],
        rule["path"]
    );
    assert!(
        col >= 1 && usize::try_from(col).unwrap() <= at.chars().count(),
        "column {col} is outside `{at}`"
    );
}

/// IANA protocol numbers of the `--proto` names.
fn proto_number(proto: &str) -> u64 {
    match proto.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "sctp" => 132,
        "icmp" => 1,
        "icmpv6" => 58,
        p => panic!("unknown protocol {p}"),
    }
}

/// Checks that a reason's map entry is a key the datapath lookup of this flow can hit: the
/// reason's direction, the remote identity (or 0 = any), the flow's protocol (or 0 = any) and a
/// port prefix that contains the flow's port.
fn assert_entry_covers_flow(r: &Value, proto: &str, port: u64) {
    let e = &r["map_entry"];
    let key = &e["key"];
    assert_eq!(key["direction"], r["direction"], "{r:#}");
    let id = key["identity"].as_u64().unwrap();
    assert!(
        id == 0 || Some(id) == r["remote_identity"].as_u64(),
        "key identity {id} is neither 0 nor the remote identity: {r:#}"
    );
    let key_proto = key["protocol"].as_u64().unwrap();
    let prefix_len = key["prefix_len"].as_u64().unwrap();
    let key_port = key["port"].as_u64().unwrap();
    if key_proto == 0 {
        assert_eq!(prefix_len, 40, "{r:#}");
    } else {
        assert_eq!(key_proto, proto_number(proto), "{r:#}");
        assert!((48..=64).contains(&prefix_len), "{r:#}");
        let bits = prefix_len - 48;
        let shift = 16 - bits;
        assert_eq!(
            port >> shift,
            key_port >> shift,
            "port {port} is outside the key's port prefix {key_port}/{bits}: {r:#}"
        );
    }
    let text = e["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("identity {id}")),
        "map entry text `{text}` does not name identity {id}"
    );
    assert!(
        text.contains(e["precedence"].as_str().unwrap()),
        "map entry text `{text}` does not give the precedence"
    );
}

/// The map entry must agree with the reason's L4 verdict: a deny at L4 has no entry or a deny
/// entry; an allow has an allow or a redirect entry. An L7 rejection keeps its redirect.
fn assert_entry_agrees(r: &Value, context: &str) {
    let entry = r["map_entry"]["verdict"].as_str();
    let why = r["why"].as_str().unwrap();
    match (r["verdict"].as_str().unwrap(), why) {
        ("deny", "L7 rules reject the request") => assert_eq!(
            entry,
            Some("redirect"),
            "{context}: an L7 rejection needs a redirect entry: {r:#}"
        ),
        ("deny", _) => assert!(
            matches!(entry, None | Some("deny")),
            "{context}: denied ({why}) but the map entry is {entry:?}: {r:#}"
        ),
        ("allow", _) => assert!(
            matches!(entry, Some("allow" | "redirect")),
            "{context}: allowed ({why}) but the map entry is {entry:?}: {r:#}"
        ),
        (v, _) => panic!("{context}: verdict {v}"),
    }
    if entry == Some("redirect") {
        assert!(
            r["map_entry"]["proxy_port"].as_u64().unwrap() > 0,
            "{context}: a redirect needs a proxy port: {r:#}"
        );
        assert!(r["proxy"].is_string(), "{context}: {r:#}");
    }
}

/// Reasons of pod-to-pod flows see each other: the sender's identity is the receiver's remote
/// identity and the other way round.
fn assert_identities_mirror(v: &Value, from: &str, to: &str) {
    let egress = reason(v, from, "egress");
    let ingress = reason(v, to, "ingress");
    assert_eq!(egress["identity"], ingress["remote_identity"], "{v:#}");
    assert_eq!(ingress["identity"], egress["remote_identity"], "{v:#}");
    for r in [egress, ingress] {
        assert!(r["identity"].as_u64().unwrap() >= 256, "{r:#}");
    }
}

#[test]
fn allowed_flow_json_and_human() {
    let q = [
        "--from",
        "203.0.113.9",
        "--to",
        NGINX,
        "--proto",
        "tcp",
        "--port",
        "443",
    ];
    let v = explain_json(&q);
    assert_eq!(v["verdict"], "allow");
    assert_eq!(v["flow"]["to"], NGINX);
    assert!(
        v["flow"]["from"]
            .as_str()
            .unwrap()
            .starts_with("203.0.113.9")
    );
    assert_eq!(v["flow"]["proto"], "TCP");
    assert_eq!(v["flow"]["port"], 443);
    // An outside address enforces nothing: only the controller's ingress decides.
    assert_eq!(reasons(&v).len(), 1, "{v:#}");
    let r = reason(&v, NGINX, "ingress");
    assert_eq!(r["verdict"], "allow");
    assert_eq!(r["why"], "allow rule");
    assert!(r["identity"].as_u64().unwrap() >= 256, "{r:#}");
    // 203.0.113.9 is inside a CIDR the policies name (the fraud-scoring partner group): its
    // own CIDR identity, which `world` covers.
    let remote = r["remote_identity"].as_u64().unwrap();
    assert!(
        remote >= CIDR_IDENTITY_BASE || remote == 2 || remote == 9,
        "{r:#}"
    );
    let x = rule(r, "CiliumNetworkPolicy kube-system/ingress-nginx");
    assert_eq!(x["path"], "spec.ingress[0]");
    assert_rule_points_at(x, "kube-system-ingress-nginx.yaml", "fromEntities");
    assert_eq!(r["map_entry"]["verdict"], "allow");
    assert_eq!(r["map_entry"]["proxy_port"], 0);
    assert_entry_covers_flow(r, "tcp", 443);
    assert_entry_agrees(r, "allowed flow");

    // The human rendering says the same.
    let h = explain_human(&q);
    assert!(h.starts_with("flow: 203.0.113.9"), "{h}");
    assert!(h.contains("verdict: ALLOW"), "{h}");
    assert!(
        h.contains(&format!(
            "ingress of {NGINX} (identity {}), remote identity {remote}: allow (allow rule)",
            r["identity"]
        )),
        "{h}"
    );
    assert!(
        h.contains(&format!(
            "CiliumNetworkPolicy kube-system/ingress-nginx spec.ingress[0]  ({}:{}:{})",
            x["file"].as_str().unwrap(),
            x["line"],
            x["column"]
        )),
        "{h}"
    );
    assert!(
        h.contains(&format!(
            "map entry: {}",
            r["map_entry"]["text"].as_str().unwrap()
        )),
        "{h}"
    );
}

#[test]
fn default_deny_flow_json_and_human() {
    let q = [
        "--from",
        "203.0.113.9",
        "--to",
        FRONTEND,
        "--proto",
        "tcp",
        "--port",
        "8080",
    ];
    let v = explain_json(&q);
    assert_eq!(v["verdict"], "deny");
    let r = reason(&v, FRONTEND, "ingress");
    assert_eq!(r["verdict"], "deny");
    assert_eq!(r["why"], "default deny");
    assert!(
        r["note"].as_str().unwrap().contains("default-deny"),
        "{r:#}"
    );
    assert!(r["identity"].as_u64().unwrap() >= 256, "{r:#}");
    // Every rule that switches the frontend's ingress to default-deny is cited, as a rule
    // (`spec`), not an item.
    let x = rule(r, "CiliumNetworkPolicy shop/default-deny");
    assert_eq!(x["path"], "spec");
    rule(r, "CiliumNetworkPolicy shop/frontend-ingress");
    for x in r["rules"].as_array().unwrap() {
        assert_eq!(x["path"], "spec", "{x:#}");
        // The location is inside the rule: below `spec:`, indented.
        let file = x["file"].as_str().unwrap();
        let text = std::fs::read_to_string(file).unwrap();
        let spec_line = text
            .lines()
            .position(|l| l.starts_with("spec:"))
            .unwrap_or_else(|| panic!("{file} has no spec"))
            + 1;
        let line = x["line"].as_u64().unwrap();
        assert!(
            usize::try_from(line).unwrap() >= spec_line,
            "{x:#} is above `spec:` (line {spec_line})"
        );
        let text = line_of(file, line);
        assert!(text.starts_with("  ") || text.starts_with("spec:"), "{x:#}");
    }
    assert_entry_agrees(r, "default-denied flow");
    if !r["map_entry"].is_null() {
        assert_entry_covers_flow(r, "tcp", 8080);
    }

    let h = explain_human(&q);
    assert!(h.contains("verdict: DENY"), "{h}");
    assert!(h.contains(": deny (default deny)"), "{h}");
    assert!(
        h.contains("CiliumNetworkPolicy shop/default-deny spec"),
        "{h}"
    );
    if r["map_entry"].is_null() {
        assert!(h.contains("map entry: none (DROP_POLICY)"), "{h}");
    }
}

#[test]
fn deny_rule_flow_json_and_human() {
    let q = [
        "--from",
        "198.51.100.7",
        "--to",
        NGINX,
        "--proto",
        "tcp",
        "--port",
        "80",
    ];
    let v = explain_json(&q);
    assert_eq!(v["verdict"], "deny");
    let r = reason(&v, NGINX, "ingress");
    assert_eq!(r["verdict"], "deny");
    assert_eq!(r["why"], "deny rule");
    let x = rule(r, "CiliumNetworkPolicy kube-system/ingress-nginx-blocklist");
    assert_eq!(x["path"], "spec.ingressDeny[0]");
    assert_rule_points_at(x, "kube-system-ingress-nginx-blocklist.yaml", "fromCIDRSet");
    let remote = r["remote_identity"].as_u64().unwrap();
    assert!(remote >= CIDR_IDENTITY_BASE, "{r:#}");
    assert_eq!(r["map_entry"]["verdict"], "deny", "{r:#}");
    assert_entry_covers_flow(r, "tcp", 80);
    assert_entry_agrees(r, "deny-rule flow");

    // The carved-out range (`except`) is another identity, and the world allow applies.
    let v2 = explain_json(&[
        "--from",
        "198.51.100.130",
        "--to",
        NGINX,
        "--proto",
        "tcp",
        "--port",
        "80",
    ]);
    assert_eq!(v2["verdict"], "allow");
    let r2 = reason(&v2, NGINX, "ingress");
    assert_ne!(r2["remote_identity"], remote, "{r2:#}");
    assert_eq!(r2["identity"], r["identity"]);
    assert_entry_covers_flow(r2, "tcp", 80);
    assert_entry_agrees(r2, "except range");

    let h = explain_human(&q);
    assert!(h.contains("verdict: DENY"), "{h}");
    assert!(
        h.contains(&format!("remote identity {remote}: deny (deny rule)")),
        "{h}"
    );
    assert!(
        h.contains("CiliumNetworkPolicy kube-system/ingress-nginx-blocklist spec.ingressDeny[0]"),
        "{h}"
    );
    assert!(h.contains("-> deny, precedence"), "{h}");
}

#[test]
fn l7_denied_http_request_json_and_human() {
    let q = [
        "--from",
        FRONTEND,
        "--to",
        BACKEND,
        "--proto",
        "tcp",
        "--port",
        "8080",
        "--http-method",
        "DELETE",
        "--http-path",
        "/api/v1/products/sku-123",
    ];
    let v = explain_json(&q);
    assert_eq!(v["verdict"], "deny");
    assert_eq!(reasons(&v).len(), 2, "{v:#}");
    assert_identities_mirror(&v, FRONTEND, BACKEND);

    // The sender's egress allows it at L4 ...
    let out = reason(&v, FRONTEND, "egress");
    assert_eq!(out["verdict"], "allow");
    assert_eq!(out["why"], "allow rule");
    let x = rule(out, "CiliumNetworkPolicy shop/frontend-to-backend");
    assert_eq!(x["path"], "spec.egress[0]");
    assert_rule_points_at(x, "shop-frontend-egress.yaml", "toEndpoints");
    assert_eq!(out["map_entry"]["verdict"], "allow");
    assert_entry_covers_flow(out, "tcp", 8080);

    // ... and the receiver's proxy rejects the request.
    let inn = reason(&v, BACKEND, "ingress");
    assert_eq!(inn["verdict"], "deny");
    assert_eq!(inn["why"], "L7 rules reject the request");
    assert_eq!(inn["proxy"], "http");
    let x = rule(inn, "CiliumNetworkPolicy shop/backend-ingress-http");
    assert_eq!(x["path"], "spec.ingress[0]");
    assert_rule_points_at(x, "shop-backend-ingress-http.yaml", "fromEndpoints");
    assert_eq!(inn["map_entry"]["verdict"], "redirect");
    assert_entry_covers_flow(inn, "tcp", 8080);
    for r in reasons(&v) {
        assert_entry_agrees(r, "L7-denied flow");
    }

    let h = explain_human(&q);
    assert!(
        h.contains("TCP/8080 HTTP DELETE /api/v1/products/sku-123"),
        "{h}"
    );
    assert!(h.contains("verdict: DENY"), "{h}");
    assert!(h.contains(": deny (L7 rules reject the request)"), "{h}");
    assert!(h.contains("port redirected to the http proxy"), "{h}");
    assert!(
        h.contains(&format!(
            "redirect to cilium-http-ingress (port {})",
            inn["map_entry"]["proxy_port"]
        )),
        "{h}"
    );

    // The same flow with a request the rules allow.
    let ok = explain_json(&[
        "--from",
        FRONTEND,
        "--to",
        BACKEND,
        "--proto",
        "tcp",
        "--port",
        "8080",
        "--http-method",
        "GET",
        "--http-path",
        "/api/v1/products/sku-123",
    ]);
    assert_eq!(ok["verdict"], "allow");
    let inn_ok = reason(&ok, BACKEND, "ingress");
    assert_eq!(inn_ok["why"], "L7 rule allows the request");
    assert_eq!(inn_ok["map_entry"], inn["map_entry"]);
}

#[test]
fn http_header_and_dns_requests() {
    let base = [
        "--from",
        FRONTEND,
        "--to",
        BACKEND,
        "--proto",
        "tcp",
        "--port",
        "8080",
        "--http-method",
        "POST",
        "--http-path",
        "/api/v1/checkout",
    ];
    let mut with = base.to_vec();
    with.extend_from_slice(&["--http-header", "X-Request-Id: 4f1c"]);
    assert_eq!(explain_json(&with)["verdict"], "allow");
    let without = explain_json(&base);
    assert_eq!(without["verdict"], "deny");
    assert_eq!(
        reason(&without, BACKEND, "ingress")["why"],
        "L7 rules reject the request"
    );

    // DNS: the sender's egress goes through the DNS proxy.
    let dns = explain_json(&[
        "--from",
        REDIS,
        "--to",
        COREDNS,
        "--proto",
        "udp",
        "--port",
        "53",
        "--dns-query",
        "catalog.shop.svc.cluster.local",
    ]);
    assert_eq!(dns["verdict"], "allow");
    assert_identities_mirror(&dns, REDIS, COREDNS);
    let r = reason(&dns, REDIS, "egress");
    assert_eq!(r["proxy"], "dns");
    assert_eq!(r["map_entry"]["verdict"], "redirect");
    assert_entry_covers_flow(r, "udp", 53);
    for r in reasons(&dns) {
        assert_entry_agrees(r, "DNS flow");
    }
}

#[test]
fn icmp_flows_key_the_type_as_the_port() {
    // ccnp-host-firewall-nodes lets remote nodes ping every node (EchoRequest, both families).
    let q = |proto: &'static str, t: &'static str| {
        [
            "--from",
            "host/node-1",
            "--to",
            "host/node-2",
            "--proto",
            proto,
            "--icmp-type",
            t,
        ]
    };
    for (proto, ts, t) in [("icmp", "8", 8), ("icmpv6", "128", 128)] {
        let v = explain_json(&q(proto, ts));
        assert_eq!(v["verdict"], "allow", "{proto} {t}: {v:#}");
        assert_eq!(v["flow"]["port"], t);
        let r = reason(&v, "host/node-2", "ingress");
        assert_eq!(r["identity"], 1, "{r:#}");
        assert_eq!(r["why"], "allow rule");
        let x = rule(r, "CiliumClusterwideNetworkPolicy host-firewall-nodes");
        assert_rule_points_at(x, "ccnp-host-firewall-nodes.yaml", "fromEntities");
        assert_eq!(r["map_entry"]["key"]["protocol"], proto_number(proto));
        assert_eq!(r["map_entry"]["key"]["port"], t);
        assert_entry_covers_flow(r, proto, t);
        // The sender's egress is not enforced: the allow-all entry.
        let out = reason(&v, "host/node-1", "egress");
        assert_eq!(out["why"], "not enforced");
        assert_eq!(out["map_entry"]["key"]["identity"], 0);
        for r in reasons(&v) {
            assert_entry_agrees(r, proto);
        }
    }
    // An echo reply is not allowed.
    let v = explain_json(&q("icmp", "0"));
    assert_eq!(v["verdict"], "deny");
    let r = reason(&v, "host/node-2", "ingress");
    assert_eq!(r["why"], "default deny");
    assert_entry_agrees(r, "ICMP echo reply");
}

/// ICMPv6 from an IPv4 address (or ICMP from an IPv6 one) cannot happen; like a port with
/// ICMP, it should be refused as an invalid flow.
#[test]
fn icmp_version_must_match_the_address_family() {
    for (from, proto, t) in [
        ("203.0.113.9", "icmpv6", "128"),
        ("2001:db8::1", "icmp", "8"),
    ] {
        let (code, out, err) = explain(&[
            "--from",
            from,
            "--to",
            "host/node-2",
            "--proto",
            proto,
            "--icmp-type",
            t,
        ]);
        assert_eq!(code, 2, "{from} {proto}: {out}{err}");
        assert!(err.contains("Q0402"), "{err}");
    }
}

#[test]
fn addresses_of_pods_and_nodes_are_those_endpoints() {
    // 10.244.1.20 is frontend-...-2lmnp's podIP; 10.0.0.12 node-2's InternalIP.
    let by_name = explain_json(&[
        "--from", FRONTEND, "--to", BACKEND, "--proto", "tcp", "--port", "8080",
    ]);
    let by_ip = explain_json(&[
        "--from",
        "10.244.1.20",
        "--to",
        BACKEND,
        "--proto",
        "tcp",
        "--port",
        "8080",
    ]);
    assert_eq!(by_name, by_ip);
    let host = explain_json(&[
        "--from",
        "host/node-2",
        "--to",
        FRONTEND,
        "--proto",
        "tcp",
        "--port",
        "8080",
    ]);
    let host_ip = explain_json(&[
        "--from",
        "10.0.0.12",
        "--to",
        FRONTEND,
        "--proto",
        "tcp",
        "--port",
        "8080",
    ]);
    assert_eq!(host, host_ip);
    assert_eq!(host["verdict"], "allow");
    assert_eq!(reason(&host, FRONTEND, "ingress")["why"], "allow-localhost");
    // Replicas of one deployment share an identity.
    let replica = explain_json(&[
        "--from", FRONTEND_2, "--to", BACKEND, "--proto", "tcp", "--port", "8080",
    ]);
    assert_eq!(
        reason(&replica, FRONTEND_2, "egress")["identity"],
        reason(&by_name, FRONTEND, "egress")["identity"]
    );
}

/// Each bad query: exit 2, nothing on stdout, `polc: error[CODE]` and a message that says
/// what is wrong on stderr.
#[test]
fn bad_queries_exit_two_with_a_query_code() {
    let f = FRONTEND;
    let b = BACKEND;
    #[rustfmt::skip]
    let cases: Vec<(Vec<&str>, &str, &[&str])> = vec![
        // Unknown pod, namespace, node.
        (vec!["--from", "shop/nope", "--to", b, "--proto", "tcp", "--port", "80"],
            "Q0401", &["no pod `nope` in namespace `shop`"]),
        (vec!["--from", f, "--to", "nowhere/x", "--proto", "tcp", "--port", "80"],
            "Q0401", &["no pod `x` in namespace `nowhere`"]),
        (vec!["--from", "host/node-9", "--to", f, "--proto", "tcp", "--port", "80"],
            "Q0401", &["no node `node-9`", "node-1, node-2, node-3"]),
        // Not an endpoint or an address.
        (vec!["--from", "10.0.0.300", "--to", f, "--proto", "tcp", "--port", "80"],
            "Q0401", &["`10.0.0.300` is not NAMESPACE/POD, host/NODE or an IP address"]),
        (vec!["--from", "frontend", "--to", b, "--proto", "tcp", "--port", "80"],
            "Q0401", &["`frontend` is not NAMESPACE/POD"]),
        (vec!["--from", f, "--to", "fd00::zz", "--proto", "tcp", "--port", "80"],
            "Q0401", &["`fd00::zz`"]),
        // The ClusterIP of a Service.
        (vec!["--from", f, "--to", "10.96.0.10", "--proto", "udp", "--port", "53"],
            "Q0401", &["ClusterIP of Service kube-system/kube-dns", "backend pod"]),
        // Ports and ICMP types.
        (vec!["--from", f, "--to", b, "--proto", "tcp"],
            "Q0402", &["a TCP flow needs a destination port"]),
        (vec!["--from", f, "--to", b, "--proto", "udp"],
            "Q0402", &["a UDP flow needs a destination port"]),
        (vec!["--from", f, "--to", b, "--proto", "tcp", "--port", "0"],
            "Q0402", &["a port is 1-65535"]),
        (vec!["--from", f, "--to", b, "--proto", "icmp", "--port", "80"],
            "Q0402", &["ICMP has no ports", "--icmp-type"]),
        (vec!["--from", f, "--to", b, "--proto", "icmpv6", "--port", "80"],
            "Q0402", &["ICMP has no ports"]),
        (vec!["--from", f, "--to", b, "--proto", "icmp"],
            "Q0402", &["an ICMP flow needs its type"]),
        (vec!["--from", f, "--to", b, "--proto", "tcp", "--port", "80", "--icmp-type", "8"],
            "Q0402", &["has ports, not ICMP types"]),
        // Protocols.
        (vec!["--from", f, "--to", b, "--proto", "gre", "--port", "80"],
            "Q0402", &["`gre` is not a protocol", "tcp, udp, sctp, icmp or icmpv6"]),
        (vec!["--from", f, "--to", b, "--proto", "", "--port", "80"],
            "Q0402", &["is not a protocol"]),
        // Requests.
        (vec!["--from", f, "--to", b, "--proto", "tcp", "--port", "80", "--http-header", "no colon"],
            "Q0402", &["`no colon` is not a header", "Name: value"]),
        (vec!["--from", f, "--to", b, "--proto", "tcp", "--port", "80",
              "--http-method", "GET", "--dns-query", "example.com"],
            "Q0402", &["one request: HTTP, DNS or Kafka"]),
        (vec!["--from", f, "--to", b, "--proto", "icmp", "--icmp-type", "8",
              "--http-method", "GET"],
            "Q0402", &["an L7 request needs TCP or UDP"]),
    ];
    for (args, code, fragments) in &cases {
        let (got, out, err) = explain(args);
        assert_eq!(got, 2, "{args:?}: exit {got}\n{out}{err}");
        assert!(out.is_empty(), "{args:?}: stdout {out}");
        assert!(
            err.starts_with(&format!("polc: error[{code}]: ")),
            "{args:?}: expected {code}, stderr {err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        for frag in *fragments {
            assert!(err.contains(frag), "{args:?}: `{frag}` not in {err}");
        }
    }
}

#[test]
fn bad_arguments_exit_two() {
    let f = FRONTEND;
    let b = BACKEND;
    #[rustfmt::skip]
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--from", f, "--to", b, "--proto", "tcp", "--port", "70000"], "70000"),
        (vec!["--from", f, "--to", b, "--proto", "tcp", "--port", "-1"], "-1"),
        (vec!["--from", f, "--to", b, "--proto", "icmp", "--icmp-type", "256"], "256"),
        (vec!["--from", f, "--to", b, "--port", "80"], "--proto"),
        (vec!["--from", f, "--proto", "tcp", "--port", "80"], "--to"),
        (vec!["--from", f, "--to", b, "--proto", "tcp", "--port", "80", "--format", "xml"], "xml"),
        (vec!["--from", f, "--to", b, "--proto", "tcp", "--port", "80",
              "--flows", "x.yaml"], "--flows"),
    ];
    for (args, frag) in &cases {
        let (got, out, err) = explain(args);
        assert_eq!(got, 2, "{args:?}: exit {got}\n{out}{err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.contains(frag), "{args:?}: `{frag}` not in {err}");
    }
}

#[test]
fn invalid_input_exits_two() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: typo, namespace: shop}
spec:
  endpointSelector: {}
  egress: [{toEntities: [wrold]}]
",
    )
    .unwrap();
    let inventory = path("policies/demo/cluster");
    let q = [
        "--from", REDIS, "--to", "8.8.8.8", "--proto", "tcp", "--port", "443",
    ];
    let run = |policies: &str, inventory: &str| {
        let mut args = vec!["explain", "--policies", policies, "--inventory", inventory];
        args.extend_from_slice(&q);
        polc(&args, b"")
    };
    // A policy with a lint error.
    let (code, out, err) = run(bad.to_str().unwrap(), &inventory);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("S0220"), "{err}");
    assert!(err.contains("bad.yaml:6:"), "{err}");
    assert!(err.contains("the input has errors"), "{err}");
    // The same with the demo policies is fine.
    let (code, _, err) = run(&path("policies/demo/policies"), &inventory);
    assert_eq!(code, 0, "{err}");
    // Unreadable inventory.
    let missing = dir.path().join("missing.yaml");
    let (code, out, err) = run(&path("policies/demo/policies"), missing.to_str().unwrap());
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("P0109") && err.contains("missing.yaml"),
        "{err}"
    );
    // A policies directory without YAML means no policies: nothing is enforced.
    let empty = tempfile::tempdir().unwrap();
    let (code, out, err) = run(empty.path().to_str().unwrap(), &inventory);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("not enforced"), "{out}");
    // No inventory: every pod is unknown.
    let (code, _, err) = polc(
        &[
            "explain",
            "--policies",
            &path("policies/demo/policies"),
            "--from",
            REDIS,
            "--to",
            "8.8.8.8",
            "--proto",
            "tcp",
            "--port",
            "443",
        ],
        b"",
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Q0401"), "{err}");
}

/// Runs `--flows` on `bytes` written to a temporary `name`.
fn flows_file(name: &str, bytes: &[u8]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    explain(&["--flows", p.to_str().unwrap()])
}

#[test]
fn hostile_flows_files_are_bad_input_not_panics() {
    let flow = |extra: &str| {
        format!("flows:\n- {{from: {FRONTEND}, to: {BACKEND}, proto: TCP, {extra}}}\n")
    };
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..8 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    bomb.push_str("flows: [*a7]\n");
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("not YAML", b"flows: [is: broken\n".to_vec(), &["P0101"]),
        ("tabs", b"flows:\n\t- {}\n".to_vec(), &["P0102"]),
        ("a list instead of a mapping",
            format!("- {{from: {FRONTEND}, to: {BACKEND}, proto: TCP, port: 8080, expect: allow}}\n")
                .into_bytes(),
            &["error"]),
        ("a scalar", b"just text\n".to_vec(), &["error"]),
        ("empty", Vec::new(), &["P0108"]),
        ("only a comment", b"# nothing\n".to_vec(), &["error"]),
        ("binary", vec![0x7f, b'E', b'L', b'F', 0, 1, 2, 3, 0xff, 0xfe, 0], &["P0104"]),
        ("latin-1", b"flows: []\n# caf\xe9\n".to_vec(), &["P0104"]),
        ("deep nesting", "[".repeat(100_000).into_bytes(), &["P0106"]),
        ("alias bomb", bomb.into_bytes(), &["P0105"]),
        ("port beyond i64", flow("port: 99999999999999999999, expect: allow").into_bytes(),
            &["S0205", "flows[0].port"]),
        ("port beyond u32", flow("port: 4294967376, expect: allow").into_bytes(),
            &["Q0402", "a port is 1-65535"]),
        ("port that wraps to 80 as u16", flow("port: 65616, expect: allow").into_bytes(),
            &["Q0402", "a port is 1-65535"]),
        ("negative port", flow("port: -8080, expect: allow").into_bytes(),
            &["Q0402", "a port is 1-65535"]),
        ("port as text", flow("port: http, expect: allow").into_bytes(),
            &["S0205", "flows[0].port"]),
        ("float port", flow("port: 8080.5, expect: allow").into_bytes(), &["S0205"]),
        ("ICMP type too big", format!(
            "flows:\n- {{from: {FRONTEND}, to: {BACKEND}, proto: ICMP, icmpType: 264, expect: deny}}\n")
            .into_bytes(), &["Q0402", "0-255"]),
        ("expect: maybe", flow("port: 8080, expect: maybe").into_bytes(),
            &["Q0402", "`expect: maybe`", "allow` or `deny"]),
        ("expect: true", flow("port: 8080, expect: true").into_bytes(), &["S0205"]),
        ("no expect", flow("port: 8080").into_bytes(), &["Q0402", "no `expect`"]),
        ("misspelled field", flow("port: 8080, expcet: allow").into_bytes(),
            &["S0204", "did you mean `expect`"]),
        ("misspelled request field", flow(
            "port: 8080, htpp: {method: DELETE}, expect: deny").into_bytes(),
            &["S0204", "did you mean `http`"]),
        ("no flows list", b"checks: []\n".to_vec(), &["S0206"]),
        ("flows is a number", b"flows: 3\n".to_vec(), &["S0205"]),
        ("flows of scalars", b"flows: [1, [2], x]\n".to_vec(), &["S0205", "flows[0]"]),
        ("unknown pod", format!(
            "flows:\n- {{from: shop/nope, to: {BACKEND}, proto: TCP, port: 80, expect: deny}}\n")
            .into_bytes(), &["Q0401", "flows.yaml:2:", "no pod `nope`"]),
        ("two requests", flow(
            "port: 53, http: {method: GET}, dns: {query: x}, expect: deny").into_bytes(),
            &["Q0402", "at most one request"]),
        ("dns without query", flow("port: 53, dns: {}, expect: deny").into_bytes(),
            &["Q0402", "needs a `query`"]),
        ("header without colon", flow(
            "port: 8080, http: {headers: [nocolon]}, expect: deny").into_bytes(),
            &["Q0402", "`nocolon` is not a header"]),
    ];
    for (what, bytes, fragments) in &cases {
        let (code, out, err) = flows_file("flows.yaml", bytes);
        assert_eq!(code, 2, "{what}: exit {code}\n{out}{err}");
        assert!(out.is_empty(), "{what}: stdout {out}");
        assert!(!err.is_empty(), "{what}: nothing on stderr");
        for frag in *fragments {
            assert!(err.contains(frag), "{what}: `{frag}` not in\n{err}");
        }
    }

    // A file with no flows is a clear result: nothing to check.
    let (code, out, err) = flows_file("flows.yaml", b"flows: []\n");
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "0 flows, 0 as expected, 0 not\n");
    // `expect` is read case-insensitively.
    let (code, out, err) = flows_file("flows.yaml", flow("port: 8080, expect: ALLOW").as_bytes());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("1 flow, 1 as expected, 0 not\n"), "{out}");
}

/// The file of `--flows` is a flows file, not a Kubernetes manifest; when it is not a mapping
/// the error should say what a flows file looks like.
#[test]
fn a_list_shaped_flows_file_gets_a_flows_file_error() {
    let text =
        format!("- {{from: {FRONTEND}, to: {BACKEND}, proto: TCP, port: 8080, expect: allow}}\n");
    let (code, out, err) = flows_file("flows.yaml", text.as_bytes());
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("`flows`"), "{err}");
    assert!(!err.contains("Kubernetes object"), "{err}");
    assert!(!err.contains("apiVersion"), "{err}");
}

/// A field polc does not know in a flow is dropped silently (its S0203 warning is never
/// shown): a request written under a wrong key is not tested at all, and the flow passes.
#[test]
fn unknown_fields_in_a_flows_file_are_reported() {
    let text = format!(
        "flows:\n- {{from: {FRONTEND}, to: {BACKEND}, proto: TCP, port: 8080,\n   \
         request: {{method: DELETE, path: /api/v1/products/sku-123}}, expect: allow}}\n"
    );
    let (code, out, err) = flows_file("flows.yaml", text.as_bytes());
    assert!(
        code == 2 || err.contains("request"),
        "exit {code}, the unknown field `request` is not reported:\n{out}{err}"
    );
}

/// `--flows DIR`: every file is read, but only the last one (in name order) is checked as
/// flows; the others are linted as manifests (0 objects) and their flows never run.
#[test]
fn a_flows_directory_checks_every_file_or_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wrong =
        format!("flows:\n- {{from: {REDIS}, to: 8.8.8.8, proto: TCP, port: 1, expect: allow}}\n");
    let right =
        format!("flows:\n- {{from: {REDIS}, to: 8.8.8.8, proto: TCP, port: 1, expect: deny}}\n");
    std::fs::write(dir.path().join("a.yaml"), wrong).unwrap();
    std::fs::write(dir.path().join("b.yaml"), right).unwrap();
    let (code, out, err) = explain(&["--flows", dir.path().to_str().unwrap()]);
    // Either both files are checked (a.yaml fails: exit 1) or a directory is refused (2).
    assert_ne!(
        code, 0,
        "a.yaml's failing flow was not checked:\n{out}{err}"
    );
}

/// The default-deny reason cites each rule by the path `spec`; its line should be the rule's
/// (`spec:`) or the section that switches the direction to default-deny (`ingress:`), not
/// whatever key happens to come first inside `spec`.
#[test]
fn default_deny_rules_point_at_the_rule() {
    let v = explain_json(&[
        "--from",
        "203.0.113.9",
        "--to",
        FRONTEND,
        "--proto",
        "tcp",
        "--port",
        "8080",
    ]);
    let r = reason(&v, FRONTEND, "ingress");
    for x in r["rules"].as_array().unwrap() {
        let at = line_of(x["file"].as_str().unwrap(), x["line"].as_u64().unwrap());
        assert!(
            at.contains("spec") || at.contains("ingress"),
            "{} {} points at `{at}`",
            x["policy"],
            x["path"]
        );
    }
}

const ONE_WRONG: &str = "tests/cli-fixtures/demo-flows-one-wrong.yaml";

/// The one-based lines where the flows of a flows file start (`- ` at column 1).
fn flow_lines(file: &Path) -> Vec<usize> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("- "))
        .map(|(i, _)| i + 1)
        .collect()
}

#[test]
fn flows_with_a_wrong_expectation_fail_with_file_and_line() {
    let file = root().join(ONE_WRONG);
    let name = file.to_str().unwrap();
    let lines = flow_lines(&file);
    assert_eq!(lines.len(), 3);
    let text = std::fs::read_to_string(&file).unwrap();
    let wrong_line = text
        .lines()
        .position(|l| l.contains("name: wrong-on-purpose"))
        .unwrap()
        + 1;

    let (code, out, err) = explain(&["--flows", name]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.is_empty(), "{err}");
    let results: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("ok  ") || l.starts_with("FAIL"))
        .collect();
    assert_eq!(results.len(), 3, "{out}");
    for (l, line) in results.iter().zip(&lines) {
        assert!(l.contains(&format!("{name}:{line} ")), "{l}");
    }
    let fails: Vec<&&str> = results.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 1, "{out}");
    let fail = fails[0];
    assert!(fail.contains(&format!("{name}:{wrong_line} ")), "{fail}");
    assert!(
        fail.contains(&format!("203.0.113.9 -> {FRONTEND}: TCP/8080")),
        "{fail}"
    );
    assert!(fail.contains("expected allow, got deny"), "{fail}");
    assert!(fail.contains("default deny"), "{fail}");
    assert!(
        out.ends_with("3 flows, 2 as expected, 1 not\n"),
        "summary line: {out}"
    );

    // JSON: the same verdicts, with `passed`/`failed` and each flow's line.
    let (code, out, err) = explain(&["--flows", name, "--format", "json"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.is_empty(), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["passed"], 2);
    assert_eq!(v["failed"], 1);
    let flows = v["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 3);
    for (f, line) in flows.iter().zip(&lines) {
        assert_eq!(f["line"].as_u64(), Some(*line as u64), "{f:#}");
        assert_eq!(f["ok"], f["verdict"] == f["expect"], "{f:#}");
    }
    let bad: Vec<&Value> = flows.iter().filter(|f| f["ok"] == false).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["name"], "wrong-on-purpose");
    assert_eq!(bad[0]["line"].as_u64(), Some(wrong_line as u64));
    assert_eq!(bad[0]["expect"], "allow");
    assert_eq!(bad[0]["verdict"], "deny");
    assert_eq!(
        reason(bad[0], FRONTEND, "ingress")["why"],
        "default deny",
        "{:#}",
        bad[0]
    );
}

#[test]
fn demo_flows_all_pass_in_both_formats() {
    let file = root().join("policies/demo/flows.yaml");
    let n = flow_lines(&file).len();
    assert!(n >= 30, "only {n} demo flows");
    let (code, out, err) = explain(&["--flows", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.is_empty(), "{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("ok  ")).count(), n);
    assert!(
        out.ends_with(&format!("{n} flows, {n} as expected, 0 not\n")),
        "{out}"
    );
    let (code, out, _) = explain(&["--flows", file.to_str().unwrap(), "--format", "json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["passed"].as_u64(), Some(n as u64));
    assert_eq!(v["failed"], 0);
}

/// The `explain` arguments of one flow of a flows file.
fn flow_args(spec: &polc_compiler::flows::FlowSpec) -> Option<Vec<String>> {
    if spec.kafka.is_some() {
        // `explain` has no flags for Kafka requests.
        return None;
    }
    let mut a = vec![
        "--from".to_string(),
        spec.from.as_ref()?.value.clone(),
        "--to".into(),
        spec.to.as_ref()?.value.clone(),
        "--proto".into(),
        spec.proto.as_ref()?.value.to_ascii_lowercase(),
    ];
    if let Some(p) = &spec.port {
        a.extend(["--port".into(), p.value.to_string()]);
    }
    if let Some(t) = &spec.icmp_type {
        a.extend(["--icmp-type".into(), t.value.to_string()]);
    }
    if let Some(h) = &spec.http {
        if let Some(m) = &h.method {
            a.extend(["--http-method".into(), m.value.clone()]);
        }
        if let Some(p) = &h.path {
            a.extend(["--http-path".into(), p.value.clone()]);
        }
        if let Some(x) = &h.host {
            a.extend(["--http-host".into(), x.value.clone()]);
        }
        for hd in h.headers.iter().flat_map(|v| v.iter()) {
            a.extend(["--http-header".into(), hd.value.clone()]);
        }
    }
    if let Some(d) = &spec.dns {
        a.extend(["--dns-query".into(), d.query.as_ref()?.value.clone()]);
    }
    Some(a)
}

/// Every flow of the demo, explained alone: the verdict is the expected one, the JSON is the
/// one `--flows --format json` gives for it, and each end's map entry agrees with its verdict
/// at L4 (a deny has no entry or a deny entry, an allow an allow or redirect entry; an L7
/// rejection keeps its redirect entry).
#[test]
fn every_demo_flow_map_entry_agrees_with_its_verdict() {
    use polc_compiler::source::{SourceFile, SourceMap};
    let file = root().join("policies/demo/flows.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut sources = SourceMap::new();
    let id = sources.add(SourceFile::new("flows.yaml", text));
    let (specs, diags) =
        polc_compiler::flows::read(id, sources.get(id), polc_compiler::yaml::Limits::default());
    assert!(diags.is_empty(), "{diags:?}");
    assert!(specs.len() >= 30, "only {} flows", specs.len());

    let (code, out, _) = explain(&["--flows", file.to_str().unwrap(), "--format", "json"]);
    assert_eq!(code, 0);
    let batch: Value = serde_json::from_str(&out).unwrap();
    let batch = batch["flows"].as_array().unwrap();
    assert_eq!(batch.len(), specs.len());

    let mut checked = 0;
    let mut verdicts = std::collections::BTreeSet::new();
    for (spec, b) in specs.iter().zip(batch) {
        let line = sources.line_col(spec.loc).line;
        let Some(args) = flow_args(spec) else {
            continue;
        };
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let v = explain_json(&argv);
        let context = format!("flows.yaml:{line}");
        let expect = spec.expect.as_ref().unwrap().value.to_ascii_lowercase();
        assert_eq!(v["verdict"], expect.as_str(), "{context}: {v:#}");
        // Alone or in a file, the same explanation.
        let mut b = b.clone();
        for k in ["expect", "ok", "line", "name"] {
            b.as_object_mut().unwrap().remove(k);
        }
        assert_eq!(v, b, "{context}: explain alone and --flows disagree");
        assert!(!reasons(&v).is_empty(), "{context}: no reasons");
        for r in reasons(&v) {
            assert_entry_agrees(r, &context);
            if !r["map_entry"].is_null() {
                assert_entry_covers_flow(
                    r,
                    v["flow"]["proto"].as_str().unwrap(),
                    v["flow"]["port"].as_u64().unwrap(),
                );
            }
            for x in r["rules"].as_array().unwrap() {
                let l = x["line"].as_u64().unwrap();
                // Cited locations exist.
                line_of(x["file"].as_str().unwrap(), l);
            }
            verdicts.insert(format!(
                "{} {}",
                r["why"].as_str().unwrap(),
                r["map_entry"]["verdict"].as_str().unwrap_or("none")
            ));
        }
        // The flow is denied iff some end denies.
        let any_deny = reasons(&v).iter().any(|r| r["verdict"] == "deny");
        assert_eq!(v["verdict"] == "deny", any_deny, "{context}: {v:#}");
        checked += 1;
    }
    assert_eq!(checked, specs.len());
    // The demo exercises every kind of decision with a map entry.
    for kind in [
        "allow rule allow",
        "deny rule deny",
        "default deny none",
        "L7 rules reject the request redirect",
        "L7 rule allows the request redirect",
        "allow-localhost allow",
    ] {
        assert!(verdicts.contains(kind), "no `{kind}` among {verdicts:?}");
    }
}

/// Kafka requests can be given on the command line too.
#[test]
fn kafka_requests_from_flags() {
    let s = root().join("tests/scenarios/063-kafka-role-and-apikey");
    let run = |topic: &str| {
        let (code, out, err) = polc(
            &[
                "explain",
                "--policies",
                s.join("policies.yaml").to_str().unwrap(),
                "--inventory",
                s.join("inventory.yaml").to_str().unwrap(),
                "--from",
                "data/producer",
                "--to",
                "data/broker",
                "--proto",
                "tcp",
                "--port",
                "9092",
                "--kafka-api-key",
                "produce",
                "--kafka-api-version",
                "0",
                "--kafka-client-id",
                "orders-svc",
                "--kafka-topic",
                topic,
                "--format",
                "json",
            ],
            b"",
        );
        assert_eq!(code, 0, "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["verdict"].as_str().unwrap().to_string()
    };
    assert_eq!(run("orders"), "allow");
    assert_eq!(run("payments"), "deny");
}
