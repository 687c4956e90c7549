//! Bringing installed maps to a desired [`NodeState`] without dropping allowed flows and
//! without ever leaving a half-applied state.
//!
//! The sync compares what is installed with what is desired and applies the difference in
//! this order:
//!
//! 1. new endpoints' policy maps are created and filled (not yet visible to the datapath);
//! 2. additions and changes: policy entries, endpoint records, new maps linked into
//!    `polc_policy`, interfaces, then ipcache entries (a peer's new identity gets its policy
//!    entries before its address is mapped to it);
//! 3. deletions, the other way round: interfaces, unlinked maps, endpoint records, policy
//!    entries, ipcache entries; policy maps of removed endpoints are unpinned last.
//!
//! Every operation is journaled with the value it replaced. When one fails, the journal is
//! undone in reverse order, so the kernel holds exactly what it held before, and the error
//! names the operation. Nothing is irreversible until [`Target::commit`], which frees the
//! maps of removed endpoints. The pure part (the plan, the order, the rollback) is tested here
//! against an in-memory target with injected faults; `loader` implements [`Target`] on the
//! kernel's maps.

use crate::abi::{EndpointInfo, IfaceInfo};
use crate::state::{
    EndpointState, IpcacheKeyBytes, IpcacheValueBytes, NodeState, PolicyKeyBytes, PolicyValueBytes,
};
use std::collections::BTreeMap;
use std::fmt;

/// A failed kernel operation: what was attempted, and why it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault(pub String);

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The maps a sync writes. Every method is one kernel operation.
pub trait Target {
    /// Creates (and pins) an empty policy map for an endpoint.
    fn create_policy_map(&mut self, ep: u16) -> Result<(), Fault>;
    /// Removes the pin of an endpoint's policy map but keeps the map, so that
    /// [`Target::restore_policy_map`] can undo it until [`Target::commit`].
    fn retire_policy_map(&mut self, ep: u16) -> Result<(), Fault>;
    /// Pins a retired (or created) policy map again.
    fn restore_policy_map(&mut self, ep: u16) -> Result<(), Fault>;
    /// Removes a map created by this sync (rollback of [`Target::create_policy_map`]).
    fn discard_policy_map(&mut self, ep: u16) -> Result<(), Fault>;
    /// Writes a policy entry.
    fn put_policy(
        &mut self,
        ep: u16,
        k: &PolicyKeyBytes,
        v: &PolicyValueBytes,
    ) -> Result<(), Fault>;
    /// Deletes a policy entry.
    fn del_policy(&mut self, ep: u16, k: &PolicyKeyBytes) -> Result<(), Fault>;
    /// Makes an endpoint's policy map visible to the datapath (`polc_policy[ep]`).
    fn link(&mut self, ep: u16) -> Result<(), Fault>;
    /// Removes `polc_policy[ep]`.
    fn unlink(&mut self, ep: u16) -> Result<(), Fault>;
    /// Writes an endpoint's record.
    fn put_endpoint(&mut self, ep: u16, info: &EndpointInfo) -> Result<(), Fault>;
    /// Deletes an endpoint's record.
    fn del_endpoint(&mut self, ep: u16) -> Result<(), Fault>;
    /// Writes which endpoint an interface serves.
    fn put_iface(&mut self, ifindex: u32, info: IfaceInfo) -> Result<(), Fault>;
    /// Deletes an interface.
    fn del_iface(&mut self, ifindex: u32) -> Result<(), Fault>;
    /// Writes an ipcache entry.
    fn put_ipcache(&mut self, k: &IpcacheKeyBytes, v: &IpcacheValueBytes) -> Result<(), Fault>;
    /// Deletes an ipcache entry.
    fn del_ipcache(&mut self, k: &IpcacheKeyBytes) -> Result<(), Fault>;
    /// Frees what [`Target::retire_policy_map`] kept; the sync cannot be undone after this.
    fn commit(&mut self);
}

/// What is installed: the node state and the interfaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Installed {
    /// Maps of the node.
    pub state: NodeState,
    /// Interfaces by ifindex.
    pub ifaces: BTreeMap<u32, IfaceInfo>,
}

/// Added, changed and removed entries of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// New entries.
    pub added: usize,
    /// Entries whose value changed.
    pub changed: usize,
    /// Entries removed.
    pub removed: usize,
}

impl Counts {
    /// All three.
    pub fn total(&self) -> usize {
        self.added + self.changed + self.removed
    }
}

/// What a sync changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// ipcache entries.
    pub ipcache: Counts,
    /// Policy-map entries, all endpoints (entries of removed endpoints' maps are not counted
    /// one by one: the map goes).
    pub policy: Counts,
    /// Endpoints (their policy map and record).
    pub endpoints: Counts,
    /// Interfaces.
    pub interfaces: Counts,
}

impl Changes {
    /// Every change.
    pub fn total(&self) -> usize {
        self.ipcache.total()
            + self.policy.total()
            + self.endpoints.total()
            + self.interfaces.total()
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (p, i, e, n) = (self.policy, self.ipcache, self.endpoints, self.interfaces);
        write!(
            f,
            "policy entries +{} ~{} -{}, ipcache +{} ~{} -{}, endpoints +{} ~{} -{}, \
             interfaces +{} ~{} -{}",
            p.added,
            p.changed,
            p.removed,
            i.added,
            i.changed,
            i.removed,
            e.added,
            e.changed,
            e.removed,
            n.added,
            n.changed,
            n.removed
        )
    }
}

/// A sync that failed: the failed operation, and whether the rollback restored everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncError {
    /// The operation that failed.
    pub fault: Fault,
    /// Operations done before it (all undone if `rollback` is empty).
    pub applied: usize,
    /// Operations of the rollback that failed too (then the state is mixed).
    pub rollback: Vec<Fault>,
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.fault)?;
        if self.rollback.is_empty() {
            write!(
                f,
                "; the {} operations before it were rolled back",
                self.applied
            )
        } else {
            write!(
                f,
                "; rolling back {} operations failed {} times, first: {}",
                self.applied,
                self.rollback.len(),
                self.rollback[0]
            )
        }
    }
}

/// One step of a plan, with the value it replaces (for the rollback).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    CreateMap(u16),
    PutPolicy(
        u16,
        PolicyKeyBytes,
        PolicyValueBytes,
        Option<PolicyValueBytes>,
    ),
    PutEndpoint(u16, Box<EndpointInfo>, Option<Box<EndpointInfo>>),
    Link(u16),
    PutIface(u32, IfaceInfo, Option<IfaceInfo>),
    PutIpcache(
        IpcacheKeyBytes,
        IpcacheValueBytes,
        Option<IpcacheValueBytes>,
    ),
    DelIface(u32, IfaceInfo),
    Unlink(u16),
    DelEndpoint(u16, Box<EndpointInfo>),
    DelPolicy(u16, PolicyKeyBytes, PolicyValueBytes),
    DelIpcache(IpcacheKeyBytes, IpcacheValueBytes),
    RetireMap(u16),
}

/// The difference of two sorted maps: writes (key, new, old) and deletions (key, old).
#[allow(clippy::type_complexity)]
fn diff<K: Ord + Copy, V: Eq + Copy>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> (Vec<(K, V, Option<V>)>, Vec<(K, V)>) {
    let mut writes = Vec::new();
    let mut dels = Vec::new();
    let mut a = old.iter().peekable();
    let mut b = new.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    dels.push((**ka, **va));
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    writes.push((**kb, **vb, None));
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if va != vb {
                        writes.push((**kb, **vb, Some(**va)));
                    }
                    a.next();
                    b.next();
                }
            },
            (Some((ka, va)), None) => {
                dels.push((**ka, **va));
                a.next();
            }
            (None, Some((kb, vb))) => {
                writes.push((**kb, **vb, None));
                b.next();
            }
            (None, None) => break,
        }
    }
    (writes, dels)
}

/// The operations that take `installed` to (`desired`, `ifaces`), in the order of the module
/// doc, and what they change.
fn plan(
    installed: &Installed,
    desired: &NodeState,
    ifaces: &BTreeMap<u32, IfaceInfo>,
) -> (Vec<Op>, Changes) {
    let mut ops = Vec::new();
    let mut ch = Changes::default();
    let old_eps = &installed.state.endpoints;
    let new_eps = &desired.endpoints;

    // 1. New maps, filled.
    for (ep, e) in new_eps {
        if !old_eps.contains_key(ep) {
            ops.push(Op::CreateMap(*ep));
            ch.endpoints.added += 1;
            for (k, v) in &e.policy {
                ops.push(Op::PutPolicy(*ep, *k, *v, None));
            }
            ch.policy.added += e.policy.len();
        }
    }
    // 2. Additions and changes.
    let mut policy_dels = Vec::new();
    for (ep, e) in new_eps {
        let Some(old) = old_eps.get(ep) else { continue };
        if old.policy == e.policy {
            continue;
        }
        let (w, d) = diff(&old.policy, &e.policy);
        for (k, v, prev) in w {
            if prev.is_some() {
                ch.policy.changed += 1;
            } else {
                ch.policy.added += 1;
            }
            ops.push(Op::PutPolicy(*ep, k, v, prev));
        }
        ch.policy.removed += d.len();
        policy_dels.extend(d.into_iter().map(|(k, v)| Op::DelPolicy(*ep, k, v)));
    }
    for (ep, e) in new_eps {
        let info = e.info(*ep);
        match old_eps.get(ep) {
            None => ops.push(Op::PutEndpoint(*ep, Box::new(info), None)),
            Some(old) => {
                let prev = old.info(*ep);
                if prev != info {
                    ch.endpoints.changed += 1;
                    ops.push(Op::PutEndpoint(*ep, Box::new(info), Some(Box::new(prev))));
                }
            }
        }
    }
    for ep in new_eps.keys() {
        if !old_eps.contains_key(ep) {
            ops.push(Op::Link(*ep));
        }
    }
    let (iw, id) = diff(&installed.ifaces, ifaces);
    for (k, v, prev) in iw {
        if prev.is_some() {
            ch.interfaces.changed += 1;
        } else {
            ch.interfaces.added += 1;
        }
        ops.push(Op::PutIface(k, v, prev));
    }
    let (cw, cd) = diff(&installed.state.ipcache, &desired.ipcache);
    for (k, v, prev) in cw {
        if prev.is_some() {
            ch.ipcache.changed += 1;
        } else {
            ch.ipcache.added += 1;
        }
        ops.push(Op::PutIpcache(k, v, prev));
    }
    // 3. Deletions.
    ch.interfaces.removed += id.len();
    ops.extend(id.into_iter().map(|(k, v)| Op::DelIface(k, v)));
    let removed: Vec<(u16, &EndpointState)> = old_eps
        .iter()
        .filter(|(ep, _)| !new_eps.contains_key(ep))
        .map(|(ep, e)| (*ep, e))
        .collect();
    ch.endpoints.removed += removed.len();
    for (ep, _) in &removed {
        ops.push(Op::Unlink(*ep));
    }
    for (ep, e) in &removed {
        ops.push(Op::DelEndpoint(*ep, Box::new(e.info(*ep))));
    }
    ops.extend(policy_dels);
    ch.ipcache.removed += cd.len();
    ops.extend(cd.into_iter().map(|(k, v)| Op::DelIpcache(k, v)));
    for (ep, _) in &removed {
        ops.push(Op::RetireMap(*ep));
    }
    (ops, ch)
}

fn apply<T: Target>(t: &mut T, op: &Op) -> Result<(), Fault> {
    match op {
        Op::CreateMap(ep) => t.create_policy_map(*ep),
        Op::PutPolicy(ep, k, v, _) => t.put_policy(*ep, k, v),
        Op::PutEndpoint(ep, info, _) => t.put_endpoint(*ep, info),
        Op::Link(ep) => t.link(*ep),
        Op::PutIface(i, v, _) => t.put_iface(*i, *v),
        Op::PutIpcache(k, v, _) => t.put_ipcache(k, v),
        Op::DelIface(i, _) => t.del_iface(*i),
        Op::Unlink(ep) => t.unlink(*ep),
        Op::DelEndpoint(ep, _) => t.del_endpoint(*ep),
        Op::DelPolicy(ep, k, _) => t.del_policy(*ep, k),
        Op::DelIpcache(k, _) => t.del_ipcache(k),
        Op::RetireMap(ep) => t.retire_policy_map(*ep),
    }
}

fn undo<T: Target>(t: &mut T, op: &Op) -> Result<(), Fault> {
    match op {
        Op::CreateMap(ep) => t.discard_policy_map(*ep),
        Op::PutPolicy(ep, k, _, None) => t.del_policy(*ep, k),
        Op::PutPolicy(ep, k, _, Some(old)) => t.put_policy(*ep, k, old),
        Op::PutEndpoint(ep, _, None) => t.del_endpoint(*ep),
        Op::PutEndpoint(ep, _, Some(old)) => t.put_endpoint(*ep, old),
        Op::Link(ep) => t.unlink(*ep),
        Op::PutIface(i, _, None) => t.del_iface(*i),
        Op::PutIface(i, _, Some(old)) => t.put_iface(*i, *old),
        Op::PutIpcache(k, _, None) => t.del_ipcache(k),
        Op::PutIpcache(k, _, Some(old)) => t.put_ipcache(k, old),
        Op::DelIface(i, old) => t.put_iface(*i, *old),
        Op::Unlink(ep) => t.link(*ep),
        Op::DelEndpoint(ep, old) => t.put_endpoint(*ep, old),
        Op::DelPolicy(ep, k, old) => t.put_policy(*ep, k, old),
        Op::DelIpcache(k, old) => t.put_ipcache(k, old),
        Op::RetireMap(ep) => t.restore_policy_map(*ep),
    }
}

/// Records a successful op in `installed`.
fn record(installed: &mut Installed, desired: &NodeState, op: &Op) {
    let eps = &mut installed.state.endpoints;
    match op {
        Op::CreateMap(ep) => {
            if let Some(e) = desired.endpoints.get(ep) {
                let mut e = e.clone();
                e.policy.clear();
                eps.insert(*ep, e);
            }
        }
        Op::PutPolicy(ep, k, v, _) => {
            if let Some(e) = eps.get_mut(ep) {
                e.policy.insert(*k, *v);
            }
        }
        Op::PutEndpoint(ep, _, _) => {
            if let (Some(e), Some(d)) = (eps.get_mut(ep), desired.endpoints.get(ep)) {
                e.name.clone_from(&d.name);
                e.identity = d.identity;
                e.ingress_enforced = d.ingress_enforced;
                e.egress_enforced = d.egress_enforced;
            }
        }
        Op::PutIface(i, v, _) => {
            installed.ifaces.insert(*i, *v);
        }
        Op::PutIpcache(k, v, _) => {
            installed.state.ipcache.insert(*k, *v);
        }
        Op::DelIface(i, _) => {
            installed.ifaces.remove(i);
        }
        Op::DelPolicy(ep, k, _) => {
            if let Some(e) = eps.get_mut(ep) {
                e.policy.remove(k);
            }
        }
        Op::DelIpcache(k, _) => {
            installed.state.ipcache.remove(k);
        }
        Op::RetireMap(ep) => {
            eps.remove(ep);
        }
        Op::Link(_) | Op::Unlink(_) | Op::DelEndpoint(_, _) => {}
    }
}

/// A sync that has been applied but not committed: [`Pending::commit`] makes it final,
/// [`Pending::rollback`] undoes it (for a caller with more steps that can still fail).
#[must_use = "a pending sync must be committed or rolled back"]
pub struct Pending {
    ops: Vec<Op>,
    /// What the sync changed.
    pub changes: Changes,
}

impl Pending {
    /// Makes the sync final: records it in `installed` and frees removed maps.
    pub fn commit<T: Target>(
        self,
        target: &mut T,
        installed: &mut Installed,
        desired: &NodeState,
    ) -> Changes {
        for op in &self.ops {
            record(installed, desired, op);
        }
        target.commit();
        self.changes
    }

    /// Undoes every operation, newest first; returns the undo operations that failed.
    pub fn rollback<T: Target>(self, target: &mut T) -> Vec<Fault> {
        undo_all(target, &self.ops)
    }
}

fn undo_all<T: Target>(target: &mut T, ops: &[Op]) -> Vec<Fault> {
    ops.iter()
        .rev()
        .filter_map(|op| undo(target, op).err())
        .collect()
}

/// Applies the difference between `installed` and (`desired`, `ifaces`) to `target`. On a
/// failure everything applied is undone and the error says what failed; on success the
/// changes are pending until committed.
pub fn apply_diff<T: Target>(
    target: &mut T,
    installed: &Installed,
    desired: &NodeState,
    ifaces: &BTreeMap<u32, IfaceInfo>,
) -> Result<Pending, SyncError> {
    let (ops, changes) = plan(installed, desired, ifaces);
    for (i, op) in ops.iter().enumerate() {
        if let Err(fault) = apply(target, op) {
            let rollback = undo_all(target, &ops[..i]);
            return Err(SyncError {
                fault,
                applied: i,
                rollback,
            });
        }
    }
    Ok(Pending { ops, changes })
}

/// [`apply_diff`] and commit.
pub fn sync<T: Target>(
    target: &mut T,
    installed: &mut Installed,
    desired: &NodeState,
    ifaces: &BTreeMap<u32, IfaceInfo>,
) -> Result<Changes, SyncError> {
    let pending = apply_diff(target, installed, desired, ifaces)?;
    Ok(pending.commit(target, installed, desired))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::ENDPOINT_INFO_SIZE;

    /// An in-memory kernel: maps by endpoint, a log of operations, and an optional fault.
    #[derive(Default)]
    struct Fake {
        maps: BTreeMap<u16, BTreeMap<PolicyKeyBytes, PolicyValueBytes>>,
        pinned: BTreeMap<u16, bool>,
        linked: BTreeMap<u16, bool>,
        endpoints: BTreeMap<u16, [u8; ENDPOINT_INFO_SIZE]>,
        ifaces: BTreeMap<u32, IfaceInfo>,
        ipcache: BTreeMap<IpcacheKeyBytes, IpcacheValueBytes>,
        log: Vec<String>,
        fail_at: Option<usize>,
        capacity: usize,
        ops: usize,
    }

    impl Fake {
        fn step(&mut self, what: String) -> Result<(), Fault> {
            self.ops += 1;
            if self.fail_at == Some(self.ops) {
                return Err(Fault(format!("injected fault at {what}")));
            }
            self.log.push(what);
            Ok(())
        }

        /// What a datapath would see: linked maps and everything else.
        fn visible(&self) -> String {
            format!(
                "{:?}",
                (
                    self.maps
                        .iter()
                        .filter(|(ep, _)| self.linked.get(ep) == Some(&true))
                        .collect::<Vec<_>>(),
                    &self.pinned,
                    &self.endpoints.keys().collect::<Vec<_>>(),
                    &self.ifaces,
                    &self.ipcache,
                )
            )
        }
    }

    impl Target for Fake {
        fn create_policy_map(&mut self, ep: u16) -> Result<(), Fault> {
            self.step(format!("create {ep}"))?;
            self.maps.insert(ep, BTreeMap::new());
            self.pinned.insert(ep, true);
            Ok(())
        }
        fn retire_policy_map(&mut self, ep: u16) -> Result<(), Fault> {
            self.step(format!("retire {ep}"))?;
            self.pinned.insert(ep, false);
            Ok(())
        }
        fn restore_policy_map(&mut self, ep: u16) -> Result<(), Fault> {
            self.pinned.insert(ep, true);
            Ok(())
        }
        fn discard_policy_map(&mut self, ep: u16) -> Result<(), Fault> {
            self.maps.remove(&ep);
            self.pinned.remove(&ep);
            Ok(())
        }
        fn put_policy(
            &mut self,
            ep: u16,
            k: &PolicyKeyBytes,
            v: &PolicyValueBytes,
        ) -> Result<(), Fault> {
            self.step(format!("put policy {ep} {}", k[4]))?;
            let cap = self.capacity;
            let m = self.maps.entry(ep).or_default();
            if cap > 0 && !m.contains_key(k) && m.len() >= cap {
                return Err(Fault(format!("map {ep} full")));
            }
            m.insert(*k, *v);
            Ok(())
        }
        fn del_policy(&mut self, ep: u16, k: &PolicyKeyBytes) -> Result<(), Fault> {
            self.step(format!("del policy {ep} {}", k[4]))?;
            self.maps.entry(ep).or_default().remove(k);
            Ok(())
        }
        fn link(&mut self, ep: u16) -> Result<(), Fault> {
            self.step(format!("link {ep}"))?;
            self.linked.insert(ep, true);
            Ok(())
        }
        fn unlink(&mut self, ep: u16) -> Result<(), Fault> {
            self.step(format!("unlink {ep}"))?;
            self.linked.remove(&ep);
            Ok(())
        }
        fn put_endpoint(&mut self, ep: u16, info: &EndpointInfo) -> Result<(), Fault> {
            self.step(format!("put endpoint {ep}"))?;
            self.endpoints.insert(ep, info.to_bytes());
            Ok(())
        }
        fn del_endpoint(&mut self, ep: u16) -> Result<(), Fault> {
            self.step(format!("del endpoint {ep}"))?;
            self.endpoints.remove(&ep);
            Ok(())
        }
        fn put_iface(&mut self, ifindex: u32, info: IfaceInfo) -> Result<(), Fault> {
            self.step(format!("put iface {ifindex}"))?;
            self.ifaces.insert(ifindex, info);
            Ok(())
        }
        fn del_iface(&mut self, ifindex: u32) -> Result<(), Fault> {
            self.step(format!("del iface {ifindex}"))?;
            self.ifaces.remove(&ifindex);
            Ok(())
        }
        fn put_ipcache(&mut self, k: &IpcacheKeyBytes, v: &IpcacheValueBytes) -> Result<(), Fault> {
            self.step(format!("put ipcache {}", k[8]))?;
            self.ipcache.insert(*k, *v);
            Ok(())
        }
        fn del_ipcache(&mut self, k: &IpcacheKeyBytes) -> Result<(), Fault> {
            self.step(format!("del ipcache {}", k[8]))?;
            self.ipcache.remove(k);
            Ok(())
        }
        fn commit(&mut self) {
            let gone: Vec<u16> = self
                .pinned
                .iter()
                .filter(|(_, p)| !**p)
                .map(|(ep, _)| *ep)
                .collect();
            for ep in gone {
                self.maps.remove(&ep);
                self.pinned.remove(&ep);
            }
        }
    }

    fn pkey(id: u8) -> PolicyKeyBytes {
        let mut k = [0u8; 12];
        k[0] = 40;
        k[4] = id;
        k
    }

    fn pval(x: u8) -> PolicyValueBytes {
        let mut v = [0u8; 12];
        v[4] = x;
        v
    }

    fn ikey(x: u8) -> IpcacheKeyBytes {
        let mut k = [0u8; 24];
        k[0] = 64;
        k[7] = 1;
        k[8] = x;
        k
    }

    fn endpoint(name: &str, entries: &[(u8, u8)]) -> EndpointState {
        EndpointState {
            name: name.into(),
            identity: 300,
            ingress_enforced: true,
            egress_enforced: false,
            policy: entries.iter().map(|(k, v)| (pkey(*k), pval(*v))).collect(),
        }
    }

    fn node(eps: &[(u16, EndpointState)], ips: &[(u8, u8)]) -> NodeState {
        NodeState {
            ipcache: ips
                .iter()
                .map(|(k, v)| {
                    let mut val = [0u8; 24];
                    val[0] = *v;
                    (ikey(*k), val)
                })
                .collect(),
            endpoints: eps.iter().cloned().collect(),
        }
    }

    fn ifaces(list: &[(u32, u16)]) -> BTreeMap<u32, IfaceInfo> {
        list.iter()
            .map(|(i, ep)| {
                (
                    *i,
                    IfaceInfo {
                        endpoint_id: *ep,
                        flags: 0,
                        pad: 0,
                    },
                )
            })
            .collect()
    }

    type Wanted = (NodeState, BTreeMap<u32, IfaceInfo>);

    fn before_and_after() -> (Wanted, Wanted) {
        let a = node(
            &[
                (1, endpoint("ns/a", &[(1, 1), (2, 1), (3, 1)])),
                (2, endpoint("ns/b", &[(1, 1)])),
            ],
            &[(10, 1), (11, 2)],
        );
        let b = node(
            &[
                (1, endpoint("ns/a", &[(1, 1), (2, 9), (4, 1)])),
                (3, endpoint("ns/c", &[(5, 1), (6, 1)])),
            ],
            &[(10, 1), (12, 3)],
        );
        (
            (a, ifaces(&[(7, 1), (8, 2)])),
            (b, ifaces(&[(7, 1), (9, 3)])),
        )
    }

    #[test]
    fn a_second_sync_changes_nothing() {
        let ((a, ia), _) = before_and_after();
        let mut fake = Fake::default();
        let mut installed = Installed::default();
        let ch = sync(&mut fake, &mut installed, &a, &ia).expect("sync");
        assert_eq!(ch.policy.added, 4);
        assert_eq!(ch.endpoints.added, 2);
        assert_eq!(ch.interfaces.added, 2);
        assert_eq!(ch.ipcache.added, 2);
        assert_eq!(installed.state, a);
        assert_eq!(installed.ifaces, ia);
        fake.log.clear();
        let ch = sync(&mut fake, &mut installed, &a, &ia).expect("sync");
        assert_eq!(ch.total(), 0);
        assert!(fake.log.is_empty(), "{:?}", fake.log);
    }

    #[test]
    fn writes_come_before_deletions_and_maps_are_filled_before_linking() {
        let ((a, ia), (b, ib)) = before_and_after();
        let mut fake = Fake::default();
        let mut installed = Installed::default();
        sync(&mut fake, &mut installed, &a, &ia).expect("sync");
        fake.log.clear();
        let ch = sync(&mut fake, &mut installed, &b, &ib).expect("sync");
        assert_eq!(
            ch,
            Changes {
                ipcache: Counts {
                    added: 1,
                    changed: 0,
                    removed: 1
                },
                policy: Counts {
                    added: 3,
                    changed: 1,
                    removed: 1
                },
                endpoints: Counts {
                    added: 1,
                    changed: 0,
                    removed: 1
                },
                interfaces: Counts {
                    added: 1,
                    changed: 0,
                    removed: 1
                },
            }
        );
        let log = &fake.log;
        let pos = |s: &str| {
            log.iter()
                .position(|l| l == s)
                .unwrap_or_else(|| panic!("{s} not in {log:?}"))
        };
        let first_del = log
            .iter()
            .position(|l| {
                l.starts_with("del") || l.starts_with("unlink") || l.starts_with("retire")
            })
            .expect("a deletion");
        let last_put = log
            .iter()
            .rposition(|l| l.starts_with("put") || l.starts_with("create") || l.starts_with("link"))
            .expect("a write");
        assert!(last_put < first_del, "{log:?}");
        assert!(pos("create 3") < pos("put policy 3 5"));
        assert!(pos("put policy 3 6") < pos("link 3"));
        assert!(pos("link 3") < pos("put iface 9"));
        assert!(pos("put policy 1 4") < pos("put ipcache 12"));
        assert!(pos("del iface 8") < pos("unlink 2"));
        assert!(pos("unlink 2") < pos("retire 2"));
        assert_eq!(installed.state, b);
        assert_eq!(installed.ifaces, ib);
        assert!(!fake.maps.contains_key(&2), "removed map freed on commit");
    }

    #[test]
    fn every_failure_point_rolls_back_to_the_previous_state() {
        let ((a, ia), (b, ib)) = before_and_after();
        let mut reference = Fake::default();
        let mut installed = Installed::default();
        sync(&mut reference, &mut installed, &a, &ia).expect("sync");
        let (ops, _) = plan(&installed, &b, &ib);
        assert!(ops.len() > 10);
        for fail_at in 1..=ops.len() {
            let mut fake = Fake::default();
            let mut inst = Installed::default();
            sync(&mut fake, &mut inst, &a, &ia).expect("sync");
            let before = fake.visible();
            fake.ops = 0;
            fake.fail_at = Some(fail_at);
            let err = sync(&mut fake, &mut inst, &b, &ib).expect_err("injected fault");
            assert_eq!(err.applied, fail_at - 1);
            assert!(err.rollback.is_empty());
            assert!(err.to_string().contains("injected fault"), "{err}");
            assert_eq!(fake.visible(), before, "fault at op {fail_at}");
            assert_eq!(inst.state, a, "installed record unchanged");
            // The next sync, without a fault, still gets there.
            fake.fail_at = None;
            sync(&mut fake, &mut inst, &b, &ib).expect("sync");
            assert_eq!(inst.state, b);
        }
    }

    #[test]
    fn a_full_map_rolls_back() {
        let ((a, ia), (b, ib)) = before_and_after();
        let mut fake = Fake::default();
        let mut installed = Installed::default();
        sync(&mut fake, &mut installed, &a, &ia).expect("sync");
        let before = fake.visible();
        fake.capacity = 3;
        let err = sync(&mut fake, &mut installed, &b, &ib).expect_err("map full");
        assert!(err.fault.0.contains("map 1 full"), "{err}");
        assert_eq!(fake.visible(), before);
        assert_eq!(installed.state, a);
    }

    #[test]
    fn diff_of_sorted_maps() {
        let old: BTreeMap<u8, u8> = [(1, 1), (2, 2), (4, 4)].into_iter().collect();
        let new: BTreeMap<u8, u8> = [(2, 3), (3, 3), (4, 4)].into_iter().collect();
        let (w, d) = diff(&old, &new);
        assert_eq!(w, vec![(2, 3, Some(2)), (3, 3, None)]);
        assert_eq!(d, vec![(1, 1)]);
    }
}
