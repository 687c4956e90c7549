//! The semantic diff of two policy sets for every pod that could exist: the flows NEW allows
//! that OLD denied (widened) and the reverse (narrowed), grouped into classes by the rule
//! that makes the difference, each with one example flow replayed through `eval` under both
//! sets.
//!
//! Every changed flow is attributed to a rule that changed (a rule of a policy whose text
//! differs between the two sets, or that only one of them has). A widened flow is allowed by
//! NEW and denied by OLD at some end; there OLD denied it by a deny item, which NEW no longer
//! has, or by default-deny, and NEW allows it through an allow item, which OLD did not have,
//! or leaves the end unenforced, which a rule OLD had made default-deny. So the classes are:
//! the allow items of NEW's changed rules, the deny items of OLD's changed rules, and the
//! enforcement of OLD's changed rules (narrowed: the same with OLD and NEW swapped). For each
//! class the solver is asked for a changed flow the class's item or rule takes part in, once
//! per kind of flow (pod to pod, to and from the outside, the host, remote nodes). A second
//! round asks the same with a symbolic HTTP request (or DNS query, where changed rules have
//! DNS rules) for flows both sets allow at L4 whose requests they judge differently.

use crate::decision::{DnsVars, Encoder, HttpVars, Req, Shape, Shared};
use crate::flow::{self, FlowVars, KIND_HOST, KIND_REMOTE_NODE, KIND_WORLD};
use crate::replay::{Replay, replay, witness};
use crate::sample::ANY_NAMESPACE;
use crate::{Limits, solver};
use polc_compiler::eval::Verdict;
use polc_compiler::ir::{
    Direction, Entity, Item, L7, Op, PeerKind, Peers, PolicySet, PortRule, PortSpec, Ports,
    Redirect, Requirement, Rule, Selector, Subject,
};
use polc_compiler::labels::{SOURCE_ANY, SOURCE_K8S};
use polc_compiler::raw::Object;
use polc_compiler::version::CiliumVersion;
use z3::SatResult;
use z3::ast::Bool;

/// One side of the comparison.
pub struct Side<'a> {
    /// The lowered policies.
    pub set: &'a PolicySet,
    /// The objects they came from (for replays).
    pub objects: &'a [Object],
    /// Whether each rule (by index into `set.rules`) belongs to a policy the other side does
    /// not have in the same form.
    pub changed: Vec<bool>,
}

/// What makes a class of changed flows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// An allow item of a changed rule (of NEW when widened, of OLD when narrowed).
    Allow,
    /// A deny item of a changed rule (of OLD when widened, of NEW when narrowed).
    Deny,
    /// The default-deny a changed rule gives its subjects (OLD's when widened: no longer
    /// enforced; NEW's when narrowed: newly enforced).
    Enforcement,
    /// The HTTP or DNS rules of a changed allow item (OLD's when widened: removed or loosened;
    /// NEW's when narrowed: added or tightened), for requests both sets allow at L4.
    L7,
}

/// A class of changed flows.
pub struct Class {
    /// Flows NEW allows and OLD denied (`true`), or the reverse.
    pub widened: bool,
    /// What makes the class.
    pub cause: Cause,
    /// The rule: `CiliumNetworkPolicy shop/api spec.ingress[0]` (the rule path for
    /// enforcement).
    pub rule: String,
    /// Where the item (or the rule, for enforcement) is.
    pub loc: polc_compiler::source::Loc,
    /// Whether `loc` is in NEW's files (else OLD's).
    pub in_new: bool,
    /// The pods the rule applies to.
    pub subject: String,
    /// The direction.
    pub direction: Direction,
    /// The item's peers, for people (`*` for every peer).
    pub peers: String,
    /// The item's ports (`*` for every port).
    pub ports: String,
    /// Whether the difference is in the HTTP requests or DNS queries allowed (both sets
    /// allow at L4), and which.
    pub l7: Option<Protocol>,
    /// The example flow, replayed under NEW (the example's text and verdicts).
    pub example: Replay,
    /// The example's verdict under OLD.
    pub old_verdict: Verdict,
}

/// The L7 protocol whose requests a class is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP requests (HTTP rules).
    Http,
    /// DNS queries (DNS rules).
    Dns,
}

impl Protocol {
    /// `HTTP` or `DNS`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Dns => "DNS",
        }
    }

    fn in_item(self, i: &Item) -> bool {
        matches!(&i.ports, Ports::List(p) if p.iter().any(|p| self.in_port(p)))
    }

    /// Whether item `it` allows a port on which an item of the same direction, in either
    /// set, has rules of this protocol (named ports may be any port).
    fn may_meet(self, it: &Item, old: &Side<'_>, new: &Side<'_>) -> bool {
        let Ports::List(mine) = &it.ports else {
            return true;
        };
        let overlap = |a: &PortRule, b: &PortRule| {
            a.proto == b.proto
                && match (&a.port, &b.port) {
                    (PortSpec::Range(a0, a1), PortSpec::Range(b0, b1)) => {
                        let whole = |lo: u16, hi: u16| {
                            if (lo, hi) == (0, 0) {
                                (0, u16::MAX)
                            } else {
                                (lo, hi.max(lo))
                            }
                        };
                        let ((a0, a1), (b0, b1)) = (whole(*a0, *a1), whole(*b0, *b1));
                        a0 <= b1 && b0 <= a1
                    }
                    _ => true,
                }
        };
        self.ports(old, new, it.direction)
            .any(|t| mine.iter().any(|m| overlap(m, t)))
    }

    /// The port rules, in items of direction `dir` of either set, that carry rules of this
    /// protocol.
    fn ports<'s>(
        self,
        old: &'s Side<'_>,
        new: &'s Side<'_>,
        dir: Direction,
    ) -> impl Iterator<Item = &'s PortRule> {
        [old, new]
            .into_iter()
            .flat_map(|side| side.set.rules.iter())
            .flat_map(|r| r.items.iter())
            .filter(move |i| i.direction == dir)
            .flat_map(|i| match &i.ports {
                Ports::List(list) => list.as_slice(),
                Ports::Any => &[],
            })
            .filter(move |p| self.in_port(p))
    }

    fn in_port(self, p: &PortRule) -> bool {
        match &p.redirect {
            Some(Redirect::L7(L7::Http(_))) => self == Protocol::Http,
            Some(Redirect::L7(L7::Dns(_))) => self == Protocol::Dns,
            _ => false,
        }
    }

    /// Whether a rule of `side` has rules of this protocol.
    fn in_any(self, side: &Side<'_>) -> bool {
        side.set
            .rules
            .iter()
            .any(|r| r.items.iter().any(|i| self.in_item(i)))
    }
}

/// The diff.
#[derive(Default)]
pub struct Diff {
    /// The classes of changed flows.
    pub classes: Vec<Class>,
    /// Questions the solver could not answer, or examples that did not replay, for people.
    pub unknown: Vec<String>,
    /// Internal errors: the evaluator disagreed with an exact encoding.
    pub internal: Vec<String>,
}

const SHAPES: [Shape; 7] = [
    Shape::PodToPod,
    Shape::PodToOutside(KIND_WORLD),
    Shape::OutsideToPod(KIND_WORLD),
    Shape::PodToOutside(KIND_HOST),
    Shape::OutsideToPod(KIND_HOST),
    Shape::PodToOutside(KIND_REMOTE_NODE),
    Shape::OutsideToPod(KIND_REMOTE_NODE),
];

/// Compares two policy sets. The questions are independent: they are asked on as many
/// threads as the machine has cores, each in a z3 context of its own (so the same question
/// always gets the same example, whichever thread asks it, and a long-running process does
/// not keep every formula it ever made), and their answers are taken in the order asked.
pub fn diff(old: &Side<'_>, new: &Side<'_>, version: CiliumVersion, limits: Limits) -> Diff {
    let queries = questions(old, new);
    let answers: Vec<std::sync::Mutex<Option<Answer>>> = queries
        .iter()
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, queries.len().max(1));
    let work = || {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let Some(q) = queries.get(i) else { break };
            let answer = crate::fresh_context(|| {
                let mut notes = Diff::default();
                let found = q.run(old, new, version, limits, &mut notes);
                (found, notes)
            });
            if let Ok(mut slot) = answers[i].lock() {
                *slot = Some(answer);
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..workers {
            s.spawn(work);
        }
        work();
    });
    let mut out = Diff::default();
    for answer in answers {
        let Some((found, notes)) = answer.into_inner().ok().flatten() else {
            continue;
        };
        out.unknown.extend(notes.unknown);
        out.internal.extend(notes.internal);
        if let Some(found) = found {
            // A changed item is in both sets: its old and new forms describe one class; the
            // first found stays.
            let dup = out.classes.iter().any(|c| {
                (c.widened, &c.rule, c.direction, c.l7)
                    == (found.widened, &found.rule, found.direction, found.l7)
            });
            if !dup {
                out.classes.push(found);
            }
        }
    }
    out
}

/// What one question found: a class, or not, and what it could not decide.
type Answer = (Option<Class>, Diff);

/// The questions a diff asks, in order: per direction of change, per class source, per
/// direction of its rule, the L4 question and one per L7 protocol that matters.
fn questions<'s>(old: &'s Side<'_>, new: &'s Side<'_>) -> Vec<Query<'s>> {
    let mut out = Vec::new();
    // The L7 protocols some rule of either set has: only their requests are asked about. A
    // changed rule without L7 rules changes requests too, where its ports meet another
    // rule's L7 rules (an L4-only item opens every request on its ports).
    let protocols: Vec<Protocol> = [Protocol::Http, Protocol::Dns]
        .into_iter()
        .filter(|p| p.in_any(old) || p.in_any(new))
        .collect();
    let requires_shared = Direction::BOTH.map(|d| shared(old, new, d).requires);
    for widened in [true, false] {
        let (before, after) = if widened { (old, new) } else { (new, old) };
        // (cause, side whose rule it is, the other side, rule index, item index)
        let mut sources: Vec<(Cause, &Side<'_>, &Side<'_>, usize, Option<usize>)> = Vec::new();
        let kept =
            |r: &Rule, it: &Item, other: &Side<'_>| !in_both(r, it, other, &requires_shared, false);
        for (ri, r) in after.set.rules.iter().enumerate() {
            if after.changed[ri] {
                for (ii, it) in r.items.iter().enumerate() {
                    if !it.deny && !it.selects_nothing() && kept(r, it, before) {
                        sources.push((Cause::Allow, after, before, ri, Some(ii)));
                    }
                }
            }
        }
        for (ri, r) in before.set.rules.iter().enumerate() {
            if before.changed[ri] {
                for (ii, it) in r.items.iter().enumerate() {
                    if it.deny && !it.selects_nothing() && kept(r, it, after) {
                        sources.push((Cause::Deny, before, after, ri, Some(ii)));
                    }
                }
                if Direction::BOTH
                    .iter()
                    .any(|d| r.default_deny(*d) && !enforced_in_both(r, *d, after))
                {
                    sources.push((Cause::Enforcement, before, after, ri, None));
                }
                for (ii, it) in r.items.iter().enumerate() {
                    if !it.deny && protocols.iter().any(|p| p.in_item(it)) && kept(r, it, after) {
                        sources.push((Cause::L7, before, after, ri, Some(ii)));
                    }
                }
            }
        }
        for (cause, side, other, ri, ii) in sources {
            let rule = &side.set.rules[ri];
            let Subject::Endpoints(_) = &rule.subject else {
                continue;
            };
            let item = ii.map(|i| &rule.items[i]);
            let dirs: Vec<Direction> = match item {
                Some(it) => vec![it.direction],
                None => Direction::BOTH
                    .iter()
                    .copied()
                    .filter(|d| rule.default_deny(*d) && !enforced_in_both(rule, *d, other))
                    .collect(),
            };
            for dir in dirs {
                // An item whose counterpart differs only in its L7 rules changes no flow at
                // L4 (the argument of `in_both`, about ports alone).
                let same_l4 =
                    item.is_some_and(|it| in_both(rule, it, other, &requires_shared, true));
                let l4 = (cause != Cause::L7 && !same_l4).then_some(None);
                // Requests of a protocol matter only on ports where some rule of either set
                // has rules of that protocol.
                let l7_rounds = protocols
                    .iter()
                    .filter(|p| item.is_none_or(|it| p.may_meet(it, old, new)))
                    .map(|p| Some(*p));
                let rounds = l4.into_iter().chain(l7_rounds);
                for l7 in rounds {
                    out.push(Query {
                        widened,
                        cause: cause.clone(),
                        rule,
                        item,
                        dir,
                        l7,
                    });
                }
            }
        }
    }
    out
}

const NAMESPACE: &str = "io.kubernetes.pod.namespace";

/// Where one question looks for an example: the namespace of the rule's own end, and of the
/// other pod (`None`: any).
struct Ends {
    rule_end: Option<String>,
    peer: Option<String>,
    /// Whether this is the widest question asked for the flow's kind, whose undecided
    /// answers are reported.
    last: bool,
}

/// The namespaces of the pods `item` can match, when every peer of it that can match a pod
/// pins one (`None` when one cannot be told): a namespaced policy's endpoint peers carry
/// their namespace. Peers that only match what is not a pod (addresses, names, nodes, the
/// world, the hosts, the kube-apiserver) add none.
fn pod_peer_namespaces(item: &Item) -> Option<Vec<&str>> {
    let Peers::List(peers) = &item.peers else {
        return None;
    };
    let mut out = Vec::new();
    for p in peers {
        match &p.kind {
            PeerKind::Endpoints(sel) => out.push(sel.pinned(NAMESPACE)?),
            PeerKind::Cidr(_)
            | PeerKind::Fqdn(_)
            | PeerKind::Nodes(_)
            | PeerKind::Service(_)
            | PeerKind::Unresolved(_)
            | PeerKind::Entity(
                Entity::World
                | Entity::WorldIpv4
                | Entity::WorldIpv6
                | Entity::Host
                | Entity::RemoteNode
                | Entity::KubeApiserver,
            ) => {}
            PeerKind::Entity(_) => return None,
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Whether a pod rule of either set is pinned to namespace `ns`.
fn pinned_anywhere(old: &Side<'_>, new: &Side<'_>, ns: &str) -> bool {
    [old, new].iter().any(|side| {
        side.set.rules.iter().any(
            |r| matches!(&r.subject, Subject::Endpoints(sel) if sel.pinned(NAMESPACE) == Some(ns)),
        )
    })
}

/// The rules of `other` that stand where `rule` stands (the same policy and rule path) and
/// apply to the same pods in the same way: the same subject, the same `fromRequires` and
/// `toRequires`.
fn counterparts<'s>(rule: &Rule, other: &'s Side<'_>) -> impl Iterator<Item = &'s Rule> {
    let o = &rule.origin;
    other.set.rules.iter().map(|r| &**r).filter(move |r| {
        let p = &r.origin;
        (p.kind, &p.namespace, &p.name, &p.path) == (o.kind, &o.namespace, &o.name, &o.path)
            && r.subject == rule.subject
            && r.requires == rule.requires
    })
}

/// Whether item `it` of a changed `rule` is also, word for word (places aside), in its
/// counterpart in `other`. Such an item makes no class of its own: where one set allows (or
/// denies) a flow through it, so does the other at that end, so a flow that changes differs
/// through another item, or another rule's enforcement, which has its own class. Not when
/// changed `fromRequires`/`toRequires` (which change what every item of the direction
/// matches, and have no class of their own) are in play.
fn in_both(
    rule: &Rule,
    it: &Item,
    other: &Side<'_>,
    requires_shared: &[bool; 2],
    l4_only: bool,
) -> bool {
    let dir_index = Direction::BOTH.iter().position(|x| *x == it.direction);
    if !dir_index.is_some_and(|i| requires_shared[i]) {
        return false;
    }
    let key = item_key(it, l4_only);
    counterparts(rule, other).any(|r| r.items.iter().any(|j| item_key(j, l4_only) == key))
}

/// Whether `rule` puts its subjects into default-deny for `dir` and so does its counterpart
/// in `other`: the enforcement did not change, and makes no class.
fn enforced_in_both(rule: &Rule, dir: Direction, other: &Side<'_>) -> bool {
    counterparts(rule, other).any(|r| r.default_deny(dir))
}

/// An item's meaning as text: everything but where it is written (with `l4_only`, and but
/// its L7 rules).
fn item_key(it: &Item, l4_only: bool) -> String {
    let ports = match (&it.ports, l4_only) {
        (Ports::List(list), true) => {
            let l4: Vec<_> = list.iter().map(|p| (p.proto, &p.port)).collect();
            format!("{l4:?}")
        }
        (ports, _) => format!("{ports:?}"),
    };
    without_locs(&format!(
        "{:?} {} {:?} {ports} {:?}",
        it.direction, it.deny, it.peers, it.auth
    ))
}

/// `text` (a `Debug` rendering) without the `Loc { .. }` values in it.
fn without_locs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("Loc {") {
        out.push_str(&rest[..at]);
        rest = rest[at..].find('}').map_or("", |end| &rest[at + end + 1..]);
    }
    out.push_str(rest);
    out
}

/// What the two sets have alike in direction `dir` among what their encodings leave free:
/// their host policies, when no changed rule is a host policy with items in `dir`; their
/// `fromRequires`/`toRequires`, when no changed rule has some in `dir`.
fn shared(old: &Side<'_>, new: &Side<'_>, dir: Direction) -> Shared {
    let changed_rules = || {
        [old, new].into_iter().flat_map(|side| {
            side.set
                .rules
                .iter()
                .zip(&side.changed)
                .filter(|(_, c)| **c)
                .map(|(r, _)| r)
        })
    };
    Shared {
        host: !changed_rules()
            .any(|r| matches!(r.subject, Subject::Nodes(_)) && r.has_direction(dir)),
        requires: !changed_rules().any(|r| !r.requires.get(dir).is_empty()),
    }
}

/// One class's question.
struct Query<'a> {
    widened: bool,
    cause: Cause,
    rule: &'a Rule,
    item: Option<&'a Item>,
    dir: Direction,
    l7: Option<Protocol>,
}

impl Query<'_> {
    /// Asks for an example of the class, trying each kind of flow in turn.
    fn run(
        &self,
        old: &Side<'_>,
        new: &Side<'_>,
        version: CiliumVersion,
        limits: Limits,
        out: &mut Diff,
    ) -> Option<Class> {
        for shape in SHAPES {
            // The rule's end: the source for egress, the destination for ingress.
            let swap = match (shape, self.dir) {
                (Shape::PodToPod, Direction::Egress) => false,
                (Shape::PodToPod, Direction::Ingress) => true,
                (Shape::PodToOutside(_), Direction::Egress) => false,
                (Shape::OutsideToPod(_), Direction::Ingress) => false,
                _ => continue,
            };
            // Endpoint selectors that require a pod namespace (one, or any) match pods only.
            let needs_pod = |sel: &Selector| {
                sel.reqs.iter().any(|r| {
                    r.bare_key() == NAMESPACE
                        && matches!(r.source(), SOURCE_K8S | SOURCE_ANY)
                        && matches!(r.op, Op::In | Op::Exists)
                })
            };
            let pods_only = self.item.is_some_and(|i| {
                matches!(&i.peers, Peers::List(list) if list.iter().all(|p| {
                    matches!(&p.kind, PeerKind::Endpoints(sel) if needs_pod(sel))
                }))
            });
            if pods_only && !matches!(shape, Shape::PodToPod) {
                continue;
            }
            for ends in self.attempts(shape, old, new) {
                let mut scratch = Diff::default();
                let sink = if ends.last { &mut *out } else { &mut scratch };
                if let Some(c) = self.ask(shape, swap, &ends, old, new, version, limits, sink) {
                    return Some(c);
                }
            }
        }
        None
    }

    /// The namespaces to look for an example in, in turn, for flows of `shape`. The other
    /// pod (pod to pod) is in one of the namespaces the item's peers pin, when they all pin
    /// one; otherwise, like the rule's own end when its subject pins none, it is looked for
    /// first in a namespace without rules of its own, where only the clusterwide rules and
    /// those of the namespaces fixed apply, and only when that finds nothing anywhere.
    fn attempts(&self, shape: Shape, old: &Side<'_>, new: &Side<'_>) -> Vec<Ends> {
        let pinned = match &self.rule.subject {
            Subject::Endpoints(sel) => sel.pinned(NAMESPACE),
            Subject::Nodes(_) => None,
        };
        let unpinned_free = !pinned_anywhere(old, new, ANY_NAMESPACE);
        let mut rule_ends = Vec::new();
        if pinned.is_none() && unpinned_free {
            rule_ends.push(Some(ANY_NAMESPACE));
        }
        rule_ends.push(None);
        let peers: Vec<Option<&str>> = if !matches!(shape, Shape::PodToPod) {
            vec![None]
        } else {
            match self.item.map(pod_peer_namespaces) {
                Some(Some(list)) => list.into_iter().map(Some).collect(),
                _ if unpinned_free => vec![Some(ANY_NAMESPACE), None],
                _ => vec![None],
            }
        };
        let mut out = Vec::new();
        for rule_end in &rule_ends {
            for peer in &peers {
                out.push(Ends {
                    rule_end: rule_end.map(str::to_string),
                    peer: peer.map(str::to_string),
                    last: false,
                });
            }
        }
        // Only the last question, where nothing more is fixed, reports what it could not
        // decide; with the item's namespaces, each of them is as wide as a question gets.
        let complete =
            |e: &Ends| e.rule_end.is_none() && e.peer.as_deref().is_none_or(|p| p != ANY_NAMESPACE);
        for e in &mut out {
            e.last = complete(e);
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn ask(
        &self,
        shape: Shape,
        swap: bool,
        ends: &Ends,
        old: &Side<'_>,
        new: &Side<'_>,
        version: CiliumVersion,
        limits: Limits,
        out: &mut Diff,
    ) -> Option<Class> {
        let mut v = FlowVars::for_version(version);
        let mut parts = vec![v.well_formed("default")];
        parts.push(v.kind_is(crate::decision::remote_kind(shape)));
        let mut h = HttpVars::new();
        let d = DnsVars::new();
        let mut eo = Encoder::new(old.set, "old");
        let mut en = Encoder::new(new.set, "new");
        for dir in Direction::BOTH {
            let shared = shared(old, new, dir);
            eo.share(dir, shared);
            en.share(dir, shared);
        }
        // The rule's end is in the rule's namespace, if it pins one.
        if let Subject::Endpoints(sel) = &self.rule.subject {
            let ns = sel.pinned(NAMESPACE).or(ends.rule_end.as_deref());
            let peer_ns = ends.peer.as_deref();
            let (src, dst) = match self.dir {
                Direction::Egress => (ns, peer_ns),
                Direction::Ingress => (peer_ns, ns),
            };
            eo.namespaces(src, dst);
            en.namespaces(src, dst);
        }
        let (ao, an) = if let Some(protocol) = self.l7 {
            let l4o = eo.allowed(&mut v, shape, &mut Req::None);
            let l4n = en.allowed(&mut v, shape, &mut Req::None);
            parts.push(l4o);
            parts.push(l4n);
            match protocol {
                Protocol::Http => (
                    eo.allowed(&mut v, shape, &mut Req::Http(&mut h)),
                    en.allowed(&mut v, shape, &mut Req::Http(&mut h)),
                ),
                Protocol::Dns => (
                    eo.allowed(&mut v, shape, &mut Req::Dns(&d)),
                    en.allowed(&mut v, shape, &mut Req::Dns(&d)),
                ),
            }
        } else {
            (
                eo.allowed(&mut v, shape, &mut Req::None),
                en.allowed(&mut v, shape, &mut Req::None),
            )
        };
        let changed = if self.widened {
            Bool::and(&[an, ao.not()])
        } else {
            Bool::and(&[ao, an.not()])
        };
        parts.push(changed);
        // The class: the rule's subject at its end, and its item (or its enforcement).
        if swap {
            v.swap_ends();
        }
        let Subject::Endpoints(sel) = &self.rule.subject else {
            return None;
        };
        parts.push(flow::requirements(&mut v.x, &sel.reqs));
        let in_ns = |ns: &str| [Requirement::equals(format!("k8s:{NAMESPACE}"), ns)];
        if let Some(ns) = &ends.rule_end {
            parts.push(flow::requirements(&mut v.x, &in_ns(ns)));
        }
        if let Some(ns) = &ends.peer {
            parts.push(flow::requirements(&mut v.p, &in_ns(ns)));
        }
        if self.cause == Cause::Enforcement {
            // Only where the other side does not enforce this direction on the pod: the
            // default-deny itself is what changed.
            let other = if self.widened { new.set } else { old.set };
            let mut enc = Encoder::new(other, "class");
            parts.push(enc.enforced(&mut v, self.dir).not());
        }
        if let Some(item) = self.item {
            // The item is NEW's for allows that widen and for the rest that narrow.
            let in_new = self.widened == (self.cause == Cause::Allow);
            let mut enc = Encoder::new(if in_new { new.set } else { old.set }, "class");
            parts.push(enc.item_matches(&mut v, self.rule, item));
        }
        if swap {
            v.swap_ends();
        }
        // Requests are judged differently only on ports with rules of the protocol at the
        // rule's end: the flow is on one of them (unless one is named).
        if let Some(protocol) = self.l7 {
            let mut on = Vec::new();
            let mut exact = true;
            for t in protocol.ports(old, new, self.dir) {
                match flow::port_rule(&v, t) {
                    flow::Encoded::Exact(b) => on.push(b),
                    flow::Encoded::Unknown => exact = false,
                }
            }
            if exact {
                parts.push(Bool::or(&on));
            }
        }
        match self.l7 {
            Some(Protocol::Http) => parts.push(h.well_formed()),
            Some(Protocol::Dns) => parts.push(d.well_formed()),
            None => {}
        }
        let z = solver(limits);
        z.assert(Bool::and(&parts));
        let mut defaults: Vec<Bool> = eo.defaults().into_iter().chain(en.defaults()).collect();
        if self.l7 == Some(Protocol::Dns) {
            defaults.push(d.plain());
        }
        match crate::find_example("diff", &z, &mut v, &defaults) {
            SatResult::Unsat => return None,
            SatResult::Unknown => {
                out.unknown.push(format!(
                    "{}: {}",
                    self.describe_rule(),
                    z.get_reason_unknown()
                        .unwrap_or_else(|| "the solver gave up".into())
                ));
                return None;
            }
            SatResult::Sat => {}
        }
        let model = z.get_model()?;
        let w = witness(&v, &model)?;
        let request = match self.l7 {
            Some(Protocol::Http) => h.request(&model),
            Some(Protocol::Dns) => d.request(&model),
            None => None,
        };
        let dir = match shape {
            Shape::OutsideToPod(_) => Direction::Ingress,
            _ => Direction::Egress,
        };
        let r_old = replay(old.objects, version, &w, dir, request.clone());
        let r_new = replay(new.objects, version, &w, dir, request);
        let want = if self.widened {
            (Verdict::Deny, Verdict::Allow)
        } else {
            (Verdict::Allow, Verdict::Deny)
        };
        let approximate = !eo.approximations().is_empty() || !en.approximations().is_empty();
        match (r_old, r_new) {
            (Some(o), Some(n)) if (o.outcome.verdict, n.outcome.verdict) == want => {
                let old_verdict = o.outcome.verdict;
                Some(Class {
                    widened: self.widened,
                    cause: self.cause.clone(),
                    rule: self.describe_rule(),
                    loc: self.item.map_or(self.rule.origin.loc, |i| i.loc),
                    in_new: self.widened == (self.cause == Cause::Allow),
                    subject: pods_text(sel),
                    direction: self.dir,
                    peers: self.item.map_or("*".into(), peers_text),
                    ports: self.item.map_or("*".into(), ports_text),
                    l7: self.l7,
                    example: n,
                    old_verdict,
                })
            }
            (o, n) => {
                let said = |r: &Option<Replay>| {
                    r.as_ref().map_or("no cluster".to_string(), |r| {
                        r.outcome.verdict.name().into()
                    })
                };
                let text = n
                    .as_ref()
                    .or(o.as_ref())
                    .map_or(String::new(), |r| r.text.clone());
                let msg = format!(
                    "{}: the solver's example {text} gets `{}` under OLD and `{}` under NEW \
                     from the evaluator",
                    self.describe_rule(),
                    said(&o),
                    said(&n)
                );
                if approximate || o.is_none() || n.is_none() {
                    out.unknown.push(msg);
                } else {
                    out.internal.push(msg);
                }
                None
            }
        }
    }

    fn describe_rule(&self) -> String {
        match self.item {
            Some(i) => format!("{} {}", self.rule.origin.describe(), i.path),
            None => format!("{} {}", self.rule.origin.describe(), self.rule.origin.path),
        }
    }
}

/// A selector the way `.polt` files write pods: `shop/{app=api}`, `*/{}` for every pod.
/// Reserved-label selectors keep their sources.
pub fn pods_text(sel: &Selector) -> String {
    const NS: &str = "io.kubernetes.pod.namespace";
    let ns = sel.pinned(NS);
    let reqs: Vec<String> = sel
        .reqs
        .iter()
        .filter(|r| !(ns.is_some() && r.bare_key() == NS && r.op == Op::In))
        .map(|r| {
            let key = if matches!(r.source(), "k8s" | "any") {
                r.bare_key()
            } else {
                r.key.as_str()
            };
            match r.op {
                Op::In if r.values.len() == 1 => format!("{key}={}", r.values[0]),
                Op::In => format!("{key} in ({})", r.values.join(",")),
                Op::NotIn if r.values.len() == 1 => format!("{key}!={}", r.values[0]),
                Op::NotIn => format!("{key} notin ({})", r.values.join(",")),
                Op::Exists => key.to_string(),
                Op::DoesNotExist => format!("!{key}"),
            }
        })
        .collect();
    format!("{}/{{{}}}", ns.unwrap_or("*"), reqs.join(","))
}

fn peers_text(i: &Item) -> String {
    match &i.peers {
        Peers::Any => "*".into(),
        Peers::List(p) => p
            .iter()
            .map(|p| match &p.kind {
                PeerKind::Endpoints(sel) => pods_text(sel),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn ports_text(i: &Item) -> String {
    match &i.ports {
        Ports::Any => "*".into(),
        Ports::List(p) => p
            .iter()
            .map(|p| match p.port {
                PortSpec::Range(0, 0) => p.proto.name().to_string(),
                _ => format!("{}/{}", p.proto.name(), p.port),
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polc_compiler::source::{SourceFile, SourceMap};

    fn set(text: &str) -> PolicySet {
        let mut sources = SourceMap::new();
        sources.add(SourceFile::new("p.yaml", text.to_string()));
        let (objects, _) = polc_compiler::lint(&sources, &polc_compiler::Options::default());
        polc_compiler::lower::lower(&objects, CiliumVersion::V1_19).0
    }

    const OLD: &str = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: '80', protocol: TCP}], rules: {http: [{method: GET}]}}]
  - fromCIDR: [10.0.0.0/8]
";

    #[test]
    fn items_in_both_sets_are_found_wherever_they_are_written() {
        let old = set(OLD);
        // The first item moved down and the second changed.
        let new = set(&format!(
            "# moved\n\n{}",
            OLD.replace("10.0.0.0/8", "10.0.0.0/9")
        ));
        fn side(s: &PolicySet) -> Side<'_> {
            Side {
                set: s,
                objects: &[],
                changed: vec![true; s.rules.len()],
            }
        }
        let (o, n) = (side(&old), side(&new));
        let rule = &n.set.rules[0];
        let shared = [true, true];
        assert_ne!(rule.items[0].loc, o.set.rules[0].items[0].loc);
        assert!(in_both(rule, &rule.items[0], &o, &shared, false));
        assert!(!in_both(rule, &rule.items[1], &o, &shared, false));
        // Not with changed fromRequires in play, nor under another subject.
        assert!(!in_both(rule, &rule.items[0], &o, &[false, false], false));
        let elsewhere = set(&OLD.replace("app: api", "app: other"));
        assert!(!in_both(
            rule,
            &rule.items[0],
            &side(&elsewhere),
            &shared,
            false
        ));
        // Another HTTP method: the same item at L4 only.
        let l7 = set(&OLD.replace("method: GET", "method: PUT"));
        let r7 = &l7.rules[0];
        assert!(!in_both(r7, &r7.items[0], &o, &shared, false));
        assert!(in_both(r7, &r7.items[0], &o, &shared, true));
        assert!(enforced_in_both(rule, Direction::Ingress, &o));
        assert!(!enforced_in_both(rule, Direction::Egress, &o));
    }

    #[test]
    fn locations_are_cut_out_of_debug_text() {
        assert_eq!(
            without_locs("Peer { kind: World, loc: Loc { file: FileId(0), start: 3, end: 9 } }"),
            "Peer { kind: World, loc:  }"
        );
        assert_eq!(without_locs("no places"), "no places");
    }
}
