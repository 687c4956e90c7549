//! Rule and item validation: subjects (R2-R4), sections (R1), peers (R7, R8, R10, R11,
//! R35-R38, R40), and the pitfalls around them.

use super::selector::{self, Flavor};
use super::{V, ports, syntax, tables};
use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::raw::decode::Spanned;
use crate::raw::policy::{
    Authentication, CidrRule, EgressRule, FqdnSelector, Groups, IcmpRule, IngressRule,
    LabelSelector, PortRule, Rule, Section, Service,
};
use crate::raw::{Body, Kind, Object};
use crate::source::Loc;
use crate::version::CiliumVersion;

/// One ingress or egress item, seen through field names of its direction.
pub(crate) struct Item<'a> {
    pub section: Section,
    pub loc: Loc,
    pub written: &'a [&'static str],
    pub endpoints: Option<&'a Spanned<Vec<LabelSelector>>>,
    pub requires: Option<&'a Spanned<Vec<LabelSelector>>>,
    pub cidr: Option<&'a Spanned<Vec<Spanned<String>>>>,
    pub cidr_set: Option<&'a Spanned<Vec<CidrRule>>>,
    pub entities: Option<&'a Spanned<Vec<Spanned<String>>>>,
    pub groups: Option<&'a Spanned<Vec<Groups>>>,
    pub nodes: Option<&'a Spanned<Vec<LabelSelector>>>,
    pub services: Option<&'a Spanned<Vec<Service>>>,
    pub fqdns: Option<&'a Spanned<Vec<FqdnSelector>>>,
    pub to_ports: Option<&'a Spanned<Vec<PortRule>>>,
    pub icmps: Option<&'a Spanned<Vec<IcmpRule>>>,
    pub authentication: Option<&'a Spanned<Authentication>>,
}

impl<'a> Item<'a> {
    fn ingress(section: Section, r: &'a IngressRule) -> Self {
        Item {
            section,
            loc: r.loc,
            written: &r.written,
            endpoints: r.from_endpoints.as_ref(),
            requires: r.from_requires.as_ref(),
            cidr: r.from_cidr.as_ref(),
            cidr_set: r.from_cidr_set.as_ref(),
            entities: r.from_entities.as_ref(),
            groups: r.from_groups.as_ref(),
            nodes: r.from_nodes.as_ref(),
            services: None,
            fqdns: None,
            to_ports: r.to_ports.as_ref(),
            icmps: r.icmps.as_ref(),
            authentication: r.authentication.as_ref(),
        }
    }

    fn egress(section: Section, r: &'a EgressRule) -> Self {
        Item {
            section,
            loc: r.loc,
            written: &r.written,
            endpoints: r.to_endpoints.as_ref(),
            requires: r.to_requires.as_ref(),
            cidr: r.to_cidr.as_ref(),
            cidr_set: r.to_cidr_set.as_ref(),
            entities: r.to_entities.as_ref(),
            groups: r.to_groups.as_ref(),
            nodes: r.to_nodes.as_ref(),
            services: r.to_services.as_ref(),
            fqdns: r.to_fqdns.as_ref(),
            to_ports: r.to_ports.as_ref(),
            icmps: r.icmps.as_ref(),
            authentication: r.authentication.as_ref(),
        }
    }

    fn prefix(&self) -> &'static str {
        if self.section.is_ingress() {
            "from"
        } else {
            "to"
        }
    }

    /// Whether any peer field decoded (even as an empty list): the item's L3 part is then
    /// written, not "unspecified".
    pub(crate) fn has_peer_field(&self) -> bool {
        self.endpoints.is_some()
            || self.cidr.is_some()
            || self.cidr_set.is_some()
            || self.entities.is_some()
            || self.groups.is_some()
            || self.nodes.is_some()
            || self.services.is_some()
            || self.fqdns.is_some()
    }

    /// The peer fields that are written: (field name, key location, number of entries).
    /// The count is `None` for a field whose value could not be decoded (already reported).
    fn peers(&self) -> Vec<(String, Loc, Option<usize>)> {
        let p = self.prefix();
        let mut out = Vec::new();
        let mut add = |name: &str, field: Option<(Loc, usize)>| {
            let full = format!("{p}{name}");
            match field {
                Some((key, len)) => out.push((full, key, Some(len))),
                None if self.written.iter().any(|w| *w == full) => out.push((full, self.loc, None)),
                None => {}
            }
        };
        add("Endpoints", self.endpoints.map(|x| (x.key, x.len())));
        add("CIDR", self.cidr.map(|x| (x.key, x.len())));
        add("CIDRSet", self.cidr_set.map(|x| (x.key, x.len())));
        add("Entities", self.entities.map(|x| (x.key, x.len())));
        add("Groups", self.groups.map(|x| (x.key, x.len())));
        add("Nodes", self.nodes.map(|x| (x.key, x.len())));
        add("Services", self.services.map(|x| (x.key, x.len())));
        add("FQDNs", self.fqdns.map(|x| (x.key, x.len())));
        out
    }
}

/// Every item of a rule, in section order: ingress, ingressDeny, egress, egressDeny.
pub(crate) fn items(rule: &Rule) -> Vec<Item<'_>> {
    let ingress = |section, r| Item::ingress(section, r);
    let egress = |section, r| Item::egress(section, r);
    let mut out: Vec<Item<'_>> = Vec::new();
    out.extend(
        rule.ingress
            .iter()
            .flat_map(|s| s.iter())
            .map(|r| ingress(Section::Ingress, r)),
    );
    out.extend(
        rule.ingress_deny
            .iter()
            .flat_map(|s| s.iter())
            .map(|r| ingress(Section::IngressDeny, &r.0)),
    );
    out.extend(
        rule.egress
            .iter()
            .flat_map(|s| s.iter())
            .map(|r| egress(Section::Egress, r)),
    );
    out.extend(
        rule.egress_deny
            .iter()
            .flat_map(|s| s.iter())
            .map(|r| egress(Section::EgressDeny, &r.0)),
    );
    out
}

/// Validates one rule of a CNP or CCNP. `anchor` is where to point for the rule as a whole.
pub(crate) fn check_rule(v: &mut V<'_>, obj: &Object, rule: &Rule, anchor: Loc) {
    let host = rule.node_selector.is_some() && rule.endpoint_selector.is_none();
    check_subject(v, obj, rule, anchor);

    // R1 and the CRD's anyOf: at least one section present, and not all empty.
    let sections = [
        (
            Section::Ingress,
            rule.ingress.as_ref().map(|s| (s.key, s.len())),
        ),
        (
            Section::IngressDeny,
            rule.ingress_deny.as_ref().map(|s| (s.key, s.len())),
        ),
        (
            Section::Egress,
            rule.egress.as_ref().map(|s| (s.key, s.len())),
        ),
        (
            Section::EgressDeny,
            rule.egress_deny.as_ref().map(|s| (s.key, s.len())),
        ),
    ];
    let present: Vec<_> = sections
        .iter()
        .filter_map(|(s, p)| p.map(|(k, n)| (*s, k, n)))
        .collect();
    let total: usize = present.iter().map(|p| p.2).sum();
    let undecodable = ["ingress", "ingressDeny", "egress", "egressDeny"]
        .iter()
        .any(|k| rule.invalid.contains(k));
    if total == 0 && !undecodable {
        let loc = present.first().map_or(anchor, |p| p.1);
        let d = Diagnostic::new(
            Code::RuleWithoutItems,
            loc,
            if present.is_empty() {
                "the rule has no `ingress`, `ingressDeny`, `egress` or `egressDeny`".to_string()
            } else {
                "every section of the rule is an empty list".to_string()
            },
        )
        .label("no items")
        .help(
            "a rule needs at least one item; to deny all traffic in a direction, write one \
             empty item: `ingress: [{}]`",
        );
        v.report(d);
    } else {
        for (s, key, n) in &present {
            if *n == 0 {
                v.report(
                    Diagnostic::new(
                        Code::EmptySection,
                        *key,
                        format!("`{}: []` has no items and no effect", s.name()),
                    )
                    .label("empty list")
                    .help(format!(
                        "unlike `{0}: [{{}}]`, an empty list does not enable default-deny; \
                         remove it, or write `{0}: [{{}}]` to deny all {1}",
                        s.name(),
                        if s.is_ingress() { "ingress" } else { "egress" }
                    )),
                );
            }
        }
    }

    if let Some(dd) = &rule.enable_default_deny {
        let has_ingress = present.iter().any(|p| p.0.is_ingress() && p.2 > 0);
        let has_egress = present.iter().any(|p| !p.0.is_ingress() && p.2 > 0);
        for (flag, has, dir) in [
            (&dd.ingress, has_ingress, "ingress"),
            (&dd.egress, has_egress, "egress"),
        ] {
            if let Some(f) = flag
                && !has
            {
                v.report(
                    Diagnostic::new(
                        Code::DefaultDenyWithoutItems,
                        f.key,
                        format!(
                            "`enableDefaultDeny.{dir}` has no effect: the rule has no {dir} items"
                        ),
                    )
                    .label("no effect")
                    .help(format!(
                        "only directions with items produce policy entries; remove \
                             `{dir}` here or add {dir} items"
                    )),
                );
            }
        }
    }

    if let Some(log) = &rule.log {
        if v.opts.version < CiliumVersion::V1_19 {
            v.report(
                Diagnostic::new(
                    Code::FieldNotAllowedHere,
                    log.key,
                    format!("`log` needs Cilium 1.19; the target is {}", v.opts.version),
                )
                .label("not in this version")
                .help("remove `log`, or target Cilium 1.19 (`--cilium-version 1.19`)"),
            );
        }
        if let Some(val) = &log.value.value {
            if val.value.chars().count() > 32 {
                v.report(
                    Diagnostic::new(
                        Code::ValueOutOfRange,
                        val.loc,
                        format!(
                            "`log.value` is {} characters long; the maximum is 32",
                            val.value.chars().count()
                        ),
                    )
                    .label("too long")
                    .help("shorten the Hubble log tag to 32 characters"),
                );
            }
            if val
                .value
                .chars()
                .any(|c| c.is_control() || is_format_char(c))
            {
                v.report(
                    Diagnostic::new(
                        Code::InvalidLogValue,
                        val.loc,
                        "`log.value` contains control or format characters",
                    )
                    .label("invisible characters")
                    .help("use printable characters only"),
                );
            }
        }
    }

    for l in rule.labels.iter().flat_map(|l| l.iter()) {
        if !l.written("key") {
            v.report(
                Diagnostic::new(
                    Code::MissingRequiredField,
                    l.loc,
                    "a rule label has no `key`",
                )
                .label("no `key`")
                .help("each entry of `labels` needs a `key`"),
            );
        }
    }

    for item in items(rule) {
        check_item(v, obj, &item, host);
    }
    ports::check_l7_conflicts(
        v,
        rule.ingress
            .iter()
            .flat_map(|s| s.iter())
            .flat_map(|r| r.to_ports.iter().flat_map(|p| p.iter())),
    );
    ports::check_l7_conflicts(
        v,
        rule.egress
            .iter()
            .flat_map(|s| s.iter())
            .flat_map(|r| r.to_ports.iter().flat_map(|p| p.iter())),
    );
}

fn is_format_char(c: char) -> bool {
    // Unicode category Cf, the characters that matter in practice.
    matches!(c, '\u{00ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
}

/// R2-R4 and the subject namespace pitfall.
fn check_subject(v: &mut V<'_>, obj: &Object, rule: &Rule, anchor: Loc) {
    match (&rule.endpoint_selector, &rule.node_selector) {
        (None, None) if rule.written("endpointSelector") || rule.written("nodeSelector") => {}
        (None, None) => v.report(
            Diagnostic::new(
                Code::MissingSubjectSelector,
                anchor,
                "the rule has neither `endpointSelector` nor `nodeSelector`",
            )
            .label("which endpoints does this apply to?")
            .help(if v.clusterwide() {
                "add `endpointSelector: {}` for every pod, or `nodeSelector` for nodes"
            } else {
                "add `endpointSelector: {}` for every pod of the namespace"
            }),
        ),
        (Some(_), Some(n)) => v.report(
            Diagnostic::new(
                Code::ConflictingSubjectSelectors,
                n.key,
                "the rule has both `endpointSelector` and `nodeSelector`",
            )
            .label("second subject selector")
            .help("split it into one rule for pods and one for nodes"),
        ),
        (None, Some(n)) if !v.clusterwide() => v.report(
            Diagnostic::new(
                Code::NodeSelectorInNamespacedPolicy,
                n.key,
                "a CiliumNetworkPolicy cannot use `nodeSelector`",
            )
            .label("host policies are clusterwide")
            .help("move the rule to a CiliumClusterwideNetworkPolicy"),
        ),
        _ => {}
    }
    for sel in [&rule.endpoint_selector, &rule.node_selector]
        .into_iter()
        .flatten()
    {
        selector::check(v, sel, Flavor::Cilium);
    }
    if v.kind == Kind::CiliumNetworkPolicy
        && let Some(sel) = &rule.endpoint_selector
    {
        check_foreign_namespace(v, obj, sel);
    }
}

const NAMESPACE_KEYS: &[&str] = &[
    "io.kubernetes.pod.namespace",
    "k8s:io.kubernetes.pod.namespace",
    "any:io.kubernetes.pod.namespace",
];

fn check_foreign_namespace(v: &mut V<'_>, obj: &Object, sel: &Spanned<LabelSelector>) {
    let own = obj.namespace();
    let mut found = None;
    if let Some(labels) = &sel.match_labels {
        for (k, val) in &labels.0 {
            if NAMESPACE_KEYS.contains(&k.value.as_str()) && val.value != own {
                found = Some((k.loc, format!("`{}`", val.value)));
            }
        }
    }
    for r in sel.match_expressions.iter().flat_map(|m| m.iter()) {
        if let Some(k) = &r.key
            && NAMESPACE_KEYS.contains(&k.value.as_str())
        {
            found = Some((k.loc, "a namespace expression".to_string()));
        }
    }
    if let Some((loc, what)) = found {
        v.report(
            Diagnostic::new(
                Code::ForeignNamespaceSubject,
                loc,
                format!(
                    "the `endpointSelector` names {what}, but a CiliumNetworkPolicy only selects pods of its own namespace `{own}`"
                ),
            )
            .label("overwritten by the agent")
            .help(
                "the agent replaces the namespace requirement with the policy's namespace; \
                 use a CiliumClusterwideNetworkPolicy to select pods in other namespaces",
            ),
        );
    }
}

fn check_item(v: &mut V<'_>, obj: &Object, item: &Item<'_>, host: bool) {
    let peers = item.peers();

    // R7/R8: at most one non-empty peer kind.
    let mut non_empty: Vec<_> = peers
        .iter()
        .filter(|p| p.2.is_some_and(|n| n > 0))
        .collect();
    non_empty.sort_by_key(|p| p.1.start);
    if non_empty.len() > 1 {
        let (first, second) = (non_empty[0], non_empty[1]);
        v.report(
            Diagnostic::new(
                Code::CombinedPeerKinds,
                second.1,
                format!(
                    "combining `{}` and `{}` in one item is not supported",
                    first.0, second.0
                ),
            )
            .label(format!("second peer kind, after `{}`", first.0))
            .related(first.1, "first peer kind")
            .help(format!(
                "split the item in two: one with `{}`, one with `{}` (each with the same ports)",
                first.0, second.0
            )),
        );
    }
    for (name, key, len) in &peers {
        if *len == Some(0) {
            v.report(
                Diagnostic::new(
                    Code::EmptyPeerList,
                    *key,
                    format!("`{name}: []` selects no peer, so this item allows nothing"),
                )
                .label("empty list")
                .help(format!(
                    "an omitted `{name}` means every peer, an empty list means none; remove the \
                     key or list the peers"
                )),
            );
        }
    }

    // Ports without peers: allowed from/to every identity.
    let has_ports = item.to_ports.is_some_and(|p| !p.is_empty());
    let has_l4 = has_ports || item.icmps.is_some_and(|p| !p.is_empty());
    // Items whose ports carry L7 rules or server names are restricted at L7 (a DNS rule
    // without peers is the usual way to let the proxy see every lookup).
    let l7 = item.to_ports.is_some_and(|p| {
        p.iter()
            .any(|pr| pr.rules.is_some() || pr.server_names.is_some() || pr.listener.is_some())
    });
    if !item.section.is_deny() && peers.is_empty() && item.requires.is_none() && has_l4 && !l7 {
        let loc = item
            .to_ports
            .map_or_else(|| item.icmps.map_or(item.loc, |i| i.key), |p| p.key);
        let (dir, from) = if item.section.is_ingress() {
            ("from", "fromEntities")
        } else {
            ("to", "toEntities")
        };
        v.report(
            Diagnostic::new(
                Code::PortsFromAnywhere,
                loc,
                format!(
                    "this item has {} but no peers, so it allows them {dir} every identity, including the internet",
                    if has_ports { "ports" } else { "ICMP types" }
                ),
            )
            .label(format!("allowed {dir} anywhere"))
            .help(format!(
                "add the peers this is meant for, or write `{from}: [all]` to make the intent explicit"
            )),
        );
    }

    if let Some(req) = item.requires {
        let field = format!("{}Requires", item.prefix());
        if v.opts.version >= CiliumVersion::V1_19 {
            if !req.is_empty() {
                v.report(
                    Diagnostic::new(
                        Code::RequiresRemoved,
                        req.key,
                        format!("`{field}` was removed in Cilium 1.19"),
                    )
                    .label("removed")
                    .help(
                        "add the requirement to every peer selector of the rules selecting \
                         these endpoints, or target Cilium 1.18 (`--cilium-version 1.18`)",
                    ),
                );
            }
        } else {
            v.report(
                Diagnostic::new(
                    Code::RequiresDeprecated,
                    req.key,
                    format!("`{field}` is deprecated and removed in Cilium 1.19"),
                )
                .label("deprecated")
                .help("add the requirement to every peer selector instead"),
            );
        }
        for s in req.iter() {
            selector::check(v, s, Flavor::Cilium);
        }
    }

    for s in item.endpoints.iter().flat_map(|e| e.iter()) {
        selector::check(v, s, Flavor::Cilium);
    }
    if let Some(nodes) = item.nodes {
        for s in nodes.iter() {
            selector::check(v, s, Flavor::Cilium);
        }
        v.report(
            Diagnostic::new(
                Code::RequiresAgentFlag,
                nodes.key,
                format!(
                    "`{}Nodes` only works when the agent runs with `enable-node-selector-labels=true`",
                    item.prefix()
                ),
            )
            .label("needs an agent flag")
            .help(
                "without the flag the agent rejects the policy; use the `remote-node` and \
                 `host` entities otherwise",
            ),
        );
    }
    for e in item.entities.iter().flat_map(|e| e.iter()) {
        check_entity(v, e);
    }
    for c in item.cidr.iter().flat_map(|c| c.iter()) {
        // The agent accepts a bare address in `fromCIDR`/`toCIDR`; only the CRD's
        // `format: cidr` rejects it.
        if !v.crd && c.value.parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        check_prefix(v, c);
    }
    for c in item.cidr_set.iter().flat_map(|c| c.iter()) {
        check_cidr_rule(v, c);
    }
    for s in item.services.iter().flat_map(|s| s.iter()) {
        check_service(v, s);
    }
    for f in item.fqdns.iter().flat_map(|f| f.iter()) {
        check_fqdn(v, f);
    }
    if let Some(a) = item.authentication {
        match &a.mode {
            None if a.written("mode") => {}
            None => v.report(
                Diagnostic::new(
                    Code::MissingRequiredField,
                    a.key,
                    "`authentication.mode` is required",
                )
                .label("no `mode`")
                .help("set `mode: required` (or `disabled`)"),
            ),
            Some(m)
                if !["disabled", "required", "test-always-fail"].contains(&m.value.as_str()) =>
            {
                v.report(
                    Diagnostic::new(
                        Code::InvalidEnumValue,
                        m.loc,
                        format!("`{}` is not an authentication mode", m.value),
                    )
                    .label("unknown mode")
                    .help("use `required`, `disabled` or `test-always-fail`"),
                );
            }
            _ => {}
        }
    }

    // R16: ICMP rules in an item of their own.
    if let (Some(icmps), Some(tp)) = (item.icmps, item.to_ports)
        && !icmps.is_empty()
        && !tp.is_empty()
    {
        v.report(
            Diagnostic::new(
                Code::IcmpsWithPorts,
                icmps.key,
                "`icmps` and `toPorts` cannot be in the same item",
            )
            .label("ICMP beside ports")
            .related(tp.key, "`toPorts` here")
            .help("move `icmps` into an item of its own, with the same peers"),
        );
    }
    for r in item.icmps.iter().flat_map(|i| i.iter()) {
        ports::check_icmp_rule(v, r);
    }
    for pr in item.to_ports.iter().flat_map(|p| p.iter()) {
        ports::check_port_rule(v, obj, item.section, pr, host);
    }
}

fn check_entity(v: &mut V<'_>, e: &Spanned<String>) {
    if tables::ENTITIES.contains(&e.value.as_str())
        || (!v.crd && tables::AGENT_ONLY_ENTITIES.contains(&e.value.as_str()))
    {
        return;
    }
    let help = if e.value == "namespace" || e.value == "cluster-mesh" {
        format!(
            "`{}` is an entity of Cilium releases after 1.19; Cilium {} does not accept it",
            e.value, v.opts.version
        )
    } else if tables::AGENT_ONLY_ENTITIES.contains(&e.value.as_str()) {
        "`world-ipv4`/`world-ipv6` are known to the agent but not in the CRD enum, so the API \
         server rejects them; use `world`, or CIDRs `0.0.0.0/0` / `::/0`"
            .to_string()
    } else if let Some(fix) = tables::ENTITIES.iter().find(|x| {
        x.eq_ignore_ascii_case(&e.value)
            || x.replace('-', "") == e.value.to_ascii_lowercase().replace(['-', '_'], "")
    }) {
        format!("entities are lower-case: write `{fix}`")
    } else {
        format!("entities are: {}", tables::ENTITIES.join(", "))
    };
    v.report(
        Diagnostic::new(
            Code::UnknownEntity,
            e.loc,
            format!("`{}` is not an entity", e.value),
        )
        .label("unknown entity")
        .help(help),
    );
}

/// R36: a CIDR in prefix notation.
pub(crate) fn check_prefix(v: &mut V<'_>, c: &Spanned<String>) -> Option<ipnet::IpNet> {
    match syntax::parse_prefix(&c.value) {
        Ok(n) => Some(n),
        Err(why) => {
            v.report(
                Diagnostic::new(
                    Code::InvalidCidr,
                    c.loc,
                    format!("`{}` is not a valid CIDR", c.value),
                )
                .label("invalid CIDR")
                .help(why),
            );
            None
        }
    }
}

/// R37/R38.
fn check_cidr_rule(v: &mut V<'_>, c: &CidrRule) {
    let set: Vec<_> = [
        c.cidr.as_ref().map(|x| ("cidr", x.key)),
        c.cidr_group_ref.as_ref().map(|x| ("cidrGroupRef", x.key)),
        c.cidr_group_selector
            .as_ref()
            .map(|x| ("cidrGroupSelector", x.key)),
    ]
    .into_iter()
    .flatten()
    .collect();
    match set.len() {
        0 => v.report(
            Diagnostic::new(
                Code::InvalidCidrRule,
                c.loc,
                "the CIDR rule has none of `cidr`, `cidrGroupRef`, `cidrGroupSelector`",
            )
            .label("no prefix")
            .help("set exactly one of `cidr`, `cidrGroupRef`, `cidrGroupSelector`"),
        ),
        1 => {}
        _ => v.report(
            Diagnostic::new(
                Code::InvalidCidrRule,
                set[1].1,
                format!("`{}` and `{}` cannot both be set in one CIDR rule", set[0].0, set[1].0),
            )
            .label("second prefix source")
            .help("set exactly one of `cidr`, `cidrGroupRef`, `cidrGroupSelector`; use two entries for both"),
        ),
    }
    let net = c.cidr.as_ref().and_then(|x| check_prefix(v, x));
    if let Some(r) = &c.cidr_group_ref
        && !syntax::is_dns_subdomain(&r.value)
    {
        v.report(
                Diagnostic::new(
                    Code::InvalidCidrGroupRef,
                    r.loc,
                    format!("`{}` is not a valid CiliumCIDRGroup name", r.value),
                )
                .label("invalid name")
                .help("CIDR group names are lower-case alphanumerics, `-` and `.`, at most 253 characters"),
            );
    }
    if let Some(s) = &c.cidr_group_selector {
        selector::check(v, s, Flavor::Cilium);
    }
    let Some(except) = &c.except else {
        return;
    };
    for e in except.iter() {
        let Some(en) = check_prefix(v, e) else {
            continue;
        };
        let Some(n) = net else {
            continue;
        };
        let problem = if matches!(
            (n, en),
            (ipnet::IpNet::V4(_), ipnet::IpNet::V6(_)) | (ipnet::IpNet::V6(_), ipnet::IpNet::V4(_))
        ) {
            Some("is of another address family than".to_string())
        } else if en.prefix_len() < n.prefix_len() || !n.contains(&en.network()) {
            Some("is not inside".to_string())
        } else {
            None
        };
        if let Some(p) = problem {
            v.report(
                Diagnostic::new(
                    Code::InvalidCidrExcept,
                    e.loc,
                    format!(
                        "except `{}` {p} `{}`",
                        e.value,
                        c.cidr.as_ref().map_or("", |x| x.value.as_str())
                    ),
                )
                .label("outside the allowed prefix")
                .help("each `except` must be a sub-prefix of the rule's `cidr`"),
            );
        }
    }
}

fn check_service(v: &mut V<'_>, s: &Service) {
    match (&s.k8s_service, &s.k8s_service_selector) {
        (None, None) => v.report(
            Diagnostic::new(
                Code::EmptyServiceSelector,
                s.loc,
                "this `toServices` entry names no service",
            )
            .label("no service")
            .help("set `k8sService: {serviceName, namespace}` or `k8sServiceSelector`"),
        ),
        (_, Some(sel)) => match &sel.selector {
            None if sel.written("selector") => {}
            None => v.report(
                Diagnostic::new(
                    Code::MissingRequiredField,
                    sel.key,
                    "`k8sServiceSelector.selector` is required",
                )
                .label("no `selector`")
                .help("add `selector: {matchLabels: ...}` over the Services' labels"),
            ),
            Some(x) => selector::check(v, x, Flavor::Cilium),
        },
        _ => {}
    }
}

/// R35.
pub(crate) fn check_fqdn(v: &mut V<'_>, f: &FqdnSelector) {
    match (&f.match_name, &f.match_pattern) {
        (None, None) if f.written("matchName") || f.written("matchPattern") => {}
        (None, None) => v.report(
            Diagnostic::new(
                Code::InvalidFqdnSelector,
                f.loc,
                "the entry has neither `matchName` nor `matchPattern`",
            )
            .label("empty selector")
            .help("set one of `matchName` or `matchPattern`"),
        ),
        (Some(_), Some(p)) => v.report(
            Diagnostic::new(
                Code::InvalidFqdnSelector,
                p.key,
                "`matchName` and `matchPattern` cannot both be set",
            )
            .label("second selector")
            .help("use two entries, one with `matchName` and one with `matchPattern`"),
        ),
        _ => {}
    }
    for (s, pattern) in [(&f.match_name, false), (&f.match_pattern, true)] {
        if let Some(s) = s
            && let Some(why) = syntax::fqdn_error(&s.value, pattern)
        {
            v.report(
                Diagnostic::new(
                    Code::InvalidFqdnSelector,
                    s.loc,
                    format!(
                        "`{}` is not a valid {}",
                        s.value,
                        if pattern {
                            "DNS name pattern"
                        } else {
                            "DNS name"
                        }
                    ),
                )
                .label("invalid")
                .help(if !pattern && s.value.contains('*') {
                    "wildcards need `matchPattern`, not `matchName`".to_string()
                } else {
                    why
                }),
            );
        }
    }
}

/// L0303: `toFQDNs` without any DNS proxy rule that could apply to the same pods (in the same
/// policy, in a policy of the same namespace, or in a clusterwide policy).
pub(crate) fn check_fqdn_dns_proxy(objects: &[Object], diags: &mut Diagnostics) {
    let has_dns = |o: &Object| match &o.body {
        Body::CiliumPolicy(p) => p.rules().any(|(_, r)| {
            r.egress.iter().flat_map(|s| s.iter()).any(|e| {
                e.to_ports
                    .iter()
                    .flat_map(|p| p.iter())
                    .any(|pr| pr.rules.as_ref().is_some_and(|r| r.dns.is_some()))
            })
        }),
        _ => false,
    };
    // Where DNS goes through the proxy: clusterwide (a CCNP or a rule list with a DNS rule
    // may select any pod) or per namespace. Computed once, so the check is linear.
    let mut dns_clusterwide = false;
    let mut dns_namespaces = std::collections::HashSet::new();
    for o in objects.iter().filter(|o| has_dns(o)) {
        match o.kind {
            Kind::CiliumNetworkPolicy => {
                dns_namespaces.insert(o.namespace());
            }
            _ => dns_clusterwide = true,
        }
    }
    if dns_clusterwide {
        return;
    }
    for o in objects {
        let Body::CiliumPolicy(p) = &o.body else {
            continue;
        };
        if o.kind == Kind::CiliumNetworkPolicy && dns_namespaces.contains(o.namespace()) {
            continue;
        }
        for (_, r) in p.rules() {
            for e in r.egress.iter().flat_map(|s| s.iter()) {
                if let Some(f) = &e.to_fqdns {
                    if f.is_empty() {
                        continue;
                    }
                    diags.push(
                        Diagnostic::new(
                            Code::FqdnWithoutDnsProxy,
                            f.key,
                            "`toFQDNs` is used, but no policy sends these pods' DNS lookups through the DNS proxy",
                        )
                        .label("FQDN peers stay empty")
                        .help(
                            "add an egress item to kube-dns on port 53 with `rules: {dns: [{matchPattern: \"*\"}]}`; \
                             without it the proxy never learns the addresses and the traffic is denied",
                        ),
                    );
                }
            }
        }
    }
}
