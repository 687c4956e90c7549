#!/usr/bin/env bash
# Installs what building and testing polc needs on a fresh Debian machine. Idempotent: it
# only installs what is missing, and it is safe to run on every invocation.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v git >/dev/null 2>&1 || need_apt+=(git)
# The eBPF datapath: clang builds it (ebpf-backend/build.rs), libbpf-dev has bpf_helpers.h,
# bpftool helps debugging; iproute2 makes the network namespaces of the kernel tests.
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
command -v llvm-objdump >/dev/null 2>&1 || need_apt+=(llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || need_apt+=(libbpf-dev)
command -v bpftool >/dev/null 2>&1 || [ -x /usr/sbin/bpftool ] || need_apt+=(bpftool)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need_apt+=(iproute2)

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  echo "setup: installing ${need_apt[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: cargo is not installed; install Rust (https://rustup.rs) and rerun" >&2
    exit 2
  fi
fi

for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component" >/dev/null 2>&1 || true
  fi
done

# libz3 for the verifier (the `z3` crate needs a newer one than Debian ships).
if [ "$(id -u)" -ne 0 ] && [ ! -w /usr/local/lib ]; then
  sudo "$(dirname "$0")/setup-z3.sh"
else
  "$(dirname "$0")/setup-z3.sh"
fi
