//! V0406: allow items whose every flow other allow items already allow, for every pod that
//! could exist.
//!
//! An L4 allow item A of a rule with subject S is redundant when no flow satisfies
//! `S(x) ∧ A(p, proto, port) ∧ ¬∨(T(x) ∧ B(p, proto, port))` over the other allow items B
//! (same direction, of rules with subjects T) that allow without a proxy redirect. Removing A
//! must also keep its pods' default-deny: either A's rule keeps another item in that
//! direction, or only items of rules that are themselves default-deny there count as B.
//! Items are taken in order and a redundant item no longer covers later ones, so removing
//! every reported item together changes nothing. Items with L7 rules are left to V0405, items
//! the deny rules cover to V0404, and items or covers the encoding cannot express are skipped
//! or ignored, so a finding is never a guess. Each finding's example — a flow A allows — is
//! replayed through the reference evaluator, and kept only if an item other than A allows it.

use crate::flow::{self, Encoded, FlowVars};
use crate::replay::Policies;
use crate::replay::replay;
use crate::sample::Judge;
use crate::shadow::{Layout, contains, disjoint, ranges};
use crate::{Focus, Limits, solver};
use polc_compiler::diag::{Code, Diagnostic};
use polc_compiler::eval::Verdict;
use polc_compiler::ir::{Item, PolicySet, Ports, Subject};
use polc_compiler::source::Loc;
use polc_compiler::version::CiliumVersion;
use std::collections::HashSet;
use z3::SatResult;
use z3::ast::Bool;

/// Whether an item has a redirect on any of its ports.
fn redirected(it: &Item) -> bool {
    matches!(&it.ports, Ports::List(p) if p.iter().any(|p| p.redirect.is_some()))
}

/// A cheap necessary condition: the candidates' ports together cover every port of `a`.
fn ports_covered(a: &Item, cands: &[&Item]) -> bool {
    if cands.iter().any(|b| matches!(b.ports, Ports::Any)) {
        return true;
    }
    let Some(need) = ranges(a) else {
        // Every port: only a candidate with every port covers it.
        return false;
    };
    let have: Vec<(u8, u16, u16)> = cands.iter().filter_map(|b| ranges(b)).flatten().collect();
    need.iter().all(|&(proto, lo, hi)| {
        let mut spans: Vec<(u16, u16)> = have
            .iter()
            .filter(|(p, _, _)| *p == proto)
            .map(|&(_, a, b)| (a, b))
            .collect();
        spans.sort_unstable();
        let mut next = u32::from(lo);
        for (s, e) in spans {
            if u32::from(s) > next {
                break;
            }
            next = next.max(u32::from(e) + 1);
        }
        next > u32::from(hi)
    })
}

/// Runs the check on a lowered policy set without `fromRequires`/`toRequires`, for the rules
/// of `focus` (every rule: `Focus::All`); `skip` holds the items another check already
/// reports (shadowed ones). Reported: their items that the set already allows, and the
/// items of other rules that they make redundant (unless those were redundant already).
pub(crate) fn focused<P: Policies + ?Sized>(
    set: &PolicySet,
    layout: &Layout<'_>,
    objects: &P,
    version: CiliumVersion,
    limits: Limits,
    skip: &HashSet<Loc>,
    focus: Focus<'_>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let judge = Judge::new(version);
    let (allows, shapes) = (&layout.allows, &layout.shapes);
    // The items a focus allow item may cover, besides the focus's own.
    let visits = focus.visits(set, layout, |f, a| {
        let (b, a_item) = (&set.rules[f.0].items[f.1], &set.rules[a.0].items[a.1]);
        !b.deny && b.direction == a_item.direction && !b.selects_nothing() && shapes.meet(a, f)
    });
    let mut removed: HashSet<(usize, usize)> = HashSet::new();
    let mut reported: HashSet<Loc> = HashSet::new();
    for (ra, ia) in focus.walk(set, visits.as_deref()) {
        let rule = &set.rules[ra];
        let Subject::Endpoints(subject) = &rule.subject else {
            continue;
        };
        let ns = layout.ns[ra];
        let a = &rule.items[ia];
        // Items that share a place (a KNP rule becomes one item per port protocol) are
        // reported once.
        if a.deny
            || a.selects_nothing()
            || redirected(a)
            || skip.contains(&a.loc)
            || reported.contains(&a.loc)
        {
            continue;
        }
        // Items the encoding cannot express are skipped (a finding is never a guess).
        if subject.has_reserved() || !flow::expressible(a, None) {
            continue;
        }
        let keeps_enforcement = rule
            .items
            .iter()
            .enumerate()
            .any(|(j, other)| j != ia && other.direction == a.direction);
        let cands: Vec<(usize, usize)> = allows
            .near(a.direction, ns, shapes.get(ra, ia).kinds())
            .filter(|&(rb, ib)| {
                let r = &set.rules[rb];
                let Subject::Endpoints(t) = &r.subject else {
                    return false;
                };
                (rb, ib) != (ra, ia)
                    && (keeps_enforcement || r.default_deny(a.direction))
                    && !removed.contains(&(rb, ib))
                    && shapes.meet((ra, ia), (rb, ib))
                    && !disjoint(subject, t)
            })
            .collect();
        let items: Vec<&Item> = cands
            .iter()
            .map(|&(rb, ib)| &set.rules[rb].items[ib])
            .collect();
        if cands.is_empty()
            || !focus.involves((ra, ia), cands.iter().copied())
            || !ports_covered(a, &items)
            // Most items are not covered: a flow of the item that no candidate matches
            // answers without the solver.
            || judge.escapes(set, subject, a, ns, &cands, Some(false))
        {
            continue;
        }
        let mut v = FlowVars::for_version(version);
        let wf = v.well_formed("default");
        let (Encoded::Exact(s), Encoded::Exact(fa)) =
            (flow::subject(&mut v, subject), flow::item(&mut v, a))
        else {
            continue;
        };
        let covered = |cands: &[(usize, usize)], v: &mut FlowVars| {
            if judge.escapes(set, subject, a, ns, cands, Some(false)) {
                return Ok(false);
            }
            // One item that holds this one on its face answers without the solver.
            let whole = cands.iter().any(|&(rb, ib)| {
                let r = &set.rules[rb];
                matches!(&r.subject, Subject::Endpoints(t)
                    if contains((t, &r.items[ib]), (subject, a), Some(false)))
            });
            if whole {
                return Ok(true);
            }
            let mut covers = Vec::new();
            for &(rb, ib) in cands {
                let r = &set.rules[rb];
                let Subject::Endpoints(t) = &r.subject else {
                    continue;
                };
                if let (Encoded::Exact(ts), Encoded::Exact(fb)) = (
                    flow::subject(v, t),
                    flow::item_where(v, &r.items[ib], Some(false)),
                ) {
                    covers.push(Bool::and(&[ts, fb]));
                }
            }
            if covers.is_empty() {
                return Ok(false);
            }
            let z = solver(limits);
            z.assert(&wf);
            z.assert(&s);
            z.assert(&fa);
            z.assert(Bool::or(&covers).not());
            match crate::check("redundant", &z) {
                SatResult::Unsat => Ok(true),
                SatResult::Unknown => Err(crate::undecided(a.loc, "redundant-allow", &z)),
                SatResult::Sat => Ok(false),
            }
        };
        match covered(&cands, &mut v) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(d) => {
                out.push(d);
                continue;
            }
        }
        // Another rule's item is this object's finding only if the other items did not
        // cover it already.
        if !focus.has_item(ra, ia) {
            let before: Vec<(usize, usize)> = cands
                .iter()
                .copied()
                .filter(|&(rb, ib)| !focus.has_item(rb, ib))
                .collect();
            let before_items: Vec<&Item> = before
                .iter()
                .map(|&(rb, ib)| &set.rules[rb].items[ib])
                .collect();
            if !before.is_empty()
                && ports_covered(a, &before_items)
                && !matches!(covered(&before, &mut v), Ok(false))
            {
                continue;
            }
        }
        // An example flow of the item, allowed by another item too in the reference
        // evaluator.
        let me = (rule.origin.describe(), a.path.clone());
        let others_of = |r: &crate::replay::Replay| {
            let d = r.at_x(a.direction)?;
            let others: Vec<_> = d
                .rules
                .iter()
                .filter(|x| (x.policy.clone(), x.path.clone()) != me)
                .cloned()
                .collect();
            (d.verdict == Verdict::Allow && !others.is_empty()).then_some(others)
        };
        let replayed =
            crate::item_examples("redundant", subject, a, ns, version, limits).find_map(|w| {
                let r = replay(objects, version, &w, a.direction, None)?;
                let others = others_of(&r)?;
                Some((r, others))
            });
        let Some((r, others)) = replayed else {
            continue;
        };
        removed.insert((ra, ia));
        reported.insert(a.loc);
        let names: Vec<String> = others
            .iter()
            .take(3)
            .map(|x| format!("{} {}", x.policy, x.path))
            .collect();
        let mut diag = Diagnostic::new(
            Code::RedundantAllow,
            a.loc,
            format!(
                "every flow this {} item allows is already allowed by other rules (such as \
                 {})",
                a.direction.name(),
                names.join(", ")
            ),
        )
        .label("redundant allow")
        .help(format!(
            "removing the item changes no verdict; for example {} is allowed by {} as well. \
             Remove it, or narrow the other rules if they allow more than intended",
            r.text,
            names.join(", ")
        ));
        for x in others.iter().take(3) {
            diag = diag.related(x.loc, "also allows these flows");
        }
        out.push(diag);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use polc_compiler::source::{SourceFile, SourceMap};

    fn findings(yaml: &str) -> Vec<Diagnostic> {
        let mut sources = SourceMap::new();
        sources.add(SourceFile::new("p.yaml", yaml.to_string()));
        let (objects, _) = polc_compiler::lint(&sources, &polc_compiler::Options::default());
        let (set, _) = polc_compiler::lower::lower(&objects, CiliumVersion::V1_19);
        focused(
            &set,
            &Layout::new(&set, None),
            objects.as_slice(),
            CiliumVersion::V1_19,
            Limits::default(),
            &HashSet::new(),
            Focus::All,
        )
    }

    fn cnp(name: &str, subject: &str, ingress: &str) -> String {
        format!(
            "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  endpointSelector: {{matchLabels: {{{subject}}}}}\n  ingress:\n{ingress}"
        )
    }

    const WEB_8080: &str = "  - fromEndpoints: [{matchLabels: {app: web}}]\n    toPorts: [{ports: [{port: \"8080\", protocol: TCP}]}]\n";

    #[test]
    fn covered_items_are_redundant_and_near_misses_are_not() {
        // A wider rule on the same pods allows every port from every pod of the namespace.
        let wide = "  - fromEndpoints: [{}]\n";
        let f = findings(&(cnp("a", "app: api", WEB_8080) + &cnp("b", "app: api", wide)));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].code, Code::RedundantAllow);
        // Two equal items: only the first is reported, the second stays.
        let f = findings(&(cnp("a", "app: api", WEB_8080) + &cnp("b", "app: api", WEB_8080)));
        assert_eq!(f.len(), 1, "{f:?}");
        // Near miss: the other rule selects only some of the pods.
        let f = findings(&(cnp("a", "app: api", WEB_8080) + &cnp("b", "app: api, tier: x", wide)));
        assert!(f.is_empty(), "{f:?}");
        // Near miss: the other rule misses a port (but the narrower one is covered).
        let f = findings(
            &(cnp(
                "a",
                "app: api",
                "  - fromEndpoints: [{matchLabels: {app: web}}]\n    toPorts: [{ports: [{port: \"8080\", endPort: 8081, protocol: TCP}]}]\n",
            ) + &cnp("b", "app: api", WEB_8080)),
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].message.contains("shop/a"), "{f:?}");
        // Near miss: the other item has HTTP rules, so this L4 item opens more.
        let http = "  - fromEndpoints: [{matchLabels: {app: web}}]\n    toPorts: [{ports: [{port: \"8080\", protocol: TCP}], rules: {http: [{method: GET}]}}]\n";
        let f = findings(&(cnp("a", "app: api", WEB_8080) + &cnp("b", "app: api", http)));
        assert!(f.is_empty(), "{f:?}");
    }
}
