//! `polc agent`, as root, inside a throwaway network namespace, against the fake API server:
//! the first install waits for every kind to be listed and finds each pod's device from the
//! host routes; a policy change, a new pod and a pod that goes are installed as they come;
//! `/metrics` and `/healthz` tell what happened.

mod common;

use common::agent_metrics::{self, metric};
use common::fake_api::{self, Fake, api_policy};
use common::{Netns, polc_in};
use serde_json::{Value, json};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

fn pod(name: &str, app: &str, ip: &str) -> Value {
    fake_api::pod(name, app, "node-1", ip)
}

fn cluster() -> Arc<Fake> {
    let fake = Fake::serving(&fake_api::EVERY_KIND);
    fake.add("namespaces", fake_api::namespace("app"));
    fake.add("nodes", fake_api::node("node-1", "10.0.0.11"));
    fake.add("pods", pod("client", "client", "10.244.1.10"));
    fake.add("pods", pod("api", "api", "10.244.1.20"));
    fake.add("ciliumnetworkpolicies", api_policy(&["8080"]));
    fake
}

/// GET `path` from the agent's metrics server inside the namespace: (status, body).
fn get(g: &Netns, port: u16, path: &str) -> Option<(u16, String)> {
    let ns = std::path::PathBuf::from("/run/netns").join(&g.netns);
    polc_ebpf::sys::in_netns(&ns, || {
        agent_metrics::get(port, path, Duration::from_secs(2))
    })
    .ok()
    .flatten()
}

/// The policy-map entries of endpoint `name` (from `polc status`).
fn entries(g: &Netns, name: &str) -> Option<u64> {
    let pins = g.pins.to_str().unwrap();
    let (code, out, _) = polc_in(g, &["status", "--bpffs-root", pins, "--format", "json"]);
    if code != 0 {
        return None;
    }
    let v: Value = serde_json::from_str(&out).ok()?;
    v["nodes"][0]["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["endpoint"] == name)?["entries"]
        .as_u64()
}

/// The agent's standard error, readable while it runs.
#[derive(Clone, Default)]
struct SharedLog(Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for SharedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_agent_follows_the_cluster() {
    let Some(g) = common::throwaway_netns("ag") else {
        return;
    };
    let fake = cluster();
    // Host routes to the pods, as a CNI with a veth per pod makes them: the agent finds each
    // pod's device from them.
    let ns = &g.netns;
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ip -n {ns} link set lxc1 up && ip -n {ns} link set lxc1p up && \
             ip -n {ns} link set lxc2 up && ip -n {ns} link set lxc2p up && \
             ip -n {ns} route add 10.244.1.10/32 dev lxc1 && \
             ip -n {ns} route add 10.244.1.20/32 dev lxc2"
        ))
        .status()
        .unwrap()
        .success();
    assert!(ok, "routes");
    let (dir, kubeconfig) = serve(&g, &fake);
    let metrics_port = 19963;
    let proxy_json = dir.path().join("proxy.json");
    let log = start_agent(
        &g,
        &kubeconfig,
        metrics_port,
        &["--proxy-config", proxy_json.to_str().unwrap()],
    );
    let limit = Duration::from_secs(30);
    let said = || String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    let first = std::time::Instant::now();
    while get(&g, metrics_port, "/healthz").is_none_or(|(s, _)| s != 200) {
        assert!(
            first.elapsed() < limit,
            "no first install; the agent said:\n{}",
            said()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, m) = get(&g, metrics_port, "/metrics").unwrap();
    assert_eq!(metric(&m, "polc_agent_ready"), 1.0, "{m}");
    assert_eq!(
        metric(&m, "polc_agent_endpoints"),
        3.0,
        "two pods and the host: {m}"
    );
    assert_eq!(metric(&m, "polc_agent_invalid_objects"), 0.0, "{m}");
    let api_entries = metric(
        &m,
        "polc_agent_endpoint_policy_entries{endpoint=\"app/api\"}",
    );
    assert!(api_entries > 0.0, "{m}");
    let before = entries(&g, "app/api").unwrap();
    assert_eq!(api_entries, before as f64, "the metric tells the truth");
    let pins = g.pins.to_str().unwrap();
    let (_, out, _) = polc_in(&g, &["status", "--bpffs-root", pins, "--format", "json"]);
    let status: Value = serde_json::from_str(&out).unwrap();
    let device = |name: &str| {
        status["nodes"][0]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["endpoint"] == name)
            .and_then(|e| e["interfaces"][0]["name"].as_str())
            .map(str::to_string)
    };
    assert_eq!(device("app/client").as_deref(), Some("lxc1"), "{status}");
    assert_eq!(device("app/api").as_deref(), Some("lxc2"), "{status}");
    // A policy change: one more port.
    while !fake.watching("ciliumnetworkpolicies") {
        std::thread::sleep(Duration::from_millis(20));
    }
    fake.event(
        "ciliumnetworkpolicies",
        "MODIFIED",
        &api_policy(&["8080", "9090"]),
    );
    common::eventually("the new port installed", limit, || {
        entries(&g, "app/api").is_some_and(|n| n > before)
    });
    // A pod comes and one goes. The new one's labels sort before every other's: it takes a
    // new identity, and the others keep theirs.
    let identity = |name: &str| {
        let pins = g.pins.to_str().unwrap();
        let (_, out, _) = polc_in(&g, &["status", "--bpffs-root", pins, "--format", "json"]);
        let v: Value = serde_json::from_str(&out).ok()?;
        v["nodes"][0]["endpoints"]
            .as_array()?
            .iter()
            .find(|e| e["endpoint"] == name)?["identity"]
            .as_u64()
    };
    let (api, client) = (
        identity("app/api").unwrap(),
        identity("app/client").unwrap(),
    );
    fake.event("pods", "ADDED", &pod("aardvark", "aardvark", "10.244.1.11"));
    common::eventually("the new pod installed", limit, || {
        entries(&g, "app/aardvark").is_some()
    });
    assert_eq!(identity("app/api"), Some(api));
    assert_eq!(identity("app/client"), Some(client));
    assert!(identity("app/aardvark").unwrap() > api.max(client));
    fake.event("pods", "DELETED", &pod("client", "client", "10.244.1.10"));
    common::eventually("the pod removed", limit, || {
        entries(&g, "app/client").is_none()
    });
    // An object the Cilium agent would reject is left out, and counted.
    let mut bad = api_policy(&["8080"]);
    bad["metadata"]["name"] = json!("bad");
    bad["spec"]["ingress"][0]["toPorts"][0]["ports"][0]["protocol"] = json!("TCPP");
    fake.event("ciliumnetworkpolicies", "ADDED", &bad);
    common::eventually("the invalid object counted", limit, || {
        get(&g, metrics_port, "/metrics")
            .is_some_and(|(_, m)| metric(&m, "polc_agent_invalid_objects") == 1.0)
    });
    // The watches drop and their resource version is gone (410): the agent lists again and
    // converges to the listed state, which never had the changes sent as events only (the
    // new pod, the invalid policy) and has a pod added meanwhile.
    *fake.gone.lock().unwrap() = true;
    fake.add("pods", pod("latecomer", "latecomer", "10.244.1.13"));
    fake.close_watches();
    std::thread::sleep(Duration::from_millis(300));
    *fake.gone.lock().unwrap() = false;
    common::eventually("the state listed again", limit, || {
        entries(&g, "app/latecomer").is_some()
            && entries(&g, "app/aardvark").is_none()
            && entries(&g, "app/client").is_some()
            && get(&g, metrics_port, "/metrics")
                .is_some_and(|(_, m)| metric(&m, "polc_agent_invalid_objects") == 0.0)
    });
    // The proxy's configuration follows: the three pods and the host.
    common::eventually("the proxy's configuration written", limit, || {
        polc_cli::proxy::config::Config::read(&proxy_json).is_ok_and(|c| c.endpoints.len() == 4)
    });
    let (_, m) = get(&g, metrics_port, "/metrics").unwrap();
    assert!(metric(&m, "polc_agent_recomputes_total") >= 4.0, "{m}");
    assert_eq!(metric(&m, "polc_agent_install_errors_total"), 0.0, "{m}");
    eprintln!(
        "event to install, last: {} s",
        metric(&m, "polc_agent_last_event_to_install_seconds")
    );
}

/// Starts the fake API server inside the namespace of `g` (where the agent runs and reaches
/// it); returns a directory and the kubeconfig for it there.
fn serve(g: &Netns, fake: &Arc<Fake>) -> (tempfile::TempDir, std::path::PathBuf) {
    let port = fake_api::start_in(
        fake.clone(),
        &std::path::PathBuf::from("/run/netns").join(&g.netns),
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake_api::kubeconfig(dir.path(), port);
    (dir, kubeconfig)
}

/// Runs `polc agent` for node-1 inside the namespace of `g` (until the test process ends),
/// with `more` arguments; returns its standard error, kept for failures.
fn start_agent(
    g: &Netns,
    kubeconfig: &std::path::Path,
    metrics_port: u16,
    more: &[&str],
) -> SharedLog {
    let log = SharedLog::default();
    let ns = std::path::PathBuf::from("/run/netns").join(&g.netns);
    let (kubeconfig, pins) = (
        kubeconfig.to_str().unwrap().to_string(),
        g.pins.to_str().unwrap().to_string(),
    );
    let more: Vec<String> = more.iter().map(|s| s.to_string()).collect();
    let err = log.clone();
    std::thread::spawn(move || {
        let _ = polc_ebpf::sys::in_netns(&ns, || {
            let mut input: &[u8] = b"";
            let (mut out, mut err) = (Vec::new(), err);
            let mut io = polc_cli::Io {
                stdin: &mut input,
                stdout: &mut out,
                stderr: &mut err,
                stdout_is_terminal: false,
            };
            let metrics = format!("127.0.0.1:{metrics_port}");
            let mut argv = vec![
                "polc",
                "agent",
                "--node",
                "node-1",
                "--kubeconfig",
                &kubeconfig,
                "--bpffs-root",
                &pins,
                "--metrics",
                &metrics,
            ];
            argv.extend(more.iter().map(String::as_str));
            polc_cli::run(argv, &mut io)
        });
    });
    log
}

#[test]
fn an_endpoint_whose_map_overflows_keeps_what_it_had() {
    let Some(g) = common::throwaway_netns("ao") else {
        return;
    };
    let fake = cluster();
    let (_dir, kubeconfig) = serve(&g, &fake);
    let metrics_port = 19962;
    let log = start_agent(&g, &kubeconfig, metrics_port, &["--policy-map-max", "16"]);
    let limit = Duration::from_secs(30);
    let said = || String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    common::eventually("the first install", limit, || {
        get(&g, metrics_port, "/healthz").is_some_and(|(s, _)| s == 200)
    });
    let fits = entries(&g, "app/api").unwrap();
    assert!(fits <= 16, "{fits}");
    // Thirty ports do not fit: the endpoint keeps the map it had, the rest of the node
    // goes on, and the metrics and the log say so.
    let many: Vec<String> = (8000..8030).map(|p| p.to_string()).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    while !fake.watching("ciliumnetworkpolicies") {
        std::thread::sleep(Duration::from_millis(20));
    }
    fake.event("ciliumnetworkpolicies", "MODIFIED", &api_policy(&many));
    common::eventually("the overflow reported", limit, || {
        get(&g, metrics_port, "/metrics")
            .is_some_and(|(_, m)| metric(&m, "polc_agent_overflowing_endpoints") == 1.0)
    });
    assert_eq!(entries(&g, "app/api"), Some(fits), "the map it had");
    let (status, _) = get(&g, metrics_port, "/healthz").unwrap();
    assert_eq!(status, 200);
    assert!(said().contains("endpoint `app/api` needs"), "{}", said());
    // A pod that comes meanwhile is installed.
    fake.event("pods", "ADDED", &pod("late", "late", "10.244.1.12"));
    common::eventually("the new pod installed", limit, || {
        entries(&g, "app/late").is_some()
    });
    // Two ports fit again.
    fake.event(
        "ciliumnetworkpolicies",
        "MODIFIED",
        &api_policy(&["8080", "9090"]),
    );
    common::eventually("the overflow gone", limit, || {
        get(&g, metrics_port, "/metrics")
            .is_some_and(|(_, m)| metric(&m, "polc_agent_overflowing_endpoints") == 0.0)
    });
    assert!(entries(&g, "app/api").unwrap() > fits);
    let (_, m) = get(&g, metrics_port, "/metrics").unwrap();
    assert_eq!(metric(&m, "polc_agent_install_errors_total"), 0.0, "{m}");
    assert_eq!(
        metric(&m, "polc_agent_events_installed_total"),
        metric(&m, "polc_agent_events_total"),
        "{m}"
    );
}
