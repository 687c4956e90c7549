//! The per-endpoint policy map `cilium_policy_v2_<ep>`: the bytes of its keys and values in
//! the Cilium 1.17/1.18 and 1.19 layouts (datapath spec §3.1-§3.3), and their decoders.
//!
//! Key (12 bytes, every release since 1.14), `struct policy_key`:
//!
//! | Off | Size | Field | Content |
//! |---|---|---|---|
//! | 0 | 4 | `lpm_key.prefixlen` | host order (little-endian): 40 + 8 if a protocol + port prefix bits |
//! | 4 | 4 | `sec_label` | host order; the remote identity, 0 = any |
//! | 8 | 1 | `egress:1, pad:7` | 0 ingress, 1 egress |
//! | 9 | 1 | `protocol` | IP protocol, 0 = any |
//! | 10 | 2 | `dport` | network order, bits below the prefix zero |
//!
//! Value, `struct policy_entry`: bytes 0-3 are the same in both layouts, `proxy_port`
//! (network order), flags (bit 0 deny, bits 1-2 reserved zero, bits 3-7 the key's prefix length
//! minus 40) and auth (bits 0-6 type, bit 7 explicit). 1.19 follows with the precedence and the
//! policy-log cookie (host order u32 each, 12 bytes in all); 1.17/1.18 with the
//! `proxy_port_priority` byte and three zero bytes (8 bytes in all).
//!
//! "Host order" is little-endian here: x86-64 and arm64, the architectures Cilium ships for.

use crate::error::Error;
use polc_compiler::CiliumVersion;
use polc_compiler::ir::Direction;
use polc_compiler::mapstate::{Entry, Key};

/// The size of a policy-map key.
pub const KEY_SIZE: usize = 12;

/// The default `bpf-policy-map-max`: entries per endpoint map.
pub const POLICY_MAP_MAX_ENTRIES: u32 = 16384;

/// The prefix length the datapath looks up with (`POLICY_FULL_PREFIX`).
pub const POLICY_FULL_PREFIX: u32 = 64;

/// Prefix bits that are always exact: the identity (32) and the direction byte (8).
const STATIC_PREFIX: u32 = 40;

/// Prefix bits when the protocol is set: the static part and the protocol byte.
const PROTO_PREFIX: u32 = 48;

/// Flags bit 0 of a value: deny.
const FLAG_DENY: u8 = 1;

/// Flags bits 1-2: reserved (1.16's wildcard bits), written as zero.
const FLAGS_RESERVED: u8 = 0b0000_0110;

/// Auth bit 7: the auth type was set by the rule.
const AUTH_EXPLICIT: u8 = 0x80;

/// A policy-map value layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layout {
    /// Cilium 1.17 and 1.18: 8-byte value with `proxy_port_priority`.
    V1_17,
    /// Cilium 1.19: 12-byte value with precedence and cookie.
    V1_19,
}

impl Layout {
    /// The layout the agent of `version` writes.
    pub fn for_version(version: CiliumVersion) -> Layout {
        match version {
            CiliumVersion::V1_17 | CiliumVersion::V1_18 => Layout::V1_17,
            CiliumVersion::V1_19 => Layout::V1_19,
        }
    }

    /// The size of a value.
    pub fn value_size(self) -> usize {
        match self {
            Layout::V1_17 => 8,
            Layout::V1_19 => 12,
        }
    }

    /// The size of one (key, value) record.
    pub fn record_size(self) -> usize {
        KEY_SIZE + self.value_size()
    }

    /// The releases that use the layout: `1.17/1.18` or `1.19`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::V1_17 => "1.17/1.18",
            Layout::V1_19 => "1.19",
        }
    }
}

/// The pinned name of an endpoint's policy map: `cilium_policy_v2_01234` (1.17-1.19).
pub fn policy_map_name(endpoint_id: u16) -> String {
    format!("cilium_policy_v2_{endpoint_id:05}")
}

/// The port bits a prefix keeps.
fn port_mask(bits: u8) -> u16 {
    match bits.min(16) {
        0 => 0,
        n => u16::MAX << (16 - n),
    }
}

/// The port prefix bits of a key, clamped to 16 (0 without a protocol).
fn port_bits(key: &Key) -> u8 {
    if key.proto == 0 {
        0
    } else {
        key.port_prefix.min(16)
    }
}

/// The LPM prefix length of a key: 40, or 48 + port prefix bits when the protocol is set.
/// Equal to [`Key::prefix_len`] for every well-formed key; a port prefix above 16 is clamped.
pub fn key_prefix_len(key: &Key) -> u32 {
    if key.proto == 0 {
        STATIC_PREFIX
    } else {
        PROTO_PREFIX + u32::from(port_bits(key))
    }
}

/// The key bytes of a map key. The port is written big-endian with the bits below its prefix
/// cleared; without a protocol the port is zero.
pub fn encode_key(key: &Key) -> [u8; KEY_SIZE] {
    let mut out = [0u8; KEY_SIZE];
    out[0..4].copy_from_slice(&key_prefix_len(key).to_le_bytes());
    out[4..8].copy_from_slice(&key.identity.to_le_bytes());
    out[8] = match key.direction {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    };
    out[9] = key.proto;
    let port = key.port & port_mask(port_bits(key));
    out[10..12].copy_from_slice(&port.to_be_bytes());
    out
}

fn array<const N: usize>(bytes: &[u8], what: &'static str) -> Result<[u8; N], Error> {
    bytes.try_into().map_err(|_| Error::WrongSize {
        what,
        expected: N,
        actual: bytes.len(),
    })
}

fn u32_le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads a map key. Rejects what the agent never writes: prefix lengths other than 40 and
/// 48-64, a protocol-less key with a longer prefix, protocol or port bits under a 40-bit prefix,
/// port bits below the prefix, and direction bytes other than 0 and 1.
pub fn decode_key(bytes: &[u8]) -> Result<Key, Error> {
    let b: [u8; KEY_SIZE] = array(bytes, "policy key")?;
    let prefix = u32_le(&b, 0);
    let identity = u32_le(&b, 4);
    let direction = match b[8] {
        0 => Direction::Ingress,
        1 => Direction::Egress,
        other => return Err(Error::Direction(other)),
    };
    let proto = b[9];
    let port = u16::from_be_bytes([b[10], b[11]]);
    let port_prefix = match prefix {
        STATIC_PREFIX => {
            if proto != 0 || port != 0 {
                return Err(Error::WildcardNotZero);
            }
            0
        }
        PROTO_PREFIX..=POLICY_FULL_PREFIX => {
            if proto == 0 {
                return Err(Error::ProtocolPrefix(prefix));
            }
            u8::try_from(prefix - PROTO_PREFIX).map_err(|_| Error::PolicyPrefixLen(prefix))?
        }
        other => return Err(Error::PolicyPrefixLen(other)),
    };
    if port & !port_mask(port_prefix) != 0 {
        return Err(Error::UnmaskedPort {
            port,
            bits: port_prefix,
        });
    }
    Ok(Key {
        direction,
        identity,
        proto,
        port,
        port_prefix,
    })
}

/// How a value orders competing entries: the field that differs between the layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Order {
    /// 1.19: the 32-bit precedence (higher wins; `0xFFFFFFFF` is a deny at rule priority 0).
    Precedence(u32),
    /// 1.17/1.18: the `proxy_port_priority` byte (128 - listener priority; 0 without a
    /// redirect).
    ProxyPortPriority(u8),
}

/// A policy-map value, field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyValue {
    /// The L7 proxy port (0 = no redirect).
    pub proxy_port: u16,
    /// Deny.
    pub deny: bool,
    /// The key's prefix length minus 40 (0, 8, or 9-24).
    pub lpm_prefix_length: u8,
    /// The auth type (0 none, 1 SPIRE, 2 test-always-fail), 7 bits.
    pub auth_type: u8,
    /// Whether the auth type was set by the rule rather than derived.
    pub explicit_auth: bool,
    /// Precedence (1.19) or proxy-port priority (1.17/1.18); also fixes the layout.
    pub order: Order,
    /// The policy-log cookie (1.19; always 0 for 1.17/1.18 and for polc, which has no policy
    /// log).
    pub cookie: u32,
}

impl PolicyValue {
    /// The value the agent writes for `entry` at `key`. A deny never carries a proxy port.
    pub fn new(key: &Key, entry: &Entry, layout: Layout) -> Self {
        let prefix = key_prefix_len(key) - STATIC_PREFIX;
        PolicyValue {
            proxy_port: if entry.deny { 0 } else { entry.proxy_port() },
            deny: entry.deny,
            lpm_prefix_length: u8::try_from(prefix).unwrap_or(0),
            auth_type: entry.auth_type & !AUTH_EXPLICIT,
            explicit_auth: entry.explicit_auth,
            order: match layout {
                Layout::V1_17 => Order::ProxyPortPriority(entry.proxy_port_priority()),
                Layout::V1_19 => Order::Precedence(entry.precedence()),
            },
            cookie: 0,
        }
    }

    /// The layout the value is in.
    pub fn layout(&self) -> Layout {
        match self.order {
            Order::Precedence(_) => Layout::V1_19,
            Order::ProxyPortPriority(_) => Layout::V1_17,
        }
    }

    /// The flags byte: deny in bit 0, the prefix length in bits 3-7.
    pub fn flags(&self) -> u8 {
        u8::from(self.deny) | (self.lpm_prefix_length << 3)
    }

    /// The auth byte: the type in bits 0-6, explicit in bit 7.
    pub fn auth(&self) -> u8 {
        (self.auth_type & !AUTH_EXPLICIT) | if self.explicit_auth { AUTH_EXPLICIT } else { 0 }
    }

    /// The value bytes, in the layout of [`PolicyValue::order`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.layout().value_size());
        out.extend_from_slice(&self.proxy_port.to_be_bytes());
        out.push(self.flags());
        out.push(self.auth());
        match self.order {
            Order::Precedence(p) => {
                out.extend_from_slice(&p.to_le_bytes());
                out.extend_from_slice(&self.cookie.to_le_bytes());
            }
            Order::ProxyPortPriority(p) => out.extend_from_slice(&[p, 0, 0, 0]),
        }
        out
    }

    /// Reads a value written in `layout`. Rejects reserved flag bits, prefix lengths the agent
    /// never writes, and (1.17/1.18) non-zero padding.
    pub fn decode(bytes: &[u8], layout: Layout) -> Result<Self, Error> {
        if bytes.len() != layout.value_size() {
            return Err(Error::WrongSize {
                what: "policy value",
                expected: layout.value_size(),
                actual: bytes.len(),
            });
        }
        let flags = bytes[2];
        let lpm_prefix_length = flags >> 3;
        if flags & FLAGS_RESERVED != 0 || !matches!(lpm_prefix_length, 0 | 8..=24) {
            return Err(Error::ValueFlags(flags));
        }
        let (order, cookie) = match layout {
            Layout::V1_19 => (Order::Precedence(u32_le(bytes, 4)), u32_le(bytes, 8)),
            Layout::V1_17 => {
                if bytes[5..8] != [0, 0, 0] {
                    return Err(Error::Padding("policy value"));
                }
                (Order::ProxyPortPriority(bytes[4]), 0)
            }
        };
        Ok(PolicyValue {
            proxy_port: u16::from_be_bytes([bytes[0], bytes[1]]),
            deny: flags & FLAG_DENY != 0,
            lpm_prefix_length,
            auth_type: bytes[3] & !AUTH_EXPLICIT,
            explicit_auth: bytes[3] & AUTH_EXPLICIT != 0,
            order,
            cookie,
        })
    }

    /// Checks the value against its key, as the agent does before it trusts an entry: the
    /// value's prefix length must be the key's minus 40.
    pub fn check_key(&self, key: &Key) -> Result<(), Error> {
        let want = u8::try_from(key_prefix_len(key) - STATIC_PREFIX).unwrap_or(u8::MAX);
        if want == self.lpm_prefix_length {
            Ok(())
        } else {
            Err(Error::PrefixMismatch {
                key: want,
                value: self.lpm_prefix_length,
            })
        }
    }
}

/// The value bytes of `entry` at `key` in `layout`.
pub fn encode_value(key: &Key, entry: &Entry, layout: Layout) -> Vec<u8> {
    PolicyValue::new(key, entry, layout).encode()
}

/// Reads value bytes written in `layout`.
pub fn decode_value(bytes: &[u8], layout: Layout) -> Result<PolicyValue, Error> {
    PolicyValue::decode(bytes, layout)
}

/// Bytes as lower-case hex, no separators.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use polc_compiler::mapstate::ProxyTarget;
    use proptest::prelude::*;

    fn key(direction: Direction, identity: u32, proto: u8, port: u16, port_prefix: u8) -> Key {
        Key {
            direction,
            identity,
            proto,
            port,
            port_prefix,
        }
    }

    fn allow() -> Entry {
        Entry::allow()
    }

    fn http(mut e: Entry) -> Entry {
        e.proxy = Some(ProxyTarget {
            listener: "cilium-http-ingress".into(),
            port: 15000,
            priority: 101,
        });
        e
    }

    #[test]
    fn key_bytes_follow_the_spec_table() {
        let k = key(Direction::Ingress, 12345, 6, 8080, 16);
        assert_eq!(hex(&encode_key(&k)), "400000003930000000061f90");
        let k = key(Direction::Egress, 0, 0, 0, 0);
        assert_eq!(hex(&encode_key(&k)), "280000000000000001000000");
        // A range prefix: 8080-8095 is 8080/12, prefix 48 + 12 = 60.
        let k = key(Direction::Ingress, 7, 6, 8080, 12);
        assert_eq!(hex(&encode_key(&k)), "3c0000000700000000061f90");
        // Protocol only: prefix 48, port 0.
        let k = key(Direction::Egress, 2, 17, 0, 0);
        assert_eq!(hex(&encode_key(&k)), "300000000200000001110000");
    }

    #[test]
    fn key_ports_are_masked() {
        // 8081 under a 12-bit prefix is written as 8080.
        let k = key(Direction::Ingress, 1, 6, 8081, 12);
        assert_eq!(&encode_key(&k)[10..], &[0x1f, 0x90]);
        // No protocol: no port.
        let k = key(Direction::Ingress, 1, 0, 80, 16);
        assert_eq!(&encode_key(&k)[9..], &[0, 0, 0]);
    }

    #[test]
    fn values_follow_the_spec_table() {
        let k = key(Direction::Ingress, 12345, 6, 8080, 16);
        let e = http(allow());
        assert_eq!(
            hex(&encode_value(&k, &e, Layout::V1_19)),
            "3a98c0009affffff00000000"
        );
        assert_eq!(
            hex(&encode_value(&k, &e, Layout::V1_17)),
            "3a98c0001b000000"
        );
        let any = key(Direction::Ingress, 2, 0, 0, 0);
        let mut deny = allow();
        deny.deny = true;
        assert_eq!(
            hex(&encode_value(&any, &deny, Layout::V1_19)),
            "00000100ffffffff00000000"
        );
        assert_eq!(
            hex(&encode_value(&any, &deny, Layout::V1_17)),
            "0000010000000000"
        );
        assert_eq!(
            hex(&encode_value(&any, &allow(), Layout::V1_19)),
            "0000000001ffffff00000000"
        );
        assert_eq!(
            hex(&encode_value(&any, &allow(), Layout::V1_17)),
            "0000000000000000"
        );
    }

    #[test]
    fn auth_byte() {
        let k = key(Direction::Ingress, 5, 6, 443, 16);
        let mut e = allow();
        e.auth_type = 1;
        e.explicit_auth = true;
        assert_eq!(encode_value(&k, &e, Layout::V1_19)[3], 0x81);
        e.explicit_auth = false;
        assert_eq!(encode_value(&k, &e, Layout::V1_17)[3], 0x01);
    }

    #[test]
    fn map_name_and_sizes() {
        assert_eq!(policy_map_name(1234), "cilium_policy_v2_01234");
        assert_eq!(policy_map_name(65535), "cilium_policy_v2_65535");
        assert_eq!(Layout::for_version(CiliumVersion::V1_17), Layout::V1_17);
        assert_eq!(Layout::for_version(CiliumVersion::V1_18), Layout::V1_17);
        assert_eq!(Layout::for_version(CiliumVersion::V1_19), Layout::V1_19);
        assert_eq!(Layout::V1_17.record_size(), 20);
        assert_eq!(Layout::V1_19.record_size(), 24);
    }

    #[test]
    fn bad_keys_are_rejected() {
        let good = encode_key(&key(Direction::Ingress, 1, 6, 80, 16));
        assert!(decode_key(&good[..11]).is_err());
        let mut b = good;
        b[8] = 2;
        assert_eq!(decode_key(&b), Err(Error::Direction(2)));
        let mut b = good;
        b[0] = 65;
        assert_eq!(decode_key(&b), Err(Error::PolicyPrefixLen(65)));
        let mut b = good;
        b[0] = 44;
        assert_eq!(decode_key(&b), Err(Error::PolicyPrefixLen(44)));
        let mut b = good;
        b[9] = 0;
        assert_eq!(decode_key(&b), Err(Error::ProtocolPrefix(64)));
        let mut b = good;
        b[0] = 40;
        assert_eq!(decode_key(&b), Err(Error::WildcardNotZero));
        let mut b = encode_key(&key(Direction::Ingress, 1, 6, 8080, 12));
        b[11] |= 1;
        assert_eq!(
            decode_key(&b),
            Err(Error::UnmaskedPort {
                port: 8081,
                bits: 12
            })
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(decode_value(&[0; 8], Layout::V1_19).is_err());
        assert_eq!(
            decode_value(&[0, 0, 0b10, 0, 0, 0, 0, 0], Layout::V1_17),
            Err(Error::ValueFlags(2))
        );
        // Prefix length 4 (flags 0x20) is never written.
        assert_eq!(
            decode_value(&[0, 0, 0x20, 0, 0, 0, 0, 0], Layout::V1_17),
            Err(Error::ValueFlags(0x20))
        );
        assert_eq!(
            decode_value(&[0, 0, 0, 0, 0, 1, 0, 0], Layout::V1_17),
            Err(Error::Padding("policy value"))
        );
    }

    #[test]
    fn value_prefix_is_checked_against_the_key() {
        let k = key(Direction::Ingress, 1, 6, 80, 16);
        let v = PolicyValue::new(&k, &allow(), Layout::V1_19);
        assert_eq!(v.check_key(&k), Ok(()));
        let other = key(Direction::Ingress, 1, 0, 0, 0);
        assert_eq!(
            v.check_key(&other),
            Err(Error::PrefixMismatch { key: 0, value: 24 })
        );
    }

    fn arb_key() -> impl Strategy<Value = Key> {
        (
            any::<bool>(),
            any::<u32>(),
            prop_oneof![Just(0u8), any::<u8>()],
            any::<u16>(),
            0u8..=16,
        )
            .prop_map(|(eg, identity, proto, port, bits)| {
                let direction = if eg {
                    Direction::Egress
                } else {
                    Direction::Ingress
                };
                if proto == 0 {
                    key(direction, identity, 0, 0, 0)
                } else {
                    key(direction, identity, proto, port & port_mask(bits), bits)
                }
            })
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (
            any::<bool>(),
            prop::option::of((any::<u16>(), 0u8..=126)),
            0u8..=2,
            any::<bool>(),
        )
            .prop_map(|(deny, proxy, auth_type, explicit_auth)| {
                let mut e = allow();
                e.deny = deny;
                e.proxy = proxy.filter(|_| !deny).map(|(port, priority)| ProxyTarget {
                    listener: "l".into(),
                    port,
                    priority,
                });
                e.auth_type = auth_type;
                e.explicit_auth = explicit_auth;
                e
            })
    }

    proptest! {
        #[test]
        fn keys_round_trip(k in arb_key()) {
            let bytes = encode_key(&k);
            prop_assert_eq!(decode_key(&bytes), Ok(k));
            prop_assert_eq!(key_prefix_len(&k), k.prefix_len());
        }

        #[test]
        fn values_round_trip(k in arb_key(), e in arb_entry(), v19 in any::<bool>()) {
            let layout = if v19 { Layout::V1_19 } else { Layout::V1_17 };
            let v = PolicyValue::new(&k, &e, layout);
            let bytes = v.encode();
            prop_assert_eq!(bytes.len(), layout.value_size());
            prop_assert_eq!(bytes.clone(), encode_value(&k, &e, layout));
            let back = decode_value(&bytes, layout);
            prop_assert_eq!(back, Ok(v));
            prop_assert_eq!(v.check_key(&k), Ok(()));
            // Bytes 0-3 are the same in both layouts.
            let other = if v19 { Layout::V1_17 } else { Layout::V1_19 };
            prop_assert_eq!(&bytes[..4], &encode_value(&k, &e, other)[..4]);
        }
    }
}
