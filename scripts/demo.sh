#!/usr/bin/env bash
# polc's main job on the bundled demo: lint every policy and the cluster inventory under
# policies/demo. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. scripts/env.sh
cargo build --release --locked -p polc
"${CARGO_TARGET_DIR:-target}/release/polc" lint policies/demo "$@"
