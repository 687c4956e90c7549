//! DNS reachability, for every pod that could exist:
//!
//! - V0403 (symbolic): a rule puts pods into egress default-deny and, for some pod it
//!   selects, nothing allows UDP/53 to the cluster DNS (`kube-system` pods labelled
//!   `k8s-app=kube-dns`): every lookup of that pod fails. Reported as a note: the pod may not
//!   exist yet (with an inventory the concrete check reports the cluster's own pods as
//!   warnings).
//! - V0407: a `toFQDNs` peer whose names the selected pods cannot look up: the DNS request
//!   for a name the peer matches is denied (at L4, or by the DNS proxy's rules), so the
//!   proxy never learns an address and the peer allows nothing.
//!
//! Both ask the whole-verdict encoding (`decision`) for a denied lookup, and both keep a
//! finding only when the reference evaluator denies the same lookup in a cluster built from
//! the example.

use crate::decision::{Encoder, Req, Shape};
use crate::flow::{self, FlowVars, KIND_POD};
use crate::replay::{Replay, replay, witness};
use crate::{Limits, solver};
use polc_compiler::diag::{Code, Diagnostic, Severity};
use polc_compiler::eval::{Request, Verdict};
use polc_compiler::ir::{Direction, PeerKind, Peers, PolicySet, Requirement, Rule, Subject};
use polc_compiler::raw::Object;
use polc_compiler::source::Loc;
use polc_compiler::version::CiliumVersion;
use std::collections::HashSet;
use z3::SatResult;
use z3::ast::{BV, Bool};

/// Where the cluster DNS runs: the labels kube-dns and CoreDNS deployments carry.
const DNS_NAMESPACE: &str = "kube-system";
const DNS_LABEL: (&str, &str) = ("k8s-app", "kube-dns");

/// A name a `toFQDNs` selector matches: the name itself, or the pattern with each `*` made
/// a short label part.
fn sample_name(selector: &str) -> String {
    let selector = selector
        .strip_prefix("matchName: ")
        .or_else(|| selector.strip_prefix("matchPattern: "))
        .unwrap_or(selector)
        .trim()
        .to_ascii_lowercase();
    let s = selector.trim_end_matches('.');
    let s = s
        .strip_prefix("**.")
        .map_or(s.to_string(), |r| format!("a.{r}"));
    let s = s.replace('*', "a");
    if s.is_empty() { "a".into() } else { s }
}

/// Which pods ask.
struct Askers<'a> {
    /// Requirements on the asking pod (a rule's subject, or its namespace).
    reqs: Vec<Requirement>,
    /// Its namespace, when fixed (rules pinned to others are left out of the formulas).
    namespace: Option<&'a str>,
    /// Only pods whose egress is default-deny.
    enforced: bool,
    /// Subjects the pod must not match (rules already reported).
    excluded: Vec<&'a [Requirement]>,
    /// Where an undecided question is reported.
    loc: Loc,
}

/// A pod asks the cluster DNS over UDP/53 (with `query`, if any) and is denied: the
/// replayed example, if there is one.
fn denied_lookup(
    set: &PolicySet,
    objects: &[Object],
    version: CiliumVersion,
    who: &Askers<'_>,
    query: Option<&str>,
    limits: Limits,
) -> Result<Option<Replay>, Diagnostic> {
    let mut v = FlowVars::for_version(version);
    let mut parts = vec![v.well_formed("default"), v.kind_is(KIND_POD)];
    parts.push(flow::requirements(&mut v.x, &who.reqs));
    for ex in &who.excluded {
        parts.push(flow::requirements(&mut v.x, ex).not());
    }
    // The DNS servers themselves ask upstream, not the cluster DNS.
    parts.push(
        flow::requirements(
            &mut v.x,
            &[
                Requirement::equals("k8s:io.kubernetes.pod.namespace", DNS_NAMESPACE),
                Requirement::equals(format!("k8s:{}", DNS_LABEL.0), DNS_LABEL.1),
            ],
        )
        .not(),
    );
    v.swap_ends();
    parts.push(flow::requirements(
        &mut v.x,
        &[
            Requirement::equals("k8s:io.kubernetes.pod.namespace", DNS_NAMESPACE),
            Requirement::equals(format!("k8s:{}", DNS_LABEL.0), DNS_LABEL.1),
        ],
    ));
    v.swap_ends();
    parts.push(v.proto.eq(BV::from_u64(17, 8)));
    parts.push(v.port.eq(BV::from_u64(53, 16)));
    let request = query.map(|q| Request::Dns {
        query: q.to_string(),
    });
    let mut enc = Encoder::new(set, "dns");
    enc.namespaces(who.namespace, Some(DNS_NAMESPACE));
    if who.enforced {
        parts.push(enc.enforced(&mut v, Direction::Egress));
    }
    let mut req = match &request {
        Some(r) => Req::Concrete(r),
        None => Req::None,
    };
    let allowed = enc.allowed(&mut v, Shape::PodToPod, &mut req);
    parts.push(allowed.not());
    // The cluster DNS is one well-known workload, not any pod that happens to carry its
    // label: it has no other labels.
    v.swap_ends();
    parts.push(v.only_labels(&[DNS_LABEL.0]));
    v.swap_ends();
    let z = solver(limits);
    z.assert(Bool::and(&parts));
    match crate::find_example("dns", &z, &mut v, &enc.defaults()) {
        SatResult::Unsat => return Ok(None),
        SatResult::Unknown => return Err(crate::undecided(who.loc, "DNS", &z)),
        SatResult::Sat => {}
    }
    let Some(model) = z.get_model() else {
        return Ok(None);
    };
    let Some(w) = witness(&v, &model) else {
        return Ok(None);
    };
    Ok(replay(objects, version, &w, Direction::Egress, request)
        .filter(|r| r.outcome.verdict == Verdict::Deny))
}

/// Runs both checks (the policies lowered as `set`, without `fromRequires`/`toRequires`).
pub fn check(
    set: &PolicySet,
    objects: &[Object],
    version: CiliumVersion,
    limits: Limits,
) -> Vec<Diagnostic> {
    let mut out = cut_off(set, objects, version, limits);
    let mut seen: HashSet<Loc> = HashSet::new();
    for rule in &set.rules {
        let Subject::Endpoints(sel) = &rule.subject else {
            continue;
        };
        for item in rule
            .items
            .iter()
            .filter(|i| i.direction == Direction::Egress && !i.deny)
        {
            let Peers::List(peers) = &item.peers else {
                continue;
            };
            for p in peers {
                let PeerKind::Fqdn(name) = &p.kind else {
                    continue;
                };
                if !seen.insert(p.loc) {
                    continue;
                }
                let query = sample_name(name);
                let who = Askers {
                    reqs: sel.reqs.clone(),
                    namespace: sel.pinned(NS),
                    enforced: false,
                    excluded: Vec::new(),
                    loc: p.loc,
                };
                match denied_lookup(set, objects, version, &who, Some(&query), limits) {
                    Ok(Some(r)) => out.push(
                        Diagnostic::new(
                            Code::FqdnLookupDenied,
                            p.loc,
                            format!(
                                "pods this rule selects cannot look up `{query}`, so this \
                                 toFQDNs peer allows nothing for them"
                            ),
                        )
                        .label("lookups of this name are denied")
                        .help(format!(
                            "the DNS proxy learns addresses only from answers it lets \
                             through; for example {} is denied. Allow the lookup to the \
                             cluster DNS with a DNS rule that matches the name",
                            r.text
                        )),
                    ),
                    Ok(None) => {}
                    Err(d) => out.push(d),
                }
            }
        }
    }
    out
}

const NS: &str = "io.kubernetes.pod.namespace";

/// A namespace no rule pins: it stands for every namespace without policies of its own.
const UNPINNED: &str = "polc-any-namespace";

/// The rule a replayed example's egress decision names: the first default-deny rule (or
/// deny item) behind it, else the first default-deny rule that could apply in `ns`.
fn deciding_rule<'a>(set: &'a PolicySet, r: &Replay, ns: &str) -> Option<&'a Rule> {
    let named =
        r.at_x(Direction::Egress)
            .into_iter()
            .flat_map(|d| d.rules.iter())
            .find_map(|x| {
                set.rules.iter().map(|r| &**r).find(|rule| {
                    rule.origin.loc == x.loc || rule.items.iter().any(|i| i.loc == x.loc)
                })
            });
    named.or_else(|| {
        set.rules.iter().map(|r| &**r).find(|rule| {
            rule.default_deny(Direction::Egress)
                && matches!(&rule.subject,
                    Subject::Endpoints(s) if s.pinned(NS).is_none_or(|p| p == ns))
        })
    })
}

/// V0403, one namespace at a time: a pod of the namespace in egress default-deny whose
/// lookups are denied. Each example names the rule that put it into default-deny; that rule
/// is reported and excluded, and the namespace asked again, a few times at most. Pods of
/// namespaces without rules of their own are asked about once, as one namespace.
fn cut_off(
    set: &PolicySet,
    objects: &[Object],
    version: CiliumVersion,
    limits: Limits,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if !set.rules.iter().any(|r| r.default_deny(Direction::Egress)) {
        return out;
    }
    let mut namespaces: Vec<&str> = set
        .rules
        .iter()
        .filter_map(|r| match &r.subject {
            Subject::Endpoints(sel) => sel.pinned(NS),
            Subject::Nodes(_) => None,
        })
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    namespaces.push(UNPINNED);
    let mut reported: HashSet<Loc> = HashSet::new();
    for ns in namespaces {
        let first = set
            .rules
            .iter()
            .find(|r| matches!(&r.subject, Subject::Endpoints(s) if s.pinned(NS) == Some(ns)))
            .or_else(|| set.rules.first())
            .map(|r| r.subject_loc);
        let Some(first) = first else { break };
        let mut excluded: Vec<&[Requirement]> = Vec::new();
        for _ in 0..3 {
            let who = Askers {
                reqs: vec![Requirement::equals(format!("k8s:{NS}"), ns)],
                namespace: Some(ns),
                enforced: true,
                excluded: excluded.clone(),
                loc: first,
            };
            let r = match denied_lookup(set, objects, version, &who, None, limits) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(d) => {
                    out.push(d);
                    break;
                }
            };
            let Some(rule) = deciding_rule(set, &r, ns) else {
                break;
            };
            let Subject::Endpoints(sel) = &rule.subject else {
                break;
            };
            excluded.push(&sel.reqs);
            if !reported.insert(rule.subject_loc) {
                continue;
            }
            let mut d = Diagnostic::new(
                Code::DnsCutOff,
                rule.subject_loc,
                format!(
                    "{} puts pods into egress default-deny, and nothing lets some of them reach \
                     the cluster DNS",
                    rule.origin.describe()
                ),
            )
            .label("these pods cannot resolve names")
            .help(format!(
                "for example {} is denied. Allow UDP/53 (and TCP/53) to `kube-system` pods \
                 labelled `k8s-app=kube-dns`, usually with DNS rules so that toFQDNs works",
                r.text
            ));
            d.severity = Severity::Note;
            out.push(d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_names_match_their_selectors() {
        for (sel, name) in [
            ("api.example.com", "api.example.com"),
            ("*.example.com", "a.example.com"),
            ("**.example.com", "a.example.com"),
            ("api-*.example.com.", "api-a.example.com"),
            ("*", "a"),
            ("matchName: API.example.com", "api.example.com"),
            ("matchPattern: *.example.com", "a.example.com"),
        ] {
            assert_eq!(sample_name(sel), name);
        }
    }
}
