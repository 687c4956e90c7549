#!/usr/bin/env bash
# The L7 proxy under load in the lab, as root: requests per second and latency percentiles of
# 100 kept-alive HTTP/1.1 clients through the proxy and straight through the datapath (env
# CLIENTS, SECONDS, RUNS). Prints the table BENCHMARKS.md quotes.
#
# Usage: sudo scripts/bench-proxy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo bench --locked -p polc --bench proxy
