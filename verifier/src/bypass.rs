//! V0405: HTTP rules another allow bypasses. When an item gives a peer and port HTTP rules,
//! and another item (of any rule selecting the same pods) allows the same peer and port
//! without L7 rules, the proxy lets every request through: the HTTP rules do nothing there
//! (policy-language §4.3). Found with z3 for every pod that could exist; each finding's example
//! is replayed through the reference evaluator with a request the HTTP rules reject, and
//! dropped unless the evaluator allows it.

use crate::flow::{self, Encoded, FlowVars};
use crate::replay::Policies;
use crate::replay::{confirm, replay};
use crate::sample::{ANY_NAMESPACE, Judge};
use crate::shadow::{Layout, disjoint};
use crate::{Focus, Limits, solver};
use polc_compiler::diag::{Code, Diagnostic};
use polc_compiler::eval::{Request, Verdict, Why, l7_allows};
use polc_compiler::ir::{Item, L7, PolicySet, Ports, Redirect, Rule, Subject};
use polc_compiler::version::CiliumVersion;
use z3::SatResult;
use z3::ast::Bool;

/// A request no sensible HTTP rule allows.
fn probe() -> Request {
    Request::Http {
        method: "POLCPROBE".into(),
        path: "/polc-probe/not-allowed".into(),
        host: "polc-probe.invalid".into(),
        headers: Vec::new(),
    }
}

fn http_rules(it: &Item) -> impl Iterator<Item = &L7> {
    let ports = match &it.ports {
        Ports::List(p) => p.as_slice(),
        Ports::Any => &[],
    };
    ports.iter().filter_map(|p| match &p.redirect {
        Some(Redirect::L7(l7 @ L7::Http(_))) => Some(l7),
        _ => None,
    })
}

/// Runs the check on a lowered policy set without `fromRequires`/`toRequires` (the objects it
/// came from serve the replays), for the rules of `focus` (every rule: `Focus::All`): their
/// HTTP rules that the set bypasses, and the HTTP
/// rules of other rules that their items bypass.
pub(crate) fn focused<P: Policies + ?Sized>(
    set: &PolicySet,
    layout: &Layout<'_>,
    objects: &P,
    version: CiliumVersion,
    limits: Limits,
    focus: Focus<'_>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let judge = Judge::new(version);
    for (ia, ra) in set.rules.iter().enumerate() {
        let Subject::Endpoints(sa) = &ra.subject else {
            continue;
        };
        for (ja, a) in ra.items.iter().enumerate().filter(|(_, i)| !i.deny) {
            // Most items have no HTTP rules: a look before gathering them.
            if http_rules(a).next().is_none() {
                continue;
            }
            let rules: Vec<&L7> = http_rules(a).collect();
            let ns = layout.ns[ia];
            // Every item that could allow the same flows without L7 rules. Another rule's
            // HTTP rules are this object's finding when its items bypass them (what bypassed
            // them before is not): only the focus's rules are looked at then.
            let mine = focus.has_item(ia, ja);
            if !focus.may_change(layout, (ia, ja)) {
                continue;
            }
            let mut plain: Vec<(&std::sync::Arc<Rule>, &Item)> = Vec::new();
            let scope = if mine { Focus::All } else { focus };
            for ib in scope.rules(set) {
                let rb = &set.rules[ib];
                let Subject::Endpoints(sb) = &rb.subject else {
                    continue;
                };
                if let (Some(x), Some(y)) = (ns, layout.ns[ib])
                    && x != y
                {
                    continue;
                }
                if disjoint(sa, sb) {
                    continue;
                }
                plain.extend(
                    rb.items
                        .iter()
                        .enumerate()
                        .filter(|&(jb, b)| {
                            (mine || focus.has_item(ib, jb))
                                && !b.deny
                                && !b.selects_nothing()
                                && b.direction == a.direction
                                && layout.shapes.meet((ia, ja), (ib, jb))
                        })
                        .map(|(_, b)| (rb, b)),
                );
            }
            // The probe must be one the HTTP rules reject, or there is nothing to bypass.
            if plain.is_empty() || rules.iter().any(|l7| l7_allows(l7, &probe())) {
                continue;
            }
            // A concrete flow of the HTTP port rules that a plain item matches, replayed with a
            // request the HTTP rules reject, answers without the solver.
            // The pods sampled satisfy the item's subject and, in turn, that of each plain
            // item's rule (a namespace label the subject asks for, say).
            let both = |rb: &Rule| match &rb.subject {
                Subject::Endpoints(sb) => polc_compiler::ir::Selector::new(
                    sa.reqs.iter().chain(&sb.reqs).cloned().collect(),
                ),
                Subject::Nodes(_) => sa.clone(),
            };
            // Each plain item's rule once (a rule's items share its subject).
            let mut seen = std::collections::HashSet::new();
            let subjects = std::iter::once(sa.clone()).chain(
                plain
                    .iter()
                    .filter(|(rb, _)| seen.insert(std::sync::Arc::as_ptr(rb)))
                    .take(32)
                    .map(|(rb, _)| both(rb)),
            );
            let concrete = subjects
                .flat_map(|x| {
                    let samples = judge.samples(&x, a, ns.unwrap_or(ANY_NAMESPACE));
                    samples.into_iter().take(4)
                })
                .filter(|f| judge.item_where(f, a, Some(true)) == Some(true))
                .take(64)
                .find_map(|f| {
                    let hits: Vec<&(&std::sync::Arc<Rule>, &Item)> = plain
                        .iter()
                        .filter(|(rb, b)| {
                            let Subject::Endpoints(sb) = &rb.subject else {
                                return false;
                            };
                            judge.subject(&f, sb) == Some(true)
                                && judge.item_where(&f, b, Some(false)) == Some(true)
                        })
                        .collect();
                    let &&(rb, b) = hits.first()?;
                    let r = replay(objects, version, &f.witness(), a.direction, Some(probe()))?;
                    let d = r.at_x(a.direction)?;
                    (d.verdict == Verdict::Allow && d.why == Why::L7Allowed).then(|| {
                        let also: Vec<_> = hits.iter().take(5).map(|(_, o)| o.loc).collect();
                        bypassed(a, rb, b, &r.text, &also)
                    })
                });
            if let Some(d) = concrete {
                out.push(d);
                continue;
            }
            let mut v = FlowVars::for_version(version);
            let wf = v.well_formed("default");
            let (Encoded::Exact(s1), Encoded::Exact(l7)) = (
                flow::subject(&mut v, sa),
                flow::item_where(&mut v, a, Some(true)),
            ) else {
                continue;
            };
            // As one disjunction: one solver call per HTTP item.
            let mut others = Vec::new();
            for (rb, b) in plain {
                let Subject::Endpoints(sb) = &rb.subject else {
                    continue;
                };
                if let (Encoded::Exact(s2), Encoded::Exact(plain)) = (
                    flow::subject(&mut v, sb),
                    flow::item_where(&mut v, b, Some(false)),
                ) {
                    others.push((Bool::and(&[s2, plain]), rb, b));
                }
            }
            if others.is_empty() {
                continue;
            }
            let any: Vec<Bool> = others.iter().map(|(c, _, _)| c.clone()).collect();
            let z = solver(limits);
            for c in [&wf, &s1, &l7] {
                z.assert(c);
            }
            z.assert(Bool::or(&any));
            match crate::find_example("bypass", &z, &mut v, &[]) {
                SatResult::Sat => {}
                SatResult::Unknown => {
                    out.push(crate::undecided(a.loc, "bypassed-l7", &z));
                    continue;
                }
                SatResult::Unsat => continue,
            }
            let Some(model) = z.get_model() else { continue };
            // The items the witness flow satisfies.
            let hits: Vec<&(Bool, &std::sync::Arc<Rule>, &Item)> = others
                .iter()
                .filter(|(c, _, _)| {
                    model
                        .eval(c, true)
                        .and_then(|x| x.as_bool())
                        .unwrap_or(false)
                })
                .collect();
            let Some(&(_, rb, b)) = hits.first() else {
                continue;
            };
            let want = (Verdict::Allow, Why::L7Allowed);
            let Some(text) = confirm(
                objects,
                version,
                &v,
                &model,
                a.direction,
                Some(probe()),
                want,
            ) else {
                continue;
            };
            let hit_locs: Vec<_> = hits.iter().take(5).map(|(_, _, o)| o.loc).collect();
            let d = bypassed(a, rb, b, &text, &hit_locs);
            out.push(d);
        }
    }
    out
}

/// V0405 at `a`, whose HTTP rules `b` (of `rb`) bypasses; `text` is the replayed example,
/// `also` the items that allow it without L7 rules.
fn bypassed(
    a: &Item,
    rb: &Rule,
    b: &Item,
    text: &str,
    also: &[polc_compiler::source::Loc],
) -> Diagnostic {
    let mut d = Diagnostic::new(
        Code::BypassedL7,
        a.loc,
        format!(
            "the HTTP rules of this {} item are bypassed: {} {} allows the same peers and port \
             without L7 rules",
            a.direction.name(),
            rb.origin.describe(),
            b.path
        ),
    )
    .label("HTTP rules bypassed")
    .help(format!(
        "on an overlapping peer and port an item without L7 rules makes the proxy allow every \
         request; for example {text} is allowed, though the HTTP rules reject that request. \
         Narrow the other item's peers or ports, or give it the same HTTP rules"
    ));
    for loc in also {
        d = d.related(*loc, "allows the same flows without L7 rules");
    }
    d
}
