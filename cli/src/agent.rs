//! `polc agent`: keeps one node's installed policy equal to what the cluster says. It watches
//! every kind polc reads ([`crate::live::watch`]); once each has been listed (never on a
//! partial view) and after every batch of changes, it brings the node's compiled state in
//! line with the changes ([`engine::Engine`]: only what a change reaches is read, resolved
//! and materialized again), leaving out the objects the Cilium agent would reject, and
//! installs it through the loader, which writes only what differs; it can also write the
//! node's proxy configuration, which a running `polc proxy` reads again by itself.
//! `/metrics` and `/healthz` report what it did.
//!
//! Identities keep their numbers from one batch to the next, and endpoints their IDs, also
//! across a restart of the agent (the IDs installed on the node are read back), so a
//! restart rewrites nothing that did not change.

pub mod engine;

use crate::live::{self, Kind, Mirror, Update};
use engine::Engine;
use polc_compiler::CiliumVersion;
use polc_compiler::model::Model;
use polc_ebpf::loader::{Attachment, Loader, Options};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long changes are gathered after the first of a batch (a burst, such as `kubectl apply`
/// of several objects, is installed together; under churn, batches grow by themselves while
/// the previous one is computed).
const BATCH: Duration = Duration::from_millis(10);

/// What the agent is told.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The node.
    pub node: String,
    /// `--cluster`, `--kubeconfig`, `--context`.
    pub live: live::LiveArgs,
    /// `NAMESPACE/POD=IFNAME` and `host=IFNAME` pairs; when empty, each local pod's device
    /// is found from the node's host routes ([`discover`]).
    pub interfaces: Vec<(String, String)>,
    /// Devices that serve no endpoint (see `polc load --uplink`).
    pub uplinks: Vec<String>,
    /// The node's pin directory.
    pub pins: PathBuf,
    /// Capacity of each policy map.
    pub policy_map_max: u32,
    /// Semantics.
    pub cilium_version: CiliumVersion,
    /// The cluster's name.
    pub cluster_name: String,
    /// Where to write the node's proxy configuration, if anywhere.
    pub proxy_config: Option<PathBuf>,
}

/// What the agent has done, for `/metrics` and `/healthz`.
#[derive(Default)]
pub struct Metrics {
    /// Watch events taken (list items count once per list).
    pub events: AtomicU64,
    /// Watch events whose changes are installed.
    pub events_installed: AtomicU64,
    /// Map entries (ipcache, policy, endpoint, interface) the last install added, changed
    /// or removed.
    pub last_install_writes: AtomicU64,
    /// Endpoints whose map does not fit (they keep what they had).
    pub overflowing: AtomicU64,
    /// Recomputes (model, compile, install).
    pub recomputes: AtomicU64,
    /// Recomputes that built the model afresh (the first, and after changes of namespaces,
    /// nodes or services).
    pub rebuilds: AtomicU64,
    /// Installs that failed (the node keeps what it had).
    pub errors: AtomicU64,
    /// Cluster objects left out because the Cilium agent would reject them.
    pub invalid_objects: AtomicU64,
    /// The last recompute's model-and-compile time and install time, in microseconds.
    pub last_compile_us: AtomicU64,
    /// See above.
    pub last_install_us: AtomicU64,
    /// From the newest event of a batch to its install done, in microseconds.
    pub last_event_to_install_us: AtomicU64,
    /// Endpoints on the node and their policy-map entries, after the last install.
    pub endpoints: AtomicU64,
    /// See above.
    pub entries: AtomicU64,
    /// Policy-map entries per endpoint (`namespace/pod` or `host/node`), after the last
    /// install.
    pub per_endpoint: std::sync::Mutex<Vec<(String, usize)>>,
    /// Whether the first install is done.
    pub ready: AtomicBool,
    /// The last error, for `/healthz`.
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let secs = |a: &AtomicU64| format!("{:.6}", g(a) as f64 / 1e6);
        let rows = [
            (
                "polc_agent_events_total",
                "counter",
                "Watch events taken.",
                g(&self.events).to_string(),
            ),
            (
                "polc_agent_events_installed_total",
                "counter",
                "Watch events whose changes are installed.",
                g(&self.events_installed).to_string(),
            ),
            (
                "polc_agent_last_install_map_writes",
                "gauge",
                "Map entries the last install added, changed or removed.",
                g(&self.last_install_writes).to_string(),
            ),
            (
                "polc_agent_overflowing_endpoints",
                "gauge",
                "Endpoints whose policy map does not fit (they keep the map they had).",
                g(&self.overflowing).to_string(),
            ),
            (
                "polc_agent_recomputes_total",
                "counter",
                "Recomputes of the node.",
                g(&self.recomputes).to_string(),
            ),
            (
                "polc_agent_rebuilds_total",
                "counter",
                "Recomputes that built the model afresh.",
                g(&self.rebuilds).to_string(),
            ),
            (
                "polc_agent_install_errors_total",
                "counter",
                "Recomputes whose install failed.",
                g(&self.errors).to_string(),
            ),
            (
                "polc_agent_invalid_objects",
                "gauge",
                "Cluster objects left out as invalid.",
                g(&self.invalid_objects).to_string(),
            ),
            (
                "polc_agent_last_compile_seconds",
                "gauge",
                "Model and compile time of the last recompute.",
                secs(&self.last_compile_us),
            ),
            (
                "polc_agent_last_install_seconds",
                "gauge",
                "Install time of the last recompute.",
                secs(&self.last_install_us),
            ),
            (
                "polc_agent_last_event_to_install_seconds",
                "gauge",
                "From a batch's newest event to its install.",
                secs(&self.last_event_to_install_us),
            ),
            (
                "polc_agent_endpoints",
                "gauge",
                "Endpoints on the node.",
                g(&self.endpoints).to_string(),
            ),
            (
                "polc_agent_policy_entries",
                "gauge",
                "Policy-map entries on the node.",
                g(&self.entries).to_string(),
            ),
            (
                "polc_agent_ready",
                "gauge",
                "Whether the first install is done.",
                u64::from(self.ready.load(Ordering::Relaxed)).to_string(),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        }
        let name = "polc_agent_endpoint_policy_entries";
        out.push_str(&format!(
            "# HELP {name} Policy-map entries of each endpoint on the node.\n\
             # TYPE {name} gauge\n"
        ));
        for (endpoint, n) in self
            .per_endpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            // Label values escape backslashes and quotes (endpoint names hold neither).
            let endpoint = endpoint.replace('\\', "\\\\").replace('"', "\\\"");
            out.push_str(&format!("{name}{{endpoint=\"{endpoint}\"}} {n}\n"));
        }
        out
    }
}

/// Opens the node's datapath.
fn open(settings: &Settings) -> Result<Loader, String> {
    let options = Options {
        policy_map_max: settings.policy_map_max,
        ..Options::default()
    };
    Loader::open(&settings.pins, &options).map_err(|e| e.to_string())
}

/// Records a failure: counted, logged, and kept for `/healthz`.
fn failed(metrics: &Metrics, log: &std::sync::mpsc::Sender<String>, what: String) {
    metrics.errors.fetch_add(1, Ordering::Relaxed);
    let _ = log.send(what.clone());
    *metrics.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(what);
}

/// Runs the agent until the watch ends (never, unless the runtime stops).
pub async fn run(
    settings: Settings,
    metrics: Arc<Metrics>,
    log: std::sync::mpsc::Sender<String>,
) -> Result<(), String> {
    let client = live::client(&settings.live).await?;
    let kinds: Vec<&'static Kind> = live::KINDS.iter().collect();
    let (tx, mut rx) = mpsc::channel::<Update>(4096);
    tokio::spawn(live::watch(client, kinds.clone(), tx, log.clone()));
    let mut mirror = Mirror::tracked(kinds.len());
    // What the node has installed already (a restart): its endpoints keep their IDs, and
    // the first install writes only what changed while the agent was away.
    let mut loader: Option<Loader> = open(&settings)
        .inspect_err(|e| {
            let _ = log.send(format!(
                "opening the datapath failed: {e} (retried at install)"
            ));
        })
        .ok();
    let installed = loader
        .as_ref()
        .map(|l| l.installed().state.clone())
        .unwrap_or_default();
    let mut engine = Engine::new(
        &settings.node,
        settings.cilium_version,
        &settings.cluster_name,
        installed,
        settings.policy_map_max as usize,
    );
    if settings.proxy_config.is_some() {
        engine = engine.with_proxy();
    }
    let mut engine = Some(engine);
    // Events taken but not yet installed.
    let mut pending: u64 = 0;
    // The proxy's configuration is written by a thread of its own (the newest one waiting),
    // so that serializing it does not hold up the next batch.
    let proxy_writer = settings.proxy_config.clone().map(|path| {
        let (tx, rx) = std::sync::mpsc::channel::<crate::proxy::config::Config>();
        let log = log.clone();
        std::thread::spawn(move || {
            while let Ok(mut config) = rx.recv() {
                while let Ok(newer) = rx.try_recv() {
                    config = newer;
                }
                if let Err(err) = config.write(&path) {
                    let _ = log.send(format!("writing {}: {err}", path.display()));
                }
            }
        });
        tx
    });
    while let Some(first) = rx.recv().await {
        let mut newest = Instant::now();
        let mut taken = count(&first);
        mirror.apply(first);
        // Gather what comes together.
        let deadline = tokio::time::Instant::now() + BATCH;
        while let Ok(Some(more)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            newest = Instant::now();
            taken += count(&more);
            mirror.apply(more);
        }
        // And whatever else is waiting (under churn, batches grow instead of queueing).
        while let Ok(more) = rx.try_recv() {
            newest = Instant::now();
            taken += count(&more);
            mirror.apply(more);
        }
        metrics.events.fetch_add(taken, Ordering::Relaxed);
        pending += taken;
        if !mirror.complete() {
            continue;
        }
        let started = Instant::now();
        let changes = mirror.changes();
        let Some(mut e) = engine.take() else {
            return Err("the agent's state was lost".into());
        };
        let s = settings.clone();
        let (e, compiled) = tokio::task::spawn_blocking(move || {
            let r = e.apply(changes).and_then(|outcome| {
                let attachments = attachments(&s, &e)?;
                let proxy = s.proxy_config.as_ref().and_then(|_| e.proxy_config());
                Ok((outcome, attachments, proxy))
            });
            (e, r)
        })
        .await
        .map_err(|e| e.to_string())?;
        let compile_took = started.elapsed();
        metrics
            .invalid_objects
            .store(e.invalid() as u64, Ordering::Relaxed);
        let (outcome, attachments, proxy) = match compiled {
            Ok(c) => c,
            Err(err) => {
                engine = Some(e);
                failed(
                    &metrics,
                    &log,
                    format!("compiling node `{}` failed: {err}", settings.node),
                );
                continue;
            }
        };
        let timings = crate::timing::enabled();
        for note in &outcome.notes {
            let _ = log.send(format!("left out: {note}"));
        }
        let install_started = Instant::now();
        if loader.is_none() {
            match open(&settings) {
                Ok(l) => loader = Some(l),
                Err(err) => {
                    engine = Some(e);
                    failed(
                        &metrics,
                        &log,
                        format!("opening the datapath failed: {err}"),
                    );
                    continue;
                }
            }
        }
        let Some(l) = loader.as_mut() else {
            engine = Some(e);
            continue;
        };
        let state = e.state();
        match l.install(state, &attachments) {
            Ok(report) => {
                metrics.recomputes.fetch_add(1, Ordering::Relaxed);
                metrics
                    .events_installed
                    .fetch_add(pending, Ordering::Relaxed);
                pending = 0;
                metrics
                    .last_install_writes
                    .store(report.changes.total() as u64, Ordering::Relaxed);
                if timings {
                    let steps: Vec<String> = (outcome.timings.iter())
                        .map(|(what, d)| format!("{what} {:.1}", d.as_secs_f64() * 1e3))
                        .collect();
                    let _ = log.send(format!(
                        "timing: {} ms, install {:.1} ms ({} objects read, identities +{} -{}, \
                         {} endpoints, {})",
                        steps.join(", "),
                        install_started.elapsed().as_secs_f64() * 1e3,
                        outcome.read,
                        outcome.identities.0,
                        outcome.identities.1,
                        outcome.endpoints,
                        report.changes
                    ));
                }
                if outcome.rebuilt {
                    let _ = log.send(format!(
                        "installed node `{}` (model built afresh): {}",
                        settings.node, report.changes
                    ));
                }
                let overflowing = e.overflowing();
                if overflowing.len() as u64 != metrics.overflowing.load(Ordering::Relaxed) {
                    for (name, n) in overflowing {
                        let _ = log.send(format!(
                            "endpoint `{name}` needs {n} policy-map entries; its map holds {}: \
                             it keeps the map it had (denies all if it had none)",
                            settings.policy_map_max
                        ));
                    }
                }
                metrics
                    .overflowing
                    .store(overflowing.len() as u64, Ordering::Relaxed);
                if outcome.rebuilt {
                    metrics.rebuilds.fetch_add(1, Ordering::Relaxed);
                }
                metrics
                    .last_compile_us
                    .store(compile_took.as_micros() as u64, Ordering::Relaxed);
                metrics.last_install_us.store(
                    install_started.elapsed().as_micros() as u64,
                    Ordering::Relaxed,
                );
                metrics
                    .last_event_to_install_us
                    .store(newest.elapsed().as_micros() as u64, Ordering::Relaxed);
                metrics
                    .endpoints
                    .store(state.endpoints.len() as u64, Ordering::Relaxed);
                metrics
                    .entries
                    .store(state.policy_entries() as u64, Ordering::Relaxed);
                *metrics
                    .per_endpoint
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = state
                    .endpoints
                    .values()
                    .map(|e| (e.name.clone(), e.policy.len()))
                    .collect();
                metrics.ready.store(true, Ordering::Relaxed);
                *metrics.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                if let (Some(writer), Some(config)) = (&proxy_writer, proxy) {
                    let _ = writer.send(config);
                }
            }
            Err(err) => {
                // The loader rolled back: the node keeps what it had. The loader is opened
                // again next time, and the next install writes what differs from it.
                loader = None;
                failed(
                    &metrics,
                    &log,
                    format!("installing node `{}` failed: {err}", settings.node),
                );
            }
        }
        engine = Some(e);
    }
    Ok(())
}

/// The node's attachments: each endpoint's interface (from `--interfaces`, else from the
/// node's host routes), and the uplinks.
fn attachments(s: &Settings, engine: &Engine) -> Result<Vec<Attachment>, String> {
    let Some(compiled) = engine.compiled() else {
        return Ok(Vec::new());
    };
    let discovered;
    let pairs = if s.interfaces.is_empty() {
        discovered = discover(compiled.model(), &s.node)?;
        &discovered
    } else {
        &s.interfaces
    };
    let mut out = Vec::new();
    for (who, ifname) in pairs {
        // A pod that is gone keeps no interface; one not yet in the cluster gets it later.
        let id = match who.as_str() {
            "host" => compiled
                .endpoints()
                .get(&format!("host/{}", s.node))
                .map(|e| e.endpoint.endpoint_id),
            _ => compiled
                .endpoints()
                .get(who)
                .map(|e| e.endpoint.endpoint_id),
        };
        if let Some(id) = id {
            out.push(crate::commands::load::attachment(who, id, ifname));
        }
    }
    out.extend(s.uplinks.iter().map(|i| crate::commands::load::uplink(i)));
    Ok(out)
}

/// The device of each of `node`'s pods, from the node's routing table: the device of the host
/// route to one of the pod's addresses (CNIs that give each pod a veth route each pod's
/// address to it: the lab, Calico, the `ptp` plugin). Pods without one are left out (their
/// maps are installed, with no interface).
pub fn discover(model: &Model, node: &str) -> Result<Vec<(String, String)>, String> {
    let mut by_ip: BTreeMap<std::net::IpAddr, String> = BTreeMap::new();
    for family in ["-4", "-6"] {
        let out = std::process::Command::new("ip")
            .args(["-j", family, "route", "show"])
            .output()
            .map_err(|e| format!("cannot run `ip route`: {e}"))?;
        let routes: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        for r in routes.as_array().into_iter().flatten() {
            let (Some(dst), Some(dev)) = (r["dst"].as_str(), r["dev"].as_str()) else {
                continue;
            };
            let host = dst
                .strip_suffix("/32")
                .or_else(|| dst.strip_suffix("/128"))
                .unwrap_or(dst);
            if let Ok(ip) = host.parse() {
                by_ip.entry(ip).or_insert_with(|| dev.to_string());
            }
        }
    }
    let mut out = Vec::new();
    for p in model
        .inventory
        .pods
        .iter()
        .filter(|p| p.node == node && !p.host_network)
    {
        if let Some(dev) = p.ips.iter().find_map(|ip| by_ip.get(ip)) {
            out.push((p.key(), dev.clone()));
        }
    }
    Ok(out)
}

fn count(u: &Update) -> u64 {
    match u {
        Update::Listed(_, all) => all.len().max(1) as u64,
        _ => 1,
    }
}
