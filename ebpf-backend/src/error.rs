//! The one error type of the backend: bytes that are not a valid map key or value, and entries
//! a layout cannot represent.

/// Why bytes could not be decoded, or an entry could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A key, value or record file has the wrong length.
    #[error("{what} is {actual} bytes long, expected {expected}")]
    WrongSize {
        /// What was being decoded (`policy key`, `ipcache value`, ...).
        what: &'static str,
        /// The size the layout has.
        expected: usize,
        /// The size given.
        actual: usize,
    },
    /// A policy key's LPM prefix length is not 40 or 48-64.
    #[error(
        "policy key prefix length `{0}` is not 40 (any protocol) or 48-64 (protocol + port bits)"
    )]
    PolicyPrefixLen(u32),
    /// The byte holding the direction bit has other bits set.
    #[error("policy key direction byte `{0:#04x}` has bits other than bit 0 set")]
    Direction(u8),
    /// A key with protocol 0 has a port, or a protocol-less prefix covers the protocol.
    #[error(
        "policy key has protocol 0 but a prefix length of `{0}` (the protocol is all-or-nothing)"
    )]
    ProtocolPrefix(u32),
    /// A key with prefix length 40 carries a protocol or port.
    #[error("policy key with prefix length 40 has a protocol or port; they must be zero")]
    WildcardNotZero,
    /// Port bits below the prefix are set.
    #[error("policy key port `{port}` has bits set below its {bits}-bit prefix")]
    UnmaskedPort {
        /// The port.
        port: u16,
        /// The prefix length in port bits.
        bits: u8,
    },
    /// A value's flags byte has reserved bits (1-2) set, or an impossible prefix length.
    #[error(
        "policy value flags `{0:#04x}` are invalid (reserved bits 1-2 set, or a prefix length other than 0, 8 or 9-24)"
    )]
    ValueFlags(u8),
    /// A value's prefix length disagrees with its key's (the agent rewrites such entries).
    #[error(
        "policy value prefix length `{value}` does not match its key's `{key}` (key prefix - 40)"
    )]
    PrefixMismatch {
        /// The key's prefix length minus 40.
        key: u8,
        /// The value's `lpm_prefix_length`.
        value: u8,
    },
    /// Padding bytes that Cilium always writes as zero are not zero.
    #[error("{0} has non-zero padding")]
    Padding(&'static str),
    /// An ipcache key's address family byte is not 1 (IPv4) or 2 (IPv6).
    #[error("ipcache key family `{0}` is not 1 (IPv4) or 2 (IPv6)")]
    Family(u8),
    /// An ipcache key's prefix length is below 32 or longer than the address.
    #[error("ipcache key prefix length `{0}` is not 32 + a prefix of the address family")]
    IpcachePrefixLen(u32),
    /// The address has bits set beyond its prefix.
    #[error("ipcache key address has bits set beyond its prefix")]
    UnmaskedAddress,
    /// The layout cannot hold the entry (an IPv6 tunnel endpoint in the 1.18 ipcache).
    #[error("{0}")]
    Unrepresentable(String),
}
