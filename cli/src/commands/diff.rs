//! `polc diff OLD NEW --inventory PATH...`: the flows NEW allows that OLD did not (widened),
//! and the reverse (narrowed), for a cluster, grouped by source, destination and protocol with
//! port ranges, each with one concrete example flow.
//!
//! Concrete mode: the ends are one pod per identity (pods with the same identity get the same
//! verdicts), every node's host, and one outside address per class of the prefixes either
//! policy set names; each pair of ends is compared at L4 on every port, as maximal port ranges.
//! The connectivity engine (`polc_compiler::connectivity::changes`) compares only the pairs a
//! changed rule can reach. Without an inventory the diff is symbolic
//! (`commands::diff_symbolic`).

use super::cluster::{self, ClusterArgs};
use crate::{EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE, Io};
use polc_compiler::CiliumVersion;
use polc_compiler::connectivity::{self, PROTOS};
use polc_compiler::eval::Peer;
use polc_compiler::ir::Proto;
use polc_compiler::model::Model;
use serde_json::json;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Output formats of `diff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    /// Text for people.
    Human,
    /// JSON.
    Json,
    /// Markdown, for a pull-request comment.
    Markdown,
    /// SARIF 2.1.0, for code-scanning tools.
    Sarif,
}

/// Which changes fail the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Flows NEW allows that OLD denied.
    Widen,
    /// Flows NEW denies that OLD allowed.
    Narrow,
    /// Any change.
    Any,
}

/// Arguments of `polc diff`.
#[derive(Clone, Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 compared (no change that --fail-on names), 1 such a \
    change, 2 bad input, 3 (symbolic, with --fail-on) a question the solver could not decide."
)]
pub struct DiffArgs {
    /// The policies before (with `--cluster`: the policies after, compared with the cluster's
    /// policies and judged against its inventory).
    #[arg(value_name = "OLD")]
    pub old: PathBuf,
    /// The policies after (with `--git`, leave it out: OLD is compared with its own version
    /// at the revision).
    #[arg(value_name = "NEW", required_unless_present_any = ["git", "cluster"])]
    pub new: Option<PathBuf>,
    /// Compare the working tree's policies at OLD (a file or directory in a git repository)
    /// with their version at this revision (`HEAD`, `origin/main`, a commit).
    #[arg(long, value_name = "REV")]
    pub git: Option<String>,
    /// Inventory files or directories (concrete mode).
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub inventory: Vec<PathBuf>,
    /// The Cilium release whose semantics apply: 1.17, 1.18 or 1.19.
    #[arg(long, default_value = "1.19", value_name = "VERSION")]
    pub cilium_version: CiliumVersion,
    /// Compare with a live cluster: OLD (the one path given) is the new policies, the
    /// cluster's policies the old ones, judged against the cluster's inventory ("what would
    /// applying this change do").
    #[command(flatten)]
    pub live: crate::live::LiveArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DiffFormat::Human)]
    pub format: DiffFormat,
    /// Exit 1 when the diff has changes of this kind.
    #[arg(long, value_enum, value_name = "KIND")]
    pub fail_on: Option<FailOn>,
    /// The longest one solver query may take in symbolic mode, in seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub timeout: f64,
    /// Write the SMT-LIB text of every solver query into this directory (symbolic mode).
    #[arg(long, value_name = "DIR")]
    pub emit_smt: Option<PathBuf>,
}

/// One change class: a source, a destination, a protocol, a port range, and which way.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Change {
    widened: bool,
    src: String,
    dst: String,
    proto: Proto,
    ports: (u16, u16),
    example: String,
}

/// Runs git in `dir`; its standard output, or why it failed.
fn git(dir: &std::path::Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(out.stdout)
}

/// Writes the files under `path` as they are at `rev` into a temporary directory; returns
/// it (removed when dropped) and the path inside it that stands for `path`.
fn at_revision(rev: &str, path: &std::path::Path) -> Result<(tempfile::TempDir, PathBuf), String> {
    let abs = path
        .canonicalize()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = if abs.is_dir() {
        abs.clone()
    } else {
        abs.parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    };
    let top = git(&dir, &["rev-parse", "--show-toplevel"])?;
    let top = PathBuf::from(String::from_utf8_lossy(&top).trim());
    let top = top.canonicalize().unwrap_or(top);
    let rel = abs
        .strip_prefix(&top)
        .map_err(|_| {
            format!(
                "{} is not inside the repository {}",
                abs.display(),
                top.display()
            )
        })?
        .to_path_buf();
    let rel_text = rel.to_string_lossy().replace('\\', "/");
    let spec = if rel_text.is_empty() {
        ".".to_string()
    } else {
        rel_text.clone()
    };
    let names = git(
        &top,
        &["ls-tree", "-r", "-z", "--name-only", rev, "--", &spec],
    )?;
    let tmp = tempfile::tempdir().map_err(|e| format!("cannot create a directory: {e}"))?;
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).to_string();
        let bytes = git(&top, &["show", &format!("{rev}:{name}")])?;
        let target = tmp.path().join(&name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&target, bytes).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    let inside = tmp.path().join(&rel);
    if !inside.exists() {
        // The path did not exist at the revision: compare with no policies.
        std::fs::create_dir_all(&inside).map_err(|e| format!("{}: {e}", inside.display()))?;
    }
    Ok((tmp, inside))
}

/// Runs `polc diff`.
pub fn run(args: &DiffArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    let load = |path: &PathBuf, io: &mut Io<'_>| {
        let cargs = ClusterArgs {
            policies: vec![path.clone()],
            inventory: args.inventory.clone(),
            cilium_version: args.cilium_version,
            cluster_name: "default".into(),
            max_file_size: 1024 * 1024 * 1024,
            dns_answers: Vec::new(),
            live: Default::default(),
        };
        cluster::load(&cargs, &[], io.stdin, io.stderr)
    };
    // With --cluster, the cluster's policies and inventory are written to a directory of
    // their own, and the one path given is the new side.
    let live = if args.live.cluster {
        if args.new.is_some() || args.git.is_some() {
            writeln!(
                io.stderr,
                "polc: error: with --cluster give one path, the new policies (the cluster's are \
                 the old ones)"
            )?;
            return Ok(EXIT_USAGE);
        }
        let read = match crate::live::read(&args.live) {
            Ok(r) => r,
            Err(e) => {
                writeln!(
                    io.stderr,
                    "polc: error[{}]: the cluster cannot be read: {e}",
                    polc_compiler::diag::Code::ClusterUnreadable.as_str()
                )?;
                return Ok(EXIT_USAGE);
            }
        };
        for note in &read.notes {
            writeln!(io.stderr, "polc: note: {note}")?;
        }
        let dir = tempfile::tempdir()?;
        read.write(&dir.path().join("policies"), &dir.path().join("inventory"))?;
        Some(dir)
    } else {
        None
    };
    let mut inventory = args.inventory.clone();
    if let Some(dir) = &live
        && inventory.is_empty()
    {
        inventory.push(dir.path().join("inventory"));
    }
    let args = &DiffArgs {
        inventory,
        ..args.clone()
    };
    // With --git, OLD is the revision's version of the path and NEW the working tree's.
    let (_checkout, old_path, new_path) = match (&args.git, &args.new, &live) {
        (None, None, Some(dir)) => (None, dir.path().join("policies"), args.old.clone()),
        (Some(rev), None, None) => match at_revision(rev, &args.old) {
            Ok((dir, path)) => (Some(dir), path, args.old.clone()),
            Err(e) => {
                writeln!(io.stderr, "polc: error: --git {rev}: {e}")?;
                return Ok(EXIT_USAGE);
            }
        },
        (None, Some(new), None) => (None, args.old.clone(), new.clone()),
        _ => {
            writeln!(
                io.stderr,
                "polc: error: give either OLD and NEW, or one path and --git REV"
            )?;
            return Ok(EXIT_USAGE);
        }
    };
    if args.inventory.is_empty() {
        let Some(old) = load(&old_path, io) else {
            return Ok(EXIT_USAGE);
        };
        let Some(new) = load(&new_path, io) else {
            return Ok(EXIT_USAGE);
        };
        let Some(limits) = super::symbolic::limits(args.timeout) else {
            writeln!(
                io.stderr,
                "polc: error: --timeout must be a positive number of seconds"
            )?;
            return Ok(EXIT_USAGE);
        };
        super::symbolic::start_smt(args.emit_smt.as_deref());
        let code = super::diff_symbolic::run(&old, &new, args.format, args.fail_on, limits, io)?;
        if let Err(e) = super::symbolic::write_smt(args.emit_smt.as_deref()) {
            writeln!(io.stderr, "polc: error: {e}")?;
            return Ok(EXIT_USAGE);
        }
        return Ok(code);
    }
    // Concrete: the inventory is read once, and both policy sets are bound to it.
    let cargs = ClusterArgs {
        policies: Vec::new(),
        inventory: args.inventory.clone(),
        cilium_version: args.cilium_version,
        cluster_name: "default".into(),
        max_file_size: 1024 * 1024 * 1024,
        dns_answers: Vec::new(),
        live: Default::default(),
    };
    let Some((old, new)) = cluster::load_pair(
        std::slice::from_ref(&old_path),
        std::slice::from_ref(&new_path),
        &cargs,
        io.stdin,
        io.stderr,
    ) else {
        return Ok(EXIT_USAGE);
    };
    let changes = diff(&old, &new);
    crate::timing::lap(io.stderr, "diff");
    let widened = changes.iter().filter(|c| c.widened).count();
    let narrowed = changes.len() - widened;
    let text = match args.format {
        DiffFormat::Human => human(&changes),
        DiffFormat::Markdown => markdown(&changes),
        DiffFormat::Sarif => sarif(&changes)?,
        DiffFormat::Json => {
            let list: Vec<_> = changes
                .iter()
                .map(|c| {
                    json!({
                        "change": if c.widened { "widened" } else { "narrowed" },
                        "from": c.src,
                        "to": c.dst,
                        "protocol": c.proto.name(),
                        "ports": [c.ports.0, c.ports.1],
                        "example": c.example,
                    })
                })
                .collect();
            let mut s = serde_json::to_string_pretty(&json!({
                "widened": widened,
                "narrowed": narrowed,
                "changes": list,
            }))?;
            s.push('\n');
            s
        }
    };
    io.stdout.write_all(text.as_bytes())?;
    crate::timing::lap(io.stderr, "write");
    // The process ends here: freeing the models value by value would only cost time.
    std::mem::forget((old, new));
    let fail = match args.fail_on {
        None => false,
        Some(FailOn::Widen) => widened > 0,
        Some(FailOn::Narrow) => narrowed > 0,
        Some(FailOn::Any) => !changes.is_empty(),
    };
    Ok(if fail { EXIT_FINDINGS } else { EXIT_CLEAN })
}

/// The ends of the comparison ([`connectivity::ends`]: one pod per identity, every host,
/// outside address classes), with their names.
pub(crate) fn ends(old: &Model, new: &Model) -> Vec<(Peer, String)> {
    connectivity::ends(old, new)
        .into_iter()
        .map(|peer| {
            let name = match peer {
                // The identity's own labels, without the namespace, service account and
                // cluster ones every pod carries.
                Peer::Pod(i) => {
                    let labels: Vec<String> = new.pod_labels[i]
                        .iter()
                        .filter(|l| {
                            !l.key.starts_with("io.kubernetes.")
                                && !l.key.starts_with("io.cilium.k8s.")
                        })
                        .map(|l| format!("{}={}", l.key, l.value))
                        .collect();
                    format!(
                        "{}/{{{}}}",
                        new.inventory.pods[i].namespace,
                        labels.join(",")
                    )
                }
                Peer::Host(n) => format!("host/{}", new.inventory.nodes[n].name),
                Peer::External(ip) => format!("world ({ip})"),
            };
            (peer, name)
        })
        .collect()
}

fn diff(old: &Model, new: &Model) -> Vec<Change> {
    let ends = ends(old, new);
    let peers: Vec<Peer> = ends.iter().map(|(p, _)| *p).collect();
    let name = |m: &Model, p: Peer| match p {
        Peer::Pod(i) => m.inventory.pods[i].key(),
        Peer::Host(n) => format!("host/{}", m.inventory.nodes[n].name),
        Peer::External(ip) => ip.to_string(),
    };
    let mut out: Vec<Change> = Vec::new();
    for pair in connectivity::changes(old, new, &peers) {
        let (src, dst) = (peers[pair.from], peers[pair.to]);
        let widened = pair.after.minus(&pair.before);
        let narrowed = pair.before.minus(&pair.after);
        for proto in PROTOS {
            for (set, is_widened) in [(&widened, true), (&narrowed, false)] {
                for (first, last) in set.ranges(proto) {
                    out.push(Change {
                        widened: is_widened,
                        src: ends[pair.from].1.clone(),
                        dst: ends[pair.to].1.clone(),
                        proto,
                        ports: (first, last),
                        example: format!(
                            "{} -> {} {}/{first}",
                            name(new, src),
                            name(new, dst),
                            proto.name()
                        ),
                    });
                }
            }
        }
    }
    out.sort();
    out
}

fn ports_text(c: &Change) -> String {
    let what = if matches!(c.proto, Proto::Icmp | Proto::Icmpv6) {
        "type"
    } else {
        "port"
    };
    if c.ports.0 == c.ports.1 {
        format!("{} {what} {}", c.proto.name(), c.ports.0)
    } else {
        format!("{} {what}s {}-{}", c.proto.name(), c.ports.0, c.ports.1)
    }
}

fn human(changes: &[Change]) -> String {
    let mut s = String::new();
    for c in changes {
        let _ = writeln!(
            s,
            "{} {} -> {} {}  (e.g. {})",
            if c.widened { "+" } else { "-" },
            c.src,
            c.dst,
            ports_text(c),
            c.example
        );
    }
    let widened = changes.iter().filter(|c| c.widened).count();
    let _ = writeln!(
        s,
        "{} widened (+, newly allowed), {} narrowed (-, newly denied)",
        widened,
        changes.len() - widened
    );
    s
}

/// SARIF 2.1.0: one result per change (a cluster flow has no place in the policy files).
fn sarif(changes: &[Change]) -> anyhow::Result<String> {
    let results: Vec<_> = changes
        .iter()
        .map(|c| {
            json!({
                "ruleId": if c.widened { "polc/diff-widened" } else { "polc/diff-narrowed" },
                "level": if c.widened { "warning" } else { "note" },
                "message": {"text": format!(
                    "{} -> {} {}: {} (e.g. {})",
                    c.src,
                    c.dst,
                    ports_text(c),
                    if c.widened { "newly allowed" } else { "newly denied" },
                    c.example
                )},
            })
        })
        .collect();
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "polc", "version": env!("CARGO_PKG_VERSION")}},
            "results": results,
        }],
    });
    let mut s = serde_json::to_string_pretty(&doc)?;
    s.push('\n');
    Ok(s)
}

fn markdown(changes: &[Change]) -> String {
    let widened = changes.iter().filter(|c| c.widened).count();
    let mut s = format!(
        "### Policy diff\n\n**{widened}** widened (newly allowed), **{}** narrowed (newly \
         denied).\n\n",
        changes.len() - widened
    );
    if !changes.is_empty() {
        s.push_str("| | from | to | ports | example |\n|---|---|---|---|---|\n");
        for c in changes {
            let _ = writeln!(
                s,
                "| {} | `{}` | `{}` | {} | `{}` |",
                if c.widened { "➕" } else { "➖" },
                c.src,
                c.dst,
                ports_text(c),
                c.example
            );
        }
    }
    s
}
