//! What a node should have installed, as the bytes of its maps: the ipcache (Cilium's
//! `cilium_ipcache_v2` layout) and, per endpoint, its policy map (Cilium 1.19 layout) and the
//! record `polc status` shows. Pure: built from the compiler's map state, compared by the sync
//! with what the kernel holds.

use crate::abi::{self, EndpointInfo};
use crate::error::Error;
use crate::ipcache::{self, IpcacheLayout};
use crate::layout::{self, Layout};
use polc_compiler::identity::IpcacheEntry;
use polc_compiler::mapstate::{EndpointPolicy, Entry, Key};
use std::collections::BTreeMap;

/// A policy-map key's bytes.
pub type PolicyKeyBytes = [u8; layout::KEY_SIZE];
/// A policy-map value's bytes (1.19 layout).
pub type PolicyValueBytes = [u8; 12];
/// An ipcache key's bytes.
pub type IpcacheKeyBytes = [u8; ipcache::KEY_SIZE];
/// An ipcache value's bytes (`cilium_ipcache_v2`).
pub type IpcacheValueBytes = [u8; 24];

/// One endpoint's desired maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointState {
    /// `namespace/pod` or `host/node`.
    pub name: String,
    /// The endpoint's identity.
    pub identity: u32,
    /// Whether ingress policy is enforced.
    pub ingress_enforced: bool,
    /// Whether egress policy is enforced.
    pub egress_enforced: bool,
    /// Its policy map.
    pub policy: BTreeMap<PolicyKeyBytes, PolicyValueBytes>,
}

impl EndpointState {
    /// The endpoint's state from its compiled map state.
    pub fn from_policy(name: &str, identity: u32, policy: &EndpointPolicy) -> Self {
        EndpointState {
            name: name.to_string(),
            identity,
            ingress_enforced: policy.enforced.0,
            egress_enforced: policy.enforced.1,
            policy: policy_bytes(&policy.map),
        }
    }

    /// The `polc_endpoints` record of the endpoint.
    pub fn info(&self, endpoint_id: u16) -> EndpointInfo {
        let mut flags = 0;
        if self.ingress_enforced {
            flags |= abi::ENDPOINT_F_INGRESS_ENFORCED;
        }
        if self.egress_enforced {
            flags |= abi::ENDPOINT_F_EGRESS_ENFORCED;
        }
        EndpointInfo::new(endpoint_id, self.identity, flags, &self.name)
    }
}

/// Map-state entries as policy-map bytes (1.19 layout).
pub fn policy_bytes(map: &BTreeMap<Key, Entry>) -> BTreeMap<PolicyKeyBytes, PolicyValueBytes> {
    map.iter()
        .map(|(k, e)| {
            let mut v = [0u8; 12];
            let bytes = layout::encode_value(k, e, Layout::V1_19);
            v.copy_from_slice(&bytes[..12.min(bytes.len())]);
            (layout::encode_key(k), v)
        })
        .collect()
}

/// Everything one node should have installed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    /// The node's ipcache.
    pub ipcache: BTreeMap<IpcacheKeyBytes, IpcacheValueBytes>,
    /// Its endpoints by endpoint ID.
    pub endpoints: BTreeMap<u16, EndpointState>,
}

impl NodeState {
    /// A node state with the ipcache of `entries` (cluster ID 0) and no endpoints.
    pub fn new(entries: &[IpcacheEntry]) -> Result<Self, Error> {
        let mut ipcache = BTreeMap::new();
        for e in entries {
            let (k, v) = ipcache_entry(e)?;
            ipcache.insert(k, v);
        }
        Ok(NodeState {
            ipcache,
            endpoints: BTreeMap::new(),
        })
    }

    /// Changes the ipcache from the entries `old` (what it holds) to `new`, both sorted by
    /// prefix as [`polc_compiler::identity::IdentityTable::ipcache`] gives them: only the
    /// entries that differ are encoded again.
    pub fn update_ipcache(
        &mut self,
        old: &[IpcacheEntry],
        new: &[IpcacheEntry],
    ) -> Result<(), Error> {
        let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => return Ok(()),
                (Some(x), Some(y)) if x.prefix == y.prefix => {
                    if x != y {
                        let (k, v) = ipcache_entry(y)?;
                        self.ipcache.insert(k, v);
                    }
                    a.next();
                    b.next();
                }
                (Some(x), Some(y)) if x.prefix < y.prefix => {
                    self.ipcache.remove(&ipcache::encode_key(&x.prefix, 0));
                    a.next();
                }
                (Some(x), None) => {
                    self.ipcache.remove(&ipcache::encode_key(&x.prefix, 0));
                    a.next();
                }
                (_, Some(y)) => {
                    let (k, v) = ipcache_entry(y)?;
                    self.ipcache.insert(k, v);
                    b.next();
                }
            }
        }
    }

    /// The identity of each prefix of the ipcache (entries that do not decode are left
    /// out).
    pub fn ipcache_identities(&self) -> std::collections::HashMap<ipnet::IpNet, u32> {
        self.ipcache
            .iter()
            .filter_map(|(k, v)| {
                let (net, _) = ipcache::decode_key(k).ok()?;
                let value = ipcache::decode_value(v, IpcacheLayout::V2).ok()?;
                Some((net, value.identity))
            })
            .collect()
    }

    /// Adds (or replaces) an endpoint.
    pub fn insert_endpoint(&mut self, endpoint_id: u16, endpoint: EndpointState) {
        self.endpoints.insert(endpoint_id, endpoint);
    }

    /// Policy-map entries over all endpoints.
    pub fn policy_entries(&self) -> usize {
        self.endpoints.values().map(|e| e.policy.len()).sum()
    }
}

/// One ipcache entry's key and value bytes (cluster ID 0).
fn ipcache_entry(e: &IpcacheEntry) -> Result<(IpcacheKeyBytes, IpcacheValueBytes), Error> {
    let v = ipcache::encode_value(e, IpcacheLayout::V2)?;
    let mut value = [0u8; 24];
    if v.len() != value.len() {
        return Err(Error::WrongSize {
            what: "ipcache value",
            expected: value.len(),
            actual: v.len(),
        });
    }
    value.copy_from_slice(&v);
    Ok((ipcache::encode_key(&e.prefix, 0), value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use polc_compiler::ir::Direction;

    #[test]
    fn policy_bytes_are_the_layout_encoding() {
        let mut map = BTreeMap::new();
        let k = Key {
            direction: Direction::Ingress,
            identity: 12345,
            proto: 6,
            port: 8080,
            port_prefix: 16,
        };
        map.insert(k, Entry::allow());
        let b = policy_bytes(&map);
        let (key, value) = b.iter().next().expect("one entry");
        assert_eq!(layout::hex(key), "400000003930000000061f90");
        assert_eq!(layout::hex(value), "0000c00001ffffff00000000");
    }

    #[test]
    fn ipcache_bytes_are_the_v2_encoding() {
        let e = IpcacheEntry {
            prefix: "10.0.1.5/32".parse().expect("prefix"),
            identity: 300,
            tunnel_endpoint: None,
        };
        let s = NodeState::new(&[e]).expect("encodes");
        let (k, v) = s.ipcache.iter().next().expect("one entry");
        assert_eq!(
            layout::hex(k),
            format!("4000000000000001{}{}", "0a000105", "00".repeat(12))
        );
        assert_eq!(&v[..4], &300u32.to_le_bytes());
    }

    #[test]
    fn endpoint_info_carries_enforcement() {
        let e = EndpointState {
            name: "ns/pod".into(),
            identity: 400,
            ingress_enforced: true,
            egress_enforced: false,
            policy: BTreeMap::new(),
        };
        let info = e.info(9);
        assert_eq!(info.flags, abi::ENDPOINT_F_INGRESS_ENFORCED);
        assert_eq!(info.endpoint_id, 9);
        assert_eq!(info.name(), "ns/pod");
    }

    #[test]
    fn an_ipcache_update_writes_what_a_fresh_state_has() {
        let entry = |prefix: &str, identity: u32, tunnel: Option<&str>| IpcacheEntry {
            prefix: prefix.parse().unwrap(),
            identity,
            tunnel_endpoint: tunnel.map(|t| t.parse().unwrap()),
        };
        let old = vec![
            entry("0.0.0.0/0", 2, None),
            entry("10.0.0.1/32", 256, None),
            entry("10.0.0.2/32", 257, Some("192.168.0.2")),
            entry("10.0.0.3/32", 258, None),
            entry("::/0", 2, None),
        ];
        let new = vec![
            entry("0.0.0.0/0", 2, None),
            entry("10.0.0.0/24", 16777217, None),
            entry("10.0.0.2/32", 257, Some("192.168.0.3")),
            entry("10.0.0.3/32", 259, None),
            entry("10.0.0.9/32", 260, None),
            entry("::/0", 2, None),
        ];
        let mut state = NodeState::new(&old).unwrap();
        state.update_ipcache(&old, &new).unwrap();
        assert_eq!(state.ipcache, NodeState::new(&new).unwrap().ipcache);
        state.update_ipcache(&new, &[]).unwrap();
        assert!(state.ipcache.is_empty());
    }
}
