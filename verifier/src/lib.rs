//! The polc verifier: the IR encoded in z3, and the checks and answers built on it.
//!
//! Every query answers [`Answer::Holds`], [`Answer::Violated`] with a witness, or
//! [`Answer::Unknown`] when the solver gives up (timeout); Unknown is never reported as Holds.
//!
//! This first part encodes label selectors over a symbolic pod: every label key is a pair
//! (present, value), so a pod has at most one value per key, as Kubernetes labels do. On it
//! rests the first check, a selector no pod can ever satisfy ([`selector::satisfiable`]).
//! Addresses, ports, protocols and HTTP requests join the encoding with the rule checks.

pub mod addresses;
pub mod bypass;
pub mod capacity;
pub mod checks;
pub mod concrete;
pub mod decision;
pub mod diff;
pub mod dns;
pub mod expect;
pub mod flow;
pub mod host;
pub mod isolation;
pub mod redundant;
pub mod regex;
pub mod replay;
mod sample;
pub mod selector;
pub mod shadow;

use std::time::Duration;

/// The rules a check reports on. A lint is about every rule; a review of one object (the
/// admission webhook) is about the first `n` rules of the set, which are that object's:
/// a question is asked only when one of them takes part, and a finding about another rule
/// is kept only when that rule was fine without them (see [`checks::review`]). When only
/// some items of those rules changed (the addresses of a CIDR group they use), the focus is
/// on those items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Focus<'a> {
    /// Every rule.
    All,
    /// The first `n` rules.
    First(usize),
    /// These items, as (rule, item) indexes in ascending order; when only the flows to and
    /// from some addresses changed, those.
    Items(&'a [(usize, usize)], Option<&'a addresses::Addresses>),
}

impl<'a> Focus<'a> {
    /// Whether rule `ri` has an item reported on.
    pub(crate) fn has(self, ri: usize) -> bool {
        match self {
            Focus::All => true,
            Focus::First(n) => ri < n,
            Focus::Items(list, _) => {
                let at = list.partition_point(|&(r, _)| r < ri);
                list.get(at).is_some_and(|&(r, _)| r == ri)
            }
        }
    }

    /// The rules with an item reported on, in the set's order.
    pub(crate) fn rules(
        self,
        set: &polc_compiler::ir::PolicySet,
    ) -> impl Iterator<Item = usize> + use<'a> {
        let (n, listed) = match self {
            Focus::All => (set.rules.len(), &[][..]),
            Focus::First(n) => (n.min(set.rules.len()), &[][..]),
            Focus::Items(list, _) => (0, list),
        };
        let mut last = None;
        (0..n).chain(listed.iter().map(|&(r, _)| r).filter(move |&r| {
            let new = last != Some(r);
            last = Some(r);
            new
        }))
    }

    /// Whether item `ii` of rule `ri` is one reported on.
    pub(crate) fn has_item(self, ri: usize, ii: usize) -> bool {
        match self {
            Focus::Items(list, _) => list.binary_search(&(ri, ii)).is_ok(),
            _ => self.has(ri),
        }
    }

    /// The items of the focus, as (rule, item) indexes (all of them for [`Focus::All`]).
    fn items(
        self,
        set: &polc_compiler::ir::PolicySet,
    ) -> impl Iterator<Item = (usize, usize)> + use<'_, 'a> {
        let rules = match self {
            Focus::All => set.rules.len(),
            Focus::First(n) => n.min(set.rules.len()),
            Focus::Items(..) => 0,
        };
        let listed = match self {
            Focus::Items(list, _) => list,
            _ => &[][..],
        };
        let whole = set.rules[..rules]
            .iter()
            .enumerate()
            .flat_map(|(ri, r)| (0..r.items.len()).map(move |ii| (ri, ii)));
        whole.chain(listed.iter().copied())
    }

    /// The items a check with this focus asks about, in the set's order (`None`: every
    /// item): the focus items, and the allow items that a focus item may reach
    /// (`reaches(focus item, item)`, by rule and item index) on pods their rules may share.
    /// Found from the focus items through the index, so that a review of one object does
    /// not look at every item of the set. `reaches` must read only the terms of the focus
    /// item (see [`shadow::same_terms`]), not which rule it belongs to.
    pub(crate) fn visits(
        self,
        set: &polc_compiler::ir::PolicySet,
        layout: &shadow::Layout<'_>,
        reaches: impl Fn((usize, usize), (usize, usize)) -> bool,
    ) -> Option<Vec<(usize, usize)>> {
        use polc_compiler::ir::Subject;
        if self == Focus::All {
            return None;
        }
        let focus: Vec<(usize, usize)> = self.items(set).collect();
        let mut out = focus.clone();
        // What each focus item reaches before its rule's subject is looked at, kept for the
        // focus items written alike (a CIDR group's users often are): `reaches` reads the
        // focus item's terms, not its rule.
        type At = (usize, usize);
        let mut reached: Vec<(At, Vec<At>)> = Vec::new();
        for &(rf, jf) in &focus {
            let rule = &set.rules[rf];
            let Subject::Endpoints(t) = &rule.subject else {
                continue;
            };
            let item = &rule.items[jf];
            let known = reached.iter().position(|((r, j), _)| {
                layout.ns[*r] == layout.ns[rf] && shadow::same_terms(&set.rules[*r].items[*j], item)
            });
            let at = match known {
                Some(at) => at,
                None => {
                    // `reaches` asks for items that meet (their shapes do), so their kinds of
                    // remote end meet too.
                    let kinds = layout.shapes.get(rf, jf).kinds();
                    let list = layout
                        .allows
                        .near(item.direction, layout.ns[rf], kinds)
                        .filter(|&a| self.may_change(layout, a) && reaches((rf, jf), a))
                        .collect();
                    reached.push(((rf, jf), list));
                    reached.len() - 1
                }
            };
            for &(ra, ja) in &reached[at].1 {
                let Subject::Endpoints(s) = &set.rules[ra].subject else {
                    continue;
                };
                if !shadow::disjoint(s, t) {
                    out.push((ra, ja));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    /// Whether the flows item `ii` of rule `ri` matches may be judged otherwise now: it is a
    /// focus item, or its remote end may be one of the addresses whose flows changed.
    pub(crate) fn may_change(self, layout: &shadow::Layout<'_>, (ri, ii): (usize, usize)) -> bool {
        match self {
            Focus::Items(_, Some(moved)) => {
                self.has_item(ri, ii) || layout.shapes.get(ri, ii).may_hold(moved)
            }
            _ => true,
        }
    }

    /// The items a check walks, in the set's order: those of `visits` (see
    /// [`Focus::visits`]), or the focus's own when that is `None` (every item, since only
    /// [`Focus::All`] visits everything).
    pub(crate) fn walk<'s>(
        self,
        set: &'s polc_compiler::ir::PolicySet,
        visits: Option<&'s [(usize, usize)]>,
    ) -> Box<dyn Iterator<Item = (usize, usize)> + 's>
    where
        'a: 's,
    {
        match visits {
            Some(v) => Box::new(v.iter().copied()),
            None => Box::new(self.items(set)),
        }
    }

    /// Whether a question about item `ii` of rule `ri` that involves the items `others`
    /// (rule and item indexes) is worth asking: it is about a focus item, or one takes part.
    pub(crate) fn involves(
        self,
        (ri, ii): (usize, usize),
        mut others: impl Iterator<Item = (usize, usize)>,
    ) -> bool {
        self.has_item(ri, ii) || others.any(|(r, i)| self.has_item(r, i))
    }
}

/// What the solver said about a property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer<W> {
    /// The property holds for every input.
    Holds,
    /// The property fails; the witness shows how.
    Violated(W),
    /// The solver gave up (timeout or incompleteness); nothing is known.
    Unknown(String),
}

/// Solver settings.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The longest one query may take.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
        }
    }
}

/// A solver with the limits applied.
fn solver(limits: Limits) -> z3::Solver {
    let s = z3::Solver::new();
    let mut params = z3::Params::new();
    let ms = u32::try_from(limits.timeout.as_millis()).unwrap_or(u32::MAX);
    params.set_u32("timeout", ms);
    s.set_params(&params);
    s
}

/// Checks, preferring a model where the preferences hold: the `strong` ones make an
/// example replayable (the encoding's free booleans false, as the reference evaluator sees
/// named ports, FQDNs and special entities in a cluster built from the example), the `weak`
/// ones readable (plain service accounts). Preferences in the way (an unsatisfiable core) are
/// dropped, weak ones first, until the rest can hold; then the solver is asked without any.
fn check_preferring(
    kind: &str,
    z: &z3::Solver,
    strong: &[z3::ast::Bool],
    weak: &[z3::ast::Bool],
) -> z3::SatResult {
    smt::record(kind, z);
    let mut strong: Vec<z3::ast::Bool> = strong.to_vec();
    let mut weak: Vec<z3::ast::Bool> = weak.to_vec();
    for _ in 0..4 {
        if strong.is_empty() && weak.is_empty() {
            break;
        }
        let all: Vec<z3::ast::Bool> = strong.iter().chain(&weak).cloned().collect();
        match z.check_assumptions(&all) {
            z3::SatResult::Unsat => {
                let core = z.get_unsat_core();
                if core.is_empty() {
                    break;
                }
                let before = weak.len();
                weak.retain(|p| !core.contains(p));
                if weak.len() == before {
                    strong.retain(|p| !core.contains(p));
                }
            }
            other => return other,
        }
    }
    z.check()
}

/// Runs `f` on a new thread, with z3's thread-local context fresh: z3's answers (which
/// example it picks) depend on everything the context has seen, so work that must be
/// reproducible starts from scratch. A panic in `f` is passed on.
pub fn fresh_context<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let job = std::sync::Mutex::new(Some(f));
    let run = || {
        let f = job.lock().ok().and_then(|mut j| j.take());
        f.map(|f| f())
    };
    let out = std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .name("polc-z3".into())
            .stack_size(256 << 20)
            .spawn_scoped(s, run);
        match worker.map(|h| h.join()) {
            Ok(Ok(v)) => v,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // No thread to be had: run here, with the context as it is.
            Err(_) => None,
        }
    });
    match out {
        Some(v) => v,
        None => run().unwrap_or_else(|| unreachable!("the job runs exactly once")),
    }
}

/// Asks whether the assertions have a model, first without the costly constraints that make
/// an example buildable as Kubernetes objects (`FlowVars::values_valid`), then, only when a
/// flow exists, with them and the preferences of [`check_preferring`]. The answer is the
/// first that is not `Sat`, or the second.
fn find_example(
    kind: &str,
    z: &z3::Solver,
    v: &mut flow::FlowVars,
    strong: &[z3::ast::Bool],
) -> z3::SatResult {
    let first = check(kind, z);
    if first != z3::SatResult::Sat {
        return first;
    }
    z.assert(v.values_valid());
    let prefs = v.preferences();
    check_preferring(kind, z, strong, &prefs)
}

/// Example flows of `item` of a rule with `subject` (pods of namespace `ns` when the subject
/// pins none), to replay when every flow of the item will do: first the sample judge's
/// concrete flows (no solver), then one from z3, asked in variables of its own. Those know
/// only the labels the subject and item name, so the solver has few strings to make valid
/// (variables shared with a question about many other items can hold hundreds).
fn item_examples<'a>(
    kind: &'a str,
    subject: &'a polc_compiler::ir::Selector,
    item: &'a polc_compiler::ir::Item,
    ns: Option<&str>,
    version: polc_compiler::version::CiliumVersion,
    limits: Limits,
) -> impl Iterator<Item = replay::Witness> + 'a {
    let samples = sample::Judge::new(version)
        .samples(subject, item, ns.unwrap_or(sample::ANY_NAMESPACE))
        .into_iter()
        .take(2)
        .map(|s| s.witness());
    let solved = std::iter::once_with(move || {
        let mut v = flow::FlowVars::for_version(version);
        let wf = v.well_formed("default");
        let (flow::Encoded::Exact(s), flow::Encoded::Exact(a)) =
            (flow::subject(&mut v, subject), flow::item(&mut v, item))
        else {
            return None;
        };
        let z = solver(limits);
        z.assert(&wf);
        z.assert(&s);
        z.assert(&a);
        z.assert(v.values_valid());
        let prefs = v.preferences();
        if check_preferring(kind, &z, &[], &prefs) != z3::SatResult::Sat {
            return None;
        }
        replay::witness(&v, &z.get_model()?)
    })
    .flatten();
    samples.chain(solved)
}

/// Checks the solver's assertions, recording the query (see [`smt`]).
fn check(kind: &str, z: &z3::Solver) -> z3::SatResult {
    smt::record(kind, z);
    z.check()
}

/// The SMT-LIB text of the queries the checks ask, for `--emit-smt`: recording is off until
/// [`smt::start`], and [`smt::take`] hands the queries over.
pub mod smt {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    static ON: AtomicBool = AtomicBool::new(false);
    static QUERIES: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

    /// Starts recording.
    pub fn start() {
        ON.store(true, Ordering::SeqCst);
    }

    /// The queries recorded so far, as (file name, SMT-LIB text), in the order asked.
    pub fn take() -> Vec<(String, String)> {
        QUERIES
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }

    pub(crate) fn record(kind: &str, z: &z3::Solver) {
        if !ON.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(mut q) = QUERIES.lock() {
            let name = format!("{:05}-{kind}.smt2", q.len() + 1);
            q.push((
                name,
                format!("; polc {kind} query\n{z}\n(check-sat)\n(get-model)\n"),
            ));
        }
    }
}

/// A V0400 note: the question about the item at `loc` got no answer in time.
fn undecided(
    loc: polc_compiler::source::Loc,
    check: &str,
    z: &z3::Solver,
) -> polc_compiler::diag::Diagnostic {
    polc_compiler::diag::Diagnostic::new(
        polc_compiler::diag::Code::Undecided,
        loc,
        format!(
            "the verifier could not decide the {check} check here: {}",
            z.get_reason_unknown()
                .unwrap_or_else(|| "the solver gave up".into())
        ),
    )
    .label("undecided")
    .help("raise `--timeout` to give the solver more time; until then nothing is known here")
}
