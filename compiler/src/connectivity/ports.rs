//! Sets of (protocol, port) pairs: what one end lets through, or what a flow between two ends
//! is allowed on, as sorted intervals, interned so that equal sets have equal ids.
//!
//! A set covers the five protocols rules can name ([`Proto`]); ports run from 0 to 65535
//! (for ICMP, the type). Internally a pair is the point `protocol index * 65536 + port`, so a
//! set is a list of disjoint, non-adjacent inclusive intervals on one line: the form is
//! canonical, and two sets are equal exactly when their interval lists are.

use crate::ir::Proto;
use std::collections::HashMap;

/// The protocols a set ranges over, in [`Proto`]'s order.
pub const PROTOS: [Proto; 5] = [
    Proto::Tcp,
    Proto::Udp,
    Proto::Sctp,
    Proto::Icmp,
    Proto::Icmpv6,
];

const SPAN: u32 = 1 << 16;
const TOP: u32 = SPAN * PROTOS.len() as u32 - 1;

fn index(proto: Proto) -> u32 {
    match proto {
        Proto::Tcp => 0,
        Proto::Udp => 1,
        Proto::Sctp => 2,
        Proto::Icmp => 3,
        Proto::Icmpv6 => 4,
    }
}

/// The ports a flow of `proto` can carry in a graph or diff: 1-65535, or ICMP types 0-255.
pub fn domain(proto: Proto) -> (u16, u16) {
    match proto {
        Proto::Icmp | Proto::Icmpv6 => (0, 255),
        _ => (1, 65535),
    }
}

/// A set of (protocol, port) pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortSet {
    /// Disjoint, non-adjacent, sorted inclusive intervals of `index * 65536 + port`.
    spans: Vec<(u32, u32)>,
}

impl PortSet {
    /// No pair at all.
    pub fn empty() -> PortSet {
        PortSet { spans: Vec::new() }
    }

    /// Every port of every protocol.
    pub fn full() -> PortSet {
        PortSet {
            spans: vec![(0, TOP)],
        }
    }

    /// The ports `first..=last` of `proto`.
    pub fn range(proto: Proto, first: u16, last: u16) -> PortSet {
        let base = index(proto) * SPAN;
        if last < first {
            return PortSet::empty();
        }
        PortSet {
            spans: vec![(base + u32::from(first), base + u32::from(last))],
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Whether the set holds `port` of `proto`.
    pub fn contains(&self, proto: Proto, port: u16) -> bool {
        let x = index(proto) * SPAN + u32::from(port);
        let i = self.spans.partition_point(|s| s.1 < x);
        self.spans.get(i).is_some_and(|s| s.0 <= x)
    }

    /// The maximal port ranges of `proto` in the set, ascending.
    pub fn ranges(&self, proto: Proto) -> Vec<(u16, u16)> {
        let lo = index(proto) * SPAN;
        let hi = lo + SPAN - 1;
        self.spans
            .iter()
            .filter(|s| s.1 >= lo && s.0 <= hi)
            .map(|s| (port_of(s.0.max(lo) - lo), port_of(s.1.min(hi) - lo)))
            .collect()
    }

    /// Both sets together.
    pub fn union(&self, other: &PortSet) -> PortSet {
        let mut all: Vec<(u32, u32)> = self
            .spans
            .iter()
            .chain(other.spans.iter())
            .copied()
            .collect();
        all.sort_unstable();
        let mut spans: Vec<(u32, u32)> = Vec::with_capacity(all.len());
        for (a, b) in all {
            match spans.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => spans.push((a, b)),
            }
        }
        PortSet { spans }
    }

    /// The pairs in both sets.
    pub fn intersect(&self, other: &PortSet) -> PortSet {
        let (mut i, mut j) = (0, 0);
        let mut spans = Vec::new();
        while let (Some(&(a0, a1)), Some(&(b0, b1))) = (self.spans.get(i), other.spans.get(j)) {
            let (lo, hi) = (a0.max(b0), a1.min(b1));
            if lo <= hi {
                spans.push((lo, hi));
            }
            if a1 < b1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        PortSet { spans }
    }

    /// The pairs of this set that are not in `other`.
    pub fn minus(&self, other: &PortSet) -> PortSet {
        self.intersect(&other.complement())
    }

    fn complement(&self) -> PortSet {
        let mut spans = Vec::with_capacity(self.spans.len() + 1);
        let mut next = 0u32;
        for &(a, b) in &self.spans {
            if a > next {
                spans.push((next, a - 1));
            }
            next = b + 1;
        }
        if next <= TOP {
            spans.push((next, TOP));
        }
        PortSet { spans }
    }
}

fn port_of(x: u32) -> u16 {
    u16::try_from(x).unwrap_or(u16::MAX)
}

/// An id of an interned [`PortSet`].
pub type PortSetId = u32;

/// Interned port sets, with memoized set operations.
#[derive(Debug)]
pub struct PortSets {
    sets: Vec<PortSet>,
    ids: HashMap<PortSet, PortSetId>,
    unions: HashMap<(PortSetId, PortSetId), PortSetId>,
    minus: HashMap<(PortSetId, PortSetId), PortSetId>,
    meets: HashMap<u64, PortSetId, super::FastHash>,
    /// `meet` of sets with small ids, per pair of families: `DENSE × DENSE` answers
    /// (`PortSetId::MAX` when not yet known), allocated when first used.
    dense: [Vec<PortSetId>; 9],
    /// The flow domain of each pair of address families (see [`PortSets::meet`]).
    domains: [PortSetId; 9],
}

/// Sets with ids below this have their meets in dense tables (4 MiB per pair of families).
const DENSE: PortSetId = 1024;

/// The empty set's id.
pub const EMPTY: PortSetId = 0;
/// The full set's id.
pub const FULL: PortSetId = 1;

/// The address family of an end: `None` for pods and hosts (either), or an outside
/// address's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// A pod or a host: flows of either family.
    Any,
    /// An outside IPv4 address.
    V4,
    /// An outside IPv6 address.
    V6,
}

impl Family {
    fn index(self) -> usize {
        match self {
            Family::Any => 0,
            Family::V4 => 1,
            Family::V6 => 2,
        }
    }

    fn v6(self) -> Option<bool> {
        match self {
            Family::Any => None,
            Family::V4 => Some(false),
            Family::V6 => Some(true),
        }
    }
}

/// Whether a flow of `proto` can go from an end of family `s` to one of family `d`: ICMP
/// only between IPv4 ends, ICMPv6 between IPv6 ones, the rest unless two outside addresses
/// are of different families.
pub fn family_fits(proto: Proto, s: Family, d: Family) -> bool {
    let (s, d) = (s.v6(), d.v6());
    match proto {
        Proto::Icmp => s != Some(true) && d != Some(true),
        Proto::Icmpv6 => s != Some(false) && d != Some(false),
        _ => s.is_none() || d.is_none() || s == d,
    }
}

impl Default for PortSets {
    fn default() -> Self {
        Self::new()
    }
}

impl PortSets {
    /// The interner, with the empty set as [`EMPTY`] and the full one as [`FULL`].
    pub fn new() -> PortSets {
        let mut p = PortSets {
            sets: Vec::new(),
            ids: HashMap::new(),
            unions: HashMap::new(),
            minus: HashMap::new(),
            meets: HashMap::default(),
            dense: Default::default(),
            domains: [EMPTY; 9],
        };
        p.intern(PortSet::empty());
        p.intern(PortSet::full());
        let fams = [Family::Any, Family::V4, Family::V6];
        for s in fams {
            for d in fams {
                let mut set = PortSet::empty();
                for proto in PROTOS {
                    if family_fits(proto, s, d) {
                        let (lo, hi) = domain(proto);
                        set = set.union(&PortSet::range(proto, lo, hi));
                    }
                }
                p.domains[s.index() * 3 + d.index()] = p.intern(set);
            }
        }
        p
    }

    /// The id of `set`.
    pub fn intern(&mut self, set: PortSet) -> PortSetId {
        if let Some(&id) = self.ids.get(&set) {
            return id;
        }
        let id = PortSetId::try_from(self.sets.len()).unwrap_or(PortSetId::MAX);
        self.sets.push(set.clone());
        self.ids.insert(set, id);
        id
    }

    /// The set with this id.
    pub fn get(&self, id: PortSetId) -> &PortSet {
        &self.sets[id as usize]
    }

    /// How many distinct sets there are.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// Whether there are none (never: the empty and full sets are always there).
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// `a ∪ b`.
    pub fn union(&mut self, a: PortSetId, b: PortSetId) -> PortSetId {
        if a == b || b == EMPTY {
            return a;
        }
        if a == EMPTY {
            return b;
        }
        let key = (a.min(b), a.max(b));
        if let Some(&id) = self.unions.get(&key) {
            return id;
        }
        let set = self.get(a).union(self.get(b));
        let id = self.intern(set);
        self.unions.insert(key, id);
        id
    }

    /// `a \ b`.
    pub fn minus(&mut self, a: PortSetId, b: PortSetId) -> PortSetId {
        if b == EMPTY || a == EMPTY {
            return a;
        }
        if let Some(&id) = self.minus.get(&(a, b)) {
            return id;
        }
        let set = self.get(a).minus(self.get(b));
        let id = self.intern(set);
        self.minus.insert((a, b), id);
        id
    }

    /// What a flow from an end of family `s` to one of family `d` is allowed on, when the
    /// source lets `a` out and the destination lets `b` in: `a ∩ b`, cut to the ports a graph
    /// or diff shows (1-65535, ICMP types 0-255) and to the protocols the families carry.
    pub fn meet(&mut self, a: PortSetId, b: PortSetId, s: Family, d: Family) -> PortSetId {
        let fams = s.index() * 3 + d.index();
        if a < DENSE && b < DENSE {
            let slot = a as usize * DENSE as usize + b as usize;
            if let Some(&id) = self.dense[fams].get(slot)
                && id != PortSetId::MAX
            {
                return id;
            }
            let id = self.meet_slow(a, b, fams);
            let table = &mut self.dense[fams];
            if table.is_empty() {
                table.resize(DENSE as usize * DENSE as usize, PortSetId::MAX);
            }
            table[slot] = id;
            return id;
        }
        self.meet_slow(a, b, fams)
    }

    fn meet_slow(&mut self, a: PortSetId, b: PortSetId, fams: usize) -> PortSetId {
        let fams = fams as u64;
        let key = (u64::from(a) << 34) | (u64::from(b) << 4) | fams;
        if let Some(&id) = self.meets.get(&key) {
            return id;
        }
        let dom = self.domains[fams as usize];
        let set = self.get(a).intersect(self.get(b)).intersect(self.get(dom));
        let id = self.intern(set);
        self.meets.insert(key, id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_are_canonical() {
        let a = PortSet::range(Proto::Tcp, 80, 90);
        let b = PortSet::range(Proto::Tcp, 91, 100);
        let ab = a.union(&b);
        assert_eq!(ab, PortSet::range(Proto::Tcp, 80, 100));
        assert_eq!(ab.minus(&b), a);
        assert_eq!(
            ab.intersect(&PortSet::range(Proto::Tcp, 95, 200))
                .ranges(Proto::Tcp),
            vec![(95, 100)]
        );
        let hole = PortSet::full().minus(&PortSet::range(Proto::Udp, 53, 53));
        assert_eq!(hole.ranges(Proto::Udp), vec![(0, 52), (54, 65535)]);
        assert_eq!(hole.ranges(Proto::Tcp), vec![(0, 65535)]);
        assert!(hole.contains(Proto::Icmpv6, 255));
        assert!(!hole.contains(Proto::Udp, 53));
        assert_eq!(
            hole.union(&PortSet::range(Proto::Udp, 53, 53)),
            PortSet::full()
        );
        assert!(PortSet::range(Proto::Sctp, 5, 4).is_empty());
    }

    #[test]
    fn meets_cut_to_the_families_and_the_shown_ports() {
        let mut sets = PortSets::new();
        let all = sets.meet(FULL, FULL, Family::V4, Family::V6);
        assert!(sets.get(all).is_empty(), "{:?}", sets.get(all));
        let v4 = sets.meet(FULL, FULL, Family::Any, Family::V4);
        let s = sets.get(v4).clone();
        assert_eq!(s.ranges(Proto::Tcp), vec![(1, 65535)]);
        assert_eq!(s.ranges(Proto::Icmp), vec![(0, 255)]);
        assert!(s.ranges(Proto::Icmpv6).is_empty());
    }
}
