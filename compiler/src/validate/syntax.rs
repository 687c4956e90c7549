//! Small syntax predicates shared by the validators: Kubernetes names, label keys and values,
//! CIDRs, ports, FQDN patterns. Each cites the rule it implements.

use ipnet::IpNet;
use std::net::IpAddr;
use std::str::FromStr;

/// A DNS-1123 label: at most 63 lower-case alphanumerics or `-`, alphanumeric at both ends
/// (namespace names).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: at most 253 characters, dot-separated DNS labels (object names).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// A Kubernetes label name part: at most 63 characters of `[A-Za-z0-9-_.]`, alphanumeric at
/// both ends.
pub fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// A Kubernetes label value: empty, or a label name.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

/// A Kubernetes qualified name (label key): optional DNS-subdomain prefix and `/`, then a
/// label name.
pub fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(s),
    }
}

/// Why a Cilium selector key is invalid (`pkg/labels/validation.go`), or `None` if valid.
///
/// A key is an optional `source:` (source `[A-Za-z0-9]+`; a leading `$` abbreviates
/// `reserved:`), at most one `:`, then a qualified name, after stripping an optional
/// `io.cilium.k8s.namespace.labels.` prefix.
pub fn cilium_label_key_error(key: &str) -> Option<String> {
    let key = key.strip_prefix('$').unwrap_or(key);
    if key.matches(':').count() > 1 {
        return Some("a label key may contain only one `:`, to separate the source".into());
    }
    let name = match key.split_once(':') {
        Some((source, name)) => {
            if source.is_empty() || !source.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Some(format!("the source `{source}` must be alphanumeric"));
            }
            name
        }
        None => key,
    };
    let name = name
        .strip_prefix("io.cilium.k8s.namespace.labels.")
        .unwrap_or(name);
    if is_qualified_name(name) {
        None
    } else {
        Some(qualified_name_help(name))
    }
}

/// Why a plain Kubernetes label key is invalid, or `None` (NetworkPolicy selectors).
pub fn k8s_label_key_error(key: &str) -> Option<String> {
    if is_qualified_name(key) {
        None
    } else {
        Some(qualified_name_help(key))
    }
}

fn qualified_name_help(name: &str) -> String {
    if name.is_empty() {
        "the key is empty".into()
    } else if name.split_once('/').is_some_and(|(_, n)| n.len() > 63) || name.len() > 316 {
        "the name part of a key is at most 63 characters".into()
    } else {
        "a key is an optional DNS-subdomain prefix and `/`, then a name of `[A-Za-z0-9-_.]` \
         starting and ending with an alphanumeric"
            .into()
    }
}

/// Parses a CIDR in prefix notation (`10.0.0.0/8`).
pub fn parse_prefix(s: &str) -> Result<IpNet, String> {
    if s.is_empty() {
        return Err("the CIDR is empty".into());
    }
    match IpNet::from_str(s) {
        Ok(n) => Ok(n),
        Err(_) => {
            if IpAddr::from_str(s).is_ok() {
                Err(format!(
                    "`{s}` is an address, not a CIDR; write `{s}/{}`",
                    if s.contains(':') { 128 } else { 32 }
                ))
            } else {
                Err(format!("`{s}` is not a CIDR in `address/length` notation"))
            }
        }
    }
}

/// What a `port` string means to the agent (`pkg/policy/api/l4.go`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    /// A number (0 = all ports), and whether it was written in octal.
    Number(u16, bool),
    /// A named port, lower-cased.
    Name(String),
}

/// Whether `s` is an IANA service name as the agent tests it: 1-15 characters matching
/// `^([a-zA-Z0-9]-?)*[a-zA-Z](-?[a-zA-Z0-9])*$`.
pub fn is_cilium_port_name(s: &str) -> bool {
    if s.is_empty() || s.len() > 15 {
        return false;
    }
    let b = s.as_bytes();
    if !b.iter().any(u8::is_ascii_alphabetic) {
        return false;
    }
    if !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
        return false;
    }
    b[0] != b'-' && b[b.len() - 1] != b'-' && !s.contains("--")
}

/// Parses a `port` string the way the agent does: a service name if it looks like one,
/// otherwise an unsigned 16-bit integer with Go's base detection (`0` prefix = octal).
pub fn parse_port(s: &str) -> Result<PortSpec, String> {
    if is_cilium_port_name(s) {
        return Ok(PortSpec::Name(s.to_ascii_lowercase()));
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(
            if s.bytes().any(|b| b.is_ascii_alphabetic()) && s.len() > 15 {
                format!("`{s}` is too long for a port name (at most 15 characters)")
            } else {
                format!("`{s}` is neither a port number nor a port name")
            },
        );
    }
    let (digits, radix, octal) = if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8, true)
    } else {
        (s, 10, false)
    };
    match u16::from_str_radix(digits, radix) {
        Ok(n) => Ok(PortSpec::Number(n, octal)),
        Err(_) if octal => Err(format!(
            "`{s}` starts with `0`, so the agent reads it as octal, and it is not a valid octal \
             number"
        )),
        Err(_) => Err(format!("`{s}` is larger than 65535")),
    }
}

/// Whether `s` is a Kubernetes (IANA) service name as NetworkPolicy validates it:
/// at most 15 lower-case alphanumerics or `-`, at least one letter, no `--`, no `-` at the ends.
pub fn is_iana_svc_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// Why an FQDN `matchName` (or, with `pattern`, `matchPattern`) is invalid, or `None`.
///
/// CRD patterns: names `^([-a-zA-Z0-9_]+[.]?)+$`, patterns `^([-a-zA-Z0-9_*]+[.]?)+$`, each at
/// most 255 characters.
pub fn fqdn_error(s: &str, pattern: bool) -> Option<String> {
    if s.is_empty() {
        return Some("the name is empty".into());
    }
    if s.len() > 255 {
        return Some(format!(
            "the name is {} characters long; the maximum is 255",
            s.len()
        ));
    }
    let ok_char =
        |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || (pattern && c == '*');
    if let Some(bad) = s.chars().find(|&c| !ok_char(c) && c != '.') {
        return Some(if bad == '*' {
            "`*` is only allowed in `matchPattern`".into()
        } else {
            format!("`{bad}` is not allowed in a DNS name")
        });
    }
    if s.starts_with('.') || s.contains("..") {
        return Some("the name has an empty label".into());
    }
    None
}

/// Why a `serverNames` entry is invalid, or `None`. Patterns as in
/// `^(\*?\*\.)?([-a-zA-Z0-9_]+\.?)+$` (Cilium 1.17-1.19).
pub fn server_name_error(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("empty server name is not allowed".into());
    }
    if s.len() > 255 {
        return Some("a server name is at most 255 characters".into());
    }
    let rest = s
        .strip_prefix("**.")
        .or_else(|| s.strip_prefix("*."))
        .unwrap_or(s);
    fqdn_error(rest, false).map(|e| {
        if rest.contains('*') {
            "`*` is only allowed as a leading `*.` or `**.`".into()
        } else {
            e
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_like_the_agent() {
        assert_eq!(parse_port("80"), Ok(PortSpec::Number(80, false)));
        assert_eq!(parse_port("0"), Ok(PortSpec::Number(0, false)));
        assert_eq!(parse_port("010"), Ok(PortSpec::Number(8, true)));
        assert!(parse_port("08").is_err());
        assert!(parse_port("65536").is_err());
        assert_eq!(parse_port("HTTP"), Ok(PortSpec::Name("http".into())));
        assert_eq!(parse_port("0x50"), Ok(PortSpec::Name("0x50".into())));
        assert!(parse_port("REMOVE_ME_AFTER_DOUBLE_CHECKING_PORTS").is_err());
        assert!(parse_port("").is_err());
    }

    #[test]
    fn label_keys() {
        assert!(cilium_label_key_error("app").is_none());
        assert!(cilium_label_key_error("k8s:io.kubernetes.pod.namespace").is_none());
        assert!(cilium_label_key_error("$host").is_none());
        assert!(cilium_label_key_error("reserved:host").is_none());
        assert!(
            cilium_label_key_error(
                "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name"
            )
            .is_none()
        );
        assert!(cilium_label_key_error("a:b:c").is_some());
        assert!(cilium_label_key_error("k-8:app").is_some());
        assert!(cilium_label_key_error("-app").is_some());
        assert!(k8s_label_key_error("k8s:app").is_some());
    }

    #[test]
    fn names() {
        assert!(is_dns_subdomain("my.policy-1"));
        assert!(!is_dns_subdomain("My_Policy"));
        assert!(is_dns_label("kube-system"));
        assert!(!is_dns_label("a.b"));
    }

    #[test]
    fn fqdns() {
        assert!(fqdn_error("api.github.com", false).is_none());
        assert!(fqdn_error("*.github.com", true).is_none());
        assert!(fqdn_error("*.github.com", false).is_some());
        assert!(fqdn_error("api/github", false).is_some());
        assert!(server_name_error("**.example.com").is_none());
        assert!(server_name_error("").is_some());
    }
}
