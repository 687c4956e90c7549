//! `polc agent`: keeps one node's installed policy equal to what the cluster says. It watches
//! every kind polc reads ([`crate::live::watch`]); once each has been listed (never on a
//! partial view) and after every batch of changes, it builds the cluster's model from the
//! objects (leaving out those the Cilium agent would reject), compiles the node, and installs
//! it through the loader, which writes only what differs; it can also write the node's proxy
//! configuration, which a running `polc proxy` reads again by itself. `/metrics` and
//! `/healthz` report what it did.
//!
//! Identities keep their numbers from one recompute to the next
//! ([`IdentityTable::keep_numbers`]): a change numbers only what it adds. Not yet: every
//! endpoint of the node is recompiled on every change.

use crate::live::{self, Kind, Mirror, Update};
use polc_compiler::CiliumVersion;
use polc_compiler::diag::Severity;
use polc_compiler::identity::IdentityTable;
use polc_compiler::inventory::Inventory;
use polc_compiler::model::{Config, Model};
use polc_compiler::source::{Loc, SourceMap};
use polc_ebpf::loader::{Attachment, Loader, Options};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long changes are gathered before a recompute.
const BATCH: Duration = Duration::from_millis(50);

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
    /// Recomputes (model, compile, install).
    pub recomputes: AtomicU64,
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
                "polc_agent_recomputes_total",
                "counter",
                "Recomputes of the node.",
                g(&self.recomputes).to_string(),
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

/// The cluster's model from `sources`, without the objects the Cilium agent would reject
/// (an error diagnostic inside them); returns it and how many were left out.
pub fn model_of(sources: &SourceMap, version: CiliumVersion, cluster_name: &str) -> (Model, usize) {
    let opts = polc_compiler::Options {
        version,
        ..polc_compiler::Options::default()
    };
    let (objects, read) = polc_compiler::read_files(sources, &opts);
    let checked = polc_compiler::check(&objects, &opts);
    let bad: Vec<Loc> = read
        .iter()
        .chain(&checked.diags)
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.loc)
        .collect();
    let within = |o: &polc_compiler::raw::Object, l: &Loc| {
        l.file == o.loc.file && o.loc.start <= l.start && l.end <= o.loc.end
    };
    let total = objects.len();
    let kept: Vec<polc_compiler::raw::Object> = objects
        .into_iter()
        .filter(|o| !bad.iter().any(|l| within(o, l)))
        .collect();
    let invalid = total - kept.len();
    let mut policies = polc_compiler::check(&kept, &opts).policies;
    let (inventory, _) = Inventory::from_objects(&kept, cluster_name);
    inventory.bind_services(&mut policies);
    let config = Config {
        version,
        cluster_name: cluster_name.to_string(),
        ..Config::default()
    };
    (Model::from_parts(policies, inventory, config), invalid)
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
    let mut mirror = Mirror::new(kinds.len());
    let mut loader: Option<Loader> = None;
    let mut identities: Option<Arc<IdentityTable>> = None;
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
        metrics.events.fetch_add(taken, Ordering::Relaxed);
        if !mirror.complete() {
            continue;
        }
        let started = Instant::now();
        let sources = mirror.sources(&kinds, "cluster: ");
        let s = settings.clone();
        let prior = identities.clone();
        let compiled = tokio::task::spawn_blocking(move || compile(&s, &sources, prior.as_deref()))
            .await
            .map_err(|e| e.to_string())?;
        let compile_took = started.elapsed();
        let (state, attachments, invalid, proxy, table) = match compiled {
            Ok(c) => c,
            Err(e) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                let _ = log.send(format!("compiling node `{}` failed: {e}", settings.node));
                *metrics.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                continue;
            }
        };
        let install_started = Instant::now();
        if loader.is_none() {
            let options = Options {
                policy_map_max: settings.policy_map_max,
                ..Options::default()
            };
            match Loader::open(&settings.pins, &options) {
                Ok(l) => loader = Some(l),
                Err(e) => {
                    metrics.errors.fetch_add(1, Ordering::Relaxed);
                    let _ = log.send(format!("opening the datapath failed: {e}"));
                    *metrics.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(e.to_string());
                    continue;
                }
            }
        }
        let Some(l) = loader.as_mut() else {
            continue;
        };
        match l.install(&state, &attachments) {
            Ok(_) => {
                identities = Some(Arc::new(table));
                metrics.recomputes.fetch_add(1, Ordering::Relaxed);
                metrics
                    .invalid_objects
                    .store(invalid as u64, Ordering::Relaxed);
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
                if let (Some(path), Some(config)) = (&settings.proxy_config, proxy)
                    && let Err(e) = config.write(path)
                {
                    let _ = log.send(format!("writing {}: {e}", path.display()));
                }
            }
            Err(e) => {
                // The loader rolled back: the node keeps what it had. The loader is opened
                // again next time.
                loader = None;
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                let _ = log.send(format!("installing node `{}` failed: {e}", settings.node));
                *metrics.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
            }
        }
    }
    Ok(())
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

type Compiled = (
    polc_ebpf::state::NodeState,
    Vec<Attachment>,
    usize,
    Option<crate::proxy::config::Config>,
    IdentityTable,
);

/// The node's desired state, its attachments, the objects left out, its proxy
/// configuration, and the identities (numbered as `prior` numbered them).
fn compile(
    s: &Settings,
    sources: &SourceMap,
    prior: Option<&IdentityTable>,
) -> Result<Compiled, String> {
    let (mut model, invalid) = model_of(sources, s.cilium_version, &s.cluster_name);
    if let Some(prior) = prior {
        model.identities.keep_numbers(prior);
    }
    if model.inventory.node(&s.node).is_none() {
        return Err(format!("the cluster has no node `{}`", s.node));
    }
    let mut proxy = s.proxy_config.as_ref().map(|_| {
        let cache = model.identities.ipcache(&model.inventory, &s.node);
        crate::proxy::config::Config::new(
            &model,
            &s.node,
            &polc_compiler::mapstate::ProxyPorts::default(),
            &cache,
        )
    });
    let (state, ids) = crate::commands::load::node_state_with(&model, &s.node, |e, policy| {
        if let Some(p) = proxy.as_mut() {
            let rules = polc_ebpf::npds::network_policy(&model, e.endpoint, e.endpoint_id, policy);
            p.add_endpoint(&model, e.endpoint, e.endpoint_id, rules, policy);
        }
    })
    .map_err(|e| e.to_string())?;
    let mut attachments = Vec::new();
    let known: BTreeMap<&String, &u16> = ids.iter().collect();
    let discovered;
    let pairs = if s.interfaces.is_empty() {
        discovered = discover(&model, &s.node)?;
        &discovered
    } else {
        &s.interfaces
    };
    for (who, ifname) in pairs {
        // A pod that is gone keeps no interface; one not yet in the cluster gets it later.
        let Some(id) = known.get(who) else { continue };
        attachments.push(crate::commands::load::attachment(who, **id, ifname));
    }
    attachments.extend(s.uplinks.iter().map(|i| crate::commands::load::uplink(i)));
    Ok((state, attachments, invalid, proxy, model.identities.clone()))
}
