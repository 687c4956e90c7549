//! `polc test PATH...`: policy tests (`*.polt`), each expectation checked against every flow
//! it describes.
//!
//! Concrete mode (an inventory from an `inventory` directive or `--inventory`): the flows are
//! those between the inventory's pods, hosts and representative outside addresses, on
//! representative ports. Representatives are exact, not samples: two ports between the same
//! rule boundaries (every port range's ends, named ports' numbers) get the same verdict, and
//! so do two outside addresses in the same class of policy prefixes. Each flow is judged by
//! the reference evaluator; the first flow that contradicts an expectation is printed with the
//! rules that decided it. Symbolic mode (no inventory): the verifier checks each expectation
//! for every pod that could exist (`commands::symbolic`); an expectation it cannot decide is
//! reported as unknown, never as holding.

use super::cluster::{self, ClusterArgs, Loaded};
use super::symbolic;
use crate::{EXIT_CLEAN, EXIT_FINDINGS, EXIT_UNKNOWN, EXIT_USAGE, Io};
use polc_compiler::CiliumVersion;
use polc_compiler::connectivity;
use polc_compiler::eval::{self, Flow, Peer, Verdict};
use polc_compiler::ir::{PortSpec, Ports, Proto};
use polc_compiler::model::Model;
use polc_grammar::polt::{self, Endpoint, Expectation, PoltFile};
use polc_verifier::Limits;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Arguments of `polc test`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 every expectation holds, 1 one fails, 2 bad input, 3 one is \
    unknown (solver timeout) and none fails."
)]
pub struct TestArgs {
    /// `.polt` files, or directories searched for them.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Policies for files without a `policies` directive.
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub policies: Vec<PathBuf>,
    /// Inventory for files without an `inventory` directive.
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub inventory: Vec<PathBuf>,
    /// The Cilium release whose semantics apply: 1.17, 1.18 or 1.19.
    #[arg(long, default_value = "1.19", value_name = "VERSION")]
    pub cilium_version: CiliumVersion,
    /// Check the tests against a live cluster's policies and inventory (besides any given).
    #[command(flatten)]
    pub live: crate::live::LiveArgs,
    /// The longest one solver query may take in symbolic mode, in seconds (an expectation
    /// that runs out of time is reported as unknown).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub timeout: f64,
    /// Write the SMT-LIB text of every solver query into this directory.
    #[arg(long, value_name = "DIR")]
    pub emit_smt: Option<PathBuf>,
}

fn polt_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = walkdir::WalkDir::new(p)
                .sort_by_file_name()
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file())
                .map(|e| e.into_path())
                .filter(|p| p.extension().is_some_and(|x| x == "polt"))
                .collect();
            out.append(&mut found);
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// Runs `polc test`.
pub fn run(args: &TestArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    let files = polt_files(&args.paths);
    if files.is_empty() {
        writeln!(
            io.stderr,
            "polc: error: no `.polt` files under the paths given"
        )?;
        return Ok(EXIT_USAGE);
    }
    let Some(limits) = symbolic::limits(args.timeout) else {
        writeln!(
            io.stderr,
            "polc: error: --timeout must be a positive number of seconds"
        )?;
        return Ok(EXIT_USAGE);
    };
    symbolic::start_smt(args.emit_smt.as_deref());
    let (mut passed, mut failed, mut unknown) = (0usize, 0usize, 0usize);
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                writeln!(
                    io.stderr,
                    "polc: error: cannot read {}: {e}",
                    file.display()
                )?;
                return Ok(EXIT_USAGE);
            }
        };
        let parsed = match polt::parse_polt(&text) {
            Ok(p) => p,
            Err(e) => {
                let (line, col) = line_col(&text, e.span.0);
                writeln!(
                    io.stderr,
                    "polc: error: {}:{line}:{col}: {}\n  | {}",
                    file.display(),
                    e.message,
                    text.lines().nth(line - 1).unwrap_or_default()
                )?;
                return Ok(EXIT_USAGE);
            }
        };
        let dir = file.parent().unwrap_or(Path::new("."));
        let rel = |v: &[(String, polt::Span)]| -> Vec<PathBuf> {
            v.iter().map(|(p, _)| dir.join(p)).collect()
        };
        let policies = if parsed.policies.is_empty() {
            args.policies.clone()
        } else {
            rel(&parsed.policies)
        };
        let inventory = if parsed.inventory.is_empty() {
            args.inventory.clone()
        } else {
            rel(&parsed.inventory)
        };
        if policies.is_empty() && !args.live.cluster {
            writeln!(
                io.stderr,
                "polc: error: {}: no policies: add `policies \"PATH\"` or pass --policies",
                file.display()
            )?;
            return Ok(EXIT_USAGE);
        }
        let symbolic = inventory.is_empty() && !args.live.cluster;
        let cargs = ClusterArgs {
            policies,
            inventory,
            cilium_version: args.cilium_version,
            cluster_name: "default".into(),
            max_file_size: 1024 * 1024 * 1024,
            dns_answers: Vec::new(),
            live: args.live.clone(),
        };
        let Some(loaded) = cluster::load(&cargs, &[], io.stdin, io.stderr) else {
            return Ok(EXIT_USAGE);
        };
        let (p, f, u) = if symbolic {
            check_file_symbolic(&loaded, file, &text, &parsed, limits, io)?
        } else {
            let (p, f) = check_file(&loaded, file, &text, &parsed, io)?;
            (p, f, 0)
        };
        passed += p;
        failed += f;
        unknown += u;
    }
    if let Err(e) = symbolic::write_smt(args.emit_smt.as_deref()) {
        writeln!(io.stderr, "polc: error: {e}")?;
        return Ok(EXIT_USAGE);
    }
    if unknown > 0 {
        writeln!(
            io.stdout,
            "{} expectations, {passed} hold, {failed} fail, {unknown} unknown",
            passed + failed + unknown
        )?;
    } else {
        writeln!(
            io.stdout,
            "{} expectations, {passed} hold, {failed} fail",
            passed + failed
        )?;
    }
    Ok(if failed > 0 {
        EXIT_FINDINGS
    } else if unknown > 0 {
        EXIT_UNKNOWN
    } else {
        EXIT_CLEAN
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// Checks a file's expectations with the verifier; returns (hold, fail, unknown).
fn check_file_symbolic(
    loaded: &Loaded,
    file: &Path,
    text: &str,
    parsed: &PoltFile,
    limits: Limits,
    io: &mut Io<'_>,
) -> anyhow::Result<(usize, usize, usize)> {
    let (mut passed, mut failed, mut unknown) = (0, 0, 0);
    for e in &parsed.expectations {
        let (line, _) = line_col(text, e.span.0);
        let source = text[e.span.0..e.span.1].trim();
        let at = format!("{}:{line} {source}", file.display());
        match symbolic::check(loaded, e, limits) {
            symbolic::Result::Holds => {
                passed += 1;
                writeln!(io.stdout, "ok   {at}")?;
            }
            symbolic::Result::Fails(msg) => {
                failed += 1;
                writeln!(io.stdout, "FAIL {at}\n{msg}")?;
            }
            symbolic::Result::Error(msg) => {
                failed += 1;
                writeln!(io.stdout, "FAIL {at}\n  {msg}")?;
            }
            symbolic::Result::Unknown(msg) => {
                unknown += 1;
                writeln!(io.stdout, "UNKNOWN {at}\n{msg}")?;
            }
        }
    }
    Ok((passed, failed, unknown))
}

fn check_file(
    loaded: &Loaded,
    file: &Path,
    text: &str,
    parsed: &PoltFile,
    io: &mut Io<'_>,
) -> anyhow::Result<(usize, usize)> {
    let model = &loaded.model;
    let (mut passed, mut failed) = (0, 0);
    for e in &parsed.expectations {
        let (line, _) = line_col(text, e.span.0);
        let source = text[e.span.0..e.span.1].trim();
        match counterexample(model, e) {
            Ok(None) => {
                passed += 1;
                writeln!(io.stdout, "ok   {}:{line} {source}", file.display())?;
            }
            Ok(Some(msg)) | Err(msg) => {
                failed += 1;
                writeln!(io.stdout, "FAIL {}:{line} {source}\n{msg}", file.display())?;
            }
        }
    }
    let _ = loaded;
    Ok((passed, failed))
}

/// The first flow the expectation describes that gets the other verdict, as text; `Err` when
/// the expectation describes no flow at all.
fn counterexample(model: &Model, e: &Expectation) -> Result<Option<String>, String> {
    let want = match e.verdict {
        polt::Verdict::Allow => Verdict::Allow,
        polt::Verdict::Deny => Verdict::Deny,
    };
    let sources = ends(model, &e.from);
    let dests = ends(model, &e.to);
    let ports = port_points(model, &e.ports);
    let request = e.l7.as_ref().map(symbolic::request);
    let mut flows = 0usize;
    for src in &sources {
        for dst in &dests {
            for (proto, port) in &ports {
                for (s, d) in resolve_pair(model, src, dst) {
                    if s == d || !family_fits(*proto, s, d) {
                        continue;
                    }
                    flows += 1;
                    let flow = Flow {
                        src: s,
                        dst: d,
                        proto: *proto,
                        port: *port,
                        request: request.clone(),
                    };
                    let out = eval::decide(model, &flow);
                    if out.verdict != want {
                        return Ok(Some(describe(model, &flow, &out)));
                    }
                }
            }
        }
    }
    if flows == 0 {
        return Err(
            "  the expectation describes no flow: no endpoint of the inventory matches \
                    one of its ends"
                .into(),
        );
    }
    Ok(None)
}

/// An end before the other end is known: `host` and `remote-node` depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Peer(Peer),
    LocalHost,
    RemoteNode,
}

fn ends(model: &Model, ep: &Endpoint) -> Vec<End> {
    let inv = &model.inventory;
    let pods = |ns: Option<&str>, sel: &polc_grammar::Selector| -> Vec<End> {
        inv.pods
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.host_network && ns.is_none_or(|n| p.namespace == n))
            .filter(|(i, _)| {
                let labels = &model.pod_labels[*i];
                sel.matches(|k| labels.lookup(k))
            })
            .map(|(i, _)| End::Peer(Peer::Pod(i)))
            .collect()
    };
    match ep {
        Endpoint::Pods {
            namespace,
            selector,
        } => pods(namespace.as_deref(), selector),
        Endpoint::Pod { namespace, name } => inv
            .pods
            .iter()
            .position(|p| p.namespace == *namespace && p.name == *name)
            .map(|i| {
                if inv.pods[i].host_network {
                    inv.nodes
                        .iter()
                        .position(|n| n.name == inv.pods[i].node)
                        .map_or(End::LocalHost, |n| End::Peer(Peer::Host(n)))
                } else {
                    End::Peer(Peer::Pod(i))
                }
            })
            .into_iter()
            .collect(),
        Endpoint::Host(None) => vec![End::LocalHost],
        Endpoint::Host(Some(node)) => inv
            .nodes
            .iter()
            .position(|n| n.name == *node)
            .map(|n| End::Peer(Peer::Host(n)))
            .into_iter()
            .collect(),
        Endpoint::RemoteNode => vec![End::RemoteNode],
        Endpoint::World => outside(model, None),
        Endpoint::Ip(ip) => vec![End::Peer(eval::locate(model, *ip))],
        Endpoint::Cidr(c) => match c.parse::<ipnet::IpNet>() {
            Ok(net) => outside(model, Some(net)),
            Err(_) => Vec::new(),
        },
        Endpoint::Entity(name) => match name.as_str() {
            "world" => outside(model, None),
            "host" => vec![End::LocalHost],
            "remote-node" => vec![End::RemoteNode],
            "cluster" => {
                let mut v = pods(None, &polc_grammar::Selector::default());
                v.extend((0..inv.nodes.len()).map(|n| End::Peer(Peer::Host(n))));
                v
            }
            "all" => {
                let mut v = pods(None, &polc_grammar::Selector::default());
                v.extend((0..inv.nodes.len()).map(|n| End::Peer(Peer::Host(n))));
                v.extend(outside(model, None));
                v
            }
            "kube-apiserver" => inv
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.apiserver)
                .map(|(i, _)| End::Peer(Peer::Host(i)))
                .collect(),
            _ => Vec::new(),
        },
    }
}

fn outside(model: &Model, within: Option<ipnet::IpNet>) -> Vec<End> {
    connectivity::outside_addresses(&[model], within)
        .into_iter()
        .map(|ip| End::Peer(Peer::External(ip)))
        .collect()
}

/// Concrete (source, destination) pairs: `host` is the other end's own node, `remote-node`
/// every other node.
fn resolve_pair(model: &Model, a: &End, b: &End) -> Vec<(Peer, Peer)> {
    let node_of = |p: &End| match p {
        End::Peer(Peer::Pod(i)) => model
            .inventory
            .nodes
            .iter()
            .position(|n| n.name == model.inventory.pods[*i].node),
        End::Peer(Peer::Host(n)) => Some(*n),
        _ => None,
    };
    let expand = |this: &End, other: &End| -> Vec<Peer> {
        match this {
            End::Peer(p) => vec![*p],
            End::LocalHost => match node_of(other) {
                Some(n) => vec![Peer::Host(n)],
                None => (0..model.inventory.nodes.len()).map(Peer::Host).collect(),
            },
            End::RemoteNode => (0..model.inventory.nodes.len())
                .filter(|n| node_of(other) != Some(*n))
                .map(Peer::Host)
                .collect(),
        }
    };
    let mut out = Vec::new();
    for s in expand(a, b) {
        for d in expand(b, a) {
            out.push((s, d));
        }
    }
    out
}

pub(crate) fn family_fits(proto: Proto, s: Peer, d: Peer) -> bool {
    let v6 = |p: Peer| match p {
        Peer::External(ip) => Some(ip.is_ipv6()),
        _ => None,
    };
    match proto {
        Proto::Icmp => v6(s) != Some(true) && v6(d) != Some(true),
        Proto::Icmpv6 => v6(s) != Some(false) && v6(d) != Some(false),
        _ => v6(s).is_none() || v6(d).is_none() || v6(s) == v6(d),
    }
}

/// Representative (protocol, port) points: inside the asked range, every boundary a rule
/// draws (range ends and the port after them, named ports' numbers), and the range's ends.
fn port_points(model: &Model, ports: &polt::Ports) -> Vec<(Proto, u16)> {
    port_points_of(&[model], ports)
}

/// [`port_points`] over the rules of several models (a diff's old and new policies).
pub(crate) fn port_points_of(models: &[&Model], ports: &polt::Ports) -> Vec<(Proto, u16)> {
    let protos: Vec<(Proto, u16, u16)> = match ports {
        polt::Ports::Any => vec![
            (Proto::Tcp, 1, 65535),
            (Proto::Udp, 1, 65535),
            (Proto::Sctp, 1, 65535),
            (Proto::Icmp, 0, 255),
            (Proto::Icmpv6, 0, 255),
        ],
        polt::Ports::Proto(p, range) => {
            let proto = match p {
                polt::Proto::Tcp => Proto::Tcp,
                polt::Proto::Udp => Proto::Udp,
                polt::Proto::Sctp => Proto::Sctp,
                polt::Proto::Icmp => Proto::Icmp,
                polt::Proto::Icmpv6 => Proto::Icmpv6,
            };
            let full = if matches!(proto, Proto::Icmp | Proto::Icmpv6) {
                (0, 255)
            } else {
                (1, 65535)
            };
            let (lo, hi) = range.unwrap_or(full);
            vec![(proto, lo.max(full.0), hi)]
        }
    };
    let mut bounds: BTreeSet<u32> = BTreeSet::new();
    for model in models {
        for rule in &model.policies.rules {
            for item in &rule.items {
                if let Ports::List(list) = &item.ports {
                    for p in list {
                        match &p.port {
                            PortSpec::Range(0, 0) => {}
                            PortSpec::Range(a, b) => {
                                let b = (*b).max(*a);
                                bounds.extend([
                                    u32::from(*a),
                                    u32::from(*a) + 1,
                                    u32::from(b),
                                    u32::from(b) + 1,
                                ]);
                                bounds.insert(u32::from(*a).saturating_sub(1));
                            }
                            PortSpec::Named(name) => {
                                for (_, n) in model.inventory.named_ports_anywhere(name) {
                                    bounds.extend([u32::from(*n), u32::from(*n) + 1]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for (proto, lo, hi) in protos {
        let mut pts: BTreeSet<u16> = [lo, hi].into_iter().collect();
        for b in &bounds {
            if let Ok(b) = u16::try_from(*b)
                && (lo..=hi).contains(&b)
            {
                pts.insert(b);
            }
        }
        out.extend(pts.into_iter().map(|p| (proto, p)));
    }
    out
}

fn describe(model: &Model, flow: &Flow, out: &eval::Outcome) -> String {
    let name = |p: Peer| match p {
        Peer::Pod(i) => model.inventory.pods[i].key(),
        Peer::Host(n) => format!("host/{}", model.inventory.nodes[n].name),
        Peer::External(ip) => ip.to_string(),
    };
    let mut s = format!(
        "  counterexample: {} -> {} {}/{}: {}\n",
        name(flow.src),
        name(flow.dst),
        flow.proto.name(),
        flow.port,
        out.verdict.name()
    );
    for d in &out.decisions {
        let _ = writeln!(
            s,
            "    {} of {}: {} — {}",
            d.direction.name(),
            match d.endpoint {
                polc_compiler::model::EndpointRef::Pod(i) => model.inventory.pods[i].key(),
                polc_compiler::model::EndpointRef::Host(n) =>
                    format!("host/{}", model.inventory.nodes[n].name),
            },
            d.verdict.name(),
            if d.note.is_empty() {
                "decided by the rules below"
            } else {
                &d.note
            }
        );
        for r in d.rules.iter().take(3) {
            let _ = writeln!(s, "      {} {}", r.policy, r.path);
        }
    }
    s.trim_end().to_string()
}
