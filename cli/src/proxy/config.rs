//! What a node's proxy is given: its listeners' ports, the node's ipcache and every local
//! endpoint's proxy rules (NPDS `NetworkPolicy`, as `polc compile` writes them). One JSON file,
//! `proxy.json`, written by `polc compile` (per node) and by `polc lab`, read by `polc proxy`,
//! which reads it again whenever it changes.

use super::{Ipcache, Rules};
use polc_compiler::compile::Compilation;
use polc_compiler::identity::IpcacheEntry;
use polc_compiler::mapstate::ProxyPorts;
use polc_compiler::model::Model;
use polc_ebpf::l7::EndpointRules;
use polc_ebpf::npds;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// The ports the proxy listens on (its listeners are transparent: the datapath hands them
/// connections whose destination is the original one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ports {
    /// `cilium-http-ingress`.
    pub http_ingress: u16,
    /// `cilium-http-egress`.
    pub http_egress: u16,
    /// `cilium-dns-egress` (UDP and TCP).
    pub dns_egress: u16,
}

impl From<&ProxyPorts> for Ports {
    fn from(p: &ProxyPorts) -> Ports {
        Ports {
            http_ingress: p.http_ingress,
            http_egress: p.http_egress,
            dns_egress: p.dns_egress,
        }
    }
}

/// One ipcache prefix.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpcacheRow {
    /// The prefix.
    pub prefix: ipnet::IpNet,
    /// Its identity.
    pub identity: u32,
}

/// The proxy's input for one node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// The node.
    pub node: String,
    /// Listener ports.
    pub ports: Ports,
    /// The node's ipcache.
    pub ipcache: Vec<IpcacheRow>,
    /// Each local endpoint's `cilium.NetworkPolicy` (protobuf JSON).
    pub endpoints: Vec<Value>,
    /// Each local endpoint's DNS rules (NPDS leaves DNS to the DNS proxy).
    #[serde(default)]
    pub dns: Vec<DnsEndpoint>,
    /// The policies whose L7 rules apply on each redirected port of an endpoint, keyed
    /// `ENDPOINT/DIRECTION/PORT[-END]` (port 0: every port), for the access log.
    #[serde(default)]
    pub policies: std::collections::BTreeMap<String, Vec<String>>,
    /// Every `toFQDNs` selector of the policies: the DNS proxy learns the addresses of the
    /// names they match.
    #[serde(default)]
    pub fqdn_selectors: Vec<String>,
    /// The cluster and the node's pinned datapath, which learnt addresses are compiled into
    /// (without it the DNS proxy learns nothing).
    #[serde(default)]
    pub datapath: Option<Datapath>,
}

/// The inputs the proxy compiles the node from, and where the node's datapath is pinned.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Datapath {
    /// Policy paths.
    pub policies: Vec<std::path::PathBuf>,
    /// Inventory paths.
    pub inventory: Vec<std::path::PathBuf>,
    /// `--cilium-version`.
    pub cilium_version: String,
    /// `--cluster-name`.
    pub cluster_name: String,
    /// The node's pin directory.
    pub pins: std::path::PathBuf,
    /// Capacity of each policy map.
    pub policy_map_max: u32,
}

/// One endpoint's egress DNS rules.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsEndpoint {
    /// The endpoint's ID.
    pub endpoint_id: u16,
    /// Its addresses.
    pub endpoint_ips: Vec<std::net::IpAddr>,
    /// Its egress ports with DNS rules.
    pub ports: Vec<DnsPort>,
}

/// The selectors of one egress port (or range) that carries DNS rules.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsPort {
    /// First port (0: every port).
    pub port: u16,
    /// Last port of a range (0: `port` alone).
    pub end_port: u16,
    /// `TCP` or `UDP`; absent: both.
    pub protocol: Option<String>,
    /// Per selector.
    pub selectors: Vec<DnsSelector>,
}

/// What one selector allows on a DNS port.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsSelector {
    /// The DNS servers' identities it selects (absent: every identity).
    pub remotes: Option<Vec<u32>>,
    /// `matchName`s (lower case, trailing dot).
    pub names: Vec<String>,
    /// `matchPattern`s (lower case, trailing dot).
    pub patterns: Vec<String>,
    /// Whether every name is allowed (no DNS rules on the selector, or an empty list).
    pub any_name: bool,
    /// The rule it comes from.
    pub policy: String,
}

/// The DNS rules of one endpoint's policy, `None` when it has none.
pub fn dns_endpoint(
    endpoint_id: u16,
    endpoint_ips: Vec<std::net::IpAddr>,
    policy: &polc_compiler::mapstate::EndpointPolicy,
) -> Option<DnsEndpoint> {
    use polc_compiler::ir::{Direction, DnsRule, L7, Proto, Redirect};
    let mut ports = Vec::new();
    for f in &policy.filters {
        if f.direction != Direction::Egress
            || matches!(f.proto, Some(p) if p != Proto::Tcp && p != Proto::Udp)
        {
            continue;
        }
        let has_dns = f
            .selectors
            .iter()
            .any(|s| matches!(s.redirect, Some(Redirect::L7(L7::Dns(_)))));
        if !has_dns {
            continue;
        }
        let selectors = f
            .selectors
            .iter()
            .filter(|s| !s.deny)
            .map(|s| {
                let mut sel = DnsSelector {
                    remotes: s.identities.as_ref().map(|ids| ids.to_vec()),
                    names: Vec::new(),
                    patterns: Vec::new(),
                    any_name: true,
                    policy: s.origin.what.clone(),
                };
                if let Some(Redirect::L7(L7::Dns(rules))) = &s.redirect
                    && !rules.is_empty()
                {
                    sel.any_name = false;
                    for r in rules {
                        match r {
                            DnsRule::Name(n, _) => sel.names.push(n.clone()),
                            DnsRule::Pattern(p, _) => sel.patterns.push(p.clone()),
                        }
                    }
                }
                sel
            })
            .collect();
        ports.push(DnsPort {
            port: f.port,
            end_port: f.end_port,
            protocol: f.proto.map(|p| p.name().to_string()),
            selectors,
        });
    }
    (!ports.is_empty()).then_some(DnsEndpoint {
        endpoint_id,
        endpoint_ips,
        ports,
    })
}

impl Config {
    /// The configuration of node `node` of `model`, with the default proxy ports (those the
    /// policy maps' redirect entries carry).
    pub fn of_node(model: &Model, node: &str) -> Config {
        let compilation = Compilation::new(model, Some(node), ProxyPorts::default());
        let cache = model.identities.ipcache(&model.inventory, node);
        let mut config = Config::new(model, node, &compilation.proxy_ports, &cache);
        for e in &compilation.endpoints {
            let policy = compilation.materialize(model, e);
            let rules = npds::network_policy(model, e.endpoint, e.endpoint_id, &policy);
            config.add_endpoint(model, e.endpoint, e.endpoint_id, rules, &policy);
        }
        config
    }

    /// A configuration of node `node` with its ipcache and no endpoints yet.
    pub fn new(model: &Model, node: &str, ports: &ProxyPorts, cache: &[IpcacheEntry]) -> Config {
        Config {
            node: node.to_string(),
            ports: Ports::from(ports),
            ipcache: cache
                .iter()
                .map(|e| IpcacheRow {
                    prefix: e.prefix,
                    identity: e.identity,
                })
                .collect(),
            endpoints: Vec::new(),
            dns: Vec::new(),
            policies: std::collections::BTreeMap::new(),
            fqdn_selectors: model.policies.fqdn_selectors(),
            datapath: None,
        }
    }

    /// Adds an endpoint: its NPDS rules and its DNS rules.
    pub fn add_endpoint(
        &mut self,
        model: &Model,
        ep: polc_compiler::model::EndpointRef,
        endpoint_id: u16,
        npds_rules: Value,
        policy: &polc_compiler::mapstate::EndpointPolicy,
    ) {
        self.endpoints.push(npds_rules);
        for f in &policy.filters {
            let origins: Vec<String> = f
                .selectors
                .iter()
                .filter(|s| !s.deny && s.redirect.is_some())
                .map(|s| s.origin.what.clone())
                .collect();
            if origins.is_empty() {
                continue;
            }
            let range = if f.end_port > f.port {
                format!("{}-{}", f.port, f.end_port)
            } else {
                f.port.to_string()
            };
            let key = format!("{endpoint_id}/{}/{range}", f.direction.name());
            let list = self.policies.entry(key).or_default();
            for o in origins {
                if !list.contains(&o) {
                    list.push(o);
                }
            }
        }
        let ips = model.pod(ep).map_or(Vec::new(), |p| p.ips.clone());
        self.dns.extend(dns_endpoint(endpoint_id, ips, policy));
    }

    /// Reads a configuration file.
    pub fn read(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The rules and the ipcache the proxy judges with.
    pub fn tables(&self) -> Result<(Rules, Ipcache), String> {
        let endpoints = self
            .endpoints
            .iter()
            .map(|v| EndpointRules::from_json(v).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut rules = Rules::new(endpoints);
        rules.policies = self.policies.clone();
        Ok((rules, self.ipcache()))
    }

    /// The ipcache the proxies look identities up in.
    pub fn ipcache(&self) -> Ipcache {
        let entries: Vec<IpcacheEntry> = self
            .ipcache
            .iter()
            .map(|r| IpcacheEntry {
                prefix: r.prefix,
                identity: r.identity,
                tunnel_endpoint: None,
            })
            .collect();
        Ipcache::new(&entries)
    }

    /// Writes the configuration (atomically: a reader sees the old file or the new one).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }
}
