//! Reading policies and an inventory into a [`Model`], for the commands that need a cluster
//! (`explain`, `compile`, `test`, `graph`), and into two models over one inventory for
//! `diff --inventory`.

use crate::input;
use crate::render::{self, Summary};
use polc_compiler::diag::{Diagnostic, Severity};
use polc_compiler::inventory::Inventory;
use polc_compiler::ir::PolicySet;
use polc_compiler::model::{Config, Model};
use polc_compiler::raw::Object;
use polc_compiler::source::{FileId, SourceMap};
use polc_compiler::{CiliumVersion, Options};
use std::io::{Read, Write};
use std::path::PathBuf;

/// Where the policies and the cluster come from, and the agent settings.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Policy files or directories (CNP, CCNP, CiliumCIDRGroup, NetworkPolicy).
    #[arg(long, required_unless_present = "cluster", num_args = 1.., value_name = "PATH")]
    pub policies: Vec<PathBuf>,
    /// Inventory files or directories: `kubectl get ns,pods,nodes,svc -A -o yaml`.
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub inventory: Vec<PathBuf>,
    /// The Cilium release whose semantics apply: 1.17, 1.18 or 1.19.
    #[arg(long, default_value = "1.19", value_name = "VERSION")]
    pub cilium_version: CiliumVersion,
    /// The cluster name (`io.cilium.k8s.policy.cluster`).
    #[arg(long, default_value = "default", value_name = "NAME")]
    pub cluster_name: String,
    /// Largest input file polc reads, in bytes (inventory dumps of big clusters are large).
    #[arg(long, default_value_t = 1024 * 1024 * 1024, value_name = "BYTES")]
    pub max_file_size: u64,
    /// A DNS answer the DNS proxy has seen, `NAME=ADDRESS` (repeatable): `toFQDNs` peers
    /// select the addresses of the names they match. Without any, they select nothing. In
    /// `polc lab up`, the lab's DNS servers answer these names.
    #[arg(long = "dns-answer", value_name = "NAME=IP", value_parser = dns_answer_arg)]
    pub dns_answers: Vec<(String, std::net::IpAddr)>,
    /// A live cluster to read policies and inventory from.
    #[command(flatten)]
    pub live: crate::live::LiveArgs,
}

fn dns_answer_arg(s: &str) -> Result<(String, std::net::IpAddr), String> {
    let (name, ip) = s
        .split_once('=')
        .ok_or("write NAME=ADDRESS, for example api.example.com=203.0.113.10")?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("`{name}` is not a DNS name"));
    }
    let ip = ip
        .trim()
        .parse()
        .map_err(|_| format!("`{}` is not an IP address", ip.trim()))?;
    Ok((name.to_string(), ip))
}

/// A loaded cluster.
pub struct Loaded {
    /// Every file read (for locations).
    pub sources: SourceMap,
    /// The model.
    pub model: Model,
    /// The file ids of `extra` paths, in order.
    pub extra: Vec<FileId>,
    /// The objects read (policies and inventory), for the verifier's replays.
    pub objects: Vec<Object>,
}

/// Reads the policies, the inventory and `extra` files (flows), lints them, and builds the
/// model. Errors (unreadable input, invalid policies) are printed to `stderr` and give
/// `None`: the caller exits with code 2.
pub fn load(
    args: &ClusterArgs,
    extra: &[PathBuf],
    stdin: &mut dyn Read,
    stderr: &mut dyn Write,
) -> Option<Loaded> {
    let mut paths = policy_paths(&args.policies);
    paths.extend(args.inventory.iter().cloned());
    let before = paths.len();
    paths.extend(extra.iter().cloned());
    let mut inputs = input::gather(&paths, stdin, args.max_file_size);
    if args.live.cluster && !add_live(&mut inputs, &args.live, stderr) {
        return None;
    }
    crate::timing::lap(stderr, "read files");
    let opts = Options {
        version: args.cilium_version,
        ..Options::default()
    };
    let (objects, read) = polc_compiler::read_files(&inputs.sources, &opts);
    crate::timing::lap(stderr, "parse");
    let checked = polc_compiler::check(&objects, &opts);
    let (inventory, inv_diags) = Inventory::from_objects(&objects, &args.cluster_name);
    crate::timing::lap(stderr, "check, lower, inventory");
    let diags = read
        .into_iter()
        .chain(checked.diags)
        .chain(inv_diags)
        .chain(inputs.diagnostics);
    if report_errors(&inputs.sources, inputs.unreadable, &objects, diags, stderr) {
        return None;
    }
    let config = config(args.cilium_version, &args.cluster_name);
    let mut policies = checked.policies;
    inventory.bind_services(&mut policies);
    let mut model = Model::from_parts(policies, inventory, config);
    if !args.dns_answers.is_empty() {
        model.learn_dns(args.dns_answers.clone());
    }
    crate::timing::lap(stderr, "build model");
    // The extra files are the last ones read, one per path.
    let ids: Vec<FileId> = inputs.sources.files().map(|(id, _)| id).collect();
    let n_extra = paths.len() - before;
    let extra = ids[ids.len().saturating_sub(n_extra)..].to_vec();
    Some(Loaded {
        sources: inputs.sources,
        model,
        extra,
        objects,
    })
}

/// Adds the live cluster's objects to `inputs` (see [`crate::live`]); prints what stops it
/// and returns `false`.
pub(crate) fn add_live(
    inputs: &mut input::Inputs,
    live: &crate::live::LiveArgs,
    stderr: &mut dyn Write,
) -> bool {
    match crate::live::read(live) {
        Ok(read) => {
            for note in read.notes {
                let _ = writeln!(stderr, "polc: note: {note}");
            }
            for f in read.policies.into_iter().chain(read.inventory) {
                inputs.sources.add(f);
            }
            true
        }
        Err(e) => {
            let _ = writeln!(
                stderr,
                "polc: error[{}]: the cluster cannot be read: {e}",
                polc_compiler::diag::Code::ClusterUnreadable.as_str()
            );
            false
        }
    }
}

/// Reads the inventory once and two sets of policies, and builds a model of each over it
/// ([`Model::pair`]): what `polc diff --inventory` compares. Errors are printed to `stderr`
/// and give `None`, as for [`load`].
pub fn load_pair(
    old: &[PathBuf],
    new: &[PathBuf],
    args: &ClusterArgs,
    stdin: &mut dyn Read,
    stderr: &mut dyn Write,
) -> Option<(Model, Model)> {
    // OLD's files, the inventory's, NEW's: so that each side (its policies and the
    // inventory) is one run of the objects, which come in file order.
    let mut inputs = input::Inputs::default();
    let mut ends = Vec::new();
    for paths in [policy_paths(old), args.inventory.clone(), policy_paths(new)] {
        input::gather_into(&mut inputs, &paths, stdin, args.max_file_size);
        ends.push(FileId(
            u32::try_from(inputs.sources.files().count()).unwrap_or(u32::MAX),
        ));
    }
    crate::timing::lap(stderr, "read files");
    let opts = Options {
        version: args.cilium_version,
        ..Options::default()
    };
    let (objects, read) = polc_compiler::read_files(&inputs.sources, &opts);
    crate::timing::lap(stderr, "parse");
    let [a, b] = [ends[0], ends[1]].map(|end| objects.partition_point(|o| o.loc.file < end));
    let (old_side, inv_objects, new_side) = (&objects[..b], &objects[a..b], &objects[a..]);
    let old_checked = polc_compiler::check(old_side, &opts);
    let new_checked = polc_compiler::check(new_side, &opts);
    let (inventory, inv_diags) = Inventory::from_objects(inv_objects, &args.cluster_name);
    crate::timing::lap(stderr, "check, lower, inventory");
    let diags = read
        .into_iter()
        .chain(old_checked.diags)
        .chain(new_checked.diags)
        .chain(inv_diags)
        .chain(inputs.diagnostics);
    if report_errors(&inputs.sources, inputs.unreadable, &objects, diags, stderr) {
        return None;
    }
    let config = config(args.cilium_version, &args.cluster_name);
    let (mut old_policies, mut new_policies) = (old_checked.policies, new_checked.policies);
    inventory.bind_services(&mut old_policies);
    inventory.bind_services(&mut new_policies);
    let stray = |side: &[Object]| side.iter().any(|o| !o.kind.is_policy());
    let models = if stray(&objects[..a]) || stray(&objects[b..]) {
        // Policy paths that hold inventory objects too: each side has its own cluster.
        let model = |policies: PolicySet, side: &[Object]| {
            let (inventory, _) = Inventory::from_objects(side, &args.cluster_name);
            Model::from_parts(policies, inventory, config.clone())
        };
        (model(old_policies, old_side), model(new_policies, new_side))
    } else {
        Model::pair(old_policies, new_policies, inventory, config)
    };
    crate::timing::lap(stderr, "build models");
    Some(models)
}

/// Policy paths, less existing directories without policy files: those mean "no
/// policies" here (every endpoint is then unenforced), not an input error as for `lint`.
fn policy_paths(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths.iter().filter(|p| !is_empty_dir(p)).cloned().collect()
}

/// The agent settings for a version and cluster name.
fn config(version: CiliumVersion, cluster_name: &str) -> Config {
    Config {
        version,
        cluster_name: cluster_name.to_string(),
        ..Config::default()
    }
}

/// Prints the errors among `diags` (less `EmptyInput`: an empty file holds no objects,
/// which is an error for `lint` but not for a command that only needs to know what the
/// files mean), and whether there were any, or unreadable input.
fn report_errors(
    sources: &SourceMap,
    unreadable: bool,
    objects: &[Object],
    diags: impl Iterator<Item = Diagnostic>,
    stderr: &mut dyn Write,
) -> bool {
    let mut errors = polc_compiler::diag::Diagnostics::new();
    for d in diags {
        if d.code != polc_compiler::diag::Code::EmptyInput && d.severity == Severity::Error {
            errors.push(d);
        }
    }
    errors.sort();
    let errors = errors.into_vec();
    if !unreadable && errors.is_empty() {
        return false;
    }
    let summary = Summary::new(sources.files().count(), objects, &errors);
    let text = render::human(sources, &errors, &summary, false);
    let _ = stderr.write_all(text.as_bytes());
    let _ = writeln!(
        stderr,
        "polc: error: the input has errors (see above); `polc lint` explains each one"
    );
    true
}

/// Whether `p` is a directory with no `.yaml`, `.yml` or `.json` file under it.
fn is_empty_dir(p: &std::path::Path) -> bool {
    p.is_dir()
        && !walkdir::WalkDir::new(p)
            .into_iter()
            .filter_map(Result::ok)
            .any(|e| {
                e.file_type().is_file()
                    && e.path()
                        .extension()
                        .and_then(|x| x.to_str())
                        .is_some_and(|x| {
                            matches!(x.to_ascii_lowercase().as_str(), "yaml" | "yml" | "json")
                        })
            })
}
