//! The datapath spec's worked example (§3.7 map entries, §4.2 NPDS resource) reproduced through
//! the whole pipeline: YAML -> lint -> model -> map state -> bytes / JSON.
//!
//! polc numbers cluster identities from 256 in allocation-key order, so `frontend` is not the
//! spec's 12345. The test looks up the number polc allocated and compares each key with that
//! number replaced by 12345 (bytes 4-7 of the key; nothing else depends on it), so the expected
//! bytes below are the spec's text verbatim.

// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use polc_compiler::identity::IpcacheEntry;
use polc_compiler::mapstate::{self, EndpointPolicy, ProxyPorts, SelectorCache};
use polc_compiler::model::{Config, EndpointRef, Model};
use polc_compiler::source::{SourceFile, SourceMap};
use polc_compiler::{CiliumVersion, Options, lint};
use polc_ebpf::ipcache::{self, IpcacheLayout};
use polc_ebpf::layout::{self, Layout, hex};
use polc_ebpf::{npds, records};
use serde_json::{Value, json};

const POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
      rules: {http: [{method: GET, path: "/api"}]}
  ingressDeny:
  - fromEntities: [world]
"#;

const INVENTORY: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: default
  labels: {kubernetes.io/metadata.name: default}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status:
  addresses: [{type: InternalIP, address: 192.168.0.1}]
---
apiVersion: v1
kind: Node
metadata: {name: n2}
status:
  addresses: [{type: InternalIP, address: 192.168.0.2}]
---
apiVersion: v1
kind: Pod
metadata:
  name: backend
  namespace: default
  labels: {app: backend}
spec:
  nodeName: n1
  containers: [{name: app}]
status:
  podIP: 10.0.1.5
  podIPs: [{ip: 10.0.1.5}, {ip: "fd00::4d2"}]
---
apiVersion: v1
kind: Pod
metadata:
  name: frontend
  namespace: default
  labels: {app: frontend}
spec:
  nodeName: n2
  containers: [{name: app}]
status:
  podIP: 10.0.2.7
  podIPs: [{ip: 10.0.2.7}]
"#;

const ENDPOINT_ID: u16 = 1234;
const SPEC_FRONTEND: u32 = 12345;

/// A model of `policy` plus the inventory, for `version`, dual-stack.
fn model(policy: &str, version: CiliumVersion) -> Model {
    let mut sources = SourceMap::new();
    sources.add(SourceFile::new("policy.yaml", policy.to_string()));
    sources.add(SourceFile::new("inventory.yaml", INVENTORY.to_string()));
    let opts = Options {
        version,
        ..Options::default()
    };
    let (objects, diags) = lint(&sources, &opts);
    assert!(
        !diags.has_errors(),
        "{:?}",
        diags.iter().collect::<Vec<_>>()
    );
    let config = Config {
        version,
        dual_stack: Some(true),
        ..Config::default()
    };
    let (model, _) = Model::build(&objects, config);
    model
}

fn pod(model: &Model, name: &str) -> EndpointRef {
    let i = model
        .inventory
        .pods
        .iter()
        .position(|p| p.name == name)
        .expect("pod in the inventory");
    EndpointRef::Pod(i)
}

fn identity_of(model: &Model, name: &str) -> u32 {
    model.identity_of(pod(model, name)).expect("pod identity")
}

fn compute(model: &Model, ep: EndpointRef) -> EndpointPolicy {
    let ports = ProxyPorts {
        http_ingress: 15000,
        ..ProxyPorts::default()
    };
    let mut cache = SelectorCache::new(model);
    mapstate::compute(model, &mut cache, ep, &ports, &mapstate::listeners(model))
}

/// Spec hex with its spaces removed.
fn spec(s: &str) -> String {
    s.replace(' ', "")
}

/// The map's (key, value) hex pairs in `layout`, with identity `from` in keys written as `to`,
/// sorted.
fn rows(policy: &EndpointPolicy, layout: Layout, from: u32, to: u32) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = policy
        .map
        .iter()
        .map(|(k, e)| {
            let mut shown = *k;
            if shown.identity == from {
                shown.identity = to;
            }
            (
                hex(&layout::encode_key(&shown)),
                hex(&layout::encode_value(k, e, layout)),
            )
        })
        .collect();
    out.sort();
    out
}

fn sorted(rows: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = rows.iter().map(|(k, v)| (spec(k), spec(v))).collect();
    out.sort();
    out
}

#[test]
fn worked_example_map_bytes_1_19() {
    let model = model(POLICY, CiliumVersion::V1_19);
    let backend = pod(&model, "backend");
    let frontend = identity_of(&model, "frontend");
    let policy = compute(&model, backend);
    assert_eq!(policy.enforced, (true, false));
    let deny = "0000 01 00 ffffffff 00000000";
    let allow = "0000 00 00 01ffffff 00000000";
    let expected = sorted(&[
        (
            "40000000 39300000 00 06 1f90",
            "3a98 c0 00 9affffff 00000000",
        ),
        ("28000000 02000000 00 00 0000", deny),
        ("28000000 09000000 00 00 0000", deny),
        ("28000000 0a000000 00 00 0000", deny),
        ("28000000 01000000 00 00 0000", allow),
        ("28000000 00000000 01 00 0000", allow),
    ]);
    assert_eq!(
        rows(&policy, Layout::V1_19, frontend, SPEC_FRONTEND),
        expected
    );
}

#[test]
fn worked_example_map_bytes_1_17_and_1_18() {
    for version in [CiliumVersion::V1_17, CiliumVersion::V1_18] {
        let model = model(POLICY, version);
        let frontend = identity_of(&model, "frontend");
        let policy = compute(&model, pod(&model, "backend"));
        let layout = Layout::for_version(version);
        assert_eq!(layout, Layout::V1_17);
        let deny = "0000 01 00 00 00 0000";
        let allow = "0000 00 00 00 00 0000";
        let expected = sorted(&[
            ("40000000 39300000 00 06 1f90", "3a98 c0 00 1b 00 0000"),
            ("28000000 02000000 00 00 0000", deny),
            ("28000000 09000000 00 00 0000", deny),
            ("28000000 0a000000 00 00 0000", deny),
            ("28000000 01000000 00 00 0000", allow),
            ("28000000 00000000 01 00 0000", allow),
        ]);
        assert_eq!(
            rows(&policy, layout, frontend, SPEC_FRONTEND),
            expected,
            "{version}"
        );
    }
}

#[test]
fn worked_example_record_file_round_trips() {
    let model = model(POLICY, CiliumVersion::V1_19);
    let policy = compute(&model, pod(&model, "backend"));
    for layout in [Layout::V1_17, Layout::V1_19] {
        let bytes = records::policy_records(&policy.map, layout);
        assert_eq!(bytes.len(), 6 * layout.record_size());
        let back = records::decode_policy_records(&bytes, layout).expect("valid records");
        let keys: Vec<_> = back.iter().map(|(k, _)| *k).collect();
        let mut want: Vec<_> = policy.map.keys().copied().collect();
        want.sort_by_key(layout::encode_key);
        assert_eq!(keys, want);
    }
    let doc = records::policy_map_document(ENDPOINT_ID, &policy, Layout::V1_19, 16384);
    assert_eq!(doc["name"], "cilium_policy_v2_01234");
    assert_eq!(doc["max_entries"], 16384);
    let redirect = doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["verdict"] == "redirect")
        .expect("the HTTP redirect");
    assert_eq!(redirect["proxy_port"], 15000);
    assert_eq!(redirect["precedence"], "0xffffff9a");
    assert_eq!(
        redirect["origins"],
        json!(["CiliumNetworkPolicy default/backend spec.ingress[0]"])
    );
}

#[test]
fn worked_example_npds_1_19() {
    let model = model(POLICY, CiliumVersion::V1_19);
    let backend = pod(&model, "backend");
    let frontend = identity_of(&model, "frontend");
    let policy = compute(&model, backend);
    let got = npds::network_policy(&model, backend, ENDPOINT_ID, &policy);
    let want = json!({
        "endpointIps": ["fd00::4d2", "10.0.1.5"],
        "endpointId": "1234",
        "ingressPerPortPolicies": [
            {"port": 0, "protocol": "TCP", "rules": [{"remotePolicies": [2, 9, 10], "deny": true}]},
            {"port": 8080, "protocol": "TCP", "rules": [{
                "remotePolicies": [frontend],
                "httpRules": {"httpRules": [{"headers": [
                    {"name": ":method", "stringMatch": {"safeRegex": {"regex": "GET"}}},
                    {"name": ":path", "stringMatch": {"safeRegex": {"regex": "/api"}}},
                ]}]},
            }]},
        ],
        "egressPerPortPolicies": [{"port": 0, "protocol": "TCP"}],
    });
    assert_eq!(got, want, "{}", serde_json::to_string_pretty(&got).unwrap());
    assert_eq!(npds::resource_name(ENDPOINT_ID), "1234");
}

#[test]
fn worked_example_npds_1_18_single_selector_is_wildcard() {
    let model = model(POLICY, CiliumVersion::V1_18);
    let backend = pod(&model, "backend");
    let policy = compute(&model, backend);
    let got = npds::network_policy(&model, backend, ENDPOINT_ID, &policy);
    let port = &got["ingressPerPortPolicies"][1];
    assert_eq!(port["port"], 8080);
    assert!(port["rules"][0].get("remotePolicies").is_none(), "{port}");
    assert!(port["rules"][0].get("httpRules").is_some());
    // The wildcard port is not affected: it merges selections.
    assert_eq!(
        got["ingressPerPortPolicies"][0]["rules"][0]["remotePolicies"],
        json!([2, 9, 10])
    );
}

#[test]
fn ipcache_of_the_example_node() {
    let model = model(POLICY, CiliumVersion::V1_19);
    let backend = identity_of(&model, "backend");
    let frontend = identity_of(&model, "frontend");
    let cache = model.identities.ipcache(&model.inventory, "n1");
    let find = |p: &str| -> &IpcacheEntry {
        cache
            .iter()
            .find(|e| e.prefix.to_string() == p)
            .unwrap_or_else(|| panic!("{p} in the ipcache"))
    };
    // The local pod, v4 /32 and v6 /128.
    let v4 = find("10.0.1.5/32");
    assert_eq!(v4.identity, backend);
    assert_eq!(
        hex(&ipcache::encode_key(&v4.prefix, 0)),
        "40000000000000010a000105000000000000000000000000"
    );
    let id = hex(&backend.to_le_bytes());
    assert_eq!(
        hex(&ipcache::encode_value(v4, IpcacheLayout::V2).unwrap()),
        format!("{id}{}", "00".repeat(20))
    );
    let v6 = find("fd00::4d2/128");
    assert_eq!(
        hex(&ipcache::encode_key(&v6.prefix, 0)),
        "a000000000000002fd0000000000000000000000000004d2"
    );
    // The remote pod, tunnelled to its node n2.
    let remote = find("10.0.2.7/32");
    assert_eq!(remote.identity, frontend);
    let id = hex(&frontend.to_le_bytes());
    assert_eq!(
        hex(&ipcache::encode_value(remote, IpcacheLayout::V2).unwrap()),
        format!("{id}c0a80002{}000002", "00".repeat(13))
    );
    assert_eq!(
        hex(&ipcache::encode_value(remote, IpcacheLayout::V1).unwrap()),
        format!("{id}c0a8000200000002")
    );
    // The local node is the host, the other one a remote node; the world is split.
    assert_eq!(find("192.168.0.1/32").identity, 1);
    assert_eq!(find("192.168.0.2/32").identity, 6);
    assert_eq!(find("0.0.0.0/0").identity, 9);
    assert_eq!(find("::/0").identity, 10);
    let bytes = records::ipcache_records(&cache, IpcacheLayout::V2, 0).unwrap();
    let back = records::decode_ipcache_records(&bytes, IpcacheLayout::V2).unwrap();
    assert_eq!(back.len(), cache.len());
    let doc = records::ipcache_json(&cache, IpcacheLayout::V1, 0).unwrap();
    assert_eq!(doc["name"], "cilium_ipcache");
}

#[test]
fn identity_table_json() {
    let model = model(POLICY, CiliumVersion::V1_19);
    let frontend = identity_of(&model, "frontend");
    let ids = records::identities_json(&model.identities);
    let list = ids.as_array().unwrap();
    assert_eq!(
        list[0],
        json!({"id": 1, "labels": ["reserved:host"], "kind": "reserved"})
    );
    let f = list
        .iter()
        .find(|i| i["id"] == frontend)
        .expect("frontend identity");
    assert_eq!(f["kind"], "pods");
    let labels: Vec<&str> = f["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(labels.contains(&"k8s:app=frontend"), "{labels:?}");
    assert!(
        labels.contains(&"k8s:io.kubernetes.pod.namespace=default"),
        "{labels:?}"
    );
}

/// The NPDS ingress (or egress) list of the backend under `policy`.
fn npds_of(policy: &str, dir: &str) -> Value {
    let model = model(policy, CiliumVersion::V1_19);
    let backend = pod(&model, "backend");
    let computed = compute(&model, backend);
    npds::network_policy(&model, backend, ENDPOINT_ID, &computed)[dir].clone()
}

const HEAD: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: default}\nspec:\n  endpointSelector: {matchLabels: {app: backend}}\n";

#[test]
fn an_allow_all_rule_empties_the_port() {
    let policy = format!(
        "{HEAD}  ingress:\n  - toPorts: [{{ports: [{{port: \"80\", protocol: TCP}}]}}]\n  - fromEndpoints: [{{matchLabels: {{app: frontend}}}}]\n    toPorts:\n    - ports: [{{port: \"80\", protocol: TCP}}]\n      rules: {{http: [{{method: GET}}]}}\n"
    );
    assert_eq!(
        npds_of(&policy, "ingressPerPortPolicies"),
        json!([{"port": 80, "protocol": "TCP"}])
    );
}

#[test]
fn redirects_from_the_host_get_a_wildcard_l7_rule() {
    let policy = format!(
        "{HEAD}  ingress:\n  - fromEntities: [host]\n    toPorts:\n    - ports: [{{port: \"8080\", protocol: TCP}}]\n      rules: {{http: [{{path: \"/healthz\"}}]}}\n"
    );
    assert_eq!(
        npds_of(&policy, "ingressPerPortPolicies"),
        json!([{"port": 8080, "protocol": "TCP", "rules": [
            {"remotePolicies": [1]},
            {"remotePolicies": [1], "httpRules": {"httpRules": [{"headers": [
                {"name": ":path", "stringMatch": {"safeRegex": {"regex": "/healthz"}}},
            ]}]}},
        ]}])
    );
}

#[test]
fn dns_rules_are_left_to_the_dns_proxy() {
    let policy = format!(
        "{HEAD}  egress:\n  - toPorts:\n    - ports: [{{port: \"53\", protocol: ANY}}]\n      rules: {{dns: [{{matchPattern: \"*\"}}]}}\n"
    );
    // Only TCP is sent; the DNS rules are dropped, leaving an allow-all rule.
    assert_eq!(
        npds_of(&policy, "egressPerPortPolicies"),
        json!([{"port": 53, "protocol": "TCP"}])
    );
    assert_eq!(
        npds_of(&policy, "ingressPerPortPolicies"),
        json!([{"port": 0, "protocol": "TCP"}])
    );
}

#[test]
fn a_wildcard_deny_leaves_only_the_deny_all_rule() {
    let policy = format!(
        "{HEAD}  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: frontend}}}}]\n    toPorts: [{{ports: [{{port: \"80\", protocol: TCP}}]}}]\n  ingressDeny:\n  - fromEntities: [all]\n"
    );
    assert_eq!(
        npds_of(&policy, "ingressPerPortPolicies"),
        json!([{"port": 0, "protocol": "TCP", "rules": [{"deny": true}]}])
    );
}

#[test]
fn selectors_that_select_nothing_give_no_rule_and_ranges_keep_their_end() {
    let policy = format!(
        "{HEAD}  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: nobody}}}}]\n    toPorts: [{{ports: [{{port: \"80\", protocol: TCP}}]}}]\n  - fromEndpoints: [{{matchLabels: {{app: frontend}}}}]\n    toPorts: [{{ports: [{{port: \"8080\", endPort: 8095, protocol: TCP}}]}}]\n"
    );
    let model = model(&policy, CiliumVersion::V1_19);
    let frontend = identity_of(&model, "frontend");
    assert_eq!(
        npds_of(&policy, "ingressPerPortPolicies"),
        json!([{"port": 8080, "endPort": 8095, "protocol": "TCP", "rules": [{"remotePolicies": [frontend]}]}])
    );
}
