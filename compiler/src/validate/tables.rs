//! Fixed tables of Cilium's policy language: entities, ICMP type names, Kafka API keys and
//! protocols, per target version.

use crate::version::CiliumVersion;

/// Entities the CRD enum accepts (`pkg/policy/api/entity.go`). `cluster-mesh` is newer than
/// 1.19 and so not accepted for any supported target.
pub const ENTITIES: &[&str] = &[
    "all",
    "world",
    "cluster",
    "host",
    "init",
    "ingress",
    "unmanaged",
    "remote-node",
    "health",
    "none",
    "kube-apiserver",
];

/// Entities the agent knows but the CRD enum does not list.
pub const AGENT_ONLY_ENTITIES: &[&str] = &["world-ipv4", "world-ipv6"];

/// IPv4 ICMP type names (`pkg/policy/api/icmp.go`).
pub const ICMPV4_TYPES: &[(&str, u8)] = &[
    ("EchoReply", 0),
    ("DestinationUnreachable", 3),
    ("Redirect", 5),
    ("Echo", 8),
    ("EchoRequest", 8),
    ("RouterAdvertisement", 9),
    ("RouterSelection", 10),
    ("TimeExceeded", 11),
    ("ParameterProblem", 12),
    ("Timestamp", 13),
    ("TimestampReply", 14),
    ("Photuris", 40),
    ("ExtendedEchoRequest", 42),
    ("ExtendedEchoReply", 43),
];

/// IPv6 ICMP type names.
pub const ICMPV6_TYPES: &[(&str, u8)] = &[
    ("DestinationUnreachable", 1),
    ("PacketTooBig", 2),
    ("TimeExceeded", 3),
    ("ParameterProblem", 4),
    ("EchoRequest", 128),
    ("EchoReply", 129),
    ("MulticastListenerQuery", 130),
    ("MulticastListenerReport", 131),
    ("MulticastListenerDone", 132),
    ("RouterSolicitation", 133),
    ("RouterAdvertisement", 134),
    ("NeighborSolicitation", 135),
    ("NeighborAdvertisement", 136),
    ("RedirectMessage", 137),
    ("RouterRenumbering", 138),
    ("ICMPNodeInformationQuery", 139),
    ("ICMPNodeInformationResponse", 140),
    ("InverseNeighborDiscoverySolicitation", 141),
    ("InverseNeighborDiscoveryAdvertisement", 142),
    ("HomeAgentAddressDiscoveryRequest", 144),
    ("HomeAgentAddressDiscoveryReply", 145),
    ("MobilePrefixSolicitation", 146),
    ("MobilePrefixAdvertisement", 147),
    ("DuplicateAddressRequestCodeSuffix", 157),
    ("DuplicateAddressConfirmationCodeSuffix", 158),
    ("ExtendedEchoRequest", 160),
    ("ExtendedEchoReply", 161),
];

/// Kafka API key names the agent accepts (`pkg/policy/api/kafka/kafka.go`), lower-case.
pub const KAFKA_API_KEYS: &[&str] = &[
    "produce",
    "fetch",
    "offsets",
    "metadata",
    "leaderandisr",
    "stopreplica",
    "updatemetadata",
    "controlledshutdown",
    "offsetcommit",
    "offsetfetch",
    "findcoordinator",
    "joingroup",
    "heartbeat",
    "leavegroup",
    "syncgroup",
    "describegroups",
    "listgroups",
    "saslhandshake",
    "apiversions",
    "createtopics",
    "deletetopics",
    "deleterecords",
    "initproducerid",
    "offsetforleaderepoch",
    "addpartitionstotxn",
    "addoffsetstotxn",
    "endtxn",
    "writetxnmarkers",
    "txnoffsetcommit",
    "describeacls",
    "createacls",
    "deleteacls",
    "describeconfigs",
    "alterconfigs",
];

/// Port-carrying protocols of the CRD enum.
pub const PORT_PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP", "ANY"];

/// Extended IP protocols (no ports) a target version's CRD accepts. Cilium 1.19 added `VRRP`
/// and `IGMP`; the others (`GRE`, `IPIP`, `IPV6`, `ESP`, `AH`) came after 1.19.
pub fn extended_protocols(version: CiliumVersion) -> &'static [&'static str] {
    match version {
        CiliumVersion::V1_17 | CiliumVersion::V1_18 => &[],
        CiliumVersion::V1_19 => &["VRRP", "IGMP"],
    }
}

/// Extended IP protocols of any Cilium version, for better messages.
pub const ALL_EXTENDED_PROTOCOLS: &[&str] = &["VRRP", "IGMP", "GRE", "IPIP", "IPV6", "ESP", "AH"];

/// Resolves an ICMP type name for a family (`IPv4` or `IPv6`).
pub fn icmp_type(family_v6: bool, name: &str) -> Option<u8> {
    let table = if family_v6 {
        ICMPV6_TYPES
    } else {
        ICMPV4_TYPES
    };
    table.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
}
