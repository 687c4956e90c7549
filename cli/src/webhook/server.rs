//! The HTTPS server of `polc webhook`: TLS only (rustls), the certificate and key read from
//! files and read again when they change (cert-manager rotates them in place), and four
//! routes: `POST /validate` (one AdmissionReview, see [`super::review`]), `GET /healthz`,
//! `GET /readyz` and `GET /metrics` (Prometheus text).
//!
//! Every client is bounded: the TLS handshake and the request (headers and body) must arrive
//! within the read timeout, a body may not exceed [`MAX_BODY`], and a review that takes longer
//! than the review timeout is answered without it (allowed, with a warning that says so)
//! before the API server gives up. Plain HTTP on the port gets a plain `400` that says to use
//! HTTPS. No client can stop the server from serving the others.

use super::review::{MAX_BODY, Memo, Settings, memo_key, remembering};
use super::store::{Policies, Source};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// How the server runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
    /// How reviews are judged.
    pub settings: Settings,
    /// How long a client may take for the TLS handshake, and then for its request.
    pub read_timeout: Duration,
    /// How long a review may take before it is answered without it.
    pub review_timeout: Duration,
    /// How often the certificate files are looked at for changes.
    pub reload_every: Duration,
    /// How many client connections are served at once; more are closed at once, so a flood
    /// of connections cannot take the memory or the file descriptors.
    pub max_connections: usize,
    /// Where the policy set objects are judged against comes from; without one, each object
    /// is judged alone.
    pub policies: Option<Source>,
}

/// Lines for the operator (standard error); the server's threads never write there
/// themselves.
pub type Log = std::sync::mpsc::Sender<String>;

/// A running server.
pub struct Handle {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Handle {
    /// Stops the server and waits for it.
    pub fn stop(mut self) -> Result<(), String> {
        self.shutdown()
    }

    /// Waits until the server ends by itself (an error).
    pub fn wait(mut self) -> Result<(), String> {
        self.join()
    }

    fn shutdown(&mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join()
    }

    fn join(&mut self) -> Result<(), String> {
        self.thread.take().map_or(Ok(()), |t| {
            t.join()
                .unwrap_or_else(|_| Err("the server thread panicked".into()))
        })
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Starts the server on threads of its own; returns once it listens (or could not start).
pub fn start(config: Config, log: Log) -> Result<Handle, String> {
    let tls = load_tls(&config.cert, &config.key)?;
    // Reviews are CPU work: as many review threads as cores. More would only queue on the
    // cores, and every thread the allocator has seen keeps memory of its own.
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(cores)
        .thread_name("polc-webhook")
        .build()
        .map_err(|e| format!("cannot start the server's threads: {e}"))?;
    // An API client that cannot be made is a reason not to start.
    let client = match &config.policies {
        Some(Source::Cluster(live)) => Some(runtime.block_on(crate::live::client(live))?),
        _ => None,
    };
    let listener = runtime
        .block_on(TcpListener::bind(config.listen))
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("polc-webhook".into())
        .spawn(move || {
            runtime.block_on(serve(listener, config, client, tls, log, stopped));
            Ok(())
        })
        .map_err(|e| format!("cannot start the server thread: {e}"))?;
    Ok(Handle {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// What the handlers share.
struct State {
    settings: Settings,
    /// The policy set, when there is one (`None`: objects are judged alone).
    policies: Option<Arc<Policies>>,
    read_timeout: Duration,
    review_timeout: Duration,
    metrics: Metrics,
    /// Answers given before (see [`Memo`]).
    memo: Arc<Memo>,
}

/// How many answers the memo keeps: each is a few hundred bytes to a few KiB.
const MEMO_CAPACITY: usize = 4096;

async fn serve(
    listener: TcpListener,
    config: Config,
    client: Option<kube::Client>,
    tls: Arc<ServerConfig>,
    log: Log,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let certs = Arc::new(Certs::new(&config, tls));
    tokio::spawn(watch_certs(certs.clone(), config.reload_every, log.clone()));
    let version = config.settings.version;
    let policies = config.policies.clone().map(|source| {
        let policies = Arc::new(Policies::default());
        match (source, client) {
            (Source::Dir(dir), _) => {
                tokio::spawn(super::store::watch_dir(
                    policies.clone(),
                    dir,
                    version,
                    config.reload_every,
                    log.clone(),
                ));
            }
            (Source::Cluster(_), Some(client)) => {
                tokio::spawn(super::cluster::watch(
                    client,
                    policies.clone(),
                    version,
                    log.clone(),
                ));
            }
            // Not reached: `start` makes the client.
            (Source::Cluster(_), None) => {}
        }
        policies
    });
    let state = Arc::new(State {
        settings: config.settings.clone(),
        policies,
        read_timeout: config.read_timeout,
        review_timeout: config.review_timeout,
        metrics: Metrics::default(),
        memo: Arc::new(Memo::new(MEMO_CAPACITY)),
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    let mut refused: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            a = listener.accept() => a,
        };
        let (tcp, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: wait a moment rather than spin.
                let _ = log.send(format!("polc webhook: accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(tcp);
            refused += 1;
            if refused.is_power_of_two() {
                let _ = log.send(format!(
                    "polc webhook: {} connections open, the most allowed; {refused} refused \
                     so far",
                    config.max_connections
                ));
            }
            continue;
        };
        // Answers are written in more than one piece: without this, each waits for the
        // client's delayed acknowledgement (40 ms).
        let _ = tcp.set_nodelay(true);
        let tls = certs.current();
        let state = state.clone();
        tokio::spawn(async move {
            connection(tcp, tls, state).await;
            drop(slot);
        });
    }
}

/// One client connection: plain HTTP is told off, TLS is served.
async fn connection(tcp: tokio::net::TcpStream, tls: Arc<ServerConfig>, state: Arc<State>) {
    let read_timeout = state.read_timeout;
    // A TLS connection begins with a handshake record (0x16).
    let mut first = [0u8; 1];
    match tokio::time::timeout(read_timeout, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != 0x16 => {
            let mut tcp = tcp;
            let text = "this port speaks HTTPS only: use https://\n";
            let reply = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = tcp.write_all(reply.as_bytes()).await;
            let _ = tcp.shutdown().await;
            return;
        }
        Ok(Ok(1)) => {}
        _ => return,
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let Ok(Ok(stream)) = tokio::time::timeout(read_timeout, acceptor.accept(tcp)).await else {
        return;
    };
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(req, &state).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout);
    builder.http2().timer(TokioTimer::new());
    let _ = builder
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

type Body = Full<Bytes>;

async fn handle(req: Request<Incoming>, state: &State) -> Response<Body> {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let reviewed = req.method() == Method::POST && path == "/validate";
    let response = match (req.method(), path.as_str()) {
        (&Method::POST, "/validate") => validate(req, state).await,
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => match &state.policies {
            Some(p) if p.current().is_none() => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the policy set is not loaded yet\n",
            ),
            _ => text(StatusCode::OK, "ready\n"),
        },
        (&Method::GET, "/metrics") => {
            let mut r = text(
                StatusCode::OK,
                &state.metrics.render(state.policies.as_deref(), &state.memo),
            );
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (_, "/validate" | "/healthz" | "/readyz" | "/metrics") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: polc webhook serves POST /validate\n",
        ),
    };
    let took = reviewed.then(|| started.elapsed());
    state
        .metrics
        .record(&path, response.status().as_u16(), took);
    response
}

async fn validate(req: Request<Incoming>, state: &State) -> Response<Body> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let limited = Limited::new(req.into_body(), MAX_BODY);
    let body = match tokio::time::timeout(state.read_timeout, limited.collect()).await {
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time\n",
            );
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            let reply = super::review::oversized(declared);
            return json(reply.status, reply.body);
        }
        Ok(Err(e)) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("the request body could not be read: {e}\n"),
            );
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let settings = state.settings.clone();
    // The snapshot current now: a reload during the review does not change its answer.
    let snapshot = state.policies.as_ref().and_then(|p| p.current());
    // A request answered before is answered here, without a review thread.
    let key = memo_key(&body, snapshot.as_deref());
    if let Some(reply) = key.as_ref().and_then(|k| state.memo.answer(k)) {
        state.metrics.verdict(reply.allowed);
        return json(reply.status, reply.body);
    }
    let judged = {
        let (body, memo) = (body.clone(), state.memo.clone());
        tokio::task::spawn_blocking(move || {
            let memo = key.map(|k| (&*memo, k));
            remembering(&body, &settings, snapshot.as_deref(), memo)
        })
    };
    match tokio::time::timeout(state.review_timeout, judged).await {
        Ok(Ok(reply)) => {
            state.metrics.verdict(reply.allowed);
            json(reply.status, reply.body)
        }
        Ok(Err(_)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "polc: the review failed; please report this\n",
        ),
        Err(_) => {
            let reply = super::review::unjudged(
                &body,
                &format!(
                    "polc could not finish checking this object within {} ms; it was not \
                     checked",
                    state.review_timeout.as_millis()
                ),
            );
            json(reply.status, reply.body)
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: u16, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Reads the certificate chain and key into a TLS configuration (HTTP/2 and HTTP/1.1).
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS configuration in use, and the files it came from.
struct Certs {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
    stamp: RwLock<Option<(SystemTime, SystemTime)>>,
}

impl Certs {
    fn new(config: &Config, tls: Arc<ServerConfig>) -> Self {
        let certs = Certs {
            cert: config.cert.clone(),
            key: config.key.clone(),
            current: RwLock::new(tls),
            stamp: RwLock::new(None),
        };
        let stamp = certs.stamp_now();
        if let Ok(mut s) = certs.stamp.write() {
            *s = stamp;
        }
        certs
    }

    fn current(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn stamp_now(&self) -> Option<(SystemTime, SystemTime)> {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((m(&self.cert)?, m(&self.key)?))
    }
}

/// Reads the certificate files again whenever their modification times change; a pair that
/// does not load (half written, mismatched) keeps the previous one in use and is logged.
async fn watch_certs(certs: Arc<Certs>, every: Duration, log: Log) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = certs.stamp_now();
        let before = certs.stamp.read().ok().and_then(|s| *s);
        if now.is_none() || now == before {
            continue;
        }
        match load_tls(&certs.cert, &certs.key) {
            Ok(tls) => {
                if let Ok(mut c) = certs.current.write() {
                    *c = tls;
                }
                if let Ok(mut s) = certs.stamp.write() {
                    *s = now;
                }
                let _ = log.send("polc webhook: certificate reloaded".into());
            }
            Err(e) => {
                let _ = log.send(format!(
                    "polc webhook: the new certificate does not load, keeping the old one: {e}"
                ));
            }
        }
    }
}

/// Latency buckets of `/validate`, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Request counters and the latency histogram, for `/metrics`.
#[derive(Default)]
struct Metrics {
    /// Requests per route and status, in order of first sight.
    requests: RwLock<Vec<(String, u16, AtomicU64)>>,
    allowed: AtomicU64,
    denied: AtomicU64,
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    /// The sum of `/validate` latencies, in microseconds.
    sum_micros: AtomicU64,
}

impl Metrics {
    /// Counts a request; `took` is the latency of a review (`POST /validate`).
    fn record(&self, path: &str, status: u16, took: Option<Duration>) {
        let route = match path {
            "/validate" | "/healthz" | "/readyz" | "/metrics" => path,
            _ => "other",
        };
        let counted = self.requests.read().ok().is_some_and(|list| {
            list.iter()
                .find(|(p, s, _)| p == route && *s == status)
                .map(|(_, _, n)| n.fetch_add(1, Ordering::Relaxed))
                .is_some()
        });
        if !counted && let Ok(mut list) = self.requests.write() {
            match list.iter().find(|(p, s, _)| p == route && *s == status) {
                Some((_, _, n)) => {
                    n.fetch_add(1, Ordering::Relaxed);
                }
                None => list.push((route.to_string(), status, AtomicU64::new(1))),
            }
        }
        if let Some(took) = took {
            let secs = took.as_secs_f64();
            for (i, le) in BUCKETS.iter().enumerate() {
                if secs <= *le {
                    self.buckets[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            self.count.fetch_add(1, Ordering::Relaxed);
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        }
    }

    fn verdict(&self, allowed: bool) {
        if allowed {
            self.allowed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.denied.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn render(&self, policies: Option<&Policies>, memo: &Memo) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        s.push_str(
            "# HELP polc_webhook_memo_hits_total Reviews answered with the answer to the same \
             request before.\n",
        );
        s.push_str("# TYPE polc_webhook_memo_hits_total counter\n");
        let _ = writeln!(s, "polc_webhook_memo_hits_total {}", memo.hits());
        if let Some(p) = policies {
            let objects = p.current().map_or(0, |c| c.objects.len());
            s.push_str("# HELP polc_webhook_policy_objects Objects in the policy set in use.\n");
            s.push_str("# TYPE polc_webhook_policy_objects gauge\n");
            let _ = writeln!(s, "polc_webhook_policy_objects {objects}");
            s.push_str("# HELP polc_webhook_policy_loads_total Times the policy set was loaded.\n");
            s.push_str("# TYPE polc_webhook_policy_loads_total counter\n");
            let _ = writeln!(s, "polc_webhook_policy_loads_total {}", p.loads());
        }
        s.push_str("# HELP polc_webhook_requests_total HTTP requests by route and status.\n");
        s.push_str("# TYPE polc_webhook_requests_total counter\n");
        if let Ok(list) = self.requests.read() {
            for (route, status, n) in list.iter() {
                let _ = writeln!(
                    s,
                    "polc_webhook_requests_total{{route=\"{route}\",code=\"{status}\"}} {}",
                    n.load(Ordering::Relaxed)
                );
            }
        }
        s.push_str("# HELP polc_webhook_reviews_total Admission reviews by verdict.\n");
        s.push_str("# TYPE polc_webhook_reviews_total counter\n");
        let _ = writeln!(
            s,
            "polc_webhook_reviews_total{{verdict=\"allowed\"}} {}",
            self.allowed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "polc_webhook_reviews_total{{verdict=\"denied\"}} {}",
            self.denied.load(Ordering::Relaxed)
        );
        s.push_str("# HELP polc_webhook_validate_seconds Latency of POST /validate.\n");
        s.push_str("# TYPE polc_webhook_validate_seconds histogram\n");
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "polc_webhook_validate_seconds_bucket{{le=\"{le}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "polc_webhook_validate_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(s, "polc_webhook_validate_seconds_sum {sum}");
        let _ = writeln!(s, "polc_webhook_validate_seconds_count {count}");
        s
    }
}
