//! `polc agent` at our users' scale (issue 8): the real binary, as root, against the fake API
//! server of the tests (`tests/tests/common/fake_api.rs`) serving the cluster `polc gen
//! --scale users` writes (400 nodes, 36,000 pods, 27,000 services, 3,000 CNPs, 200 CCNPs,
//! 500 CIDR groups), installing one node's maps into a pin directory of its own under
//! `/sys/fs/bpf`. It measures:
//! - from start to the first install (every kind listed, the model built, the node
//!   compiled and its maps written);
//! - from a policy change sent on the watch to the maps updated: CHANGES times a port of a
//!   CNP selecting pods on the node, and CHANGES times a new `toCIDR` prefix (a new CIDR
//!   identity); timed outside (from the event sent to `/metrics` showing the install done)
//!   and by the agent (`polc_agent_last_event_to_install_seconds`);
//! - pod churn: RATE pod events per second (a pod added, and the oldest churned pod, about a
//!   second old, deleted; spread over the nodes, and with LOCAL_EVERY=N one in N more on the
//!   agent's node) for SECONDS; the throughput is the events sent over the time until the
//!   agent has installed the last of them, and the node's endpoint count must then be right;
//! - the agent's memory (resident, and its peak).
//!
//! `cargo bench -p polc --bench agent` (env CHANGES, default 30; RATE, default 2000; SECONDS,
//! default 10; LOCAL_EVERY, default 0; POLICY_MAP_MAX, default 65536: the generated policies
//! overflow 16,384 entries on some endpoints; PROXY_CONFIG=1: the agent writes the proxy's
//! configuration too). Under `cargo test --all-targets` it runs once on the small cluster with a
//! few changes and a short churn, and fails if the agent does not keep up. It needs root
//! and a bpffs at /sys/fs/bpf; without them it says so and does nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../../tests/tests/common/agent_metrics.rs"]
mod agent_metrics;
#[path = "../../tests/tests/common/fake_api.rs"]
#[allow(dead_code)]
mod fake_api;

use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The agent process and its pin directory, both gone when dropped.
struct Agent {
    child: Child,
    pins: PathBuf,
    port: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

impl Agent {
    fn metric(&self, name: &str) -> f64 {
        agent_metrics::get(self.port, "/metrics", Duration::from_secs(5))
            .map_or(-1.0, |(_, body)| agent_metrics::metric(&body, name))
    }

    /// Waits (polling every millisecond) until `metric` is at least `at_least`; returns when.
    fn wait_for(&mut self, metric: &str, at_least: f64, timeout: Duration) -> Instant {
        let until = Instant::now() + timeout;
        loop {
            if self.metric(metric) >= at_least {
                return Instant::now();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the agent exited ({status})");
            }
            assert!(
                Instant::now() < until,
                "{metric} did not reach {at_least} in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// (resident, peak) memory in MiB.
    fn memory(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
    }
}

/// The plural of a kind the fake server serves.
fn plural(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "CiliumNetworkPolicy" => "ciliumnetworkpolicies",
        "CiliumClusterwideNetworkPolicy" => "ciliumclusterwidenetworkpolicies",
        "CiliumCIDRGroup" => "ciliumcidrgroups",
        "NetworkPolicy" => "networkpolicies",
        "Namespace" => "namespaces",
        "Node" => "nodes",
        "Pod" => "pods",
        "Service" => "services",
        _ => return None,
    })
}

/// The generated cluster as the API server would serve it: (plural, object) pairs.
fn cluster(scale: &polc_compiler::r#gen::Scale) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    for mut item in polc_cli::commands::r#gen::api_objects(scale) {
        let Some(p) = item["kind"].as_str().and_then(plural) else {
            continue;
        };
        item["metadata"]["resourceVersion"] = json!("1");
        out.push((p, item));
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut outside: Vec<f64>, mut inside: Vec<f64>) {
    outside.sort_by(f64::total_cmp);
    inside.sort_by(f64::total_cmp);
    println!(
        "{name:<34} outside p50 {:>7.1} ms  p95 {:>7.1} ms  max {:>7.1} ms | agent p50 {:>7.1} ms  max {:>7.1} ms",
        percentile(&outside, 0.5),
        percentile(&outside, 0.95),
        outside.last().copied().unwrap_or(0.0),
        percentile(&inside, 0.5),
        inside.last().copied().unwrap_or(0.0),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this once without it.
    let full = std::env::args().any(|a| a == "--bench");
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if polc_ebpf::sys::euid() != 0 || !Path::new("/sys/fs/bpf").is_dir() {
        println!("agent bench skipped: it needs root and a bpffs at /sys/fs/bpf");
        return;
    }
    let changes = env_or("CHANGES", if full { 30 } else { 3 }) as usize;
    let rate = env_or("RATE", if full { 2000 } else { 200 });
    let rate = rate.max(2);
    let seconds = env_or("SECONDS", if full { 10 } else { 2 });
    let map_max = env_or("POLICY_MAP_MAX", 65536);
    // One churned pod in LOCAL_EVERY also goes to the agent's node (0: they spread over the
    // nodes evenly, one in 400 on it).
    let local_every = env_or("LOCAL_EVERY", 0) as usize;
    let scale = if full {
        polc_compiler::r#gen::Scale::users()
    } else {
        polc_compiler::r#gen::Scale::small()
    };
    let objects = cluster(&scale);
    // The node with the most pods.
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for (p, o) in &objects {
        if *p == "pods" && o["spec"]["hostNetwork"] != json!(true) {
            *per_node
                .entry(o["spec"]["nodeName"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
        }
    }
    let (node, local_pods) = per_node
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(n, c)| (n.clone(), *c))
        .unwrap();
    let nodes: Vec<String> = per_node.keys().cloned().collect();
    let fake = fake_api::Fake::serving(&fake_api::EVERY_KIND);
    let templates: Vec<Value> = objects
        .iter()
        .filter(|(p, o)| *p == "pods" && o["spec"]["hostNetwork"] != json!(true))
        .map(|(_, o)| o.clone())
        .collect();
    let local: Value = templates
        .iter()
        .find(|o| {
            o["spec"]["nodeName"] == json!(node) && o["metadata"]["labels"]["app"].is_string()
        })
        .cloned()
        .expect("a pod with an `app` label on the node");
    println!(
        "cluster: {} objects ({} pods); node {node} with {local_pods} pods",
        objects.len(),
        templates.len()
    );
    for (p, o) in objects {
        fake.add(p, o);
    }
    let port = fake_api::start(fake.clone());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake_api::kubeconfig(dir.path(), port);
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pins = PathBuf::from(format!(
        "/sys/fs/bpf/polc-bench-agent-{}",
        std::process::id()
    ));
    // The agent's log is kept (with POLC_TIMINGS set, it holds each batch's step timings).
    let log_path = std::env::temp_dir().join("polc-agent-bench.log");
    let log = std::fs::File::create(&log_path).unwrap();
    println!("the agent's log: {}", log_path.display());
    // PROXY_CONFIG=1: the agent also writes the node's proxy configuration after every batch.
    let proxy_config: Vec<String> = if env_or("PROXY_CONFIG", 0) == 1 {
        vec![
            "--proxy-config".into(),
            dir.path().join("proxy.json").display().to_string(),
        ]
    } else {
        Vec::new()
    };
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_polc"))
        .args(["agent", "--node", &node, "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--bpffs-root")
        .arg(&pins)
        .args(["--metrics", &format!("127.0.0.1:{metrics_port}")])
        // The generated users' policies give some endpoints more than 16,384 entries (as
        // `polc compile` warns); such clusters run with the largest maps.
        .args(["--policy-map-max", &map_max.to_string()])
        .args(&proxy_config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("polc agent");
    let mut agent = Agent {
        child,
        pins,
        port: metrics_port,
    };
    let first = agent.wait_for("polc_agent_ready", 1.0, Duration::from_secs(900)) - started;
    let (rss, peak) = agent.memory();
    println!(
        "start to first install: {:.2} s ({} endpoints, {} policy-map entries); memory {rss:.0} MiB, peak {peak:.0} MiB",
        first.as_secs_f64(),
        agent.metric("polc_agent_endpoints"),
        agent.metric("polc_agent_policy_entries"),
    );

    // Policy changes.
    let ns = local["metadata"]["namespace"].as_str().unwrap().to_string();
    let app = local["metadata"]["labels"]["app"]
        .as_str()
        .unwrap()
        .to_string();
    let policy = |i: usize, cidr: bool| {
        let peer = if cidr {
            json!({"toCIDR": [format!("198.18.{}.0/24", i % 250)],
                   "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]})
        } else {
            json!({"toEndpoints": [{"matchLabels": {"app": app}}],
                   "toPorts": [{"ports": [{"port": (10_000 + i).to_string(), "protocol": "TCP"}]}]})
        };
        let name = if cidr { "bench-cidr" } else { "bench-port" };
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
               "metadata": {"name": name, "namespace": ns, "resourceVersion": (i + 2).to_string()},
               "spec": {"endpointSelector": {"matchLabels": {"app": app}}, "egress": [peer]}})
    };
    for cidr in [false, true] {
        let (mut outside, mut inside) = (Vec::new(), Vec::new());
        for i in 0..changes {
            let before = agent.metric("polc_agent_recomputes_total");
            let kind = if i == 0 { "ADDED" } else { "MODIFIED" };
            let sent = Instant::now();
            fake.event("ciliumnetworkpolicies", kind, &policy(i, cidr));
            let done = agent.wait_for(
                "polc_agent_recomputes_total",
                before + 1.0,
                Duration::from_secs(120),
            );
            outside.push((done - sent).as_secs_f64() * 1e3);
            inside.push(agent.metric("polc_agent_last_event_to_install_seconds") * 1e3);
            std::thread::sleep(Duration::from_millis(20));
        }
        let name = if cidr {
            "policy change (new CIDR prefix)"
        } else {
            "policy change (a port)"
        };
        summary(name, outside, inside);
    }

    // Pod churn: a pod added, then the oldest churned pod deleted, alternately, with about
    // RATE/2 churned pods alive (each lives about a second: a batch does not see a pod come
    // and go, which would cancel out).
    let events_before = agent.metric("polc_agent_events_installed_total");
    let endpoints_before = agent.metric("polc_agent_endpoints");
    let recomputes_before = agent.metric("polc_agent_recomputes_total");
    let mut live: VecDeque<Value> = VecDeque::new();
    let total = (rate * seconds) as usize;
    let churn_started = Instant::now();
    let mut local_live = 0i64;
    let on_node = |p: &Value| p["spec"]["nodeName"] == json!(node);
    for k in 0..total {
        let due = churn_started + Duration::from_secs_f64(k as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if k % 2 == 1 && live.len() as u64 > rate / 2 {
            let p = live.pop_front().unwrap();
            local_live -= i64::from(on_node(&p));
            fake.event("pods", "DELETED", &p);
            continue;
        }
        let mut p = templates[(k * 7919) % templates.len()].clone();
        let name = format!("{}-churn-{k}", p["metadata"]["name"].as_str().unwrap());
        let ip = format!("10.200.{}.{}", (k / 250) % 250, k % 250 + 1);
        p["metadata"]["name"] = json!(name);
        p["metadata"]["resourceVersion"] = json!((k + 100).to_string());
        p["status"]["podIP"] = json!(ip);
        p["status"]["podIPs"] = json!([{"ip": ip}]);
        p["spec"]["nodeName"] = json!(if local_every > 0 && k % local_every == 0 {
            node.clone()
        } else {
            nodes[(k / 2) % nodes.len()].clone()
        });
        local_live += i64::from(on_node(&p));
        fake.event("pods", "ADDED", &p);
        live.push_back(p);
    }
    let sent_all = Instant::now();
    let done = agent.wait_for(
        "polc_agent_events_installed_total",
        events_before + total as f64,
        Duration::from_secs(600),
    );
    let took = (done - churn_started).as_secs_f64();
    let endpoints = agent.metric("polc_agent_endpoints");
    let (rss, peak) = agent.memory();
    println!(
        "pod churn: {total} events at {rate}/s sent in {:.2} s; all installed after {took:.2} s \
         ({:.0} events/s, {:.0} ms behind the last event, {} recomputes); endpoints {endpoints} \
         (expected {})",
        (sent_all - churn_started).as_secs_f64(),
        total as f64 / took,
        (done - sent_all).as_secs_f64() * 1e3,
        agent.metric("polc_agent_recomputes_total") - recomputes_before,
        endpoints_before + local_live as f64,
    );
    println!("memory after churn: {rss:.0} MiB resident, peak {peak:.0} MiB");
    assert_eq!(
        endpoints,
        endpoints_before + local_live as f64,
        "the node's endpoints after the churn"
    );
    assert_eq!(agent.metric("polc_agent_install_errors_total"), 0.0);
    let _keep: Arc<fake_api::Fake> = fake;
}
