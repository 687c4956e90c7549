//! `polc lab`: try policies with real packets and no cluster. `up` builds the inventory's
//! pods and nodes as network namespaces on this machine and loads the compiled policies with
//! polc's datapath; `probe` sends real packets between them (one flow, or a whole flows file
//! judged against `eval` and `expect`); `apply` replaces the policies of a running lab;
//! `down` removes everything (also after a crash). See [`crate::lab`] for the topology.

use super::cluster::{self, ClusterArgs, Loaded};
use super::explain::{self, FlowParts};
use super::load::report_error;
use crate::lab::plan::{self, Plan};
use crate::lab::probe::{self, End, L4, Observed, Outcome, Servers};
use crate::lab::{self, LabError, State};
use crate::{EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE, Io};
use polc_compiler::diag::Code;
use polc_compiler::eval::{self, Flow, Peer, Request, Verdict};
use polc_compiler::flows::FlowSpec;
use polc_compiler::ir::Proto;
use polc_compiler::source::SourceMap;
use polc_ebpf::loader::{LoadError, Report};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Arguments of `polc lab`.
#[derive(Debug, clap::Args)]
pub struct LabArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: LabCommand,
}

/// The lab's subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Build the inventory's pods and nodes as network namespaces and load the policies.
    Up(Box<UpArgs>),
    /// Send real packets between the lab's pods (one flow, or every flow of a flows file).
    Probe(Box<ProbeArgs>),
    /// Replace the policies of a running lab (the network stays).
    Apply(ApplyArgs),
    /// Remove everything a lab made (also after a crash).
    Down(DownArgs),
}

fn name_arg(s: &str) -> Result<String, String> {
    if plan::valid_name(s) {
        Ok(s.to_string())
    } else {
        Err("a lab name is 1-12 lower-case letters, digits and `-`".into())
    }
}

/// Arguments of `polc lab up`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 the lab is up, 2 bad input or a failure (nothing is left \
                        behind)."
)]
pub struct UpArgs {
    /// Policies, inventory and agent settings.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The lab's name (its namespaces are `plab-NAME-*`).
    #[arg(long, default_value = "lab", value_parser = name_arg)]
    pub name: String,
    /// Capacity of each endpoint's policy map.
    #[arg(long, default_value_t = 16384, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub policy_map_max: u32,
}

/// Output formats of `polc lab probe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeFormat {
    /// Text for people.
    Human,
    /// JSON: a list with one object per flow.
    Json,
}

/// Arguments of `polc lab probe`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "EP is NAMESPACE/POD, host/NODE, or an IP address (an address outside the \
    cluster is given to the lab's world namespace).\n\
    Exit codes: 0 every probe agrees with eval (and, for --flows, every flow with its expect), \
    1 some do not, 2 bad input, no lab, or a probe that could not be run."
)]
pub struct ProbeArgs {
    /// The lab.
    #[arg(long, default_value = "lab", value_parser = name_arg)]
    pub name: String,
    /// Where the packets come from.
    #[arg(long, value_name = "EP", required_unless_present = "flows")]
    pub from: Option<String>,
    /// Where they go.
    #[arg(long, value_name = "EP", required_unless_present = "flows")]
    pub to: Option<String>,
    /// Protocol: tcp, udp, sctp, icmp or icmpv6.
    #[arg(long, value_name = "PROTO", default_value = "tcp")]
    pub proto: String,
    /// Destination port (TCP, UDP, SCTP).
    #[arg(long)]
    pub port: Option<u16>,
    /// ICMP type (ICMP, ICMPv6; default: echo request).
    #[arg(long, value_name = "N")]
    pub icmp_type: Option<u8>,
    /// The L7 request to send (HTTP over TCP, DNS over UDP or TCP; Kafka is not sent).
    #[command(flatten)]
    pub request: explain::RequestArgs,
    /// Probe every flow of a flows file (the `polc explain --flows` format).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["from", "to"])]
    pub flows: Option<PathBuf>,
    /// How long to wait for an answer before a probe counts as dropped, in milliseconds.
    #[arg(long, default_value_t = 500, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(10..=60000))]
    pub timeout: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ProbeFormat::Human)]
    pub format: ProbeFormat,
    /// Judge with `eval` on a live cluster's policies and inventory (what `polc agent`
    /// installs) instead of the files the lab was built from; the lab's network stays.
    #[command(flatten)]
    pub live: crate::live::LiveArgs,
}

/// Arguments of `polc lab apply`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 applied, 2 bad input, no lab, or a failed load (the \
                        datapath keeps the policies it had)."
)]
pub struct ApplyArgs {
    /// The lab.
    #[arg(long, default_value = "lab", value_parser = name_arg)]
    pub name: String,
    /// The new policy files or directories (default: those the lab was built with, re-read).
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub policies: Vec<PathBuf>,
}

/// Arguments of `polc lab down`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 removed (or nothing to remove), 2 failure.")]
pub struct DownArgs {
    /// The lab.
    #[arg(long, default_value = "lab", value_parser = name_arg)]
    pub name: String,
}

/// Runs `polc lab`.
pub fn run(args: &LabArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    let euid = polc_ebpf::sys::euid();
    if euid != 0 {
        return Ok(report_error(&LoadError::NotRoot(euid), io.stderr));
    }
    match &args.command {
        LabCommand::Up(a) => up(a, io),
        LabCommand::Probe(a) => probe_cmd(a, io),
        LabCommand::Apply(a) => apply(a, io),
        LabCommand::Down(a) => down(a, io),
    }
}

/// Prints a lab error in polc's style and returns the exit code.
fn lab_error(e: &LabError, stderr: &mut dyn Write) -> i32 {
    match e {
        LabError::Load(l) => report_error(l, stderr),
        LabError::Setup { .. } => {
            let _ = writeln!(
                stderr,
                "polc: error[{}]: {e}",
                Code::LabSetupFailed.as_str()
            );
            EXIT_USAGE
        }
        LabError::NoLab(name) => {
            let _ = writeln!(stderr, "polc: error[{}]: {e}", Code::NoLab.as_str());
            let _ = writeln!(
                stderr,
                "  = help: build it with `polc lab up --name {name} --policies ... --inventory ...`"
            );
            EXIT_USAGE
        }
    }
}

fn absolute(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    paths
        .iter()
        .map(|p| {
            if p.as_os_str() == "-" {
                return Err("a lab re-reads its input later: give files, not `-`".to_string());
            }
            std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect()
}

fn cluster_of(state: &State, policies: Option<&[PathBuf]>) -> ClusterArgs {
    ClusterArgs {
        policies: policies.map_or_else(|| state.policies.clone(), <[PathBuf]>::to_vec),
        inventory: state.inventory.clone(),
        cilium_version: polc_compiler::CiliumVersion::from_str(&state.cilium_version)
            .unwrap_or_default(),
        cluster_name: state.cluster_name.clone(),
        max_file_size: 1024 * 1024 * 1024,
        // The datapath learns answers from DNS traffic, not from the command line.
        dns_answers: Vec::new(),
        live: Default::default(),
    }
}

fn changes_text(r: &Report) -> String {
    let c = &r.changes;
    format!(
        "policy entries +{} ~{} -{}, ipcache +{} ~{} -{}, links +{} -{}",
        c.policy.added,
        c.policy.changed,
        c.policy.removed,
        c.ipcache.added,
        c.ipcache.changed,
        c.ipcache.removed,
        r.links_attached,
        r.links_detached
    )
}

fn up(args: &UpArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    let start = Instant::now();
    let (policies, inventory) = match (
        absolute(&args.cluster.policies),
        absolute(&args.cluster.inventory),
    ) {
        (Ok(p), Ok(i)) => (p, i),
        (Err(e), _) | (_, Err(e)) => {
            writeln!(
                io.stderr,
                "polc: error[{}]: {e}",
                Code::LabSetupFailed.as_str()
            )?;
            return Ok(EXIT_USAGE);
        }
    };
    let Some(mut loaded) = cluster::load(&args.cluster, &[], io.stdin, io.stderr) else {
        return Ok(EXIT_USAGE);
    };
    // `--dns-answer`s are the lab DNS servers' records; the datapath learns them from DNS
    // traffic through the proxy, as a node does.
    loaded.model.learn_dns(Vec::new());
    let plan = match Plan::new(&args.name, &loaded.model) {
        Ok(p) => p,
        Err(e) => {
            writeln!(
                io.stderr,
                "polc: error[{}]: {e}",
                Code::LabSetupFailed.as_str()
            )?;
            return Ok(EXIT_USAGE);
        }
    };
    let removed = match lab::teardown(&args.name) {
        Ok(r) => r,
        Err(e) => return Ok(lab_error(&e, io.stderr)),
    };
    if removed.namespaces > 0 || removed.nodes > 0 {
        writeln!(
            io.stdout,
            "removed what an earlier lab `{}` left: {} network namespaces, {} node datapaths",
            args.name, removed.namespaces, removed.nodes
        )?;
    }
    let mut state = State {
        plan,
        pins: lab::pin_dir(&args.name),
        policies,
        inventory,
        cilium_version: args.cluster.cilium_version.to_string(),
        cluster_name: args.cluster.cluster_name.clone(),
        policy_map_max: args.policy_map_max,
        world_addrs: Vec::new(),
        ready: false,
        dns_records: args.cluster.dns_answers.clone(),
    };
    let result = state
        .write()
        .and_then(|()| lab::build(&state.plan))
        .and_then(|()| {
            lab::install(
                &state.plan,
                &loaded.model,
                &state.pins,
                state.policy_map_max,
            )
        })
        .and_then(|r| lab::start_proxies(&state, &loaded.model).map(|()| r));
    let reports = match result {
        Ok(r) => r,
        Err(e) => {
            let code = lab_error(&e, io.stderr);
            let _ = lab::teardown(&args.name);
            writeln!(io.stderr, "  = note: the lab was removed again")?;
            return Ok(code);
        }
    };
    state.ready = true;
    if let Err(e) = state.write() {
        return Ok(lab_error(&e, io.stderr));
    }
    let entries: usize = reports.iter().map(|(_, r)| r.changes.policy.added).sum();
    writeln!(
        io.stdout,
        "lab `{}` is up in {:.2} s: {} nodes, {} pods, {} policy-map entries loaded",
        args.name,
        start.elapsed().as_secs_f64(),
        state.plan.nodes.len(),
        state.plan.pods.len(),
        entries
    )?;
    for n in &state.plan.nodes {
        writeln!(
            io.stdout,
            "  node {:<24} router {}  host {}  {}",
            n.name,
            n.router,
            n.host,
            ips_text(&n.ips)
        )?;
    }
    for p in &state.plan.pods {
        writeln!(
            io.stdout,
            "  pod  {:<40} {}  on {}  {}",
            p.key,
            p.netns,
            state.plan.nodes[p.node].name,
            ips_text(&p.ips)
        )?;
    }
    writeln!(
        io.stdout,
        "  world (addresses outside the cluster)  {}",
        state.plan.world
    )?;
    for (pod, why) in &state.plan.skipped {
        writeln!(io.stdout, "  note: pod {pod} has no namespace: {why}")?;
    }
    writeln!(
        io.stdout,
        "probe with `polc lab probe --name {} --from NS/POD --to NS/POD|IP --proto tcp --port N` \
         (or `--flows FILE`); counters: `polc status --bpffs-root {}`",
        args.name,
        state.pins.display()
    )?;
    Ok(EXIT_CLEAN)
}

fn ips_text(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        return "(no address)".into();
    }
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn ready_state(name: &str) -> Result<State, LabError> {
    match State::read(name)? {
        Some(s) if s.ready => Ok(s),
        Some(_) => Err(LabError::Setup {
            what: format!("lab `{name}`"),
            detail: "it was not completely built; run `polc lab up` again".into(),
        }),
        None => Err(LabError::NoLab(name.to_string())),
    }
}

fn apply(args: &ApplyArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    let mut state = match ready_state(&args.name) {
        Ok(s) => s,
        Err(e) => return Ok(lab_error(&e, io.stderr)),
    };
    let policies = if args.policies.is_empty() {
        state.policies.clone()
    } else {
        match absolute(&args.policies) {
            Ok(p) => p,
            Err(e) => {
                writeln!(
                    io.stderr,
                    "polc: error[{}]: {e}",
                    Code::LabSetupFailed.as_str()
                )?;
                return Ok(EXIT_USAGE);
            }
        }
    };
    let cluster = cluster_of(&state, Some(&policies));
    let Some(loaded) = cluster::load(&cluster, &[], io.stdin, io.stderr) else {
        return Ok(EXIT_USAGE);
    };
    if let Err(e) = same_network(&state, &loaded) {
        return Ok(lab_error(&e, io.stderr));
    }
    let old_policies = std::mem::replace(&mut state.policies, policies);
    let reports = match lab::install(
        &state.plan,
        &loaded.model,
        &state.pins,
        state.policy_map_max,
    )
    .and_then(|r| lab::start_proxies(&state, &loaded.model).map(|()| r))
    {
        Ok(r) => r,
        Err(e) => {
            state.policies = old_policies;
            return Ok(lab_error(&e, io.stderr));
        }
    };
    if let Err(e) = state.write() {
        return Ok(lab_error(&e, io.stderr));
    }
    for (node, r) in reports {
        writeln!(io.stdout, "node `{node}`: {}", changes_text(&r))?;
    }
    Ok(EXIT_CLEAN)
}

fn same_network(state: &State, loaded: &Loaded) -> Result<(), LabError> {
    match Plan::new(&state.plan.lab, &loaded.model) {
        Ok(p) if p.same_network(&state.plan) => Ok(()),
        _ => Err(LabError::Setup {
            what: format!("lab `{}`", state.plan.lab),
            detail: "the inventory no longer matches the lab's network; run `polc lab up` again"
                .into(),
        }),
    }
}

fn down(args: &DownArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    match lab::teardown(&args.name) {
        Ok(r) if r == lab::Removed::default() => {
            writeln!(io.stdout, "nothing to remove: no lab `{}`", args.name)?;
            Ok(EXIT_CLEAN)
        }
        Ok(r) => {
            writeln!(
                io.stdout,
                "lab `{}` removed: {} network namespaces, {} node datapaths",
                args.name, r.namespaces, r.nodes
            )?;
            Ok(EXIT_CLEAN)
        }
        Err(e) => Ok(lab_error(&e, io.stderr)),
    }
}

// ---- probes ------------------------------------------------------------------------------

/// One probe of a flow in one address family.
struct Task {
    src: End,
    dst: End,
    l4: L4,
    request: Option<Request>,
}

/// How a flow is probed, or why it is not.
enum Probing {
    Tasks(Vec<Task>),
    Skip(String),
}

/// The addresses an end of a flow has in the lab, and its namespace.
fn end_of(
    state: &State,
    model: &polc_compiler::model::Model,
    peer: Peer,
    text: &str,
) -> Result<(String, Vec<IpAddr>), String> {
    let literal = IpAddr::from_str(text.trim()).ok();
    let (netns, ips) = match peer {
        Peer::Pod(i) => {
            // By name: the model may come from another reading of the cluster (`--cluster`)
            // than the one the lab was built from.
            let key = model
                .inventory
                .pods
                .get(i)
                .map(|p| p.key())
                .unwrap_or_default();
            let Some(p) = state.plan.pods.iter().find(|p| p.key == key) else {
                let why = state
                    .plan
                    .skipped
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map_or("it has no namespace in the lab", |(_, w)| w.as_str());
                return Err(format!("pod {key} is not in the lab: {why}"));
            };
            (p.netns.clone(), p.ips.clone())
        }
        Peer::Host(n) => {
            let name = model.inventory.nodes.get(n).map(|x| x.name.as_str());
            let Some(node) = state
                .plan
                .nodes
                .iter()
                .find(|x| Some(x.name.as_str()) == name)
            else {
                return Err("the node is not in the lab".into());
            };
            if node.ips.is_empty() {
                return Err(format!("node {} has no address", node.name));
            }
            (node.host.clone(), node.ips.clone())
        }
        Peer::External(ip) => {
            if !plan::usable(&ip) {
                return Err(format!("{ip} cannot be given to a namespace"));
            }
            (state.plan.world.clone(), vec![ip])
        }
    };
    match literal {
        Some(ip) if ips.contains(&ip) => Ok((netns, vec![ip])),
        _ => Ok((netns, ips)),
    }
}

fn plan_flow(
    state: &State,
    model: &polc_compiler::model::Model,
    flow: &Flow,
    from: &str,
    to: &str,
) -> Probing {
    let (src_ns, src_ips) = match end_of(state, model, flow.src, from) {
        Ok(e) => e,
        Err(why) => return Probing::Skip(why),
    };
    let (dst_ns, dst_ips) = match end_of(state, model, flow.dst, to) {
        Ok(e) => e,
        Err(why) => return Probing::Skip(why),
    };
    if src_ns == dst_ns {
        return Probing::Skip(
            "both ends are in one network namespace: the packets never leave it".into(),
        );
    }
    if let Some(parser) = unenforced_parser(model, flow) {
        return Probing::Skip(format!(
            "the port is redirected to the `{parser}` proxy, which polc does not run (Kafka and \
             generic L7 are deprecated upstream; TLS interception and Envoy listeners are not \
             polc's): the datapath fails closed there"
        ));
    }
    let l4 = match flow.proto {
        Proto::Tcp => L4::Tcp(flow.port),
        Proto::Udp => L4::Udp(flow.port),
        Proto::Sctp => L4::Sctp(flow.port),
        Proto::Icmp | Proto::Icmpv6 => L4::Icmp(u8::try_from(flow.port).unwrap_or(u8::MAX)),
    };
    let mut tasks = Vec::new();
    for v6 in [false, true] {
        match (flow.proto, v6) {
            (Proto::Icmp, true) | (Proto::Icmpv6, false) => continue,
            _ => {}
        }
        let s = src_ips.iter().find(|a| a.is_ipv6() == v6);
        let d = dst_ips.iter().find(|a| a.is_ipv6() == v6);
        if let (Some(s), Some(d)) = (s, d) {
            tasks.push(Task {
                src: End {
                    netns: crate::lab::net::netns_path(&src_ns),
                    addr: *s,
                },
                dst: End {
                    netns: crate::lab::net::netns_path(&dst_ns),
                    addr: *d,
                },
                l4,
                request: flow.request.clone(),
            });
        }
    }
    if tasks.is_empty() {
        return Probing::Skip("the two ends have no address family in common".into());
    }
    Probing::Tasks(tasks)
}

/// The L7 parser a flow's port is redirected to, when polc's proxy does not enforce it
/// (anything but HTTP and DNS): such ports fail closed in the lab.
fn unenforced_parser(model: &polc_compiler::model::Model, flow: &Flow) -> Option<String> {
    let l4 = Flow {
        request: None,
        ..flow.clone()
    };
    eval::decide(model, &l4)
        .decisions
        .into_iter()
        .filter_map(|d| d.proxy)
        .find(|p| p != "http" && p != "dns")
}

/// Runs `tasks` (at most 16 at a time) and returns their observations in order.
fn run_tasks(servers: &Servers, tasks: &[&Task], timeout: Duration) -> Vec<Observed> {
    let mut out = Vec::with_capacity(tasks.len());
    for chunk in tasks.chunks(16) {
        let results: Vec<Observed> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|t| {
                    s.spawn(move || {
                        probe::probe(servers, &t.src, &t.dst, t.l4, t.request.as_ref(), timeout)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| Observed {
                        outcome: Outcome::Failed("the probe thread panicked".into()),
                        elapsed: Duration::ZERO,
                        detail: None,
                    })
                })
                .collect()
        });
        out.extend(results);
    }
    out
}

/// The model as each lab node's DNS proxy has learnt it (`toFQDNs` addresses): a flow is
/// judged with what its source's node knows, which decides its egress.
struct LearntModels {
    by_node: Vec<Option<polc_compiler::model::Model>>,
    plain: polc_compiler::model::Model,
}

impl LearntModels {
    fn new(state: &State, model: &polc_compiler::model::Model) -> LearntModels {
        let by_node = (0..state.plan.nodes.len())
            .map(|i| {
                let answers = lab::learnt_answers(&state.plan.lab, i);
                (!answers.is_empty()).then(|| {
                    let mut m = model.clone();
                    m.learn_dns(answers);
                    m
                })
            })
            .collect();
        LearntModels {
            by_node,
            plain: model.clone(),
        }
    }

    fn of(&self, state: &State, flow: &Flow) -> &polc_compiler::model::Model {
        let inventory = &self.plain.inventory;
        let node = match flow.src {
            Peer::Pod(i) => {
                let key = inventory.pods.get(i).map(|p| p.key());
                state
                    .plan
                    .pods
                    .iter()
                    .find(|p| Some(&p.key) == key.as_ref())
                    .map(|p| p.node)
            }
            Peer::Host(n) => {
                let name = inventory.nodes.get(n).map(|x| x.name.as_str());
                state
                    .plan
                    .nodes
                    .iter()
                    .position(|x| Some(x.name.as_str()) == name)
            }
            Peer::External(_) => None,
        };
        node.and_then(|n| self.by_node.get(n))
            .and_then(Option::as_ref)
            .unwrap_or(&self.plain)
    }
}

/// A flow to probe, as written.
struct Wanted<'a> {
    from: String,
    to: String,
    flow: Flow,
    expect: Option<Verdict>,
    spec: Option<&'a FlowSpec>,
}

/// The result of one flow.
struct FlowResult {
    eval: Verdict,
    /// Per probe: family and observation.
    probes: Vec<(IpAddr, IpAddr, Observed)>,
    skipped: Option<String>,
}

impl FlowResult {
    /// The verdict the kernel gave (deny if any family was dropped).
    fn observed(&self) -> Option<Verdict> {
        let mut any = false;
        for (_, _, o) in &self.probes {
            match o.outcome.allowed() {
                Some(false) => return Some(Verdict::Deny),
                Some(true) => any = true,
                None => return None,
            }
        }
        any.then_some(Verdict::Allow)
    }

    fn failed(&self) -> bool {
        self.probes
            .iter()
            .any(|(_, _, o)| matches!(o.outcome, Outcome::Failed(_)))
    }

    fn agrees(&self) -> bool {
        self.observed().is_none_or(|o| o == self.eval)
    }
}

fn probe_cmd(args: &ProbeArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    let mut state = match ready_state(&args.name) {
        Ok(s) => s,
        Err(e) => return Ok(lab_error(&e, io.stderr)),
    };
    let mut cluster = cluster_of(&state, None);
    if args.live.cluster {
        cluster.policies = Vec::new();
        cluster.inventory = Vec::new();
        cluster.live = args.live.clone();
    }
    let flows_file = match &args.flows {
        None => None,
        Some(path) => match explain::read_flows(&cluster, path, io) {
            Some(f) => Some(f),
            None => return Ok(EXIT_USAGE),
        },
    };
    let Some(loaded) = cluster::load(&cluster, &[], io.stdin, io.stderr) else {
        return Ok(EXIT_USAGE);
    };
    if !args.live.cluster && same_network(&state, &loaded).is_err() {
        writeln!(
            io.stderr,
            "polc: warning: the inventory changed since `polc lab up`; probes use the lab as it \
             was built"
        )?;
    }
    let model = &loaded.model;
    let mut wanted = Vec::new();
    match &flows_file {
        Some((fsrc, specs)) => {
            for spec in specs {
                match explain::flow_of_spec(model, spec) {
                    Ok((flow, expect)) => wanted.push(Wanted {
                        from: spec
                            .from
                            .as_ref()
                            .map(|s| s.value.clone())
                            .unwrap_or_default(),
                        to: spec
                            .to
                            .as_ref()
                            .map(|s| s.value.clone())
                            .unwrap_or_default(),
                        flow,
                        expect: Some(expect),
                        spec: Some(spec),
                    }),
                    Err(e) => {
                        explain::report(io, fsrc, &e);
                        return Ok(EXIT_USAGE);
                    }
                }
            }
        }
        None => {
            let from = args.from.clone().unwrap_or_default();
            let to = args.to.clone().unwrap_or_default();
            let is_icmp = matches!(args.proto.to_ascii_lowercase().as_str(), "icmp" | "icmpv6");
            let icmp_type = match (args.icmp_type, is_icmp) {
                (Some(t), _) => Some(i64::from(t)),
                (None, true) => Some(if args.proto.eq_ignore_ascii_case("icmpv6") {
                    128
                } else {
                    8
                }),
                (None, false) => None,
            };
            let request = match args.request.request() {
                Ok(r) => r,
                Err(e) => {
                    explain::report(io, &SourceMap::new(), &e);
                    return Ok(EXIT_USAGE);
                }
            };
            let parts = FlowParts {
                from: &from,
                to: &to,
                proto: &args.proto,
                port: args.port.map(i64::from),
                icmp_type,
                request,
                loc: None,
            };
            match explain::build_flow(model, parts) {
                Ok(flow) => wanted.push(Wanted {
                    from,
                    to,
                    flow,
                    expect: None,
                    spec: None,
                }),
                Err(e) => {
                    explain::report(io, &SourceMap::new(), &e);
                    return Ok(EXIT_USAGE);
                }
            }
        }
    }

    // Plan every flow, give the world its addresses, start the servers, probe.
    let plans: Vec<Probing> = wanted
        .iter()
        .map(|w| plan_flow(&state, model, &w.flow, &w.from, &w.to))
        .collect();
    let world: BTreeSet<IpAddr> = plans
        .iter()
        .filter_map(|p| match p {
            Probing::Tasks(t) => Some(t),
            Probing::Skip(_) => None,
        })
        .flatten()
        .flat_map(|t| [&t.src, &t.dst])
        .filter(|e| e.netns == crate::lab::net::netns_path(&state.plan.world))
        .map(|e| e.addr)
        .collect();
    if let Err(e) = lab::add_world(&mut state, &world.into_iter().collect::<Vec<_>>()) {
        return Ok(lab_error(&e, io.stderr));
    }
    let mut servers = Servers::with_records(state.dns_records.clone());
    let mut server_errors: Vec<Option<String>> = Vec::new();
    let tasks: Vec<&Task> = plans
        .iter()
        .filter_map(|p| match p {
            Probing::Tasks(t) => Some(t),
            Probing::Skip(_) => None,
        })
        .flatten()
        .collect();
    for t in &tasks {
        server_errors.push(servers.prepare(&t.src, &t.dst, t.l4).err());
    }
    let timeout = Duration::from_millis(args.timeout);
    // DNS queries first: what the proxies learn from them decides the flows to `toFQDNs`
    // addresses after them, as on a node.
    let (dns_first, rest): (Vec<usize>, Vec<usize>) =
        (0..tasks.len()).partition(|&i| matches!(tasks[i].request, Some(Request::Dns { .. })));
    let mut observed: Vec<Observed> = vec![Observed::default(); tasks.len()];
    for batch in [dns_first, rest] {
        let some: Vec<&Task> = batch.iter().map(|&i| tasks[i]).collect();
        for (i, o) in batch.into_iter().zip(run_tasks(&servers, &some, timeout)) {
            observed[i] = o;
        }
    }
    for (o, err) in observed.iter_mut().zip(&server_errors) {
        if let Some(e) = err {
            o.outcome = Outcome::Failed(e.clone());
        }
    }

    // Assemble per flow; a drop that disagrees with eval is probed again with more time.
    let mut results = Vec::new();
    let mut k = 0;
    let learnt = LearntModels::new(&state, model);
    for (w, p) in wanted.iter().zip(&plans) {
        let eval = eval::decide(learnt.of(&state, &w.flow), &w.flow).verdict;
        let mut r = FlowResult {
            eval,
            probes: Vec::new(),
            skipped: None,
        };
        match p {
            Probing::Skip(why) => r.skipped = Some(why.clone()),
            Probing::Tasks(ts) => {
                for t in ts {
                    r.probes.push((t.src.addr, t.dst.addr, observed[k].clone()));
                    k += 1;
                }
            }
        }
        results.push(r);
    }
    let mut again: Vec<(usize, usize)> = Vec::new();
    let mut again_tasks: Vec<&Task> = Vec::new();
    for (i, (r, p)) in results.iter().zip(&plans).enumerate() {
        if let Probing::Tasks(ts) = p {
            for (j, t) in ts.iter().enumerate() {
                if r.probes[j].2.outcome == Outcome::Dropped && r.eval == Verdict::Allow {
                    again.push((i, j));
                    again_tasks.push(t);
                }
            }
        }
    }
    if !again_tasks.is_empty() {
        let second = run_tasks(&servers, &again_tasks, timeout * 4);
        for ((i, j), o) in again.into_iter().zip(second) {
            results[i].probes[j].2 = o;
        }
    }
    servers.stop();

    match &flows_file {
        Some((fsrc, _)) => report_flows(args.format, fsrc, &wanted, &results, io),
        None => report_single(args.format, &wanted[0], &results[0], io),
    }
}

fn outcome_text(o: &Observed) -> String {
    let ms = o.elapsed.as_secs_f64() * 1000.0;
    let mut s = match &o.outcome {
        Outcome::Failed(e) => format!("error: {e}"),
        Outcome::Dropped => format!("dropped (nothing after {ms:.0} ms)"),
        Outcome::Denied(how) => format!("denied by the proxy ({how}) in {ms:.2} ms"),
        other => format!("{} in {ms:.2} ms", other.name()),
    };
    if let Some(d) = &o.detail {
        s.push_str(&format!(": {d}"));
    }
    s
}

fn probes_json(r: &FlowResult) -> Value {
    Value::Array(
        r.probes
            .iter()
            .map(|(s, d, o)| {
                json!({
                    "family": if s.is_ipv6() { "ipv6" } else { "ipv4" },
                    "src": s.to_string(),
                    "dst": d.to_string(),
                    "result": o.outcome.name(),
                    "ms": (o.elapsed.as_secs_f64() * 1e6).round() / 1e3,
                    "error": match &o.outcome { Outcome::Failed(e) => Some(e.clone()), _ => None },
                    "detail": o.detail,
                })
            })
            .collect(),
    )
}

fn report_single(
    format: ProbeFormat,
    w: &Wanted<'_>,
    r: &FlowResult,
    io: &mut Io<'_>,
) -> anyhow::Result<i32> {
    let l4 = explain::describe_l4(&w.flow);
    match format {
        ProbeFormat::Json => {
            let v = json!({
                "from": w.from,
                "to": w.to,
                "proto": w.flow.proto.name(),
                "port": w.flow.port,
                "eval": r.eval.name(),
                "observed": r.observed().map(Verdict::name),
                "ok": r.agrees(),
                "probes": probes_json(r),
                "skipped": r.skipped,
            });
            writeln!(io.stdout, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        ProbeFormat::Human => {
            if let Some(why) = &r.skipped {
                writeln!(io.stdout, "{} -> {} {l4}: not probed: {why}", w.from, w.to)?;
            }
            for (s, d, o) in &r.probes {
                writeln!(
                    io.stdout,
                    "{} ({s}) -> {} ({d}) {l4}: {}; eval: {}",
                    w.from,
                    w.to,
                    outcome_text(o),
                    r.eval.name()
                )?;
            }
        }
    }
    Ok(exit_of(std::slice::from_ref(r), io))
}

fn exit_of(results: &[FlowResult], io: &mut Io<'_>) -> i32 {
    let failed = results.iter().filter(|r| r.failed()).count();
    if failed > 0 {
        let _ = writeln!(
            io.stderr,
            "polc: error[{}]: {failed} {} could not be probed (see above)",
            Code::ProbeFailed.as_str(),
            if failed == 1 { "flow" } else { "flows" }
        );
        return EXIT_USAGE;
    }
    if results.iter().all(FlowResult::agrees) {
        EXIT_CLEAN
    } else {
        EXIT_FINDINGS
    }
}

fn report_flows(
    format: ProbeFormat,
    fsrc: &SourceMap,
    wanted: &[Wanted<'_>],
    results: &[FlowResult],
    io: &mut Io<'_>,
) -> anyhow::Result<i32> {
    let mut out = String::new();
    let mut list = Vec::new();
    let (mut agree, mut differ, mut l7, mut skipped) = (0, 0, 0, 0);
    let mut mismatch = false;
    for (w, r) in wanted.iter().zip(results) {
        let observed = r.observed();
        let expect_ok = w.expect.is_none_or(|e| observed.is_none_or(|o| o == e));
        let ok = r.agrees() && expect_ok;
        if observed.is_some() {
            if ok {
                agree += 1;
            } else {
                differ += 1;
                mismatch = true;
            }
        } else if r.skipped.is_some() {
            skipped += 1;
        }
        if w.flow.request.is_some() && observed.is_some() {
            l7 += 1;
        }
        let line = w.spec.map_or(0, |s| fsrc.line_col(s.loc).line);
        let file = w
            .spec
            .map_or(String::new(), |s| fsrc.get(s.loc.file).name.clone());
        match format {
            ProbeFormat::Json => {
                let mut v = json!({
                    "from": w.from,
                    "to": w.to,
                    "proto": w.flow.proto.name(),
                    "port": w.flow.port,
                    "expect": w.expect.map(Verdict::name),
                    "eval": r.eval.name(),
                    "observed": observed.map(Verdict::name),
                    "ok": ok,
                    "line": line,
                    "probes": probes_json(r),
                });
                if let Value::Object(m) = &mut v {
                    if matches!(w.flow.proto, Proto::Icmp | Proto::Icmpv6) {
                        m.remove("port");
                        m.insert("icmpType".into(), json!(w.flow.port));
                    }
                    if let Some(n) = w.spec.and_then(|s| s.name.as_ref()) {
                        m.insert("name".into(), json!(n.value));
                    }
                    if let Some(why) = &r.skipped {
                        m.insert("skipped".into(), json!(why));
                    }
                }
                list.push(v);
            }
            ProbeFormat::Human => {
                let tag = match (observed, &r.skipped) {
                    (None, Some(_)) => "skip",
                    _ if r.failed() => "ERR ",
                    _ if ok => "ok  ",
                    _ => "FAIL",
                };
                let req = explain::request_text(&w.flow);
                let _ = write!(
                    out,
                    "{tag} {file}:{line} {} -> {}: {}{}: ",
                    w.from,
                    w.to,
                    explain::describe_l4(&w.flow),
                    req
                );
                if let Some(why) = &r.skipped {
                    let _ = write!(out, "not probed: {why}; eval {}", r.eval.name());
                } else {
                    let probes: Vec<String> = r
                        .probes
                        .iter()
                        .map(|(s, _, o)| {
                            let fam = if s.is_ipv6() { "ipv6 " } else { "" };
                            format!("{fam}{}", outcome_text(o))
                        })
                        .collect();
                    let _ = write!(
                        out,
                        "kernel {} ({})",
                        observed.map_or("-", Verdict::name),
                        probes.join("; ")
                    );
                    let _ = write!(out, ", eval {}", r.eval.name());
                }
                if let Some(e) = w.expect {
                    let _ = write!(out, ", expect {}", e.name());
                }
                out.push('\n');
            }
        }
    }
    match format {
        ProbeFormat::Json => {
            out = serde_json::to_string_pretty(&Value::Array(list))?;
            out.push('\n');
        }
        ProbeFormat::Human => {
            let _ = writeln!(
                out,
                "{} flows: {agree} agree with eval, {differ} differ, {skipped} not probed; \
                 {l7} sent an L7 request through the proxy",
                wanted.len()
            );
        }
    }
    io.stdout.write_all(out.as_bytes())?;
    let code = exit_of(results, io);
    Ok(if code == EXIT_CLEAN && mismatch {
        EXIT_FINDINGS
    } else {
        code
    })
}
