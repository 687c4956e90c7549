//! V0408: host policies that cut a node off from the kube-apiserver or from Cilium's health
//! checks, for every node that could exist.
//!
//! A host policy (`nodeSelector`) that puts a node's egress into default-deny must still let
//! the node reach the kube-apiserver (TCP/6443 to the `kube-apiserver` identity; here the
//! apiserver runs on a control-plane node, so it also carries `remote-node`), or kubelet and
//! the agent lose the cluster. One that puts its ingress into default-deny must still admit
//! the other nodes' health probes (TCP/4240 from `remote-node`), or every node reports it
//! unreachable. The node is symbolic: its labels are free, one value per key. An item
//! matches the apiserver or the probes when its peers take in those identities and its ports
//! the port; items whose match depends on addresses or other nodes' labels (CIDRs,
//! `toNodes`, named ports) count as possibly matching, and a node they could apply to is
//! left alone, so a finding is never a guess. Each finding is replayed through the reference
//! evaluator on two nodes built from the example.

use crate::flow::{self, FlowVars};
use crate::replay::witness;
use crate::{Limits, solver};
use polc_compiler::diag::{Code, Diagnostic};
use polc_compiler::eval::{self, Flow, Peer, Verdict};
use polc_compiler::ir::{
    Direction, Item, PeerKind, Peers, PolicySet, PortSpec, Ports, Proto, Requirement, Subject,
};
use polc_compiler::labels::{Label, LabelSet};
use polc_compiler::model::{Config, Model};
use polc_compiler::raw::Object;
use polc_compiler::source::{FileId, SourceFile};
use polc_compiler::version::CiliumVersion;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use z3::SatResult;
use z3::ast::Bool;

/// What a node must keep.
struct Need {
    dir: Direction,
    /// The labels of the other end's identity.
    remote: &'static [&'static str],
    port: u16,
    what: &'static str,
}

const NEEDS: [Need; 2] = [
    Need {
        dir: Direction::Egress,
        remote: &["kube-apiserver", "remote-node"],
        port: 6443,
        what: "the kube-apiserver (TCP/6443)",
    },
    Need {
        dir: Direction::Ingress,
        remote: &["remote-node"],
        port: 4240,
        what: "the other nodes' health probes (TCP/4240)",
    },
];

/// How an item relates to the flow a node needs.
#[derive(PartialEq, Eq)]
enum Match {
    Yes,
    Maybe,
    No,
}

fn item_match(item: &Item, need: &Need, remote: &LabelSet) -> Match {
    let ports = match &item.ports {
        Ports::Any => Match::Yes,
        Ports::List(list) => {
            let mut m = Match::No;
            for p in list.iter().filter(|p| p.proto == Proto::Tcp) {
                match p.port {
                    PortSpec::Range(0, 0) => m = Match::Yes,
                    PortSpec::Range(a, b) if a <= need.port && need.port <= b.max(a) => {
                        m = Match::Yes;
                    }
                    PortSpec::Range(..) => {}
                    PortSpec::Named(_) if m == Match::No => m = Match::Maybe,
                    PortSpec::Named(_) => {}
                }
            }
            m
        }
    };
    if ports == Match::No {
        return Match::No;
    }
    let peers = match &item.peers {
        Peers::Any => Match::Yes,
        Peers::List(list) => {
            let mut m = Match::No;
            for p in list {
                let this = match &p.kind {
                    PeerKind::Entity(e) if e.selects(remote, "default") => Match::Yes,
                    PeerKind::Endpoints(sel) if sel.matches(remote) => Match::Yes,
                    PeerKind::Cidr(_) | PeerKind::Nodes(_) => Match::Maybe,
                    _ => Match::No,
                };
                if this == Match::Yes {
                    m = Match::Yes;
                } else if this == Match::Maybe && m == Match::No {
                    m = Match::Maybe;
                }
            }
            m
        }
    };
    match (ports, peers) {
        (Match::Yes, Match::Yes) => Match::Yes,
        (_, Match::No) => Match::No,
        _ => Match::Maybe,
    }
}

/// Runs the check.
pub fn check(
    set: &PolicySet,
    objects: &[Object],
    version: CiliumVersion,
    limits: Limits,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let hosts: Vec<_> = set
        .rules
        .iter()
        .filter(|r| matches!(r.subject, Subject::Nodes(_)))
        .collect();
    if hosts.is_empty() {
        return out;
    }
    for need in &NEEDS {
        let mut remote = LabelSet::new();
        for l in need.remote {
            remote.insert(Label::reserved(l));
        }
        for rule in hosts.iter().filter(|r| r.default_deny(need.dir)) {
            let Subject::Nodes(sel) = &rule.subject else {
                continue;
            };
            let mut v = FlowVars::for_nodes();
            // Cilium runs on Linux nodes, and the kubelet labels every node with its OS.
            let linux = Requirement::equals("k8s:kubernetes.io/os", "linux");
            let mut parts = vec![
                flow::requirements(&mut v.x, &sel.reqs),
                flow::requirements(&mut v.x, &[linux]),
            ];
            let (mut allow, mut maybe, mut deny) = (Vec::new(), Vec::new(), Vec::new());
            for r in &hosts {
                let Subject::Nodes(s) = &r.subject else {
                    continue;
                };
                for item in r.items.iter().filter(|i| i.direction == need.dir) {
                    let m = item_match(item, need, &remote);
                    if m == Match::No {
                        continue;
                    }
                    let selected = flow::requirements(&mut v.x, &s.reqs);
                    match (item.deny, m) {
                        (true, Match::Yes) => deny.push(selected),
                        (false, Match::Yes) => allow.push(selected),
                        _ => maybe.push(selected),
                    }
                }
            }
            parts.push(Bool::or(&maybe).not());
            parts.push(Bool::or(&[Bool::or(&deny), Bool::or(&allow).not()]));
            parts.push(v.values_valid());
            let z = solver(limits);
            z.assert(Bool::and(&parts));
            match crate::check("host", &z) {
                SatResult::Unsat => continue,
                SatResult::Unknown => {
                    out.push(crate::undecided(rule.subject_loc, "host-cut-off", &z));
                    continue;
                }
                SatResult::Sat => {}
            }
            let Some(w) = z.get_model().and_then(|m| witness(&v, &m)) else {
                continue;
            };
            let Some(text) = replay(objects, version, &w.x, need) else {
                continue;
            };
            out.push(
                Diagnostic::new(
                    Code::HostCutOff,
                    rule.subject_loc,
                    format!(
                        "{} puts nodes' {} into default-deny, and nothing lets some of them \
                         reach {}",
                        rule.origin.describe(),
                        need.dir.name(),
                        need.what
                    ),
                )
                .label("these nodes are cut off")
                .help(format!(
                    "for example {text} is denied. Allow it in a host policy for these nodes \
                     (`toEntities: [kube-apiserver]` on TCP/6443, `fromEntities: \
                     [remote-node, health]` on TCP/4240)"
                )),
            );
        }
    }
    out
}

fn node_yaml(name: &str, ip: &str, labels: &BTreeMap<String, String>) -> String {
    let mut s = format!("---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n");
    let _ = writeln!(s, "    kubernetes.io/hostname: {name}");
    for (k, v) in labels {
        if k != "kubernetes.io/hostname" {
            let _ = writeln!(s, "    {k:?}: {v:?}");
        }
    }
    let _ = write!(
        s,
        "status:\n  addresses:\n  - type: InternalIP\n    address: {ip}\n"
    );
    s
}

/// Two nodes: `n1` with the example's labels, `n2` (a control-plane node for the apiserver
/// need); the needed flow judged at `n1`'s host under `objects`.
fn replay(
    objects: &[Object],
    version: CiliumVersion,
    labels: &BTreeMap<String, String>,
    need: &Need,
) -> Option<String> {
    let mut text = node_yaml("n1", "172.31.255.1", labels);
    let mut other = BTreeMap::new();
    if need.dir == Direction::Egress {
        other.insert(
            "node-role.kubernetes.io/control-plane".to_string(),
            String::new(),
        );
    }
    text.push_str(&node_yaml("n2", "172.31.255.2", &other));
    let file = SourceFile::new("<witness>", text);
    let (inventory, diags) =
        polc_compiler::read_file(FileId(0), &file, &polc_compiler::Options::default());
    if !diags.is_empty() {
        return None;
    }
    let mut all: Vec<Object> = objects
        .iter()
        .filter(|o| o.kind.is_policy() && !o.kind.is_namespaced())
        .cloned()
        .collect();
    all.extend(inventory);
    let config = Config {
        version,
        dual_stack: Some(false),
        ..Config::default()
    };
    let (model, _) = Model::build(&all, config);
    let n = |name: &str| model.inventory.nodes.iter().position(|x| x.name == name);
    let (n1, n2) = (Peer::Host(n("n1")?), Peer::Host(n("n2")?));
    let (src, dst) = match need.dir {
        Direction::Egress => (n1, n2),
        Direction::Ingress => (n2, n1),
    };
    let flow = Flow {
        src,
        dst,
        proto: Proto::Tcp,
        port: need.port,
        request: None,
    };
    let outcome = eval::decide(&model, &flow);
    let at_n1 = outcome.decisions.iter().find(|d| d.direction == need.dir)?;
    if at_n1.verdict != Verdict::Deny {
        return None;
    }
    let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let node = format!("a node with {{{}}}", shown.join(","));
    Some(match need.dir {
        Direction::Egress => {
            format!("{node} -> the kube-apiserver on a control-plane node TCP/6443")
        }
        Direction::Ingress => format!("another node's health probe -> {node} TCP/4240"),
    })
}
