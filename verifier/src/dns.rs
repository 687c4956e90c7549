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
use crate::replay::Policies;
use crate::replay::{Replay, Witness, replay, witness};
use crate::{Focus, Limits, solver};
use polc_compiler::diag::{Code, Diagnostic, Severity};
use polc_compiler::eval::{Request, Verdict};
use polc_compiler::ir::{Direction, PeerKind, Peers, PolicySet, Requirement, Rule, Subject};
use polc_compiler::raw::Object;
use polc_compiler::source::Loc;
use polc_compiler::version::CiliumVersion;
use std::collections::{HashMap, HashSet};
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
    /// The asking pod's namespace, when fixed (rules pinned to others are left out of the
    /// formulas).
    namespace: Option<&'a str>,
    /// Only pods whose egress is default-deny.
    enforced: bool,
    /// Subjects the pod must match one of (none: no such constraint).
    any_of: Vec<&'a [Requirement]>,
    /// Subjects the pod must not match (rules already reported).
    excluded: Vec<&'a [Requirement]>,
    /// Where an undecided question is reported.
    loc: Loc,
}

/// What a question about a lookup found.
enum Lookup {
    /// No pod it asks about is denied.
    Allowed,
    /// A denied lookup, replayed, and the example it was replayed from.
    Denied(Box<Replay>, Box<Witness>),
    /// The solver found one, but no example it gave was confirmed by the reference
    /// evaluator.
    Unconfirmed,
}

/// Whether a pod asks the cluster DNS over UDP/53 (with `query`, if any) and is denied.
fn denied_lookup<P: Policies + ?Sized>(
    set: &PolicySet,
    objects: &P,
    version: CiliumVersion,
    who: &Askers<'_>,
    query: Option<&str>,
    limits: Limits,
) -> Result<Lookup, Diagnostic> {
    let mut v = FlowVars::for_version(version);
    let mut parts = vec![v.well_formed("default"), v.kind_is(KIND_POD)];
    if let Some(ns) = who.namespace {
        parts.push(flow::requirements(
            &mut v.x,
            &[Requirement::equals(format!("k8s:{NS}"), ns)],
        ));
    }
    if !who.any_of.is_empty() {
        let any: Vec<Bool> = who
            .any_of
            .iter()
            .map(|reqs| flow::requirements(&mut v.x, reqs))
            .collect();
        parts.push(Bool::or(&any));
    }
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
        SatResult::Unsat => return Ok(Lookup::Allowed),
        SatResult::Unknown => return Err(crate::undecided(who.loc, "DNS", &z)),
        SatResult::Sat => {}
    }
    let replayed = z
        .get_model()
        .and_then(|model| witness(&v, &model))
        .and_then(|w| {
            replay(objects, version, &w, Direction::Egress, request)
                .filter(|r| r.outcome.verdict == Verdict::Deny)
                .map(|r| (r, w))
        });
    Ok(replayed.map_or(Lookup::Unconfirmed, |(r, w)| {
        Lookup::Denied(Box::new(r), Box::new(w))
    }))
}

/// A `toFQDNs` peer and the lookup that stands for it.
struct FqdnPeer<'a> {
    subject: &'a [Requirement],
    /// The namespace its rule is pinned to (`None`: a clusterwide rule).
    namespace: Option<&'a str>,
    query: String,
    loc: Loc,
}

/// Runs both checks (the policies lowered as `set`, without `fromRequires`/`toRequires`).
pub fn check(
    set: &PolicySet,
    objects: &[Object],
    version: CiliumVersion,
    limits: Limits,
) -> Vec<Diagnostic> {
    let mut out = cut_off(set, objects, version, limits);
    out.extend(fqdn_lookups(set, objects, version, limits));
    out
}

/// The `toFQDNs` peers of pod rules, once per place.
fn fqdn_peers(set: &PolicySet) -> Vec<FqdnPeer<'_>> {
    let mut seen: HashSet<Loc> = HashSet::new();
    let mut out = Vec::new();
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
                if let PeerKind::Fqdn(name) = &p.kind
                    && seen.insert(p.loc)
                {
                    out.push(FqdnPeer {
                        subject: &sel.reqs,
                        namespace: sel.pinned(NS),
                        query: sample_name(name),
                        loc: p.loc,
                    });
                }
            }
        }
    }
    out
}

/// V0407. Peers are grouped by the decisions the DNS rules give their lookups: within a
/// group the formulas differ only in the subject, so one question asks whether any pod of
/// any of them is denied. A group is asked about for all namespaces at once, then, only if
/// some lookup is denied, one namespace at a time (the namespaces of its peers; every
/// namespace with rules, and one standing for the rest, when it has clusterwide peers), and
/// then peer by peer. Within one namespace the rules of other namespaces drop out.
fn fqdn_lookups(
    set: &PolicySet,
    objects: &[Object],
    version: CiliumVersion,
    limits: Limits,
) -> Vec<Diagnostic> {
    let peers = fqdn_peers(set);
    let with_rules = namespaces_with_rules(set);
    let mut enc = Encoder::new(set, "dns");
    enc.namespaces(None, Some(DNS_NAMESPACE));
    let mut groups: Vec<(Vec<bool>, Vec<&FqdnPeer<'_>>)> = Vec::new();
    let mut keys: HashMap<&str, Vec<bool>> = HashMap::new();
    for p in &peers {
        let key = keys.entry(&p.query).or_insert_with(|| {
            let request = Request::Dns {
                query: p.query.clone(),
            };
            enc.l7_decisions(Shape::PodToPod, &request)
        });
        match groups.iter_mut().find(|(k, _)| k == key) {
            Some((_, g)) => g.push(p),
            None => groups.push((key.clone(), vec![p])),
        }
    }
    let mut out = Vec::new();
    let ask = |scope: Option<&str>, group: &[&FqdnPeer<'_>]| {
        let who = Askers {
            namespace: scope,
            enforced: false,
            any_of: group.iter().map(|p| p.subject).collect(),
            excluded: Vec::new(),
            loc: group[0].loc,
        };
        denied_lookup(set, objects, version, &who, Some(&group[0].query), limits)
    };
    for (_, group) in groups {
        // Undecided or not, a question that finds no answer is split into smaller ones.
        if group.len() > 1 && matches!(ask(None, &group), Ok(Lookup::Allowed)) {
            continue;
        }
        let mut namespaces: Vec<&str> = group.iter().filter_map(|p| p.namespace).collect();
        if group.iter().any(|p| p.namespace.is_none()) {
            namespaces.extend(&with_rules);
        }
        namespaces.sort_unstable();
        namespaces.dedup();
        let mut reported: HashSet<Loc> = HashSet::new();
        for ns in namespaces {
            let here: Vec<&FqdnPeer<'_>> = group
                .iter()
                .filter(|p| p.namespace.is_none_or(|x| x == ns) && !reported.contains(&p.loc))
                .copied()
                .collect();
            if here.len() > 1 && matches!(ask(Some(ns), &here), Ok(Lookup::Allowed)) {
                continue;
            }
            for p in here {
                match ask(Some(ns), &[p]) {
                    Ok(Lookup::Denied(r, _)) => {
                        reported.insert(p.loc);
                        out.push(lookup_denied(p, &r));
                    }
                    Ok(Lookup::Allowed | Lookup::Unconfirmed) => {}
                    Err(d) => out.push(d),
                }
            }
        }
    }
    out.sort_by_key(|d| d.loc);
    out
}

fn lookup_denied(p: &FqdnPeer<'_>, r: &Replay) -> Diagnostic {
    let query = &p.query;
    Diagnostic::new(
        Code::FqdnLookupDenied,
        p.loc,
        format!(
            "pods this rule selects cannot look up `{query}`, so this toFQDNs peer allows \
             nothing for them"
        ),
    )
    .label("lookups of this name are denied")
    .help(format!(
        "the DNS proxy learns addresses only from answers it lets through; for example {} is \
         denied. Allow the lookup to the cluster DNS with a DNS rule that matches the name",
        r.text
    ))
}

const NS: &str = "io.kubernetes.pod.namespace";

/// A namespace no rule pins: it stands for every namespace without policies of its own.
const UNPINNED: &str = crate::sample::ANY_NAMESPACE;

/// The namespaces pod rules are pinned to, sorted, and last [`UNPINNED`] for all others.
fn namespaces_with_rules(set: &PolicySet) -> Vec<&str> {
    let mut out: Vec<&str> = set
        .rules
        .iter()
        .filter_map(|r| match &r.subject {
            Subject::Endpoints(sel) => sel.pinned(NS),
            Subject::Nodes(_) => None,
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out.push(UNPINNED);
    out
}

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

/// V0403, one namespace at a time (after one question for all of them at once has found a
/// pod to ask about): a pod of the namespace in egress default-deny whose lookups are
/// denied. Each example names the rule that put it into default-deny; that rule
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
    let namespaces = namespaces_with_rules(set);
    // One question for all namespaces first: usually no pod is cut off anywhere.
    if let Some(first) = set.rules.first() {
        let anywhere = Askers {
            namespace: None,
            enforced: true,
            any_of: Vec::new(),
            excluded: Vec::new(),
            loc: first.subject_loc,
        };
        if matches!(
            denied_lookup(set, objects, version, &anywhere, None, limits),
            Ok(Lookup::Allowed)
        ) {
            return out;
        }
    }
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
                namespace: Some(ns),
                enforced: true,
                any_of: Vec::new(),
                excluded: excluded.clone(),
                loc: first,
            };
            let r = match denied_lookup(set, objects, version, &who, None, limits) {
                Ok(Lookup::Denied(r, _)) => *r,
                Ok(Lookup::Allowed | Lookup::Unconfirmed) => break,
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
            out.push(cut_off_here(rule, &r));
        }
    }
    out
}

/// V0403 at the rule that puts the example's pod into egress default-deny.
fn cut_off_here(rule: &Rule, r: &Replay) -> Diagnostic {
    let mut d = Diagnostic::new(
        Code::DnsCutOff,
        rule.subject_loc,
        format!(
            "{} puts pods into egress default-deny, and nothing lets some of them reach the \
             cluster DNS",
            rule.origin.describe()
        ),
    )
    .label("these pods cannot resolve names")
    .help(format!(
        "for example {} is denied. Allow UDP/53 (and TCP/53) to `kube-system` pods labelled \
         `k8s-app=kube-dns`, usually with DNS rules so that toFQDNs works",
        r.text
    ));
    d.severity = Severity::Note;
    d
}

/// A proof without the solver that no pod of namespace `ns` (of any, for `None`) is cut off
/// from the cluster DNS: a rule for every such pod allows UDP/53 to the DNS pods for every
/// name, and no egress deny item that may apply to them can match UDP/53 to a pod. Most
/// clusters allow DNS that way, to every pod, in one clusterwide policy.
fn lookups_open(set: &PolicySet, judge: &crate::sample::Judge, ns: Option<&str>) -> bool {
    use polc_compiler::ir::{
        DnsRule, Entity, Item, L7, PortRule, Ports, Proto, Redirect, Selector,
    };
    let dns_pod: std::collections::BTreeMap<String, String> = [
        (NS, DNS_NAMESPACE),
        (
            "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name",
            DNS_NAMESPACE,
        ),
        (DNS_LABEL.0, DNS_LABEL.1),
        ("io.cilium.k8s.policy.cluster", "default"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let to_dns_pod = |it: &Item| match &it.peers {
        Peers::Any => true,
        Peers::List(peers) => peers.iter().any(|p| match &p.kind {
            PeerKind::Endpoints(s) => !s.has_reserved() && judge.requirements(&dns_pod, &s.reqs),
            PeerKind::Entity(Entity::All | Entity::Cluster) => true,
            _ => false,
        }),
    };
    // Whether a deny item's peers may match a pod: anything but addresses, names and the
    // world may.
    let may_be_pod = |it: &Item| match &it.peers {
        Peers::Any => true,
        Peers::List(peers) => peers.iter().any(|p| {
            !matches!(
                &p.kind,
                PeerKind::Cidr(_)
                    | PeerKind::Fqdn(_)
                    | PeerKind::Entity(Entity::World | Entity::WorldIpv4 | Entity::WorldIpv6)
            )
        }),
    };
    let udp_53 = |p: &PortRule| p.proto == Proto::Udp && p.port.contains(53);
    let every_name = |p: &PortRule| match &p.redirect {
        None => true,
        Some(Redirect::L7(L7::Dns(rules))) => rules
            .iter()
            .any(|r| matches!(r, DnsRule::Pattern(p, _) if p.trim_end_matches('.') == "*")),
        Some(_) => false,
    };
    // Every pod of the namespace: no requirement but the namespace's own.
    let for_all = |s: &Selector| {
        !s.has_reserved()
            && s.reqs
                .iter()
                .all(|r| ns.is_some() && s.pinned(NS) == ns && r.bare_key() == NS)
    };
    let allowed = set.rules.iter().any(|r| {
        matches!(&r.subject, Subject::Endpoints(s) if for_all(s))
            && r.items.iter().any(|it| {
                it.direction == Direction::Egress
                    && !it.deny
                    && to_dns_pod(it)
                    && match &it.ports {
                        Ports::Any => true,
                        Ports::List(ps) => ps.iter().any(|p| udp_53(p) && every_name(p)),
                    }
            })
    });
    let may_apply = |r: &Rule| match &r.subject {
        Subject::Endpoints(t) => t.pinned(NS).zip(ns).is_none_or(|(a, b)| a == b),
        Subject::Nodes(_) => false,
    };
    let denied = || {
        set.rules.iter().filter(|r| may_apply(r)).any(|r| {
            r.items.iter().any(|it| {
                it.direction == Direction::Egress
                    && it.deny
                    && may_be_pod(it)
                    && match &it.ports {
                        Ports::Any => true,
                        Ports::List(ps) => ps.iter().any(udp_53),
                    }
            })
        })
    };
    allowed && !denied()
}

/// V0403 for the rules of `focus` (an object under review): a pod one of their egress rules
/// selects whose lookups are denied in the set (`after`, with the objects it came from),
/// when the same lookup was allowed under the objects `before` the change.
pub(crate) fn cut_off_by<P: Policies + ?Sized>(
    set: &PolicySet,
    focus: Focus<'_>,
    after: &P,
    before: &P,
    version: CiliumVersion,
    limits: Limits,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let judge = crate::sample::Judge::new(version);
    for (_, rule) in set
        .rules
        .iter()
        .enumerate()
        .filter(|(ri, _)| focus.has(*ri))
    {
        let Subject::Endpoints(sel) = &rule.subject else {
            continue;
        };
        if !rule.has_direction(Direction::Egress) || lookups_open(set, &judge, sel.pinned(NS)) {
            continue;
        }
        let who = Askers {
            namespace: sel.pinned(NS),
            enforced: false,
            any_of: vec![&sel.reqs],
            excluded: Vec::new(),
            loc: rule.subject_loc,
        };
        match denied_lookup(set, after, version, &who, None, limits) {
            Ok(Lookup::Denied(r, w)) => {
                let denied_before = replay(before, version, &w, Direction::Egress, None)
                    .is_some_and(|b| b.outcome.verdict == Verdict::Deny);
                if !denied_before {
                    out.push(cut_off_here(rule, &r));
                }
            }
            Ok(Lookup::Allowed | Lookup::Unconfirmed) => {}
            Err(d) => out.push(d),
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
