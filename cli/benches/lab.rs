//! `polc lab` measurements (as root): how long `polc lab up` takes for the demo cluster, and
//! the latency the datapath adds per packet, from request/response round trips between two
//! lab pods on different nodes (TCP and UDP, one byte each way) with the datapath attached
//! and with it detached. Run with `scripts/bench-lab.sh` (or `cargo bench -p polc --bench
//! lab`); it prints a table for BENCHMARKS.md. Not a test: nothing is asserted about time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use polc_ebpf::sys;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LAB: &str = "bench";

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

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn up(policies: &Path, inventory: &Path) -> Duration {
    let start = Instant::now();
    let (code, out, err) = polc(&[
        "lab",
        "up",
        "--name",
        LAB,
        "--policies",
        policies.to_str().unwrap(),
        "--inventory",
        inventory.to_str().unwrap(),
    ]);
    let took = start.elapsed();
    assert_eq!(code, 0, "{out}{err}");
    took
}

fn down() {
    let _ = polc(&["lab", "down", "--name", LAB]);
}

/// Mean, p50, p99 of `d` in microseconds.
fn stats(d: &mut [Duration]) -> (f64, f64, f64) {
    d.sort();
    let us = |x: Duration| x.as_secs_f64() * 1e6;
    let mean = d.iter().map(|x| us(*x)).sum::<f64>() / d.len() as f64;
    let p = |q: f64| us(d[((d.len() as f64 - 1.0) * q).round() as usize]);
    (mean, p(0.5), p(0.99))
}

const INVENTORY: &str = "\
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
metadata: {name: server, namespace: app, labels: {app: server}}
spec: {nodeName: node-2}
status: {podIP: 10.244.2.20}
";

/// Both ends enforce both directions: the requests hit an allow entry on each side and the
/// replies pass through conntrack.
const POLICIES: &str = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: server, namespace: app}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: '7000', protocol: TCP}, {port: '7001', protocol: UDP}]}]
  egress: [{}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client, namespace: app}
spec:
  endpointSelector: {matchLabels: {app: client}}
  ingress: [{}]
  egress:
  - toEndpoints: [{matchLabels: {app: server}}]
    toPorts: [{ports: [{port: '7000', protocol: TCP}, {port: '7001', protocol: UDP}]}]
";

fn netns(name: &str) -> PathBuf {
    let text = std::fs::read_to_string(format!("/run/polc-lab/{LAB}.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ns = v["plan"]["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"] == name)
        .unwrap()["netns"]
        .as_str()
        .unwrap()
        .to_string();
    PathBuf::from("/run/netns").join(ns)
}

const ITERATIONS: usize = 20_000;
const WARMUP: usize = 1_000;

fn tcp_round_trips(client: &Path, server: &Path) -> Vec<Duration> {
    let addr: SocketAddr = "10.244.2.20:7000".parse().unwrap();
    let listener = sys::in_netns(server, || TcpListener::bind(addr))
        .unwrap()
        .unwrap();
    let echo = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        c.set_nodelay(true).unwrap();
        let mut b = [0u8; 1];
        while c.read_exact(&mut b).is_ok() {
            if c.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut s = sys::in_netns(client, || TcpStream::connect(addr))
        .unwrap()
        .unwrap();
    s.set_nodelay(true).unwrap();
    let mut out = Vec::with_capacity(ITERATIONS);
    let mut b = [7u8; 1];
    for i in 0..WARMUP + ITERATIONS {
        let t = Instant::now();
        s.write_all(&b).unwrap();
        s.read_exact(&mut b).unwrap();
        if i >= WARMUP {
            out.push(t.elapsed());
        }
    }
    drop(s);
    echo.join().unwrap();
    out
}

fn udp_round_trips(client: &Path, server: &Path) -> Vec<Duration> {
    let addr: SocketAddr = "10.244.2.20:7001".parse().unwrap();
    let srv = sys::in_netns(server, || UdpSocket::bind(addr))
        .unwrap()
        .unwrap();
    srv.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let echo = std::thread::spawn(move || {
        let mut b = [0u8; 16];
        while let Ok((n, peer)) = srv.recv_from(&mut b) {
            let _ = srv.send_to(&b[..n], peer);
        }
    });
    let s = sys::in_netns(client, || UdpSocket::bind("10.244.1.10:0"))
        .unwrap()
        .unwrap();
    s.connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut out = Vec::with_capacity(ITERATIONS);
    let mut b = [7u8; 1];
    for i in 0..WARMUP + ITERATIONS {
        let t = Instant::now();
        s.send(&b).unwrap();
        s.recv(&mut b).unwrap();
        if i >= WARMUP {
            out.push(t.elapsed());
        }
    }
    drop(s);
    echo.join().unwrap();
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if sys::euid() != 0 {
        eprintln!("SKIPPED: the lab benchmark needs root");
        return;
    }
    // 1. `polc lab up` for the demo (each run also removes the previous lab first).
    let demo = root().join("policies/demo");
    let mut ups = Vec::new();
    for _ in 0..5 {
        ups.push(up(&demo.join("policies"), &demo.join("cluster")));
    }
    let start = Instant::now();
    let (code, _, err) = polc(&["lab", "apply", "--name", LAB]);
    assert_eq!(code, 0, "{err}");
    let apply = start.elapsed();
    let start = Instant::now();
    down();
    let down_took = start.elapsed();
    let (mean, p50, _) = stats(&mut ups);
    println!("polc lab up, demo (3 nodes, 16 pods, 661 entries), 5 runs:");
    println!(
        "  up mean {:.0} ms, p50 {:.0} ms, min {:.0} ms, max {:.0} ms; apply (compile + sync, \
         no change) {:.0} ms; down {:.0} ms",
        mean / 1e3,
        p50 / 1e3,
        ups[0].as_secs_f64() * 1e3,
        ups[ups.len() - 1].as_secs_f64() * 1e3,
        apply.as_secs_f64() * 1e3,
        down_took.as_secs_f64() * 1e3
    );

    // 2. Round trips with and without the datapath, alternating.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inventory.yaml"), INVENTORY).unwrap();
    std::fs::write(dir.path().join("policies.yaml"), POLICIES).unwrap();
    up(
        &dir.path().join("policies.yaml"),
        &dir.path().join("inventory.yaml"),
    );
    let client = netns("app/client");
    let server = netns("app/server");
    let pins = PathBuf::from("/sys/fs/bpf/polc-lab").join(LAB);
    let mut with = (Vec::new(), Vec::new());
    let mut without = (Vec::new(), Vec::new());
    // The programs' own run time on these packets, from the kernel's statistics.
    let stats_on = polc_ebpf::loader::enable_run_stats().ok();
    let mut program = (0u64, Duration::ZERO);
    for round in 0..6 {
        let attached = round % 2 == 0;
        if attached && round > 0 {
            let (code, _, err) = polc(&["lab", "apply", "--name", LAB]);
            assert_eq!(code, 0, "{err}");
        }
        if !attached {
            for d in polc_ebpf::loader::instances(&pins) {
                polc_ebpf::loader::unload(&d).unwrap();
            }
        }
        let before: Vec<(u64, Duration)> = polc_ebpf::loader::instances(&pins)
            .iter()
            .map(|d| polc_ebpf::loader::run_stats(d).unwrap_or_default())
            .collect();
        let t = tcp_round_trips(&client, &server);
        let u = udp_round_trips(&client, &server);
        if attached {
            for (d, b) in polc_ebpf::loader::instances(&pins).iter().zip(before) {
                let a = polc_ebpf::loader::run_stats(d).unwrap_or_default();
                program.0 += a.0 - b.0;
                program.1 += a.1.saturating_sub(b.1);
            }
        }
        let target = if attached { &mut with } else { &mut without };
        target.0.extend(t);
        target.1.extend(u);
    }
    down();
    drop(stats_on);
    println!(
        "request/response round trips, pod on node-1 <-> pod on node-2, 1 byte each way, \
         {} per protocol and setting (3 rounds of {ITERATIONS}, alternating), in µs:",
        3 * ITERATIONS
    );
    println!("  | protocol | datapath | mean | p50 | p99 |");
    for (proto, w, wo) in [
        ("TCP", &mut with.0, &mut without.0),
        ("UDP", &mut with.1, &mut without.1),
    ] {
        let a = stats(w);
        let b = stats(wo);
        println!(
            "  | {proto} | attached | {:.1} | {:.1} | {:.1} |",
            a.0, a.1, a.2
        );
        println!(
            "  | {proto} | detached | {:.1} | {:.1} | {:.1} |",
            b.0, b.1, b.2
        );
        println!(
            "  | {proto} | added per round trip (4 program runs) | {:.1} | {:.1} | {:.1} |",
            a.0 - b.0,
            a.1 - b.1,
            a.2 - b.2
        );
    }
    if program.0 > 0 {
        println!(
            "  the classifiers ran {} times on these packets, {:.0} ns per run on average \
             (kernel BPF run statistics)",
            program.0,
            program.1.as_secs_f64() * 1e9 / program.0 as f64
        );
    }
}
