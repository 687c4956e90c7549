//! The ipcache map (`cilium_ipcache` up to 1.18, `cilium_ipcache_v2` in 1.19): the bytes of its
//! keys and values, and their decoders (datapath spec §3.5).
//!
//! Key (24 bytes, `struct ipcache_key`, the same in both maps):
//!
//! | Off | Size | Field | Content |
//! |---|---|---|---|
//! | 0 | 4 | `lpm_key.prefixlen` | host order; 32 + the IP prefix length (v4 /32 = 64, v6 /128 = 160) |
//! | 4 | 2 | `cluster_id` | host order |
//! | 6 | 1 | `pad1` | 0 |
//! | 7 | 1 | `family` | 1 IPv4, 2 IPv6 |
//! | 8 | 16 | address | network order; IPv4 in the first 4 bytes, the rest zero |
//!
//! Value, `struct remote_endpoint_info`:
//!
//! | Off (v1 / v2) | Size (v1 / v2) | Field |
//! |---|---|---|
//! | 0 / 0 | 4 / 4 | `sec_identity`, host order |
//! | 4 / 4 | 4 / 16 | `tunnel_endpoint`, network order (v2: IPv4 in the first 4 bytes) |
//! | 8 / 20 | 2 / 2 | pad (`node_id` in older v1 agents), 0 |
//! | 10 / 22 | 1 / 1 | `key`, the IPsec key index, 0 |
//! | 11 / 23 | 1 / 1 | flags: bit 0 skip_tunnel, bit 1 has_tunnel_endpoint, bit 2 ipv6_tunnel_endpoint, bit 3 remote_cluster |
//!
//! Where the sources are unsure: the v1 flag bits are taken to be v2's. Cilium 1.19's v1
//! migration code reads the v1 flags byte with the same `RemoteEndpointInfoFlags` type, but
//! whether a 1.17/1.18 agent sets bit 1 (`has_tunnel_endpoint`) in the v1 map is not
//! established; polc sets it whenever there is a tunnel endpoint, in both layouts (the v1
//! datapath keys on a non-zero `tunnel_endpoint`, so the bit is harmless there). The 1.14-era
//! key with `cluster_id` as a u8 at offset 6 is not produced (identical bytes for cluster 0).

use crate::error::Error;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use polc_compiler::CiliumVersion;
use polc_compiler::identity::IpcacheEntry;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The size of an ipcache key.
pub const KEY_SIZE: usize = 24;

/// Entries of the ipcache map (`IPCACHE_MAP_SIZE`).
pub const IPCACHE_MAX_ENTRIES: u32 = 512_000;

/// The key's `family` for IPv4.
pub const FAMILY_IPV4: u8 = 1;

/// The key's `family` for IPv6.
pub const FAMILY_IPV6: u8 = 2;

/// Prefix bits before the address: `cluster_id`, `pad1`, `family`.
const STATIC_PREFIX: u32 = 32;

/// Value flag bit 0: do not tunnel to this endpoint.
pub const FLAG_SKIP_TUNNEL: u8 = 1;
/// Value flag bit 1: `tunnel_endpoint` is set.
pub const FLAG_HAS_TUNNEL_ENDPOINT: u8 = 1 << 1;
/// Value flag bit 2: `tunnel_endpoint` is an IPv6 address.
pub const FLAG_IPV6_TUNNEL_ENDPOINT: u8 = 1 << 2;
/// Value flag bit 3: the endpoint is in a remote cluster.
pub const FLAG_REMOTE_CLUSTER: u8 = 1 << 3;

/// An ipcache value layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpcacheLayout {
    /// `cilium_ipcache` (up to 1.18): 12-byte value, IPv4 tunnel endpoint only.
    V1,
    /// `cilium_ipcache_v2` (1.19): 24-byte value, 16-byte tunnel endpoint.
    V2,
}

impl IpcacheLayout {
    /// The layout the agent of `version` writes.
    pub fn for_version(version: CiliumVersion) -> IpcacheLayout {
        match version {
            CiliumVersion::V1_17 | CiliumVersion::V1_18 => IpcacheLayout::V1,
            CiliumVersion::V1_19 => IpcacheLayout::V2,
        }
    }

    /// The pinned map name.
    pub fn map_name(self) -> &'static str {
        match self {
            IpcacheLayout::V1 => "cilium_ipcache",
            IpcacheLayout::V2 => "cilium_ipcache_v2",
        }
    }

    /// The size of a value.
    pub fn value_size(self) -> usize {
        match self {
            IpcacheLayout::V1 => 12,
            IpcacheLayout::V2 => 24,
        }
    }

    /// The size of one (key, value) record.
    pub fn record_size(self) -> usize {
        KEY_SIZE + self.value_size()
    }
}

/// The key bytes of a prefix in a cluster. The address is masked to the prefix.
pub fn encode_key(prefix: &IpNet, cluster_id: u16) -> [u8; KEY_SIZE] {
    let mut out = [0u8; KEY_SIZE];
    let prefixlen = STATIC_PREFIX + u32::from(prefix.prefix_len());
    out[0..4].copy_from_slice(&prefixlen.to_le_bytes());
    out[4..6].copy_from_slice(&cluster_id.to_le_bytes());
    match prefix.trunc() {
        IpNet::V4(n) => {
            out[7] = FAMILY_IPV4;
            out[8..12].copy_from_slice(&n.network().octets());
        }
        IpNet::V6(n) => {
            out[7] = FAMILY_IPV6;
            out[8..24].copy_from_slice(&n.network().octets());
        }
    }
    out
}

/// Reads an ipcache key: the prefix and the cluster ID. Rejects unknown families, prefix
/// lengths outside the family, address bits beyond the prefix, and non-zero padding.
pub fn decode_key(bytes: &[u8]) -> Result<(IpNet, u16), Error> {
    let b: [u8; KEY_SIZE] = bytes.try_into().map_err(|_| Error::WrongSize {
        what: "ipcache key",
        expected: KEY_SIZE,
        actual: bytes.len(),
    })?;
    let prefixlen = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let cluster_id = u16::from_le_bytes([b[4], b[5]]);
    if b[6] != 0 {
        return Err(Error::Padding("ipcache key"));
    }
    let bits = prefixlen
        .checked_sub(STATIC_PREFIX)
        .and_then(|p| u8::try_from(p).ok())
        .ok_or(Error::IpcachePrefixLen(prefixlen))?;
    let net = match b[7] {
        FAMILY_IPV4 => {
            if b[12..24].iter().any(|&x| x != 0) {
                return Err(Error::Padding("ipcache key"));
            }
            let addr = Ipv4Addr::new(b[8], b[9], b[10], b[11]);
            IpNet::V4(Ipv4Net::new(addr, bits).map_err(|_| Error::IpcachePrefixLen(prefixlen))?)
        }
        FAMILY_IPV6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[8..24]);
            let addr = Ipv6Addr::from(a);
            IpNet::V6(Ipv6Net::new(addr, bits).map_err(|_| Error::IpcachePrefixLen(prefixlen))?)
        }
        other => return Err(Error::Family(other)),
    };
    if net.trunc() != net {
        return Err(Error::UnmaskedAddress);
    }
    Ok((net, cluster_id))
}

/// An ipcache value, field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpcacheValue {
    /// The security identity of the prefix.
    pub identity: u32,
    /// The node to tunnel to (remote pods).
    pub tunnel_endpoint: Option<IpAddr>,
    /// The IPsec key index (0: polc models no IPsec).
    pub encrypt_key: u8,
    /// The flags byte (`FLAG_*`); the tunnel bits agree with `tunnel_endpoint`.
    pub flags: u8,
}

impl IpcacheValue {
    /// The value the agent writes for an entry: the identity and, for a pod on another node,
    /// the node's address with `has_tunnel_endpoint` (and `ipv6_tunnel_endpoint`) set.
    pub fn from_entry(entry: &IpcacheEntry) -> Self {
        let flags = match entry.tunnel_endpoint {
            None => 0,
            Some(IpAddr::V4(_)) => FLAG_HAS_TUNNEL_ENDPOINT,
            Some(IpAddr::V6(_)) => FLAG_HAS_TUNNEL_ENDPOINT | FLAG_IPV6_TUNNEL_ENDPOINT,
        };
        IpcacheValue {
            identity: entry.identity,
            tunnel_endpoint: entry.tunnel_endpoint,
            encrypt_key: 0,
            flags,
        }
    }

    /// The value bytes in `layout`. The 1.18 map cannot hold an IPv6 tunnel endpoint.
    pub fn encode(&self, layout: IpcacheLayout) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(layout.value_size());
        out.extend_from_slice(&self.identity.to_le_bytes());
        match layout {
            IpcacheLayout::V1 => match self.tunnel_endpoint {
                None => out.extend_from_slice(&[0; 4]),
                Some(IpAddr::V4(a)) => out.extend_from_slice(&a.octets()),
                Some(IpAddr::V6(a)) => {
                    return Err(Error::Unrepresentable(format!(
                        "the tunnel endpoint `{a}` is IPv6, which only the 1.19 `cilium_ipcache_v2` map can hold"
                    )));
                }
            },
            IpcacheLayout::V2 => {
                let mut t = [0u8; 16];
                match self.tunnel_endpoint {
                    None => {}
                    Some(IpAddr::V4(a)) => t[..4].copy_from_slice(&a.octets()),
                    Some(IpAddr::V6(a)) => t.copy_from_slice(&a.octets()),
                }
                out.extend_from_slice(&t);
            }
        }
        out.extend_from_slice(&[0, 0, self.encrypt_key, self.flags]);
        Ok(out)
    }

    /// Reads value bytes written in `layout`. The tunnel endpoint is present when the
    /// `has_tunnel_endpoint` flag is set or (v1) the address is not zero.
    pub fn decode(bytes: &[u8], layout: IpcacheLayout) -> Result<Self, Error> {
        if bytes.len() != layout.value_size() {
            return Err(Error::WrongSize {
                what: "ipcache value",
                expected: layout.value_size(),
                actual: bytes.len(),
            });
        }
        let n = bytes.len();
        let identity = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let flags = bytes[n - 1];
        let encrypt_key = bytes[n - 2];
        if bytes[n - 4..n - 2] != [0, 0] {
            return Err(Error::Padding("ipcache value"));
        }
        let has = flags & FLAG_HAS_TUNNEL_ENDPOINT != 0;
        let v4 = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
        let tunnel_endpoint = match layout {
            IpcacheLayout::V1 => (has || !v4.is_unspecified()).then_some(IpAddr::V4(v4)),
            IpcacheLayout::V2 if !has => None,
            IpcacheLayout::V2 if flags & FLAG_IPV6_TUNNEL_ENDPOINT != 0 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&bytes[4..20]);
                Some(IpAddr::V6(Ipv6Addr::from(a)))
            }
            IpcacheLayout::V2 => Some(IpAddr::V4(v4)),
        };
        Ok(IpcacheValue {
            identity,
            tunnel_endpoint,
            encrypt_key,
            flags,
        })
    }

    /// The names of the flags set: `skip-tunnel`, `has-tunnel-endpoint`,
    /// `ipv6-tunnel-endpoint`, `remote-cluster`.
    pub fn flag_names(&self) -> Vec<&'static str> {
        [
            (FLAG_SKIP_TUNNEL, "skip-tunnel"),
            (FLAG_HAS_TUNNEL_ENDPOINT, "has-tunnel-endpoint"),
            (FLAG_IPV6_TUNNEL_ENDPOINT, "ipv6-tunnel-endpoint"),
            (FLAG_REMOTE_CLUSTER, "remote-cluster"),
        ]
        .into_iter()
        .filter(|(bit, _)| self.flags & bit != 0)
        .map(|(_, name)| name)
        .collect()
    }
}

/// The value bytes of an ipcache entry in `layout`.
pub fn encode_value(entry: &IpcacheEntry, layout: IpcacheLayout) -> Result<Vec<u8>, Error> {
    IpcacheValue::from_entry(entry).encode(layout)
}

/// Reads ipcache value bytes written in `layout`.
pub fn decode_value(bytes: &[u8], layout: IpcacheLayout) -> Result<IpcacheValue, Error> {
    IpcacheValue::decode(bytes, layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::hex;

    fn entry(prefix: &str, identity: u32, tunnel: Option<&str>) -> IpcacheEntry {
        IpcacheEntry {
            prefix: prefix.parse().unwrap(),
            identity,
            tunnel_endpoint: tunnel.map(|t| t.parse().unwrap()),
        }
    }

    #[test]
    fn ipv4_host_prefix() {
        let e = entry("10.0.1.5/32", 256, None);
        assert_eq!(
            hex(&encode_key(&e.prefix, 0)),
            "40000000000000010a000105000000000000000000000000"
        );
        assert_eq!(
            hex(&encode_value(&e, IpcacheLayout::V2).unwrap()),
            "000100000000000000000000000000000000000000000000"
        );
        assert_eq!(
            hex(&encode_value(&e, IpcacheLayout::V1).unwrap()),
            "000100000000000000000000"
        );
    }

    #[test]
    fn ipv6_host_prefix() {
        let e = entry("fd00::4d2/128", 257, None);
        assert_eq!(
            hex(&encode_key(&e.prefix, 0)),
            "a000000000000002fd0000000000000000000000000004d2"
        );
        assert_eq!(
            hex(&encode_value(&e, IpcacheLayout::V2).unwrap()),
            "010100000000000000000000000000000000000000000000"
        );
    }

    #[test]
    fn remote_pod_with_tunnel_endpoint() {
        let e = entry("10.0.2.7/32", 0x3039, Some("192.168.1.2"));
        assert_eq!(
            hex(&encode_value(&e, IpcacheLayout::V2).unwrap()),
            "39300000c0a8010200000000000000000000000000000002"
        );
        assert_eq!(
            hex(&encode_value(&e, IpcacheLayout::V1).unwrap()),
            "39300000c0a8010200000002"
        );
        let v6 = entry("fd00::7/128", 300, Some("fd00:ffff::2"));
        let bytes = encode_value(&v6, IpcacheLayout::V2).unwrap();
        assert_eq!(
            bytes[23],
            FLAG_HAS_TUNNEL_ENDPOINT | FLAG_IPV6_TUNNEL_ENDPOINT
        );
        assert_eq!(hex(&bytes[4..20]), "fd00ffff000000000000000000000002");
        assert!(matches!(
            encode_value(&v6, IpcacheLayout::V1),
            Err(Error::Unrepresentable(_))
        ));
    }

    #[test]
    fn default_routes_and_cluster_ids() {
        let v4: IpNet = "0.0.0.0/0".parse().unwrap();
        assert_eq!(hex(&encode_key(&v4, 0)[..8]), "2000000000000001");
        let v6: IpNet = "::/0".parse().unwrap();
        assert_eq!(hex(&encode_key(&v6, 7)[..8]), "2000000007000002");
        // Host bits are cleared.
        let sloppy: IpNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(hex(&encode_key(&sloppy, 0)[8..12]), "0a000000");
        assert_eq!(
            decode_key(&encode_key(&sloppy, 0)).unwrap().0.to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn round_trips_and_rejections() {
        for (p, t) in [
            ("10.0.1.5/32", None),
            ("fd00::4d2/128", Some("10.0.0.2")),
            ("192.168.0.0/16", None),
            ("2001:db8::/32", Some("fd00::1")),
        ] {
            let e = entry(p, 0x0100_0001, t);
            let key = encode_key(&e.prefix, 3);
            assert_eq!(decode_key(&key).unwrap(), (e.prefix, 3));
            for layout in [IpcacheLayout::V1, IpcacheLayout::V2] {
                if let Ok(bytes) = encode_value(&e, layout) {
                    assert_eq!(bytes.len(), layout.value_size());
                    assert_eq!(
                        decode_value(&bytes, layout).unwrap(),
                        IpcacheValue::from_entry(&e)
                    );
                }
            }
        }
        let mut key = encode_key(&"10.0.0.0/8".parse().unwrap(), 0);
        key[7] = 3;
        assert_eq!(decode_key(&key), Err(Error::Family(3)));
        let mut key = encode_key(&"10.0.0.0/8".parse().unwrap(), 0);
        key[0] = 65;
        assert_eq!(decode_key(&key), Err(Error::IpcachePrefixLen(65)));
        let mut key = encode_key(&"10.0.0.0/8".parse().unwrap(), 0);
        key[9] = 1;
        assert_eq!(decode_key(&key), Err(Error::UnmaskedAddress));
        assert!(decode_value(&[0; 12], IpcacheLayout::V2).is_err());
        assert_eq!(
            IpcacheLayout::for_version(CiliumVersion::V1_18).map_name(),
            "cilium_ipcache"
        );
        assert_eq!(
            IpcacheLayout::for_version(CiliumVersion::V1_19).map_name(),
            "cilium_ipcache_v2"
        );
    }
}
