//! The connectivity engine against the reference evaluator: for random small clusters and
//! policies (host policies, node selectors, named ports, denies, CIDRs with exceptions,
//! both address families, the agent settings), every pair of ends gets the ports
//! `eval::decide` allows on every port class; the graph has the classes and edges the
//! flow-by-flow matrix gives; a diff lists exactly the pairs whose ports change. The same
//! holds on every scenario under `tests/scenarios/`.

use polc_compiler::connectivity::{self, Connectivity, PortSet, reference};
use polc_compiler::eval::Peer;
use polc_compiler::model::{Config, Enforcement, Model};
use polc_compiler::source::{SourceFile, SourceMap};
use polc_compiler::{CiliumVersion, Options};
use proptest::prelude::*;
use std::collections::HashSet;
use std::fmt::Write;
use std::net::IpAddr;

mod common;

const APPS: &[&str] = &["web", "api", "db"];
const NAMESPACES: &[&str] = &["a", "b"];
/// The last node runs the apiserver.
const NODES: &[&str] = &["n1", "n2", "n3"];
const PORTS: &[u16] = &[53, 80, 443, 8080, 8050, 9999];
const OUTSIDE: &[&str] = &[
    "203.0.113.7",
    "198.51.100.20",
    "198.51.100.5",
    "10.99.1.2",
    "192.0.2.200",
    "8.8.8.8",
    "2001:db8::7",
    "2001:db9::1",
];

#[derive(Clone, Debug)]
struct PodGen {
    ns: usize,
    app: usize,
    tier: bool,
    node: usize,
    host_network: bool,
    port: u16,
}

fn inventory_yaml(pods: &[PodGen], dual: bool) -> String {
    let mut s = String::new();
    for ns in NAMESPACES {
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    \
             kubernetes.io/metadata.name: {ns}\n    team: t{ns}\n"
        );
    }
    for (i, n) in NODES.iter().enumerate() {
        let role = if i + 1 == NODES.len() {
            "    node-role.kubernetes.io/control-plane: \"\"\n"
        } else {
            ""
        };
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {n}\n  labels:\n    \
             kubernetes.io/hostname: {n}\n    zone: z{}\n{role}status:\n  addresses:\n  - type: \
             InternalIP\n    address: 172.16.0.{}\n",
            i % 2,
            i + 1
        );
    }
    for (i, p) in pods.iter().enumerate() {
        let ips = if p.host_network {
            format!("  podIP: 172.16.0.{}\n", p.node + 1)
        } else if dual {
            format!(
                "  podIP: 10.0.{n}.{h}\n  podIPs:\n  - ip: 10.0.{n}.{h}\n  - ip: fd00::{n}:{h}\n",
                n = p.node,
                h = i + 10
            )
        } else {
            format!("  podIP: 10.0.{}.{}\n", p.node, i + 10)
        };
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\n  namespace: {}\n  \
             labels:\n    app: {}\n    tier: {}\nspec:\n  nodeName: {}\n  hostNetwork: {}\n  \
             containers:\n  - name: c\n    ports:\n    - name: http\n      containerPort: {}\n    \
             - name: dns\n      containerPort: 53\n      protocol: UDP\nstatus:\n{ips}",
            NAMESPACES[p.ns],
            APPS[p.app],
            if p.tier { "front" } else { "back" },
            NODES[p.node],
            p.host_network,
            p.port,
        );
    }
    s
}

#[derive(Clone, Debug)]
enum PeerGen {
    App(usize, Option<usize>),
    Entity(&'static str),
    Cidr(&'static str, Option<&'static str>),
    Nodes(usize),
    EmptySelector,
}

#[derive(Clone, Debug)]
enum PortGen {
    Num(u16, &'static str),
    Range(u16, u16),
    Named(&'static str, &'static str),
    Zero(&'static str),
}

#[derive(Clone, Debug)]
struct ItemGen {
    deny: bool,
    peers: Option<Vec<PeerGen>>,
    ports: Option<Vec<PortGen>>,
    http: bool,
    icmp: Option<(u8, bool)>,
}

#[derive(Clone, Debug)]
struct PolicyGen {
    /// 0: a namespaced CNP, 1: a CCNP, 2: a CCNP host policy.
    kind: u8,
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
        PeerGen::Nodes(zone) => (
            format!("{dir}Nodes"),
            format!("    - matchLabels:\n        zone: z{zone}\n"),
        ),
    }
}

fn item_yaml(item: &ItemGen, ingress: bool) -> String {
    let mut s = String::from("  - ");
    let mut first = true;
    let mut field = |s: &mut String, text: String| {
        if !first {
            s.push_str("    ");
        }
        first = false;
        s.push_str(&text);
    };
    if let Some(peers) = &item.peers {
        // One peer kind per item: the first one's, as the CRD has one list per kind.
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
                PortGen::Named(name, proto) => {
                    tcp_only &= *proto == "TCP";
                    let _ = write!(body, "      - port: {name}\n        protocol: {proto}\n");
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
    if let (Some((t, v6)), None) = (item.icmp, &item.ports) {
        field(
            &mut s,
            format!(
                "icmps:\n    - fields:\n      - type: {t}\n        family: {}\n",
                if v6 { "IPv6" } else { "IPv4" }
            ),
        );
    }
    if first {
        s.push_str("{}\n");
    }
    s
}

fn policy_yaml(i: usize, p: &PolicyGen) -> String {
    // Host policies cannot have L7 rules.
    let mut p = p.clone();
    if p.kind == 2 {
        for item in p.ingress.iter_mut().chain(p.egress.iter_mut()) {
            item.http = false;
        }
    }
    let p = &p;
    let mut s = if p.kind == 0 {
        format!(
            "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: \
             p{i}\n  namespace: {}\nspec:\n",
            NAMESPACES[p.ns]
        )
    } else {
        format!(
            "---\napiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  \
             name: c{i}\nspec:\n"
        )
    };
    match (p.kind, p.subject) {
        (2, Some(zone)) => {
            let _ = write!(
                s,
                "  nodeSelector:\n    matchLabels:\n      zone: z{}\n",
                zone % 2
            );
        }
        (2, None) => s.push_str("  nodeSelector: {}\n"),
        (_, Some(app)) => {
            let _ = write!(
                s,
                "  endpointSelector:\n    matchLabels:\n      app: {}\n",
                APPS[app]
            );
        }
        (_, None) => s.push_str("  endpointSelector: {}\n"),
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
        3 => prop::sample::select(vec![
            "world", "cluster", "host", "remote-node", "kube-apiserver", "all",
        ])
        .prop_map(PeerGen::Entity),
        3 => prop::sample::select(vec![
            ("203.0.113.0/24", None),
            ("0.0.0.0/0", Some("10.0.0.0/8")),
            ("0.0.0.0/0", None),
            ("::/0", None),
            ("10.0.0.0/8", None),
            ("198.51.100.0/24", Some("198.51.100.16/28")),
            ("2001:db8::/32", None),
        ])
        .prop_map(|(c, e)| PeerGen::Cidr(c, e)),
        1 => (0..2usize).prop_map(PeerGen::Nodes),
        1 => Just(PeerGen::EmptySelector),
    ]
}

fn port_strategy() -> impl Strategy<Value = PortGen> {
    prop_oneof![
        4 => (
            prop::sample::select(PORTS.to_vec()),
            prop::sample::select(vec!["TCP", "UDP", "ANY", "SCTP"])
        )
            .prop_map(|(p, pr)| PortGen::Num(p, pr)),
        1 => Just(PortGen::Range(8000, 8100)),
        1 => Just(PortGen::Range(1, 1023)),
        1 => prop::sample::select(vec![("http", "TCP"), ("dns", "UDP"), ("http", "UDP")])
            .prop_map(|(n, p)| PortGen::Named(n, p)),
        1 => prop::sample::select(vec!["TCP", "UDP"]).prop_map(PortGen::Zero),
    ]
}

fn item_strategy() -> impl Strategy<Value = ItemGen> {
    (
        prop::bool::weighted(0.25),
        proptest::option::weighted(0.8, prop::collection::vec(peer_strategy(), 0..3)),
        proptest::option::weighted(0.6, prop::collection::vec(port_strategy(), 1..3)),
        prop::bool::weighted(0.3),
        proptest::option::weighted(
            0.15,
            (prop::sample::select(vec![0u8, 8, 128]), any::<bool>()),
        ),
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
        prop::sample::select(vec![0u8, 0, 0, 1, 2]),
        0..NAMESPACES.len(),
        proptest::option::weighted(0.8, 0..APPS.len()),
        prop::collection::vec(item_strategy(), 0..3),
        prop::collection::vec(item_strategy(), 0..3),
        proptest::option::weighted(0.15, any::<bool>()),
    )
        .prop_map(|(kind, ns, subject, mut ingress, egress, default_deny)| {
            if ingress.is_empty() && egress.is_empty() {
                ingress.push(ItemGen {
                    deny: false,
                    peers: None,
                    ports: None,
                    http: false,
                    icmp: None,
                });
            }
            PolicyGen {
                kind,
                ns,
                subject,
                ingress,
                egress,
                default_deny,
            }
        })
}

fn pod_strategy() -> impl Strategy<Value = PodGen> {
    (
        0..NAMESPACES.len(),
        0..APPS.len(),
        any::<bool>(),
        0..NODES.len(),
        prop::bool::weighted(0.1),
        prop::sample::select(vec![80u16, 8080, 8443]),
    )
        .prop_map(|(ns, app, tier, node, host_network, port)| PodGen {
            ns,
            app,
            tier,
            node,
            host_network,
            port,
        })
}

/// Agent settings: (allow-localhost, enable-policy).
fn config_strategy() -> impl Strategy<Value = (bool, Enforcement)> {
    (
        prop::bool::weighted(0.8),
        prop::sample::select(vec![
            Enforcement::Default,
            Enforcement::Default,
            Enforcement::Default,
            Enforcement::Default,
            Enforcement::Always,
            Enforcement::Never,
        ]),
    )
}

fn load(text: &str, version: CiliumVersion, config: Config) -> Option<Model> {
    let mut sources = SourceMap::new();
    sources.add(SourceFile::new("gen.yaml", text.to_string()));
    let opts = Options {
        version,
        ..Options::default()
    };
    let (objects, diags) = polc_compiler::lint(&sources, &opts);
    if diags
        .iter()
        .any(|d| d.severity == polc_compiler::diag::Severity::Error)
    {
        // Random policies may be ones the agent rejects; those have no meaning to compare.
        return None;
    }
    Some(Model::build(&objects, config).0)
}

fn build(
    pods: &[PodGen],
    dual: bool,
    policies: &[PolicyGen],
    (allow_localhost, enforcement): (bool, Enforcement),
) -> Option<Model> {
    let mut text = inventory_yaml(pods, dual);
    for (i, p) in policies.iter().enumerate() {
        text.push_str(&policy_yaml(i, p));
    }
    let config = Config {
        version: CiliumVersion::V1_19,
        allow_localhost,
        enforcement,
        ..Config::default()
    };
    load(&text, CiliumVersion::V1_19, config)
}

/// The ends `polc graph` draws: one pod per identity, every host, and outside addresses
/// (fixed ones, and around every prefix the models' policies name), from the last model's
/// inventory.
fn ends(models: &[&Model]) -> Vec<Peer> {
    let model = models[models.len() - 1];
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, p) in model.inventory.pods.iter().enumerate() {
        if !p.host_network && seen.insert(model.identities.pod_identity[i]) {
            out.push(Peer::Pod(i));
        }
    }
    out.extend((0..model.inventory.nodes.len()).map(Peer::Host));
    let cluster: HashSet<IpAddr> = model
        .inventory
        .pods
        .iter()
        .flat_map(|p| p.ips.iter().copied())
        .chain(
            model
                .inventory
                .nodes
                .iter()
                .flat_map(|n| n.ips.iter().copied()),
        )
        .collect();
    let bump = |ip: IpAddr| match ip {
        IpAddr::V4(a) => IpAddr::V4(u32::from(a).wrapping_add(1).into()),
        IpAddr::V6(a) => IpAddr::V6(u128::from(a).wrapping_add(1).into()),
    };
    let mut outside: Vec<IpAddr> = OUTSIDE.iter().map(|ip| ip.parse().unwrap()).collect();
    for m in models {
        for net in m.policies.prefixes() {
            outside.extend([net.network(), bump(net.network()), bump(net.broadcast())]);
        }
    }
    let mut taken = HashSet::new();
    out.extend(
        outside
            .into_iter()
            .filter(|ip| !cluster.contains(ip) && taken.insert(*ip))
            .map(Peer::External),
    );
    out
}

/// The flow-by-flow matrix.
fn reference_matrix(model: &Model, peers: &[Peer], models: &[&Model]) -> Vec<Vec<PortSet>> {
    let points = reference::port_points(models);
    peers
        .iter()
        .map(|&s| {
            peers
                .iter()
                .map(|&d| reference::allowed(model, s, d, &points))
                .collect()
        })
        .collect()
}

/// Every pair of ends gets the reference's ports.
fn check_matrix(model: &Model) -> Result<(), String> {
    let peers = ends(&[model]);
    let want = reference_matrix(model, &peers, &[model]);
    let mut conn = Connectivity::new(model, &peers);
    for (i, row) in want.iter().enumerate() {
        for (j, expected) in row.iter().enumerate() {
            let got = conn.allowed(i, j);
            if conn.sets().get(got) != expected {
                return Err(format!(
                    "{:?} -> {:?}: the engine allows {:?}, the evaluator {:?}",
                    peers[i],
                    peers[j],
                    conn.sets().get(got),
                    expected
                ));
            }
        }
    }
    check_graph(&mut conn, &want)
}

/// The graph's classes and edges are the ones the matrix gives, merged as `polc graph` did
/// before the engine: an end joins the first class whose first member has the same row and
/// column (and the same entry both ways between them). Flows between two outside addresses
/// are not drawn (no policy of the cluster is on their path).
fn check_graph(conn: &mut Connectivity, label: &[Vec<PortSet>]) -> Result<(), String> {
    let n = label.len();
    let outside = |i: usize| matches!(conn.peers()[i], Peer::External(_));
    let label: Vec<Vec<PortSet>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    if outside(i) && outside(j) {
                        PortSet::empty()
                    } else {
                        label[i][j].clone()
                    }
                })
                .collect()
        })
        .collect();
    let signature = |i: usize| -> (Vec<&PortSet>, Vec<&PortSet>) {
        (
            (0..n).map(|j| &label[i][j]).collect(),
            (0..n).map(|j| &label[j][i]).collect(),
        )
    };
    let mut classes: Vec<Vec<usize>> = Vec::new();
    for (i, row) in label.iter().enumerate() {
        match classes
            .iter_mut()
            .find(|c| signature(c[0]) == signature(i) && label[c[0]][i] == row[c[0]])
        {
            Some(c) => c.push(i),
            None => classes.push(vec![i]),
        }
    }
    let mut edges = Vec::new();
    for (a, ca) in classes.iter().enumerate() {
        for (b, cb) in classes.iter().enumerate() {
            let (i, j) = (ca[0], cb[0]);
            let l = if a == b {
                cb.get(1).map_or(PortSet::empty(), |&k| label[i][k].clone())
            } else {
                label[i][j].clone()
            };
            if !l.is_empty() {
                edges.push((a, b, l));
            }
        }
    }
    // Grouped by hashes and confirmed, and by the exact comparison alone.
    for g in [conn.graph(), conn.graph_without_hashes()] {
        if g.classes != classes {
            return Err(format!(
                "graph classes {:?}, expected {:?}",
                g.classes, classes
            ));
        }
        let got: Vec<(usize, usize, PortSet)> = g
            .edges
            .iter()
            .map(|&(a, b, l)| (a as usize, b as usize, conn.sets().get(l).clone()))
            .collect();
        if got != edges {
            return Err(format!("graph edges {got:?}, expected {edges:?}"));
        }
    }
    Ok(())
}

/// A diff lists exactly the pairs whose ports the reference says change.
fn check_diff(old: &Model, new: &Model) -> Result<(), String> {
    let peers = ends(&[old, new]);
    let before = reference_matrix(old, &peers, &[old, new]);
    let after = reference_matrix(new, &peers, &[old, new]);
    let mut want = Vec::new();
    for i in 0..peers.len() {
        for j in 0..peers.len() {
            if before[i][j] != after[i][j] {
                want.push((i, j, before[i][j].clone(), after[i][j].clone()));
            }
        }
    }
    // As `polc diff` builds them (one identity table for both policy sets), and apart.
    let (paired_old, paired_new) = Model::pair(
        old.policies.clone(),
        new.policies.clone(),
        (*new.inventory).clone(),
        new.config.clone(),
    );
    for (old, new) in [(old, new), (&paired_old, &paired_new)] {
        check_changes(old, new, &peers, &want)?;
    }
    Ok(())
}

/// The engine's changes between `old` and `new` are `want`.
fn check_changes(
    old: &Model,
    new: &Model,
    peers: &[Peer],
    want: &[(usize, usize, PortSet, PortSet)],
) -> Result<(), String> {
    let got: Vec<_> = connectivity::changes(old, new, peers)
        .into_iter()
        .map(|c| (c.from, c.to, c.before, c.after))
        .collect();
    if got != want {
        let show = |v: &[(usize, usize, PortSet, PortSet)]| -> Vec<String> {
            v.iter()
                .map(|(i, j, a, b)| format!("{:?} -> {:?}: {a:?} => {b:?}", peers[*i], peers[*j]))
                .collect()
        };
        return Err(format!(
            "diff lists\n{:#?}\nthe evaluator\n{:#?}",
            show(&got),
            show(want)
        ));
    }
    Ok(())
}

fn text_of(policies: &[PolicyGen]) -> String {
    policies
        .iter()
        .enumerate()
        .map(|(i, p)| policy_yaml(i, p))
        .collect()
}

/// One policy replaced, removed or added, or one more port in one of its items.
#[derive(Clone, Debug)]
enum Edit {
    Replace(usize, PolicyGen),
    Remove(usize),
    Add(PolicyGen),
    Port(usize, PortGen),
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    prop_oneof![
        2 => (0..8usize, policy_strategy()).prop_map(|(i, p)| Edit::Replace(i, p)),
        1 => (0..8usize).prop_map(Edit::Remove),
        1 => policy_strategy().prop_map(Edit::Add),
        2 => (0..8usize, port_strategy()).prop_map(|(i, p)| Edit::Port(i, p)),
    ]
}

fn apply(policies: &[PolicyGen], edit: &Edit) -> Vec<PolicyGen> {
    let mut out = policies.to_vec();
    match edit {
        Edit::Replace(i, p) => {
            let i = i % out.len();
            out[i] = p.clone();
        }
        Edit::Remove(i) => {
            let i = i % out.len();
            out.remove(i);
        }
        Edit::Add(p) => out.push(p.clone()),
        Edit::Port(i, port) => {
            let i = i % out.len();
            let policy = &mut out[i];
            let items = policy.ingress.iter_mut().chain(policy.egress.iter_mut());
            let mut items: Vec<&mut ItemGen> = items.collect();
            let item = match items.iter().position(|it| it.ports.is_some()) {
                Some(k) => &mut *items[k],
                None => &mut *items[0],
            };
            item.ports.get_or_insert_with(Vec::new).push(port.clone());
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 192,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn engine_matrix_and_graph_agree_with_eval(
        pods in prop::collection::vec(pod_strategy(), 2..7),
        dual in prop::bool::weighted(0.2),
        policies in prop::collection::vec(policy_strategy(), 1..5),
        config in config_strategy(),
    ) {
        if let Some(model) = build(&pods, dual, &policies, config)
            && let Err(e) = check_matrix(&model)
        {
            prop_assert!(false, "{}\npolicies:\n{}", e, text_of(&policies));
        }
    }

    #[test]
    fn diff_of_one_policy_agrees_with_eval(
        pods in prop::collection::vec(pod_strategy(), 2..6),
        dual in prop::bool::weighted(0.2),
        policies in prop::collection::vec(policy_strategy(), 1..5),
        edit in edit_strategy(),
        config in config_strategy(),
    ) {
        let changed = apply(&policies, &edit);
        if let (Some(old), Some(new)) = (
            build(&pods, dual, &policies, config),
            build(&pods, dual, &changed, config),
        ) && let Err(e) = check_diff(&old, &new)
        {
            prop_assert!(
                false,
                "{}\nold policies:\n{}\nnew policies:\n{}",
                e,
                text_of(&policies),
                text_of(&changed)
            );
        }
    }
}

/// Every scenario: the engine's matrix and graph against the evaluator, and the diff of the
/// scenario's policies against no policies and back.
#[test]
fn every_scenario_agrees_with_eval() {
    let dir = common::root().join("tests/scenarios");
    let mut scenarios: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("policies.yaml").is_file())
        .collect();
    scenarios.sort();
    assert!(scenarios.len() >= 50, "only {} scenarios", scenarios.len());
    let mut failures = Vec::new();
    for s in &scenarios {
        let read = |f: &str| std::fs::read_to_string(s.join(f)).unwrap();
        let args = std::fs::read_to_string(s.join("args")).unwrap_or_default();
        let words: Vec<&str> = args.split_whitespace().collect();
        let arg = |name: &str| {
            words
                .iter()
                .position(|w| *w == name)
                .and_then(|i| words.get(i + 1))
        };
        let version: CiliumVersion =
            arg("--cilium-version").map_or(CiliumVersion::V1_19, |v| v.parse().unwrap());
        let config = Config {
            version,
            cluster_name: arg("--cluster-name").map_or("default".into(), |c| c.to_string()),
            ..Config::default()
        };
        let inventory = read("inventory.yaml");
        let with = format!("{inventory}\n---\n{}", read("policies.yaml"));
        let name = s.file_name().unwrap().to_string_lossy().to_string();
        let Some(model) = load(&with, version, config.clone()) else {
            failures.push(format!("{name}: does not load"));
            continue;
        };
        let bare = load(&inventory, version, config).unwrap();
        for (what, result) in [
            ("matrix", check_matrix(&model)),
            ("diff from no policies", check_diff(&bare, &model)),
            ("diff to no policies", check_diff(&model, &bare)),
        ] {
            if let Err(e) = result {
                failures.push(format!("{name}: {what}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
