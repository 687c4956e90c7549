//! Building and removing the lab's network: namespaces (`ip netns`), `ip -batch` scripts run
//! inside them, sysctls written from a thread that joined the namespace, and the wait until
//! every link is up. Only the lab's own namespaces are touched: every command names one.

use super::LabError;
use polc_ebpf::sys;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The file of network namespace `name`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

fn setup_error(what: impl Into<String>, detail: impl Into<String>) -> LabError {
    LabError::Setup {
        what: what.into(),
        detail: detail.into(),
    }
}

/// Runs `ip [-n NS] [-force] -batch -` with `script` on its standard input.
pub fn ip_batch(ns: Option<&str>, script: &str, force: bool) -> Result<(), LabError> {
    run_batch(&[], ns, script, force)
}

/// Runs `ip -6 -n NS -batch -` with `script` (rules whose family the batch line cannot say).
pub fn ip6_batch(ns: &str, script: &str) -> Result<(), LabError> {
    run_batch(&["-6"], Some(ns), script, false)
}

fn run_batch(opts: &[&str], ns: Option<&str>, script: &str, force: bool) -> Result<(), LabError> {
    if script.trim().is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("ip");
    cmd.args(opts);
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    if force {
        cmd.arg("-force");
    }
    cmd.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let what = match ns {
        Some(ns) => format!("configuring network namespace `{ns}`"),
        None => "configuring the lab's network namespaces".to_string(),
    };
    let mut child = cmd.spawn().map_err(|e| {
        setup_error(
            "running `ip` (iproute2)",
            format!("{e}; install iproute2 (`apt-get install iproute2`)"),
        )
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| setup_error(what.clone(), e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| setup_error(what.clone(), e.to_string()))?;
    if out.status.success() || force {
        Ok(())
    } else {
        Err(setup_error(
            what,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Creates the namespaces `names` (none may exist).
pub fn create_namespaces(names: &[String]) -> Result<(), LabError> {
    let script: String = names.iter().map(|n| format!("netns add {n}\n")).collect();
    ip_batch(None, &script, false)
}

/// Deletes the namespaces `names`, ignoring those already gone. Returns how many went.
pub fn delete_namespaces(names: &[String]) -> usize {
    let existing: Vec<&String> = names.iter().filter(|n| netns_path(n).exists()).collect();
    let script: String = existing
        .iter()
        .map(|n| format!("netns del {n}\n"))
        .collect();
    let _ = ip_batch(None, &script, true);
    existing.iter().filter(|n| !netns_path(n).exists()).count()
}

/// The namespaces whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    out.sort();
    out
}

/// Writes sysctls (`net.ipv4.ip_forward`) inside namespace `ns`. `/proc/sys/net` shows the
/// namespace of the thread that opens it, so a thread that joined `ns` writes `ns`'s values.
pub fn sysctls(ns: &str, values: &[(&str, &str)]) -> Result<(), LabError> {
    let result = sys::in_netns(&netns_path(ns), || {
        for (key, value) in values {
            let path = Path::new("/proc/sys").join(key.replace('.', "/"));
            std::fs::write(&path, value).map_err(|e| format!("{key}={value}: {e}"))?;
        }
        Ok::<(), String>(())
    })
    .map_err(|e| setup_error(format!("entering network namespace `{ns}`"), e.to_string()))?;
    result.map_err(|e| setup_error(format!("setting sysctls in `{ns}`"), e))
}

/// Waits until every link of the namespaces `names` is up (the kernel brings a veth's
/// operational state up asynchronously, and packets sent before that are lost).
pub fn wait_links_up(names: &[String], limit: Duration) -> Result<(), LabError> {
    let start = Instant::now();
    let mut pending: Vec<&String> = names.iter().collect();
    loop {
        let mut still = Vec::new();
        for ns in pending {
            let out = Command::new("ip")
                .args(["-n", ns, "-o", "link", "show"])
                .stderr(Stdio::null())
                .output()
                .map_err(|e| setup_error("running `ip` (iproute2)", e.to_string()))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let down = !out.status.success()
                || text.lines().any(|l| {
                    l.contains("state DOWN")
                        || l.contains("state LOWERLAYERDOWN")
                        || l.contains("NO-CARRIER")
                });
            if down {
                still.push(ns);
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(setup_error(
                "waiting for the lab's links to come up",
                format!(
                    "still down after {} s in {}",
                    limit.as_secs(),
                    still
                        .iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        pending = still;
        std::thread::sleep(Duration::from_millis(20));
    }
}
