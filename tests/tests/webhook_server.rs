//! `polc webhook` as the API server meets it: the real server on 127.0.0.1 with a test CA,
//! real HTTPS requests, and the clients it must survive (plain HTTP, a 10 MB body, a client
//! that never finishes its request), plus a certificate rotated on disk.

mod common;

use common::root;
use polc_cli::webhook::review::Settings;
use polc_cli::webhook::server::{self, Config, Handle};
use polc_cli::webhook::store::Source;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn test_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "polc test CA");
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A server certificate for localhost and 127.0.0.1, written as `cert.pem` and `key.pem` in
/// `dir`; returns its DER.
fn server_cert(ca: &Issuer<'_, KeyPair>, dir: &Path, name: &str) -> Vec<u8> {
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    // Written beside and renamed into place, as a rotation would.
    std::fs::write(dir.join("key.tmp"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("cert.tmp"), cert.pem()).unwrap();
    std::fs::rename(dir.join("key.tmp"), dir.join("key.pem")).unwrap();
    std::fs::rename(dir.join("cert.tmp"), dir.join("cert.pem")).unwrap();
    cert.der().to_vec()
}

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    server: Handle,
}

fn start() -> Fixture {
    start_with(64)
}

fn start_with(max_connections: usize) -> Fixture {
    start_full(max_connections, None)
}

fn start_full(max_connections: usize, policies: Option<Source>) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let ca = test_ca();
    server_cert(&ca, &dir, "polc-webhook");
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        settings: Settings::default(),
        read_timeout: Duration::from_millis(1500),
        review_timeout: Duration::from_secs(5),
        reload_every: Duration::from_millis(100),
        max_connections,
        policies,
    };
    let (log, _lines) = std::sync::mpsc::channel();
    let server = server::start(config, log).unwrap();
    Fixture {
        _dir: tmp,
        dir,
        ca,
        server,
    }
}

impl Fixture {
    fn tls(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        let der: &rcgen::Certificate = self.ca.as_ref();
        roots.add(CertificateDer::from(der.der().to_vec())).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// Sends one HTTP/1.1 request over TLS; returns the status, the body and the server's
    /// certificate.
    fn send(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>, Vec<u8>) {
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(self.tls(), name).unwrap();
        let mut tcp = TcpStream::connect(self.server.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        // A connection the server closed reads as status 0.
        if tls.write_all(head.as_bytes()).is_err() || tls.write_all(body).is_err() {
            return (0, Vec::new(), Vec::new());
        }
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out);
        let cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let (status, body) = split_response(&out);
        (status, body, cert)
    }
}

fn split_response(raw: &[u8]) -> (u16, Vec<u8>) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.as_bytes().to_vec())
        .unwrap_or_default();
    (status, body)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("policies/admission").join(name)).unwrap()
}

fn review_answer(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[test]
fn reviews_health_and_metrics_over_https() {
    let f = start();
    let (status, body, _) = f.send("POST", "/validate", &fixture("create-valid-cnp.json"));
    assert_eq!(status, 200);
    assert_eq!(review_answer(&body)["response"]["allowed"], true);
    let (status, body, _) = f.send("POST", "/validate", &fixture("create-invalid-cnp.json"));
    assert_eq!(status, 200);
    let answer = review_answer(&body);
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(
        answer["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800003"
    );
    assert_eq!(f.send("GET", "/healthz", b"").0, 200);
    assert_eq!(f.send("GET", "/readyz", b"").0, 200);
    assert_eq!(f.send("GET", "/validate", b"").0, 405);
    assert_eq!(f.send("GET", "/nothing", b"").0, 404);
    let (status, metrics, _) = f.send("GET", "/metrics", b"");
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    for line in [
        "polc_webhook_requests_total{route=\"/validate\",code=\"200\"} 2",
        "polc_webhook_reviews_total{verdict=\"allowed\"} 1",
        "polc_webhook_reviews_total{verdict=\"denied\"} 1",
        "polc_webhook_validate_seconds_count 2",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[test]
fn hostile_clients_get_clear_answers_and_others_are_still_served() {
    let f = start();
    // Not JSON.
    let (status, body, _) = f.send("POST", "/validate", b"{\"apiVersion\": ");
    assert_eq!(status, 400);
    let answer = review_answer(&body);
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("not an admission.k8s.io/v1 AdmissionReview")
    );
    // 10 MB.
    let big = vec![b' '; 10 * 1024 * 1024];
    let (status, body, _) = f.send("POST", "/validate", &big);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    // Plain HTTP on the TLS port.
    let mut plain = TcpStream::connect(f.server.addr).unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    plain.read_to_end(&mut out).unwrap();
    let (status, body) = split_response(&out);
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("HTTPS"));
    // A client that announces a body and never sends it: 408 after the read timeout, while
    // another client is served.
    let slow = {
        let tls = f.tls();
        let addr: SocketAddr = f.server.addr;
        std::thread::spawn(move || {
            let name = ServerName::try_from("localhost").unwrap();
            let mut conn = rustls::ClientConnection::new(tls, name).unwrap();
            let mut tcp = TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut s = rustls::Stream::new(&mut conn, &mut tcp);
            let started = Instant::now();
            s.write_all(
                b"POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1000\r\n\r\n{\"a\":",
            )
            .unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            (split_response(&out).0, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let (status, body, _) = f.send("POST", "/validate", &fixture("create-valid-cnp.json"));
    assert_eq!(status, 200);
    assert_eq!(review_answer(&body)["response"]["allowed"], true);
    let (status, took) = slow.join().unwrap();
    assert_eq!(status, 408);
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn a_certificate_rotated_on_disk_is_served_without_a_restart() {
    let f = start();
    let (_, _, before) = f.send("GET", "/healthz", b"");
    let fresh = server_cert(&f.ca, &f.dir, "polc-webhook-rotated");
    assert_ne!(before, fresh);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, served) = f.send("GET", "/healthz", b"");
        assert_eq!(status, 200);
        if served == fresh {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A broken pair keeps the last good one in use.
    std::fs::write(f.dir.join("key.pem"), "not a key").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let (status, _, served) = f.send("GET", "/healthz", b"");
    assert_eq!(status, 200);
    assert_eq!(served, fresh);
}

#[test]
fn connections_beyond_the_limit_are_closed_and_the_rest_still_served() {
    let f = start_with(2);
    // Two connections that say nothing take both slots (until the read timeout).
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(f.server.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // A third is closed at once: nothing comes back.
    let mut third = TcpStream::connect(f.server.addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n");
    let mut out = Vec::new();
    let _ = third.read_to_end(&mut out);
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    // With the slots free again, clients are served.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _) = f.send("GET", "/healthz", b"");
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not served after the idle clients left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `ok` holds, for at most 20 s.
fn eventually(what: &str, ok: impl FnMut() -> bool) {
    common::eventually(what, Duration::from_secs(20), ok);
}

#[test]
fn the_policy_set_is_read_when_it_appears_and_again_when_it_changes() {
    let set = tempfile::tempdir().unwrap();
    // Not there yet: the server runs, but is not ready.
    let dir = set.path().join("policies");
    let f = start_full(64, Some(Source::Dir(dir.clone())));
    let (status, body, _) = f.send("GET", "/readyz", b"");
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    // Valid objects are still judged alone meanwhile.
    let (status, _, _) = f.send("POST", "/validate", &fixture("create-valid-cnp.json"));
    assert_eq!(status, 200);
    // The set appears: ready, and the shadowed item is found.
    std::fs::create_dir(&dir).unwrap();
    let shop =
        std::fs::read_to_string(root().join("policies/admission/cluster/shop.yaml")).unwrap();
    std::fs::write(dir.join("shop.yaml"), &shop).unwrap();
    eventually("ready", || f.send("GET", "/readyz", b"").0 == 200);
    let warnings = |f: &Fixture| {
        let (status, body, _) = f.send("POST", "/validate", &fixture("create-shadowed-cnp.json"));
        assert_eq!(status, 200);
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["response"]["allowed"], true, "{json}");
        json["response"]["warnings"].to_string()
    };
    assert!(warnings(&f).contains("V0404"));
    // The deny rule goes away: the item is no longer shadowed.
    let without: Vec<&str> = shop
        .split("---\n")
        .filter(|doc| !doc.contains("name: deny-legacy"))
        .collect();
    std::fs::write(dir.join("shop.yaml"), without.join("---\n")).unwrap();
    eventually("reloaded", || {
        let (_, body, _) = f.send("GET", "/metrics", b"");
        String::from_utf8_lossy(&body).contains("polc_webhook_policy_loads_total 2")
    });
    assert!(!warnings(&f).contains("V0404"));
    let (_, body, _) = f.send("GET", "/metrics", b"");
    assert!(
        String::from_utf8_lossy(&body).contains("polc_webhook_policy_objects 5"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn the_same_request_again_gets_the_same_answer_from_the_memo() {
    let set = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("policies/admission/cluster/shop.yaml"),
        set.path().join("shop.yaml"),
    )
    .unwrap();
    let f = start_full(64, Some(Source::Dir(set.path().to_path_buf())));
    eventually("ready", || f.send("GET", "/readyz", b"").0 == 200);
    let base: Value = serde_json::from_slice(&fixture("create-shadowed-cnp.json")).unwrap();
    let send = |uid: &str, edit: &dyn Fn(&mut Value)| {
        let mut review = base.clone();
        review["request"]["uid"] = Value::from(uid);
        edit(&mut review["request"]["object"]);
        let (status, body, _) = f.send("POST", "/validate", &serde_json::to_vec(&review).unwrap());
        assert_eq!(status, 200);
        review_answer(&body)["response"].clone()
    };
    let hits = || {
        let (_, body, _) = f.send("GET", "/metrics", b"");
        let text = String::from_utf8_lossy(&body).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("polc_webhook_memo_hits_total "))
            .map(|n| n.trim().parse::<u64>().unwrap())
            .unwrap()
    };
    let first = send("00000000-0000-4000-8000-000000000001", &|_| {});
    assert!(first["warnings"].to_string().contains("V0404"), "{first}");
    assert_eq!(hits(), 0);
    // The write after the dry run: the API server has filled in uid, resourceVersion and
    // creationTimestamp.
    let again = send("00000000-0000-4000-8000-000000000002", &|o| {
        o["metadata"]["uid"] = Value::from("7c8f2f34-1111-4000-8000-000000000000");
        o["metadata"]["resourceVersion"] = Value::from("4242");
        o["metadata"]["creationTimestamp"] = Value::from("2026-11-26T22:00:00Z");
    });
    assert_eq!(hits(), 1);
    assert_eq!(again["uid"], "00000000-0000-4000-8000-000000000002");
    assert_eq!(again["warnings"], first["warnings"]);
    assert_eq!(again["allowed"], first["allowed"]);
    // The same object in a review that is not well formed is not answered from the memo.
    let mut broken = base.clone();
    broken["request"]["userInfo"] = Value::from(5);
    let (status, body, _) = f.send("POST", "/validate", &serde_json::to_vec(&broken).unwrap());
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(hits(), 1);
    // Another object (one more label) is judged anew.
    let other = send("00000000-0000-4000-8000-000000000003", &|o| {
        o["metadata"]["labels"] = serde_json::json!({"team": "shop"});
    });
    assert_eq!(hits(), 1);
    assert_eq!(other["uid"], "00000000-0000-4000-8000-000000000003");
}
