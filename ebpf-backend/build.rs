//! Builds the C datapath (`bpf/datapath.c`) into a BPF object with clang, and the deliberately
//! invalid `bpf/tests/rejected.c` that the loader tests feed to the kernel verifier. No object
//! is committed; without clang the build stops with an error saying what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env("OUT_DIR"));
    let bpf = manifest.join("bpf");
    for f in ["abi.h", "datapath.c", "tests/rejected.c"] {
        println!("cargo:rerun-if-changed={}", bpf.join(f).display());
    }
    println!("cargo:rerun-if-env-changed=POLC_CLANG");
    let clang = std::env::var("POLC_CLANG").unwrap_or_else(|_| "clang".into());
    compile(
        &clang,
        &bpf,
        &bpf.join("datapath.c"),
        &out.join("datapath.bpf.o"),
    );
    compile(
        &clang,
        &bpf,
        &bpf.join("tests/rejected.c"),
        &out.join("rejected.bpf.o"),
    );
}

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) => v,
        Err(_) => fail(&format!("cargo did not set {name}")),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}

/// The include directory of the target's `asm/` headers (Debian keeps them per architecture).
fn multiarch_include() -> Option<String> {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    let triple = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        _ => return None,
    };
    let dir = format!("/usr/include/{triple}");
    Path::new(&dir).is_dir().then_some(dir)
}

fn compile(clang: &str, include: &Path, src: &Path, obj: &Path) {
    // The object's byte order is the target's: the loader writes host-order fields.
    let target = match std::env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb",
        _ => "bpfel",
    };
    let mut cmd = Command::new(clang);
    cmd.args(["-O2", "-g", "-target", target, "-Wall", "-Werror"])
        .arg("-I")
        .arg(include);
    if let Some(dir) = multiarch_include() {
        cmd.arg("-I").arg(dir);
    }
    cmd.arg("-c").arg(src).arg("-o").arg(obj);
    match cmd.output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => fail(&format!(
            "clang failed to build {}:\n{}{}",
            src.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => fail(&format!(
            "cannot run `{clang}` to build the eBPF datapath ({e}); install clang and the \
             BPF headers (Debian: `apt-get install clang llvm libbpf-dev`, or run \
             scripts/setup.sh), or point POLC_CLANG at a clang binary"
        )),
    }
}
