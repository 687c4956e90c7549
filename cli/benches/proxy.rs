//! The L7 proxy under load, in the lab (as root): CLIENTS (default 100) kept-alive HTTP/1.1
//! connections from a client pod on one lab node to a server pod on another, each sending
//! GET requests back to back for SECONDS (default 20) per run; once to a port whose policy has
//! HTTP rules (the datapath hands every connection to the node's proxy, which judges each
//! request and forwards it over its own connection to the server) and once to a port the
//! policy allows at L4 only (straight through the datapath). Runs alternate, RUNS (default 3)
//! of each. Prints requests per second and the latency percentiles of both, and what the
//! proxy adds, for BENCHMARKS.md. Also `scripts/bench-proxy.sh`. Not a test: nothing is
//! asserted about time; every answer must be a 200. Under `cargo test` it runs for 1 s with 4
//! clients.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use polc_ebpf::sys;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const LAB: &str = "pbench";
const SERVER: &str = "10.244.2.10";
const PROXIED: u16 = 8080;
const DIRECT: u16 = 8081;

const INVENTORY: &str = "\
apiVersion: v1
kind: Node
metadata: {name: node-1}
status: {addresses: [{type: InternalIP, address: 10.0.0.11}]}
spec: {podCIDR: 10.244.1.0/24}
---
apiVersion: v1
kind: Node
metadata: {name: node-2}
status: {addresses: [{type: InternalIP, address: 10.0.0.12}]}
spec: {podCIDR: 10.244.2.0/24}
---
apiVersion: v1
kind: Namespace
metadata: {name: app, labels: {kubernetes.io/metadata.name: app}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: client}}
spec: {nodeName: node-1}
status: {phase: Running, podIP: 10.244.1.10, podIPs: [{ip: 10.244.1.10}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: app, labels: {app: server}}
spec: {nodeName: node-2}
status: {phase: Running, podIP: 10.244.2.10, podIPs: [{ip: 10.244.2.10}]}
";

const POLICIES: &str = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: server, namespace: app}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: \"8080\", protocol: TCP}]
      rules:
        http:
        - {method: GET, path: \"/api/v1/.*\"}
        - {method: POST, path: /api/v1/orders, headers: [\"X-Request-Id\"]}
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: \"8081\", protocol: TCP}]
";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn polc(args: &[&str]) -> (i32, String, String) {
    let mut input: &[u8] = b"";
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = {
        let mut io = polc_cli::Io {
            stdin: &mut input,
            stdout: &mut out,
            stderr: &mut err,
            stdout_is_terminal: false,
        };
        let mut argv = vec!["polc"];
        argv.extend_from_slice(args);
        polc_cli::run(argv, &mut io)
    };
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

fn netns_of(key: &str) -> PathBuf {
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("/run/polc-lab/{LAB}.json")).unwrap(),
    )
    .unwrap();
    let ns = state["plan"]["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"] == key)
        .unwrap()["netns"]
        .as_str()
        .unwrap()
        .to_string();
    Path::new("/run/netns").join(ns)
}

/// The server: every request gets 200 and a short body, on both ports.
async fn serve(netns: &Path) {
    for port in [PROXIED, DIRECT] {
        let addr: SocketAddr = format!("{SERVER}:{port}").parse().unwrap();
        let std = sys::in_netns(netns, || std::net::TcpListener::bind(addr))
            .unwrap()
            .unwrap();
        std.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(std).unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(
                        b"{\"items\":[1,2,3]}\n",
                    ))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
    }
}

/// One run: `clients` connections to `port` for `secs`; returns the latencies and the
/// number of answers that were not 200.
async fn run(netns: &Path, port: u16, clients: u64, secs: u64) -> (Vec<Duration>, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let addr: SocketAddr = format!("{SERVER}:{port}").parse().unwrap();
        let std = sys::in_netns(netns, || std::net::TcpStream::connect(addr))
            .unwrap()
            .unwrap();
        std.set_nodelay(true).unwrap();
        std.set_nonblocking(true).unwrap();
        let tcp = tokio::net::TcpStream::from_std(std).unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let (stop, bad) = (stop.clone(), bad.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let req = Request::get(format!("/api/v1/items/{n}"))
                    .header("host", "server.app")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let start = Instant::now();
                match send.send_request(req).await {
                    Ok(r) => {
                        let ok = r.status() == 200;
                        let _ = r.into_body().collect().await;
                        lat.push(start.elapsed());
                        if !ok {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        bad.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all, bad.load(Ordering::Relaxed))
}

fn pct(d: &[Duration], q: f64) -> f64 {
    d[((d.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if sys::euid() != 0 {
        eprintln!("SKIPPED: the proxy benchmark needs root (a lab)");
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this once without it,
    // as a short smoke run (the proxy must answer every request) whose numbers mean nothing.
    let full = std::env::args().any(|a| a == "--bench");
    let clients = env_or("CLIENTS", if full { 100 } else { 4 });
    let secs = env_or("SECONDS", if full { 20 } else { 1 });
    let runs = env_or("RUNS", if full { 3 } else { 1 });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inventory.yaml"), INVENTORY).unwrap();
    std::fs::write(dir.path().join("policies.yaml"), POLICIES).unwrap();
    let (code, out, err) = polc(&[
        "lab",
        "up",
        "--name",
        LAB,
        "--policies",
        dir.path().join("policies.yaml").to_str().unwrap(),
        "--inventory",
        dir.path().join("inventory.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (client, server) = (netns_of("app/client"), netns_of("app/server"));
    let mut by_port: Vec<(u16, Vec<Duration>, u64, f64)> =
        vec![(PROXIED, Vec::new(), 0, 0.0), (DIRECT, Vec::new(), 0, 0.0)];
    runtime.block_on(async {
        serve(&server).await;
        // Warm-up: connections, the proxy's upstream connections, the datapath's conntrack.
        let _ = run(&client, PROXIED, clients, 1).await;
        let _ = run(&client, DIRECT, clients, 1).await;
        for _ in 0..runs {
            for slot in by_port.iter_mut() {
                let start = Instant::now();
                let (lat, bad) = run(&client, slot.0, clients, secs).await;
                slot.3 += start.elapsed().as_secs_f64();
                slot.1.extend(lat);
                slot.2 += bad;
            }
        }
    });
    let status: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("/run/polc-lab/{LAB}.d/n1/status.json")).unwrap(),
    )
    .unwrap();
    let _ = polc(&["lab", "down", "--name", LAB]);
    println!(
        "HTTP/1.1 GET, {clients} kept-alive clients (pod on node-1 -> pod on node-2), {runs} runs \
         of {secs} s each, alternating:"
    );
    println!(
        "  path                      requests      req/s    p50 ms    p90 ms    p99 ms   errors"
    );
    let mut p = Vec::new();
    for (port, lat, bad, took) in by_port.iter_mut() {
        lat.sort();
        let name = if *port == PROXIED {
            "through the L7 proxy"
        } else {
            "direct (L4 allow)"
        };
        let rps = lat.len() as f64 / *took;
        println!(
            "  {name:<24} {:>9} {rps:>10.0} {:>9.2} {:>9.2} {:>9.2} {bad:>8}",
            lat.len(),
            pct(lat, 0.5),
            pct(lat, 0.9),
            pct(lat, 0.99)
        );
        p.push((rps, pct(lat, 0.5), pct(lat, 0.99)));
        assert_eq!(*bad, 0, "{name}: answers other than 200");
    }
    println!(
        "  the proxy adds {:.2} ms at p50 and {:.2} ms at p99; it serves {:.0}% of the direct \
         request rate",
        p[0].1 - p[1].1,
        p[0].2 - p[1].2,
        100.0 * p[0].0 / p[1].0
    );
    println!(
        "  proxy counters: {} forwarded, {} denied",
        status["http"]["allowed"], status["http"]["denied"]
    );
}
