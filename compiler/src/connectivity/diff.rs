//! What changes between two policy sets over the same cluster: the pairs of ends whose
//! allowed ports differ.
//!
//! A pair's ports depend on the source's egress side, the destination's ingress side, and the
//! identity classes each sees of the other (see the [module doc](super)). When the two
//! models share the cluster and its identities (the policies name the same prefixes and
//! agree on node selectors), those classes are the same in both, and a side can only change
//! for an endpoint that a changed rule applies to: every other endpoint is subject to the
//! same rules, which select the same identities. So only the rules that differ (compared
//! without their locations, [`RuleKey`]) are looked at, only the classes of the endpoints
//! they apply to are recomputed ([`Compilation::update`]), and only pairs with such an
//! endpoint as the source (if its egress side changed) or the destination (ingress) are
//! compared. Otherwise every pair is compared.

use super::{Builder, Connectivity, Policies, PortSet};
use crate::compile::Compilation;
use crate::eval::Peer;
use crate::inventory::Inventory;
use crate::ir::{Direction, PeerKind, Peers, PortSpec, Ports, Proto, Rule, Selector, Subject};
use crate::mapstate::ProxyPorts;
use crate::model::{EndpointRef, Model};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A pair of ends whose allowed ports differ between two policy sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairChange {
    /// The source end (index into the ends).
    pub from: usize,
    /// The destination end.
    pub to: usize,
    /// What the source may send to the destination under the old policies.
    pub before: PortSet,
    /// Under the new ones.
    pub after: PortSet,
}

/// A rule as far as verdicts at L4 go: everything but locations, paths and L7 rules.
#[derive(PartialEq, Eq, Hash)]
struct RuleKey<'a> {
    subject: &'a Subject,
    default_deny: (bool, bool),
    requires: (&'a [Selector], &'a [Selector]),
    items: Vec<ItemKey<'a>>,
}

#[derive(PartialEq, Eq, Hash)]
struct ItemKey<'a> {
    direction: Direction,
    deny: bool,
    peers: Option<Vec<&'a PeerKind>>,
    ports: Option<Vec<(Proto, &'a PortSpec)>>,
}

impl<'a> RuleKey<'a> {
    fn of(r: &'a Rule) -> RuleKey<'a> {
        RuleKey {
            subject: &r.subject,
            default_deny: (
                r.default_deny(Direction::Ingress),
                r.default_deny(Direction::Egress),
            ),
            requires: (&r.requires.ingress, &r.requires.egress),
            items: r
                .items
                .iter()
                .map(|i| ItemKey {
                    direction: i.direction,
                    deny: i.deny,
                    peers: match &i.peers {
                        Peers::Any => None,
                        Peers::List(p) => Some(p.iter().map(|p| &p.kind).collect()),
                    },
                    ports: match &i.ports {
                        Ports::Any => None,
                        Ports::List(p) => Some(p.iter().map(|p| (p.proto, &p.port)).collect()),
                    },
                })
                .collect(),
        }
    }
}

/// The rules of `old` and of `new` that the other has no equal of (as multisets).
fn changed_rules(old: &Model, new: &Model) -> (Vec<Rule>, Vec<Rule>) {
    let mut count: HashMap<RuleKey<'_>, isize> = HashMap::new();
    for r in &old.policies.rules {
        *count.entry(RuleKey::of(r)).or_default() += 1;
    }
    for r in &new.policies.rules {
        *count.entry(RuleKey::of(r)).or_default() -= 1;
    }
    let gone = old
        .policies
        .rules
        .iter()
        .filter(|r| count.get(&RuleKey::of(r)).is_some_and(|c| *c != 0))
        .map(|r| (**r).clone())
        .collect();
    let came = new
        .policies
        .rules
        .iter()
        .filter(|r| count.get(&RuleKey::of(r)).is_some_and(|c| *c != 0))
        .map(|r| (**r).clone())
        .collect();
    (gone, came)
}

/// Whether two models have the same cluster, agent settings and identities, so that a rule
/// selects the same identities in both, and endpoints fall into classes the same way.
fn same_cluster(a: &Model, b: &Model) -> bool {
    let (ca, cb) = (&a.config, &b.config);
    let (ia, ib) = (&a.inventory, &b.inventory);
    let (da, db) = (&a.identities, &b.identities);
    ca.enforcement == cb.enforcement
        && ca.allow_localhost == cb.allow_localhost
        && ca.cluster_name == cb.cluster_name
        && (Arc::ptr_eq(&a.pod_labels, &b.pod_labels) || a.pod_labels == b.pod_labels)
        && (Arc::ptr_eq(ia, ib) || same_inventory(ia, ib))
        && da.len() == db.len()
        && da
            .iter()
            .zip(db.iter())
            .all(|(x, y)| x.id == y.id && x.kind == y.kind && x.labels == y.labels)
        && da.pod_identity == db.pod_identity
        && da.cidrs == db.cidrs
        && da.node_identity == db.node_identity
        && da.dual_stack == db.dual_stack
        // Classes of endpoints are per node when policies select nodes: the two
        // compilations must key them alike.
        && crate::compile::uses_node_selectors(a) == crate::compile::uses_node_selectors(b)
}

/// Whether two inventories have the same pods and nodes, as far as policy goes.
fn same_inventory(ia: &Inventory, ib: &Inventory) -> bool {
    ia.pods.len() == ib.pods.len()
        && ia.pods.iter().zip(&ib.pods).all(|(p, q)| {
            p.namespace == q.namespace
                && p.name == q.name
                && p.node == q.node
                && p.host_network == q.host_network
                && p.ips == q.ips
                && p.named_ports == q.named_ports
        })
        && ia.nodes.len() == ib.nodes.len()
        && ia.nodes.iter().zip(&ib.nodes).all(|(n, m)| {
            n.name == m.name && n.labels == m.labels && n.ips == m.ips && n.apiserver == m.apiserver
        })
}

/// The pairs of `peers` (as indices, in (from, to) order) whose allowed ports differ between
/// `old`'s and `new`'s policies, with both port sets. `peers` index `new`'s inventory, which
/// for an exact incremental answer is `old`'s too.
pub fn changes(old: &Model, new: &Model, peers: &[Peer]) -> Vec<PairChange> {
    let mut compilation = Compilation::new(old, None, ProxyPorts::default());
    let mut b = Builder::new();
    b.add_view(old, peers, &Policies::new(old, &compilation), None);
    let endpoints: Vec<usize> = (0..peers.len())
        .filter(|&k| !matches!(peers[k], Peer::External(_)))
        .collect();
    let incremental = same_cluster(old, new);
    if incremental {
        let (gone, came) = changed_rules(old, new);
        compilation.update(new, &gone, &came);
        let changed: HashSet<usize> = endpoints
            .iter()
            .copied()
            .filter(|&k| {
                let ep = match peers[k] {
                    Peer::Pod(i) => EndpointRef::Pod(i),
                    Peer::Host(n) => EndpointRef::Host(n),
                    Peer::External(_) => return false,
                };
                gone.iter().any(|r| old.selects(r, ep)) || came.iter().any(|r| new.selects(r, ep))
            })
            .collect();
        b.add_view(
            new,
            peers,
            &Policies::new(new, &compilation),
            Some((0, &changed)),
        );
    } else {
        let fresh = Compilation::new(new, None, ProxyPorts::default());
        b.add_view(new, peers, &Policies::new(new, &fresh), None);
    }
    let mut conn = b.finish(peers);
    let mut out = if incremental {
        reachable_pairs(&mut conn, &endpoints)
    } else {
        every_pair(&mut conn)
    };
    out.sort_unstable_by_key(|c| (c.from, c.to));
    out
}

/// The pair `s -> d` if its ports differ between the two views.
fn compare(conn: &mut Connectivity, s: usize, d: usize, out: &mut Vec<PairChange>) {
    let before = conn.allowed_in(0, s, d);
    let after = conn.allowed_in(1, s, d);
    if before != after {
        out.push(PairChange {
            from: s,
            to: d,
            before: conn.sets.get(before).clone(),
            after: conn.sets.get(after).clone(),
        });
    }
}

/// Same cluster and identities: only pairs from an endpoint whose egress side changed, or
/// to one whose ingress side changed, can differ.
fn reachable_pairs(conn: &mut Connectivity, endpoints: &[usize]) -> Vec<PairChange> {
    let side = |c: &Connectivity, v: usize, k: usize| c.views[v].sides[k];
    let changed = |conn: &Connectivity, pick: fn((u32, u32)) -> u32| -> Vec<usize> {
        endpoints
            .iter()
            .copied()
            .filter(|&k| side(conn, 0, k).map(pick) != side(conn, 1, k).map(pick))
            .collect()
    };
    let sources = changed(conn, |s| s.0);
    let destinations = changed(conn, |s| s.1);
    let n = conn.peers.len();
    let mut is_source = vec![false; n];
    for &s in &sources {
        is_source[s] = true;
    }
    let mut out = Vec::new();
    for (s, &all) in is_source.iter().enumerate() {
        if all {
            for d in 0..n {
                compare(conn, s, d, &mut out);
            }
        } else {
            for &d in &destinations {
                compare(conn, s, d, &mut out);
            }
        }
    }
    out
}

/// Any two models: every pair may differ. Between two non-host ends a pair's ports depend
/// only on the source's key (egress side, identity class, family) and the destination's
/// key (ingress side, identity class, family) in each view, so pairs of *joint* keys (the
/// key in the old view and in the new one) are compared once, and only the members of those
/// that differ are listed; pairs with a host are compared one by one.
fn every_pair(conn: &mut Connectivity) -> Vec<PairChange> {
    type ViewKey = (u32, u32, super::Family);
    let n = conn.peers.len();
    let is_host = |c: &Connectivity, e: usize| matches!(c.peers[e], Peer::Host(_));
    let key = |c: &Connectivity, v: usize, e: usize, egress: bool| -> ViewKey {
        let view = &c.views[v];
        let side = view.sides[e].map_or(u32::MAX, |(o, i)| if egress { o } else { i });
        (side, view.class[e], c.family[e])
    };
    // Joint keys, their members, and a member's key in each view.
    let joint = |egress: bool| {
        let mut ids: HashMap<(ViewKey, ViewKey), usize> = HashMap::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut keys: Vec<(ViewKey, ViewKey)> = Vec::new();
        for e in (0..n).filter(|&e| !is_host(conn, e)) {
            let k = (key(conn, 0, e, egress), key(conn, 1, e, egress));
            let id = *ids.entry(k).or_insert_with(|| {
                members.push(Vec::new());
                keys.push(k);
                members.len() - 1
            });
            members[id].push(e);
        }
        (members, keys)
    };
    let (src_members, src_keys) = joint(true);
    let (dst_members, dst_keys) = joint(false);
    let entry = |c: &mut Connectivity, s: ViewKey, d: ViewKey| {
        let out = if s.0 == u32::MAX {
            super::FULL
        } else {
            c.tables[s.0 as usize][d.1 as usize]
        };
        let inn = if d.0 == u32::MAX {
            super::FULL
        } else {
            c.tables[d.0 as usize][s.1 as usize]
        };
        c.sets.meet(out, inn, s.2, d.2)
    };
    let mut out = Vec::new();
    for (js, &(s0, s1)) in src_keys.iter().enumerate() {
        for (jd, &(d0, d1)) in dst_keys.iter().enumerate() {
            let before = entry(conn, s0, d0);
            let after = entry(conn, s1, d1);
            if before == after {
                continue;
            }
            let (b, a) = (conn.sets.get(before).clone(), conn.sets.get(after).clone());
            for &s in &src_members[js] {
                for &d in &dst_members[jd] {
                    if s != d {
                        out.push(PairChange {
                            from: s,
                            to: d,
                            before: b.clone(),
                            after: a.clone(),
                        });
                    }
                }
            }
        }
    }
    let hosts: Vec<bool> = (0..n).map(|e| is_host(conn, e)).collect();
    for h in (0..n).filter(|&e| hosts[e]) {
        for (e, &host) in hosts.iter().enumerate() {
            compare(conn, h, e, &mut out);
            if !host {
                compare(conn, e, h, &mut out);
            }
        }
    }
    out
}
