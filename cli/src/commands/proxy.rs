//! `polc proxy`: polc's L7 proxy on a node (see [`crate::proxy`]). It listens transparently
//! on the HTTP and DNS proxy ports of its configuration (`proxy.json`, written per node by
//! `polc compile` and by `polc lab`), judges every request with the endpoints' proxy rules,
//! and reads the configuration again whenever the file changes.

use crate::proxy::run::{self, Options};
use crate::{EXIT_USAGE, Io};
use polc_compiler::diag::Code;
use std::path::PathBuf;

/// Arguments of `polc proxy`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Runs until stopped. Exit codes: 2 when it cannot start (an unreadable \
                        configuration, a port in use, not root)."
)]
pub struct ProxyArgs {
    /// The configuration: `nodes/NODE/proxy.json` of `polc compile`.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Run in this network namespace (a name under /run/netns, or a path).
    #[arg(long, value_name = "NETNS")]
    pub netns: Option<String>,
    /// Append the access log here (a JSON object per request).
    #[arg(long, value_name = "FILE")]
    pub access_log: Option<PathBuf>,
    /// Keep the status (counters, per-rule requests) here, for `polc status`.
    #[arg(long, value_name = "FILE")]
    pub status: Option<PathBuf>,
}

/// Runs `polc proxy`.
pub fn run(args: &ProxyArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    let opts = Options {
        config: args.config.clone(),
        access_log: args.access_log.clone(),
        status: args.status.clone(),
    };
    let result = match &args.netns {
        None => run::run(&opts),
        Some(ns) => {
            let path = if ns.contains('/') {
                PathBuf::from(ns)
            } else {
                crate::lab::net::netns_path(ns)
            };
            polc_ebpf::sys::in_netns(&path, || run::run(&opts))
                .map_err(|e| format!("cannot enter network namespace {}: {e}", path.display()))
                .and_then(|r| r)
        }
    };
    match result {
        Ok(()) => Ok(0),
        Err(e) => {
            writeln!(
                io.stderr,
                "polc: error[{}]: the proxy cannot start: {e}",
                Code::ProxyFailed.as_str()
            )?;
            Ok(EXIT_USAGE)
        }
    }
}
