//! `polc load`, `polc status` and `polc unload` on the demo cluster, as root, inside a
//! throwaway network namespace with a veth per pod and a pin directory of their own: a load,
//! a second load that changes nothing, the status, a map-full load that installs nothing,
//! bad interface maps, and the unload.

mod common;

use common::{polc_in, root};
use serde_json::Value;

const COREDNS: &str = "kube-system/coredns-5d78c9869d-4xkqp";
const PROMETHEUS: &str = "monitoring/prometheus-k8s-0";

type Guard = common::Netns;

fn setup(tag: &str) -> Option<Guard> {
    common::throwaway_netns(tag)
}

fn load(g: &Guard, extra: &[&str]) -> (i32, String, String) {
    let policies = root().join("policies/demo/policies");
    let inventory = root().join("policies/demo/cluster");
    let pins = g.pins.to_str().unwrap().to_string();
    let mut args = vec![
        "load",
        "--policies",
        policies.to_str().unwrap(),
        "--inventory",
        inventory.to_str().unwrap(),
        "--node",
        "node-1",
        "--bpffs-root",
        pins.as_str(),
    ];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    polc_in(g, &refs)
}

#[test]
fn load_status_unload() {
    let Some(g) = setup("a") else { return };
    let map1 = format!("{COREDNS}=lxc1");
    let map2 = format!("{PROMETHEUS}=lxc2");
    let (code, out, err) = load(&g, &["--interfaces", &map1, &map2]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("loaded node `node-1`"), "{out}");
    assert!(out.contains("links +4 -0"), "{out}");
    // The same input again changes nothing.
    let (code, out, err) = load(&g, &["--interfaces", &map1, &map2]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(0 changes)"), "{out}");

    let pins = g.pins.to_str().unwrap();
    let (code, out, err) = polc_in(&g, &["status", "--bpffs-root", pins, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let node = &v["nodes"][0];
    assert_eq!(node["node"], "node-1");
    assert_eq!(node["links"], 4);
    let eps = node["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 5);
    let coredns = eps.iter().find(|e| e["endpoint"] == COREDNS).unwrap();
    assert_eq!(coredns["interfaces"][0]["name"], "lxc1");
    assert!(coredns["entries"].as_u64().unwrap() > 0);
    // No proxy runs for this node: its DNS port fails closed, and the status says so.
    assert!(node["proxy"].is_null(), "{node}");
    let dns = node["proxy_ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == 15053)
        .unwrap_or_else(|| panic!("{node}"));
    assert_eq!(dns["enforced"], false);
    let (code, out, _) = polc_in(&g, &["status", "--bpffs-root", pins]);
    assert_eq!(code, 0);
    assert!(
        out.contains("15053 DNS") && out.contains("no polc proxy runs"),
        "the proxy note: {out}"
    );

    // An uplink serves no endpoint: attached, listed under no endpoint.
    let (code, out, err) = load(&g, &["--interfaces", &map1, &map2, "--uplink", "lxc2p"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("links +2 -0"), "{out}");
    let (code, out, err) = polc_in(&g, &["status", "--bpffs-root", pins, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["nodes"][0]["links"], 6);
    assert_eq!(v["nodes"][0]["endpoints"].as_array().unwrap().len(), 5);

    // Dropping an interface detaches it.
    let (code, out, err) = load(&g, &["--interfaces", &map1]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("links +0 -4"), "{out}");

    let (code, out, err) = polc_in(&g, &["unload", "--bpffs-root", pins]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 links detached"), "{out}");
    let (code, out, _) = polc_in(&g, &["status", "--bpffs-root", pins]);
    assert_eq!(code, 0);
    assert!(out.contains("no polc datapath is loaded"), "{out}");
}

#[test]
fn failed_loads_change_nothing() {
    let Some(g) = setup("b") else { return };
    let map1 = format!("{COREDNS}=lxc1");
    // Map full on a fresh node: nothing at all is pinned.
    let (code, _, err) = load(&g, &["--interfaces", &map1, "--policy-map-max", "20"]);
    assert_eq!(code, 2);
    assert!(err.contains("error[B0505]"), "{err}");
    assert!(
        err.contains("policy-map entries; its map holds 20"),
        "{err}"
    );
    assert!(!g.pins.join("node-1").exists(), "nothing pinned");
    // Installed, then a map-full load: the installed state stays.
    let (code, _, err) = load(&g, &["--interfaces", &map1]);
    assert_eq!(code, 0, "{err}");
    let pins = g.pins.to_str().unwrap();
    let before = polc_in(&g, &["status", "--bpffs-root", pins, "--format", "json"]).1;
    let (code, _, err) = load(&g, &["--interfaces", &map1, "--policy-map-max", "20"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("error[B0506]") || err.contains("error[B0505]"),
        "{err}"
    );
    let (code, _, err) = load(&g, &["--interfaces", "nope/pod=lxc1"]);
    assert_eq!(code, 2);
    assert!(err.contains("error[B0507]"), "{err}");
    let (code, _, err) = load(&g, &["--interfaces", &format!("{COREDNS}=nosuchif")]);
    assert_eq!(code, 2);
    assert!(err.contains("no network interface `nosuchif`"), "{err}");
    let after = polc_in(&g, &["status", "--bpffs-root", pins, "--format", "json"]).1;
    assert_eq!(before, after);
}
