//! Sets of remote addresses as sorted spans, for what a CIDR group's new addresses change.
//!
//! When a CiliumCIDRGroup changes, the only flows whose verdict an item can change are those
//! to and from the addresses the group gained or lost: every item matches any other address
//! as before. A review of the change then asks about another rule's item only when its
//! remote end can hold one of those addresses ([`Addresses::moved`],
//! [`crate::shadow::Shape::may_hold`]).

use polc_compiler::ir::{CidrPeer, Item, PeerKind, Peers};

/// A set of addresses: (family, first, last) spans, sorted, disjoint and not adjacent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addresses(Vec<(u8, u128, u128)>);

impl Addresses {
    /// The addresses that item `old` and item `new` (its next version) do not both match,
    /// when they differ only in their CIDR peers (`None`: they differ in more, and any flow
    /// may change).
    pub fn moved(old: &Item, new: &Item) -> Option<Addresses> {
        let same = old.direction == new.direction
            && old.deny == new.deny
            && old.auth == new.auth
            && old.ports == new.ports;
        let (Peers::List(a), Peers::List(b)) = (&old.peers, &new.peers) else {
            return (same && old.peers == new.peers).then(Addresses::default);
        };
        let others = |list: &[polc_compiler::ir::Peer]| -> Vec<PeerKind> {
            list.iter()
                .filter(|p| !matches!(p.kind, PeerKind::Cidr(_)))
                .map(|p| p.kind.clone())
                .collect()
        };
        if !same || others(a) != others(b) {
            return None;
        }
        let (a, b) = (Addresses::of_cidrs(a), Addresses::of_cidrs(b));
        Some(a.minus(&b).union(&b.minus(&a)))
    }

    /// The addresses of a peer list's CIDR peers (their exceptions left out).
    fn of_cidrs(peers: &[polc_compiler::ir::Peer]) -> Addresses {
        let mut spans = Vec::new();
        for p in peers {
            if let PeerKind::Cidr(c) = &p.kind {
                if c.except.is_empty() {
                    spans.push(span(&c.net));
                } else {
                    spans.extend(Addresses::of_peer(c).0);
                }
            }
        }
        Addresses::normal(spans)
    }

    fn of_peer(c: &CidrPeer) -> Addresses {
        let except = Addresses::normal(c.except.iter().map(span).collect());
        Addresses(vec![span(&c.net)]).minus(&except)
    }

    /// Spans sorted and merged.
    fn normal(mut spans: Vec<(u8, u128, u128)>) -> Addresses {
        spans.sort_unstable();
        let mut out: Vec<(u8, u128, u128)> = Vec::with_capacity(spans.len());
        for (f, lo, hi) in spans {
            match out.last_mut() {
                Some(last) if last.0 == f && lo <= last.2.saturating_add(1) => {
                    last.2 = last.2.max(hi);
                }
                _ => out.push((f, lo, hi)),
            }
        }
        Addresses(out)
    }

    /// Every address of either set.
    pub fn union(&self, other: &Addresses) -> Addresses {
        Addresses::normal(self.0.iter().chain(&other.0).copied().collect())
    }

    /// The addresses of this set that `other` does not hold: one sweep of both lists.
    fn minus(&self, other: &Addresses) -> Addresses {
        let mut out = Vec::new();
        let mut j = 0;
        for &(f, lo, hi) in &self.0 {
            let mut from = lo;
            // Spans of `other` that end before this one starts meet no later span either.
            while other.0.get(j).is_some_and(|&(g, _, b)| (g, b) < (f, lo)) {
                j += 1;
            }
            let mut k = j;
            let mut whole = true;
            while let Some(&(g, a, b)) = other.0.get(k) {
                if (g, a) > (f, hi) {
                    break;
                }
                if a > from {
                    out.push((f, from, a - 1));
                }
                if b >= hi {
                    whole = false;
                    break;
                }
                from = b + 1;
                k += 1;
            }
            if whole {
                out.push((f, from, hi));
            }
        }
        Addresses(out)
    }

    /// Whether the set holds no address.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the set and the sorted spans `spans` have an address in common.
    pub(crate) fn meets(&self, spans: &[(u8, u128, u128)]) -> bool {
        crate::shadow::intersect(&self.0, spans)
    }
}

/// A prefix as (family, first, last address).
pub(crate) fn span(net: &ipnet::IpNet) -> (u8, u128, u128) {
    match net {
        ipnet::IpNet::V4(n) => (
            4,
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        ipnet::IpNet::V6(n) => (6, u128::from(n.network()), u128::from(n.broadcast())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> Addresses {
        Addresses::normal(nets.iter().map(|n| span(&n.parse().unwrap())).collect())
    }

    #[test]
    fn spans_merge_and_subtract() {
        assert_eq!(
            set(&["10.0.0.0/25", "10.0.0.128/25"]),
            set(&["10.0.0.0/24"])
        );
        let hole = set(&["10.0.0.0/24"]).minus(&set(&["10.0.0.64/26"]));
        assert_eq!(hole, set(&["10.0.0.0/26", "10.0.0.128/25"]));
        assert!(
            set(&["10.0.0.0/24"])
                .minus(&set(&["10.0.0.0/8"]))
                .is_empty()
        );
        // Families never mix: 10.0.0.0 and ::a00:0 are different addresses.
        let v6 = set(&["::a00:0/120"]);
        assert_eq!(set(&["10.0.0.0/24"]).minus(&v6), set(&["10.0.0.0/24"]));
        assert!(!set(&["10.0.0.0/24"]).meets(&v6.0));
        assert!(set(&["10.0.0.0/8"]).meets(&set(&["10.9.0.0/16"]).0));
    }
}
