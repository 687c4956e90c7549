//! Compiling a whole cluster (or one node). As in the agent, the work is split in two:
//! - the *selector policy* of every class of endpoints (the items that apply, with the
//!   identities their peers select), computed once per class and recomputed incrementally
//!   when one policy changes;
//! - the *map state* of one endpoint (named ports resolved on it, keys expanded, entries
//!   inserted with the agent's precedence rules), materialized when it is needed: for the
//!   endpoints of a node, for output, or to confirm an overflow.
//!
//! Two endpoints share a selector policy when they have the same identity and their nodes
//! look the same to policy (the host identity carries `kube-apiserver` on control-plane
//! nodes; node selectors make every node different).
//!
//! Endpoint IDs: the agent allocates them per node; polc numbers each node's endpoints from
//! 1 in (namespace, name) order, and gives the host endpoint the next number.

use crate::identity::{IdentityKind, IpcacheEntry};
use crate::ir::{PeerKind, Peers, Rule, Subject};
use crate::mapstate::{self, EndpointPolicy, ProxyPorts, SelectorCache, SelectorPolicy};
use crate::model::{EndpointRef, Model};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// What makes two endpoints' maps equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Class {
    /// The endpoint's identity (1 for a host endpoint).
    pub identity: u32,
    /// The node, where policy tells nodes apart (`None` otherwise), or whether it runs the
    /// apiserver.
    pub node: NodeClass,
    /// For host endpoints, the node (host policies select nodes by label).
    pub host_of: Option<String>,
}

/// How much of the node matters to an endpoint's map.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NodeClass {
    /// The node by name.
    Named(String),
    /// Only whether the node runs the apiserver.
    Apiserver(bool),
}

/// One compiled endpoint.
#[derive(Clone, Debug)]
pub struct CompiledEndpoint {
    /// Which endpoint.
    pub endpoint: EndpointRef,
    /// Its node.
    pub node: String,
    /// Its endpoint ID on the node.
    pub endpoint_id: u16,
    /// Its identity.
    pub identity: u32,
    /// Its class.
    pub class: Class,
}

/// A compiled cluster.
pub struct Compilation {
    /// Every compiled endpoint.
    pub endpoints: Vec<CompiledEndpoint>,
    /// The selector policy of each class.
    pub policies: HashMap<Class, Arc<SelectorPolicy>>,
    /// The proxy ports used.
    pub proxy_ports: ProxyPorts,
    cache: SelectorCache,
    listeners: Vec<String>,
}

/// Whether any policy selects nodes by label (then every node is its own class).
pub(crate) fn uses_node_selectors(model: &Model) -> bool {
    model.policies.rules.iter().any(|r| {
        r.items.iter().any(|i| match &i.peers {
            Peers::List(p) => p.iter().any(|p| matches!(p.kind, PeerKind::Nodes(_))),
            Peers::Any => false,
        })
    })
}

/// The class of an endpoint.
pub fn class_of(model: &Model, ep: EndpointRef, by_node: bool) -> Class {
    let node = model.node_of(ep);
    let node_class = if by_node {
        NodeClass::Named(node.map(|n| n.name.clone()).unwrap_or_default())
    } else {
        NodeClass::Apiserver(node.is_some_and(|n| n.apiserver))
    };
    Class {
        identity: model.identity_of(ep).unwrap_or(0),
        node: node_class,
        host_of: match ep {
            EndpointRef::Host(_) => node.map(|n| n.name.clone()),
            EndpointRef::Pod(_) => None,
        },
    }
}

/// Endpoints (optionally only those on `node`) with their IDs.
pub fn endpoints(model: &Model, node: Option<&str>) -> Vec<CompiledEndpoint> {
    let by_node = uses_node_selectors(model);
    let mut per_node: BTreeMap<String, Vec<EndpointRef>> = BTreeMap::new();
    for ep in model.endpoints() {
        let name = model
            .node_of(ep)
            .map(|n| n.name.clone())
            .or_else(|| model.pod(ep).map(|p| p.node.clone()))
            .unwrap_or_default();
        if node.is_some_and(|n| n != name) {
            continue;
        }
        per_node.entry(name).or_default().push(ep);
    }
    let mut out = Vec::new();
    for (name, eps) in per_node {
        // Pods first (already in namespace/name order), then the host.
        for (i, ep) in eps.into_iter().enumerate() {
            out.push(CompiledEndpoint {
                endpoint: ep,
                node: name.clone(),
                endpoint_id: u16::try_from(i + 1).unwrap_or(u16::MAX),
                identity: model.identity_of(ep).unwrap_or(0),
                class: class_of(model, ep, by_node),
            });
        }
    }
    out
}

impl Compilation {
    /// Resolves the selector policy of every endpoint (or of those on `node`).
    pub fn new(model: &Model, node: Option<&str>, proxy_ports: ProxyPorts) -> Compilation {
        Compilation::new_with(model, endpoints(model, node), proxy_ports)
    }

    /// [`Compilation::new`] for these endpoints (of [`endpoints`], their IDs as the caller
    /// wants them).
    pub fn new_with(
        model: &Model,
        endpoints: Vec<CompiledEndpoint>,
        proxy_ports: ProxyPorts,
    ) -> Compilation {
        let mut c = Compilation {
            endpoints,
            policies: HashMap::new(),
            proxy_ports,
            cache: SelectorCache::new(model),
            listeners: mapstate::listeners(model),
        };
        for (class, ep) in c.representatives() {
            let p = mapstate::resolve(model, &mut c.cache, ep);
            c.policies.insert(class, Arc::new(p));
        }
        c
    }

    /// The selector policy of an endpoint.
    pub fn policy(&self, e: &CompiledEndpoint) -> Option<&Arc<SelectorPolicy>> {
        self.policies.get(&e.class)
    }

    /// The map state of an endpoint.
    pub fn materialize(&self, model: &Model, e: &CompiledEndpoint) -> EndpointPolicy {
        let empty = SelectorPolicy::default();
        let policy = self.policy(e).map_or(&empty, |p| p);
        mapstate::materialize(
            model,
            e.endpoint,
            policy,
            &self.proxy_ports,
            &self.listeners,
        )
    }

    /// An upper bound of each endpoint's map entries (see [`mapstate::estimate`]).
    pub fn estimates(&self, model: &Model) -> Vec<usize> {
        self.endpoints
            .iter()
            .map(|e| {
                self.policy(e)
                    .map_or(2, |p| mapstate::estimate(model, e.endpoint, p))
            })
            .collect()
    }

    /// After the rules of one policy changed in `model` (already updated, identities
    /// unchanged), recomputes the classes whose endpoints the old or new rules select, and
    /// returns those whose selector policy changed.
    pub fn update(&mut self, model: &Model, old_rules: &[Rule], new_rules: &[Rule]) -> Vec<Class> {
        let mut affected: Vec<(Class, EndpointRef)> = Vec::new();
        let mut seen = HashSet::new();
        for e in &self.endpoints {
            if seen.contains(&e.class) {
                continue;
            }
            let hit = old_rules
                .iter()
                .chain(new_rules.iter())
                .any(|r| selects(model, r, e.endpoint));
            if hit {
                seen.insert(e.class.clone());
                affected.push((e.class.clone(), e.endpoint));
            }
        }
        self.listeners = mapstate::listeners(model);
        self.resolve_again(model, affected)
    }

    /// After identities came (`added`) or went (`removed`) in `model` (its rules may have
    /// changed too): the selector cache follows them ([`SelectorCache::update`]), every
    /// class is resolved again, and those whose selector policy changed are returned.
    pub fn identities_changed(
        &mut self,
        model: &Model,
        added: &[u32],
        removed: &[u32],
    ) -> Vec<Class> {
        self.cache.update(model, added, removed);
        self.listeners = mapstate::listeners(model);
        self.resolve_again(model, self.representatives())
    }

    /// Takes the endpoints anew (after pods came, went or moved in `model`; identities and
    /// rules unchanged): resolves the classes no endpoint had, forgets those no endpoint has
    /// any more, and returns the classes resolved.
    pub fn set_endpoints(&mut self, model: &Model, endpoints: Vec<CompiledEndpoint>) -> Vec<Class> {
        self.endpoints = endpoints;
        let reps = self.representatives();
        let used: HashSet<&Class> = reps.iter().map(|(c, _)| c).collect();
        self.policies.retain(|c, _| used.contains(c));
        let new: Vec<(Class, EndpointRef)> = reps
            .iter()
            .filter(|(c, _)| !self.policies.contains_key(c))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for (class, ep) in new {
            let p = mapstate::resolve(model, &mut self.cache, ep);
            self.policies.insert(class.clone(), Arc::new(p));
            out.push(class);
        }
        out
    }

    /// One endpoint of each class.
    fn representatives(&self) -> Vec<(Class, EndpointRef)> {
        let mut seen = HashSet::new();
        self.endpoints
            .iter()
            .filter(|e| seen.insert(e.class.clone()))
            .map(|e| (e.class.clone(), e.endpoint))
            .collect()
    }

    /// Resolves `classes` again (through their endpoints); returns those whose selector
    /// policy changed.
    fn resolve_again(&mut self, model: &Model, classes: Vec<(Class, EndpointRef)>) -> Vec<Class> {
        let mut changed = Vec::new();
        for (class, ep) in classes {
            let p = mapstate::resolve(model, &mut self.cache, ep);
            if self
                .policies
                .get(&class)
                .is_some_and(|old| same_policy(old, &p))
            {
                continue;
            }
            self.policies.insert(class.clone(), Arc::new(p));
            changed.push(class);
        }
        changed
    }
}

/// Whether two selector policies are the same: the same items of the same rules, selecting
/// the same identities, and the same enforcement.
pub fn same_policy(a: &SelectorPolicy, b: &SelectorPolicy) -> bool {
    a.enforced == b.enforced
        && a.items.len() == b.items.len()
        && a.items.iter().zip(&b.items).all(|(x, y)| {
            Arc::ptr_eq(&x.rule, &y.rule) && x.item == y.item && x.identities == y.identities
        })
}

fn selects(model: &Model, rule: &Rule, ep: EndpointRef) -> bool {
    match (&rule.subject, ep) {
        (Subject::Endpoints(_), EndpointRef::Pod(_))
        | (Subject::Nodes(_), EndpointRef::Host(_)) => model.selects(rule, ep),
        _ => false,
    }
}

/// The ipcache of a node (see [`crate::identity::IdentityTable::ipcache`]).
pub fn ipcache(model: &Model, node: &str) -> Vec<IpcacheEntry> {
    model.identities.ipcache(&model.inventory, node)
}

/// A one-line description of an identity, for tables.
pub fn identity_kind(kind: &IdentityKind) -> String {
    match kind {
        IdentityKind::Reserved => "reserved".into(),
        IdentityKind::Pods => "pods".into(),
        IdentityKind::Cidr(net) => format!("cidr {net}"),
        IdentityKind::Node(n) => format!("node {n}"),
        IdentityKind::Fqdn(ip) => format!("fqdn {ip}"),
    }
}
