//! The graph `polc graph` draws: ends with the same row and the same column of the
//! connectivity matrix (what they may send to each end, what each end may send to them) are
//! one node, and an edge between two nodes carries what a member of one may send to a member
//! of the other.
//!
//! Flows between two outside addresses are not drawn: they never cross the cluster, so its
//! policies have nothing to say about them (the evaluator, which looks only at enforcing
//! ends, allows them).
//!
//! The matrix has one row and one column per end, but little information: between two
//! non-host ends, an entry depends only on the source's *source key* (egress side, identity
//! class, family) and the destination's *destination key* (ingress side, identity class,
//! family), and an end's own (diagonal) entry is empty; between a host and a non-host end it
//! depends on the key and the host, and on whether the end runs on that host's node. So the
//! matrix is kept as [`Layout`]: a key-by-key table, key-by-host tables, and the few entries
//! of ends on a host's own node, and rows are hashed and compared from it. Ends are grouped
//! by their hashes, and every grouping is confirmed by an exact comparison of the two rows
//! and columns, so a hash collision costs time, never a wrong class.
//!
//! An end joins a class when its row and column equal the class's first member's, with the
//! diagonal entries empty; this is an equivalence (members of a class cannot reach each
//! other), so the classes do not depend on the order the ends are looked at.

use super::{Connectivity, EMPTY, FULL, Family, FastHash, PortSetId};
use crate::eval::Peer;
use std::collections::HashMap;

/// The graph of a connectivity: classes of ends and the edges between them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Graph {
    /// The classes, each a sorted list of end indices, ordered by their first member.
    pub classes: Vec<Vec<usize>>,
    /// `(from class, to class, allowed ports)` for every ordered pair of classes whose
    /// members may talk, in (from, to) order, except two outside addresses. A class never
    /// has an edge to itself.
    pub edges: Vec<(u32, u32, PortSetId)>,
}

const NONE: u32 = u32::MAX;

/// How many keys two non-host ends can make exceptions of: a key whose only members are
/// the two ends themselves is not compared as a key.
const MAX_SPECIAL_KEYS: usize = 2;

/// How many hosts two non-host ends can make exceptions of (the hosts of their nodes).
const MAX_SPECIAL_HOSTS: usize = 4;

/// What an entry between two non-host ends depends on, from one side.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    side: u32,
    class: u32,
    family: Family,
}

/// The connectivity matrix in the form of its structure (see the module doc).
struct Layout {
    /// Per end: its source key, or `NONE` for hosts.
    src: Vec<u32>,
    /// Per end: its destination key, or `NONE` for hosts.
    dst: Vec<u32>,
    /// Per end: its index among the hosts, or `NONE`.
    host: Vec<u32>,
    /// Per end: the node it runs on (for a host, its node).
    node: Vec<Option<usize>>,
    src_keys: Vec<Key>,
    dst_keys: Vec<Key>,
    src_members: Vec<Vec<usize>>,
    dst_members: Vec<Vec<usize>>,
    /// The host ends.
    hosts: Vec<usize>,
    /// Per node, its host ends.
    host_ends: HashMap<usize, Vec<usize>>,
    /// Per node, the non-host ends on it.
    on_node: HashMap<usize, Vec<usize>>,
    /// Source key × destination key: the entry between two non-host ends.
    x: Vec<PortSetId>,
    /// Source key × host: from a non-host end on another node to the host.
    into_host: Vec<PortSetId>,
    /// Host × destination key: from the host to a non-host end on another node.
    out_of_host: Vec<PortSetId>,
}

impl Layout {
    fn x(&self, s: u32, d: u32) -> PortSetId {
        self.x[s as usize * self.dst_keys.len() + d as usize]
    }

    fn host_in(&self, s: u32, h: u32) -> PortSetId {
        self.into_host[s as usize * self.hosts.len() + h as usize]
    }

    fn host_out(&self, h: u32, d: u32) -> PortSetId {
        self.out_of_host[h as usize * self.dst_keys.len() + d as usize]
    }

    /// Whether `a` and `b` are a host and an end on its node (either way round).
    fn local(&self, a: usize, b: usize) -> bool {
        (self.host[a] != NONE || self.host[b] != NONE)
            && self.node[a].is_some()
            && self.node[a] == self.node[b]
    }
}

/// Memoized comparisons of two source (destination) keys: where their rows (columns)
/// differ, over destination (source) keys and over hosts, each list cut short after one
/// more than can be excused.
#[derive(Default)]
struct Memo {
    rows: HashMap<(u32, u32), Differences, FastHash>,
    cols: HashMap<(u32, u32), Differences, FastHash>,
}

/// The keys and the hosts two keys' rows (or columns) differ on.
type Differences = (Vec<u32>, Vec<u32>);

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Two independent 64-bit lanes.
type H2 = [u64; 2];

fn weight(t: usize) -> H2 {
    [
        mix(2 * t as u64),
        mix((2 * t as u64 + 1) ^ 0x5555_0000_aaaa_ffff),
    ]
}

/// A row's hash is the sum over its non-empty entries of the position's weight times the
/// entry's hash, in two lanes; it is a function of the row.
struct Hasher {
    labels: Vec<H2>,
}

impl Hasher {
    fn label(&mut self, l: PortSetId) -> H2 {
        while self.labels.len() <= l as usize {
            let n = self.labels.len() as u64;
            self.labels.push([
                mix(n ^ 0x1234_5678_9abc_def0),
                mix(n ^ 0x0fed_cba9_8765_4321),
            ]);
        }
        self.labels[l as usize]
    }

    fn add(&mut self, acc: &mut H2, w: H2, l: PortSetId) {
        if l != EMPTY {
            let h = self.label(l);
            acc[0] = acc[0].wrapping_add(w[0].wrapping_mul(h[0]));
            acc[1] = acc[1].wrapping_add(w[1].wrapping_mul(h[1]));
        }
    }

    fn sub(&mut self, acc: &mut H2, w: H2, l: PortSetId) {
        if l != EMPTY {
            let h = self.label(l);
            acc[0] = acc[0].wrapping_sub(w[0].wrapping_mul(h[0]));
            acc[1] = acc[1].wrapping_sub(w[1].wrapping_mul(h[1]));
        }
    }
}

fn plus(a: H2, b: H2) -> H2 {
    [a[0].wrapping_add(b[0]), a[1].wrapping_add(b[1])]
}

impl Connectivity {
    /// What an end of key `s` (or the host end `h`, when `s` is `None`) lets out towards
    /// identity class `class`.
    fn out_at(&self, side: u32, class: u32) -> PortSetId {
        if side == NONE {
            FULL
        } else {
            self.tables[side as usize][class as usize]
        }
    }

    fn layout(&mut self) -> Layout {
        let view = &self.views[0];
        let n = self.peers.len();
        let mut l = Layout {
            src: vec![NONE; n],
            dst: vec![NONE; n],
            host: vec![NONE; n],
            node: view.node.clone(),
            src_keys: Vec::new(),
            dst_keys: Vec::new(),
            src_members: Vec::new(),
            dst_members: Vec::new(),
            hosts: Vec::new(),
            host_ends: HashMap::new(),
            on_node: HashMap::new(),
            x: Vec::new(),
            into_host: Vec::new(),
            out_of_host: Vec::new(),
        };
        let mut src_ids: HashMap<Key, u32> = HashMap::new();
        let mut dst_ids: HashMap<Key, u32> = HashMap::new();
        for e in 0..n {
            if let Peer::Host(node) = self.peers[e] {
                l.host[e] = u32::try_from(l.hosts.len()).unwrap_or(NONE);
                l.hosts.push(e);
                l.node[e] = Some(node);
                l.host_ends.entry(node).or_default().push(e);
                continue;
            }
            if let Some(node) = view.node[e] {
                l.on_node.entry(node).or_default().push(e);
            }
            let (out, inn) = view.sides[e].unwrap_or((NONE, NONE));
            let (class, family) = (view.class[e], self.family[e]);
            for (key, ids, keys, members, slot) in [
                (
                    Key {
                        side: out,
                        class,
                        family,
                    },
                    &mut src_ids,
                    &mut l.src_keys,
                    &mut l.src_members,
                    &mut l.src,
                ),
                (
                    Key {
                        side: inn,
                        class,
                        family,
                    },
                    &mut dst_ids,
                    &mut l.dst_keys,
                    &mut l.dst_members,
                    &mut l.dst,
                ),
            ] {
                let next = u32::try_from(keys.len()).unwrap_or(NONE);
                let id = *ids.entry(key).or_insert(next);
                if id == next {
                    keys.push(key);
                    members.push(Vec::new());
                }
                members[id as usize].push(e);
                slot[e] = id;
            }
        }
        // Key × key: for each source key, what its side lets out towards every class (one
        // table row) and what every side lets in from its class (one table column).
        let (ns, nd, nh) = (l.src_keys.len(), l.dst_keys.len(), l.hosts.len());
        let mut x = Vec::with_capacity(ns * nd);
        let mut inn_of_class: Vec<PortSetId> = vec![FULL; self.tables.len()];
        for s in &l.src_keys {
            for (side, slot) in inn_of_class.iter_mut().enumerate() {
                *slot = self.tables[side][s.class as usize];
            }
            for d in &l.dst_keys {
                if s.side == NONE && d.side == NONE {
                    // Two outside addresses: no policy of the cluster is on that path.
                    x.push(EMPTY);
                    continue;
                }
                let out = self.out_at(s.side, d.class);
                let inn = if d.side == NONE {
                    FULL
                } else {
                    inn_of_class[d.side as usize]
                };
                x.push(self.sets.meet(out, inn, s.family, d.family));
            }
        }
        l.x = x;
        // Key × host, host × key: the host as a remote node, the end elsewhere.
        let mut into_host = Vec::with_capacity(ns * nh);
        for s in &l.src_keys {
            for &h in &l.hosts {
                let (_, h_in) = view.sides[h].unwrap_or((NONE, NONE));
                let out = self.out_at(s.side, view.class[h]);
                let inn = self.out_at(h_in, s.class);
                into_host.push(self.sets.meet(out, inn, s.family, Family::Any));
            }
        }
        l.into_host = into_host;
        let mut out_of_host = Vec::with_capacity(nh * nd);
        for &h in &l.hosts {
            let (h_out, _) = view.sides[h].unwrap_or((NONE, NONE));
            for d in &l.dst_keys {
                let out = self.out_at(h_out, d.class);
                let inn = self.out_at(d.side, view.class[h]);
                out_of_host.push(self.sets.meet(out, inn, Family::Any, d.family));
            }
        }
        l.out_of_host = out_of_host;
        l
    }

    /// The entry from end `a` to end `b`, read from the layout where it can be.
    fn at(&mut self, l: &Layout, a: usize, b: usize) -> PortSetId {
        if a == b {
            return EMPTY;
        }
        match (l.host[a], l.host[b]) {
            (NONE, NONE) => l.x(l.src[a], l.dst[b]),
            _ if l.local(a, b) => self.allowed(a, b),
            (NONE, h) => l.host_in(l.src[a], h),
            (h, NONE) => l.host_out(h, l.dst[b]),
            _ => self.allowed(a, b),
        }
    }

    /// The row and column hashes of every end.
    fn hashes(&mut self, l: &Layout) -> Vec<[u64; 4]> {
        let n = self.peers.len();
        let (nd, nh) = (l.dst_keys.len(), l.hosts.len());
        let mut hs = Hasher { labels: Vec::new() };
        let w: Vec<H2> = (0..n).map(weight).collect();
        let group_weight = |members: &[Vec<usize>]| -> Vec<H2> {
            members
                .iter()
                .map(|m| m.iter().fold([0u64; 2], |acc, &t| plus(acc, w[t])))
                .collect()
        };
        let wd = group_weight(&l.dst_members);
        let ws = group_weight(&l.src_members);
        // Sums over the non-host ends, per key, as if no end were special.
        let mut row_of_src = vec![[0u64; 2]; l.src_keys.len()];
        let mut col_of_dst = vec![[0u64; 2]; nd];
        for (si, row) in row_of_src.iter_mut().enumerate() {
            for (di, col) in col_of_dst.iter_mut().enumerate() {
                let x = l.x[si * nd + di];
                hs.add(row, wd[di], x);
                hs.add(col, ws[si], x);
            }
        }
        // Sums over the hosts, per key, as if the end ran on no host's node.
        let mut src_to_hosts = vec![[0u64; 2]; l.src_keys.len()];
        for (si, acc) in src_to_hosts.iter_mut().enumerate() {
            for (hi, &h) in l.hosts.iter().enumerate() {
                hs.add(acc, w[h], l.into_host[si * nh + hi]);
            }
        }
        let mut hosts_to_dst = vec![[0u64; 2]; nd];
        for (hi, &h) in l.hosts.iter().enumerate() {
            for (di, acc) in hosts_to_dst.iter_mut().enumerate() {
                hs.add(acc, w[h], l.out_of_host[hi * nd + di]);
            }
        }
        let mut out = vec![[0u64; 4]; n];
        for e in 0..n {
            if l.host[e] != NONE {
                continue;
            }
            let (si, di) = (l.src[e] as usize, l.dst[e] as usize);
            let mut row = plus(row_of_src[si], src_to_hosts[si]);
            let mut col = plus(col_of_dst[di], hosts_to_dst[di]);
            // Its own entry is empty.
            let own = l.x[si * nd + di];
            hs.sub(&mut row, w[e], own);
            hs.sub(&mut col, w[e], own);
            // The hosts of its own node see it as a local endpoint.
            let hosts_here = l.node[e].and_then(|node| l.host_ends.get(&node));
            for &h in hosts_here.into_iter().flatten() {
                let hi = l.host[h] as usize;
                hs.sub(&mut row, w[h], l.into_host[si * nh + hi]);
                let near = self.allowed(e, h);
                hs.add(&mut row, w[h], near);
                hs.sub(&mut col, w[h], l.out_of_host[hi * nd + di]);
                let near = self.allowed(h, e);
                hs.add(&mut col, w[h], near);
            }
            out[e] = [row[0], row[1], col[0], col[1]];
        }
        for (hi, &h) in l.hosts.iter().enumerate() {
            let (mut row, mut col) = ([0u64; 2], [0u64; 2]);
            for (di, &weight) in wd.iter().enumerate() {
                hs.add(&mut row, weight, l.out_of_host[hi * nd + di]);
            }
            for (si, &weight) in ws.iter().enumerate() {
                hs.add(&mut col, weight, l.into_host[si * nh + hi]);
            }
            let here = l.node[h].and_then(|node| l.on_node.get(&node));
            for &t in here.into_iter().flatten() {
                hs.sub(&mut row, w[t], l.host_out(hi as u32, l.dst[t]));
                let near = self.allowed(h, t);
                hs.add(&mut row, w[t], near);
                hs.sub(&mut col, w[t], l.host_in(l.src[t], hi as u32));
                let near = self.allowed(t, h);
                hs.add(&mut col, w[t], near);
            }
            for &m in &l.hosts {
                let a = self.allowed(h, m);
                hs.add(&mut row, w[m], a);
                let a = self.allowed(m, h);
                hs.add(&mut col, w[m], a);
            }
            out[h] = [row[0], row[1], col[0], col[1]];
        }
        out
    }

    /// Whether ends `a` and `b` have the same row and the same column, exactly.
    fn same(&mut self, l: &Layout, memo: &mut Memo, a: usize, b: usize) -> bool {
        // Positions whose entries may differ from what their key or host says in general:
        // the two ends themselves, the hosts of their nodes, and the ends on a host's node
        // when one of the two is that host. They are compared one by one.
        let mut special: Vec<usize> = vec![a, b];
        for e in [a, b] {
            let Some(node) = l.node[e] else { continue };
            special.extend(l.host_ends.get(&node).into_iter().flatten());
            if l.host[e] != NONE {
                special.extend(l.on_node.get(&node).into_iter().flatten());
            }
        }
        special.sort_unstable();
        special.dedup();
        for &t in &special {
            if self.at(l, a, t) != self.at(l, b, t) || self.at(l, t, a) != self.at(l, t, b) {
                return false;
            }
        }
        let is_special = |t: usize| special.binary_search(&t).is_ok();
        let all_special = |members: &[usize]| members.iter().all(|&t| is_special(t));
        if l.host[a] == NONE && l.host[b] == NONE {
            // Two non-host ends: their keys' rows and columns, memoized per pair of keys.
            let (sa, sb) = (l.src[a].min(l.src[b]), l.src[a].max(l.src[b]));
            if sa != sb {
                let (keys, hosts) = memo.rows.entry((sa, sb)).or_insert_with(|| {
                    (
                        differing(l.dst_keys.len(), MAX_SPECIAL_KEYS, |d| {
                            l.x(sa, d) != l.x(sb, d)
                        }),
                        differing(l.hosts.len(), MAX_SPECIAL_HOSTS, |h| {
                            l.host_in(sa, h) != l.host_in(sb, h)
                        }),
                    )
                });
                if !keys
                    .iter()
                    .all(|&d| d != NONE && all_special(&l.dst_members[d as usize]))
                    || !hosts
                        .iter()
                        .all(|&h| h != NONE && is_special(l.hosts[h as usize]))
                {
                    return false;
                }
            }
            let (da, db) = (l.dst[a].min(l.dst[b]), l.dst[a].max(l.dst[b]));
            if da != db {
                let (keys, hosts) = memo.cols.entry((da, db)).or_insert_with(|| {
                    (
                        differing(l.src_keys.len(), MAX_SPECIAL_KEYS, |s| {
                            l.x(s, da) != l.x(s, db)
                        }),
                        differing(l.hosts.len(), MAX_SPECIAL_HOSTS, |h| {
                            l.host_out(h, da) != l.host_out(h, db)
                        }),
                    )
                });
                if !keys
                    .iter()
                    .all(|&s| s != NONE && all_special(&l.src_members[s as usize]))
                    || !hosts
                        .iter()
                        .all(|&h| h != NONE && is_special(l.hosts[h as usize]))
                {
                    return false;
                }
            }
            return true;
        }
        // A host is involved: compare every key (through one member that is not special)
        // and every host.
        for members in &l.dst_members {
            if let Some(&t) = members.iter().find(|&&t| !is_special(t))
                && self.at(l, a, t) != self.at(l, b, t)
            {
                return false;
            }
        }
        for members in &l.src_members {
            if let Some(&t) = members.iter().find(|&&t| !is_special(t))
                && self.at(l, t, a) != self.at(l, t, b)
            {
                return false;
            }
        }
        for &h in &l.hosts {
            if self.at(l, a, h) != self.at(l, b, h) || self.at(l, h, a) != self.at(l, h, b) {
                return false;
            }
        }
        true
    }

    /// Groups the ends into classes of equal rows and columns, and the edges between them.
    pub fn graph(&mut self) -> Graph {
        self.graph_by(true)
    }

    /// [`Connectivity::graph`] without the hashes: every end is compared exactly with every
    /// class found so far. Quadratic; for testing the exact comparison, which the hashes
    /// otherwise leave with little to do.
    #[doc(hidden)]
    pub fn graph_without_hashes(&mut self) -> Graph {
        self.graph_by(false)
    }

    fn graph_by(&mut self, hashed: bool) -> Graph {
        let l = self.layout();
        let hashes = if hashed {
            self.hashes(&l)
        } else {
            vec![[0; 4]; self.peers.len()]
        };
        let mut classes: Vec<Vec<usize>> = Vec::new();
        let mut by_hash: HashMap<[u64; 4], Vec<usize>, FastHash> = HashMap::default();
        let mut memo = Memo::default();
        for (e, hash) in hashes.iter().enumerate() {
            let candidates = by_hash.entry(*hash).or_default();
            let joined = candidates
                .iter()
                .copied()
                .find(|&c| self.same(&l, &mut memo, classes[c][0], e));
            match joined {
                Some(c) => classes[c].push(e),
                None => {
                    by_hash.entry(*hash).or_default().push(classes.len());
                    classes.push(vec![e]);
                }
            }
        }
        let reps: Vec<usize> = classes.iter().map(|c| c[0]).collect();
        // Per class, its first member's destination key (`NONE` for a host).
        let rep_dst: Vec<u32> = reps.iter().map(|&r| l.dst[r]).collect();
        let index = |i: usize| u32::try_from(i).unwrap_or(NONE);
        let nd = l.dst_keys.len();
        let mut edges = Vec::new();
        for (a, &ra) in reps.iter().enumerate() {
            let from = index(a);
            if l.host[ra] == NONE {
                // A non-host end: its key's row of the layout, except towards hosts.
                let si = l.src[ra] as usize;
                let row = &l.x[si * nd..(si + 1) * nd];
                for (b, &d) in rep_dst.iter().enumerate() {
                    let label = if b == a {
                        EMPTY
                    } else if d != NONE {
                        row[d as usize]
                    } else {
                        self.at(&l, ra, reps[b])
                    };
                    if label != EMPTY {
                        edges.push((from, index(b), label));
                    }
                }
            } else {
                for (b, &rb) in reps.iter().enumerate() {
                    let label = if b == a { EMPTY } else { self.at(&l, ra, rb) };
                    if label != EMPTY {
                        edges.push((from, index(b), label));
                    }
                }
            }
            // Members of a class never reach each other (see the module doc); the entry
            // between the first two is still what would be drawn, in its place.
            if let Some(&second) = classes[a].get(1) {
                let label = self.at(&l, ra, second);
                if label != EMPTY {
                    let at = edges.partition_point(|e| (e.0, e.1) < (from, from));
                    edges.insert(at, (from, from, label));
                }
            }
        }
        Graph { classes, edges }
    }
}

/// The indices below `n` where `differs` holds; after `max` of them, one more `NONE` marks
/// that there are too many to excuse.
fn differing(n: usize, max: usize, differs: impl Fn(u32) -> bool) -> Vec<u32> {
    let mut out = Vec::new();
    for i in 0..n {
        let i = u32::try_from(i).unwrap_or(NONE);
        if differs(i) {
            if out.len() == max {
                out.push(NONE);
                break;
            }
            out.push(i);
        }
    }
    out
}
