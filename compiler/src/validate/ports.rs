//! Port rules, L7 rules and ICMP rules (R13, R14, R17-R34, R39).

use super::syntax::{self, PortSpec};
use super::{V, rule, tables};
use crate::diag::{Code, Diagnostic};
use crate::raw::decode::{IntOrString, Spanned};
use crate::raw::policy::{HttpRule, IcmpRule, KafkaRule, L7Rules, PortProtocol, PortRule, Section};
use crate::raw::{Kind, Object};
use crate::version::CiliumVersion;

const MAX_PORTS: usize = 40;
const MAX_ICMP_FIELDS: usize = 40;

/// Checks one `toPorts` entry of an item in `section`; `host` is set for host policies.
pub(crate) fn check_port_rule(
    v: &mut V<'_>,
    obj: &Object,
    section: Section,
    pr: &PortRule,
    host: bool,
) {
    let ports: &[PortProtocol] = pr.ports.as_ref().map_or(&[], |p| p.value.as_slice());
    if let Some(p) = &pr.ports
        && p.len() > MAX_PORTS
    {
        v.report(
            Diagnostic::new(
                Code::TooManyPorts,
                p.key,
                format!("{} ports are listed; the maximum is {MAX_PORTS}", p.len()),
            )
            .label("too many ports")
            .help("split the list over several `toPorts` entries, or use `endPort` ranges"),
        );
    }
    for p in ports {
        check_port(v, p);
    }

    let Some(rules) = &pr.rules else {
        check_tls_and_listener(v, obj, section, pr, false);
        return;
    };
    check_l7(v, section, pr, rules, ports, host);
    check_tls_and_listener(v, obj, section, pr, true);
}

/// Section 4.3: the proxy redirects a port (per direction and endpoint) to one L7 parser;
/// two port rules of one rule that give the same port different L7 types make the agent
/// reject the policy ("cannot merge conflicting L7 parsers"). `port_rules` are the port rules
/// of one direction of one rule.
pub(crate) fn check_l7_conflicts<'a>(
    v: &mut V<'_>,
    port_rules: impl Iterator<Item = &'a PortRule>,
) {
    // (port, protocol, L7 type, where the type is written)
    let mut seen: Vec<(String, String, String, crate::source::Loc)> = Vec::new();
    for pr in port_rules {
        let Some(rules) = &pr.rules else { continue };
        let kind = if let Some(x) = &rules.http {
            ("http".to_string(), x.key)
        } else if let Some(x) = &rules.kafka {
            ("kafka".to_string(), x.key)
        } else if let Some(x) = &rules.dns {
            ("dns".to_string(), x.key)
        } else if let Some(x) = &rules.l7proto {
            (x.value.clone(), x.key)
        } else {
            continue;
        };
        for p in pr.ports.iter().flat_map(|p| p.iter()) {
            let Some(port) = &p.port else { continue };
            let port = port.value.to_ascii_lowercase();
            let proto = p
                .protocol
                .as_ref()
                .map_or("ANY".to_string(), |x| x.value.to_ascii_uppercase());
            let clash = seen.iter().find(|(sp, sproto, st, _)| {
                *sp == port
                    && (*sproto == proto || sproto == "ANY" || proto == "ANY")
                    && *st != kind.0
            });
            if let Some((_, sproto, st, sloc)) = clash {
                let d = Diagnostic::new(
                    Code::ConflictingL7Parsers,
                    kind.1,
                    format!(
                        "port `{port}/{proto}` gets `{}` rules here but `{st}` rules elsewhere in this rule",
                        kind.0
                    ),
                )
                .label("second L7 parser for the port")
                .related(*sloc, format!("`{st}` rules for `{port}/{sproto}`"))
                .help("a port is redirected to one L7 proxy parser; use one L7 type per port");
                v.report(d);
            } else {
                seen.push((port, proto, kind.0.clone(), kind.1));
            }
        }
    }
}

fn check_port(v: &mut V<'_>, p: &PortProtocol) {
    let protocol = p.protocol.as_ref();
    let extended =
        protocol.is_some_and(|pr| tables::ALL_EXTENDED_PROTOCOLS.contains(&pr.value.as_str()));
    if let Some(pr) = protocol {
        // The CRD enum is upper-case; the agent itself upper-cases what it parses.
        let written = if v.crd {
            pr.value.clone()
        } else {
            pr.value.to_ascii_uppercase()
        };
        let ok = tables::PORT_PROTOCOLS.contains(&written.as_str())
            || tables::extended_protocols(v.opts.version).contains(&written.as_str());
        if !ok {
            let upper = pr.value.to_ascii_uppercase();
            let help = if upper == "ICMP" || upper == "ICMPV6" {
                "ICMP is not a `protocol`: write an `icmps` item with `fields: [{type: ...}]`"
                    .to_string()
            } else if tables::PORT_PROTOCOLS.contains(&upper.as_str())
                || tables::extended_protocols(v.opts.version).contains(&upper.as_str())
            {
                format!("protocols are upper-case in the CRD: write `{upper}`")
            } else if tables::ALL_EXTENDED_PROTOCOLS.contains(&upper.as_str()) {
                format!(
                    "`{upper}` is not accepted by Cilium {}; protocols are {}",
                    v.opts.version,
                    protocol_list(v.opts.version)
                )
            } else {
                format!("protocols are {}", protocol_list(v.opts.version))
            };
            v.report(
                Diagnostic::new(
                    Code::InvalidProtocol,
                    pr.loc,
                    format!("`{}` is not a valid protocol", pr.value),
                )
                .label("invalid protocol")
                .help(help),
            );
        }
    }
    if extended
        && protocol.is_some_and(|pr| {
            tables::extended_protocols(v.opts.version).contains(&pr.value.as_str())
        })
        && let Some(pr) = protocol
    {
        v.report(
                Diagnostic::new(
                    Code::RequiresAgentFlag,
                    pr.loc,
                    format!("protocol `{}` only works when the agent runs with `enable-extended-ip-protocols=true`", pr.value),
                )
                .label("needs an agent flag")
                .help("without the flag the agent rejects the rule (\"port must be specified\")"),
            );
    }
    let Some(port) = &p.port else {
        if !extended && !p.written("port") {
            v.report(
                Diagnostic::new(Code::MissingPort, p.loc, "the port entry has no `port`")
                    .label("no `port`")
                    .help("write `port: \"0\"` for every port of the protocol"),
            );
        }
        return;
    };
    if extended {
        if !(port.value.is_empty() || port.value == "0") {
            v.report(
                Diagnostic::new(
                    Code::PortOnPortlessProtocol,
                    port.loc,
                    format!(
                        "protocol `{}` has no ports, but port `{}` is given",
                        p.protocol.as_ref().map_or("", |x| x.value.as_str()),
                        port.value
                    ),
                )
                .label("must be empty or \"0\"")
                .help("remove `port`, or set it to `\"0\"`"),
            );
        }
        return;
    }
    if port.value.is_empty() {
        v.report(
            Diagnostic::new(Code::MissingPort, port.loc, "the port is empty")
                .label("empty port")
                .help("write `port: \"0\"` for every port of the protocol"),
        );
        return;
    }
    let parsed = match syntax::parse_port(&port.value) {
        Ok(p) => p,
        Err(why) => {
            v.report(
                Diagnostic::new(
                    Code::InvalidPort,
                    port.loc,
                    format!("`{}` is not a valid port", port.value),
                )
                .label("unable to parse port")
                .help(why),
            );
            return;
        }
    };
    if let PortSpec::Number(n, true) = parsed {
        v.report(
            Diagnostic::new(
                Code::OctalPort,
                port.loc,
                format!(
                    "`{}` has a leading zero, so the agent reads it as octal: port {n}",
                    port.value
                ),
            )
            .label(format!("means port {n}"))
            .help(format!(
                "write `\"{n}\"` if port {n} is meant, or drop the leading zero"
            )),
        );
    }
    let Some(end) = &p.end_port else {
        return;
    };
    if !(0..=65535).contains(&end.value) {
        v.report(
            Diagnostic::new(
                Code::ValueOutOfRange,
                end.loc,
                format!("`endPort` {} is outside 0-65535", end.value),
            )
            .label("out of range")
            .help("port ranges end at most at 65535"),
        );
        return;
    }
    match parsed {
        PortSpec::Name(n) => v.report(
            Diagnostic::new(
                Code::IneffectiveEndPort,
                end.key,
                format!("`endPort` is ignored for the named port `{n}`"),
            )
            .label("ignored")
            .help("use a numeric `port` to allow a range"),
        ),
        PortSpec::Number(start, _) if end.value != 0 && end.value < i64::from(start) => v.report(
            Diagnostic::new(
                Code::IneffectiveEndPort,
                end.loc,
                format!(
                    "`endPort` {} is below `port` {start}, so only port {start} is allowed",
                    end.value
                ),
            )
            .label("below `port`")
            .help("`endPort` is the inclusive end of the range and must not be below `port`"),
        ),
        _ => {}
    }
}

fn protocol_list(version: CiliumVersion) -> String {
    tables::PORT_PROTOCOLS
        .iter()
        .chain(tables::extended_protocols(version))
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_l7(
    v: &mut V<'_>,
    section: Section,
    pr: &PortRule,
    rules: &Spanned<L7Rules>,
    ports: &[PortProtocol],
    host: bool,
) {
    let types: Vec<(&str, crate::source::Loc)> = [
        rules.http.as_ref().map(|x| ("http", x.key)),
        rules.kafka.as_ref().map(|x| ("kafka", x.key)),
        rules.dns.as_ref().map(|x| ("dns", x.key)),
        rules.l7proto.as_ref().map(|x| ("l7proto", x.key)),
        rules
            .l7
            .as_ref()
            .filter(|_| rules.l7proto.is_none())
            .map(|x| ("l7", x.key)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut types = types;
    types.sort_by_key(|t| t.1.start);
    if types.len() > 1 {
        v.report(
            Diagnostic::new(
                Code::MultipleL7Types,
                types[1].1,
                format!(
                    "`{}` and `{}` rules cannot be mixed in one `rules` block",
                    types[0].0, types[1].0
                ),
            )
            .label("second L7 protocol")
            .help("use one `toPorts` entry per L7 protocol"),
        );
    }
    let is_dns = rules.dns.is_some();
    let non_dns: Option<(&str, crate::source::Loc)> = types.iter().copied().find(|t| t.0 != "dns");

    if host {
        let bad = if section.is_ingress() {
            types.first().copied()
        } else {
            rules.http.as_ref().map(|x| ("http", x.key))
        };
        if let Some((t, loc)) = bad {
            v.report(
                Diagnostic::new(
                    Code::L7OnHostPolicy,
                    loc,
                    format!(
                        "`{t}` rules are not supported in a host policy's {}",
                        if section.is_ingress() {
                            "ingress"
                        } else {
                            "egress"
                        }
                    ),
                )
                .label("not enforceable on the host")
                .help("host policies support L7 only as DNS rules on egress; remove the L7 rules"),
            );
        }
    }
    if let Some(dns) = &rules.dns {
        if section.is_ingress() {
            v.report(
                Diagnostic::new(Code::DnsRulesOnIngress, dns.key, "DNS rules are not allowed on ingress")
                    .label("DNS on ingress")
                    .help("the DNS proxy sees the selected pods' outgoing queries: move the rule to egress"),
            );
        }
        if ports.is_empty() {
            v.report(
                Diagnostic::new(Code::DnsRulesWithoutPorts, dns.key, "DNS rules need a port")
                    .label("no port")
                    .help("add `ports: [{port: \"53\", protocol: ANY}]`"),
            );
        }
        for f in dns.iter() {
            rule::check_fqdn(v, f);
        }
    }
    for p in ports {
        let Some(port) = &p.port else { continue };
        if port.value == "0" {
            v.report(
                Diagnostic::new(
                    Code::L7OnWildcardPort,
                    port.loc,
                    "L7 rules cannot apply to port `0` (all ports)",
                )
                .label("all ports")
                .help("name the concrete port the proxy should handle"),
            );
        }
        if is_dns
            && let (Some(end), Ok(PortSpec::Number(start, _))) =
                (&p.end_port, syntax::parse_port(&port.value))
            && end.value > i64::from(start)
        {
            v.report(
                Diagnostic::new(
                    Code::DnsRulesOnPortRange,
                    end.key,
                    "DNS rules cannot apply to a port range",
                )
                .label("range")
                .help("remove `endPort`: DNS is proxied on single ports"),
            );
        }
        if let Some((t, _)) = non_dns {
            let proto = p.protocol.as_ref().map(|x| x.value.as_str());
            if proto != Some("TCP") {
                let (loc, found) = match &p.protocol {
                    Some(x) => (x.loc, format!("`{}`", x.value)),
                    None => (port.loc, "omitted (ANY)".to_string()),
                };
                v.report(
                    Diagnostic::new(
                        Code::L7RequiresTcp,
                        loc,
                        format!("`{t}` rules need protocol `TCP`, but the protocol is {found}"),
                    )
                    .label("not TCP")
                    .help("add `protocol: TCP` to the port"),
                );
            }
        }
    }
    if rules.l7.is_some()
        && rules.l7proto.is_none()
        && let Some(l7) = &rules.l7
    {
        v.report(
            Diagnostic::new(
                Code::L7WithoutParser,
                l7.key,
                "generic `l7` rules need `l7proto`",
            )
            .label("no parser named")
            .help("set `l7proto` to the name of the proxylib parser"),
        );
    }
    if (rules.kafka.is_some() || rules.l7proto.is_some()) && v.opts.version >= CiliumVersion::V1_18
    {
        let loc = rules.kafka.as_ref().map_or_else(
            || rules.l7proto.as_ref().map_or(rules.key, |x| x.key),
            |k| k.key,
        );
        v.report(
            Diagnostic::new(
                Code::DeprecatedL7,
                loc,
                if rules.kafka.is_some() {
                    "Kafka L7 rules are deprecated since Cilium 1.18 and removed in 1.20"
                } else {
                    "generic `l7proto` rules are deprecated since Cilium 1.18 and removed in 1.20"
                },
            )
            .label("deprecated; polc's proxy does not enforce it")
            .help(
                "plan a replacement before upgrading to Cilium 1.20; on polc's datapath \
                 (`polc load`, `polc lab`) no proxy serves this port, so its traffic is \
                 dropped (fail closed)",
            ),
        );
    }
    for h in rules.http.iter().flat_map(|h| h.iter()) {
        check_http(v, h);
    }
    for k in rules.kafka.iter().flat_map(|k| k.iter()) {
        check_kafka(v, k);
    }
    let _ = pr;
}

fn check_http(v: &mut V<'_>, h: &HttpRule) {
    for (field, val) in [("method", &h.method), ("path", &h.path), ("host", &h.host)] {
        let Some(val) = val else { continue };
        let error = v
            .regex_cache
            .entry(val.value.clone())
            .or_insert_with(|| super::goregex::go_regex_error(&val.value))
            .clone();
        if let Some(why) = error {
            v.report(
                Diagnostic::new(
                    Code::InvalidHttpRegex,
                    val.loc,
                    format!(
                        "HTTP `{field}` `{}` is not a valid regular expression",
                        val.value
                    ),
                )
                .label("invalid regex")
                .help(format!(
                    "{why}; escape literal characters such as `*` or `(` with `\\`"
                )),
            );
        } else if field == "path" && !can_start_with_slash(&val.value) {
            v.report(
                Diagnostic::new(
                    Code::HttpPathNeverMatches,
                    val.loc,
                    format!("HTTP path `{}` cannot match any request path", val.value),
                )
                .label("does not start with `/`")
                .help(format!(
                    "request paths start with `/` and the whole path must match: write `/{}`",
                    val.value
                )),
            );
        } else if field == "path" && val.value.ends_with("/*") && !val.value.ends_with(".*") {
            let prefix = &val.value[..val.value.len() - 1];
            v.report(
                Diagnostic::new(
                    Code::HttpPathGlob,
                    val.loc,
                    format!(
                        "HTTP path `{}` is a regular expression, not a glob: `/*` means \
                         \"any number of slashes\"",
                        val.value
                    ),
                )
                .label("matches only the prefix itself and trailing slashes")
                .help(format!(
                    "to match everything under the prefix, write `{prefix}.*`"
                )),
            );
        } else if field == "method" && is_lowercase_method(&val.value) {
            v.report(
                Diagnostic::new(
                    Code::HttpMethodCase,
                    val.loc,
                    format!(
                        "HTTP method `{}` never matches: methods are upper-case and the match \
                         is case-sensitive",
                        val.value
                    ),
                )
                .label("lower-case method")
                .help(format!("write `{}`", val.value.to_ascii_uppercase())),
            );
        }
    }
    for e in h.headers.iter().flat_map(|e| e.iter()) {
        if let Some((name, value)) = e.value.split_once(':')
            && !e.value.contains(' ')
            && !name.is_empty()
            && !value.is_empty()
        {
            v.report(
                Diagnostic::new(
                    Code::HttpHeaderWithoutSpace,
                    e.loc,
                    format!(
                        "`{}` names a header called `{}`: without a space the agent does not \
                         split it into a name and a value",
                        e.value, e.value
                    ),
                )
                .label("a header name, not `name: value`")
                .help(format!(
                    "to require `{name}` with the value `{value}`, write `{name}: {value}`"
                )),
            );
        }
    }
    for m in h.header_matches.iter().flat_map(|m| m.iter()) {
        match &m.name {
            Some(n) if !n.value.is_empty() => {}
            _ => v.report(
                Diagnostic::new(
                    Code::InvalidHeaderMatch,
                    m.name.as_ref().map_or(m.loc, |n| n.loc),
                    "the header match has no `name`",
                )
                .label("header name missing")
                .help("set `name` to the HTTP header to match"),
            ),
        }
        if let Some(mm) = &m.mismatch
            && !["LOG", "ADD", "DELETE", "REPLACE"].contains(&mm.value.as_str())
        {
            v.report(
                Diagnostic::new(
                    Code::InvalidHeaderMatch,
                    mm.loc,
                    format!("`{}` is not a mismatch action", mm.value),
                )
                .label("invalid action")
                .help("use `LOG`, `ADD`, `DELETE` or `REPLACE` (or omit it to deny on mismatch)"),
            );
        }
        if let Some(s) = &m.secret
            && s.name.as_ref().is_none_or(|n| n.value.is_empty())
        {
            v.report(
                Diagnostic::new(
                    Code::InvalidHeaderMatch,
                    s.key,
                    "the header match's `secret` has no `name`",
                )
                .label("secret name missing")
                .help("name the Secret that holds the header value"),
            );
        }
    }
}

/// Whether a method regex is plain lower-case words (`get`, `get|post`), which can never
/// match an HTTP method.
fn is_lowercase_method(re: &str) -> bool {
    re.bytes().any(|b| b.is_ascii_lowercase())
        && re
            .split('|')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphabetic()))
        && !re.bytes().any(|b| b.is_ascii_uppercase())
}

/// Whether a full-match regex could match a string starting with `/`.
fn can_start_with_slash(re: &str) -> bool {
    let r = re.strip_prefix('^').unwrap_or(re);
    match r.chars().next() {
        None => false,
        Some(c) if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '~' => false,
        _ => true,
    }
}

fn check_kafka(v: &mut V<'_>, k: &KafkaRule) {
    let mut bad = |loc, msg: String, help: &str| {
        v.report(
            Diagnostic::new(Code::InvalidKafkaRule, loc, msg)
                .label("invalid Kafka rule")
                .help(help.to_string()),
        );
    };
    if let (Some(_), Some(key)) = (&k.role, &k.api_key) {
        bad(
            key.key,
            "`role` and `apiKey` cannot both be set".into(),
            "use `role` for produce/consume, or `apiKey` for one API call",
        );
    }
    if let Some(role) = &k.role {
        let r = role.value.to_ascii_lowercase();
        if r != "produce" && r != "consume" {
            bad(
                role.loc,
                format!("`{}` is not a Kafka role", role.value),
                "roles are `produce` and `consume`",
            );
        }
    }
    if let Some(key) = &k.api_key
        && !tables::KAFKA_API_KEYS.contains(&key.value.to_ascii_lowercase().as_str())
    {
        bad(
            key.loc,
            format!("`{}` is not a Kafka API key", key.value),
            "API keys are names such as `produce`, `fetch`, `metadata`, `createtopics`",
        );
    }
    if let Some(ver) = &k.api_version
        && ver.value.parse::<i16>().map_or(true, |n| n < 0)
    {
        bad(
            ver.loc,
            format!("`{}` is not a Kafka API version", ver.value),
            "API versions are numbers from 0 to 32767",
        );
    }
    if let Some(t) = &k.topic
        && (t.value.len() > 255
            || !t
                .value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
    {
        bad(
            t.loc,
            format!("`{}` is not a valid Kafka topic", t.value),
            "topics are at most 255 characters of `[a-zA-Z0-9._-]`",
        );
    }
}

fn check_tls_and_listener(
    v: &mut V<'_>,
    obj: &Object,
    section: Section,
    pr: &PortRule,
    has_l7: bool,
) {
    if let Some(names) = &pr.server_names {
        if names.is_empty() {
            v.report(
                Diagnostic::new(
                    Code::InvalidServerName,
                    names.key,
                    "`serverNames` is an empty list",
                )
                .label("empty list")
                .help("list at least one server name, or remove `serverNames`"),
            );
        }
        for n in names.iter() {
            if let Some(why) = syntax::server_name_error(&n.value) {
                v.report(
                    Diagnostic::new(
                        Code::InvalidServerName,
                        n.loc,
                        format!("`{}` is not a valid server name", n.value),
                    )
                    .label("invalid server name")
                    .help(why),
                );
            }
        }
        if has_l7 && pr.terminating_tls.is_none() {
            v.report(
                Diagnostic::new(
                    Code::ServerNamesWithoutTls,
                    names.key,
                    "`serverNames` with L7 rules needs `terminatingTLS`",
                )
                .label("TLS not terminated")
                .help(
                    "add `terminatingTLS` so the proxy can see the requests, or drop the L7 rules",
                ),
            );
        }
        if section.is_ingress() {
            v.report(
                Diagnostic::new(
                    Code::ServerNamesOnIngress,
                    names.key,
                    "`serverNames` on ingress is not enforced as expected",
                )
                .label("ingress")
                .help("SNI matching is meant for egress to TLS servers"),
            );
        }
    }
    for tls in [&pr.terminating_tls, &pr.originating_tls]
        .into_iter()
        .flatten()
    {
        match &tls.secret {
            None if tls.written("secret") => {}
            None => v.report(
                Diagnostic::new(
                    Code::MissingRequiredField,
                    tls.key,
                    "a TLS context needs a `secret`",
                )
                .label("no `secret`")
                .help("add `secret: {name: ..., namespace: ...}`"),
            ),
            Some(s)
                if !s.written("name") || s.name.as_ref().is_some_and(|n| n.value.is_empty()) =>
            {
                v.report(
                    Diagnostic::new(
                        Code::MissingRequiredField,
                        s.key,
                        "the TLS `secret` has no `name`",
                    )
                    .label("no `name`")
                    .help("name the Secret holding the certificates"),
                )
            }
            _ => {}
        }
    }
    let Some(l) = &pr.listener else { return };
    if section.is_ingress() {
        v.report(
            Diagnostic::new(
                Code::ListenerOnIngress,
                l.key,
                "`listener` is only supported on egress",
            )
            .label("ingress")
            .help("move the redirect to an egress rule"),
        );
    }
    if has_l7 {
        v.report(
            Diagnostic::new(
                Code::ListenerWithL7Rules,
                l.key,
                "`listener` cannot be combined with L7 `rules`",
            )
            .label("listener beside L7 rules")
            .help("put the L7 logic into the Envoy listener, or drop the listener"),
        );
    }
    match &l.envoy_config {
        None if l.written("envoyConfig") => {}
        None => v.report(
            Diagnostic::new(
                Code::MissingRequiredField,
                l.key,
                "`listener.envoyConfig` is required",
            )
            .label("no `envoyConfig`")
            .help("add `envoyConfig: {kind: CiliumEnvoyConfig, name: ...}`"),
        ),
        Some(ec) => {
            if let Some(kind) = &ec.kind {
                if kind.value != "CiliumEnvoyConfig" && kind.value != "CiliumClusterwideEnvoyConfig"
                {
                    v.report(
                        Diagnostic::new(
                            Code::InvalidEnumValue,
                            kind.loc,
                            format!("`{}` is not an Envoy config kind", kind.value),
                        )
                        .label("invalid kind")
                        .help("use `CiliumEnvoyConfig` or `CiliumClusterwideEnvoyConfig`"),
                    );
                } else if kind.value == "CiliumEnvoyConfig"
                    && obj.kind == Kind::CiliumClusterwideNetworkPolicy
                {
                    v.report(
                        Diagnostic::new(
                            Code::ListenerKindMismatch,
                            kind.loc,
                            "a clusterwide policy cannot redirect to a namespaced CiliumEnvoyConfig",
                        )
                        .label("namespaced config")
                        .help("use a CiliumClusterwideEnvoyConfig"),
                    );
                }
            }
            if !ec.written("name") || ec.name.as_ref().is_some_and(|n| n.value.is_empty()) {
                v.report(
                    Diagnostic::new(
                        Code::MissingRequiredField,
                        ec.key,
                        "`envoyConfig.name` is required",
                    )
                    .label("no `name`")
                    .help("name the Envoy config that defines the listener"),
                );
            }
        }
    }
    if !l.written("name") || l.name.as_ref().is_some_and(|n| n.value.is_empty()) {
        v.report(
            Diagnostic::new(
                Code::MissingRequiredField,
                l.key,
                "`listener.name` is required",
            )
            .label("no `name`")
            .help("name the listener inside the Envoy config"),
        );
    }
    if let Some(p) = &l.priority
        && !(1..=100).contains(&p.value)
    {
        v.report(
            Diagnostic::new(
                Code::ValueOutOfRange,
                p.loc,
                format!("listener priority {} is outside 1-100", p.value),
            )
            .label("out of range")
            .help("priorities go from 1 (highest) to 100"),
        );
    }
}

/// Checks one `icmps` entry (R18, R39).
pub(crate) fn check_icmp_rule(v: &mut V<'_>, r: &IcmpRule) {
    let Some(fields) = &r.fields else { return };
    if fields.len() > MAX_ICMP_FIELDS {
        v.report(
            Diagnostic::new(
                Code::TooManyIcmpFields,
                fields.key,
                format!(
                    "{} ICMP types are listed; the maximum is {MAX_ICMP_FIELDS}",
                    fields.len()
                ),
            )
            .label("too many types")
            .help("split the list over several `icmps` entries"),
        );
    }
    for f in fields.iter() {
        let v6 = match &f.family {
            None => false,
            Some(fam) if fam.value == "IPv4" => false,
            Some(fam) if fam.value == "IPv6" => true,
            Some(fam) => {
                v.report(
                    Diagnostic::new(
                        Code::InvalidEnumValue,
                        fam.loc,
                        format!("`{}` is not an ICMP family", fam.value),
                    )
                    .label("invalid family")
                    .help("use `IPv4` or `IPv6` (case-sensitive)"),
                );
                continue;
            }
        };
        let Some(t) = &f.icmp_type else {
            if f.written("type") {
                continue;
            }
            v.report(
                Diagnostic::new(
                    Code::MissingRequiredField,
                    f.loc,
                    "the ICMP field has no `type`",
                )
                .label("no `type`")
                .help("set `type` to a number from 0 to 255 or a type name such as `EchoRequest`"),
            );
            continue;
        };
        let family = if v6 { "IPv6" } else { "IPv4" };
        match &t.value {
            IntOrString::Int(n) if (0..=255).contains(n) => {}
            IntOrString::Int(n) => v.report(
                Diagnostic::new(
                    Code::UnknownIcmpType,
                    t.loc,
                    format!("ICMP type {n} is outside 0-255"),
                )
                .label("out of range")
                .help("ICMP types are numbers from 0 to 255"),
            ),
            // The CRD pattern admits decimal strings without leading zeros.
            IntOrString::Str(s) if s.parse::<u8>().is_ok() && (s == "0" || !s.starts_with('0')) => {
            }
            IntOrString::Str(s) if s == "ExtendedEchoReply" => v.report(
                Diagnostic::new(
                    Code::UnknownIcmpType,
                    t.loc,
                    "ICMP type `ExtendedEchoReply` is rejected by the CRD's type pattern",
                )
                .label("not accepted by the API server")
                .help(format!(
                    "the CRD pattern misspells this name as `ExtendedEcho Reply`, so the API \
                     server rejects it; write the number instead: `{}`",
                    if v6 { 161 } else { 43 }
                )),
            ),
            IntOrString::Str(s) => {
                if tables::icmp_type(v6, s).is_none() {
                    let other = tables::icmp_type(!v6, s).is_some();
                    v.report(
                        Diagnostic::new(
                            Code::UnknownIcmpType,
                            t.loc,
                            format!("ICMP type `{s}` not found in {family}"),
                        )
                        .label(format!("not an {family} type"))
                        .help(if other {
                            format!(
                                "`{s}` is an {} type: set `family: {}`",
                                if v6 { "IPv4" } else { "IPv6" },
                                if v6 { "IPv4" } else { "IPv6" }
                            )
                        } else {
                            "use a number from 0 to 255 or a name such as `EchoRequest`".to_string()
                        }),
                    );
                }
            }
        }
    }
}
