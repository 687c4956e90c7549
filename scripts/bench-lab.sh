#!/usr/bin/env bash
# polc lab measurements, as root: `polc lab up` time for the demo cluster, and the latency the
# eBPF datapath adds per packet (TCP and UDP request/response round trips between two lab pods
# on different nodes, with the datapath attached and detached). Prints the tables that
# BENCHMARKS.md quotes.
#
# Usage: sudo scripts/bench-lab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo bench --locked -p polc --bench lab
