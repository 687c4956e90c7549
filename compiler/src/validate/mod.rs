//! Validation: everything the API server (CRD schema, Kubernetes validation) and the Cilium
//! agent (`pkg/policy/api` Sanitize/Validate) reject, as `S02xx` errors, and what they accept
//! but does not do what the author meant, as `L03xx` warnings.
//!
//! Rules are written against the raw types, so every diagnostic points at the YAML that caused
//! it. Version-dependent rules read [`Options::version`](crate::Options).

mod goregex;
mod knp;
mod ports;
pub(crate) mod rule;
mod selector;
pub mod syntax;
pub mod tables;

use crate::Options;
use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::raw::decode::Spanned;
use crate::raw::{Body, CiliumPolicy, Kind, Object};
use crate::source::Loc;
use std::collections::HashMap;

/// What a validator knows about the object it is in.
pub(crate) struct V<'a> {
    pub diags: &'a mut Diagnostics,
    pub opts: &'a Options,
    pub kind: Kind,
    /// HTTP regexes already compiled, with their error if invalid: policies repeat the same
    /// few patterns, and compiling dominates validation time.
    pub regex_cache: &'a mut HashMap<String, Option<String>>,
    /// Whether the object passes through the API server (CRD schema checks apply); false for
    /// the agent's bare rule lists, which only the agent checks.
    pub crd: bool,
}

impl V<'_> {
    pub fn report(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Whether rules are not namespaced (clusterwide policies and the agent's rule lists).
    pub fn clusterwide(&self) -> bool {
        matches!(
            self.kind,
            Kind::CiliumClusterwideNetworkPolicy | Kind::RuleList
        )
    }
}

/// Validates every object, then the checks that look across objects.
pub fn check(objects: &[Object], opts: &Options) -> Diagnostics {
    let mut diags = Diagnostics::new();
    let mut regex_cache = HashMap::new();
    for obj in objects {
        let mut v = V {
            diags: &mut diags,
            opts,
            kind: obj.kind,
            regex_cache: &mut regex_cache,
            crd: obj.kind != Kind::RuleList,
        };
        check_meta(&mut v, obj);
        match &obj.body {
            Body::CiliumPolicy(p) => check_cilium_policy(&mut v, obj, p),
            Body::CidrGroup(spec) => check_cidr_group(&mut v, obj, spec.as_ref()),
            Body::NetworkPolicy(spec) => knp::check(&mut v, spec.as_ref()),
            _ => {}
        }
    }
    check_duplicates(objects, &mut diags);
    rule::check_fqdn_dns_proxy(objects, &mut diags);
    diags
}

fn check_meta(v: &mut V<'_>, obj: &Object) {
    if !obj.kind.is_policy() || obj.kind == Kind::RuleList {
        return;
    }
    let anchor = obj.meta_loc.unwrap_or(obj.kind_field.key);
    match &obj.meta.name {
        None if obj.meta.generate_name.is_none() && !obj.meta.written("name") => v.report(
            Diagnostic::new(
                Code::InvalidObjectName,
                anchor,
                format!("the {} has no `metadata.name`", obj.kind.name()),
            )
            .label("no name")
            .help("every object needs a name (the agent reports \"must have name\")"),
        ),
        Some(n) if !syntax::is_dns_subdomain(&n.value) => v.report(
            Diagnostic::new(
                Code::InvalidObjectName,
                n.loc,
                format!("`{}` is not a valid object name", n.value),
            )
            .label("invalid name")
            .help(
                "names are lower-case alphanumerics, `-` and `.`, at most 253 characters, \
                 starting and ending with an alphanumeric",
            ),
        ),
        _ => {}
    }
    // The API server validates object labels (keys and values) and annotation keys.
    for (k, val) in obj.meta.labels.iter().flat_map(|l| l.0.iter()) {
        selector::check_key(v, k, selector::Flavor::Kubernetes);
        selector::check_value(v, val);
    }
    for (k, _) in obj.meta.annotations.iter().flat_map(|l| l.0.iter()) {
        selector::check_key(v, k, selector::Flavor::Kubernetes);
    }
    if let Some(ns) = &obj.meta.namespace {
        if !obj.kind.is_namespaced() {
            v.report(
                Diagnostic::new(
                    Code::NamespaceOnClusterScoped,
                    ns.key,
                    format!(
                        "`{}` is cluster-scoped, so `metadata.namespace` is ignored",
                        obj.kind.name()
                    ),
                )
                .label("ignored")
                .help("remove `metadata.namespace`"),
            );
        } else if !syntax::is_dns_label(&ns.value) {
            v.report(
                Diagnostic::new(
                    Code::InvalidObjectName,
                    ns.loc,
                    format!("`{}` is not a valid namespace name", ns.value),
                )
                .label("invalid namespace")
                .help("namespaces are lower-case alphanumerics and `-`, at most 63 characters"),
            );
        }
    }
}

fn check_cilium_policy(v: &mut V<'_>, obj: &Object, p: &CiliumPolicy) {
    if p.spec.is_none() && p.specs.is_none() && !p.undecodable {
        v.report(
            Diagnostic::new(
                Code::EmptyPolicy,
                obj.anchor(),
                format!("the {} has neither `spec` nor `specs`", obj.kind.name()),
            )
            .label("no rules")
            .help("put the rule under `spec:` (or a list of rules under `specs:`)"),
        );
    }
    if let Some(spec) = &p.spec {
        rule::check_rule(v, obj, &spec.value, spec.key);
    }
    if let Some(specs) = &p.specs {
        for r in specs.iter() {
            rule::check_rule(v, obj, r, r.loc);
        }
    }
}

fn check_cidr_group(
    v: &mut V<'_>,
    obj: &Object,
    spec: Option<&Spanned<crate::raw::objects::CidrGroupSpec>>,
) {
    let Some(spec) = spec else {
        v.report(
            Diagnostic::new(
                Code::MissingRequiredField,
                obj.anchor(),
                "the CiliumCIDRGroup has no `spec`",
            )
            .label("no spec")
            .help("add `spec: {externalCIDRs: [...]}`"),
        );
        return;
    };
    match &spec.external_cidrs {
        None if spec.written("externalCIDRs") => {}
        None => v.report(
            Diagnostic::new(
                Code::MissingRequiredField,
                spec.key,
                "`spec.externalCIDRs` is required",
            )
            .label("no `externalCIDRs`")
            .help("list the group's prefixes under `externalCIDRs` (the list may be empty)"),
        ),
        Some(cidrs) => {
            for c in cidrs.iter() {
                rule::check_prefix(v, c);
            }
        }
    }
}

/// L0313: the same (kind, namespace, name) twice.
fn check_duplicates(objects: &[Object], diags: &mut Diagnostics) {
    let mut seen: HashMap<(Kind, &str, &str), Loc> = HashMap::new();
    for obj in objects {
        if !obj.kind.is_policy() || obj.name().is_empty() {
            continue;
        }
        let key = (obj.kind, obj.namespace(), obj.name());
        match seen.get(&key) {
            Some(first) => diags.push(
                Diagnostic::new(
                    Code::DuplicatePolicy,
                    obj.anchor(),
                    format!(
                        "{} `{}` is defined twice",
                        obj.kind.name(),
                        if obj.namespace().is_empty() {
                            obj.name().to_string()
                        } else {
                            format!("{}/{}", obj.namespace(), obj.name())
                        }
                    ),
                )
                .label("second definition")
                .related(*first, "first defined here")
                .help("applying both, the second replaces the first; rename one of them"),
            ),
            None => {
                seen.insert(key, obj.anchor());
            }
        }
    }
}
