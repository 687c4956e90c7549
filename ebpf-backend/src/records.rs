//! Whole maps as files: a binary record format that is exactly what would be written into the
//! BPF map, and readable JSON views of the policy map, the ipcache and the identity table.
//!
//! # Binary record files
//!
//! A record file is the concatenation of fixed-size records, each the map key's bytes followed
//! by the value's bytes, exactly as `bpf(BPF_MAP_UPDATE_ELEM)` takes them. There is no header,
//! no padding between records and no trailer: the file length is a multiple of the record size,
//! and the layout (hence the record size) is known from the file's context (its name or the
//! target release). Records are sorted by their key bytes (unsigned lexicographic order), so the
//! same map always gives the same file.
//!
//! | Map | Layout | Key | Value | Record |
//! |---|---|---|---|---|
//! | `cilium_policy_v2_<ep>` | 1.17/1.18 | 12 | 8 | 20 |
//! | `cilium_policy_v2_<ep>` | 1.19 | 12 | 12 | 24 |
//! | `cilium_ipcache` | up to 1.18 | 24 | 12 | 36 |
//! | `cilium_ipcache_v2` | 1.19 | 24 | 24 | 48 |
//!
//! # JSON
//!
//! One object per entry, in the order of the map state (direction, identity, protocol, port)
//! for the policy map and by prefix for the ipcache; each carries the decoded fields and the
//! key and value bytes as hex. Policy-map entries also name the rule items behind them, which
//! are reconstructed from the endpoint's filters ([`entry_origins`]).

use crate::error::Error;
use crate::ipcache::{self, IpcacheLayout, IpcacheValue};
use crate::layout::{self, Layout, Order, PolicyValue, hex};
use ipnet::IpNet;
use polc_compiler::identity::{HOST, IdentityKind, IdentityTable, IpcacheEntry};
use polc_compiler::ir::{Direction, Proto};
use polc_compiler::mapstate::{EndpointPolicy, Entry, Filter, Key};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Concatenates records sorted by their key bytes.
fn concat(mut records: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<u8> {
    records.sort();
    records
        .into_iter()
        .flat_map(|(k, v)| k.into_iter().chain(v))
        .collect()
}

/// A record's key and value bytes.
type Record<'a> = (&'a [u8], &'a [u8]);

/// Splits a record file into (key, value) slices.
fn split<'a>(
    bytes: &'a [u8],
    key_size: usize,
    value_size: usize,
    what: &'static str,
) -> Result<Vec<Record<'a>>, Error> {
    let size = key_size + value_size;
    if !bytes.len().is_multiple_of(size) {
        return Err(Error::WrongSize {
            what,
            expected: (bytes.len() / size + 1) * size,
            actual: bytes.len(),
        });
    }
    Ok(bytes
        .chunks_exact(size)
        .map(|r| r.split_at(key_size))
        .collect())
}

/// The record file of an endpoint's policy map in `layout`.
pub fn policy_records(map: &BTreeMap<Key, Entry>, layout: Layout) -> Vec<u8> {
    concat(
        map.iter()
            .map(|(k, e)| {
                (
                    layout::encode_key(k).to_vec(),
                    layout::encode_value(k, e, layout),
                )
            })
            .collect(),
    )
}

/// Reads a policy-map record file written in `layout`; every value is checked against its key.
pub fn decode_policy_records(
    bytes: &[u8],
    layout: Layout,
) -> Result<Vec<(Key, PolicyValue)>, Error> {
    split(
        bytes,
        layout::KEY_SIZE,
        layout.value_size(),
        "policy record file",
    )?
    .into_iter()
    .map(|(k, v)| {
        let key = layout::decode_key(k)?;
        let value = PolicyValue::decode(v, layout)?;
        value.check_key(&key)?;
        Ok((key, value))
    })
    .collect()
}

/// The record file of an ipcache in `layout`, for cluster `cluster_id`. Fails when the layout
/// cannot hold an entry (an IPv6 tunnel endpoint before 1.19).
pub fn ipcache_records(
    entries: &[IpcacheEntry],
    layout: IpcacheLayout,
    cluster_id: u16,
) -> Result<Vec<u8>, Error> {
    let records = entries
        .iter()
        .map(|e| {
            Ok((
                ipcache::encode_key(&e.prefix, cluster_id).to_vec(),
                ipcache::encode_value(e, layout)?,
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(concat(records))
}

/// Reads an ipcache record file written in `layout`: (prefix, cluster ID, value) per record.
pub fn decode_ipcache_records(
    bytes: &[u8],
    layout: IpcacheLayout,
) -> Result<Vec<(IpNet, u16, IpcacheValue)>, Error> {
    split(
        bytes,
        ipcache::KEY_SIZE,
        layout.value_size(),
        "ipcache record file",
    )?
    .into_iter()
    .map(|(k, v)| {
        let (prefix, cluster) = ipcache::decode_key(k)?;
        Ok((prefix, cluster, IpcacheValue::decode(v, layout)?))
    })
    .collect()
}

/// `TCP`, `UDP`, ... for a protocol number; `any` for 0, the number otherwise.
fn proto_name(proto: u8) -> String {
    match Proto::from_number(proto) {
        _ if proto == 0 => "any".into(),
        Some(p) => p.name().into(),
        None => proto.to_string(),
    }
}

/// Whether a filter's L4 part contains a key's: the same protocol (an L3-only filter has
/// none) and a port range that holds every port of the key.
fn filter_has(f: &Filter, key: &Key) -> bool {
    match f.proto {
        None => key.proto == 0,
        Some(p) if p.number() != key.proto => false,
        Some(_) if f.port == 0 && f.end_port == 0 => key.port_prefix == 0,
        Some(_) => {
            let bits = key.port_prefix.min(16);
            if bits == 0 {
                return false;
            }
            let span = (1u32 << (16 - bits)) - 1;
            let (lo, hi) = (u32::from(key.port), u32::from(key.port) + span);
            let end = u32::from(f.end_port.max(f.port));
            u32::from(f.port) <= lo && hi <= end
        }
    }
}

/// The rule items behind an entry, reconstructed from the endpoint's filters: every selector
/// policy of the key's direction with the entry's verdict that selects the key's identity (the
/// wildcard selector: identity 0) on a port range containing the key's. An entry no rule item
/// explains is an agent default: the allow-all of a direction that is not enforced, or the
/// allow-localhost entry for the host.
pub fn entry_origins(policy: &EndpointPolicy, key: &Key, entry: &Entry) -> Vec<String> {
    let mut out: Vec<String> = policy
        .filters
        .iter()
        .filter(|f| f.direction == key.direction && filter_has(f, key))
        .flat_map(|f| f.selectors.iter())
        .filter(|s| {
            s.deny == entry.deny
                && match &s.identities {
                    None => key.identity == 0,
                    Some(ids) => ids.contains(&key.identity),
                }
        })
        .map(|s| s.origin.what.clone())
        .collect();
    out.sort();
    out.dedup();
    if out.is_empty() && !entry.deny && key.proto == 0 {
        let enforced = match key.direction {
            Direction::Ingress => policy.enforced.0,
            Direction::Egress => policy.enforced.1,
        };
        if key.identity == 0 && !enforced {
            out.push(format!(
                "agent default: {} not enforced",
                key.direction.name()
            ));
        } else if key.identity == HOST && key.direction == Direction::Ingress {
            out.push("agent default: allow-localhost".into());
        }
    }
    out
}

/// One policy-map entry as JSON: `direction`, `identity`, `proto`, `port`, `port_prefix`,
/// `prefix_len`, `verdict` (`allow` / `deny` / `redirect`), `proxy_port`, `listener`,
/// `precedence` (1.19, hex) or `proxy_port_priority` (1.17/1.18), `auth`, `origins` (as given),
/// and the `key` / `value` bytes as hex.
pub fn policy_entry_json(key: &Key, entry: &Entry, layout: Layout, origins: &[String]) -> Value {
    let value = PolicyValue::new(key, entry, layout);
    let verdict = if entry.deny {
        "deny"
    } else if value.proxy_port != 0 {
        "redirect"
    } else {
        "allow"
    };
    let mut obj = serde_json::Map::new();
    obj.insert("direction".into(), json!(key.direction.name()));
    obj.insert("identity".into(), json!(key.identity));
    obj.insert("proto".into(), json!(proto_name(key.proto)));
    obj.insert(
        "port".into(),
        json!(if key.proto == 0 { 0 } else { key.port }),
    );
    obj.insert(
        "port_prefix".into(),
        json!(if key.proto == 0 {
            0
        } else {
            key.port_prefix.min(16)
        }),
    );
    obj.insert("prefix_len".into(), json!(layout::key_prefix_len(key)));
    obj.insert("verdict".into(), json!(verdict));
    obj.insert("proxy_port".into(), json!(value.proxy_port));
    if let (false, Some(p)) = (entry.deny, &entry.proxy) {
        obj.insert("listener".into(), json!(p.listener.as_ref()));
    }
    match value.order {
        Order::Precedence(p) => obj.insert("precedence".into(), json!(format!("{p:#010x}"))),
        Order::ProxyPortPriority(p) => obj.insert("proxy_port_priority".into(), json!(p)),
    };
    obj.insert(
        "auth".into(),
        json!({ "type": value.auth_type, "explicit": value.explicit_auth }),
    );
    obj.insert("origins".into(), json!(origins));
    obj.insert("key".into(), json!(hex(&layout::encode_key(key))));
    obj.insert("value".into(), json!(hex(&value.encode())));
    Value::Object(obj)
}

/// Every entry of an endpoint's policy map as JSON, in map-state order, with its origins
/// ([`entry_origins`]).
pub fn policy_map_json(policy: &EndpointPolicy, layout: Layout) -> Value {
    Value::Array(
        policy
            .map
            .iter()
            .map(|(k, e)| policy_entry_json(k, e, layout, &entry_origins(policy, k, e)))
            .collect(),
    )
}

/// An endpoint's policy map as a JSON document: its name, type, sizes, and entries.
pub fn policy_map_document(
    endpoint_id: u16,
    policy: &EndpointPolicy,
    layout: Layout,
    max_entries: usize,
) -> Value {
    let (ingress, egress) = policy
        .map
        .keys()
        .fold((0, 0), |(i, e), k| match k.direction {
            Direction::Ingress => (i + 1, e),
            Direction::Egress => (i, e + 1),
        });
    json!({
        "name": layout::policy_map_name(endpoint_id),
        "type": "LPM_TRIE",
        "layout": layout.name(),
        "key_size": layout::KEY_SIZE,
        "value_size": layout.value_size(),
        "max_entries": max_entries,
        "count": { "ingress": ingress, "egress": egress },
        "entries": policy_map_json(policy, layout),
    })
}

/// One ipcache entry as JSON: `prefix`, `identity`, `tunnel_endpoint` (or null), `flags`, and
/// the `key` / `value` bytes as hex.
pub fn ipcache_entry_json(
    entry: &IpcacheEntry,
    layout: IpcacheLayout,
    cluster_id: u16,
) -> Result<Value, Error> {
    let value = IpcacheValue::from_entry(entry);
    Ok(json!({
        "prefix": entry.prefix.trunc().to_string(),
        "identity": entry.identity,
        "tunnel_endpoint": entry.tunnel_endpoint.map(|t| t.to_string()),
        "flags": value.flag_names(),
        "key": hex(&ipcache::encode_key(&entry.prefix, cluster_id)),
        "value": hex(&value.encode(layout)?),
    }))
}

/// An ipcache as a JSON document: map name, sizes, and one object per entry (in the order
/// given; [`IdentityTable::ipcache`] sorts by prefix).
pub fn ipcache_json(
    entries: &[IpcacheEntry],
    layout: IpcacheLayout,
    cluster_id: u16,
) -> Result<Value, Error> {
    let list = entries
        .iter()
        .map(|e| ipcache_entry_json(e, layout, cluster_id))
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(json!({
        "name": layout.map_name(),
        "type": "LPM_TRIE",
        "key_size": ipcache::KEY_SIZE,
        "value_size": layout.value_size(),
        "max_entries": ipcache::IPCACHE_MAX_ENTRIES,
        "entries": list,
    }))
}

/// The identity table as JSON: one object per identity with `id`, `labels` (`source:key=value`
/// strings, sorted) and `kind` (`reserved`, `pods`, `cidr` with its `prefix`, `node` with its
/// `node`).
pub fn identities_json(table: &IdentityTable) -> Value {
    Value::Array(
        table
            .iter()
            .map(|id| {
                let mut obj = serde_json::Map::new();
                obj.insert("id".into(), json!(id.id));
                let mut labels: Vec<String> = id.labels.iter().map(ToString::to_string).collect();
                labels.sort();
                obj.insert("labels".into(), json!(labels));
                match &id.kind {
                    IdentityKind::Reserved => {
                        obj.insert("kind".into(), json!("reserved"));
                    }
                    IdentityKind::Pods => {
                        obj.insert("kind".into(), json!("pods"));
                    }
                    IdentityKind::Cidr(net) => {
                        obj.insert("kind".into(), json!("cidr"));
                        obj.insert("prefix".into(), json!(net.to_string()));
                    }
                    IdentityKind::Node(name) => {
                        obj.insert("kind".into(), json!("node"));
                        obj.insert("node".into(), json!(name));
                    }
                    IdentityKind::Fqdn(_) => {
                        obj.insert("kind".into(), json!("fqdn"));
                        let ips: Vec<String> = table
                            .fqdns
                            .iter()
                            .filter(|(_, i)| **i == id.id)
                            .map(|(ip, _)| ip.to_string())
                            .collect();
                        obj.insert("addresses".into(), json!(ips));
                    }
                }
                Value::Object(obj)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use polc_compiler::mapstate::{Origin, PeerPolicy, ProxyTarget};
    use std::sync::Arc;

    fn origin(what: &str) -> Origin {
        Origin {
            what: what.into(),
            loc: None,
        }
    }

    fn any_key(direction: Direction, identity: u32) -> Key {
        Key {
            direction,
            identity,
            proto: 0,
            port: 0,
            port_prefix: 0,
        }
    }

    fn sample() -> EndpointPolicy {
        let mut map = BTreeMap::new();
        let mut redirect = Entry::allow();
        redirect.proxy = Some(ProxyTarget {
            listener: "cilium-http-ingress".into(),
            port: 15000,
            priority: 101,
        });
        map.insert(
            Key {
                direction: Direction::Ingress,
                identity: 300,
                proto: 6,
                port: 8080,
                port_prefix: 16,
            },
            redirect,
        );
        let mut deny = Entry::allow();
        deny.deny = true;
        for id in [2, 9, 10] {
            map.insert(any_key(Direction::Ingress, id), deny.clone());
        }
        map.insert(any_key(Direction::Ingress, HOST), Entry::allow());
        map.insert(any_key(Direction::Egress, 0), Entry::allow());
        let filters = vec![
            Filter {
                direction: Direction::Ingress,
                proto: Some(Proto::Tcp),
                port: 8080,
                end_port: 0,
                selectors: vec![PeerPolicy {
                    identities: Some(Arc::new(vec![300])),
                    deny: false,
                    redirect: None,
                    origin: origin("CiliumNetworkPolicy default/backend spec.ingress[0]"),
                }],
            },
            Filter {
                direction: Direction::Ingress,
                proto: None,
                port: 0,
                end_port: 0,
                selectors: vec![PeerPolicy {
                    identities: Some(Arc::new(vec![2, 9, 10])),
                    deny: true,
                    redirect: None,
                    origin: origin("CiliumNetworkPolicy default/backend spec.ingressDeny[0]"),
                }],
            },
        ];
        EndpointPolicy {
            map,
            filters,
            enforced: (true, false),
        }
    }

    #[test]
    fn policy_records_round_trip_sorted_by_key_bytes() {
        let policy = sample();
        for layout in [Layout::V1_17, Layout::V1_19] {
            let bytes = policy_records(&policy.map, layout);
            assert_eq!(bytes.len(), policy.map.len() * layout.record_size());
            let keys: Vec<&[u8]> = bytes
                .chunks(layout.record_size())
                .map(|r| &r[..12])
                .collect();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted);
            let decoded = decode_policy_records(&bytes, layout).unwrap();
            assert_eq!(decoded.len(), policy.map.len());
            for (k, v) in decoded {
                assert_eq!(v, PolicyValue::new(&k, &policy.map[&k], layout));
            }
            assert!(matches!(
                decode_policy_records(&bytes[1..], layout),
                Err(Error::WrongSize { .. })
            ));
        }
    }

    #[test]
    fn a_value_that_disagrees_with_its_key_is_rejected() {
        let policy = sample();
        let mut bytes = policy_records(&policy.map, Layout::V1_19);
        // The first record is a 40-bit key; claim a 24-bit value prefix.
        bytes[14] |= 24 << 3;
        assert_eq!(
            decode_policy_records(&bytes, Layout::V1_19),
            Err(Error::PrefixMismatch { key: 0, value: 24 })
        );
    }

    #[test]
    fn policy_json_has_decoded_fields_and_origins() {
        let policy = sample();
        let doc = policy_map_document(1234, &policy, Layout::V1_19, 16384);
        assert_eq!(doc["name"], "cilium_policy_v2_01234");
        assert_eq!(doc["value_size"], 12);
        assert_eq!(doc["count"]["ingress"], 5);
        let entries = doc["entries"].as_array().unwrap();
        let host = &entries[0];
        assert_eq!(host["identity"], 1);
        assert_eq!(host["verdict"], "allow");
        assert_eq!(host["origins"][0], "agent default: allow-localhost");
        let world = &entries[1];
        assert_eq!(world["identity"], 2);
        assert_eq!(world["proto"], "any");
        assert_eq!(world["verdict"], "deny");
        assert_eq!(world["precedence"], "0xffffffff");
        assert_eq!(world["value"], "00000100ffffffff00000000");
        assert_eq!(
            world["origins"][0],
            "CiliumNetworkPolicy default/backend spec.ingressDeny[0]"
        );
        let redirect = &entries[4];
        assert_eq!(redirect["identity"], 300);
        assert_eq!(redirect["proto"], "TCP");
        assert_eq!(redirect["verdict"], "redirect");
        assert_eq!(redirect["proxy_port"], 15000);
        assert_eq!(redirect["listener"], "cilium-http-ingress");
        assert_eq!(redirect["prefix_len"], 64);
        assert_eq!(redirect["precedence"], "0xffffff9a");
        assert_eq!(redirect["key"], "400000002c01000000061f90");
        assert_eq!(
            redirect["origins"],
            json!(["CiliumNetworkPolicy default/backend spec.ingress[0]"])
        );
        let egress = &entries[5];
        assert_eq!(egress["direction"], "egress");
        assert_eq!(egress["origins"][0], "agent default: egress not enforced");
        let old = policy_map_json(&policy, Layout::V1_17);
        assert_eq!(old[4]["proxy_port_priority"], 27);
        assert!(old[4].get("precedence").is_none());
    }

    #[test]
    fn filter_port_ranges_contain_key_prefixes() {
        let f = Filter {
            direction: Direction::Ingress,
            proto: Some(Proto::Tcp),
            port: 8080,
            end_port: 8095,
            selectors: Vec::new(),
        };
        let key = |port, port_prefix| Key {
            direction: Direction::Ingress,
            identity: 0,
            proto: 6,
            port,
            port_prefix,
        };
        assert!(filter_has(&f, &key(8080, 12)));
        assert!(filter_has(&f, &key(8088, 16)));
        assert!(!filter_has(&f, &key(8064, 11)));
        assert!(!filter_has(&f, &key(0, 0)));
    }

    #[test]
    fn ipcache_records_and_json() {
        let entries = vec![
            IpcacheEntry {
                prefix: "10.0.1.5/32".parse().unwrap(),
                identity: 256,
                tunnel_endpoint: None,
            },
            IpcacheEntry {
                prefix: "10.0.2.7/32".parse().unwrap(),
                identity: 257,
                tunnel_endpoint: Some("192.168.1.2".parse().unwrap()),
            },
            IpcacheEntry {
                prefix: "0.0.0.0/0".parse().unwrap(),
                identity: 9,
                tunnel_endpoint: None,
            },
        ];
        for layout in [IpcacheLayout::V1, IpcacheLayout::V2] {
            let bytes = ipcache_records(&entries, layout, 0).unwrap();
            assert_eq!(bytes.len(), 3 * layout.record_size());
            let decoded = decode_ipcache_records(&bytes, layout).unwrap();
            // 0.0.0.0/0 has the smallest prefix length byte, so it sorts first.
            assert_eq!(decoded[0].0.to_string(), "0.0.0.0/0");
            assert_eq!(decoded[2].2.tunnel_endpoint, entries[1].tunnel_endpoint);
        }
        let doc = ipcache_json(&entries, IpcacheLayout::V2, 0).unwrap();
        assert_eq!(doc["name"], "cilium_ipcache_v2");
        assert_eq!(doc["entries"][1]["tunnel_endpoint"], "192.168.1.2");
        assert_eq!(doc["entries"][1]["flags"][0], "has-tunnel-endpoint");
        assert_eq!(doc["entries"][0]["tunnel_endpoint"], Value::Null);
    }
}
