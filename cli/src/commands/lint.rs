//! `polc lint PATH...`: read, validate and report.

use crate::input::{self, DEFAULT_MAX_FILE_SIZE};
use crate::render::{self, Format, Summary};
use crate::{EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE, Io};
use polc_compiler::diag::{Code, Severity};
use polc_compiler::{CiliumVersion, Options};
use std::path::PathBuf;

/// When to color the human output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Color when standard output is a terminal and `NO_COLOR` is unset.
    Auto,
    /// Always color.
    Always,
    /// Never color.
    Never,
}

/// Arguments of `polc lint`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 clean, 1 findings (errors; warnings too with \
    --deny-warnings), 2 bad usage or unreadable input.\n`polc explain-code CODE` documents a \
    diagnostic code."
)]
pub struct LintArgs {
    /// Files or directories to lint (`-` reads standard input). Directories are searched
    /// recursively for `.yaml`, `.yml` and `.json` files.
    #[arg(required_unless_present = "cluster", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// A live cluster whose policies and inventory are linted too.
    #[command(flatten)]
    pub live: crate::live::LiveArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// The Cilium release whose rules apply: 1.17, 1.18 or 1.19.
    #[arg(long, default_value = "1.19", value_name = "VERSION")]
    pub cilium_version: CiliumVersion,
    /// Exit with code 1 when there are warnings, not only errors.
    #[arg(long)]
    pub deny_warnings: bool,
    /// Do not report notes (skipped kinds).
    #[arg(long)]
    pub quiet: bool,
    /// Report unknown fields (S0203) as errors, as `kubectl apply` does with its default
    /// strict field validation.
    #[arg(long)]
    pub strict_fields: bool,
    /// Largest input file polc reads, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_FILE_SIZE, value_name = "BYTES")]
    pub max_file_size: u64,
    /// Cluster inventory (`kubectl get ns,pods,nodes,svc -A -o yaml`) to check the policies
    /// against; inventory objects among the PATHs count too.
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub inventory: Vec<PathBuf>,
    /// When to use colors in human output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// The longest one verifier query may take, in seconds (an undecided check is reported
    /// as V0400, never as passed).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub timeout: f64,
    /// Write the SMT-LIB text of every verifier query into this directory.
    #[arg(long, value_name = "DIR")]
    pub emit_smt: Option<PathBuf>,
}

/// The verifier's checks on the policies among `objects` (symbolic: for every pod that could
/// exist).
pub fn verify(
    objects: &[polc_compiler::raw::Object],
    opts: &Options,
    limits: polc_verifier::Limits,
) -> Vec<polc_compiler::diag::Diagnostic> {
    let mut out = polc_verifier::checks::check(objects, opts.version, limits);
    // With inventory objects among the inputs, the concrete checks too.
    if objects
        .iter()
        .any(|o| o.kind == polc_compiler::raw::Kind::Pod)
    {
        let config = polc_compiler::model::Config {
            version: opts.version,
            ..Default::default()
        };
        let (model, _) = polc_compiler::model::Model::build(objects, config);
        // The cluster's own DNS check replaces the one for every pod that could exist.
        out.retain(|d| d.code != polc_compiler::diag::Code::DnsCutOff);
        out.extend(polc_verifier::concrete::check(&model));
    }
    out
}

/// Runs `polc lint`.
pub fn run(args: &LintArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    let Some(limits) = super::symbolic::limits(args.timeout) else {
        writeln!(
            io.stderr,
            "polc: error: --timeout must be a positive number of seconds"
        )?;
        return Ok(EXIT_USAGE);
    };
    super::symbolic::start_smt(args.emit_smt.as_deref());
    let mut paths = args.paths.clone();
    paths.extend(args.inventory.iter().cloned());
    let mut inputs = input::gather(&paths, io.stdin, args.max_file_size);
    if args.live.cluster && !super::cluster::add_live(&mut inputs, &args.live, io.stderr) {
        return Ok(EXIT_USAGE);
    }
    let opts = Options {
        version: args.cilium_version,
        ..Options::default()
    };
    let (objects, mut diags) = polc_compiler::lint(&inputs.sources, &opts);
    for d in verify(&objects, &opts, limits) {
        diags.push(d);
    }
    if let Err(e) = super::symbolic::write_smt(args.emit_smt.as_deref()) {
        writeln!(io.stderr, "polc: error: {e}")?;
        return Ok(EXIT_USAGE);
    }
    for d in inputs.diagnostics {
        diags.push(d);
    }
    diags.sort();
    let mut diags = diags.into_vec();
    if args.quiet {
        diags.retain(|d| d.severity != Severity::Note);
    }
    if args.strict_fields {
        for d in diags.iter_mut().filter(|d| d.code == Code::UnknownField) {
            d.severity = Severity::Error;
        }
    }
    let files = inputs.sources.files().count();
    let summary = Summary::new(files, &objects, &diags);
    let text = match args.format {
        Format::Human => {
            let color = match args.color {
                ColorChoice::Always => true,
                ColorChoice::Never => false,
                ColorChoice::Auto => {
                    io.stdout_is_terminal && std::env::var_os("NO_COLOR").is_none()
                }
            };
            render::human(&inputs.sources, &diags, &summary, color)
        }
        Format::Json => render::json(&inputs.sources, &diags, &summary),
        Format::Sarif => render::sarif(&inputs.sources, &diags),
        Format::Github => render::github(&inputs.sources, &diags),
    };
    io.stdout.write_all(text.as_bytes())?;
    io.stdout.flush()?;
    Ok(if inputs.unreadable {
        EXIT_USAGE
    } else if summary.errors > 0 || (args.deny_warnings && summary.warnings > 0) {
        EXIT_FINDINGS
    } else {
        EXIT_CLEAN
    })
}
