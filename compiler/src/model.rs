//! A model: the policies lowered and bound to a cluster, with the cluster's identities. The
//! evaluator, the map state and the commands all start from one.

use crate::diag::Diagnostic;
use crate::identity::IdentityTable;
use crate::inventory::{Inventory, Pod};
use crate::ir::{Direction, PeerKind, Peers, PolicySet, Rule, Selector, Subject};
use crate::labels::{LabelFilter, LabelSet};
use crate::raw::Object;
use crate::version::CiliumVersion;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// The agent's `enable-policy` mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Enforcement {
    /// Endpoints are enforced in a direction once a rule selects them there.
    #[default]
    Default,
    /// Every endpoint is default-deny in both directions.
    Always,
    /// No policy is enforced.
    Never,
}

/// Agent settings the semantics depend on.
#[derive(Clone, Debug)]
pub struct Config {
    /// The target release.
    pub version: CiliumVersion,
    /// The cluster name.
    pub cluster_name: String,
    /// `enable-policy`.
    pub enforcement: Enforcement,
    /// `allow-localhost=always` (the Kubernetes default): the local host reaches its pods.
    pub allow_localhost: bool,
    /// Dual-stack (world split into `world-ipv4` / `world-ipv6`); `None` = decide from the
    /// inventory's addresses.
    pub dual_stack: Option<bool>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: CiliumVersion::default(),
            cluster_name: "default".into(),
            enforcement: Enforcement::Default,
            allow_localhost: true,
            dual_stack: None,
        }
    }
}

/// An endpoint that enforces policy: a pod, or a node's host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointRef {
    /// An inventory pod (index).
    Pod(usize),
    /// A node's host endpoint (node index).
    Host(usize),
}

/// Policies bound to a cluster.
#[derive(Clone, Debug)]
pub struct Model {
    /// The rules, with `toServices` bound to the inventory.
    pub policies: PolicySet,
    /// The cluster (shared by the two models of a diff).
    pub inventory: Arc<Inventory>,
    /// Its identities.
    pub identities: IdentityTable,
    /// The agent settings.
    pub config: Config,
    /// Security labels per inventory pod (empty for host-network pods; shared by the two
    /// models of a diff).
    pub pod_labels: Arc<Vec<LabelSet>>,
    /// Names the DNS proxy has seen resolve to addresses (lower case, with the trailing
    /// dot): what `toFQDNs` peers select. Empty unless given: polc does not see DNS traffic,
    /// so by default a `toFQDNs` peer selects no address. The verifier's replays fill it
    /// with the answers an example assumes.
    pub dns_answers: Vec<(String, std::net::IpAddr)>,
    /// Rules whose subject pins a namespace, by namespace (indices into `policies.rules`).
    by_namespace: HashMap<String, Vec<usize>>,
    /// The other rules.
    unpinned: Vec<usize>,
}

impl Model {
    /// Lowers `objects` (policies and inventory together) into a model.
    pub fn build(objects: &[Object], config: Config) -> (Model, Vec<Diagnostic>) {
        let (policies, inventory, diags) = Model::parts(objects, &config);
        (Model::from_parts(policies, inventory, config), diags)
    }

    /// [`Model::build`] for judging flows between the inventory and the outside addresses
    /// `outside` only (see [`Model::for_addresses`]).
    pub fn build_for(
        objects: &[Object],
        config: Config,
        outside: &[IpAddr],
    ) -> (Model, Vec<Diagnostic>) {
        let (policies, inventory, diags) = Model::parts(objects, &config);
        (
            Model::for_addresses(policies, inventory, config, outside),
            diags,
        )
    }

    /// `objects` lowered, their inventory, and the Services bound.
    fn parts(objects: &[Object], config: &Config) -> (PolicySet, Inventory, Vec<Diagnostic>) {
        let (mut policies, mut diags) = crate::lower::lower(objects, config.version);
        let (inventory, inv_diags) = Inventory::from_objects(objects, &config.cluster_name);
        diags.extend(inv_diags);
        inventory.bind_services(&mut policies);
        (policies, inventory, diags)
    }

    /// A model from lowered policies and an inventory (services already bound).
    pub fn from_parts(policies: PolicySet, inventory: Inventory, config: Config) -> Model {
        Model::with_prefixes(policies, inventory, config, None)
    }

    /// Takes DNS answers (name, address) as the DNS proxy's: `toFQDNs` peers select the
    /// addresses of the names they match ([`Model::dns_answers`]), which get identities
    /// ([`IdentityTable::learn_fqdns`]). Replaces the answers given before.
    pub fn learn_dns(&mut self, answers: Vec<(String, IpAddr)>) {
        let answers: Vec<(String, IpAddr)> = answers
            .into_iter()
            .map(|(n, ip)| (crate::eval::fqdn(&n), ip))
            .collect();
        let selectors = self.policies.fqdn_selectors();
        let prefixes = self.policies.prefixes();
        self.identities
            .learn_fqdns(&answers, &selectors, &prefixes, &self.inventory);
        self.dns_answers = answers;
    }

    /// [`Model::from_parts`] for judging flows between the inventory and the outside
    /// addresses `outside` only: the CIDR identities are those of the policies' prefixes that
    /// hold one of these or of the inventory's addresses. The identity of an address is that
    /// of the longest prefix holding it, with the labels of every prefix holding it, so
    /// leaving out prefixes that hold none of the addresses changes no verdict of such a
    /// flow. It is how a one-pod example is judged under thousands of CIDR groups' prefixes
    /// without an identity for each.
    pub fn for_addresses(
        policies: PolicySet,
        inventory: Inventory,
        config: Config,
        outside: &[IpAddr],
    ) -> Model {
        let mut addresses: Vec<IpAddr> = outside.to_vec();
        addresses.extend(inventory.pods.iter().flat_map(|p| p.ips.iter().copied()));
        addresses.extend(inventory.nodes.iter().flat_map(|n| n.ips.iter().copied()));
        Model::with_prefixes(policies, inventory, config, Some(&addresses))
    }

    /// A model whose CIDR identities are those of the policies' prefixes (that hold one of
    /// `addresses`, when given).
    fn with_prefixes(
        policies: PolicySet,
        inventory: Inventory,
        config: Config,
        addresses: Option<&[IpAddr]>,
    ) -> Model {
        let pod_labels = security_labels(&inventory, &config);
        let identities = identities_for(&inventory, &pod_labels, &[&policies], &config, addresses);
        Model::assemble(
            policies,
            Arc::new(inventory),
            identities,
            config,
            Arc::new(pod_labels),
        )
    }

    /// Two models of one cluster, for comparing two policy sets (services already bound):
    /// the pod labels are worked out once, and the two share one identity table, with CIDR
    /// identities for the prefixes either set names and per-node identities if either
    /// selects nodes. That is what lets a diff recompute only what a changed rule reaches.
    ///
    /// A prefix only the other set names changes nothing for the verdicts of this one: CIDR
    /// peers match addresses by containment, and entities and endpoint selectors see the
    /// same `world` labels on every CIDR identity. Only a selector that names a `cidr:`
    /// label (it matches the most specific named prefix's label alone) could tell; if one
    /// does, each model gets the identities of its own policies.
    pub fn pair(
        old: PolicySet,
        new: PolicySet,
        inventory: Inventory,
        config: Config,
    ) -> (Model, Model) {
        let pod_labels = security_labels(&inventory, &config);
        let (old_ids, new_ids) = if names_cidr_labels(&old) || names_cidr_labels(&new) {
            (
                identities_for(&inventory, &pod_labels, &[&old], &config, None),
                identities_for(&inventory, &pod_labels, &[&new], &config, None),
            )
        } else {
            let shared = identities_for(&inventory, &pod_labels, &[&old, &new], &config, None);
            (shared.clone(), shared)
        };
        let (inventory, pod_labels) = (Arc::new(inventory), Arc::new(pod_labels));
        let old = Model::assemble(
            old,
            inventory.clone(),
            old_ids,
            config.clone(),
            pod_labels.clone(),
        );
        let new = Model::assemble(new, inventory, new_ids, config, pod_labels);
        (old, new)
    }

    fn assemble(
        policies: PolicySet,
        inventory: Arc<Inventory>,
        identities: IdentityTable,
        config: Config,
        pod_labels: Arc<Vec<LabelSet>>,
    ) -> Model {
        let mut model = Model {
            policies,
            inventory,
            identities,
            config,
            pod_labels,
            dns_answers: Vec::new(),
            by_namespace: HashMap::new(),
            unpinned: Vec::new(),
        };
        model.reindex();
        model
    }

    /// Rebuilds the rule index after `policies.rules` changed.
    pub fn reindex(&mut self) {
        self.by_namespace.clear();
        self.unpinned.clear();
        for (i, r) in self.policies.rules.iter().enumerate() {
            match &r.subject {
                Subject::Endpoints(sel) => match sel.pinned(crate::labels::POD_NAMESPACE) {
                    Some(ns) => self.by_namespace.entry(ns.to_string()).or_default().push(i),
                    None => self.unpinned.push(i),
                },
                Subject::Nodes(_) => self.unpinned.push(i),
            }
        }
    }

    /// The pod behind an endpoint reference, if it is a pod.
    pub fn pod(&self, ep: EndpointRef) -> Option<&Pod> {
        match ep {
            EndpointRef::Pod(i) => self.inventory.pods.get(i),
            EndpointRef::Host(_) => None,
        }
    }

    /// The node an endpoint runs on.
    pub fn node_of(&self, ep: EndpointRef) -> Option<&crate::inventory::Node> {
        match ep {
            EndpointRef::Pod(i) => self
                .inventory
                .pods
                .get(i)
                .and_then(|p| self.inventory.node(&p.node)),
            EndpointRef::Host(n) => self.inventory.nodes.get(n),
        }
    }

    /// The identity of an endpoint as its own node sees it.
    pub fn identity_of(&self, ep: EndpointRef) -> Option<u32> {
        match ep {
            EndpointRef::Pod(i) => self.identities.pod_identity.get(i).copied().flatten(),
            EndpointRef::Host(_) => Some(crate::identity::HOST),
        }
    }

    /// Whether a rule applies to an endpoint.
    pub fn selects(&self, rule: &Rule, ep: EndpointRef) -> bool {
        match (&rule.subject, ep) {
            (Subject::Endpoints(sel), EndpointRef::Pod(i)) => self
                .pod_labels
                .get(i)
                .is_some_and(|l| !l.is_empty() && sel.matches(l)),
            (Subject::Nodes(sel), EndpointRef::Host(n)) => self
                .inventory
                .nodes
                .get(n)
                .is_some_and(|node| sel.matches(&node.labels)),
            _ => false,
        }
    }

    /// The rules that apply to an endpoint.
    pub fn rules_for(&self, ep: EndpointRef) -> Vec<&Rule> {
        self.rule_indices_for(ep)
            .into_iter()
            .map(|i| &*self.policies.rules[i])
            .collect()
    }

    /// The indices (into `policies.rules`) of the rules that apply to an endpoint, in input
    /// order.
    pub fn rule_indices_for(&self, ep: EndpointRef) -> Vec<usize> {
        let pinned = self
            .pod(ep)
            .and_then(|p| self.by_namespace.get(&p.namespace))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut idx: Vec<usize> = pinned
            .iter()
            .chain(self.unpinned.iter())
            .copied()
            .filter(|&i| self.selects(&self.policies.rules[i], ep))
            .collect();
        // Input order, as the agent sees the rules.
        idx.sort_unstable();
        idx
    }

    /// Whether an endpoint is default-deny in a direction, and the rules that make it so.
    pub fn enforced<'a>(&self, rules: &[&'a Rule], dir: Direction) -> (bool, Vec<&'a Rule>) {
        match self.config.enforcement {
            Enforcement::Never => (false, Vec::new()),
            Enforcement::Always => (true, Vec::new()),
            Enforcement::Default => {
                let by: Vec<&Rule> = rules
                    .iter()
                    .copied()
                    .filter(|r| r.default_deny(dir))
                    .collect();
                (!by.is_empty(), by)
            }
        }
    }

    /// Adds, replaces and removes pods (`None`: the pod `namespace/name` is gone), keeping
    /// everything that depends on the pods in step as a model built afresh would have it,
    /// with the identities numbered as this model numbered them (see
    /// [`IdentityTable::assign_pods`]). Namespaces, nodes, services and policies stay as
    /// they are.
    pub fn update_pods(&mut self, changes: BTreeMap<(String, String), Option<Pod>>) -> PodChanges {
        let filter = LabelFilter::default_for(self.config.version);
        let labelled: Vec<(PodKey, Option<(Pod, LabelSet)>)> = changes
            .into_iter()
            .map(|(k, p)| {
                let p = p.map(|p| {
                    let l = if p.host_network {
                        LabelSet::new()
                    } else {
                        self.inventory.pod_labels(&p, &filter)
                    };
                    (p, l)
                });
                (k, p)
            })
            .collect();
        let inventory = Arc::make_mut(&mut self.inventory);
        let named_before = inventory.named_ports.clone();
        let old_pods = std::mem::take(&mut inventory.pods);
        let old_labels = std::mem::take(Arc::make_mut(&mut self.pod_labels));
        let old_ids = std::mem::take(&mut self.identities.pod_identity);
        let mut pods = Vec::with_capacity(old_pods.len() + labelled.len());
        let mut labels = Vec::with_capacity(pods.capacity());
        let mut ids = Vec::with_capacity(pods.capacity());
        // The pods that came or changed, by their new index.
        let mut new: Vec<usize> = Vec::new();
        let mut came = labelled.into_iter().peekable();
        let old = old_pods.into_iter().zip(old_labels).zip(old_ids);
        for ((pod, l), id) in old {
            let key = (pod.namespace.as_str(), pod.name.as_str());
            let mut replaced = false;
            while let Some((k, change)) = came.next_if(|(k, _)| (k.0.as_str(), k.1.as_str()) <= key)
            {
                replaced |= (k.0.as_str(), k.1.as_str()) == key;
                if let Some((p, l)) = change {
                    new.push(pods.len());
                    pods.push(p);
                    labels.push(l);
                    ids.push(None);
                }
            }
            if !replaced {
                pods.push(pod);
                labels.push(l);
                ids.push(id);
            }
        }
        for (_, change) in came {
            if let Some((p, l)) = change {
                new.push(pods.len());
                pods.push(p);
                labels.push(l);
                ids.push(None);
            }
        }
        inventory.pods = pods;
        for p in &inventory.pods {
            if !inventory.namespaces.contains_key(&p.namespace) {
                inventory.namespaces.insert(
                    p.namespace.clone(),
                    crate::inventory::Namespace {
                        name: p.namespace.clone(),
                        labels: vec![("kubernetes.io/metadata.name".into(), p.namespace.clone())],
                    },
                );
            }
        }
        inventory.reindex();
        let named_ports = inventory.named_ports != named_before;
        let dual = self
            .config
            .dual_stack
            .unwrap_or_else(|| inventory.is_dual_stack());
        let of: Vec<(usize, Option<&LabelSet>)> = new
            .iter()
            .map(|&i| (i, (!inventory.pods[i].host_network).then_some(&labels[i])))
            .collect();
        let (added, removed) = self.identities.assign_pods(ids, &of);
        *Arc::make_mut(&mut self.pod_labels) = labels;
        PodChanges {
            added,
            removed,
            named_ports,
            dual_stack_changed: dual != self.identities.dual_stack,
        }
    }

    /// Every endpoint: pods that are not host-network, then every node's host.
    pub fn endpoints(&self) -> Vec<EndpointRef> {
        let pods = self
            .inventory
            .pods
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.host_network)
            .map(|(i, _)| EndpointRef::Pod(i));
        let hosts = (0..self.inventory.nodes.len()).map(EndpointRef::Host);
        pods.chain(hosts).collect()
    }
}

/// A pod's namespace and name.
pub type PodKey = (String, String);

/// What [`Model::update_pods`] changed besides the pods.
#[derive(Clone, Debug, Default)]
pub struct PodChanges {
    /// Identities that came (new label sets).
    pub added: Vec<u32>,
    /// Identities that went (no pod has their labels any more).
    pub removed: Vec<u32>,
    /// Whether the named ports defined anywhere changed (egress named ports resolve on them).
    pub named_ports: bool,
    /// Whether the cluster became dual-stack or stopped being so: every CIDR and world
    /// identity changes, which this update does not do; build the model afresh.
    pub dual_stack_changed: bool,
}

/// The security labels of every inventory pod (empty for host-network pods).
fn security_labels(inventory: &Inventory, config: &Config) -> Vec<LabelSet> {
    use rayon::prelude::*;
    let filter = LabelFilter::default_for(config.version);
    inventory
        .pods
        .par_iter()
        .map(|p| {
            if p.host_network {
                LabelSet::new()
            } else {
                inventory.pod_labels(p, &filter)
            }
        })
        .collect()
}

/// The identities of a cluster with the prefixes (those that hold one of `addresses`, when
/// given) and node selectors of `policies`.
fn identities_for(
    inventory: &Inventory,
    pod_labels: &[LabelSet],
    policies: &[&PolicySet],
    config: &Config,
    addresses: Option<&[IpAddr]>,
) -> IdentityTable {
    let dual = config
        .dual_stack
        .unwrap_or_else(|| inventory.is_dual_stack());
    let labels: Vec<Option<&LabelSet>> = inventory
        .pods
        .iter()
        .zip(pod_labels)
        .map(|(p, l)| (!p.host_network).then_some(l))
        .collect();
    let mut prefixes: Vec<ipnet::IpNet> = policies.iter().flat_map(|p| p.prefixes()).collect();
    if let Some(addresses) = addresses {
        prefixes.retain(|net| addresses.iter().any(|a| net.contains(a)));
    }
    prefixes.sort();
    prefixes.dedup();
    let node_selectors = policies
        .iter()
        .any(|p| crate::identity::uses_node_selectors(p));
    IdentityTable::allocate_for(inventory, &labels, &prefixes, node_selectors, dual)
}

/// Whether `key` is the key of a `cidr:` label: `10.0.0.0/8`, or `f00d--/16` (IPv6, with
/// `-` for `:`).
fn is_cidr_label_key(key: &str) -> bool {
    let Some((addr, len)) = key.rsplit_once('/') else {
        return false;
    };
    len.parse::<u8>().is_ok()
        && (addr.parse::<std::net::Ipv4Addr>().is_ok()
            || addr.replace('-', ":").parse::<std::net::Ipv6Addr>().is_ok())
}

/// Whether a selector of `policies` names a `cidr:` label (or a label of any source whose
/// key is a prefix), which tells CIDR identities apart by the prefixes named.
fn names_cidr_labels(policies: &PolicySet) -> bool {
    let names = |sel: &Selector| {
        sel.reqs.iter().any(|r| {
            let (source, key) = crate::labels::split_selector_key(&r.key);
            matches!(source, "cidr" | crate::labels::SOURCE_ANY) && is_cidr_label_key(key)
        })
    };
    policies.rules.iter().any(|r| {
        let subject = match &r.subject {
            Subject::Endpoints(sel) | Subject::Nodes(sel) => names(sel),
        };
        subject
            || r.requires
                .ingress
                .iter()
                .chain(&r.requires.egress)
                .any(names)
            || r.items.iter().any(|i| match &i.peers {
                Peers::List(peers) => peers.iter().any(|p| match &p.kind {
                    PeerKind::Endpoints(sel) | PeerKind::Nodes(sel) => names(sel),
                    _ => false,
                }),
                Peers::Any => false,
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_label_keys() {
        for key in ["10.0.0.0/8", "0.0.0.0/0", "f00d--/16", "2001-db8--1/128"] {
            assert!(is_cidr_label_key(key), "{key}");
        }
        for key in [
            "app.kubernetes.io/name",
            "app",
            "10.0.0.0",
            "a/8",
            "10.0.0.0/x",
        ] {
            assert!(!is_cidr_label_key(key), "{key}");
        }
    }
}
