//! The verifier's symbolic answers against the reference evaluator (`eval`), on random small
//! clusters and policy sets:
//!
//! - the z3 encoding of a flow's verdict (`decision::Encoder::allowed`), with every variable
//!   pinned to a concrete inventory flow, is true exactly when `eval` allows the flow (when
//!   the encoding leaves something free, `eval`'s verdict is at least one it can take);
//! - a symbolic expectation (`expect::check`) that holds is met by every inventory flow it
//!   describes, and a counterexample is a flow it describes with the other verdict;
//! - the symbolic diff (`diff::diff`) finds a class of the right direction for every inventory
//!   flow whose verdict a change flips, and each class's example really flips.

use polc_compiler::eval::{self, Flow, Outcome, Peer, Request, Verdict};
use polc_compiler::ir::{Op, PolicySet, Proto, Requirement};
use polc_compiler::labels::LabelSet;
use polc_compiler::model::{Config, Model};
use polc_compiler::raw::Object;
use polc_compiler::source::{SourceFile, SourceMap};
use polc_compiler::{CiliumVersion, Options};
use polc_verifier::decision::{Encoder, HttpVars, Req, Shape};
use polc_verifier::expect::{self, End, Expectation, Refusal};
use polc_verifier::flow::{FlowVars, KIND_HOST, KIND_POD, KIND_REMOTE_NODE, KIND_WORLD, Labels};
use polc_verifier::{Answer, Limits};
use proptest::prelude::*;
use std::collections::HashMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use z3::SatResult;
use z3::ast::{Ast, BV, Bool, String as Str};

const VERSION: CiliumVersion = CiliumVersion::V1_19;
const APPS: &[&str] = &["web", "api", "db"];
const TIERS: &[&str] = &["front", "back"];
const SERVICE_ACCOUNTS: &[&str] = &["default", "robot"];
const SA_KEY: &str = "io.cilium.k8s.policy.serviceaccount";
const NAMESPACES: &[&str] = &["a", "b"];
const NODES: &[&str] = &["n1", "n2"];
const TCP_PORTS: &[u16] = &[53, 80, 443, 8050, 8080, 9999];
const UDP_PORTS: &[u16] = &[53, 8080];
const EXTERNAL: &[&str] = &["203.0.113.7", "198.51.100.20", "198.51.100.17", "10.99.1.2"];

// ---------------------------------------------------------------------------------------------
// Generators: a cluster and CNP/CCNP/KNP policies as YAML.

/// A pod: namespace, app label (if any), tier, node, whether it runs as the `robot` service
/// account.
#[derive(Clone, Debug)]
struct PodGen {
    ns: usize,
    app: Option<usize>,
    tier: usize,
    node: usize,
    robot: bool,
}

fn inventory_yaml(pods: &[PodGen]) -> String {
    let mut s = String::new();
    for ns in NAMESPACES {
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    \
             kubernetes.io/metadata.name: {ns}\n    team: t{ns}\n"
        );
    }
    for (i, n) in NODES.iter().enumerate() {
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {n}\n  labels:\n    \
             kubernetes.io/hostname: {n}\nstatus:\n  addresses:\n  - type: InternalIP\n    \
             address: 172.16.0.{}\n",
            i + 1
        );
    }
    for (i, p) in pods.iter().enumerate() {
        let app = p
            .app
            .map_or(String::new(), |a| format!("    app: {}\n", APPS[a]));
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\n  namespace: {}\n  \
             labels:\n{app}    tier: {}\nspec:\n  nodeName: {}\n  serviceAccountName: {}\n  \
             containers:\n  - name: c\n    ports:\n    - name: http\n      containerPort: {}\n\
             status:\n  podIP: 10.0.{}.{}\n",
            NAMESPACES[p.ns],
            TIERS[p.tier],
            NODES[p.node],
            SERVICE_ACCOUNTS[usize::from(p.robot)],
            if i % 2 == 0 { 8080 } else { 80 },
            p.node,
            i + 10
        );
    }
    s
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PolicyKind {
    Cnp,
    Ccnp,
    Knp,
}

/// Label requirements on a pod: an `app` match label and one match expression.
#[derive(Clone, Debug)]
struct SelGen {
    app: Option<usize>,
    expr: Option<(&'static str, &'static str, Vec<usize>)>,
}

/// The namespace part of a peer selector.
#[derive(Clone, Debug)]
enum NsGen {
    /// The policy's own namespace (CNP, KNP); every namespace (CCNP).
    Own,
    /// `k8s:io.kubernetes.pod.namespace` (CNP), `kubernetes.io/metadata.name` (KNP).
    Pinned(usize),
    /// The namespace label `team`.
    Team(usize),
    /// Every namespace.
    Any,
}

#[derive(Clone, Debug)]
enum PeerGen {
    Endpoints(SelGen, NsGen),
    Entity(&'static str),
    Cidr(&'static str, Option<&'static str>),
}

#[derive(Clone, Debug)]
enum PortGen {
    Num(u16, &'static str),
    Range(u16, u16),
    Zero(&'static str),
    Named,
}

/// HTTP rule lists (flow style), chosen by index.
const HTTP_RULES: &[&str] = &[
    "[{method: \"GET\"}]",
    "[{path: \"/api/.*\"}]",
    "[{method: \"GET|HEAD\", path: \"/x\"}, {method: \"POST\"}]",
    "[{}]",
    "[{path: \"/api/v[0-9]+/[a-z]*\", host: \"(www\\\\.)?example\\\\.com\"}]",
    "[{method: \"(?i)post\", headers: [\"X-Token: abc\"]}]",
    "[{path: \"/x/?\", headers: [\"X-Debug\"]}, {method: \"[^P].*\", path: \"/a.c\"}]",
];

#[derive(Clone, Debug)]
struct ItemGen {
    deny: bool,
    peers: Option<Vec<PeerGen>>,
    ports: Option<Vec<PortGen>>,
    http: Option<usize>,
    icmp: bool,
}

#[derive(Clone, Debug)]
struct PolicyGen {
    kind: PolicyKind,
    ns: usize,
    subject: SelGen,
    subject_ns: NsGen,
    ingress: Vec<ItemGen>,
    egress: Vec<ItemGen>,
    default_deny: Option<(bool, bool)>,
}

fn q(s: &str) -> String {
    format!("\"{s}\"")
}

fn value_of(key: &str, i: usize) -> &'static str {
    match key {
        "app" => APPS[i % APPS.len()],
        SA_KEY => SERVICE_ACCOUNTS[i % SERVICE_ACCOUNTS.len()],
        _ => TIERS[i % TIERS.len()],
    }
}

/// A label selector in flow style, with extra match labels and expressions.
fn selector(sel: &SelGen, labels: &[(String, String)], exprs: &[String]) -> String {
    let mut ml: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}: {}", q(k), q(v)))
        .collect();
    if let Some(a) = sel.app {
        ml.push(format!("\"app\": {}", q(APPS[a])));
    }
    let mut me: Vec<String> = exprs.to_vec();
    if let Some((key, op, values)) = &sel.expr {
        let vals = if matches!(*op, "In" | "NotIn") {
            let v: Vec<String> = values.iter().map(|i| q(value_of(key, *i))).collect();
            format!(", values: [{}]", v.join(", "))
        } else {
            String::new()
        };
        me.push(format!("{{key: {}, operator: {op}{vals}}}", q(key)));
    }
    let mut parts = Vec::new();
    if !ml.is_empty() {
        parts.push(format!("matchLabels: {{{}}}", ml.join(", ")));
    }
    if !me.is_empty() {
        parts.push(format!("matchExpressions: [{}]", me.join(", ")));
    }
    format!("{{{}}}", parts.join(", "))
}

/// A CNP/CCNP endpoint selector with its namespace part.
fn cilium_selector(sel: &SelGen, ns: &NsGen) -> String {
    match ns {
        NsGen::Own => selector(sel, &[], &[]),
        NsGen::Pinned(n) => selector(
            sel,
            &[(
                "k8s:io.kubernetes.pod.namespace".into(),
                NAMESPACES[*n].into(),
            )],
            &[],
        ),
        NsGen::Team(n) => selector(
            sel,
            &[(
                "k8s:io.cilium.k8s.namespace.labels.team".into(),
                format!("t{}", NAMESPACES[*n]),
            )],
            &[],
        ),
        NsGen::Any => selector(
            sel,
            &[],
            &["{key: \"k8s:io.kubernetes.pod.namespace\", operator: Exists}".into()],
        ),
    }
}

fn cidr_yaml(c: &str, ex: Option<&str>) -> String {
    match ex {
        Some(e) => format!("{{cidr: {c}, except: [{e}]}}"),
        None => format!("{{cidr: {c}}}"),
    }
}

/// An item of a CNP/CCNP; `l7` allows its HTTP rules.
fn cilium_item(item: &ItemGen, ingress: bool, l7: bool) -> String {
    let dir = if ingress { "from" } else { "to" };
    let mut fields: Vec<String> = Vec::new();
    if let Some(peers) = &item.peers {
        let field = |p: &PeerGen| match p {
            PeerGen::Endpoints(..) => format!("{dir}Endpoints"),
            PeerGen::Entity(_) => format!("{dir}Entities"),
            PeerGen::Cidr(..) => format!("{dir}CIDRSet"),
        };
        // One kind of peer per item: the first one's.
        match peers.first() {
            None => fields.push(format!("{dir}Endpoints: []\n")),
            Some(first) => {
                let name = field(first);
                let mut body = format!("{name}:\n");
                for p in peers.iter().filter(|p| field(p) == name) {
                    let text = match p {
                        PeerGen::Endpoints(sel, ns) => cilium_selector(sel, ns),
                        PeerGen::Entity(e) => (*e).to_string(),
                        PeerGen::Cidr(c, ex) => cidr_yaml(c, *ex),
                    };
                    let _ = writeln!(body, "    - {text}");
                }
                fields.push(body);
            }
        }
    }
    if let Some(ports) = &item.ports {
        let mut body = String::from("toPorts:\n    - ports:\n");
        let mut plain_tcp = !ports.is_empty();
        for p in ports {
            match p {
                PortGen::Num(n, proto) => {
                    plain_tcp &= *proto == "TCP";
                    let _ = write!(body, "      - port: \"{n}\"\n        protocol: {proto}\n");
                }
                PortGen::Range(a, b) => {
                    let _ = write!(
                        body,
                        "      - port: \"{a}\"\n        endPort: {b}\n        protocol: TCP\n"
                    );
                }
                PortGen::Zero(proto) => {
                    plain_tcp = false;
                    let _ = write!(body, "      - port: \"0\"\n        protocol: {proto}\n");
                }
                PortGen::Named => {
                    let _ = write!(body, "      - port: http\n        protocol: TCP\n");
                }
            }
        }
        if let (Some(h), false, true, true) = (item.http, item.deny, plain_tcp, l7) {
            let _ = writeln!(body, "      rules:\n        http: {}", HTTP_RULES[h]);
        }
        fields.push(body);
    }
    if item.icmp && item.ports.is_none() {
        fields.push("icmps: [{fields: [{type: 8, family: IPv4}]}]\n".into());
    }
    if fields.is_empty() {
        return "  - {}\n".into();
    }
    let mut s = String::new();
    for (i, f) in fields.iter().enumerate() {
        s.push_str(if i == 0 { "  - " } else { "    " });
        s.push_str(f);
    }
    s
}

fn knp_item(item: &ItemGen, ingress: bool) -> String {
    let dir = if ingress { "from" } else { "to" };
    let mut fields: Vec<String> = Vec::new();
    if let Some(peers) = &item.peers {
        let mut body = format!("{dir}:\n");
        let mut any = false;
        for p in peers {
            let text = match p {
                PeerGen::Endpoints(sel, ns) => {
                    let nsel = match ns {
                        NsGen::Own => None,
                        NsGen::Pinned(n) => Some(format!(
                            "{{matchLabels: {{\"kubernetes.io/metadata.name\": {}}}}}",
                            q(NAMESPACES[*n])
                        )),
                        NsGen::Team(n) => Some(format!(
                            "{{matchLabels: {{team: {}}}}}",
                            q(&format!("t{}", NAMESPACES[*n]))
                        )),
                        NsGen::Any => Some("{}".into()),
                    };
                    let mut t = format!("podSelector: {}", selector(sel, &[], &[]));
                    if let Some(n) = nsel {
                        let _ = write!(t, "\n      namespaceSelector: {n}");
                    }
                    t
                }
                PeerGen::Cidr(c, ex) => format!("ipBlock: {}", cidr_yaml(c, *ex)),
                PeerGen::Entity(_) => continue,
            };
            any = true;
            let _ = writeln!(body, "    - {text}");
        }
        if any {
            fields.push(body);
        }
    }
    if let Some(ports) = &item.ports {
        let mut body = String::from("ports:\n");
        for p in ports {
            let _ = match p {
                PortGen::Num(n, proto) => {
                    let proto = if *proto == "ANY" { "TCP" } else { proto };
                    writeln!(body, "    - {{port: {n}, protocol: {proto}}}")
                }
                PortGen::Range(a, b) => {
                    writeln!(body, "    - {{port: {a}, endPort: {b}, protocol: TCP}}")
                }
                PortGen::Zero(proto) => writeln!(body, "    - {{protocol: {proto}}}"),
                PortGen::Named => writeln!(body, "    - {{port: http, protocol: TCP}}"),
            };
        }
        fields.push(body);
    }
    if fields.is_empty() {
        return "  - {}\n".into();
    }
    let mut s = String::new();
    for (i, f) in fields.iter().enumerate() {
        s.push_str(if i == 0 { "  - " } else { "    " });
        s.push_str(f);
    }
    s
}

fn policy_name(i: usize, p: &PolicyGen) -> String {
    match p.kind {
        PolicyKind::Cnp => format!("p{i}"),
        PolicyKind::Ccnp => format!("c{i}"),
        PolicyKind::Knp => format!("k{i}"),
    }
}

fn policy_yaml(i: usize, p: &PolicyGen) -> String {
    let name = policy_name(i, p);
    let ns = NAMESPACES[p.ns];
    if p.kind == PolicyKind::Knp {
        let mut s = format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: \
             {name}\n  namespace: {ns}\nspec:\n  podSelector: {}\n",
            selector(&p.subject, &[], &[])
        );
        if p.default_deny.is_some() {
            s.push_str("  policyTypes: [Ingress, Egress]\n");
        }
        for (section, items, ingress) in
            [("ingress", &p.ingress, true), ("egress", &p.egress, false)]
        {
            let allow: Vec<&ItemGen> = items.iter().filter(|i| !i.deny).collect();
            if allow.is_empty() {
                continue;
            }
            let _ = writeln!(s, "  {section}:");
            for it in allow {
                s.push_str(&knp_item(it, ingress));
            }
        }
        return s;
    }
    let mut s = if p.kind == PolicyKind::Ccnp {
        format!(
            "---\napiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  \
             name: {name}\nspec:\n  endpointSelector: {}\n",
            cilium_selector(&p.subject, &p.subject_ns)
        )
    } else {
        format!(
            "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: \
             {name}\n  namespace: {ns}\nspec:\n  endpointSelector: {}\n",
            selector(&p.subject, &[], &[])
        )
    };
    for (name, items, ingress) in [("ingress", &p.ingress, true), ("egress", &p.egress, false)] {
        let (allow, deny): (Vec<&ItemGen>, Vec<&ItemGen>) = items.iter().partition(|i| !i.deny);
        for (section, list) in [(name.to_string(), allow), (format!("{name}Deny"), deny)] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(s, "  {section}:");
            for it in list {
                s.push_str(&cilium_item(it, ingress, true));
            }
        }
    }
    if let Some((i, e)) = p.default_deny {
        let _ = write!(
            s,
            "  enableDefaultDeny:\n    ingress: {i}\n    egress: {e}\n"
        );
    }
    s
}

fn sel_strategy() -> impl Strategy<Value = SelGen> {
    let expr = (
        prop::sample::select(vec!["app", "tier", "k8s:tier", SA_KEY]),
        prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist"]),
        prop::collection::vec(0..3usize, 1..3),
    );
    (
        proptest::option::weighted(0.6, 0..APPS.len()),
        proptest::option::weighted(0.3, expr),
    )
        .prop_map(|(app, expr)| SelGen { app, expr })
}

fn ns_strategy() -> impl Strategy<Value = NsGen> {
    prop_oneof![
        3 => Just(NsGen::Own),
        2 => (0..NAMESPACES.len()).prop_map(NsGen::Pinned),
        1 => (0..NAMESPACES.len()).prop_map(NsGen::Team),
        1 => Just(NsGen::Any),
    ]
}

fn peer_strategy() -> impl Strategy<Value = PeerGen> {
    prop_oneof![
        4 => (sel_strategy(), ns_strategy()).prop_map(|(s, n)| PeerGen::Endpoints(s, n)),
        2 => prop::sample::select(vec!["world", "cluster", "host", "remote-node", "all"])
            .prop_map(PeerGen::Entity),
        2 => prop::sample::select(vec![
            ("203.0.113.0/24", None),
            ("0.0.0.0/0", Some("10.0.0.0/8")),
            ("10.0.0.0/8", None),
            ("198.51.100.0/24", Some("198.51.100.16/28")),
        ])
        .prop_map(|(c, e)| PeerGen::Cidr(c, e)),
    ]
}

fn port_strategy(named: bool) -> impl Strategy<Value = PortGen> {
    prop_oneof![
        5 => (
            prop::sample::select(vec![53u16, 80, 443, 8080, 9999]),
            prop::sample::select(vec!["TCP", "TCP", "UDP", "ANY"]),
        )
            .prop_map(|(p, pr)| PortGen::Num(p, pr)),
        1 => Just(PortGen::Range(8000, 8100)),
        1 => Just(PortGen::Range(1, 1023)),
        1 => prop::sample::select(vec!["TCP", "UDP"]).prop_map(PortGen::Zero),
        if named { 1 } else { 0 } => Just(PortGen::Named),
    ]
}

fn item_strategy(named: bool) -> impl Strategy<Value = ItemGen> {
    (
        prop::bool::weighted(0.25),
        proptest::option::weighted(0.8, prop::collection::vec(peer_strategy(), 0..3)),
        proptest::option::weighted(0.6, prop::collection::vec(port_strategy(named), 1..3)),
        proptest::option::weighted(0.4, 0..HTTP_RULES.len()),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(deny, peers, ports, http, icmp)| ItemGen {
            deny,
            peers,
            ports,
            http,
            icmp,
        })
}

/// A policy; `named` lets port rules name the pods' `http` port.
fn policy_strategy(named: bool) -> impl Strategy<Value = PolicyGen> {
    (
        prop::sample::select(vec![
            PolicyKind::Cnp,
            PolicyKind::Cnp,
            PolicyKind::Cnp,
            PolicyKind::Ccnp,
            PolicyKind::Knp,
        ]),
        0..NAMESPACES.len(),
        sel_strategy(),
        ns_strategy(),
        prop::collection::vec(item_strategy(named), 0..3),
        prop::collection::vec(item_strategy(named), 0..3),
        proptest::option::weighted(0.35, (any::<bool>(), any::<bool>())),
    )
        .prop_map(
            |(kind, ns, subject, subject_ns, mut ingress, egress, default_deny)| {
                if ingress.is_empty() && egress.is_empty() {
                    ingress.push(ItemGen {
                        deny: false,
                        peers: None,
                        ports: None,
                        http: None,
                        icmp: false,
                    });
                }
                PolicyGen {
                    kind,
                    ns,
                    subject,
                    subject_ns,
                    ingress,
                    egress,
                    default_deny,
                }
            },
        )
}

fn pod_strategy() -> impl Strategy<Value = PodGen> {
    (
        0..NAMESPACES.len(),
        proptest::option::weighted(0.85, 0..APPS.len()),
        0..TIERS.len(),
        0..NODES.len(),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(ns, app, tier, node, robot)| PodGen {
            ns,
            app,
            tier,
            node,
            robot,
        })
}

// ---------------------------------------------------------------------------------------------
// Building models.

/// The policies' YAML, each named by its index.
fn policies_yaml(policies: &[(usize, PolicyGen)]) -> String {
    policies.iter().map(|(i, p)| policy_yaml(*i, p)).collect()
}

fn numbered(policies: &[PolicyGen]) -> Vec<(usize, PolicyGen)> {
    policies.iter().cloned().enumerate().collect()
}

/// Lints `text`; `None` when the agent would reject it (random policies may be ones the
/// agent rejects; those have no meaning to compare).
fn objects(text: &str) -> Option<Vec<Object>> {
    let mut sources = SourceMap::new();
    sources.add(SourceFile::new("gen.yaml", text.to_string()));
    let (objects, diags) = polc_compiler::lint(
        &sources,
        &Options {
            version: VERSION,
            ..Options::default()
        },
    );
    let errors = diags
        .iter()
        .any(|d| d.severity == polc_compiler::diag::Severity::Error);
    (!errors).then_some(objects)
}

fn config() -> Config {
    Config {
        version: VERSION,
        dual_stack: Some(false),
        ..Config::default()
    }
}

/// A policy set as the symbolic commands see it: the policies alone, lowered without a
/// cluster, and the objects they came from.
struct Symbolic {
    set: PolicySet,
    objects: Vec<Object>,
}

fn symbolic(policies: &[(usize, PolicyGen)]) -> Option<Symbolic> {
    let objects = objects(&policies_yaml(policies))?;
    let (model, _) = Model::build(&objects, config());
    Some(Symbolic {
        set: model.policies,
        objects,
    })
}

/// The policies bound to the cluster of `pods`.
fn concrete(pods: &[PodGen], policies: &[(usize, PolicyGen)]) -> Option<Model> {
    let text = inventory_yaml(pods) + &policies_yaml(policies);
    let objects = objects(&text)?;
    Some(Model::build(&objects, config()).0)
}

// ---------------------------------------------------------------------------------------------
// Concrete flows of an inventory.

fn node_of(model: &Model, pod: usize) -> usize {
    let name = &model.inventory.pods[pod].node;
    model
        .inventory
        .nodes
        .iter()
        .position(|n| &n.name == name)
        .unwrap()
}

/// The requests a TCP flow may carry in the checks (the first is none).
fn requests() -> Vec<Option<Request>> {
    let http = |m: &str, p: &str, host: &str, headers: &[(&str, &str)]| {
        Some(Request::Http {
            method: m.into(),
            path: p.into(),
            host: host.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    };
    vec![
        None,
        http("GET", "/api/v1", "", &[]),
        http("POST", "/x", "", &[]),
        http("HEAD", "/x", "", &[]),
        http("post", "/x", "", &[("x-token", "abc")]),
        http("GET", "/api/v2/items", "www.example.com", &[]),
        http("DELETE", "/x/", "", &[("X-Debug", "1")]),
        http("PUT", "/abc", "example.com", &[("X-Token", "abd")]),
    ]
}

/// Every flow between the inventory's ends on a few ports and protocols (requests on TCP/80,
/// one on TCP/8080).
fn flows(model: &Model) -> Vec<Flow> {
    let pods = model.inventory.pods.len();
    let mut pairs = Vec::new();
    for i in 0..pods {
        for j in 0..pods {
            if i != j {
                pairs.push((Peer::Pod(i), Peer::Pod(j)));
            }
        }
        for ip in EXTERNAL {
            let ext = Peer::External(ip.parse().unwrap());
            pairs.push((Peer::Pod(i), ext));
            pairs.push((ext, Peer::Pod(i)));
        }
        for n in 0..model.inventory.nodes.len() {
            pairs.push((Peer::Pod(i), Peer::Host(n)));
            pairs.push((Peer::Host(n), Peer::Pod(i)));
        }
    }
    let reqs = requests();
    let mut out = Vec::new();
    for (src, dst) in pairs {
        let mut add = |proto, port, request: Option<Request>| {
            out.push(Flow {
                src,
                dst,
                proto,
                port,
                request,
            })
        };
        for &port in TCP_PORTS {
            if port == 80 {
                for r in &reqs {
                    add(Proto::Tcp, port, r.clone());
                }
            } else if port == 8080 {
                add(Proto::Tcp, port, None);
                add(Proto::Tcp, port, reqs[1].clone());
            } else {
                add(Proto::Tcp, port, None);
            }
        }
        for &port in UDP_PORTS {
            add(Proto::Udp, port, None);
        }
        add(Proto::Icmp, 8, None);
        add(Proto::Sctp, 80, None);
    }
    out
}

fn describe_flow(model: &Model, f: &Flow) -> String {
    let end = |p: Peer| match p {
        Peer::Pod(i) => {
            let pod = &model.inventory.pods[i];
            format!(
                "pod {}/{} {{{}}}",
                pod.namespace, pod.name, model.pod_labels[i]
            )
        }
        Peer::Host(n) => format!("host {}", model.inventory.nodes[n].name),
        Peer::External(ip) => ip.to_string(),
    };
    let mut s = format!(
        "{} -> {} {}/{}",
        end(f.src),
        end(f.dst),
        f.proto.name(),
        f.port
    );
    if let Some(r) = &f.request {
        let _ = write!(s, " {r:?}");
    }
    s
}

fn describe_outcome(o: &Outcome) -> String {
    let mut s = o.verdict.name().to_string();
    for d in &o.decisions {
        let _ = write!(
            s,
            "; {:?} {}: {} ({:?}) {:?}",
            d.endpoint,
            d.direction.name(),
            d.verdict.name(),
            d.why,
            d.rules
                .iter()
                .map(|r| format!("{} {}", r.policy, r.path))
                .collect::<Vec<_>>()
        );
    }
    s
}

// ---------------------------------------------------------------------------------------------
// (a) The encoding, pinned to concrete flows, against eval.

const SHAPES: [Shape; 7] = [
    Shape::PodToPod,
    Shape::PodToOutside(KIND_WORLD),
    Shape::PodToOutside(KIND_HOST),
    Shape::PodToOutside(KIND_REMOTE_NODE),
    Shape::OutsideToPod(KIND_WORLD),
    Shape::OutsideToPod(KIND_HOST),
    Shape::OutsideToPod(KIND_REMOTE_NODE),
];

/// One encoded verdict formula.
struct Formula {
    allowed: Bool,
    approximations: Vec<String>,
}

/// The verdict formulas of a policy set over one set of variables: per shape and request
/// (index into [`requests`]), and per shape with a symbolic HTTP request.
struct Encoding {
    v: FlowVars,
    h: HttpVars,
    well_formed: Bool,
    formulas: HashMap<(usize, usize), Formula>,
    http: HashMap<usize, Formula>,
}

fn encode(set: &PolicySet) -> Encoding {
    let mut v = FlowVars::new();
    let mut h = HttpVars::new();
    let reqs = requests();
    let mut formulas = HashMap::new();
    let mut http = HashMap::new();
    for (si, shape) in SHAPES.iter().enumerate() {
        let mut enc = Encoder::new(set, &format!("s{si}h"));
        let allowed = enc.allowed(&mut v, *shape, &mut Req::Http(&mut h));
        http.insert(
            si,
            Formula {
                allowed,
                approximations: enc.approximations().to_vec(),
            },
        );
        for (ri, r) in reqs.iter().enumerate() {
            let mut enc = Encoder::new(set, &format!("s{si}r{ri}"));
            let mut req = match r {
                Some(r) => Req::Concrete(r),
                None => Req::None,
            };
            let allowed = enc.allowed(&mut v, *shape, &mut req);
            formulas.insert(
                (si, ri),
                Formula {
                    allowed,
                    approximations: enc.approximations().to_vec(),
                },
            );
        }
    }
    let well_formed = Bool::and(&[v.well_formed("default"), v.values_valid(), h.well_formed()]);
    Encoding {
        v,
        h,
        well_formed,
        formulas,
        http,
    }
}

/// `labels` pinned to a pod's security labels (every key the encoding used).
fn pin_labels(
    labels: &Labels,
    set: &LabelSet,
    out: &mut Vec<(Bool, Bool)>,
    strs: &mut Vec<(Str, Str)>,
) {
    for (key, (has, val)) in labels.keys() {
        match set.lookup(&format!("k8s:{key}")) {
            Some(value) => {
                out.push((has.clone(), Bool::from_bool(true)));
                strs.push((val.clone(), Str::from(value)));
            }
            None => out.push((has.clone(), Bool::from_bool(false))),
        }
    }
}

/// The shape of a flow, its endpoint pod `x`, its remote pod, and its outside address.
fn shape_of(model: &Model, f: &Flow) -> (usize, usize, Option<usize>, Option<Ipv4Addr>) {
    let kind_to = |x: usize, n: usize| {
        if node_of(model, x) == n {
            KIND_HOST
        } else {
            KIND_REMOTE_NODE
        }
    };
    let shape = |s: Shape| SHAPES.iter().position(|x| *x == s).unwrap();
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!(),
    };
    match (f.src, f.dst) {
        (Peer::Pod(x), Peer::Pod(p)) => (shape(Shape::PodToPod), x, Some(p), None),
        (Peer::Pod(x), Peer::External(ip)) => (
            shape(Shape::PodToOutside(KIND_WORLD)),
            x,
            None,
            Some(v4(ip)),
        ),
        (Peer::External(ip), Peer::Pod(x)) => (
            shape(Shape::OutsideToPod(KIND_WORLD)),
            x,
            None,
            Some(v4(ip)),
        ),
        (Peer::Pod(x), Peer::Host(n)) => (shape(Shape::PodToOutside(kind_to(x, n))), x, None, None),
        (Peer::Host(n), Peer::Pod(x)) => (shape(Shape::OutsideToPod(kind_to(x, n))), x, None, None),
        _ => unreachable!(),
    }
}

/// Substitutions of variables by constants.
type Pins = (Vec<(Bool, Bool)>, Vec<(Str, Str)>, Vec<(BV, BV)>);

/// Pins the variables of `e` to the flow `f`; returns the substitutions.
fn pins(e: &Encoding, model: &Model, f: &Flow) -> Pins {
    let (si, x, p, addr) = shape_of(model, f);
    let (mut bools, mut strs, mut bvs) = (Vec::new(), Vec::new(), Vec::new());
    pin_labels(&e.v.x, &model.pod_labels[x], &mut bools, &mut strs);
    if let Some(p) = p {
        pin_labels(&e.v.p, &model.pod_labels[p], &mut bools, &mut strs);
    }
    let kind = match SHAPES[si] {
        Shape::PodToPod => KIND_POD,
        Shape::PodToOutside(k) | Shape::OutsideToPod(k) => k,
    };
    bvs.push((e.v.kind.clone(), BV::from_u64(kind, 2)));
    if let Some(a) = addr {
        bvs.push((e.v.addr.clone(), BV::from_u64(u64::from(u32::from(a)), 32)));
    }
    bvs.push((
        e.v.proto.clone(),
        BV::from_u64(u64::from(f.proto.number()), 8),
    ));
    bvs.push((e.v.port.clone(), BV::from_u64(u64::from(f.port), 16)));
    if let Some(Request::Http {
        method,
        path,
        host,
        headers,
    }) = &f.request
    {
        for (var, value) in [(&e.h.method, method), (&e.h.path, path), (&e.h.host, host)] {
            strs.push((var.clone(), Str::from(value.as_str())));
        }
        for (name, (has, val)) in &e.h.headers {
            match headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
                Some((_, value)) => {
                    bools.push((has.clone(), Bool::from_bool(true)));
                    strs.push((val.clone(), Str::from(value.as_str())));
                }
                None => bools.push((has.clone(), Bool::from_bool(false))),
            }
        }
    }
    (bools, strs, bvs)
}

fn substitute(b: &Bool, pins: &Pins) -> Bool {
    let bools: Vec<(&Bool, &Bool)> = pins.0.iter().map(|(a, b)| (a, b)).collect();
    let strs: Vec<(&Str, &Str)> = pins.1.iter().map(|(a, b)| (a, b)).collect();
    let bvs: Vec<(&BV, &BV)> = pins.2.iter().map(|(a, b)| (a, b)).collect();
    b.substitute(&bools)
        .substitute(&strs)
        .substitute(&bvs)
        .simplify()
}

/// Which verdicts the encoding can give the flow: (can allow, can deny).
fn encoded_verdicts(
    e: &Encoding,
    formula: &Formula,
    model: &Model,
    f: &Flow,
) -> Result<(bool, bool), String> {
    let pinned = pins(e, model, f);
    let allowed = substitute(&formula.allowed, &pinned);
    if let Some(a) = allowed.as_bool() {
        return Ok((a, !a));
    }
    // Something is left (free booleans): ask the solver.
    let z = z3::Solver::new();
    z.assert(substitute(&e.well_formed, &pinned));
    let sat = |b: Bool| {
        z.push();
        z.assert(&b);
        let r = z.check();
        z.pop(1);
        r
    };
    match (sat(allowed.clone()), sat(allowed.not())) {
        (SatResult::Unsat, SatResult::Unsat) => {
            Err("the flow is not well formed for the encoding".into())
        }
        (SatResult::Unknown, _) | (_, SatResult::Unknown) => Err("the solver gave up".into()),
        (a, d) => Ok((a == SatResult::Sat, d == SatResult::Sat)),
    }
}

/// Every inventory pod, as either end of a pod-to-pod flow, is one the encoding admits.
fn check_well_formed(e: &Encoding, model: &Model) -> Result<(), String> {
    for i in 0..model.inventory.pods.len() {
        let f = Flow {
            src: Peer::Pod(i),
            dst: Peer::Pod(i),
            proto: Proto::Tcp,
            port: 80,
            request: None,
        };
        let z = z3::Solver::new();
        z.assert(substitute(&e.well_formed, &pins(e, model, &f)));
        if z.check() != SatResult::Sat {
            return Err(format!(
                "pod {} {{{}}} is not well formed for the encoding",
                model.inventory.pods[i].name, model.pod_labels[i]
            ));
        }
    }
    Ok(())
}

fn check_encoding(set: &PolicySet, model: &Model) -> Result<usize, String> {
    let e = encode(set);
    check_well_formed(&e, model)?;
    let reqs = requests();
    let mut checked = 0;
    for f in flows(model) {
        let (si, ..) = shape_of(model, &f);
        let ri = reqs.iter().position(|r| *r == f.request).unwrap();
        let outcome = eval::decide(model, &f);
        // The flow's request as a given one, and as the symbolic one pinned to it.
        let mut formulas = vec![("given", &e.formulas[&(si, ri)])];
        if f.request.is_some() {
            formulas.push(("symbolic", &e.http[&si]));
        }
        for (how, formula) in formulas {
            let (can_allow, can_deny) = encoded_verdicts(&e, formula, model, &f)
                .map_err(|m| format!("{}: {m}", describe_flow(model, &f)))?;
            let exact = formula.approximations.is_empty();
            let eval_allows = outcome.verdict == Verdict::Allow;
            let ok = if exact {
                can_allow != can_deny && can_allow == eval_allows
            } else if eval_allows {
                can_allow
            } else {
                can_deny
            };
            if !ok {
                return Err(format!(
                    "{} ({:?}, {how} request): eval says {}, the encoding {} (approximations: \
                     {:?})",
                    describe_flow(model, &f),
                    SHAPES[si],
                    describe_outcome(&outcome),
                    match (can_allow, can_deny) {
                        (true, true) => "can allow or deny",
                        (true, false) => "allows",
                        (false, true) => "denies",
                        (false, false) => "has no answer",
                    },
                    formula.approximations
                ));
            }
            checked += 1;
        }
    }
    Ok(checked)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn the_encoding_agrees_with_eval_on_concrete_flows(
        pods in prop::collection::vec(pod_strategy(), 2..5),
        policies in prop::collection::vec(policy_strategy(true), 1..4),
    ) {
        let policies = numbered(&policies);
        if let Some(model) = concrete(&pods, &policies) {
            match check_encoding(&model.policies, &model) {
                Ok(checked) => prop_assert!(checked > 0),
                Err(e) => prop_assert!(
                    false,
                    "{}\npolicies:\n{}\ninventory:\n{}",
                    e,
                    policies_yaml(&policies),
                    inventory_yaml(&pods)
                ),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b) Symbolic expectations against the inventory.

fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(30),
    }
}

/// One end of an expectation.
#[derive(Clone, Debug)]
enum EndGen {
    /// `NS/{app=X}` (or `NS/{}`).
    Pods(usize, Option<usize>),
    /// The namespace and app of the generated inventory's pod (index modulo their number).
    Like(usize),
    World,
    Host,
    RemoteNode,
}

#[derive(Clone, Debug)]
struct ExpGen {
    allow: bool,
    from: EndGen,
    to: EndGen,
    udp: bool,
    ports: (u16, u16),
    request: Option<usize>,
}

fn end_strategy() -> impl Strategy<Value = EndGen> {
    prop_oneof![
        3 => (0..NAMESPACES.len(), proptest::option::weighted(0.8, 0..APPS.len()))
            .prop_map(|(n, a)| EndGen::Pods(n, a)),
        4 => any::<usize>().prop_map(EndGen::Like),
        1 => Just(EndGen::World),
        1 => Just(EndGen::Host),
        1 => Just(EndGen::RemoteNode),
    ]
}

fn expectation_strategy() -> impl Strategy<Value = ExpGen> {
    (
        any::<bool>(),
        end_strategy(),
        end_strategy(),
        prop::bool::weighted(0.2),
        prop::sample::select(vec![
            (80u16, 80u16),
            (8080, 8080),
            (53, 53),
            (8000, 8100),
            (1, 1023),
        ]),
        proptest::option::weighted(0.25, 1..requests().len()),
    )
        .prop_map(|(allow, from, to, udp, ports, request)| {
            // At least one end is pods; only TCP flows carry HTTP requests.
            let pods = |e: &EndGen| matches!(e, EndGen::Pods(..) | EndGen::Like(_));
            let from = match (&from, &to) {
                (f, t) if pods(f) || pods(t) => from,
                _ => EndGen::Pods(0, Some(0)),
            };
            ExpGen {
                allow,
                from,
                to,
                udp,
                ports,
                request: request.filter(|_| !udp),
            }
        })
}

/// `Like` ends made `Pods` ends of the inventory's pods.
fn resolve(e: &ExpGen, pods: &[PodGen]) -> ExpGen {
    let end = |end: &EndGen| match end {
        EndGen::Like(i) => {
            let p = &pods[i % pods.len()];
            EndGen::Pods(p.ns, p.app)
        }
        other => other.clone(),
    };
    ExpGen {
        from: end(&e.from),
        to: end(&e.to),
        ..e.clone()
    }
}

fn end_of(e: &EndGen) -> End {
    match e {
        EndGen::Pods(ns, app) => End::Pods {
            namespace: Some(NAMESPACES[*ns].to_string()),
            reqs: app
                .map(|a| Requirement {
                    key: "any:app".into(),
                    op: Op::In,
                    values: vec![APPS[a].into()],
                })
                .into_iter()
                .collect(),
        },
        EndGen::World => End::World(None),
        EndGen::Host => End::Host,
        EndGen::RemoteNode => End::RemoteNode,
        EndGen::Like(_) => unreachable!("resolved first"),
    }
}

fn verdict(allow: bool) -> Verdict {
    if allow { Verdict::Allow } else { Verdict::Deny }
}

fn expectation_of(e: &ExpGen) -> Expectation {
    Expectation {
        verdict: verdict(e.allow),
        from: end_of(&e.from),
        to: end_of(&e.to),
        ports: Some((if e.udp { 17 } else { 6 }, Some(e.ports))),
        request: e.request.and_then(|r| requests()[r].clone()),
    }
}

/// Whether a pod's security labels put it in a `Pods` end.
fn pod_in(labels: &LabelSet, ns: usize, app: Option<usize>) -> bool {
    labels.lookup("k8s:io.kubernetes.pod.namespace") == Some(NAMESPACES[ns])
        && app.is_none_or(|a| labels.lookup("k8s:app") == Some(APPS[a]))
}

/// Whether a flow of a model is one the expectation describes.
fn described(e: &ExpGen, model: &Model, f: &Flow) -> bool {
    let proto = if e.udp { Proto::Udp } else { Proto::Tcp };
    let request = e.request.and_then(|r| requests()[r].clone());
    if f.proto != proto || !(e.ports.0..=e.ports.1).contains(&f.port) || f.request != request {
        return false;
    }
    // The pod end a host end is judged against.
    let pod = match (f.src, f.dst) {
        (Peer::Pod(i), _) | (_, Peer::Pod(i)) => i,
        _ => return false,
    };
    let is = |end: &EndGen, p: Peer| match (end, p) {
        (EndGen::Pods(ns, app), Peer::Pod(i)) => pod_in(&model.pod_labels[i], *ns, *app),
        (EndGen::World, Peer::External(_)) => true,
        (EndGen::Host, Peer::Host(n)) => n == node_of(model, pod),
        (EndGen::RemoteNode, Peer::Host(n)) => n != node_of(model, pod),
        _ => false,
    };
    is(&e.from, f.src) && is(&e.to, f.dst)
}

/// The inventory flows an expectation describes.
fn described_flows(e: &ExpGen, model: &Model) -> Vec<Flow> {
    let mut ports: Vec<u16> = vec![e.ports.0, e.ports.1];
    ports.extend(TCP_PORTS.iter().chain(UDP_PORTS).copied());
    ports.sort_unstable();
    ports.dedup();
    let proto = if e.udp { Proto::Udp } else { Proto::Tcp };
    let request = e.request.and_then(|r| requests()[r].clone());
    let mut ends: Vec<Peer> = (0..model.inventory.pods.len()).map(Peer::Pod).collect();
    ends.extend((0..model.inventory.nodes.len()).map(Peer::Host));
    ends.extend(
        EXTERNAL
            .iter()
            .map(|ip| Peer::External(ip.parse().unwrap())),
    );
    let mut out = Vec::new();
    for &src in &ends {
        for &dst in &ends {
            for &port in &ports {
                let f = Flow {
                    src,
                    dst,
                    proto,
                    port,
                    request: request.clone(),
                };
                if src != dst && described(e, model, &f) {
                    out.push(f);
                }
            }
        }
    }
    out
}

/// Checks one expectation symbolically, and the answer against the inventory.
fn check_expectation(sym: &Symbolic, model: &Model, e: &ExpGen) -> Result<(), String> {
    let x = expectation_of(e);
    let want = verdict(e.allow);
    match expect::check(&sym.set, &sym.objects, VERSION, &x, limits()) {
        Ok(Answer::Holds) => {
            for f in described_flows(e, model) {
                let o = eval::decide(model, &f);
                if o.verdict != want {
                    return Err(format!(
                        "the verifier says {x:?} holds, but eval gives {} to {}",
                        describe_outcome(&o),
                        describe_flow(model, &f)
                    ));
                }
            }
            Ok(())
        }
        Ok(Answer::Violated(r)) => {
            // The counterexample is a flow the expectation describes, with the other verdict.
            if r.outcome.verdict == want || !described(e, &r.model, &r.flow) {
                return Err(format!(
                    "the verifier's counterexample to {x:?} is {}: {} ({})",
                    describe_flow(&r.model, &r.flow),
                    describe_outcome(&r.outcome),
                    r.explain()
                ));
            }
            // Judged again by the evaluator, it has the verdict it was shown with.
            let again = eval::decide(&r.model, &r.flow);
            if again.verdict != r.outcome.verdict {
                return Err(format!(
                    "the counterexample's verdict changed: {}",
                    r.explain()
                ));
            }
            Ok(())
        }
        // Undecided (the solver gave up, or its example could not be replayed): nothing to
        // hold against the inventory.
        Ok(Answer::Unknown(_)) => Ok(()),
        Err(Refusal::Internal(m)) => Err(format!("internal error for {x:?}: {m}")),
        Err(other) => Err(format!("{x:?} was refused: {other:?}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn symbolic_expectations_are_sound_on_inventories(
        pods in prop::collection::vec(pod_strategy(), 2..6),
        policies in prop::collection::vec(policy_strategy(false), 1..4),
        expectations in prop::collection::vec(expectation_strategy(), 1..4),
    ) {
        let policies = numbered(&policies);
        if let (Some(sym), Some(model)) = (symbolic(&policies), concrete(&pods, &policies)) {
            for e in &expectations {
                let e = &resolve(e, &pods);
                if let Err(m) = check_expectation(&sym, &model, e) {
                    prop_assert!(
                        false,
                        "{}\npolicies:\n{}\ninventory:\n{}",
                        m,
                        policies_yaml(&policies),
                        inventory_yaml(&pods)
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (c) The symbolic diff against the inventory.

/// A change to a policy set.
#[derive(Clone, Debug)]
enum Mutation {
    Remove(usize),
    Add(PolicyGen),
    Replace(usize, PolicyGen),
    DropItem(usize, usize),
    FlipDeny(usize, usize),
    AnyPort(usize, usize),
    AnyPeer(usize, usize),
    DefaultDeny(usize, Option<(bool, bool)>),
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => any::<usize>().prop_map(Mutation::Remove),
        1 => policy_strategy(false).prop_map(Mutation::Add),
        1 => (any::<usize>(), policy_strategy(false)).prop_map(|(i, p)| Mutation::Replace(i, p)),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::DropItem(i, j)),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::FlipDeny(i, j)),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::AnyPort(i, j)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::AnyPeer(i, j)),
        1 => (any::<usize>(), proptest::option::of((any::<bool>(), any::<bool>())))
            .prop_map(|(i, d)| Mutation::DefaultDeny(i, d)),
    ]
}

/// NEW: OLD with the mutation applied (policies keep their names).
fn mutate(old: &[(usize, PolicyGen)], m: &Mutation) -> Vec<(usize, PolicyGen)> {
    let mut new = old.to_vec();
    let n = new.len();
    let item = |p: &mut PolicyGen, j: usize| -> Option<(bool, usize)> {
        let total = p.ingress.len() + p.egress.len();
        (total > 0).then(|| {
            let j = j % total;
            if j < p.ingress.len() {
                (true, j)
            } else {
                (false, j - p.ingress.len())
            }
        })
    };
    let edit = |new: &mut Vec<(usize, PolicyGen)>, i: usize, j: usize, f: &dyn Fn(&mut ItemGen)| {
        let p = &mut new[i % n].1;
        if let Some((ingress, j)) = item(p, j) {
            f(if ingress {
                &mut p.ingress[j]
            } else {
                &mut p.egress[j]
            });
        }
    };
    match m {
        Mutation::Remove(i) => {
            new.remove(i % n);
        }
        Mutation::Add(p) => new.push((n, p.clone())),
        Mutation::Replace(i, p) => new[i % n].1 = p.clone(),
        Mutation::DropItem(i, j) => {
            let p = &mut new[i % n].1;
            if let Some((ingress, j)) = item(p, *j) {
                if ingress {
                    p.ingress.remove(j);
                } else {
                    p.egress.remove(j);
                }
            }
        }
        Mutation::FlipDeny(i, j) => edit(&mut new, *i, *j, &|it| it.deny = !it.deny),
        Mutation::AnyPort(i, j) => edit(&mut new, *i, *j, &|it| it.ports = None),
        Mutation::AnyPeer(i, j) => edit(&mut new, *i, *j, &|it| it.peers = None),
        Mutation::DefaultDeny(i, d) => new[i % n].1.default_deny = *d,
    }
    new
}

/// Per rule of `mine`, whether its policy's text differs in `other` (or is missing there).
fn changed(
    set: &PolicySet,
    mine: &[(usize, PolicyGen)],
    other: &[(usize, PolicyGen)],
) -> Vec<bool> {
    let texts = |ps: &[(usize, PolicyGen)]| -> HashMap<String, String> {
        ps.iter()
            .map(|(i, p)| (policy_name(*i, p), policy_yaml(*i, p)))
            .collect()
    };
    let (a, b) = (texts(mine), texts(other));
    set.rules
        .iter()
        .map(|r| a.get(&r.origin.name) != b.get(&r.origin.name))
        .collect()
}

/// The verdict of `flow` under the policies of `sym` on the cluster of `like`.
fn decide_under(sym: &Symbolic, like: &Model, flow: &Flow) -> Outcome {
    let (mut set, _) = polc_compiler::lower::lower(&sym.objects, VERSION);
    like.inventory.bind_services(&mut set);
    let model = Model::from_parts(set, (*like.inventory).clone(), like.config.clone());
    eval::decide(&model, flow)
}

fn check_diff(
    pods: &[PodGen],
    old: &[(usize, PolicyGen)],
    new: &[(usize, PolicyGen)],
) -> Result<(), String> {
    let (Some(so), Some(sn), Some(mo), Some(mn)) = (
        symbolic(old),
        symbolic(new),
        concrete(pods, old),
        concrete(pods, new),
    ) else {
        return Ok(());
    };
    let old_side = polc_verifier::diff::Side {
        set: &so.set,
        objects: &so.objects,
        changed: changed(&so.set, old, new),
    };
    let new_side = polc_verifier::diff::Side {
        set: &sn.set,
        objects: &sn.objects,
        changed: changed(&sn.set, new, old),
    };
    let d = polc_verifier::diff::diff(&old_side, &new_side, VERSION, limits());
    if !d.internal.is_empty() {
        return Err(format!("internal errors: {:?}", d.internal));
    }
    // Every class's example flips as labelled, under both sets judged again.
    for c in &d.classes {
        let (o, n) = if c.widened {
            (Verdict::Deny, Verdict::Allow)
        } else {
            (Verdict::Allow, Verdict::Deny)
        };
        let again_new = eval::decide(&c.example.model, &c.example.flow);
        let again_old = decide_under(&so, &c.example.model, &c.example.flow);
        if (c.old_verdict, c.example.outcome.verdict) != (o, n)
            || (again_old.verdict, again_new.verdict) != (o, n)
        {
            return Err(format!(
                "the class {} {} ({}) has the example {}, which is {} under OLD and {} under NEW",
                if c.widened { "widened" } else { "narrowed" },
                c.rule,
                c.example.text,
                describe_flow(&c.example.model, &c.example.flow),
                describe_outcome(&again_old),
                describe_outcome(&again_new)
            ));
        }
    }
    if !d.unknown.is_empty() {
        return Ok(());
    }
    // Every inventory flow the change flips is in a class of its direction.
    for f in flows(&mo) {
        let (vo, vn) = (eval::decide(&mo, &f), eval::decide(&mn, &f));
        if vo.verdict == vn.verdict {
            continue;
        }
        let widened = vn.verdict == Verdict::Allow;
        if !d.classes.iter().any(|c| c.widened == widened) {
            let classes: Vec<String> = d
                .classes
                .iter()
                .map(|c| {
                    format!(
                        "{} {}: {}",
                        if c.widened { "+" } else { "-" },
                        c.rule,
                        c.example.text
                    )
                })
                .collect();
            return Err(format!(
                "{} is {} under OLD and {} under NEW, but the diff has no {} class (classes: \
                 {classes:?})",
                describe_flow(&mo, &f),
                describe_outcome(&vo),
                describe_outcome(&vn),
                if widened { "widened" } else { "narrowed" },
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn the_symbolic_diff_is_sound_on_inventories(
        pods in prop::collection::vec(pod_strategy(), 2..6),
        policies in prop::collection::vec(policy_strategy(false), 1..4),
        mutation in mutation_strategy(),
    ) {
        let old = numbered(&policies);
        let new = mutate(&old, &mutation);
        if let Err(m) = check_diff(&pods, &old, &new) {
            prop_assert!(
                false,
                "{}\nOLD:\n{}\nNEW:\n{}\ninventory:\n{}",
                m,
                policies_yaml(&old),
                policies_yaml(&new),
                inventory_yaml(&pods)
            );
        }
    }
}
