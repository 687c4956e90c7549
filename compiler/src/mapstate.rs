//! Map state: the per-endpoint policy-map entries the agent computes (datapath spec §2), and
//! the datapath's lookup over them (§3.4).
//!
//! Keys are (direction, remote identity, protocol, port prefix); identity 0 is "any". Entries
//! carry allow/deny, the proxy port of an L7 redirect, the listener priority, and auth.
//! Insertion keeps Cilium 1.19's invariant: no entry is covered by an entry of higher
//! precedence (deny > redirect by listener priority > allow), so a longest-prefix lookup
//! finds the entry that decides. The same map is written in the 1.17/1.18 layout by
//! `ebpf-backend`; only the value encoding differs.

use crate::FastMap;
use crate::eval::Verdict;
use crate::identity::{self, IdentityKind, peer_selects};
use crate::inventory::Node;
use crate::ir::{
    Direction, Item, PeerKind, Peers, PortSpec, Ports, Proto, Redirect, Rule, Selector,
};
use crate::model::{EndpointRef, Model};
use crate::source::Loc;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A policy-map key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Ingress or egress.
    pub direction: Direction,
    /// The remote identity; 0 = any.
    pub identity: u32,
    /// The IP protocol; 0 = any (then the port is 0 too).
    pub proto: u8,
    /// The destination port (ICMP: the type), with bits below the prefix zero.
    pub port: u16,
    /// How many leading port bits are significant (0-16).
    pub port_prefix: u8,
}

impl Key {
    /// The key for every protocol and port of `identity` in `dir`.
    pub fn any(direction: Direction, identity: u32) -> Key {
        Key {
            direction,
            identity,
            proto: 0,
            port: 0,
            port_prefix: 0,
        }
    }

    /// The LPM prefix length: 40 + 8 for a protocol + the port prefix.
    pub fn prefix_len(&self) -> u32 {
        if self.proto == 0 {
            40
        } else {
            48 + u32::from(self.port_prefix)
        }
    }

    fn port_mask(&self) -> u16 {
        match self.port_prefix {
            0 => 0,
            n => u16::MAX << (16 - n.min(16)),
        }
    }

    /// Whether a packet with this protocol and port falls under the key's L4 part.
    pub fn l4_matches(&self, proto: u8, port: u16) -> bool {
        self.proto == 0 || (self.proto == proto && (port & self.port_mask()) == self.port)
    }

    /// Whether this key's L4 part contains `other`'s.
    fn l4_covers(&self, other: &Key) -> bool {
        if self.proto == 0 {
            return true;
        }
        self.proto == other.proto
            && self.port_prefix <= other.port_prefix
            && (other.port & self.port_mask()) == self.port
    }

    /// Whether every packet under `other` is also under this key (same direction; the same
    /// identity, or this key's identity is 0).
    pub fn covers(&self, other: &Key) -> bool {
        self.direction == other.direction
            && (self.identity == other.identity || self.identity == 0)
            && self.l4_covers(other)
    }
}

/// A proxy redirect of an entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProxyTarget {
    /// The listener (`cilium-http-ingress`, `cilium-dns-egress`, or an Envoy listener).
    pub listener: Arc<str>,
    /// Its port.
    pub port: u16,
    /// The listener priority (1..=126, lower wins).
    pub priority: u8,
}

/// A policy-map entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Deny.
    pub deny: bool,
    /// The redirect, for allow entries that proxy.
    pub proxy: Option<ProxyTarget>,
    /// Auth type (0 none, 1 SPIRE, 2 test-always-fail).
    pub auth_type: u8,
    /// Whether the auth type was set by the rule (not derived).
    pub explicit_auth: bool,
}

/// A rule item (or agent default) behind an entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    /// `CiliumNetworkPolicy shop/backend spec.ingress[0]`, or the agent default.
    pub what: String,
    /// Where, if from a rule.
    pub loc: Option<Loc>,
}

/// The highest precedence, a deny's.
pub const MAX_PRECEDENCE: u32 = u32::MAX;

impl Entry {
    /// A plain allow.
    pub fn allow() -> Self {
        Entry {
            deny: false,
            proxy: None,
            auth_type: 0,
            explicit_auth: false,
        }
    }

    /// Cilium 1.19's precedence (the current, pass-aware encoding): the upper 24 bits are
    /// `0xFFFFFF - rule priority` (always 0 for CNP/CCNP/KNP); the low byte is 255 for deny,
    /// 255 - listener priority for a redirect, 1 for a plain allow.
    pub fn precedence(&self) -> u32 {
        let low = if self.deny {
            255
        } else {
            match &self.proxy {
                Some(p) if p.priority > 0 => 255 - u32::from(p.priority),
                Some(_) => 2,
                None => 1,
            }
        };
        0xFFFF_FF00 | low
    }

    /// The 1.17/1.18 `proxy_port_priority` byte: 128 - listener priority, 0 without redirect.
    pub fn proxy_port_priority(&self) -> u8 {
        match &self.proxy {
            Some(p) if !self.deny => 128u8.saturating_sub(p.priority.min(127)),
            _ => 0,
        }
    }

    /// The proxy port (0 = no redirect).
    pub fn proxy_port(&self) -> u16 {
        self.proxy.as_ref().map_or(0, |p| p.port)
    }

    fn merge(&mut self, other: Entry) {
        // Same key, same precedence: the lower proxy port wins; explicit auth beats derived,
        // then the higher type.
        if let (Some(a), Some(b)) = (&self.proxy, &other.proxy)
            && b.port < a.port
        {
            self.proxy = other.proxy.clone();
        }
        if (other.explicit_auth && !self.explicit_auth)
            || (other.explicit_auth == self.explicit_auth && other.auth_type > self.auth_type)
        {
            self.auth_type = other.auth_type;
            self.explicit_auth = other.explicit_auth;
        }
    }
}

/// The proxy ports polc assigns. The agent picks them at random from 10000-20000 and keeps
/// them per node; polc uses fixed ones so its output is reproducible.
#[derive(Clone, Debug)]
pub struct ProxyPorts {
    /// `cilium-http-ingress`.
    pub http_ingress: u16,
    /// `cilium-http-egress`.
    pub http_egress: u16,
    /// `cilium-dns-egress`.
    pub dns_egress: u16,
    /// Kafka (ingress, egress).
    pub kafka: (u16, u16),
    /// Generic L7 (ingress, egress).
    pub generic: (u16, u16),
    /// First port for Envoy listeners of CiliumEnvoyConfigs, in name order.
    pub listener_base: u16,
}

impl Default for ProxyPorts {
    fn default() -> Self {
        ProxyPorts {
            http_ingress: 15000,
            http_egress: 15001,
            dns_egress: 15053,
            kafka: (15002, 15003),
            generic: (15004, 15005),
            listener_base: 15100,
        }
    }
}

impl ProxyPorts {
    fn target(&self, redirect: &Redirect, dir: Direction, listeners: &[String]) -> ProxyTarget {
        let ingress = dir == Direction::Ingress;
        let (listener, port) = match redirect {
            Redirect::L7(l7) => match l7.parser() {
                "dns" => ("cilium-dns-egress".to_string(), self.dns_egress),
                "kafka" => (
                    format!("cilium-kafka-{}", dir.name()),
                    if ingress { self.kafka.0 } else { self.kafka.1 },
                ),
                "http" => http(self, dir),
                _ => (
                    format!("cilium-generic-{}", dir.name()),
                    if ingress {
                        self.generic.0
                    } else {
                        self.generic.1
                    },
                ),
            },
            Redirect::Tls => http(self, dir),
            Redirect::Listener { name, .. } => {
                let i = listeners.iter().position(|l| l == name).unwrap_or(0);
                (
                    name.clone(),
                    self.listener_base
                        .saturating_add(u16::try_from(i).unwrap_or(u16::MAX)),
                )
            }
        };
        return ProxyTarget {
            listener: listener.into(),
            port,
            priority: redirect.listener_priority(),
        };
        fn http(p: &ProxyPorts, dir: Direction) -> (String, u16) {
            match dir {
                Direction::Ingress => ("cilium-http-ingress".into(), p.http_ingress),
                Direction::Egress => ("cilium-http-egress".into(), p.http_egress),
            }
        }
    }
}

/// One L4 filter of an endpoint's policy, as the proxy (NPDS) sees it: a port and, per
/// peer selector, the identities it selects and its L7 rules.
#[derive(Clone, Debug)]
pub struct Filter {
    /// Direction.
    pub direction: Direction,
    /// Protocol (`None` for L3-only items: every protocol).
    pub proto: Option<Proto>,
    /// First port (0 = all).
    pub port: u16,
    /// Last port of a range (0 = single port).
    pub end_port: u16,
    /// Per selector.
    pub selectors: Vec<PeerPolicy>,
}

/// One selector's policy on a filter.
#[derive(Clone, Debug)]
pub struct PeerPolicy {
    /// The identities it selects (`None`: every identity).
    pub identities: Option<Arc<Vec<u32>>>,
    /// Deny.
    pub deny: bool,
    /// The redirect.
    pub redirect: Option<Redirect>,
    /// Where the rule item is.
    pub origin: Origin,
}

/// An endpoint's computed policy: the map and the proxy filters.
#[derive(Clone, Debug)]
pub struct EndpointPolicy {
    /// The policy-map entries.
    pub map: BTreeMap<Key, Entry>,
    /// The L4 filters (for the proxy rules).
    pub filters: Vec<Filter>,
    /// Whether each direction is enforced.
    pub enforced: (bool, bool),
}

/// Splits a port range into LPM port prefixes (`PortRangeToMaskedPorts`): (port, prefix
/// bits). `0..=0` (and ranges from 0 to 65535) is the wildcard `(0, 0)`.
pub fn port_prefixes(start: u16, end: u16) -> Vec<(u16, u8)> {
    if start == 0 && (end == 0 || end == u16::MAX) {
        return vec![(0, 0)];
    }
    if end <= start {
        return vec![(start, 16)];
    }
    // Greedy split: from `start`, take the largest aligned block that fits.
    let mut out = Vec::new();
    let mut cur = u32::from(start);
    let end = u32::from(end);
    while cur <= end {
        let mut size = 1u32;
        while cur % (size * 2) == 0 && cur + size * 2 - 1 <= end && size < 65536 {
            size *= 2;
        }
        let bits = 16 - size.trailing_zeros();
        out.push((
            u16::try_from(cur).unwrap_or(0),
            u8::try_from(bits).unwrap_or(16),
        ));
        cur += size;
    }
    out
}

/// The identities a peer can possibly select (a superset; `None` = every identity): for a
/// selector, those with one of the values of its most selective `In` requirement; for
/// entities other than `cluster`/`all`, CIDRs and nodes, the identities that are not pods.
fn candidates(
    by_label: &FastMap<(String, String), Vec<u32>>,
    not_pods: &[u32],
    peer: &PeerKind,
) -> Option<Vec<u32>> {
    match peer {
        PeerKind::Endpoints(sel) => sel
            .reqs
            .iter()
            .filter(|r| r.op == crate::ir::Op::In)
            .map(|r| {
                let key = r.bare_key().to_string();
                let mut ids: Vec<u32> = r
                    .values
                    .iter()
                    .flat_map(|v| {
                        by_label
                            .get(&(key.clone(), v.clone()))
                            .into_iter()
                            .flatten()
                            .copied()
                    })
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                ids
            })
            .min_by_key(Vec::len),
        PeerKind::Entity(
            crate::ir::Entity::All | crate::ir::Entity::Cluster | crate::ir::Entity::ClusterMesh,
        ) => None,
        PeerKind::Entity(_) | PeerKind::Cidr(_) | PeerKind::Nodes(_) | PeerKind::Fqdn(_) => {
            Some(not_pods.to_vec())
        }
        PeerKind::Service(_) | PeerKind::Unresolved(_) => Some(Vec::new()),
    }
}

/// A rule (by address), an item index, whether the node runs the apiserver (the host's
/// labels), and the node when the item selects nodes.
type ItemKey = (usize, usize, bool, Option<String>);

/// What a rule item selects: identities, or `None` for every identity.
type Selection = Option<Arc<Vec<u32>>>;

/// A peer, its `fromRequires`/`toRequires`, the node when the selection depends on it, and
/// whether it selects the host.
type SelectionKey = (PeerKind, Vec<Selector>, Option<String>, bool);

/// Caches which identities a peer selects, per node, and an index of identities by
/// namespace.
pub struct SelectorCache {
    /// Per rule item (by the rule's address, kept alive by the stored `Arc`), without
    /// requirements: what the item's peers select.
    items: FastMap<ItemKey, (Arc<Rule>, Selection)>,
    /// Identities by (bare label key, value): the candidates of an `In` requirement.
    by_label: FastMap<(String, String), Vec<u32>>,
    /// Identities that are not pods (reserved, CIDR, node): the only ones entities other
    /// than `cluster`/`all`, CIDRs and node selectors can select.
    not_pods: Vec<u32>,
    cache: FastMap<SelectionKey, Arc<Vec<u32>>>,
}

impl SelectorCache {
    /// An empty cache for a model's identities. It stays valid while the identities do (a
    /// policy change that names no new CIDR keeps them).
    pub fn new(model: &Model) -> Self {
        let mut by_label: FastMap<(String, String), Vec<u32>> = FastMap::default();
        let mut not_pods = Vec::new();
        for id in model.identities.iter() {
            for l in id.labels.iter() {
                by_label
                    .entry((l.key.clone(), l.value.clone()))
                    .or_default()
                    .push(id.id);
            }
            if id.kind != IdentityKind::Pods {
                not_pods.push(id.id);
            }
        }
        SelectorCache {
            items: FastMap::default(),
            by_label,
            not_pods,
            cache: FastMap::default(),
        }
    }

    /// Follows identities that came and went in `model` (pods with new label sets, CIDR
    /// prefixes): each cached selection drops those that went and gains those that came and
    /// that its peer selects; what the rule items select is worked out again from them. The
    /// host identity and node identities must not be among them.
    pub fn update(&mut self, model: &Model, added: &[u32], removed: &[u32]) {
        let gone: std::collections::HashSet<u32> = removed.iter().copied().collect();
        if !gone.is_empty() {
            for ids in self.by_label.values_mut() {
                ids.retain(|id| !gone.contains(id));
            }
            self.by_label.retain(|_, ids| !ids.is_empty());
            self.not_pods.retain(|id| !gone.contains(id));
        }
        let came: Vec<&crate::identity::Identity> = added
            .iter()
            .filter_map(|id| model.identities.get(*id))
            .collect();
        for id in &came {
            for l in id.labels.iter() {
                self.by_label
                    .entry((l.key.clone(), l.value.clone()))
                    .or_default()
                    .push(id.id);
            }
            if id.kind != IdentityKind::Pods {
                self.not_pods.push(id.id);
            }
        }
        for ((peer, requires, node, _), ids) in self.cache.iter_mut() {
            let node = node.as_ref().and_then(|n| model.inventory.node(n));
            let mut new: Vec<u32> = ids
                .iter()
                .copied()
                .filter(|id| !gone.contains(id))
                .collect();
            for id in &came {
                if selects_identity(model, peer, requires, id, node) {
                    new.push(id.id);
                }
            }
            new.sort_unstable();
            if new != **ids {
                *ids = Arc::new(new);
            }
        }
        self.items.clear();
    }

    /// The identities `peer` (ANDed with `requires`) selects, seen from `node`.
    pub fn select(
        &mut self,
        model: &Model,
        peer: &PeerKind,
        requires: &[Selector],
        node: Option<&Node>,
    ) -> Arc<Vec<u32>> {
        // Only the host identity (its labels depend on the node) and node selectors
        // (the local node is `host`, not a node identity) differ between nodes; the host is
        // judged on every call and is part of the key.
        let host = {
            let labels = model.identities.labels_on(identity::HOST, node);
            peer_selects(
                &model.identities,
                peer,
                identity::HOST,
                &labels,
                node,
                &model.inventory,
            ) && requires.iter().all(|r| r.matches(&labels))
        };
        let node_key = node
            .map(|n| n.name.clone())
            .filter(|_| matches!(peer, PeerKind::Nodes(_)));
        let key = (peer.clone(), requires.to_vec(), node_key, host);
        if let Some(hit) = self.cache.get(&key) {
            return hit.clone();
        }
        let mut out = Vec::new();
        if host {
            out.push(identity::HOST);
        }
        let mut consider = |id: &crate::identity::Identity| {
            if id.id != identity::HOST && selects_identity(model, peer, requires, id, node) {
                out.push(id.id);
            }
        };
        match candidates(&self.by_label, &self.not_pods, peer) {
            Some(ids) => {
                for id in ids {
                    if let Some(i) = model.identities.get(id) {
                        consider(i);
                    }
                }
            }
            None => model.identities.iter().for_each(consider),
        }
        // In dual-stack mode a selected `world` (2) is inserted as 9 and 10 too (`toMapState`).
        if model.identities.dual_stack && out.contains(&identity::WORLD) {
            out.extend([identity::WORLD_IPV4, identity::WORLD_IPV6]);
        }
        out.sort_unstable();
        out.dedup();
        let out = Arc::new(out);
        self.cache.insert(key, out.clone());
        out
    }

    /// The identities a rule item's peers select (ANDed with `requires`), seen from
    /// `node`; `None` is the wildcard (identity 0).
    pub fn item_identities(
        &mut self,
        model: &Model,
        rule: &Arc<Rule>,
        index: usize,
        requires: &[Selector],
        node: Option<&Node>,
    ) -> Option<Arc<Vec<u32>>> {
        let item = &rule.items[index];
        let key = requires.is_empty().then(|| {
            let by_node = matches!(&item.peers, Peers::List(p) if p.iter().any(|p| matches!(p.kind, PeerKind::Nodes(_))));
            (
                Arc::as_ptr(rule) as usize,
                index,
                node.is_some_and(|n| n.apiserver),
                node.filter(|_| by_node).map(|n| n.name.clone()),
            )
        });
        if let Some(k) = &key
            && let Some((_, hit)) = self.items.get(k)
        {
            return hit.clone();
        }
        // Requirements narrow endpoint selectors only; entities, CIDRs and an L4-only item's
        // wildcard are left as they are (`GetSourceEndpointSelectorsWithRequirements`).
        let narrowed = |p: &PeerKind| {
            if matches!(p, PeerKind::Endpoints(_)) {
                requires
            } else {
                &[]
            }
        };
        let out = match &item.peers {
            Peers::Any => None,
            Peers::List(peers) => {
                if peers
                    .iter()
                    .any(|p| identity::is_wildcard_peer(&p.kind) && narrowed(&p.kind).is_empty())
                {
                    None
                } else if let [one] = peers.as_slice() {
                    Some(self.select(model, &one.kind, narrowed(&one.kind), node))
                } else {
                    let mut ids: Vec<u32> = Vec::new();
                    for p in peers {
                        ids.extend(self.select(model, &p.kind, narrowed(&p.kind), node).iter());
                    }
                    ids.sort_unstable();
                    ids.dedup();
                    Some(Arc::new(ids))
                }
            }
        };
        if let Some(k) = key {
            self.items.insert(k, (rule.clone(), out.clone()));
        }
        out
    }
}

/// Whether `peer` ANDed with `requires` selects identity `id`, seen from `node`.
fn selects_identity(
    model: &Model,
    peer: &PeerKind,
    requires: &[Selector],
    id: &crate::identity::Identity,
    node: Option<&Node>,
) -> bool {
    peer_selects(
        &model.identities,
        peer,
        id.id,
        &id.labels,
        node,
        &model.inventory,
    ) && requires.iter().all(|r| r.matches(&id.labels))
}

/// The L4 keys of an item's port entry, resolved for the endpoint.
fn l4_keys(
    model: &Model,
    ep: EndpointRef,
    dir: Direction,
    spec: &PortSpec,
    proto: Proto,
) -> Vec<(u16, u8, u16, u16)> {
    match spec {
        PortSpec::Range(a, b) => {
            let end = if *b > *a { *b } else { 0 };
            port_prefixes(*a, *b)
                .into_iter()
                .map(|(p, bits)| (p, bits, *a, end))
                .collect()
        }
        PortSpec::Named(name) => {
            let ports: Vec<u16> = match dir {
                Direction::Ingress => model
                    .pod(ep)
                    .map(|p| {
                        p.named_ports
                            .iter()
                            .filter(|n| n.name == *name && n.proto == proto)
                            .map(|n| n.port)
                            .collect()
                    })
                    .unwrap_or_default(),
                Direction::Egress => model
                    .inventory
                    .named_ports_anywhere(name)
                    .iter()
                    .filter(|(pr, _)| *pr == proto)
                    .map(|(_, p)| *p)
                    .collect(),
            };
            ports.into_iter().map(|p| (p, 16, p, 0)).collect()
        }
    }
}

/// One rule item as it applies to an endpoint: the identities its peers select (`None`:
/// every identity).
#[derive(Clone, Debug)]
pub struct ResolvedItem {
    /// The rule.
    pub rule: Arc<Rule>,
    /// The item's index in the rule.
    pub item: usize,
    /// The selected identities.
    pub identities: Option<Arc<Vec<u32>>>,
}

impl ResolvedItem {
    /// The item.
    pub fn item(&self) -> &Item {
        &self.rule.items[self.item]
    }
}

/// An endpoint's policy before named ports and keys: which items apply, with their
/// identities resolved. Endpoints with the same identity on look-alike nodes share it (the
/// agent's per-identity "selector policy").
#[derive(Clone, Debug, Default)]
pub struct SelectorPolicy {
    /// The items, in rule order.
    pub items: Vec<ResolvedItem>,
    /// Whether (ingress, egress) are enforced.
    pub enforced: (bool, bool),
}

/// Resolves the items that apply to an endpoint.
pub fn resolve(model: &Model, cache: &mut SelectorCache, ep: EndpointRef) -> SelectorPolicy {
    let node = model.node_of(ep);
    let rules = model.rule_indices_for(ep);
    let refs: Vec<&Rule> = rules.iter().map(|&i| &*model.policies.rules[i]).collect();
    let mut out = SelectorPolicy::default();
    let never = model.config.enforcement == crate::model::Enforcement::Never;
    for dir in Direction::BOTH {
        let (on, _) = model.enforced(&refs, dir);
        match dir {
            Direction::Ingress => out.enforced.0 = on,
            Direction::Egress => out.enforced.1 = on,
        }
        if never {
            continue;
        }
        let requires: Vec<Selector> = refs
            .iter()
            .flat_map(|r| r.requires.get(dir).iter().cloned())
            .collect();
        for &ri in &rules {
            let rule = &model.policies.rules[ri];
            for (ii, item) in rule.items.iter().enumerate() {
                if item.direction != dir || item.selects_nothing() {
                    continue;
                }
                let identities = cache.item_identities(model, rule, ii, &requires, node);
                out.items.push(ResolvedItem {
                    rule: rule.clone(),
                    item: ii,
                    identities,
                });
            }
        }
    }
    out
}

/// An upper bound of the map entries an endpoint needs (before the agent prunes covered
/// entries): identities times L4 keys per item, plus the agent's defaults.
pub fn estimate(model: &Model, ep: EndpointRef, policy: &SelectorPolicy) -> usize {
    let mut n = 2;
    for r in &policy.items {
        let item = r.item();
        let keys = match &item.ports {
            Ports::Any => 1,
            Ports::List(ports) => ports
                .iter()
                .map(|p| l4_keys(model, ep, item.direction, &p.port, p.proto).len())
                .sum(),
        };
        n += keys * r.identities.as_ref().map_or(1, |ids| ids.len());
    }
    n
}

/// Computes an endpoint's policy.
pub fn compute(
    model: &Model,
    cache: &mut SelectorCache,
    ep: EndpointRef,
    proxy_ports: &ProxyPorts,
    listeners: &[String],
) -> EndpointPolicy {
    let policy = resolve(model, cache, ep);
    materialize(model, ep, &policy, proxy_ports, listeners)
}

/// Turns a selector policy into the endpoint's map: named ports resolved on the endpoint,
/// keys expanded, entries inserted with the agent's precedence rules, defaults added.
pub fn materialize(
    model: &Model,
    ep: EndpointRef,
    policy: &SelectorPolicy,
    proxy_ports: &ProxyPorts,
    listeners: &[String],
) -> EndpointPolicy {
    let mut pending: Vec<(Key, Entry)> = Vec::new();
    let mut filters: Vec<Filter> = Vec::new();
    for r in &policy.items {
        expand_item(
            model,
            ep,
            r,
            proxy_ports,
            listeners,
            &mut pending,
            &mut filters,
        );
    }
    let never = model.config.enforcement == crate::model::Enforcement::Never;
    for (dir, on) in [
        (Direction::Ingress, policy.enforced.0),
        (Direction::Egress, policy.enforced.1),
    ] {
        if !on || never {
            pending.push((Key::any(dir, 0), Entry::allow()));
        }
    }
    if model.config.allow_localhost && matches!(ep, EndpointRef::Pod(_)) && !never {
        pending.push((Key::any(Direction::Ingress, identity::HOST), Entry::allow()));
    }
    EndpointPolicy {
        map: build_map(pending),
        filters,
        enforced: policy.enforced,
    }
}

fn expand_item(
    model: &Model,
    ep: EndpointRef,
    r: &ResolvedItem,
    proxy_ports: &ProxyPorts,
    listeners: &[String],
    pending: &mut Vec<(Key, Entry)>,
    filters: &mut Vec<Filter>,
) {
    let item = r.item();
    let dir = item.direction;
    let origin = Origin {
        what: format!("{} {}", r.rule.origin.describe(), item.path),
        loc: Some(item.loc),
    };
    // The L4 part: (proto, port, bits, first, end, redirect).
    let mut l4: Vec<L4Key<'_>> = Vec::new();
    match &item.ports {
        Ports::Any => l4.push((None, 0, 0, 0, 0, None)),
        Ports::List(ports) => {
            for p in ports {
                for (port, bits, first, end) in l4_keys(model, ep, dir, &p.port, p.proto) {
                    l4.push((Some(p.proto), port, bits, first, end, p.redirect.as_ref()));
                }
            }
        }
    }
    let mut seen_filters: Vec<(Option<Proto>, u16, u16)> = Vec::new();
    for (proto, port, bits, first, end, redirect) in l4 {
        let entry = Entry {
            deny: item.deny,
            proxy: if item.deny {
                None
            } else {
                redirect.map(|x| proxy_ports.target(x, dir, listeners))
            },
            auth_type: item.auth.map_or(0, |a| a.type_number()),
            explicit_auth: item.auth.is_some(),
        };
        let key = |identity: u32| Key {
            direction: dir,
            identity,
            proto: proto.map_or(0, Proto::number),
            port,
            port_prefix: if proto.is_some() { bits } else { 0 },
        };
        match &r.identities {
            None => pending.push((key(0), entry.clone())),
            Some(ids) => {
                pending.reserve(ids.len());
                for id in ids.iter() {
                    pending.push((key(*id), entry.clone()));
                }
            }
        }
        if !seen_filters.contains(&(proto, first, end)) {
            seen_filters.push((proto, first, end));
            filters.push(Filter {
                direction: dir,
                proto,
                port: first,
                end_port: end,
                selectors: vec![PeerPolicy {
                    identities: r.identities.clone(),
                    deny: item.deny,
                    redirect: if item.deny { None } else { redirect.cloned() },
                    origin: origin.clone(),
                }],
            });
        }
    }
}

/// (protocol, port, prefix bits, first port, range end, redirect) of one L4 key.
type L4Key<'a> = (Option<Proto>, u16, u8, u16, u16, Option<&'a Redirect>);

/// Builds a map with the agent's insertion rules. Entries are inserted in descending
/// precedence, broader keys first, so an entry is only ever dropped (covered by an entry of
/// higher precedence, or a deny covered by a deny) or merged (same key, same precedence),
/// never pruned after the fact: the result is the one any insertion order reaches.
fn build_map(mut pending: Vec<(Key, Entry)>) -> BTreeMap<Key, Entry> {
    pending.sort_by(|(ka, ea), (kb, eb)| {
        eb.precedence()
            .cmp(&ea.precedence())
            .then(ka.prefix_len().cmp(&kb.prefix_len()))
            .then((ka.identity != 0).cmp(&(kb.identity != 0)))
            .then(ka.cmp(kb))
    });
    // Many lookups per key (every covering key): a fast hash, not SipHash.
    let mut map: FastMap<Key, Entry> =
        FastMap::with_capacity_and_hasher(pending.len(), foldhash::fast::RandomState::default());
    'next: for (key, entry) in pending {
        let prec = entry.precedence();
        if let Some(old) = map.get_mut(&key) {
            // Inserted earlier, so its precedence is at least as high.
            if old.precedence() == prec {
                old.merge(entry);
            }
            continue;
        }
        // The agent skips a specific identity's entry when the wildcard identity already has
        // the identical entry on the same (non-zero) port.
        if key.identity != 0
            && key.port_prefix > 0
            && map.get(&Key { identity: 0, ..key }) == Some(&entry)
        {
            continue;
        }
        for cover in covering_keys(&key) {
            if let Some(e) = map.get(&cover)
                && (e.precedence() > prec || (e.deny && entry.deny))
            {
                continue 'next;
            }
        }
        map.insert(key, entry);
    }
    map.into_iter().collect()
}

/// Every key other than `key` itself that covers it: the same identity or 0, with the same
/// or a broader L4 part.
fn covering_keys(key: &Key) -> impl Iterator<Item = Key> + '_ {
    let ids = if key.identity == 0 {
        vec![0]
    } else {
        vec![key.identity, 0]
    };
    ids.into_iter().flat_map(move |identity| {
        let any = Key::any(key.direction, identity);
        let l4 = (0..=key.port_prefix)
            .filter(move |_| key.proto != 0)
            .map(move |bits| {
                let mask = if bits == 0 {
                    0
                } else {
                    u16::MAX << (16 - bits)
                };
                Key {
                    direction: key.direction,
                    identity,
                    proto: key.proto,
                    port: key.port & mask,
                    port_prefix: bits,
                }
            });
        std::iter::once(any).chain(l4).filter(move |k| k != key)
    })
}

/// What the datapath does with a packet: the entry it picks (1.19 lookup, §3.4).
pub fn lookup(
    map: &BTreeMap<Key, Entry>,
    dir: Direction,
    identity: u32,
    proto: u8,
    port: u16,
) -> Option<(&Key, &Entry)> {
    let longest = |id: u32| {
        let lo = Key {
            direction: dir,
            identity: id,
            proto: 0,
            port: 0,
            port_prefix: 0,
        };
        let hi = Key {
            direction: dir,
            identity: id,
            proto: u8::MAX,
            port: u16::MAX,
            port_prefix: u8::MAX,
        };
        map.range(lo..=hi)
            .filter(|(k, _)| k.l4_matches(proto, port))
            .max_by_key(|(k, _)| k.prefix_len())
    };
    let l3 = if identity == 0 {
        None
    } else {
        longest(identity)
    };
    if let Some((_, e)) = l3
        && e.precedence() == MAX_PRECEDENCE
    {
        return l3;
    }
    let l4 = longest(0);
    match (l3, l4) {
        (Some(a), Some(b)) => {
            let (pa, pb) = (a.1.precedence(), b.1.precedence());
            if pb > pa || (pb == pa && b.0.prefix_len() > a.0.prefix_len()) {
                Some(b)
            } else {
                Some(a)
            }
        }
        (a, b) => a.or(b),
    }
}

/// The verdict of a lookup result: no entry or a deny entry drops.
pub fn verdict_of(hit: Option<(&Key, &Entry)>) -> Verdict {
    match hit {
        Some((_, e)) if !e.deny => Verdict::Allow,
        _ => Verdict::Deny,
    }
}

/// The listeners of explicit `listener` redirects, sorted, for port assignment.
pub fn listeners(model: &Model) -> Vec<String> {
    let mut out: Vec<String> = model
        .policies
        .rules
        .iter()
        .flat_map(|r| r.items.iter())
        .filter_map(|i| match &i.ports {
            Ports::List(p) => Some(p.iter()),
            Ports::Any => None,
        })
        .flatten()
        .filter_map(|p| match &p.redirect {
            Some(Redirect::Listener { name, .. }) => Some(name.clone()),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether an identity is one of the CIDR ones (for summaries).
pub fn is_cidr_identity(model: &Model, id: u32) -> bool {
    matches!(
        model.identities.get(id).map(|i| &i.kind),
        Some(IdentityKind::Cidr(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_as_prefixes() {
        assert_eq!(port_prefixes(80, 80), vec![(80, 16)]);
        assert_eq!(port_prefixes(22, 23), vec![(22, 15)]);
        assert_eq!(port_prefixes(8080, 8095), vec![(8080, 12)]);
        assert_eq!(port_prefixes(0, 0), vec![(0, 0)]);
        assert_eq!(
            port_prefixes(1, 1023),
            vec![
                (1, 16),
                (2, 15),
                (4, 14),
                (8, 13),
                (16, 12),
                (32, 11),
                (64, 10),
                (128, 9),
                (256, 8),
                (512, 7)
            ]
        );
        assert_eq!(
            port_prefixes(1024, 65535),
            vec![
                (1024, 6),
                (2048, 5),
                (4096, 4),
                (8192, 3),
                (16384, 2),
                (32768, 1)
            ]
        );
        assert_eq!(port_prefixes(10000, 20000).len(), 11);
        // The spec calls 1-65535 the worst case with 30 keys; the split is 16 keys, and 30 is
        // the count for 1-65534.
        assert_eq!(port_prefixes(1, 65535).len(), 16);
        assert_eq!(port_prefixes(1, 65534).len(), 30);
        assert_eq!(port_prefixes(0, 1023), vec![(0, 6)]);
    }

    #[test]
    fn precedence_encoding() {
        let mut e = Entry::allow();
        assert_eq!(e.precedence(), 0xFFFF_FF01);
        e.proxy = Some(ProxyTarget {
            listener: "http".into(),
            port: 15000,
            priority: 101,
        });
        assert_eq!(e.precedence(), 0xFFFF_FF9A);
        assert_eq!(e.proxy_port_priority(), 27);
        e.deny = true;
        assert_eq!(e.precedence(), MAX_PRECEDENCE);
    }
}
