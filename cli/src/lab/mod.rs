//! `polc lab`: a cluster's pods as network namespaces on this machine, with polc's datapath
//! enforcing the compiled policies on their veths, and probes that send real packets.
//!
//! - [`plan`]: the topology (pure): namespaces, veths, addresses, routes.
//! - [`net`]: `ip` scripts, namespaces, sysctls.
//! - [`probe`]: listeners and probes.
//! - this module: the lab's state file and its life cycle (build, install, tear down).
//!
//! **Everything a lab makes is named**: namespaces start with `plab-<name>-`, pins live under
//! `/sys/fs/bpf/polc-lab/<name>/`, the state is `/run/polc-lab/<name>.json`, written before
//! the first namespace is made, so `polc lab down` (and the next `polc lab up`) removes a
//! crashed lab too. Nothing outside the lab's namespaces is changed.

pub mod net;
pub mod plan;
pub mod probe;

use crate::commands::load::{node_dir, node_state};
use plan::Plan;
use polc_compiler::model::Model;
use polc_ebpf::loader::{self, Attachment, Interface, LoadError, Loader, Options, Report, Side};
use polc_ebpf::sys;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where lab states are kept.
pub const STATE_DIR: &str = "/run/polc-lab";
/// Under which the labs pin their datapaths (one directory per lab, one per node in it).
pub const PIN_ROOT: &str = "/sys/fs/bpf/polc-lab";

/// Why a lab command failed.
#[derive(Debug)]
pub enum LabError {
    /// Loading the datapath failed.
    Load(LoadError),
    /// A step of building the network failed.
    Setup {
        /// The step.
        what: String,
        /// The answer.
        detail: String,
    },
    /// No lab of that name.
    NoLab(String),
}

impl From<LoadError> for LabError {
    fn from(e: LoadError) -> Self {
        LabError::Load(e)
    }
}

impl std::fmt::Display for LabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabError::Load(e) => write!(f, "{e}"),
            LabError::Setup { what, detail } => write!(f, "{what}: {detail}"),
            LabError::NoLab(name) => write!(f, "no lab `{name}` is up"),
        }
    }
}

/// What `polc lab up` built, kept for the other lab commands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    /// The topology.
    pub plan: Plan,
    /// The lab's pin directory.
    pub pins: PathBuf,
    /// Policy paths (absolute).
    pub policies: Vec<PathBuf>,
    /// Inventory paths (absolute).
    pub inventory: Vec<PathBuf>,
    /// `--cilium-version`.
    pub cilium_version: String,
    /// `--cluster-name`.
    pub cluster_name: String,
    /// Capacity of each policy map.
    pub policy_map_max: u32,
    /// World addresses added to the world namespace.
    pub world_addrs: Vec<IpAddr>,
    /// Whether the lab was completely built.
    pub ready: bool,
}

/// The state file of lab `name`.
pub fn state_path(name: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{name}.json"))
}

/// The pin directory of lab `name`.
pub fn pin_dir(name: &str) -> PathBuf {
    Path::new(PIN_ROOT).join(name)
}

impl State {
    /// Reads lab `name`'s state (`None` when there is none).
    pub fn read(name: &str) -> Result<Option<State>, LabError> {
        let path = state_path(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(LabError::Setup {
                    what: format!("reading {}", path.display()),
                    detail: e.to_string(),
                });
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LabError::Setup {
                what: format!("reading {}", path.display()),
                detail: format!("{e}; `polc lab down --name {name}` removes the lab"),
            })
    }

    /// Writes the state (atomically: a crash leaves the old or the new file).
    pub fn write(&self) -> Result<(), LabError> {
        let err = |e: std::io::Error| LabError::Setup {
            what: format!("writing {}", state_path(&self.plan.lab).display()),
            detail: e.to_string(),
        };
        std::fs::create_dir_all(STATE_DIR).map_err(err)?;
        let path = state_path(&self.plan.lab);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| LabError::Setup {
            what: "writing the lab state".into(),
            detail: e.to_string(),
        })?;
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }
}

/// What [`teardown`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Network namespaces deleted.
    pub namespaces: usize,
    /// Node datapaths unloaded.
    pub nodes: usize,
    /// Whether a state file was removed.
    pub state: bool,
}

/// Removes everything lab `name` made, whatever state it is in: the datapaths pinned under its
/// pin directory, every namespace named with its prefix (and those its state lists), and the
/// state file.
pub fn teardown(name: &str) -> Result<Removed, LabError> {
    let mut removed = Removed::default();
    let state = State::read(name).ok().flatten();
    let pins = pin_dir(name);
    for dir in loader::instances(&pins) {
        loader::unload(&dir)?;
        removed.nodes += 1;
    }
    if pins.exists() {
        let _ = std::fs::remove_dir_all(&pins);
    }
    // The parent goes with the last lab.
    let _ = std::fs::remove_dir(PIN_ROOT);
    let mut names = net::namespaces_with_prefix(&plan::ns_prefix(name));
    if let Some(s) = &state {
        for n in s.plan.namespaces() {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    removed.namespaces = net::delete_namespaces(&names);
    let path = state_path(name);
    if path.exists() {
        std::fs::remove_file(&path).map_err(|e| LabError::Setup {
            what: format!("removing {}", path.display()),
            detail: e.to_string(),
        })?;
        removed.state = true;
    }
    Ok(removed)
}

/// Builds the network of `plan` (the namespaces must not exist yet).
pub fn build(plan: &Plan) -> Result<(), LabError> {
    let names = plan.namespaces();
    net::create_namespaces(&names)?;
    // Before any interface exists, so new interfaces take the defaults.
    let open = [
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
    ];
    for ns in &names {
        net::sysctls(ns, &open)?;
    }
    for n in &plan.nodes {
        net::sysctls(
            &n.router,
            &[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv6.conf.all.forwarding", "1"),
            ],
        )?;
    }
    net::ip_batch(Some(&plan.world), &plan.world_bridge_script(), false)?;
    for (i, n) in plan.nodes.iter().enumerate() {
        net::ip_batch(Some(&n.router), &plan.router_script(i), false)?;
        net::ip_batch(Some(&n.host), &Plan::endpoint_script(&n.ips), false)?;
    }
    for p in &plan.pods {
        net::ip_batch(Some(&p.netns), &Plan::endpoint_script(&p.ips), false)?;
    }
    net::ip_batch(Some(&plan.world), &plan.world_routes_script(), false)?;
    net::wait_links_up(&names, Duration::from_secs(10))
}

/// Compiles `model` for every node of `plan` and installs it on the node's veths (pods'
/// `lxc` devices and the host's `hst0`), the loader running inside the node's router
/// namespace. Returns each node's report.
pub fn install(
    plan: &Plan,
    model: &Model,
    pins: &Path,
    policy_map_max: u32,
) -> Result<Vec<(String, Report)>, LabError> {
    let mut out = Vec::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        let (state, ids) = node_state(model, &n.name).map_err(|e| LabError::Setup {
            what: format!("compiling node `{}`", n.name),
            detail: e.to_string(),
        })?;
        let mut attachments = Vec::new();
        for p in plan.pods_of(i) {
            if let Some(id) = ids.get(&p.key) {
                attachments.push(Attachment {
                    endpoint_id: *id,
                    interface: Interface::Name(p.lxc.clone()),
                    side: Side::Node,
                });
            }
        }
        if let Some(id) = ids.get("host") {
            attachments.push(Attachment {
                endpoint_id: *id,
                interface: Interface::Name("hst0".into()),
                side: Side::Node,
            });
        }
        let dir = node_dir(pins, &n.name).ok_or_else(|| LabError::Setup {
            what: format!("node `{}`", n.name),
            detail: "the name cannot name a pin directory".into(),
        })?;
        let options = Options {
            policy_map_max,
            ..Options::default()
        };
        loader::check_capacity(
            &state,
            loader::pinned_capacity(&dir).unwrap_or(policy_map_max),
        )?;
        let report = sys::in_netns(&net::netns_path(&n.router), || {
            Loader::open(&dir, &options).and_then(|mut l| l.install(&state, &attachments))
        })
        .map_err(|e| LabError::Setup {
            what: format!("entering network namespace `{}`", n.router),
            detail: e.to_string(),
        })??;
        out.push((n.name.clone(), report));
    }
    Ok(out)
}

/// Adds world addresses to the world namespace (idempotent) and records them.
pub fn add_world(state: &mut State, addrs: &[IpAddr]) -> Result<(), LabError> {
    let new: Vec<IpAddr> = addrs
        .iter()
        .filter(|a| !state.world_addrs.contains(a))
        .copied()
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    let script: String = new
        .iter()
        .map(|a| format!("{}\n", plan::addr_line(*a, "lo")))
        .collect();
    net::ip_batch(Some(&state.plan.world), &script, false)?;
    state.world_addrs.extend(new);
    state.world_addrs.sort();
    state.write()
}

/// The router namespace of the lab node whose datapath is pinned in `dir`
/// (`/sys/fs/bpf/polc-lab/<lab>/<node>`), if `dir` is one.
pub fn router_of(dir: &Path) -> Option<String> {
    let rel = dir.strip_prefix(PIN_ROOT).ok()?;
    let lab = rel.iter().next()?.to_str()?;
    let state = State::read(lab).ok().flatten()?;
    state
        .plan
        .nodes
        .iter()
        .find(|n| node_dir(&state.pins, &n.name).as_deref() == Some(dir))
        .map(|n| n.router.clone())
}
