//! The ends `polc graph` and `polc diff` draw: the cluster's workloads (one pod per identity,
//! since pods with the same identity get the same verdicts), every node's host, and one
//! outside address per class of the prefixes the policies name.

use crate::eval::Peer;
use crate::model::Model;
use ipnet::IpNet;
use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

/// The ends of a comparison of `old` and `new` (the same model twice for one policy set):
/// the first pod of each identity of `new`'s inventory that is not host-network, every
/// node's host, and [`outside_addresses`] of both.
pub fn ends(old: &Model, new: &Model) -> Vec<Peer> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, p) in new.inventory.pods.iter().enumerate() {
        if !p.host_network && seen.insert(new.identities.pod_identity.get(i).copied().flatten()) {
            out.push(Peer::Pod(i));
        }
    }
    out.extend((0..new.inventory.nodes.len()).map(Peer::Host));
    out.extend(
        outside_addresses(&[old, new], None)
            .into_iter()
            .map(Peer::External),
    );
    out
}

/// Representative outside addresses: one per class of the prefixes the policies of `models`
/// name (inside `within`, if given), and addresses outside every prefix, per family. Cluster
/// addresses (of the first model's inventory) are never outside.
pub fn outside_addresses(models: &[&Model], within: Option<IpNet>) -> Vec<IpAddr> {
    let mut prefixes: Vec<IpNet> = models.iter().flat_map(|m| m.policies.prefixes()).collect();
    prefixes.sort();
    prefixes.dedup();
    let mut candidates: Vec<IpAddr> = Vec::new();
    for p in &prefixes {
        // The first addresses of each prefix, and just past its end.
        let net = p.network();
        candidates.push(net);
        candidates.push(bump(net, 1));
        candidates.push(bump(p.broadcast(), 1));
    }
    if let Some(w) = within {
        candidates.push(w.network());
        candidates.push(w.broadcast());
    }
    for s in [
        "203.0.113.77",
        "198.51.100.77",
        "192.0.2.77",
        "8.8.8.8",
        "2001:db8::77",
    ] {
        if let Ok(ip) = s.parse() {
            candidates.push(ip);
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let Some(first) = models.first() else {
        return out;
    };
    // What `eval::locate` finds in the cluster, as a set: addresses of pods that are not
    // host-network, and of nodes.
    let inv = &first.inventory;
    let cluster: HashSet<IpAddr> = inv
        .pods
        .iter()
        .filter(|p| !p.host_network)
        .flat_map(|p| p.ips.iter().copied())
        .chain(inv.nodes.iter().flat_map(|n| n.ips.iter().copied()))
        .collect();
    for ip in candidates {
        if within.is_some_and(|w| !w.contains(&ip)) || cluster.contains(&ip) {
            continue;
        }
        // One address per set of containing prefixes.
        let class: Vec<IpNet> = prefixes
            .iter()
            .filter(|p| p.contains(&ip))
            .copied()
            .collect();
        if seen.insert((ip.is_ipv4(), class)) {
            out.push(ip);
        }
    }
    out
}

fn bump(ip: IpAddr, by: u32) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(u32::from(a).wrapping_add(by).into()),
        IpAddr::V6(a) => IpAddr::V6(u128::from(a).wrapping_add(u128::from(by)).into()),
    }
}
