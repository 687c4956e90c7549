//! `polc test` without an inventory: each expectation is checked by the verifier for every pod
//! that could exist (see `polc_verifier::expect`), and each counterexample is one the
//! reference evaluator has replayed.

use super::cluster::Loaded;
use polc_compiler::eval::{Request, Verdict};
use polc_compiler::ir::{Op, Requirement};
use polc_grammar::polt::{self, Endpoint, Expectation, L7Request};
use polc_grammar::selector::Operator;
use polc_verifier::expect::{self, End, Refusal};
use polc_verifier::{Answer, Limits};

/// Solver limits from `--timeout SECONDS`, or `None` when it is not a positive number.
pub fn limits(timeout: f64) -> Option<Limits> {
    (timeout > 0.0 && timeout.is_finite()).then(|| Limits {
        timeout: std::time::Duration::from_secs_f64(timeout.min(86_400.0)),
    })
}

/// Starts recording the solver's queries when `--emit-smt DIR` is given.
pub fn start_smt(dir: Option<&std::path::Path>) {
    if dir.is_some() {
        polc_verifier::smt::start();
    }
}

/// Writes the recorded queries into `dir` (created if missing), one `.smt2` file each.
pub fn write_smt(dir: Option<&std::path::Path>) -> anyhow::Result<usize> {
    let Some(dir) = dir else { return Ok(0) };
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let queries = polc_verifier::smt::take();
    for (name, text) in &queries {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(queries.len())
}

/// What one expectation came to.
pub enum Result {
    /// It holds for every pod that could exist.
    Holds,
    /// It fails; the text shows the replayed counterexample.
    Fails(String),
    /// It could not be decided (solver timeout, or an example the encoding could not
    /// confirm); the text says why.
    Unknown(String),
    /// It cannot be checked without an inventory, or describes no flow.
    Error(String),
}

/// The polt selector's requirements as IR requirements on a pod's labels.
pub fn requirements(sel: &polc_grammar::Selector) -> Vec<Requirement> {
    sel.requirements
        .iter()
        .map(|r| {
            let key = if r.key.contains(':') {
                r.key.clone()
            } else {
                format!("any:{}", r.key)
            };
            let (op, values) = match r.op {
                Operator::Equals | Operator::In => (Op::In, r.values.clone()),
                Operator::NotEquals | Operator::NotIn => (Op::NotIn, r.values.clone()),
                Operator::Exists => (Op::Exists, Vec::new()),
                Operator::DoesNotExist => (Op::DoesNotExist, Vec::new()),
            };
            Requirement { key, op, values }
        })
        .collect()
}

/// The ends an endpoint stands for, or why it needs an inventory.
fn ends(ep: &Endpoint) -> std::result::Result<Vec<End>, String> {
    let any_pod = || End::Pods {
        namespace: None,
        reqs: Vec::new(),
    };
    Ok(match ep {
        Endpoint::Pods {
            namespace,
            selector,
        } => vec![End::Pods {
            namespace: namespace.clone(),
            reqs: requirements(selector),
        }],
        Endpoint::Pod { namespace, name } => {
            return Err(format!(
                "`pod {namespace}/{name}` names an inventory pod; add `inventory \"PATH\"` or \
                 pass --inventory"
            ));
        }
        Endpoint::Host(Some(node)) => {
            return Err(format!(
                "`host {node}` names an inventory node; add `inventory \"PATH\"` or pass \
                 --inventory"
            ));
        }
        Endpoint::Host(None) => vec![End::Host],
        Endpoint::RemoteNode => vec![End::RemoteNode],
        Endpoint::World => vec![End::World(None)],
        Endpoint::Ip(std::net::IpAddr::V4(ip)) => {
            vec![End::World(Some(ipnet::Ipv4Net::from(*ip)))]
        }
        Endpoint::Cidr(c) => match c.parse::<ipnet::IpNet>() {
            Ok(ipnet::IpNet::V4(net)) => vec![End::World(Some(net))],
            _ => return Err(format!("IPv6 ends (`{c}`) need an inventory")),
        },
        Endpoint::Ip(ip) => return Err(format!("IPv6 ends (`{ip}`) need an inventory")),
        Endpoint::Entity(name) => match name.as_str() {
            "world" | "world-ipv4" => vec![End::World(None)],
            "host" => vec![End::Host],
            "remote-node" => vec![End::RemoteNode],
            "cluster" => vec![any_pod(), End::Host, End::RemoteNode],
            "all" => vec![any_pod(), End::Host, End::RemoteNode, End::World(None)],
            other => {
                return Err(format!(
                    "the entity `{other}` is not modelled without an inventory"
                ));
            }
        },
    })
}

/// The request of an expectation, as the evaluator takes it.
pub fn request(l7: &L7Request) -> Request {
    match l7 {
        L7Request::Http {
            method,
            path,
            host,
            headers,
        } => Request::Http {
            method: method.clone(),
            path: path.clone(),
            host: host.clone().unwrap_or_default(),
            headers: headers
                .iter()
                .map(|h| match h.split_once(':') {
                    Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
                    None => (h.trim().to_string(), String::new()),
                })
                .collect(),
        },
        L7Request::Dns(q) => Request::Dns { query: q.clone() },
    }
}

/// Checks one expectation: every pair of ends it stands for.
pub fn check(loaded: &Loaded, e: &Expectation, limits: Limits) -> Result {
    let (from, to) = match (ends(&e.from), ends(&e.to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(m), _) | (_, Err(m)) => return Result::Error(m),
    };
    let ports = match &e.ports {
        polt::Ports::Any => None,
        polt::Ports::Proto(p, range) => {
            let number = match p {
                polt::Proto::Tcp => 6,
                polt::Proto::Udp => 17,
                polt::Proto::Sctp => 132,
                polt::Proto::Icmp => 1,
                polt::Proto::Icmpv6 => {
                    return Result::Error("ICMPv6 flows need an inventory".into());
                }
            };
            Some((number, *range))
        }
    };
    let verdict = match e.verdict {
        polt::Verdict::Allow => Verdict::Allow,
        polt::Verdict::Deny => Verdict::Deny,
    };
    let model = &loaded.model;
    let (mut checked, mut unknown) = (0, Vec::new());
    for f in &from {
        for t in &to {
            let x = expect::Expectation {
                verdict,
                from: f.clone(),
                to: t.clone(),
                ports,
                request: e.l7.as_ref().map(request),
            };
            match expect::check(
                &model.policies,
                &loaded.objects,
                model.config.version,
                &x,
                limits,
            ) {
                Ok(Answer::Holds) => checked += 1,
                Ok(Answer::Violated(r)) => {
                    return Result::Fails(format!("  counterexample: {}", indent(&r.explain())));
                }
                Ok(Answer::Unknown(why)) => {
                    checked += 1;
                    unknown.push(why);
                }
                Err(Refusal::NoFlow | Refusal::NoPod) => {}
                Err(Refusal::Internal(msg)) => {
                    return Result::Error(format!(
                        "internal error: the verifier and the reference evaluator disagree: \
                         {msg}; please report this"
                    ));
                }
            }
        }
    }
    if checked == 0 {
        return Result::Error(
            "the expectation describes no flow polc can judge without an inventory (its \
             selectors contradict each other, or neither end is a pod)"
                .into(),
        );
    }
    match unknown.first() {
        Some(why) => Result::Unknown(format!("  unknown: {why}")),
        None => Result::Holds,
    }
}

fn indent(text: &str) -> String {
    text.replace('\n', "\n  ")
}
