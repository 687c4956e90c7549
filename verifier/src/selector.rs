//! Label selectors over a symbolic pod.
//!
//! A pod's labels are, per key the selector mentions, a presence flag and a string value.
//! Pods only carry `k8s:` labels, so a requirement on another source (`reserved:`, `cidr:`,
//! ...) sees the key as absent on every pod; `any:` and `k8s:` keys name the same label.

use crate::{Answer, Limits, solver};
use polc_compiler::ir::{Op, Requirement, Selector};
use std::collections::BTreeMap;
use z3::SatResult;
use z3::ast::{Bool, String as Str};

/// The labels of a pod that satisfies a selector (only the keys the selector mentions).
pub type Witness = BTreeMap<String, String>;

/// The symbolic label of one key.
struct Label {
    present: Bool,
    value: Str,
}

fn is_pod_source(source: &str) -> bool {
    matches!(source, "k8s" | "any")
}

/// The constraint "the pod satisfies `req`".
fn requirement(req: &Requirement, labels: &BTreeMap<String, Label>) -> Bool {
    let Some(l) = labels
        .get(req.bare_key())
        .filter(|_| is_pod_source(req.source()))
    else {
        // A key no pod carries: absent.
        return Bool::from_bool(matches!(req.op, Op::NotIn | Op::DoesNotExist));
    };
    let equals = |v: &String| l.value.eq(Str::from(v.as_str()));
    match req.op {
        Op::In => {
            let any: Vec<Bool> = req.values.iter().map(equals).collect();
            Bool::and(&[l.present.clone(), Bool::or(&any)])
        }
        Op::NotIn => {
            let none: Vec<Bool> = req.values.iter().map(|v| equals(v).not()).collect();
            Bool::or(&[l.present.not(), Bool::and(&none)])
        }
        Op::Exists => l.present.clone(),
        Op::DoesNotExist => l.present.not(),
    }
}

/// Whether some pod satisfies every requirement of `sel`: `Holds` (a pod can), with
/// `Violated` carrying nothing when no pod ever can (the requirements contradict each other).
/// On `Holds` the witness labels are returned too.
pub fn satisfiable(sel: &Selector, limits: Limits) -> (Answer<()>, Option<Witness>) {
    let mut labels: BTreeMap<String, Label> = BTreeMap::new();
    for r in &sel.reqs {
        if !is_pod_source(r.source()) {
            continue;
        }
        let key = r.bare_key().to_string();
        labels.entry(key.clone()).or_insert_with(|| Label {
            present: Bool::new_const(format!("has:{key}")),
            value: Str::new_const(format!("val:{key}")),
        });
    }
    let s = solver(limits);
    for r in &sel.reqs {
        s.assert(requirement(r, &labels));
    }
    match crate::check("selector", &s) {
        SatResult::Unsat => (Answer::Violated(()), None),
        SatResult::Unknown => (
            Answer::Unknown(s.get_reason_unknown().unwrap_or_else(|| "unknown".into())),
            None,
        ),
        SatResult::Sat => {
            let mut witness = Witness::new();
            if let Some(model) = s.get_model() {
                for (key, l) in &labels {
                    let present = model
                        .eval(&l.present, true)
                        .and_then(|b| b.as_bool())
                        .unwrap_or(false);
                    if present {
                        let value = model
                            .eval(&l.value, true)
                            .and_then(|v| v.as_string())
                            .unwrap_or_default();
                        witness.insert(key.clone(), value);
                    }
                }
            }
            (Answer::Holds, Some(witness))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polc_compiler::labels::{Label as L, LabelSet};

    fn req(key: &str, op: Op, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            op,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn contradictions_are_found() {
        let sel = Selector::new(vec![
            req("any:app", Op::In, &["web"]),
            req("k8s:app", Op::In, &["db"]),
        ]);
        assert_eq!(satisfiable(&sel, Limits::default()).0, Answer::Violated(()));
        let sel = Selector::new(vec![
            req("any:tier", Op::Exists, &[]),
            req("any:tier", Op::DoesNotExist, &[]),
        ]);
        assert_eq!(satisfiable(&sel, Limits::default()).0, Answer::Violated(()));
        let sel = Selector::new(vec![
            req("any:env", Op::In, &["prod", "dev"]),
            req("any:env", Op::NotIn, &["prod", "dev"]),
        ]);
        assert_eq!(satisfiable(&sel, Limits::default()).0, Answer::Violated(()));
        // A pod never carries reserved labels.
        let sel = Selector::new(vec![req("reserved:host", Op::In, &[""])]);
        assert_eq!(satisfiable(&sel, Limits::default()).0, Answer::Violated(()));
    }

    #[test]
    fn witnesses_satisfy_the_selector() {
        let sel = Selector::new(vec![
            req("any:app", Op::In, &["web", "api"]),
            req("any:env", Op::NotIn, &["dev"]),
            req("k8s:tier", Op::Exists, &[]),
            req("any:legacy", Op::DoesNotExist, &[]),
        ]);
        let (answer, witness) = satisfiable(&sel, Limits::default());
        assert_eq!(answer, Answer::Holds);
        let labels: LabelSet = witness.unwrap().iter().map(|(k, v)| L::k8s(k, v)).collect();
        assert!(sel.matches(&labels), "{labels}");
    }
}
