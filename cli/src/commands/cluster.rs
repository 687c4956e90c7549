//! Reading policies and an inventory into a [`Model`], for the commands that need a cluster
//! (`explain`, `compile`).

use crate::input;
use crate::render::{self, Summary};
use polc_compiler::diag::{Diagnostic, Severity};
use polc_compiler::model::{Config, Model};
use polc_compiler::source::{FileId, SourceMap};
use polc_compiler::{CiliumVersion, Options};
use std::io::{Read, Write};
use std::path::PathBuf;

/// Where the policies and the cluster come from, and the agent settings.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Policy files or directories (CNP, CCNP, CiliumCIDRGroup, NetworkPolicy).
    #[arg(long, required = true, num_args = 1.., value_name = "PATH")]
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
    pub objects: Vec<polc_compiler::raw::Object>,
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
    // An existing directory without policy files means "no policies" here (every endpoint
    // is then unenforced), not an input error as it is for `lint`.
    let mut paths: Vec<PathBuf> = args
        .policies
        .iter()
        .filter(|p| !is_empty_dir(p))
        .cloned()
        .collect();
    paths.extend(args.inventory.iter().cloned());
    let before = paths.len();
    paths.extend(extra.iter().cloned());
    let inputs = input::gather(&paths, stdin, args.max_file_size);
    crate::timing::lap(stderr, "read files");
    let opts = Options {
        version: args.cilium_version,
        ..Options::default()
    };
    let (objects, mut diags) = polc_compiler::lint(&inputs.sources, &opts);
    crate::timing::lap(stderr, "lint");
    for d in inputs.diagnostics {
        diags.push(d);
    }
    // An empty file holds no objects; that is an error for `lint`, but not for a command that
    // only needs to know what the files mean.
    let mut diags = {
        let mut kept = polc_compiler::diag::Diagnostics::new();
        for d in diags.into_vec() {
            if d.code != polc_compiler::diag::Code::EmptyInput {
                kept.push(d);
            }
        }
        kept
    };
    let config = Config {
        version: args.cilium_version,
        cluster_name: args.cluster_name.clone(),
        ..Config::default()
    };
    let (model, model_diags) = Model::build(&objects, config);
    crate::timing::lap(stderr, "build model");
    for d in model_diags {
        diags.push(d);
    }
    diags.sort();
    let errors: Vec<Diagnostic> = diags
        .into_vec()
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    if inputs.unreadable || !errors.is_empty() {
        let summary = Summary::new(inputs.sources.files().count(), &objects, &errors);
        let text = render::human(&inputs.sources, &errors, &summary, false);
        let _ = stderr.write_all(text.as_bytes());
        let _ = writeln!(
            stderr,
            "polc: error: the input has errors (see above); `polc lint` explains each one"
        );
        return None;
    }
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
