//! The L7 proxy's view of an endpoint's policy: the NPDS `cilium.NetworkPolicy` resource the
//! agent serves Envoy (datapath spec §4), printed as protobuf JSON.
//!
//! The grouping follows the current agent (`getDirectionNetworkPolicy` in `pkg/envoy`), which
//! §4.2 of the spec summarises:
//!
//! - A direction that is not enforced is exactly `[{port: 0, protocol: TCP}]`.
//! - Only TCP filters are sent; an L3-only filter (no protocol) stands for every protocol and
//!   counts as TCP port 0. One `PortNetworkPolicy` per (port, end port): the compiler's
//!   filters (one per rule item and port entry) with the same port range are merged, as the
//!   agent merges rules into one L4 filter per port.
//! - Port 0 (the wildcard port): the selections of all its selectors are merged into at most
//!   one deny rule and one allow rule (a wildcard deny selector alone makes the deny-all rule
//!   `{deny: true}`, and then no other port is sent; a wildcard allow selector makes the
//!   allow-all rule `{}` and lets every other port whose rules can short-circuit be left out).
//! - Other ports: one rule per selector policy; `remotePolicies` are the sorted identities,
//!   empty for a wildcard selector; a non-wildcard selector that selects nothing gives no rule,
//!   and a port without rules is left out. A deny selector gives `deny: true` and no L7 (a
//!   wildcard deny replaces the port's rules). An allow rule without remote restriction, L7,
//!   TLS or listener makes the port's `rules` empty (allow all), unless the port also has a
//!   deny rule (deny rules cannot be short-circuited).
//! - HTTP rules become Envoy header matchers: `method`, `path`, `host` as RE2 `safeRegex`
//!   matches of `:method`, `:path`, `:authority`; `headers: ["K: V"]` as `stringMatch.exact`,
//!   `["K"]` as `presentMatch`. Matchers are sorted by name (the agent's `SortHeaderMatchers`),
//!   HTTP rules by matcher count then matchers, rules by (HTTP-less first, HTTP rules, remote
//!   policies), as the agent's sort functions do; ties are broken by the printed JSON so the
//!   output is deterministic.
//! - Kafka rules (`l7Proto: "kafka"`), generic L7 (`l7Proto: <parser>`, key/value rules, or
//!   Envoy metadata matchers for `envoy.*` parsers) as the agent writes them.
//! - DNS rules are the DNS proxy's business: the agent ignores them here, so a DNS selector
//!   gives a rule with no L7, which (without a remote restriction) allows everything on the port
//!   at L7. Envoy never sees that traffic anyway: the policy map redirects it to the DNS proxy.
//! - With allow-localhost (datapath spec §2.6), an ingress port with a redirecting selector that
//!   selects the host gets one more rule, `remotePolicies: [1]` with no L7, as the agent adds
//!   the host selector with an empty (allow-all) L7 policy to the filter.
//!
//! Versions: for 1.17/1.18 targets a port with a single selector policy gets empty
//! `remotePolicies` (those agents relied on the policy map to restrict L3). Everything else is
//! the 1.19 form; `precedence` is not written (every CNP/CCNP rule has priority 0, so Envoy's
//! order is deny before allow, which is what it does without it) and neither is the
//! `conntrack_map_name` field the current proxy API has reserved.
//!
//! Printing follows the protobuf JSON mapping (camelCase names, enums by name, `uint64` as a
//! decimal string, so `endpointId` is `"1234"`), omitting false, zero and empty fields, with
//! three exceptions for readability: `port` and `protocol` are always printed (they name the
//! port policy), and both per-port lists are always printed (an empty list denies the
//! direction at L7).
//!
//! Not represented (the IR does not carry them): TLS contexts and SNI of TLS interception
//! (such a rule is written without them but is never treated as allow-all), and
//! `headerMatches` with mismatch actions.

use polc_compiler::CiliumVersion;
use polc_compiler::identity::HOST;
use polc_compiler::ir::{Direction, HttpRule, KafkaRule, L7, Proto, Redirect};
use polc_compiler::mapstate::{self, EndpointPolicy, Filter, Origin, PeerPolicy, ProxyPorts};
use polc_compiler::model::{EndpointRef, Model};
use serde_json::{Value, json};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// The xDS type URL of NPDS resources.
pub const TYPE_URL: &str = "type.googleapis.com/cilium.NetworkPolicy";

/// The NPDS resource name of an endpoint: its ID in decimal.
pub fn resource_name(endpoint_id: u16) -> String {
    endpoint_id.to_string()
}

/// How a header matcher matches.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Match {
    /// RE2 full-string match.
    Regex(String),
    /// Exact value.
    Exact(String),
    /// Presence.
    Present,
}

/// An Envoy `HeaderMatcher`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Header {
    name: String,
    matcher: Match,
}

impl Header {
    fn json(&self) -> Value {
        match &self.matcher {
            Match::Regex(re) => {
                json!({"name": self.name, "stringMatch": {"safeRegex": {"regex": re}}})
            }
            Match::Exact(v) => json!({"name": self.name, "stringMatch": {"exact": v}}),
            Match::Present => json!({"name": self.name, "presentMatch": true}),
        }
    }

    /// `HeaderMatcherCmp`: by name, then presence matchers last; then the printed form.
    fn cmp(&self, other: &Header) -> Ordering {
        self.name
            .cmp(&other.name)
            .then_with(|| (self.matcher == Match::Present).cmp(&(other.matcher == Match::Present)))
            .then_with(|| self.json().to_string().cmp(&other.json().to_string()))
    }
}

/// The L7 part of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RuleL7 {
    /// HTTP rules, each a list of header matchers (all must match).
    Http(Vec<Vec<Header>>),
    /// Kafka rules (`KafkaNetworkPolicyRule` JSON).
    Kafka(Vec<Value>),
    /// Generic L7: the parser and the `L7NetworkPolicyRules` JSON.
    Generic(String, Value),
}

/// A `PortNetworkPolicyRule`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rule {
    deny: bool,
    /// Empty: any remote identity.
    remote: Vec<u32>,
    proxy_id: u16,
    l7: Option<RuleL7>,
    /// TLS interception whose contexts polc does not know.
    tls: bool,
}

impl Rule {
    fn is_allow_all(&self) -> bool {
        !self.deny && self.remote.is_empty() && self.l7.is_none() && !self.tls && self.proxy_id == 0
    }

    fn json(&self) -> Value {
        let mut obj = serde_json::Map::new();
        if !self.remote.is_empty() {
            obj.insert("remotePolicies".into(), json!(self.remote));
        }
        if self.deny {
            obj.insert("deny".into(), json!(true));
        }
        if self.proxy_id != 0 {
            obj.insert("proxyId".into(), json!(self.proxy_id));
        }
        match &self.l7 {
            None => {}
            Some(RuleL7::Http(rules)) => {
                let rules: Vec<Value> = rules
                    .iter()
                    .map(|headers| {
                        if headers.is_empty() {
                            json!({})
                        } else {
                            json!({"headers": headers.iter().map(Header::json).collect::<Vec<_>>()})
                        }
                    })
                    .collect();
                obj.insert("httpRules".into(), json!({ "httpRules": rules }));
            }
            Some(RuleL7::Kafka(rules)) => {
                obj.insert("l7Proto".into(), json!("kafka"));
                obj.insert("kafkaRules".into(), json!({ "kafkaRules": rules }));
            }
            Some(RuleL7::Generic(proto, rules)) => {
                obj.insert("l7Proto".into(), json!(proto));
                obj.insert("l7Rules".into(), rules.clone());
            }
        }
        Value::Object(obj)
    }

    fn http(&self) -> Option<&Vec<Vec<Header>>> {
        match &self.l7 {
            Some(RuleL7::Http(r)) => Some(r),
            _ => None,
        }
    }

    /// `PortNetworkPolicyRuleCmp` without precedence: rules without HTTP first, then by HTTP
    /// rules, then by remote policies (count, then values); then the printed form.
    fn cmp(&self, other: &Rule) -> Ordering {
        let http = match (self.http(), other.http()) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(a), Some(b)) => a
                .len()
                .cmp(&b.len())
                .then_with(|| cmp_lists(a, b, |x, y| cmp_lists(x, y, Header::cmp))),
        };
        http.then_with(|| self.remote.len().cmp(&other.remote.len()))
            .then_with(|| self.remote.cmp(&other.remote))
            .then_with(|| self.json().to_string().cmp(&other.json().to_string()))
    }
}

/// Compares two lists by length, then element by element.
fn cmp_lists<T>(a: &[T], b: &[T], f: impl Fn(&T, &T) -> Ordering) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| {
        a.iter()
            .zip(b)
            .map(|(x, y)| f(x, y))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    })
}

/// The header matchers of one HTTP rule, sorted.
fn http_headers(rule: &HttpRule) -> Vec<Header> {
    let mut out = Vec::new();
    for (name, re) in [
        (":path", &rule.path),
        (":method", &rule.method),
        (":authority", &rule.host),
    ] {
        if let Some(re) = re.as_ref().filter(|r| !r.is_empty()) {
            out.push(Header {
                name: name.into(),
                matcher: Match::Regex(re.clone()),
            });
        }
    }
    for (name, value) in &rule.headers {
        out.push(Header {
            name: name.clone(),
            matcher: match value {
                Some(v) => Match::Exact(v.clone()),
                None => Match::Present,
            },
        });
    }
    out.sort_by(Header::cmp);
    out
}

/// Kafka API keys by name (`KafkaAPIKeyMap`).
const KAFKA_API_KEYS: &[(&str, i32)] = &[
    ("produce", 0),
    ("fetch", 1),
    ("offsets", 2),
    ("metadata", 3),
    ("leaderandisr", 4),
    ("stopreplica", 5),
    ("updatemetadata", 6),
    ("controlledshutdown", 7),
    ("offsetcommit", 8),
    ("offsetfetch", 9),
    ("findcoordinator", 10),
    ("joingroup", 11),
    ("heartbeat", 12),
    ("leavegroup", 13),
    ("syncgroup", 14),
    ("describegroups", 15),
    ("listgroups", 16),
    ("saslhandshake", 17),
    ("apiversions", 18),
    ("createtopics", 19),
    ("deletetopics", 20),
    ("deleterecords", 21),
    ("initproducerid", 22),
    ("offsetforleaderepoch", 23),
    ("addpartitionstotxn", 24),
    ("addoffsetstotxn", 25),
    ("endtxn", 26),
    ("writetxnmarkers", 27),
    ("txnoffsetcommit", 28),
    ("describeacls", 29),
    ("createacls", 30),
    ("deleteacls", 31),
    ("describeconfigs", 32),
    ("alterconfigs", 33),
];

/// The API keys of a Kafka role (`produce`, `consume`).
fn kafka_role_keys(role: &str) -> Vec<i32> {
    match role.to_ascii_lowercase().as_str() {
        // Produce, Metadata, ApiVersions.
        "produce" => vec![0, 3, 18],
        // Fetch, Offsets, Metadata, OffsetCommit, OffsetFetch, FindCoordinator, JoinGroup,
        // Heartbeat, LeaveGroup, SyncGroup, ApiVersions.
        "consume" => vec![1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18],
        _ => Vec::new(),
    }
}

/// One `KafkaNetworkPolicyRule`: `apiVersion` (-1 = any), `apiKeys` (empty = any),
/// `clientId`, `topic`.
fn kafka_rule(rule: &KafkaRule) -> Value {
    let version = rule
        .api_version
        .as_deref()
        .and_then(|v| v.trim().parse::<i32>().ok())
        .unwrap_or(-1);
    let keys: Vec<i32> = match (&rule.role, &rule.api_key) {
        (Some(role), _) => kafka_role_keys(role),
        (None, Some(key)) => {
            let lower = key.to_ascii_lowercase();
            KAFKA_API_KEYS
                .iter()
                .find(|(n, _)| *n == lower)
                .map(|(_, k)| *k)
                .or_else(|| key.trim().parse().ok())
                .into_iter()
                .collect()
        }
        (None, None) => Vec::new(),
    };
    let mut obj = serde_json::Map::new();
    if version != 0 {
        obj.insert("apiVersion".into(), json!(version));
    }
    if !keys.is_empty() {
        obj.insert("apiKeys".into(), json!(keys));
    }
    if let Some(c) = rule.client_id.as_ref().filter(|c| !c.is_empty()) {
        obj.insert("clientId".into(), json!(c));
    }
    if let Some(t) = rule.topic.as_ref().filter(|t| !t.is_empty()) {
        obj.insert("topic".into(), json!(t));
    }
    Value::Object(obj)
}

/// The `L7NetworkPolicyRules` of a generic parser: key/value `rule` maps for proxylib parsers;
/// for `envoy.*` parsers, Envoy metadata matchers (a key `action: deny` makes a deny rule).
fn generic_rules(parser: &str, rules: &[Vec<(String, String)>]) -> Value {
    let mut allow = Vec::new();
    let mut deny = Vec::new();
    for rule in rules {
        let sorted: BTreeMap<&str, &str> =
            rule.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if parser.starts_with("envoy.") {
            let mut is_deny = false;
            let mut matchers = Vec::new();
            for (k, v) in &sorted {
                if *k == "action" {
                    is_deny |= *v == "deny";
                    continue;
                }
                let path: Vec<Value> = k.split('/').map(|seg| json!({ "key": seg })).collect();
                matchers.push(json!({
                    "filter": parser,
                    "path": path,
                    "value": {"listMatch": {"oneOf": {"stringMatch": {"exact": v}}}},
                }));
            }
            let r = if matchers.is_empty() {
                json!({})
            } else {
                json!({ "metadataRule": matchers })
            };
            if is_deny { deny.push(r) } else { allow.push(r) }
        } else if sorted.is_empty() {
            allow.push(json!({}));
        } else {
            allow.push(json!({ "rule": sorted }));
        }
    }
    let mut obj = serde_json::Map::new();
    if !allow.is_empty() {
        obj.insert("l7AllowRules".into(), json!(allow));
    }
    if !deny.is_empty() {
        obj.insert("l7DenyRules".into(), json!(deny));
    }
    Value::Object(obj)
}

/// What the rules of one endpoint need from the model.
struct Cx<'a> {
    model: &'a Model,
    policy: &'a EndpointPolicy,
}

impl Cx<'_> {
    /// The proxy port of an explicit listener: the one the policy map redirects to, else the
    /// default assignment (`listener_base` + the listener's index).
    fn listener_port(&self, name: &str) -> u16 {
        self.policy
            .map
            .values()
            .filter_map(|e| e.proxy.as_ref())
            .find(|p| p.listener.as_ref() == name)
            .map(|p| p.port)
            .unwrap_or_else(|| {
                let i = mapstate::listeners(self.model)
                    .iter()
                    .position(|l| l == name)
                    .unwrap_or(0);
                ProxyPorts::default()
                    .listener_base
                    .saturating_add(u16::try_from(i).unwrap_or(u16::MAX))
            })
    }

    /// The rule of one selector policy on a port, and whether it can be short-circuited;
    /// `None` when the selector selects nothing.
    fn port_rule(&self, sel: &PeerPolicy, wildcard: bool) -> Option<(Rule, bool)> {
        let mut rule = Rule {
            deny: sel.deny,
            ..Rule::default()
        };
        if !wildcard {
            let ids = sorted_ids(sel)?;
            if ids.is_empty() {
                return None;
            }
            rule.remote = ids;
        }
        if sel.deny {
            return Some((rule, false));
        }
        match &sel.redirect {
            None => {}
            Some(Redirect::L7(L7::Http(rules))) if !rules.is_empty() => {
                let mut rules: Vec<Vec<Header>> = rules.iter().map(http_headers).collect();
                rules.sort_by(|a, b| cmp_lists(a, b, Header::cmp));
                rule.l7 = Some(RuleL7::Http(rules));
            }
            Some(Redirect::L7(L7::Kafka(rules))) if !rules.is_empty() => {
                rule.l7 = Some(RuleL7::Kafka(rules.iter().map(kafka_rule).collect()));
            }
            Some(Redirect::L7(L7::Generic(parser, rules))) if !rules.is_empty() => {
                rule.l7 = Some(RuleL7::Generic(
                    parser.clone(),
                    generic_rules(parser, rules),
                ));
            }
            // DNS is the DNS proxy's; empty rule lists mean "any request".
            Some(Redirect::L7(_)) => {}
            Some(Redirect::Tls) => rule.tls = true,
            Some(Redirect::Listener { name, .. }) => rule.proxy_id = self.listener_port(name),
        }
        Some((rule, true))
    }
}

/// A selector's identities, sorted and deduplicated (`None` for the wildcard).
fn sorted_ids(sel: &PeerPolicy) -> Option<Vec<u32>> {
    sel.identities.as_ref().map(|ids| {
        let mut v: Vec<u32> = ids.to_vec();
        v.sort_unstable();
        v.dedup();
        v
    })
}

/// The rules of the wildcard port (`getWildcardNetworkPolicyRules`): selections merged into
/// one deny and one allow rule.
fn wildcard_rules(sels: &[PeerPolicy]) -> Vec<Rule> {
    if let [sel] = sels {
        return match sorted_ids(sel) {
            None => vec![Rule {
                deny: sel.deny,
                ..Rule::default()
            }],
            Some(ids) if ids.is_empty() => Vec::new(),
            Some(ids) => vec![Rule {
                deny: sel.deny,
                remote: ids,
                ..Rule::default()
            }],
        };
    }
    let (mut allows, mut denies) = (Vec::new(), Vec::new());
    let mut wildcard_allow = false;
    for sel in sels {
        match (sorted_ids(sel), sel.deny) {
            (None, true) => {
                return vec![Rule {
                    deny: true,
                    ..Rule::default()
                }];
            }
            (None, false) => wildcard_allow = true,
            (Some(ids), true) => denies.extend(ids),
            (Some(ids), false) => allows.extend(ids),
        }
    }
    let mut out = Vec::new();
    if !denies.is_empty() {
        denies.sort_unstable();
        denies.dedup();
        out.push(Rule {
            deny: true,
            remote: denies,
            ..Rule::default()
        });
    }
    if wildcard_allow {
        out.push(Rule::default());
    } else if !allows.is_empty() {
        allows.sort_unstable();
        allows.dedup();
        out.push(Rule {
            remote: allows,
            ..Rule::default()
        });
    }
    out
}

/// The selector the agent adds for the host under allow-localhost: identity 1, no L7.
fn host_selector() -> PeerPolicy {
    PeerPolicy {
        identities: Some(Arc::new(vec![HOST])),
        deny: false,
        redirect: None,
        origin: Origin {
            what: "agent default: allow-localhost (host wildcard L7)".into(),
            loc: None,
        },
    }
}

/// One `PortNetworkPolicy`.
struct PortPolicy {
    port: u16,
    end_port: u16,
    rules: Vec<Rule>,
}

impl PortPolicy {
    fn json(&self) -> Value {
        let mut obj = serde_json::Map::new();
        obj.insert("port".into(), json!(self.port));
        if self.end_port != 0 {
            obj.insert("endPort".into(), json!(self.end_port));
        }
        obj.insert("protocol".into(), json!("TCP"));
        if !self.rules.is_empty() {
            obj.insert(
                "rules".into(),
                Value::Array(self.rules.iter().map(Rule::json).collect()),
            );
        }
        Value::Object(obj)
    }
}

/// The per-port policies of one direction.
fn direction_policies(
    cx: &Cx<'_>,
    dir: Direction,
    enforced: bool,
    filters: &[Filter],
) -> Vec<Value> {
    // A direction without default deny (`enableDefaultDeny: false`) still proxies its L7
    // ports and refuses the requests no L7 rule allows (policy-language §4.1): its redirected
    // ports keep their rules, with no allow-all twin (Cilium #38841 adds one from 1.16.10 /
    // 1.17.4; polc follows the specification, as `eval` does).
    let redirected = filters
        .iter()
        .any(|f| f.direction == dir && f.selectors.iter().any(|s| !s.deny && s.redirect.is_some()));
    if !enforced && !redirected {
        return vec![json!({"port": 0, "protocol": "TCP"})];
    }
    let mut groups: BTreeMap<(u16, u16), Vec<PeerPolicy>> = BTreeMap::new();
    for f in filters
        .iter()
        .filter(|f| f.direction == dir && matches!(f.proto, None | Some(Proto::Tcp)))
    {
        groups
            .entry((f.port, f.end_port))
            .or_default()
            .extend(f.selectors.iter().cloned());
    }
    if dir == Direction::Ingress && cx.model.config.allow_localhost {
        for sels in groups.values_mut() {
            let host_redirected = sels.iter().any(|s| {
                !s.deny
                    && s.redirect.is_some()
                    && s.identities.as_ref().is_none_or(|ids| ids.contains(&HOST))
            });
            if host_redirected {
                sels.push(host_selector());
            }
        }
    }
    let single_is_wildcard = cx.model.config.version < CiliumVersion::V1_19;
    let mut ports: Vec<PortPolicy> = Vec::new();
    let (mut wildcard_allow_all, mut wildcard_deny_all) = (false, false);
    if let Some(sels) = groups.get(&(0, 0)) {
        let rules = wildcard_rules(sels);
        for r in rules.iter().filter(|r| r.remote.is_empty()) {
            if r.deny {
                wildcard_deny_all = true;
            } else {
                wildcard_allow_all = true;
            }
        }
        if !rules.is_empty() {
            ports.push(PortPolicy {
                port: 0,
                end_port: 0,
                rules,
            });
        }
    }
    if !wildcard_deny_all {
        for (&(port, end_port), sels) in &groups {
            // The wildcard port is done; a range starting at port 0 is skipped, as the agent
            // skips every port-0 filter other than the exact wildcard.
            if port == 0 {
                continue;
            }
            let mut rules = Vec::new();
            let mut can_short_circuit = true;
            let mut deny_all = false;
            let mut allow_all = false;
            for sel in sels {
                let wildcard = sel.identities.is_none() || (single_is_wildcard && sels.len() == 1);
                let Some((rule, cs)) = cx.port_rule(sel, wildcard) else {
                    continue;
                };
                can_short_circuit &= cs;
                if rule.deny && rule.remote.is_empty() {
                    rules = vec![rule];
                    deny_all = true;
                    break;
                }
                allow_all |= rule.is_allow_all();
                rules.push(rule);
            }
            if rules.is_empty() {
                continue;
            }
            if !deny_all && can_short_circuit {
                if wildcard_allow_all {
                    continue;
                }
                if allow_all {
                    rules.clear();
                }
            }
            ports.push(PortPolicy {
                port,
                end_port,
                rules,
            });
        }
    }
    for p in &mut ports {
        p.rules.sort_by(Rule::cmp);
        p.rules.dedup();
    }
    ports.sort_by_key(|p| (p.port, p.end_port));
    ports.iter().map(PortPolicy::json).collect()
}

/// The endpoint's addresses, IPv6 first (one per family, as the agent sends them).
fn endpoint_ips(model: &Model, ep: EndpointRef) -> Vec<String> {
    let ips: &[IpAddr] = model.pod(ep).map_or(&[], |p| p.ips.as_slice());
    let v6 = ips.iter().find(|i| i.is_ipv6());
    let v4 = ips.iter().find(|i| i.is_ipv4());
    v6.into_iter().chain(v4).map(ToString::to_string).collect()
}

/// The NPDS `NetworkPolicy` of one endpoint, as protobuf JSON (see the module documentation
/// for the rules). `endpoint_id` is the agent's endpoint ID (also the resource name). A host
/// endpoint gets an empty `endpointIps`: the agent sends no NPDS resource for it.
pub fn network_policy(
    model: &Model,
    ep: EndpointRef,
    endpoint_id: u16,
    policy: &EndpointPolicy,
) -> Value {
    let cx = Cx { model, policy };
    let (ingress_on, egress_on) = policy.enforced;
    json!({
        "endpointIps": endpoint_ips(model, ep),
        "endpointId": endpoint_id.to_string(),
        "ingressPerPortPolicies": direction_policies(&cx, Direction::Ingress, ingress_on, &policy.filters),
        "egressPerPortPolicies": direction_policies(&cx, Direction::Egress, egress_on, &policy.filters),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(ids: Option<&[u32]>, deny: bool, redirect: Option<Redirect>) -> PeerPolicy {
        PeerPolicy {
            identities: ids.map(|i| Arc::new(i.to_vec())),
            deny,
            redirect,
            origin: Origin {
                what: "test".into(),
                loc: None,
            },
        }
    }

    fn http(method: &str, path: &str) -> HttpRule {
        HttpRule {
            method: Some(method.into()),
            path: Some(path.into()),
            ..HttpRule::default()
        }
    }

    #[test]
    fn header_matchers_are_sorted_and_typed() {
        let rule = HttpRule {
            method: Some("GET".into()),
            path: Some("/api".into()),
            host: Some("example\\.com".into()),
            headers: vec![
                ("X-Token".into(), Some("abc".into())),
                ("X-Debug".into(), None),
            ],
            ..HttpRule::default()
        };
        let got: Vec<Value> = http_headers(&rule).iter().map(Header::json).collect();
        assert_eq!(
            Value::Array(got),
            json!([
                {"name": ":authority", "stringMatch": {"safeRegex": {"regex": "example\\.com"}}},
                {"name": ":method", "stringMatch": {"safeRegex": {"regex": "GET"}}},
                {"name": ":path", "stringMatch": {"safeRegex": {"regex": "/api"}}},
                {"name": "X-Debug", "presentMatch": true},
                {"name": "X-Token", "stringMatch": {"exact": "abc"}},
            ])
        );
    }

    #[test]
    fn wildcard_port_merges_selections() {
        let rules = wildcard_rules(&[
            sel(Some(&[10, 2]), true, None),
            sel(Some(&[9]), true, None),
            sel(Some(&[300]), false, None),
            sel(Some(&[]), false, None),
        ]);
        let got: Vec<Value> = rules.iter().map(Rule::json).collect();
        assert_eq!(
            Value::Array(got),
            json!([{"remotePolicies": [2, 9, 10], "deny": true}, {"remotePolicies": [300]}])
        );
        let rules = wildcard_rules(&[sel(Some(&[2]), true, None), sel(None, true, None)]);
        assert_eq!(
            rules,
            vec![Rule {
                deny: true,
                ..Rule::default()
            }]
        );
        let rules = wildcard_rules(&[sel(Some(&[2]), true, None), sel(None, false, None)]);
        assert_eq!(rules.len(), 2);
        assert!(rules[1].is_allow_all());
        assert!(wildcard_rules(&[sel(Some(&[]), false, None)]).is_empty());
    }

    #[test]
    fn rule_order_puts_l7_less_rules_first() {
        let a = Rule {
            remote: vec![5, 6],
            ..Rule::default()
        };
        let b = Rule {
            remote: vec![7],
            l7: Some(RuleL7::Http(vec![http_headers(&http("GET", "/"))])),
            ..Rule::default()
        };
        let c = Rule {
            remote: vec![4],
            ..Rule::default()
        };
        let mut rules = vec![b.clone(), a.clone(), c.clone()];
        rules.sort_by(Rule::cmp);
        assert_eq!(rules, vec![c, a, b]);
    }

    #[test]
    fn kafka_rules() {
        let produce = KafkaRule {
            role: Some("produce".into()),
            topic: Some("orders".into()),
            ..KafkaRule::default()
        };
        assert_eq!(
            kafka_rule(&produce),
            json!({"apiVersion": -1, "apiKeys": [0, 3, 18], "topic": "orders"})
        );
        let fetch = KafkaRule {
            api_key: Some("Fetch".into()),
            api_version: Some("0".into()),
            client_id: Some("c1".into()),
            ..KafkaRule::default()
        };
        assert_eq!(
            kafka_rule(&fetch),
            json!({"apiKeys": [1], "clientId": "c1"})
        );
    }

    #[test]
    fn generic_rules_by_parser() {
        let rules = vec![vec![
            ("cmd".to_string(), "READ".to_string()),
            ("file".into(), "a.txt".into()),
        ]];
        assert_eq!(
            generic_rules("r2d2", &rules),
            json!({"l7AllowRules": [{"rule": {"cmd": "READ", "file": "a.txt"}}]})
        );
        let rules = vec![vec![
            ("action".to_string(), "deny".to_string()),
            ("op".into(), "x".into()),
        ]];
        assert_eq!(
            generic_rules("envoy.filters.network.test", &rules),
            json!({"l7DenyRules": [{"metadataRule": [{
                "filter": "envoy.filters.network.test",
                "path": [{"key": "op"}],
                "value": {"listMatch": {"oneOf": {"stringMatch": {"exact": "x"}}}},
            }]}]})
        );
    }
}
