//! V0404: allow items that deny items cover entirely, for every pod that could exist.
//!
//! For an allow item A of a rule with subject S, and the deny items D of rules with subjects
//! T (same direction), A is shadowed when no flow satisfies
//! `S(x) ∧ A(p, proto, port) ∧ ¬∨(T(x) ∧ D(p, proto, port))`. Deny items the encoding cannot
//! express count as denying nothing and allow items it cannot express are skipped, so a
//! finding is never a guess. Each finding's example — a flow A allows — is replayed through
//! the reference evaluator on a cluster built from the solver's witness, and dropped unless
//! the evaluator denies it by a deny rule.

use crate::flow::{self, Encoded, FlowVars, KIND_HOST, KIND_POD, KIND_REMOTE_NODE, KIND_WORLD};
use crate::{Limits, solver};
use polc_compiler::diag::{Code, Diagnostic};
use polc_compiler::eval::{self, Decision, Flow, Peer, Request, Verdict, Why};
use polc_compiler::ir::{
    Direction, Entity, Item, PeerKind, Peers, PolicySet, PortSpec, Ports, Proto, Subject,
};
use polc_compiler::model::{Config, EndpointRef, Model};
use polc_compiler::raw::Object;
use polc_compiler::source::{FileId, SourceFile};
use polc_compiler::version::CiliumVersion;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use z3::SatResult;
use z3::ast::Bool;

/// Runs the check on a lowered policy set without `fromRequires`/`toRequires` (the objects it
/// came from serve the replays).
pub fn check(
    set: &PolicySet,
    objects: &[Object],
    version: CiliumVersion,
    limits: Limits,
) -> Vec<Diagnostic> {
    // Deny items by direction and by the namespace their rule's subject pins (`None`: the
    // subject spans namespaces).
    type DenyIndex<'a> = HashMap<(Direction, Option<&'a str>), Vec<(usize, usize)>>;
    let mut denies_by: DenyIndex<'_> = HashMap::new();
    for (ri, r) in set.rules.iter().enumerate() {
        let Subject::Endpoints(t) = &r.subject else {
            continue;
        };
        let ns = t.pinned("io.kubernetes.pod.namespace");
        for (ii, d) in r.items.iter().enumerate().filter(|(_, d)| d.deny) {
            denies_by
                .entry((d.direction, ns))
                .or_default()
                .push((ri, ii));
        }
    }
    let mut out = Vec::new();
    for rule in &set.rules {
        let Subject::Endpoints(subject) = &rule.subject else {
            continue;
        };
        for item in rule
            .items
            .iter()
            .filter(|i| !i.deny && !i.selects_nothing())
        {
            let ns = subject.pinned("io.kubernetes.pod.namespace");
            let mut candidates: Vec<(usize, usize)> = Vec::new();
            for ((dir, dns), list) in &denies_by {
                if *dir == item.direction && (ns.is_none() || dns.is_none() || *dns == ns) {
                    candidates.extend(
                        list.iter()
                            .copied()
                            .filter(|&(ri, ii)| may_overlap(item, &set.rules[ri].items[ii])),
                    );
                }
            }
            if candidates.is_empty() {
                continue;
            }
            candidates.sort_unstable();
            let mut v = FlowVars::new();
            let wf = v.well_formed("default");
            let (Encoded::Exact(s), Encoded::Exact(a)) =
                (flow::subject(&mut v, subject), flow::item(&mut v, item))
            else {
                continue;
            };
            let mut denies = Vec::new();
            let mut deny_refs = Vec::new();
            for &(ri, ii) in &candidates {
                let r = &set.rules[ri];
                let d = &r.items[ii];
                let Subject::Endpoints(t) = &r.subject else {
                    continue;
                };
                if let (Encoded::Exact(ts), Encoded::Exact(dd)) =
                    (flow::subject(&mut v, t), flow::item(&mut v, d))
                {
                    denies.push(Bool::and(&[ts, dd]));
                    deny_refs.push((r.origin.describe(), d.path.clone(), d.loc));
                }
            }
            if denies.is_empty() {
                continue;
            }
            // Shadowed: no flow of the item escapes the denies.
            let z = solver(limits);
            z.assert(&wf);
            z.assert(&s);
            z.assert(&a);
            z.assert(Bool::or(&denies).not());
            if z.check() != SatResult::Unsat {
                continue;
            }
            // An example flow of the item (it exists unless the item is empty).
            let z = solver(limits);
            z.assert(&wf);
            z.assert(&s);
            z.assert(&a);
            if z.check() != SatResult::Sat {
                continue;
            }
            let Some(model) = z.get_model() else { continue };
            let want = (Verdict::Deny, Why::DenyRule);
            let Some(text) = confirm(objects, version, &v, &model, item.direction, None, want)
            else {
                continue;
            };
            let mut d = Diagnostic::new(
                Code::ShadowedAllow,
                item.loc,
                format!(
                    "every flow this {} item allows is denied by {}",
                    item.direction.name(),
                    deny_refs
                        .iter()
                        .map(|(p, path, _)| format!("{p} {path}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .label("shadowed by deny rules")
            .help(format!(
                "deny wins over allow, so this item has no effect; for example {text}. Remove \
                 it, or narrow the deny rules"
            ));
            for (_, _, loc) in &deny_refs {
                d = d.related(*loc, "deny item");
            }
            out.push(d);
        }
    }
    out
}

/// A concrete flow read off a model.
struct Witness {
    x: BTreeMap<String, String>,
    p: BTreeMap<String, String>,
    kind: u64,
    addr: Ipv4Addr,
    proto: u8,
    port: u16,
}

fn witness(v: &FlowVars, m: &z3::Model) -> Option<Witness> {
    let labels = |l: &flow::Labels| -> Option<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for (k, (has, val)) in l.keys() {
            if m.eval(has, true)?.as_bool()? {
                out.insert(k.clone(), m.eval(val, true)?.as_string()?);
            }
        }
        Some(out)
    };
    let num = |b: &z3::ast::BV| m.eval(b, true).and_then(|x| x.as_u64());
    Some(Witness {
        x: labels(&v.x)?,
        p: labels(&v.p)?,
        kind: num(&v.kind)?,
        addr: Ipv4Addr::from(u32::try_from(num(&v.addr)?).ok()?),
        proto: u8::try_from(num(&v.proto)?).ok()?,
        port: u16::try_from(num(&v.port)?).ok()?,
    })
}

fn valid_value(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A Pod (and its Namespace) with the witness's labels, as YAML.
fn pod_yaml(name: &str, ip: &str, labels: &BTreeMap<String, String>) -> Option<String> {
    let ns = labels.get("io.kubernetes.pod.namespace")?.clone();
    let mut pod_labels = String::new();
    let mut ns_labels = format!("    kubernetes.io/metadata.name: \"{ns}\"\n");
    let mut sa = "default".to_string();
    for (k, v) in labels {
        if !valid_value(v) {
            return None;
        }
        if let Some(nk) = k.strip_prefix("io.cilium.k8s.namespace.labels.") {
            if nk != "kubernetes.io/metadata.name" {
                let _ = writeln!(ns_labels, "    \"{nk}\": \"{v}\"");
            } else if *v != ns {
                return None;
            }
        } else if k == "io.cilium.k8s.policy.serviceaccount" {
            sa = v.clone();
        } else if !k.starts_with("io.kubernetes.pod.namespace")
            && !k.starts_with("io.cilium.k8s.policy.cluster")
        {
            let _ = writeln!(pod_labels, "    \"{k}\": \"{v}\"");
        }
    }
    if sa.is_empty() {
        return None;
    }
    Some(format!(
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: \"{ns}\"\n  labels:\n{ns_labels}\
         ---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: \"{ns}\"\n  \
         labels:\n    polc-witness: \"{name}\"\n{pod_labels}spec:\n  nodeName: n1\n  \
         serviceAccountName: \"{sa}\"\nstatus:\n  podIP: {ip}\n"
    ))
}

/// Reads the witness flow off a model, replays it (see [`replay`]) and describes it when
/// the witness endpoint's decision is `want`; `None` drops the finding.
pub(crate) fn confirm(
    objects: &[Object],
    version: CiliumVersion,
    v: &FlowVars,
    model: &z3::Model,
    dir: Direction,
    request: Option<Request>,
    want: (Verdict, Why),
) -> Option<String> {
    let w = witness(v, model)?;
    let (decision, text) = replay(objects, version, &w, dir, request)?;
    (decision.verdict == want.0 && decision.why == want.1).then_some(text)
}

/// Builds a two-node cluster with the witness's pods, judges the flow (with `request`, if
/// any), and returns the witness endpoint's decision and a description of the flow.
fn replay(
    objects: &[Object],
    version: CiliumVersion,
    w: &Witness,
    dir: Direction,
    request: Option<Request>,
) -> Option<(Decision, String)> {
    let mut text = String::from(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\nstatus:\n  addresses:\n  - type: \
         InternalIP\n    address: 172.31.255.1\n---\napiVersion: v1\nkind: Node\nmetadata:\n  \
         name: n2\nstatus:\n  addresses:\n  - type: InternalIP\n    address: 172.31.255.2\n",
    );
    text.push_str(&pod_yaml("witness-x", "10.255.0.10", &w.x)?);
    if w.kind == KIND_POD {
        let same_ns =
            w.x.get("io.kubernetes.pod.namespace") == w.p.get("io.kubernetes.pod.namespace");
        if same_ns {
            // One namespace object: the pods must agree on its labels.
            let ns_labels = |l: &BTreeMap<String, String>| -> Vec<(String, String)> {
                l.iter()
                    .filter(|(k, _)| k.starts_with("io.cilium.k8s.namespace.labels."))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            if ns_labels(&w.x) != ns_labels(&w.p) {
                return None;
            }
        }
        let p = pod_yaml("witness-p", "10.255.0.11", &w.p)?;
        // Drop the duplicate Namespace document when both pods share it.
        let p = if same_ns {
            p.split("---\napiVersion: v1\nkind: Pod")
                .nth(1)
                .map(|rest| format!("---\napiVersion: v1\nkind: Pod{rest}"))?
        } else {
            p
        };
        text.push_str(&p);
    }
    let file = SourceFile::new("<witness>", text);
    let (inventory, diags) =
        polc_compiler::read_file(FileId(0), &file, &polc_compiler::Options::default());
    if !diags.is_empty() {
        return None;
    }
    // Only the policies that can select the witness pods: those of their namespaces and the
    // clusterwide ones (and the CIDR groups).
    let namespaces: Vec<&String> = [&w.x, &w.p]
        .iter()
        .filter_map(|l| l.get("io.kubernetes.pod.namespace"))
        .collect();
    let mut all: Vec<Object> = objects
        .iter()
        .filter(|o| o.kind.is_policy())
        .filter(|o| !o.kind.is_namespaced() || namespaces.iter().any(|n| *n == o.namespace()))
        .cloned()
        .collect();
    all.extend(inventory);
    let config = Config {
        version,
        dual_stack: Some(false),
        ..Config::default()
    };
    let (model, _) = Model::build(&all, config);
    let find = |name: &str| model.inventory.pods.iter().position(|p| p.name == name);
    let x = Peer::Pod(find("witness-x")?);
    let other = match w.kind {
        KIND_POD => Peer::Pod(find("witness-p")?),
        KIND_WORLD => Peer::External(std::net::IpAddr::V4(w.addr)),
        KIND_HOST => Peer::Host(model.inventory.nodes.iter().position(|n| n.name == "n1")?),
        KIND_REMOTE_NODE => Peer::Host(model.inventory.nodes.iter().position(|n| n.name == "n2")?),
        _ => return None,
    };
    // A world address that is a cluster address is not the flow the solver meant.
    if w.kind == KIND_WORLD
        && !matches!(
            eval::locate(&model, std::net::IpAddr::V4(w.addr)),
            Peer::External(_)
        )
    {
        return None;
    }
    let proto = Proto::from_number(w.proto)?;
    let port = if matches!(proto, Proto::Icmp | Proto::Icmpv6) {
        w.port & 0xff
    } else {
        w.port.max(1)
    };
    let (src, dst) = match dir {
        Direction::Ingress => (other, x),
        Direction::Egress => (x, other),
    };
    let f = Flow {
        src,
        dst,
        proto,
        port,
        request,
    };
    let outcome = eval::decide(&model, &f);
    let xs = EndpointRef::Pod(find("witness-x")?);
    let at_x = outcome
        .decisions
        .iter()
        .find(|d| d.endpoint == xs && d.direction == dir)?
        .clone();
    let describe = |p: Peer, labels: &BTreeMap<String, String>| match p {
        Peer::Pod(_) => {
            let shown: Vec<String> = labels
                .iter()
                .filter(|(k, _)| !k.starts_with("io.cilium.k8s.policy.cluster"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("a pod with {{{}}}", shown.join(","))
        }
        Peer::Host(0) => "the local host".to_string(),
        Peer::Host(_) => "a remote node".to_string(),
        Peer::External(ip) => ip.to_string(),
    };
    let (sl, dl) = match dir {
        Direction::Ingress => (&w.p, &w.x),
        Direction::Egress => (&w.x, &w.p),
    };
    Some((
        at_x,
        format!(
            "{} -> {} {}/{}",
            describe(src, sl),
            describe(dst, dl),
            proto.name(),
            port
        ),
    ))
}

/// The kinds of remote end an item's peers can match: pod, world, host, remote node.
fn kinds(it: &Item) -> [bool; 4] {
    let mut k = [false; 4];
    let Peers::List(peers) = &it.peers else {
        return [true; 4];
    };
    for p in peers {
        match &p.kind {
            PeerKind::Endpoints(s) if s.is_wildcard() => return [true; 4],
            PeerKind::Endpoints(s) if s.has_reserved() => return [true; 4],
            PeerKind::Endpoints(_) => k[0] = true,
            PeerKind::Cidr(_) | PeerKind::Fqdn(_) => k[1] = true,
            PeerKind::Entity(Entity::All) => return [true; 4],
            PeerKind::Entity(Entity::World | Entity::WorldIpv4 | Entity::WorldIpv6) => k[1] = true,
            PeerKind::Entity(Entity::Host) => k[2] = true,
            PeerKind::Entity(Entity::RemoteNode) => k[3] = true,
            PeerKind::Entity(Entity::Cluster) => {
                k[0] = true;
                k[2] = true;
                k[3] = true;
            }
            _ => return [true; 4],
        }
    }
    k
}

/// The (protocol, first, last) port ranges of an item; `None` = every protocol and port.
fn ranges(it: &Item) -> Option<Vec<(u8, u16, u16)>> {
    let Ports::List(ports) = &it.ports else {
        return None;
    };
    let mut out = Vec::new();
    for p in ports {
        match p.port {
            PortSpec::Range(0, 0) => out.push((p.proto.number(), 0, u16::MAX)),
            PortSpec::Range(a, b) => out.push((p.proto.number(), a, b.max(a))),
            PortSpec::Named(_) => return None,
        }
    }
    Some(out)
}

/// A cheap test before the solver: whether deny item `d` can match any flow allow item `a`
/// matches (same kinds of remote end, overlapping ports, intersecting CIDRs).
pub(crate) fn may_overlap(a: &Item, d: &Item) -> bool {
    let (ka, kd) = (kinds(a), kinds(d));
    if !(0..4).any(|i| ka[i] && kd[i]) {
        return false;
    }
    if let (Some(ra), Some(rd)) = (ranges(a), ranges(d))
        && !ra.iter().any(|(pa, a1, a2)| {
            rd.iter()
                .any(|(pd, d1, d2)| pa == pd && a1 <= d2 && d1 <= a2)
        })
    {
        return false;
    }
    // When both are CIDR-only, the prefixes must intersect.
    let cidrs = |it: &Item| -> Option<Vec<ipnet::IpNet>> {
        let Peers::List(peers) = &it.peers else {
            return None;
        };
        peers
            .iter()
            .map(|p| match &p.kind {
                PeerKind::Cidr(c) => Some(c.net),
                _ => None,
            })
            .collect()
    };
    if let (Some(ca), Some(cd)) = (cidrs(a), cidrs(d))
        && !ca
            .iter()
            .any(|x| cd.iter().any(|y| x.contains(y) || y.contains(x)))
    {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use polc_compiler::source::SourceMap;

    fn findings(yaml: &str) -> Vec<Diagnostic> {
        let mut sources = SourceMap::new();
        sources.add(SourceFile::new("p.yaml", yaml.to_string()));
        let (objects, diags) = polc_compiler::lint(&sources, &polc_compiler::Options::default());
        let (set, _) = polc_compiler::lower::lower(&objects, CiliumVersion::V1_19);
        assert!(
            diags
                .iter()
                .all(|d| d.severity != polc_compiler::diag::Severity::Error),
            "{diags:?}"
        );
        check(&set, &objects, CiliumVersion::V1_19, Limits::default())
    }

    const ALLOW: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a, namespace: shop}\nspec:\n  endpointSelector: {matchLabels: {app: api}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: web}}]\n    toPorts: [{ports: [{port: \"8000\", endPort: 8100, protocol: TCP}]}]\n";

    fn deny(body: &str) -> String {
        format!(
            "{ALLOW}---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: d, namespace: shop}}\nspec:\n  endpointSelector: {{matchLabels: {{app: api}}}}\n  ingressDeny:\n{body}"
        )
    }

    #[test]
    fn covering_denies_shadow_and_near_misses_do_not() {
        // Covers every port of the range from every `web` pod.
        let f = findings(&deny("  - fromEndpoints: [{matchLabels: {app: web}}]\n"));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].help.as_deref().unwrap_or("").contains("TCP/"), "{f:?}");
        // Two denies that together cover the range.
        let f = findings(&deny(
            "  - fromEndpoints: [{matchLabels: {app: web}}]\n    toPorts: [{ports: [{port: \"8000\", endPort: 8050, protocol: TCP}]}]\n  - fromEndpoints: [{}]\n    toPorts: [{ports: [{port: \"8051\", endPort: 8100, protocol: TCP}]}]\n",
        ));
        assert_eq!(f.len(), 1, "{f:?}");
        // One port of the range escapes.
        let f = findings(&deny(
            "  - fromEndpoints: [{matchLabels: {app: web}}]\n    toPorts: [{ports: [{port: \"8000\", endPort: 8099, protocol: TCP}]}]\n",
        ));
        assert!(f.is_empty(), "{f:?}");
        // `web` pods of one tier escape a deny for the other.
        let f = findings(&deny(
            "  - fromEndpoints: [{matchLabels: {app: web, tier: a}}]\n",
        ));
        assert!(f.is_empty(), "{f:?}");
        // World denies never cover pods.
        let f = findings(&deny("  - fromEntities: [world]\n"));
        assert!(f.is_empty(), "{f:?}");
    }
}
