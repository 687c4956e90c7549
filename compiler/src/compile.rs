//! Compiling a whole cluster (or one node): every endpoint's map state, computed once per
//! class of endpoints that must get the same map, and recomputed incrementally when one
//! policy changes.
//!
//! Two endpoints get the same map when they have the same identity and the same named
//! ports, and their nodes look the same to policy (the host identity carries
//! `kube-apiserver` on control-plane nodes; node selectors make every node different).
//!
//! Endpoint IDs: the agent allocates them per node; polc numbers each node's endpoints from
//! 1 in (namespace, name) order, and gives the host endpoint the next number.

use crate::identity::{IdentityKind, IpcacheEntry};
use crate::inventory::NamedPort;
use crate::ir::{PeerKind, Peers, Rule, Subject};
use crate::mapstate::{self, EndpointPolicy, ProxyPorts, SelectorCache};
use crate::model::{EndpointRef, Model};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// What makes two endpoints' maps equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Class {
    /// The endpoint's identity (1 for a host endpoint).
    pub identity: u32,
    /// Named container ports (ingress named ports resolve on them).
    pub named_ports: Vec<NamedPort>,
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
    /// The map state of each class.
    pub policies: HashMap<Class, Arc<EndpointPolicy>>,
    /// The proxy ports used.
    pub proxy_ports: ProxyPorts,
    cache: SelectorCache,
    listeners: Vec<String>,
}

fn uses_node_selectors(model: &Model) -> bool {
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
        named_ports: model
            .pod(ep)
            .map(|p| p.named_ports.clone())
            .unwrap_or_default(),
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
    /// Compiles every endpoint (or those on `node`).
    pub fn new(model: &Model, node: Option<&str>, proxy_ports: ProxyPorts) -> Compilation {
        let mut c = Compilation {
            endpoints: endpoints(model, node),
            policies: HashMap::new(),
            proxy_ports,
            cache: SelectorCache::new(model),
            listeners: mapstate::listeners(model),
        };
        let reps: Vec<(Class, EndpointRef)> = {
            let mut seen = HashSet::new();
            c.endpoints
                .iter()
                .filter(|e| seen.insert(e.class.clone()))
                .map(|e| (e.class.clone(), e.endpoint))
                .collect()
        };
        for (class, ep) in reps {
            let p = mapstate::compute(model, &mut c.cache, ep, &c.proxy_ports, &c.listeners);
            c.policies.insert(class, Arc::new(p));
        }
        c
    }

    /// The map state of an endpoint.
    pub fn policy(&self, e: &CompiledEndpoint) -> Option<&Arc<EndpointPolicy>> {
        self.policies.get(&e.class)
    }

    /// After the rules of one policy changed in `model` (already updated, identities
    /// unchanged), recomputes the classes whose endpoints the old or new rules select, and
    /// returns how many classes were recomputed.
    pub fn update(&mut self, model: &Model, old_rules: &[Rule], new_rules: &[Rule]) -> usize {
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
        for (class, ep) in &affected {
            let p = mapstate::compute(
                model,
                &mut self.cache,
                *ep,
                &self.proxy_ports,
                &self.listeners,
            );
            self.policies.insert(class.clone(), Arc::new(p));
        }
        affected.len()
    }

    /// How many map entries each endpoint needs, and the largest.
    pub fn entry_counts(&self) -> Vec<(usize, usize)> {
        self.endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (i, self.policy(e).map_or(0, |p| p.map.len())))
            .collect()
    }
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
    }
}
