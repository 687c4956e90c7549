//! Load on `polc webhook`: CLIENTS concurrent clients (default 200), each on its own
//! kept-alive HTTPS connection, send AdmissionReviews (every fixture of
//! `policies/admission/`, valid and invalid in turn) for SECONDS (default 60) to the real
//! binary on 127.0.0.1. Prints the latency percentiles, the errors (a status other than 200,
//! or an answer other than the fixture's), the throughput, and the server's resident memory
//! sampled every second (flat memory: the last samples are no higher than the first ones
//! after warm-up).
//!
//! `cargo bench -p polc --bench webhook` (env CLIENTS, SECONDS). Client and server share the
//! machine's cores, so on a small machine the clients' own work is part of every number.
//! Under `cargo test` it runs for 2 s with 4 clients and fails on any error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// One kept-alive connection.
struct Client {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl Client {
    fn connect(config: Arc<rustls::ClientConfig>, port: u16) -> std::io::Result<Client> {
        let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
        let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client {
            tls: rustls::StreamOwned::new(conn, tcp),
        })
    }

    /// Sends one review; returns the status and the body.
    fn post(&mut self, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let head = format!(
            "POST /validate?timeout=10s HTTP/1.1\r\nhost: localhost\r\ncontent-type: \
             application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        self.tls.write_all(head.as_bytes())?;
        self.tls.write_all(body)?;
        self.tls.flush()?;
        let mut reader = BufReader::new(&mut self.tls);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut out = vec![0u8; length];
        reader.read_exact(&mut out)?;
        Ok((status, out))
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this once without it,
    // and then a short run with a few clients checks that the benchmark works.
    let full = std::env::args().any(|a| a == "--bench");
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let clients = env_or("CLIENTS", if full { 200 } else { 4 }) as usize;
    let seconds = env_or("SECONDS", if full { 60 } else { 2 });
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().expect("a temporary directory");

    // A test CA and a serving certificate for 127.0.0.1.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "polc bench CA");
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "polc-webhook");
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca).expect("certificate");
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("write cert");
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("write key");

    // A free port, then the real binary on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_polc"))
        .args(["webhook", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(dir.path().join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("key.pem"))
        .stderr(Stdio::null())
        .spawn()
        .expect("polc webhook starts");
    let pid = child.id();
    let _server = Server(child);

    let mut roots = rustls::RootCertStore::empty();
    let ca_cert: &rcgen::Certificate = ca.as_ref();
    roots
        .add(CertificateDer::from(ca_cert.der().to_vec()))
        .expect("CA root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let started = Instant::now();
    while Client::connect(config.clone(), port).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the webhook did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The reviews, with the answer each must get.
    let mut reviews: Vec<(String, Vec<u8>, bool)> = Vec::new();
    let fixtures = root.join("policies/admission");
    let mut names: Vec<_> = std::fs::read_dir(&fixtures)
        .expect("policies/admission")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    for path in names {
        let body = std::fs::read(&path).expect("fixture");
        let mut c = Client::connect(config.clone(), port).expect("connect");
        let (_, answer) = c.post(&body).expect("first answer");
        let allowed = serde_json::from_slice::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v["response"]["allowed"].as_bool())
            .expect("an AdmissionReview answer");
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        reviews.push((name.unwrap_or_default(), body, allowed));
    }
    let reviews = Arc::new(reviews);
    let denied = reviews.iter().filter(|r| !r.2).count();
    println!(
        "polc webhook under load: {clients} clients, {seconds} s, {} reviews ({denied} denied) \
         in turn",
        reviews.len()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let memory = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.extend(rss_kib(pid));
                std::thread::sleep(Duration::from_secs(1));
            }
            samples
        })
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|i| {
            let (config, reviews, errors) = (config.clone(), reviews.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut latencies: Vec<u32> = Vec::new();
                let mut client = None;
                let mut n = i;
                while Instant::now() < deadline {
                    let (_, body, allowed) = &reviews[n % reviews.len()];
                    n += 1;
                    if client.is_none() {
                        client = Client::connect(config.clone(), port).ok();
                    }
                    let Some(c) = client.as_mut() else {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let t = Instant::now();
                    match c.post(body) {
                        Ok((200, answer)) => {
                            let took = t.elapsed();
                            latencies.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                            // A byte search, not a JSON parse: the load generator shares
                            // the cores with the server and should cost it little.
                            let want: &[u8] = if *allowed {
                                b"\"allowed\":true"
                            } else {
                                b"\"allowed\":false"
                            };
                            let ok = answer.windows(want.len()).any(|w| w == want);
                            if !ok {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            client = None;
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    let mut all: Vec<u32> = Vec::new();
    for w in workers {
        all.extend(w.join().expect("a client thread"));
    }
    stop.store(true, Ordering::Relaxed);
    let samples = memory.join().expect("the memory sampler");
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        f64::from(all[i]) / 1000.0
    };
    let failed = errors.load(Ordering::Relaxed);
    println!(
        "reviews: {} ({:.0}/s), errors: {failed}",
        all.len(),
        all.len() as f64 / seconds as f64,
    );
    assert!(!all.is_empty(), "no review was answered");
    assert_eq!(failed, 0, "reviews failed or got the wrong answer");
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    if samples.len() >= 4 {
        let warm = &samples[samples.len() / 4..];
        let first = warm.iter().take(3).max().copied().unwrap_or(0);
        let last = warm.iter().rev().take(3).max().copied().unwrap_or(0);
        println!(
            "server RSS MiB: start {:.1}, after warm-up {:.1}, end {:.1}, peak {:.1}",
            samples[0] as f64 / 1024.0,
            first as f64 / 1024.0,
            last as f64 / 1024.0,
            samples.iter().max().copied().unwrap_or(0) as f64 / 1024.0
        );
    }
}
