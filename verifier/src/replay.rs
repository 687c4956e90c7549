//! Replaying a solver's witness through the reference evaluator: the witness's pods become
//! a small cluster (two nodes, one or two pods with exactly the witness's labels), the policies
//! are lowered again with it, and `eval` judges the flow. Nothing the solver finds is shown
//! before the evaluator has seen it.

use crate::flow::{self, FlowVars, KIND_HOST, KIND_POD, KIND_REMOTE_NODE, KIND_WORLD};
use polc_compiler::eval::{self, Decision, Flow, Outcome, Peer, Request, Verdict, Why};
use polc_compiler::ir::{Direction, Proto};
use polc_compiler::model::{Config, EndpointRef, Model};
use polc_compiler::raw::Object;
use polc_compiler::source::{FileId, SourceFile};
use polc_compiler::version::CiliumVersion;
use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

/// A concrete flow read off a model.
pub(crate) struct Witness {
    pub(crate) x: BTreeMap<String, String>,
    pub(crate) p: BTreeMap<String, String>,
    pub(crate) kind: u64,
    pub(crate) addr: Ipv4Addr,
    pub(crate) proto: u8,
    pub(crate) port: u16,
    /// Names the outside address answered for (to the DNS proxy): one per `toFQDNs`
    /// selector the solver let select the address.
    pub(crate) dns: Vec<String>,
}

pub(crate) fn witness(v: &FlowVars, m: &z3::Model) -> Option<Witness> {
    let labels = |l: &flow::Labels| -> Option<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for (k, (has, val)) in l.keys() {
            if m.eval(has, true)?.as_bool()? {
                out.insert(k.clone(), creatable(m.eval(val, true)?.as_string()?));
            }
        }
        Some(out)
    };
    let num = |b: &z3::ast::BV| m.eval(b, true).and_then(|x| x.as_u64());
    let kind = num(&v.kind)?;
    // The encodings leave a `toFQDNs` peer free (`free:peer:fqdn SELECTOR`, shared by every
    // encoder): where the model makes one true, the address must be an answer for a name the
    // selector selects.
    let mut dns = Vec::new();
    if kind == KIND_WORLD {
        for decl in m.iter() {
            let name = decl.name();
            let Some(selector) = name.strip_prefix("free:peer:fqdn ") else {
                continue;
            };
            let on = z3::ast::Bool::new_const(name.as_str());
            if m.eval(&on, true).and_then(|b| b.as_bool()) == Some(true) {
                dns.extend(name_selected_by(selector));
            }
        }
        dns.sort();
        dns.dedup();
    }
    Some(Witness {
        x: labels(&v.x)?,
        p: labels(&v.p)?,
        kind,
        addr: Ipv4Addr::from(u32::try_from(num(&v.addr)?).ok()?),
        proto: u8::try_from(num(&v.proto)?).ok()?,
        port: u16::try_from(num(&v.port)?).ok()?,
        dns,
    })
}

/// A name a `toFQDNs` selector (as lowered: `matchName: NAME`, `matchPattern: PATTERN`)
/// selects: the name itself, or the pattern with each wildcard made `polc`.
fn name_selected_by(selector: &str) -> Option<String> {
    if let Some(n) = selector.strip_prefix("matchName: ") {
        return Some(eval::fqdn(n));
    }
    let p = eval::fqdn(selector.strip_prefix("matchPattern: ")?);
    if p.trim_end_matches('.').chars().all(|c| c == '*') {
        return Some("polc.example.".into());
    }
    let p = p
        .strip_prefix("**.")
        .map_or(p.clone(), |rest| format!("*.{rest}"));
    let mut out = String::new();
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '*' {
            while chars.peek() == Some(&'*') {
                chars.next();
            }
            out.push_str("polc");
        } else {
            out.push(c);
        }
    }
    eval::fqdn_selects(selector, &out).then_some(out)
}

/// A value Kubernetes accepts in place of one it would not: the solver's values need only
/// be valid label characters, but Kubernetes also wants a letter or digit at both ends. A
/// value is replaced by one derived from it alone (equal values stay equal, different ones
/// different), which no policy names; the replay then decides whether the example holds.
fn creatable(v: String) -> String {
    let edge = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    if edge(v.chars().next()) && edge(v.chars().last()) {
        return v;
    }
    let hash = v.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("polc-{hash:016x}")
}

fn valid_value(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The policies an example is replayed under.
pub trait Policies {
    /// A model of the example's cluster (`inventory`: its nodes, namespaces and pods, whose
    /// pods are in `namespaces`) under these policies, for flows between the cluster and the
    /// addresses `outside` (see [`Model::for_addresses`]).
    fn model(
        &self,
        inventory: Vec<Object>,
        namespaces: &[&String],
        outside: &[IpAddr],
        config: Config,
    ) -> Model;
}

/// Policy objects, lowered again with the example's cluster: only those that can select its
/// pods (of their namespaces, and the clusterwide ones) and the CIDR groups.
impl<O: Borrow<Object>> Policies for [O] {
    fn model(
        &self,
        inventory: Vec<Object>,
        namespaces: &[&String],
        outside: &[IpAddr],
        config: Config,
    ) -> Model {
        let mut all: Vec<Object> = self
            .iter()
            .map(Borrow::borrow)
            .filter(|o: &&Object| o.kind.is_policy())
            .filter(|o| !o.kind.is_namespaced() || namespaces.iter().any(|n| *n == o.namespace()))
            .cloned()
            .collect();
        all.extend(inventory);
        Model::build_for(&all, config, outside).0
    }
}

/// Rules already lowered, as they are (the example's cluster has no Services for
/// `toServices` to bind to, and nothing else in lowering depends on the cluster).
pub struct Lowered<'a>(pub &'a [std::sync::Arc<polc_compiler::ir::Rule>]);

impl Policies for Lowered<'_> {
    fn model(
        &self,
        inventory: Vec<Object>,
        _: &[&String],
        outside: &[IpAddr],
        config: Config,
    ) -> Model {
        let (inventory, _) =
            polc_compiler::inventory::Inventory::from_objects(&inventory, &config.cluster_name);
        let mut policies = polc_compiler::ir::PolicySet {
            rules: self.0.to_vec(),
            cidr_groups: Vec::new(),
        };
        inventory.bind_services(&mut policies);
        Model::for_addresses(policies, inventory, config, outside)
    }
}

/// A Pod (and its Namespace) with the witness's labels, as YAML.
fn pod_yaml(name: &str, ip: &str, labels: &BTreeMap<String, String>) -> Option<String> {
    let ns = labels.get("io.kubernetes.pod.namespace")?.clone();
    let mut pod_labels = String::new();
    let mut ns_labels = format!("    kubernetes.io/metadata.name: \"{ns}\"\n");
    let mut sa = "default".to_string();
    for (k, v) in labels {
        if !valid_value(v) {
            return None;
        }
        if let Some(nk) = k.strip_prefix("io.cilium.k8s.namespace.labels.") {
            if nk != "kubernetes.io/metadata.name" {
                let _ = writeln!(ns_labels, "    \"{nk}\": \"{v}\"");
            } else if *v != ns {
                return None;
            }
        } else if k == "io.cilium.k8s.policy.serviceaccount" {
            sa = v.clone();
        } else if !k.starts_with("io.kubernetes.pod.namespace")
            && !k.starts_with("io.cilium.k8s.policy.cluster")
        {
            let _ = writeln!(pod_labels, "    \"{k}\": \"{v}\"");
        }
    }
    if sa.is_empty() {
        return None;
    }
    Some(format!(
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: \"{ns}\"\n  labels:\n{ns_labels}\
         ---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: \"{ns}\"\n  \
         labels:\n    polc-witness: \"{name}\"\n{pod_labels}spec:\n  nodeName: n1\n  \
         serviceAccountName: \"{sa}\"\nstatus:\n  podIP: {ip}\n"
    ))
}

/// Builds a two-node cluster with the witness's pods (the endpoint `x` on node `n1`, a remote
/// pod beside it), judges the flow (`x`'s egress or ingress, with `request`, if any) under
/// `objects`, and describes it.
pub(crate) fn replay<P: Policies + ?Sized>(
    objects: &P,
    version: CiliumVersion,
    w: &Witness,
    dir: Direction,
    request: Option<Request>,
) -> Option<Replay> {
    let mut text = String::from(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\nstatus:\n  addresses:\n  - type: \
         InternalIP\n    address: 172.31.255.1\n---\napiVersion: v1\nkind: Node\nmetadata:\n  \
         name: n2\nstatus:\n  addresses:\n  - type: InternalIP\n    address: 172.31.255.2\n",
    );
    text.push_str(&pod_yaml("witness-x", "10.255.0.10", &w.x)?);
    if w.kind == KIND_POD {
        let same_ns =
            w.x.get("io.kubernetes.pod.namespace") == w.p.get("io.kubernetes.pod.namespace");
        if same_ns {
            // One namespace object: the pods must agree on its labels.
            let ns_labels = |l: &BTreeMap<String, String>| -> Vec<(String, String)> {
                l.iter()
                    .filter(|(k, _)| k.starts_with("io.cilium.k8s.namespace.labels."))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            if ns_labels(&w.x) != ns_labels(&w.p) {
                return None;
            }
        }
        let p = pod_yaml("witness-p", "10.255.0.11", &w.p)?;
        // Drop the duplicate Namespace document when both pods share it.
        let p = if same_ns {
            p.split("---\napiVersion: v1\nkind: Pod")
                .nth(1)
                .map(|rest| format!("---\napiVersion: v1\nkind: Pod{rest}"))?
        } else {
            p
        };
        text.push_str(&p);
    }
    let file = SourceFile::new("<witness>", text);
    let (inventory, diags) =
        polc_compiler::read_file(FileId(0), &file, &polc_compiler::Options::default());
    if !diags.is_empty() {
        return None;
    }
    let namespaces: Vec<&String> = [&w.x, &w.p]
        .iter()
        .filter_map(|l| l.get("io.kubernetes.pod.namespace"))
        .collect();
    let config = Config {
        version,
        dual_stack: Some(false),
        ..Config::default()
    };
    let at = IpAddr::V4(w.addr);
    let mut model = objects.model(inventory, &namespaces, &[at], config);
    if w.kind == KIND_WORLD {
        model.dns_answers = w.dns.iter().map(|n| (n.clone(), at)).collect();
    }
    let find = |name: &str| model.inventory.pods.iter().position(|p| p.name == name);
    let x = Peer::Pod(find("witness-x")?);
    let other = match w.kind {
        KIND_POD => Peer::Pod(find("witness-p")?),
        KIND_WORLD => Peer::External(at),
        KIND_HOST => Peer::Host(model.inventory.nodes.iter().position(|n| n.name == "n1")?),
        KIND_REMOTE_NODE => Peer::Host(model.inventory.nodes.iter().position(|n| n.name == "n2")?),
        _ => return None,
    };
    // A world address that is a cluster address is not the flow the solver meant.
    if w.kind == KIND_WORLD && !matches!(eval::locate(&model, at), Peer::External(_)) {
        return None;
    }
    let proto = Proto::from_number(w.proto)?;
    let port = if matches!(proto, Proto::Icmp | Proto::Icmpv6) {
        w.port & 0xff
    } else {
        w.port.max(1)
    };
    let (src, dst) = match dir {
        Direction::Ingress => (other, x),
        Direction::Egress => (x, other),
    };
    let f = Flow {
        src,
        dst,
        proto,
        port,
        request,
    };
    let outcome = eval::decide(&model, &f);
    let describe = |p: Peer, labels: &BTreeMap<String, String>| match p {
        Peer::Pod(_) => {
            let ns = labels
                .get("io.kubernetes.pod.namespace")
                .map_or("?", String::as_str);
            let shown: Vec<String> = labels
                .iter()
                .filter(|(k, v)| {
                    let hidden = matches!(
                        k.as_str(),
                        "io.kubernetes.pod.namespace"
                            | "io.cilium.k8s.policy.cluster"
                            | "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name"
                    );
                    let default_sa =
                        k.as_str() == "io.cilium.k8s.policy.serviceaccount" && *v == "default";
                    !hidden && !default_sa
                })
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("a pod in {ns} with {{{}}}", shown.join(","))
        }
        Peer::Host(0) => "the local host".to_string(),
        Peer::Host(_) => "a remote node".to_string(),
        Peer::External(ip) => ip.to_string(),
    };
    let (sl, dl) = match dir {
        Direction::Ingress => (&w.p, &w.x),
        Direction::Egress => (&w.x, &w.p),
    };
    let mut text = format!(
        "{} -> {} {}/{}",
        describe(src, sl),
        describe(dst, dl),
        proto.name(),
        port
    );
    match &f.request {
        Some(Request::Http {
            method,
            path,
            host,
            headers,
        }) => {
            let _ = write!(text, " http {method} {path:?}");
            if !host.is_empty() {
                let _ = write!(text, " host {host:?}");
            }
            for (k, v) in headers {
                let _ = write!(text, " header \"{k}: {v}\"");
            }
        }
        Some(Request::Dns { query }) => {
            let _ = write!(text, " dns {query:?}");
        }
        _ => {}
    }
    if !model.dns_answers.is_empty() {
        let names: Vec<&str> = w.dns.iter().map(String::as_str).collect();
        let _ = write!(
            text,
            " (after the DNS proxy answered {} with {})",
            names.join(", "),
            w.addr
        );
    }
    Some(Replay {
        x: EndpointRef::Pod(find("witness-x")?),
        model,
        flow: f,
        outcome,
        text,
        caveats: Vec::new(),
    })
}

/// A witness flow judged by the reference evaluator.
pub struct Replay {
    /// The cluster built from the witness (pods `witness-x` and `witness-p`, nodes `n1` and
    /// `n2`).
    pub model: Model,
    /// The flow.
    pub flow: Flow,
    /// The evaluator's verdict.
    pub outcome: Outcome,
    /// The flow for people: `a pod with {…} -> 10.0.0.1 TCP/80`.
    pub text: String,
    /// The witness endpoint.
    x: EndpointRef,
    /// What the example leaves out that a real cluster may have (for people).
    pub caveats: Vec<String>,
}

impl Replay {
    /// The decision at the witness endpoint in a direction.
    pub fn at_x(&self, dir: Direction) -> Option<&Decision> {
        self.outcome
            .decisions
            .iter()
            .find(|d| d.endpoint == self.x && d.direction == dir)
    }

    /// The verdict and each end's decision with the rules behind it, indented.
    pub fn explain(&self) -> String {
        let name = |ep: EndpointRef| {
            let peer = match ep {
                EndpointRef::Pod(i) => Peer::Pod(i),
                EndpointRef::Host(n) => Peer::Host(n),
            };
            if peer == self.flow.src {
                "the source"
            } else {
                "the destination"
            }
        };
        let mut s = format!("{}: {}\n", self.text, self.outcome.verdict.name());
        for d in &self.outcome.decisions {
            let _ = writeln!(
                s,
                "  {} of {}: {} — {}",
                d.direction.name(),
                name(d.endpoint),
                d.verdict.name(),
                if d.note.is_empty() {
                    "decided by the rules below"
                } else {
                    &d.note
                }
            );
            for r in d.rules.iter().take(3) {
                let _ = writeln!(s, "    {} {}", r.policy, r.path);
            }
        }
        for c in &self.caveats {
            let _ = writeln!(s, "  note: {c}");
        }
        s.trim_end().to_string()
    }
}

/// Reads the witness flow off a model, replays it (see [`replay`]) and describes it when
/// the witness endpoint's decision is `want`; `None` drops the finding.
pub(crate) fn confirm<P: Policies + ?Sized>(
    objects: &P,
    version: CiliumVersion,
    v: &FlowVars,
    model: &z3::Model,
    dir: Direction,
    request: Option<Request>,
    want: (Verdict, Why),
) -> Option<String> {
    let w = witness(v, model)?;
    let r = replay(objects, version, &w, dir, request)?;
    let d = r.at_x(dir)?;
    (d.verdict == want.0 && d.why == want.1).then(|| r.text.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_selector_gets_a_name_it_selects() {
        for (selector, want) in [
            ("matchName: API.Stripe.com", Some("api.stripe.com.")),
            (
                "matchPattern: *.s3.amazonaws.com",
                Some("polc.s3.amazonaws.com."),
            ),
            ("matchPattern: **.example.com", Some("polc.example.com.")),
            (
                "matchPattern: api-*.example.com",
                Some("api-polc.example.com."),
            ),
            ("matchPattern: *", Some("polc.example.")),
            ("fromCIDR", None),
        ] {
            let got = name_selected_by(selector);
            assert_eq!(got.as_deref(), want, "{selector}");
            if let Some(name) = got {
                assert!(eval::fqdn_selects(selector, &name), "{selector}");
            }
        }
    }
}
