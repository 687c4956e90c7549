//! `polc compile` end to end on the demo cluster (`policies/demo`): the output layout, the
//! record files against the JSON next to them and the summary, the 1.17/1.18 and 1.19
//! layouts, `--node`, policy-map overflow warnings, bad input, and agreement with the map
//! entries `polc explain` cites.

mod common;

use common::{polc, root};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Size of a policy-map key (`struct policy_key`).
const POLICY_KEY: usize = 12;
/// Size of an ipcache key (`struct ipcache_key`).
const IPCACHE_KEY: usize = 24;
const DEMO_NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

fn path(rel: &str) -> String {
    root().join(rel).to_string_lossy().into_owned()
}

/// `compile` of the demo into a fresh directory with `extra` flags.
fn compile(extra: &[&str]) -> (i32, String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let policies = path("policies/demo/policies");
    let inventory = path("policies/demo/cluster");
    let mut args = vec![
        "compile",
        "--policies",
        policies.as_str(),
        "--inventory",
        inventory.as_str(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = polc(&args, b"");
    (code, stdout, stderr, dir)
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The (key, value) records of a record file, as hex, sorted.
fn records_of(bin: &[u8], rec: usize, key: usize) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = bin
        .chunks(rec)
        .map(|r| (hex(&r[..key]), hex(&r[key..])))
        .collect();
    v.sort();
    v
}

/// The (key, value) hex strings of the entries of a JSON map view, sorted.
fn json_records(entries: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Record files are sorted by their key bytes, without duplicate keys.
fn assert_sorted_by_key(bin: &[u8], rec: usize, key: usize, what: &str) {
    let keys: Vec<&[u8]> = bin.chunks(rec).map(|r| &r[..key]).collect();
    for w in keys.windows(2) {
        assert!(
            w[0] < w[1],
            "{what}: records not in strictly increasing key order: {} then {}",
            hex(w[0]),
            hex(w[1])
        );
    }
}

fn u32_le(b: &[u8]) -> u64 {
    u64::from(u32::from_le_bytes(b.try_into().unwrap()))
}

/// One compiled endpoint.
struct Endpoint {
    dir: PathBuf,
    /// `endpoint.json`.
    meta: Value,
    /// `policy.json`.
    policy: Value,
    /// The records of the `.bin` file.
    records: usize,
}

/// Checks the layout and the files of a compile output; returns the endpoints by name.
fn check_output(
    out: &Path,
    version: &str,
    policy_value: usize,
    ipcache_value: usize,
) -> BTreeMap<String, Endpoint> {
    assert_eq!(
        names_in(out),
        BTreeSet::from(["identities.json", "summary.json", "nodes"].map(String::from))
    );
    let summary = read_json(&out.join("summary.json"));
    let identities = read_json(&out.join("identities.json"));
    let identities = identities.as_array().unwrap();
    assert_eq!(summary["cilium_version"], version);
    assert_eq!(
        summary["identities"].as_u64(),
        Some(identities.len() as u64)
    );
    let ids: BTreeSet<u64> = identities
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), identities.len(), "duplicate identities");

    let mut endpoints = BTreeMap::new();
    let nodes = names_in(&out.join("nodes"));
    assert_eq!(summary["nodes"].as_u64(), Some(nodes.len() as u64));
    for node in &nodes {
        let nd = out.join("nodes").join(node);
        assert_eq!(
            names_in(&nd),
            BTreeSet::from(
                ["ipcache.bin", "ipcache.json", "endpoints", "proxy.json"].map(String::from)
            ),
            "{node}"
        );
        // The proxy's configuration: every endpoint's NPDS rules, the node's ipcache.
        let proxy = read_json(&nd.join("proxy.json"));
        assert_eq!(proxy["node"], node.as_str());
        assert_eq!(
            proxy["endpoints"].as_array().unwrap().len(),
            names_in(&nd.join("endpoints")).len(),
            "{node}"
        );
        assert_eq!(
            proxy["ipcache"].as_array().unwrap().len(),
            read_json(&nd.join("ipcache.json"))["entries"]
                .as_array()
                .map_or(0, Vec::len),
            "{node}"
        );
        assert_eq!(proxy["ports"]["httpIngress"], 15000);
        // ipcache: 24-byte keys, a value per layout, the same records as its JSON.
        let bin = std::fs::read(nd.join("ipcache.bin")).unwrap();
        let rec = IPCACHE_KEY + ipcache_value;
        assert_eq!(
            bin.len() % rec,
            0,
            "{node}: ipcache.bin is {} bytes",
            bin.len()
        );
        let doc = read_json(&nd.join("ipcache.json"));
        assert_eq!(doc["key_size"].as_u64(), Some(IPCACHE_KEY as u64));
        assert_eq!(doc["value_size"].as_u64(), Some(ipcache_value as u64));
        let entries = doc["entries"].as_array().unwrap();
        assert_eq!(bin.len() / rec, entries.len(), "{node}");
        assert!(!entries.is_empty());
        // The same records: the file sorted by key bytes, the JSON by prefix.
        assert_sorted_by_key(&bin, rec, IPCACHE_KEY, node);
        assert_eq!(
            records_of(&bin, rec, IPCACHE_KEY),
            json_records(entries),
            "{node}: ipcache.bin and ipcache.json differ"
        );
        for e in entries {
            assert!(ids.contains(&e["identity"].as_u64().unwrap()), "{e:#}");
        }

        for id in names_in(&nd.join("endpoints")) {
            let dir = nd.join("endpoints").join(&id);
            let n: u16 = id
                .parse()
                .unwrap_or_else(|_| panic!("{node}: endpoint dir {id}"));
            let map = format!("cilium_policy_v2_{n:05}");
            assert_eq!(
                names_in(&dir),
                BTreeSet::from([
                    format!("{map}.bin"),
                    "policy.json".into(),
                    "npds.json".into(),
                    "endpoint.json".into()
                ]),
                "{}",
                dir.display()
            );
            let meta = read_json(&dir.join("endpoint.json"));
            assert_eq!(meta["endpoint_id"].as_u64(), Some(u64::from(n)));
            assert_eq!(meta["node"], node.as_str());
            assert_eq!(meta["policy_map"], map.as_str());
            assert!(
                ids.contains(&meta["identity"].as_u64().unwrap()),
                "{meta:#}"
            );
            let npds = read_json(&dir.join("npds.json"));
            assert_eq!(npds["endpointId"], id.as_str());

            // The policy map: 12-byte keys, a value per layout, the records of policy.json.
            let bin = std::fs::read(dir.join(format!("{map}.bin"))).unwrap();
            let rec = POLICY_KEY + policy_value;
            assert_eq!(
                bin.len() % rec,
                0,
                "{map}.bin of {node} is {} bytes",
                bin.len()
            );
            let policy = read_json(&dir.join("policy.json"));
            assert_eq!(policy["name"], map.as_str());
            assert_eq!(policy["key_size"].as_u64(), Some(POLICY_KEY as u64));
            assert_eq!(policy["value_size"].as_u64(), Some(policy_value as u64));
            let entries = policy["entries"].as_array().unwrap();
            let records = bin.len() / rec;
            assert_eq!(records, entries.len(), "{}", dir.display());
            assert_eq!(meta["entries"].as_u64(), Some(records as u64));
            let count = &policy["count"];
            assert_eq!(
                count["ingress"].as_u64().unwrap() + count["egress"].as_u64().unwrap(),
                records as u64
            );
            assert_sorted_by_key(&bin, rec, POLICY_KEY, &map);
            assert_eq!(
                records_of(&bin, rec, POLICY_KEY),
                json_records(entries),
                "{}: the .bin file and policy.json differ",
                dir.display()
            );
            for e in entries {
                let k = hex_bytes(e["key"].as_str().unwrap());
                assert_eq!(k.len(), POLICY_KEY, "{e:#}");
                assert_eq!(
                    hex_bytes(e["value"].as_str().unwrap()).len(),
                    policy_value,
                    "{e:#}"
                );
                // The key decodes to the fields policy.json gives.
                assert_eq!(u32_le(&k[0..4]), e["prefix_len"].as_u64().unwrap(), "{e:#}");
                assert_eq!(u32_le(&k[4..8]), e["identity"].as_u64().unwrap(), "{e:#}");
                let egress = e["direction"] == "egress";
                assert_eq!(k[8], u8::from(egress), "{e:#}");
                let port = u16::from_be_bytes([k[10], k[11]]);
                assert_eq!(u64::from(port), e["port"].as_u64().unwrap(), "{e:#}");
                let proto = match e["proto"].as_str().unwrap() {
                    "any" => 0,
                    "ICMP" => 1,
                    "TCP" => 6,
                    "UDP" => 17,
                    "ICMPv6" => 58,
                    "SCTP" => 132,
                    p => panic!("protocol {p}"),
                };
                assert_eq!(k[9], proto, "{e:#}");
                let id = e["identity"].as_u64().unwrap();
                assert!(id == 0 || ids.contains(&id), "{e:#}");
            }
            let name = meta["endpoint"].as_str().unwrap().to_string();
            let prev = endpoints.insert(
                name.clone(),
                Endpoint {
                    dir,
                    meta,
                    policy,
                    records,
                },
            );
            assert!(prev.is_none(), "{name} compiled twice");
        }
    }

    // The summary adds up.
    let per = summary["per_endpoint"].as_array().unwrap();
    assert_eq!(per.len(), endpoints.len());
    assert_eq!(summary["endpoints"].as_u64(), Some(endpoints.len() as u64));
    let mut total = 0;
    let mut max = 0;
    for p in per {
        let e = &endpoints[p["endpoint"].as_str().unwrap()];
        assert_eq!(p["entries"], e.meta["entries"]);
        assert_eq!(p["endpoint_id"], e.meta["endpoint_id"]);
        assert_eq!(p["node"], e.meta["node"]);
        assert_eq!(p["identity"], e.meta["identity"]);
        let n = p["entries"].as_u64().unwrap();
        assert_eq!(n, e.records as u64);
        let over = n > summary["policy_map_max"].as_u64().unwrap();
        assert_eq!(p["overflow"], over, "{p:#}");
        total += n;
        max = max.max(n);
    }
    assert_eq!(summary["entries"].as_u64(), Some(total));
    assert_eq!(
        endpoints.values().map(|e| e.records as u64).sum::<u64>(),
        total
    );
    assert_eq!(summary["max_entries"].as_u64(), Some(max));
    assert_eq!(
        summary["overflowing_endpoints"].as_u64(),
        Some(per.iter().filter(|p| p["overflow"] == true).count() as u64)
    );
    endpoints
}

/// The numbers of the one-line report.
fn check_report(stdout: &str, out: &Path) {
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let count = |n: &serde_json::Value, word: &str| {
        if n.as_u64() == Some(1) {
            format!("1 {word}")
        } else {
            format!("{n} {word}s")
        }
    };
    let expect = format!(
        "compiled {} on {} ({} identities, {} policy-map entries, at most {} per \
         endpoint, {} over the {}-entry map) into {}",
        count(&summary["endpoints"], "endpoint"),
        count(&summary["nodes"], "node"),
        summary["identities"],
        summary["entries"],
        summary["max_entries"],
        summary["overflowing_endpoints"],
        summary["policy_map_max"],
        out.display()
    );
    assert_eq!(stdout.trim_end(), expect);
}

/// The pods of the demo that get an endpoint (not host-network) and the nodes.
fn demo_endpoint_names() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = DEMO_NODES.iter().map(|n| format!("host/{n}")).collect();
    for f in ["kube-system", "monitoring", "payments", "shop"] {
        let text =
            std::fs::read_to_string(root().join(format!("policies/demo/cluster/pods-{f}.yaml")))
                .unwrap();
        for doc in text.split("\n---") {
            if doc.lines().any(|l| l.trim() == "hostNetwork: true") {
                continue;
            }
            let name = doc
                .lines()
                .find_map(|l| l.strip_prefix("  name: "))
                .unwrap_or_else(|| panic!("no pod name in {doc}"));
            names.insert(format!("{f}/{}", name.trim()));
        }
    }
    names
}

#[test]
fn demo_compiles_into_the_1_19_layout() {
    let (code, stdout, stderr, dir) = compile(&[]);
    let out = dir.path().join("out");
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    check_report(&stdout, &out);
    let endpoints = check_output(&out, "1.19", 12, 24);
    assert_eq!(
        names_in(&out.join("nodes")),
        DEMO_NODES.iter().map(|s| s.to_string()).collect()
    );
    assert_eq!(
        endpoints.keys().cloned().collect::<BTreeSet<_>>(),
        demo_endpoint_names()
    );
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["policy_map_layout"], "1.19");
    assert_eq!(summary["policy_map_max"], 16384);
    assert_eq!(summary["overflowing_endpoints"], 0);
    // Every endpoint enforces something in the demo and has entries; hosts are identity 1.
    for (name, e) in &endpoints {
        assert!(e.records > 0, "{name}");
        assert_eq!(e.policy["layout"], "1.19");
        if name.starts_with("host/") {
            assert_eq!(e.meta["identity"], 1, "{name}");
        } else {
            assert!(e.meta["identity"].as_u64().unwrap() >= 256, "{name}");
        }
    }
    // Endpoint ids are unique per node.
    for node in DEMO_NODES {
        let ids: Vec<_> = endpoints
            .values()
            .filter(|e| e.meta["node"] == node)
            .map(|e| e.meta["endpoint_id"].as_u64().unwrap())
            .collect();
        let unique: BTreeSet<_> = ids.iter().collect();
        assert_eq!(ids.len(), unique.len(), "{node}: {ids:?}");
    }
    // Each node's ipcache maps its own InternalIP to the host identity and the others' to a
    // remote-node identity.
    let own = [("node-1", "10.0.0.11/32"), ("node-2", "10.0.0.12/32")];
    for node in DEMO_NODES {
        let doc = read_json(&out.join("nodes").join(node).join("ipcache.json"));
        for (owner, prefix) in own {
            let e = doc["entries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["prefix"] == prefix)
                .unwrap_or_else(|| panic!("{node}: no {prefix}"));
            let id = e["identity"].as_u64().unwrap();
            if owner == node {
                assert_eq!(id, 1, "{node}: {e:#}");
            } else {
                assert!(id == 6 || id == 7, "{node}: {owner} is remote: {e:#}");
            }
        }
    }
}

#[test]
fn demo_compiles_into_the_1_17_and_1_18_layouts() {
    let (_, _, _, base) = compile(&[]);
    let base = check_output(&base.path().join("out"), "1.19", 12, 24);
    for version in ["1.17", "1.18"] {
        let (code, stdout, stderr, dir) = compile(&["--cilium-version", version]);
        let out = dir.path().join("out");
        assert_eq!(code, 0, "{version}: {stderr}");
        assert!(stderr.is_empty(), "{version}: {stderr}");
        check_report(&stdout, &out);
        let endpoints = check_output(&out, version, 8, 12);
        let summary = read_json(&out.join("summary.json"));
        assert_eq!(summary["policy_map_layout"], "1.17/1.18");
        // The same endpoints on the same nodes; the keys are the same bytes in every layout.
        assert_eq!(
            endpoints.keys().collect::<Vec<_>>(),
            base.keys().collect::<Vec<_>>()
        );
        if version == "1.17" {
            for (name, e) in &endpoints {
                let b = &base[name];
                assert_eq!(e.meta["endpoint_id"], b.meta["endpoint_id"], "{name}");
                let keys = |p: &Value| -> Vec<String> {
                    p["entries"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x["key"].as_str().unwrap().to_string())
                        .collect()
                };
                assert_eq!(keys(&e.policy), keys(&b.policy), "{name}");
            }
        }
    }
}

#[test]
fn node_restricts_the_output_to_one_node() {
    let (_, _, _, all) = compile(&[]);
    let all_out = all.path().join("out");
    let all_endpoints = check_output(&all_out, "1.19", 12, 24);
    for node in ["node-2", "node-3"] {
        let (code, stdout, stderr, dir) = compile(&["--node", node]);
        let out = dir.path().join("out");
        assert_eq!(code, 0, "{stderr}");
        assert!(stderr.is_empty(), "{stderr}");
        check_report(&stdout, &out);
        assert_eq!(
            names_in(&out.join("nodes")),
            BTreeSet::from([node.to_string()])
        );
        let endpoints = check_output(&out, "1.19", 12, 24);
        let expected: Vec<&String> = all_endpoints
            .iter()
            .filter(|(_, e)| e.meta["node"] == node)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(endpoints.keys().collect::<Vec<_>>(), expected);
        assert!(endpoints.contains_key(&format!("host/{node}")));
        // The node's maps are the same as in the full compile, byte for byte.
        for (name, e) in &endpoints {
            let full = &all_endpoints[name];
            assert_eq!(e.meta, full.meta, "{name}");
            let map = e.meta["policy_map"].as_str().unwrap();
            assert_eq!(
                std::fs::read(e.dir.join(format!("{map}.bin"))).unwrap(),
                std::fs::read(full.dir.join(format!("{map}.bin"))).unwrap(),
                "{name}"
            );
        }
        assert_eq!(
            std::fs::read(out.join("nodes").join(node).join("ipcache.bin")).unwrap(),
            std::fs::read(all_out.join("nodes").join(node).join("ipcache.bin")).unwrap()
        );
    }

    // An unknown node is a bad query, and nothing is written.
    let (code, stdout, stderr, dir) = compile(&["--node", "node-9"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("error[Q0401]") && stderr.contains("no node `node-9`"),
        "{stderr}"
    );
    assert!(!dir.path().join("out").exists());
}

/// The `[FILE:LINE:COL]` locations of a human rendering.
fn rendered_locations(stderr: &str) -> Vec<(String, usize)> {
    stderr
        .lines()
        .filter_map(|l| {
            let start = l.find("─[")? + "─[".len();
            let inner = &l[start..l.rfind(']')?];
            let mut parts = inner.rsplitn(3, ':');
            let _col = parts.next()?;
            let line = parts.next()?.parse().ok()?;
            Some((parts.next()?.to_string(), line))
        })
        .collect()
}

#[test]
fn policy_map_overflow_is_a_warning_at_the_inventory_object() {
    let (_, _, _, base) = compile(&[]);
    let summary = read_json(&base.path().join("out/summary.json"));
    let max = summary["max_entries"].as_u64().unwrap();
    assert!(max > 20, "the demo's largest map has {max} entries");
    // The largest map of the demo less one (at most 256): the largest endpoints overflow;
    // then 20: many do.
    for limit_n in [(max - 1).min(256), 20] {
        check_overflow(&summary, limit_n);
    }
}

/// Compiles the demo with `--policy-map-max limit_n` and checks the warnings against the
/// entries of `summary` (a compile without a limit).
fn check_overflow(summary: &Value, limit_n: u64) {
    let limit = limit_n.to_string();
    let over: BTreeMap<String, u64> = summary["per_endpoint"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["entries"].as_u64().unwrap() > limit_n)
        .map(|p| {
            (
                p["endpoint"].as_str().unwrap().to_string(),
                p["entries"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(!over.is_empty());

    let (code, stdout, stderr, dir) = compile(&["--policy-map-max", &limit]);
    let out = dir.path().join("out");
    assert_eq!(code, 0, "{stderr}");
    check_report(&stdout, &out);
    assert!(
        stdout.contains(&format!("{} over the {limit}-entry map", over.len())),
        "{stdout}"
    );
    let endpoints = check_output(&out, "1.19", 12, 24);
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["policy_map_max"].as_u64(), Some(limit_n));
    assert_eq!(
        summary["overflowing_endpoints"].as_u64(),
        Some(over.len() as u64)
    );
    // The maps are written anyway, in full.
    for (name, n) in &over {
        assert_eq!(endpoints[name].records as u64, *n, "{name}");
    }

    // One warning per overflowing endpoint, with its numbers.
    assert_eq!(
        stderr.matches("L0322 policy-map-overflow").count(),
        over.len(),
        "{stderr}"
    );
    // (Long messages wrap: compare with the words joined by single spaces.)
    let words: String = stderr
        .split_whitespace()
        .filter(|w| *w != "│")
        .collect::<Vec<_>>()
        .join(" ");
    for (name, n) in &over {
        assert!(
            words.contains(&format!(
                "{name} needs {n} policy-map entries; its map holds {limit}"
            )),
            "{name}: {stderr}"
        );
    }
    assert_eq!(
        stderr.matches("L0322 policy-map-overflow").count(),
        over.len(),
        "{stderr}"
    );
    // Each warning points at the pod's or node's `name:` in the inventory.
    let inventory = root().join("policies/demo/cluster");
    let mut pointed = BTreeSet::new();
    for (file, line) in rendered_locations(&stderr) {
        assert!(
            Path::new(&file).starts_with(&inventory),
            "{file} is not in the inventory"
        );
        let text = std::fs::read_to_string(&file).unwrap();
        let at = text.lines().nth(line - 1).unwrap();
        let name = at
            .trim_start()
            .strip_prefix("name: ")
            .unwrap_or_else(|| panic!("{file}:{line} is `{at}`, not a `name:`"));
        pointed.insert(name.to_string());
    }
    let expected: BTreeSet<String> = over
        .keys()
        .map(|n| n.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(pointed, expected, "{stderr}");
}

/// The overflow warnings render with the summary line of the input; it says 0 objects
/// although the whole demo (71 objects) was read.
#[test]
fn overflow_summary_line_counts_the_objects() {
    let (code, _, stderr, _dir) = compile(&["--policy-map-max", "100"]);
    assert_eq!(code, 0);
    assert!(stderr.contains("L0322"), "{stderr}");
    assert!(!stderr.contains("(0 objects)"), "{stderr}");
}

/// `policy.json` describes the BPF map; its `max_entries` should be the capacity the run
/// assumed (`--policy-map-max`), which `summary.json` and the L0322 warnings use.
#[test]
fn policy_json_max_entries_follows_policy_map_max() {
    let (code, _, _, dir) = compile(&["--policy-map-max", "100"]);
    assert_eq!(code, 0);
    let out = dir.path().join("out");
    let endpoints = check_output(&out, "1.19", 12, 24);
    for (name, e) in &endpoints {
        assert_eq!(e.policy["max_entries"], 100, "{name}");
    }
}

#[test]
fn bad_input_exits_two_and_writes_nothing() {
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
    let out = dir.path().join("out");
    let inventory = path("policies/demo/cluster");
    let (code, stdout, stderr) = polc(
        &[
            "compile",
            "--policies",
            bad.to_str().unwrap(),
            "--inventory",
            &inventory,
            "-o",
            out.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("S0220") && stderr.contains("the input has errors"),
        "{stderr}"
    );
    assert!(!out.exists());

    // Unreadable inventory.
    let missing = dir.path().join("missing");
    let (code, _, stderr) = polc(
        &[
            "compile",
            "--policies",
            &path("policies/demo/policies"),
            "--inventory",
            missing.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("P0109"), "{stderr}");
    assert!(!out.exists());

    // An output path that is a file.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let (code, _, stderr) = polc(
        &[
            "compile",
            "--policies",
            &path("policies/demo/policies"),
            "--inventory",
            &inventory,
            "-o",
            file.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("polc: error"), "{stderr}");

    // Missing -o, bad version.
    let (code, _, stderr) = polc(
        &[
            "compile",
            "--policies",
            &path("policies/demo/policies"),
            "--inventory",
            &inventory,
        ],
        b"",
    );
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = polc(
        &[
            "compile",
            "--policies",
            &path("policies/demo/policies"),
            "--cilium-version",
            "1.12",
            "-o",
            out.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(!out.exists());
}

/// Every map entry `explain` cites for a demo flow is an entry of the compiled map of that
/// endpoint, with the same verdict, proxy port and precedence; and the identities agree.
#[test]
fn explain_map_entries_are_entries_of_the_compiled_maps() {
    let (code, _, stderr, dir) = compile(&[]);
    assert_eq!(code, 0, "{stderr}");
    let endpoints = check_output(&dir.path().join("out"), "1.19", 12, 24);
    let (code, out, err) = polc(
        &[
            "explain",
            "--policies",
            &path("policies/demo/policies"),
            "--inventory",
            &path("policies/demo/cluster"),
            "--flows",
            &path("policies/demo/flows.yaml"),
            "--format",
            "json",
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let mut matched = 0;
    for f in v["flows"].as_array().unwrap() {
        let line = &f["line"];
        for r in f["reasons"].as_array().unwrap() {
            let name = r["endpoint"].as_str().unwrap();
            let e = endpoints
                .get(name)
                .unwrap_or_else(|| panic!("flows.yaml:{line}: {name} was not compiled"));
            assert_eq!(
                r["identity"], e.meta["identity"],
                "flows.yaml:{line}: {name}"
            );
            let m = &r["map_entry"];
            if m.is_null() {
                continue;
            }
            let k = &m["key"];
            let hit = e.policy["entries"].as_array().unwrap().iter().find(|x| {
                let key = hex_bytes(x["key"].as_str().unwrap());
                x["direction"] == k["direction"]
                    && x["identity"] == k["identity"]
                    && u64::from(key[9]) == k["protocol"].as_u64().unwrap()
                    && x["port"] == k["port"]
                    && x["prefix_len"] == k["prefix_len"]
            });
            let hit = hit.unwrap_or_else(|| {
                panic!("flows.yaml:{line}: {name} has no compiled entry for {m:#}")
            });
            assert_eq!(hit["verdict"], m["verdict"], "flows.yaml:{line}: {name}");
            assert_eq!(
                hit["proxy_port"], m["proxy_port"],
                "flows.yaml:{line}: {name}"
            );
            assert_eq!(
                hit["precedence"], m["precedence"],
                "flows.yaml:{line}: {name}"
            );
            matched += 1;
        }
    }
    assert!(matched >= 40, "only {matched} map entries compared");
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
