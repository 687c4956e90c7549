//! Kubernetes NetworkPolicy validation, as the API server does it
//! (`pkg/apis/networking/validation`), plus the Cilium translation pitfalls.

use super::selector::{self, Flavor};
use super::{V, rule, syntax};
use crate::diag::{Code, Diagnostic};
use crate::raw::decode::{IntOrString, Spanned};
use crate::raw::objects::{NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec};

pub(crate) fn check(v: &mut V<'_>, spec: Option<&Spanned<NetworkPolicySpec>>) {
    // `spec` and `podSelector` are plain structs in the Kubernetes API: when omitted they
    // decode as empty, which selects every pod of the namespace (the API server accepts it).
    let Some(spec) = spec else {
        return;
    };
    if let Some(s) = &spec.pod_selector {
        selector::check(v, s, Flavor::Kubernetes);
    }
    let mut types = (false, false);
    if let Some(pt) = &spec.policy_types {
        for t in pt.iter() {
            match t.value.as_str() {
                "Ingress" => types.0 = true,
                "Egress" => types.1 = true,
                other => v.report(
                    Diagnostic::new(
                        Code::InvalidEnumValue,
                        t.loc,
                        format!("`{other}` is not a policy type"),
                    )
                    .label("invalid policy type")
                    .help("policy types are `Ingress` and `Egress` (case-sensitive)"),
                ),
            }
        }
    }
    for r in spec.ingress.iter().flat_map(|i| i.iter()) {
        for p in r.ports.iter().flat_map(|p| p.iter()) {
            check_port(v, p);
        }
        for p in r.from.iter().flat_map(|p| p.iter()) {
            check_peer(v, p);
        }
    }
    for r in spec.egress.iter().flat_map(|i| i.iter()) {
        for p in r.ports.iter().flat_map(|p| p.iter()) {
            check_port(v, p);
        }
        for p in r.to.iter().flat_map(|p| p.iter()) {
            check_peer(v, p);
        }
    }
    if let Some(pt) = &spec.policy_types {
        for (rules, listed, dir) in [
            (
                spec.ingress.as_ref().map(|r| (r.key, r.len())),
                types.0,
                "Ingress",
            ),
            (
                spec.egress.as_ref().map(|r| (r.key, r.len())),
                types.1,
                "Egress",
            ),
        ] {
            if let Some((key, n)) = rules
                && n > 0
                && !listed
            {
                v.report(
                    Diagnostic::new(
                        Code::PolicyTypesIgnored,
                        key,
                        format!(
                            "`policyTypes` does not list `{dir}`, but the policy has {} rules",
                            dir.to_lowercase()
                        ),
                    )
                    .label("Kubernetes ignores these rules; Cilium applies them")
                    .related(pt.key, "`policyTypes` here")
                    .help(format!("add `{dir}` to `policyTypes`, or remove the rules")),
                );
            }
        }
    }
}

fn check_port(v: &mut V<'_>, p: &NetworkPolicyPort) {
    if let Some(proto) = &p.protocol
        && !["TCP", "UDP", "SCTP"].contains(&proto.value.as_str())
    {
        v.report(
            Diagnostic::new(
                Code::InvalidProtocol,
                proto.loc,
                format!("`{}` is not a valid NetworkPolicy protocol", proto.value),
            )
            .label("invalid protocol")
            .help("NetworkPolicy protocols are `TCP`, `UDP` and `SCTP` (upper-case)"),
        );
    }
    let start = match &p.port {
        None => None,
        Some(port) => match &port.value {
            IntOrString::Int(n) if (1..=65535).contains(n) => Some(*n),
            IntOrString::Int(n) => {
                v.report(
                    Diagnostic::new(
                        Code::InvalidPort,
                        port.loc,
                        format!("port {n} is outside 1-65535"),
                    )
                    .label("invalid port")
                    .help("NetworkPolicy ports are 1-65535; omit `port` for every port"),
                );
                None
            }
            IntOrString::Str(s) => {
                if !syntax::is_iana_svc_name(s) {
                    v.report(
                        Diagnostic::new(Code::InvalidPort, port.loc, format!("`{s}` is not a valid port name"))
                            .label("invalid port name")
                            .help(if s.bytes().all(|b| b.is_ascii_digit()) {
                                "a NetworkPolicy port number is an integer: remove the quotes".to_string()
                            } else {
                                "port names are at most 15 lower-case letters, digits and `-`, with at least one letter".to_string()
                            }),
                    );
                }
                None
            }
        },
    };
    if let Some(end) = &p.end_port {
        match (&p.port, start) {
            (None, _)
            | (
                Some(Spanned {
                    value: IntOrString::Str(_),
                    ..
                }),
                _,
            ) => v.report(
                Diagnostic::new(
                    Code::InvalidPort,
                    end.key,
                    "`endPort` needs a numeric `port`",
                )
                .label("no numeric port")
                .help("set `port` to the first port of the range"),
            ),
            (_, _) if !(0..=65535).contains(&end.value) => v.report(
                Diagnostic::new(
                    Code::ValueOutOfRange,
                    end.loc,
                    format!("`endPort` {} is outside 1-65535", end.value),
                )
                .label("out of range")
                .help("port ranges end at most at 65535"),
            ),
            (_, Some(s)) if end.value < s => v.report(
                Diagnostic::new(
                    Code::InvalidPort,
                    end.loc,
                    format!(
                        "`endPort` {} must be between `port` {s} and 65535",
                        end.value
                    ),
                )
                .label("invalid range")
                .help("`endPort` is the inclusive end of the range"),
            ),
            _ => {}
        }
    }
}

fn check_peer(v: &mut V<'_>, p: &NetworkPolicyPeer) {
    let selectors = p.pod_selector.is_some() || p.namespace_selector.is_some();
    match (&p.ip_block, selectors) {
        (None, false) => v.report(
            Diagnostic::new(Code::InvalidNetworkPolicyPeer, p.loc, "the peer is empty")
                .label("empty peer")
                .help("set `podSelector`, `namespaceSelector` or `ipBlock`; to allow every peer, omit `from`/`to`"),
        ),
        (Some(ip), true) => v.report(
            Diagnostic::new(Code::InvalidNetworkPolicyPeer, ip.key, "`ipBlock` cannot be combined with `podSelector` or `namespaceSelector`")
                .label("ipBlock beside a selector")
                .help("use two peers: one with `ipBlock`, one with the selectors"),
        ),
        _ => {}
    }
    for s in [&p.pod_selector, &p.namespace_selector]
        .into_iter()
        .flatten()
    {
        selector::check(v, s, Flavor::Kubernetes);
    }
    let Some(ip) = &p.ip_block else { return };
    let Some(cidr) = &ip.cidr else {
        if ip.written("cidr") {
            return;
        }
        v.report(
            Diagnostic::new(
                Code::MissingRequiredField,
                ip.key,
                "`ipBlock.cidr` is required",
            )
            .label("no `cidr`")
            .help("set `cidr` to a prefix such as `10.0.0.0/8`"),
        );
        return;
    };
    let net = rule::check_prefix(v, cidr);
    for e in ip.except.iter().flat_map(|e| e.iter()) {
        let (Some(en), Some(n)) = (rule::check_prefix(v, e), net) else {
            continue;
        };
        let inside = en.prefix_len() > n.prefix_len()
            && n.contains(&en.network())
            && std::mem::discriminant(&en) == std::mem::discriminant(&n);
        if !inside {
            v.report(
                Diagnostic::new(
                    Code::InvalidCidrExcept,
                    e.loc,
                    format!(
                        "except `{}` is not a strict subset of `{}`",
                        e.value, cidr.value
                    ),
                )
                .label("outside the block")
                .help("each `except` must be a longer prefix inside `cidr`"),
            );
        }
    }
}
