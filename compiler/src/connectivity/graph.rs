//! The graph `polc graph` draws: ends with the same row and the same column of the
//! connectivity matrix (what they may send to each end, what each end may send to them) are
//! one node, and an edge between two nodes carries what a member of one may send to a member
//! of the other.
//!
//! Rows and columns have one entry per end, so comparing them directly is quadratic in the
//! ends for every end. Instead, an end's row is hashed from the structure of the matrix
//! ([`Keys`]): outside the hosts, an entry depends only on the source's *source key* (egress
//! side, identity class, family) and the destination's *destination key* (ingress side,
//! identity class, family), and each end's own diagonal entry is empty; a host's entry
//! towards a pod depends in addition on whether the pod runs on that host's node. Ends are
//! grouped by their hashes, and every grouping is then confirmed by an exact comparison of
//! the two rows and columns (cheap, for the same structural reasons), so a hash collision
//! costs time, never a wrong class.
//!
//! An end joins a class when its row and column equal the class's first member's, with the
//! diagonal entries empty; this is an equivalence (members of a class cannot reach each
//! other), so the classes do not depend on the order the ends are looked at.

use super::{Connectivity, EMPTY, Family, FastHash, PortSetId};
use crate::eval::Peer;
use std::collections::HashMap;

/// The graph of a connectivity: classes of ends and the edges between them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Graph {
    /// The classes, each a sorted list of end indices, ordered by their first member.
    pub classes: Vec<Vec<usize>>,
    /// `(from class, to class, allowed ports)` for every ordered pair of classes whose
    /// members may talk, in (from, to) order. A class never has an edge to itself.
    pub edges: Vec<(usize, usize, PortSetId)>,
}

const NONE: u32 = u32::MAX;

/// How many keys two non-host ends can have all of whose members are one of the two.
const MAX_SPECIAL_KEYS: usize = 2;

/// Memoized key comparisons: for two source (destination) keys, the destination (source)
/// keys they disagree on.
#[derive(Default)]
struct Memo {
    rows: HashMap<(u32, u32), Vec<u32>, FastHash>,
    cols: HashMap<(u32, u32), Vec<u32>, FastHash>,
}

/// What an entry of the matrix between two non-host ends depends on, from one side.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    side: u32,
    class: u32,
    family: Family,
}

/// The source and destination keys of the non-host ends.
struct Keys {
    /// Per end: its source key index, or `NONE` for hosts.
    src: Vec<u32>,
    /// Per end: its destination key index, or `NONE` for hosts.
    dst: Vec<u32>,
    src_keys: Vec<Key>,
    dst_keys: Vec<Key>,
    /// Members of each destination key.
    dst_members: Vec<Vec<usize>>,
    /// Members of each source key.
    src_members: Vec<Vec<usize>>,
    /// The host ends.
    hosts: Vec<usize>,
    /// Per node, its host ends.
    host_ends: HashMap<usize, Vec<usize>>,
    /// Per node, the non-host ends on it.
    on_node: HashMap<usize, Vec<usize>>,
}

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

fn label_hash(l: PortSetId) -> H2 {
    [
        mix(u64::from(l) ^ 0x1234_5678_9abc_def0),
        mix(u64::from(l) ^ 0x0fed_cba9_8765_4321),
    ]
}

fn add(acc: &mut H2, w: H2, l: PortSetId) {
    let h = label_hash(l);
    acc[0] = acc[0].wrapping_add(w[0].wrapping_mul(h[0]));
    acc[1] = acc[1].wrapping_add(w[1].wrapping_mul(h[1]));
}

fn sub(acc: &mut H2, w: H2, l: PortSetId) {
    let h = label_hash(l);
    acc[0] = acc[0].wrapping_sub(w[0].wrapping_mul(h[0]));
    acc[1] = acc[1].wrapping_sub(w[1].wrapping_mul(h[1]));
}

impl Connectivity {
    fn keys(&self) -> Keys {
        let view = &self.views[0];
        let n = self.peers.len();
        let mut k = Keys {
            src: vec![NONE; n],
            dst: vec![NONE; n],
            src_keys: Vec::new(),
            dst_keys: Vec::new(),
            dst_members: Vec::new(),
            src_members: Vec::new(),
            hosts: Vec::new(),
            host_ends: HashMap::new(),
            on_node: HashMap::new(),
        };
        let mut src_ids: HashMap<Key, u32> = HashMap::new();
        let mut dst_ids: HashMap<Key, u32> = HashMap::new();
        for e in 0..n {
            if let Peer::Host(node) = self.peers[e] {
                k.hosts.push(e);
                k.host_ends.entry(node).or_default().push(e);
                continue;
            }
            if let Some(node) = view.node[e] {
                k.on_node.entry(node).or_default().push(e);
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
                    &mut k.src_keys,
                    &mut k.src_members,
                    &mut k.src,
                ),
                (
                    Key {
                        side: inn,
                        class,
                        family,
                    },
                    &mut dst_ids,
                    &mut k.dst_keys,
                    &mut k.dst_members,
                    &mut k.dst,
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
        k
    }

    /// The entry from a source key to a destination key (two different non-host ends).
    fn between(&mut self, s: Key, d: Key) -> PortSetId {
        let out = if s.side == NONE {
            super::FULL
        } else {
            self.tables[s.side as usize][d.class as usize]
        };
        let inn = if d.side == NONE {
            super::FULL
        } else {
            self.tables[d.side as usize][s.class as usize]
        };
        self.sets.meet(out, inn, s.family, d.family)
    }

    /// The entry from host end `h` to a non-host end of destination key `d` on another node.
    fn host_out(&mut self, h: usize, d: Key) -> PortSetId {
        let view = &self.views[0];
        let (out, _) = view.sides[h].unwrap_or((NONE, NONE));
        let o = if out == NONE {
            super::FULL
        } else {
            self.tables[out as usize][d.class as usize]
        };
        let i = if d.side == NONE {
            super::FULL
        } else {
            self.tables[d.side as usize][view.class[h] as usize]
        };
        self.sets.meet(o, i, Family::Any, d.family)
    }

    /// The entry from a non-host end of source key `s` on another node to host end `h`.
    fn host_in(&mut self, s: Key, h: usize) -> PortSetId {
        let view = &self.views[0];
        let (_, inn) = view.sides[h].unwrap_or((NONE, NONE));
        let o = if s.side == NONE {
            super::FULL
        } else {
            self.tables[s.side as usize][view.class[h] as usize]
        };
        let i = if inn == NONE {
            super::FULL
        } else {
            self.tables[inn as usize][s.class as usize]
        };
        self.sets.meet(o, i, s.family, Family::Any)
    }

    /// The row and column hashes of every end.
    fn hashes(&mut self, k: &Keys) -> Vec<[u64; 4]> {
        let n = self.peers.len();
        let w: Vec<H2> = (0..n).map(weight).collect();
        let group_weight = |members: &[Vec<usize>]| -> Vec<H2> {
            members
                .iter()
                .map(|m| {
                    m.iter().fold([0u64; 2], |acc, &t| {
                        [acc[0].wrapping_add(w[t][0]), acc[1].wrapping_add(w[t][1])]
                    })
                })
                .collect()
        };
        let wd = group_weight(&k.dst_members);
        let ws = group_weight(&k.src_members);
        let mut row_of_src = vec![[0u64; 2]; k.src_keys.len()];
        let mut col_of_dst = vec![[0u64; 2]; k.dst_keys.len()];
        for (si, &s) in k.src_keys.iter().enumerate() {
            for (di, &d) in k.dst_keys.iter().enumerate() {
                let l = self.between(s, d);
                if l != EMPTY {
                    add(&mut row_of_src[si], wd[di], l);
                    add(&mut col_of_dst[di], ws[si], l);
                }
            }
        }
        // Empty entries are left out of the sums above; a row's hash is the sum over its
        // non-empty entries, which determines the row.
        let mut out = vec![[0u64; 4]; n];
        // Non-host ends: the key sums, without the own (diagonal) entry, plus the hosts.
        let mut to_hosts: HashMap<u32, H2, FastHash> = HashMap::default();
        let mut from_hosts: HashMap<u32, H2, FastHash> = HashMap::default();
        for e in 0..n {
            let (si, di) = (k.src[e], k.dst[e]);
            if si == NONE {
                continue;
            }
            let (s, d) = (k.src_keys[si as usize], k.dst_keys[di as usize]);
            let mut row = row_of_src[si as usize];
            let mut col = col_of_dst[di as usize];
            let own = self.between(s, d);
            if own != EMPTY {
                sub(&mut row, w[e], own);
                sub(&mut col, w[e], own);
            }
            // Hosts on other nodes see the end alike, per key.
            let far_row = match to_hosts.get(&si) {
                Some(h) => *h,
                None => {
                    let mut h = [0u64; 2];
                    for &hst in &k.hosts {
                        let l = self.host_in(s, hst);
                        if l != EMPTY {
                            add(&mut h, w[hst], l);
                        }
                    }
                    to_hosts.insert(si, h);
                    h
                }
            };
            let far_col = match from_hosts.get(&di) {
                Some(h) => *h,
                None => {
                    let mut h = [0u64; 2];
                    for &hst in &k.hosts {
                        let l = self.host_out(hst, d);
                        if l != EMPTY {
                            add(&mut h, w[hst], l);
                        }
                    }
                    from_hosts.insert(di, h);
                    h
                }
            };
            row = [
                row[0].wrapping_add(far_row[0]),
                row[1].wrapping_add(far_row[1]),
            ];
            col = [
                col[0].wrapping_add(far_col[0]),
                col[1].wrapping_add(far_col[1]),
            ];
            // The host of its own node sees it as a local endpoint.
            let own: &[usize] = self.views[0].node[e]
                .and_then(|node| k.host_ends.get(&node))
                .map_or(&[], Vec::as_slice);
            for &hst in own {
                let (far, near) = (self.host_in(s, hst), self.allowed(e, hst));
                if far != EMPTY {
                    sub(&mut row, w[hst], far);
                }
                if near != EMPTY {
                    add(&mut row, w[hst], near);
                }
                let (far, near) = (self.host_out(hst, d), self.allowed(hst, e));
                if far != EMPTY {
                    sub(&mut col, w[hst], far);
                }
                if near != EMPTY {
                    add(&mut col, w[hst], near);
                }
            }
            out[e] = [row[0], row[1], col[0], col[1]];
        }
        // Hosts: per destination (source) key, plus the ends on their own node, plus hosts.
        for &h in &k.hosts {
            let (mut row, mut col) = ([0u64; 2], [0u64; 2]);
            for (&d, &weight) in k.dst_keys.iter().zip(&wd) {
                let l = self.host_out(h, d);
                if l != EMPTY {
                    add(&mut row, weight, l);
                }
            }
            for (&s, &weight) in k.src_keys.iter().zip(&ws) {
                let l = self.host_in(s, h);
                if l != EMPTY {
                    add(&mut col, weight, l);
                }
            }
            let Peer::Host(node) = self.peers[h] else {
                continue;
            };
            let local: Vec<usize> = k.on_node.get(&node).cloned().unwrap_or_default();
            for t in local {
                let (far, near) = (
                    self.host_out(h, k.dst_keys[k.dst[t] as usize]),
                    self.allowed(h, t),
                );
                if far != EMPTY {
                    sub(&mut row, w[t], far);
                }
                if near != EMPTY {
                    add(&mut row, w[t], near);
                }
                let (far, near) = (
                    self.host_in(k.src_keys[k.src[t] as usize], h),
                    self.allowed(t, h),
                );
                if far != EMPTY {
                    sub(&mut col, w[t], far);
                }
                if near != EMPTY {
                    add(&mut col, w[t], near);
                }
            }
            for &m in &k.hosts {
                let l = self.allowed(h, m);
                if l != EMPTY {
                    add(&mut row, w[m], l);
                }
                let l = self.allowed(m, h);
                if l != EMPTY {
                    add(&mut col, w[m], l);
                }
            }
            out[h] = [row[0], row[1], col[0], col[1]];
        }
        out
    }

    /// Whether ends `a` and `b` have the same row and the same column, exactly.
    fn same(&mut self, k: &Keys, memo: &mut Memo, a: usize, b: usize) -> bool {
        // Hosts: one entry each.
        for &h in &k.hosts {
            if self.allowed(a, h) != self.allowed(b, h) || self.allowed(h, a) != self.allowed(h, b)
            {
                return false;
            }
        }
        // Positions where an entry may differ from its key's: the two ends themselves, and
        // the ends on a host's node when one of them is that host. They are compared one by
        // one; a key all of whose members are such positions is not compared as a key.
        let mut special: Vec<usize> = Vec::new();
        for e in [a, b] {
            match self.peers[e] {
                Peer::Host(node) => special.extend(k.on_node.get(&node).into_iter().flatten()),
                _ => special.push(e),
            }
        }
        special.sort_unstable();
        special.dedup();
        let mut in_dst: HashMap<u32, usize, FastHash> = HashMap::default();
        let mut in_src: HashMap<u32, usize, FastHash> = HashMap::default();
        for &t in &special {
            if self.allowed(a, t) != self.allowed(b, t) || self.allowed(t, a) != self.allowed(t, b)
            {
                return false;
            }
            *in_dst.entry(k.dst[t]).or_default() += 1;
            *in_src.entry(k.src[t]).or_default() += 1;
        }
        let all_special_dst = |di: u32| {
            di != NONE && in_dst.get(&di).copied().unwrap_or(0) == k.dst_members[di as usize].len()
        };
        let all_special_src = |si: u32| {
            si != NONE && in_src.get(&si).copied().unwrap_or(0) == k.src_members[si as usize].len()
        };
        let plain = k.src[a] != NONE && k.src[b] != NONE;
        // Rows over destination keys.
        if plain {
            let pair = (k.src[a].min(k.src[b]), k.src[a].max(k.src[b]));
            let diff = match memo.rows.get(&pair) {
                Some(d) => d.clone(),
                None => {
                    let (sa, sb) = (k.src_keys[pair.0 as usize], k.src_keys[pair.1 as usize]);
                    let d = self.differing(k.dst_keys.len(), |c, di| {
                        let d = k.dst_keys[di];
                        c.between(sa, d) != c.between(sb, d)
                    });
                    memo.rows.insert(pair, d.clone());
                    d
                }
            };
            if !diff.iter().all(|&di| all_special_dst(di)) {
                return false;
            }
        } else {
            for di in 0..k.dst_keys.len() {
                let d = k.dst_keys[di];
                let dk = u32::try_from(di).unwrap_or(NONE);
                if !all_special_dst(dk) && self.row_entry(k, a, d) != self.row_entry(k, b, d) {
                    return false;
                }
            }
        }
        // Columns over source keys.
        if plain {
            let pair = (k.dst[a].min(k.dst[b]), k.dst[a].max(k.dst[b]));
            let diff = match memo.cols.get(&pair) {
                Some(d) => d.clone(),
                None => {
                    let (da, db) = (k.dst_keys[pair.0 as usize], k.dst_keys[pair.1 as usize]);
                    let d = self.differing(k.src_keys.len(), |c, si| {
                        let s = k.src_keys[si];
                        c.between(s, da) != c.between(s, db)
                    });
                    memo.cols.insert(pair, d.clone());
                    d
                }
            };
            if !diff.iter().all(|&si| all_special_src(si)) {
                return false;
            }
        } else {
            for si in 0..k.src_keys.len() {
                let s = k.src_keys[si];
                let sk = u32::try_from(si).unwrap_or(NONE);
                if !all_special_src(sk) && self.col_entry(k, a, s) != self.col_entry(k, b, s) {
                    return false;
                }
            }
        }
        true
    }

    /// The keys (of `n`) where `differs` holds; more than [`MAX_SPECIAL_KEYS`] are cut to one
    /// more than that (two non-host ends can excuse at most that many keys).
    fn differing(
        &mut self,
        n: usize,
        mut differs: impl FnMut(&mut Self, usize) -> bool,
    ) -> Vec<u32> {
        let mut out = Vec::new();
        for i in 0..n {
            if differs(self, i) {
                out.push(u32::try_from(i).unwrap_or(NONE));
                if out.len() > MAX_SPECIAL_KEYS {
                    // A key no end excuses: `NONE` is never all special.
                    out.push(NONE);
                    break;
                }
            }
        }
        out
    }

    /// End `e`'s entry towards a non-special member of destination key `d`.
    fn row_entry(&mut self, k: &Keys, e: usize, d: Key) -> PortSetId {
        match k.src[e] {
            NONE => self.host_out(e, d),
            si => self.between(k.src_keys[si as usize], d),
        }
    }

    /// The entry from a non-special member of source key `s` to end `e`.
    fn col_entry(&mut self, k: &Keys, e: usize, s: Key) -> PortSetId {
        match k.dst[e] {
            NONE => self.host_in(s, e),
            di => self.between(s, k.dst_keys[di as usize]),
        }
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
        let k = self.keys();
        let hashes = if hashed {
            self.hashes(&k)
        } else {
            vec![[0; 4]; self.peers.len()]
        };
        let mut classes: Vec<Vec<usize>> = Vec::new();
        let mut by_hash: HashMap<[u64; 4], Vec<usize>> = HashMap::new();
        let mut memo = Memo::default();
        for (e, hash) in hashes.iter().enumerate() {
            let candidates = by_hash.entry(*hash).or_default().clone();
            let joined = candidates
                .into_iter()
                .find(|&c| self.same(&k, &mut memo, classes[c][0], e));
            match joined {
                Some(c) => classes[c].push(e),
                None => {
                    by_hash.entry(*hash).or_default().push(classes.len());
                    classes.push(vec![e]);
                }
            }
        }
        let reps: Vec<usize> = classes.iter().map(|c| c[0]).collect();
        let mut edges = Vec::new();
        for (a, &ra) in reps.iter().enumerate() {
            for (b, &rb) in reps.iter().enumerate() {
                let l = if a == b {
                    // Members of a class never reach each other (see the module doc); the
                    // entry between the first two is still what is drawn.
                    match classes[a].get(1) {
                        Some(&second) => self.allowed(ra, second),
                        None => EMPTY,
                    }
                } else {
                    self.allowed(ra, rb)
                };
                if l != EMPTY {
                    edges.push((a, b, l));
                }
            }
        }
        Graph { classes, edges }
    }
}
