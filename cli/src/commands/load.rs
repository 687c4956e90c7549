//! `polc load`: compiles the policies for one node and installs them in the kernel with
//! polc's eBPF datapath: the node's ipcache, one policy map per endpoint (Cilium's 1.19
//! layout), and TC classifiers on the interfaces `--interfaces` names. A second load of the
//! same input changes nothing; a load that fails changes nothing either.
//!
//! The interface map: `NAMESPACE/POD=IFNAME` names the node-side end of the pod's veth
//! (traffic it receives is the pod's egress); `host=IFNAME` names a device of the host
//! endpoint itself (traffic it receives is the host's ingress). Arguments that are files
//! hold one pair per line (`#` comments).

use super::cluster::{self, ClusterArgs};
use crate::{EXIT_CLEAN, EXIT_USAGE, Io};
use polc_compiler::compile::Compilation;
use polc_compiler::diag::Code;
use polc_compiler::mapstate::ProxyPorts;
use polc_compiler::model::{EndpointRef, Model};
use polc_ebpf::loader::{self, Attachment, Interface, LoadError, Loader, Options, Side};
use polc_ebpf::state::{EndpointState, NodeState};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Arguments of `polc load`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 installed (or nothing to change), 2 bad input or a \
                        load that failed (nothing changed)."
)]
pub struct LoadArgs {
    /// Policies, inventory and agent settings.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The node to install (its pods, host and ipcache).
    #[arg(long, value_name = "NAME")]
    pub node: String,
    /// Which interface serves which endpoint: `NAMESPACE/POD=IFNAME` pairs, `host=IFNAME`,
    /// or files of such lines.
    #[arg(long, required = true, num_args = 1.., value_name = "MAP")]
    pub interfaces: Vec<String>,
    /// A device that serves no endpoint but carries replies to the L7 proxy's upstream
    /// connections (the node's uplink, unless it is the host endpoint's `host=` device,
    /// which does this already); repeatable. The node also needs `ip rule add fwmark
    /// 0x200/0xf00 lookup 2004` and `ip route add local default dev lo table 2004` (and
    /// their `-6` twins) for `polc proxy` to receive what the datapath hands it.
    #[arg(long, value_name = "IFNAME")]
    pub uplink: Vec<String>,
    /// Capacity of each endpoint's policy map (fixed when a node is first loaded).
    #[arg(long, default_value_t = 16384, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub policy_map_max: u32,
    /// Where the datapath is pinned (one directory per node).
    #[arg(long, default_value = loader::DEFAULT_ROOT, value_name = "DIR")]
    pub bpffs_root: PathBuf,
}

/// The directory of a node under `root`. Node names are DNS names, never paths; bpffs
/// refuses dots in names, so they become `_` (which DNS names cannot hold).
pub(crate) fn node_dir(root: &Path, node: &str) -> Option<PathBuf> {
    let ok = !node.is_empty()
        && !node.starts_with('.')
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    ok.then(|| root.join(node.replace('.', "_")))
}

/// One `KEY=IFNAME` pair of the interface map.
fn parse_pair(text: &str) -> Option<(String, String)> {
    let (k, v) = text.split_once('=')?;
    let (k, v) = (k.trim(), v.trim());
    (!k.is_empty() && !v.is_empty() && !v.contains(char::is_whitespace))
        .then(|| (k.to_string(), v.to_string()))
}

/// The pairs of `--interfaces`: each argument is a pair or a file of pairs.
fn interface_pairs(args: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for a in args {
        if let Some(p) = parse_pair(a) {
            out.push(p);
            continue;
        }
        let text = std::fs::read_to_string(a).map_err(|e| {
            format!("`{a}` is neither a `NAMESPACE/POD=IFNAME` pair nor a readable file ({e})")
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            out.push(parse_pair(line).ok_or_else(|| {
                format!(
                    "{a}:{}: `{line}` is not a `NAMESPACE/POD=IFNAME` pair",
                    n + 1
                )
            })?);
        }
    }
    Ok(out)
}

/// Compiles the policies for `node`: the node's state (ipcache, one policy map per endpoint)
/// and the endpoint IDs by name (`namespace/pod`, `host/node`, and `host` for the host).
pub(crate) fn node_state(
    model: &Model,
    node: &str,
) -> anyhow::Result<(NodeState, BTreeMap<String, u16>)> {
    node_state_with(model, node, |_, _| {})
}

/// [`node_state`], handing every endpoint's compiled policy to `each` as well (what the
/// proxy's configuration is made of), so one compile serves both.
pub(crate) fn node_state_with(
    model: &Model,
    node: &str,
    mut each: impl FnMut(
        &polc_compiler::compile::CompiledEndpoint,
        &polc_compiler::mapstate::EndpointPolicy,
    ),
) -> anyhow::Result<(NodeState, BTreeMap<String, u16>)> {
    let compilation = Compilation::new(model, Some(node), ProxyPorts::default());
    let cache = model.identities.ipcache(&model.inventory, node);
    let mut state = NodeState::new(&cache).map_err(|e| anyhow::anyhow!("ipcache: {e}"))?;
    let mut ids: BTreeMap<String, u16> = BTreeMap::new();
    for e in &compilation.endpoints {
        let name = polc_compiler::incremental::endpoint_name(model, e.endpoint);
        let policy = compilation.materialize(model, e);
        each(e, &policy);
        state.insert_endpoint(
            e.endpoint_id,
            EndpointState::from_policy(&name, e.identity, &policy),
        );
        if matches!(e.endpoint, EndpointRef::Host(_)) {
            ids.insert("host".into(), e.endpoint_id);
        }
        ids.insert(name, e.endpoint_id);
    }
    Ok((state, ids))
}

/// Prints a datapath error in polc's style and returns the exit code.
pub(crate) fn report_error(e: &LoadError, stderr: &mut dyn Write) -> i32 {
    let code = match e {
        LoadError::NotRoot(_) => Code::LoadNeedsRoot,
        LoadError::NoBpffs { .. } => Code::NoBpffs,
        LoadError::MissingFeature { .. } => Code::MissingKernelFeature,
        LoadError::Verifier { .. } => Code::VerifierRejected,
        LoadError::Capacity { .. } => Code::PolicyMapFull,
        LoadError::Interface(_) => Code::BadInterfaceMap,
        LoadError::Incompatible { .. } | LoadError::Sync(_) | LoadError::Kernel { .. } => {
            Code::LoadFailed
        }
    };
    let _ = writeln!(stderr, "polc: error[{}]: {e}", code.as_str());
    match e {
        LoadError::Verifier { log, .. } => {
            let _ = writeln!(stderr, "  = the verifier's log:");
            for line in log.lines() {
                let _ = writeln!(stderr, "    {line}");
            }
            let _ = writeln!(stderr, "  = help: nothing was changed on this node");
        }
        LoadError::Capacity { .. } => {
            let _ = writeln!(
                stderr,
                "  = help: nothing was installed; narrow the rules that select many identities \
                 on many ports, or `polc unload` and load with a larger `--policy-map-max`"
            );
        }
        LoadError::NotRoot(_) => {
            let _ = writeln!(stderr, "  = help: run polc as root (sudo)");
        }
        LoadError::Sync(_) => {
            let _ = writeln!(
                stderr,
                "  = help: the node keeps what it had before this load"
            );
        }
        _ => {}
    }
    EXIT_USAGE
}

/// How endpoint `who` (`NAMESPACE/POD`, `host` or `host/NODE`) is attached through
/// `ifname`: a host endpoint on its own device, a pod on the node's end of its veth.
pub(crate) fn attachment(who: &str, endpoint_id: u16, ifname: &str) -> Attachment {
    Attachment {
        endpoint_id,
        interface: Interface::Name(ifname.to_string()),
        side: if who == "host" || who.starts_with("host/") {
            Side::Endpoint
        } else {
            Side::Node
        },
    }
}

/// A device that serves no endpoint but carries replies to the L7 proxy (`--uplink`).
pub(crate) fn uplink(ifname: &str) -> Attachment {
    Attachment {
        endpoint_id: 0,
        interface: Interface::Name(ifname.to_string()),
        side: Side::Uplink,
    }
}

/// `--interfaces` read: (who, interface name) pairs.
pub(crate) type InterfacePairs = Vec<(String, String)>;

/// The pin directory of `node` under `root` and the pairs of `--interfaces`, or `None` once
/// what is wrong with them is printed (`polc load`, `polc agent`).
pub(crate) fn node_and_interfaces(
    root: &Path,
    node: &str,
    interfaces: &[String],
    stderr: &mut dyn Write,
) -> std::io::Result<Option<(PathBuf, InterfacePairs)>> {
    let Some(dir) = node_dir(root, node) else {
        writeln!(
            stderr,
            "polc: error[{}]: `{node}` is not a node name",
            Code::BadInterfaceMap.as_str()
        )?;
        return Ok(None);
    };
    match interface_pairs(interfaces) {
        Ok(pairs) => Ok(Some((dir, pairs))),
        Err(e) => {
            writeln!(
                stderr,
                "polc: error[{}]: {e}",
                Code::BadInterfaceMap.as_str()
            )?;
            Ok(None)
        }
    }
}

/// Runs `polc load`.
pub fn run(args: &LoadArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    let euid = polc_ebpf::sys::euid();
    if euid != 0 {
        return Ok(report_error(&LoadError::NotRoot(euid), io.stderr));
    }
    let Some((dir, pairs)) =
        node_and_interfaces(&args.bpffs_root, &args.node, &args.interfaces, io.stderr)?
    else {
        return Ok(EXIT_USAGE);
    };
    let Some(loaded) = cluster::load(&args.cluster, &[], io.stdin, io.stderr) else {
        return Ok(EXIT_USAGE);
    };
    let model = &loaded.model;
    if model.inventory.node(&args.node).is_none() {
        writeln!(
            io.stderr,
            "polc: error[{}]: no node `{}` in the inventory",
            Code::UnknownEndpoint.as_str(),
            args.node
        )?;
        return Ok(EXIT_USAGE);
    }
    let (state, ids) = node_state(model, &args.node)?;
    let mut attachments = Vec::new();
    for (who, ifname) in pairs {
        let Some(id) = ids.get(&who) else {
            writeln!(
                io.stderr,
                "polc: error[{}]: `{who}` is not an endpoint on node `{}`",
                Code::BadInterfaceMap.as_str(),
                args.node
            )?;
            return Ok(EXIT_USAGE);
        };
        attachments.push(attachment(&who, *id, &ifname));
    }
    attachments.extend(args.uplink.iter().map(|i| uplink(i)));
    let options = Options {
        policy_map_max: args.policy_map_max,
        ..Options::default()
    };
    // Capacity first: a load that cannot fit changes nothing, not even on a fresh node.
    let capacity = loader::pinned_capacity(&dir).unwrap_or(args.policy_map_max);
    if let Err(e) = loader::check_capacity(&state, capacity) {
        return Ok(report_error(&e, io.stderr));
    }
    let result = Loader::open(&dir, &options).and_then(|mut l| l.install(&state, &attachments));
    let report = match result {
        Ok(r) => r,
        Err(e) => return Ok(report_error(&e, io.stderr)),
    };
    let c = &report.changes;
    if report.total() == 0 {
        writeln!(
            io.stdout,
            "node `{}` is up to date: {} endpoints, {} policy-map entries, {} ipcache entries, \
             {} interfaces (0 changes)",
            args.node,
            state.endpoints.len(),
            state.policy_entries(),
            state.ipcache.len(),
            attachments.len()
        )?;
    } else {
        writeln!(
            io.stdout,
            "loaded node `{}` into {}: {} endpoints, {} policy-map entries, {} ipcache entries, \
             {} interfaces",
            args.node,
            dir.display(),
            state.endpoints.len(),
            state.policy_entries(),
            state.ipcache.len(),
            attachments.len()
        )?;
        writeln!(
            io.stdout,
            "changes: {c}, links +{} -{}{}",
            report.links_attached,
            report.links_detached,
            if report.programs_replaced {
                ", programs replaced"
            } else {
                ""
            }
        )?;
    }
    Ok(EXIT_CLEAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("ifaces");
        std::fs::write(&f, "# pods\nshop/web=lxc1\n\n  shop/db = lxc2 # db\n").expect("write");
        let got = interface_pairs(&["host=eth0".into(), f.display().to_string()]).expect("ok");
        assert_eq!(
            got,
            vec![
                ("host".to_string(), "eth0".to_string()),
                ("shop/web".into(), "lxc1".into()),
                ("shop/db".into(), "lxc2".into()),
            ]
        );
        std::fs::write(&f, "shop/web lxc1\n").expect("write");
        let err = interface_pairs(&[f.display().to_string()]).expect_err("bad line");
        assert!(err.contains(":1:"), "{err}");
        assert!(interface_pairs(&["/nonexistent/x".into()]).is_err());
    }

    #[test]
    fn node_dirs_are_single_components() {
        let root = Path::new("/sys/fs/bpf/polc");
        assert_eq!(node_dir(root, "n1"), Some(root.join("n1")));
        assert_eq!(node_dir(root, ".."), None);
        assert_eq!(node_dir(root, "a/b"), None);
        assert_eq!(node_dir(root, ""), None);
        assert_eq!(
            node_dir(root, "ip-10-0-0-1.ec2.internal"),
            Some(root.join("ip-10-0-0-1_ec2_internal"))
        );
    }
}
