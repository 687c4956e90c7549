//! Policy expectations (`expect allow|deny FROM -> TO PORTS [L7]`) for every pod that could
//! exist: `allow` holds when no flow the expectation describes is denied, `deny` when none is
//! allowed. The solver looks for a flow with the other verdict; one it finds is replayed
//! through `eval` on a cluster built from it before it is reported.

use crate::decision::{Encoder, Req, Shape};
use crate::flow::{self, FlowVars, KIND_HOST, KIND_POD, KIND_REMOTE_NODE, KIND_WORLD};
use crate::replay::{Replay, replay, witness};
use crate::{Answer, Limits, solver};
use polc_compiler::eval::{Request, Verdict};
use polc_compiler::ir::{Direction, PolicySet, PortSpec, Ports, Requirement};
use polc_compiler::raw::Object;
use polc_compiler::version::CiliumVersion;
use z3::SatResult;
use z3::ast::{BV, Bool};

/// One end of the flows an expectation describes.
#[derive(Clone, Debug)]
pub enum End {
    /// Pods in a namespace (`None`: any) whose labels meet the requirements.
    Pods {
        /// The namespace.
        namespace: Option<String>,
        /// Requirements on the pod's labels (keys with a source, `any:app`).
        reqs: Vec<Requirement>,
    },
    /// Addresses outside the cluster, all or within an IPv4 prefix.
    World(Option<ipnet::Ipv4Net>),
    /// The pod's own node.
    Host,
    /// Another node.
    RemoteNode,
}

/// An expectation.
#[derive(Clone, Debug)]
pub struct Expectation {
    /// The verdict every flow should get.
    pub verdict: Verdict,
    /// Source.
    pub from: End,
    /// Destination.
    pub to: End,
    /// Protocol number and port (or ICMP type) range; `None`: every protocol and port.
    pub ports: Option<(u8, Option<(u16, u16)>)>,
    /// The request the flows carry.
    pub request: Option<Request>,
}

/// Why an expectation cannot be checked symbolically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The expectation describes no flow (its ends can never both exist).
    NoFlow,
    /// Neither end is a pod: without an inventory only pods' policies are known.
    NoPod,
    /// The evaluator disagrees with an exact encoding: a bug in polc, with both answers.
    Internal(String),
}

/// Checks an expectation against the policies (lowered as `set`; `objects` serve the
/// replay). `Violated` carries the replayed counterexample.
pub fn check(
    set: &PolicySet,
    objects: &[Object],
    version: CiliumVersion,
    e: &Expectation,
    limits: Limits,
) -> Result<Answer<Replay>, Refusal> {
    let (shape, x_end, other) = match (&e.from, &e.to) {
        (End::Pods { .. }, End::Pods { .. }) => (Shape::PodToPod, &e.from, &e.to),
        (End::Pods { .. }, o) => (Shape::PodToOutside(kind_of(o)), &e.from, o),
        (o, End::Pods { .. }) => (Shape::OutsideToPod(kind_of(o)), &e.to, o),
        _ => return Err(Refusal::NoPod),
    };
    let mut v = FlowVars::for_version(version);
    let mut parts = vec![v.well_formed("default")];
    parts.push(pods(&mut v, x_end));
    if shape == Shape::PodToPod {
        v.swap_ends();
        parts.push(pods(&mut v, other));
        v.swap_ends();
    }
    parts.push(v.kind_is(crate::decision::remote_kind(shape)));
    if let End::World(Some(net)) = other {
        let len = u32::from(net.prefix_len());
        if len > 0 {
            let bits = u64::from(u32::from(net.network())) >> (32 - len);
            parts.push(v.addr.extract(31, 32 - len).eq(BV::from_u64(bits, len)));
        }
    }
    if let Some((proto, range)) = e.ports {
        parts.push(v.proto.eq(BV::from_u64(u64::from(proto), 8)));
        if let Some((a, b)) = range {
            parts.push(v.port.bvuge(BV::from_u64(u64::from(a), 16)));
            parts.push(v.port.bvule(BV::from_u64(u64::from(b), 16)));
        }
    }
    let mut enc = Encoder::new(set, "e");
    let ns_of = |e: &End| match e {
        End::Pods { namespace, .. } => namespace.clone(),
        _ => None,
    };
    enc.namespaces(ns_of(&e.from).as_deref(), ns_of(&e.to).as_deref());
    let mut req = match &e.request {
        Some(r) => Req::Concrete(r),
        None => Req::None,
    };
    let allowed = enc.allowed(&mut v, shape, &mut req);
    let described = Bool::and(&parts);

    let z = solver(limits);
    z.assert(&described);
    match crate::check("expect", &z) {
        SatResult::Unsat => return Err(Refusal::NoFlow),
        SatResult::Unknown => return Ok(Answer::Unknown(reason(&z))),
        SatResult::Sat => {}
    }
    let other_verdict = match e.verdict {
        Verdict::Allow => allowed.not(),
        Verdict::Deny => allowed,
    };
    z.assert(&other_verdict);
    match crate::check("expect", &z) {
        SatResult::Unsat => return Ok(Answer::Holds),
        SatResult::Unknown => return Ok(Answer::Unknown(reason(&z))),
        SatResult::Sat => {}
    }
    // A counterexample exists; now one a cluster can be built from.
    z.assert(v.values_valid());
    let prefs = v.preferences();
    match crate::check_preferring("expect", &z, &enc.defaults(), &prefs) {
        SatResult::Unsat => {
            return Ok(Answer::Unknown(
                "the only counterexamples need label values Kubernetes rejects".into(),
            ));
        }
        SatResult::Unknown => return Ok(Answer::Unknown(reason(&z))),
        SatResult::Sat => {}
    }
    let model = z
        .get_model()
        .ok_or_else(|| Refusal::Internal("no model".into()))?;
    let dir = match shape {
        Shape::OutsideToPod(_) => Direction::Ingress,
        _ => Direction::Egress,
    };
    let solver_says = match e.verdict {
        Verdict::Allow => Verdict::Deny,
        Verdict::Deny => Verdict::Allow,
    };
    let replayed =
        witness(&v, &model).and_then(|w| replay(objects, version, &w, dir, e.request.clone()));
    match replayed {
        Some(mut r) if r.outcome.verdict == solver_says => {
            // Named ports matter when a denying end's rules use them.
            let named: Vec<String> = set
                .rules
                .iter()
                .filter(|r| {
                    r.items.iter().any(|i| {
                        matches!(&i.ports, Ports::List(p)
                            if p.iter().any(|p| matches!(p.port, PortSpec::Named(_))))
                    })
                })
                .map(|r| r.origin.describe())
                .collect();
            let relevant = r.outcome.decisions.iter().any(|d| {
                d.verdict == Verdict::Deny && d.rules.iter().any(|x| named.contains(&x.policy))
            });
            if relevant {
                r.caveats.push(
                    "the example's pods declare no container ports, so named ports match \
                     nothing on them; pods that declare the named ports may behave otherwise"
                        .into(),
                );
            }
            Ok(Answer::Violated(r))
        }
        other if !enc.approximations().is_empty() => Ok(Answer::Unknown(format!(
            "the solver's example {} but the encoding leaves free: {}",
            match &other {
                Some(r) => format!(
                    "({}) gets `{}` from the evaluator",
                    r.text,
                    r.outcome.verdict.name()
                ),
                None => "could not be built as a cluster".to_string(),
            },
            enc.approximations().join("; ")
        ))),
        Some(r) => Err(Refusal::Internal(format!(
            "the solver says `{}` and the evaluator says `{}` for {}",
            solver_says.name(),
            r.outcome.verdict.name(),
            r.text
        ))),
        None => Ok(Answer::Unknown(
            "the solver's example could not be built as a cluster".into(),
        )),
    }
}

fn kind_of(end: &End) -> u64 {
    match end {
        End::Pods { .. } => KIND_POD,
        End::World(_) => KIND_WORLD,
        End::Host => KIND_HOST,
        End::RemoteNode => KIND_REMOTE_NODE,
    }
}

/// The endpoint `x` is one of the pods an end describes.
fn pods(v: &mut FlowVars, end: &End) -> Bool {
    let End::Pods { namespace, reqs } = end else {
        return Bool::from_bool(true);
    };
    let mut parts = vec![flow::requirements(&mut v.x, reqs)];
    if let Some(ns) = namespace {
        parts.push(flow::requirements(
            &mut v.x,
            &[Requirement::equals(
                "k8s:io.kubernetes.pod.namespace",
                ns.as_str(),
            )],
        ));
    }
    Bool::and(&parts)
}

fn reason(z: &z3::Solver) -> String {
    z.get_reason_unknown()
        .unwrap_or_else(|| "the solver gave up".to_string())
}
