//! Policy tests (`*.polt`): expectations about flows, checked by `polc test`.
//!
//! ```text
//! # comments run to the end of the line
//! inventory "cluster/"            # optional: concrete mode; paths relative to this file
//! policies "policies/"            # optional: else the paths given on the command line
//!
//! expect allow shop/{app=frontend} -> shop/{app=backend} tcp/8080
//! expect deny  world -> shop/{app=backend} tcp/1-65535
//! expect allow shop/{app=frontend} -> shop/{app=backend} tcp/8080 http GET "/api/items"
//! expect allow pod shop/frontend-0 -> ip 203.0.113.10 tcp/443
//! expect deny  */{team!=payments} -> payments/{} any
//! ```
//!
//! The grammar is `polt.pest`; selectors inside `{}` are kubectl-style expressions parsed by
//! [`crate::selector`]. This module builds the typed tree and checks what the grammar cannot
//! (port bounds, addresses, prefixes), with byte spans for every error.

use crate::selector::{Selector, parse_selector};
use pest::Parser as _;
use pest::iterators::Pair;
use std::net::IpAddr;
use std::str::FromStr;

mod parser {
    #![allow(missing_docs)]
    //! The pest parser generated from `polt.pest`.

    #[derive(pest_derive::Parser)]
    #[grammar = "polt.pest"]
    pub struct PoltParser;
}

use parser::{PoltParser, Rule};

/// A byte span in the file.
pub type Span = (usize, usize);

/// A parsed `.polt` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoltFile {
    /// `inventory "PATH"` directives (paths as written, relative to the file).
    pub inventory: Vec<(String, Span)>,
    /// `policies "PATH"` directives.
    pub policies: Vec<(String, Span)>,
    /// The expectations, in order.
    pub expectations: Vec<Expectation>,
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Every flow described is allowed.
    Allow,
    /// Every flow described is denied.
    Deny,
}

/// One end of the flows an expectation describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Pods in a namespace (`None`: any namespace) whose labels match.
    Pods {
        /// The namespace, or `None` for `*`.
        namespace: Option<String>,
        /// The label selector (empty: any labels).
        selector: Selector,
    },
    /// One inventory pod.
    Pod {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A node's host: the other end's own node when `None`.
    Host(Option<String>),
    /// Another node than the other end's.
    RemoteNode,
    /// Anything outside the cluster.
    World,
    /// One address.
    Ip(IpAddr),
    /// The addresses of a prefix (as written, validated).
    Cidr(String),
    /// A Cilium entity by name.
    Entity(String),
}

/// A protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
    /// ICMP.
    Icmp,
    /// ICMPv6.
    Icmpv6,
}

/// The ports an expectation describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ports {
    /// Every protocol and port.
    Any,
    /// One protocol, with a port (or ICMP type) range; `None` = all of them.
    Proto(Proto, Option<(u16, u16)>),
}

/// An L7 request the flows carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L7Request {
    /// An HTTP request.
    Http {
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// Host, if given.
        host: Option<String>,
        /// Headers, `Name: value`.
        headers: Vec<String>,
    },
    /// A DNS query.
    Dns(String),
}

/// One `expect` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// The expected verdict.
    pub verdict: Verdict,
    /// Source.
    pub from: Endpoint,
    /// Destination.
    pub to: Endpoint,
    /// Ports.
    pub ports: Ports,
    /// Optional L7 request.
    pub l7: Option<L7Request>,
    /// The whole line.
    pub span: Span,
}

/// Why a `.polt` file does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PoltError {
    /// One sentence.
    pub message: String,
    /// Where.
    pub span: Span,
}

fn err(message: impl Into<String>, span: Span) -> PoltError {
    PoltError {
        message: message.into(),
        span,
    }
}

fn span_of(p: &Pair<'_, Rule>) -> Span {
    (p.as_span().start(), p.as_span().end())
}

/// Parses a `.polt` file.
pub fn parse_polt(input: &str) -> Result<PoltFile, PoltError> {
    let mut pairs = PoltParser::parse(Rule::file, input).map_err(|e| {
        let span = match e.location {
            pest::error::InputLocation::Pos(p) => (p, p),
            pest::error::InputLocation::Span(s) => s,
        };
        let expected = match &e.variant {
            pest::error::ErrorVariant::ParsingError { positives, .. } if !positives.is_empty() => {
                let names: Vec<String> = positives.iter().map(|r| describe(*r)).collect();
                format!("expected {}", names.join(", or "))
            }
            _ => "unexpected input".to_string(),
        };
        err(
            format!(
                "{expected}; a line is `expect allow|deny FROM -> TO PORTS [http METHOD \"PATH\" \
                 | dns \"NAME\"]`, `inventory \"PATH\"`, `policies \"PATH\"` or a `#` comment"
            ),
            span,
        )
    })?;
    let mut out = PoltFile::default();
    let Some(file) = pairs.next() else {
        return Ok(out);
    };
    for stmt in file.into_inner().filter(|p| p.as_rule() == Rule::statement) {
        let Some(inner) = stmt.into_inner().next() else {
            continue;
        };
        match inner.as_rule() {
            Rule::directive => {
                let mut it = inner.into_inner();
                let (Some(kw), Some(s)) = (it.next(), it.next()) else {
                    continue;
                };
                let value = (string(&s), span_of(&s));
                if kw.as_str() == "inventory" {
                    out.inventory.push(value);
                } else {
                    out.policies.push(value);
                }
            }
            Rule::expectation => out.expectations.push(expectation(inner)?),
            _ => {}
        }
    }
    Ok(out)
}

fn describe(r: Rule) -> String {
    match r {
        Rule::statement | Rule::expectation | Rule::directive => "a statement".into(),
        Rule::verdict => "`allow` or `deny`".into(),
        Rule::endpoint => {
            "an endpoint (`NS/{SELECTOR}`, `pod NS/NAME`, `host`, `world`, `ip ADDR`, \
                           `cidr PREFIX`, `entity NAME`, `remote-node`)"
                .into()
        }
        Rule::ports => "ports (`tcp/N`, `udp/N-M`, `icmp/TYPE`, `any`)".into(),
        Rule::string => "a quoted string".into(),
        Rule::l7 => "`http` or `dns`".into(),
        other => format!("{other:?}").replace('_', " "),
    }
}

/// The text of a string literal, with `\"` and `\\` unescaped.
fn string(p: &Pair<'_, Rule>) -> String {
    let inner = p.clone().into_inner().next().map_or("", |i| i.as_str());
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn expectation(p: Pair<'_, Rule>) -> Result<Expectation, PoltError> {
    let span = span_of(&p);
    let mut verdict = Verdict::Allow;
    let mut ends = Vec::new();
    let mut ports = Ports::Any;
    let mut l7 = None;
    for part in p.into_inner() {
        match part.as_rule() {
            Rule::verdict => {
                verdict = if part.as_str() == "deny" {
                    Verdict::Deny
                } else {
                    Verdict::Allow
                }
            }
            Rule::endpoint => ends.push(endpoint(part)?),
            Rule::ports => ports = port_sel(part)?,
            Rule::l7 => l7 = Some(l7_request(part)),
            _ => {}
        }
    }
    let mut ends = ends.into_iter();
    let (Some(from), Some(to)) = (ends.next(), ends.next()) else {
        return Err(err("an expectation needs two endpoints", span));
    };
    if l7.is_some()
        && matches!(
            ports,
            Ports::Any | Ports::Proto(Proto::Icmp | Proto::Icmpv6, _)
        )
    {
        return Err(err(
            "an L7 request needs a TCP or UDP port (`tcp/8080`)",
            span,
        ));
    }
    Ok(Expectation {
        verdict,
        from,
        to,
        ports,
        l7,
        span,
    })
}

fn endpoint(p: Pair<'_, Rule>) -> Result<Endpoint, PoltError> {
    let span = span_of(&p);
    let Some(inner) = p.into_inner().next() else {
        return Err(err("an endpoint is missing", span));
    };
    let ispan = span_of(&inner);
    let text = |q: &Pair<'_, Rule>| {
        q.clone()
            .into_inner()
            .next()
            .map_or(String::new(), |x| x.as_str().to_string())
    };
    Ok(match inner.as_rule() {
        Rule::selector_ep => {
            let mut it = inner.into_inner();
            let ns = it.next().map_or("*", |x| x.as_str());
            let body = it.next();
            let (body_text, body_start) = body
                .as_ref()
                .map_or(("", ispan.1), |b| (b.as_str(), b.as_span().start()));
            let selector = parse_selector(body_text.trim()).map_err(|e| {
                let lead = body_text.len() - body_text.trim_start().len();
                err(
                    e.message,
                    (
                        body_start + lead + e.span.0,
                        body_start + lead + e.span.1.max(e.span.0),
                    ),
                )
            })?;
            Endpoint::Pods {
                namespace: (ns != "*").then(|| ns.to_string()),
                selector,
            }
        }
        Rule::pod_ep => {
            let name = text(&inner);
            let (ns, pod) = name.split_once('/').unwrap_or(("", name.as_str()));
            Endpoint::Pod {
                namespace: ns.to_string(),
                name: pod.to_string(),
            }
        }
        Rule::host_ep => {
            let node = text(&inner);
            Endpoint::Host((!node.is_empty()).then_some(node))
        }
        Rule::remote_node_ep => Endpoint::RemoteNode,
        Rule::world_ep => Endpoint::World,
        Rule::ip_ep => {
            let a = text(&inner);
            Endpoint::Ip(
                IpAddr::from_str(&a)
                    .map_err(|_| err(format!("`{a}` is not an IP address"), ispan))?,
            )
        }
        Rule::cidr_ep => {
            let c = text(&inner);
            let ok = c.split_once('/').is_some_and(|(a, len)| {
                match (IpAddr::from_str(a), len.parse::<u8>()) {
                    (Ok(IpAddr::V4(_)), Ok(l)) => l <= 32,
                    (Ok(IpAddr::V6(_)), Ok(l)) => l <= 128,
                    _ => false,
                }
            });
            if !ok {
                return Err(err(format!("`{c}` is not a CIDR prefix"), ispan));
            }
            Endpoint::Cidr(c)
        }
        Rule::entity_ep => Endpoint::Entity(text(&inner)),
        _ => return Err(err("unknown endpoint", ispan)),
    })
}

fn port_sel(p: Pair<'_, Rule>) -> Result<Ports, PoltError> {
    let Some(inner) = p.into_inner().next() else {
        return Ok(Ports::Any);
    };
    if inner.as_rule() == Rule::any_ports {
        return Ok(Ports::Any);
    }
    let mut proto = Proto::Tcp;
    let mut range = None;
    for part in inner.into_inner() {
        match part.as_rule() {
            Rule::proto => {
                proto = match part.as_str() {
                    "udp" => Proto::Udp,
                    "sctp" => Proto::Sctp,
                    "icmp" => Proto::Icmp,
                    "icmpv6" => Proto::Icmpv6,
                    _ => Proto::Tcp,
                }
            }
            Rule::port_range => {
                let span = span_of(&part);
                let (lo, hi) = match part.as_str().split_once('-') {
                    Some((a, b)) => (a, b),
                    None => (part.as_str(), part.as_str()),
                };
                let max = if matches!(proto, Proto::Icmp | Proto::Icmpv6) {
                    255
                } else {
                    65535
                };
                let num = |s: &str| s.parse::<u32>().ok().filter(|n| *n <= max);
                let (Some(lo), Some(hi)) = (num(lo), num(hi)) else {
                    return Err(err(
                        if max == 255 {
                            "an ICMP type is 0-255"
                        } else {
                            "a port is 0-65535"
                        },
                        span,
                    ));
                };
                if lo > hi {
                    return Err(err("a range runs from low to high (`8000-8100`)", span));
                }
                range = Some((
                    u16::try_from(lo).unwrap_or(u16::MAX),
                    u16::try_from(hi).unwrap_or(u16::MAX),
                ));
            }
            _ => {}
        }
    }
    Ok(Ports::Proto(proto, range))
}

fn l7_request(p: Pair<'_, Rule>) -> L7Request {
    let Some(inner) = p.into_inner().next() else {
        return L7Request::Dns(String::new());
    };
    if inner.as_rule() == Rule::dns_req {
        return L7Request::Dns(
            inner
                .into_inner()
                .next()
                .map(|s| string(&s))
                .unwrap_or_default(),
        );
    }
    let mut method = String::new();
    let mut path = String::new();
    let mut host = None;
    let mut headers = Vec::new();
    for part in inner.into_inner() {
        match part.as_rule() {
            Rule::method => method = part.as_str().to_string(),
            Rule::string => path = string(&part),
            Rule::http_host => host = part.into_inner().next().map(|s| string(&s)),
            Rule::http_header => {
                if let Some(s) = part.into_inner().next() {
                    headers.push(string(&s));
                }
            }
            _ => {}
        }
    }
    L7Request::Http {
        method,
        path,
        host,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"# comments run to the end of the line
inventory "cluster/"            # optional
policies "policies/"

expect allow shop/{app=frontend} -> shop/{app=backend} tcp/8080
expect deny  world -> shop/{app=backend} tcp/1-65535
expect allow shop/{app=frontend} -> shop/{app=backend} tcp/8080 http GET "/api/items"
expect deny  shop/{app=frontend} -> shop/{app=backend} tcp/8080 http DELETE "/api/items"
expect allow pod shop/frontend-0 -> ip 203.0.113.10 tcp/443
expect deny  */{team!=payments} -> payments/{} any
expect allow host -> shop/{} icmp/8
expect allow host node-1 -> cidr 10.0.0.0/8 udp
expect deny remote-node -> entity kube-apiserver tcp/6443 http GET "/x" host "a.b" header "X-K: v"
expect allow shop/{app=frontend} -> kube-system/{k8s-app=kube-dns} udp/53 dns "example.com"
"#;

    #[test]
    fn the_issue_example_parses() {
        let f = parse_polt(EXAMPLE).unwrap();
        assert_eq!(f.inventory[0].0, "cluster/");
        assert_eq!(f.policies[0].0, "policies/");
        assert_eq!(f.expectations.len(), 10);
        let e = &f.expectations[1];
        assert_eq!(e.verdict, Verdict::Deny);
        assert_eq!(e.from, Endpoint::World);
        assert_eq!(e.ports, Ports::Proto(Proto::Tcp, Some((1, 65535))));
        let e = &f.expectations[5];
        assert!(
            matches!(&e.from, Endpoint::Pods { namespace: None, selector } if selector.requirements.len() == 1)
        );
        assert_eq!(e.ports, Ports::Any);
        assert_eq!(f.expectations[6].from, Endpoint::Host(None));
        assert_eq!(
            f.expectations[7].from,
            Endpoint::Host(Some("node-1".into()))
        );
        assert_eq!(f.expectations[7].ports, Ports::Proto(Proto::Udp, None));
        assert_eq!(
            f.expectations[8].l7,
            Some(L7Request::Http {
                method: "GET".into(),
                path: "/x".into(),
                host: Some("a.b".into()),
                headers: vec!["X-K: v".into()],
            })
        );
        assert_eq!(
            f.expectations[9].l7,
            Some(L7Request::Dns("example.com".into()))
        );
    }

    #[test]
    fn errors_point_into_the_line() {
        let e =
            parse_polt("expect allow shop/{app=} -> x/{} tcp/80\nexpect maybe a/{} -> b/{} any\n");
        // `app=` is a valid selector (empty value); the second line is the error.
        let e = e.unwrap_err();
        assert!(e.span.0 >= 41, "{e:?}");
        assert!(e.message.contains("`allow` or `deny`"), "{e:?}");
        let e = parse_polt("expect allow a/{app in (} -> b/{} any").unwrap_err();
        assert!((15..=26).contains(&e.span.0), "{e:?}");
        let e = parse_polt("expect allow a/{} -> b/{} tcp/70000").unwrap_err();
        assert_eq!(e.message, "a port is 0-65535");
        let e = parse_polt("expect allow a/{} -> b/{} icmp/300").unwrap_err();
        assert_eq!(e.message, "an ICMP type is 0-255");
        let e = parse_polt("expect allow a/{} -> ip 1.2.3 tcp/1").unwrap_err();
        assert!(e.message.contains("not an IP address"), "{e:?}");
        let e = parse_polt("expect allow a/{} -> b/{} any http GET \"/\"").unwrap_err();
        assert!(e.message.contains("L7"), "{e:?}");
        let e = parse_polt("expect allow a/{} -> b/{} tcp/9-1").unwrap_err();
        assert!(e.message.contains("low to high"), "{e:?}");
    }

    #[test]
    fn strings_unescape() {
        let f = parse_polt(r#"expect allow a/{} -> b/{} tcp/80 http GET "/a\"b\\c""#).unwrap();
        assert_eq!(
            f.expectations[0].l7,
            Some(L7Request::Http {
                method: "GET".into(),
                path: "/a\"b\\c".into(),
                host: None,
                headers: vec![],
            })
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
            let _ = parse_polt(&s);
        }
    }
}
