//! Load on `polc webhook`: the real binary on 127.0.0.1 with a policy set loaded
//! (`--policies`: POLICIES, by default our largest users' 3,000 CNPs, 200 CCNPs and 500 CIDR
//! groups, written by `polc gen --scale users`), and CLIENTS concurrent clients (default
//! 200), each on its own kept-alive HTTPS connection, sending AdmissionReviews for SECONDS
//! (default 60): every fixture of `policies/admission/` (valid and invalid), and UPDATEs and
//! CREATEs of policies of the set (an UPDATE carries a policy of the set with a port
//! changed; a CREATE a copy of one for a new workload), each judged against the set. Every
//! review sent carries an object of its own (a label with a sequence number), so no review
//! is answered from what the server remembers of an earlier one. Prints
//! the latency percentiles, the errors (a status other than 200, or an answer other than the
//! one the review got alone), the throughput, the slowest kinds of review, and the
//! server's resident memory sampled every second (flat memory: the last samples are no
//! higher than the first ones after warm-up).
//!
//! `cargo bench -p polc --bench webhook` (env CLIENTS, SECONDS, POLICIES, and RATE: reviews
//! per second per client, sent on a schedule, with latency counted from when each was due;
//! by default each client sends the next review as soon as it has the answer). Client and server
//! share the machine's cores, so on a small machine the clients' own work is part of every
//! number. Under `cargo test` it runs for 2 s with 4 clients against
//! `policies/admission/cluster` and fails on any error.

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
        self.request("POST", "/validate?timeout=10s", body)
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: \
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
    // Reviews per second per client (0: each sends the next as soon as it has its answer).
    let rate: f64 = std::env::var("RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    // REPEAT=1: the reviews are sent again as they are (as the API server does for a dry run
    // and then the write, or for retries), so the server may answer from its memo.
    let repeat = env_or("REPEAT", 0) == 1;
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

    // The policy set.
    let policies = match std::env::var_os("POLICIES") {
        Some(p) => std::path::PathBuf::from(p),
        None if full => {
            let out = dir.path().join("cluster");
            let status = Command::new(env!("CARGO_BIN_EXE_polc"))
                .args(["gen", "--scale", "users", "--seed", "1", "-o"])
                .arg(&out)
                .stdout(Stdio::null())
                .status()
                .expect("polc gen runs");
            assert!(status.success(), "polc gen failed");
            out.join("policies")
        }
        None => root.join("policies/admission/cluster"),
    };

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
        .arg("--policies")
        .arg(&policies)
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

    // Ready once the policy set is loaded.
    let loading = Instant::now();
    loop {
        let ready = Client::connect(config.clone(), port)
            .and_then(|mut c| c.request("GET", "/readyz", b""))
            .is_ok_and(|(status, _)| status == 200);
        if ready {
            break;
        }
        assert!(
            loading.elapsed() < Duration::from_secs(300),
            "the policy set did not load"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "policy set {} loaded in {:.1} s",
        policies.display(),
        loading.elapsed().as_secs_f64()
    );

    // The reviews, with the answer each must get.
    let mut reviews: Vec<(String, Vec<u8>, bool)> = Vec::new();
    let mut bodies: Vec<(String, Vec<u8>)> = set_reviews(&policies, 40);
    let fixtures = root.join("policies/admission");
    let mut names: Vec<_> = std::fs::read_dir(&fixtures)
        .expect("policies/admission")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    for path in names {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        bodies.push((
            name.unwrap_or_default(),
            std::fs::read(&path).expect("fixture"),
        ));
    }
    let mut alone: Vec<(f64, String)> = Vec::new();
    // Every review sent is a new object (a label of its own, written over the placeholder),
    // so nothing the server may remember of an object answers for another.
    let bodies: Vec<(String, Vec<u8>)> = bodies
        .into_iter()
        .map(|(name, body)| (name, with_placeholder(&body)))
        .collect();
    for (name, body) in bodies {
        let mut c = Client::connect(config.clone(), port).expect("connect");
        let t = Instant::now();
        let (_, answer) = c.post(&body).expect("first answer");
        alone.push((t.elapsed().as_secs_f64() * 1e3, name.clone()));
        let allowed = serde_json::from_slice::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v["response"]["allowed"].as_bool())
            .expect("an AdmissionReview answer");
        reviews.push((name, body, allowed));
    }
    // Each review alone, the first time (no load): the slowest.
    alone.sort_by(|a, b| b.0.total_cmp(&a.0));
    let median = alone.get(alone.len() / 2).map_or(0.0, |a| a.0);
    println!("each review alone: median {median:.2} ms; slowest:");
    for (ms, name) in alone.iter().take(5) {
        println!("  {name}: {ms:.2} ms");
    }
    let reviews = Arc::new(reviews);
    let denied = reviews.iter().filter(|r| !r.2).count();
    let pace = if rate > 0.0 {
        format!("each sending {rate} reviews/s")
    } else {
        "each sending the next on the answer".to_string()
    };
    println!(
        "polc webhook under load: {clients} clients {pace}, {seconds} s, {} reviews \
         ({denied} denied) in turn, {}",
        reviews.len(),
        if repeat {
            "each sent again as it is"
        } else {
            "each sent as a new object"
        }
    );

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
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
    let seq = Arc::new(AtomicU64::new(1));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    // The clients are tasks on one thread (one kept-alive connection each): the load
    // generator takes as little of the cores it shares with the server as it can.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let workers: Vec<Vec<(u32, usize)>> = runtime.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                let load = Load {
                    connector: connector.clone(),
                    port,
                    reviews: reviews.clone(),
                    errors: errors.clone(),
                    reconnects: reconnects.clone(),
                    seq: seq.clone(),
                    deadline,
                    every: (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate)),
                    repeat,
                };
                tokio::spawn(load.run(i, clients))
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("a client task"));
        }
        out
    });
    let mut all: Vec<u32> = Vec::new();
    let mut by_review: Vec<Vec<u32>> = vec![Vec::new(); reviews.len()];
    for w in workers {
        for (micros, which) in w {
            all.push(micros);
            by_review[which].push(micros);
        }
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
    let memo_hits = Client::connect(config.clone(), port)
        .and_then(|mut c| c.request("GET", "/metrics", b""))
        .ok()
        .and_then(|(_, body)| {
            String::from_utf8_lossy(&body)
                .lines()
                .find_map(|l| l.strip_prefix("polc_webhook_memo_hits_total "))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!(
        "reviews: {} ({:.0}/s), errors: {failed}, answered from the memo: {memo_hits}, \
         resent after the server closed an idle connection: {}",
        all.len(),
        all.len() as f64 / seconds as f64,
        reconnects.load(Ordering::Relaxed),
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
    // The same without the CIDR group updates (the slowest kind, rare in a cluster).
    let mut rest: Vec<u32> = by_review
        .iter()
        .zip(reviews.iter())
        .filter(|(_, r)| !r.0.starts_with("update group "))
        .flat_map(|(l, _)| l.iter().copied())
        .collect();
    rest.sort_unstable();
    if !rest.is_empty() && rest.len() < all.len() {
        let at = |p: f64| f64::from(rest[((rest.len() as f64 - 1.0) * p).round() as usize]) / 1e3;
        println!(
            "without the CIDR group updates: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            at(0.5),
            at(0.9),
            at(0.99),
            at(1.0)
        );
    }
    // The kinds of review that took longest.
    let mut slowest: Vec<(f64, f64, &str)> = by_review
        .iter_mut()
        .zip(reviews.iter())
        .filter(|(l, _)| !l.is_empty())
        .map(|(l, r)| {
            l.sort_unstable();
            let at = |p: f64| f64::from(l[((l.len() as f64 - 1.0) * p).round() as usize]) / 1e3;
            (at(0.99), at(0.5), r.0.as_str())
        })
        .collect();
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (p99, p50, name) in slowest.iter().take(5) {
        println!("  {name}: p50 {p50:.2} ms, p99 {p99:.2} ms");
    }
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

/// What one client task of the load needs.
struct Load {
    connector: tokio_rustls::TlsConnector,
    port: u16,
    reviews: Arc<Vec<(String, Vec<u8>, bool)>>,
    errors: Arc<AtomicU64>,
    /// Reviews sent again on a new connection: the server closed the kept-alive one while
    /// it was idle (its header read timeout), as the review went out.
    reconnects: Arc<AtomicU64>,
    seq: Arc<AtomicU64>,
    deadline: Instant,
    /// With RATE: how often this client sends (open loop).
    every: Option<Duration>,
    repeat: bool,
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

impl Load {
    async fn connect(&self) -> std::io::Result<Tls> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
        self.connector.connect(name, tcp).await
    }

    /// Counts an error; the first few are shown.
    fn error(&self, what: std::fmt::Arguments<'_>) {
        if self.errors.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("error: {what}");
        }
    }

    /// Client `i` of `clients`: sends reviews in turn until the deadline; returns each
    /// answered review's latency (µs) and which review it was.
    async fn run(self, i: usize, clients: usize) -> Vec<(u32, usize)> {
        let mut latencies: Vec<(u32, usize)> = Vec::new();
        let mut conn: Option<Tls> = None;
        // Whether `conn` has carried a review already.
        let mut used = false;
        let mut n = i;
        // With RATE, a review's latency counts from when it was due, so falling behind
        // shows.
        let mut due = Instant::now()
            + self
                .every
                .map_or(Duration::ZERO, |e| e.mul_f64(i as f64 / clients as f64));
        while Instant::now() < self.deadline {
            if self.every.is_some() {
                tokio::time::sleep_until(due.into()).await;
            }
            let which = n % self.reviews.len();
            let (_, body, allowed) = &self.reviews[which];
            n += 1;
            if conn.is_none() {
                conn = self.connect().await.ok();
                used = false;
            }
            let Some(c) = conn.as_mut() else {
                self.error(format_args!("could not connect"));
                continue;
            };
            let t = if self.every.is_some() {
                due
            } else {
                Instant::now()
            };
            if let Some(e) = self.every {
                due += e;
            }
            let mut body = body.clone();
            if !self.repeat {
                stamp(&mut body, self.seq.fetch_add(1, Ordering::Relaxed));
            }
            let mut sent = post(c, &body).await;
            // A server may close a kept-alive connection once it has been idle a while;
            // when that crosses a review on its way, the review goes again on a new
            // connection, as HTTP clients (the API server's among them) do.
            if used && sent.is_err() {
                conn = self.connect().await.ok();
                if let Some(c) = conn.as_mut() {
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                    sent = post(c, &body).await;
                }
            }
            used = true;
            match sent {
                Ok((200, answer)) => {
                    let micros = u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX);
                    latencies.push((micros, which));
                    // A byte search, not a JSON parse: the load generator shares the
                    // cores with the server and should cost it little.
                    let want: &[u8] = if *allowed {
                        b"\"allowed\":true"
                    } else {
                        b"\"allowed\":false"
                    };
                    if !answer.windows(want.len()).any(|w| w == want) {
                        let answer = String::from_utf8_lossy(&answer);
                        self.error(format_args!(
                            "{}: another answer: {answer}",
                            self.reviews[which].0
                        ));
                    }
                }
                Ok((status, answer)) => {
                    let answer = String::from_utf8_lossy(&answer);
                    self.error(format_args!(
                        "{}: status {status}: {answer}",
                        self.reviews[which].0
                    ));
                    conn = None;
                }
                Err(e) => {
                    self.error(format_args!("{}: {e}", self.reviews[which].0));
                    conn = None;
                }
            }
        }
        latencies
    }
}

/// One review on a kept-alive connection: the status and the body.
async fn post(tls: &mut Tls, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = format!(
        "POST /validate?timeout=10s HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    tls.write_all(&request).await?;
    let mut got: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tls.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no content-length"))?;
    while got.len() < head_end + length {
        let n = tls.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&chunk[..n]);
    }
    Ok((status, got[head_end..head_end + length].to_vec()))
}

/// Reviews made from the policy set's own CNPs (at most `n` of them, spread over the set):
/// an UPDATE of each with its first port changed, and a CREATE of a copy for other pods
/// (a new workload's policy, under a new name); and an UPDATE of some of its CIDR groups, each
/// with one more address range.
fn set_reviews(dir: &Path, n: usize) -> Vec<(String, Vec<u8>)> {
    use polc_compiler::source::{FileId, SourceFile};
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_else(|_| Vec::new());
    files.sort();
    let (mut cnps, mut groups) = (Vec::new(), Vec::new());
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let file = SourceFile::new(path.display().to_string(), text);
        let mut ignored = Vec::new();
        let docs = polc_compiler::yaml::parse_stream(
            FileId(0),
            &file,
            polc_compiler::yaml::Limits::default(),
            &mut ignored,
        );
        for doc in docs {
            let json = polc_cli::input::yaml_to_json(&doc.root);
            if json["kind"] == "CiliumNetworkPolicy" {
                cnps.push(json);
            } else if json["kind"] == "CiliumCIDRGroup" {
                groups.push(json);
            }
        }
    }
    let step = (cnps.len() / n.max(1)).max(1);
    let mut out = Vec::new();
    for (i, cnp) in cnps.iter().step_by(step).take(n).enumerate() {
        let name = cnp["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut changed = cnp.clone();
        bump_first_port(&mut changed);
        out.push((
            format!("update {name}"),
            admission_review(i * 2, "UPDATE", &changed, Some(cnp)),
        ));
        // A policy for a new workload beside the others: the same rules for pods no policy
        // selects yet (each label value of its selector made new).
        let mut copy = cnp.clone();
        copy["metadata"]["name"] = serde_json::Value::from(format!("{name}-v2"));
        if let Some(labels) = copy["spec"]["endpointSelector"]["matchLabels"].as_object_mut() {
            for v in labels.values_mut() {
                if let Some(s) = v.as_str() {
                    *v = serde_json::Value::from(format!("{s}-v2"));
                }
            }
        }
        out.push((
            format!("create {name}-v2"),
            admission_review(i * 2 + 1, "CREATE", &copy, None),
        ));
    }
    let step = (groups.len() / (n / 4).max(1)).max(1);
    for (i, group) in groups.iter().step_by(step).take(n / 4).enumerate() {
        let name = group["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut changed = group.clone();
        if let Some(cidrs) = changed["spec"]["externalCIDRs"].as_array_mut() {
            cidrs.push(serde_json::Value::from(format!("198.18.{}.0/24", i % 256)));
        }
        out.push((
            format!("update group {name}"),
            admission_review(2 * n + i, "UPDATE", &changed, Some(group)),
        ));
    }
    out
}

fn bump_first_port(v: &mut serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::String(p)) = m.get_mut("port")
                && let Ok(n) = p.parse::<u16>()
            {
                *p = (n % 60000 + 1).to_string();
                return true;
            }
            m.values_mut().any(bump_first_port)
        }
        serde_json::Value::Array(a) => a.iter_mut().any(bump_first_port),
        _ => false,
    }
}

fn admission_review(
    i: usize,
    op: &str,
    object: &serde_json::Value,
    old: Option<&serde_json::Value>,
) -> Vec<u8> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let version = object["apiVersion"]
        .as_str()
        .and_then(|v| v.split('/').nth(1))
        .unwrap_or("v2");
    let resource = format!("{}s", kind.to_ascii_lowercase());
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-4000-8000-{i:012}"),
            "kind": {"group": "cilium.io", "version": version, "kind": kind},
            "resource": {"group": "cilium.io", "version": version, "resource": resource},
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "operation": op,
            "userInfo": {"username": "bench"},
            "object": object,
            "oldObject": old,
            "dryRun": false,
        }
    });
    serde_json::to_vec(&review).unwrap_or_default()
}

/// The label value each review sent replaces with its sequence number (same length).
const PLACEHOLDER: &[u8] = b"seq-0000000000";

/// The review with a label `polc-bench/seq: seq-0000000000` on its object (and old object).
fn with_placeholder(body: &[u8]) -> Vec<u8> {
    let Ok(mut review) = serde_json::from_slice::<serde_json::Value>(body) else {
        return body.to_vec();
    };
    for key in ["object", "oldObject"] {
        // `get_mut`: indexing would make a null object an empty one.
        let meta = review
            .get_mut("request")
            .and_then(|r| r.get_mut(key))
            .and_then(|o| o.get_mut("metadata"))
            .and_then(serde_json::Value::as_object_mut);
        if let Some(meta) = meta {
            let labels = meta
                .entry("labels")
                .or_insert_with(|| serde_json::json!({}));
            if let Some(labels) = labels.as_object_mut() {
                labels.insert(
                    "polc-bench/seq".into(),
                    serde_json::Value::from(String::from_utf8_lossy(PLACEHOLDER).into_owned()),
                );
            }
        }
    }
    serde_json::to_vec(&review).unwrap_or_else(|_| body.to_vec())
}

/// Writes `n` over every placeholder of `body`.
fn stamp(body: &mut [u8], n: u64) {
    let digits = format!("seq-{:010}", n % 10_000_000_000);
    let mut at = 0;
    while let Some(i) = body[at..]
        .windows(PLACEHOLDER.len())
        .position(|w| w == PLACEHOLDER)
    {
        let start = at + i;
        body[start..start + PLACEHOLDER.len()].copy_from_slice(digits.as_bytes());
        at = start + PLACEHOLDER.len();
    }
}
