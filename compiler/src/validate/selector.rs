//! Label selector validation (R6): operators, values, key and value syntax.

use super::V;
use super::syntax;
use crate::diag::{Code, Diagnostic};
use crate::raw::policy::LabelSelector;

/// Which key syntax a selector uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Cilium selectors: keys may carry a `source:` prefix.
    Cilium,
    /// Kubernetes NetworkPolicy selectors: plain Kubernetes label keys.
    Kubernetes,
}

/// Checks one selector.
pub fn check(v: &mut V<'_>, sel: &LabelSelector, flavor: Flavor) {
    if let Some(labels) = &sel.match_labels {
        for (k, val) in &labels.0 {
            check_key(v, k, flavor);
            check_value(v, val);
        }
    }
    let Some(exprs) = &sel.match_expressions else {
        return;
    };
    for r in exprs.iter() {
        match &r.key {
            Some(k) => check_key(v, k, flavor),
            None if r.written("key") => {}
            None => v.report(
                Diagnostic::new(
                    Code::MissingRequiredField,
                    r.loc,
                    "a `matchExpressions` entry has no `key`",
                )
                .label("no `key`")
                .help("each requirement needs `key` and `operator`"),
            ),
        }
        let Some(op) = &r.operator else {
            if r.written("operator") {
                continue;
            }
            v.report(
                Diagnostic::new(
                    Code::MissingRequiredField,
                    r.loc,
                    "a `matchExpressions` entry has no `operator`",
                )
                .label("no `operator`")
                .help("use one of `In`, `NotIn`, `Exists`, `DoesNotExist`"),
            );
            continue;
        };
        if r.values.is_none() && r.written("values") {
            // Written with the wrong type, reported already.
            continue;
        }
        let values = r.values.as_ref().map_or(0, |v| v.len());
        match op.value.as_str() {
            "In" | "NotIn" => {
                if values == 0 {
                    v.report(
                        Diagnostic::new(
                            Code::SelectorValuesMismatch,
                            r.values.as_ref().map_or(op.loc, |v| v.key),
                            format!("operator `{}` needs at least one value", op.value),
                        )
                        .label("no values")
                        .help("list the values under `values`, or use `Exists`"),
                    );
                }
            }
            "Exists" | "DoesNotExist" => {
                if values > 0 {
                    let loc = r.values.as_ref().map_or(op.loc, |v| v.key);
                    v.report(
                        Diagnostic::new(
                            Code::SelectorValuesMismatch,
                            loc,
                            format!("operator `{}` must not have values", op.value),
                        )
                        .label("values not allowed here")
                        .help("remove `values`, or use `In`/`NotIn`"),
                    );
                }
            }
            other => {
                let fixed = ["In", "NotIn", "Exists", "DoesNotExist"]
                    .into_iter()
                    .find(|o| o.eq_ignore_ascii_case(other));
                v.report(
                    Diagnostic::new(
                        Code::InvalidSelectorOperator,
                        op.loc,
                        format!("`{other}` is not a label selector operator"),
                    )
                    .label("unknown operator")
                    .help(match fixed {
                        Some(f) => format!("operators are case-sensitive: write `{f}`"),
                        None => "use one of `In`, `NotIn`, `Exists`, `DoesNotExist`".to_string(),
                    }),
                );
            }
        }
        for val in r.values.iter().flat_map(|v| v.iter()) {
            check_value(v, val);
        }
    }
}

pub(crate) fn check_key(v: &mut V<'_>, key: &crate::raw::decode::Spanned<String>, flavor: Flavor) {
    let err = match flavor {
        Flavor::Cilium => syntax::cilium_label_key_error(&key.value),
        Flavor::Kubernetes => syntax::k8s_label_key_error(&key.value),
    };
    if let Some(why) = err {
        v.report(
            Diagnostic::new(
                Code::InvalidLabelKey,
                key.loc,
                format!("`{}` is not a valid label key", key.value),
            )
            .label("invalid key")
            .help(why),
        );
    }
}

pub(crate) fn check_value(v: &mut V<'_>, val: &crate::raw::decode::Spanned<String>) {
    if !syntax::is_label_value(&val.value) {
        v.report(
            Diagnostic::new(
                Code::InvalidLabelValue,
                val.loc,
                format!("`{}` is not a valid label value", val.value),
            )
            .label("invalid value")
            .help(if val.value.len() > 63 {
                "label values are at most 63 characters".to_string()
            } else {
                "label values are `[A-Za-z0-9-_.]`, starting and ending with an alphanumeric"
                    .to_string()
            }),
        );
    }
}
