//! V0404: allow items that deny items cover entirely, for every pod that could exist.
//!
//! For an allow item A of a rule with subject S, and the deny items D of rules with subjects
//! T (same direction), A is shadowed when no flow satisfies
//! `S(x) ∧ A(p, proto, port) ∧ ¬∨(T(x) ∧ D(p, proto, port))`. Deny items the encoding cannot
//! express count as denying nothing and allow items it cannot express are skipped, so a
//! finding is never a guess. Each finding's example — a flow A allows — is replayed through
//! the reference evaluator on a cluster built from the solver's witness, and dropped unless
//! the evaluator denies it by a deny rule.

use crate::flow::{self, Encoded, FlowVars};
use crate::replay::Policies;
use crate::replay::replay;
use crate::sample::Judge;
use crate::{Focus, Limits, solver};
use polc_compiler::diag::{Code, Diagnostic};
use polc_compiler::eval::{Verdict, Why};
use polc_compiler::ir::{
    Direction, Entity, Item, Op, PeerKind, Peers, PolicySet, PortSpec, Ports, Requirement, Rule,
    Selector, Subject,
};
use polc_compiler::version::CiliumVersion;
use std::collections::HashMap;
use std::sync::Arc;
use z3::SatResult;
use z3::ast::Bool;

/// What the flow checks look up about a policy set, worked out once per set (a review asks
/// several checks about one set): the namespace each rule's subject pins, the allow and deny
/// items by place, and the items' overlap shapes.
pub(crate) struct Layout<'a> {
    /// The namespace each rule's subject pins (`None`: it spans namespaces, or it selects
    /// nodes).
    pub(crate) ns: Vec<Option<&'a str>>,
    /// The allow items that select something.
    pub(crate) allows: ItemIndex<'a>,
    /// The deny items.
    pub(crate) denies: ItemIndex<'a>,
    pub(crate) shapes: Shapes<'a>,
}

impl<'a> Layout<'a> {
    /// The layout of `set`, reading what `facts` (of a set that shares rules with it)
    /// already knows of its rules instead of looking at them again.
    pub(crate) fn new(set: &'a PolicySet, facts: Option<&'a Facts>) -> Layout<'a> {
        let mut ns = Vec::with_capacity(set.rules.len());
        let mut knowns = Vec::with_capacity(set.rules.len());
        let (mut allows, mut denies) = (ItemIndex::default(), ItemIndex::default());
        for (ri, r) in set.rules.iter().enumerate() {
            let known = facts.and_then(|f| f.of(r));
            knowns.push(known);
            let at = match known {
                Some(k) => k.ns.as_deref(),
                None => RuleFacts::pinned(r),
            };
            ns.push(at);
            if !matches!(r.subject, Subject::Endpoints(_)) {
                continue;
            }
            let mut add = |ii: usize, f: ItemFacts| {
                let index = if f.deny {
                    &mut denies
                } else if f.nothing {
                    return;
                } else {
                    &mut allows
                };
                index.add(at, f.slot, (ri, ii, f.kinds));
            };
            match known {
                Some(k) => k.items.iter().enumerate().for_each(|(ii, f)| add(ii, *f)),
                None => r
                    .items
                    .iter()
                    .enumerate()
                    .for_each(|(ii, it)| add(ii, ItemFacts::of(it))),
            }
        }
        Layout {
            ns,
            allows,
            denies,
            shapes: Shapes::new(set, knowns),
        }
    }
}

/// What a [`Layout`] reads of each rule of a policy set that many reviews share (the
/// webhook's current set), worked out once: a review's set holds the same rules (the same
/// `Arc`s) beside its own, found here by address.
pub struct Facts {
    rules: HashMap<usize, (Arc<Rule>, RuleFacts)>,
}

impl Facts {
    /// The facts of every rule of `set` (they keep the rules alive).
    pub fn new(set: &PolicySet) -> Facts {
        let rules = set
            .rules
            .iter()
            .map(|r| (Arc::as_ptr(r) as usize, (r.clone(), RuleFacts::of(r))))
            .collect();
        Facts { rules }
    }

    /// What is known of rule `r` (it must be the very rule: the same `Arc`).
    fn of(&self, r: &Arc<Rule>) -> Option<&RuleFacts> {
        let (rule, facts) = self.rules.get(&(Arc::as_ptr(r) as usize))?;
        Arc::ptr_eq(rule, r).then_some(facts)
    }
}

pub(crate) struct RuleFacts {
    /// The namespace the rule's subject pins.
    ns: Option<String>,
    items: Vec<ItemFacts>,
    /// Its items' shapes.
    shapes: Vec<Shape>,
}

impl RuleFacts {
    fn of(r: &Rule) -> RuleFacts {
        RuleFacts {
            ns: RuleFacts::pinned(r).map(str::to_string),
            items: r.items.iter().map(ItemFacts::of).collect(),
            shapes: r.items.iter().map(Shape::of).collect(),
        }
    }

    fn pinned(r: &Rule) -> Option<&str> {
        match &r.subject {
            Subject::Endpoints(t) => t.pinned("io.kubernetes.pod.namespace"),
            Subject::Nodes(_) => None,
        }
    }
}

#[derive(Clone, Copy)]
struct ItemFacts {
    /// Its direction ([`slot`]).
    slot: usize,
    deny: bool,
    /// It selects nothing.
    nothing: bool,
    /// The kinds of remote end it can match ([`kinds`]).
    kinds: u8,
}

impl ItemFacts {
    fn of(it: &Item) -> ItemFacts {
        ItemFacts {
            slot: slot(it.direction),
            deny: it.deny,
            nothing: it.selects_nothing(),
            kinds: kinds(it),
        }
    }
}

/// An indexed item: rule, item, and the kinds of remote end it can match ([`kinds`]).
type Entry = (usize, usize, u8);

/// Items of a set's pod rules by direction and by the namespace their rule's subject pins
/// (`None`: the subject spans namespaces), to find the items that can meet one without
/// looking at the whole set.
#[derive(Default)]
pub(crate) struct ItemIndex<'a> {
    /// By pinned namespace, then direction ([`slot`]); each list in the set's order.
    pinned: HashMap<&'a str, [Vec<Entry>; 2]>,
    /// Items of rules that pin no namespace, by direction.
    unpinned: [Vec<Entry>; 2],
    /// Every item of a direction, in the set's order.
    all: [Vec<Entry>; 2],
}

fn slot(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

impl<'a> ItemIndex<'a> {
    /// Adds an item (after those of earlier rules) of a rule pinned to `ns`, of direction
    /// `slot`.
    fn add(&mut self, ns: Option<&'a str>, slot: usize, e: Entry) {
        match ns {
            Some(n) => self.pinned.entry(n).or_default()[slot].push(e),
            None => self.unpinned[slot].push(e),
        }
        self.all[slot].push(e);
    }

    /// The items of `direction` whose rules may apply to pods in namespace `ns` (any
    /// namespace: `None`) and whose peers may match a remote end of `kinds` (bits of
    /// [`kinds`]), as (rule, item) indexes in the set's order.
    pub(crate) fn near(
        &self,
        direction: Direction,
        ns: Option<&str>,
        kinds: u8,
    ) -> impl Iterator<Item = (usize, usize)> + use<'_> {
        let d = slot(direction);
        let (a, b) = match ns {
            None => (self.all[d].as_slice(), &[][..]),
            Some(n) => (
                self.pinned.get(n).map_or(&[][..], |l| l[d].as_slice()),
                self.unpinned[d].as_slice(),
            ),
        };
        Merged { a, b }
            .filter(move |e| e.2 & kinds != 0)
            .map(|(r, i, _)| (r, i))
    }
}

/// Two lists in the set's order, as one.
struct Merged<'l> {
    a: &'l [Entry],
    b: &'l [Entry],
}

impl Iterator for Merged<'_> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        let from_a = match (self.a.first(), self.b.first()) {
            (Some(x), Some(y)) => (x.0, x.1) <= (y.0, y.1),
            (Some(_), None) => true,
            (None, _) => false,
        };
        let side = if from_a { &mut self.a } else { &mut self.b };
        let (first, rest) = side.split_first()?;
        *side = rest;
        Some(*first)
    }
}

/// Whether two items (written in different places) have the same terms: direction, deny,
/// authentication, peers and ports.
pub(crate) fn same_terms(a: &Item, b: &Item) -> bool {
    let peers = match (&a.peers, &b.peers) {
        (Peers::Any, Peers::Any) => true,
        (Peers::List(x), Peers::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.kind == q.kind)
        }
        _ => false,
    };
    let ports = match (&a.ports, &b.ports) {
        (Ports::Any, Ports::Any) => true,
        (Ports::List(x), Ports::List(y)) => {
            x.len() == y.len()
                && x.iter().zip(y).all(|(p, q)| {
                    p.proto == q.proto && p.port == q.port && p.redirect == q.redirect
                })
        }
        _ => false,
    };
    a.direction == b.direction && a.deny == b.deny && a.auth == b.auth && peers && ports
}

/// The kinds of remote end an item's peers can match, as bits: pod (1), world (2), host
/// (4), remote node (8).
pub(crate) fn kinds(it: &Item) -> u8 {
    const EVERY: u8 = 0b1111;
    let Peers::List(peers) = &it.peers else {
        return EVERY;
    };
    let mut out = 0;
    for p in peers {
        out |= match &p.kind {
            PeerKind::Endpoints(s) if s.is_wildcard() || s.has_reserved() => EVERY,
            PeerKind::Endpoints(_) => 1,
            PeerKind::Cidr(_) | PeerKind::Fqdn(_) => 2,
            PeerKind::Entity(Entity::All) => EVERY,
            PeerKind::Entity(Entity::World | Entity::WorldIpv4 | Entity::WorldIpv6) => 2,
            PeerKind::Entity(Entity::Host) => 4,
            PeerKind::Entity(Entity::RemoteNode) => 8,
            PeerKind::Entity(Entity::Cluster) => 1 | 4 | 8,
            _ => EVERY,
        };
    }
    out
}

/// Runs the check on a lowered policy set without `fromRequires`/`toRequires` (the objects it
/// came from serve the replays), for the rules of `focus` (every rule: `Focus::All`): their
/// allow items that the set's deny items shadow,
/// and the allow items of other rules that their deny items shadow (unless the other deny
/// items shadowed those already).
pub(crate) fn focused<P: Policies + ?Sized>(
    set: &PolicySet,
    layout: &Layout<'_>,
    objects: &P,
    version: CiliumVersion,
    limits: Limits,
    focus: Focus<'_>,
) -> Vec<Diagnostic> {
    let shapes = &layout.shapes;
    let item_at = |(r, i): (usize, usize)| &set.rules[r].items[i];
    // The allow items a focus deny item may shadow, besides the focus's own.
    let visits = focus.visits(set, layout, |f, a| {
        let d = item_at(f);
        d.deny && d.direction == item_at(a).direction && shapes.meet(a, f)
    });
    let mut out = Vec::new();
    let judge = Judge::new(version);
    for (ra, ia) in focus.walk(set, visits.as_deref()) {
        let rule = &set.rules[ra];
        let Subject::Endpoints(subject) = &rule.subject else {
            continue;
        };
        let item = &rule.items[ia];
        if item.deny || item.selects_nothing() {
            continue;
        }
        // Items the encoding cannot express are skipped (a finding is never a guess).
        if subject.has_reserved() || !flow::expressible(item, None) {
            continue;
        }
        let ns = layout.ns[ra];
        let candidates: Vec<(usize, usize)> = layout
            .denies
            .near(item.direction, ns, shapes.get(ra, ia).kinds())
            .filter(|&(ri, ii)| {
                let Subject::Endpoints(t) = &set.rules[ri].subject else {
                    return false;
                };
                shapes.meet((ra, ia), (ri, ii)) && !disjoint(subject, t)
            })
            .collect();
        if candidates.is_empty() || !focus.involves((ra, ia), candidates.iter().copied()) {
            continue;
        }
        // A flow of the item that no deny item matches answers without the solver.
        if judge.escapes(set, subject, item, ns, &candidates, None) {
            continue;
        }
        let mut v = FlowVars::for_version(version);
        let wf = v.well_formed("default");
        let (Encoded::Exact(s), Encoded::Exact(a)) =
            (flow::subject(&mut v, subject), flow::item(&mut v, item))
        else {
            continue;
        };
        // Shadowed: no flow of the item escapes the denies.
        let shadowed = |cands: &[(usize, usize)], v: &mut FlowVars| {
            if judge.escapes(set, subject, item, ns, cands, None) {
                return Ok(None);
            }
            // One deny item that holds the item on its face answers without the solver.
            let whole = cands.iter().find_map(|&(ri, ii)| {
                let r = &set.rules[ri];
                let Subject::Endpoints(t) = &r.subject else {
                    return None;
                };
                let d = &r.items[ii];
                contains((t, d), (subject, item), None)
                    .then(|| (r.origin.describe(), d.path.clone(), d.loc))
            });
            if let Some(d) = whole {
                return Ok(Some(vec![d]));
            }
            let mut denies = Vec::new();
            let mut deny_refs = Vec::new();
            for &(ri, ii) in cands {
                let r = &set.rules[ri];
                let d = &r.items[ii];
                let Subject::Endpoints(t) = &r.subject else {
                    continue;
                };
                if let (Encoded::Exact(ts), Encoded::Exact(dd)) =
                    (flow::subject(v, t), flow::item(v, d))
                {
                    denies.push(Bool::and(&[ts, dd]));
                    deny_refs.push((r.origin.describe(), d.path.clone(), d.loc));
                }
            }
            if denies.is_empty() {
                return Ok(None);
            }
            let z = solver(limits);
            z.assert(&wf);
            z.assert(&s);
            z.assert(&a);
            z.assert(Bool::or(&denies).not());
            match crate::check("shadow", &z) {
                SatResult::Unsat => Ok(Some(deny_refs)),
                SatResult::Unknown => Err(crate::undecided(item.loc, "shadowed-allow", &z)),
                SatResult::Sat => Ok(None),
            }
        };
        let deny_refs = match shadowed(&candidates, &mut v) {
            Ok(Some(refs)) => refs,
            Ok(None) => continue,
            Err(d) => {
                out.push(d);
                continue;
            }
        };
        // Another rule's item is this object's finding only if its own deny items did
        // not shadow it already.
        if !focus.has_item(ra, ia) {
            let before: Vec<(usize, usize)> = candidates
                .iter()
                .copied()
                .filter(|&(ri, ii)| !focus.has_item(ri, ii))
                .collect();
            if !before.is_empty() && !matches!(shadowed(&before, &mut v), Ok(None)) {
                continue;
            }
        }
        // An example flow of the item (it exists unless the item is empty), denied by
        // a deny rule in the reference evaluator.
        let replayed =
            crate::item_examples("shadow", subject, item, ns, version, limits).find_map(|w| {
                let r = replay(objects, version, &w, item.direction, None)?;
                let d = r.at_x(item.direction)?;
                (d.verdict == Verdict::Deny && d.why == Why::DenyRule).then_some(r.text)
            });
        let Some(text) = replayed else {
            continue;
        };
        let mut d = Diagnostic::new(
            Code::ShadowedAllow,
            item.loc,
            format!(
                "every flow this {} item allows is denied by {}",
                item.direction.name(),
                deny_refs
                    .iter()
                    .map(|(p, path, _)| format!("{p} {path}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .label("shadowed by deny rules")
        .help(format!(
            "deny wins over allow, so this item has no effect; for example {text}. Remove \
             it, or narrow the deny rules"
        ));
        for (_, _, loc) in &deny_refs {
            d = d.related(*loc, "deny item");
        }
        out.push(d);
    }
    out
}

/// A cheap test before the solver: whether two selectors can never select the same pod,
/// because they require a key with values that have nothing in common, or one requires a
/// key the other excludes.
pub(crate) fn disjoint(a: &Selector, b: &Selector) -> bool {
    a.reqs.iter().any(|x| {
        b.reqs.iter().any(|y| {
            x.key == y.key
                && match (x.op, y.op) {
                    (Op::In, Op::In) => !x.values.iter().any(|v| y.values.contains(v)),
                    (Op::In | Op::Exists, Op::DoesNotExist)
                    | (Op::DoesNotExist, Op::In | Op::Exists) => true,
                    (Op::In, Op::NotIn) => x.values.iter().all(|v| y.values.contains(v)),
                    (Op::NotIn, Op::In) => y.values.iter().all(|v| x.values.contains(v)),
                    _ => false,
                }
        })
    })
}

/// Whether every pod `s` selects, `t` selects too, as far as their requirements tell on
/// their face: each requirement of `t` follows from one of `s`.
pub(crate) fn wider(t: &Selector, s: &Selector) -> bool {
    if t.has_reserved() || s.has_reserved() {
        return false;
    }
    let same_key = |a: &Requirement, b: &Requirement| {
        a.key == b.key
            || (a.bare_key() == b.bare_key()
                && matches!(a.source(), "k8s" | "any")
                && matches!(b.source(), "k8s" | "any"))
    };
    let follows = |have: &Requirement, need: &Requirement| {
        let within = |a: &[String], b: &[String]| a.iter().all(|v| b.contains(v));
        same_key(have, need)
            && match (need.op, have.op) {
                (Op::In, Op::In) => within(&have.values, &need.values),
                (Op::Exists, Op::In | Op::Exists) => true,
                (Op::NotIn, Op::In) => !have.values.iter().any(|v| need.values.contains(v)),
                (Op::NotIn, Op::NotIn) => within(&need.values, &have.values),
                (Op::NotIn | Op::DoesNotExist, Op::DoesNotExist) => true,
                _ => false,
            }
    };
    t.reqs
        .iter()
        .all(|need| s.reqs.iter().any(|have| follows(have, need)))
}

/// A cheap test before the solver: whether item `outer` of a rule with subject `t` matches
/// every flow that item `inner` of a rule with subject `s` matches, on their face: `t` asks
/// for less than `s` ([`wider`]), each peer of `inner` lies within a peer of `outer`, and
/// each port rule of `inner` within one of the port rules of `outer` that `http` picks (as
/// [`flow::item_where`] does). False whenever it cannot tell.
pub(crate) fn contains(
    (t, outer): (&Selector, &Item),
    (s, inner): (&Selector, &Item),
    http: Option<bool>,
) -> bool {
    if outer.direction != inner.direction
        || inner.selects_nothing()
        || outer.selects_nothing()
        || !wider(t, s)
        || !flow::expressible(outer, http)
        || !flow::expressible(inner, None)
    {
        return false;
    }
    let every = |k: &PeerKind| match k {
        PeerKind::Entity(Entity::All) => true,
        PeerKind::Endpoints(sel) => sel.is_wildcard() && !sel.has_reserved(),
        _ => false,
    };
    let within = |a: &PeerKind, b: &PeerKind| {
        a == b
            || every(b)
            || match (a, b) {
                (PeerKind::Endpoints(x), PeerKind::Endpoints(y)) => {
                    !x.is_wildcard() && !y.is_wildcard() && wider(y, x)
                }
                (PeerKind::Endpoints(x), PeerKind::Entity(Entity::Cluster)) => {
                    !x.is_wildcard() && !x.has_reserved()
                }
                (
                    PeerKind::Entity(Entity::Host | Entity::RemoteNode),
                    PeerKind::Entity(Entity::Cluster),
                ) => true,
                (PeerKind::Cidr(_), PeerKind::Entity(Entity::World)) => true,
                (PeerKind::Cidr(x), PeerKind::Cidr(y)) => {
                    y.net.contains(&x.net)
                        && y.except
                            .iter()
                            .all(|e| !e.contains(&x.net.network()) && !x.net.contains(&e.network()))
                }
                _ => false,
            }
    };
    let peers = match (&inner.peers, &outer.peers) {
        (_, Peers::Any) => true,
        (Peers::Any, Peers::List(b)) => b.iter().any(|q| every(&q.kind)),
        (Peers::List(a), Peers::List(b)) => {
            a.iter().all(|p| b.iter().any(|q| within(&p.kind, &q.kind)))
        }
    };
    let ports = match (&inner.ports, &outer.ports) {
        (_, Ports::Any) => http != Some(true),
        (Ports::Any, Ports::List(_)) => false,
        (Ports::List(a), Ports::List(b)) => a.iter().all(|p| {
            let Some((proto, lo, hi)) = port_range(p) else {
                return false;
            };
            b.iter()
                .filter(|q| flow::picks(q, http))
                .filter_map(port_range)
                .any(|(qproto, qlo, qhi)| qproto == proto && qlo <= lo && hi <= qhi)
        }),
    };
    peers && ports
}

/// What the cheap overlap test reads of an item, worked out once: the kinds of remote end
/// its peers can match (pod, world, host, remote node), its port ranges, and whether its
/// peers are only endpoint selectors, or only CIDRs (then their spans).
pub(crate) struct Shape {
    /// The kinds of remote end ([`kinds`]).
    kinds: u8,
    /// (protocol, first, last); `None` = every protocol and port.
    ranges: Option<Vec<(u8, u16, u16)>>,
    /// Its peers are all endpoint selectors.
    pods: bool,
    /// (family, first, last address), sorted.
    cidrs: Option<Vec<(u8, u128, u128)>>,
}

impl Shape {
    pub(crate) fn of(it: &Item) -> Shape {
        let Peers::List(peers) = &it.peers else {
            return Shape {
                kinds: kinds(it),
                ranges: ranges(it),
                pods: false,
                cidrs: None,
            };
        };
        let cidrs: Option<Vec<(u8, u128, u128)>> = peers
            .iter()
            .map(|p| match &p.kind {
                PeerKind::Cidr(c) => Some(crate::addresses::span(&c.net)),
                _ => None,
            })
            .collect();
        Shape {
            kinds: kinds(it),
            ranges: ranges(it),
            pods: peers
                .iter()
                .all(|p| matches!(p.kind, PeerKind::Endpoints(_))),
            cidrs: cidrs.map(|mut c| {
                c.sort_unstable();
                c
            }),
        }
    }

    /// The kinds of remote end the item's peers can match ([`kinds`]).
    pub(crate) fn kinds(&self) -> u8 {
        self.kinds
    }

    /// Whether the item's remote end may be one of `addresses` (as far as this test can
    /// tell: an item with other peers than CIDRs that may match the world may).
    pub(crate) fn may_hold(&self, addresses: &crate::addresses::Addresses) -> bool {
        const WORLD: u8 = 2;
        if self.kinds & WORLD == 0 {
            return false;
        }
        self.cidrs.as_ref().is_none_or(|c| addresses.meets(c))
    }

    /// Whether item `a` (of this shape) and item `b` (of shape `other`) can match a flow in
    /// common, as far as this test can tell (same kinds of remote end, overlapping ports,
    /// selectors that may select one pod, intersecting CIDRs).
    fn meets(&self, a: &Item, other: &Shape, b: &Item) -> bool {
        if self.kinds & other.kinds == 0 {
            return false;
        }
        if let (Some(ra), Some(rd)) = (&self.ranges, &other.ranges)
            && !ra.iter().any(|(pa, a1, a2)| {
                rd.iter()
                    .any(|(pd, d1, d2)| pa == pd && a1 <= d2 && d1 <= a2)
            })
        {
            return false;
        }
        if self.pods
            && other.pods
            && let (Peers::List(pa), Peers::List(pb)) = (&a.peers, &b.peers)
        {
            let may_share = pa.iter().any(|x| {
                pb.iter().any(|y| match (&x.kind, &y.kind) {
                    (PeerKind::Endpoints(x), PeerKind::Endpoints(y)) => !disjoint(x, y),
                    _ => true,
                })
            });
            if !may_share {
                return false;
            }
        }
        if let (Some(ca), Some(cd)) = (&self.cidrs, &other.cidrs)
            && !intersect(ca, cd)
        {
            return false;
        }
        true
    }
}

/// Whether two sorted lists of address spans have an address in common: one sweep.
pub(crate) fn intersect(a: &[(u8, u128, u128)], b: &[(u8, u128, u128)]) -> bool {
    let (mut i, mut j) = (0, 0);
    while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
        if x.0 == y.0 && x.1 <= y.2 && y.1 <= x.2 {
            return true;
        }
        // The span that ends first meets nothing later in the other list.
        if (x.0, x.2) < (y.0, y.2) {
            i += 1;
        } else {
            j += 1;
        }
    }
    false
}

/// The (protocol, first, last) port ranges of an item; `None` = every protocol and port, or
/// a named port among them.
pub(crate) fn ranges(it: &Item) -> Option<Vec<(u8, u16, u16)>> {
    let Ports::List(ports) = &it.ports else {
        return None;
    };
    ports.iter().map(port_range).collect()
}

/// A port rule's (protocol, first, last) ports; `None` for a named port.
fn port_range(p: &polc_compiler::ir::PortRule) -> Option<(u8, u16, u16)> {
    match p.port {
        PortSpec::Range(0, 0) => Some((p.proto.number(), 0, u16::MAX)),
        PortSpec::Range(a, b) => Some((p.proto.number(), a, b.max(a))),
        PortSpec::Named(_) => None,
    }
}

/// The shapes of a set's items: those of rules a [`Facts`] knows from there, the others
/// each worked out when first asked for.
pub(crate) struct Shapes<'s> {
    set: &'s PolicySet,
    /// What is known of each rule.
    known: Vec<Option<&'s RuleFacts>>,
    /// Where each rule's items start in `cells`.
    start: Vec<usize>,
    cells: Vec<std::cell::OnceCell<Shape>>,
}

impl<'s> Shapes<'s> {
    fn new(set: &'s PolicySet, known: Vec<Option<&'s RuleFacts>>) -> Shapes<'s> {
        let mut start = Vec::with_capacity(set.rules.len());
        let mut n = 0;
        for (r, k) in set.rules.iter().zip(&known) {
            start.push(n);
            if k.is_none() {
                n += r.items.len();
            }
        }
        Shapes {
            set,
            known,
            start,
            cells: (0..n).map(|_| std::cell::OnceCell::new()).collect(),
        }
    }

    /// The shape of item `ii` of rule `ri`.
    pub(crate) fn get(&self, ri: usize, ii: usize) -> &Shape {
        if let Some(k) = self.known[ri] {
            return &k.shapes[ii];
        }
        let item = &self.set.rules[ri].items[ii];
        self.cells[self.start[ri] + ii].get_or_init(|| Shape::of(item))
    }

    /// Whether items (`ri`, `ii`) and (`rj`, `ij`) may match a flow in common.
    pub(crate) fn meet(&self, (ri, ii): (usize, usize), (rj, ij): (usize, usize)) -> bool {
        let (a, b) = (&self.set.rules[ri].items[ii], &self.set.rules[rj].items[ij]);
        self.get(ri, ii).meets(a, self.get(rj, ij), b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polc_compiler::source::{SourceFile, SourceMap};

    /// The objects of `yaml` (valid, or the test fails) and their rules.
    pub(super) fn lowered(yaml: &str) -> (Vec<polc_compiler::raw::Object>, PolicySet) {
        let mut sources = SourceMap::new();
        sources.add(SourceFile::new("p.yaml", yaml.to_string()));
        let (objects, diags) = polc_compiler::lint(&sources, &polc_compiler::Options::default());
        assert!(
            diags
                .iter()
                .all(|d| d.severity != polc_compiler::diag::Severity::Error),
            "{diags:?}"
        );
        let (set, _) = polc_compiler::lower::lower(&objects, CiliumVersion::V1_19);
        (objects, set)
    }

    fn findings(yaml: &str) -> Vec<Diagnostic> {
        let (objects, set) = lowered(yaml);
        let layout = Layout::new(&set, None);
        let limits = Limits::default();
        focused(
            &set,
            &layout,
            objects.as_slice(),
            CiliumVersion::V1_19,
            limits,
            Focus::All,
        )
    }

    #[test]
    fn address_spans_meet_exactly_when_some_pair_of_prefixes_does() {
        // Every pair of lists drawn from these prefixes: the sweep answers as the pairwise
        // test does.
        let nets: Vec<ipnet::IpNet> = [
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.0/24",
            "10.2.0.0/16",
            "11.0.0.0/8",
            "192.168.0.0/24",
            "192.168.0.128/25",
            "0.0.0.0/0",
            "2001:db8::/32",
            "2001:db8:1::/48",
            "::/0",
        ]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
        let lists: Vec<Vec<ipnet::IpNet>> = (1u32..(1 << nets.len()))
            .step_by(37)
            .map(|mask| {
                (0..nets.len())
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| nets[i])
                    .collect()
            })
            .collect();
        let spans = |l: &[ipnet::IpNet]| {
            let mut s: Vec<_> = l.iter().map(crate::addresses::span).collect();
            s.sort_unstable();
            s
        };
        for a in &lists {
            for b in &lists {
                let pairwise = a
                    .iter()
                    .any(|x| b.iter().any(|y| x.contains(y) || y.contains(x)));
                assert_eq!(intersect(&spans(a), &spans(b)), pairwise, "{a:?} {b:?}");
            }
        }
    }

    const ALLOW: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a, namespace: shop}\nspec:\n  endpointSelector: {matchLabels: {app: api}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: web}}]\n    toPorts: [{ports: [{port: \"8000\", endPort: 8100, protocol: TCP}]}]\n";

    fn deny(body: &str) -> String {
        format!(
            "{ALLOW}---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: d, namespace: shop}}\nspec:\n  endpointSelector: {{matchLabels: {{app: api}}}}\n  ingressDeny:\n{body}"
        )
    }

    #[test]
    fn covering_denies_shadow_and_near_misses_do_not() {
        // Covers every port of the range from every `web` pod.
        let f = findings(&deny("  - fromEndpoints: [{matchLabels: {app: web}}]\n"));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].help.as_deref().unwrap_or("").contains("TCP/"), "{f:?}");
        // Two denies that together cover the range.
        let f = findings(&deny(
            "  - fromEndpoints: [{matchLabels: {app: web}}]\n    toPorts: [{ports: [{port: \"8000\", endPort: 8050, protocol: TCP}]}]\n  - fromEndpoints: [{}]\n    toPorts: [{ports: [{port: \"8051\", endPort: 8100, protocol: TCP}]}]\n",
        ));
        assert_eq!(f.len(), 1, "{f:?}");
        // One port of the range escapes.
        let f = findings(&deny(
            "  - fromEndpoints: [{matchLabels: {app: web}}]\n    toPorts: [{ports: [{port: \"8000\", endPort: 8099, protocol: TCP}]}]\n",
        ));
        assert!(f.is_empty(), "{f:?}");
        // `web` pods of one tier escape a deny for the other.
        let f = findings(&deny(
            "  - fromEndpoints: [{matchLabels: {app: web, tier: a}}]\n",
        ));
        assert!(f.is_empty(), "{f:?}");
        // World denies never cover pods.
        let f = findings(&deny("  - fromEntities: [world]\n"));
        assert!(f.is_empty(), "{f:?}");
    }
}

#[cfg(test)]
mod contains_tests {
    use super::*;

    /// Items that hold one another in many ways, and many that do not.
    const POLICIES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
  - fromEndpoints: [{matchLabels: {app: web, tier: front}}]
    toPorts: [{ports: [{port: "8081", protocol: TCP}]}]
  - fromCIDR: [10.1.0.0/16]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
  - fromCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.2.0/24]}]
  - fromEntities: [host]
  - icmps: [{fields: [{type: 8}]}]
  egress:
  - toEndpoints: [{matchLabels: {app: db}}]
    toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
  - toCIDR: [192.0.2.0/24]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b, namespace: shop}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints: [{}]
    toPorts: [{ports: [{port: "8080", endPort: 8090, protocol: TCP}]}]
  - fromEntities: [world]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
  - fromEntities: [cluster]
  - fromEndpoints: [{matchExpressions: [{key: app, operator: In, values: [web, api]}]}]
  - fromEntities: [all]
    toPorts: [{ports: [{port: "0", protocol: ANY}]}]
  egressDeny:
  - toEndpoints: [{matchExpressions: [{key: app, operator: Exists}]}]
  - toEntities: [world]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: c}
spec:
  endpointSelector: {matchExpressions: [{key: app, operator: NotIn, values: [db]}]}
  ingress:
  - fromCIDR: [10.0.0.0/8]
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}], rules: {http: [{method: GET}]}}]
  egress:
  - toCIDRSet: [{cidr: 192.0.0.0/8, except: [192.0.2.128/25]}]
"#;

    /// Whenever [`contains`] says an item holds another, the encoding agrees: no flow of
    /// the inner item escapes the outer one.
    #[test]
    fn containment_on_the_face_holds_in_the_encoding() {
        let version = CiliumVersion::V1_19;
        let (_, set) = super::tests::lowered(POLICIES);
        let items: Vec<(String, &Selector, &Item)> = set
            .rules
            .iter()
            .filter_map(|r| match &r.subject {
                Subject::Endpoints(s) => Some(
                    (r.items.iter()).map(move |i| (format!("{} {}", r.origin.name, i.path), s, i)),
                ),
                Subject::Nodes(_) => None,
            })
            .flatten()
            .collect();
        let mut held = Vec::new();
        for (name_o, t, outer) in &items {
            for (name_i, s, inner) in &items {
                for http in [None, Some(false)] {
                    if !contains((t, outer), (s, inner), http) {
                        continue;
                    }
                    let mut v = FlowVars::for_version(version);
                    let wf = v.well_formed("default");
                    let terms = (
                        flow::subject(&mut v, s),
                        flow::item(&mut v, inner),
                        flow::subject(&mut v, t),
                        flow::item_where(&mut v, outer, http),
                    );
                    let (
                        Encoded::Exact(s),
                        Encoded::Exact(i),
                        Encoded::Exact(t),
                        Encoded::Exact(o),
                    ) = terms
                    else {
                        panic!("{name_i} in {name_o}: not expressible");
                    };
                    let z = z3::Solver::new();
                    z.assert(&wf);
                    z.assert(&s);
                    z.assert(&i);
                    z.assert(Bool::and(&[t, o]).not());
                    assert_eq!(
                        z.check(),
                        SatResult::Unsat,
                        "{name_o} said to hold {name_i} ({http:?})"
                    );
                    if http.is_none() {
                        held.push((name_o.clone(), name_i.clone()));
                    }
                }
            }
        }
        // Besides each item in itself, the ways written above.
        let across = held.iter().filter(|(o, i)| o != i).count();
        assert!(across >= 15, "{held:#?}");
    }
}
