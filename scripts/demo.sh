#!/usr/bin/env bash
# polc's main job on the bundled demo: lint every policy and the cluster inventory under
# policies/demo, check the demo's policy flow tests (policies/demo/flows.yaml) and policy tests
# (policies/demo/demo.polt), and compile
# the policies for the demo cluster. Installs what it needs first. Extra arguments go to
# `polc lint`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. scripts/env.sh
cargo build --release --locked -p polc
polc="${CARGO_TARGET_DIR:-target}/release/polc"
"$polc" lint policies/demo "$@"
"$polc" explain --policies policies/demo/policies --inventory policies/demo/cluster \
    --flows policies/demo/flows.yaml
"$polc" test policies/demo
"$polc" compile --policies policies/demo/policies --inventory policies/demo/cluster \
    -o "${CARGO_TARGET_DIR:-target}/demo-compiled"
