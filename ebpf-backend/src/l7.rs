//! The L7 proxy's decisions: an endpoint's proxy rules, as [`crate::npds`] prints them, read
//! back and asked about requests.
//!
//! The semantics are those of Cilium's Envoy filters (datapath spec §4):
//!
//! - A request on port P in a direction is judged by the per-port policies whose port (or
//!   range `port`..=`endPort`) holds P, together with the wildcard `port: 0` policy. No such
//!   policy: denied.
//! - A policy with no rules allows every request.
//! - A rule applies to the remote identity when its `remotePolicies` list it, or are empty.
//!   A deny rule that applies denies, whatever else allows. Otherwise an allow rule that
//!   applies allows when it has no L7 rules or one of its HTTP rules matches: every header
//!   matcher of that rule holds. Nothing applies: denied.
//! - `:method`, `:path` (with the query) and `:authority` are RE2 regexes matched against the
//!   whole value; other headers match exactly or by presence, names without regard to case, a
//!   header sent more than once as its values joined with commas. This is how `eval` reads a
//!   rule's HTTP fields ([`polc_compiler::eval`]).
//! - Rules for Kafka or a generic L7 parser are deprecated upstream and not enforced here: such
//!   a rule never allows, so its port fails closed. (Cilium's Envoy filter ignores their
//!   `l7Proto` on an HTTP port and lets them allow like rules without L7.)

use polc_compiler::ir::Direction;
use serde_json::Value;
use std::fmt;
use std::net::IpAddr;

/// The proxy rules of one endpoint (one NPDS `NetworkPolicy`).
#[derive(Debug)]
pub struct EndpointRules {
    /// The endpoint's ID.
    pub endpoint_id: u64,
    /// Its addresses.
    pub endpoint_ips: Vec<IpAddr>,
    ingress: Vec<PortPolicy>,
    egress: Vec<PortPolicy>,
}

#[derive(Debug)]
struct PortPolicy {
    port: u16,
    end_port: u16,
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    /// The rule's place in the endpoint's rules, for counters and logs
    /// (`ingress/8080/0`).
    id: String,
    deny: bool,
    /// Sorted; empty: any remote.
    remotes: Vec<u32>,
    l7: L7,
}

#[derive(Debug)]
enum L7 {
    /// No L7 rules: every request.
    Any,
    /// At least one of these.
    Http(Vec<Vec<HeaderMatch>>),
    /// A parser this proxy does not run (`kafka`, generic L7): nothing.
    Unsupported(String),
}

#[derive(Debug)]
struct HeaderMatch {
    /// Lower case; pseudo-headers with their colon.
    name: String,
    how: How,
}

#[derive(Debug)]
enum How {
    Regex(regex::Regex),
    Exact(String),
    Present,
}

/// An HTTP request as the proxy sees it.
#[derive(Clone, Copy, Debug)]
pub struct HttpRequest<'a> {
    /// The method.
    pub method: &'a str,
    /// The path, with its query.
    pub path: &'a str,
    /// The authority (`Host`).
    pub authority: &'a str,
    /// The other headers, as received.
    pub headers: &'a [(String, String)],
}

/// What the proxy does with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded; by the rule with this ID (`None`: a port without rules).
    Allowed(Option<String>),
    /// Answered `403 Access denied`.
    Denied(Denial),
}

/// Why a request was denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No policy for the port.
    NoPort,
    /// A deny rule applies (its ID).
    DenyRule(String),
    /// Rules for a parser the proxy does not run apply, and nothing else allows (its name).
    Unsupported(String),
    /// No rule allows the request.
    NoRule,
}

impl Verdict {
    /// The rule that decided (an allow rule, or the deny rule that refused).
    pub fn rule(&self) -> Option<&str> {
        match self {
            Verdict::Allowed(rule) => rule.as_deref(),
            Verdict::Denied(Denial::DenyRule(rule)) => Some(rule),
            Verdict::Denied(_) => None,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Allowed(Some(id)) => write!(f, "allowed by {id}"),
            Verdict::Allowed(None) => write!(f, "allowed (no L7 rules on the port)"),
            Verdict::Denied(Denial::NoPort) => write!(f, "denied: no policy for the port"),
            Verdict::Denied(Denial::DenyRule(id)) => write!(f, "denied by {id}"),
            Verdict::Denied(Denial::Unsupported(p)) => {
                write!(f, "denied: `{p}` rules are not enforced by polc's proxy")
            }
            Verdict::Denied(Denial::NoRule) => write!(f, "denied: no rule allows it"),
        }
    }
}

/// Why proxy rules could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRules(String);

fn bad(what: impl Into<String>) -> BadRules {
    BadRules(what.into())
}

impl EndpointRules {
    /// Reads one NPDS `NetworkPolicy` in protobuf JSON form.
    pub fn from_json(v: &Value) -> Result<EndpointRules, BadRules> {
        let endpoint_id = match &v["endpointId"] {
            Value::String(s) => s.parse().map_err(|_| bad(format!("endpointId `{s}`")))?,
            Value::Number(n) => n.as_u64().ok_or_else(|| bad("endpointId"))?,
            _ => return Err(bad("a NetworkPolicy needs an endpointId")),
        };
        let endpoint_ips = list(&v["endpointIps"])
            .iter()
            .map(|ip| {
                ip.as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad(format!("endpoint {endpoint_id}: address {ip}")))
            })
            .collect::<Result<_, _>>()?;
        let side = |key: &str, dir: &str| -> Result<Vec<PortPolicy>, BadRules> {
            list(&v[key])
                .iter()
                .map(|p| port_policy(p, dir))
                .collect::<Result<_, _>>()
                .map_err(|e| bad(format!("endpoint {endpoint_id} {key}: {}", e.0)))
        };
        Ok(EndpointRules {
            endpoint_id,
            endpoint_ips,
            ingress: side("ingressPerPortPolicies", "ingress")?,
            egress: side("egressPerPortPolicies", "egress")?,
        })
    }

    /// The verdict on an HTTP request to (ingress) or from (egress) this endpoint, on TCP
    /// port `port`, with the other end of identity `remote`.
    pub fn http(
        &self,
        direction: Direction,
        port: u16,
        remote: u32,
        req: &HttpRequest<'_>,
    ) -> Verdict {
        let policies = match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        };
        let here: Vec<&PortPolicy> = policies
            .iter()
            .filter(|p| p.port == 0 || (p.port <= port && port <= p.end_port.max(p.port)))
            .collect();
        if here.is_empty() {
            return Verdict::Denied(Denial::NoPort);
        }
        let applies = |r: &&Rule| r.remotes.is_empty() || r.remotes.binary_search(&remote).is_ok();
        let rules = || here.iter().flat_map(|p| p.rules.iter()).filter(applies);
        if let Some(r) = rules().find(|r| r.deny) {
            return Verdict::Denied(Denial::DenyRule(r.id.clone()));
        }
        if here.iter().any(|p| p.rules.is_empty()) {
            return Verdict::Allowed(None);
        }
        let mut unsupported = None;
        for r in rules() {
            match &r.l7 {
                L7::Any => return Verdict::Allowed(Some(r.id.clone())),
                L7::Http(alternatives) => {
                    if alternatives.iter().any(|m| m.iter().all(|h| h.holds(req))) {
                        return Verdict::Allowed(Some(r.id.clone()));
                    }
                }
                L7::Unsupported(p) => unsupported = Some(p.clone()),
            }
        }
        Verdict::Denied(unsupported.map_or(Denial::NoRule, Denial::Unsupported))
    }

    /// The L7 parsers of this endpoint's rules that the proxy does not run, with the ports
    /// they are on (those ports fail closed).
    pub fn unsupported(&self) -> Vec<(Direction, u16, String)> {
        let mut out = Vec::new();
        for (dir, side) in [
            (Direction::Ingress, &self.ingress),
            (Direction::Egress, &self.egress),
        ] {
            for p in side {
                for r in &p.rules {
                    if let L7::Unsupported(name) = &r.l7 {
                        out.push((dir, p.port, name.clone()));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

impl HeaderMatch {
    fn holds(&self, req: &HttpRequest<'_>) -> bool {
        let value = match self.name.as_str() {
            ":method" => Some(req.method.to_string()),
            ":path" => Some(req.path.to_string()),
            ":authority" => Some(req.authority.to_string()),
            name => polc_compiler::eval::header_value(req.headers, name),
        };
        let Some(value) = value else {
            return false;
        };
        match &self.how {
            How::Present => true,
            How::Exact(want) => value == *want,
            How::Regex(re) => re.is_match(&value),
        }
    }
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[][..], Vec::as_slice)
}

fn port_policy(v: &Value, dir: &str) -> Result<PortPolicy, BadRules> {
    let number = |key: &str| -> Result<u16, BadRules> {
        match &v[key] {
            Value::Null => Ok(0),
            n => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| bad(format!("{key} {n}"))),
        }
    };
    let (port, end_port) = (number("port")?, number("endPort")?);
    if end_port != 0 && end_port < port {
        return Err(bad(format!("port range {port}-{end_port}")));
    }
    let rules = list(&v["rules"])
        .iter()
        .enumerate()
        .map(|(i, r)| rule(r, format!("{dir}/{port}/{i}")))
        .collect::<Result<_, _>>()?;
    Ok(PortPolicy {
        port,
        end_port,
        rules,
    })
}

fn rule(v: &Value, id: String) -> Result<Rule, BadRules> {
    let mut remotes = list(&v["remotePolicies"])
        .iter()
        .map(|r| {
            r.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad(format!("{id}: remote policy {r}")))
        })
        .collect::<Result<Vec<u32>, _>>()?;
    remotes.sort_unstable();
    let deny = v["deny"].as_bool().unwrap_or(false);
    let l7 = if let Some(http) = v.get("httpRules") {
        let alternatives = list(&http["httpRules"])
            .iter()
            .map(|h| {
                list(&h["headers"])
                    .iter()
                    .map(|m| header_match(m).map_err(|e| bad(format!("{id}: {}", e.0))))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        L7::Http(alternatives)
    } else if v.get("kafkaRules").is_some() || v.get("l7Rules").is_some() {
        let proto = v["l7Proto"].as_str().unwrap_or("kafka");
        L7::Unsupported(proto.to_string())
    } else {
        L7::Any
    };
    Ok(Rule {
        id,
        deny,
        remotes,
        l7,
    })
}

fn header_match(v: &Value) -> Result<HeaderMatch, BadRules> {
    let name = v["name"]
        .as_str()
        .ok_or_else(|| bad("a header matcher without a name"))?
        .to_ascii_lowercase();
    let how = if v["presentMatch"].as_bool() == Some(true) {
        How::Present
    } else if let Some(re) = v["stringMatch"]["safeRegex"]["regex"].as_str() {
        let whole = format!("^(?:{re})$");
        How::Regex(
            regex::Regex::new(&whole).map_err(|e| bad(format!("{name}: regex `{re}`: {e}")))?,
        )
    } else if let Some(exact) = v["stringMatch"]["exact"].as_str() {
        How::Exact(exact.to_string())
    } else {
        return Err(bad(format!(
            "{name}: a matcher this proxy does not know: {v}"
        )));
    };
    Ok(HeaderMatch { name, how })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get<'a>(path: &'a str) -> HttpRequest<'a> {
        HttpRequest {
            method: "GET",
            path,
            authority: "api.shop",
            headers: &[],
        }
    }

    fn rules() -> EndpointRules {
        let regex = |name: &str, re: &str| json!({"name": name, "stringMatch": {"safeRegex": {"regex": re}}});
        EndpointRules::from_json(&json!({
            "endpointIps": ["fd00::4d2", "10.0.1.5"],
            "endpointId": "1234",
            "ingressPerPortPolicies": [
                {"port": 0, "protocol": "TCP", "rules": [{"deny": true, "remotePolicies": [2, 9]}]},
                {"port": 8080, "protocol": "TCP", "rules": [
                    {"remotePolicies": [12345], "httpRules": {"httpRules": [
                        {"headers": [regex(":method", "GET"), regex(":path", "/api")]},
                        {"headers": [
                            regex(":method", "POST"),
                            {"name": "X-Token", "stringMatch": {"exact": "a,b"}},
                            {"name": "x-trace", "presentMatch": true},
                        ]},
                    ]}},
                ]},
                {"port": 9000, "endPort": 9100, "protocol": "TCP", "rules": []},
                {"port": 9292, "protocol": "TCP", "rules": [
                    {"l7Proto": "kafka", "kafkaRules": {"kafkaRules": [{"topic": "orders"}]}},
                ]},
            ],
            "egressPerPortPolicies": [{"port": 0, "protocol": "TCP"}],
        }))
        .unwrap()
    }

    #[test]
    fn requests_are_judged_as_cilium_envoy_filter_does() {
        let r = rules();
        let ing = Direction::Ingress;
        assert_eq!(r.endpoint_id, 1234);
        assert_eq!(r.endpoint_ips.len(), 2);
        // The whole path: `/api` is not `/api/x` nor `/api?x=1`.
        assert!(matches!(
            r.http(ing, 8080, 12345, &get("/api")),
            Verdict::Allowed(Some(_))
        ));
        for path in ["/api/x", "/api?x=1", "/ap"] {
            assert_eq!(
                r.http(ing, 8080, 12345, &get(path)),
                Verdict::Denied(Denial::NoRule)
            );
        }
        // Another remote identity: no rule applies to it.
        assert_eq!(
            r.http(ing, 8080, 777, &get("/api")),
            Verdict::Denied(Denial::NoRule)
        );
        // The wildcard port's deny rule applies on every port.
        let denied = r.http(ing, 8080, 9, &get("/api"));
        assert_eq!(
            denied,
            Verdict::Denied(Denial::DenyRule("ingress/0/0".into()))
        );
        assert_eq!(r.http(ing, 9050, 2, &get("/")), denied_by_port0());
        // A range without rules allows everything else.
        assert_eq!(r.http(ing, 9050, 777, &get("/")), Verdict::Allowed(None));
        assert_eq!(
            r.http(ing, 9101, 777, &get("/")),
            Verdict::Denied(Denial::NoRule)
        );
        // Kafka rules are not enforced: their port fails closed.
        assert_eq!(
            r.http(ing, 9292, 777, &get("/")),
            Verdict::Denied(Denial::Unsupported("kafka".into()))
        );
        assert_eq!(r.unsupported(), [(ing, 9292, "kafka".to_string())]);
        // An egress that is not enforced allows every request.
        assert_eq!(
            r.http(Direction::Egress, 443, 5, &get("/")),
            Verdict::Allowed(None)
        );
    }

    fn denied_by_port0() -> Verdict {
        Verdict::Denied(Denial::DenyRule("ingress/0/0".into()))
    }

    #[test]
    fn headers_match_exactly_by_presence_and_joined() {
        let r = rules();
        let post = |headers: &[(String, String)]| {
            let req = HttpRequest {
                method: "POST",
                path: "/anything",
                authority: "api.shop",
                headers,
            };
            r.http(Direction::Ingress, 8080, 12345, &req)
        };
        let h = |k: &str, v: &str| (k.to_string(), v.to_string());
        // Sent twice, matched as `a,b`; names without regard to case.
        let ok = [h("x-token", "a"), h("X-TOKEN", "b"), h("X-Trace", "")];
        assert!(matches!(post(&ok), Verdict::Allowed(Some(_))));
        assert_eq!(
            post(&[h("x-token", "a,b")]),
            Verdict::Denied(Denial::NoRule)
        );
        assert_eq!(
            post(&[h("x-token", "a"), h("x-trace", "1")]),
            Verdict::Denied(Denial::NoRule)
        );
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        let cases = [
            (json!({"endpointIps": []}), "endpointId"),
            (json!({"endpointId": "x"}), "endpointId"),
            (
                json!({"endpointId": "1", "ingressPerPortPolicies": [{"port": 90, "endPort": 80}]}),
                "port range 90-80",
            ),
            (
                json!({"endpointId": "1", "ingressPerPortPolicies": [{"port": 70000}]}),
                "port 70000",
            ),
            (
                json!({"endpointId": "1", "egressPerPortPolicies": [{"port": 80, "rules": [
                    {"httpRules": {"httpRules": [{"headers": [
                        {"name": ":path", "stringMatch": {"safeRegex": {"regex": "(/a"}}}
                    ]}]}}
                ]}]}),
                "regex `(/a`",
            ),
            (
                json!({"endpointId": "1", "egressPerPortPolicies": [{"port": 80, "rules": [
                    {"remotePolicies": [-1]}
                ]}]}),
                "remote policy -1",
            ),
        ];
        for (v, want) in cases {
            let e = EndpointRules::from_json(&v).expect_err(want);
            assert!(e.to_string().contains(want), "{e} / {want}");
        }
    }
}
