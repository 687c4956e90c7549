//! polc's L7 proxy: HTTP/1.1 connections the datapath hands over, judged request by request
//! with the endpoint's proxy rules ([`polc_ebpf::l7`]) and forwarded to where the client was
//! going, or answered `403 Access denied` as Cilium's proxy does.
//!
//! A connection arrives with its original destination (the listener's socket address, as the
//! datapath's socket assignment keeps it). For ingress, the endpoint is the destination and
//! the remote end the client; for egress, the other way round. Identities come from the
//! ipcache ([`Identities`]). An address with no rules denies everything, as Cilium's proxy does
//! for an endpoint it has no policy for. Rules are swapped whole ([`Proxy::set_rules`]);
//! connections in flight judge their next request with the new ones.

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use polc_compiler::ir::Direction;
use polc_ebpf::l7::{EndpointRules, HttpRequest, Verdict};
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpStream;

pub mod config;
pub mod dns;
pub mod learn;
pub mod run;
pub mod wire;

/// The largest request head (URI and headers) the proxy reads; larger ones get 431.
const MAX_HEAD: usize = 64 * 1024;

/// What Cilium's proxy answers a denied request with.
pub const DENIED_BODY: &str = "Access denied\r\n";

/// The numeric identity of an address (the ipcache's answer).
pub trait Identities: Send + Sync {
    /// The identity of `ip`; `world` (2) when the ipcache has no entry.
    fn identity(&self, ip: IpAddr) -> u32;
}

impl Identities for HashMap<IpAddr, u32> {
    fn identity(&self, ip: IpAddr) -> u32 {
        self.get(&ip)
            .copied()
            .unwrap_or(polc_compiler::identity::WORLD)
    }
}

/// The ipcache's prefixes and their identities, for the proxy's lookups: the longest prefix
/// holding an address names its identity, as the datapath's LPM map does.
pub struct Ipcache {
    /// Longest prefixes first.
    entries: Vec<(ipnet::IpNet, u32)>,
}

impl Ipcache {
    /// The ipcache of these entries (as the compiler emits them).
    pub fn new(entries: &[polc_compiler::identity::IpcacheEntry]) -> Ipcache {
        let mut entries: Vec<(ipnet::IpNet, u32)> =
            entries.iter().map(|e| (e.prefix, e.identity)).collect();
        entries.sort_by_key(|(p, _)| std::cmp::Reverse(p.prefix_len()));
        Ipcache { entries }
    }
}

impl Identities for Ipcache {
    fn identity(&self, ip: IpAddr) -> u32 {
        self.entries
            .iter()
            .find(|(p, _)| p.contains(&ip))
            .map_or(polc_compiler::identity::WORLD, |(_, id)| *id)
    }
}

/// The rules of the node's endpoints, by endpoint address.
#[derive(Default)]
pub struct Rules {
    by_ip: HashMap<IpAddr, Arc<EndpointRules>>,
    /// The policies with L7 rules on each redirected port (see [`config::Config::policies`]).
    pub policies: std::collections::BTreeMap<String, Vec<String>>,
}

impl Rules {
    /// The rules of these endpoints.
    pub fn new(endpoints: Vec<EndpointRules>) -> Rules {
        let mut by_ip = HashMap::new();
        for e in endpoints {
            let e = Arc::new(e);
            for ip in &e.endpoint_ips {
                by_ip.insert(*ip, e.clone());
            }
        }
        Rules {
            by_ip,
            policies: std::collections::BTreeMap::new(),
        }
    }

    /// The policies whose L7 rules apply to `endpoint`'s `port` in `direction`.
    pub fn policies_at(&self, endpoint: u64, direction: Direction, port: u16) -> Vec<String> {
        let prefix = format!("{endpoint}/{}/", direction.name());
        let mut out: Vec<String> = Vec::new();
        for (k, v) in self.policies.range(prefix.clone()..) {
            let Some(range) = k.strip_prefix(&prefix) else {
                break;
            };
            let (first, last) = match range.split_once('-') {
                Some((a, b)) => (a.parse().unwrap_or(1), b.parse().unwrap_or(0)),
                None => {
                    let p = range.parse().unwrap_or(1);
                    (p, p)
                }
            };
            if first == 0 || (first..=last).contains(&port) {
                out.extend(
                    v.iter()
                        .filter(|p| !out.contains(p))
                        .cloned()
                        .collect::<Vec<_>>(),
                );
            }
        }
        out
    }
}

/// Requests judged since the proxy started.
#[derive(Default)]
pub struct Counters {
    /// Forwarded.
    pub allowed: AtomicU64,
    /// Answered 403.
    pub denied: AtomicU64,
    /// The original destination could not be reached (502).
    pub unreachable: AtomicU64,
    /// Connections closed on arrival: too many at once.
    pub overloaded: AtomicU64,
}

/// What the proxy made of a request.
#[derive(Clone, Debug)]
pub struct Judged {
    /// The local endpoint's ID (`None`: the address has no rules).
    pub endpoint: Option<u64>,
    /// The other end's identity.
    pub remote_identity: u32,
    /// Forwarded or refused, and by which rule.
    pub verdict: Verdict,
    /// The policies with L7 rules on the port.
    pub policies: Vec<String>,
}

/// One request, as the access log writes it.
struct AccessEntry<'a> {
    direction: Direction,
    client: SocketAddr,
    target: SocketAddr,
    method: &'a str,
    path: &'a str,
    authority: &'a str,
    judged: &'a Judged,
}

impl AccessEntry<'_> {
    /// One JSON object: when, which endpoint and direction, both ends and the remote
    /// identity, the request, the verdict and the rule behind it.
    fn json(&self) -> serde_json::Value {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let verdict = match &self.judged.verdict {
            Verdict::Allowed(_) => "forwarded",
            Verdict::Denied(_) => "denied",
        };
        let rule = self.judged.verdict.rule();
        serde_json::json!({
            "timeMs": ms,
            "direction": self.direction.name(),
            "endpointId": self.judged.endpoint,
            "source": self.client.to_string(),
            "destination": self.target.to_string(),
            "remoteIdentity": self.judged.remote_identity,
            "method": self.method,
            "path": self.path,
            "host": self.authority,
            "verdict": verdict,
            "rule": rule,
            "policies": self.judged.policies,
            "reason": self.judged.verdict.to_string(),
        })
    }
}

/// The proxy's shared state.
pub struct Proxy {
    rules: RwLock<Arc<Rules>>,
    identities: RwLock<Arc<dyn Identities>>,
    /// What it has done.
    pub counters: Counters,
    /// Requests each rule decided, by `endpoint/rule`: (allowed, denied).
    by_rule: std::sync::Mutex<HashMap<String, [u64; 2]>>,
    /// Where the access log goes (a JSON object per line), if anywhere.
    log: Option<std::sync::Mutex<Box<dyn std::io::Write + Send>>>,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// Whether connections to the original destination keep the client's address (bound
    /// transparently) and carry the proxy's mark, as on a node; else they are plain.
    pub transparent: bool,
}

type Body = BoxBody<Bytes, hyper::Error>;

impl Proxy {
    /// A proxy with these rules and identities, writing its access log to `log`.
    pub fn new(
        rules: Rules,
        identities: Arc<dyn Identities>,
        log: Option<Box<dyn std::io::Write + Send>>,
    ) -> Proxy {
        Proxy {
            rules: RwLock::new(Arc::new(rules)),
            identities: RwLock::new(identities),
            counters: Counters::default(),
            by_rule: std::sync::Mutex::default(),
            log: log.map(std::sync::Mutex::new),
            header_timeout: Duration::from_secs(30),
            transparent: false,
        }
    }

    /// Puts new rules in use.
    pub fn set_rules(&self, rules: Rules) {
        let mut current = self.rules.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(rules);
    }

    /// Puts a new ipcache in use.
    pub fn set_identities(&self, identities: Arc<dyn Identities>) {
        let mut current = self.identities.write().unwrap_or_else(|e| e.into_inner());
        *current = identities;
    }

    fn rules(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The verdict on a request on a connection from `client` to `target`, handled by the
    /// listener of `direction`.
    pub fn judge(
        &self,
        direction: Direction,
        client: SocketAddr,
        target: SocketAddr,
        req: &HttpRequest<'_>,
    ) -> Judged {
        let (local, remote) = match direction {
            Direction::Ingress => (target.ip(), client.ip()),
            Direction::Egress => (client.ip(), target.ip()),
        };
        let rules = self.rules();
        let identity = self
            .identities
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .identity(remote);
        let (endpoint, verdict) = match rules.by_ip.get(&local) {
            Some(e) => (
                Some(e.endpoint_id),
                e.http(direction, target.port(), identity, req),
            ),
            None => (None, Verdict::Denied(polc_ebpf::l7::Denial::NoPort)),
        };
        let policies = endpoint.map_or_else(Vec::new, |ep| {
            rules.policies_at(ep, direction, target.port())
        });
        Judged {
            endpoint,
            remote_identity: identity,
            verdict,
            policies,
        }
    }

    /// Requests each rule decided, as (allowed, denied), by `endpoint/rule` (the rule as
    /// [`polc_ebpf::l7`] names it: `ingress/8080/0`).
    pub fn rule_counts(&self) -> Vec<(String, u64, u64)> {
        let counts = self.by_rule.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, u64, u64)> = counts
            .iter()
            .map(|(k, v)| (k.clone(), v[0], v[1]))
            .collect();
        out.sort();
        out
    }

    /// What it has done, for the status file: the counters and the requests per rule.
    pub fn status(&self) -> serde_json::Value {
        let c = &self.counters;
        let tables = self.rules();
        let rules: Vec<serde_json::Value> = self
            .rule_counts()
            .into_iter()
            .map(|(rule, allowed, denied)| {
                // `ENDPOINT/DIRECTION/PORT/INDEX`
                let parts: Vec<&str> = rule.split('/').collect();
                let policies = match parts.as_slice() {
                    [ep, dir, port, ..] => {
                        let dir = if *dir == "egress" {
                            Direction::Egress
                        } else {
                            Direction::Ingress
                        };
                        tables.policies_at(ep.parse().unwrap_or(0), dir, port.parse().unwrap_or(0))
                    }
                    _ => Vec::new(),
                };
                serde_json::json!({
                    "rule": rule, "allowed": allowed, "denied": denied, "policies": policies,
                })
            })
            .collect();
        serde_json::json!({
            "allowed": c.allowed.load(Ordering::Relaxed),
            "denied": c.denied.load(Ordering::Relaxed),
            "unreachable": c.unreachable.load(Ordering::Relaxed),
            "overloaded": c.overloaded.load(Ordering::Relaxed),
            "rules": rules,
        })
    }

    /// Counts a verdict and writes its access log line.
    fn record(&self, entry: &AccessEntry<'_>) {
        let verdict = &entry.judged.verdict;
        let (counter, at) = match verdict {
            Verdict::Allowed(_) => (&self.counters.allowed, 0),
            Verdict::Denied(_) => (&self.counters.denied, 1),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let (Some(rule), Some(ep)) = (verdict.rule(), entry.judged.endpoint) {
            let mut counts = self.by_rule.lock().unwrap_or_else(|e| e.into_inner());
            counts.entry(format!("{ep}/{rule}")).or_default()[at] += 1;
        }
        if let Some(log) = &self.log {
            let mut line = entry.json().to_string();
            line.push('\n');
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            // A log that cannot be written must not stop the traffic.
            let _ = log.write_all(line.as_bytes());
        }
    }

    /// Serves one client connection whose original destination is `target`, until either
    /// side closes it.
    pub async fn serve(
        self: Arc<Proxy>,
        direction: Direction,
        client: TcpStream,
        target: SocketAddr,
    ) {
        let Ok(peer) = client.peer_addr() else {
            return;
        };
        let upstream: Arc<tokio::sync::Mutex<Option<Upstream>>> = Arc::default();
        let proxy = self.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (proxy, upstream) = (proxy.clone(), upstream.clone());
            async move {
                Ok::<_, std::convert::Infallible>(
                    proxy.handle(direction, peer, target, req, &upstream).await,
                )
            }
        });
        // HTTP/1.1 or cleartext HTTP/2 (prior knowledge), as the client speaks.
        let mut builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        // Bounded: a request head fits in 64 KiB (larger ones get 431), a client that is
        // slow to send one is dropped, a client that closes its side after the request still
        // gets the answer. Pipelined requests are answered in order. (Not `pipeline_flush`:
        // with it hyper 1.12 never flushes its automatic 400/431 answers.)
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .max_buf_size(MAX_HEAD)
            .half_close(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD as u32)
            .max_concurrent_streams(256);
        let _ = builder
            .serve_connection(TokioIo::new(client), service)
            .await;
    }

    async fn handle(
        &self,
        direction: Direction,
        client: SocketAddr,
        target: SocketAddr,
        req: Request<Incoming>,
        upstream: &tokio::sync::Mutex<Option<Upstream>>,
    ) -> Response<Body> {
        let head: usize = req.uri().to_string().len()
            + req
                .headers()
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if head > MAX_HEAD {
            return text(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "polc proxy: the request head is larger than 64 KiB\n",
            );
        }
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter(|(k, _)| *k != hyper::header::HOST)
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into(),
                )
            })
            .collect();
        let authority = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("")
            .to_string();
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let verdict = self.judge(
            direction,
            client,
            target,
            &HttpRequest {
                method: req.method().as_str(),
                path: &path,
                authority: &authority,
                headers: &headers,
            },
        );
        let entry = AccessEntry {
            direction,
            client,
            target,
            method: req.method().as_str(),
            path: &path,
            authority: &authority,
            judged: &verdict,
        };
        self.record(&entry);
        if let Verdict::Denied(_) = verdict.verdict {
            return text(StatusCode::FORBIDDEN, DENIED_BODY);
        }
        let mut req = req;
        hop_by_hop(req.headers_mut());
        let via = self.transparent.then(|| Via::of(client.ip(), direction));
        match forward(upstream, target, via, req).await {
            Ok(mut r) => {
                hop_by_hop(r.headers_mut());
                r.map(|b| b.boxed())
            }
            Err(e) => {
                self.counters.unreachable.fetch_add(1, Ordering::Relaxed);
                text(
                    StatusCode::BAD_GATEWAY,
                    &format!("polc proxy: {target} cannot be reached: {e}\n"),
                )
            }
        }
    }
}

/// A connection to the original destination, kept for the client connection's requests:
/// HTTP/1.1, or HTTP/2 when the client spoke HTTP/2.
enum Upstream {
    H1(hyper::client::conn::http1::SendRequest<Incoming>),
    H2(hyper::client::conn::http2::SendRequest<Incoming>),
}

/// How a node's proxy reaches the original destination: from the client's address, bound
/// transparently, its packets marked as the proxy's so the datapath knows them.
#[derive(Clone, Copy, Debug)]
pub struct Via {
    /// The client's address.
    pub source: IpAddr,
    /// `SO_MARK`.
    pub mark: u32,
}

impl Via {
    /// How the proxy of `direction` reaches a destination for a client at `source`.
    pub fn of(source: IpAddr, direction: Direction) -> Via {
        Via {
            source,
            mark: match direction {
                Direction::Ingress => polc_ebpf::abi::MARK_MAGIC_PROXY_INGRESS,
                Direction::Egress => polc_ebpf::abi::MARK_MAGIC_PROXY_EGRESS,
            },
        }
    }
}

/// Opens a connection to `target`, as `via` says when given.
pub async fn connect(target: SocketAddr, via: Option<Via>) -> std::io::Result<TcpStream> {
    let Some(via) = via else {
        return TcpStream::connect(target).await;
    };
    let s = transparent_socket(SocketAddr::new(via.source, 0), socket2::Type::STREAM, false)?;
    s.set_mark(via.mark)?;
    tokio::net::TcpSocket::from_std_stream(s.into())
        .connect(target)
        .await
}

/// A non-blocking socket of `ty` (TCP or UDP) bound to `addr` with `IP_TRANSPARENT`, so
/// `addr` may be any address, also another host's; an IPv6 one takes IPv6 only.
pub fn transparent_socket(
    addr: SocketAddr,
    ty: socket2::Type,
    reuse: bool,
) -> std::io::Result<socket2::Socket> {
    let proto = if ty == socket2::Type::DGRAM {
        socket2::Protocol::UDP
    } else {
        socket2::Protocol::TCP
    };
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        s.set_ip_transparent_v6(true)?;
    } else {
        s.set_ip_transparent_v4(true)?;
    }
    s.set_reuse_address(reuse)?;
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    Ok(s)
}

async fn forward(
    slot: &tokio::sync::Mutex<Option<Upstream>>,
    target: SocketAddr,
    via: Option<Via>,
    req: Request<Incoming>,
) -> Result<Response<Incoming>, String> {
    let h2 = req.version() == hyper::Version::HTTP_2;
    let mut slot = slot.lock().await;
    let reusable = match slot.as_mut() {
        Some(Upstream::H1(s)) if !h2 => s.ready().await.is_ok(),
        Some(Upstream::H2(s)) if h2 => s.ready().await.is_ok(),
        _ => false,
    };
    if !reusable {
        let tcp = connect(target, via).await.map_err(|e| e.to_string())?;
        let io = TokioIo::new(tcp);
        *slot = Some(if h2 {
            let (send, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Upstream::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Upstream::H1(send)
        });
    }
    match slot.as_mut() {
        Some(Upstream::H1(send)) => send.send_request(req).await.map_err(|e| e.to_string()),
        Some(Upstream::H2(send)) => send.send_request(req).await.map_err(|e| e.to_string()),
        None => Err("no upstream connection".into()),
    }
}

/// Drops the headers that describe one hop (RFC 9110 §7.6.1): those the `Connection` header
/// names and the standard ones; each side's framing is its own connection's.
fn hop_by_hop(headers: &mut hyper::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::net::TcpListener;

    /// A server that answers every request with its method, path and body.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let line = format!("{} {} ", req.method(), req.uri());
                    let body = req.into_body().collect().await?.to_bytes();
                    let mut out = line.into_bytes();
                    out.extend_from_slice(&body);
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(out))))
                });
                tokio::spawn(async move {
                    // HTTP/1.1 or HTTP/2, as the proxy speaks to it.
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                });
            }
        });
        addr
    }

    fn rules(port: u16, methods: &str) -> Rules {
        let regex = |name: &str, re: &str| json!({"name": name, "stringMatch": {"safeRegex": {"regex": re}}});
        let e = EndpointRules::from_json(&json!({
            "endpointIps": ["127.0.0.1"],
            "endpointId": "7",
            "ingressPerPortPolicies": [{"port": port, "protocol": "TCP", "rules": [
                {"remotePolicies": [12345], "httpRules": {"httpRules": [
                    {"headers": [regex(":method", methods), regex(":path", "/api")]}
                ]}}
            ]}],
            "egressPerPortPolicies": [{"port": 0, "protocol": "TCP"}],
        }))
        .unwrap();
        Rules::new(vec![e])
    }

    /// One kept-alive client connection: allowed requests reach the server, denied ones get
    /// Cilium's 403, and new rules apply to the next request.
    #[tokio::test]
    async fn requests_are_forwarded_or_refused_one_by_one() {
        let server = echo().await;
        let ids: HashMap<IpAddr, u32> = [("127.0.0.1".parse().unwrap(), 12345)].into();
        let log = SharedLog::default();
        let proxy = Arc::new(Proxy::new(
            rules(server.port(), "GET"),
            Arc::new(ids),
            Some(Box::new(log.clone())),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(p.clone().serve(Direction::Ingress, tcp, server));
            }
        });
        let tcp = TcpStream::connect(at).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut ask = async |method: &str, path: &str, body: &str| {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("host", "api.shop")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap();
            let r = send.send_request(req).await.unwrap();
            let status = r.status().as_u16();
            let body = r.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        };
        assert_eq!(ask("GET", "/api", "").await, (200, "GET /api ".into()));
        assert_eq!(ask("GET", "/api/x", "").await, (403, DENIED_BODY.into()));
        assert_eq!(ask("POST", "/api", "hi").await, (403, DENIED_BODY.into()));
        // The same connection, new rules: POST is allowed now, its body forwarded.
        proxy.set_rules(rules(server.port(), "GET|POST"));
        assert_eq!(
            ask("POST", "/api", "hi").await,
            (200, "POST /api hi".into())
        );
        assert_eq!(proxy.counters.allowed.load(Ordering::Relaxed), 2);
        assert_eq!(proxy.counters.denied.load(Ordering::Relaxed), 2);
        // Another endpoint's address: no rules, nothing allowed.
        let other: SocketAddr = "127.0.0.2:80".parse().unwrap();
        let req = HttpRequest {
            method: "GET",
            path: "/api",
            authority: "",
            headers: &[],
        };
        let v = proxy.judge(Direction::Ingress, at, other, &req);
        assert!(matches!(v.verdict, Verdict::Denied(_)), "{}", v.verdict);
        // Per rule: the GET rule allowed one, then the GET|POST rule one.
        assert_eq!(
            proxy.rule_counts(),
            [(
                "7/ingress/".to_string() + &server.port().to_string() + "/0",
                2,
                0
            )]
        );
        // One JSON line per request, in order.
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let verdicts: Vec<&str> = lines
            .iter()
            .map(|l| l["verdict"].as_str().unwrap())
            .collect();
        assert_eq!(verdicts, ["forwarded", "denied", "denied", "forwarded"]);
        assert_eq!(lines[1]["path"], "/api/x");
        assert_eq!(lines[1]["remoteIdentity"], 12345);
        assert_eq!(lines[1]["endpointId"], 7);
        assert_eq!(lines[0]["direction"], "ingress");
    }

    /// A proxy in front of a new echo server, with the rules `rules` makes for the server's
    /// port; returns the proxy and where it listens.
    async fn proxy_in_front(
        rules: impl FnOnce(u16) -> Rules,
        header_timeout: Duration,
    ) -> (Arc<Proxy>, SocketAddr) {
        let server = echo().await;
        let ids: HashMap<IpAddr, u32> = [("127.0.0.1".parse().unwrap(), 12345)].into();
        let mut proxy = Proxy::new(rules(server.port()), Arc::new(ids), None);
        proxy.header_timeout = header_timeout;
        let proxy = Arc::new(proxy);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(p.clone().serve(Direction::Ingress, tcp, server));
            }
        });
        (proxy, at)
    }

    /// Sends raw bytes, optionally closes the write side, and reads until the proxy closes
    /// (or 5 s).
    async fn raw(at: SocketAddr, bytes: &[u8], shutdown: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = TcpStream::connect(at).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        if shutdown {
            tcp.shutdown().await.unwrap();
        }
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Bad input never reaches the server and never stops the proxy: a malformed request
    /// gets 400, an oversized head 431, a slow client is dropped; a half-closed client still
    /// gets its answer; pipelined requests are judged and answered one by one, in order; a
    /// chunked body is forwarded whole.
    #[tokio::test]
    async fn bad_and_unusual_clients_get_clear_answers() {
        let (proxy, at) =
            proxy_in_front(|port| rules(port, "GET|POST"), Duration::from_millis(300)).await;
        for garbage in [
            &b"NOT HTTP AT ALL\r\n\r\n"[..],
            b"GET /a b c d\r\n\r\n",
            b"\x00\x01\x02garbage\r\n\r\n",
        ] {
            let got = raw(at, garbage, false).await;
            assert!(got.starts_with("HTTP/1.1 400"), "{got}");
        }
        let mut huge = b"GET /api HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 100 * 1024));
        huge.extend(b"\r\n\r\n");
        let got = raw(at, &huge, false).await;
        assert!(got.starts_with("HTTP/1.1 431"), "{got}");
        // Slow: half a request head, then nothing; the proxy closes within its timeout.
        let start = std::time::Instant::now();
        let got = raw(at, b"GET /api HTTP/1.1\r\nHo", false).await;
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
        assert!(!got.contains("200"), "{got}");
        assert_eq!(proxy.counters.allowed.load(Ordering::Relaxed), 0);
        assert_eq!(proxy.counters.denied.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn half_closed_pipelined_and_chunked_requests_are_served() {
        let (proxy, at) =
            proxy_in_front(|port| rules(port, "GET|POST"), Duration::from_secs(5)).await;
        // Half-closed after the request.
        let got = raw(at, b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n", true).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(got.ends_with("GET /api "), "{got}");
        // Pipelined: allowed, denied, allowed, answered in order on one connection.
        let got = raw(
            at,
            b"GET /api HTTP/1.1\r\nHost: x\r\n\r\nDELETE /api HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
            false,
        )
        .await;
        let statuses: Vec<&str> = got
            .match_indices("HTTP/1.1 ")
            .map(|(i, _)| &got[i + 9..i + 12])
            .collect();
        assert_eq!(statuses, ["200", "403", "200"], "{got}");
        assert!(got.contains("POST /api hi"), "{got}");
        // Chunked: the body arrives whole.
        let got = raw(
            at,
            b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
              Connection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            false,
        )
        .await;
        assert!(got.contains("POST /api abcde"), "{got}");
        assert_eq!(proxy.counters.allowed.load(Ordering::Relaxed), 4);
        assert_eq!(proxy.counters.denied.load(Ordering::Relaxed), 1);
    }

    /// Cleartext HTTP/2 (prior knowledge): the requests of one connection are judged one by
    /// one and the allowed ones forwarded over HTTP/2.
    #[tokio::test]
    async fn cleartext_http2_requests_are_judged_one_by_one() {
        let (proxy, at) =
            proxy_in_front(|port| rules(port, "GET|POST"), Duration::from_secs(5)).await;
        let tcp = TcpStream::connect(at).await.unwrap();
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(tcp),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let ask = |method: &str, path: &str| {
            let mut send = send.clone();
            let req = Request::builder()
                .method(method)
                .uri(format!("http://api.shop{path}"))
                .body(Full::new(Bytes::from_static(b"hi")))
                .unwrap();
            async move {
                let r = send.send_request(req).await.unwrap();
                assert_eq!(r.version(), hyper::Version::HTTP_2);
                let status = r.status().as_u16();
                let body = r.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let (a, b, c) = tokio::join!(
            ask("GET", "/api"),
            ask("DELETE", "/api"),
            ask("POST", "/api")
        );
        assert_eq!(a, (200, "GET http://api.shop/api hi".into()));
        assert_eq!(b, (403, DENIED_BODY.into()));
        assert_eq!(c, (200, "POST http://api.shop/api hi".into()));
        assert_eq!(proxy.counters.allowed.load(Ordering::Relaxed), 2);
        assert_eq!(proxy.counters.denied.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_longest_prefix_names_the_identity() {
        let entry = |prefix: &str, identity: u32| polc_compiler::identity::IpcacheEntry {
            prefix: prefix.parse().unwrap(),
            identity,
            tunnel_endpoint: None,
        };
        let ipcache = Ipcache::new(&[
            entry("10.0.0.0/8", 16_777_217),
            entry("10.0.1.5/32", 12345),
            entry("fd00::/64", 16_777_218),
        ]);
        let id = |ip: &str| ipcache.identity(ip.parse().unwrap());
        assert_eq!(id("10.0.1.5"), 12345);
        assert_eq!(id("10.2.3.4"), 16_777_217);
        assert_eq!(id("fd00::9"), 16_777_218);
        // Not in the ipcache: the world.
        assert_eq!(id("8.8.8.8"), polc_compiler::identity::WORLD);
        assert_eq!(id("2001:db8::1"), polc_compiler::identity::WORLD);
    }

    /// An access log the test can read back.
    #[derive(Clone, Default)]
    struct SharedLog(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for SharedLog {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
