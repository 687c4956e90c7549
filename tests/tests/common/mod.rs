//! Helpers shared by the end-to-end tests: locating the repository, reading fixtures and
//! running polc in-process.

#![allow(dead_code)]

pub mod agent_metrics;
pub mod fake_api;

use polc_compiler::diag::Diagnostic;
use polc_compiler::source::SourceMap;
use polc_compiler::{CiliumVersion, Options};
use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every file under `dir` (recursively), sorted, relative to the workspace root.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A fixture's path relative to the workspace root, and the code its directory names.
pub fn fixture(path: &Path) -> (String, String) {
    let rel = path
        .strip_prefix(root())
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/");
    let code = path
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    (rel, code)
}

/// Settings a fixture asks for in header comments (`# cilium-version: 1.18`,
/// `# max-file-size: 64`).
#[derive(Default, Clone, Copy)]
pub struct FixtureArgs {
    pub version: Option<CiliumVersion>,
    pub max_file_size: Option<u64>,
}

pub fn fixture_args(text: &str) -> FixtureArgs {
    let mut a = FixtureArgs::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("# cilium-version:") {
            a.version = Some(v.trim().parse().unwrap());
        }
        if let Some(v) = line.strip_prefix("# max-file-size:") {
            a.max_file_size = Some(v.trim().parse().unwrap());
        }
    }
    a
}

/// The lines (one-based) a fixture marks for `code`: `# expect: CODE` on the line itself,
/// or `# expect-below: CODE` on the line above.
pub fn expected_lines(text: &str, code: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for (marker, offset) in [("# expect:", 0), ("# expect-below:", 1)] {
            if let Some(pos) = line.find(marker) {
                let codes = &line[pos + marker.len()..];
                if codes.split([',', ' ']).any(|c| c.trim() == code) {
                    out.push(i + 1 + offset);
                }
            }
        }
    }
    out
}

/// Lints one file in-process, naming it `name`, through the CLI's own input checks.
pub fn lint_text(name: &str, bytes: Vec<u8>, args: FixtureArgs) -> (SourceMap, Vec<Diagnostic>) {
    let mut inputs = polc_cli::input::Inputs::default();
    let max = args
        .max_file_size
        .unwrap_or(polc_cli::input::DEFAULT_MAX_FILE_SIZE);
    polc_cli::input::add_bytes(&mut inputs, name, bytes, max);
    let opts = Options {
        version: args.version.unwrap_or_default(),
        ..Options::default()
    };
    let (objects, diags) = polc_compiler::lint(&inputs.sources, &opts);
    let mut all = diags.into_vec();
    all.extend(polc_cli::commands::lint::verify(
        &objects,
        &opts,
        polc_verifier::Limits::default(),
    ));
    all.extend(inputs.diagnostics);
    (inputs.sources, all)
}

/// Runs the polc command line in-process; returns (exit code, stdout, stderr).
pub fn polc(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut input = stdin;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = {
        let mut io = polc_cli::Io {
            stdin: &mut input,
            stdout: &mut out,
            stderr: &mut err,
            stdout_is_terminal: false,
        };
        let mut argv = vec!["polc"];
        argv.extend_from_slice(args);
        polc_cli::run(argv, &mut io)
    };
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// Waits until `ok` holds, asking every 50 ms, for at most `limit`; fails naming `what`.
pub fn eventually(what: &str, limit: std::time::Duration, mut ok: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "never: {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A throwaway network namespace with two veth pairs (`lxc1`/`lxc1p`, `lxc2`/`lxc2p`) and a
/// pin directory of its own, both removed on drop.
pub struct Netns {
    /// The namespace's name.
    pub netns: String,
    /// The pin directory.
    pub pins: PathBuf,
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

/// A [`Netns`] (`None`, said, when not root).
pub fn throwaway_netns(tag: &str) -> Option<Netns> {
    if polc_ebpf::sys::euid() != 0 {
        eprintln!("SKIPPED: needs root (BPF programs, network namespaces)");
        return None;
    }
    let g = Netns {
        netns: format!("plc{}{tag}", std::process::id()),
        pins: PathBuf::from(format!(
            "/sys/fs/bpf/polc-cli-test-{}{tag}",
            std::process::id()
        )),
    };
    let ns = &g.netns;
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ip netns add {ns} && ip -n {ns} link set lo up && \
             ip -n {ns} link add lxc1 type veth peer name lxc1p && \
             ip -n {ns} link add lxc2 type veth peer name lxc2p"
        ))
        .status()
        .unwrap()
        .success();
    assert!(ok, "creating the network namespace");
    Some(g)
}

/// polc with `args` inside the namespace of `g`.
pub fn polc_in(g: &Netns, args: &[&str]) -> (i32, String, String) {
    let path = PathBuf::from("/run/netns").join(&g.netns);
    polc_ebpf::sys::in_netns(&path, || polc(args, b"")).unwrap()
}
