//! A fake Kubernetes API server for the client side of `--cluster`: no kube-apiserver can be
//! had here, so this serves the requests polc makes from recorded objects on 127.0.0.1, over
//! plain HTTP. Lists are paged (`limit` and `continue`); watches stream the events the test
//! sends; a resource can be made to answer 403 (RBAC) or be missing (a CRD not installed).

use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// Every (group, version, plural) polc reads.
pub const EVERY_KIND: [(&str, &str, &str); 8] = [
    ("cilium.io", "v2", "ciliumnetworkpolicies"),
    ("cilium.io", "v2", "ciliumclusterwidenetworkpolicies"),
    ("cilium.io", "v2", "ciliumcidrgroups"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("", "v1", "namespaces"),
    ("", "v1", "nodes"),
    ("", "v1", "pods"),
    ("", "v1", "services"),
];

/// A Namespace as the API server lists it.
pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name},
                        "resourceVersion": "1"}})
}

/// A Node with one InternalIP.
pub fn node(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "resourceVersion": "1"},
           "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
}

/// A running Pod of namespace `app` labelled `app: APP` on `node`, with one address.
pub fn pod(name: &str, app: &str, node: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "app", "labels": {"app": app},
                        "resourceVersion": "1"},
           "spec": {"nodeName": node},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

/// The CNP `app/api` of the agent's tests: pods `app: client` may reach pods `app: api` on
/// `ports` (TCP).
pub fn api_policy(ports: &[&str]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"port": p, "protocol": "TCP"}))
        .collect();
    json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
           "metadata": {"name": "api", "namespace": "app", "resourceVersion": "1"},
           "spec": {"endpointSelector": {"matchLabels": {"app": "api"}},
                    "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}],
                                 "toPorts": [{"ports": ports}]}]}})
}

/// The fake API server's state.
pub struct Fake {
    /// (group, version, plural) served.
    pub served: Mutex<Vec<(String, String, String)>>,
    /// Objects, by plural.
    pub objects: Mutex<Vec<(String, Value)>>,
    /// Plurals that answer 403.
    pub forbidden: Mutex<Vec<String>>,
    /// Open watches, by plural.
    pub watches: Mutex<Vec<(String, mpsc::UnboundedSender<Bytes>)>>,
    /// Every request, `path?query`.
    pub requests: Mutex<Vec<String>>,
    /// Whether the next watches are told their resource version is gone (`410`).
    pub gone: Mutex<bool>,
}

impl Fake {
    /// A server that serves these (group, version, plural) and nothing else.
    pub fn serving(served: &[(&str, &str, &str)]) -> Arc<Fake> {
        Arc::new(Fake {
            served: Mutex::new(
                served
                    .iter()
                    .map(|(g, v, p)| (g.to_string(), v.to_string(), p.to_string()))
                    .collect(),
            ),
            objects: Mutex::default(),
            forbidden: Mutex::default(),
            watches: Mutex::default(),
            requests: Mutex::default(),
            gone: Mutex::new(false),
        })
    }

    /// Adds an object of `plural`.
    pub fn add(&self, plural: &str, object: Value) {
        self.objects
            .lock()
            .unwrap()
            .push((plural.to_string(), object));
    }

    /// Changes the stored objects as an event of `kind` (`ADDED`, `MODIFIED`, `DELETED`) says,
    /// so later lists see it too, and sends the event.
    pub fn change(&self, plural: &str, kind: &str, object: &Value) {
        let key = |o: &Value| {
            (
                o["metadata"]["namespace"].clone(),
                o["metadata"]["name"].clone(),
            )
        };
        {
            let mut objects = self.objects.lock().unwrap();
            objects.retain(|(p, o)| p != plural || key(o) != key(object));
            if kind != "DELETED" {
                objects.push((plural.to_string(), object.clone()));
            }
        }
        self.event(plural, kind, object);
    }

    /// Sends a watch event to every open watch of `plural` (the stored objects stay).
    pub fn event(&self, plural: &str, kind: &str, object: &Value) {
        let line = format!("{}\n", json!({"type": kind, "object": object}));
        for (p, tx) in self.watches.lock().unwrap().iter() {
            if p == plural {
                let _ = tx.send(Bytes::from(line.clone()));
            }
        }
    }

    /// Ends every open watch (the connection drops).
    pub fn close_watches(&self) {
        self.watches.lock().unwrap().clear();
    }

    /// Whether a watch of `plural` is open.
    pub fn watching(&self, plural: &str) -> bool {
        self.watches
            .lock()
            .unwrap()
            .iter()
            .any(|(p, _)| p == plural)
    }
}

fn full(status: u16, body: Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    full(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "details": {}, "code": code}),
    )
}

async fn handle(req: Request<hyper::body::Incoming>, fake: Arc<Fake>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    fake.requests
        .lock()
        .unwrap()
        .push(format!("{path}?{query}"));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /apis/GROUP/VERSION/PLURAL or /api/v1/PLURAL
    let (group, version, plural) = match parts.as_slice() {
        ["apis", g, v, p] => (*g, *v, *p),
        ["api", v, p] => ("", *v, *p),
        _ => ("", "", ""),
    };
    let served = fake
        .served
        .lock()
        .unwrap()
        .iter()
        .any(|(g, v, p)| (g.as_str(), v.as_str(), p.as_str()) == (group, version, plural));
    if !served {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    }
    if fake.forbidden.lock().unwrap().iter().any(|p| p == plural) {
        return status(
            403,
            "Forbidden",
            &format!(
                "{plural} is forbidden: User \"system:serviceaccount:polc:polc\" cannot list \
                 resource \"{plural}\" at the cluster scope"
            ),
        );
    }
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    if param("watch").is_some_and(|v| v == "true" || v == "1") {
        if *fake.gone.lock().unwrap() {
            // The resource version asked for is too old: one ERROR event, and the end.
            let line = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                "metadata": {}, "status": "Failure", "reason": "Expired", "code": 410,
                "message": "too old resource version"}});
            return full(200, line);
        }
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        fake.watches.lock().unwrap().push((plural.to_string(), tx));
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream.boxed())));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        return r;
    }
    // Pages: `continue` is the offset of the next item.
    let from: usize = param("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = param("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    // Only the page's items are copied (lists of tens of thousands of pods are paged).
    let (total, items) = {
        let objects = fake.objects.lock().unwrap();
        let of_plural = || objects.iter().filter(|(p, _)| p == plural);
        let items: Vec<Value> = of_plural()
            .skip(from)
            .take(limit)
            .map(|(_, o)| o.clone())
            .collect();
        (of_plural().count(), items)
    };
    let to = from.saturating_add(items.len());
    let mut metadata = json!({"resourceVersion": "1"});
    if to < total {
        metadata["continue"] = json!(to.to_string());
    }
    let api_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    full(
        200,
        json!({"apiVersion": api_version, "kind": "List", "metadata": metadata,
               "items": items}),
    )
}

/// Starts the fake API server on a thread of its own; returns its port.
pub fn start(fake: Arc<Fake>) -> u16 {
    serve(fake, std::net::TcpListener::bind("127.0.0.1:0").unwrap())
}

/// [`start`], listening on 127.0.0.1 inside the network namespace `netns` (a path).
pub fn start_in(fake: Arc<Fake>, netns: &Path) -> u16 {
    let listener = polc_ebpf::sys::in_netns(netns, || std::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    serve(fake, listener)
}

fn serve(fake: Arc<Fake>, listener: std::net::TcpListener) -> u16 {
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let fake = fake.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let fake = fake.clone();
                        async move { Ok::<_, Infallible>(handle(req, fake).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
    });
    port
}

/// A kubeconfig in `dir` for the fake server on `port`; returns its path.
pub fn kubeconfig(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: \
             http://127.0.0.1:{port}\ncontexts:\n- name: fake\n  context: {{cluster: fake, \
             user: fake}}\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{token: \
             test}}\n"
        ),
    )
    .unwrap();
    path
}
