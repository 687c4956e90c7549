//! A symbolic flow at one endpoint: the endpoint (a pod `x`), the remote end (`p`: a pod, an
//! outside IPv4 address, the local host or a remote node), the protocol and the port, and the
//! IR's subjects and items as constraints over them.
//!
//! The encoding covers what can be decided exactly without a cluster: endpoint selectors,
//! the entities `all`, `world`, `cluster`, `host`, `remote-node`, IPv4 CIDRs with exceptions,
//! numeric ports and ranges, protocols. Anything else (named ports, FQDNs, IPv6 CIDRs, node
//! selectors, other entities) is [`Encoded::Unknown`]; callers decide how to be conservative.

use polc_compiler::ir::{
    CidrPeer, Entity, Item, L7, Op, PeerKind, Peers, PortSpec, Ports, Redirect, Requirement,
    Selector,
};
use std::collections::BTreeMap;
use z3::ast::{BV, Bool, String as Str};

/// What the remote end is.
pub const KIND_POD: u64 = 0;
/// An address outside the cluster.
pub const KIND_WORLD: u64 = 1;
/// The endpoint's own node.
pub const KIND_HOST: u64 = 2;
/// Another node.
pub const KIND_REMOTE_NODE: u64 = 3;

/// A constraint, or the admission that it cannot be expressed.
pub enum Encoded {
    /// The constraint.
    Exact(Bool),
    /// Not expressible.
    Unknown,
}

/// A pod's labels: per key, presence and value.
pub struct Labels {
    prefix: &'static str,
    keys: BTreeMap<String, (Bool, Str)>,
}

impl Labels {
    fn new(prefix: &'static str) -> Self {
        Labels {
            prefix,
            keys: BTreeMap::new(),
        }
    }

    fn get(&mut self, key: &str) -> &(Bool, Str) {
        let prefix = self.prefix;
        self.keys.entry(key.to_string()).or_insert_with(|| {
            (
                Bool::new_const(format!("{prefix}has:{key}")),
                Str::new_const(format!("{prefix}val:{key}")),
            )
        })
    }

    /// The keys used so far, with their variables.
    pub fn keys(&self) -> &BTreeMap<String, (Bool, Str)> {
        &self.keys
    }
}

/// The variables of one symbolic flow.
pub struct FlowVars {
    /// The endpoint's labels.
    pub x: Labels,
    /// The remote end's labels (when it is a pod).
    pub p: Labels,
    /// The remote end's kind.
    pub kind: BV,
    /// The remote address (when it is outside), IPv4.
    pub addr: BV,
    /// The IP protocol.
    pub proto: BV,
    /// The port (ICMP: the type).
    pub port: BV,
}

impl Default for FlowVars {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowVars {
    /// Fresh variables.
    pub fn new() -> Self {
        FlowVars {
            x: Labels::new("x:"),
            p: Labels::new("p:"),
            kind: BV::new_const("p:kind", 2),
            addr: BV::new_const("p:addr", 32),
            proto: BV::new_const("proto", 8),
            port: BV::new_const("port", 16),
        }
    }

    /// Well-formedness: both pods have a namespace and the local cluster's name; the
    /// protocol is one policy can name.
    pub fn well_formed(&mut self, cluster: &str) -> Bool {
        let mut parts = Vec::new();
        for labels in [&mut self.x, &mut self.p] {
            let (has_ns, ns) = labels.get("io.kubernetes.pod.namespace").clone();
            parts.push(has_ns);
            parts.push(ns.eq(Str::from("")).not());
            let (has_c, c) = labels.get("io.cilium.k8s.policy.cluster").clone();
            parts.push(has_c);
            parts.push(c.eq(Str::from(cluster)));
        }
        let protos: Vec<Bool> = [6u64, 17, 132, 1, 58]
            .iter()
            .map(|n| self.proto.eq(BV::from_u64(*n, 8)))
            .collect();
        parts.push(Bool::or(&protos));
        Bool::and(&parts)
    }

    fn kind_is(&self, k: u64) -> Bool {
        self.kind.eq(BV::from_u64(k, 2))
    }
}

fn requirement(labels: &mut Labels, r: &Requirement) -> Bool {
    if !matches!(r.source(), "k8s" | "any") {
        return Bool::from_bool(matches!(r.op, Op::NotIn | Op::DoesNotExist));
    }
    let (present, value) = labels.get(r.bare_key()).clone();
    let eq = |v: &String| value.eq(Str::from(v.as_str()));
    match r.op {
        Op::In => {
            let any: Vec<Bool> = r.values.iter().map(eq).collect();
            Bool::and(&[present, Bool::or(&any)])
        }
        Op::NotIn => {
            let none: Vec<Bool> = r.values.iter().map(|v| eq(v).not()).collect();
            Bool::or(&[present.not(), Bool::and(&none)])
        }
        Op::Exists => present,
        Op::DoesNotExist => present.not(),
    }
}

/// A selector over the endpoint's labels (a rule subject).
pub fn subject(v: &mut FlowVars, sel: &Selector) -> Encoded {
    if sel.has_reserved() {
        return Encoded::Unknown;
    }
    let parts: Vec<Bool> = sel.reqs.iter().map(|r| requirement(&mut v.x, r)).collect();
    Encoded::Exact(Bool::and(&parts))
}

fn v4(net: &ipnet::IpNet) -> Option<(u64, u32)> {
    match net {
        ipnet::IpNet::V4(n) => Some((u64::from(u32::from(n.network())), u32::from(n.prefix_len()))),
        ipnet::IpNet::V6(_) => None,
    }
}

fn in_prefix(addr: &BV, net: u64, len: u32) -> Bool {
    if len == 0 {
        return Bool::from_bool(true);
    }
    addr.extract(31, 32 - len)
        .eq(BV::from_u64(net >> (32 - len), len))
}

fn cidr(v: &FlowVars, c: &CidrPeer) -> Encoded {
    let Some((net, len)) = v4(&c.net) else {
        return Encoded::Unknown;
    };
    let mut parts = vec![v.kind_is(KIND_WORLD), in_prefix(&v.addr, net, len)];
    for e in &c.except {
        let Some((en, el)) = v4(e) else {
            return Encoded::Unknown;
        };
        parts.push(in_prefix(&v.addr, en, el).not());
    }
    Encoded::Exact(Bool::and(&parts))
}

/// One peer over the remote end.
pub fn peer(v: &mut FlowVars, p: &PeerKind) -> Encoded {
    match p {
        PeerKind::Endpoints(sel) if sel.has_reserved() => Encoded::Unknown,
        PeerKind::Endpoints(sel) => {
            let mut parts = vec![v.kind_is(KIND_POD)];
            parts.extend(sel.reqs.iter().map(|r| requirement(&mut v.p, r)));
            // The wildcard selector (KNP `from: []`) selects every identity.
            if sel.is_wildcard() {
                return Encoded::Exact(Bool::from_bool(true));
            }
            Encoded::Exact(Bool::and(&parts))
        }
        PeerKind::Entity(e) => Encoded::Exact(match e {
            Entity::All => Bool::from_bool(true),
            Entity::World => v.kind_is(KIND_WORLD),
            Entity::Host => v.kind_is(KIND_HOST),
            Entity::RemoteNode => v.kind_is(KIND_REMOTE_NODE),
            Entity::Cluster => v.kind_is(KIND_WORLD).not(),
            Entity::None => Bool::from_bool(false),
            _ => return Encoded::Unknown,
        }),
        PeerKind::Cidr(c) => cidr(v, c),
        _ => Encoded::Unknown,
    }
}

/// An item's L3 and L4 parts.
pub fn item(v: &mut FlowVars, it: &Item) -> Encoded {
    item_where(v, it, None)
}

/// An item's L3 part with only some of its port rules: those with an HTTP redirect
/// (`Some(true)`), those without any redirect (`Some(false)`, where an L3-only item counts),
/// or all of them (`None`).
pub fn item_where(v: &mut FlowVars, it: &Item, http: Option<bool>) -> Encoded {
    let l3 = match &it.peers {
        Peers::Any => Bool::from_bool(true),
        Peers::List(peers) => {
            let mut any = Vec::new();
            for p in peers {
                match peer(v, &p.kind) {
                    Encoded::Exact(b) => any.push(b),
                    Encoded::Unknown => return Encoded::Unknown,
                }
            }
            Bool::or(&any)
        }
    };
    let l4 = match &it.ports {
        Ports::Any => Bool::from_bool(http != Some(true)),
        Ports::List(ports) => {
            let mut any = Vec::new();
            for p in ports {
                let is_http = matches!(&p.redirect, Some(Redirect::L7(L7::Http(_))));
                match http {
                    Some(true) if !is_http => continue,
                    Some(false) if p.redirect.is_some() => continue,
                    _ => {}
                }
                let PortSpec::Range(a, b) = p.port else {
                    return Encoded::Unknown;
                };
                let proto = v.proto.eq(BV::from_u64(u64::from(p.proto.number()), 8));
                let port = if (a, b) == (0, 0) {
                    Bool::from_bool(true)
                } else {
                    Bool::and(&[
                        v.port.bvuge(BV::from_u64(u64::from(a), 16)),
                        v.port.bvule(BV::from_u64(u64::from(b.max(a)), 16)),
                    ])
                };
                any.push(Bool::and(&[proto, port]));
            }
            Bool::or(&any)
        }
    };
    Encoded::Exact(Bool::and(&[l3, l4]))
}
