//! The cluster: Namespaces, Pods, Nodes and Services as `kubectl get ns,pods,nodes,svc -A -o
//! yaml` shows them, turned into what the agent knows about each endpoint.
//!
//! Choices:
//! - A pod with `hostNetwork: true` is not an endpoint: its traffic is its node's host
//!   traffic, with the node's identity.
//! - A namespace polc has no object for gets the label Kubernetes always sets,
//!   `kubernetes.io/metadata.name=<name>`.
//! - Nodes labelled `node-role.kubernetes.io/control-plane` (or `master`) are taken to run
//!   the kube-apiserver: as remote nodes they have identity 7 (`kube-apiserver`).
//! - Pods that have finished (`Succeeded`, `Failed`) are not endpoints.

use crate::diag::{Code, Diagnostic};
use crate::ir::{PeerKind, Peers, PolicySet, Proto, Requirement, Selector};
use crate::labels::{Label, LabelFilter, LabelSet, PodFacts, pod_security_labels};
use crate::raw::decode::Labels;
use crate::raw::{Body, Kind, Object};
use crate::source::Loc;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::str::FromStr;

/// A namespace.
#[derive(Clone, Debug)]
pub struct Namespace {
    /// The name.
    pub name: String,
    /// Its labels.
    pub labels: Vec<(String, String)>,
}

/// A named container port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedPort {
    /// The name, lower-cased.
    pub name: String,
    /// The protocol.
    pub proto: Proto,
    /// The number.
    pub port: u16,
}

/// A pod.
#[derive(Clone, Debug)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Pod labels.
    pub labels: Vec<(String, String)>,
    /// `spec.nodeName`.
    pub node: String,
    /// `spec.serviceAccountName`, or `default`.
    pub service_account: String,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// `status.podIPs` (or `status.podIP`).
    pub ips: Vec<IpAddr>,
    /// Named container ports.
    pub named_ports: Vec<NamedPort>,
    /// Where the pod is.
    pub loc: Loc,
}

impl Pod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The pod an object describes, as the inventory keeps it; `None` when the object is not
    /// a pod, or a pod that has finished (`Succeeded`, `Failed`: it holds no address).
    pub fn of(obj: &Object) -> Option<Pod> {
        let Body::Pod { spec, status } = &obj.body else {
            return None;
        };
        let phase = status
            .as_ref()
            .and_then(|s| s.phase.as_ref())
            .map(|p| p.value.as_str());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return None;
        }
        let mut ips: Vec<IpAddr> = status
            .as_ref()
            .and_then(|s| s.pod_ips.as_ref())
            .map(|v| {
                v.iter()
                    .filter_map(|p| p.ip.as_ref().and_then(|i| parse_ip(&i.value)))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(ip) = status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .and_then(|i| parse_ip(&i.value))
            && !ips.contains(&ip)
        {
            ips.insert(0, ip);
        }
        let spec = spec.as_ref();
        let sa = spec
            .and_then(|s| {
                s.service_account_name
                    .as_ref()
                    .or(s.service_account.as_ref())
            })
            .map_or("default", |s| s.value.as_str());
        let mut named_ports = Vec::new();
        for c in spec
            .iter()
            .flat_map(|s| s.containers.iter().flat_map(|c| c.iter()))
        {
            for p in c.ports.iter().flat_map(|p| p.iter()) {
                let (Some(name), Some(num)) = (&p.name, &p.container_port) else {
                    return None;
                };
                let proto = p
                    .protocol
                    .as_ref()
                    .and_then(|x| Proto::parse(&x.value))
                    .unwrap_or(Proto::Tcp);
                if let Ok(port) = u16::try_from(num.value) {
                    named_ports.push(NamedPort {
                        name: name.value.to_ascii_lowercase(),
                        proto,
                        port,
                    });
                }
            }
        }
        named_ports.sort();
        named_ports.dedup();
        Some(Pod {
            namespace: obj.namespace().to_string(),
            name: obj.name().to_string(),
            labels: labels_of(obj),
            node: spec
                .and_then(|s| s.node_name.as_ref())
                .map(|n| n.value.clone())
                .unwrap_or_default(),
            service_account: sa.to_string(),
            host_network: spec
                .and_then(|s| s.host_network.as_ref())
                .is_some_and(|h| h.value),
            ips,
            named_ports,
            loc: obj.anchor(),
        })
    }
}

/// A node.
#[derive(Clone, Debug)]
pub struct Node {
    /// Name.
    pub name: String,
    /// Node labels (as `k8s:` labels).
    pub labels: LabelSet,
    /// `status.addresses` that are IPs.
    pub ips: Vec<IpAddr>,
    /// Whether the node runs the kube-apiserver (control-plane role label).
    pub apiserver: bool,
    /// Where the node is.
    pub loc: Loc,
}

/// A Service.
#[derive(Clone, Debug)]
pub struct Service {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Service labels.
    pub labels: LabelSet,
    /// The pod selector, if the Service has one.
    pub selector: Option<Vec<(String, String)>>,
    /// Cluster IPs.
    pub cluster_ips: Vec<IpAddr>,
    /// Where the Service is.
    pub loc: Loc,
}

/// The cluster polc compiles for.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    /// The cluster name (`io.cilium.k8s.policy.cluster`).
    pub cluster_name: String,
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Pods, sorted by namespace and name.
    pub pods: Vec<Pod>,
    /// Nodes, sorted by name.
    pub nodes: Vec<Node>,
    /// Services, sorted by namespace and name.
    pub services: Vec<Service>,
    pod_index: crate::FastMap<(String, String), usize>,
    pub(crate) named_ports: HashMap<String, Vec<(Proto, u16)>>,
}

fn pairs(labels: Option<&Labels>) -> Vec<(String, String)> {
    labels
        .map(|l| {
            l.0.iter()
                .map(|(k, v)| (k.value.clone(), v.value.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// An object's `metadata.labels`.
fn labels_of(obj: &Object) -> Vec<(String, String)> {
    obj.meta
        .labels
        .as_ref()
        .map(|l| pairs(Some(&l.value)))
        .unwrap_or_default()
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    IpAddr::from_str(s.trim()).ok()
}

impl Inventory {
    /// Builds the inventory from the Namespace, Pod, Node and Service objects among
    /// `objects`; other objects are ignored. Duplicates and pods without a usable address are
    /// reported.
    pub fn from_objects<'a>(
        objects: impl IntoIterator<Item = &'a Object>,
        cluster_name: &str,
    ) -> (Inventory, Vec<Diagnostic>) {
        Inventory::with_pods(objects, Vec::new(), cluster_name)
    }

    /// [`Inventory::from_objects`] with `pods` read already ([`Pod::of`]) besides those
    /// among the objects.
    pub fn with_pods<'a>(
        objects: impl IntoIterator<Item = &'a Object>,
        pods: Vec<Pod>,
        cluster_name: &str,
    ) -> (Inventory, Vec<Diagnostic>) {
        let mut inv = Inventory {
            cluster_name: cluster_name.to_string(),
            pods,
            ..Default::default()
        };
        let mut diags = Vec::new();
        for obj in objects {
            let labels = || labels_of(obj);
            match (&obj.kind, &obj.body) {
                (Kind::Namespace, _) => {
                    inv.namespaces.insert(
                        obj.name().to_string(),
                        Namespace {
                            name: obj.name().to_string(),
                            labels: labels(),
                        },
                    );
                }
                (Kind::Pod, Body::Pod { .. }) => {
                    if let Some(p) = Pod::of(obj) {
                        inv.pods.push(p);
                    }
                }
                (Kind::Node, Body::Node { status, .. }) => {
                    let labels: LabelSet = labels().iter().map(|(k, v)| Label::k8s(k, v)).collect();
                    let apiserver = labels
                        .lookup("node-role.kubernetes.io/control-plane")
                        .is_some()
                        || labels.lookup("node-role.kubernetes.io/master").is_some();
                    let ips = status
                        .as_ref()
                        .and_then(|s| s.addresses.as_ref())
                        .map(|a| {
                            a.iter()
                                .filter(|x| {
                                    x.address_type.as_ref().is_none_or(|t| {
                                        matches!(t.value.as_str(), "InternalIP" | "ExternalIP")
                                    })
                                })
                                .filter_map(|x| x.address.as_ref().and_then(|i| parse_ip(&i.value)))
                                .collect()
                        })
                        .unwrap_or_default();
                    inv.nodes.push(Node {
                        name: obj.name().to_string(),
                        labels,
                        ips,
                        apiserver,
                        loc: obj.anchor(),
                    });
                }
                (Kind::Service, Body::Service(spec)) => {
                    let spec = spec.as_ref();
                    let selector = spec
                        .and_then(|s| s.selector.as_ref())
                        .map(|s| pairs(Some(&s.value)))
                        .filter(|s| !s.is_empty());
                    let mut cluster_ips: Vec<IpAddr> = spec
                        .and_then(|s| s.cluster_ips.as_ref())
                        .map(|v| v.iter().filter_map(|i| parse_ip(&i.value)).collect())
                        .unwrap_or_default();
                    if let Some(ip) = spec
                        .and_then(|s| s.cluster_ip.as_ref())
                        .and_then(|i| parse_ip(&i.value))
                        && !cluster_ips.contains(&ip)
                    {
                        cluster_ips.insert(0, ip);
                    }
                    inv.services.push(Service {
                        namespace: obj.namespace().to_string(),
                        name: obj.name().to_string(),
                        labels: labels().iter().map(|(k, v)| Label::k8s(k, v)).collect(),
                        selector,
                        cluster_ips,
                        loc: obj.anchor(),
                    });
                }
                _ => {}
            }
        }
        inv.pods
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        inv.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        inv.services
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        dedup_by_key(&mut inv.pods, |p| p.key(), |p| p.loc, "Pod", &mut diags);
        dedup_by_key(
            &mut inv.nodes,
            |n| n.name.clone(),
            |n| n.loc,
            "Node",
            &mut diags,
        );
        dedup_by_key(
            &mut inv.services,
            |s| format!("{}/{}", s.namespace, s.name),
            |s| s.loc,
            "Service",
            &mut diags,
        );
        for p in &inv.pods {
            if !inv.namespaces.contains_key(&p.namespace) {
                let ns = p.namespace.clone();
                inv.namespaces.insert(
                    ns.clone(),
                    Namespace {
                        name: ns.clone(),
                        labels: vec![("kubernetes.io/metadata.name".into(), ns)],
                    },
                );
            }
        }
        inv.reindex();
        let mut seen: HashMap<IpAddr, String> = HashMap::new();
        for p in inv.pods.iter().filter(|p| !p.host_network) {
            for ip in &p.ips {
                if let Some(other) = seen.insert(*ip, p.key()) {
                    diags.push(
                        Diagnostic::new(
                            Code::DuplicateInventoryObject,
                            p.loc,
                            format!(
                                "pod {} has address {ip}, which pod {other} has too",
                                p.key()
                            ),
                        )
                        .label("duplicate pod address")
                        .help("each pod address belongs to one pod; check the inventory dump"),
                    );
                }
            }
        }
        (inv, diags)
    }

    pub(crate) fn reindex(&mut self) {
        let mut named: HashMap<String, Vec<(Proto, u16)>> = HashMap::new();
        for n in self.pods.iter().flat_map(|p| p.named_ports.iter()) {
            named
                .entry(n.name.clone())
                .or_default()
                .push((n.proto, n.port));
        }
        for v in named.values_mut() {
            v.sort();
            v.dedup();
        }
        self.named_ports = named;
        self.pod_index = self
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.namespace.clone(), p.name.clone()), i))
            .collect();
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pod_index
            .get(&(namespace.to_string(), name.to_string()))
            .map(|&i| &self.pods[i])
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// The labels of a namespace.
    pub fn namespace_labels<'a>(&'a self, ns: &'a str) -> Vec<(&'a str, &'a str)> {
        match self.namespaces.get(ns) {
            Some(n) => n
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            None => vec![("kubernetes.io/metadata.name", ns)],
        }
    }

    /// A pod's security labels, as the agent derives them.
    pub fn pod_labels(&self, pod: &Pod, filter: &LabelFilter) -> LabelSet {
        let facts = PodFacts {
            labels: pod
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            namespace: &pod.namespace,
            namespace_labels: self.namespace_labels(&pod.namespace),
            service_account: &pod.service_account,
            cluster: &self.cluster_name,
        };
        pod_security_labels(&facts, filter)
    }

    /// Resolves every `toServices` peer against the Services: a Service with a selector
    /// becomes an endpoint selector on its pods (in its namespace); a Service without one
    /// selects nothing, because its EndpointSlices are not part of the inventory.
    pub fn bind_services(&self, set: &mut PolicySet) {
        let names_services = |r: &crate::ir::Rule| {
            r.items.iter().any(|it| {
                matches!(&it.peers, Peers::List(peers)
                    if peers.iter().any(|p| matches!(p.kind, PeerKind::Service(_))))
            })
        };
        // Rules are shared (`Arc`): only those with Service peers are copied to be bound.
        for rule in set.rules.iter_mut().filter(|r| names_services(r)) {
            let rule = std::sync::Arc::make_mut(rule);
            for item in &mut rule.items {
                let Peers::List(peers) = &mut item.peers else {
                    continue;
                };
                let mut out = Vec::with_capacity(peers.len());
                for p in peers.drain(..) {
                    let PeerKind::Service(r) = &p.kind else {
                        out.push(p);
                        continue;
                    };
                    let mut found = false;
                    for svc in &self.services {
                        if r.namespace.as_ref().is_some_and(|n| *n != svc.namespace) {
                            continue;
                        }
                        let hit = match (&r.selector, &r.name) {
                            (Some(sel), _) => sel.matches(&svc.labels),
                            (None, Some(name)) => *name == svc.name,
                            (None, None) => true,
                        };
                        if !hit {
                            continue;
                        }
                        found = true;
                        let kind = match &svc.selector {
                            Some(sel) => {
                                let mut reqs: Vec<Requirement> = sel
                                    .iter()
                                    .map(|(k, v)| Requirement::equals(format!("k8s:{k}"), v))
                                    .collect();
                                reqs.push(Requirement::equals(
                                    "k8s:io.kubernetes.pod.namespace",
                                    svc.namespace.as_str(),
                                ));
                                PeerKind::Endpoints(Selector::new(reqs))
                            }
                            None => PeerKind::Unresolved(format!(
                                "Service {}/{} has no selector; its endpoints are not in the \
                                 inventory",
                                svc.namespace, svc.name
                            )),
                        };
                        out.push(crate::ir::Peer { kind, loc: p.loc });
                    }
                    if !found {
                        out.push(crate::ir::Peer {
                            kind: PeerKind::Unresolved(format!("no Service matches {r}")),
                            loc: p.loc,
                        });
                    }
                }
                *peers = out;
            }
        }
    }

    /// Whether any address in the inventory is IPv6 and any is IPv4 (dual-stack).
    pub fn is_dual_stack(&self) -> bool {
        let addrs = self
            .pods
            .iter()
            .flat_map(|p| p.ips.iter())
            .chain(self.nodes.iter().flat_map(|n| n.ips.iter()));
        let (mut v4, mut v6) = (false, false);
        for a in addrs {
            v4 |= a.is_ipv4();
            v6 |= a.is_ipv6();
        }
        v4 && v6
    }

    /// Every named port any pod defines with this name (egress named ports resolve
    /// cluster-wide).
    pub fn named_ports_anywhere(&self, name: &str) -> &[(Proto, u16)] {
        self.named_ports.get(name).map_or(&[], Vec::as_slice)
    }
}

fn dedup_by_key<T>(
    v: &mut Vec<T>,
    key: impl Fn(&T) -> String,
    loc: impl Fn(&T) -> Loc,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) {
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for x in v.drain(..) {
        if out.last().is_some_and(|l| key(l) == key(&x)) {
            diags.push(
                Diagnostic::new(
                    Code::DuplicateInventoryObject,
                    loc(&x),
                    format!("{what} {} appears twice in the inventory", key(&x)),
                )
                .label("duplicate")
                .help("polc keeps the first; remove one of them"),
            );
            continue;
        }
        out.push(x);
    }
    *v = out;
}
