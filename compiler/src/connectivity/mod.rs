//! Connectivity: on which protocols and ports every end of a cluster can reach every other
//! one, for `polc graph` and `polc diff`, computed from the selector policies instead of flow
//! by flow.
//!
//! The ends are the ones the commands draw: pods (the caller picks one per identity), nodes'
//! hosts and outside addresses. A flow from `s` to `d` on a (protocol, port) is allowed when
//! `s`'s egress lets it out towards `d`'s identity *as `s` sees it*, and `d`'s ingress lets
//! it in from `s`'s identity as `d` sees it ([`eval::decide`](crate::eval::decide): an
//! outside address enforces nothing). At one end, with the items of its selector policy in
//! that direction (a matching deny wins; then the local host reaches a pod under
//! `allow-localhost`; then a matching allow; then the direction's default):
//!
//! ```text
//! side(id) = (open ? every port : allowed(id)) \ denied(id)
//!     allowed(id), denied(id) = the union of the ports of the allow, deny items whose
//!                               peers select id (or every identity)
//!     open = the direction is not default-deny, or id is `host` on a pod's ingress
//!            under allow-localhost
//! allowed(s -> d) = side_egress(s)(id of d seen from s) ∩ side_ingress(d)(id of s seen from d)
//! ```
//!
//! L7 redirects do not appear: without a request the evaluator judges only L4, and a
//! redirected port is allowed there.
//!
//! Why this is exact, and why it is fast, is the same argument twice:
//! - **Sides.** An end's side is a function of its items' port sets and the *contents* of
//!   their selections, its enforcement, and (for ingress named ports) its pod. Ends whose
//!   sides have equal contents (`Side`, interned) decide alike.
//! - **Identity classes.** The only way a side looks at a remote identity is "is it in this
//!   selection?". Two identities that lie in exactly the same selections, over every side
//!   in play, get the same answer from every side, so each side is tabled once per *class*
//!   of identities, not once per identity. `host` (1) starts as a class of its own, because
//!   `allow-localhost` singles it out.
//!
//! Once tabled, classes that every side answers alike are merged, and so are sides whose
//! tables are equal: nothing can tell them apart. At our users' scale that leaves 2,552
//! identity classes and 2,026 sides for 16,206 ends. So `allowed(s -> d)` is two table reads
//! and an interned intersection. What depends on where an end runs is only which identity a
//! host has in the eyes of the other end: `host` on its own node, the remote-node identity
//! elsewhere; this is resolved per pair, never collapsed.
//!
//! One place where the selector cache and the evaluator part ways is kept the evaluator's:
//! an outside address in no prefix the policies name is `world` to the cache whatever its
//! family in a single-stack cluster, but `0.0.0.0/0` holds only the IPv4 ones. Such
//! addresses get an identity per family of their own (`WORLD_ENDS`), and whether an item
//! selects them is decided from its peers as the evaluator decides it.
//!
//! `graph` groups ends with equal rows and columns ([`Connectivity::graph`]), `diff`
//! compares two policy sets over the pairs a change can reach ([`changes`]); [`mod@reference`]
//! keeps the flow-by-flow evaluation they are tested against.

mod diff;
mod ends;
mod graph;
mod ports;
pub mod reference;

pub use diff::{PairChange, changes};
pub use ends::{ends, outside_addresses};
pub use graph::Graph;
pub use ports::{EMPTY, FULL, Family, PROTOS, PortSet, PortSetId, PortSets, domain, family_fits};

use crate::compile::{Compilation, class_of};
use crate::eval::Peer;
use crate::identity::{self, IdentityTable};
use crate::ir::{Direction, Item, PeerKind, Peers, PortSpec, Ports, Selector};
use crate::mapstate::{ProxyPorts, SelectorPolicy};
use crate::model::{EndpointRef, Enforcement, Model};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

/// A multiply-rotate hasher for the integer keys of the hot tables (the standard SipHash is
/// several times slower there, and the keys are not attacker-chosen in a way that matters:
/// a collision costs time, never a wrong answer).
#[derive(Default, Clone, Copy)]
pub(crate) struct Fx(u64);

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// [`Fx`] as a `HashMap` hasher.
pub(crate) type FastHash = BuildHasherDefault<Fx>;

/// An id of an interned [`Side`].
type SideId = u32;

/// The ports one selection's items contribute to a side.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Group {
    /// The selection (interned by content).
    sel: u32,
    /// The union of the ports of its allow items.
    allow: PortSetId,
    /// The union of the ports of its deny items.
    deny: PortSetId,
}

/// One direction of one end's policy, by content: everything its verdict on a remote identity
/// and port depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Side {
    /// Not default-deny (or policy enforcement off).
    open: bool,
    /// Ingress of a pod under `allow-localhost`: the local host is let in.
    localhost: bool,
    /// Ports of the allow items whose peers select every identity.
    allow: PortSetId,
    /// Ports of the deny items whose peers select every identity.
    deny: PortSetId,
    /// The other items, by selection, sorted.
    groups: Vec<Group>,
}

/// What one set of policies makes of the ends.
#[derive(Clone, Debug)]
struct View {
    /// (egress, ingress) side of each end; `None` for outside addresses.
    sides: Vec<Option<(SideId, SideId)>>,
    /// The node an end runs on (pods, hosts).
    node: Vec<Option<usize>>,
    /// The identity an end has for the others (for a host: on other nodes).
    identity: Vec<u32>,
    /// Its identity class (filled once the classes are known).
    class: Vec<u32>,
}

/// The connectivity between a list of ends under one set of policies (or two, for a diff).
pub struct Connectivity {
    sets: PortSets,
    peers: Vec<Peer>,
    family: Vec<Family>,
    views: Vec<View>,
    /// Per side, its answer per identity class.
    tables: Vec<Vec<PortSetId>>,
    /// The class of `host` (1).
    host_class: u32,
    /// How many identity classes there are (the sides answer each differently).
    classes: usize,
    /// How many sides with different answers there are.
    distinct_sides: usize,
}

/// A selection kept alive, and its id.
type KeptSelection = (Arc<Vec<u32>>, u32);

/// Interning of selections and sides while views are added.
struct Builder {
    sets: PortSets,
    /// Selections: identities, and which outside addresses of no named prefix (per family,
    /// [`WORLD_ENDS`]) the item's peers select.
    sels: Vec<(Arc<Vec<u32>>, u8)>,
    sel_ids: HashMap<(Arc<Vec<u32>>, u8), u32>,
    /// By address and world bits: the `Arc` is kept, so its address cannot be reused by
    /// another selection.
    sel_ptrs: HashMap<(usize, u8), KeptSelection, FastHash>,
    sides: Vec<Side>,
    side_ids: HashMap<Side, SideId>,
    views: Vec<View>,
}

/// The selector policies of one model, as [`Compilation`] computes them.
pub struct Policies<'a> {
    compilation: &'a Compilation,
    by_node: bool,
}

impl<'a> Policies<'a> {
    /// The selector policies of `compilation`, which was built for `model`.
    pub fn new(model: &Model, compilation: &'a Compilation) -> Policies<'a> {
        Policies {
            compilation,
            by_node: crate::compile::uses_node_selectors(model),
        }
    }

    fn of(&self, model: &Model, ep: EndpointRef) -> Option<&'a Arc<SelectorPolicy>> {
        self.compilation
            .policies
            .get(&class_of(model, ep, self.by_node))
    }
}

impl Connectivity {
    /// The connectivity of `peers` under `model`'s policies.
    pub fn new(model: &Model, peers: &[Peer]) -> Connectivity {
        let compilation = Compilation::new(model, None, ProxyPorts::default());
        let mut b = Builder::new();
        b.add_view(model, peers, &Policies::new(model, &compilation), None);
        b.finish(peers)
    }

    /// The ends, in the order given.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The interned port sets.
    pub fn sets(&self) -> &PortSets {
        &self.sets
    }

    /// How many identity classes the ends' sides tell apart.
    pub fn identity_classes(&self) -> usize {
        self.classes
    }

    /// How many sides (one direction of one end's policy) give different answers.
    pub fn distinct_sides(&self) -> usize {
        self.distinct_sides
    }

    /// What end `i` may send to end `j` on (empty for `i == j`), under the first policy set.
    pub fn allowed(&mut self, i: usize, j: usize) -> PortSetId {
        self.allowed_in(0, i, j)
    }

    /// The class of `peers[target]`'s identity as the endpoint `peers[viewer]` sees it.
    fn seen(&self, view: &View, viewer: usize, target: usize) -> u32 {
        match self.peers[target] {
            Peer::Host(n) if view.node[viewer] == Some(n) => self.host_class,
            _ => view.class[target],
        }
    }

    /// What end `i` may send to end `j` on under the policies of view `v`.
    fn allowed_in(&mut self, v: usize, i: usize, j: usize) -> PortSetId {
        if i == j {
            return EMPTY;
        }
        let view = &self.views[v];
        let out = match view.sides[i] {
            Some((egress, _)) => self.tables[egress as usize][self.seen(view, i, j) as usize],
            None => FULL,
        };
        let inn = match view.sides[j] {
            Some((_, ingress)) => self.tables[ingress as usize][self.seen(view, j, i) as usize],
            None => FULL,
        };
        let (fs, fd) = (self.family[i], self.family[j]);
        self.sets.meet(out, inn, fs, fd)
    }
}

impl Builder {
    fn new() -> Builder {
        Builder {
            sets: PortSets::new(),
            sels: Vec::new(),
            sel_ids: HashMap::new(),
            sel_ptrs: HashMap::default(),
            sides: Vec::new(),
            side_ids: HashMap::new(),
            views: Vec::new(),
        }
    }

    fn sel_id(&mut self, ids: &Arc<Vec<u32>>, world: u8) -> u32 {
        let ptr = (Arc::as_ptr(ids) as usize, world);
        if let Some((_, id)) = self.sel_ptrs.get(&ptr) {
            return *id;
        }
        let next = u32::try_from(self.sels.len()).unwrap_or(u32::MAX);
        let id = *self.sel_ids.entry((ids.clone(), world)).or_insert(next);
        if id == next {
            self.sels.push((ids.clone(), world));
        }
        self.sel_ptrs.insert(ptr, (ids.clone(), id));
        id
    }

    fn side_id(&mut self, side: Side) -> SideId {
        if let Some(&id) = self.side_ids.get(&side) {
            return id;
        }
        let id = SideId::try_from(self.sides.len()).unwrap_or(SideId::MAX);
        self.sides.push(side.clone());
        self.side_ids.insert(side, id);
        id
    }

    /// The ports an item names, resolved for the endpoint as the evaluator resolves them
    /// (ingress named ports on the endpoint's pod, egress ones anywhere in the cluster).
    fn item_ports(&mut self, model: &Model, ep: EndpointRef, item: &Item) -> PortSetId {
        let Ports::List(list) = &item.ports else {
            return FULL;
        };
        let mut set = PortSet::empty();
        for p in list {
            match &p.port {
                PortSpec::Range(0, 0) => set = set.union(&PortSet::range(p.proto, 0, u16::MAX)),
                PortSpec::Range(a, b) => set = set.union(&PortSet::range(p.proto, *a, *b.max(a))),
                PortSpec::Named(name) => {
                    let ports: Vec<u16> = match item.direction {
                        Direction::Ingress => model
                            .pod(ep)
                            .map(|pod| {
                                pod.named_ports
                                    .iter()
                                    .filter(|n| n.name == *name && n.proto == p.proto)
                                    .map(|n| n.port)
                                    .collect()
                            })
                            .unwrap_or_default(),
                        Direction::Egress => model
                            .inventory
                            .named_ports_anywhere(name)
                            .iter()
                            .filter(|(proto, _)| *proto == p.proto)
                            .map(|(_, port)| *port)
                            .collect(),
                    };
                    for port in ports {
                        set = set.union(&PortSet::range(p.proto, port, port));
                    }
                }
            }
        }
        self.sets.intern(set)
    }

    /// The side of endpoint `ep` with selector policy `sp` in `dir`.
    fn side(
        &mut self,
        model: &Model,
        ep: EndpointRef,
        sp: &SelectorPolicy,
        dir: Direction,
        requires: &[Selector],
    ) -> SideId {
        let (mut allow, mut deny) = (EMPTY, EMPTY);
        let mut groups: BTreeMap<u32, (PortSetId, PortSetId)> = BTreeMap::new();
        for r in sp.items.iter().filter(|r| r.item().direction == dir) {
            let item = r.item();
            let ports = self.item_ports(model, ep, item);
            let (a, d) = match &r.identities {
                None => (&mut allow, &mut deny),
                Some(ids) => {
                    let sel = self.sel_id(ids, world_bits(model, item, requires));
                    let g = groups.entry(sel).or_insert((EMPTY, EMPTY));
                    (&mut g.0, &mut g.1)
                }
            };
            if item.deny {
                *d = self.sets.union(*d, ports);
            } else {
                *a = self.sets.union(*a, ports);
            }
        }
        let enforced = match dir {
            Direction::Ingress => sp.enforced.0,
            Direction::Egress => sp.enforced.1,
        };
        let never = model.config.enforcement == Enforcement::Never;
        self.side_id(Side {
            open: !enforced || never,
            localhost: dir == Direction::Ingress
                && matches!(ep, EndpointRef::Pod(_))
                && model.config.allow_localhost
                && !never,
            allow,
            deny,
            groups: groups
                .into_iter()
                .map(|(sel, (allow, deny))| Group { sel, allow, deny })
                .collect(),
        })
    }

    /// Adds the view of `model` on `peers`. With `reuse` = (an earlier view, the ends whose
    /// policies may differ from it), the other ends keep that view's sides.
    fn add_view(
        &mut self,
        model: &Model,
        peers: &[Peer],
        policies: &Policies<'_>,
        reuse: Option<(usize, &HashSet<usize>)>,
    ) {
        let node_index: HashMap<&str, usize> = model
            .inventory
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let ids = &model.identities;
        let mut view = View {
            sides: Vec::with_capacity(peers.len()),
            node: Vec::with_capacity(peers.len()),
            identity: Vec::with_capacity(peers.len()),
            class: Vec::new(),
        };
        // Within one view, endpoints with the same class and (for ingress named ports) the
        // same named ports have the same sides.
        let mut memo: HashMap<
            (crate::compile::Class, Vec<crate::inventory::NamedPort>),
            (SideId, SideId),
        > = HashMap::new();
        let empty = SelectorPolicy::default();
        let any_requires = model
            .policies
            .rules
            .iter()
            .any(|r| !r.requires.ingress.is_empty() || !r.requires.egress.is_empty());
        for (k, peer) in peers.iter().enumerate() {
            let (ep, node, identity) = match *peer {
                Peer::Pod(i) => {
                    let pod = &model.inventory.pods[i];
                    (
                        Some(EndpointRef::Pod(i)),
                        node_index.get(pod.node.as_str()).copied(),
                        ids.pod_identity.get(i).copied().flatten().unwrap_or(0),
                    )
                }
                Peer::Host(n) => (
                    Some(EndpointRef::Host(n)),
                    Some(n),
                    model
                        .inventory
                        .nodes
                        .get(n)
                        .map_or(identity::REMOTE_NODE, |node| ids.remote_node_identity(node)),
                ),
                Peer::External(ip) => (None, None, outside_identity(ids, ip)),
            };
            // An address in no named prefix: its own identity, per family (see
            // [`WORLD_ENDS`]).
            let identity = match (*peer, identity) {
                (
                    Peer::External(ip),
                    identity::WORLD | identity::WORLD_IPV4 | identity::WORLD_IPV6,
                ) => WORLD_ENDS[usize::from(ip.is_ipv6())],
                _ => identity,
            };
            view.node.push(node);
            view.identity.push(identity);
            let Some(ep) = ep else {
                view.sides.push(None);
                continue;
            };
            if let Some((earlier, changed)) = reuse
                && !changed.contains(&k)
            {
                let sides = self.views[earlier].sides[k];
                view.sides.push(sides);
                continue;
            }
            let class = class_of(model, ep, policies.by_node);
            let named = model
                .pod(ep)
                .map(|p| p.named_ports.clone())
                .unwrap_or_default();
            let key = (class, named);
            if let Some(&s) = memo.get(&key) {
                view.sides.push(Some(s));
                continue;
            }
            let sp = policies.of(model, ep).map_or(&empty, |p| p);
            let requires = |dir: Direction| -> Vec<Selector> {
                if !any_requires {
                    return Vec::new();
                }
                model
                    .rules_for(ep)
                    .iter()
                    .flat_map(|r| r.requires.get(dir).iter().cloned())
                    .collect()
            };
            let s = (
                self.side(
                    model,
                    ep,
                    sp,
                    Direction::Egress,
                    &requires(Direction::Egress),
                ),
                self.side(
                    model,
                    ep,
                    sp,
                    Direction::Ingress,
                    &requires(Direction::Ingress),
                ),
            );
            memo.insert(key, s);
            view.sides.push(Some(s));
        }
        self.views.push(view);
    }

    /// Classes the identities the views use, and tables every side over the classes.
    fn finish(self, peers: &[Peer]) -> Connectivity {
        let Builder {
            mut sets,
            sels,
            sides,
            mut views,
            ..
        } = self;
        // The identities that can be a remote end: every view's, and `host`.
        let mut relevant: HashMap<u32, Vec<u32>, FastHash> = HashMap::default();
        relevant.insert(identity::HOST, vec![u32::MAX]);
        for v in &views {
            for &id in &v.identity {
                relevant.entry(id).or_default();
            }
        }
        for (s, (sel, world)) in sels.iter().enumerate() {
            let s = u32::try_from(s).unwrap_or(u32::MAX);
            let virtual_ids = WORLD_ENDS
                .iter()
                .enumerate()
                .filter(|(bit, _)| world & (1 << bit) != 0)
                .map(|(_, id)| id);
            for id in sel.iter().chain(virtual_ids) {
                if let Some(sig) = relevant.get_mut(id) {
                    sig.push(s);
                }
            }
        }
        // Identities in the same selections are one class; numbered in identity order so
        // the result does not depend on hashing.
        let mut ordered: Vec<(u32, Vec<u32>)> = relevant.into_iter().collect();
        ordered.sort_unstable_by_key(|(id, _)| *id);
        let mut class_ids: HashMap<Vec<u32>, u32> = HashMap::new();
        let mut class_of_id: HashMap<u32, u32, FastHash> = HashMap::default();
        for (id, sig) in ordered {
            let next = u32::try_from(class_ids.len()).unwrap_or(u32::MAX);
            let c = *class_ids.entry(sig).or_insert(next);
            class_of_id.insert(id, c);
        }
        let classes = class_ids.len();
        let host_class = class_of_id.get(&identity::HOST).copied().unwrap_or(0);
        let sel_classes: Vec<Vec<u32>> = sels
            .iter()
            .map(|(sel, world)| {
                let virtual_ids = WORLD_ENDS
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| world & (1 << bit) != 0)
                    .map(|(_, id)| id);
                let mut cs: Vec<u32> = sel
                    .iter()
                    .chain(virtual_ids)
                    .filter_map(|id| class_of_id.get(id).copied())
                    .collect();
                cs.sort_unstable();
                cs.dedup();
                cs
            })
            .collect();
        for v in &mut views {
            v.class = v
                .identity
                .iter()
                .map(|id| class_of_id.get(id).copied().unwrap_or(0))
                .collect();
        }
        let tables: Vec<Vec<PortSetId>> = sides
            .iter()
            .map(|side| table(&mut sets, side, &sel_classes, classes, host_class))
            .collect();
        // Classes every side answers alike are one class, and sides with the same answers
        // are one side: nothing can tell them apart.
        let class_map = same_columns(&tables, classes);
        let side_map = same_rows(&tables);
        for v in &mut views {
            for c in &mut v.class {
                *c = class_map[*c as usize];
            }
            for (egress, ingress) in v.sides.iter_mut().flatten() {
                *egress = side_map[*egress as usize];
                *ingress = side_map[*ingress as usize];
            }
        }
        let host_class = class_map[host_class as usize];
        Connectivity {
            sets,
            peers: peers.to_vec(),
            family: peers
                .iter()
                .map(|p| match p {
                    Peer::External(IpAddr::V4(_)) => Family::V4,
                    Peer::External(IpAddr::V6(_)) => Family::V6,
                    _ => Family::Any,
                })
                .collect(),
            views,
            tables,
            host_class,
            classes: distinct(&class_map),
            distinct_sides: distinct(&side_map),
        }
    }
}

/// How many different values a map has.
fn distinct(map: &[u32]) -> usize {
    map.iter().collect::<HashSet<_>>().len()
}

/// A side's answer for every identity class. Classes in none of its selections get the
/// answer of the wildcard items alone; the others are grouped by the set of its selections
/// they are in (a bit mask), and each mask is worked out once.
fn table(
    sets: &mut PortSets,
    side: &Side,
    sel_classes: &[Vec<u32>],
    classes: usize,
    host_class: u32,
) -> Vec<PortSetId> {
    let words = side.groups.len().div_ceil(64).max(1);
    let mut masks = vec![0u64; classes * words];
    let mut touched: Vec<u32> = Vec::new();
    for (k, g) in side.groups.iter().enumerate() {
        for &c in &sel_classes[g.sel as usize] {
            let m = &mut masks[c as usize * words..(c as usize + 1) * words];
            if m.iter().all(|w| *w == 0) {
                touched.push(c);
            }
            m[k / 64] |= 1 << (k % 64);
        }
    }
    let answer = |sets: &mut PortSets, mask: &[u64], host: bool| {
        let (mut allow, mut deny) = (side.allow, side.deny);
        for (k, g) in side.groups.iter().enumerate() {
            if mask[k / 64] & (1 << (k % 64)) != 0 {
                allow = sets.union(allow, g.allow);
                deny = sets.union(deny, g.deny);
            }
        }
        let base = if side.open || (host && side.localhost) {
            FULL
        } else {
            allow
        };
        sets.minus(base, deny)
    };
    let zero = vec![0u64; words];
    let default = answer(sets, &zero, false);
    let mut out = vec![default; classes];
    let mut seen: HashMap<Box<[u64]>, PortSetId, FastHash> = HashMap::default();
    for c in touched {
        let mask = &masks[c as usize * words..(c as usize + 1) * words];
        if c == host_class {
            continue;
        }
        let v = match seen.get(mask) {
            Some(&v) => v,
            None => {
                let v = answer(sets, mask, false);
                seen.insert(mask.into(), v);
                v
            }
        };
        out[c as usize] = v;
    }
    if let Some(slot) = out.get_mut(host_class as usize) {
        let h = host_class as usize;
        *slot = answer(sets, &masks[h * words..(h + 1) * words], true);
    }
    out
}

/// For each table, the first table equal to it.
fn same_rows(tables: &[Vec<PortSetId>]) -> Vec<u32> {
    let mut first: HashMap<&[PortSetId], u32> = HashMap::new();
    tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            *first
                .entry(t.as_slice())
                .or_insert(u32::try_from(i).unwrap_or(u32::MAX))
        })
        .collect()
}

/// For each of the `n` columns of `tables` (identity classes), the first column equal to it:
/// columns are hashed side by side (row by row, as the tables lie in memory), and each
/// column is then compared with the first of its hash in the same order.
fn same_columns(tables: &[Vec<PortSetId>], n: usize) -> Vec<u32> {
    let mut hash = vec![0u64; n];
    for t in tables {
        for (h, &x) in hash.iter_mut().zip(t) {
            *h = (h.rotate_left(5) ^ u64::from(x)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    let mut out: Vec<u32> = (0..n)
        .map(|c| u32::try_from(c).unwrap_or(u32::MAX))
        .collect();
    // Candidates: the first column of each hash; the rest are checked against it, and a
    // column that differs starts a new candidate list for its hash.
    let mut pending: Vec<usize> = (0..n).collect();
    while !pending.is_empty() {
        let mut rep: HashMap<u64, usize, FastHash> = HashMap::default();
        let pairs: Vec<(usize, usize)> = pending
            .iter()
            .filter_map(|&c| {
                let r = *rep.entry(hash[c]).or_insert(c);
                (r != c).then_some((c, r))
            })
            .collect();
        let mut equal = vec![true; pairs.len()];
        for t in tables {
            for (ok, &(c, r)) in equal.iter_mut().zip(&pairs) {
                *ok &= t[c] == t[r];
            }
        }
        pending.clear();
        for (&(c, r), ok) in pairs.iter().zip(equal) {
            if ok {
                out[c] = out[r];
            } else {
                pending.push(c);
            }
        }
    }
    out
}

/// Identities for the outside addresses in no prefix policies name, IPv4 and IPv6: they are
/// not numbers the agent uses (those are `world`, or `world-ipv4`/`world-ipv6` in
/// dual-stack), and stand in for them because the evaluator tells such addresses apart by
/// family where the selector cache cannot: in a single-stack cluster both families are
/// `world`, yet `0.0.0.0/0` holds only the IPv4 ones. Whether an item selects them is decided
/// the evaluator's way ([`world_bits`]).
const WORLD_ENDS: [u32; 2] = [u32::MAX - 2, u32::MAX - 1];

/// Which of [`WORLD_ENDS`] an item's peers select (bit 0 IPv4, bit 1 IPv6), with `requires`
/// narrowing endpoint selectors, as [`eval`](crate::eval) matches peers against an address
/// in no named prefix: by the labels of its world identity, and for a CIDR only a `/0` of its
/// family holds it (every other prefix is named, and so are the exceptions).
fn world_bits(model: &Model, item: &Item, requires: &[Selector]) -> u8 {
    let ids = &model.identities;
    let mut bits = 0;
    for (bit, v6) in [(0u8, false), (1u8, true)] {
        let world = if !ids.dual_stack {
            identity::WORLD
        } else if v6 {
            identity::WORLD_IPV6
        } else {
            identity::WORLD_IPV4
        };
        let labels = ids.labels_on(world, None);
        let hit = match &item.peers {
            Peers::Any => true,
            Peers::List(peers) => peers.iter().any(|p| match &p.kind {
                PeerKind::Endpoints(sel) => {
                    sel.matches(&labels) && requires.iter().all(|r| r.matches(&labels))
                }
                PeerKind::Entity(e) => e.selects(&labels, &model.config.cluster_name),
                PeerKind::Cidr(c) => {
                    let everything =
                        |n: &ipnet::IpNet| n.prefix_len() == 0 && n.addr().is_ipv6() == v6;
                    everything(&c.net) && !c.except.iter().any(everything)
                }
                PeerKind::Nodes(_)
                | PeerKind::Fqdn(_)
                | PeerKind::Service(_)
                | PeerKind::Unresolved(_) => false,
            }),
        };
        if hit {
            bits |= 1 << bit;
        }
    }
    bits
}

/// The identity of an outside address: the most specific prefix policies name that holds
/// it, else the world identity of its family (as the evaluator finds it).
fn outside_identity(ids: &IdentityTable, ip: IpAddr) -> u32 {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    for len in (1..=max).rev() {
        if let Ok(net) = ipnet::IpNet::new(ip, len)
            && let Some(&id) = ids.cidrs.get(&net.trunc())
        {
            return id;
        }
    }
    ids.world_of(&ip)
}
