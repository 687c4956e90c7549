//! V0410: deleting an object takes pods out of default-deny. A pod is isolated in a
//! direction while some rule with rules in that direction (and `enableDefaultDeny` not
//! false) selects it. For each rule R of the deleted object that isolates its pods in a
//! direction, the question is whether some pod satisfies `S_R(x) ∧ ¬∨ T(x)` over the subjects
//! T of the remaining rules that isolate in that direction: such a pod is let through by
//! everything once the object is gone.

use crate::flow::{self, Encoded, FlowVars};
use crate::replay::witness;
use crate::shadow::disjoint;
use crate::{Limits, solver};
use polc_compiler::diag::{Code, Diagnostic};
use polc_compiler::ir::{Direction, PolicySet, Subject};
use polc_compiler::version::CiliumVersion;
use z3::SatResult;
use z3::ast::Bool;

const NS: &str = "io.kubernetes.pod.namespace";

/// The pods the first `gone` rules of `set` (a deleted object's; the rest remain) isolate
/// and no remaining rule does, one finding per rule and direction. Host policies
/// (`nodeSelector`) are not asked about. Runs in the calling thread's z3 context, like
/// [`crate::checks::review`].
pub fn after_delete(
    set: &PolicySet,
    gone: usize,
    version: CiliumVersion,
    limits: Limits,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let (deleted, remaining) = set.rules.split_at(gone.min(set.rules.len()));
    for rule in deleted {
        let Subject::Endpoints(subject) = &rule.subject else {
            continue;
        };
        let ns = subject.pinned(NS);
        for dir in [Direction::Ingress, Direction::Egress] {
            if !rule.default_deny(dir) {
                continue;
            }
            let mut v = FlowVars::for_version(version);
            let wf = v.well_formed("default");
            let Encoded::Exact(s) = flow::subject(&mut v, subject) else {
                continue;
            };
            let mut others = Vec::new();
            let mut unknown = false;
            for r in remaining.iter().filter(|r| r.default_deny(dir)) {
                let Subject::Endpoints(t) = &r.subject else {
                    continue;
                };
                if t.pinned(NS).zip(ns).is_some_and(|(a, b)| a != b) || disjoint(subject, t) {
                    continue;
                }
                match flow::subject(&mut v, t) {
                    Encoded::Exact(b) => others.push(b),
                    // A subject the encoding cannot express may select the pod: say nothing.
                    Encoded::Unknown => unknown = true,
                }
            }
            if unknown {
                continue;
            }
            let z = solver(limits);
            z.assert(&wf);
            z.assert(&s);
            z.assert(Bool::or(&others).not());
            match crate::find_example("isolation", &z, &mut v, &[]) {
                SatResult::Sat => {}
                SatResult::Unknown => {
                    out.push(crate::undecided(rule.subject_loc, "isolation", &z));
                    continue;
                }
                SatResult::Unsat => continue,
            }
            let Some(w) = z.get_model().and_then(|m| witness(&v, &m)) else {
                continue;
            };
            let namespace = w.x.get(NS).cloned().unwrap_or_default();
            let labels: Vec<String> =
                w.x.iter()
                    // What Cilium adds (namespace, its labels, service account, cluster) is
                    // not what the user labels.
                    .filter(|(k, _)| k.as_str() != NS && !k.starts_with("io.cilium.k8s."))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
            let pod = if labels.is_empty() {
                format!("a pod without labels in namespace `{namespace}`")
            } else {
                format!(
                    "a pod labelled `{}` in namespace `{namespace}`",
                    labels.join(",")
                )
            };
            let (way, flows) = match dir {
                Direction::Ingress => ("ingress", "every flow into them"),
                Direction::Egress => ("egress", "every flow out of them"),
            };
            out.push(
                Diagnostic::new(
                    Code::Unisolated,
                    rule.subject_loc,
                    format!(
                        "deleting {} takes pods out of {way} default-deny: no other policy \
                         isolates them, so {flows} is allowed; for example {pod}",
                        rule.origin.describe()
                    ),
                )
                .label("these pods lose their isolation")
                .help(format!(
                    "if that is intended, nothing needs doing; otherwise keep a policy with \
                     {way} rules that selects these pods"
                )),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use polc_compiler::source::{SourceFile, SourceMap};

    fn findings(deleted: &str, remaining: &str) -> Vec<Diagnostic> {
        let lower = |text: &str| {
            let mut sources = SourceMap::new();
            sources.add(SourceFile::new("p.yaml", text.to_string()));
            let (objects, _) = polc_compiler::lint(&sources, &polc_compiler::Options::default());
            polc_compiler::lower::lower(&objects, CiliumVersion::V1_19).0
        };
        let mut set = lower(deleted);
        let gone = set.rules.len();
        set.rules.extend(lower(remaining).rules);
        after_delete(&set, gone, CiliumVersion::V1_19, Limits::default())
    }

    fn cnp(name: &str, labels: &str, section: &str) -> String {
        format!(
            "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  endpointSelector: {{matchLabels: {{{labels}}}}}\n  {section}:\n  - fromEndpoints: [{{}}]\n"
        )
    }

    #[test]
    fn the_last_isolating_policy_warns_and_others_do_not() {
        // Nothing else selects `app: api`.
        let f = findings(&cnp("a", "app: api", "ingress"), "");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].code, Code::Unisolated);
        assert!(f[0].message.contains("app=api"), "{f:?}");
        assert!(f[0].message.contains("`shop`"), "{f:?}");
        // A wider policy keeps them isolated.
        let f = findings(&cnp("a", "app: api", "ingress"), &cnp("b", "", "ingress"));
        assert!(f.is_empty(), "{f:?}");
        // A narrower one leaves some out.
        let f = findings(
            &cnp("a", "app: api", "ingress"),
            &cnp("b", "app: api, tier: x", "ingress"),
        );
        assert_eq!(f.len(), 1, "{f:?}");
        // The other policy isolates the other direction only.
        let f = findings(&cnp("a", "app: api", "ingress"), &cnp("b", "", "egress"));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].message.contains("ingress"), "{f:?}");
    }
}
