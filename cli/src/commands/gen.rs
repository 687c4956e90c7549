//! `polc gen -o DIR` (hidden): write a synthetic cluster, inventory and policies, for
//! benchmarks. The generator itself is `polc_compiler::r#gen`; this command only writes its
//! files.

use crate::{EXIT_CLEAN, Io};
use anyhow::Context;
use polc_compiler::r#gen::{self, Scale};
use std::path::PathBuf;

/// A preset size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScaleChoice {
    /// Our largest users: 400 nodes, 36,000 pods, 27,000 services, 3,000 CNPs, 200 CCNPs,
    /// 500 CIDR groups, 300 namespaces.
    Users,
    /// A few nodes and dozens of pods and policies, for tests.
    Small,
}

/// Arguments of `polc gen`.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Directory to write into (created if missing; files of the same name are replaced).
    #[arg(short = 'o', long, value_name = "DIR")]
    pub out: PathBuf,
    /// The preset size.
    #[arg(long, value_enum, default_value = "users")]
    pub scale: ScaleChoice,
    /// Seed of the pseudo-random choices (the same seed and sizes give the same files).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of nodes, instead of the preset's.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Number of pods, instead of the preset's.
    #[arg(long)]
    pub pods: Option<usize>,
    /// Number of services, instead of the preset's.
    #[arg(long)]
    pub services: Option<usize>,
    /// Number of CiliumNetworkPolicies, instead of the preset's.
    #[arg(long)]
    pub cnps: Option<usize>,
    /// Number of CiliumClusterwideNetworkPolicies, instead of the preset's.
    #[arg(long)]
    pub ccnps: Option<usize>,
    /// Number of CiliumCIDRGroups, instead of the preset's.
    #[arg(long)]
    pub cidr_groups: Option<usize>,
    /// Number of namespaces, instead of the preset's.
    #[arg(long)]
    pub namespaces: Option<usize>,
}

impl GenArgs {
    /// The scale the arguments ask for.
    pub fn scale(&self) -> Scale {
        let base = match self.scale {
            ScaleChoice::Users => Scale::users(),
            ScaleChoice::Small => Scale::small(),
        };
        Scale {
            nodes: self.nodes.unwrap_or(base.nodes),
            pods: self.pods.unwrap_or(base.pods),
            services: self.services.unwrap_or(base.services),
            cnps: self.cnps.unwrap_or(base.cnps),
            ccnps: self.ccnps.unwrap_or(base.ccnps),
            cidr_groups: self.cidr_groups.unwrap_or(base.cidr_groups),
            namespaces: self.namespaces.unwrap_or(base.namespaces),
            seed: self.seed.unwrap_or(base.seed),
        }
    }
}

/// Runs `polc gen`.
pub fn run(args: &GenArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    let scale = args.scale();
    let files = r#gen::generate(&scale);
    let mut bytes = 0usize;
    let mut largest = 0usize;
    for f in &files {
        let path = args.out.join(&f.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
        }
        std::fs::write(&path, &f.text)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        bytes += f.text.len();
        largest = largest.max(f.text.len());
    }
    writeln!(
        io.stdout,
        "wrote {} files ({bytes} bytes, largest {largest}) to {}: {} namespaces, {} nodes, \
         {} pods, {} services, {} CNPs, {} CCNPs, {} CIDR groups (seed {})",
        files.len(),
        args.out.display(),
        scale.namespaces,
        scale.nodes,
        scale.pods,
        scale.services,
        scale.cnps,
        scale.ccnps,
        scale.cidr_groups,
        scale.seed,
    )?;
    Ok(EXIT_CLEAN)
}

/// The cluster `scale` describes as an API server would serve it: each object as JSON (with
/// its `apiVersion` and `kind`; the generated lists taken apart). The agent's benchmark and
/// tests serve these.
pub fn api_objects(scale: &Scale) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (i, f) in r#gen::generate(scale).iter().enumerate() {
        let file = polc_compiler::source::SourceFile::new(f.path.clone(), f.text.clone());
        let mut diags = Vec::new();
        let docs = polc_compiler::yaml::parse_stream(
            polc_compiler::source::FileId(u32::try_from(i).unwrap_or(u32::MAX)),
            &file,
            polc_compiler::yaml::Limits::default(),
            &mut diags,
        );
        for doc in docs {
            let json = crate::input::yaml_to_json(&doc.root);
            match json["kind"].as_str() {
                Some("List") => out.extend(json["items"].as_array().cloned().unwrap_or_default()),
                _ => out.push(json),
            }
        }
    }
    out
}
