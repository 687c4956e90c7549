//! Raw types: the objects polc reads, mirroring the CRDs and Kubernetes schemas field for
//! field, each value with its location. Nothing here interprets a policy; `validate` checks
//! these types and `lower` (a later issue) turns them into the IR.

pub mod decode;
pub mod objects;
pub mod policy;

use crate::diag::{Code, Diagnostic};
use crate::source::Loc;
use crate::yaml::{Node, Value};
use decode::{Cx, Decode, Elsewhere, Ignored, Spanned, Strictness};
use objects::{
    CidrGroupSpec, InventoryMeta, NetworkPolicySpec, NodeSpec, NodeStatus, ObjectMeta, PodSpec,
    PodStatus, ServiceSpec,
};
use policy::Rule;

/// The kinds polc reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `cilium.io/v2` CiliumNetworkPolicy.
    CiliumNetworkPolicy,
    /// `cilium.io/v2` CiliumClusterwideNetworkPolicy.
    CiliumClusterwideNetworkPolicy,
    /// `cilium.io/v2alpha1` or `cilium.io/v2` CiliumCIDRGroup.
    CiliumCidrGroup,
    /// `networking.k8s.io/v1` NetworkPolicy.
    NetworkPolicy,
    /// `v1` Namespace.
    Namespace,
    /// `v1` Pod.
    Pod,
    /// `v1` Node.
    Node,
    /// `v1` Service.
    Service,
    /// A JSON/YAML list of bare rules, the agent's own format (`cilium-dbg policy import`,
    /// and the `.json` twins of Cilium's examples). Not a Kubernetes object: no metadata, no
    /// namespace, field names matched case-insensitively as Go's `encoding/json` does.
    RuleList,
}

impl Kind {
    /// The kind as written in YAML.
    pub fn name(self) -> &'static str {
        match self {
            Kind::CiliumNetworkPolicy => "CiliumNetworkPolicy",
            Kind::CiliumClusterwideNetworkPolicy => "CiliumClusterwideNetworkPolicy",
            Kind::CiliumCidrGroup => "CiliumCIDRGroup",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Node => "Node",
            Kind::Service => "Service",
            Kind::RuleList => "rule list",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        matches!(
            self,
            Kind::CiliumNetworkPolicy | Kind::NetworkPolicy | Kind::Pod | Kind::Service
        )
    }

    /// Whether this is one of the policy kinds (as opposed to inventory).
    pub fn is_policy(self) -> bool {
        matches!(
            self,
            Kind::CiliumNetworkPolicy
                | Kind::CiliumClusterwideNetworkPolicy
                | Kind::CiliumCidrGroup
                | Kind::NetworkPolicy
                | Kind::RuleList
        )
    }

    /// The API group the kind belongs to, and the versions the API server serves.
    fn served(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Kind::CiliumNetworkPolicy | Kind::CiliumClusterwideNetworkPolicy => {
                ("cilium.io", &["v2"])
            }
            // Served as v2alpha1 since 1.13 and as v2 in recent releases; both are accepted for
            // every target version because the schema is identical.
            Kind::CiliumCidrGroup => ("cilium.io", &["v2alpha1", "v2"]),
            Kind::NetworkPolicy => ("networking.k8s.io", &["v1"]),
            Kind::Namespace | Kind::Pod | Kind::Node | Kind::Service => ("", &["v1"]),
            Kind::RuleList => ("", &[]),
        }
    }

    fn from_name(kind: &str) -> Option<Kind> {
        Some(match kind {
            "CiliumNetworkPolicy" => Kind::CiliumNetworkPolicy,
            "CiliumClusterwideNetworkPolicy" => Kind::CiliumClusterwideNetworkPolicy,
            "CiliumCIDRGroup" => Kind::CiliumCidrGroup,
            "NetworkPolicy" => Kind::NetworkPolicy,
            "Namespace" => Kind::Namespace,
            "Pod" => Kind::Pod,
            "Node" => Kind::Node,
            "Service" => Kind::Service,
            _ => return None,
        })
    }
}

/// A CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CiliumPolicy {
    /// Whether `spec` or `specs` was written but could not be decoded (already reported).
    pub undecodable: bool,
    /// `spec`.
    pub spec: Option<Spanned<Rule>>,
    /// `specs`.
    pub specs: Option<Spanned<Vec<Rule>>>,
}

impl CiliumPolicy {
    /// All rules: `spec`, then every `specs` item, each with its path prefix.
    pub fn rules(&self) -> impl Iterator<Item = (String, &Rule)> {
        let spec = self.spec.iter().map(|s| ("spec".to_string(), &s.value));
        let specs = self.specs.iter().flat_map(|s| {
            s.iter()
                .enumerate()
                .map(|(i, r)| (format!("specs[{i}]"), r))
        });
        spec.chain(specs)
    }
}

/// The kind-specific part of an object.
// Objects are few (one per document) and never copied in bulk, so the size of the largest
// variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// A CNP or CCNP.
    CiliumPolicy(CiliumPolicy),
    /// A CiliumCIDRGroup.
    CidrGroup(Option<Spanned<CidrGroupSpec>>),
    /// A Kubernetes NetworkPolicy.
    NetworkPolicy(Option<Spanned<NetworkPolicySpec>>),
    /// A Namespace.
    Namespace,
    /// A Pod.
    Pod {
        /// `spec`.
        spec: Option<Spanned<PodSpec>>,
        /// `status`.
        status: Option<Spanned<PodStatus>>,
    },
    /// A Node.
    Node {
        /// `spec`.
        spec: Option<Spanned<NodeSpec>>,
        /// `status`.
        status: Option<Spanned<NodeStatus>>,
    },
    /// A Service.
    Service(Option<Spanned<ServiceSpec>>),
}

/// One Kubernetes object polc reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// The whole object.
    pub loc: Loc,
    /// The kind.
    pub kind: Kind,
    /// `kind` as written (for its location).
    pub kind_field: Spanned<String>,
    /// `apiVersion` as written, if present.
    pub api_version: Option<Spanned<String>>,
    /// `metadata`.
    pub meta: ObjectMeta,
    /// Where the `metadata` key is, if present.
    pub meta_loc: Option<Loc>,
    /// The kind-specific part.
    pub body: Body,
}

impl Object {
    /// `metadata.name`, or `""`.
    pub fn name(&self) -> &str {
        self.meta.name.as_ref().map_or("", |n| n.value.as_str())
    }

    /// `metadata.namespace`, or `"default"` for namespaced kinds without one (as kubectl
    /// applies it), or `""` for cluster-scoped kinds.
    pub fn namespace(&self) -> &str {
        match &self.meta.namespace {
            Some(ns) if self.kind.is_namespaced() => ns.value.as_str(),
            None if self.kind.is_namespaced() => "default",
            _ => "",
        }
    }

    /// A location to point at for the object as a whole: its name, else its kind.
    pub fn anchor(&self) -> Loc {
        self.meta
            .name
            .as_ref()
            .map_or(self.kind_field.loc, |n| n.loc)
    }
}

/// Reads the objects of one YAML document: the document itself, or the items of a list.
pub fn read_document(root: &Node, diags: &mut Vec<Diagnostic>) -> Vec<Object> {
    let mut out = Vec::new();
    let mut cx = Cx::new(diags);
    read_node(&mut cx, root, &mut out, 0);
    out
}

const SKIPPED_HELP: &str = "polc reads Cilium policies, CIDR groups, NetworkPolicies and the \
     Namespace, Pod, Node and Service inventory; other documents are ignored (`--quiet` hides \
     this note)";

/// Keys that only a policy rule has: a top-level list of mappings with one of these is the
/// agent's rule format.
const RULE_KEYS: &[&str] = &[
    "endpointselector",
    "nodeselector",
    "ingress",
    "egress",
    "ingressdeny",
    "egressdeny",
];

fn is_rule_list(node: &Node) -> bool {
    match &node.value {
        Value::Seq(items) => {
            !items.is_empty()
                && items.iter().all(|i| {
                    i.as_map().is_some_and(|m| {
                        m.iter()
                            .any(|e| RULE_KEYS.contains(&e.key.to_ascii_lowercase().as_str()))
                    })
                })
        }
        _ => false,
    }
}

fn read_node(cx: &mut Cx<'_>, node: &Node, out: &mut Vec<Object>, depth: usize) {
    if depth == 0 && is_rule_list(node) {
        cx.case_insensitive = true;
        let rules = Vec::<Rule>::decode(cx, node);
        cx.case_insensitive = false;
        out.push(Object {
            loc: node.loc,
            kind: Kind::RuleList,
            kind_field: Spanned::new(
                String::new(),
                Loc::new(
                    node.loc.file,
                    node.loc.start as usize,
                    node.loc.start as usize,
                ),
            ),
            api_version: None,
            meta: ObjectMeta::default(),
            meta_loc: None,
            body: Body::CiliumPolicy(CiliumPolicy {
                undecodable: rules.is_none(),
                spec: None,
                specs: rules.map(|r| Spanned::new(r, node.loc)),
            }),
        });
        return;
    }
    let Some(_) = node.as_map() else {
        if !node.is_null() {
            cx.report(
                Diagnostic::new(
                    Code::NotAnObject,
                    node.loc,
                    format!(
                        "{} is not a Kubernetes object",
                        if cx.path().is_empty() {
                            "the document".to_string()
                        } else {
                            format!("`{}`", cx.path())
                        }
                    ),
                )
                .label(format!("this is {}", decode::article(node.type_name())))
                .help("each document must be a mapping with `apiVersion`, `kind` and `metadata`"),
            );
        }
        return;
    };
    if let Some(e) = node.get("kind")
        && !matches!(&e.value.value, Value::Scalar(s) if matches!(s.resolve(), crate::yaml::Resolved::Str(_)))
    {
        cx.at_key("kind", |cx| cx.wrong_type(&e.value, "a string"));
        return;
    }
    let kind = node.get("kind").and_then(|e| match &e.value.value {
        Value::Scalar(s) => Some(Spanned {
            value: s.text.clone(),
            loc: e.value.loc,
            key: e.key_loc,
        }),
        _ => None,
    });
    let api_version = node.get("apiVersion").and_then(|e| match &e.value.value {
        Value::Scalar(s) => Some(Spanned {
            value: s.text.clone(),
            loc: e.value.loc,
            key: e.key_loc,
        }),
        _ => None,
    });
    let Some(kind) = kind else {
        if api_version.is_some() {
            report_missing_type_meta(cx, node, "kind");
        } else if node.get("flows").is_some() {
            // A policy flow test file (`polc explain --flows`), kept next to the policies.
        } else {
            // Neither `apiVersion` nor `kind`: some other YAML (a CI config, Helm values),
            // not a malformed object.
            cx.report(
                Diagnostic::new(
                    Code::SkippedKind,
                    first_key(node),
                    "skipping a document that is not a Kubernetes object (no `apiVersion` or `kind`)",
                )
                .label("skipped")
                .help(SKIPPED_HELP),
            );
        }
        return;
    };
    // `kind: List` and typed lists (`PodList`, `CiliumNetworkPolicyList`) hold items.
    if kind.value == "List" || (kind.value.ends_with("List") && node.get("items").is_some()) {
        if depth > 0 {
            cx.report(Diagnostic::new(
                Code::NotAnObject,
                kind.loc,
                "a list inside a list is not a Kubernetes object",
            ));
            return;
        }
        if let Some(items) = node.get("items") {
            match &items.value.value {
                Value::Seq(items) => cx.at_key("items", |cx| {
                    for (i, item) in items.iter().enumerate() {
                        cx.at_index(i, |cx| read_node(cx, item, out, depth + 1));
                    }
                }),
                _ if items.value.is_null() => {}
                _ => cx.at_key("items", |cx| cx.wrong_type(&items.value, "a list")),
            }
        }
        return;
    }
    let Some(k) = Kind::from_name(&kind.value) else {
        let policy_kinds = [
            Kind::CiliumNetworkPolicy,
            Kind::CiliumClusterwideNetworkPolicy,
            Kind::CiliumCidrGroup,
            Kind::NetworkPolicy,
        ];
        let names: Vec<&'static str> = policy_kinds.iter().map(|k| k.name()).collect();
        if let Some(near) = decode::near_miss(&kind.value, &names) {
            cx.report(
                Diagnostic::new(
                    Code::UnknownKind,
                    kind.loc,
                    format!("`{}` is not a kind, did you mean `{near}`?", kind.value),
                )
                .label("unknown kind")
                .help(format!(
                    "kinds are case-sensitive; the API server rejects `{}` (\"no matches for \
                     kind\")",
                    kind.value
                )),
            );
        } else {
            cx.report(
                Diagnostic::new(
                    Code::SkippedKind,
                    kind.loc,
                    format!("skipping `{}`, a kind polc does not read", kind.value),
                )
                .label("skipped")
                .help(SKIPPED_HELP),
            );
        }
        return;
    };
    let (group, versions) = k.served();
    match &api_version {
        None => {
            report_missing_type_meta(cx, node, "apiVersion");
        }
        Some(av) => {
            let (g, v) = av.value.rsplit_once('/').unwrap_or(("", av.value.as_str()));
            // Kinds with the same name in other API groups (Calico's NetworkPolicy, ...) are
            // not ours; Cilium's kind names are unique, and a NetworkPolicy under a Kubernetes
            // or Cilium group is a mix-up.
            let ours = g == group
                || k.name().starts_with("Cilium")
                || (k == Kind::NetworkPolicy
                    && (g == "extensions" || g.ends_with("k8s.io") || g == "cilium.io"))
                || (group.is_empty() && g.is_empty());
            if !ours {
                cx.report(
                    Diagnostic::new(
                        Code::SkippedKind,
                        av.loc,
                        format!(
                            "skipping `{}` of `{}`, an API group polc does not read",
                            kind.value, av.value
                        ),
                    )
                    .label("skipped")
                    .help(SKIPPED_HELP),
                );
                return;
            }
            if g != group || !versions.contains(&v) {
                let served = versions
                    .iter()
                    .map(|v| {
                        if group.is_empty() {
                            format!("`{v}`")
                        } else {
                            format!("`{group}/{v}`")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" or ");
                cx.report(
                    Diagnostic::new(
                        Code::UnservedApiVersion,
                        av.loc,
                        format!("`{}` is not served for kind `{}`", av.value, kind.value),
                    )
                    .label("not served")
                    .help(format!("use apiVersion {served}")),
                );
            }
        }
    }
    if let Some(obj) = read_object(cx, node, k, kind, api_version) {
        out.push(obj);
    }
}

/// Where an object starts: its first key (the mapping's own span may begin on a `- `).
fn first_key(node: &Node) -> Loc {
    node.as_map()
        .and_then(|m| m.first())
        .map_or(node.loc, |e| e.key_loc)
}

fn report_missing_type_meta(cx: &mut Cx<'_>, node: &Node, field: &str) {
    cx.report(
        Diagnostic::new(
            Code::MissingTypeMeta,
            first_key(node),
            format!("the object has no `{field}`"),
        )
        .label(format!("`{field}` missing in this object"))
        .help(
            "every Kubernetes object needs `apiVersion` and `kind` (keys are case-sensitive)"
                .to_string(),
        ),
    );
}

fn read_object(
    cx: &mut Cx<'_>,
    node: &Node,
    kind: Kind,
    kind_field: Spanned<String>,
    api_version: Option<Spanned<String>>,
) -> Option<Object> {
    let mut meta = ObjectMeta::default();
    let mut meta_loc = None;
    let mut cilium = CiliumPolicy::default();
    let mut cidr_group = None;
    let mut knp = None;
    let mut pod_spec = None;
    let mut pod_status = None;
    let mut node_spec = None;
    let mut node_status = None;
    let mut svc = None;
    let strict = if kind.is_policy() {
        Strictness::Strict
    } else {
        Strictness::Lenient
    };
    let known: &[&str] = match kind {
        Kind::CiliumNetworkPolicy | Kind::CiliumClusterwideNetworkPolicy => {
            &["apiVersion", "kind", "metadata", "spec", "specs", "status"]
        }
        _ => &["apiVersion", "kind", "metadata", "spec", "status"],
    };
    let what = kind.name();
    cx.fields(
        node,
        what,
        known,
        strict,
        &[] as &[Elsewhere],
        |cx, key, e| match key {
            "metadata" => {
                meta_loc = Some(e.key_loc);
                meta = if kind.is_policy() {
                    ObjectMeta::decode(cx, &e.value).unwrap_or_default()
                } else {
                    let m = InventoryMeta::decode(cx, &e.value).unwrap_or_default();
                    ObjectMeta {
                        loc: m.loc,
                        name: m.name,
                        namespace: m.namespace,
                        labels: m.labels,
                        annotations: m.annotations,
                        uid: m.uid,
                        ..Default::default()
                    }
                };
            }
            "spec" => match kind {
                Kind::CiliumNetworkPolicy | Kind::CiliumClusterwideNetworkPolicy => {
                    cilium.spec = cx.field(e);
                    cilium.undecodable |= cilium.spec.is_none();
                }
                Kind::CiliumCidrGroup => cidr_group = cx.field(e),
                Kind::NetworkPolicy => knp = cx.field(e),
                Kind::Pod => pod_spec = cx.field(e),
                Kind::Node => node_spec = cx.field(e),
                Kind::Service => svc = cx.field(e),
                Kind::Namespace | Kind::RuleList => {}
            },
            "specs" => {
                cilium.specs = cx.field(e);
                cilium.undecodable |= cilium.specs.is_none();
            }
            "status" => match kind {
                Kind::Pod => pod_status = cx.field(e),
                Kind::Node => node_status = cx.field(e),
                _ => {
                    let _ = cx.field::<Ignored>(e);
                }
            },
            _ => {}
        },
    )?;
    let body = match kind {
        Kind::CiliumNetworkPolicy | Kind::CiliumClusterwideNetworkPolicy | Kind::RuleList => {
            Body::CiliumPolicy(cilium)
        }
        Kind::CiliumCidrGroup => Body::CidrGroup(cidr_group),
        Kind::NetworkPolicy => Body::NetworkPolicy(knp),
        Kind::Namespace => Body::Namespace,
        Kind::Pod => Body::Pod {
            spec: pod_spec,
            status: pod_status,
        },
        Kind::Node => Body::Node {
            spec: node_spec,
            status: node_status,
        },
        Kind::Service => Body::Service(svc),
    };
    Some(Object {
        loc: node.loc,
        kind,
        kind_field,
        api_version,
        meta,
        meta_loc,
        body,
    })
}
