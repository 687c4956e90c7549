//! `polc webhook --cluster`: the policy set read from an API server through watches. No
//! kube-apiserver can be had here, so the test serves the few requests the watches make
//! (list, then watch, per kind) from recorded objects on 127.0.0.1, over plain HTTP, and
//! sends a watch event when the test says so.

mod common;

use common::fake_api::{self, Fake};
use common::root;
use polc_cli::webhook::review::Settings;
use polc_cli::webhook::server::{self, Config};
use polc_cli::webhook::store::Source;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// A CiliumNetworkPolicy as the API server lists it.
fn cnp(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
           "metadata": {"name": name, "namespace": "shop", "resourceVersion": "1",
                        "uid": format!("uid-{name}")},
           "spec": spec})
}

/// Waits until `ok` holds, for at most 30 s.
fn eventually(what: &str, ok: impl FnMut() -> bool) {
    common::eventually(what, Duration::from_secs(30), ok);
}

/// The webhook's configuration for a test: a self-signed certificate in `dir`, policies
/// from the cluster `kubeconfig` points at.
fn config(dir: &std::path::Path, kubeconfig: std::path::PathBuf) -> Config {
    let (cert, key) = self_signed(dir);
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert,
        key,
        settings: Settings::default(),
        read_timeout: Duration::from_millis(1500),
        review_timeout: Duration::from_secs(5),
        reload_every: Duration::from_millis(100),
        max_connections: 64,
        policies: Some(Source::Cluster(polc_cli::live::LiveArgs {
            cluster: true,
            kubeconfig: Some(kubeconfig),
            context: None,
        })),
    }
}

#[test]
fn the_policy_set_follows_the_cluster() {
    let fake = Fake::serving(&[
        ("cilium.io", "v2", "ciliumnetworkpolicies"),
        ("cilium.io", "v2", "ciliumclusterwidenetworkpolicies"),
        ("cilium.io", "v2alpha1", "ciliumcidrgroups"),
        ("networking.k8s.io", "v1", "networkpolicies"),
    ]);
    let deny = cnp(
        "deny-legacy",
        json!({"endpointSelector": {"matchLabels": {"app": "api"}},
               "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"app": "legacy"}}]}]}),
    );
    fake.objects
        .lock()
        .unwrap()
        .push(("ciliumnetworkpolicies".into(), deny.clone()));
    let port = fake_api::start(fake.clone());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake_api::kubeconfig(dir.path(), port);
    let config = config(dir.path(), kubeconfig);
    let (log, lines) = std::sync::mpsc::channel();
    let server = server::start(config, log).unwrap();
    let client = Client::new(dir.path(), server.addr);
    eventually("ready", || client.get("/readyz") == 200);
    // Every kind was listed; CiliumCIDRGroup at the version the server has.
    let asked = fake.requests.lock().unwrap().join("\n");
    for want in [
        "/apis/cilium.io/v2/ciliumnetworkpolicies",
        "/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies",
        "/apis/cilium.io/v2alpha1/ciliumcidrgroups",
        "/apis/networking.k8s.io/v1/networkpolicies",
    ] {
        assert!(asked.contains(want), "{want} not asked:\n{asked}");
    }
    let shadowed = || {
        let body =
            std::fs::read(root().join("policies/admission/create-shadowed-cnp.json")).unwrap();
        let answer = client.review(&body);
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        answer["response"]["warnings"].to_string().contains("V0404")
    };
    assert!(shadowed(), "the listed deny rule shadows the new item");
    // The deny rule is deleted in the cluster: the item is no longer shadowed.
    eventually("watching", || fake.watching("ciliumnetworkpolicies"));
    fake.event("ciliumnetworkpolicies", "DELETED", &deny);
    eventually("the deletion seen", || !shadowed());
    // And added back.
    fake.event("ciliumnetworkpolicies", "ADDED", &deny);
    eventually("the addition seen", shadowed);
    drop(server);
    let said: Vec<String> = lines.try_iter().collect();
    assert!(
        said.iter()
            .any(|l| l.contains("policy set read from the cluster: 1 objects")),
        "{said:#?}"
    );
}

#[test]
fn without_a_reachable_cluster_config_the_server_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), dir.path().join("missing-kubeconfig"));
    let (log, _lines) = std::sync::mpsc::channel();
    let err = server::start(config, log).err().unwrap();
    assert!(err.contains("missing-kubeconfig"), "{err}");
}

/// A self-signed certificate for 127.0.0.1 and its key, as files in `dir`.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    (c, k)
}

/// An HTTPS client that trusts the test certificate.
struct Client {
    tls: Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
}

impl Client {
    fn new(dir: &std::path::Path, addr: std::net::SocketAddr) -> Client {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(dir.join("cert.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        Client { tls, addr }
    }

    fn send(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        use std::io::{Read, Write};
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut conn = rustls::ClientConnection::new(self.tls.clone(), name).unwrap();
        let mut tcp = std::net::TcpStream::connect(self.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes()).unwrap();
        tls.write_all(body).unwrap();
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
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

    fn get(&self, path: &str) -> u16 {
        self.send("GET", path, b"").0
    }

    fn review(&self, body: &[u8]) -> Value {
        let (status, body) = self.send("POST", "/validate", body);
        assert_eq!(status, 200);
        serde_json::from_slice(&body).unwrap()
    }
}
