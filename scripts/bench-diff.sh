#!/usr/bin/env bash
# One-policy diff benchmark at our users' scale: `polc diff OLD NEW` (symbolic, no inventory)
# on the generated 3,000-CNP / 200-CCNP / 500-CIDR-group policy set against copies of it with
# one policy changed in one way each (a port, an added or removed item, a removed or new
# policy, HTTP and DNS rules, a clusterwide deny, a CIDR group, a change that changes no
# flow). Reports, per change, the median and spread of the wall time over RUNS runs, the
# classes found and whether any question was left undecided.
#
# Usage: scripts/bench-diff.sh
# Environment: RUNS (default 5) timed runs per change, after one untimed warm-up run.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS="${RUNS:-5}"
work="$(mktemp -d "${TMPDIR:-/tmp}/polc-bench-diff.XXXXXX")"
[[ -n "${KEEP:-}" ]] || trap 'rm -rf "$work"' EXIT

echo "== build (release)"
cargo build --release --locked -p polc
polc="${CARGO_TARGET_DIR:-target}/release/polc"

echo "== generate the users'-scale cluster"
"$polc" gen -o "$work/gen" --scale users > /dev/null
old="$work/gen/policies"

echo "== changes"
python3 - "$old" "$work/changes" <<'PY'
import os, shutil, sys

old, out = sys.argv[1], sys.argv[2]
os.makedirs(out)

def docs(name):
    return open(os.path.join(old, name)).read().split("\n---\n")

def write(change, name, parts, extra=None):
    """A copy of OLD with file `name` replaced by `parts` joined back."""
    d = os.path.join(out, change)
    shutil.copytree(old, d)
    if parts is None:
        os.remove(os.path.join(d, name))
    else:
        open(os.path.join(d, name), "w").write("\n---\n".join(parts))
    if extra:
        open(os.path.join(d, extra[0]), "w").write(extra[1])

def edit(change, name, pick, fn):
    """Applies `fn` to the first document of `name` that `pick` accepts."""
    parts = docs(name)
    for i, p in enumerate(parts):
        if "kind:" in p and pick(p):
            new = fn(p)
            assert new != p, change
            parts[i] = new
            write(change, name, parts)
            return
    raise SystemExit(f"bench-diff: no document for the change `{change}`")

def cnp(p):
    return "kind: CiliumNetworkPolicy" in p

edit("port", "cnp-000.yaml", lambda p: cnp(p) and 'port: "8080"' in p,
     lambda p: p.replace('port: "8080"', 'port: "8081"', 1))
edit("ingress-item-added", "cnp-003.yaml", lambda p: cnp(p) and "\n  ingress:\n" in p,
     lambda p: p.replace("\n  ingress:\n", "\n  ingress:\n"
                         "  - fromEntities: [world]\n"
                         "    toPorts: [{ports: [{port: '9999', protocol: TCP}]}]\n", 1))
edit("egress-deny-added", "cnp-004.yaml", lambda p: cnp(p) and "\n  egress:\n" in p,
     lambda p: p.replace("\n  egress:\n", "\n  egressDeny:\n"
                         "  - toCIDR: [198.51.100.0/24]\n  egress:\n", 1))
edit("http-method", "cnp-006.yaml", lambda p: cnp(p) and "method: GET" in p,
     lambda p: p.replace("method: GET", "method: HEAD", 1))
edit("no-flow-changes", "cnp-005.yaml", lambda p: cnp(p) and "\n  ingress:\n  - " in p,
     # The first ingress item written twice: the same flows.
     lambda p: p.replace("\n  ingress:\n", "\n  ingress:\n" + p.split("\n  ingress:\n", 1)[1]
                         .split("\n  egress", 1)[0].split("\n  - ", 1)[0] + "\n", 1))
edit("ccnp-deny-cidr", "ccnp.yaml", lambda p: "name: deny-cloud-metadata" in p,
     lambda p: p.replace("169.254.169.254/32", "169.254.169.0/24", 1))
edit("ccnp-dns-pattern", "ccnp.yaml", lambda p: "name: allow-kube-dns" in p,
     lambda p: p.replace('matchPattern: "*"', 'matchPattern: "*.svc.cluster.local"', 1))
edit("cidr-group", "cidrgroups.yaml", lambda p: "externalCIDRs" in p,
     lambda p: p.replace("  externalCIDRs:\n", "  externalCIDRs:\n  - 192.0.2.0/24\n", 1))
parts = docs("cnp-010.yaml")
victim = next(i for i, p in enumerate(parts) if cnp(p))
write("policy-removed", "cnp-010.yaml", parts[:victim] + parts[victim + 1:])
ns = next(l.split(":", 1)[1].strip() for l in docs("cnp-011.yaml")[1].splitlines()
          if l.strip().startswith("namespace:"))
write("policy-added", "cnp-011.yaml", docs("cnp-011.yaml"), ("bench-new.yaml", f"""\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: polc-bench-lockdown, namespace: {ns}}}
spec:
  endpointSelector: {{}}
  egress:
  - toEndpoints: [{{}}]
"""))
PY

[[ -n "${KEEP:-}" ]] && echo "kept: $work"
printf '%-20s %9s %9s %9s %8s %8s %8s\n' change median best worst widened narrowed unknown
for dir in "$work"/changes/*/; do
    change="$(basename "$dir")"
    "$polc" diff "$old" "$dir" --format json > "$work/out.json" || true
    : > "$work/times.txt"
    for _ in $(seq "$RUNS"); do
        start="$(date +%s%N)"
        "$polc" diff "$old" "$dir" --format json > /dev/null || true
        end="$(date +%s%N)"
        echo $(((end - start) / 1000000)) >> "$work/times.txt"
    done
    python3 - "$change" "$work/times.txt" "$work/out.json" <<'PY'
import json, statistics, sys
change, times, out = sys.argv[1], sys.argv[2], sys.argv[3]
t = sorted(int(x) / 1000 for x in open(times))
d = json.load(open(out))
print(f"{change:<20} {statistics.median(t):8.2f}s {t[0]:8.2f}s {t[-1]:8.2f}s "
      f"{d['widened']:>8} {d['narrowed']:>8} {len(d['unknown']):>8}")
PY
done
