//! Identities: reserved, cluster (one per distinct security label set), CIDR (node-local
//! scope) and per-node; and the ipcache that maps addresses to them (datapath spec §1).
//!
//! Allocation is deterministic, because polc has no identity allocator to ask: cluster
//! identities are numbered from 256 in the order of their allocation keys, CIDR identities
//! from `0x01000001` in prefix order, per-node identities from `0x02000001` in node-name
//! order. Real clusters number them differently; the numbers are consistent within one
//! compile, which is what the map state and the verdicts depend on.
//!
//! Per-node identities exist only when a policy selects nodes by label (`fromNodes` /
//! `toNodes`, which need `enable-node-selector-labels`); otherwise every other node is
//! `remote-node` (6), or `kube-apiserver` (7) when it runs the apiserver.

use crate::inventory::Inventory;
use crate::ir::{Entity, PeerKind, PolicySet};
use crate::labels::{Label, LabelFilter, LabelSet, SOURCE_RESERVED};
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// `reserved:host`.
pub const HOST: u32 = 1;
/// `reserved:world`.
pub const WORLD: u32 = 2;
/// `reserved:unmanaged`.
pub const UNMANAGED: u32 = 3;
/// `reserved:health`.
pub const HEALTH: u32 = 4;
/// `reserved:init`.
pub const INIT: u32 = 5;
/// `reserved:remote-node`.
pub const REMOTE_NODE: u32 = 6;
/// `reserved:kube-apiserver` (+ `reserved:remote-node`).
pub const KUBE_APISERVER: u32 = 7;
/// `reserved:ingress`.
pub const INGRESS: u32 = 8;
/// `reserved:world-ipv4`.
pub const WORLD_IPV4: u32 = 9;
/// `reserved:world-ipv6`.
pub const WORLD_IPV6: u32 = 10;
/// The first cluster identity (cluster ID 0).
pub const FIRST_CLUSTER: u32 = 256;
/// The local (CIDR) scope flag.
pub const LOCAL_SCOPE: u32 = 1 << 24;
/// The remote-node scope flag.
pub const NODE_SCOPE: u32 = 2 << 24;

/// What an identity stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityKind {
    /// A reserved identity (1-10).
    Reserved,
    /// Pods with one security label set.
    Pods,
    /// A CIDR prefix named by policy.
    Cidr(IpNet),
    /// One node (only with node-selector identities).
    Node(String),
    /// Addresses the DNS proxy learnt for `toFQDNs` selectors (datapath spec §1.6): one
    /// identity per label set (`fqdn:` labels of the selectors that select a name resolving
    /// to the address, the world label, and the `cidr:` labels of the policy prefixes holding
    /// it); one of its addresses, which all lie in the same policy prefixes.
    Fqdn(IpAddr),
}

/// The label a `toFQDNs` selector (as lowered: `matchName: NAME`, `matchPattern: PATTERN`)
/// gives the addresses it selects: `fqdn:NAME` / `fqdn:PATTERN`.
pub fn fqdn_label(selector: &str) -> Label {
    let text = selector
        .strip_prefix("matchName: ")
        .or_else(|| selector.strip_prefix("matchPattern: "))
        .unwrap_or(selector);
    Label::new("fqdn", &text.trim().to_ascii_lowercase(), "")
}

/// One identity.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The number.
    pub id: u32,
    /// Its labels.
    pub labels: LabelSet,
    /// What it stands for.
    pub kind: IdentityKind,
}

/// The cilium label of a CIDR identity: `cidr:10.0.0.0/8`, IPv6 `:` as `-` (`cidr:f00d--/16`,
/// `0` added where the text would start or end with `-`).
pub fn cidr_label(net: &IpNet) -> Label {
    let mut addr = net.network().to_string().replace(':', "-");
    if addr.starts_with('-') {
        addr.insert(0, '0');
    }
    if addr.ends_with('-') {
        addr.push('0');
    }
    Label::new("cidr", &format!("{addr}/{}", net.prefix_len()), "")
}

/// One ipcache entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpcacheEntry {
    /// The prefix.
    pub prefix: IpNet,
    /// Its identity.
    pub identity: u32,
    /// The node to tunnel to (remote pods).
    pub tunnel_endpoint: Option<IpAddr>,
}

/// Every identity of a cluster, and how addresses map to them.
#[derive(Clone, Debug)]
pub struct IdentityTable {
    identities: Vec<Identity>,
    by_id: crate::FastMap<u32, usize>,
    by_labels: crate::FastMap<LabelSet, u32>,
    /// The identity of each inventory pod (by index; `None` for host-network pods).
    pub pod_identity: Vec<Option<u32>>,
    /// CIDR identities by prefix.
    pub cidrs: BTreeMap<IpNet, u32>,
    /// Identities of addresses learnt from DNS answers (`toFQDNs`).
    pub fqdns: BTreeMap<IpAddr, u32>,
    /// Per-node identities, when policies select nodes by label.
    pub node_identity: BTreeMap<String, u32>,
    /// Whether the cluster is dual-stack (world split into 9 and 10).
    pub dual_stack: bool,
    /// The cluster name.
    pub cluster_name: String,
}

fn reserved(names: &[&str]) -> LabelSet {
    names.iter().map(|n| Label::reserved(n)).collect()
}

impl IdentityTable {
    /// Allocates the identities of `inventory` and of the prefixes `policies` name.
    pub fn allocate(
        inventory: &Inventory,
        policies: &PolicySet,
        filter: &LabelFilter,
        dual_stack: bool,
    ) -> IdentityTable {
        let pod_labels: Vec<Option<LabelSet>> = inventory
            .pods
            .iter()
            .map(|p| (!p.host_network).then(|| inventory.pod_labels(p, filter)))
            .collect();
        let labels: Vec<Option<&LabelSet>> = pod_labels.iter().map(Option::as_ref).collect();
        IdentityTable::allocate_for(
            inventory,
            &labels,
            &policies.prefixes(),
            uses_node_selectors(policies),
            dual_stack,
        )
    }

    /// [`IdentityTable::allocate`] from parts worked out already: the security labels of
    /// each inventory pod (`None` for host-network pods), the prefixes the policies name,
    /// and whether any policy selects nodes by label.
    pub fn allocate_for(
        inventory: &Inventory,
        pod_labels: &[Option<&LabelSet>],
        prefixes: &[IpNet],
        node_selectors: bool,
        dual_stack: bool,
    ) -> IdentityTable {
        let mut identities = vec![
            (HOST, reserved(&["host"])),
            (WORLD, reserved(&["world"])),
            (UNMANAGED, reserved(&["unmanaged"])),
            (HEALTH, reserved(&["health"])),
            (INIT, reserved(&["init"])),
            (REMOTE_NODE, reserved(&["remote-node"])),
            (KUBE_APISERVER, reserved(&["kube-apiserver", "remote-node"])),
            (INGRESS, reserved(&["ingress"])),
            (WORLD_IPV4, reserved(&["world-ipv4"])),
            (WORLD_IPV6, reserved(&["world-ipv6"])),
        ]
        .into_iter()
        .map(|(id, labels)| Identity {
            id,
            labels,
            kind: IdentityKind::Reserved,
        })
        .collect::<Vec<_>>();

        // Pods by allocation key: each run of equal keys is one identity, numbered in key
        // order (the labels of a run are hashed once, not once per pod).
        use rayon::prelude::*;
        let mut keys: Vec<(String, usize)> = pod_labels
            .par_iter()
            .enumerate()
            .filter_map(|(i, l)| l.map(|l| (l.allocation_key(), i)))
            .collect();
        keys.par_sort_unstable();
        let mut by_labels = crate::FastMap::default();
        let mut pod_identity = vec![None; pod_labels.len()];
        for (n, run) in keys.chunk_by(|a, b| a.0 == b.0).enumerate() {
            let id = FIRST_CLUSTER + u32::try_from(n).unwrap_or(u32::MAX - FIRST_CLUSTER);
            let Some(labels) = run.first().and_then(|(_, i)| pod_labels[*i]) else {
                continue;
            };
            by_labels.insert(labels.clone(), id);
            identities.push(Identity {
                id,
                labels: labels.clone(),
                kind: IdentityKind::Pods,
            });
            for (_, i) in run {
                pod_identity[*i] = Some(id);
            }
        }

        let mut cidrs = BTreeMap::new();
        for (i, net) in prefixes
            .iter()
            .copied()
            .filter(|n| n.prefix_len() > 0)
            .enumerate()
        {
            let id = LOCAL_SCOPE | (u32::try_from(i).unwrap_or(0) + 1);
            let world = match (dual_stack, net) {
                (false, _) => "world",
                (true, IpNet::V4(_)) => "world-ipv4",
                (true, IpNet::V6(_)) => "world-ipv6",
            };
            let labels: LabelSet = [cidr_label(&net), Label::reserved(world)]
                .into_iter()
                .collect();
            cidrs.insert(net, id);
            identities.push(Identity {
                id,
                labels,
                kind: IdentityKind::Cidr(net),
            });
        }

        let mut node_identity = BTreeMap::new();
        if node_selectors {
            for (i, node) in inventory.nodes.iter().enumerate() {
                let id = NODE_SCOPE | (u32::try_from(i).unwrap_or(0) + 1);
                let mut labels = node.labels.clone();
                labels.insert(Label::reserved("remote-node"));
                if node.apiserver {
                    labels.insert(Label::reserved("kube-apiserver"));
                }
                node_identity.insert(node.name.clone(), id);
                identities.push(Identity {
                    id,
                    labels,
                    kind: IdentityKind::Node(node.name.clone()),
                });
            }
        }

        let mut table = IdentityTable {
            identities,
            by_id: crate::FastMap::default(),
            by_labels,
            pod_identity,
            cidrs,
            fqdns: BTreeMap::new(),
            node_identity,
            dual_stack,
            cluster_name: inventory.cluster_name.clone(),
        };
        table.index_by_number();
        table
    }

    /// Keeps the numbers `prior` gave (an earlier table of the same cluster): an identity
    /// whose labels (pods, FQDN addresses), prefix (CIDR) or node `prior` has keeps its
    /// number, and a new one gets the next number of its scope that `prior` never used, as
    /// the agent allocates them; so a change numbers afresh only what it adds.
    pub fn keep_numbers(&mut self, prior: &IdentityTable) {
        let mut map: HashMap<u32, u32> = HashMap::new();
        let mut taken: std::collections::HashSet<u32> = std::collections::HashSet::new();
        // What keeps its number.
        for i in &self.identities {
            let kept = match &i.kind {
                IdentityKind::Reserved => Some(i.id),
                IdentityKind::Pods | IdentityKind::Fqdn(_) => {
                    prior.by_labels.get(&i.labels).copied().filter(|id| {
                        prior.get(*id).is_some_and(|p| {
                            std::mem::discriminant(&p.kind) == std::mem::discriminant(&i.kind)
                        })
                    })
                }
                IdentityKind::Cidr(net) => prior.cidrs.get(net).copied(),
                IdentityKind::Node(name) => prior.node_identity.get(name).copied(),
            };
            if let Some(id) = kept
                && taken.insert(id)
            {
                map.insert(i.id, id);
            }
        }
        let used: Vec<u32> = prior.identities.iter().map(|i| i.id).collect();
        self.renumber(map, &used);
    }

    /// Takes the numbers an installed ipcache gives (`installed`: the identity of an exact
    /// prefix), as an agent that restarts finds them on its node: a pod identity takes the
    /// number its pods' addresses have, a CIDR identity its prefix's, a node identity its
    /// node's addresses'; the rest get numbers past every number found. So a restart
    /// rewrites no entry that did not change while the agent was away.
    pub fn adopt_numbers(
        &mut self,
        inventory: &Inventory,
        installed: impl Fn(&IpNet) -> Option<u32>,
    ) {
        let mut map: HashMap<u32, u32> = HashMap::new();
        let mut taken: std::collections::HashSet<u32> = std::collections::HashSet::new();
        let mut keep = |from: u32, to: Option<u32>, scope: std::ops::Range<u32>| {
            if let Some(to) = to.filter(|t| scope.contains(t))
                && !map.contains_key(&from)
                && taken.insert(to)
            {
                map.insert(from, to);
            }
        };
        for (i, p) in inventory.pods.iter().enumerate() {
            if let Some(Some(id)) = self.pod_identity.get(i) {
                for ip in &p.ips {
                    keep(
                        *id,
                        installed(&IpNet::from(*ip)),
                        FIRST_CLUSTER..LOCAL_SCOPE,
                    );
                }
            }
        }
        for (net, id) in &self.cidrs {
            keep(*id, installed(net), LOCAL_SCOPE + 1..NODE_SCOPE);
        }
        for n in &inventory.nodes {
            if let Some(id) = self.node_identity.get(&n.name) {
                for ip in &n.ips {
                    keep(*id, installed(&IpNet::from(*ip)), NODE_SCOPE + 1..u32::MAX);
                }
            }
        }
        for i in &self.identities {
            if i.kind == IdentityKind::Reserved {
                map.insert(i.id, i.id);
            }
        }
        let used: Vec<u32> = taken.into_iter().collect();
        self.renumber(map, &used);
    }

    /// Renumbers: the identities in `kept` take those numbers, the rest the next numbers of
    /// their scope past every number in `used` or `kept` (in their current order).
    fn renumber(&mut self, mut map: HashMap<u32, u32>, used: &[u32]) {
        let taken: Vec<u32> = map.values().copied().collect();
        let next_in = |scope_lo: u32, scope_hi: u32| {
            used.iter()
                .chain(taken.iter())
                .copied()
                .filter(|id| (scope_lo..scope_hi).contains(id))
                .max()
                .map_or(scope_lo, |m| m + 1)
        };
        let mut next_cluster = next_in(FIRST_CLUSTER, LOCAL_SCOPE).max(FIRST_CLUSTER);
        let mut next_local = next_in(LOCAL_SCOPE + 1, NODE_SCOPE).max(LOCAL_SCOPE + 1);
        let mut next_node = next_in(NODE_SCOPE + 1, u32::MAX).max(NODE_SCOPE + 1);
        for i in &self.identities {
            if map.contains_key(&i.id) {
                continue;
            }
            let counter = match &i.kind {
                IdentityKind::Pods => &mut next_cluster,
                IdentityKind::Cidr(_) | IdentityKind::Fqdn(_) => &mut next_local,
                IdentityKind::Node(_) => &mut next_node,
                IdentityKind::Reserved => continue,
            };
            map.insert(i.id, *counter);
            *counter += 1;
        }
        let renum = |id: u32| map.get(&id).copied().unwrap_or(id);
        for i in &mut self.identities {
            i.id = renum(i.id);
        }
        self.index_by_number();
        for id in self.by_labels.values_mut() {
            *id = renum(*id);
        }
        for id in self.pod_identity.iter_mut().flatten() {
            *id = renum(*id);
        }
        for id in self.cidrs.values_mut() {
            *id = renum(*id);
        }
        for id in self.fqdns.values_mut() {
            *id = renum(*id);
        }
        for id in self.node_identity.values_mut() {
            *id = renum(*id);
        }
    }

    /// Takes the pods' identities anew (`pod_identity`, by inventory index: those of pods
    /// that did not change, moved along with them) and gives each pod of `new` (its index,
    /// and its security labels; `None` for host-network pods) the identity of its labels,
    /// as [`IdentityTable::allocate_for`] followed by [`IdentityTable::keep_numbers`] with
    /// this table would: a label set this table has keeps its number, new ones get the next
    /// numbers past every cluster number it has, in allocation-key order, and identities no
    /// pod has any more are dropped. Returns what came and what went.
    pub fn assign_pods(
        &mut self,
        mut pod_identity: Vec<Option<u32>>,
        new: &[(usize, Option<&LabelSet>)],
    ) -> (Vec<u32>, Vec<u32>) {
        let is_pods =
            |t: &IdentityTable, id: u32| t.get(id).is_some_and(|i| i.kind == IdentityKind::Pods);
        let mut missing: BTreeMap<String, &LabelSet> = BTreeMap::new();
        for l in new.iter().filter_map(|(_, l)| *l) {
            if !self.by_labels.get(l).is_some_and(|id| is_pods(self, *id)) {
                missing.entry(l.allocation_key()).or_insert(l);
            }
        }
        let next = self
            .identities
            .iter()
            .map(|i| i.id)
            .filter(|id| (FIRST_CLUSTER..LOCAL_SCOPE).contains(id))
            .max()
            .map_or(FIRST_CLUSTER, |m| m + 1);
        let mut added = Vec::new();
        for (id, labels) in (next..).zip(missing.into_values()) {
            self.by_labels.insert(labels.clone(), id);
            self.identities.push(Identity {
                id,
                labels: labels.clone(),
                kind: IdentityKind::Pods,
            });
            added.push(id);
        }
        for (i, l) in new {
            if let Some(slot) = pod_identity.get_mut(*i) {
                *slot = l.and_then(|l| self.by_labels.get(l).copied());
            }
        }
        let used: std::collections::HashSet<u32> = pod_identity.iter().flatten().copied().collect();
        self.pod_identity = pod_identity;
        let removed: Vec<u32> = self
            .identities
            .iter()
            .filter(|i| i.kind == IdentityKind::Pods && !used.contains(&i.id))
            .map(|i| i.id)
            .collect();
        self.drop_identities(&removed);
        self.index_by_number();
        (added, removed)
    }

    /// Makes the CIDR identities those of `prefixes` (the policies' prefixes), as a fresh
    /// allocation followed by [`IdentityTable::keep_numbers`] with this table would: a prefix
    /// this table has keeps its number, new ones get the next local numbers in prefix order.
    /// Returns what came and what went.
    pub fn set_prefixes(&mut self, prefixes: &[IpNet]) -> (Vec<u32>, Vec<u32>) {
        let wanted: std::collections::BTreeSet<IpNet> = prefixes
            .iter()
            .copied()
            .filter(|n| n.prefix_len() > 0)
            .collect();
        let removed: Vec<u32> = self
            .cidrs
            .iter()
            .filter(|(net, _)| !wanted.contains(net))
            .map(|(_, id)| *id)
            .collect();
        let next = self
            .identities
            .iter()
            .map(|i| i.id)
            .filter(|id| (LOCAL_SCOPE + 1..NODE_SCOPE).contains(id))
            .max()
            .map_or(LOCAL_SCOPE + 1, |m| m + 1);
        let mut added = Vec::new();
        let new: Vec<IpNet> = wanted
            .iter()
            .filter(|n| !self.cidrs.contains_key(n))
            .copied()
            .collect();
        for (id, net) in (next..).zip(&new) {
            let world = match (self.dual_stack, net) {
                (false, _) => "world",
                (true, IpNet::V4(_)) => "world-ipv4",
                (true, IpNet::V6(_)) => "world-ipv6",
            };
            let labels: LabelSet = [cidr_label(net), Label::reserved(world)]
                .into_iter()
                .collect();
            self.cidrs.insert(*net, id);
            self.identities.push(Identity {
                id,
                labels,
                kind: IdentityKind::Cidr(*net),
            });
            added.push(id);
        }
        self.cidrs.retain(|net, _| wanted.contains(net));
        self.drop_identities(&removed);
        self.index_by_number();
        (added, removed)
    }

    /// Removes identities (and their label index entries).
    fn drop_identities(&mut self, ids: &[u32]) {
        if ids.is_empty() {
            return;
        }
        let gone: std::collections::HashSet<u32> = ids.iter().copied().collect();
        self.identities.retain(|i| !gone.contains(&i.id));
        self.by_labels.retain(|_, id| !gone.contains(id));
    }

    /// Sorts the identities by number and rebuilds the index by number.
    fn index_by_number(&mut self) {
        self.identities.sort_by_key(|i| i.id);
        self.by_id = self
            .identities
            .iter()
            .enumerate()
            .map(|(n, i)| (i.id, n))
            .collect();
    }

    /// Gives the addresses of DNS `answers` (name, address) that a `toFQDNs` selector of
    /// `selectors` selects their identities (datapath spec §1.6), after the identities that
    /// exist (an address keeps its identity while its label set stays; a new label set gets
    /// the next local number). `prefixes` are the policies' CIDR prefixes, whose `cidr:`
    /// labels an address inside them carries too. Addresses no selector selects, and those of
    /// pods and nodes, get none.
    pub fn learn_fqdns(
        &mut self,
        answers: &[(String, IpAddr)],
        selectors: &[String],
        prefixes: &[IpNet],
        inventory: &Inventory,
    ) {
        let mut labels_of: BTreeMap<IpAddr, LabelSet> = BTreeMap::new();
        for (name, ip) in answers {
            let matching: Vec<&String> = selectors
                .iter()
                .filter(|s| crate::eval::fqdn_selects(s, name))
                .collect();
            if matching.is_empty() {
                continue;
            }
            let set = labels_of.entry(*ip).or_default();
            for s in matching {
                set.insert(fqdn_label(s));
            }
        }
        let in_cluster: std::collections::HashSet<IpAddr> = inventory
            .pods
            .iter()
            .flat_map(|p| p.ips.iter().copied())
            .chain(inventory.nodes.iter().flat_map(|n| n.ips.iter().copied()))
            .collect();
        let mut next = self
            .identities
            .iter()
            .filter(|i| i.id & LOCAL_SCOPE != 0 && i.id < NODE_SCOPE)
            .map(|i| (i.id & !LOCAL_SCOPE) + 1)
            .max()
            .unwrap_or(1);
        let mut fqdns = BTreeMap::new();
        for (ip, mut labels) in labels_of {
            if in_cluster.contains(&ip) {
                continue;
            }
            labels.insert(Label::reserved(match (self.dual_stack, ip) {
                (false, _) => "world",
                (true, IpAddr::V4(_)) => "world-ipv4",
                (true, IpAddr::V6(_)) => "world-ipv6",
            }));
            for p in prefixes
                .iter()
                .filter(|p| p.prefix_len() > 0 && p.contains(&ip))
            {
                labels.insert(cidr_label(p));
            }
            let id = match self.by_labels.get(&labels) {
                Some(id) => *id,
                None => {
                    let id = LOCAL_SCOPE | next;
                    next += 1;
                    self.by_labels.insert(labels.clone(), id);
                    self.by_id.insert(id, self.identities.len());
                    self.identities.push(Identity {
                        id,
                        labels,
                        kind: IdentityKind::Fqdn(ip),
                    });
                    id
                }
            };
            fqdns.insert(ip, id);
        }
        self.fqdns = fqdns;
    }

    /// Every identity, by number.
    pub fn iter(&self) -> impl Iterator<Item = &Identity> {
        self.identities.iter()
    }

    /// How many identities there are.
    pub fn len(&self) -> usize {
        self.identities.len()
    }

    /// Whether there are none (never: the reserved ones always exist).
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    /// The identity with this number.
    pub fn get(&self, id: u32) -> Option<&Identity> {
        self.by_id.get(&id).map(|&i| &self.identities[i])
    }

    /// The cluster identity of a label set.
    pub fn of_labels(&self, labels: &LabelSet) -> Option<u32> {
        self.by_labels.get(labels).copied()
    }

    /// The labels identity `id` has as seen from an endpoint on `node`: on a node that runs
    /// the apiserver the host identity also carries `reserved:kube-apiserver`.
    pub fn labels_on(&self, id: u32, node: Option<&crate::inventory::Node>) -> LabelSet {
        let mut labels = self.get(id).map(|i| i.labels.clone()).unwrap_or_default();
        if id == HOST && node.is_some_and(|n| n.apiserver) {
            labels.insert(Label::reserved("kube-apiserver"));
        }
        labels
    }

    /// The identity a remote node has, seen from another node.
    pub fn remote_node_identity(&self, node: &crate::inventory::Node) -> u32 {
        match self.node_identity.get(&node.name) {
            Some(&id) => id,
            None if node.apiserver => KUBE_APISERVER,
            None => REMOTE_NODE,
        }
    }

    /// The world identity of an address family.
    pub fn world_of(&self, ip: &IpAddr) -> u32 {
        match (self.dual_stack, ip) {
            (false, _) => WORLD,
            (true, IpAddr::V4(_)) => WORLD_IPV4,
            (true, IpAddr::V6(_)) => WORLD_IPV6,
        }
    }

    /// The ipcache of `node`: pods, nodes (the local one as `host`), CIDR prefixes, and the
    /// world default routes. Sorted by prefix.
    pub fn ipcache(&self, inventory: &Inventory, node: &str) -> Vec<IpcacheEntry> {
        let mut out: BTreeMap<IpNet, IpcacheEntry> = BTreeMap::new();
        let mut add = |prefix: IpNet, identity: u32, tunnel: Option<IpAddr>| {
            out.entry(prefix).or_insert(IpcacheEntry {
                prefix,
                identity,
                tunnel_endpoint: tunnel,
            });
        };
        let v4_of = |n: &crate::inventory::Node| n.ips.iter().find(|i| i.is_ipv4()).copied();
        for n in &inventory.nodes {
            let id = if n.name == node {
                HOST
            } else {
                self.remote_node_identity(n)
            };
            for ip in &n.ips {
                add(IpNet::from(*ip), id, None);
            }
        }
        for (i, p) in inventory.pods.iter().enumerate() {
            let Some(id) = self.pod_identity.get(i).copied().flatten() else {
                continue;
            };
            let tunnel = if p.node == node {
                None
            } else {
                inventory.node(&p.node).and_then(v4_of)
            };
            for ip in &p.ips {
                add(IpNet::from(*ip), id, tunnel);
            }
        }
        for (net, id) in &self.cidrs {
            add(*net, *id, None);
        }
        for (ip, id) in &self.fqdns {
            add(IpNet::from(*ip), *id, None);
        }
        let (v4, v6) = if self.dual_stack {
            (WORLD_IPV4, WORLD_IPV6)
        } else {
            (WORLD, WORLD)
        };
        add(IpNet::V4(ipnet::Ipv4Net::default()), v4, None);
        add(IpNet::V6(ipnet::Ipv6Net::default()), v6, None);
        out.into_values().collect()
    }
}

/// Longest-prefix match of an address in an ipcache (sorted or not).
pub fn ipcache_lookup(cache: &[IpcacheEntry], ip: &IpAddr) -> Option<u32> {
    cache
        .iter()
        .filter(|e| e.prefix.contains(ip))
        .max_by_key(|e| e.prefix.prefix_len())
        .map(|e| e.identity)
}

/// Whether any policy selects nodes by label.
pub fn uses_node_selectors(policies: &PolicySet) -> bool {
    policies.rules.iter().any(|r| {
        r.items.iter().any(|i| match &i.peers {
            crate::ir::Peers::List(p) => p.iter().any(|p| matches!(p.kind, PeerKind::Nodes(_))),
            crate::ir::Peers::Any => false,
        })
    })
}

/// Whether identity `id` (with `labels`, as seen on the node `local`) is selected by a peer.
/// This is the selector cache's view, written independently of the evaluator's
/// address-based view so that the two check each other.
pub fn peer_selects(
    table: &IdentityTable,
    peer: &PeerKind,
    id: u32,
    labels: &LabelSet,
    local: Option<&crate::inventory::Node>,
    inventory: &Inventory,
) -> bool {
    match peer {
        PeerKind::Endpoints(sel) => sel.matches(labels),
        PeerKind::Entity(e) => e.selects(labels, &table.cluster_name),
        PeerKind::Nodes(sel) => {
            if id == HOST {
                return local.is_some_and(|n| sel.matches(&n.labels));
            }
            match table.get(id).map(|i| &i.kind) {
                Some(IdentityKind::Node(name)) => inventory.node(name).is_some_and(|n| {
                    local.is_none_or(|l| l.name != n.name) && sel.matches(&n.labels)
                }),
                _ => false,
            }
        }
        PeerKind::Cidr(c) => match table.get(id).map(|i| &i.kind) {
            Some(IdentityKind::Cidr(net)) => c.contains_net(net),
            Some(IdentityKind::Fqdn(ip)) => c.contains_addr(ip),
            Some(IdentityKind::Reserved) if c.net.prefix_len() == 0 => {
                let has = |n: &str| {
                    labels
                        .iter()
                        .any(|l| l.source == SOURCE_RESERVED && l.key == n)
                };
                // A /0 has no CIDR label: its selector is the family's world label in
                // dual-stack mode, `reserved:world` otherwise.
                if table.dual_stack {
                    match c.net {
                        IpNet::V4(_) => has("world-ipv4"),
                        IpNet::V6(_) => has("world-ipv6"),
                    }
                } else {
                    has("world")
                }
            }
            _ => false,
        },
        PeerKind::Fqdn(selector) => {
            matches!(table.get(id).map(|i| &i.kind), Some(IdentityKind::Fqdn(_)))
                && labels.iter().any(|l| *l == fqdn_label(selector))
        }
        PeerKind::Service(_) | PeerKind::Unresolved(_) => false,
    }
}

/// Whether the entity needs no identity (selects every identity).
pub fn is_wildcard_peer(peer: &PeerKind) -> bool {
    match peer {
        PeerKind::Entity(Entity::All) => true,
        PeerKind::Endpoints(sel) => sel.is_wildcard(),
        _ => false,
    }
}
