//! The lab's topology, decided from the inventory before anything is built: which network
//! namespaces exist, their interfaces, addresses and routes, as the `ip -batch` scripts that
//! make them. Pure: no syscalls, so the plan is unit-tested and recorded in the state file.
//!
//! ```text
//!  pod ns ─eth0══lxcK─┐                                   ┌─ world ns (the uplink)
//!  pod ns ─eth0══lxcJ─┼─ node ns (router) ─up0══uN─ br0 ──┤   br0 bridges every node's up0,
//!  host ns ─eth0══hst0┘                                   │   world addresses live on its lo
//!                        node ns of another node ─up0═════┘
//! ```
//!
//! Every node is a router namespace; its host (the node's InternalIPs, where `host/NODE` and
//! host-network pods live) is a namespace behind the veth `hst0`, so the host endpoint is
//! enforced on `hst0` like a pod on its `lxc` device, for traffic from local pods too. Every
//! route is a host route (`/32`, `/128`) whose next hop is an IPv6 link-local address (IPv4
//! routes use `via inet6`), so the lab needs no address of its own in any family: the only
//! addresses are the inventory's and the world addresses probes name.

use ipnet::IpNet;
use polc_compiler::model::Model;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};

/// Every lab's namespaces start with this.
pub const PREFIX: &str = "plab-";

/// The router side of a pod's or host's veth.
const ROUTER_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// The endpoint side of a pod's or host's veth.
const ENDPOINT_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
/// The world namespace's bridge.
const WORLD_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xffff);

/// A router's link to the world namespace.
pub const UPLINK: &str = "up0";
const TO_PROXY: u32 = polc_ebpf::abi::MARK_MAGIC_TO_PROXY;
const MARK_MASK: u32 = polc_ebpf::abi::MARK_MAGIC_MASK;
const PROXY_TABLE: u32 = polc_ebpf::abi::PROXY_ROUTE_TABLE;

/// The uplink address of node `index`'s router (`fe80::1:<index+1>`).
fn uplink_ll(index: usize) -> Ipv6Addr {
    // Checked by `Plan::new`: fewer than 65,535 nodes.
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 1, (index + 1) as u16)
}

/// Whether `name` can name a lab: 1-12 lower-case letters, digits and `-`.
pub fn valid_name(name: &str) -> bool {
    (1..=12).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
}

/// The namespace prefix of lab `name`.
pub fn ns_prefix(name: &str) -> String {
    format!("{PREFIX}{name}-")
}

/// One node: its router namespace and its host namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    /// The node's name.
    pub name: String,
    /// Its index in the inventory's nodes (`None` for a node only pods name).
    pub inventory: Option<usize>,
    /// The router namespace.
    pub router: String,
    /// The host namespace (the node's addresses).
    pub host: String,
    /// The node's addresses.
    pub ips: Vec<IpAddr>,
}

/// One pod with its own network namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPlan {
    /// `namespace/name`.
    pub key: String,
    /// Its index in the inventory's pods.
    pub pod: usize,
    /// Its node (index into [`Plan::nodes`]).
    pub node: usize,
    /// Its network namespace.
    pub netns: String,
    /// The node-side end of its veth, in the router namespace.
    pub lxc: String,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
}

/// The lab's topology.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The lab's name.
    pub lab: String,
    /// Nodes.
    pub nodes: Vec<NodePlan>,
    /// Pods with a namespace (not host-network, with an address).
    pub pods: Vec<PodPlan>,
    /// The world namespace.
    pub world: String,
    /// Pods left out, and why.
    pub skipped: Vec<(String, String)>,
}

impl Plan {
    /// The topology of `model`'s inventory for lab `lab`.
    pub fn new(lab: &str, model: &Model) -> Result<Plan, String> {
        let p = ns_prefix(lab);
        let inv = &model.inventory;
        let mut names: Vec<(String, Option<usize>)> = inv
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), Some(i)))
            .collect();
        for pod in &inv.pods {
            if !pod.host_network
                && !pod.node.is_empty()
                && !names.iter().any(|(n, _)| *n == pod.node)
            {
                names.push((pod.node.clone(), None));
            }
        }
        if names.len() >= 0xffff {
            return Err(format!("{} nodes are more than a lab holds", names.len()));
        }
        let mut taken: BTreeSet<IpAddr> = BTreeSet::new();
        let mut skipped = Vec::new();
        let mut nodes = Vec::new();
        for (i, (name, inventory)) in names.into_iter().enumerate() {
            let mut ips = Vec::new();
            if let Some(n) = inventory {
                for ip in &inv.nodes[n].ips {
                    if usable(ip) && taken.insert(*ip) {
                        ips.push(*ip);
                    }
                }
            }
            nodes.push(NodePlan {
                name,
                inventory,
                router: format!("{p}n{i}"),
                host: format!("{p}h{i}"),
                ips,
            });
        }
        let mut pods = Vec::new();
        let mut per_node: BTreeMap<usize, usize> = BTreeMap::new();
        for (i, pod) in inv.pods.iter().enumerate() {
            let key = pod.key();
            if pod.host_network {
                // A host-network pod is its node's host.
                continue;
            }
            let Some(node) = nodes.iter().position(|n| n.name == pod.node) else {
                skipped.push((key, "it is on no node".into()));
                continue;
            };
            let mut ips = Vec::new();
            for ip in &pod.ips {
                if !usable(ip) {
                    skipped.push((key.clone(), format!("its address {ip} cannot be used")));
                } else if !taken.insert(*ip) {
                    skipped.push((
                        key.clone(),
                        format!("its address {ip} belongs to another pod or node"),
                    ));
                } else {
                    ips.push(*ip);
                }
            }
            if ips.is_empty() {
                if pod.ips.is_empty() {
                    skipped.push((key, "it has no address".into()));
                }
                continue;
            }
            let k = per_node.entry(node).or_default();
            pods.push(PodPlan {
                key,
                pod: i,
                node,
                netns: format!("{p}p{}", pods.len()),
                lxc: format!("lxc{k}"),
                ips,
            });
            *k += 1;
        }
        Ok(Plan {
            lab: lab.to_string(),
            nodes,
            pods,
            world: format!("{p}world"),
            skipped,
        })
    }

    /// Every namespace of the lab, the world first.
    pub fn namespaces(&self) -> Vec<String> {
        let mut out = vec![self.world.clone()];
        for n in &self.nodes {
            out.push(n.router.clone());
            out.push(n.host.clone());
        }
        out.extend(self.pods.iter().map(|p| p.netns.clone()));
        out
    }

    /// The pods of node `node`.
    pub fn pods_of(&self, node: usize) -> impl Iterator<Item = &PodPlan> {
        self.pods.iter().filter(move |p| p.node == node)
    }

    /// Whether two plans build the same network (names, addresses).
    pub fn same_network(&self, other: &Plan) -> bool {
        self.nodes == other.nodes && self.pods == other.pods && self.world == other.world
    }

    /// The world namespace's first script: its bridge.
    pub fn world_bridge_script(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "link set lo up");
        let _ = writeln!(s, "link add br0 type bridge mcast_snooping 0");
        let _ = writeln!(s, "link set br0 addrgenmode none");
        let _ = writeln!(s, "addr add {WORLD_LL}/64 dev br0 nodad");
        let _ = writeln!(s, "link set br0 up");
        s
    }

    /// The world namespace's second script, once the routers made their uplinks: bridge
    /// ports and a route to every pod and node address through its node's router.
    pub fn world_routes_script(&self) -> String {
        let mut s = String::new();
        for i in 0..self.nodes.len() {
            let _ = writeln!(s, "link set u{i} addrgenmode none");
            let _ = writeln!(s, "link set u{i} master br0");
            let _ = writeln!(s, "link set u{i} up");
        }
        for (i, n) in self.nodes.iter().enumerate() {
            for ip in n.ips.iter().chain(self.pods_of(i).flat_map(|p| &p.ips)) {
                route(&mut s, *ip, uplink_ll(i), "br0");
            }
        }
        s
    }

    /// Node `i`'s router script: veths to its pods, its host and the uplink, and routes.
    pub fn router_script(&self, i: usize) -> String {
        let n = &self.nodes[i];
        let mut s = String::new();
        let _ = writeln!(s, "link set lo up");
        let veth = |s: &mut String, local: &str, peer: &str, peer_ns: &str, ll: Ipv6Addr| {
            let _ = writeln!(
                s,
                "link add {local} type veth peer name {peer} netns {peer_ns}"
            );
            let _ = writeln!(s, "link set {local} addrgenmode none");
            let _ = writeln!(s, "addr add {ll}/64 dev {local} nodad");
            let _ = writeln!(s, "link set {local} up");
        };
        for pod in self.pods_of(i) {
            veth(&mut s, &pod.lxc, "eth0", &pod.netns, ROUTER_LL);
        }
        veth(&mut s, "hst0", "eth0", &n.host, ROUTER_LL);
        veth(&mut s, UPLINK, &format!("u{i}"), &self.world, uplink_ll(i));
        for pod in self.pods_of(i) {
            for ip in &pod.ips {
                route(&mut s, *ip, ENDPOINT_LL, &pod.lxc);
            }
        }
        for ip in &n.ips {
            route(&mut s, *ip, ENDPOINT_LL, "hst0");
        }
        for (j, other) in self.nodes.iter().enumerate() {
            if j == i {
                continue;
            }
            for ip in other.ips.iter().chain(self.pods_of(j).flat_map(|p| &p.ips)) {
                route(&mut s, *ip, uplink_ll(j), "up0");
            }
        }
        let _ = writeln!(s, "route add 0.0.0.0/0 via inet6 {WORLD_LL} dev up0");
        let _ = writeln!(s, "route add ::/0 via {WORLD_LL} dev up0");
        // Packets the datapath hands to a proxy socket (marked TO_PROXY) are delivered
        // locally, whatever their destination (Cilium's rule and table).
        let _ = writeln!(
            s,
            "rule add fwmark {TO_PROXY:#x}/{MARK_MASK:#x} lookup {PROXY_TABLE}"
        );
        let _ = writeln!(s, "route add local 0.0.0.0/0 dev lo table {PROXY_TABLE}");
        let _ = writeln!(s, "route add local ::/0 dev lo table {PROXY_TABLE}");
        s
    }

    /// The router's IPv6 policy rule (`ip -6`: a batch line cannot choose the family of a
    /// rule).
    pub fn router_script_v6() -> String {
        format!("rule add fwmark {TO_PROXY:#x}/{MARK_MASK:#x} lookup {PROXY_TABLE}\n")
    }

    /// The script of an endpoint namespace (a pod's or a host's): its end of the veth, its
    /// addresses, default routes through the router.
    pub fn endpoint_script(ips: &[IpAddr]) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "link set lo up");
        let _ = writeln!(s, "link set eth0 addrgenmode none");
        let _ = writeln!(s, "addr add {ENDPOINT_LL}/64 dev eth0 nodad");
        for ip in ips {
            let _ = writeln!(s, "{}", addr_line(*ip, "eth0"));
        }
        let _ = writeln!(s, "link set eth0 up");
        let _ = writeln!(s, "route add 0.0.0.0/0 via inet6 {ROUTER_LL} dev eth0");
        let _ = writeln!(s, "route add ::/0 via {ROUTER_LL} dev eth0");
        s
    }

    /// Where an address lives: a pod's namespace, a host's, or `None` (the world).
    pub fn netns_of(&self, ip: IpAddr) -> Option<&str> {
        if let Some(p) = self.pods.iter().find(|p| p.ips.contains(&ip)) {
            return Some(&p.netns);
        }
        self.nodes
            .iter()
            .find(|n| n.ips.contains(&ip))
            .map(|n| n.host.as_str())
    }
}

/// `addr replace` of a host address (idempotent; IPv6 without duplicate detection).
pub fn addr_line(ip: IpAddr, dev: &str) -> String {
    match ip {
        IpAddr::V4(a) => format!("addr replace {a}/32 dev {dev}"),
        IpAddr::V6(a) => format!("addr replace {a}/128 dev {dev} nodad"),
    }
}

fn route(s: &mut String, ip: IpAddr, via: Ipv6Addr, dev: &str) {
    let _ = match ip {
        IpAddr::V4(a) => writeln!(s, "route replace {a}/32 via inet6 {via} dev {dev}"),
        IpAddr::V6(a) => writeln!(s, "route replace {a}/128 via {via} dev {dev}"),
    };
}

/// Whether the lab can give `ip` to a namespace: not loopback, multicast, unspecified,
/// broadcast, or IPv6 link-local (the lab's own next hops).
pub fn usable(ip: &IpAddr) -> bool {
    if ip.is_loopback() || ip.is_multicast() || ip.is_unspecified() {
        return false;
    }
    match ip {
        IpAddr::V4(a) => !a.is_broadcast(),
        IpAddr::V6(a) => {
            let link_local: IpNet = IpNet::V6(ipnet::Ipv6Net::new_assert(
                Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
                10,
            ));
            !link_local.contains(&IpAddr::V6(*a)) && a.to_ipv4_mapped().is_none()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polc_compiler::model::{Config, Model};

    fn model(inventory: &str) -> Model {
        let mut sources = polc_compiler::source::SourceMap::new();
        sources.add(polc_compiler::source::SourceFile::new(
            "inv.yaml",
            inventory.to_string(),
        ));
        let (objects, _) = polc_compiler::lint(&sources, &polc_compiler::Options::default());
        Model::build(&objects, Config::default()).0
    }

    const INV: &str = "\
apiVersion: v1
kind: Node
metadata: {name: node-1}
status: {addresses: [{type: InternalIP, address: 10.0.0.11}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-2}
status: {addresses: [{type: InternalIP, address: 10.0.0.12}, {type: InternalIP, address: 'fd00::12'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.5, podIPs: [{ip: 10.244.1.5}, {ip: 'fd00:10:244:1::5'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop}
spec: {nodeName: node-2}
status: {podIP: 10.244.2.7}
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: kube-system}
spec: {nodeName: node-2, hostNetwork: true}
status: {podIP: 10.0.0.12}
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: shop}
spec: {nodeName: node-1}
---
apiVersion: v1
kind: Pod
metadata: {name: twin, namespace: shop}
spec: {nodeName: node-1}
status: {podIP: 10.244.2.7}
";

    #[test]
    fn pods_nodes_and_what_is_left_out() {
        let m = model(INV);
        let p = Plan::new("t1", &m).expect("plan");
        assert_eq!(p.nodes.len(), 2);
        assert_eq!(p.nodes[1].router, "plab-t1-n1");
        assert_eq!(p.nodes[1].ips.len(), 2);
        let keys: Vec<&str> = p.pods.iter().map(|x| x.key.as_str()).collect();
        assert_eq!(keys, ["shop/db", "shop/web"], "{:?}", p.skipped);
        let web = &p.pods[1];
        assert_eq!(web.ips.len(), 2);
        assert_eq!(web.lxc, "lxc0");
        let skipped: Vec<&str> = p.skipped.iter().map(|(k, _)| k.as_str()).collect();
        assert!(skipped.contains(&"shop/pending"));
        assert!(skipped.contains(&"shop/twin"), "duplicate address");
        assert_eq!(
            p.netns_of("10.0.0.12".parse().expect("ip")),
            Some("plab-t1-h1")
        );
        assert_eq!(p.netns_of("203.0.113.9".parse().expect("ip")), None);
        assert_eq!(p.namespaces().len(), 1 + 4 + 2);
    }

    #[test]
    fn scripts_route_every_address_through_its_router() {
        let m = model(INV);
        let p = Plan::new("t1", &m).expect("plan");
        let r0 = p.router_script(0);
        assert!(r0.contains("link add lxc0 type veth peer name eth0 netns plab-t1-p1"));
        assert!(r0.contains("route replace 10.244.1.5/32 via inet6 fe80::2 dev lxc0"));
        assert!(r0.contains("route replace fd00:10:244:1::5/128 via fe80::2 dev lxc0"));
        assert!(r0.contains("route replace 10.0.0.11/32 via inet6 fe80::2 dev hst0"));
        assert!(r0.contains("route replace 10.244.2.7/32 via inet6 fe80::1:2 dev up0"));
        assert!(r0.contains("route replace fd00::12/128 via fe80::1:2 dev up0"));
        assert!(r0.contains("route add 0.0.0.0/0 via inet6 fe80::ffff dev up0"));
        let w = p.world_routes_script();
        assert!(w.contains("route replace 10.244.2.7/32 via inet6 fe80::1:2 dev br0"));
        assert!(w.contains("link set u1 master br0"));
        let e = Plan::endpoint_script(&p.pods[1].ips);
        assert!(e.contains("addr replace fd00:10:244:1::5/128 dev eth0 nodad"));
    }

    #[test]
    fn names_and_addresses() {
        assert!(valid_name("lab"));
        assert!(valid_name("ci-3"));
        assert!(!valid_name(""));
        assert!(!valid_name("-x"));
        assert!(!valid_name("Lab"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("thirteen-char"));
        assert!(usable(&"203.0.113.9".parse().expect("ip")));
        assert!(usable(&"169.254.169.254".parse().expect("ip")));
        assert!(!usable(&"127.0.0.1".parse().expect("ip")));
        assert!(!usable(&"fe80::1".parse().expect("ip")));
        assert!(!usable(&"224.0.0.1".parse().expect("ip")));
        assert!(!usable(&"::ffff:1.2.3.4".parse().expect("ip")));
    }
}
