#!/usr/bin/env bash
# The whole test suite: formatting, clippy, and every test of the workspace. Installs what it
# needs first. Snapshot tests never write new snapshots here (CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. scripts/env.sh
export CI=true
# A clean clone gains nothing from incremental compilation, and its caches fill the disk.
export CARGO_INCREMENTAL=0
echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test" >&2
cargo test --workspace --all-targets --locked
echo "== demo" >&2
cargo run -q --locked -p polc -- lint --quiet --deny-warnings policies/demo >/dev/null
cargo run -q --locked -p polc -- explain --policies policies/demo/policies \
    --inventory policies/demo/cluster --flows policies/demo/flows.yaml >/dev/null
cargo run -q --locked -p polc -- test policies/demo >/dev/null
demo_out="$(mktemp -d)"
trap 'rm -rf "$demo_out"' EXIT
cargo run -q --locked -p polc -- compile --policies policies/demo/policies \
    --inventory policies/demo/cluster -o "$demo_out" >/dev/null
echo "test.sh: all passed" >&2
