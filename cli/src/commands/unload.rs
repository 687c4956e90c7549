//! `polc unload`: detaches polc's datapath from every interface and removes its pins (maps,
//! programs, links), for every node loaded on this machine or one `--node`.

use super::load::{node_dir, report_error};
use crate::{EXIT_CLEAN, EXIT_USAGE, Io};
use polc_compiler::diag::Code;
use polc_ebpf::loader;
use std::path::PathBuf;

/// Arguments of `polc unload`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 unloaded (or nothing was loaded), 2 failure.")]
pub struct UnloadArgs {
    /// Only this node's datapath.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Where the datapath is pinned.
    #[arg(long, default_value = loader::DEFAULT_ROOT, value_name = "DIR")]
    pub bpffs_root: PathBuf,
}

/// Runs `polc unload`.
pub fn run(args: &UnloadArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    let euid = polc_ebpf::sys::euid();
    if euid != 0 {
        return Ok(report_error(&loader::LoadError::NotRoot(euid), io.stderr));
    }
    let dirs = match &args.node {
        Some(n) => {
            let Some(d) = node_dir(&args.bpffs_root, n) else {
                writeln!(
                    io.stderr,
                    "polc: error[{}]: `{n}` is not a node name",
                    Code::BadInterfaceMap.as_str()
                )?;
                return Ok(EXIT_USAGE);
            };
            if d.join("polc_meta").exists() {
                vec![d]
            } else {
                Vec::new()
            }
        }
        None => loader::instances(&args.bpffs_root),
    };
    if dirs.is_empty() {
        writeln!(io.stdout, "nothing to unload: no polc datapath is loaded")?;
        return Ok(EXIT_CLEAN);
    }
    for d in dirs {
        let node = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match loader::unload(&d) {
            Ok(u) => writeln!(
                io.stdout,
                "unloaded node `{node}`: {} links detached, {} endpoint policy maps removed",
                u.links, u.endpoints
            )?,
            Err(e) => return Ok(report_error(&e, io.stderr)),
        }
    }
    Ok(EXIT_CLEAN)
}
