//! The intermediate representation: what a set of policies says, normalised.
//!
//! Every CNP, CCNP and Kubernetes NetworkPolicy becomes one or more [`Rule`]s with a
//! [`Subject`] and a list of [`Item`]s; selectors are namespace-scoped and `k8s:`-prefixed
//! exactly as the agent does it (spec §1.4, §5), entities and CIDR groups are resolved, and
//! every node keeps the [`Loc`] of the YAML it came from. Nothing here depends on a cluster:
//! the inventory, identities and map state come later (`inventory`, `identity`, `mapstate`).

use crate::labels::{LabelSet, SOURCE_ANY, SOURCE_K8S, SOURCE_RESERVED, split_selector_key};
use crate::raw::Kind;
use crate::source::Loc;
use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;

/// Traffic direction, seen from the endpoint a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Traffic into the endpoint.
    Ingress,
    /// Traffic out of the endpoint.
    Egress,
}

impl Direction {
    /// Both directions.
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// `ingress` or `egress`.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// A pair of values, one per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PerDir<T> {
    /// The ingress value.
    pub ingress: T,
    /// The egress value.
    pub egress: T,
}

impl<T> PerDir<T> {
    /// The value for `dir`.
    pub fn get(&self, dir: Direction) -> &T {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// The value for `dir`, mutably.
    pub fn get_mut(&mut self, dir: Direction) -> &mut T {
        match dir {
            Direction::Ingress => &mut self.ingress,
            Direction::Egress => &mut self.egress,
        }
    }
}

/// A selector requirement operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// The key has one of the values.
    In,
    /// The key is absent or has none of the values.
    NotIn,
    /// The key is present.
    Exists,
    /// The key is absent.
    DoesNotExist,
}

/// One requirement: `key op values`. The key carries its source (`k8s:app`, `any:app`,
/// `reserved:host`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    /// `source:key`.
    pub key: String,
    /// The operator.
    pub op: Op,
    /// The values (sorted) for `In` / `NotIn`.
    pub values: Vec<String>,
}

impl Requirement {
    /// `key In (value)`.
    pub fn equals(key: impl Into<String>, value: impl Into<String>) -> Self {
        Requirement {
            key: key.into(),
            op: Op::In,
            values: vec![value.into()],
        }
    }

    /// Whether a label set satisfies the requirement.
    pub fn matches(&self, labels: &LabelSet) -> bool {
        let value = labels.lookup(&self.key);
        match self.op {
            Op::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Op::NotIn => value.is_none_or(|v| self.values.iter().all(|x| x != v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
        }
    }

    /// The bare key (without source).
    pub fn bare_key(&self) -> &str {
        split_selector_key(&self.key).1
    }

    /// The source the key names (`any` when unprefixed).
    pub fn source(&self) -> &str {
        split_selector_key(&self.key).0
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            Op::In if self.values.len() == 1 => write!(f, "{}={}", self.key, self.values[0]),
            Op::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Op::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
            Op::Exists => write!(f, "{}", self.key),
            Op::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

/// A label selector over identity labels: requirements ANDed. No requirements = every
/// identity (Cilium's wildcard selector).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    /// The requirements, sorted.
    pub reqs: Vec<Requirement>,
}

impl Selector {
    /// The wildcard selector.
    pub fn wildcard() -> Self {
        Selector::default()
    }

    /// A selector with these requirements (sorted and deduplicated).
    pub fn new(mut reqs: Vec<Requirement>) -> Self {
        reqs.sort();
        reqs.dedup();
        Selector { reqs }
    }

    /// Whether this selects every identity.
    pub fn is_wildcard(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether a label set satisfies every requirement.
    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }

    /// Whether some requirement names `bare_key` from source `k8s` or `any`.
    pub fn constrains(&self, bare_key: &str) -> bool {
        self.reqs
            .iter()
            .any(|r| r.bare_key() == bare_key && matches!(r.source(), SOURCE_K8S | SOURCE_ANY))
    }

    /// Whether some requirement names a reserved label.
    pub fn has_reserved(&self) -> bool {
        self.reqs.iter().any(|r| r.source() == SOURCE_RESERVED)
    }

    /// The single value an `In` requirement on `bare_key` pins, if any (used to index
    /// selectors by namespace).
    pub fn pinned(&self, bare_key: &str) -> Option<&str> {
        self.reqs.iter().find_map(|r| {
            (r.bare_key() == bare_key
                && matches!(r.source(), SOURCE_K8S | SOURCE_ANY)
                && r.op == Op::In
                && r.values.len() == 1)
                .then(|| r.values[0].as_str())
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reqs.is_empty() {
            return f.write_str("{}");
        }
        for (i, r) in self.reqs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// The entities of `fromEntities` / `toEntities` (spec §4.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    /// Every identity.
    All,
    /// Outside the cluster.
    World,
    /// Outside the cluster, IPv4.
    WorldIpv4,
    /// Outside the cluster, IPv6.
    WorldIpv6,
    /// Everything in the local cluster.
    Cluster,
    /// The local node.
    Host,
    /// Other nodes.
    RemoteNode,
    /// The kube-apiserver.
    KubeApiserver,
    /// Health endpoints.
    Health,
    /// Endpoints without an identity yet.
    Init,
    /// The ingress proxy.
    Ingress,
    /// Pods Cilium does not manage.
    Unmanaged,
    /// Every endpoint of every meshed cluster.
    ClusterMesh,
    /// Nothing.
    None,
}

impl Entity {
    /// Parses an entity name as the agent does (case-sensitive).
    pub fn parse(name: &str) -> Option<Entity> {
        Some(match name {
            "all" => Entity::All,
            "world" => Entity::World,
            "world-ipv4" => Entity::WorldIpv4,
            "world-ipv6" => Entity::WorldIpv6,
            "cluster" => Entity::Cluster,
            "host" => Entity::Host,
            "remote-node" => Entity::RemoteNode,
            "kube-apiserver" => Entity::KubeApiserver,
            "health" => Entity::Health,
            "init" => Entity::Init,
            "ingress" => Entity::Ingress,
            "unmanaged" => Entity::Unmanaged,
            "cluster-mesh" => Entity::ClusterMesh,
            "none" => Entity::None,
            _ => return None,
        })
    }

    /// The name as written in policies.
    pub fn name(self) -> &'static str {
        match self {
            Entity::All => "all",
            Entity::World => "world",
            Entity::WorldIpv4 => "world-ipv4",
            Entity::WorldIpv6 => "world-ipv6",
            Entity::Cluster => "cluster",
            Entity::Host => "host",
            Entity::RemoteNode => "remote-node",
            Entity::KubeApiserver => "kube-apiserver",
            Entity::Health => "health",
            Entity::Init => "init",
            Entity::Ingress => "ingress",
            Entity::Unmanaged => "unmanaged",
            Entity::ClusterMesh => "cluster-mesh",
            Entity::None => "none",
        }
    }

    /// Whether an identity with these labels is one the entity selects (`pkg/policy/api/
    /// entity.go`): `world` selects the three world labels (CIDR identities carry one of
    /// them); `cluster` selects the in-cluster reserved identities and every identity of the
    /// local cluster; `all` selects everything.
    pub fn selects(self, labels: &LabelSet, cluster_name: &str) -> bool {
        let reserved = |name: &str| {
            labels
                .iter()
                .any(|l| l.source == SOURCE_RESERVED && l.key == name)
        };
        match self {
            Entity::All => true,
            Entity::World => reserved("world") || reserved("world-ipv4") || reserved("world-ipv6"),
            Entity::WorldIpv4 => reserved("world-ipv4"),
            Entity::WorldIpv6 => reserved("world-ipv6"),
            Entity::Cluster => {
                [
                    "host",
                    "remote-node",
                    "init",
                    "ingress",
                    "health",
                    "unmanaged",
                    "kube-apiserver",
                ]
                .iter()
                .any(|n| reserved(n))
                    || labels.lookup("k8s:io.cilium.k8s.policy.cluster") == Some(cluster_name)
            }
            // Every meshed cluster; polc models one cluster, so this is `cluster` plus
            // pods labelled with any cluster name.
            Entity::ClusterMesh => {
                Entity::Cluster.selects(labels, cluster_name)
                    || labels.lookup("k8s:io.cilium.k8s.policy.cluster").is_some()
            }
            Entity::Host => reserved("host"),
            Entity::RemoteNode => reserved("remote-node"),
            Entity::KubeApiserver => reserved("kube-apiserver"),
            Entity::Health => reserved("health"),
            Entity::Init => reserved("init"),
            Entity::Ingress => reserved("ingress"),
            Entity::Unmanaged => reserved("unmanaged"),
            Entity::None => false,
        }
    }
}

/// A CIDR peer: a prefix minus its exceptions. Matches only identities outside the cluster
/// (world and CIDR identities), never pod, host or node addresses (spec §2.4).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CidrPeer {
    /// The prefix (masked).
    pub net: IpNet,
    /// Prefixes left out (masked, inside `net`).
    pub except: Vec<IpNet>,
}

impl CidrPeer {
    /// Whether an address is in the prefix and in none of the exceptions.
    pub fn contains_addr(&self, ip: &IpAddr) -> bool {
        self.net.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }

    /// Whether a prefix lies in the prefix and in none of the exceptions (how the selector
    /// cache matches CIDR identities: prefix containment).
    pub fn contains_net(&self, p: &IpNet) -> bool {
        self.net.contains(p) && !self.except.iter().any(|e| e.contains(p))
    }
}

impl fmt::Display for CidrPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.net)?;
        if !self.except.is_empty() {
            let ex: Vec<String> = self.except.iter().map(ToString::to_string).collect();
            write!(f, " except {}", ex.join(","))?;
        }
        Ok(())
    }
}

/// What one peer entry selects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerKind {
    /// Identities by label (`fromEndpoints`, generated `toServices` selectors, KNP peers).
    Endpoints(Selector),
    /// Nodes by node label (`fromNodes` / `toNodes`).
    Nodes(Selector),
    /// An entity.
    Entity(Entity),
    /// A CIDR (from `fromCIDR`, `fromCIDRSet`, a CIDR group, or `ipBlock`).
    Cidr(CidrPeer),
    /// A `toFQDNs` selector: the addresses the DNS proxy learns for matching names. Without
    /// DNS data it selects nothing (spec §4.3 of the datapath document).
    Fqdn(String),
    /// A `toServices` entry, bound to the inventory's Services before evaluation.
    Service(ServiceRef),
    /// Something polc cannot resolve offline and that selects nothing here (AWS groups,
    /// selector-less services without endpoints); the string says what.
    Unresolved(String),
}

/// A `toServices` entry: a Service by name or Services by label, in one namespace or all.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceRef {
    /// `k8sService.serviceName`.
    pub name: Option<String>,
    /// The namespace (`None`: every namespace).
    pub namespace: Option<String>,
    /// `k8sServiceSelector.selector`, over Service labels.
    pub selector: Option<Selector>,
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.namespace.as_deref().unwrap_or("*");
        match (&self.name, &self.selector) {
            (_, Some(s)) => write!(f, "{ns}/{{{s}}}"),
            (Some(n), None) => write!(f, "{ns}/{n}"),
            (None, None) => write!(f, "{ns}/*"),
        }
    }
}

/// One peer, with where it was written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// What it selects.
    pub kind: PeerKind,
    /// Where it was written.
    pub loc: Loc,
}

impl fmt::Display for PeerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerKind::Endpoints(s) => write!(f, "endpoints {s}"),
            PeerKind::Nodes(s) => write!(f, "nodes {s}"),
            PeerKind::Entity(e) => write!(f, "entity {}", e.name()),
            PeerKind::Cidr(c) => write!(f, "cidr {c}"),
            PeerKind::Fqdn(s) => write!(f, "fqdn {s}"),
            PeerKind::Service(s) => write!(f, "service {s}"),
            PeerKind::Unresolved(s) => write!(f, "unresolved {s}"),
        }
    }
}

/// The L3 part of an item.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Peers {
    /// No peer field written: every identity (the wildcard), when ports are given.
    Any,
    /// The union of these peers; an empty list selects nothing.
    List(Vec<Peer>),
}

/// A transport protocol as policy names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
    /// ICMP (1).
    Icmp,
    /// ICMPv6 (58).
    Icmpv6,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
            Proto::Icmp => 1,
            Proto::Icmpv6 => 58,
        }
    }

    /// The protocol with this number.
    pub fn from_number(n: u8) -> Option<Proto> {
        Some(match n {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            132 => Proto::Sctp,
            1 => Proto::Icmp,
            58 => Proto::Icmpv6,
            _ => return None,
        })
    }

    /// Parses `tcp`, `UDP`, `icmpv6`, ... case-insensitively.
    pub fn parse(s: &str) -> Option<Proto> {
        Some(match s.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "sctp" => Proto::Sctp,
            "icmp" => Proto::Icmp,
            "icmpv6" => Proto::Icmpv6,
            _ => return None,
        })
    }

    /// The name in upper case (`TCP`).
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
            Proto::Icmp => "ICMP",
            Proto::Icmpv6 => "ICMPv6",
        }
    }

    /// The protocols `ANY` (or an omitted protocol) stands for in a port rule: the agent
    /// expands it into one filter per port-carrying protocol (spec §2.2 of the datapath
    /// document).
    pub const ANY: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];
}

/// A port as a rule names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortSpec {
    /// `port`..=`end` (equal for a single port); `0..=0` is every port.
    Range(u16, u16),
    /// A named port (lower-cased), resolved per endpoint.
    Named(String),
}

impl PortSpec {
    /// Every port.
    pub const ALL: PortSpec = PortSpec::Range(0, 0);

    /// Whether a numeric port lies in the range (every port when the range is `0..=0`).
    pub fn contains(&self, port: u16) -> bool {
        match self {
            PortSpec::Range(0, 0) => true,
            PortSpec::Range(a, b) => (*a..=*b.max(a)).contains(&port),
            PortSpec::Named(_) => false,
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Range(0, 0) => f.write_str("*"),
            PortSpec::Range(a, b) if a >= b => write!(f, "{a}"),
            PortSpec::Range(a, b) => write!(f, "{a}-{b}"),
            PortSpec::Named(n) => f.write_str(n),
        }
    }
}

/// One HTTP rule; absent fields match anything. Regexes are RE2, matched against the whole
/// value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HttpRule {
    /// `method` regex.
    pub method: Option<String>,
    /// `path` regex.
    pub path: Option<String>,
    /// `host` regex.
    pub host: Option<String>,
    /// Required headers: (name, Some(value)) for an exact value, (name, None) for presence.
    pub headers: Vec<(String, Option<String>)>,
    /// Where the rule is.
    pub loc: Loc,
}

/// One Kafka rule (deprecated upstream).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KafkaRule {
    /// `role` (`produce` / `consume`).
    pub role: Option<String>,
    /// `apiKey`.
    pub api_key: Option<String>,
    /// `apiVersion`.
    pub api_version: Option<String>,
    /// `clientID`.
    pub client_id: Option<String>,
    /// `topic`.
    pub topic: Option<String>,
    /// Where the rule is.
    pub loc: Loc,
}

/// One DNS rule: `matchName` or `matchPattern`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DnsRule {
    /// An exact name (lower-cased, with trailing dot).
    Name(String, Loc),
    /// A pattern (lower-cased, with trailing dot).
    Pattern(String, Loc),
}

/// The L7 rules of a port rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum L7 {
    /// HTTP rules (empty: proxy, allow every request).
    Http(Vec<HttpRule>),
    /// Kafka rules.
    Kafka(Vec<KafkaRule>),
    /// DNS rules.
    Dns(Vec<DnsRule>),
    /// A generic (proxylib) parser with key/value rules.
    Generic(String, Vec<Vec<(String, String)>>),
}

impl L7 {
    /// The parser name (`http`, `kafka`, `dns`, or the generic parser).
    pub fn parser(&self) -> &str {
        match self {
            L7::Http(_) => "http",
            L7::Kafka(_) => "kafka",
            L7::Dns(_) => "dns",
            L7::Generic(p, _) => p,
        }
    }

    /// The listener priority of the parser (spec datapath §2.7; lower wins).
    pub fn listener_priority(&self) -> u8 {
        match self {
            L7::Http(_) => 101,
            L7::Kafka(_) => 106,
            L7::Generic(..) => 111,
            L7::Dns(_) => 121,
        }
    }
}

/// How a port rule sends traffic through a proxy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Redirect {
    /// L7 rules.
    L7(L7),
    /// TLS interception (`terminatingTLS`/`originatingTLS`/`serverNames`) without L7 rules.
    Tls,
    /// An explicit Envoy listener with an optional priority (1..=100).
    Listener {
        /// `<kind>/<name>/<listener>`.
        name: String,
        /// The priority (0 when unset).
        priority: u8,
    },
}

impl Redirect {
    /// The listener priority (lower wins; 0 = unspecified).
    pub fn listener_priority(&self) -> u8 {
        match self {
            Redirect::L7(l7) => l7.listener_priority(),
            Redirect::Tls => 116,
            Redirect::Listener { priority: 0, .. } => 126,
            Redirect::Listener { priority, .. } => *priority,
        }
    }

    /// The L7 rules, if any.
    pub fn l7(&self) -> Option<&L7> {
        match self {
            Redirect::L7(l7) => Some(l7),
            _ => None,
        }
    }
}

/// One L4 entry of an item: protocol, port, and what the proxy does on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortRule {
    /// The protocol (ANY already expanded).
    pub proto: Proto,
    /// The port (ICMP: the type in a single-port range).
    pub port: PortSpec,
    /// A proxy redirect, for allow rules.
    pub redirect: Option<Redirect>,
    /// Where the port (or ICMP field) is written.
    pub loc: Loc,
}

/// The L4 part of an item.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ports {
    /// No `toPorts` and no `icmps`: every protocol and port (L3 only).
    Any,
    /// These protocol/port entries.
    List(Vec<PortRule>),
}

/// Authentication mode of an allow item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Auth {
    /// `required` (SPIRE, type 1).
    Required,
    /// `test-always-fail` (type 2).
    TestAlwaysFail,
    /// `disabled`, explicitly.
    Disabled,
}

impl Auth {
    /// The datapath auth type number.
    pub fn type_number(self) -> u8 {
        match self {
            Auth::Disabled => 0,
            Auth::Required => 1,
            Auth::TestAlwaysFail => 2,
        }
    }
}

/// One item of `ingress`, `ingressDeny`, `egress` or `egressDeny`: allow (or deny) traffic
/// whose peer is in `peers` and whose protocol/port is in `ports`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Item {
    /// Ingress or egress.
    pub direction: Direction,
    /// Whether it is a deny item.
    pub deny: bool,
    /// The L3 part.
    pub peers: Peers,
    /// The L4 part.
    pub ports: Ports,
    /// `authentication.mode`, allow items only.
    pub auth: Option<Auth>,
    /// The YAML path of the item (`spec.ingress[0]`).
    pub path: String,
    /// Where the item is.
    pub loc: Loc,
}

impl Item {
    /// Whether the item allows (or denies) nothing: a written but empty peer list, or no
    /// peers and no ports at all (`ingress: [{}]`).
    pub fn selects_nothing(&self) -> bool {
        matches!(&self.peers, Peers::List(p) if p.is_empty())
            || (self.peers == Peers::Any && self.ports == Ports::Any)
    }
}

/// What a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// Pods (and other endpoints) by identity label.
    Endpoints(Selector),
    /// Nodes' host endpoints by node label (CCNP `nodeSelector`).
    Nodes(Selector),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Endpoints(s) => write!(f, "endpoints {s}"),
            Subject::Nodes(s) => write!(f, "nodes {s}"),
        }
    }
}

/// Where a rule comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The resource kind.
    pub kind: Kind,
    /// The namespace (empty for clusterwide policies).
    pub namespace: String,
    /// The resource name.
    pub name: String,
    /// The YAML path of the rule inside the resource (`spec`, `specs[1]`).
    pub path: String,
    /// Where the rule is.
    pub loc: Loc,
}

impl Origin {
    /// `CiliumNetworkPolicy shop/backend`.
    pub fn describe(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind.name(), self.name)
        } else {
            format!("{} {}/{}", self.kind.name(), self.namespace, self.name)
        }
    }
}

/// One rule: a subject and its items.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Where it comes from.
    pub origin: Origin,
    /// What it applies to.
    pub subject: Subject,
    /// Where the subject selector (`endpointSelector`, `nodeSelector`, `podSelector`) is.
    pub subject_loc: Loc,
    /// The items, in document order (ingress, ingressDeny, egress, egressDeny).
    pub items: Vec<Item>,
    /// `enableDefaultDeny.<dir>` as written.
    pub enable_default_deny: PerDir<Option<bool>>,
    /// `fromRequires` / `toRequires` selectors (targets up to 1.18).
    pub requires: PerDir<Vec<Selector>>,
}

impl Rule {
    /// Whether the rule has items in `dir` (allow or deny): only then does it take part in
    /// that direction's enforcement.
    pub fn has_direction(&self, dir: Direction) -> bool {
        self.items.iter().any(|i| i.direction == dir)
    }

    /// Whether the rule puts its subjects into default-deny for `dir` (spec §4.1).
    pub fn default_deny(&self, dir: Direction) -> bool {
        self.has_direction(dir) && self.enable_default_deny.get(dir).unwrap_or(true)
    }
}

/// A CiliumCIDRGroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidrGroup {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: LabelSet,
    /// `spec.externalCIDRs`.
    pub cidrs: Vec<IpNet>,
    /// Where the group is.
    pub loc: Loc,
}

/// Every rule of a set of policies.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    /// The rules, in input order (shared with the endpoint policies computed from them).
    pub rules: Vec<std::sync::Arc<Rule>>,
    /// The CIDR groups.
    pub cidr_groups: Vec<CidrGroup>,
}

impl PolicySet {
    /// Every `toFQDNs` selector the rules name (as lowered: `matchName: NAME`,
    /// `matchPattern: PATTERN`), sorted and deduplicated.
    pub fn fqdn_selectors(&self) -> Vec<String> {
        let mut out = Vec::new();
        for rule in &self.rules {
            for item in &rule.items {
                if let Peers::List(peers) = &item.peers {
                    for p in peers {
                        if let PeerKind::Fqdn(s) = &p.kind {
                            out.push(s.clone());
                        }
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Every CIDR prefix the policies name (peers and their exceptions), sorted and
    /// deduplicated: each gets a CIDR identity on the nodes.
    pub fn prefixes(&self) -> Vec<IpNet> {
        let mut out = Vec::new();
        for rule in &self.rules {
            for item in &rule.items {
                if let Peers::List(peers) = &item.peers {
                    for p in peers {
                        if let PeerKind::Cidr(c) = &p.kind {
                            out.push(c.net);
                            out.extend(c.except.iter().copied());
                        }
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}
