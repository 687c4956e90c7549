//! The Cilium policy rule schema (`cilium.io/v2` Rule and everything under it), mirroring
//! `pkg/policy/api` and the CRD, field for field.

use super::decode::{Cx, Decode, Elsewhere, IntOrString, Labels, Spanned, Strictness, raw_struct};
use crate::diag::{Code, Diagnostic};
use crate::source::Loc;
use crate::yaml::{Entry, Node};

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, ANDed).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector {
    /// Where the selector is.
    pub loc: Loc,
    /// `matchLabels`: key = value requirements.
    pub match_labels: Option<Spanned<Labels>>,
    /// `matchExpressions`: operator requirements.
    pub match_expressions: Option<Spanned<Vec<Requirement>>>,
}

impl LabelSelector {
    /// The field names of a label selector.
    pub const FIELDS: &'static [&'static str] = &["matchLabels", "matchExpressions"];

    /// Whether the selector has no requirements at all (`{}`), matching everything.
    pub fn is_empty(&self) -> bool {
        self.match_labels.as_ref().is_none_or(|m| m.0.is_empty())
            && self.match_expressions.as_ref().is_none_or(|m| m.is_empty())
    }

    /// Every key the selector mentions, with its location.
    pub fn keys(&self) -> impl Iterator<Item = &Spanned<String>> {
        let labels = self
            .match_labels
            .iter()
            .flat_map(|m| m.0.iter().map(|(k, _)| k));
        let exprs = self
            .match_expressions
            .iter()
            .flat_map(|m| m.iter().filter_map(|r| r.key.as_ref()));
        labels.chain(exprs)
    }
}

impl Decode for LabelSelector {
    fn decode(cx: &mut Cx<'_>, node: &Node) -> Option<Self> {
        let mut out = LabelSelector {
            loc: node.loc,
            ..Default::default()
        };
        let entries = node.as_map().map(<[_]>::to_vec);
        cx.fields(
            node,
            "label selector",
            Self::FIELDS,
            Strictness::Lenient,
            &[],
            |cx, key, e| match key {
                "matchLabels" => out.match_labels = cx.field(e),
                "matchExpressions" => out.match_expressions = cx.field(e),
                _ => {}
            },
        )?;
        for e in entries.iter().flatten() {
            if Self::FIELDS
                .iter()
                .any(|k| *k == e.key || (cx.case_insensitive && k.eq_ignore_ascii_case(&e.key)))
            {
                continue;
            }
            let path = cx.path_with(&e.key);
            if let Some(near) = super::decode::near_miss(&e.key, Self::FIELDS) {
                cx.report(
                    Diagnostic::new(
                        Code::MisspelledField,
                        e.key_loc,
                        format!("unknown field `{path}`, did you mean `{near}`?"),
                    )
                    .label("not a field of a label selector")
                    .help(format!(
                        "rename it to `{near}`; as written the API server drops it and the \
                         selector matches more than intended"
                    )),
                );
                continue;
            }
            let mut d = Diagnostic::new(
                Code::MisplacedSelectorLabel,
                e.key_loc,
                format!("unknown field `{path}` in a label selector"),
            )
            .label("neither `matchLabels` nor `matchExpressions`");
            d = if e.value.as_map().is_none()
                && !matches!(e.value.value, crate::yaml::Value::Seq(_))
            {
                d.help(format!(
                    "this looks like a label indented one level too shallow: move `{}` under \
                     `matchLabels`; as written the API server drops it and the selector matches \
                     more than intended",
                    e.key
                ))
            } else {
                d.help("a label selector has only `matchLabels` and `matchExpressions`")
            };
            cx.report(d);
        }
        Some(out)
    }
}

raw_struct! {
    /// One `matchExpressions` requirement.
    Requirement("label selector requirement", Strict) {
        /// The label key.
        key: "key" => String,
        /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
        operator: "operator" => String,
        /// The values for `In` / `NotIn`.
        values: "values" => Vec<Spanned<String>>,
    }
}

const KNP_PORTS: Elsewhere = Elsewhere {
    field: "ports",
    why: "is a Kubernetes NetworkPolicy field; Cilium items list ports under \
          `toPorts: [{ports: [...]}]`",
};

const AUTH_REPLACED: Elsewhere = Elsewhere {
    field: "auth",
    why: "was replaced by `authentication: {mode: ...}` in Cilium 1.14",
};

const TO_IN_INGRESS: &[Elsewhere] = &[
    Elsewhere {
        field: "toEndpoints",
        why: "is an egress field; ingress uses `fromEndpoints`",
    },
    Elsewhere {
        field: "toCIDR",
        why: "is an egress field; ingress uses `fromCIDR`",
    },
    Elsewhere {
        field: "toCIDRSet",
        why: "is an egress field; ingress uses `fromCIDRSet`",
    },
    Elsewhere {
        field: "toEntities",
        why: "is an egress field; ingress uses `fromEntities`",
    },
    Elsewhere {
        field: "toNodes",
        why: "is an egress field; ingress uses `fromNodes`",
    },
    Elsewhere {
        field: "toGroups",
        why: "is an egress field; ingress uses `fromGroups`",
    },
    Elsewhere {
        field: "toRequires",
        why: "is an egress field; ingress uses `fromRequires`",
    },
    Elsewhere {
        field: "toServices",
        why: "exists only in egress rules",
    },
    Elsewhere {
        field: "toFQDNs",
        why: "exists only in egress rules",
    },
    AUTH_REPLACED,
    KNP_PORTS,
    Elsewhere {
        field: "from",
        why: "is a Kubernetes NetworkPolicy field; Cilium items use `fromEndpoints`, \
              `fromCIDRSet`, `fromEntities`, ...",
    },
    Elsewhere {
        field: "to",
        why: "is a Kubernetes NetworkPolicy egress field; Cilium ingress items use \
              `fromEndpoints`, `fromCIDRSet`, `fromEntities`, ...",
    },
];

const FROM_IN_EGRESS: &[Elsewhere] = &[
    Elsewhere {
        field: "fromEndpoints",
        why: "is an ingress field; egress uses `toEndpoints`",
    },
    Elsewhere {
        field: "fromCIDR",
        why: "is an ingress field; egress uses `toCIDR`",
    },
    Elsewhere {
        field: "fromCIDRSet",
        why: "is an ingress field; egress uses `toCIDRSet`",
    },
    Elsewhere {
        field: "fromEntities",
        why: "is an ingress field; egress uses `toEntities`",
    },
    Elsewhere {
        field: "fromNodes",
        why: "is an ingress field; egress uses `toNodes`",
    },
    Elsewhere {
        field: "fromGroups",
        why: "is an ingress field; egress uses `toGroups`",
    },
    Elsewhere {
        field: "fromRequires",
        why: "is an ingress field; egress uses `toRequires`",
    },
    AUTH_REPLACED,
    KNP_PORTS,
    Elsewhere {
        field: "to",
        why: "is a Kubernetes NetworkPolicy field; Cilium items use `toEndpoints`, \
              `toCIDRSet`, `toEntities`, ...",
    },
    Elsewhere {
        field: "from",
        why: "is a Kubernetes NetworkPolicy ingress field; Cilium egress items use \
              `toEndpoints`, `toCIDRSet`, `toEntities`, ...",
    },
];

const NO_AUTH_IN_DENY: Elsewhere = Elsewhere {
    field: "authentication",
    why: "does not exist in deny rules",
};

/// `Elsewhere` in const position.
const fn el(field: &'static str, why: &'static str) -> Elsewhere {
    Elsewhere { field, why }
}

const IN_AN_ITEM: &str = "belongs inside an `ingress`/`egress` item; check the indentation";
const AT_RULE_LEVEL: &str = "belongs at the rule level, not inside an item; check the indentation";
const IN_A_PORT_RULE: &str = "belongs inside a `toPorts` entry; check the indentation";
const IN_PORTS: &str = "belongs inside `toPorts[].ports`; check the indentation";
const BESIDE_TO_PORTS: &str = "belongs in the item, beside `toPorts`; check the indentation";

/// Fields of a rule written one level too deep, inside an item.
const RULE_FIELDS: &[Elsewhere] = &[
    el("endpointSelector", AT_RULE_LEVEL),
    el("nodeSelector", AT_RULE_LEVEL),
    el("ingress", AT_RULE_LEVEL),
    el("ingressDeny", AT_RULE_LEVEL),
    el("egress", AT_RULE_LEVEL),
    el("egressDeny", AT_RULE_LEVEL),
    el("enableDefaultDeny", AT_RULE_LEVEL),
];

/// Fields of a port rule or a port written at item level.
const PORT_FIELDS_IN_ITEM: &[Elsewhere] = &[
    el("rules", IN_A_PORT_RULE),
    el("serverNames", IN_A_PORT_RULE),
    el("listener", IN_A_PORT_RULE),
    el("terminatingTLS", IN_A_PORT_RULE),
    el("originatingTLS", IN_A_PORT_RULE),
    el("port", IN_PORTS),
    el("protocol", IN_PORTS),
    el("endPort", IN_PORTS),
];

const NOT_IN_RULE: &[Elsewhere] = &[
    el("fromEndpoints", IN_AN_ITEM),
    el("toEndpoints", IN_AN_ITEM),
    el("fromCIDR", IN_AN_ITEM),
    el("toCIDR", IN_AN_ITEM),
    el("fromCIDRSet", IN_AN_ITEM),
    el("toCIDRSet", IN_AN_ITEM),
    el("fromEntities", IN_AN_ITEM),
    el("toEntities", IN_AN_ITEM),
    el("fromNodes", IN_AN_ITEM),
    el("toNodes", IN_AN_ITEM),
    el("fromGroups", IN_AN_ITEM),
    el("toGroups", IN_AN_ITEM),
    el("fromRequires", IN_AN_ITEM),
    el("toRequires", IN_AN_ITEM),
    el("toServices", IN_AN_ITEM),
    el("toFQDNs", IN_AN_ITEM),
    el("toPorts", IN_AN_ITEM),
    el("icmps", IN_AN_ITEM),
    el("authentication", IN_AN_ITEM),
    Elsewhere {
        field: "podSelector",
        why: "is a Kubernetes NetworkPolicy field; Cilium rules use `endpointSelector`",
    },
    Elsewhere {
        field: "policyTypes",
        why: "is a Kubernetes NetworkPolicy field; Cilium rules have no policy types",
    },
];

raw_struct! {
    /// A Cilium policy rule: one `spec`, or one item of `specs`.
    Rule("policy rule", Strict, elsewhere = NOT_IN_RULE) {
        /// Pods the rule applies to.
        endpoint_selector: "endpointSelector" => LabelSelector,
        /// Nodes the rule applies to (host policy; clusterwide only).
        node_selector: "nodeSelector" => LabelSelector,
        /// Ingress allow items.
        ingress: "ingress" => Vec<IngressRule>,
        /// Ingress deny items.
        ingress_deny: "ingressDeny" => Vec<IngressDenyRule>,
        /// Egress allow items.
        egress: "egress" => Vec<EgressRule>,
        /// Egress deny items.
        egress_deny: "egressDeny" => Vec<EgressDenyRule>,
        /// Per-direction default-deny switch.
        enable_default_deny: "enableDefaultDeny" => DefaultDeny,
        /// Rule labels (metadata).
        labels: "labels" => Vec<RuleLabel>,
        /// Free text.
        description: "description" => String,
        /// Hubble log tag (Cilium 1.19+).
        log: "log" => LogConfig,
    }
}

raw_struct! {
    /// `enableDefaultDeny`.
    DefaultDeny("enableDefaultDeny", Strict) {
        /// Ingress default-deny.
        ingress: "ingress" => bool,
        /// Egress default-deny.
        egress: "egress" => bool,
    }
}

raw_struct! {
    /// One rule label.
    RuleLabel("rule label", Strict) {
        /// The key.
        key: "key" => String,
        /// The value.
        value: "value" => String,
        /// The label source.
        source: "source" => String,
    }
}

raw_struct! {
    /// `log`.
    LogConfig("log", Strict) {
        /// The tag copied into Hubble flows.
        value: "value" => String,
    }
}

/// Which of the four sections an item is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Section {
    /// `ingress`.
    Ingress,
    /// `ingressDeny`.
    IngressDeny,
    /// `egress`.
    Egress,
    /// `egressDeny`.
    EgressDeny,
}

impl Section {
    /// The field name.
    pub fn name(self) -> &'static str {
        match self {
            Section::Ingress => "ingress",
            Section::IngressDeny => "ingressDeny",
            Section::Egress => "egress",
            Section::EgressDeny => "egressDeny",
        }
    }

    /// Whether the section is ingress or ingressDeny.
    pub fn is_ingress(self) -> bool {
        matches!(self, Section::Ingress | Section::IngressDeny)
    }

    /// Whether the section is a deny section.
    pub fn is_deny(self) -> bool {
        matches!(self, Section::IngressDeny | Section::EgressDeny)
    }
}

/// One item of `ingress` or `ingressDeny`; deny items are decoded with the deny schema (no
/// L7, TLS, listener or authentication).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngressRule {
    /// Where the item is.
    pub loc: Loc,
    /// The fields written, even those that could not be decoded or were misspelled.
    pub written: Vec<&'static str>,
    /// `fromEndpoints`.
    pub from_endpoints: Option<Spanned<Vec<LabelSelector>>>,
    /// `fromRequires` (removed in 1.19).
    pub from_requires: Option<Spanned<Vec<LabelSelector>>>,
    /// `fromCIDR`.
    pub from_cidr: Option<Spanned<Vec<Spanned<String>>>>,
    /// `fromCIDRSet`.
    pub from_cidr_set: Option<Spanned<Vec<CidrRule>>>,
    /// `fromEntities`.
    pub from_entities: Option<Spanned<Vec<Spanned<String>>>>,
    /// `fromGroups`.
    pub from_groups: Option<Spanned<Vec<Groups>>>,
    /// `fromNodes`.
    pub from_nodes: Option<Spanned<Vec<LabelSelector>>>,
    /// `toPorts`.
    pub to_ports: Option<Spanned<Vec<PortRule>>>,
    /// `icmps`.
    pub icmps: Option<Spanned<Vec<IcmpRule>>>,
    /// `authentication` (allow only).
    pub authentication: Option<Spanned<Authentication>>,
}

/// One item of `egress` or `egressDeny`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EgressRule {
    /// Where the item is.
    pub loc: Loc,
    /// The fields written, even those that could not be decoded or were misspelled.
    pub written: Vec<&'static str>,
    /// `toEndpoints`.
    pub to_endpoints: Option<Spanned<Vec<LabelSelector>>>,
    /// `toRequires` (removed in 1.19).
    pub to_requires: Option<Spanned<Vec<LabelSelector>>>,
    /// `toCIDR`.
    pub to_cidr: Option<Spanned<Vec<Spanned<String>>>>,
    /// `toCIDRSet`.
    pub to_cidr_set: Option<Spanned<Vec<CidrRule>>>,
    /// `toEntities`.
    pub to_entities: Option<Spanned<Vec<Spanned<String>>>>,
    /// `toServices`.
    pub to_services: Option<Spanned<Vec<Service>>>,
    /// `toFQDNs` (allow only).
    pub to_fqdns: Option<Spanned<Vec<FqdnSelector>>>,
    /// `toGroups`.
    pub to_groups: Option<Spanned<Vec<Groups>>>,
    /// `toNodes`.
    pub to_nodes: Option<Spanned<Vec<LabelSelector>>>,
    /// `toPorts`.
    pub to_ports: Option<Spanned<Vec<PortRule>>>,
    /// `icmps`.
    pub icmps: Option<Spanned<Vec<IcmpRule>>>,
    /// `authentication` (allow only).
    pub authentication: Option<Spanned<Authentication>>,
}

/// Decodes an ingress item; `deny` selects the deny schema.
fn decode_ingress(cx: &mut Cx<'_>, node: &Node, deny: bool) -> Option<IngressRule> {
    let mut out = IngressRule {
        loc: node.loc,
        ..Default::default()
    };
    let mut known = vec![
        "fromEndpoints",
        "fromRequires",
        "fromCIDR",
        "fromCIDRSet",
        "fromEntities",
        "fromGroups",
        "fromNodes",
        "toPorts",
        "icmps",
    ];
    let mut elsewhere = TO_IN_INGRESS.to_vec();
    elsewhere.extend_from_slice(RULE_FIELDS);
    elsewhere.extend_from_slice(PORT_FIELDS_IN_ITEM);
    if deny {
        elsewhere.push(NO_AUTH_IN_DENY);
    } else {
        known.push("authentication");
    }
    let what = if deny {
        "ingressDeny rule"
    } else {
        "ingress rule"
    };
    let misspelled = cx.fields(
        node,
        what,
        &known,
        Strictness::Strict,
        &elsewhere,
        |cx, key, e| match key {
            "fromEndpoints" => out.from_endpoints = cx.field(e),
            "fromRequires" => out.from_requires = cx.field(e),
            "fromCIDR" => out.from_cidr = cx.field(e),
            "fromCIDRSet" => out.from_cidr_set = cx.field(e),
            "fromEntities" => out.from_entities = cx.field(e),
            "fromGroups" => out.from_groups = cx.field(e),
            "fromNodes" => out.from_nodes = cx.field(e),
            "toPorts" => out.to_ports = to_ports(cx, e, deny),
            "icmps" => out.icmps = cx.field(e),
            "authentication" => out.authentication = cx.field(e),
            _ => {}
        },
    )?;
    out.written = super::decode::written_keys(node, &known, cx.case_insensitive);
    out.written.extend(misspelled);
    Some(out)
}

fn decode_egress(cx: &mut Cx<'_>, node: &Node, deny: bool) -> Option<EgressRule> {
    let mut out = EgressRule {
        loc: node.loc,
        ..Default::default()
    };
    let mut known = vec![
        "toEndpoints",
        "toRequires",
        "toCIDR",
        "toCIDRSet",
        "toEntities",
        "toServices",
        "toGroups",
        "toNodes",
        "toPorts",
        "icmps",
    ];
    let mut elsewhere = FROM_IN_EGRESS.to_vec();
    elsewhere.extend_from_slice(RULE_FIELDS);
    elsewhere.extend_from_slice(PORT_FIELDS_IN_ITEM);
    if deny {
        elsewhere.push(NO_AUTH_IN_DENY);
        elsewhere.push(Elsewhere {
            field: "toFQDNs",
            why: "does not exist in egressDeny: FQDN peers cannot be denied",
        });
    } else {
        known.push("toFQDNs");
        known.push("authentication");
    }
    let what = if deny {
        "egressDeny rule"
    } else {
        "egress rule"
    };
    let misspelled = cx.fields(
        node,
        what,
        &known,
        Strictness::Strict,
        &elsewhere,
        |cx, key, e| match key {
            "toEndpoints" => out.to_endpoints = cx.field(e),
            "toRequires" => out.to_requires = cx.field(e),
            "toCIDR" => out.to_cidr = cx.field(e),
            "toCIDRSet" => out.to_cidr_set = cx.field(e),
            "toEntities" => out.to_entities = cx.field(e),
            "toServices" => out.to_services = cx.field(e),
            "toFQDNs" => out.to_fqdns = cx.field(e),
            "toGroups" => out.to_groups = cx.field(e),
            "toNodes" => out.to_nodes = cx.field(e),
            "toPorts" => out.to_ports = to_ports(cx, e, deny),
            "icmps" => out.icmps = cx.field(e),
            "authentication" => out.authentication = cx.field(e),
            _ => {}
        },
    )?;
    out.written = super::decode::written_keys(node, &known, cx.case_insensitive);
    out.written.extend(misspelled);
    Some(out)
}

impl Decode for IngressRule {
    fn decode(cx: &mut Cx<'_>, node: &Node) -> Option<Self> {
        decode_ingress(cx, node, false)
    }
}

impl Decode for EgressRule {
    fn decode(cx: &mut Cx<'_>, node: &Node) -> Option<Self> {
        decode_egress(cx, node, false)
    }
}

/// An `ingressDeny` item (decoded with the deny schema).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngressDenyRule(pub IngressRule);

impl Decode for IngressDenyRule {
    fn decode(cx: &mut Cx<'_>, node: &Node) -> Option<Self> {
        decode_ingress(cx, node, true).map(IngressDenyRule)
    }
}

/// An `egressDeny` item (decoded with the deny schema).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EgressDenyRule(pub EgressRule);

impl Decode for EgressDenyRule {
    fn decode(cx: &mut Cx<'_>, node: &Node) -> Option<Self> {
        decode_egress(cx, node, true).map(EgressDenyRule)
    }
}

/// Decodes `toPorts`, with the deny schema (only `ports`) in deny sections.
fn to_ports(cx: &mut Cx<'_>, e: &Entry, deny: bool) -> Option<Spanned<Vec<PortRule>>> {
    if !deny {
        return cx.field(e);
    }
    cx.field::<Vec<PortDenyRule>>(e).map(|s| Spanned {
        value: s.value.into_iter().map(|p| p.0).collect(),
        loc: s.loc,
        key: s.key,
    })
}

/// A deny port rule: a [`PortRule`] that may only have `ports`.
struct PortDenyRule(PortRule);

impl Decode for PortDenyRule {
    fn decode(cx: &mut Cx<'_>, node: &Node) -> Option<Self> {
        let mut out = PortRule {
            loc: node.loc,
            ..Default::default()
        };
        const NOT_IN_DENY: &[Elsewhere] = &[
            Elsewhere {
                field: "rules",
                why: "does not exist in deny rules: deny has no L7",
            },
            Elsewhere {
                field: "serverNames",
                why: "does not exist in deny rules",
            },
            Elsewhere {
                field: "terminatingTLS",
                why: "does not exist in deny rules",
            },
            Elsewhere {
                field: "originatingTLS",
                why: "does not exist in deny rules",
            },
            Elsewhere {
                field: "listener",
                why: "does not exist in deny rules",
            },
        ];
        cx.fields(
            node,
            "deny port rule",
            &["ports"],
            Strictness::Strict,
            NOT_IN_DENY,
            |cx, key, e| {
                if key == "ports" {
                    out.ports = cx.field(e);
                }
            },
        )?;
        Some(PortDenyRule(out))
    }
}

raw_struct! {
    /// A `fromCIDRSet`/`toCIDRSet` entry.
    CidrRule("CIDR rule", Strict) {
        /// The prefix.
        cidr: "cidr" => String,
        /// A CiliumCIDRGroup by name.
        cidr_group_ref: "cidrGroupRef" => String,
        /// CiliumCIDRGroups by label.
        cidr_group_selector: "cidrGroupSelector" => LabelSelector,
        /// Prefixes to leave out.
        except: "except" => Vec<Spanned<String>>,
    }
}

raw_struct! {
    /// A `fromGroups`/`toGroups` entry.
    Groups("groups", Strict) {
        /// AWS security groups.
        aws: "aws" => AwsGroup,
    }
}

raw_struct! {
    /// AWS security group reference.
    AwsGroup("aws group", Strict) {
        /// Instance labels.
        labels: "labels" => Labels,
        /// Security group ids.
        security_groups_ids: "securityGroupsIds" => Vec<Spanned<String>>,
        /// Security group names.
        security_groups_names: "securityGroupsNames" => Vec<Spanned<String>>,
        /// Region.
        region: "region" => String,
    }
}

raw_struct! {
    /// A `toServices` entry.
    Service("service", Strict) {
        /// Service by name.
        k8s_service: "k8sService" => K8sServiceName,
        /// Services by label.
        k8s_service_selector: "k8sServiceSelector" => K8sServiceSelector,
    }
}

raw_struct! {
    /// `k8sService`.
    K8sServiceName("k8sService", Strict) {
        /// Service name.
        service_name: "serviceName" => String,
        /// Namespace (empty: every namespace).
        namespace: "namespace" => String,
    }
}

raw_struct! {
    /// `k8sServiceSelector`.
    K8sServiceSelector("k8sServiceSelector", Strict) {
        /// Selector over Service labels.
        selector: "selector" => LabelSelector,
        /// Namespace (empty: every namespace).
        namespace: "namespace" => String,
    }
}

raw_struct! {
    /// A `toFQDNs` entry, or a DNS L7 rule.
    FqdnSelector("FQDN selector", Strict) {
        /// An exact name.
        match_name: "matchName" => String,
        /// A wildcard pattern.
        match_pattern: "matchPattern" => String,
    }
}

const NOT_IN_PORT_RULE: &[Elsewhere] = &[
    el("port", "belongs inside `ports`; check the indentation"),
    el("protocol", "belongs inside `ports`; check the indentation"),
    el("endPort", "belongs inside `ports`; check the indentation"),
    el("http", "belongs inside `rules`; check the indentation"),
    el("dns", "belongs inside `rules`; check the indentation"),
    el("kafka", "belongs inside `rules`; check the indentation"),
    el("fromEndpoints", BESIDE_TO_PORTS),
    el("toEndpoints", BESIDE_TO_PORTS),
    el("fromEntities", BESIDE_TO_PORTS),
    el("toEntities", BESIDE_TO_PORTS),
    el("fromCIDR", BESIDE_TO_PORTS),
    el("toCIDR", BESIDE_TO_PORTS),
    el("fromCIDRSet", BESIDE_TO_PORTS),
    el("toCIDRSet", BESIDE_TO_PORTS),
    el("toFQDNs", BESIDE_TO_PORTS),
    el("toServices", BESIDE_TO_PORTS),
];

const NOT_IN_PORT: &[Elsewhere] = &[
    el(
        "rules",
        "belongs in the `toPorts` entry, beside `ports`; check the indentation",
    ),
    el(
        "serverNames",
        "belongs in the `toPorts` entry, beside `ports`; check the indentation",
    ),
    el(
        "listener",
        "belongs in the `toPorts` entry, beside `ports`; check the indentation",
    ),
];

const NOT_IN_L7_RULES: &[Elsewhere] = &[
    el(
        "method",
        "belongs inside an `http` entry; check the indentation",
    ),
    el(
        "path",
        "belongs inside an `http` entry; check the indentation",
    ),
    el(
        "host",
        "belongs inside an `http` entry; check the indentation",
    ),
    el(
        "headers",
        "belongs inside an `http` entry; check the indentation",
    ),
    el(
        "headerMatches",
        "belongs inside an `http` entry; check the indentation",
    ),
    el(
        "matchName",
        "belongs inside a `dns` entry; check the indentation",
    ),
    el(
        "matchPattern",
        "belongs inside a `dns` entry; check the indentation",
    ),
];

raw_struct! {
    /// A `toPorts` entry.
    PortRule("port rule", Strict, elsewhere = NOT_IN_PORT_RULE) {
        /// Ports and protocols.
        ports: "ports" => Vec<PortProtocol>,
        /// L7 rules.
        rules: "rules" => L7Rules,
        /// Allowed TLS SNIs.
        server_names: "serverNames" => Vec<Spanned<String>>,
        /// TLS the proxy terminates.
        terminating_tls: "terminatingTLS" => TlsContext,
        /// TLS the proxy originates.
        originating_tls: "originatingTLS" => TlsContext,
        /// Redirect to an Envoy listener.
        listener: "listener" => Listener,
    }
}

raw_struct! {
    /// One port/protocol.
    PortProtocol("port", Strict, elsewhere = NOT_IN_PORT) {
        /// Port number or name (a string).
        port: "port" => String,
        /// Inclusive range end.
        end_port: "endPort" => i64,
        /// Protocol.
        protocol: "protocol" => String,
    }
}

raw_struct! {
    /// L7 rules of a port rule.
    L7Rules("L7 rules", Strict, elsewhere = NOT_IN_L7_RULES) {
        /// HTTP rules.
        http: "http" => Vec<HttpRule>,
        /// Kafka rules (deprecated).
        kafka: "kafka" => Vec<KafkaRule>,
        /// DNS rules.
        dns: "dns" => Vec<FqdnSelector>,
        /// Generic L7 parser name.
        l7proto: "l7proto" => String,
        /// Generic L7 key/value rules.
        l7: "l7" => Vec<Spanned<Labels>>,
    }
}

raw_struct! {
    /// An HTTP rule.
    HttpRule("HTTP rule", Strict) {
        /// Method regex.
        method: "method" => String,
        /// Path regex.
        path: "path" => String,
        /// Host regex.
        host: "host" => String,
        /// Required headers.
        headers: "headers" => Vec<Spanned<String>>,
        /// Header matches.
        header_matches: "headerMatches" => Vec<HeaderMatch>,
    }
}

raw_struct! {
    /// An HTTP header match.
    HeaderMatch("header match", Strict) {
        /// Header name.
        name: "name" => String,
        /// Expected value.
        value: "value" => String,
        /// Secret holding the value.
        secret: "secret" => SecretRef,
        /// What to do on mismatch.
        mismatch: "mismatch" => String,
    }
}

raw_struct! {
    /// A reference to a Kubernetes Secret.
    SecretRef("secret", Strict) {
        /// Secret name.
        name: "name" => String,
        /// Secret namespace.
        namespace: "namespace" => String,
    }
}

raw_struct! {
    /// A Kafka rule.
    KafkaRule("Kafka rule", Strict) {
        /// `produce` or `consume`.
        role: "role" => String,
        /// API key name.
        api_key: "apiKey" => String,
        /// API version.
        api_version: "apiVersion" => String,
        /// Client id.
        client_id: "clientID" => String,
        /// Topic.
        topic: "topic" => String,
    }
}

raw_struct! {
    /// TLS context.
    TlsContext("TLS context", Strict) {
        /// Secret with the certificates.
        secret: "secret" => SecretRef,
        /// CA item name.
        trusted_ca: "trustedCA" => String,
        /// Certificate item name.
        certificate: "certificate" => String,
        /// Key item name.
        private_key: "privateKey" => String,
    }
}

raw_struct! {
    /// A listener redirect.
    Listener("listener", Strict) {
        /// The Envoy config.
        envoy_config: "envoyConfig" => EnvoyConfigRef,
        /// Listener name.
        name: "name" => String,
        /// Priority 1-100.
        priority: "priority" => i64,
    }
}

raw_struct! {
    /// A reference to a CiliumEnvoyConfig.
    EnvoyConfigRef("envoyConfig", Strict) {
        /// `CiliumEnvoyConfig` or `CiliumClusterwideEnvoyConfig`.
        kind: "kind" => String,
        /// Name.
        name: "name" => String,
    }
}

raw_struct! {
    /// An `icmps` entry.
    IcmpRule("ICMP rule", Strict) {
        /// Types.
        fields: "fields" => Vec<IcmpField>,
    }
}

raw_struct! {
    /// One ICMP type.
    IcmpField("ICMP field", Strict) {
        /// `IPv4` (default) or `IPv6`.
        family: "family" => String,
        /// Type number or name.
        icmp_type: "type" => IntOrString,
    }
}

raw_struct! {
    /// `authentication`.
    Authentication("authentication", Strict) {
        /// `disabled`, `required` or `test-always-fail`.
        mode: "mode" => String,
    }
}
