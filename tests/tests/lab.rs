//! `polc lab` end to end, as root: the demo and every scenario of `tests/scenarios` (and the
//! lab's own under `tests/lab`) brought up as network namespaces with the datapath loaded,
//! every flow probed with real packets and held to `eval`, HTTP requests and DNS queries
//! through the lab nodes' L7 proxies; the proxies' counters, access log and status, a port
//! that fails closed when its proxy is gone; then a TCP stream and a stream of new
//! connections that must survive 100 policy replacements without a policy drop.
//!
//! Each lab has a unique name and is removed by a guard, also when a test fails.

mod common;

use common::{polc, root};
use polc_ebpf::abi::Reason;
use polc_ebpf::loader::Status;
use polc_ebpf::sys;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn skip_reason() -> Option<&'static str> {
    if sys::euid() != 0 {
        return Some("needs root (BPF programs, network namespaces)");
    }
    if !Path::new("/sys/fs/bpf").exists() {
        return Some("the kernel has no BPF filesystem");
    }
    None
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A lab, removed on drop.
struct Lab {
    name: String,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            name: format!(
                "t{}x{}",
                std::process::id() % 100_000,
                SEQ.fetch_add(1, Ordering::SeqCst)
            ),
        }
    }

    fn up(&self, policies: &Path, inventory: &Path, extra: &[String]) {
        let mut args: Vec<String> = vec![
            "lab".into(),
            "up".into(),
            "--name".into(),
            self.name.clone(),
            "--policies".into(),
            policies.display().to_string(),
            "--inventory".into(),
            inventory.display().to_string(),
        ];
        args.extend_from_slice(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = polc(&refs, b"");
        assert_eq!(code, 0, "lab up {}:\n{out}\n{err}", policies.display());
    }

    /// Probes a flows file; returns the JSON list.
    fn probe_flows(&self, flows: &Path) -> (i32, Vec<Value>, String) {
        let (code, out, err) = polc(
            &[
                "lab",
                "probe",
                "--name",
                &self.name,
                "--flows",
                flows.to_str().unwrap(),
                "--format",
                "json",
            ],
            b"",
        );
        let list = serde_json::from_str::<Value>(&out)
            .unwrap_or_else(|e| panic!("{e}: {out}\n{err}"))
            .as_array()
            .unwrap()
            .clone();
        (code, list, err)
    }

    fn state(&self) -> Value {
        let text = std::fs::read_to_string(format!("/run/polc-lab/{}.json", self.name)).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The network namespace and first address of pod `key`.
    fn pod(&self, key: &str) -> (PathBuf, String) {
        let state = self.state();
        let pod = state["plan"]["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["key"] == key)
            .unwrap_or_else(|| panic!("no pod {key}"))
            .clone();
        (
            PathBuf::from("/run/netns").join(pod["netns"].as_str().unwrap()),
            pod["ips"][0].as_str().unwrap().to_string(),
        )
    }

    fn statuses(&self) -> Vec<Status> {
        polc_ebpf::loader::instances(&PathBuf::from("/sys/fs/bpf/polc-lab").join(&self.name))
            .iter()
            .map(|d| Status::read(d).unwrap())
            .collect()
    }

    /// Each node's proxy status.
    fn proxy_status(&self) -> Vec<Value> {
        self.proxy_files("status.json")
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect()
    }

    /// Every access log line of every node's proxy.
    fn access_log(&self) -> Vec<Value> {
        self.proxy_files("access.log")
            .iter()
            .flat_map(|t| t.lines().map(|l| serde_json::from_str(l).unwrap()))
            .collect::<Vec<Value>>()
    }

    fn proxy_files(&self, name: &str) -> Vec<String> {
        let dir = PathBuf::from(format!("/run/polc-lab/{}.d", self.name));
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            if let Ok(t) = std::fs::read_to_string(e.unwrap().path().join(name)) {
                out.push(t);
            }
        }
        out
    }

    fn counter(&self, reasons: &[Reason]) -> u64 {
        self.statuses()
            .iter()
            .flat_map(|s| s.counters.iter())
            .filter(|(r, _)| reasons.contains(r))
            .map(|(_, c)| c.packets)
            .sum()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let (code, _, err) = polc(&["lab", "down", "--name", &self.name], b"");
        if code != 0 {
            eprintln!("lab down {}: {err}", self.name);
        }
    }
}

/// Checks every probed flow of `list` against eval (with its request, if any) and returns
/// (probed flows, disagreements).
fn check(what: &str, list: &[Value]) -> (usize, Vec<String>) {
    let mut probed = 0;
    let mut bad = Vec::new();
    for f in list {
        let Some(observed) = f["observed"].as_str() else {
            assert!(
                f["skipped"].is_string() || f["probes"].as_array().is_some_and(|p| p.is_empty()),
                "{what}: a flow neither probed nor skipped: {f}"
            );
            continue;
        };
        probed += 1;
        for key in ["from", "to", "proto", "expect", "eval"] {
            assert!(!f[key].is_null(), "{what}: no `{key}` in {f}");
        }
        assert!(!f["port"].is_null() || !f["icmpType"].is_null(), "{f}");
        let want = f["eval"].as_str().unwrap();
        if observed != want {
            bad.push(format!(
                "{what}:{} {} -> {} {} {}: kernel {observed}, eval {want} ({})",
                f["line"], f["from"], f["to"], f["proto"], f["port"], f["probes"]
            ));
        }
    }
    (probed, bad)
}

#[test]
fn the_demo_agrees_with_eval_and_replies_pass_through_conntrack() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let lab = Lab::new();
    let demo = root().join("policies/demo");
    lab.up(&demo.join("policies"), &demo.join("cluster"), &[]);
    let (code, list, err) = lab.probe_flows(&demo.join("flows.yaml"));
    let (probed, bad) = check("demo", &list);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(probed, list.len(), "every demo flow is probed");
    assert!(probed >= 40);
    // The demo's flows go both ways between the world and pods; every allowed TCP flow came
    // back through the datapath's conntrack only (no policy allows the replies).
    let world_in = list
        .iter()
        .any(|f| f["from"].as_str().unwrap().starts_with("203.") && f["observed"] == "allow");
    let world_out = list
        .iter()
        .any(|f| f["to"].as_str().unwrap().starts_with("203.") && f["observed"] == "allow");
    assert!(world_in && world_out);
    assert!(lab.counter(&[Reason::PassCtReply]) > 0);
    assert!(lab.counter(&[Reason::PassCtEstablished]) > 0);
    assert!(lab.counter(&[Reason::DropPolicy, Reason::DropPolicyDeny]) > 0);

    // The L7 flows went through the proxies: some requests were refused by them (403,
    // REFUSED), the others reached the destination.
    let results: Vec<&str> = list
        .iter()
        .flat_map(|f| f["probes"].as_array().unwrap().iter())
        .filter_map(|p| p["result"].as_str())
        .collect();
    assert!(results.contains(&"denied"), "{results:?}");
    assert!(lab.counter(&[Reason::PassToProxy]) > 0);
    let status = lab.proxy_status();
    let sum = |key: &str, field: &str| -> u64 {
        status
            .iter()
            .map(|s| s[key][field].as_u64().unwrap_or(0))
            .sum()
    };
    assert!(sum("http", "denied") >= 4, "{status:?}");
    assert!(sum("http", "allowed") >= 4, "{status:?}");
    assert!(sum("dns", "forwarded") >= 1, "{status:?}");
    let log = lab.access_log();
    assert!(
        log.iter().any(|l| l["verdict"] == "denied"
            && l["method"] == "DELETE"
            && l["policies"][0]
                .as_str()
                .is_some_and(|p| p.contains("shop/backend-ingress-http"))),
        "{log:?}"
    );
    let (code, out, _) = polc(
        &[
            "status",
            "--bpffs-root",
            &format!("/sys/fs/bpf/polc-lab/{}", lab.name),
        ],
        b"",
    );
    assert_eq!(code, 0);
    assert!(out.contains("enforced by polc's proxy"), "{out}");
    assert!(out.contains("L7 proxy (pid"), "{out}");

    // One probe on its own.
    let (code, out, err) = polc(
        &[
            "lab",
            "probe",
            "--name",
            &lab.name,
            "--from",
            "203.0.113.9",
            "--to",
            "kube-system/ingress-nginx-controller-6b8c5f7d9f-qw8rt",
            "--proto",
            "tcp",
            "--port",
            "443",
        ],
        b"",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("connected in"), "{out}");
    assert!(out.contains("eval: allow"), "{out}");
}

/// Without its proxy an L7 port fails closed: the datapath drops what it would redirect,
/// and counts it. `lab apply` starts the proxy again, and the request gets through.
#[test]
fn an_l7_port_fails_closed_while_its_proxy_is_gone() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let lab = Lab::new();
    let dir = root().join("tests/scenarios/054-http-method-path-anchored");
    lab.up(&dir.join("policies.yaml"), &dir.join("inventory.yaml"), &[]);
    let probe = || {
        let (code, out, err) = polc(
            &[
                "lab",
                "probe",
                "--name",
                &lab.name,
                "--from",
                "app/client",
                "--to",
                "app/api",
                "--port",
                "8080",
                "--http-method",
                "GET",
                "--http-path",
                "/api",
                "--format",
                "json",
            ],
            b"",
        );
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
        (code, v)
    };
    let (code, v) = probe();
    assert_eq!((code, v["observed"].as_str()), (0, Some("allow")), "{v}");
    let mut stopped = 0;
    for e in std::fs::read_dir(format!("/run/polc-lab/{}.d", lab.name)).unwrap() {
        if let Ok(pid) = std::fs::read_to_string(e.unwrap().path().join("pid")) {
            let status = std::process::Command::new("kill").arg(pid.trim()).status();
            assert!(status.unwrap().success());
            stopped += 1;
        }
    }
    assert!(stopped > 0);
    common::eventually("the proxies stop", Duration::from_secs(5), || {
        let (_, v) = probe();
        v["observed"] == "deny"
    });
    assert!(lab.counter(&[Reason::DropProxy]) > 0);
    let (code, _, err) = polc(&["lab", "apply", "--name", &lab.name], b"");
    assert_eq!(code, 0, "{err}");
    let (code, v) = probe();
    assert_eq!((code, v["observed"].as_str()), (0, Some("allow")), "{v}");
}

/// Every scenario directory with flows.
fn scenarios() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for base in ["tests/scenarios", "tests/lab"] {
        let Ok(rd) = std::fs::read_dir(root().join(base)) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.join("flows.yaml").exists() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_scenario_agrees_with_eval() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let dirs = scenarios();
    assert!(dirs.len() >= 20, "{} scenarios", dirs.len());
    let next = AtomicUsize::new(0);
    let bad = Mutex::new(Vec::new());
    let probed = AtomicUsize::new(0);
    let ipv6 = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(dir) = dirs.get(i) else { break };
                    let name = dir.file_name().unwrap().to_string_lossy().to_string();
                    let extra: Vec<String> = std::fs::read_to_string(dir.join("args"))
                        .unwrap_or_default()
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                    let lab = Lab::new();
                    lab.up(
                        &dir.join("policies.yaml"),
                        &dir.join("inventory.yaml"),
                        &extra,
                    );
                    let (_, list, err) = lab.probe_flows(&dir.join("flows.yaml"));
                    assert!(
                        !err.contains("error["),
                        "{name}: a probe could not run: {err}"
                    );
                    let (n, b) = check(&name, &list);
                    probed.fetch_add(n, Ordering::SeqCst);
                    ipv6.fetch_add(
                        list.iter()
                            .flat_map(|f| f["probes"].as_array().cloned().unwrap_or_default())
                            .filter(|p| p["family"] == "ipv6")
                            .count(),
                        Ordering::SeqCst,
                    );
                    bad.lock().unwrap().extend(b);
                }
            });
        }
    });
    let bad = bad.into_inner().unwrap();
    assert!(
        bad.is_empty(),
        "kernel and eval disagree:\n{}",
        bad.join("\n")
    );
    let probed = probed.into_inner();
    let ipv6 = ipv6.into_inner();
    eprintln!(
        "{} scenarios, {probed} flows probed, {ipv6} IPv6 probes, all agree with eval",
        dirs.len()
    );
    assert!(probed >= 300, "{probed}");
    assert!(ipv6 >= 20, "{ipv6} IPv6 probes");
}

const UPDATE_INVENTORY: &str = "\
apiVersion: v1
kind: Node
metadata: {name: node-1}
status: {addresses: [{type: InternalIP, address: 10.0.0.11}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-2}
status: {addresses: [{type: InternalIP, address: 10.0.0.12}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: app, labels: {kubernetes.io/metadata.name: app}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: client}}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: app, labels: {app: other}}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: app, labels: {app: server}}
spec: {nodeName: node-2}
status: {podIP: 10.244.2.20}
";

/// Set A: the stream is allowed by L3+L4 items on both ends.
const POLICIES_A: &str = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: server-in, namespace: app}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: '7000', protocol: TCP}]}]
  - fromEndpoints: [{matchLabels: {app: other}}]
    toPorts: [{ports: [{port: '9000', protocol: TCP}, {port: '53', protocol: UDP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-out, namespace: app}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: server}}]
    toPorts: [{ports: [{port: '7000', protocol: TCP}]}]
";

/// Set B: the same stream allowed by other entries (L3-only on the server, a port range on
/// the client), some entries gone, others added, and denies that do not touch the stream.
const POLICIES_B: &str = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: server-in, namespace: app}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: other}}]
    toPorts: [{ports: [{port: '7000', protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-out, namespace: app}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: server}}]
    toPorts: [{ports: [{port: '6990', endPort: 7010, protocol: TCP}]}]
  - toCIDR: [203.0.113.0/24]
  egressDeny:
  - toEndpoints: [{matchLabels: {app: server}}]
    toPorts: [{ports: [{port: '8443', protocol: TCP}]}]
";

#[test]
fn a_stream_survives_100_policy_replacements_without_a_policy_drop() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yaml");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&inv, UPDATE_INVENTORY).unwrap();
    for (d, text) in [(&a, POLICIES_A), (&b, POLICIES_B)] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("policies.yaml"), text).unwrap();
    }
    let lab = Lab::new();
    lab.up(&a, &inv, &[]);
    let (client_ns, _) = lab.pod("app/client");
    let (server_ns, server_ip) = lab.pod("app/server");
    let addr: SocketAddr = format!("{server_ip}:7000").parse().unwrap();

    let drops_before = lab.counter(&[Reason::DropPolicy, Reason::DropPolicyDeny]);
    let traffic = EchoTraffic::start(&client_ns, &server_ns, addr);

    let start = Instant::now();
    for i in 0..100 {
        let set = if i % 2 == 0 { &b } else { &a };
        let (code, out, err) = polc(
            &[
                "lab",
                "apply",
                "--name",
                &lab.name,
                "--policies",
                set.to_str().unwrap(),
            ],
            b"",
        );
        assert_eq!(code, 0, "apply {i}: {out}{err}");
        assert!(
            out.lines().any(|l| !l.contains("policy entries +0 ~0 -0")),
            "apply {i} changed entries: {out}"
        );
    }
    let took = start.elapsed();
    let (sent, connections) = traffic.finish();
    let drops = lab.counter(&[Reason::DropPolicy, Reason::DropPolicyDeny]) - drops_before;
    assert_eq!(
        drops, 0,
        "packets counted as policy drops during the updates"
    );
    eprintln!(
        "100 policy replacements in {:.1} s: stream echoed {sent} bytes, {connections} new \
         connections, no policy drop",
        took.as_secs_f64()
    );
}

/// The lab and the cluster of the agent's lab tests (`tests/lab-agent`): a lab of one node,
/// and the fake API server in its router namespace serving namespace `app`, node-1, the pods
/// `client` and `api` (each labelled `app: NAME`), the CNP `api` ([`agent_policy`], port
/// 8080) and the CIDR group `partners` ([`partners`], 203.0.113.0/28).
struct AgentLab {
    lab: Lab,
    fake: Arc<common::fake_api::Fake>,
    router: PathBuf,
    kubeconfig: String,
    /// Holds the kubeconfig.
    _dir: tempfile::TempDir,
}

/// [`AgentLab`], up; `None` (said) where the machine cannot run a lab.
fn agent_lab() -> Option<AgentLab> {
    use common::fake_api::{self, Fake};
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let dir = root().join("tests/lab-agent");
    let lab = Lab::new();
    lab.up(&dir.join("policies.yaml"), &dir.join("inventory.yaml"), &[]);
    let router = PathBuf::from("/run/netns")
        .join(lab.state()["plan"]["nodes"][0]["router"].as_str().unwrap());
    let fake = Fake::serving(&fake_api::EVERY_KIND);
    fake.add("namespaces", fake_api::namespace("app"));
    fake.add("nodes", fake_api::node("node-1", "10.0.0.11"));
    for (name, ip) in [("client", "10.244.1.10"), ("api", "10.244.1.20")] {
        fake.add("pods", fake_api::pod(name, name, "node-1", ip));
    }
    fake.add("ciliumnetworkpolicies", agent_policy(&["8080"]));
    fake.add("ciliumcidrgroups", partners("203.0.113.0/28"));
    let port = fake_api::start_in(fake.clone(), &router);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake_api::kubeconfig(dir.path(), port);
    Some(AgentLab {
        lab,
        fake,
        router,
        kubeconfig: kubeconfig.to_str().unwrap().to_string(),
        _dir: dir,
    })
}

/// The CNP `api` of the agent's lab tests: `client` may reach `api` on `ports`, and the CIDR
/// group `partners` on 8080.
fn agent_policy(ports: &[&str]) -> Value {
    let mut policy = common::fake_api::api_policy(ports);
    if let Some(ingress) = policy["spec"]["ingress"].as_array_mut() {
        ingress.push(json!({"fromCIDRSet": [{"cidrGroupRef": "partners"}],
                            "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}));
    }
    policy
}

/// The CIDR group `partners` of the agent's lab tests, holding `cidr`.
fn partners(cidr: &str) -> Value {
    json!({"apiVersion": "cilium.io/v2", "kind": "CiliumCIDRGroup",
           "metadata": {"name": "partners", "resourceVersion": "1"},
           "spec": {"externalCIDRs": [cidr]}})
}

/// One scripted change of the cluster.
type Step<'a> = Box<dyn Fn() + 'a>;

/// `polc agent` for node-1 of a lab, as a process of its own in the node's router namespace
/// (where the fake API server is), its metrics on 127.0.0.1:`port` there; killed when
/// dropped.
struct LabAgent {
    child: std::process::Child,
    router: PathBuf,
    port: u16,
}

impl LabAgent {
    fn start(lab: &Lab, router: &Path, kubeconfig: &str, port: u16) -> LabAgent {
        // The `polc` built next to this test binary (target/*/deps/lab-*).
        let exe = std::env::current_exe().unwrap();
        let polc = exe.parent().and_then(Path::parent).unwrap().join("polc");
        let log =
            std::fs::File::create(std::env::temp_dir().join(format!("{}-agent.log", lab.name)))
                .unwrap();
        // `nsenter` enters the network namespace only (`ip netns exec` would mount a bpffs
        // of the agent's own, which goes with it).
        let child = std::process::Command::new("nsenter")
            .arg(format!("--net={}", router.display()))
            .arg(polc)
            .args(["agent", "--node", "node-1", "--kubeconfig", kubeconfig])
            .args([
                "--bpffs-root",
                &format!("/sys/fs/bpf/polc-lab/{}", lab.name),
            ])
            .args(["--uplink", "up0", "--metrics", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        LabAgent {
            child,
            router: router.to_path_buf(),
            port,
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let port = self.port;
        let timeout = Duration::from_secs(2);
        sys::in_netns(&self.router, || {
            common::agent_metrics::get(port, "/metrics", timeout)
        })
        .ok()
        .flatten()
        .map_or(-1.0, |(_, body)| common::agent_metrics::metric(&body, name))
    }

    /// Waits until `metric` is at least `value`.
    fn wait(&self, what: &str, metric: &str, value: f64) {
        common::eventually(what, Duration::from_secs(30), || {
            self.metric(metric) >= value
        });
    }

    /// Sends one change and waits until the agent has installed it.
    fn installs(&self, what: &str, change: impl FnOnce()) {
        let before = self.metric("polc_agent_events_installed_total");
        change();
        self.wait(what, "polc_agent_events_installed_total", before + 1.0);
        assert_eq!(
            self.metric("polc_agent_install_errors_total"),
            0.0,
            "{what}"
        );
    }
}

impl Drop for LabAgent {
    fn drop(&mut self) {
        // `nsenter` runs the agent in its own process (it execs).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP stream and new connections from `client` to `api` port 8080, allowed by every
/// state the cluster goes through, while the agent installs policy changes, a CIDR group
/// that grows, pods and identities that come and go, a CIDR identity, a namespace relabelled
/// (the model built afresh), and a restart of the agent: no packet is counted as a policy
/// drop, the stream never breaks, every new connection succeeds, and the restarted agent
/// writes nothing on its first install (it reads the node's endpoint IDs and identity
/// numbers back).
#[test]
fn a_flow_allowed_throughout_survives_the_agent_changes_and_a_restart() {
    let Some(AgentLab {
        lab,
        fake,
        router,
        kubeconfig,
        _dir,
    }) = agent_lab()
    else {
        return;
    };
    let pod = |name: &str, app: &str, ip: &str| common::fake_api::pod(name, app, "node-1", ip);
    let (policy, group) = (agent_policy, partners);
    let agent = LabAgent::start(&lab, &router, &kubeconfig, 19965);
    agent.wait("the first install", "polc_agent_ready", 1.0);

    let (client_ns, _) = lab.pod("app/client");
    let (api_ns, api_ip) = lab.pod("app/api");
    let drops_before = lab.counter(&[Reason::DropPolicy, Reason::DropPolicyDeny]);
    let traffic = EchoTraffic::start(
        &client_ns,
        &api_ns,
        format!("{api_ip}:8080").parse().unwrap(),
    );
    let changes: Vec<(&str, Step<'_>)> = vec![
        (
            "a port added",
            Box::new(|| {
                fake.change(
                    "ciliumnetworkpolicies",
                    "MODIFIED",
                    &policy(&["8080", "9090"]),
                )
            }),
        ),
        (
            "the CIDR group grows",
            Box::new(|| fake.change("ciliumcidrgroups", "MODIFIED", &group("203.0.113.0/26"))),
        ),
        (
            "a pod with new labels comes",
            Box::new(|| fake.change("pods", "ADDED", &pod("other", "other", "10.244.1.30"))),
        ),
        (
            "a pod whose labels sort first comes (a restart must not renumber)",
            Box::new(|| fake.change("pods", "ADDED", &pod("first", "aaa", "10.244.1.98"))),
        ),
        (
            "a pod without an interface comes",
            Box::new(|| fake.change("pods", "ADDED", &pod("ghost", "ghost", "10.244.1.99"))),
        ),
        (
            "a policy names a new prefix",
            Box::new(|| {
                fake.change(
                    "ciliumnetworkpolicies",
                    "ADDED",
                    &json!({
                "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                "metadata": {"name": "egress", "namespace": "app", "resourceVersion": "1"},
                "spec": {"endpointSelector": {"matchLabels": {"app": "other"}},
                         "egress": [{"toCIDR": ["198.51.100.0/24"]}]}}),
                )
            }),
        ),
        (
            "a pod goes",
            Box::new(|| fake.change("pods", "DELETED", &pod("ghost", "ghost", "10.244.1.99"))),
        ),
        (
            "the namespace is relabelled",
            Box::new(|| {
                let mut ns = common::fake_api::namespace("app");
                ns["metadata"]["labels"]["team"] = json!("shop");
                fake.change("namespaces", "MODIFIED", &ns)
            }),
        ),
    ];
    for (what, change) in &changes {
        agent.installs(what, change);
    }
    let rebuilds = agent.metric("polc_agent_rebuilds_total");
    assert!(
        rebuilds >= 2.0,
        "the relabelled namespace rebuilt the model ({rebuilds})"
    );
    // A restart: the new agent finds the node as the old one left it.
    drop(agent);
    let agent = LabAgent::start(&lab, &router, &kubeconfig, 19965);
    agent.wait(
        "the first install after the restart",
        "polc_agent_ready",
        1.0,
    );
    assert_eq!(
        agent.metric("polc_agent_last_install_map_writes"),
        0.0,
        "the restarted agent's first install rewrote entries"
    );
    agent.installs("a port removed after the restart", || {
        fake.change("ciliumnetworkpolicies", "MODIFIED", &policy(&["8080"]))
    });
    assert!(agent.metric("polc_agent_last_install_map_writes") > 0.0);
    let (sent, connections) = traffic.finish();
    let drops = lab.counter(&[Reason::DropPolicy, Reason::DropPolicyDeny]) - drops_before;
    assert_eq!(
        drops, 0,
        "packets counted as policy drops during the agent's changes"
    );
    eprintln!(
        "{} changes and a restart: stream echoed {sent} bytes, {connections} new connections, \
         no policy drop",
        changes.len()
    );
}

/// Echo traffic that must never break: one long TCP stream echoed byte for byte, and new
/// connections all the time (each looked up in the policy maps), from `client_ns` to a
/// server on `addr` in `server_ns`.
struct EchoTraffic {
    stop: Arc<AtomicBool>,
    stop_server: Arc<AtomicBool>,
    server: std::thread::JoinHandle<()>,
    streamer: std::thread::JoinHandle<Result<u64, String>>,
    dialer: std::thread::JoinHandle<(u32, Vec<String>)>,
}

impl EchoTraffic {
    fn start(client_ns: &Path, server_ns: &Path, addr: SocketAddr) -> EchoTraffic {
        // The server: accept and echo, in the server's namespace.
        let listener = sys::in_netns(server_ns, || TcpListener::bind(addr))
            .unwrap()
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        // The server stops after the clients, or it would reset their last connection.
        let stop_server = Arc::new(AtomicBool::new(false));
        let server = {
            let stop = stop_server.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((mut c, _)) => {
                            c.set_nonblocking(false).unwrap();
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 4096];
                                while let Ok(n) = c.read(&mut buf) {
                                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            })
        };
        let client_ns = client_ns.to_path_buf();
        let connect = move || {
            sys::in_netns(&client_ns, || {
                TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            })
            .unwrap()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut stream = connect().expect("the stream connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let streamer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut sent = 0u64;
                let mut chunk = [0u8; 512];
                let mut back = [0u8; 512];
                while !stop.load(Ordering::SeqCst) {
                    chunk.fill((sent % 251) as u8);
                    stream
                        .write_all(&chunk)
                        .map_err(|e| format!("write: {e}"))?;
                    stream
                        .read_exact(&mut back)
                        .map_err(|e| format!("read after {sent} bytes: {e}"))?;
                    if back != chunk {
                        return Err(format!("wrong echo after {sent} bytes"));
                    }
                    sent += chunk.len() as u64;
                    // A steady stream, not a busy loop: the other tests share the CPUs.
                    std::thread::sleep(Duration::from_micros(200));
                }
                Ok::<u64, String>(sent)
            })
        };
        let dialer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    let r = connect().and_then(|mut c| {
                        c.set_read_timeout(Some(Duration::from_secs(2)))?;
                        c.write_all(b"ping")?;
                        let mut b = [0u8; 4];
                        c.read_exact(&mut b)?;
                        Ok(b)
                    });
                    match r {
                        Ok(b) if &b == b"ping" => ok += 1,
                        Ok(_) => failed.push("wrong echo".to_string()),
                        Err(e) => failed.push(e.to_string()),
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                (ok, failed)
            })
        };
        EchoTraffic {
            stop,
            stop_server,
            server,
            streamer,
            dialer,
        }
    }

    /// Stops the traffic; panics if the stream broke or a new connection failed. Returns
    /// the bytes echoed and the connections made.
    fn finish(self) -> (u64, u32) {
        self.stop.store(true, Ordering::SeqCst);
        let sent = self.streamer.join().unwrap();
        let (connections, failed) = self.dialer.join().unwrap();
        self.stop_server.store(true, Ordering::SeqCst);
        self.server.join().unwrap();
        let sent = sent.unwrap_or_else(|e| panic!("the stream broke: {e}"));
        assert!(failed.is_empty(), "new connections failed: {failed:?}");
        assert!(
            sent > 0 && connections > 0,
            "{sent} bytes, {connections} connections"
        );
        (sent, connections)
    }
}

fn lab_namespaces(name: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(&format!("plab-{name}-")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn errors_and_cleanup_after_a_crash() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let lab = Lab::new();
    // No lab yet.
    let (code, _, err) = polc(
        &[
            "lab", "probe", "--name", &lab.name, "--from", "a/b", "--to", "c/d", "--port", "1",
        ],
        b"",
    );
    assert_eq!(code, 2);
    assert!(err.contains("error[B0509]"), "{err}");
    let (code, _, err) = polc(&["lab", "down", "--name", "Not/A/Name"], b"");
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = polc(&["lab", "down", "--name", &lab.name], b"");
    assert_eq!(code, 0);
    assert!(out.contains("nothing to remove"), "{out}");

    // A lab whose state file was lost (a crash while it was written) is still removed: its
    // namespaces and pins are found by their names.
    let scenario = root().join("tests/scenarios/020-l3-and-l4-item");
    lab.up(
        &scenario.join("policies.yaml"),
        &scenario.join("inventory.yaml"),
        &[],
    );
    assert!(!lab_namespaces(&lab.name).is_empty());
    std::fs::remove_file(format!("/run/polc-lab/{}.json", lab.name)).unwrap();
    let (code, _, err) = polc(
        &[
            "lab", "probe", "--name", &lab.name, "--from", "a/b", "--to", "c/d", "--port", "1",
        ],
        b"",
    );
    assert_eq!(code, 2, "no state, no lab: {err}");
    // A second `up` cleans the leftovers first.
    lab.up(
        &scenario.join("policies.yaml"),
        &scenario.join("inventory.yaml"),
        &[],
    );
    std::fs::remove_file(format!("/run/polc-lab/{}.json", lab.name)).unwrap();
    let (code, out, err) = polc(&["lab", "down", "--name", &lab.name], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed"), "{out}");
    assert!(lab_namespaces(&lab.name).is_empty());
    assert!(!Path::new("/sys/fs/bpf/polc-lab").join(&lab.name).exists());

    // A flow naming a pod that is not in the lab is reported, not probed; a bad flow is an
    // input error.
    lab.up(
        &scenario.join("policies.yaml"),
        &scenario.join("inventory.yaml"),
        &[],
    );
    let (code, _, err) = polc(
        &[
            "lab",
            "probe",
            "--name",
            &lab.name,
            "--from",
            "nowhere/x",
            "--to",
            "10.1.2.3",
            "--port",
            "80",
        ],
        b"",
    );
    assert_eq!(code, 2);
    assert!(err.contains("Q0401"), "{err}");
    let (code, _, err) = polc(
        &[
            "lab", "probe", "--name", &lab.name, "--from", "10.1.2.3", "--to", "10.1.2.4",
            "--port", "80",
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
}

/// `polc agent` on a lab node, against the fake API server in the node's router namespace: the
/// lab is built with no policy; after the first install, a policy change, a CIDR group that
/// grows, a pod that joins and one that leaves, the kernel's verdicts agree with `eval` on the
/// cluster's state at each step.
#[test]
fn the_agent_keeps_a_lab_node_equal_to_the_cluster() {
    let Some(AgentLab {
        lab,
        fake,
        router,
        kubeconfig,
        _dir,
    }) = agent_lab()
    else {
        return;
    };
    let dir = root().join("tests/lab-agent");
    // `other` joins the cluster later (its namespace is in the lab from the start).
    let pod = |name: &str, ip: &str| common::fake_api::pod(name, name, "node-1", ip);
    let (policy, group) = (agent_policy, partners);
    {
        let (router, kubeconfig) = (router.clone(), kubeconfig.clone());
        let pins = format!("/sys/fs/bpf/polc-lab/{}", lab.name);
        // Runs until the test process ends.
        std::thread::spawn(move || {
            let _ = sys::in_netns(&router, || {
                polc(
                    &[
                        "agent",
                        "--node",
                        "node-1",
                        "--kubeconfig",
                        &kubeconfig,
                        "--bpffs-root",
                        &pins,
                        "--uplink",
                        "up0",
                        "--metrics",
                        "127.0.0.1:19964",
                    ],
                    b"",
                )
            });
        });
    }
    // Probes judged with eval on the cluster, from the router namespace (where the API
    // server is); every probed flow must agree.
    let agrees = |file: &str, want: &[&str]| {
        let flows = dir.join(file);
        let (_, out, err) = sys::in_netns(&router, || {
            polc(
                &[
                    "lab",
                    "probe",
                    "--name",
                    &lab.name,
                    "--cluster",
                    "--kubeconfig",
                    &kubeconfig,
                    "--flows",
                    flows.to_str().unwrap(),
                    "--format",
                    "json",
                ],
                b"",
            )
        })
        .unwrap();
        let Ok(list) = serde_json::from_str::<Value>(&out) else {
            eprintln!("{out}{err}");
            return false;
        };
        let list = list.as_array().unwrap();
        let evals: Vec<&str> = list
            .iter()
            .map(|f| f["eval"].as_str().unwrap_or(""))
            .collect();
        let ok = evals == want && list.iter().all(|f| f["observed"] == f["eval"]);
        if !ok {
            let seen: Vec<String> = list
                .iter()
                .map(|f| {
                    format!(
                        "{} -> {} {}: eval {} observed {} {}",
                        f["from"], f["to"], f["port"], f["eval"], f["observed"], f["probes"]
                    )
                })
                .collect();
            eprintln!("not yet:\n{}\n{err}", seen.join("\n"));
        }
        ok
    };
    let limit = Duration::from_secs(30);
    common::eventually("the first install", limit, || {
        agrees("flows-early.yaml", &["allow", "deny", "allow", "deny"])
    });
    fake.change(
        "ciliumnetworkpolicies",
        "MODIFIED",
        &policy(&["8080", "9090"]),
    );
    common::eventually("the policy change", limit, || {
        agrees("flows-early.yaml", &["allow", "allow", "allow", "deny"])
    });
    fake.change("ciliumcidrgroups", "MODIFIED", &group("203.0.113.0/26"));
    common::eventually("the CIDR group that grew", limit, || {
        agrees("flows-early.yaml", &["allow", "allow", "allow", "allow"])
    });
    // A pod comes, then one goes.
    fake.change("pods", "ADDED", &pod("other", "10.244.1.30"));
    common::eventually("the pod that came", limit, || {
        agrees("flows.yaml", &["allow", "allow", "deny", "allow", "allow"])
    });
    fake.change("pods", "DELETED", &pod("client", "10.244.1.10"));
    common::eventually("the pod that went", limit, || {
        agrees("flows-late.yaml", &["deny", "allow", "allow"])
    });
}
