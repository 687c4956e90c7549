//! Translation validation: for random small clusters, policy sets and flows, a lookup in the
//! emitted map state, following the datapath's lookup order, gives the same verdict as the
//! reference evaluator (`eval`), at each end that enforces policy.

use polc_compiler::eval::{self, Flow, Peer, Verdict, Why};
use polc_compiler::ir::Proto;
use polc_compiler::mapstate::{self, ProxyPorts, SelectorCache};
use polc_compiler::model::{Config, Model};
use polc_compiler::source::{SourceFile, SourceMap};
use polc_compiler::{CiliumVersion, Options};
use polc_ebpf::{l7, npds};
use proptest::prelude::*;
use std::fmt::Write;
use std::net::IpAddr;

const APPS: &[&str] = &["web", "api", "db"];
const NAMESPACES: &[&str] = &["a", "b"];
const NODES: &[&str] = &["n1", "n2"];
const PORTS: &[u16] = &[53, 80, 443, 8080, 8050, 9999];
const EXTERNAL: &[&str] = &["203.0.113.7", "198.51.100.20", "10.99.1.2", "192.0.2.200"];

/// A pod: namespace, app, tier, node.
#[derive(Clone, Debug)]
struct PodGen {
    ns: usize,
    app: usize,
    tier: bool,
    node: usize,
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
             kubernetes.io/hostname: {n}\n    zone: z{i}\nstatus:\n  addresses:\n  - type: \
             InternalIP\n    address: 172.16.0.{}\n",
            i + 1
        );
    }
    for (i, p) in pods.iter().enumerate() {
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\n  namespace: {}\n  \
             labels:\n    app: {}\n    tier: {}\nspec:\n  nodeName: {}\n  containers:\n  - \
             name: c\n    ports:\n    - name: http\n      containerPort: {}\nstatus:\n  podIP: \
             10.0.{}.{}\n",
            NAMESPACES[p.ns],
            APPS[p.app],
            if p.tier { "front" } else { "back" },
            NODES[p.node],
            if i % 2 == 0 { 8080 } else { 80 },
            p.node,
            i + 10
        );
    }
    s
}

#[derive(Clone, Debug)]
enum PeerGen {
    App(usize, Option<usize>),
    Entity(&'static str),
    Cidr(&'static str, Option<&'static str>),
    EmptySelector,
}

#[derive(Clone, Debug)]
enum PortGen {
    Num(u16, &'static str),
    Range(u16, u16),
    Named,
    Zero(&'static str),
}

#[derive(Clone, Debug)]
struct ItemGen {
    deny: bool,
    peers: Option<Vec<PeerGen>>,
    ports: Option<Vec<PortGen>>,
    http: bool,
    icmp: bool,
}

#[derive(Clone, Debug)]
struct PolicyGen {
    clusterwide: bool,
    ns: usize,
    subject: Option<usize>,
    ingress: Vec<ItemGen>,
    egress: Vec<ItemGen>,
    default_deny: Option<bool>,
}

fn peer_yaml(p: &PeerGen, ingress: bool) -> (String, String) {
    let dir = if ingress { "from" } else { "to" };
    match p {
        PeerGen::App(app, ns) => {
            let mut s = format!("    - matchLabels:\n        app: {}\n", APPS[*app]);
            if let Some(ns) = ns {
                let _ = writeln!(
                    s,
                    "        k8s:io.kubernetes.pod.namespace: {}",
                    NAMESPACES[*ns]
                );
            }
            (format!("{dir}Endpoints"), s)
        }
        PeerGen::EmptySelector => (format!("{dir}Endpoints"), "    - {}\n".into()),
        PeerGen::Entity(e) => (format!("{dir}Entities"), format!("    - {e}\n")),
        PeerGen::Cidr(c, ex) => {
            let mut s = format!("    - cidr: {c}\n");
            if let Some(ex) = ex {
                let _ = writeln!(s, "      except: [\"{ex}\"]");
            }
            (format!("{dir}CIDRSet"), s)
        }
    }
}

fn item_yaml(item: &ItemGen, ingress: bool) -> String {
    let mut s = String::from("  - ");
    let mut first = true;
    let mut field = |s: &mut String, text: String| {
        if first {
            s.push_str(&text);
            first = false;
        } else {
            s.push_str("    ");
            s.push_str(&text);
        }
    };
    if let Some(peers) = &item.peers {
        // One peer kind per item: group by field name, keep the first kind.
        if let Some((name, _)) = peers.first().map(|p| peer_yaml(p, ingress)) {
            let mut body = String::new();
            for p in peers {
                let (n, b) = peer_yaml(p, ingress);
                if n == name {
                    body.push_str(&b);
                }
            }
            field(&mut s, format!("{name}:\n{body}"));
        } else {
            let dir = if ingress { "from" } else { "to" };
            field(&mut s, format!("{dir}Endpoints: []\n"));
        }
    }
    if let Some(ports) = &item.ports {
        let mut body = String::from("toPorts:\n    - ports:\n");
        let mut tcp_only = true;
        for p in ports {
            match p {
                PortGen::Num(n, proto) => {
                    tcp_only &= *proto == "TCP";
                    let _ = write!(body, "      - port: \"{n}\"\n        protocol: {proto}\n");
                }
                PortGen::Range(a, b) => {
                    let _ = write!(
                        body,
                        "      - port: \"{a}\"\n        endPort: {b}\n        protocol: TCP\n"
                    );
                }
                PortGen::Named => {
                    let _ = write!(body, "      - port: http\n        protocol: TCP\n");
                }
                PortGen::Zero(proto) => {
                    tcp_only &= *proto == "TCP";
                    let _ = write!(body, "      - port: \"0\"\n        protocol: {proto}\n");
                }
            }
        }
        let any_port = ports.iter().any(|p| matches!(p, PortGen::Zero(_)));
        if item.http && !item.deny && tcp_only && !any_port && !ports.is_empty() {
            body.push_str("      rules:\n        http:\n        - method: GET\n");
        }
        field(&mut s, body);
    }
    if item.icmp && item.ports.is_none() {
        field(
            &mut s,
            "icmps:\n    - fields:\n      - type: 8\n        family: IPv4\n".into(),
        );
    }
    if first {
        s.push_str("{}\n");
    }
    s
}

fn policy_yaml(i: usize, p: &PolicyGen) -> String {
    let mut s = if p.clusterwide {
        format!(
            "---\napiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  \
             name: c{i}\nspec:\n"
        )
    } else {
        format!(
            "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: \
             p{i}\n  namespace: {}\nspec:\n",
            NAMESPACES[p.ns]
        )
    };
    match p.subject {
        Some(app) => {
            let _ = write!(
                s,
                "  endpointSelector:\n    matchLabels:\n      app: {}\n",
                APPS[app]
            );
        }
        None => s.push_str("  endpointSelector: {}\n"),
    }
    for (name, items, ingress) in [("ingress", &p.ingress, true), ("egress", &p.egress, false)] {
        let (allow, deny): (Vec<&ItemGen>, Vec<&ItemGen>) = items.iter().partition(|i| !i.deny);
        for (section, list) in [(name.to_string(), allow), (format!("{name}Deny"), deny)] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(s, "  {section}:");
            for it in list {
                s.push_str(&item_yaml(it, ingress));
            }
        }
    }
    if let Some(d) = p.default_deny {
        let _ = write!(
            s,
            "  enableDefaultDeny:\n    ingress: {d}\n    egress: {d}\n"
        );
    }
    s
}

fn peer_strategy() -> impl Strategy<Value = PeerGen> {
    prop_oneof![
        4 => (0..APPS.len(), proptest::option::of(0..NAMESPACES.len()))
            .prop_map(|(a, n)| PeerGen::App(a, n)),
        2 => prop::sample::select(vec!["world", "cluster", "host", "remote-node", "all"])
            .prop_map(PeerGen::Entity),
        2 => prop::sample::select(vec![
            ("203.0.113.0/24", None),
            ("0.0.0.0/0", Some("10.0.0.0/8")),
            ("10.0.0.0/8", None),
            ("198.51.100.0/24", Some("198.51.100.16/28")),
        ])
        .prop_map(|(c, e)| PeerGen::Cidr(c, e)),
        1 => Just(PeerGen::EmptySelector),
    ]
}

fn port_strategy() -> impl Strategy<Value = PortGen> {
    prop_oneof![
        4 => (prop::sample::select(PORTS.to_vec()), prop::sample::select(vec!["TCP", "UDP", "ANY"]))
            .prop_map(|(p, pr)| PortGen::Num(p, pr)),
        1 => Just(PortGen::Range(8000, 8100)),
        1 => Just(PortGen::Range(1, 1023)),
        1 => Just(PortGen::Named),
        1 => prop::sample::select(vec!["TCP", "UDP"]).prop_map(PortGen::Zero),
    ]
}

fn item_strategy() -> impl Strategy<Value = ItemGen> {
    (
        prop::bool::weighted(0.25),
        proptest::option::weighted(0.8, prop::collection::vec(peer_strategy(), 0..3)),
        proptest::option::weighted(0.6, prop::collection::vec(port_strategy(), 1..3)),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(deny, peers, ports, http, icmp)| ItemGen {
            deny,
            peers,
            ports,
            http,
            icmp,
        })
}

fn policy_strategy() -> impl Strategy<Value = PolicyGen> {
    (
        prop::bool::weighted(0.2),
        0..NAMESPACES.len(),
        proptest::option::weighted(0.8, 0..APPS.len()),
        prop::collection::vec(item_strategy(), 0..3),
        prop::collection::vec(item_strategy(), 0..3),
        proptest::option::weighted(0.15, any::<bool>()),
    )
        .prop_map(
            |(clusterwide, ns, subject, mut ingress, egress, default_deny)| {
                if ingress.is_empty() && egress.is_empty() {
                    ingress.push(ItemGen {
                        deny: false,
                        peers: None,
                        ports: None,
                        http: false,
                        icmp: false,
                    });
                }
                PolicyGen {
                    clusterwide,
                    ns,
                    subject,
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
        0..APPS.len(),
        any::<bool>(),
        0..NODES.len(),
    )
        .prop_map(|(ns, app, tier, node)| PodGen {
            ns,
            app,
            tier,
            node,
        })
}

fn build(pods: &[PodGen], policies: &[PolicyGen]) -> Option<Model> {
    let mut text = inventory_yaml(pods);
    for (i, p) in policies.iter().enumerate() {
        text.push_str(&policy_yaml(i, p));
    }
    let mut sources = SourceMap::new();
    sources.add(SourceFile::new("gen.yaml", text.clone()));
    let (objects, diags) = polc_compiler::lint(&sources, &Options::default());
    if diags
        .iter()
        .any(|d| d.severity == polc_compiler::diag::Severity::Error)
    {
        // Random policies may be ones the agent rejects; those have no meaning to compare.
        return None;
    }
    let config = Config {
        version: CiliumVersion::V1_19,
        ..Config::default()
    };
    let (model, _) = Model::build(&objects, config);
    Some(model)
}

/// `n` pods over both namespaces, apps and nodes, half of them `tier: back`.
fn mixed_pods(n: usize) -> Vec<PodGen> {
    (0..n)
        .map(|i| PodGen {
            ns: i % 2,
            app: i % 3,
            tier: i % 2 == 0,
            node: i % 2,
        })
        .collect()
}

/// The model of `pods` and the fixed `policies` (YAML documents after the inventory), which
/// must lint without errors (Cilium 1.19).
fn fixed_model(name: &str, pods: &[PodGen], policies: &str) -> Model {
    let mut text = inventory_yaml(pods);
    text.push_str(policies);
    let mut sources = SourceMap::new();
    sources.add(SourceFile::new(name, text));
    let (objects, diags) = polc_compiler::lint(&sources, &Options::default());
    assert!(
        diags
            .iter()
            .all(|d| d.severity != polc_compiler::diag::Severity::Error),
        "{diags:?}"
    );
    let config = Config {
        version: CiliumVersion::V1_19,
        ..Config::default()
    };
    Model::build(&objects, config).0
}

fn peers(model: &Model) -> Vec<Peer> {
    let mut out: Vec<Peer> = (0..model.inventory.pods.len()).map(Peer::Pod).collect();
    out.extend((0..model.inventory.nodes.len()).map(Peer::Host));
    out.extend(
        EXTERNAL
            .iter()
            .map(|ip| Peer::External(ip.parse::<IpAddr>().unwrap())),
    );
    out
}

/// Checks every flow between every pair of ends for a few ports and protocols, and the HTTP
/// requests of the flows the map redirects to the proxy; returns how many of each were
/// compared, or the first disagreement.
fn check(model: &Model) -> Result<(usize, usize), String> {
    let mut cache = SelectorCache::new(model);
    let listeners = mapstate::listeners(model);
    let mut policies = std::collections::HashMap::new();
    let ends = peers(model);
    let mut checked = 0;
    let mut l7_checked = 0;
    for &src in &ends {
        for &dst in &ends {
            if src == dst {
                continue;
            }
            for (proto, port) in PORTS
                .iter()
                .flat_map(|p| [(Proto::Tcp, *p), (Proto::Udp, *p)])
                .chain([(Proto::Icmp, 8), (Proto::Icmp, 13), (Proto::Sctp, 80)])
            {
                let flow = Flow {
                    src,
                    dst,
                    proto,
                    port,
                    request: None,
                };
                let outcome = eval::decide(model, &flow);
                for d in &outcome.decisions {
                    let policy = policies.entry(d.endpoint).or_insert_with(|| {
                        mapstate::compute(
                            model,
                            &mut cache,
                            d.endpoint,
                            &ProxyPorts::default(),
                            &listeners,
                        )
                    });
                    let hit = mapstate::lookup(
                        &policy.map,
                        d.direction,
                        d.remote_identity,
                        proto.number(),
                        port,
                    );
                    let map_verdict = mapstate::verdict_of(hit);
                    checked += 1;
                    let mut bad = map_verdict != d.verdict;
                    // A redirect in the map must match the evaluator's proxy decision for
                    // flows an allow rule decided.
                    if !bad && d.verdict == Verdict::Allow && d.why == Why::AllowRule {
                        let redirected = hit.is_some_and(|(_, e)| e.proxy.is_some());
                        bad = redirected != d.proxy.is_some();
                    }
                    // A redirected HTTP flow: the proxy, reading the endpoint's NPDS rules,
                    // decides each request as the evaluator does.
                    if !bad
                        && proto == Proto::Tcp
                        && hit.is_some_and(|(_, e)| {
                            !e.deny
                                && e.proxy
                                    .as_ref()
                                    .is_some_and(|p| p.listener.starts_with("cilium-http"))
                        })
                    {
                        let npds = npds::network_policy(model, d.endpoint, 1, policy);
                        let rules = l7::EndpointRules::from_json(&npds).map_err(|e| {
                            format!(
                                "{e}
{npds:#}"
                            )
                        })?;
                        for (method, path) in [("GET", "/"), ("POST", "/items")] {
                            let flow = Flow {
                                request: Some(eval::Request::Http {
                                    method: method.into(),
                                    path: path.into(),
                                    host: "svc".into(),
                                    headers: Vec::new(),
                                }),
                                ..flow.clone()
                            };
                            let outcome = eval::decide(model, &flow);
                            let Some(at) = outcome
                                .decisions
                                .iter()
                                .find(|x| (x.endpoint, x.direction) == (d.endpoint, d.direction))
                            else {
                                continue;
                            };
                            let req = l7::HttpRequest {
                                method,
                                path,
                                authority: "svc",
                                headers: &[],
                            };
                            let proxy = rules.http(d.direction, port, d.remote_identity, &req);
                            let allowed = matches!(proxy, l7::Verdict::Allowed(_));
                            l7_checked += 1;
                            if allowed != (at.verdict == Verdict::Allow) {
                                return Err(format!(
                                    "{src:?} -> {dst:?} tcp/{port} {method} {path}: at {:?} \
                                     {:?} eval says {:?} ({:?}) but the proxy {proxy}; map \
                                     entry {hit:?}\n{npds:#}",
                                    d.endpoint, d.direction, at.verdict, at.why
                                ));
                            }
                        }
                    }
                    // A redirected DNS flow: the DNS proxy, reading the endpoint's DNS
                    // rules, decides each query as the evaluator does.
                    let dns_port = ProxyPorts::default().dns_egress;
                    if !bad
                        && d.direction == polc_compiler::ir::Direction::Egress
                        && hit.is_some_and(|(_, e)| {
                            !e.deny && e.proxy.as_ref().is_some_and(|p| p.port == dns_port)
                        })
                    {
                        l7_checked += check_dns(model, policy, d, &flow)?;
                    }
                    if bad {
                        return Err(format!(
                            "{:?} -> {:?} {:?}/{port}: at {:?} {:?} eval says {:?} ({:?}, \
                             proxy {:?}, remote id {}) but the map says {:?} via {:?}\nmap: \
                             {:#?}",
                            src,
                            dst,
                            proto,
                            d.endpoint,
                            d.direction,
                            d.verdict,
                            d.why,
                            d.proxy,
                            d.remote_identity,
                            map_verdict,
                            hit,
                            policy.map.keys().collect::<Vec<_>>()
                        ));
                    }
                }
            }
        }
    }
    Ok((checked, l7_checked))
}

/// The DNS proxy's verdict on a few names for a flow the map redirects to it, against
/// `eval`'s; returns how many were compared.
fn check_dns(
    model: &Model,
    policy: &mapstate::EndpointPolicy,
    d: &eval::Decision,
    flow: &Flow,
) -> Result<usize, String> {
    use polc_cli::proxy::config::{Config as ProxyConfig, dns_endpoint};
    use polc_cli::proxy::dns::{DnsProxy, DnsVerdict};
    let (Some(pod), Some(node)) = (model.pod(d.endpoint), model.node_of(d.endpoint)) else {
        return Ok(0);
    };
    let Some(client) = pod.ips.first().copied() else {
        return Ok(0);
    };
    let server = match flow.dst {
        Peer::Pod(i) => model.inventory.pods[i].ips.first().copied(),
        Peer::Host(n) => model.inventory.nodes[n].ips.first().copied(),
        Peer::External(ip) => Some(ip),
    };
    let Some(server) = server else {
        return Ok(0);
    };
    let cache = model.identities.ipcache(&model.inventory, &node.name);
    let mut config = ProxyConfig::new(model, &node.name, &ProxyPorts::default(), &cache);
    config.dns.extend(dns_endpoint(1, pod.ips.clone(), policy));
    let proxy = DnsProxy::new(&config, None);
    let mut n = 0;
    for name in [
        "api.example.com",
        "x.cdn.example.com",
        "a.b.cdn.example.com",
        "evil.org",
    ] {
        let asked = Flow {
            request: Some(eval::Request::Dns { query: name.into() }),
            ..flow.clone()
        };
        let outcome = eval::decide(model, &asked);
        let Some(at) = outcome
            .decisions
            .iter()
            .find(|x| (x.endpoint, x.direction) == (d.endpoint, d.direction))
        else {
            continue;
        };
        let verdict = proxy.judge(
            client,
            std::net::SocketAddr::new(server, flow.port),
            flow.proto == Proto::Tcp,
            name,
        );
        n += 1;
        if matches!(verdict, DnsVerdict::Allowed(_)) != (at.verdict == Verdict::Allow) {
            return Err(format!(
                "{:?} -> {:?} {:?}/{} DNS {name}: eval says {:?} ({:?}) but the DNS proxy \
                 {verdict:?}\n{:#?}",
                flow.src, flow.dst, flow.proto, flow.port, at.verdict, at.why, config.dns
            ));
        }
    }
    Ok(n)
}

/// HTTP rules per peer and port: the proxy, reading what `npds` emits, decides as `eval`.
#[test]
fn the_proxy_decides_http_requests_as_eval_does() {
    let model = fixed_model(
        "fixed.yaml",
        &mixed_pods(4),
        r#"---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: h, namespace: a}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}], rules: {http: [{method: GET}]}}]
  - fromEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}], rules: {http: [{method: POST, path: "/items"}]}}]
  - fromEndpoints: [{matchLabels: {app: db}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - fromEntities: [host]
    toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {http: [{path: "/"}]}}]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: d}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {tier: back}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"#,
    );
    let (checked, l7_checked) = check(&model).unwrap_or_else(|e| panic!("{e}"));
    assert!(checked > 100 && l7_checked >= 6, "{checked} {l7_checked}");
}

/// A recompute keeps the identity numbers an earlier one gave (`keep_numbers`): a new pod
/// whose labels sort first takes a new number instead of shifting the others', and the map
/// still agrees with `eval`.
#[test]
fn identities_keep_their_numbers_across_a_change() {
    let pod = |app: usize, node: usize| PodGen {
        ns: 0,
        app,
        tier: false,
        node,
    };
    // One policy: web takes TCP 8080 from api.
    let policy = PolicyGen {
        clusterwide: false,
        ns: 0,
        subject: Some(0),
        ingress: vec![ItemGen {
            deny: false,
            peers: Some(vec![PeerGen::App(1, None)]),
            ports: Some(vec![PortGen::Num(8080, "TCP")]),
            http: false,
            icmp: false,
        }],
        egress: Vec::new(),
        default_deny: None,
    };
    let before = build(&[pod(0, 0), pod(2, 1)], std::slice::from_ref(&policy)).unwrap();
    let mut after = build(&[pod(1, 0), pod(0, 0), pod(2, 1)], &[policy]).unwrap();
    let id_of = |m: &Model, app: &str| {
        let i = m
            .inventory
            .pods
            .iter()
            .position(|p| p.labels.iter().any(|(k, v)| k == "app" && v == app))
            .unwrap();
        m.identities.pod_identity[i].unwrap()
    };
    let (web, db) = (id_of(&before, "web"), id_of(&before, "db"));
    // Numbered afresh, the new pod (app=api sorts first) shifts the others.
    assert_ne!((id_of(&after, "web"), id_of(&after, "db")), (web, db));
    after.identities.keep_numbers(&before.identities);
    assert_eq!((id_of(&after, "web"), id_of(&after, "db")), (web, db));
    let api = id_of(&after, "api");
    assert!(
        api > web.max(db),
        "the new identity takes a new number: {api}"
    );
    check(&after).unwrap_or_else(|e| panic!("{e}"));
}

/// DNS rules per server and port: the DNS proxy, reading the rules the node's proxy
/// configuration carries, decides each query as `eval`.
#[test]
fn the_dns_proxy_decides_queries_as_eval_does() {
    let model = fixed_model(
        "dns.yaml",
        &mixed_pods(6),
        r#"---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: d, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {app: db}}]
    toPorts: [{ports: [{port: "53", protocol: ANY}], rules: {dns: [{matchName: api.example.com}, {matchPattern: "*.cdn.example.com"}]}}]
  - toEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchPattern: "*"}]}}]
  - toEndpoints: [{matchLabels: {tier: back}}]
    toPorts: [{ports: [{port: "53", protocol: TCP}]}]
  - toCIDR: [203.0.113.0/24]
    toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchPattern: "**.example.com"}]}}]
"#,
    );
    let (checked, l7_checked) = check(&model).unwrap_or_else(|e| panic!("{e}"));
    assert!(checked > 100 && l7_checked >= 16, "{checked} {l7_checked}");
}

/// Addresses learnt from DNS answers get identities that the `toFQDNs` selectors matching
/// their names select (and CIDR selectors holding them), in the map as in `eval`; names no
/// selector matches give their address nothing.
#[test]
fn learnt_fqdn_addresses_are_allowed_by_the_map_as_by_eval() {
    let pods: Vec<PodGen> = (0..2)
        .map(|app| PodGen {
            ns: 0,
            app,
            tier: false,
            node: 0,
        })
        .collect();
    let mut model = fixed_model(
        "fqdn.yaml",
        &pods,
        r#"---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: f, namespace: a}
spec:
  endpointSelector: {}
  egress:
  - toFQDNs: [{matchName: api.example.com}, {matchPattern: "*.cdn.example.com"}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
  - toCIDR: [198.51.100.0/24]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#,
    );
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let judge = |model: &Model, to: &str, port: u16| {
        let flow = Flow {
            src: Peer::Pod(0),
            dst: Peer::External(ip(to)),
            proto: Proto::Tcp,
            port,
            request: None,
        };
        let outcome = eval::decide(model, &flow);
        let mut cache = SelectorCache::new(model);
        let d = &outcome.decisions[0];
        let policy = mapstate::compute(
            model,
            &mut cache,
            d.endpoint,
            &ProxyPorts::default(),
            &mapstate::listeners(model),
        );
        let hit = mapstate::lookup(&policy.map, d.direction, d.remote_identity, 6, port);
        let map = mapstate::verdict_of(hit);
        assert_eq!(map, outcome.verdict, "{to}:{port}: map and eval differ");
        (outcome.verdict, d.remote_identity)
    };
    // Before any answer, toFQDNs selects nothing.
    assert_eq!(judge(&model, "203.0.113.10", 443).0, Verdict::Deny);
    model.learn_dns(vec![
        ("API.example.com".into(), ip("203.0.113.10")),
        ("img.cdn.example.com".into(), ip("198.51.100.7")),
        ("x.img.cdn.example.com".into(), ip("192.0.2.99")),
        ("other.org".into(), ip("192.0.2.9")),
    ]);
    let (v, api) = judge(&model, "203.0.113.10", 443);
    assert_eq!(v, Verdict::Allow);
    assert_ne!(api, polc_compiler::identity::WORLD);
    // Inside a policy prefix: the CIDR rule selects the learnt identity too.
    let (v, cdn) = judge(&model, "198.51.100.7", 443);
    assert_eq!(v, Verdict::Allow);
    assert_eq!(judge(&model, "198.51.100.7", 80).0, Verdict::Allow);
    assert_ne!(api, cdn, "different label sets, different identities");
    // `*` is one label; a name no selector matches gets no identity.
    assert_eq!(judge(&model, "192.0.2.99", 443).0, Verdict::Deny);
    assert_eq!(judge(&model, "192.0.2.9", 443).0, Verdict::Deny);
    assert_eq!(judge(&model, "203.0.113.10", 80).0, Verdict::Deny);
    // Learning again keeps the numbers.
    model.learn_dns(vec![
        ("api.example.com".into(), ip("203.0.113.10")),
        ("api.example.com".into(), ip("203.0.113.11")),
    ]);
    assert_eq!(judge(&model, "203.0.113.10", 443), (Verdict::Allow, api));
    assert_eq!(judge(&model, "203.0.113.11", 443), (Verdict::Allow, api));
    assert_eq!(
        judge(&model, "198.51.100.7", 443).0,
        Verdict::Deny,
        "no longer learnt"
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn map_state_lookup_agrees_with_eval(
        pods in prop::collection::vec(pod_strategy(), 2..6),
        policies in prop::collection::vec(policy_strategy(), 1..5),
    ) {
        if let Some(model) = build(&pods, &policies) {
            let text: String = policies.iter().enumerate().map(|(i, p)| policy_yaml(i, p)).collect();
            if let Err(e) = check(&model) {
                prop_assert!(false, "{}\npolicies:\n{}", e, text);
            }
        }
    }
}
