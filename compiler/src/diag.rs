//! Diagnostics: stable codes, severities, and the catalogue `polc explain-code` prints.
//!
//! Codes are grouped by phase: `P01xx` reading YAML, `S02xx` what the API server or the Cilium
//! agent rejects, `L03xx` what is accepted but does not do what the author meant. A code is
//! never reused for another meaning; retired codes stay in the table.

use crate::source::Loc;
use std::fmt;

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Informational; never fails a run.
    Note,
    /// Accepted by Cilium but probably wrong; fails a run only with `--deny-warnings`.
    Warning,
    /// Rejected by the API server or the Cilium agent, or unreadable.
    Error,
}

impl Severity {
    /// The lower-case name (`error`, `warning`, `note`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! codes {
    ($( $variant:ident = $code:literal, $name:literal, $sev:ident, $summary:literal, $doc:literal; )*) => {
        /// A stable diagnostic code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $(
                #[doc = $summary]
                $variant,
            )*
        }

        impl Code {
            /// Every code, in catalogue order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The code as printed, e.g. `S0218`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }

            /// The kebab-case name, e.g. `combined-peer-kinds`.
            pub fn name(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// The severity this code is reported with.
            pub fn severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$sev,)* }
            }

            /// One sentence saying what the code means.
            pub fn summary(self) -> &'static str {
                match self { $(Code::$variant => $summary,)* }
            }

            /// The longer explanation `polc explain-code` prints.
            pub fn doc(self) -> &'static str {
                match self { $(Code::$variant => $doc,)* }
            }
        }
    };
}

codes! {
    // ---- P01xx: reading ---------------------------------------------------------------
    YamlSyntax = "P0101", "yaml-syntax", Error,
        "The file is not valid YAML.",
        "The YAML parser stopped at the marked position. Nothing after it in the same document \
         can be read; other documents of a multi-document file are still read when the error \
         is confined to one document.";
    TabIndentation = "P0102", "tab-indentation", Error,
        "A tab character is used for indentation.",
        "YAML forbids tabs in indentation. kubectl and the API server reject the file. Replace \
         the tabs with spaces (two per level is the Kubernetes convention).";
    DuplicateKey = "P0103", "duplicate-key", Error,
        "A mapping contains the same key twice.",
        "Kubernetes' YAML decoder rejects duplicate keys (`mapping key \"x\" already defined`). \
         Other tools silently keep the last value, so one of the two values is lost. Merge the \
         two entries.";
    NotUtf8 = "P0104", "not-utf8", Error,
        "The file is not UTF-8 text.",
        "Kubernetes manifests must be UTF-8. The file contains bytes that are not valid UTF-8 \
         (or is a binary file). polc does not guess encodings.";
    AliasLimit = "P0105", "alias-limit", Error,
        "YAML aliases expand to more nodes than polc allows.",
        "Anchors and aliases (`&a` / `*a`) can expand exponentially (the \"billion laughs\" \
         attack). polc stops expanding when a document would grow past its node budget. Real \
         policies never need this many aliases; write the values out.";
    NestingTooDeep = "P0106", "nesting-too-deep", Error,
        "The YAML is nested deeper than polc allows.",
        "Policies are at most a dozen levels deep. polc refuses documents nested more than 128 \
         levels to bound its stack and memory.";
    InputTooLarge = "P0107", "input-too-large", Error,
        "The file is larger than the input size limit.",
        "polc refuses files above the size limit (64 MiB by default, `--max-file-size` \
         changes it) so that a stray file cannot exhaust memory. The API server itself refuses \
         objects above 1.5 MiB.";
    EmptyInput = "P0108", "empty-input", Error,
        "The file contains no YAML documents.",
        "An empty file (or one with only comments and document separators) defines no \
         objects. If the file is meant to be empty, leave it out of the paths given to polc.";
    UnreadableInput = "P0109", "unreadable-input", Error,
        "The file or directory cannot be read.",
        "polc could not open or read the path (it does not exist, or permissions forbid it). \
         polc exits with code 2.";
    NotAnObject = "P0110", "not-an-object", Error,
        "A document is not a Kubernetes object.",
        "Each YAML document (and each item of a `kind: List`) must be a mapping with \
         `apiVersion`, `kind` and `metadata`. A scalar or a sequence at the top level is not \
         an object.";
    SkippedKind = "P0111", "skipped-kind", Note,
        "A document of a kind polc does not read is skipped.",
        "polc reads CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, CiliumCIDRGroup, \
         NetworkPolicy and the inventory kinds Namespace, Pod, Node and Service. Other kinds \
         (Deployments, ConfigMaps, ...) are skipped; this is not an error.";
    UnsupportedYaml = "P0112", "unsupported-yaml", Error,
        "The YAML uses a feature Kubernetes manifests cannot use.",
        "Complex (non-scalar) mapping keys, merge keys (`<<`) and custom tags have no JSON \
         equivalent, so the API server cannot accept them.";
    ClusterUnreadable = "P0113", "cluster-unreadable", Error,
        "The live cluster (`--cluster`) could not be read.",
        "With `--cluster` polc lists the policies (CiliumNetworkPolicy, \
         CiliumClusterwideNetworkPolicy, CiliumCIDRGroup, NetworkPolicy) and the inventory \
         (Namespaces, Nodes, Pods, Services) from the API server of the kubeconfig's context, \
         `--context`, or the in-cluster service account. The message says what stopped it: no \
         kubeconfig, an API server that cannot be reached, credentials it refuses, or a kind \
         the account may not list (grant `list` and `watch` on it cluster-wide, as \
         `deploy/agent/rbac.yaml` does). Nothing is judged on a partial view. A Cilium kind \
         the server does not serve (Cilium's CRDs not installed) is read as none, with a \
         note.";

    // ---- S02xx: rejected by the API server or the agent ------------------------------
    UnservedApiVersion = "S0201", "unserved-api-version", Error,
        "The apiVersion is not served for this kind.",
        "CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy are served only as \
         `cilium.io/v2` (`cilium.io/v1` predates Cilium 1.0). NetworkPolicy is served only as \
         `networking.k8s.io/v1` (`extensions/v1beta1` was removed in Kubernetes 1.16). \
         CiliumCIDRGroup is served as `cilium.io/v2alpha1` and `cilium.io/v2`.";
    MissingTypeMeta = "S0202", "missing-type-meta", Error,
        "The object has no `apiVersion` or no `kind`.",
        "kubectl and the API server refuse an object without `apiVersion` and `kind`. Keys \
         are case-sensitive: `apiversion` is not `apiVersion`.";
    UnknownField = "S0203", "unknown-field", Warning,
        "The object has a field its schema does not define.",
        "With kubectl's strict field validation (the default since Kubernetes 1.25) the \
         API server rejects the object; with `--validate=false` it silently drops the field. \
         Either way the field has no effect. The message names the field's full path.";
    MisspelledField = "S0204", "misspelled-field", Error,
        "A field name is a near miss of a field the schema defines.",
        "The API server drops unknown fields (or rejects them under strict validation). A \
         misspelled field such as `toPort` or `fromEndpoint` is therefore lost, and the rule \
         that is left usually allows much more than the author meant (a rule without its \
         peers allows every peer). Fix the spelling.";
    WrongType = "S0205", "wrong-type", Error,
        "A field has the wrong type.",
        "The CRD schema fixes each field's type and the API server rejects other types. A \
         common case: `port: 80` is an integer, but Cilium's `port` is a string: write \
         `port: \"80\"`. YAML 1.1 also reads unquoted `yes`, `no`, `on`, `off` as booleans.";
    MissingRequiredField = "S0206", "missing-required-field", Error,
        "A required field is missing.",
        "The schema marks the field as required; the API server rejects the object without \
         it.";
    InvalidObjectName = "S0207", "invalid-object-name", Error,
        "`metadata.name` or `metadata.namespace` is missing or not a valid name.",
        "Every policy needs a name (the agent reports \"must have name\"), and names and \
         namespaces must be DNS subdomains or labels: lower-case alphanumerics, `-` and `.`, \
         at most 253 characters (namespaces: 63, no dots).";
    EmptyPolicy = "S0208", "empty-policy", Error,
        "The policy has neither `spec` nor `specs`.",
        "A CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy must carry its rule in \
         `spec` or its rules in `specs`; the agent rejects it as an empty policy.";
    RuleWithoutItems = "S0209", "rule-without-items", Error,
        "The rule has no ingress, ingressDeny, egress or egressDeny items.",
        "The CRD requires at least one of the four sections to be present, and the agent \
         rejects a rule whose four sections are all empty (`ingress: []` alone is rejected). \
         To deny all ingress, write `ingress: [{}]`: one item with no peers.";
    MissingSubjectSelector = "S0210", "missing-subject-selector", Error,
        "The rule has neither `endpointSelector` nor `nodeSelector`.",
        "Every rule must say which endpoints it applies to. Use `endpointSelector: {}` for \
         every pod of the namespace (CiliumNetworkPolicy) or of the cluster \
         (CiliumClusterwideNetworkPolicy).";
    ConflictingSubjectSelectors = "S0211", "conflicting-subject-selectors", Error,
        "The rule has both `endpointSelector` and `nodeSelector`.",
        "A rule applies either to pods (`endpointSelector`) or to nodes' host endpoints \
         (`nodeSelector`), never both. Split it into two rules.";
    NodeSelectorInNamespacedPolicy = "S0212", "node-selector-in-namespaced-policy", Error,
        "A CiliumNetworkPolicy rule uses `nodeSelector`.",
        "Host policies select nodes, which are cluster-scoped; the agent rejects \
         `nodeSelector` in a namespaced CiliumNetworkPolicy (\"rule cannot have \
         NodeSelector\"). Move the rule to a CiliumClusterwideNetworkPolicy.";
    InvalidSelectorOperator = "S0213", "invalid-selector-operator", Error,
        "A `matchExpressions` operator is not one of `In`, `NotIn`, `Exists`, `DoesNotExist`.",
        "The CRD enum is case-sensitive: `in` or `exists` are rejected by the API server.";
    SelectorValuesMismatch = "S0214", "selector-values-mismatch", Error,
        "A `matchExpressions` entry has values that do not fit its operator.",
        "`In` and `NotIn` need at least one value; `Exists` and `DoesNotExist` must have no \
         values. The agent rejects the selector otherwise.";
    InvalidLabelKey = "S0215", "invalid-label-key", Error,
        "A label key in a selector is not a valid key.",
        "A key is an optional source and `:` (`k8s:`, `reserved:`, `any:`, ...; at most one \
         `:`), then an optional DNS-subdomain prefix and `/`, then a name of at most 63 \
         characters of `[A-Za-z0-9-_.]` that starts and ends with an alphanumeric.";
    InvalidLabelValue = "S0216", "invalid-label-value", Error,
        "A label value in a selector is not a valid value.",
        "Label values are at most 63 characters of `[A-Za-z0-9-_.]`, starting and ending \
         with an alphanumeric, or empty.";
    MisplacedSelectorLabel = "S0217", "misplaced-selector-label", Error,
        "A label selector has a key that is neither `matchLabels` nor `matchExpressions`.",
        "This is nearly always a label indented one level too shallow (beside `matchLabels` \
         instead of under it). The API server drops the unknown key, and what is left, often \
         `{}`, selects every endpoint: the policy silently widens. Indent the label under \
         `matchLabels`.";
    CombinedPeerKinds = "S0218", "combined-peer-kinds", Error,
        "One rule item combines peer kinds that Cilium does not support together.",
        "Within one item, only one of `fromEndpoints`, `fromCIDR`, `fromCIDRSet`, \
         `fromEntities`, `fromNodes`, `fromGroups` (and for egress `toServices`, `toFQDNs`) \
         may be set; the agent reports \"combining X and Y is not supported yet\". Note that \
         `toCIDR` with `toCIDRSet` counts as two kinds. Split the item into two items.";
    UnknownEntity = "S0220", "unknown-entity", Error,
        "An entity is not one Cilium knows.",
        "Entities are `all`, `world`, `cluster`, `host`, `init`, `ingress`, `unmanaged`, \
         `remote-node`, `health`, `none` and `kube-apiserver`. `world-ipv4` and `world-ipv6` \
         exist in the agent but not in the CRD enum, so the API server rejects them.";
    L7OnHostPolicy = "S0221", "l7-on-host-policy", Error,
        "A host policy (`nodeSelector`) carries L7 rules the host firewall cannot enforce.",
        "The agent rejects L7 rules on host-policy ingress, and HTTP rules on host-policy \
         egress (DNS rules on host egress are allowed).";
    DnsRulesOnIngress = "S0222", "dns-rules-on-ingress", Error,
        "DNS rules are used in an ingress rule.",
        "The DNS proxy only sees a pod's outgoing queries; the agent rejects \
         `rules.dns` on ingress.";
    IcmpsWithPorts = "S0223", "icmps-with-ports", Error,
        "One item has both `icmps` and `toPorts`.",
        "The agent requires ICMP rules to be in an item of their own. Split the item.";
    TooManyPorts = "S0224", "too-many-ports", Error,
        "A port rule lists more than 40 ports.",
        "The CRD limits `ports` to 40 entries (\"too many ports, the max is 40\"). Split the \
         list over several port rules or use a port range.";
    TooManyIcmpFields = "S0225", "too-many-icmp-fields", Error,
        "An ICMP rule lists more than 40 types.",
        "The CRD limits `icmps[].fields` to 40 entries (\"too many types, the max is 40\").";
    MissingPort = "S0226", "missing-port", Error,
        "A port entry has no `port`.",
        "The agent requires a port (\"port must be specified\"). Use `port: \"0\"` for every \
         port of the protocol. Only the extended IP protocols (VRRP, IGMP, ...) may omit it.";
    InvalidPort = "S0227", "invalid-port", Error,
        "A port is neither a number from 0 to 65535 nor a valid port name.",
        "A port is a decimal number (a leading `0` makes the agent read it as octal, so `08` \
         fails) or an IANA service name: at most 15 characters of letters, digits and `-`, \
         with at least one letter. The agent reports \"unable to parse port\".";
    PortOnPortlessProtocol = "S0228", "port-on-portless-protocol", Error,
        "A port is given for a protocol that has no ports.",
        "The extended IP protocols (VRRP, IGMP, GRE, IPIP, IPV6, ESP, AH) have no ports; the \
         agent requires the port to be empty or `\"0\"`.";
    InvalidProtocol = "S0229", "invalid-protocol", Error,
        "A protocol is not one this Cilium version accepts.",
        "`protocol` is one of `TCP`, `UDP`, `SCTP`, `ANY` (the CRD enum is upper-case); Cilium \
         1.19 adds the extended protocols `VRRP`, `IGMP`, `GRE`, `IPIP`, `IPV6`, `ESP`, `AH`. \
         ICMP is not a `protocol`: use `icmps`. Kubernetes NetworkPolicy accepts `TCP`, `UDP` \
         and `SCTP`.";
    L7RequiresTcp = "S0230", "l7-requires-tcp", Error,
        "L7 rules (other than DNS) are on a port whose protocol is not `TCP`.",
        "HTTP and Kafka rules need the protocol to be exactly `TCP`; the agent compares the \
         written protocol, so an omitted protocol (ANY) is rejected too (\"L7 rules can only \
         apply to TCP\"). Add `protocol: TCP`.";
    L7OnWildcardPort = "S0231", "l7-on-wildcard-port", Error,
        "L7 rules are on port `0` (all ports).",
        "The proxy needs a concrete port to redirect; the agent rejects \"L7 rules can not be \
         used when a port is 0\".";
    DnsRulesWithoutPorts = "S0232", "dns-rules-without-ports", Error,
        "DNS rules are given without any port.",
        "The agent requires a port for DNS rules (\"port 53 must be specified for DNS \
         rules\").";
    DnsRulesOnPortRange = "S0233", "dns-rules-on-port-range", Error,
        "DNS rules are given on a port range.",
        "The DNS proxy redirects single ports; the agent rejects DNS rules with `endPort`.";
    MultipleL7Types = "S0234", "multiple-l7-types", Error,
        "One `rules` block mixes L7 protocols.",
        "A port rule's `rules` may hold one of `http`, `dns`, `kafka`, or `l7proto`/`l7`; \
         the agent rejects \"multiple L7 protocol rule types specified in single rule\".";
    ServerNamesWithoutTls = "S0235", "server-names-without-tls", Error,
        "`serverNames` is combined with L7 rules but without `terminatingTLS`.",
        "To apply L7 rules to TLS traffic selected by SNI the proxy must terminate TLS.";
    InvalidServerName = "S0236", "invalid-server-name", Error,
        "A `serverNames` entry is empty or not a valid name pattern.",
        "Server names are DNS names, optionally starting with `*.` or `**.`; the list must \
         not be empty and no entry may be empty (\"empty server name is not allowed\").";
    ListenerOnIngress = "S0237", "listener-on-ingress", Error,
        "A `listener` is used in an ingress rule.",
        "Listener redirects are only supported on egress.";
    ListenerWithL7Rules = "S0238", "listener-with-l7-rules", Error,
        "A `listener` is combined with L7 `rules`.",
        "Traffic redirected to an Envoy listener is handled by that listener's config; the \
         agent rejects L7 rules beside it.";
    InvalidHttpRegex = "S0239", "invalid-http-regex", Error,
        "An HTTP `method`, `path` or `host` is not a valid regular expression.",
        "Cilium compiles these fields as (RE2-style) regular expressions that must match the \
         whole value; an invalid expression rejects the policy.";
    InvalidHeaderMatch = "S0240", "invalid-header-match", Error,
        "An HTTP `headerMatches` entry is invalid.",
        "Each entry needs a non-empty `name`; `mismatch` is one of `LOG`, `ADD`, `DELETE`, \
         `REPLACE`; a `secret` needs a `name`.";
    L7WithoutParser = "S0241", "l7-without-parser", Error,
        "Generic `l7` rules are given without `l7proto`.",
        "Generic key/value L7 rules need the name of the proxylib parser in `l7proto`.";
    InvalidKafkaRule = "S0242", "invalid-kafka-rule", Error,
        "A Kafka rule is invalid.",
        "`role` and `apiKey` are mutually exclusive; `role` is `produce` or `consume`; \
         `apiKey` must name a Kafka API key; `apiVersion` is a number from 0 to 32767; \
         `topic` is at most 255 characters of `[a-zA-Z0-9._-]`.";
    InvalidFqdnSelector = "S0243", "invalid-fqdn-selector", Error,
        "An FQDN or DNS selector is invalid.",
        "Each entry has exactly one of `matchName` or `matchPattern`, of at most 255 \
         characters of `[-a-zA-Z0-9_.]` (patterns may also use `*`).";
    InvalidCidr = "S0244", "invalid-cidr", Error,
        "A CIDR is empty, unparsable, or not in prefix notation.",
        "CIDRs are written `address/length` (`10.0.0.0/8`, `2001:db8::/32`); the CRD \
         requires prefix notation, and the agent rejects non-contiguous masks.";
    InvalidCidrRule = "S0245", "invalid-cidr-rule", Error,
        "A CIDR set entry does not have exactly one of `cidr`, `cidrGroupRef`, `cidrGroupSelector`.",
        "Each `fromCIDRSet`/`toCIDRSet` entry names its prefix in exactly one way.";
    InvalidCidrExcept = "S0246", "invalid-cidr-except", Error,
        "An `except` prefix is not inside the CIDR it is excepted from.",
        "Each `except` must be a prefix of the same address family as `cidr`, at least as \
         long, and contained in it (\"allow CIDR prefix X does not contain exclude CIDR prefix \
         Y\").";
    InvalidCidrGroupRef = "S0247", "invalid-cidr-group-ref", Error,
        "A `cidrGroupRef` is not a valid CiliumCIDRGroup name.",
        "CIDR group names are DNS subdomains: lower-case alphanumerics, `-` and `.`, at most \
         253 characters.";
    UnknownIcmpType = "S0248", "unknown-icmp-type", Error,
        "An ICMP type is not defined for its family.",
        "ICMP types are numbers from 0 to 255 or names from Cilium's table for the family \
         (`EchoRequest` is 8 in IPv4 and 128 in IPv6). A name that exists only in the other \
         family is rejected (\"ICMP type X not found in IPv6\").";
    RequiresRemoved = "S0249", "requires-removed", Error,
        "`fromRequires`/`toRequires` are used, which Cilium 1.19 removed.",
        "Cilium 1.19 keeps the fields in the CRD with `maxItems: 0`, so any value is \
         rejected. Express the requirement in every peer selector instead.";
    InvalidEnumValue = "S0250", "invalid-enum-value", Error,
        "A field has a value outside its allowed set.",
        "The CRD (or Kubernetes schema) lists the allowed values; matching is \
         case-sensitive.";
    ValueOutOfRange = "S0251", "value-out-of-range", Error,
        "A value is outside the range or length its schema allows.",
        "For example `endPort` is 0-65535, `listener.priority` is 1-100, and `log.value` is \
         at most 32 characters.";
    InvalidLogValue = "S0252", "invalid-log-value", Error,
        "`log.value` contains control or format characters.",
        "The CRD pattern `^\\PC*$` forbids control and format characters in the Hubble log \
         tag.";
    InvalidNetworkPolicyPeer = "S0253", "invalid-networkpolicy-peer", Error,
        "A NetworkPolicy peer is empty or combines `ipBlock` with selectors.",
        "Kubernetes requires each `from`/`to` peer to set `ipBlock`, or `podSelector` and/or \
         `namespaceSelector`, and forbids `ipBlock` beside a selector.";
    ListenerKindMismatch = "S0254", "listener-kind-mismatch", Error,
        "A clusterwide policy's listener refers to a namespaced CiliumEnvoyConfig.",
        "A CiliumClusterwideNetworkPolicy can only redirect to a \
         CiliumClusterwideEnvoyConfig.";
    FieldNotAllowedHere = "S0255", "field-not-allowed-here", Error,
        "A field of Cilium's policy language is used where it does not exist.",
        "Some fields exist only in some sections: `toFQDNs`, `toServices`, L7 `rules`, \
         `authentication`, `serverNames`, TLS and `listener` do not exist in deny sections; \
         `toServices` and `toFQDNs` do not exist in ingress; `auth` was replaced by \
         `authentication` in Cilium 1.14; `log` needs Cilium 1.19. The API server drops such a \
         field (or rejects it under strict validation), and what is left usually means \
         something else: an `egressDeny` item whose `toFQDNs` is dropped denies all egress.";

    UnknownKind = "S0256", "unknown-kind", Error,
        "The kind is a near miss of a policy kind.",
        "Kinds are case-sensitive and must be spelled exactly: `CiliumNetworkPolicy`, \
         `CiliumClusterwideNetworkPolicy`, `CiliumCIDRGroup`, `NetworkPolicy`. The API server \
         rejects an unknown kind (\"no matches for kind\"), so the policy is never applied.";
    ConflictingL7Parsers = "S0257", "conflicting-l7-parsers", Error,
        "One port gets two different L7 rule types.",
        "The agent redirects a port to a single L7 parser per direction and endpoint. When two \
         port rules give the same port different L7 types (`http` on 8080 in one item, `kafka` \
         on 8080 in another), it rejects the policy (\"cannot merge conflicting L7 parsers\"). \
         polc checks this within one rule; across policies it is the verifier's job.";

    // ---- L03xx: accepted, but not what the author meant --------------------------------
    EmptySection = "L0301", "empty-section", Warning,
        "A section is an empty list, which has no effect.",
        "`ingress: []` (or `egress: []`, ...) adds no items and, unlike `ingress: [{}]`, does \
         not put the selected endpoints into default-deny. To deny everything, write one empty \
         item: `ingress: [{}]`. Otherwise remove the key.";
    PortsFromAnywhere = "L0302", "ports-from-anywhere", Warning,
        "An allow item has ports but no peers, so it allows those ports from/to every identity, including the internet.",
        "An item without `fromEndpoints`/`fromCIDR`/`fromEntities`/... has no L3 restriction: \
         its `toPorts` are allowed from every identity, including `world`. If that is \
         intended, say so with `fromEntities: [all]`; otherwise add the peers.";
    FqdnWithoutDnsProxy = "L0303", "fqdn-without-dns-proxy", Warning,
        "`toFQDNs` is used but no policy sends DNS through the DNS proxy.",
        "`toFQDNs` only allows addresses the DNS proxy has seen in answers. Without an egress \
         rule with `rules: {dns: [...]}` on port 53 for the same pods, the proxy never sees \
         the lookups and the FQDN peers stay empty: the traffic is denied.";
    ForeignNamespaceSubject = "L0304", "foreign-namespace-subject", Warning,
        "A CiliumNetworkPolicy's `endpointSelector` names a namespace, which the agent overwrites.",
        "The agent forces the subject of a CiliumNetworkPolicy into the policy's own \
         namespace; a namespace requirement in `endpointSelector` is replaced (and a \
         different namespace silently ignored). Use a CiliumClusterwideNetworkPolicy to \
         select pods in other namespaces.";
    EmptyPeerList = "L0305", "empty-peer-list", Warning,
        "A peer list is empty, so the item allows nothing.",
        "A written but empty list such as `fromEndpoints: []` selects no peer (unlike an \
         omitted field, which selects every peer). The item still puts the endpoints into \
         default-deny.";
    IneffectiveEndPort = "L0306", "ineffective-end-port", Warning,
        "`endPort` has no effect.",
        "`endPort` is ignored for named ports and when it is not above `port`; the rule \
         covers the single port only.";
    ServerNamesOnIngress = "L0307", "server-names-on-ingress", Warning,
        "`serverNames` is used on ingress.",
        "SNI matching is documented and tested for egress; on ingress it is not enforced as \
         one would expect.";
    // L0308 (cidr-group-except) was retired before release: since Cilium 1.17 the agent
    // enforces `except` with CIDR groups.
    DefaultDenyWithoutItems = "L0309", "default-deny-without-items", Warning,
        "`enableDefaultDeny` is set for a direction in which the rule has no items.",
        "Only directions with items produce policy entries, so the setting has no effect.";
    DeprecatedL7 = "L0310", "deprecated-l7", Warning,
        "Kafka or generic (`l7proto`) L7 rules are deprecated.",
        "Kafka L7 rules are deprecated since Cilium 1.18 and removed from the CRDs in 1.20; \
         plan to move away from them. polc compiles them (map entries, NPDS rules) but its \
         own L7 proxy does not enforce them: on polc's datapath a port with such rules fails \
         closed (its traffic is dropped), and `polc status` counts those drops.";
    RequiresAgentFlag = "L0311", "requires-agent-flag", Warning,
        "The construct only works when the Cilium agent runs with a non-default setting.",
        "`fromNodes`/`toNodes` need `enable-node-selector-labels=true`; the extended IP \
         protocols need `enable-extended-ip-protocols=true`. Otherwise the agent rejects the \
         policy.";
    EmptyServiceSelector = "L0312", "empty-service-selector", Warning,
        "A `toServices` entry names no service.",
        "An entry with neither `k8sService` nor `k8sServiceSelector` matches no service: the item allows nothing but still triggers default-deny.";
    DuplicatePolicy = "L0313", "duplicate-policy", Warning,
        "Two documents define the same object.",
        "Objects are keyed by kind, namespace and name; applying both, the second replaces \
         the first.";
    PolicyTypesIgnored = "L0314", "policy-types-ignored", Warning,
        "A NetworkPolicy has rules for a direction its `policyTypes` leaves out.",
        "Kubernetes ignores rules of a direction not listed in `policyTypes`, but Cilium \
         translates them anyway. Add the direction to `policyTypes` or remove the rules.";
    HttpPathNeverMatches = "L0315", "http-path-never-matches", Warning,
        "An HTTP `path` cannot match any request path.",
        "Request paths start with `/` and the regex must match the whole path, so a `path` \
         that cannot start with `/` never matches and the rule allows nothing.";
    RequiresDeprecated = "L0316", "requires-deprecated", Warning,
        "`fromRequires`/`toRequires` are deprecated.",
        "They are deprecated since Cilium 1.17 and removed in 1.19; they also change every \
         other rule selecting the same endpoints. Express the requirement in every peer \
         selector instead.";
    OctalPort = "L0317", "octal-port", Warning,
        "A port with a leading zero is read as an octal number.",
        "The agent parses ports with base detection, so `\"010\"` means port 8. Remove the \
         leading zero.";
    NamespaceOnClusterScoped = "L0318", "namespace-on-cluster-scoped", Warning,
        "A cluster-scoped object has `metadata.namespace`.",
        "CiliumClusterwideNetworkPolicy, CiliumCIDRGroup, Namespace and Node are \
         cluster-scoped; the namespace is ignored.";
    HttpPathGlob = "L0319", "http-path-glob", Warning,
        "An HTTP `path` ends in `/*`, written as if it were a glob.",
        "Cilium's HTTP paths are regular expressions that must match the whole path. `/api/*` \
         means `/api` followed by any number of `/`, so it matches `/api/` but not \
         `/api/items`. Write `/api/.*` to match everything under `/api/`.";
    HttpMethodCase = "L0320", "http-method-case", Warning,
        "An HTTP `method` is written in lower case.",
        "HTTP methods are upper-case (`GET`, `POST`) and Cilium matches the `method` regex \
         case-sensitively, so `get` never matches and the rule allows nothing.";
    CidrGroupNotFound = "L0321", "cidr-group-not-found", Warning,
        "A `cidrGroupRef` or `cidrGroupSelector` finds no CiliumCIDRGroup.",
        "The agent resolves CIDR groups at run time. A reference to a group that does not \
         exist (or a selector that matches none) selects no addresses: the item allows or \
         denies nothing, but it still puts the endpoint into default-deny for its direction. \
         polc looks for the groups among the files it is given; pass the group's file too, or \
         fix the name.";
    PolicyMapOverflow = "L0322", "policy-map-overflow", Warning,
        "An endpoint needs more policy-map entries than the map holds.",
        "Each endpoint's policy map has a fixed capacity (`bpf-policy-map-max`, 16,384 by \
         default). When the computed entries exceed it, the agent fails to regenerate the \
         endpoint, which keeps its previous policy (or, with lockdown enabled, drops all \
         traffic). Reduce the identities times ports a rule selects, or raise the map size.";
    Undecided = "V0400", "undecided", Note,
        "The verifier could not decide a check within its time limit.",
        "Each verifier question has a time limit (`--timeout`, 10 s by default). When z3 runs \
         out of time or gives up, polc does not know the answer, and says so here rather than \
         treating the check as passed: the item may or may not have the problem the check looks \
         for. Raise `--timeout`, or split very large selectors and port lists.";
    ContradictorySelector = "V0401", "contradictory-selector", Warning,
        "A label selector no pod can ever satisfy.",
        "The verifier proves that the selector's requirements contradict each other for every \
         possible pod: the same key must have two different values (`app: web` and `app In \
         (db)`), must both exist and not exist, or must take a value its `NotIn` excludes. A \
         rule with such a subject applies to nothing; such a peer allows (or denies) nothing. \
         Namespace scoping counts: a CNP peer is limited to the policy's namespace unless it \
         names another.";
    SelectsNothingInCluster = "V0402", "selects-nothing-in-cluster", Warning,
        "A rule or peer selects nothing in the cluster it is checked against.",
        "With an inventory (`polc lint` given Pods, or `--inventory`), polc knows every endpoint \
         and identity. A subject that matches no pod (or host-policy subject no node) applies \
         to nothing; an endpoint peer that matches no identity allows or denies nothing. \
         Usually a label or namespace typo, or a workload that does not exist yet.";
    DnsCutOff = "V0403", "dns-cut-off", Warning,
        "Pods in egress default-deny cannot reach cluster DNS.",
        "polc checks pods whose egress is default-deny against the cluster's DNS pods \
         (`kube-system` pods labelled `k8s-app=kube-dns`, UDP/53): without an inventory for \
         every pod a rule could select, with one for every workload of the cluster. When \
         nothing allows that flow, every name lookup of those pods fails, which usually breaks \
         them entirely. The finding points at a rule that puts them into default-deny and gives \
         one denied flow, replayed through the reference evaluator.";
    ShadowedAllow = "V0404", "shadowed-allow", Warning,
        "Deny rules cover every flow an allow item allows.",
        "The verifier proves, for every pod that could exist, that each flow the item allows is \
         also matched by a deny item of a rule selecting the same pods, and deny always wins: \
         the item has no effect. The finding gives one such flow, replayed through the reference \
         evaluator. Remove the item or narrow the deny rules.";
    BypassedL7 = "V0405", "bypassed-l7", Warning,
        "Another allow bypasses an item's HTTP rules.",
        "When one item gives a peer and port HTTP rules and another item, of any rule selecting \
         the same pods, allows an overlapping peer and port without L7 rules, the proxy allows \
         every request for the overlap: the HTTP rules restrict nothing there. The verifier \
         finds such an overlap for some pod that could exist and replays one flow, with a \
         request the HTTP rules reject, through the reference evaluator.";
    FqdnLookupDenied = "V0407", "fqdn-lookup-denied", Warning,
        "Pods cannot look up the names a toFQDNs peer matches.",
        "A `toFQDNs` peer selects the addresses Cilium's DNS proxy sees in answers to the \
         endpoint's own lookups. When the pods a rule selects cannot send that lookup to the \
         cluster DNS (UDP/53 to `kube-system` pods labelled `k8s-app=kube-dns` is denied, or \
         the DNS rules on the port do not match the name), no answer is ever seen and the peer \
         allows nothing. The verifier looks for such a pod and name and replays the denied \
         lookup through the reference evaluator. Add an egress rule to the cluster DNS with a \
         DNS rule (`matchPattern: \"*\"` or one matching these names).";
    HostCutOff = "V0408", "host-cut-off", Warning,
        "A host policy cuts nodes off from the kube-apiserver or from health checks.",
        "A host policy (`nodeSelector`) puts the selected nodes' egress or ingress into \
         default-deny. Nodes must still reach the kube-apiserver (TCP/6443 to the \
         `kube-apiserver` entity) and admit the other nodes' health probes (TCP/4240 from \
         `remote-node`), or kubelet and the Cilium agent lose the cluster and every node reports \
         the others unreachable. The verifier looks for a node the policies would cut off, for \
         every node that could exist, and replays the denied flow through the reference \
         evaluator.";
    PolicyMapCapacity = "V0409", "policy-map-capacity", Warning,
        "With an inventory: an endpoint's policy map would exceed its capacity.",
        "Each endpoint's policy map has a fixed capacity (`bpf-policy-map-max`, 16,384 by \
         default). `polc lint --inventory` builds the map state of every endpoint whose upper \
         bound exceeds it, as `polc compile` does (which reports the same as L0322), and reports \
         those that overflow: the agent fails to regenerate them and they keep their previous \
         policy (or, with lockdown, drop all traffic).";
    Unisolated = "V0410", "unisolated", Warning,
        "Deleting a policy takes pods out of default-deny.",
        "Pods are isolated in a direction (only what policy allows gets through) while some \
         rule with rules in that direction selects them. The admission webhook asks, on a \
         DELETE, whether some pod the deleted object's rules isolate is selected by no other \
         policy that isolates it in that direction, for every pod that could exist: after the \
         deletion, every flow in that direction reaches such pods. The warning names one such \
         pod. If that is what you want, nothing needs doing; otherwise keep a policy that \
         selects them.";
    RedundantAllow = "V0406", "redundant-allow", Note,
        "Other allow rules already allow every flow an allow item allows.",
        "The verifier proves, for every pod that could exist, that each flow the item allows is \
         also allowed, without an L7 proxy, by other items of rules selecting the same pods, and \
         that removing the item keeps its pods' default-deny. The item changes no verdict. Items \
         are judged in order: of two equal items the first is reported, and removing every \
         reported item together is safe. The finding gives one flow, replayed through the \
         reference evaluator, that another item allows too.";
    UnknownEndpoint = "Q0401", "unknown-endpoint", Error,
        "A flow names a pod, node or address polc cannot place.",
        "`from` and `to` are `NAMESPACE/POD`, `host/NODE` (that node's host), or an IP address. \
         A pod or node must exist in the inventory given with `--inventory`; an address that \
         is a Service's ClusterIP is refused, because policy applies after the service \
         translation: name a backend pod instead.";
    InvalidFlow = "Q0402", "invalid-flow", Error,
        "A flow or query is incomplete or contradictory.",
        "A flow needs `from`, `to`, `proto` and, for TCP, UDP and SCTP, a `port` from 1 to \
         65535 (ICMP takes `icmpType` 0-255); `expect` is `allow` or `deny`; an L7 request \
         (`http`, `dns`, `kafka`) is at most one and needs a port protocol.";
    LoadNeedsRoot = "B0501", "load-needs-root", Error,
        "Loading, unloading or reading the eBPF datapath needs root.",
        "`polc load`, `polc unload`, `polc status` and `polc lab` create BPF maps and programs \
         (and the lab network namespaces), pin them and attach them to interfaces, which needs `CAP_BPF`, `CAP_NET_ADMIN` and \
         `CAP_SYS_ADMIN` (in practice: root). Run polc with sudo, or as the node agent's \
         privileged container.";
    NoBpffs = "B0502", "no-bpffs", Error,
        "There is no bpf filesystem to pin the datapath in.",
        "polc pins its maps, programs and links under `/sys/fs/bpf/polc/<node>` so they \
         outlive the process. When `/sys/fs/bpf` is not a bpf filesystem polc mounts one; \
         this error means that failed (no permission to mount, or a kernel without \
         `CONFIG_BPF_SYSCALL`). Mount it with `mount -t bpf bpf /sys/fs/bpf`. Inside \
         `ip netns exec` `/sys` is remounted without it: enter the namespace with `nsenter \
         --net` instead.";
    MissingKernelFeature = "B0503", "missing-kernel-feature", Error,
        "The kernel lacks a feature the datapath needs.",
        "The datapath needs LPM-trie, hash-of-maps, LRU and per-CPU maps, TC classifier \
         programs and TCX links (Linux 6.6 or later). The message names the missing piece and \
         the kernel's answer.";
    VerifierRejected = "B0504", "verifier-rejected", Error,
        "The kernel verifier rejected a datapath program.",
        "The kernel checks every eBPF program before it runs it. polc prints the verifier's \
         log; nothing was changed on the node (the maps, programs and links installed before \
         stay as they were). This points at a kernel that verifies differently from the ones \
         polc is tested on: report it with the log.";
    PolicyMapFull = "B0505", "policy-map-full", Error,
        "An endpoint's policy needs more entries than its policy map holds; nothing was installed.",
        "Each endpoint's policy map has a fixed capacity (`--policy-map-max`, 16,384 by \
         default, like Cilium's `bpf-policy-map-max`). polc checks every endpoint before it \
         writes anything, and refuses the whole load when one does not fit, so the node keeps \
         what it had. Narrow the rules that select many identities on many ports, or load \
         into a fresh node (`polc unload`) with a larger `--policy-map-max`.";
    LoadFailed = "B0506", "load-failed", Error,
        "Installing the datapath failed and was rolled back.",
        "A kernel operation failed while maps were being updated or interfaces attached. \
         polc undoes every write and link of the load in reverse order, so the node keeps \
         what it had; the message names the operation that failed (and any undo that failed \
         too).";
    BadInterfaceMap = "B0507", "bad-interface-map", Error,
        "The interface map names an endpoint or interface that does not exist.",
        "`--interfaces` takes `NAMESPACE/POD=IFNAME` pairs (or files with one pair per line, \
         `#` comments) naming, for each pod on the node, the node-side end of its veth; \
         `host=IFNAME` names the host endpoint's own device. The pod must be on `--node` in \
         the inventory and the interface must exist in polc's network namespace.";
    LabSetupFailed = "B0508", "lab-setup-failed", Error,
        "Building or changing the policy lab failed; what it had built was removed.",
        "`polc lab up` builds network namespaces (one per pod, a router and a host namespace per \
         node, a world namespace), veth pairs, addresses and routes with iproute2's `ip`, then \
         loads the datapath onto every pod's and host's veth. The message names the step and \
         the kernel's or `ip`'s answer. On a failure everything the lab made is removed again; \
         `polc lab down` also cleans up after a crash. `polc lab apply` refuses an inventory \
         other than the one the lab was built from: run `polc lab up` again.";
    NoLab = "B0509", "no-lab", Error,
        "No policy lab of that name is up.",
        "`polc lab probe` and `polc lab apply` work on a lab `polc lab up` built (its state is \
         in `/run/polc-lab/<name>.json`). Build one first, or give the `--name` it was built \
         with.";
    ProbeFailed = "B0510", "probe-failed", Error,
        "A lab probe could not be run.",
        "A probe sends real packets from the source's network namespace and starts a listener \
         on the destination. This error means a socket could not be made, bound or used (the \
         address is missing from its namespace, or the port is taken by another program \
         there), so the probe says nothing about policy. A flow whose end is a pod without an \
         address, or whose two ends share a network namespace, is not probed and is not an \
         error.";
    ProxyFailed = "B0511", "proxy-failed", Error,
        "polc's L7 proxy could not start.",
        "`polc proxy` (started by `polc lab up` on every lab node) listens transparently on \
         the proxy ports its configuration names (HTTP ingress and egress, DNS over UDP and \
         TCP) and needs root for it. The message names what failed: an unreadable or invalid \
         `proxy.json`, a port another program holds, or a network namespace that does not \
         exist. While no proxy listens, the datapath drops the flows its policy sends to \
         one: an L7 rule never turns into an L4 allow.";
    HttpHeaderWithoutSpace = "L0324", "http-header-without-space", Warning,
        "An HTTP `headers` entry has a `:` but no space, so it names a header instead of a value.",
        "The agent splits each `headers` entry at its first space: `X-Token: abc` (or \
         `X-Token abc`) requires header `X-Token` with value `abc`, while `X-Token:abc` \
         requires the presence of a header literally named `X-Token:abc`, which no request \
         has, so the rule allows nothing. Put a space after the colon.";
    DuplicateInventoryObject = "L0323", "duplicate-inventory-object", Warning,
        "Two inventory objects name the same Pod, Node or Service, or two pods share an address.",
        "An inventory is one cluster's state: a pod name in a namespace, a node name and a pod \
         address each belong to one object. Two of them usually mean dumps of different \
         clusters or times were mixed; polc keeps the first and reports the other.";
}

impl Code {
    /// Looks a code up by its code (`S0218`) or its name (`combined-peer-kinds`),
    /// case-insensitively.
    pub fn lookup(s: &str) -> Option<Code> {
        let s = s.trim();
        Code::ALL
            .iter()
            .copied()
            .find(|c| c.as_str().eq_ignore_ascii_case(s) || c.name().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secondary location shown with a diagnostic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Related {
    /// Where.
    pub loc: Loc,
    /// What is there.
    pub message: String,
}

/// One finding, pointing at the YAML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The stable code.
    pub code: Code,
    /// Usually `code.severity()`.
    pub severity: Severity,
    /// One lower-case sentence.
    pub message: String,
    /// The span the diagnostic is about.
    pub loc: Loc,
    /// The text under the underline.
    pub label: String,
    /// How to fix it.
    pub help: Option<String>,
    /// Other places worth showing.
    pub related: Vec<Related>,
}

impl Diagnostic {
    /// A diagnostic with the code's severity, a message and a location; the label defaults
    /// to the code's name.
    pub fn new(code: Code, loc: Loc, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: code.severity(),
            message: message.into(),
            loc,
            label: code.name().replace('-', " "),
            help: None,
            related: Vec::new(),
        }
    }

    /// Sets the label under the underline.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Sets the help line.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a related location.
    pub fn related(mut self, loc: Loc, message: impl Into<String>) -> Self {
        self.related.push(Related {
            loc,
            message: message.into(),
        });
        self
    }
}

/// An ordered collection of diagnostics.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one diagnostic.
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    /// Appends all of `other`.
    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    /// The diagnostics, in the order they were added.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.items.iter()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether any is an error.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// Sorts by file, position and code, and drops exact duplicates.
    pub fn sort(&mut self) {
        self.items.sort_by(|a, b| {
            (a.loc.file, a.loc.start, a.code, &a.message).cmp(&(
                b.loc.file,
                b.loc.start,
                b.code,
                &b.message,
            ))
        });
        self.items.dedup();
    }

    /// The diagnostics as a vector.
    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.items
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_and_names_are_unique_and_well_formed() {
        let mut codes = HashSet::new();
        let mut names = HashSet::new();
        for c in Code::ALL {
            assert!(codes.insert(c.as_str()), "duplicate code {c}");
            assert!(names.insert(c.name()), "duplicate name {}", c.name());
            let prefix = &c.as_str()[..3];
            let expected = match c.severity() {
                Severity::Warning if prefix == "S02" => "S02",
                Severity::Warning | Severity::Note if prefix == "V04" => "V04",
                Severity::Note if prefix == "P01" => "P01",
                Severity::Warning => "L03",
                Severity::Note => "L03",
                Severity::Error if prefix == "P01" => "P01",
                Severity::Error if prefix == "Q04" => "Q04",
                Severity::Error if prefix == "B05" => "B05",
                Severity::Error => "S02",
            };
            assert_eq!(prefix, expected, "{c} has an unexpected severity");
            assert!(
                c.name()
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
            );
            assert!(c.summary().ends_with('.'));
        }
    }

    #[test]
    fn lookup_by_code_or_name() {
        assert_eq!(Code::lookup("s0218"), Some(Code::CombinedPeerKinds));
        assert_eq!(
            Code::lookup("combined-peer-kinds"),
            Some(Code::CombinedPeerKinds)
        );
        assert_eq!(Code::lookup("X9999"), None);
    }
}
