//! Concrete flows in the terms of the flow encoding ([`crate::flow`]), judged without the
//! solver. A check asks z3 whether some flow of an item escapes the items that could cover
//! it; most items are not covered, and a concrete flow of the item that no cover matches
//! answers that question at once. The functions here mirror the encodings of `flow` term by
//! term (`None` where the encoding is `Unknown`), and [`Sample::well_formed`] mirrors
//! `FlowVars::well_formed`, so a sample that escapes is a model of the question.

use crate::flow::{KIND_HOST, KIND_POD, KIND_REMOTE_NODE, KIND_WORLD};
use polc_compiler::ir::{
    CidrPeer, Entity, Item, Op, PeerKind, Peers, PolicySet, PortRule, PortSpec, Ports, Requirement,
    Selector, Subject,
};
use polc_compiler::labels::{Label, LabelFilter};
use polc_compiler::version::CiliumVersion;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Mutex;

/// The namespace of samples whose subject spans namespaces: one no rule pins.
pub(crate) const ANY_NAMESPACE: &str = "polc-any-namespace";

const NS: &str = "io.kubernetes.pod.namespace";
/// The namespace of a sampled remote pod that cannot share the local pod's namespace.
const PEER_NAMESPACE: &str = "polc-peer-namespace";
/// The prefix of the labels a pod has from its namespace.
const NS_LABELS: &str = "io.cilium.k8s.namespace.labels.";
const NS_NAME: &str = "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name";
const SA: &str = "io.cilium.k8s.policy.serviceaccount";
const CLUSTER: &str = "io.cilium.k8s.policy.cluster";

/// One concrete flow at the endpoint `x`.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    x: BTreeMap<String, String>,
    p: BTreeMap<String, String>,
    kind: u64,
    addr: u32,
    proto: u8,
    port: u16,
}

/// Judges samples with the label filter of one Cilium release.
pub(crate) struct Judge {
    filter: LabelFilter,
    /// Whether the filter keeps a label key, by key (a few keys are asked about again and
    /// again).
    kept: Mutex<HashMap<String, bool, foldhash::fast::RandomState>>,
}

impl Judge {
    pub(crate) fn new(version: CiliumVersion) -> Self {
        Judge {
            filter: LabelFilter::default_for(version),
            kept: Mutex::new(HashMap::default()),
        }
    }

    fn kept(&self, key: &str) -> bool {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&k) = kept.get(key) {
            return k;
        }
        let k = self.filter.keeps(&Label::k8s(key, ""));
        kept.insert(key.to_string(), k);
        k
    }

    /// Mirrors `flow::requirement`.
    fn requirement(&self, labels: &BTreeMap<String, String>, r: &Requirement) -> bool {
        if !matches!(r.source(), "k8s" | "any") || !self.kept(r.bare_key()) {
            return matches!(r.op, Op::NotIn | Op::DoesNotExist);
        }
        let value = labels.get(r.bare_key());
        match r.op {
            Op::In => value.is_some_and(|v| r.values.contains(v)),
            Op::NotIn => value.is_none_or(|v| !r.values.contains(v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
        }
    }

    pub(crate) fn requirements(
        &self,
        labels: &BTreeMap<String, String>,
        reqs: &[Requirement],
    ) -> bool {
        reqs.iter().all(|r| self.requirement(labels, r))
    }

    /// The plainest pod `subject` selects (in namespace `ns` when it pins none), as its
    /// labels; `None` when that pod does not satisfy it (its requirements on one key
    /// contradict, or a label filter drops a key it asks for).
    pub(crate) fn pod(&self, subject: &Selector, ns: &str) -> Option<BTreeMap<String, String>> {
        if subject.has_reserved() {
            return None;
        }
        pod_labels(&subject.reqs, ns).filter(|x| self.requirements(x, &subject.reqs))
    }

    /// Mirrors `flow::subject`.
    pub(crate) fn subject(&self, s: &Sample, sel: &Selector) -> Option<bool> {
        (!sel.has_reserved()).then(|| self.requirements(&s.x, &sel.reqs))
    }

    /// Mirrors `flow::peer`.
    fn peer(&self, s: &Sample, p: &PeerKind) -> Option<bool> {
        Some(match p {
            PeerKind::Endpoints(sel) if sel.has_reserved() => return None,
            PeerKind::Endpoints(sel) if sel.is_wildcard() => true,
            PeerKind::Endpoints(sel) => s.kind == KIND_POD && self.requirements(&s.p, &sel.reqs),
            PeerKind::Entity(e) => match e {
                Entity::All => true,
                Entity::World => s.kind == KIND_WORLD,
                Entity::Host => s.kind == KIND_HOST,
                Entity::RemoteNode => s.kind == KIND_REMOTE_NODE,
                Entity::Cluster => s.kind != KIND_WORLD,
                Entity::None => false,
                _ => return None,
            },
            PeerKind::Cidr(c) => cidr(s, c)?,
            _ => return None,
        })
    }

    /// Mirrors `flow::l3`.
    fn l3(&self, s: &Sample, it: &Item) -> Option<bool> {
        match &it.peers {
            Peers::Any => Some(true),
            Peers::List(peers) => {
                let mut any = false;
                for p in peers {
                    any |= self.peer(s, &p.kind)?;
                }
                Some(any)
            }
        }
    }

    /// Mirrors `flow::item_where`.
    pub(crate) fn item_where(&self, s: &Sample, it: &Item, http: Option<bool>) -> Option<bool> {
        if it.selects_nothing() {
            return Some(false);
        }
        let l3 = self.l3(s, it)?;
        let l4 = match &it.ports {
            Ports::Any => http != Some(true),
            Ports::List(ports) => {
                let mut any = false;
                for p in ports.iter().filter(|p| crate::flow::picks(p, http)) {
                    any |= port_rule(s, p)?;
                }
                any
            }
        };
        Some(l3 && l4)
    }

    /// Whether some sample of item `it` (of a rule with `subject`, in namespace `ns` when
    /// the subject pins none) escapes every candidate item `(rule, item)` of `set`, each
    /// taken with its rule's subject and with the port rules `http` picks (as
    /// [`Judge::item_where`]): then the question "does some flow of the item escape the
    /// candidates" has a model, and the solver need not be asked. Candidates the encoding
    /// cannot express count as matching nothing, as they are left out of that question.
    pub(crate) fn escapes(
        &self,
        set: &PolicySet,
        subject: &Selector,
        it: &Item,
        ns: Option<&str>,
        candidates: &[(usize, usize)],
        http: Option<bool>,
    ) -> bool {
        self.samples(subject, it, ns.unwrap_or(ANY_NAMESPACE))
            .iter()
            .any(|f| {
                candidates.iter().all(|&(ri, ii)| {
                    let r = &set.rules[ri];
                    let Subject::Endpoints(t) = &r.subject else {
                        return true;
                    };
                    let matched = (self.subject(f, t), self.item_where(f, &r.items[ii], http));
                    !matches!(matched, (Some(true), Some(true)))
                })
            })
    }

    /// Flows of an item of a rule with `subject`, built to satisfy them with as few labels
    /// as possible (pods of namespace `ns` when the subject does not pin one), each checked
    /// against the item and the subject. Empty when none can be built.
    pub(crate) fn samples(&self, subject: &Selector, it: &Item, ns: &str) -> Vec<Sample> {
        let Some(x) = pod_labels(&subject.reqs, ns) else {
            return Vec::new();
        };
        let mut remotes: Vec<(u64, BTreeMap<String, String>, u32)> = Vec::new();
        let x_ns = x.get(NS).cloned().unwrap_or_default();
        // Labels for a remote end that is not a pod (the encoding asks for them all the same).
        let filler = pod_labels(&[], &x_ns).unwrap_or_default();
        let world = u32::from(Ipv4Addr::new(203, 0, 113, 7));
        // A remote pod in x's namespace has the labels x has from it: one there when the
        // peer's requirements agree with them, else one in a namespace of its own (when the
        // requirements do not name the namespace).
        let x_ns_labels: Vec<(&String, &String)> =
            x.iter().filter(|(k, _)| k.starts_with(NS_LABELS)).collect();
        let add_pod = |reqs: &[Requirement], remotes: &mut Vec<_>| {
            let Some(mut p) = pod_labels(reqs, &x_ns) else {
                return;
            };
            if p.get(NS) != Some(&x_ns) {
                remotes.push((KIND_POD, p, 0));
                return;
            }
            let fits = x_ns_labels
                .iter()
                .all(|(k, v)| p.get(*k).is_none_or(|have| have == *v));
            let own = p
                .keys()
                .any(|k| k.starts_with(NS_LABELS) && !x.contains_key(k));
            let pinned = reqs.iter().any(|r| r.bare_key() == NS && r.op == Op::In);
            if (own || !fits)
                && !pinned
                && let Some(elsewhere) = pod_labels(reqs, PEER_NAMESPACE)
            {
                remotes.push((KIND_POD, elsewhere, 0));
            }
            if fits && !own {
                for (k, v) in &x_ns_labels {
                    p.insert((*k).clone(), (*v).clone());
                }
                remotes.push((KIND_POD, p, 0));
            }
        };
        match &it.peers {
            Peers::Any => {
                add_pod(&[], &mut remotes);
                remotes.push((
                    KIND_WORLD,
                    pod_labels(&[], &x_ns).unwrap_or_default(),
                    world,
                ));
            }
            Peers::List(peers) => {
                for p in peers.iter().take(4) {
                    let filler = filler.clone();
                    match &p.kind {
                        PeerKind::Endpoints(sel) => add_pod(&sel.reqs, &mut remotes),
                        PeerKind::Entity(Entity::Host) => remotes.push((KIND_HOST, filler, 0)),
                        PeerKind::Entity(Entity::RemoteNode) => {
                            remotes.push((KIND_REMOTE_NODE, filler, 0));
                        }
                        PeerKind::Entity(Entity::Cluster) => add_pod(&[], &mut remotes),
                        PeerKind::Entity(Entity::All | Entity::World) => {
                            remotes.push((KIND_WORLD, filler, world));
                        }
                        PeerKind::Cidr(c) => {
                            if let ipnet::IpNet::V4(n) = c.net {
                                for a in [n.network(), n.broadcast()] {
                                    remotes.push((KIND_WORLD, filler.clone(), u32::from(a)));
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        let mut ports: Vec<(u8, u16)> = Vec::new();
        match &it.ports {
            Ports::Any => ports.extend([(6, 1), (17, 53)]),
            Ports::List(list) => {
                for p in list.iter().take(4) {
                    let proto = p.proto.number();
                    let icmp = matches!(proto, 1 | 58);
                    match p.port {
                        PortSpec::Range(0, 0) => ports.push((proto, if icmp { 8 } else { 1 })),
                        PortSpec::Range(a, b) => {
                            ports.push((proto, a));
                            if b > a {
                                ports.push((proto, b));
                            }
                        }
                        PortSpec::Named(_) => {}
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (kind, p, addr) in &remotes {
            for &(proto, port) in &ports {
                let s = Sample {
                    x: x.clone(),
                    p: p.clone(),
                    kind: *kind,
                    addr: *addr,
                    proto,
                    port,
                };
                if s.well_formed()
                    && self.subject(&s, subject) == Some(true)
                    && self.item_where(&s, it, None) == Some(true)
                {
                    out.push(s);
                }
            }
        }
        out
    }
}

impl Sample {
    /// The sample as an example to replay.
    pub(crate) fn witness(&self) -> crate::replay::Witness {
        crate::replay::Witness {
            x: self.x.clone(),
            p: self.p.clone(),
            kind: self.kind,
            addr: Ipv4Addr::from(self.addr),
            proto: self.proto,
            port: self.port,
            dns: Vec::new(),
        }
    }

    /// Mirrors `FlowVars::well_formed("default")`.
    fn well_formed(&self) -> bool {
        let end = |l: &BTreeMap<String, String>| {
            l.get(NS)
                .is_some_and(|ns| !ns.is_empty() && l.get(NS_NAME) == Some(ns))
                && l.get(SA).is_some_and(|sa| !sa.is_empty())
                && l.get(CLUSTER).is_some_and(|c| c == "default")
        };
        let icmp = matches!(self.proto, 1 | 58);
        end(&self.x)
            && end(&self.p)
            && matches!(self.proto, 6 | 17 | 132 | 1 | 58)
            && (!icmp || self.port <= 255)
            && (icmp || self.port >= 1)
    }
}

/// Mirrors `flow::cidr`.
fn cidr(s: &Sample, c: &CidrPeer) -> Option<bool> {
    let within = |net: &ipnet::IpNet| -> Option<bool> {
        match net {
            ipnet::IpNet::V4(n) => Some(n.contains(&Ipv4Addr::from(s.addr))),
            ipnet::IpNet::V6(_) => None,
        }
    };
    let mut ok = s.kind == KIND_WORLD && within(&c.net)?;
    for e in &c.except {
        ok &= !within(e)?;
    }
    Some(ok)
}

/// Mirrors `flow::port_rule`.
fn port_rule(s: &Sample, p: &PortRule) -> Option<bool> {
    let PortSpec::Range(a, b) = p.port else {
        return None;
    };
    let proto = s.proto == p.proto.number();
    Some(if (a, b) == (0, 0) {
        proto
    } else {
        proto && a <= s.port && s.port <= b.max(a)
    })
}

/// The fewest labels that satisfy `reqs` for a pod of namespace `ns` (unless `reqs` name
/// another), with what every pod carries (namespace, its name label, service account,
/// cluster); `None` when the requirements are not that simple to meet.
fn pod_labels(reqs: &[Requirement], ns: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let ns = reqs
        .iter()
        .find(|r| r.bare_key() == NS && r.op == Op::In)
        .and_then(|r| r.values.first())
        .map_or(ns, String::as_str);
    out.insert(NS.to_string(), ns.to_string());
    out.insert(NS_NAME.to_string(), ns.to_string());
    out.insert(SA.to_string(), "default".to_string());
    out.insert(CLUSTER.to_string(), "default".to_string());
    for r in reqs {
        let key = r.bare_key().to_string();
        match r.op {
            Op::In => {
                let first = r.values.first()?;
                if out.get(&key).is_some_and(|v| v != first) {
                    return None;
                }
                out.insert(key, first.clone());
            }
            Op::Exists => {
                out.entry(key).or_insert_with(|| "polc-sample".to_string());
            }
            Op::NotIn | Op::DoesNotExist => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{self, Encoded, FlowVars};
    use polc_compiler::source::{SourceFile, SourceMap};
    use z3::ast::{BV, String as Str};

    /// Policies with every kind of term the samples and the encoding share.
    const POLICIES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a, namespace: shop}
spec:
  endpointSelector:
    matchLabels: {app: api}
    matchExpressions:
    - {key: tier, operator: NotIn, values: [db]}
  ingress:
  - fromEndpoints:
    - matchLabels: {app: web}
    - matchExpressions: [{key: team, operator: Exists}]
    toPorts: [{ports: [{port: "8080", endPort: 8090, protocol: TCP}]}]
  - fromEntities: [cluster]
    toPorts: [{ports: [{port: "53", protocol: UDP}, {port: "9090", protocol: TCP}]}]
  - fromCIDRSet: [{cidr: 203.0.113.0/24, except: [203.0.113.0/28]}]
  - fromEndpoints: [{matchLabels: {"k8s:io.kubernetes.pod.namespace": ops}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {http: [{method: GET}]}}]
  - fromEntities: [host, remote-node]
  - icmps: [{fields: [{type: 8}]}]
  egress:
  - toEntities: [world]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
  - toEndpoints: [{matchExpressions: [{key: app, operator: DoesNotExist}]}]
  - toCIDR: [10.0.0.0/8]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: b}
spec:
  endpointSelector:
    matchLabels: {"k8s:io.cilium.k8s.namespace.labels.team": core}
  ingress:
  - fromEndpoints: [{}]
  - fromEntities: [all]
    toPorts: [{ports: [{port: "0", protocol: ANY}]}]
  egressDeny:
  - toEndpoints: [{matchLabels: {"k8s:io.kubernetes.pod.namespace": kube-system}}]
    toPorts: [{ports: [{port: "53", protocol: UDP}]}]
  - toEntities: [kube-apiserver]
  - toPorts: [{ports: [{port: "http", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: c, namespace: shop}
spec:
  endpointSelector:
    matchLabels: {"k8s:io.cilium.k8s.namespace.labels.env": prod}
  ingress:
  - {}
  - fromEndpoints:
    - matchLabels: {"k8s:io.cilium.k8s.namespace.labels.team": ml}
      matchExpressions: [{key: "k8s:io.kubernetes.pod.namespace", operator: Exists}]
    - matchLabels: {app: web}
  egress:
  - toFQDNs: [{matchName: api.example.com}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
"#;

    /// Whether the encoding holds on the sample, as z3 sees it.
    fn encoded(
        s: &Sample,
        version: CiliumVersion,
        f: impl Fn(&mut FlowVars) -> Encoded,
    ) -> Option<bool> {
        let mut v = FlowVars::for_version(version);
        let Encoded::Exact(b) = f(&mut v) else {
            return None;
        };
        let z = z3::Solver::new();
        z.assert(&b);
        for (labels, want) in [(&v.x, &s.x), (&v.p, &s.p)] {
            for (key, (has, val)) in labels.keys() {
                match want.get(key) {
                    Some(value) => {
                        z.assert(has);
                        z.assert(val.eq(Str::from(value.as_str())));
                    }
                    None => z.assert(has.not()),
                }
            }
        }
        z.assert(v.kind.eq(BV::from_u64(s.kind, 2)));
        z.assert(v.addr.eq(BV::from_u64(u64::from(s.addr), 32)));
        z.assert(v.proto.eq(BV::from_u64(u64::from(s.proto), 8)));
        z.assert(v.port.eq(BV::from_u64(u64::from(s.port), 16)));
        Some(z.check() == z3::SatResult::Sat)
    }

    /// [`POLICIES`], lowered.
    fn lowered(version: CiliumVersion) -> polc_compiler::ir::PolicySet {
        let mut sources = SourceMap::new();
        sources.add(SourceFile::new("p.yaml", POLICIES.to_string()));
        let (objects, _) = polc_compiler::lint(&sources, &polc_compiler::Options::default());
        polc_compiler::lower::lower(&objects, version).0
    }

    #[test]
    fn the_judge_agrees_with_the_encoding_on_every_sample() {
        let version = CiliumVersion::V1_19;
        let set = lowered(version);
        let judge = Judge::new(version);
        let mut samples = Vec::new();
        for rule in &set.rules {
            let Subject::Endpoints(sel) = &rule.subject else {
                continue;
            };
            for item in &rule.items {
                samples.extend(judge.samples(sel, item, ANY_NAMESPACE));
                samples.extend(judge.samples(sel, item, "shop"));
            }
        }
        assert!(samples.len() > 20, "{}", samples.len());
        let mut compared = 0;
        for s in &samples {
            assert!(s.well_formed(), "{s:?}");
            let wf = encoded(s, version, |v| Encoded::Exact(v.well_formed("default")));
            assert_eq!(wf, Some(true), "{s:?}");
            for rule in &set.rules {
                let Subject::Endpoints(sel) = &rule.subject else {
                    continue;
                };
                assert_eq!(
                    judge.subject(s, sel),
                    encoded(s, version, |v| flow::subject(v, sel)),
                    "subject {sel} on {s:?}"
                );
                for item in &rule.items {
                    for http in [None, Some(true), Some(false)] {
                        let mut v = FlowVars::for_version(version);
                        assert_eq!(
                            flow::expressible(item, http),
                            matches!(flow::item_where(&mut v, item, http), Encoded::Exact(_)),
                            "{} {http:?}",
                            item.path
                        );
                        assert_eq!(
                            judge.item_where(s, item, http),
                            encoded(s, version, |v| flow::item_where(v, item, http)),
                            "{} {http:?} on {s:?}",
                            item.path
                        );
                        compared += 1;
                    }
                }
            }
        }
        assert!(compared > 500, "{compared}");
    }

    #[test]
    fn remote_pods_share_the_namespace_labels_or_live_elsewhere() {
        let version = CiliumVersion::V1_19;
        let set = lowered(version);
        let rule = set
            .rules
            .iter()
            .find(|r| r.origin.name == "c")
            .expect("policy c");
        let Subject::Endpoints(sel) = &rule.subject else {
            panic!("pods");
        };
        let judge = Judge::new(version);
        // `ingress: [{}]` matches no flow.
        assert!(rule.items[0].selects_nothing());
        assert!(judge.samples(sel, &rule.items[0], "shop").is_empty());
        let samples = judge.samples(sel, &rule.items[1], "shop");
        let env = "io.cilium.k8s.namespace.labels.env";
        let team = "io.cilium.k8s.namespace.labels.team";
        // A peer in x's namespace has its labels (env=prod); one whose namespace is labelled
        // team=ml, which x's is not, lives in a namespace of its own.
        let beside: Vec<&Sample> = samples.iter().filter(|s| s.p[NS] == "shop").collect();
        let away: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.p[NS] == PEER_NAMESPACE)
            .collect();
        assert!(!beside.is_empty() && !away.is_empty(), "{samples:?}");
        for s in beside {
            assert_eq!(s.p.get(env).map(String::as_str), Some("prod"), "{s:?}");
            assert_eq!(s.p.get(team), None, "{s:?}");
        }
        for s in away {
            assert_eq!(s.p.get(env), None, "{s:?}");
            assert_eq!(s.p.get(team).map(String::as_str), Some("ml"), "{s:?}");
            assert_eq!(s.p[NS_NAME], PEER_NAMESPACE, "{s:?}");
        }
    }
}
