#!/usr/bin/env bash
# Side-by-side benchmark of polc and network-config-analyzer (nca) on generated
# Kubernetes-NetworkPolicy-only clusters: the connectivity map (`polc graph` against
# `nca --connectivity`) and the semantic diff of a policy change (`polc diff` against
# `nca --semantic_diff`), on the same input files in one run. Both answers are compared as sets
# of (source, destination, protocol, port range) by bench/nca/compare.py.
#
# Usage: scripts/bench-nca.sh [SIZE...]          (default sizes: 200 1000)
# Environment:
#   RUNS=3            timed polc runs per measurement (median); one run when a run takes > 60 s
#   NCA_TIMEOUT=1200  seconds before an nca run is stopped (it runs once)
#   POLC_TIMEOUT=1200 seconds before a polc run is stopped
#   NCA_VENV=/var/cache/polc/nca-venv   where nca is installed (created when missing)
#   BENCH_DIR=/var/cache/polc/bench-nca where clusters and outputs are kept
#   POLC=PATH         time this polc binary instead of building the tree
# Runs bench/nca/probes.py first (a few seconds). Writes BENCH_DIR/probes.txt,
# BENCH_DIR/results.json and BENCH_DIR/results.md (times, agreement, disagreement categories;
# bench/nca/RESULTS.md explains them), and keeps every input and output under BENCH_DIR/SIZE/.
set -euo pipefail

cd "$(dirname "$0")/.."
. scripts/env.sh
root="$PWD"
RUNS="${RUNS:-3}"
NCA_TIMEOUT="${NCA_TIMEOUT:-1200}"
POLC_TIMEOUT="${POLC_TIMEOUT:-1200}"
NCA_VENV="${NCA_VENV:-/var/cache/polc/nca-venv}"
BENCH_DIR="${BENCH_DIR:-/var/cache/polc/bench-nca}"
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(200 1000)

echo "== tools"
if [[ ! -x /usr/bin/time ]]; then
    apt-get update -qq && apt-get install -y -qq time
fi
want_nca="$(awk -F'==' '$1 == "network-config-analyzer" {print $2}' bench/nca/requirements.txt)"
if ! "$NCA_VENV/bin/nca" --version 2>/dev/null | grep -qx "NCA version $want_nca"; then
    py=""
    for c in python3.11 python3.12 python3.10 python3; do
        if command -v "$c" >/dev/null; then py="$c"; break; fi
    done
    [[ -n "$py" ]] || { echo "bench-nca: no python3 found" >&2; exit 2; }
    "$py" -m venv "$NCA_VENV"
    "$NCA_VENV/bin/pip" install -q -r bench/nca/requirements.txt
fi
"$NCA_VENV/bin/nca" --version
py="$NCA_VENV/bin/python"  # the venv has PyYAML, which the generator and compare.py use

mkdir -p "$BENCH_DIR"
if [[ -n "${POLC:-}" ]]; then
    cp "$POLC" "$BENCH_DIR/polc"
    commit="given: $POLC"
else
    scripts/setup.sh  # compilers and libz3 for the build (idempotent)
    cargo build --release --locked -p polc
    # Work on a private copy: another checkout that shares the cargo target directory can
    # relink target/release/polc to its own build at any time. The copy must come from this
    # tree (its debug info names the workspace root, NUL-terminated).
    cp "$CARGO_TARGET_DIR/release/polc" "$BENCH_DIR/polc"
    if ! LC_ALL=C grep -q -a -P "\x00\Q$root\E\x00" "$BENCH_DIR/polc"; then
        echo "bench-nca: $CARGO_TARGET_DIR/release/polc was not built from $root (another" \
            "checkout shares the target directory); rerun, or set CARGO_TARGET_DIR" >&2
        exit 2
    fi
    commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo '+dirty')"
fi
polc="$BENCH_DIR/polc"
echo "polc ($commit), sha256 $(sha256sum "$polc" | cut -c1-16)"

# measure NAME TIMEOUT CMD...: runs CMD once under /usr/bin/time -v with stdout to NAME.out;
# prints "wall_seconds max_rss_kib exit_code cpu_seconds" (cpu = user + system).
measure() {
    local name="$1" limit="$2"
    shift 2
    local start end rc=0
    start="$(date +%s%N)"
    /usr/bin/time -v -o "$name.time" timeout "$limit" "$@" > "$name.out" 2> "$name.err" || rc=$?
    end="$(date +%s%N)"
    local rss cpu
    rss="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$name.time" 2>/dev/null || true)"
    cpu="$(awk -F': ' '/User time|System time/ {s += $2} END {printf "%.2f", s}' "$name.time" \
        2>/dev/null || true)"
    awk -v s="$start" -v e="$end" -v r="${rss:-0}" -v c="$rc" -v u="${cpu:-0}" \
        'BEGIN {printf "%.3f %d %d %.2f\n", (e - s) / 1e9, r, c, u}'
}

# polc_runs NAME CMD...: up to RUNS timed runs (one if the first takes over 60 s); prints
# "median_wall_seconds max_rss_kib exit_code runs median_cpu_seconds".
polc_runs() {
    local name="$1"
    shift
    : > "$name.runs"
    local i wall rss rc cpu
    for i in $(seq "$RUNS"); do
        read -r wall rss rc cpu < <(measure "$name" "$POLC_TIMEOUT" "$@")
        echo "$wall $rss $rc $cpu" >> "$name.runs"
        if [[ "$rc" != 0 ]] || awk -v w="$wall" 'BEGIN {exit !(w > 60)}'; then
            break
        fi
    done
    local med_wall med_cpu rest
    med_wall="$(cut -d' ' -f1 "$name.runs" | sort -n | awk '{a[NR] = $1}
        END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}')"
    med_cpu="$(cut -d' ' -f4 "$name.runs" | sort -n | awk '{a[NR] = $1}
        END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}')"
    rest="$(awk '{if ($2 > rss) rss = $2; if ($3 != 0) rc = $3} END {printf "%d %d %d", rss, rc, NR}' \
        "$name.runs")"
    read -r rss rc i <<< "$rest"
    printf "%.3f %d %d %d %.2f\n" "$med_wall" "$rss" "$rc" "$i" "$med_cpu"
}

echo "== probes: small cases where polc (Cilium) and nca (Kubernetes) part"
"$py" bench/nca/probes.py --polc "$polc" --nca "$NCA_VENV/bin/nca" --out "$BENCH_DIR/probes" \
    | tee "$BENCH_DIR/probes.txt"

results="$BENCH_DIR/results.json"
echo "[" > "$results"
first=1
for n in "${sizes[@]}"; do
    d="$BENCH_DIR/$n"
    rm -rf "$d"
    mkdir -p "$d"
    echo "== $n pods: generate"
    "$py" bench/nca/gen_cluster.py --pods "$n" --out "$d"
    cluster="$d/cluster.yaml" old="$d/old/policies.yaml" new="$d/new/policies.yaml"

    echo "== $n pods: connectivity map"
    read -r pg_wall pg_rss pg_rc pg_runs pg_cpu < <(polc_runs "$d/polc-graph" \
        "$polc" graph --policies "$old" --inventory "$cluster" --format json)
    echo "polc graph: ${pg_wall} s wall, ${pg_cpu} s CPU (median of $pg_runs), peak RSS $((pg_rss / 1024)) MiB, exit $pg_rc"
    rm -f "$d/nca-conn.txt"  # nca appends to --file_out
    read -r ng_wall ng_rss ng_rc ng_cpu < <(measure "$d/nca-conn" "$NCA_TIMEOUT" \
        "$NCA_VENV/bin/nca" --connectivity "$old" --pod_list "$cluster" --ns_list "$cluster" \
        --output_format txt_no_fw_rules --output_endpoints pods --file_out "$d/nca-conn.txt")
    echo "nca connectivity: ${ng_wall} s wall, ${ng_cpu} s CPU, peak RSS $((ng_rss / 1024)) MiB, exit $ng_rc"
    graph_cmp="not compared"
    if [[ "$pg_rc" == 0 && "$ng_rc" == 0 ]]; then
        "$py" bench/nca/compare.py graph --cluster "$cluster" --policies "$old" \
            --polc "$d/polc-graph.out" --nca "$d/nca-conn.txt" --json "$d/compare-graph.json" \
            | tee "$d/compare-graph.txt"
        graph_cmp="$d/compare-graph.json"
    fi

    echo "== $n pods: semantic diff"
    read -r pd_wall pd_rss pd_rc pd_runs pd_cpu < <(polc_runs "$d/polc-diff" \
        "$polc" diff "$old" "$new" --inventory "$cluster" --format json)
    echo "polc diff: ${pd_wall} s wall, ${pd_cpu} s CPU (median of $pd_runs), peak RSS $((pd_rss / 1024)) MiB, exit $pd_rc"
    rm -f "$d/nca-diff.txt"
    read -r nd_wall nd_rss nd_rc nd_cpu < <(measure "$d/nca-diff" "$NCA_TIMEOUT" \
        "$NCA_VENV/bin/nca" --semantic_diff "$new" --base_np_list "$old" \
        --pod_list "$cluster" --ns_list "$cluster" \
        --base_pod_list "$cluster" --base_ns_list "$cluster" \
        --output_format txt_no_fw_rules --output_endpoints pods --file_out "$d/nca-diff.txt")
    echo "nca semantic diff: ${nd_wall} s wall, ${nd_cpu} s CPU, peak RSS $((nd_rss / 1024)) MiB, exit $nd_rc"
    diff_cmp="not compared"
    # nca exits 1 when the configurations differ.
    if [[ "$pd_rc" == 0 && ( "$nd_rc" == 0 || "$nd_rc" == 1 ) ]]; then
        "$py" bench/nca/compare.py diff --cluster "$cluster" --policies "$old" --policies "$new" \
            --polc "$d/polc-diff.out" --nca "$d/nca-diff.txt" --json "$d/compare-diff.json" \
            | tee "$d/compare-diff.txt"
        diff_cmp="$d/compare-diff.json"
    fi

    [[ $first == 1 ]] || echo "," >> "$results"
    first=0
    cat >> "$results" <<EOF
{"pods": $n, "stats": $(cat "$d/stats.json"), "commit": "$commit",
 "load": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "graph": {"polc_s": $pg_wall, "polc_cpu_s": $pg_cpu, "polc_rss_kib": $pg_rss, "polc_exit": $pg_rc,
           "polc_runs": $pg_runs, "nca_s": $ng_wall, "nca_cpu_s": $ng_cpu, "nca_rss_kib": $ng_rss,
           "nca_exit": $ng_rc, "compare": "$graph_cmp"},
 "diff": {"polc_s": $pd_wall, "polc_cpu_s": $pd_cpu, "polc_rss_kib": $pd_rss, "polc_exit": $pd_rc,
          "polc_runs": $pd_runs, "nca_s": $nd_wall, "nca_cpu_s": $nd_cpu, "nca_rss_kib": $nd_rss,
          "nca_exit": $nd_rc, "compare": "$diff_cmp"}}
EOF
done
echo "]" >> "$results"

"$py" bench/nca/compare.py report "$results" | tee "$BENCH_DIR/results.md"
