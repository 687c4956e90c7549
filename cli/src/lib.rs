//! The `polc` command line: argument parsing, input gathering and output rendering. This is
//! the only crate that does IO; the library crates take bytes and return values.

pub mod agent;
pub mod commands;
pub mod input;
pub mod lab;
pub mod live;
pub mod proxy;
pub mod render;
pub mod timing;
pub mod webhook;

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::io::{Read, Write};

/// Exit code: no findings.
pub const EXIT_CLEAN: i32 = 0;
/// Exit code: findings (errors, or warnings with `--deny-warnings`).
pub const EXIT_FINDINGS: i32 = 1;
/// Exit code: bad usage or unreadable input.
pub const EXIT_USAGE: i32 = 2;
/// The verifier could not decide everything asked (solver timeout), and nothing failed.
pub const EXIT_UNKNOWN: i32 = 3;

/// polc compiles and verifies Cilium network policy.
#[derive(Debug, Parser)]
#[command(name = "polc", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check policy files the way the API server and the Cilium agent do, and warn about
    /// policies that do not do what they seem to.
    Lint(commands::lint::LintArgs),
    /// Print the documentation of a diagnostic code (or list all codes).
    ExplainCode(commands::explain_code::ExplainArgs),
    /// Explain the verdict of a flow (or check a flows file): the deciding rules, the
    /// identities, and the policy-map entry the datapath hits.
    Explain(Box<commands::explain::ExplainArgs>),
    /// Compile policies for a cluster: per-endpoint policy maps in Cilium's layout, the
    /// ipcache, the identity table and the L7 proxy rules.
    Compile(Box<commands::compile::CompileArgs>),
    /// Check policy tests (`*.polt`): expectations about flows.
    Test(commands::test::TestArgs),
    /// The flows one set of policies allows and the other does not, for a cluster.
    Diff(commands::diff::DiffArgs),
    /// The connectivity between a cluster's workloads, as DOT, Mermaid or JSON.
    Graph(Box<commands::graph::GraphArgs>),
    /// Compile the policies for one node and install them in the kernel with polc's eBPF
    /// datapath (needs root).
    Load(Box<commands::load::LoadArgs>),
    /// Detach polc's datapath and remove its pinned maps and programs (needs root).
    Unload(commands::unload::UnloadArgs),
    /// What polc's datapath has installed, and its counters (needs root).
    Status(commands::status::StatusArgs),
    /// A policy lab on this machine: the inventory's pods as network namespaces with the
    /// datapath loaded, probed with real packets (needs root).
    Lab(commands::lab::LabArgs),
    /// polc's L7 proxy on a node: enforces the HTTP and DNS rules of the flows the datapath
    /// redirects to it (needs root; `polc lab up` starts one per lab node).
    Proxy(commands::proxy::ProxyArgs),
    /// On a node: keep the installed policy equal to the cluster's, continuously (needs
    /// root).
    Agent(Box<commands::agent::AgentArgs>),
    /// A validating admission webhook over HTTPS: denies policies the Cilium agent would
    /// reject, warns about suspicious ones.
    Webhook(commands::webhook::WebhookArgs),
    /// Write a synthetic cluster (inventory and policies) for benchmarks.
    #[command(hide = true)]
    Gen(commands::r#gen::GenArgs),
}

/// The standard streams of one run, so tests can capture them.
pub struct Io<'a> {
    /// Standard input.
    pub stdin: &'a mut dyn Read,
    /// Standard output.
    pub stdout: &'a mut dyn Write,
    /// Standard error.
    pub stderr: &'a mut dyn Write,
    /// Whether standard output is a terminal (for `--color auto`).
    pub stdout_is_terminal: bool,
}

/// Runs polc with `args` (including the program name) and returns the exit code.
pub fn run(args: impl IntoIterator<Item = impl Into<OsString> + Clone>, io: &mut Io<'_>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_CLEAN
            };
            let text = e.render().to_string();
            let out: &mut dyn Write = if e.use_stderr() { io.stderr } else { io.stdout };
            let _ = out.write_all(text.as_bytes());
            return code;
        }
    };
    timing::start();
    let result = match cli.command {
        Command::Lint(args) => commands::lint::run(&args, io),
        Command::ExplainCode(args) => commands::explain_code::run(&args, io),
        Command::Explain(args) => commands::explain::run(&args, io),
        Command::Compile(args) => commands::compile::run(&args, io),
        Command::Test(args) => commands::test::run(&args, io),
        Command::Diff(args) => commands::diff::run(&args, io),
        Command::Graph(args) => commands::graph::run(&args, io),
        Command::Load(args) => commands::load::run(&args, io),
        Command::Unload(args) => commands::unload::run(&args, io),
        Command::Status(args) => commands::status::run(&args, io),
        Command::Lab(args) => commands::lab::run(&args, io),
        Command::Proxy(args) => commands::proxy::run(&args, io),
        Command::Agent(args) => commands::agent::run(&args, io),
        Command::Webhook(args) => commands::webhook::run(&args, io),
        Command::Gen(args) => commands::r#gen::run(&args, io),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return EXIT_CLEAN;
            }
            let _ = writeln!(io.stderr, "polc: error: {e:#}");
            EXIT_USAGE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Runs polc on the process's arguments and standard streams.
pub fn main_with_std_io() -> i32 {
    use std::io::IsTerminal;
    let stdout = std::io::stdout();
    let is_terminal = stdout.is_terminal();
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::BufWriter::new(stdout.lock());
    let mut stderr = std::io::stderr().lock();
    let code = {
        let mut io = Io {
            stdin: &mut stdin,
            stdout: &mut stdout,
            stderr: &mut stderr,
            stdout_is_terminal: is_terminal,
        };
        run(std::env::args_os(), &mut io)
    };
    let _ = stdout.flush();
    code
}
