//! Lowering: raw policy objects to the IR, as the agent translates them
//! (`pkg/k8s/apis/cilium.io/utils`, `pkg/policy/k8s/network_policy.go`).
//!
//! Choices, where the spec leaves room:
//! - CNP subject selectors get `k8s:io.kubernetes.pod.namespace=<ns>` set (replacing a
//!   different value written there, as the agent does); CNP peer selectors get it added
//!   unless they constrain the namespace or namespace labels, or name a reserved label
//!   (`ParseToCiliumRule` / `getEndpointSelector` in `pkg/k8s/apis/cilium.io/utils`).
//! - CCNP peer selectors that do not constrain the namespace get
//!   `k8s:io.kubernetes.pod.namespace` *Exists*, so `fromEndpoints: [{}]` in a clusterwide
//!   policy means every pod, not every identity (the agent's `getEndpointSelector`).
//! - `except` applies to CIDR-group peers too (the CRD says the combination is "not supported
//!   yet"; polc applies what the author wrote and `lint` flags it).
//! - A `cidrGroupRef` naming no CiliumCIDRGroup, or a `cidrGroupSelector` matching none,
//!   selects nothing, as in the agent; the item still counts for default-deny (L0321).
//! - `toServices` stays symbolic here and is bound to the inventory's Services later
//!   ([`crate::inventory::Inventory::bind_services`]).
//! - Objects with errors are still lowered as far as they can be: `lint` reports the errors;
//!   commands that need a meaning refuse to run on error diagnostics.

use crate::diag::{Code, Diagnostic};
use crate::ir::{
    Auth, CidrGroup, CidrPeer, Direction, DnsRule, Entity, HttpRule, Item, KafkaRule, L7, Op,
    Origin, Peer, PeerKind, Peers, PerDir, PolicySet, PortRule, PortSpec, Ports, Proto, Redirect,
    Requirement, Rule, Selector, Subject,
};
use crate::labels::{Label, LabelSet, NAMESPACE_LABELS_PREFIX, POD_NAMESPACE, split_selector_key};
use crate::raw::decode::{IntOrString, Labels, Spanned};
use crate::raw::objects::{NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec};
use crate::raw::policy::Section;
use crate::raw::policy::{self as rp, CidrRule, FqdnSelector, IcmpRule, LabelSelector};
use crate::raw::{Body, Kind, Object};
use crate::source::Loc;
use crate::validate::rule::{Item as RawItem, items as raw_items};
use crate::validate::{syntax, tables};
use crate::version::CiliumVersion;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;

/// `k8s:io.kubernetes.pod.namespace`.
const NS_KEY: &str = "k8s:io.kubernetes.pod.namespace";

/// How selectors of the resource being lowered are scoped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope<'a> {
    /// A CiliumNetworkPolicy in this namespace.
    Namespaced(&'a str),
    /// A CiliumClusterwideNetworkPolicy; `init` when its subject selects initializing
    /// endpoints (`reserved:init`).
    Clusterwide {
        /// Whether the subject names `reserved:init`.
        init: bool,
    },
    /// A bare rule list (agent import): selectors as written.
    Verbatim,
}

struct Lower<'a> {
    groups: &'a [CidrGroup],
    version: CiliumVersion,
    diags: Vec<Diagnostic>,
}

/// Lowers every policy object to the IR. Inventory objects are ignored.
pub fn lower(objects: &[Object], version: CiliumVersion) -> (PolicySet, Vec<Diagnostic>) {
    lower_with_groups(objects, &[], version)
}

/// [`lower`] with more CIDR groups than those among the objects: `more` (those of a policy
/// set the objects join) resolve the references the objects' own groups do not. The set's
/// `cidr_groups` are the objects' own.
pub fn lower_with_groups(
    objects: &[Object],
    more: &[CidrGroup],
    version: CiliumVersion,
) -> (PolicySet, Vec<Diagnostic>) {
    let own = cidr_groups(objects);
    let all: Vec<CidrGroup>;
    let groups: &[CidrGroup] = if more.is_empty() {
        &own
    } else if own.is_empty() {
        more
    } else {
        all = own
            .iter()
            .chain(
                more.iter()
                    .filter(|g| !own.iter().any(|o| o.name == g.name)),
            )
            .cloned()
            .collect();
        &all
    };
    let mut cx = Lower {
        groups,
        version,
        diags: Vec::new(),
    };
    let mut rules = Vec::new();
    for obj in objects {
        match &obj.body {
            Body::CiliumPolicy(p) => {
                let ns = obj.namespace();
                let scope = match obj.kind {
                    Kind::CiliumNetworkPolicy => Scope::Namespaced(ns),
                    Kind::RuleList => Scope::Verbatim,
                    _ => Scope::Clusterwide { init: false },
                };
                for (path, rule) in p.rules() {
                    // `spec:` itself, or the `specs` item.
                    let loc = match &p.spec {
                        Some(spec) if path == "spec" => spec.key,
                        _ => rule.loc,
                    };
                    let origin = Origin {
                        kind: obj.kind,
                        namespace: ns.to_string(),
                        name: obj.name().to_string(),
                        path: path.clone(),
                        loc,
                    };
                    if let Some(r) = cx.rule(origin, rule, scope) {
                        rules.push(std::sync::Arc::new(r));
                    }
                }
            }
            Body::NetworkPolicy(Some(spec)) => {
                let origin = Origin {
                    kind: obj.kind,
                    namespace: obj.namespace().to_string(),
                    name: obj.name().to_string(),
                    path: "spec".into(),
                    loc: spec.key,
                };
                rules.push(std::sync::Arc::new(cx.network_policy(origin, spec)));
            }
            _ => {}
        }
    }
    let diags = cx.diags;
    (
        PolicySet {
            rules,
            cidr_groups: own,
        },
        diags,
    )
}

/// Whether the policy `obj` names one of `groups` in a `cidrGroupRef` or selects one with a
/// `cidrGroupSelector`: the policies a change of those groups changes.
pub fn uses_cidr_groups(obj: &Object, groups: &[&CidrGroup]) -> bool {
    any_cidr_rule(obj, |c| {
        if let Some(r) = &c.cidr_group_ref {
            return groups.iter().any(|g| g.name == r.value);
        }
        c.cidr_group_selector.as_ref().is_some_and(|sel| {
            let s = Selector::new(requirements(sel, "any", ""));
            groups.iter().any(|g| s.matches(&g.labels))
        })
    })
}

/// Whether a policy names or selects any CIDR group (a change to a group can touch only
/// such policies).
pub fn may_use_cidr_groups(obj: &Object) -> bool {
    any_cidr_rule(obj, |c| {
        c.cidr_group_ref.is_some() || c.cidr_group_selector.is_some()
    })
}

/// Whether one of a policy's `toCIDRSet`/`fromCIDRSet` entries satisfies `f`.
fn any_cidr_rule(obj: &Object, f: impl Fn(&CidrRule) -> bool) -> bool {
    let Body::CiliumPolicy(p) = &obj.body else {
        return false;
    };
    p.rules().any(|(_, rule)| {
        raw_items(rule)
            .iter()
            .any(|item| item.cidr_set.iter().flat_map(|s| s.iter()).any(&f))
    })
}

/// The CiliumCIDRGroups among `objects`.
pub fn cidr_groups(objects: &[Object]) -> Vec<CidrGroup> {
    let mut out = Vec::new();
    for obj in objects {
        if let Body::CidrGroup(spec) = &obj.body {
            let labels = obj
                .meta
                .labels
                .as_ref()
                .map(|l| k8s_labels(l))
                .unwrap_or_default();
            let cidrs = spec
                .iter()
                .flat_map(|s| s.external_cidrs.iter().flat_map(|c| c.iter()))
                .filter_map(|c| parse_net(&c.value))
                .collect();
            out.push(CidrGroup {
                name: obj.name().to_string(),
                labels,
                cidrs,
                loc: obj.anchor(),
            });
        }
    }
    out
}

/// Kubernetes labels as a `k8s:` label set.
pub fn k8s_labels(labels: &Labels) -> LabelSet {
    labels
        .0
        .iter()
        .map(|(k, v)| Label::k8s(&k.value, &v.value))
        .collect()
}

/// A prefix or a bare address (as `/32` or `/128`), masked.
fn parse_net(s: &str) -> Option<IpNet> {
    if let Ok(n) = IpNet::from_str(s) {
        return Some(n.trunc());
    }
    IpAddr::from_str(s).ok().map(IpNet::from)
}

/// A selector key in its canonical `source:key` form (`app` → `any:app`, `$host` →
/// `reserved:host`).
fn canonical_key(raw: &str, default_source: &str) -> String {
    let (source, key) = split_selector_key(raw);
    let source = if source == crate::labels::SOURCE_ANY && !raw.starts_with("any:") {
        default_source
    } else {
        source
    };
    format!("{source}:{key}")
}

/// A raw label selector as requirements; `default_source` is the source of keys written
/// without one (`any` for Cilium policies, `k8s` for NetworkPolicy), `key_prefix` is put in
/// front of every key (namespace labels of a NetworkPolicy `namespaceSelector`).
fn requirements(sel: &LabelSelector, default_source: &str, key_prefix: &str) -> Vec<Requirement> {
    let key = |k: &str| canonical_key(&format!("{key_prefix}{k}"), default_source);
    let mut out = Vec::new();
    if let Some(ml) = &sel.match_labels {
        for (k, v) in &ml.0 {
            out.push(Requirement::equals(key(&k.value), v.value.clone()));
        }
    }
    if let Some(me) = &sel.match_expressions {
        for r in me.iter() {
            let Some(k) = &r.key else { continue };
            let op = match r.operator.as_ref().map(|o| o.value.as_str()) {
                Some("In") => Op::In,
                Some("NotIn") => Op::NotIn,
                Some("Exists") => Op::Exists,
                Some("DoesNotExist") => Op::DoesNotExist,
                // Invalid operators are reported by `validate`; the agent rejects the rule.
                _ => continue,
            };
            let mut values: Vec<String> = r
                .values
                .iter()
                .flat_map(|v| v.iter().map(|s| s.value.clone()))
                .collect();
            values.sort();
            values.dedup();
            out.push(Requirement {
                key: key(&k.value),
                op,
                values,
            });
        }
    }
    out
}

/// A peer endpoint selector, scoped as the agent scopes it.
fn peer_selector(sel: &LabelSelector, scope: Scope<'_>) -> Selector {
    let mut s = Selector::new(requirements(sel, "any", ""));
    scope_peer(&mut s, scope);
    s
}

fn scope_peer(s: &mut Selector, scope: Scope<'_>) {
    // `getEndpointSelector`: reserved-label selectors and selectors that name the namespace
    // are kept as written; a CNP selector that names namespace labels keeps its namespace
    // scope open too; a CCNP selector is limited to pods (namespace Exists) unless the rule
    // applies to initializing endpoints.
    if s.has_reserved() || s.constrains(POD_NAMESPACE) {
        return;
    }
    let req = match scope {
        Scope::Namespaced(ns) => {
            let names_ns_labels = s.reqs.iter().any(|r| {
                r.bare_key().starts_with(NAMESPACE_LABELS_PREFIX)
                    && matches!(r.source(), "k8s" | "any")
            });
            if names_ns_labels {
                return;
            }
            Requirement::equals(NS_KEY, ns)
        }
        Scope::Clusterwide { init: true } | Scope::Verbatim => return,
        Scope::Clusterwide { init: false } => Requirement {
            key: NS_KEY.into(),
            op: Op::Exists,
            values: Vec::new(),
        },
    };
    let mut reqs = std::mem::take(&mut s.reqs);
    reqs.push(req);
    *s = Selector::new(reqs);
}

/// The rule subject of a CNP: the namespace is always the policy's own.
fn subject_selector(sel: &LabelSelector, scope: Scope<'_>) -> Selector {
    let mut reqs = requirements(sel, "any", "");
    if let Scope::Namespaced(ns) = scope {
        reqs.retain(|r| !(r.key == NS_KEY && r.op == Op::In));
        reqs.push(Requirement::equals(NS_KEY, ns));
    }
    Selector::new(reqs)
}

impl Lower<'_> {
    fn rule(&mut self, origin: Origin, rule: &rp::Rule, scope: Scope<'_>) -> Option<Rule> {
        let scope = match scope {
            Scope::Clusterwide { .. } => Scope::Clusterwide {
                init: rule.endpoint_selector.as_ref().is_some_and(|es| {
                    es.keys()
                        .any(|k| canonical_key(&k.value, "any") == "reserved:init")
                }),
            },
            other => other,
        };
        let subject_loc = rule
            .endpoint_selector
            .as_ref()
            .or(rule.node_selector.as_ref())
            .map_or(origin.loc, |s| s.loc);
        let subject = match (&rule.endpoint_selector, &rule.node_selector) {
            (Some(es), _) => Subject::Endpoints(subject_selector(es, scope)),
            (None, Some(ns)) => Subject::Nodes(Selector::new(requirements(ns, "any", ""))),
            // No subject: the agent rejects the rule (reported by `validate`).
            (None, None) => return None,
        };
        let mut items = Vec::new();
        let mut requires = PerDir::<Vec<Selector>>::default();
        let mut index: HashMap<Section, usize> = HashMap::new();
        for view in raw_items(rule) {
            let n = index.entry(view.section).or_default();
            let path = format!("{}.{}[{n}]", origin.path, view.section.name());
            *n += 1;
            let dir = if view.section.is_ingress() {
                Direction::Ingress
            } else {
                Direction::Egress
            };
            if let Some(req) = view.requires
                && self.version <= CiliumVersion::V1_18
            {
                requires
                    .get_mut(dir)
                    .extend(req.iter().map(|s| peer_selector(s, scope)));
            }
            items.push(self.item(&view, dir, view.section.is_deny(), path, scope));
        }
        let dd = rule.enable_default_deny.as_ref();
        Some(Rule {
            origin,
            subject,
            subject_loc,
            items,
            enable_default_deny: PerDir {
                ingress: dd.and_then(|d| d.ingress.as_ref().map(|b| b.value)),
                egress: dd.and_then(|d| d.egress.as_ref().map(|b| b.value)),
            },
            requires,
        })
    }

    fn item(
        &mut self,
        v: &RawItem<'_>,
        direction: Direction,
        deny: bool,
        path: String,
        scope: Scope<'_>,
    ) -> Item {
        let peers = if v.has_peer_field() {
            Peers::List(self.peers(v, scope))
        } else {
            Peers::Any
        };
        let ports = self.ports(v.to_ports, v.icmps, deny);
        let auth = match v
            .authentication
            .and_then(|a| a.mode.as_ref())
            .map(|m| m.value.as_str())
        {
            Some("required") => Some(Auth::Required),
            Some("test-always-fail") => Some(Auth::TestAlwaysFail),
            Some("disabled") => Some(Auth::Disabled),
            _ => None,
        };
        Item {
            direction,
            deny,
            peers,
            ports,
            auth: if deny { None } else { auth },
            path,
            loc: v.loc,
        }
    }

    fn peers(&mut self, v: &RawItem<'_>, scope: Scope<'_>) -> Vec<Peer> {
        let mut out = Vec::new();
        for s in v.endpoints.iter().flat_map(|s| s.iter()) {
            out.push(Peer {
                kind: PeerKind::Endpoints(peer_selector(s, scope)),
                loc: s.loc,
            });
        }
        for s in v.nodes.iter().flat_map(|s| s.iter()) {
            out.push(Peer {
                kind: PeerKind::Nodes(Selector::new(requirements(s, "any", ""))),
                loc: s.loc,
            });
        }
        for e in v.entities.iter().flat_map(|s| s.iter()) {
            if let Some(entity) = Entity::parse(&e.value) {
                out.push(Peer {
                    kind: PeerKind::Entity(entity),
                    loc: e.loc,
                });
            }
        }
        for c in v.cidr.iter().flat_map(|s| s.iter()) {
            if let Some(net) = parse_net(&c.value) {
                out.push(Peer {
                    kind: PeerKind::Cidr(CidrPeer {
                        net,
                        except: Vec::new(),
                    }),
                    loc: c.loc,
                });
            }
        }
        for c in v.cidr_set.iter().flat_map(|s| s.iter()) {
            self.cidr_rule(c, &mut out);
        }
        for g in v.groups.iter().flat_map(|s| s.iter()) {
            out.push(Peer {
                kind: PeerKind::Unresolved("AWS security groups (resolved by the operator)".into()),
                loc: g.loc,
            });
        }
        for s in v.services.iter().flat_map(|s| s.iter()) {
            out.push(service_peer(s));
        }
        for f in v.fqdns.iter().flat_map(|s| s.iter()) {
            let (text, loc) = match (&f.match_name, &f.match_pattern) {
                (Some(n), _) => (format!("matchName: {}", n.value), n.loc),
                (None, Some(p)) => (format!("matchPattern: {}", p.value), p.loc),
                (None, None) => continue,
            };
            out.push(Peer {
                kind: PeerKind::Fqdn(text),
                loc,
            });
        }
        out
    }

    fn cidr_rule(&mut self, c: &CidrRule, out: &mut Vec<Peer>) {
        let except: Vec<IpNet> = c
            .except
            .iter()
            .flat_map(|e| e.iter())
            .filter_map(|e| parse_net(&e.value))
            .collect();
        if let Some(cidr) = &c.cidr {
            if let Ok(net) = syntax::parse_prefix(&cidr.value) {
                let net = net.trunc();
                let except = except
                    .iter()
                    .filter(|e| net.contains(*e))
                    .copied()
                    .collect();
                out.push(Peer {
                    kind: PeerKind::Cidr(CidrPeer { net, except }),
                    loc: cidr.loc,
                });
            }
            return;
        }
        let (groups, loc, what): (Vec<&CidrGroup>, Loc, String) = if let Some(r) = &c.cidr_group_ref
        {
            (
                self.groups.iter().filter(|g| g.name == r.value).collect(),
                r.loc,
                format!("no CiliumCIDRGroup is named `{}`", r.value),
            )
        } else if let Some(sel) = &c.cidr_group_selector {
            let s = Selector::new(requirements(sel, "any", ""));
            (
                self.groups
                    .iter()
                    .filter(|g| s.matches(&g.labels))
                    .collect(),
                sel.loc,
                format!("no CiliumCIDRGroup matches `{s}`"),
            )
        } else {
            return;
        };
        if groups.is_empty() {
            self.diags.push(
                Diagnostic::new(Code::CidrGroupNotFound, loc, what.clone())
                    .label("selects no addresses")
                    .help(
                        "the agent resolves CIDR groups at run time: until a matching \
                         CiliumCIDRGroup exists this peer selects nothing, while the item still \
                         puts the endpoint into default-deny; give polc the group's file too",
                    ),
            );
            out.push(Peer {
                kind: PeerKind::Unresolved(what),
                loc,
            });
            return;
        }
        for g in groups {
            for net in &g.cidrs {
                let except = except
                    .iter()
                    .filter(|e| net.contains(*e))
                    .copied()
                    .collect();
                out.push(Peer {
                    kind: PeerKind::Cidr(CidrPeer { net: *net, except }),
                    loc,
                });
            }
        }
    }

    fn ports(
        &mut self,
        to_ports: Option<&Spanned<Vec<rp::PortRule>>>,
        icmps: Option<&Spanned<Vec<IcmpRule>>>,
        deny: bool,
    ) -> Ports {
        if to_ports.is_none() && icmps.is_none() {
            return Ports::Any;
        }
        let mut out = Vec::new();
        for pr in to_ports.iter().flat_map(|s| s.iter()) {
            let redirect = if deny { None } else { redirect(pr) };
            let ports: Vec<&rp::PortProtocol> = pr.ports.iter().flat_map(|p| p.iter()).collect();
            if ports.is_empty() {
                for proto in Proto::ANY {
                    out.push(PortRule {
                        proto,
                        port: PortSpec::ALL,
                        redirect: redirect.clone(),
                        loc: pr.loc,
                    });
                }
            }
            for p in ports {
                let spec = match p.port.as_ref().map(|s| syntax::parse_port(&s.value)) {
                    None => PortSpec::ALL,
                    Some(Ok(syntax::PortSpec::Name(n))) => PortSpec::Named(n),
                    Some(Ok(syntax::PortSpec::Number(n, _))) => {
                        let end = p
                            .end_port
                            .as_ref()
                            .map(|e| e.value)
                            .filter(|e| (1..=65535).contains(e))
                            .and_then(|e| u16::try_from(e).ok())
                            .unwrap_or(n);
                        if n == 0 {
                            PortSpec::ALL
                        } else {
                            PortSpec::Range(n, end.max(n))
                        }
                    }
                    Some(Err(_)) => continue,
                };
                let protos: Vec<Proto> =
                    match p.protocol.as_ref().map(|s| s.value.to_ascii_uppercase()) {
                        None => Proto::ANY.to_vec(),
                        Some(s) if s == "ANY" || s.is_empty() => Proto::ANY.to_vec(),
                        Some(s) => Proto::parse(&s).into_iter().collect(),
                    };
                for proto in protos {
                    out.push(PortRule {
                        proto,
                        port: spec.clone(),
                        redirect: redirect.clone(),
                        loc: p.loc,
                    });
                }
            }
        }
        for r in icmps.iter().flat_map(|s| s.iter()) {
            for f in r.fields.iter().flat_map(|s| s.iter()) {
                let v6 = f
                    .family
                    .as_ref()
                    .is_some_and(|fam| fam.value.eq_ignore_ascii_case("ipv6"));
                let ty = match f.icmp_type.as_ref().map(|t| &t.value) {
                    Some(IntOrString::Int(n)) => u8::try_from(*n).ok(),
                    Some(IntOrString::Str(s)) => {
                        s.parse::<u8>().ok().or_else(|| tables::icmp_type(v6, s))
                    }
                    None => None,
                };
                let Some(ty) = ty else { continue };
                out.push(PortRule {
                    proto: if v6 { Proto::Icmpv6 } else { Proto::Icmp },
                    port: PortSpec::Range(u16::from(ty), u16::from(ty)),
                    redirect: None,
                    loc: f.loc,
                });
            }
        }
        Ports::List(out)
    }

    fn network_policy(&mut self, origin: Origin, spec: &Spanned<NetworkPolicySpec>) -> Rule {
        let ns = origin.namespace.clone();
        let mut subject = spec
            .pod_selector
            .as_ref()
            .map(|s| requirements(s, "k8s", ""))
            .unwrap_or_default();
        subject.push(Requirement::equals(NS_KEY, ns.as_str()));
        let mut items = Vec::new();
        let types: Vec<&str> = spec
            .policy_types
            .iter()
            .flat_map(|t| t.iter().map(|s| s.value.as_str()))
            .collect();
        let ingress: Vec<_> = spec.ingress.iter().flat_map(|v| v.iter()).collect();
        let egress: Vec<_> = spec.egress.iter().flat_map(|v| v.iter()).collect();
        for (i, r) in ingress.iter().enumerate() {
            let path = format!("spec.ingress[{i}]");
            let peers = r.from.as_ref().map(|f| f.value.as_slice());
            items.extend(self.knp_items(
                Direction::Ingress,
                peers,
                r.ports.as_ref(),
                &ns,
                &path,
                r.loc,
            ));
        }
        for (i, r) in egress.iter().enumerate() {
            let path = format!("spec.egress[{i}]");
            let peers = r.to.as_ref().map(|f| f.value.as_slice());
            items.extend(self.knp_items(
                Direction::Egress,
                peers,
                r.ports.as_ref(),
                &ns,
                &path,
                r.loc,
            ));
        }
        let deny_all = |direction, path: &str| Item {
            direction,
            deny: false,
            peers: Peers::Any,
            ports: Ports::Any,
            auth: None,
            path: path.to_string(),
            loc: spec.loc,
        };
        if ingress.is_empty() && (types.contains(&"Ingress") || !types.contains(&"Egress")) {
            items.push(deny_all(Direction::Ingress, "spec.policyTypes"));
        }
        if egress.is_empty() && types.contains(&"Egress") {
            items.push(deny_all(Direction::Egress, "spec.policyTypes"));
        }
        Rule {
            origin,
            subject: Subject::Endpoints(Selector::new(subject)),
            subject_loc: spec.pod_selector.as_ref().map_or(spec.loc, |s| s.loc),
            items,
            enable_default_deny: PerDir::default(),
            requires: PerDir::default(),
        }
    }

    fn knp_items(
        &mut self,
        direction: Direction,
        peers: Option<&[NetworkPolicyPeer]>,
        ports: Option<&Spanned<Vec<NetworkPolicyPort>>>,
        ns: &str,
        path: &str,
        loc: Loc,
    ) -> Vec<Item> {
        let ports = match ports {
            Some(p) if !p.is_empty() => Ports::List(p.iter().flat_map(knp_port).collect()),
            _ => Ports::Any,
        };
        let item = |peer: Peer| Item {
            direction,
            deny: false,
            peers: Peers::List(vec![peer]),
            ports: ports.clone(),
            auth: None,
            path: path.to_string(),
            loc,
        };
        let peers = peers.unwrap_or_default();
        if peers.is_empty() {
            // No `from`/`to`: every identity, including world and host.
            return vec![item(Peer {
                kind: PeerKind::Endpoints(Selector::wildcard()),
                loc,
            })];
        }
        let mut out = Vec::new();
        for p in peers {
            if let Some(ip) = &p.ip_block {
                let Some(net) = ip.cidr.as_ref().and_then(|c| parse_net(&c.value)) else {
                    continue;
                };
                let except = ip
                    .except
                    .iter()
                    .flat_map(|e| e.iter())
                    .filter_map(|e| parse_net(&e.value))
                    .filter(|e| net.contains(e))
                    .collect();
                out.push(item(Peer {
                    kind: PeerKind::Cidr(CidrPeer { net, except }),
                    loc: p.loc,
                }));
                continue;
            }
            let mut reqs = p
                .pod_selector
                .as_ref()
                .map(|s| requirements(s, "k8s", ""))
                .unwrap_or_default();
            match &p.namespace_selector {
                Some(nsel) if nsel.is_empty() => reqs.push(Requirement {
                    key: NS_KEY.into(),
                    op: Op::Exists,
                    values: Vec::new(),
                }),
                Some(nsel) => reqs.extend(requirements(nsel, "k8s", NAMESPACE_LABELS_PREFIX)),
                None => reqs.push(Requirement::equals(NS_KEY, ns)),
            }
            out.push(item(Peer {
                kind: PeerKind::Endpoints(Selector::new(reqs)),
                loc: p.loc,
            }));
        }
        out
    }
}

fn knp_port(p: &NetworkPolicyPort) -> Vec<PortRule> {
    let proto = match p.protocol.as_ref().map(|s| s.value.as_str()) {
        None => Proto::Tcp,
        Some(s) => match Proto::parse(s) {
            Some(p) => p,
            None => return Vec::new(),
        },
    };
    let port = match p.port.as_ref().map(|s| &s.value) {
        None => PortSpec::ALL,
        Some(IntOrString::Int(n)) => match u16::try_from(*n) {
            Ok(0) => PortSpec::ALL,
            Ok(n) => {
                let end = p
                    .end_port
                    .as_ref()
                    .and_then(|e| u16::try_from(e.value).ok())
                    .unwrap_or(n);
                PortSpec::Range(n, end.max(n))
            }
            Err(_) => return Vec::new(),
        },
        Some(IntOrString::Str(s)) => match s.parse::<u16>() {
            Ok(n) => PortSpec::Range(n, n),
            Err(_) => PortSpec::Named(s.to_ascii_lowercase()),
        },
    };
    vec![PortRule {
        proto,
        port,
        redirect: None,
        loc: p.loc,
    }]
}

fn service_peer(s: &rp::Service) -> Peer {
    let (name, namespace, selector, loc) = if let Some(sel) = &s.k8s_service_selector {
        (
            None,
            sel.namespace.as_ref().map(|n| n.value.clone()),
            sel.selector
                .as_ref()
                .map(|x| Selector::new(requirements(x, "any", ""))),
            sel.loc,
        )
    } else if let Some(svc) = &s.k8s_service {
        (
            svc.service_name.as_ref().map(|n| n.value.clone()),
            svc.namespace.as_ref().map(|n| n.value.clone()),
            None,
            svc.loc,
        )
    } else {
        (None, None, None, s.loc)
    };
    Peer {
        kind: PeerKind::Service(crate::ir::ServiceRef {
            name,
            namespace: namespace.filter(|n| !n.is_empty()),
            selector,
        }),
        loc,
    }
}

fn redirect(pr: &rp::PortRule) -> Option<Redirect> {
    if let Some(rules) = &pr.rules {
        if let Some(http) = &rules.http {
            return Some(Redirect::L7(L7::Http(http.iter().map(http_rule).collect())));
        }
        if let Some(kafka) = &rules.kafka {
            return Some(Redirect::L7(L7::Kafka(
                kafka
                    .iter()
                    .map(|k| KafkaRule {
                        role: k.role.as_ref().map(|v| v.value.clone()),
                        api_key: k.api_key.as_ref().map(|v| v.value.clone()),
                        api_version: k.api_version.as_ref().map(|v| v.value.clone()),
                        client_id: k.client_id.as_ref().map(|v| v.value.clone()),
                        topic: k.topic.as_ref().map(|v| v.value.clone()),
                        loc: k.loc,
                    })
                    .collect(),
            )));
        }
        if let Some(dns) = &rules.dns {
            return Some(Redirect::L7(L7::Dns(
                dns.iter().filter_map(dns_rule).collect(),
            )));
        }
        if let Some(parser) = &rules.l7proto {
            let kv = rules
                .l7
                .iter()
                .flat_map(|l| l.iter())
                .map(|m| {
                    m.0.iter()
                        .map(|(k, v)| (k.value.clone(), v.value.clone()))
                        .collect()
                })
                .collect();
            return Some(Redirect::L7(L7::Generic(parser.value.clone(), kv)));
        }
    }
    if let Some(l) = &pr.listener {
        let cfg = l.envoy_config.as_ref();
        let name = format!(
            "{}/{}/{}",
            cfg.and_then(|c| c.kind.as_ref())
                .map_or("", |k| k.value.as_str()),
            cfg.and_then(|c| c.name.as_ref())
                .map_or("", |k| k.value.as_str()),
            l.name.as_ref().map_or("", |k| k.value.as_str())
        );
        let priority = l
            .priority
            .as_ref()
            .and_then(|p| u8::try_from(p.value).ok())
            .unwrap_or(0);
        return Some(Redirect::Listener { name, priority });
    }
    if pr.terminating_tls.is_some() || pr.originating_tls.is_some() || pr.server_names.is_some() {
        return Some(Redirect::Tls);
    }
    None
}

fn http_rule(h: &rp::HttpRule) -> HttpRule {
    let mut headers: Vec<(String, Option<String>)> = Vec::new();
    for s in h.headers.iter().flat_map(|v| v.iter()) {
        // As the agent reads it (`getHTTPRule`): split at the first space; then the name
        // (a trailing `:` dropped) must carry exactly the rest. Without a space the whole
        // entry names a header that must be present (`X-Token:abc` is such a name).
        match s.value.split_once(' ') {
            Some((k, v)) => {
                headers.push((k.trim_end_matches(':').to_string(), Some(v.to_string())))
            }
            None => headers.push((s.value.clone(), None)),
        }
    }
    for m in h.header_matches.iter().flat_map(|v| v.iter()) {
        let Some(name) = &m.name else { continue };
        // Only mismatch action FAIL (the default) rejects a request; LOG, ADD, DELETE and
        // REPLACE rewrite or log and let it through.
        let fails = m
            .mismatch
            .as_ref()
            .is_none_or(|a| a.value.is_empty() || a.value == "FAIL");
        if fails {
            headers.push((
                name.value.clone(),
                m.value.as_ref().map(|v| v.value.clone()),
            ));
        }
    }
    HttpRule {
        method: h.method.as_ref().map(|v| v.value.clone()),
        path: h.path.as_ref().map(|v| v.value.clone()),
        host: h.host.as_ref().map(|v| v.value.clone()),
        headers,
        loc: h.loc,
    }
}

fn dns_rule(f: &FqdnSelector) -> Option<DnsRule> {
    let fq = |s: &str| {
        let s = s.to_ascii_lowercase();
        if s.ends_with('.') { s } else { format!("{s}.") }
    };
    match (&f.match_name, &f.match_pattern) {
        (Some(n), _) => Some(DnsRule::Name(fq(&n.value), n.loc)),
        (None, Some(p)) => Some(DnsRule::Pattern(fq(&p.value), p.loc)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{SourceFile, SourceMap};

    fn objects(yaml: &str) -> Vec<Object> {
        let mut sources = SourceMap::new();
        sources.add(SourceFile::new("p.yaml", yaml.to_string()));
        crate::lint(&sources, &crate::Options::default()).0
    }

    #[test]
    fn a_policy_uses_the_groups_it_names_or_selects() {
        let objs = objects(
            "apiVersion: cilium.io/v2alpha1\nkind: CiliumCIDRGroup\nmetadata: {name: office, labels: {site: hq}}\nspec: {externalCIDRs: [192.0.2.0/24]}\n---\napiVersion: cilium.io/v2alpha1\nkind: CiliumCIDRGroup\nmetadata: {name: lab, labels: {site: lab}}\nspec: {externalCIDRs: [198.51.100.0/24]}\n---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: by-name, namespace: shop}\nspec:\n  endpointSelector: {}\n  ingress:\n  - fromCIDRSet: [{cidrGroupRef: office}]\n---\napiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: by-label}\nspec:\n  endpointSelector: {}\n  egressDeny:\n  - toCIDRSet: [{cidrGroupSelector: {matchLabels: {site: lab}}}]\n---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: plain, namespace: shop}\nspec:\n  endpointSelector: {}\n  ingress:\n  - fromCIDR: [192.0.2.0/24]\n",
        );
        let groups = cidr_groups(&objs);
        let (office, lab) = (&groups[0], &groups[1]);
        let users = |g: &CidrGroup| -> Vec<&str> {
            objs.iter()
                .filter(|o| uses_cidr_groups(o, &[g]))
                .map(Object::name)
                .collect()
        };
        assert_eq!(users(office), ["by-name"]);
        assert_eq!(users(lab), ["by-label"]);
    }
}
