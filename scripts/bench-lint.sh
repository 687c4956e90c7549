#!/usr/bin/env bash
# Lint throughput benchmark: end-to-end `polc lint` on 5,000 generated policies (wall time,
# files/s, MB/s, peak RSS), then the criterion benchmark of `polc_compiler::lint`.
#
# Usage: scripts/bench-lint.sh [--skip-criterion]
# Environment: FILES (default 5000) policies to generate, RUNS (default 5) timed CLI runs.
# The CLI numbers are the median and best wall time and the largest peak RSS over RUNS runs,
# after one untimed run that warms the page cache. MB are 10^6 bytes, MiB 2^20 bytes.
set -euo pipefail

cd "$(dirname "$0")/.."
FILES="${FILES:-5000}"
RUNS="${RUNS:-5}"
criterion=1
case "${1:-}" in
    --skip-criterion) criterion=0 ;;
    "") ;;
    *) echo "usage: $0 [--skip-criterion]" >&2; exit 2 ;;
esac

work="$(mktemp -d "${TMPDIR:-/tmp}/polc-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT
corpus="$work/policies"

echo "== build (release)"
cargo build --release --locked -p polc -p polc-compiler --example gen_policies
polc=./target/release/polc

echo "== generate $FILES policies"
./target/release/examples/gen_policies "$corpus" "$FILES"
bytes="$(find "$corpus" -type f -name '*.yaml' -printf '%s\n' | awk '{s += $1} END {print s}')"

# The corpus must lint clean, or the run would time the error path.
"$polc" lint "$corpus" --format json > "$work/out.json"
python3 - "$work/out.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))["summary"]
print("summary:", summary)
if summary["errors"] or summary["warnings"]:
    sys.exit("bench-lint: the generated corpus has findings; fix the generator or the check")
PY

# Peak RSS: /usr/bin/time when present, otherwise getrusage through python.
measure() { # measure OUTFILE: runs polc once, writes "wall_seconds max_rss_kib" to OUTFILE
    local start end rss
    if [[ -x /usr/bin/time ]]; then
        start="$(date +%s%N)"
        /usr/bin/time -v -o "$work/time.txt" "$polc" lint "$corpus" --format json > /dev/null
        end="$(date +%s%N)"
        rss="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")"
        awk -v s="$start" -v e="$end" -v r="$rss" 'BEGIN {printf "%.4f %d\n", (e - s) / 1e9, r}' > "$1"
    else
        python3 - "$polc" "$corpus" > "$1" <<'PY'
import resource, subprocess, sys, time
t = time.perf_counter()
subprocess.run([sys.argv[1], "lint", sys.argv[2], "--format", "json"], stdout=subprocess.DEVNULL, check=True)
wall = time.perf_counter() - t
print(f"{wall:.4f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
PY
    fi
}

echo "== polc lint, end to end ($RUNS runs after one warm-up)"
"$polc" lint "$corpus" --format json > /dev/null
: > "$work/runs.txt"
for i in $(seq "$RUNS"); do
    measure "$work/run.txt"
    cat "$work/run.txt" >> "$work/runs.txt"
    echo "run $i: $(awk '{printf "%.3f s, peak RSS %.1f MiB", $1, $2 / 1024}' "$work/run.txt")"
done
sort -n "$work/runs.txt" | awk -v files="$FILES" -v bytes="$bytes" '
    { wall[NR] = $1; if ($2 > rss) rss = $2 }
    END {
        m = (NR % 2) ? wall[(NR + 1) / 2] : (wall[NR / 2] + wall[NR / 2 + 1]) / 2
        printf "corpus:     %d files, %.2f MB (%d bytes), %.2f KB per file\n", files, bytes / 1e6, bytes, bytes / files / 1e3
        printf "wall time:  %.3f s median, %.3f s best (%d runs)\n", m, wall[1], NR
        printf "files/s:    %.0f median, %.0f best\n", files / m, files / wall[1]
        printf "MB/s:       %.2f median, %.2f best\n", bytes / 1e6 / m, bytes / 1e6 / wall[1]
        printf "peak RSS:   %.1f MiB\n", rss / 1024
    }'

if [[ "$criterion" == 1 ]]; then
    echo "== criterion: polc_compiler::lint on the same $FILES-policy corpus, in memory"
    cargo bench --locked -p polc-compiler --bench lint
fi
