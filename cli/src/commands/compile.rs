//! `polc compile`: every endpoint's policy map (binary in Cilium's layout, and JSON), each
//! node's ipcache, the identity table, the L7 proxy (NPDS) rules per endpoint, and a summary
//! that warns when an endpoint needs more entries than its policy map holds.
//!
//! Output layout under `-o DIR`:
//!
//! ```text
//! identities.json
//! summary.json
//! nodes/<node>/ipcache.bin                    key || value records, Cilium's layout
//! nodes/<node>/ipcache.json
//! nodes/<node>/endpoints/<id>/endpoint.json   the endpoint, its identity and addresses
//! nodes/<node>/endpoints/<id>/<map name>.bin  key || value records (cilium_policy_v2_<id>)
//! nodes/<node>/endpoints/<id>/policy.json     the same entries, readable
//! nodes/<node>/endpoints/<id>/npds.json       the proxy rules (cilium.NetworkPolicy)
//! nodes/<node>/proxy.json                     the node's `polc proxy` configuration
//! ```

use super::cluster::{self, ClusterArgs};
use crate::proxy::config::Config as ProxyConfig;
use crate::render;
use crate::{EXIT_CLEAN, EXIT_USAGE, Io};
use anyhow::Context;
use polc_compiler::compile::Compilation;
use polc_compiler::diag::{Code, Diagnostic};
use polc_compiler::mapstate::ProxyPorts;
use polc_compiler::model::EndpointRef;
use polc_ebpf::{IpcacheLayout, Layout, layout, npds, records};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Arguments of `polc compile`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 compiled (overflow warnings included), 2 bad input.")]
pub struct CompileArgs {
    /// Policies, inventory and agent settings.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Compile only the endpoints of this node.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Output directory (created if missing).
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    pub out: PathBuf,
    /// Capacity of each endpoint's policy map (`bpf-policy-map-max`; the agent accepts
    /// 256-65536, smaller values are allowed here for what-if checks).
    #[arg(long, default_value_t = 16384, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub policy_map_max: u64,
}

/// Runs `polc compile`.
pub fn run(args: &CompileArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    let Some(loaded) = cluster::load(&args.cluster, &[], io.stdin, io.stderr) else {
        return Ok(EXIT_USAGE);
    };
    let model = &loaded.model;
    if let Some(node) = &args.node
        && model.inventory.node(node).is_none()
    {
        let _ = writeln!(
            io.stderr,
            "polc: error[{}]: no node `{node}` in the inventory",
            Code::UnknownEndpoint.as_str()
        );
        return Ok(EXIT_USAGE);
    }
    let layout = Layout::for_version(args.cluster.cilium_version);
    let ip_layout = IpcacheLayout::for_version(args.cluster.cilium_version);
    let max_entries = usize::try_from(args.policy_map_max).unwrap_or(usize::MAX);
    let compilation = Compilation::new(model, args.node.as_deref(), ProxyPorts::default());
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    write_json(
        &args.out.join("identities.json"),
        &records::identities_json(&model.identities),
    )?;

    let mut nodes: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &compilation.endpoints {
        *nodes.entry(e.node.as_str()).or_default() += 1;
    }
    let mut proxies: BTreeMap<&str, ProxyConfig> = BTreeMap::new();
    for node in nodes.keys() {
        let dir = args.out.join("nodes").join(node);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let cache = model.identities.ipcache(&model.inventory, node);
        let bin = records::ipcache_records(&cache, ip_layout, 0)
            .map_err(|e| anyhow::anyhow!("ipcache of node {node}: {e}"))?;
        write(&dir.join("ipcache.bin"), &bin)?;
        let doc = records::ipcache_json(&cache, ip_layout, 0)
            .map_err(|e| anyhow::anyhow!("ipcache of node {node}: {e}"))?;
        write_json(&dir.join("ipcache.json"), &doc)?;
        proxies.insert(
            node,
            ProxyConfig::new(model, node, &compilation.proxy_ports, &cache),
        );
    }

    let mut per_endpoint = Vec::new();
    let mut warnings = Vec::new();
    let mut total = 0usize;
    for e in &compilation.endpoints {
        let policy = compilation.materialize(model, e);
        let entries = policy.map.len();
        total += entries;
        let dir = args
            .out
            .join("nodes")
            .join(&e.node)
            .join("endpoints")
            .join(e.endpoint_id.to_string());
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let name = layout::policy_map_name(e.endpoint_id);
        write(
            &dir.join(format!("{name}.bin")),
            &records::policy_records(&policy.map, layout),
        )?;
        write_json(
            &dir.join("policy.json"),
            &records::policy_map_document(e.endpoint_id, &policy, layout, max_entries),
        )?;
        let rules = npds::network_policy(model, e.endpoint, e.endpoint_id, &policy);
        write_json(&dir.join("npds.json"), &rules)?;
        if let Some(proxy) = proxies.get_mut(e.node.as_str()) {
            proxy.add_endpoint(model, e.endpoint, e.endpoint_id, rules, &policy);
        }
        let (what, ips, loc) = match e.endpoint {
            EndpointRef::Pod(i) => {
                let p = &model.inventory.pods[i];
                (
                    p.key(),
                    p.ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    p.loc,
                )
            }
            EndpointRef::Host(n) => {
                let node = &model.inventory.nodes[n];
                (
                    format!("host/{}", node.name),
                    node.ips.iter().map(ToString::to_string).collect(),
                    node.loc,
                )
            }
        };
        write_json(
            &dir.join("endpoint.json"),
            &json!({
                "endpoint": what,
                "endpoint_id": e.endpoint_id,
                "node": e.node,
                "identity": e.identity,
                "addresses": ips,
                "policy_map": name,
                "entries": entries,
                "ingress_enforced": policy.enforced.0,
                "egress_enforced": policy.enforced.1,
            }),
        )?;
        if entries > max_entries {
            warnings.push(
                Diagnostic::new(
                    Code::PolicyMapOverflow,
                    loc,
                    format!(
                        "{what} needs {entries} policy-map entries; its map holds {}",
                        max_entries
                    ),
                )
                .label("policy map overflows")
                .help(
                    "the agent fails to regenerate this endpoint and keeps its previous policy; \
                     narrow the rules that select many identities on many ports (entities \
                     `cluster`/`world`, wide selectors), or raise `bpf-policy-map-max`",
                ),
            );
        }
        per_endpoint.push(json!({
            "endpoint": what,
            "node": e.node,
            "endpoint_id": e.endpoint_id,
            "identity": e.identity,
            "entries": entries,
            "overflow": entries > max_entries,
        }));
    }
    for (node, proxy) in &proxies {
        let path = args.out.join("nodes").join(node).join("proxy.json");
        proxy
            .write(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let max = per_endpoint
        .iter()
        .filter_map(|v| v["entries"].as_u64())
        .max()
        .unwrap_or(0);
    write_json(
        &args.out.join("summary.json"),
        &json!({
            "cilium_version": args.cluster.cilium_version.to_string(),
            "policy_map_layout": layout.name(),
            "policy_map_max": max_entries,
            "nodes": nodes.len(),
            "endpoints": per_endpoint.len(),
            "identities": model.identities.len(),
            "entries": total,
            "max_entries": max,
            "overflowing_endpoints": warnings.len(),
            "per_endpoint": per_endpoint,
        }),
    )?;
    if !warnings.is_empty() {
        let text = render::human_diagnostics(&loaded.sources, &warnings, false);
        io.stderr.write_all(text.as_bytes())?;
    }
    writeln!(
        io.stdout,
        "compiled {} on {} ({} identities, {} policy-map entries, at most {} per endpoint, {} \
         over the {}-entry map) into {}",
        count(compilation.endpoints.len(), "endpoint"),
        count(nodes.len(), "node"),
        model.identities.len(),
        total,
        max,
        warnings.len(),
        max_entries,
        args.out.display()
    )?;
    Ok(EXIT_CLEAN)
}

fn count(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn write_json(path: &Path, v: &serde_json::Value) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(v)?;
    text.push('\n');
    write(path, text.as_bytes())
}
