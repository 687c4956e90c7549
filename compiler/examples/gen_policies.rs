//! Writes a corpus of generated, valid network policies for benchmarks and experiments, one
//! policy per file (`policy-00001.yaml`, ...).
//!
//! ```text
//! cargo run --release -p polc-compiler --example gen_policies -- OUTDIR [COUNT]
//! ```
//!
//! The corpus is deterministic: the same COUNT gives the same files on every machine. The
//! generator is shared with the `lint` benchmark (`benches/common/gen.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/common/gen.rs"]
mod generator;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), count) = (args.next(), args.next()) else {
        eprintln!("usage: gen_policies OUTDIR [COUNT]");
        return ExitCode::from(2);
    };
    let count = match count.map(|c| c.to_string_lossy().parse::<usize>()) {
        None => 5000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("gen_policies: COUNT must be a number: {e}");
            return ExitCode::from(2);
        }
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create the output directory");
    let mut bytes = 0;
    for (name, text) in generator::corpus(count) {
        bytes += text.len();
        std::fs::write(dir.join(&name), text).expect("write a policy file");
    }
    println!(
        "wrote {count} policies, {bytes} bytes ({:.2} MB), to {}",
        bytes as f64 / 1e6,
        dir.display()
    );
    ExitCode::SUCCESS
}
