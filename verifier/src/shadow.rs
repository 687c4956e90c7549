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
    Direction, Entity, Item, Op, PeerKind, Peers, PolicySet, PortSpec, Ports, Selector, Subject,
};
use polc_compiler::raw::Object;
use polc_compiler::version::CiliumVersion;
use std::collections::HashMap;
use z3::SatResult;
use z3::ast::Bool;

/// Runs the check on a lowered policy set without `fromRequires`/`toRequires` (the objects it
/// came from serve the replays).
pub fn check(
    set: &PolicySet,
    objects: &[Object],
    version: CiliumVersion,
    limits: Limits,
) -> Vec<Diagnostic> {
    focused(set, objects, version, limits, Focus::All)
}

/// Items of a set's pod rules (those a filter keeps) by direction and by the namespace their
/// rule's subject pins (`None`: the subject spans namespaces), to find the items that can
/// meet one without looking at the whole set.
pub(crate) struct ItemIndex<'a> {
    by: HashMap<Place<'a>, Vec<(usize, usize)>>,
}

/// A direction, and the namespace a rule's subject pins (`None`: any).
type Place<'a> = (Direction, Option<&'a str>);

impl<'a> ItemIndex<'a> {
    pub(crate) fn new(set: &'a PolicySet, keep: impl Fn(&Item) -> bool) -> ItemIndex<'a> {
        let mut by: HashMap<_, Vec<(usize, usize)>> = HashMap::new();
        for (ri, r) in set.rules.iter().enumerate() {
            let Subject::Endpoints(t) = &r.subject else {
                continue;
            };
            let ns = t.pinned("io.kubernetes.pod.namespace");
            for (ii, item) in r.items.iter().enumerate().filter(|(_, i)| keep(i)) {
                by.entry((item.direction, ns)).or_default().push((ri, ii));
            }
        }
        ItemIndex { by }
    }

    /// The items of `direction` whose rules may apply to pods in namespace `ns` (any
    /// namespace: `None`), as (rule, item) indexes in the set's order.
    pub(crate) fn near(
        &self,
        direction: Direction,
        ns: Option<&str>,
    ) -> impl Iterator<Item = (usize, usize)> + use<'_> {
        let mut out: Vec<(usize, usize)> = self
            .by
            .iter()
            .filter(|((dir, at), _)| {
                *dir == direction && (ns.is_none() || at.is_none() || *at == ns)
            })
            .flat_map(|(_, list)| list.iter().copied())
            .collect();
        out.sort_unstable();
        out.into_iter()
    }
}

/// [`check`] for the rules of `focus`: their allow items that the set's deny items shadow,
/// and the allow items of other rules that their deny items shadow (unless the other deny
/// items shadowed those already).
pub(crate) fn focused<P: Policies + ?Sized>(
    set: &PolicySet,
    objects: &P,
    version: CiliumVersion,
    limits: Limits,
    focus: Focus<'_>,
) -> Vec<Diagnostic> {
    let denies = ItemIndex::new(set, |d| d.deny);
    let shapes = Shapes::new(set);
    let item_at = |(r, i): (usize, usize)| &set.rules[r].items[i];
    // The allow items a focus deny item may shadow, besides the focus's own.
    // (A lint's focus is every item: no index of allow items to build.)
    let visits = (focus != Focus::All)
        .then(|| {
            let allows = ItemIndex::new(set, |a| !a.deny && !a.selects_nothing());
            focus.visits(set, &allows, |f, a| {
                let d = item_at(f);
                d.deny && d.direction == item_at(a).direction && shapes.meet(a, f)
            })
        })
        .flatten();
    let mut out = Vec::new();
    let judge = Judge::new(version);
    for (ra, rule) in set.rules.iter().enumerate() {
        let Subject::Endpoints(subject) = &rule.subject else {
            continue;
        };
        for (ia, item) in rule
            .items
            .iter()
            .enumerate()
            .filter(|(_, i)| !i.deny && !i.selects_nothing())
        {
            if visits
                .as_ref()
                .is_some_and(|v| v.binary_search(&(ra, ia)).is_err())
            {
                continue;
            }
            // Items the encoding cannot express are skipped (a finding is never a guess).
            if subject.has_reserved() || !flow::expressible(item, None) {
                continue;
            }
            let ns = subject.pinned("io.kubernetes.pod.namespace");
            let candidates: Vec<(usize, usize)> = denies
                .near(item.direction, ns)
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
            let replayed = crate::item_examples("shadow", subject, item, ns, version, limits)
                .find_map(|w| {
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

/// What the cheap overlap test reads of an item, worked out once: the kinds of remote end
/// its peers can match (pod, world, host, remote node), its port ranges, and its endpoint
/// selectors or CIDRs when its peers are only those.
pub(crate) struct Shape<'i> {
    kinds: [bool; 4],
    /// (protocol, first, last); `None` = every protocol and port.
    ranges: Option<Vec<(u8, u16, u16)>>,
    selectors: Option<Vec<&'i Selector>>,
    /// (family, first, last address), sorted.
    cidrs: Option<Vec<(u8, u128, u128)>>,
}

impl<'i> Shape<'i> {
    pub(crate) fn of(it: &'i Item) -> Shape<'i> {
        let Peers::List(peers) = &it.peers else {
            return Shape {
                kinds: [true; 4],
                ranges: ranges(it),
                selectors: None,
                cidrs: None,
            };
        };
        let mut kinds = [false; 4];
        for p in peers {
            match &p.kind {
                PeerKind::Endpoints(s) if s.is_wildcard() || s.has_reserved() => kinds = [true; 4],
                PeerKind::Endpoints(_) => kinds[0] = true,
                PeerKind::Cidr(_) | PeerKind::Fqdn(_) => kinds[1] = true,
                PeerKind::Entity(Entity::All) => kinds = [true; 4],
                PeerKind::Entity(Entity::World | Entity::WorldIpv4 | Entity::WorldIpv6) => {
                    kinds[1] = true;
                }
                PeerKind::Entity(Entity::Host) => kinds[2] = true,
                PeerKind::Entity(Entity::RemoteNode) => kinds[3] = true,
                PeerKind::Entity(Entity::Cluster) => {
                    kinds[0] = true;
                    kinds[2] = true;
                    kinds[3] = true;
                }
                _ => kinds = [true; 4],
            }
        }
        let selectors = peers
            .iter()
            .map(|p| match &p.kind {
                PeerKind::Endpoints(s) => Some(s),
                _ => None,
            })
            .collect();
        let cidrs: Option<Vec<(u8, u128, u128)>> = peers
            .iter()
            .map(|p| match &p.kind {
                PeerKind::Cidr(c) => Some(span(&c.net)),
                _ => None,
            })
            .collect();
        Shape {
            kinds,
            ranges: ranges(it),
            selectors,
            cidrs: cidrs.map(|mut c| {
                c.sort_unstable();
                c
            }),
        }
    }

    /// Whether the items can match a flow in common, as far as this test can tell (same
    /// kinds of remote end, overlapping ports, selectors that may select one pod,
    /// intersecting CIDRs).
    pub(crate) fn meets(&self, other: &Shape<'_>) -> bool {
        if !(0..4).any(|i| self.kinds[i] && other.kinds[i]) {
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
        if let (Some(sa), Some(sd)) = (&self.selectors, &other.selectors)
            && !sa.iter().any(|x| sd.iter().any(|y| !disjoint(x, y)))
        {
            return false;
        }
        if let (Some(ca), Some(cd)) = (&self.cidrs, &other.cidrs)
            && !intersect(ca, cd)
        {
            return false;
        }
        true
    }
}

/// A prefix as (family, first, last address).
fn span(net: &ipnet::IpNet) -> (u8, u128, u128) {
    match net {
        ipnet::IpNet::V4(n) => (
            4,
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        ipnet::IpNet::V6(n) => (6, u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// Whether two sorted lists of address spans have an address in common: one sweep.
fn intersect(a: &[(u8, u128, u128)], b: &[(u8, u128, u128)]) -> bool {
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

/// The (protocol, first, last) port ranges of an item; `None` = every protocol and port.
fn ranges(it: &Item) -> Option<Vec<(u8, u16, u16)>> {
    let Ports::List(ports) = &it.ports else {
        return None;
    };
    let mut out = Vec::new();
    for p in ports {
        match p.port {
            PortSpec::Range(0, 0) => out.push((p.proto.number(), 0, u16::MAX)),
            PortSpec::Range(a, b) => out.push((p.proto.number(), a, b.max(a))),
            PortSpec::Named(_) => return None,
        }
    }
    Some(out)
}

/// A cheap test before the solver: whether item `d` can match any flow item `a` matches
/// (see [`Shape::meets`]).
pub(crate) fn may_overlap(a: &Item, d: &Item) -> bool {
    Shape::of(a).meets(&Shape::of(d))
}

/// The shapes of a set's items, each worked out when first asked for.
pub(crate) struct Shapes<'s> {
    set: &'s PolicySet,
    /// Where each rule's items start in `cells`.
    start: Vec<usize>,
    cells: Vec<std::cell::OnceCell<Shape<'s>>>,
}

impl<'s> Shapes<'s> {
    pub(crate) fn new(set: &'s PolicySet) -> Shapes<'s> {
        let mut start = Vec::with_capacity(set.rules.len());
        let mut n = 0;
        for r in &set.rules {
            start.push(n);
            n += r.items.len();
        }
        Shapes {
            set,
            start,
            cells: (0..n).map(|_| std::cell::OnceCell::new()).collect(),
        }
    }

    /// The shape of item `ii` of rule `ri`.
    pub(crate) fn get(&self, ri: usize, ii: usize) -> &Shape<'s> {
        let item = &self.set.rules[ri].items[ii];
        self.cells[self.start[ri] + ii].get_or_init(|| Shape::of(item))
    }

    /// Whether items (`ri`, `ii`) and (`rj`, `ij`) may match a flow in common.
    pub(crate) fn meet(&self, (ri, ii): (usize, usize), (rj, ij): (usize, usize)) -> bool {
        self.get(ri, ii).meets(self.get(rj, ij))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polc_compiler::source::{SourceFile, SourceMap};

    fn findings(yaml: &str) -> Vec<Diagnostic> {
        let mut sources = SourceMap::new();
        sources.add(SourceFile::new("p.yaml", yaml.to_string()));
        let (objects, diags) = polc_compiler::lint(&sources, &polc_compiler::Options::default());
        let (set, _) = polc_compiler::lower::lower(&objects, CiliumVersion::V1_19);
        assert!(
            diags
                .iter()
                .all(|d| d.severity != polc_compiler::diag::Severity::Error),
            "{diags:?}"
        );
        check(&set, &objects, CiliumVersion::V1_19, Limits::default())
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
            let mut s: Vec<_> = l.iter().map(span).collect();
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
