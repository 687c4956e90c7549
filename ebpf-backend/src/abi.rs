//! The ABI between the loader and the C datapath: `#[repr(C)]` mirrors of every struct in
//! `bpf/abi.h`, their byte encodings, and the constants both sides use. [`LAYOUTS`] lists each
//! struct's size and field offsets as Rust computes them; the tests compile `abi.h` with those
//! numbers as `_Static_assert`s, for the BPF target and for the host, so C and Rust cannot
//! drift apart.
//!
//! The policy key and value and the ipcache key and value are Cilium's (1.19 layouts, see
//! [`crate::layout`] and [`crate::ipcache`]); the rest is polc's own.

use std::mem::{offset_of, size_of};

/// `POLC_ABI_VERSION`: the loader refuses pins made by another ABI.
pub const ABI_VERSION: u32 = 1;

/// Identity used by the datapath when the ipcache has no entry (`WORLD_ID`).
pub const WORLD_ID: u32 = 2;

/// Endpoint direction: ingress (`DIR_INGRESS`).
pub const DIR_INGRESS: u8 = 0;
/// Endpoint direction: egress (`DIR_EGRESS`).
pub const DIR_EGRESS: u8 = 1;

/// `IFACE_F_ENDPOINT_SIDE`: the interface is the endpoint's own device (TC ingress is the
/// endpoint's ingress); clear for the node-side end of a pod's veth.
pub const IFACE_F_ENDPOINT_SIDE: u8 = 0x01;
/// `IFACE_F_UPLINK`: the interface serves no endpoint (a node's uplink); the programs only
/// hand the packets of the L7 proxy's connections to its sockets there.
pub const IFACE_F_UPLINK: u8 = 0x02;

/// `MARK_MAGIC_MASK`: the bits of `skb->mark` the marks below use.
pub const MARK_MAGIC_MASK: u32 = 0x0f00;
/// `MARK_MAGIC_TO_PROXY`: a packet for a local proxy socket, routed locally by the node
/// (`ip rule fwmark 0x200/0xf00 lookup 2004`).
pub const MARK_MAGIC_TO_PROXY: u32 = 0x0200;
/// `MARK_MAGIC_PROXY_INGRESS`: the ingress proxy's upstream sockets (`SO_MARK`).
pub const MARK_MAGIC_PROXY_INGRESS: u32 = 0x0a00;
/// `MARK_MAGIC_PROXY_EGRESS`: the egress proxy's upstream sockets (`SO_MARK`).
pub const MARK_MAGIC_PROXY_EGRESS: u32 = 0x0b00;
/// The routing table that delivers `MARK_MAGIC_TO_PROXY` packets locally (Cilium's).
pub const PROXY_ROUTE_TABLE: u32 = 2004;

/// `ENDPOINT_F_INGRESS_ENFORCED`.
pub const ENDPOINT_F_INGRESS_ENFORCED: u8 = 0x01;
/// `ENDPOINT_F_EGRESS_ENFORCED`.
pub const ENDPOINT_F_EGRESS_ENFORCED: u8 = 0x02;
/// `ENDPOINT_NAME_LEN`: bytes of an endpoint's name kept for `polc status`.
pub const ENDPOINT_NAME_LEN: usize = 120;

/// Entries of `polc_policy` (endpoints per node instance).
pub const MAX_ENDPOINTS: u32 = 65536;
/// `POLC_POLICY_MAP_DEFAULT_MAX`: the default capacity of a policy map.
pub const POLICY_MAP_DEFAULT_MAX: u32 = 16384;
/// Number of `polc_counters` slots (`REASON_MAX`).
pub const REASON_MAX: u32 = 32;

/// `struct policy_key` (Cilium's 12-byte LPM key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyKey {
    /// LPM prefix length, host order.
    pub prefixlen: u32,
    /// Remote identity, 0 = any.
    pub sec_label: u32,
    /// 0 ingress, 1 egress.
    pub egress: u8,
    /// IP protocol, 0 = any.
    pub protocol: u8,
    /// Destination port, network order.
    pub dport: u16,
}

/// `struct policy_entry` (Cilium 1.19's 12-byte value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyEntry {
    /// Proxy port, network order.
    pub proxy_port: u16,
    /// Bit 0 deny, bits 3-7 the prefix length minus 40.
    pub flags: u8,
    /// Auth type (bits 0-6), explicit (bit 7).
    pub auth: u8,
    /// Precedence, higher wins.
    pub precedence: u32,
    /// Policy-log cookie.
    pub cookie: u32,
}

/// `struct ipcache_key` (Cilium's 24-byte LPM key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpcacheKey {
    /// LPM prefix length: 32 + address bits.
    pub prefixlen: u32,
    /// Cluster ID.
    pub cluster_id: u16,
    /// Zero.
    pub pad1: u8,
    /// 1 IPv4, 2 IPv6.
    pub family: u8,
    /// Address, network order.
    pub addr: [u8; 16],
}

/// `struct remote_endpoint_info` (`cilium_ipcache_v2` value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteEndpointInfo {
    /// Identity.
    pub sec_identity: u32,
    /// Tunnel endpoint, network order.
    pub tunnel_endpoint: [u8; 16],
    /// Zero.
    pub pad: u16,
    /// IPsec key index.
    pub key: u8,
    /// Flags.
    pub flags: u8,
}

/// `struct iface_info`: the value of `polc_ifaces` (key: ifindex).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IfaceInfo {
    /// The endpoint the interface serves.
    pub endpoint_id: u16,
    /// `IFACE_F_*`.
    pub flags: u8,
    /// Zero.
    pub pad: u8,
}

impl IfaceInfo {
    /// The value bytes.
    pub fn to_bytes(self) -> [u8; 4] {
        let id = self.endpoint_id.to_ne_bytes();
        [id[0], id[1], self.flags, self.pad]
    }

    /// Reads value bytes.
    pub fn from_bytes(b: [u8; 4]) -> Self {
        IfaceInfo {
            endpoint_id: u16::from_ne_bytes([b[0], b[1]]),
            flags: b[2],
            pad: b[3],
        }
    }
}

/// `struct endpoint_info`: the value of `polc_endpoints` (key: endpoint ID as u32).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The endpoint's identity.
    pub identity: u32,
    /// Its endpoint ID.
    pub endpoint_id: u16,
    /// `ENDPOINT_F_*`.
    pub flags: u8,
    /// Bytes of `name` used.
    pub name_len: u8,
    /// `namespace/pod` or `host/node`.
    pub name: [u8; ENDPOINT_NAME_LEN],
}

/// Size of [`EndpointInfo`] in bytes.
pub const ENDPOINT_INFO_SIZE: usize = size_of::<EndpointInfo>();

impl EndpointInfo {
    /// An endpoint's record; names longer than [`ENDPOINT_NAME_LEN`] bytes are cut at a
    /// character boundary.
    pub fn new(endpoint_id: u16, identity: u32, flags: u8, name: &str) -> Self {
        let mut end = name.len().min(ENDPOINT_NAME_LEN);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let mut buf = [0u8; ENDPOINT_NAME_LEN];
        buf[..end].copy_from_slice(&name.as_bytes()[..end]);
        EndpointInfo {
            identity,
            endpoint_id,
            flags,
            name_len: u8::try_from(end).unwrap_or(u8::MAX),
            name: buf,
        }
    }

    /// The name, lossily decoded.
    pub fn name(&self) -> String {
        let n = usize::from(self.name_len).min(ENDPOINT_NAME_LEN);
        String::from_utf8_lossy(&self.name[..n]).into_owned()
    }

    /// The value bytes.
    pub fn to_bytes(&self) -> [u8; ENDPOINT_INFO_SIZE] {
        let mut out = [0u8; ENDPOINT_INFO_SIZE];
        out[0..4].copy_from_slice(&self.identity.to_ne_bytes());
        out[4..6].copy_from_slice(&self.endpoint_id.to_ne_bytes());
        out[6] = self.flags;
        out[7] = self.name_len;
        out[8..].copy_from_slice(&self.name);
        out
    }

    /// Reads value bytes.
    pub fn from_bytes(b: &[u8; ENDPOINT_INFO_SIZE]) -> Self {
        let mut name = [0u8; ENDPOINT_NAME_LEN];
        name.copy_from_slice(&b[8..]);
        EndpointInfo {
            identity: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            endpoint_id: u16::from_ne_bytes([b[4], b[5]]),
            flags: b[6],
            name_len: b[7],
            name,
        }
    }
}

/// `struct polc_meta`: what a pin directory holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// The ABI of the loader that made the pins.
    pub abi_version: u32,
    /// Capacity of every policy map.
    pub policy_map_max: u32,
    /// FNV-1a of the loaded object.
    pub object_hash: u64,
}

impl Meta {
    /// The value bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[0..4].copy_from_slice(&self.abi_version.to_ne_bytes());
        out[4..8].copy_from_slice(&self.policy_map_max.to_ne_bytes());
        out[8..16].copy_from_slice(&self.object_hash.to_ne_bytes());
        out
    }

    /// Reads value bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Meta {
            abi_version: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            policy_map_max: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            object_hash: u64::from_ne_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        }
    }
}

/// `struct ct_key`: a connection in `polc_ct`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtKey {
    /// The endpoint.
    pub endpoint_id: u16,
    /// 1 IPv4, 2 IPv6.
    pub family: u8,
    /// IP protocol.
    pub protocol: u8,
    /// The endpoint's direction of the first packet.
    pub dir: u8,
    /// Zero.
    pub pad: [u8; 3],
    /// Source port (ICMP echo: identifier of a request), network order.
    pub sport: u16,
    /// Destination port (ICMP echo: identifier of a reply), network order.
    pub dport: u16,
    /// Source address.
    pub saddr: [u8; 16],
    /// Destination address.
    pub daddr: [u8; 16],
}

/// `struct stats_key`: a policy entry, as `polc_stats` (and Cilium's policystats) key it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StatsKey {
    /// The endpoint.
    pub endpoint_id: u16,
    /// Zero.
    pub pad: u8,
    /// The entry's prefix length minus 40.
    pub prefix_len: u8,
    /// The entry's identity (0 = any).
    pub sec_label: u32,
    /// 0 ingress, 1 egress.
    pub egress: u8,
    /// The entry's protocol (0 = any).
    pub protocol: u8,
    /// The entry's port, network order, masked.
    pub dport: u16,
}

impl StatsKey {
    /// Reads key bytes.
    pub fn from_bytes(b: [u8; 12]) -> Self {
        StatsKey {
            endpoint_id: u16::from_ne_bytes([b[0], b[1]]),
            pad: b[2],
            prefix_len: b[3],
            sec_label: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            egress: b[8],
            protocol: b[9],
            dport: u16::from_ne_bytes([b[10], b[11]]),
        }
    }

    /// The key bytes.
    pub fn to_bytes(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[0..2].copy_from_slice(&self.endpoint_id.to_ne_bytes());
        out[2] = self.pad;
        out[3] = self.prefix_len;
        out[4..8].copy_from_slice(&self.sec_label.to_ne_bytes());
        out[8] = self.egress;
        out[9] = self.protocol;
        out[10..12].copy_from_slice(&self.dport.to_ne_bytes());
        out
    }

    /// The port in host order.
    pub fn port(&self) -> u16 {
        u16::from_be(self.dport)
    }
}

/// `struct ct_entry`: a tracked connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// `bpf_ktime_get_ns()` deadline.
    pub expires: u64,
    /// Packets, both directions.
    pub packets: u64,
    /// Bytes, both directions.
    pub bytes: u64,
    /// `CT_F_*`.
    pub flags: u32,
    /// The entry that admitted the flow.
    pub entry: StatsKey,
}

/// `struct counter`: packets and bytes (per CPU in `polc_stats` and `polc_counters`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Counter {
    /// Reads value bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Counter {
            packets: u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            bytes: u64::from_ne_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        }
    }
}

/// Why the datapath passed or dropped a packet: the slots of `polc_counters`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A policy entry allowed a new flow.
    PassPolicy = 0,
    /// Allowed by an entry with a proxy port, of a protocol no proxy serves.
    PassRedirect = 1,
    /// Allowed by an entry that requires authentication; auth is not enforced.
    PassAuth = 2,
    /// Conntrack: a packet of an established flow.
    PassCtEstablished = 3,
    /// Conntrack: a reply of an allowed flow.
    PassCtReply = 4,
    /// Conntrack: an ICMP error about an allowed flow.
    PassCtRelated = 5,
    /// ICMP fragmentation-needed, ICMPv6 neighbour discovery and ICMPv6 multicast listener
    /// discovery to a multicast group, allowed without policy.
    PassIcmpImplicit = 6,
    /// Not IPv4 or IPv6.
    PassNotIp = 7,
    /// The interface or its endpoint is not known to polc.
    PassUnmanaged = 8,
    /// Handed to a socket of the local L7 proxy.
    PassToProxy = 9,
    /// Sent by the ingress proxy after it judged the request.
    PassFromProxy = 10,
    /// No policy entry (Cilium `DROP_POLICY`, -133).
    DropPolicy = 16,
    /// A deny entry (Cilium `DROP_POLICY_DENY`, -181).
    DropPolicyDeny = 17,
    /// A non-first fragment an entry with ports would have to decide (`DROP_FRAG_NOSUPPORT`).
    DropFragNoSupport = 18,
    /// Truncated or malformed headers (`DROP_INVALID`, -134).
    DropInvalid = 19,
    /// A redirect to a proxy port no proxy listens on (`DROP_PROXY_LOOKUP_FAILED`).
    DropProxy = 20,
}

impl Reason {
    /// Every reason, in slot order.
    pub const ALL: [Reason; 16] = [
        Reason::PassPolicy,
        Reason::PassRedirect,
        Reason::PassAuth,
        Reason::PassCtEstablished,
        Reason::PassCtReply,
        Reason::PassCtRelated,
        Reason::PassIcmpImplicit,
        Reason::PassNotIp,
        Reason::PassUnmanaged,
        Reason::PassToProxy,
        Reason::PassFromProxy,
        Reason::DropPolicy,
        Reason::DropPolicyDeny,
        Reason::DropFragNoSupport,
        Reason::DropInvalid,
        Reason::DropProxy,
    ];

    /// The slot in `polc_counters`.
    pub fn index(self) -> u32 {
        self as u32
    }

    /// Whether packets counted here were dropped.
    pub fn is_drop(self) -> bool {
        self.index() >= 16
    }

    /// A kebab-case name, Cilium's where Cilium has one.
    pub fn name(self) -> &'static str {
        match self {
            Reason::PassPolicy => "allowed-by-policy",
            Reason::PassRedirect => "allowed-redirect-without-proxy",
            Reason::PassAuth => "allowed-auth-not-enforced",
            Reason::PassCtEstablished => "conntrack-established",
            Reason::PassCtReply => "conntrack-reply",
            Reason::PassCtRelated => "conntrack-related",
            Reason::PassIcmpImplicit => "icmp-implicit",
            Reason::PassNotIp => "not-ip",
            Reason::PassUnmanaged => "unmanaged",
            Reason::PassToProxy => "to-proxy",
            Reason::PassFromProxy => "from-ingress-proxy",
            Reason::DropPolicy => "policy-denied",
            Reason::DropPolicyDeny => "policy-deny-entry",
            Reason::DropFragNoSupport => "fragment-not-supported",
            Reason::DropInvalid => "invalid-packet",
            Reason::DropProxy => "proxy-lookup-failed",
        }
    }

    /// The `REASON_*` macro in `abi.h`.
    pub fn c_name(self) -> &'static str {
        match self {
            Reason::PassPolicy => "REASON_PASS_POLICY",
            Reason::PassRedirect => "REASON_PASS_REDIRECT",
            Reason::PassAuth => "REASON_PASS_AUTH",
            Reason::PassCtEstablished => "REASON_PASS_CT_ESTABLISHED",
            Reason::PassCtReply => "REASON_PASS_CT_REPLY",
            Reason::PassCtRelated => "REASON_PASS_CT_RELATED",
            Reason::PassIcmpImplicit => "REASON_PASS_ICMP_IMPLICIT",
            Reason::PassNotIp => "REASON_PASS_NOT_IP",
            Reason::PassUnmanaged => "REASON_PASS_UNMANAGED",
            Reason::PassToProxy => "REASON_PASS_TO_PROXY",
            Reason::PassFromProxy => "REASON_PASS_FROM_PROXY",
            Reason::DropPolicy => "REASON_DROP_POLICY",
            Reason::DropPolicyDeny => "REASON_DROP_POLICY_DENY",
            Reason::DropFragNoSupport => "REASON_DROP_FRAG_NOSUPPORT",
            Reason::DropInvalid => "REASON_DROP_INVALID",
            Reason::DropProxy => "REASON_DROP_PROXY",
        }
    }
}

/// A struct's layout: its C name, size and the offsets of its fields.
#[derive(Debug)]
pub struct StructLayout {
    /// `struct NAME` in `abi.h`.
    pub c_name: &'static str,
    /// `sizeof`.
    pub size: usize,
    /// `(field, offsetof)`.
    pub fields: &'static [(&'static str, usize)],
}

macro_rules! layout {
    ($c:literal, $t:ty, [$($f:ident),* $(,)?]) => {
        StructLayout {
            c_name: $c,
            size: size_of::<$t>(),
            fields: &[$((stringify!($f), offset_of!($t, $f))),*],
        }
    };
}

/// The layout of every struct in `abi.h`, as Rust lays out the mirrors.
pub const LAYOUTS: &[StructLayout] = &[
    layout!(
        "policy_key",
        PolicyKey,
        [prefixlen, sec_label, egress, protocol, dport]
    ),
    layout!(
        "policy_entry",
        PolicyEntry,
        [proxy_port, flags, auth, precedence, cookie]
    ),
    layout!(
        "ipcache_key",
        IpcacheKey,
        [prefixlen, cluster_id, pad1, family, addr]
    ),
    layout!(
        "remote_endpoint_info",
        RemoteEndpointInfo,
        [sec_identity, tunnel_endpoint, pad, key, flags]
    ),
    layout!("iface_info", IfaceInfo, [endpoint_id, flags, pad]),
    layout!(
        "endpoint_info",
        EndpointInfo,
        [identity, endpoint_id, flags, name_len, name]
    ),
    layout!(
        "polc_meta",
        Meta,
        [abi_version, policy_map_max, object_hash]
    ),
    layout!(
        "ct_key",
        CtKey,
        [
            endpoint_id,
            family,
            protocol,
            dir,
            pad,
            sport,
            dport,
            saddr,
            daddr
        ]
    ),
    layout!(
        "stats_key",
        StatsKey,
        [
            endpoint_id,
            pad,
            prefix_len,
            sec_label,
            egress,
            protocol,
            dport
        ]
    ),
    layout!("ct_entry", CtEntry, [expires, packets, bytes, flags, entry]),
    layout!("counter", Counter, [packets, bytes]),
];

/// The constants whose value C and Rust must agree on: `(C macro, value)`.
pub fn constants() -> Vec<(&'static str, u64)> {
    let mut out = vec![
        ("POLC_ABI_VERSION", u64::from(ABI_VERSION)),
        ("WORLD_ID", u64::from(WORLD_ID)),
        ("DIR_INGRESS", u64::from(DIR_INGRESS)),
        ("DIR_EGRESS", u64::from(DIR_EGRESS)),
        ("IFACE_F_ENDPOINT_SIDE", u64::from(IFACE_F_ENDPOINT_SIDE)),
        ("IFACE_F_UPLINK", u64::from(IFACE_F_UPLINK)),
        ("MARK_MAGIC_MASK", u64::from(MARK_MAGIC_MASK)),
        ("MARK_MAGIC_TO_PROXY", u64::from(MARK_MAGIC_TO_PROXY)),
        (
            "MARK_MAGIC_PROXY_INGRESS",
            u64::from(MARK_MAGIC_PROXY_INGRESS),
        ),
        (
            "MARK_MAGIC_PROXY_EGRESS",
            u64::from(MARK_MAGIC_PROXY_EGRESS),
        ),
        (
            "ENDPOINT_F_INGRESS_ENFORCED",
            u64::from(ENDPOINT_F_INGRESS_ENFORCED),
        ),
        (
            "ENDPOINT_F_EGRESS_ENFORCED",
            u64::from(ENDPOINT_F_EGRESS_ENFORCED),
        ),
        ("ENDPOINT_NAME_LEN", ENDPOINT_NAME_LEN as u64),
        ("POLC_MAX_ENDPOINTS", u64::from(MAX_ENDPOINTS)),
        (
            "POLC_POLICY_MAP_DEFAULT_MAX",
            u64::from(POLICY_MAP_DEFAULT_MAX),
        ),
        ("REASON_MAX", u64::from(REASON_MAX)),
        (
            "IPCACHE_FAMILY_IPV4",
            u64::from(crate::ipcache::FAMILY_IPV4),
        ),
        (
            "IPCACHE_FAMILY_IPV6",
            u64::from(crate::ipcache::FAMILY_IPV6),
        ),
        (
            "POLICY_FULL_PREFIX",
            u64::from(crate::layout::POLICY_FULL_PREFIX),
        ),
    ];
    out.extend(
        Reason::ALL
            .iter()
            .map(|r| (r.c_name(), u64::from(r.index()))),
    );
    out
}

/// `_Static_assert`s of [`LAYOUTS`] and [`constants`] for a C file that includes `abi.h`.
pub fn c_assertions() -> String {
    let mut s = String::from("#include <stddef.h>\n#include \"abi.h\"\n");
    for l in LAYOUTS {
        s.push_str(&format!(
            "_Static_assert(sizeof(struct {0}) == {1}, \"sizeof(struct {0}) != {1}\");\n",
            l.c_name, l.size
        ));
        for (f, off) in l.fields {
            s.push_str(&format!(
                "_Static_assert(offsetof(struct {0}, {1}) == {2}, \"offsetof({0}, {1}) != {2}\");\n",
                l.c_name, f, off
            ));
        }
    }
    for (name, value) in constants() {
        s.push_str(&format!(
            "_Static_assert({name} == {value}, \"{name} != {value}\");\n"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cilium_layouts_have_cilium_sizes() {
        assert_eq!(size_of::<PolicyKey>(), crate::layout::KEY_SIZE);
        assert_eq!(size_of::<PolicyEntry>(), crate::Layout::V1_19.value_size());
        assert_eq!(size_of::<IpcacheKey>(), crate::ipcache::KEY_SIZE);
        assert_eq!(
            size_of::<RemoteEndpointInfo>(),
            crate::IpcacheLayout::V2.value_size()
        );
        assert_eq!(size_of::<StatsKey>(), 12);
    }

    #[test]
    fn byte_encodings_round_trip() {
        let i = IfaceInfo {
            endpoint_id: 513,
            flags: IFACE_F_ENDPOINT_SIDE,
            pad: 0,
        };
        assert_eq!(IfaceInfo::from_bytes(i.to_bytes()), i);
        let e = EndpointInfo::new(7, 300, ENDPOINT_F_EGRESS_ENFORCED, "shop/frontend-1");
        assert_eq!(EndpointInfo::from_bytes(&e.to_bytes()), e);
        assert_eq!(e.name(), "shop/frontend-1");
        let m = Meta {
            abi_version: ABI_VERSION,
            policy_map_max: 16384,
            object_hash: 0x0123_4567_89ab_cdef,
        };
        assert_eq!(Meta::from_bytes(m.to_bytes()), m);
        let k = StatsKey {
            endpoint_id: 3,
            pad: 0,
            prefix_len: 24,
            sec_label: 256,
            egress: 1,
            protocol: 6,
            dport: 8080u16.to_be(),
        };
        assert_eq!(StatsKey::from_bytes(k.to_bytes()), k);
        assert_eq!(k.port(), 8080);
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        let name = "é".repeat(100);
        let e = EndpointInfo::new(1, 1, 0, &name);
        assert_eq!(usize::from(e.name_len), ENDPOINT_NAME_LEN);
        assert_eq!(e.name(), "é".repeat(60));
    }

    #[test]
    fn reasons_fit_the_counter_map() {
        for r in Reason::ALL {
            assert!(r.index() < REASON_MAX);
        }
        assert!(Reason::DropPolicy.is_drop());
        assert!(!Reason::PassCtReply.is_drop());
    }
}
