//! `polc status`: what polc's datapath has installed on this machine (per node: endpoints,
//! their policy-map entries and interfaces, the ipcache, tracked connections) and what it
//! did (packets by pass/drop reason, packets and bytes per policy entry), and what the node's
//! L7 proxy did (requests per rule, DNS queries, learnt `toFQDNs` addresses). Entries whose
//! proxy port no polc proxy serves (Kafka, generic L7, Envoy listeners, or no proxy running)
//! fail closed, and the status says so.

use super::load::{node_dir, report_error};
use crate::{EXIT_CLEAN, EXIT_USAGE, Io};
use polc_compiler::diag::Code;
use polc_ebpf::abi::StatsKey;
use polc_ebpf::loader::{self, LoadError, Status};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Output formats of `polc status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables for people.
    Text,
    /// One JSON document.
    Json,
}

/// Arguments of `polc status`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 shown (also when nothing is loaded), 2 failure.")]
pub struct StatusArgs {
    /// Only this node's datapath.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Where the datapath is pinned.
    #[arg(long, default_value = loader::DEFAULT_ROOT, value_name = "DIR")]
    pub bpffs_root: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

fn proto_name(p: u8) -> String {
    match p {
        0 => "any".into(),
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => format!("proto-{n}"),
    }
}

/// A policy entry as `ingress identity 1000 tcp/8080/12`.
fn entry_name(k: &StatsKey) -> String {
    let dir = if k.egress == 1 { "egress" } else { "ingress" };
    let id = if k.sec_label == 0 {
        "any identity".to_string()
    } else {
        format!("identity {}", k.sec_label)
    };
    let l4 = match k.prefix_len {
        0 => "any".to_string(),
        8 => proto_name(k.protocol),
        24 => format!("{}/{}", proto_name(k.protocol), k.port()),
        n => format!("{}/{}/{}", proto_name(k.protocol), k.port(), n - 8),
    };
    format!("{dir} {id} {l4}")
}

fn node_of(s: &Status) -> String {
    s.dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The status file of the proxy of the node pinned at `s.dir`, and whether it still runs.
fn proxy_of(s: &Status) -> Option<(serde_json::Value, bool)> {
    let path = crate::lab::proxy_status_of(&s.dir)
        .or_else(|| crate::proxy::run::default_status(&node_of(s)))?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let running = v["pid"]
        .as_u64()
        .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
    Some((v, running))
}

/// What a proxy port is, with the default ports (those `polc compile` and `polc lab` use).
fn port_role(port: u16) -> (&'static str, bool) {
    let p = polc_compiler::mapstate::ProxyPorts::default();
    match port {
        x if x == p.http_ingress => ("HTTP ingress", true),
        x if x == p.http_egress => ("HTTP egress", true),
        x if x == p.dns_egress => ("DNS", true),
        x if x == p.kafka.0 || x == p.kafka.1 => ("Kafka", false),
        x if x == p.generic.0 || x == p.generic.1 => ("generic L7", false),
        x if x >= p.listener_base => ("Envoy listener", false),
        _ => ("unknown", false),
    }
}

fn json_of(s: &Status) -> serde_json::Value {
    let proxy = proxy_of(s);
    let mut ports: BTreeMap<u16, usize> = BTreeMap::new();
    for e in &s.endpoints {
        for (p, n) in &e.proxy_ports {
            *ports.entry(*p).or_default() += n;
        }
    }
    json!({
        "node": node_of(s),
        "dir": s.dir.display().to_string(),
        "policy_map_max": s.meta.policy_map_max,
        "ipcache_entries": s.ipcache_entries,
        "connections": s.connections,
        "links": s.links,
        "endpoints": s.endpoints.iter().map(|e| json!({
            "endpoint_id": e.endpoint_id,
            "endpoint": e.name,
            "identity": e.identity,
            "ingress_enforced": e.ingress_enforced,
            "egress_enforced": e.egress_enforced,
            "entries": e.entries,
            "proxy_redirect_entries": e.redirect_entries,
            "interfaces": e.interfaces.iter().map(|(i, n)| json!({"ifindex": i, "name": n})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "counters": s.counters.iter().map(|(r, c)| json!({
            "reason": r.name(), "drop": r.is_drop(), "packets": c.packets, "bytes": c.bytes,
        })).collect::<Vec<_>>(),
        "policy_entries": s.entries.iter().map(|(k, c)| json!({
            "endpoint_id": k.endpoint_id,
            "entry": entry_name(k),
            "packets": c.packets,
            "bytes": c.bytes,
        })).collect::<Vec<_>>(),
        "proxy_ports": ports.iter().map(|(p, n)| {
            let (role, served) = port_role(*p);
            json!({
                "port": p,
                "role": role,
                "entries": n,
                "enforced": served && proxy.as_ref().is_some_and(|(_, running)| *running),
            })
        }).collect::<Vec<_>>(),
        "proxy": proxy.map(|(v, running)| json!({"running": running, "status": v})),
    })
}

fn write_text(s: &Status, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "node `{}` ({}): {} endpoints, {} ipcache entries, {} TCX links, {} tracked connections, \
         policy maps of {} entries",
        node_of(s),
        s.dir.display(),
        s.endpoints.len(),
        s.ipcache_entries,
        s.links,
        s.connections,
        s.meta.policy_map_max
    )?;
    let width = s
        .endpoints
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(8)
        .max(8);
    writeln!(
        out,
        "  {:<width$}  {:>5}  {:>10}  {:<8}  {:<8}  {:>7}  INTERFACES",
        "ENDPOINT", "ID", "IDENTITY", "INGRESS", "EGRESS", "ENTRIES"
    )?;
    let enforced = |b: bool| if b { "enforced" } else { "open" };
    for e in &s.endpoints {
        let ifaces: Vec<String> = e
            .interfaces
            .iter()
            .map(|(i, n)| match n {
                Some(n) => format!("{n} ({i})"),
                None => format!("gone ({i})"),
            })
            .collect();
        writeln!(
            out,
            "  {:<width$}  {:>5}  {:>10}  {:<8}  {:<8}  {:>7}  {}",
            e.name,
            e.endpoint_id,
            e.identity,
            enforced(e.ingress_enforced),
            enforced(e.egress_enforced),
            e.entries,
            if ifaces.is_empty() {
                "-".to_string()
            } else {
                ifaces.join(", ")
            }
        )?;
    }
    writeln!(out, "  packets by reason:")?;
    for (r, c) in &s.counters {
        if c.packets == 0 && !r.is_drop() {
            continue;
        }
        writeln!(
            out,
            "    {:<5} {:<38} {:>10} packets {:>12} bytes",
            if r.is_drop() { "drop" } else { "pass" },
            r.name(),
            c.packets,
            c.bytes
        )?;
    }
    if !s.entries.is_empty() {
        writeln!(out, "  policy entries with traffic:")?;
        for (k, c) in &s.entries {
            writeln!(
                out,
                "    endpoint {:>5} {:<44} {:>10} packets {:>12} bytes",
                k.endpoint_id,
                entry_name(k),
                c.packets,
                c.bytes
            )?;
        }
    }
    write_proxy(s, out)
}

fn write_proxy(s: &Status, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut ports: BTreeMap<u16, usize> = BTreeMap::new();
    for e in &s.endpoints {
        for (p, n) in &e.proxy_ports {
            *ports.entry(*p).or_default() += n;
        }
    }
    let proxy = proxy_of(s);
    let running = proxy.as_ref().is_some_and(|(_, r)| *r);
    if !ports.is_empty() {
        writeln!(out, "  proxy ports in the policy maps:")?;
        for (p, n) in &ports {
            let (role, served) = port_role(*p);
            let state = match (served, running) {
                (true, true) => "enforced by polc's proxy",
                (true, false) => "no polc proxy runs: its traffic is dropped (fail closed)",
                (false, _) => {
                    "polc's proxy does not serve it: its traffic is dropped (fail closed)"
                }
            };
            writeln!(out, "    {p:>5} {role:<15} {n:>6} entries  {state}")?;
        }
    }
    let Some((v, running)) = proxy else {
        return Ok(());
    };
    let pid = v["pid"].as_u64().unwrap_or(0);
    let http = &v["http"];
    let dns = &v["dns"];
    let n = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
    writeln!(
        out,
        "  L7 proxy (pid {pid}, {}): HTTP {} forwarded, {} denied (403), {} unreachable; DNS {} \
         forwarded, {} refused, {} malformed, {} unanswered",
        if running { "running" } else { "not running" },
        n(&http["allowed"]),
        n(&http["denied"]),
        n(&http["unreachable"]),
        n(&dns["forwarded"]),
        n(&dns["refused"]),
        n(&dns["malformed"]),
        n(&dns["failed"]),
    )?;
    for r in http["rules"].as_array().into_iter().flatten() {
        let policies: Vec<&str> = r["policies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str())
            .collect();
        writeln!(
            out,
            "    rule {:<24} {:>8} allowed {:>8} denied  {}",
            r["rule"].as_str().unwrap_or(""),
            n(&r["allowed"]),
            n(&r["denied"]),
            policies.join("; ")
        )?;
    }
    for l in v["fqdn"]["learnt"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "    learnt {} -> {} (for {} s more)",
            l["name"].as_str().unwrap_or(""),
            l["address"].as_str().unwrap_or(""),
            n(&l["expiresInS"])
        )?;
    }
    if let Some(e) = v["fqdn"]["error"].as_str() {
        writeln!(out, "    learning failed: {e}")?;
    }
    if let Some(e) = v["reloadError"].as_str() {
        writeln!(out, "    the last configuration was not taken: {e}")?;
    }
    Ok(())
}

/// Runs `polc status`.
pub fn run(args: &StatusArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    let euid = polc_ebpf::sys::euid();
    if euid != 0 {
        return Ok(report_error(&LoadError::NotRoot(euid), io.stderr));
    }
    let dirs = match &args.node {
        Some(n) => {
            let Some(d) = node_dir(&args.bpffs_root, n) else {
                writeln!(
                    io.stderr,
                    "polc: error[{}]: `{n}` is not a node name",
                    Code::BadInterfaceMap.as_str()
                )?;
                return Ok(EXIT_USAGE);
            };
            vec![d]
        }
        None => loader::instances(&args.bpffs_root),
    };
    let mut statuses = Vec::new();
    for d in dirs.iter().filter(|d| d.join("polc_meta").exists()) {
        // A lab node's interfaces live in its router namespace: read (and name) them there.
        let read = match crate::lab::router_of(d) {
            Some(ns) => {
                polc_ebpf::sys::in_netns(&crate::lab::net::netns_path(&ns), || Status::read(d))
                    .unwrap_or_else(|_| Status::read(d))
            }
            None => Status::read(d),
        };
        match read {
            Ok(s) => statuses.push(s),
            Err(e) => return Ok(report_error(&e, io.stderr)),
        }
    }
    match args.format {
        Format::Json => {
            let doc = json!({ "nodes": statuses.iter().map(json_of).collect::<Vec<_>>() });
            writeln!(io.stdout, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
        Format::Text => {
            if statuses.is_empty() {
                writeln!(io.stdout, "no polc datapath is loaded")?;
            }
            for s in &statuses {
                write_text(s, io.stdout)?;
            }
        }
    }
    Ok(EXIT_CLEAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_named_by_their_key() {
        let k = StatsKey {
            endpoint_id: 1,
            pad: 0,
            prefix_len: 24,
            sec_label: 1000,
            egress: 0,
            protocol: 6,
            dport: 8080u16.to_be(),
        };
        assert_eq!(entry_name(&k), "ingress identity 1000 tcp/8080");
        let k = StatsKey {
            prefix_len: 20,
            ..k
        };
        assert_eq!(entry_name(&k), "ingress identity 1000 tcp/8080/12");
        let k = StatsKey {
            prefix_len: 0,
            sec_label: 0,
            egress: 1,
            ..k
        };
        assert_eq!(entry_name(&k), "egress any identity any");
    }
}
