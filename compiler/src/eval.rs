//! The reference evaluator: the verdict of one concrete flow, and the rules that decided it.
//!
//! Written for clarity, from the spec's semantics (policy-language §4, datapath §2.6), with
//! no knowledge of map state: it looks at addresses and labels, not at identities and keys.
//! The map state, the verifier and the kernel datapath are checked against it.
//!
//! A flow is judged at each end that enforces policy: the source's egress, then the
//! destination's ingress. At one end:
//! 1. a matching deny item denies (deny beats allow, whatever the specificity);
//! 2. on ingress, the local host reaches a pod (`allow-localhost`);
//! 3. the matching allow items allow; if some of them proxy the port, a given L7 request
//!    must be allowed by one of them (an item without L7 rules allows every request);
//! 4. with no matching allow item, a default-deny direction denies and an open one allows.

use crate::identity::{self, ipcache_lookup};
use crate::inventory::Node;
use crate::ir::{
    Direction, DnsRule, HttpRule, Item, KafkaRule, L7, PeerKind, Peers, PortSpec, Ports, Proto,
    Redirect, Rule, Selector,
};
use crate::labels::LabelSet;
use crate::model::{EndpointRef, Model};
use crate::source::Loc;
use std::net::IpAddr;

/// One end of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// An inventory pod (index).
    Pod(usize),
    /// A node's host (node index).
    Host(usize),
    /// An address outside the cluster.
    External(IpAddr),
}

/// An L7 request carried by a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// An HTTP request.
    Http {
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// Host (`:authority`).
        host: String,
        /// Headers (name, value).
        headers: Vec<(String, String)>,
    },
    /// A DNS query.
    Dns {
        /// The name asked for.
        query: String,
    },
    /// A Kafka request.
    Kafka {
        /// API key name (`produce`, `fetch`, ...).
        api_key: String,
        /// API version.
        api_version: Option<i64>,
        /// Client ID.
        client_id: String,
        /// Topic.
        topic: String,
    },
}

/// A concrete flow.
#[derive(Clone, Debug)]
pub struct Flow {
    /// Where it comes from.
    pub src: Peer,
    /// Where it goes.
    pub dst: Peer,
    /// The protocol.
    pub proto: Proto,
    /// The destination port, or the ICMP type.
    pub port: u16,
    /// An L7 request, if any.
    pub request: Option<Request>,
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The flow goes through.
    Allow,
    /// The flow is dropped (or the proxy refuses the request).
    Deny,
}

impl Verdict {
    /// `allow` / `deny`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

/// Why one end decided as it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// The endpoint does not enforce policy in this direction.
    NotEnforced,
    /// A deny item matched.
    DenyRule,
    /// An allow item matched.
    AllowRule,
    /// The L7 rules of a matching item allow the request.
    L7Allowed,
    /// The port is proxied and no matching item allows the request.
    L7Denied,
    /// Nothing allows the flow in a default-deny direction.
    DefaultDeny,
    /// The local host reaches its pods (`allow-localhost`).
    AllowLocalhost,
}

/// A rule item that took part in a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    /// `CiliumNetworkPolicy shop/backend`.
    pub policy: String,
    /// The item's YAML path (`spec.ingress[0]`), or the rule's for default-deny.
    pub path: String,
    /// Where it is.
    pub loc: Loc,
}

/// The decision at one end.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The enforcing endpoint.
    pub endpoint: EndpointRef,
    /// Its direction.
    pub direction: Direction,
    /// Allow or deny.
    pub verdict: Verdict,
    /// Why.
    pub why: Why,
    /// The items (or, for default-deny, the rules) that decided.
    pub rules: Vec<RuleRef>,
    /// Whether the port is redirected to an L7 proxy (with its parser).
    pub proxy: Option<String>,
    /// The identity of the remote end as this endpoint sees it.
    pub remote_identity: u32,
    /// A note for humans.
    pub note: String,
}

/// The verdict of a flow.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Allow only if every enforcing end allows.
    pub verdict: Verdict,
    /// Each end's decision, source egress first.
    pub decisions: Vec<Decision>,
}

/// What one end knows about the other.
struct Remote<'a> {
    labels: LabelSet,
    identity: u32,
    /// The address, when the remote is outside the cluster (CIDR rules match only these).
    external: Option<IpAddr>,
    /// The remote node, when the remote is a node's host.
    node: Option<&'a Node>,
    /// Whether the remote is the local host of the enforcing endpoint.
    local_host: bool,
}

/// Decides a flow.
pub fn decide(model: &Model, flow: &Flow) -> Outcome {
    let mut decisions = Vec::new();
    if let Some(src) = as_endpoint(flow.src) {
        decisions.push(decide_at(model, src, Direction::Egress, flow.dst, flow));
    }
    if let Some(dst) = as_endpoint(flow.dst) {
        decisions.push(decide_at(model, dst, Direction::Ingress, flow.src, flow));
    }
    let verdict = if decisions.iter().all(|d| d.verdict == Verdict::Allow) {
        Verdict::Allow
    } else {
        Verdict::Deny
    };
    Outcome { verdict, decisions }
}

fn as_endpoint(p: Peer) -> Option<EndpointRef> {
    match p {
        Peer::Pod(i) => Some(EndpointRef::Pod(i)),
        Peer::Host(n) => Some(EndpointRef::Host(n)),
        Peer::External(_) => None,
    }
}

/// How the endpoint `ep` sees the other end of the flow.
fn remote_view<'a>(model: &'a Model, ep: EndpointRef, other: Peer) -> Remote<'a> {
    let local = model.node_of(ep);
    match other {
        Peer::Pod(i) => Remote {
            labels: model.pod_labels.get(i).cloned().unwrap_or_default(),
            identity: model
                .identities
                .pod_identity
                .get(i)
                .copied()
                .flatten()
                .unwrap_or(0),
            external: None,
            node: None,
            local_host: false,
        },
        Peer::Host(n) => {
            let node = model.inventory.nodes.get(n);
            let is_local = node.is_some() && local.map(|l| &l.name) == node.map(|n| &n.name);
            let identity = match node {
                Some(_) if is_local => identity::HOST,
                Some(nd) => model.identities.remote_node_identity(nd),
                None => identity::REMOTE_NODE,
            };
            Remote {
                labels: model.identities.labels_on(identity, local),
                identity,
                external: None,
                node,
                local_host: is_local,
            }
        }
        Peer::External(ip) => {
            // Only the prefixes policies name and the world routes matter for an outside
            // address; the label set is that of the most specific one containing it.
            let cidrs: Vec<crate::identity::IpcacheEntry> = model
                .identities
                .cidrs
                .iter()
                .map(|(net, id)| crate::identity::IpcacheEntry {
                    prefix: *net,
                    identity: *id,
                    tunnel_endpoint: None,
                })
                .collect();
            // An address learnt from a DNS answer has its own identity (a /32 or /128).
            let identity = model
                .identities
                .fqdns
                .get(&ip)
                .copied()
                .or_else(|| ipcache_lookup(&cidrs, &ip))
                .unwrap_or_else(|| model.identities.world_of(&ip));
            Remote {
                labels: model.identities.labels_on(identity, local),
                identity,
                external: Some(ip),
                node: None,
                local_host: false,
            }
        }
    }
}

fn decide_at(model: &Model, ep: EndpointRef, dir: Direction, other: Peer, flow: &Flow) -> Decision {
    let rules = model.rules_for(ep);
    let remote = remote_view(model, ep, other);
    let (enforced, by) = model.enforced(&rules, dir);
    let mut d = Decision {
        endpoint: ep,
        direction: dir,
        verdict: Verdict::Allow,
        why: Why::NotEnforced,
        rules: Vec::new(),
        proxy: None,
        remote_identity: remote.identity,
        note: String::new(),
    };
    if model.config.enforcement == crate::model::Enforcement::Never {
        d.note = "policy enforcement is off (enable-policy=never)".into();
        return d;
    }
    let requires: Vec<&Selector> = rules
        .iter()
        .flat_map(|r| r.requires.get(dir).iter())
        .collect();
    let items: Vec<(&Rule, &Item)> = rules
        .iter()
        .flat_map(|r| r.items.iter().map(move |i| (*r, i)))
        .filter(|(_, i)| i.direction == dir)
        .filter(|(_, i)| item_matches(model, ep, i, &requires, &remote, flow))
        .collect();

    let denies: Vec<RuleRef> = items
        .iter()
        .filter(|(_, i)| i.deny)
        .map(|(r, i)| rule_ref(r, i))
        .collect();
    if !denies.is_empty() {
        d.verdict = Verdict::Deny;
        d.why = Why::DenyRule;
        d.rules = denies;
        d.note = "a deny rule matches; deny takes precedence over every allow".into();
        return d;
    }

    if dir == Direction::Ingress
        && remote.local_host
        && model.config.allow_localhost
        && matches!(ep, EndpointRef::Pod(_))
    {
        d.why = Why::AllowLocalhost;
        d.note = "the local host reaches its pods (allow-localhost); L7 rules let its \
                  requests through"
            .into();
        return d;
    }

    let allows: Vec<&(&Rule, &Item)> = items.iter().filter(|(_, i)| !i.deny).collect();
    if allows.is_empty() {
        if enforced {
            d.verdict = Verdict::Deny;
            d.why = Why::DefaultDeny;
            d.rules = by
                .iter()
                .map(|r| RuleRef {
                    policy: r.origin.describe(),
                    path: r.origin.path.clone(),
                    loc: r.origin.loc,
                })
                .collect();
            d.note = format!(
                "no rule allows this flow and the endpoint's {} is default-deny",
                dir.name()
            );
        } else {
            d.note = format!(
                "no rule puts the endpoint's {} into default-deny",
                dir.name()
            );
        }
        return d;
    }

    // The redirects on this port, by the items that matched.
    let proxied: Vec<(&Rule, &Item, &Redirect)> = allows
        .iter()
        .filter_map(|(r, i)| port_redirect(model, ep, i, flow).map(|x| (*r, *i, x)))
        .collect();
    d.rules = allows.iter().map(|(r, i)| rule_ref(r, i)).collect();
    d.why = Why::AllowRule;
    if proxied.is_empty() {
        return d;
    }
    d.proxy = Some(
        proxied
            .iter()
            .map(|(_, _, x)| x.l7().map_or("envoy", L7::parser))
            .next()
            .unwrap_or("envoy")
            .to_string(),
    );
    let Some(req) = &flow.request else {
        d.note = "the port is redirected to the L7 proxy; no request was given, so only L4 \
                  is judged"
            .into();
        return d;
    };
    // Items that match at L4 but have no redirect on this port allow every request.
    let open: Vec<RuleRef> = allows
        .iter()
        .filter(|(_, i)| port_redirect(model, ep, i, flow).is_none())
        .map(|(r, i)| rule_ref(r, i))
        .collect();
    if !open.is_empty() {
        d.rules = open;
        d.why = Why::L7Allowed;
        d.note = "an item without L7 rules allows this peer and port, so every request is \
                  allowed"
            .into();
        return d;
    }
    let granted: Vec<RuleRef> = proxied
        .iter()
        .filter(|(_, _, x)| redirect_allows(x, req))
        .map(|(r, i, _)| rule_ref(r, i))
        .collect();
    if granted.is_empty() {
        d.verdict = Verdict::Deny;
        d.why = Why::L7Denied;
        d.rules = proxied.iter().map(|(r, i, _)| rule_ref(r, i)).collect();
        d.note =
            "the L7 proxy rejects the request: no L7 rule of the matching items allows it".into();
    } else {
        d.rules = granted;
        d.why = Why::L7Allowed;
        d.note = "an L7 rule allows the request".into();
    }
    d
}

fn rule_ref(r: &Rule, i: &Item) -> RuleRef {
    RuleRef {
        policy: r.origin.describe(),
        path: i.path.clone(),
        loc: i.loc,
    }
}

/// Whether an item matches the flow at L3 and L4.
fn item_matches(
    model: &Model,
    ep: EndpointRef,
    item: &Item,
    requires: &[&Selector],
    remote: &Remote<'_>,
    flow: &Flow,
) -> bool {
    if item.selects_nothing() {
        return false;
    }
    // `fromRequires`/`toRequires` narrow the endpoint selectors of every rule selecting the
    // endpoint (`GetSourceEndpointSelectorsWithRequirements`); entities, CIDRs and the
    // wildcard of an L4-only item are left as they are.
    let required = || requires.iter().all(|s| s.matches(&remote.labels));
    let l3 = match &item.peers {
        Peers::Any => true,
        Peers::List(peers) => peers.iter().any(|p| {
            peer_matches(model, ep, &p.kind, remote)
                && (!matches!(p.kind, PeerKind::Endpoints(_)) || required())
        }),
    };
    l3 && ports_match(model, ep, item, flow)
}

fn peer_matches(model: &Model, ep: EndpointRef, peer: &PeerKind, remote: &Remote<'_>) -> bool {
    match peer {
        PeerKind::Endpoints(sel) => sel.matches(&remote.labels),
        PeerKind::Entity(e) => e.selects(&remote.labels, &model.config.cluster_name),
        PeerKind::Nodes(sel) => remote.node.is_some_and(|n| {
            sel.matches(&n.labels)
                && (remote.local_host || model.node_of(ep).is_none_or(|l| l.name != n.name))
        }),
        PeerKind::Cidr(c) => remote.external.is_some_and(|ip| c.contains_addr(&ip)),
        PeerKind::Fqdn(selector) => remote.external.is_some_and(|ip| {
            model
                .dns_answers
                .iter()
                .any(|(name, at)| *at == ip && fqdn_selects(selector, name))
        }),
        PeerKind::Service(_) | PeerKind::Unresolved(_) => false,
    }
}

/// Whether a `toFQDNs` selector (as lowered: `matchName: NAME` or `matchPattern: PATTERN`)
/// selects the name `name`.
pub fn fqdn_selects(selector: &str, name: &str) -> bool {
    let name = fqdn(name);
    if let Some(n) = selector.strip_prefix("matchName: ") {
        fqdn(n) == name
    } else if let Some(p) = selector.strip_prefix("matchPattern: ") {
        pattern_matches(p, &name)
    } else {
        false
    }
}

fn ports_match(model: &Model, ep: EndpointRef, item: &Item, flow: &Flow) -> bool {
    match &item.ports {
        Ports::Any => true,
        Ports::List(ports) => ports.iter().any(|p| {
            p.proto == flow.proto && port_matches(model, ep, item.direction, &p.port, flow)
        }),
    }
}

fn port_matches(
    model: &Model,
    ep: EndpointRef,
    dir: Direction,
    spec: &PortSpec,
    flow: &Flow,
) -> bool {
    match spec {
        PortSpec::Range(..) => spec.contains(flow.port),
        // Ingress names resolve on the receiving pod; egress names on every pod of the
        // cluster (the agent's named-port map is cluster-wide).
        PortSpec::Named(name) => match dir {
            Direction::Ingress => model.pod(ep).is_some_and(|p| {
                p.named_ports
                    .iter()
                    .any(|n| n.name == *name && n.proto == flow.proto && n.port == flow.port)
            }),
            Direction::Egress => model
                .inventory
                .named_ports_anywhere(name)
                .contains(&(flow.proto, flow.port)),
        },
    }
}

/// The redirect of the item's port entry that matches the flow, if any.
fn port_redirect<'a>(
    model: &Model,
    ep: EndpointRef,
    item: &'a Item,
    flow: &Flow,
) -> Option<&'a Redirect> {
    let Ports::List(ports) = &item.ports else {
        return None;
    };
    ports
        .iter()
        .filter(|p| p.proto == flow.proto && port_matches(model, ep, item.direction, &p.port, flow))
        .find_map(|p| p.redirect.as_ref())
}

/// Whether a redirect lets a request through.
fn redirect_allows(redirect: &Redirect, req: &Request) -> bool {
    match redirect {
        // TLS interception and listeners have no request rules polc can judge.
        Redirect::Tls | Redirect::Listener { .. } => true,
        Redirect::L7(l7) => l7_allows(l7, req),
    }
}

/// Whether L7 rules allow a request. An empty rule list allows every request of the
/// parser's protocol.
pub fn l7_allows(l7: &L7, req: &Request) -> bool {
    match (l7, req) {
        (L7::Http(rules), Request::Http { .. }) => {
            rules.is_empty() || rules.iter().any(|r| http_allows(r, req))
        }
        (L7::Dns(rules), Request::Dns { query }) => {
            rules.is_empty() || rules.iter().any(|r| dns_allows(r, query))
        }
        (L7::Kafka(rules), Request::Kafka { .. }) => {
            rules.is_empty() || rules.iter().any(|r| kafka_allows(r, req))
        }
        (L7::Generic(_, rules), _) => rules.is_empty(),
        _ => false,
    }
}

/// Whether `re` (RE2 syntax) matches the whole of `text`, as Envoy's safe-regex matcher does.
pub fn full_match(re: &str, text: &str) -> bool {
    regex::Regex::new(&format!("^(?:{re})$")).is_ok_and(|r| r.is_match(text))
}

fn http_allows(rule: &HttpRule, req: &Request) -> bool {
    let Request::Http {
        method,
        path,
        host,
        headers,
    } = req
    else {
        return false;
    };
    let field = |re: &Option<String>, v: &str| re.as_ref().is_none_or(|re| full_match(re, v));
    field(&rule.method, method)
        && field(&rule.path, path)
        && field(&rule.host, host)
        && rule.headers.iter().all(|(name, want)| {
            header_value(headers, name).is_some_and(|v| want.as_ref().is_none_or(|w| *w == v))
        })
}

/// The value a header matcher sees for header `name` (any case): the header's values joined
/// with commas when it is sent more than once, as Envoy does; `None` when it is absent.
pub fn header_value(headers: &[(String, String)], name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// A DNS name in the form the proxy compares: lower case with a trailing dot.
pub fn fqdn(name: &str) -> String {
    let s = name.trim().to_ascii_lowercase();
    if s.ends_with('.') { s } else { format!("{s}.") }
}

fn dns_allows(rule: &DnsRule, query: &str) -> bool {
    let q = fqdn(query);
    match rule {
        DnsRule::Name(n, _) => *n == q,
        DnsRule::Pattern(p, _) => pattern_matches(p, &q),
    }
}

/// `matchPattern` semantics (`pkg/fqdn/matchpattern`): `*` alone matches every name; a
/// leading `**.` matches one or more labels; any other `*` matches zero or more DNS
/// characters within one label.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let p = fqdn(pattern);
    if p.trim_end_matches('.').chars().all(|c| c == '*') {
        return true;
    }
    let mut re = String::from("^");
    let mut rest = p.as_str();
    if let Some(stripped) = rest.strip_prefix("**.") {
        re.push_str(r"(?:[-a-z0-9_]+\.)+");
        rest = stripped;
    }
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '*' {
            while chars.peek() == Some(&'*') {
                chars.next();
            }
            re.push_str("[-a-z0-9_]*");
        } else {
            re.push_str(&regex::escape(&c.to_string()));
        }
    }
    re.push('$');
    regex::Regex::new(&re).is_ok_and(|r| r.is_match(name))
}

/// The Kafka API keys a role stands for (`pkg/policy/api/kafka`).
fn role_keys(role: &str) -> &'static [&'static str] {
    match role {
        "produce" => &["produce", "metadata", "apiversions"],
        "consume" => &[
            "fetch",
            "offsets",
            "metadata",
            "offsetcommit",
            "offsetfetch",
            "findcoordinator",
            "joingroup",
            "heartbeat",
            "leavegroup",
            "syncgroup",
            "apiversions",
        ],
        _ => &[],
    }
}

fn kafka_allows(rule: &KafkaRule, req: &Request) -> bool {
    let Request::Kafka {
        api_key,
        api_version,
        client_id,
        topic,
    } = req
    else {
        return false;
    };
    let key = api_key.to_ascii_lowercase();
    let key_ok = match (&rule.role, &rule.api_key) {
        (Some(role), _) => role_keys(&role.to_ascii_lowercase()).contains(&key.as_str()),
        (None, Some(k)) => k.eq_ignore_ascii_case(&key),
        (None, None) => true,
    };
    let version_ok = rule
        .api_version
        .as_ref()
        .is_none_or(|v| v.parse::<i64>().ok() == *api_version);
    let client_ok = rule.client_id.as_ref().is_none_or(|c| c == client_id);
    let topic_ok = rule.topic.as_ref().is_none_or(|t| t == topic);
    key_ok && version_ok && client_ok && topic_ok
}

/// Where an address is: a pod's, a node's, or outside the cluster. Host-network pods have
/// their node's address.
pub fn locate(model: &Model, ip: IpAddr) -> Peer {
    for (i, p) in model.inventory.pods.iter().enumerate() {
        if !p.host_network && p.ips.contains(&ip) {
            return Peer::Pod(i);
        }
    }
    for (i, n) in model.inventory.nodes.iter().enumerate() {
        if n.ips.contains(&ip) {
            return Peer::Host(i);
        }
    }
    Peer::External(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_patterns() {
        assert!(pattern_matches("*", "anything.example.com."));
        assert!(pattern_matches("*.example.com", "api.example.com."));
        assert!(!pattern_matches("*.example.com", "example.com."));
        assert!(!pattern_matches("*.example.com", "a.b.example.com."));
        assert!(pattern_matches("**.example.com", "a.b.example.com."));
        assert!(!pattern_matches("**.example.com", "example.com."));
        assert!(pattern_matches("*example.com", "example.com."));
        assert!(pattern_matches("*example.com", "subexample.com."));
        assert!(pattern_matches("API.example.com", "api.example.com."));
    }

    #[test]
    fn fqdn_selectors() {
        assert!(fqdn_selects("matchName: API.stripe.com", "api.stripe.com."));
        assert!(fqdn_selects("matchName: api.stripe.com", "api.stripe.com"));
        assert!(!fqdn_selects(
            "matchName: api.stripe.com",
            "x.api.stripe.com."
        ));
        assert!(fqdn_selects(
            "matchPattern: *.s3.amazonaws.com",
            "b.s3.amazonaws.com."
        ));
        assert!(!fqdn_selects(
            "matchPattern: *.s3.amazonaws.com",
            "s3.amazonaws.com."
        ));
        assert!(!fqdn_selects("something else", "api.stripe.com."));
    }

    #[test]
    fn http_regexes_are_anchored() {
        assert!(full_match("/api", "/api"));
        assert!(!full_match("/api", "/api/x"));
        assert!(full_match("/api/.*", "/api/x"));
        assert!(full_match("GET|HEAD", "HEAD"));
        assert!(!full_match("GET", "get"));
    }
}
