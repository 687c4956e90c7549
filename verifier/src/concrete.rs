//! Checks against a cluster inventory (`polc lint` with inventory objects among its inputs,
//! or `--inventory`). Every finding is a fact about this cluster, computed with the
//! reference evaluator, so its example flow is already replayed.

use polc_compiler::diag::{Code, Diagnostic};
use polc_compiler::eval::{self, Flow, Peer, Verdict};
use polc_compiler::ir::{Direction, PeerKind, Peers, Proto, Subject};
use polc_compiler::mapstate::SelectorCache;
use polc_compiler::model::{EndpointRef, Model};
use std::collections::{BTreeMap, HashSet};

/// Runs every concrete check.
pub fn check(model: &Model) -> Vec<Diagnostic> {
    if model.inventory.pods.is_empty() {
        return Vec::new();
    }
    let mut out = selects_nothing(model);
    out.extend(dns_cut_off(model));
    out.extend(crate::capacity::check(
        model,
        crate::capacity::DEFAULT_POLICY_MAP_MAX,
    ));
    out
}

/// V0402: subjects that select no endpoint of the cluster, and endpoint peers that select no
/// identity of it.
fn selects_nothing(model: &Model) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let endpoints = model.endpoints();
    let mut cache = SelectorCache::new(model);
    let mut seen = HashSet::new();
    for rule in &model.policies.rules {
        // A namespace-wide subject (`{}` in a CNP or NetworkPolicy) in an empty namespace is
        // a guard rail for pods to come, not a mistake.
        let namespace_wide = matches!(&rule.subject, Subject::Endpoints(s)
            if s.reqs.iter().all(|r| r.bare_key() == "io.kubernetes.pod.namespace"));
        let subject_hit = match &rule.subject {
            // Through the selector cache's label index, not pod by pod.
            Subject::Endpoints(sel) => cache
                .select(model, &PeerKind::Endpoints(sel.clone()), &[], None)
                .iter()
                .any(|id| {
                    model
                        .identities
                        .get(*id)
                        .is_some_and(|i| i.kind == polc_compiler::identity::IdentityKind::Pods)
                }),
            Subject::Nodes(_) => endpoints.iter().any(|ep| model.selects(rule, *ep)),
        };
        if !subject_hit && !namespace_wide && seen.insert(rule.subject_loc) {
            let what = match &rule.subject {
                Subject::Endpoints(s) => format!("pod matches `{s}`"),
                Subject::Nodes(s) => format!("node matches `{s}`"),
            };
            out.push(
                Diagnostic::new(
                    Code::SelectsNothingInCluster,
                    rule.subject_loc,
                    format!("in this cluster no {what}"),
                )
                .label("selects no endpoint")
                .help(format!(
                    "{} applies to nothing here; check the labels and the namespace against the \
                     inventory",
                    rule.origin.describe()
                )),
            );
        }
        for item in &rule.items {
            let Peers::List(peers) = &item.peers else {
                continue;
            };
            for p in peers {
                let PeerKind::Endpoints(sel) = &p.kind else {
                    continue;
                };
                if sel.is_wildcard() || !seen.insert(p.loc) {
                    continue;
                }
                if cache.select(model, &p.kind, &[], None).is_empty() {
                    out.push(
                        Diagnostic::new(
                            Code::SelectsNothingInCluster,
                            p.loc,
                            format!("in this cluster no pod matches `{sel}`"),
                        )
                        .label("selects no identity")
                        .help(if item.deny {
                            "this peer denies nothing here; check its labels and namespace"
                        } else {
                            "this peer allows nothing here; check its labels and namespace"
                        }),
                    );
                }
            }
        }
    }
    out
}

/// V0403: pods whose egress default-deny leaves them no way to cluster DNS (the pods labelled
/// `k8s-app=kube-dns`, UDP/53). One finding per rule that puts them into default-deny.
fn dns_cut_off(model: &Model) -> Vec<Diagnostic> {
    let inv = &model.inventory;
    let dns: Vec<usize> = inv
        .pods
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            !p.host_network
                && p.labels
                    .iter()
                    .any(|(k, v)| k == "k8s-app" && v == "kube-dns")
        })
        .map(|(i, _)| i)
        .collect();
    if dns.is_empty() {
        return Vec::new();
    }
    // Per default-deny rule: the pods cut off, and one example.
    let mut cut: BTreeMap<(usize, usize), (usize, String)> = BTreeMap::new();
    let mut by_loc = BTreeMap::new();
    let mut seen_identity = HashSet::new();
    for (i, p) in inv.pods.iter().enumerate() {
        if p.host_network || dns.contains(&i) {
            continue;
        }
        let id = model.identities.pod_identity.get(i).copied().flatten();
        if !seen_identity.insert(id) {
            continue;
        }
        let rules = model.rules_for(EndpointRef::Pod(i));
        let (enforced, by) = model.enforced(&rules, Direction::Egress);
        if !enforced {
            continue;
        }
        let reaches = dns.iter().any(|&d| {
            let flow = Flow {
                src: Peer::Pod(i),
                dst: Peer::Pod(d),
                proto: Proto::Udp,
                port: 53,
                request: None,
            };
            eval::decide(model, &flow).verdict == Verdict::Allow
        });
        if reaches {
            continue;
        }
        let Some(first) = by.first() else { continue };
        let key = (
            first.origin.loc.file.0 as usize,
            first.origin.loc.start as usize,
        );
        by_loc.insert(key, (first.origin.loc, first.origin.describe()));
        let entry = cut.entry(key).or_insert((0, String::new()));
        entry.0 += 1;
        if entry.1.is_empty() {
            entry.1 = format!("{} -> {} UDP/53", p.key(), inv.pods[dns[0]].key());
        }
    }
    cut.into_iter()
        .filter_map(|(key, (n, example))| {
            let (loc, policy) = by_loc.get(&key)?;
            Some(
                Diagnostic::new(
                    Code::DnsCutOff,
                    *loc,
                    format!(
                        "{n} workload{} selected here cannot reach cluster DNS: {example} is denied",
                        if n == 1 { "" } else { "s" }
                    ),
                )
                .label("egress default-deny without DNS")
                .help(format!(
                    "{policy} puts egress into default-deny and no rule allows UDP/53 to the \
                     kube-dns pods; add an egress item to `k8s:k8s-app: kube-dns` in \
                     `kube-system` on port 53 (UDP and TCP)"
                )),
            )
        })
        .collect()
}
