//! A symbolic flow at one endpoint: the endpoint (a pod `x`), the remote end (`p`: a pod, an
//! outside IPv4 address, the local host or a remote node), the protocol and the port, and the
//! IR's subjects and items as constraints over them.
//!
//! The encoding covers what can be decided exactly without a cluster: endpoint selectors,
//! the entities `all`, `world`, `cluster`, `host`, `remote-node`, IPv4 CIDRs with exceptions,
//! numeric ports and ranges, protocols. Anything else (named ports, FQDNs, IPv6 CIDRs, node
//! selectors, other entities) is [`Encoded::Unknown`]; callers decide how to be conservative.

use polc_compiler::ir::{
    CidrPeer, Entity, Item, L7, Op, PeerKind, Peers, PortRule, PortSpec, Ports, Redirect,
    Requirement, Selector,
};
use polc_compiler::labels::{Label, LabelFilter};
use polc_compiler::version::CiliumVersion;
use std::collections::BTreeMap;
use std::sync::Arc;
use z3::ast::{BV, Bool, Regexp, String as Str};

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
    /// The agent's label filter: keys it drops are never part of an identity (`None`: node
    /// labels, which host policies see unfiltered).
    filter: Option<Arc<LabelFilter>>,
}

impl Labels {
    fn new(prefix: &'static str, filter: Option<Arc<LabelFilter>>) -> Self {
        Labels {
            prefix,
            keys: BTreeMap::new(),
            filter,
        }
    }

    /// Whether the agent keeps a `k8s:` label with this key in identities.
    fn kept(&self, key: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| f.keeps(&Label::k8s(key, "")))
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
    /// Fresh variables, with Cilium 1.19's label filter.
    pub fn new() -> Self {
        Self::for_version(CiliumVersion::V1_19)
    }

    /// Fresh variables, with the label filter of a Cilium release.
    pub fn for_version(version: CiliumVersion) -> Self {
        let filter = Some(Arc::new(LabelFilter::default_for(version)));
        Self::with_filter(filter)
    }

    /// Fresh variables whose endpoint `x` is a node (its labels unfiltered).
    pub fn for_nodes() -> Self {
        Self::with_filter(None)
    }

    fn with_filter(filter: Option<Arc<LabelFilter>>) -> Self {
        FlowVars {
            x: Labels::new("x:", filter.clone()),
            p: Labels::new("p:", filter),
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
            // Kubernetes labels every namespace with its own name.
            let (has_name, name) = labels
                .get("io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name")
                .clone();
            parts.push(has_name);
            parts.push(name.eq(&ns));
            let (has_sa, sa) = labels.get("io.cilium.k8s.policy.serviceaccount").clone();
            parts.push(has_sa);
            parts.push(sa.eq(Str::from("")).not());

            let (has_c, c) = labels.get("io.cilium.k8s.policy.cluster").clone();
            parts.push(has_c);
            parts.push(c.eq(Str::from(cluster)));
        }
        let protos: Vec<Bool> = [6u64, 17, 132, 1, 58]
            .iter()
            .map(|n| self.proto.eq(BV::from_u64(*n, 8)))
            .collect();
        parts.push(Bool::or(&protos));
        // ICMP types fit a byte; other protocols have no port 0.
        let icmp = Bool::or(&[
            self.proto.eq(BV::from_u64(1, 8)),
            self.proto.eq(BV::from_u64(58, 8)),
        ]);
        parts.push(icmp.implies(self.port.bvule(BV::from_u64(255, 16))));
        parts.push(icmp.not().implies(self.port.bvuge(BV::from_u64(1, 16))));
        Bool::and(&parts)
    }

    /// Whether the remote end is of kind `k`.
    pub fn kind_is(&self, k: u64) -> Bool {
        self.kind.eq(BV::from_u64(k, 2))
    }

    /// What a readable example has: both pods run as the `default` service account.
    pub fn preferences(&mut self) -> Vec<Bool> {
        let mut out = Vec::new();
        for labels in [&mut self.x, &mut self.p] {
            let (_, sa) = labels.get("io.cilium.k8s.policy.serviceaccount").clone();
            out.push(sa.eq(Str::from("default")));
        }
        out
    }

    /// Exchanges the two ends' labels: the remote pod becomes the endpoint, so the other
    /// end's policy can be encoded over the same variables (a pod-to-pod flow is judged at
    /// the source's egress and at the destination's ingress).
    pub fn swap_ends(&mut self) {
        std::mem::swap(&mut self.x, &mut self.p);
    }

    /// Every label value used so far is one Kubernetes accepts (at most 63 characters of
    /// letters, digits, `-`, `_` and `.`; namespaces and service accounts DNS labels), and
    /// two pods of one namespace see the same namespace labels, so a witness can be built as
    /// real objects. Call it after encoding everything else. The regular expressions are
    /// costly for z3: proofs (unsatisfiable queries) leave them out, which only makes them
    /// stronger, and queries for an example add them once a flow is known to exist.
    pub fn values_valid(&mut self) -> Bool {
        let ch = Regexp::union(&[
            Regexp::range(&'a', &'z'),
            Regexp::range(&'A', &'Z'),
            Regexp::range(&'0', &'9'),
            Regexp::literal("-"),
            Regexp::literal("_"),
            Regexp::literal("."),
        ]);
        let value = ch.r#loop(0, 63);
        let mut parts: Vec<Bool> = [&self.x, &self.p]
            .iter()
            .flat_map(|l| l.keys.values())
            .map(|(_, val)| val.regex_matches(&value))
            .collect();
        // Namespace and service account names are DNS labels.
        if self.x.filter.is_some() {
            let alnum = Regexp::union(&[Regexp::range(&'a', &'z'), Regexp::range(&'0', &'9')]);
            let inner = Regexp::union(&[alnum.clone(), Regexp::literal("-")]);
            let dns_label = Regexp::concat(&[
                alnum.clone(),
                Regexp::concat(&[inner.r#loop(0, 61), alnum]).option(),
            ]);
            for key in [
                "io.kubernetes.pod.namespace",
                "io.cilium.k8s.policy.serviceaccount",
            ] {
                for labels in [&mut self.x, &mut self.p] {
                    let (_, v) = labels.get(key).clone();
                    parts.push(v.regex_matches(&dns_label));
                }
            }
        }
        // Two pods in one namespace see the same namespace labels (nodes have none).
        if self.x.filter.is_none() {
            return Bool::and(&parts);
        }
        const NS: &str = "io.kubernetes.pod.namespace";
        let ns_keys: std::collections::BTreeSet<String> = [&self.x, &self.p]
            .iter()
            .flat_map(|l| l.keys.keys())
            .filter(|k| k.starts_with("io.cilium.k8s.namespace.labels."))
            .cloned()
            .collect();
        let same_ns = self.x.get(NS).1.eq(&self.p.get(NS).1);
        for k in ns_keys {
            let (hx, vx) = self.x.get(&k).clone();
            let (hp, vp) = self.p.get(&k).clone();
            let same = Bool::and(&[
                hx.eq(&hp),
                hx.implies(vx.eq(&vp)),
                vx.regex_matches(&value),
                vp.regex_matches(&value),
            ]);
            parts.push(same_ns.implies(same));
        }
        Bool::and(&parts)
    }

    /// The endpoint `x` carries no labels but those in `keep` (its namespace and the
    /// namespace's name label, service account and cluster aside), and its namespace no
    /// other labels: for ends that stand for one well-known workload.
    pub fn only_labels(&self, keep: &[&str]) -> Bool {
        let parts: Vec<Bool> = self
            .x
            .keys
            .iter()
            .filter(|(k, _)| {
                !keep.contains(&k.as_str())
                    && !matches!(
                        k.as_str(),
                        "io.kubernetes.pod.namespace"
                            | "io.cilium.k8s.policy.cluster"
                            | "io.cilium.k8s.policy.serviceaccount"
                            | "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name"
                    )
            })
            .map(|(_, (has, _))| has.not())
            .collect();
        Bool::and(&parts)
    }
}

/// A list of requirements over one end's labels.
pub fn requirements(labels: &mut Labels, reqs: &[Requirement]) -> Bool {
    let parts: Vec<Bool> = reqs.iter().map(|r| requirement(labels, r)).collect();
    Bool::and(&parts)
}

fn requirement(labels: &mut Labels, r: &Requirement) -> Bool {
    // Other sources, and keys the label filter drops, are never on a pod's identity.
    if !matches!(r.source(), "k8s" | "any") || !labels.kept(r.bare_key()) {
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

/// Whether [`item_where`] encodes the item exactly, worked out without building anything
/// (a subject is encoded exactly when [`subject`] sees no reserved label).
pub fn expressible(it: &Item, http: Option<bool>) -> bool {
    if it.selects_nothing() {
        return true;
    }
    let peer = |p: &PeerKind| match p {
        PeerKind::Endpoints(sel) => !sel.has_reserved(),
        PeerKind::Entity(e) => matches!(
            e,
            Entity::All
                | Entity::World
                | Entity::Host
                | Entity::RemoteNode
                | Entity::Cluster
                | Entity::None
        ),
        PeerKind::Cidr(c) => v4(&c.net).is_some() && c.except.iter().all(|e| v4(e).is_some()),
        _ => false,
    };
    let peers = match &it.peers {
        Peers::Any => true,
        Peers::List(peers) => peers.iter().all(|p| peer(&p.kind)),
    };
    let ports = match &it.ports {
        Ports::Any => true,
        Ports::List(ports) => ports
            .iter()
            .filter(|p| picks(p, http))
            .all(|p| matches!(p.port, PortSpec::Range(..))),
    };
    peers && ports
}

/// An item's L3 part: whether one of its peers matches the remote end.
pub fn l3(v: &mut FlowVars, it: &Item) -> Encoded {
    match &it.peers {
        Peers::Any => Encoded::Exact(Bool::from_bool(true)),
        Peers::List(peers) => {
            let mut any = Vec::new();
            for p in peers {
                match peer(v, &p.kind) {
                    Encoded::Exact(b) => any.push(b),
                    Encoded::Unknown => return Encoded::Unknown,
                }
            }
            Encoded::Exact(Bool::or(&any))
        }
    }
}

/// One port rule's protocol and port range.
pub fn port_rule(v: &FlowVars, p: &PortRule) -> Encoded {
    let PortSpec::Range(a, b) = p.port else {
        return Encoded::Unknown;
    };
    let proto = v.proto.eq(BV::from_u64(u64::from(p.proto.number()), 8));
    if (a, b) == (0, 0) {
        return Encoded::Exact(proto);
    }
    Encoded::Exact(Bool::and(&[
        proto,
        v.port.bvuge(BV::from_u64(u64::from(a), 16)),
        v.port.bvule(BV::from_u64(u64::from(b.max(a)), 16)),
    ]))
}

/// An item's L3 and L4 parts.
pub fn item(v: &mut FlowVars, it: &Item) -> Encoded {
    item_where(v, it, None)
}

/// Whether a port rule carries HTTP rules.
pub(crate) fn is_http(p: &PortRule) -> bool {
    matches!(&p.redirect, Some(Redirect::L7(L7::Http(_))))
}

/// Whether the choice of port rules `http` takes `p` (see [`item_where`]): those with an
/// HTTP redirect (`Some(true)`), those without any redirect (`Some(false)`), or all of them
/// (`None`).
pub(crate) fn picks(p: &PortRule, http: Option<bool>) -> bool {
    match http {
        Some(true) => is_http(p),
        Some(false) => p.redirect.is_none(),
        None => true,
    }
}

/// An item's L3 part with only some of its port rules: those with an HTTP redirect
/// (`Some(true)`), those without any redirect (`Some(false)`, where an L3-only item counts),
/// or all of them (`None`).
pub fn item_where(v: &mut FlowVars, it: &Item, http: Option<bool>) -> Encoded {
    // `ingress: [{}]` and written but empty peer lists match no flow (they only turn on
    // default deny).
    if it.selects_nothing() {
        return Encoded::Exact(Bool::from_bool(false));
    }
    let Encoded::Exact(l3) = l3(v, it) else {
        return Encoded::Unknown;
    };
    let l4 = match &it.ports {
        Ports::Any => Bool::from_bool(http != Some(true)),
        Ports::List(ports) => {
            let mut any = Vec::new();
            for p in ports.iter().filter(|p| picks(p, http)) {
                match port_rule(v, p) {
                    Encoded::Exact(b) => any.push(b),
                    Encoded::Unknown => return Encoded::Unknown,
                }
            }
            Bool::or(&any)
        }
    };
    Encoded::Exact(Bool::and(&[l3, l4]))
}
