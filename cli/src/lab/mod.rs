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
    /// Names the lab's DNS servers answer (`--dns-answer`), and their addresses.
    #[serde(default)]
    pub dns_records: Vec<(String, IpAddr)>,
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
    /// Proxies stopped.
    pub proxies: usize,
}

/// Removes everything lab `name` made, whatever state it is in: the datapaths pinned under its
/// pin directory, every namespace named with its prefix (and those its state lists), and the
/// state file.
pub fn teardown(name: &str) -> Result<Removed, LabError> {
    let mut removed = Removed {
        proxies: stop_proxies(name),
        ..Removed::default()
    };
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
        net::ip6_batch(&n.router, &Plan::router_script_v6())?;
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
        // Replies to the proxy's upstream connections come back through the uplink.
        attachments.push(crate::commands::load::uplink(plan::UPLINK));
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

// ---- the proxies ---------------------------------------------------------------------------

/// Where node `index` of lab `name` keeps its proxy's files: `proxy.json` (the
/// configuration), `status.json`, `access.log`, `proxy.err` and `pid`.
pub fn proxy_dir(name: &str, index: usize) -> PathBuf {
    Path::new(STATE_DIR)
        .join(format!("{name}.d"))
        .join(format!("n{index}"))
}

/// The `polc` executable that runs the proxies: `POLC_PROXY_BIN`, else this one, else (for
/// test binaries under `target/*/deps`) the `polc` built next to them.
fn polc_executable() -> PathBuf {
    if let Some(p) = std::env::var_os("POLC_PROXY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("polc"));
    if exe.file_name().is_some_and(|n| n == "polc") {
        return exe;
    }
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("polc"))
        .filter(|p| p.exists())
        .unwrap_or(exe)
}

/// How many times the proxy of `dir` has read its configuration again (its status file).
fn proxy_reloads(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("status.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v["reloads"]
                .as_u64()
                .or_else(|| v["reloadError"].as_str().map(|_| u64::MAX))
        })
        .unwrap_or(0)
}

/// The pid of a running proxy of `dir`, if one runs.
fn running_proxy(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // The pid is ours only while its command line names this directory's configuration.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let config = dir.join("proxy.json");
    let wanted = config.as_os_str().as_encoded_bytes();
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == wanted)
        .then_some(pid)
}

/// Writes every node's proxy configuration for `model`; a running proxy reads it again by
/// itself. Starts the proxies that do not run yet and waits until they listen.
pub fn start_proxies(state: &State, model: &Model) -> Result<(), LabError> {
    let plan = &state.plan;
    let err = |what: String| {
        move |e: std::io::Error| LabError::Setup {
            what: what.clone(),
            detail: e.to_string(),
        }
    };
    let mut started = Vec::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        let dir = proxy_dir(&plan.lab, i);
        std::fs::create_dir_all(&dir).map_err(err(format!("creating {}", dir.display())))?;
        let mut config = crate::proxy::config::Config::of_node(model, &n.name);
        config.datapath =
            node_dir(&state.pins, &n.name).map(|pins| crate::proxy::config::Datapath {
                policies: state.policies.clone(),
                inventory: state.inventory.clone(),
                cilium_version: state.cilium_version.clone(),
                cluster_name: state.cluster_name.clone(),
                pins,
                policy_map_max: state.policy_map_max,
            });
        let path = dir.join("proxy.json");
        let reloads = proxy_reloads(&dir);
        config
            .write(&path)
            .map_err(err(format!("writing {}", path.display())))?;
        if running_proxy(&dir).is_some() {
            // It reads the file again by itself; wait until it has, so that what follows
            // (probes) meets the new rules.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while proxy_reloads(&dir) <= reloads && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        let _ = std::fs::remove_file(dir.join("status.json"));
        let stderr = std::fs::File::create(dir.join("proxy.err"))
            .map_err(err(format!("creating {}", dir.join("proxy.err").display())))?;
        let mut cmd = std::process::Command::new(polc_executable());
        cmd.arg("proxy")
            .arg("--config")
            .arg(&path)
            .arg("--netns")
            .arg(&n.router)
            .arg("--access-log")
            .arg(dir.join("access.log"))
            .arg("--status")
            .arg(dir.join("status.json"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr);
        // Its own process group: a terminal's Ctrl-C for `polc lab up` does not reach it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(err(format!("starting the proxy of node `{}`", n.name)))?;
        std::fs::write(dir.join("pid"), child.id().to_string())
            .map_err(err(format!("writing {}", dir.join("pid").display())))?;
        started.push((n.name.clone(), dir, child));
    }
    for (node, dir, mut child) in started {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if dir.join("status.json").exists() {
                // The child is left to run; a reaper is not needed once we exit.
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let why = std::fs::read_to_string(dir.join("proxy.err")).unwrap_or_default();
                return Err(LabError::Setup {
                    what: format!("starting the proxy of node `{node}`"),
                    detail: format!("it exited ({status}): {}", why.trim()),
                });
            }
            if std::time::Instant::now() > deadline {
                return Err(LabError::Setup {
                    what: format!("starting the proxy of node `{node}`"),
                    detail: "it did not start listening within 10 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// The status file of the proxy of the lab node whose datapath is pinned in `dir`, if `dir`
/// is a lab node's.
pub fn proxy_status_of(dir: &Path) -> Option<PathBuf> {
    let rel = dir.strip_prefix(PIN_ROOT).ok()?;
    let lab = rel.iter().next()?.to_str()?;
    let state = State::read(lab).ok().flatten()?;
    let index = state
        .plan
        .nodes
        .iter()
        .position(|n| node_dir(&state.pins, &n.name).as_deref() == Some(dir))?;
    Some(proxy_dir(lab, index).join("status.json"))
}

/// The DNS answers node `index`'s proxy has learnt (from its status file).
pub fn learnt_answers(name: &str, index: usize) -> Vec<(String, IpAddr)> {
    let path = proxy_dir(name, index).join("status.json");
    let Some(status) = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return Vec::new();
    };
    status["fqdn"]["learnt"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["address"].as_str()?.parse().ok()?,
            ))
        })
        .collect()
}

/// Stops the proxies of lab `name` and removes their files; returns how many ran.
pub fn stop_proxies(name: &str) -> usize {
    let root = Path::new(STATE_DIR).join(format!("{name}.d"));
    let Ok(entries) = std::fs::read_dir(&root) else {
        return 0;
    };
    let mut stopped = 0;
    for e in entries.filter_map(Result::ok) {
        let dir = e.path();
        if let Some(pid) = running_proxy(&dir) {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists()
                && running_proxy(&dir).is_some()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            stopped += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    stopped
}
