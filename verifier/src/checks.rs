//! The checks `polc lint` runs with the verifier. Each returns diagnostics with `V04xx` codes
//! pointing at the YAML.

use crate::replay::Policies;
use crate::selector::satisfiable;
use crate::{Answer, Limits};
use polc_compiler::diag::{Code, Diagnostic};
use polc_compiler::ir::{PeerKind, Peers, PolicySet, Selector, Subject};
use polc_compiler::raw::Object;
use polc_compiler::source::Loc;
use polc_compiler::version::CiliumVersion;
use std::collections::{HashMap, HashSet};

/// Runs every symbolic check on the policy objects (lowered once here). The flow checks
/// (shadowing, bypass, redundancy) replay their examples with `objects`; they are skipped when a rule has
/// `fromRequires`/`toRequires`, which the flow encoding does not model.
///
/// The checks run on a thread of their own, so z3 starts from a fresh context each time and
/// the same input gives the same examples.
pub fn check(objects: &[Object], version: CiliumVersion, limits: Limits) -> Vec<Diagnostic> {
    crate::fresh_context(|| check_here(objects, version, limits))
}

fn check_here(objects: &[Object], version: CiliumVersion, limits: Limits) -> Vec<Diagnostic> {
    let (set, _) = polc_compiler::lower::lower(objects, version);
    let mut out = contradictory_selectors(&set, limits);
    let requires = set
        .rules
        .iter()
        .any(|r| !r.requires.ingress.is_empty() || !r.requires.egress.is_empty());
    if !requires {
        let layout = crate::shadow::Layout::new(&set, None);
        let all = crate::Focus::All;
        let shadowed = crate::shadow::focused(&set, &layout, objects, version, limits, all);
        let skip: HashSet<Loc> = shadowed.iter().map(|d| d.loc).collect();
        out.extend(shadowed);
        out.extend(crate::bypass::focused(
            &set, &layout, objects, version, limits, all,
        ));
        out.extend(crate::redundant::focused(
            &set, &layout, objects, version, limits, &skip, all,
        ));
        out.extend(crate::dns::check(&set, objects, version, limits));
        out.extend(crate::host::check(&set, objects, version, limits));
    }
    out
}

/// An object under review against a policy set (what the admission webhook asks): the
/// lowered set holds the object's rules first, then the others.
pub struct Change<'a> {
    /// The policies with the object: its rules first.
    pub set: &'a PolicySet,
    /// How many of the set's rules are the object's.
    pub own: usize,
    /// The policies examples are replayed under: the set's.
    pub after: &'a (dyn Policies + Sync),
    /// The same without the object under review.
    pub before: &'a (dyn Policies + Sync),
    /// When only some items of the object's rules changed (a CIDR group they use has new
    /// addresses): those, as (rule, item) indexes in ascending order. The questions are then
    /// about them, and their selectors are not looked at again.
    pub changed: Option<&'a [(usize, usize)]>,
    /// With `changed`: the only remote addresses whose flows those items match otherwise
    /// now (see [`crate::addresses::Addresses::moved`]); `None`: any.
    pub moved: Option<&'a crate::addresses::Addresses>,
    /// What is known already of the set's rules shared with a set many reviews ask about
    /// (see [`crate::shadow::Facts`]).
    pub facts: Option<&'a crate::shadow::Facts>,
}

/// The findings the object under review takes part in: its selectors no pod satisfies
/// (V0401); its allow items that deny items shadow, or other rules' allow items its deny
/// items shadow (V0404); its items other rules already allow, or other rules' items it makes
/// redundant (V0406); its HTTP rules that other items bypass, or other rules' HTTP rules its
/// items bypass (V0405); its egress rules that cut pods off from the cluster DNS (V0403). A
/// finding about another rule is reported only when the object causes it: without the
/// object, that rule was fine.
///
/// Unlike [`check`], it runs in the calling thread's z3 context: making one costs about
/// 10 ms, more than the rest of a typical review, and a server's review threads keep theirs.
/// The answers do not depend on the context; the examples come from the sample judge first
/// and are replayed through the reference evaluator whichever context found them.
pub fn review(change: &Change<'_>, version: CiliumVersion, limits: Limits) -> Vec<Diagnostic> {
    let (set, objects) = (change.set, change.after);
    let own = PolicySet {
        rules: set.rules.iter().take(change.own).cloned().collect(),
        cidr_groups: Vec::new(),
    };
    let mut out = if change.changed.is_some() {
        Vec::new()
    } else {
        contradictory_selectors(&own, limits)
    };
    let requires = set
        .rules
        .iter()
        .any(|r| !r.requires.ingress.is_empty() || !r.requires.egress.is_empty());
    if requires || change.own == 0 {
        return out;
    }
    let focus = match change.changed {
        Some(items) => crate::Focus::Items(items, change.moved),
        None => crate::Focus::First(change.own),
    };
    let layout = crate::shadow::Layout::new(set, change.facts);
    let shadowed = crate::shadow::focused(set, &layout, objects, version, limits, focus);
    let skip: HashSet<Loc> = shadowed.iter().map(|d| d.loc).collect();
    out.extend(shadowed);
    out.extend(crate::bypass::focused(
        set, &layout, objects, version, limits, focus,
    ));
    out.extend(crate::redundant::focused(
        set, &layout, objects, version, limits, &skip, focus,
    ));
    // A CIDR group's addresses never match a pod, so new addresses for a group cannot cut
    // pods off from the cluster DNS (V0403).
    if change.changed.is_none() {
        out.extend(crate::dns::cut_off_by(
            set,
            focus,
            objects,
            change.before,
            version,
            limits,
        ));
    }
    out
}

/// Whether a selector can contradict itself at all: only when a pod-label key carries more
/// than one requirement. Selectors that name reserved labels select reserved identities, not
/// pods, and are left alone.
fn worth_asking(sel: &Selector) -> bool {
    if sel.has_reserved() {
        return false;
    }
    let mut seen = HashSet::new();
    sel.reqs
        .iter()
        .filter(|r| matches!(r.source(), "k8s" | "any"))
        .any(|r| !seen.insert(r.bare_key()))
}

/// V0401: subjects and endpoint peers that no pod can satisfy.
fn contradictory_selectors(policies: &PolicySet, limits: Limits) -> Vec<Diagnostic> {
    let mut answers: HashMap<Selector, Answer<()>> = HashMap::new();
    let mut out = Vec::new();
    let mut report = |sel: &Selector, loc: Loc, what: &str, effect: &str| {
        let answer = answers
            .entry(sel.clone())
            .or_insert_with(|| satisfiable(sel, limits).0)
            .clone();
        if let Answer::Unknown(why) = &answer {
            out.push(
                Diagnostic::new(
                    Code::Undecided,
                    loc,
                    format!(
                        "the verifier could not decide whether any pod satisfies `{sel}`: {why}"
                    ),
                )
                .label("undecided")
                .help("raise `--timeout` to give the solver more time"),
            );
        }
        if answer == Answer::Violated(()) {
            out.push(
                Diagnostic::new(
                    Code::ContradictorySelector,
                    loc,
                    format!("no pod can satisfy this {what}: `{sel}`"),
                )
                .label("contradictory requirements")
                .help(format!(
                    "{effect}; each key can have one value per pod, so check the requirements \
                     on the repeated keys (the namespace requirement may come from the policy's \
                     namespace)"
                )),
            );
        }
    };
    for rule in &policies.rules {
        if let Subject::Endpoints(sel) = &rule.subject
            && worth_asking(sel)
        {
            report(
                sel,
                rule.subject_loc,
                "subject selector",
                "the rule applies to no pod",
            );
        }
        for item in &rule.items {
            let Peers::List(peers) = &item.peers else {
                continue;
            };
            for p in peers {
                if let PeerKind::Endpoints(sel) = &p.kind
                    && worth_asking(sel)
                {
                    let effect = if item.deny {
                        "this peer denies nothing"
                    } else {
                        "this peer allows nothing"
                    };
                    report(sel, p.loc, "peer selector", effect);
                }
            }
        }
    }
    out
}
