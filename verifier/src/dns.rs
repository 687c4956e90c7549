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

/// A pod of `rule`'s subject asks the cluster DNS over UDP/53 (with `query`, if any) and is
/// denied: the replayed example, if there is one.
fn denied_lookup(
    set: &PolicySet,
    objects: &[Object],
    version: CiliumVersion,
    rule: &Rule,
    query: Option<&str>,
    limits: Limits,
) -> Result<Option<Replay>, Diagnostic> {
    let Subject::Endpoints(sel) = &rule.subject else {
        return Ok(None);
    };
    let mut v = FlowVars::for_version(version);
    let mut parts = vec![v.well_formed("default"), v.kind_is(KIND_POD)];
    parts.push(flow::requirements(&mut v.x, &sel.reqs));
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
    enc.namespaces(
        sel.pinned("io.kubernetes.pod.namespace"),
        Some(DNS_NAMESPACE),
    );
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
    match crate::check("dns", &z) {
        SatResult::Unsat => return Ok(None),
        SatResult::Unknown => return Err(crate::undecided(rule.subject_loc, "DNS", &z)),
        SatResult::Sat => {}
    }
    z.assert(v.values_valid());
    let prefs = v.preferences();
    match crate::check_preferring("dns", &z, &enc.defaults(), &prefs) {
        SatResult::Unsat => return Ok(None),
        SatResult::Unknown => {
            return Err(crate::undecided(rule.subject_loc, "DNS", &z));
        }
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
    let mut out = Vec::new();
    let mut seen: HashSet<Loc> = HashSet::new();
    for rule in &set.rules {
        if !matches!(rule.subject, Subject::Endpoints(_)) {
            continue;
        }
        if rule.default_deny(Direction::Egress) && seen.insert(rule.subject_loc) {
            match denied_lookup(set, objects, version, rule, None, limits) {
                Ok(Some(r)) => out.push({
                    let mut d = Diagnostic::new(
                        Code::DnsCutOff,
                        rule.subject_loc,
                        format!(
                            "{} puts pods into egress default-deny, and nothing lets some of \
                             them reach the cluster DNS",
                            rule.origin.describe()
                        ),
                    )
                    .label("these pods cannot resolve names")
                    .help(format!(
                        "for example {} is denied. Allow UDP/53 (and TCP/53) to `kube-system` \
                         pods labelled `k8s-app=kube-dns`, usually with DNS rules so that \
                         toFQDNs works",
                        r.text
                    ));
                    d.severity = Severity::Note;
                    d
                }),
                Ok(None) => {}
                Err(d) => out.push(d),
            }
        }
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
                match denied_lookup(set, objects, version, rule, Some(&query), limits) {
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
