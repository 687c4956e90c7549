//! `polc agent --node NAME`: keeps the node's installed policy equal to the cluster's (see
//! [`crate::agent`]), and serves `/metrics` and `/healthz`.

use super::load::{node_and_interfaces, report_error};
use crate::agent::{self, Metrics, Settings};
use crate::{EXIT_USAGE, Io};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use polc_compiler::CiliumVersion;
use polc_compiler::diag::Code;
use polc_ebpf::loader::{self, LoadError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Arguments of `polc agent`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Runs until stopped. Exit codes: 2 when it cannot start.")]
pub struct AgentArgs {
    /// The node this agent keeps.
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node: String,
    /// The kubeconfig to use (default: `KUBECONFIG`, `~/.kube/config`, or the pod's service
    /// account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Which interface serves which endpoint: `NAMESPACE/POD=IFNAME` pairs, `host=IFNAME`,
    /// or files of such lines (read once). Without it, each local pod's device is the one
    /// the node's host route to the pod's address goes through.
    #[arg(long, num_args = 1.., value_name = "MAP")]
    pub interfaces: Vec<String>,
    /// A device that serves no endpoint but carries replies to the L7 proxy.
    #[arg(long, value_name = "IFNAME")]
    pub uplink: Vec<String>,
    /// Where the datapath is pinned (one directory per node).
    #[arg(long, default_value = loader::DEFAULT_ROOT, value_name = "DIR")]
    pub bpffs_root: PathBuf,
    /// Capacity of each endpoint's policy map. An endpoint whose map would not fit keeps the
    /// map it had (a new one denies everything) until it fits, and is reported.
    #[arg(long, default_value_t = 16384, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub policy_map_max: u32,
    /// The Cilium release whose semantics apply: 1.17, 1.18 or 1.19.
    #[arg(long, default_value = "1.19", value_name = "VERSION")]
    pub cilium_version: CiliumVersion,
    /// The cluster name (`io.cilium.k8s.policy.cluster`).
    #[arg(long, default_value = "default", value_name = "NAME")]
    pub cluster_name: String,
    /// Write the node's `polc proxy` configuration here after every install.
    #[arg(long, value_name = "FILE")]
    pub proxy_config: Option<PathBuf>,
    /// Serve `/metrics` and `/healthz` here.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9963")]
    pub metrics: SocketAddr,
}

/// Runs `polc agent`.
pub fn run(args: &AgentArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    let euid = polc_ebpf::sys::euid();
    if euid != 0 {
        return Ok(report_error(&LoadError::NotRoot(euid), io.stderr));
    }
    let Some((pins, interfaces)) =
        node_and_interfaces(&args.bpffs_root, &args.node, &args.interfaces, io.stderr)?
    else {
        return Ok(EXIT_USAGE);
    };
    let settings = Settings {
        node: args.node.clone(),
        live: crate::live::LiveArgs {
            cluster: true,
            kubeconfig: args.kubeconfig.clone(),
            context: args.context.clone(),
        },
        interfaces,
        uplinks: args.uplink.clone(),
        pins,
        policy_map_max: args.policy_map_max,
        cilium_version: args.cilium_version,
        cluster_name: args.cluster_name.clone(),
        proxy_config: args.proxy_config.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let metrics = Arc::new(Metrics::default());
    let (log, lines) = std::sync::mpsc::channel::<String>();
    let listener = match runtime.block_on(tokio::net::TcpListener::bind(args.metrics)) {
        Ok(l) => l,
        Err(e) => {
            writeln!(
                io.stderr,
                "polc: error[{}]: cannot serve metrics on {}: {e}",
                Code::ClusterUnreadable.as_str(),
                args.metrics
            )?;
            return Ok(EXIT_USAGE);
        }
    };
    runtime.spawn(serve_metrics(listener, metrics.clone()));
    let done = runtime.spawn(agent::run(settings, metrics, log));
    // The log is written from this (the main) thread.
    for line in lines {
        writeln!(io.stderr, "polc agent: {line}")?;
    }
    match runtime.block_on(done) {
        Ok(Ok(())) => Ok(0),
        Ok(Err(e)) => {
            writeln!(
                io.stderr,
                "polc: error[{}]: the cluster cannot be read: {e}",
                Code::ClusterUnreadable.as_str()
            )?;
            Ok(EXIT_USAGE)
        }
        Err(e) => Err(anyhow::anyhow!("the agent stopped: {e}")),
    }
}

/// `/metrics` (Prometheus text) and `/healthz` (200 once the first install is done, 503
/// before, and with the last error while the last install failed).
async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let (status, body) = match req.uri().path() {
                        "/metrics" => (StatusCode::OK, metrics.render()),
                        "/healthz" => {
                            let error = metrics
                                .last_error
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .clone();
                            match (metrics.ready.load(Ordering::Relaxed), error) {
                                (true, None) => (StatusCode::OK, "ok\n".to_string()),
                                (true, Some(e)) => (
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    format!("the last install failed: {e}\n"),
                                ),
                                (false, e) => (
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    format!(
                                        "not installed yet{}\n",
                                        e.map_or(String::new(), |e| format!(": {e}"))
                                    ),
                                ),
                            }
                        }
                        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
                    };
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = status;
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
