#!/usr/bin/env python3
"""Small cases that pin down where polc and nca part, each with the answer the Kubernetes
NetworkPolicy API reference gives (or says is up to the implementation) and, where it
differs, the answer Cilium gives.

  probes.py --polc PATH --nca PATH [--out DIR]

For every probe: one cluster, one policy file, and a few flows. polc is asked with
`polc explain --format json`, nca with `nca --connectivity ... --output_format
txt_no_fw_rules` (an nca that rejects the input is reported as such). Prints one line per
flow: the expected answers, polc's, nca's. A last probe checks `polc graph` against
`polc explain` for host traffic (nca has no notion of a node).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

NS = """
- apiVersion: v1
  kind: Namespace
  metadata: {{name: {name}, labels: {{kubernetes.io/metadata.name: {name}{extra}}}}}"""
NODE = """
- apiVersion: v1
  kind: Node
  metadata: {{name: {name}}}
  status: {{addresses: [{{type: InternalIP, address: {ip}}}]}}"""
POD = """
- apiVersion: v1
  kind: Pod
  metadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}
  spec: {{nodeName: {node}, hostNetwork: {hostnet}, containers: [{{name: c, image: x, ports: [{ports}]}}]}}
  status: {{phase: {phase}, podIP: {ip}}}"""


def pod(name, ns, labels, ip, node="node-a", ports="", hostnet="false", phase="Running"):
    return POD.format(name=name, ns=ns, labels=labels, ip=ip, node=node, ports=ports,
                      hostnet=hostnet, phase=phase)


def cluster(*items, nodes=(("node-a", "172.18.0.2"), ("node-b", "172.18.0.3"))):
    body = "".join(NODE.format(name=n, ip=ip) for n, ip in nodes) + "".join(items)
    return "apiVersion: v1\nkind: List\nitems:" + body + "\n"


HTTP80 = "{name: http, containerPort: 80, protocol: TCP}"
HTTP8080 = "{name: http, containerPort: 8080, protocol: TCP}"

# (name, what it shows, cluster, policies, flows); a flow is
# (src, dst, proto, port, kubernetes answer, cilium answer or None when it is the same).
PROBES = [
    ("policytypes-order",
     "`policyTypes: [Egress, Ingress]` is valid Kubernetes (a list, any order)",
     cluster(NS.format(name="shop", extra=""),
             pod("web", "shop", "app: web", "10.244.0.2"),
             pod("client", "shop", "app: client", "10.244.0.3")),
     """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress, Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 80}]}]
""",
     [("shop/client", "shop/web", "tcp", 80, "allow", None),
      ("shop/client", "shop/web", "tcp", 81, "deny", None)]),

    ("empty-label-value-namespace",
     "namespaceSelector `matchLabels: {env: \"\"}` selects namespaces whose `env` label is "
     "empty; a namespace without `env` is not selected",
     cluster(NS.format(name="shop", extra=""), NS.format(name="dev", extra=""),
             NS.format(name="ci", extra=", env: \"\""),
             pod("web", "shop", "app: web", "10.244.0.2"),
             pod("tool", "dev", "app: tool", "10.244.0.3"),
             pod("runner", "ci", "app: runner", "10.244.0.4")),
     """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: [{from: [{namespaceSelector: {matchLabels: {env: ""}}}]}]
""",
     [("dev/tool", "shop/web", "tcp", 80, "deny", None),
      ("ci/runner", "shop/web", "tcp", 80, "allow", None)]),

    ("hostnetwork-pod",
     "a policy that selects a hostNetwork pod: Kubernetes leaves this to the plugin; in Cilium "
     "the pod is its node's host, which a NetworkPolicy neither selects nor isolates",
     cluster(NS.format(name="mon", extra=""),
             pod("agent", "mon", "app: agent", "172.18.0.2", hostnet="true"),
             pod("web", "mon", "app: web", "10.244.0.2", node="node-b")),
     """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: isolate-agent, namespace: mon}
spec:
  podSelector: {matchLabels: {app: agent}}
  policyTypes: [Ingress, Egress]
""",
     [("mon/web", "mon/agent", "tcp", 9100, "plugin-defined", "allow"),
      ("mon/agent", "mon/web", "tcp", 80, "plugin-defined", "allow")]),

    ("egress-named-port-missing-on-destination",
     "egress to a named port: Kubernetes resolves the name on the destination pod; Cilium "
     "(≤ 1.19) resolves it across all pods of the cluster",
     cluster(NS.format(name="shop", extra=""),
             pod("client", "shop", "app: client", "10.244.0.2"),
             pod("web", "shop", "app: web", "10.244.0.3", ports=HTTP80),
             pod("db", "shop", "app: db", "10.244.0.4")),
     """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client, namespace: shop}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{ports: [{port: http}]}]
""",
     [("shop/client", "shop/web", "tcp", 80, "allow", None),
      ("shop/client", "shop/db", "tcp", 80, "deny", "allow")]),

    ("egress-named-port-ambiguous",
     "egress to a named port whose name has two numbers in the cluster: Kubernetes resolves "
     "per destination pod; Cilium ≤ 1.19 finds the name ambiguous (ErrDuplicateNamedPorts) and "
     "skips the port entry, so nothing is allowed through it",
     cluster(NS.format(name="shop", extra=""),
             pod("client", "shop", "app: client", "10.244.0.2"),
             pod("web", "shop", "app: web", "10.244.0.3", ports=HTTP80),
             pod("api", "shop", "app: api", "10.244.0.4", ports=HTTP8080)),
     """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client, namespace: shop}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: http}]}]
""",
     [("shop/client", "shop/web", "tcp", 80, "allow", "deny"),
      ("shop/client", "shop/web", "tcp", 8080, "deny", None)]),

    ("ingress-section-without-ingress-type",
     "an `ingress` section with `policyTypes: [Egress]` is accepted by the API server and has "
     "no effect in Kubernetes; Cilium's ParseNetworkPolicy converts the ingress rules whatever "
     "policyTypes says, so the pod's ingress is enforced",
     cluster(NS.format(name="shop", extra=""),
             pod("web", "shop", "app: web", "10.244.0.2"),
             pod("client", "shop", "app: client", "10.244.0.3")),
     """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 80}]}]
  egress: [{ports: [{port: 53, protocol: UDP}]}]
""",
     [("shop/client", "shop/web", "tcp", 81, "allow", "deny"),
      ("shop/web", "shop/client", "tcp", 80, "deny", None)]),

    ("finished-pod",
     "a pod in phase Succeeded has no network endpoint; only running pods take part",
     cluster(NS.format(name="shop", extra=""),
             pod("web", "shop", "app: web", "10.244.0.2"),
             pod("job", "shop", "app: job", "10.244.0.3", phase="Succeeded")),
     """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
""",
     [("shop/web", "shop/job", "tcp", 80, "no endpoint", None)]),
]


# `polc graph` against `polc explain` where a host edge depends on the pod's node: two pods of
# one identity on two nodes, ingress default-deny. Cilium admits each pod's own host only.
HOST_GRAPH = (
    "graph-host-edge",
    "`polc graph` judges `host/NODE -> identity` for one pod of the identity; the answer "
    "depends on whether the pod runs on NODE",
    cluster(NS.format(name="shop", extra=""),
            pod("web-1", "shop", "app: web", "10.244.0.2", node="node-a"),
            pod("web-2", "shop", "app: web", "10.244.1.2", node="node-b")),
    """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress, namespace: shop}
spec: {podSelector: {}, policyTypes: [Ingress]}
""")


def graph_host_probe(polc, base):
    name, what, cl, pol = HOST_GRAPH
    d = os.path.join(base, name)
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/cluster.yaml", "w") as f:
        f.write(cl)
    with open(f"{d}/policies.yaml", "w") as f:
        f.write(pol)
    r = subprocess.run([polc, "graph", "--policies", f"{d}/policies.yaml", "--inventory",
                        f"{d}/cluster.yaml", "--format", "json"], capture_output=True, text=True)
    g = json.loads(r.stdout)
    members = {n["id"]: n["members"] for n in g["nodes"]}
    edge = {}
    for e in g["edges"]:
        for a in members[e["from"]]:
            for b in members[e["to"]]:
                edge[(a, b)] = e["allowed"]
    print(f"## {name}: {what}")
    rows = []
    for node in ("node-a", "node-b"):
        label = edge.get((f"host/{node}", "shop/{app=web}"), "nothing")
        for p in ("shop/web-1", "shop/web-2"):
            v = run_polc(polc, d, f"host/{node}", p, "tcp", 80)
            cil = "allow" if (node == "node-a") == (p == "shop/web-1") else "deny"
            print(f"   host/{node} -> {p} TCP/80: Cilium {cil}; polc explain {v}; polc graph "
                  f"(host/{node} -> shop/{{app=web}}) {label}")
            rows.append({"probe": name, "flow": f"host/{node} -> {p} TCP/80", "cilium": cil,
                         "polc": v, "polc_graph": label})
    return rows


def run_polc(polc, d, src, dst, proto, port):
    r = subprocess.run([polc, "explain", "--policies", f"{d}/policies.yaml", "--inventory",
                        f"{d}/cluster.yaml", "--from", src, "--to", dst, "--proto", proto,
                        "--port", str(port), "--format", "json"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        msg = (r.stderr.strip().splitlines() or ["?"])[-1]
        if "Q0401" in msg:
            return "no endpoint"
        return "error: " + msg[:100]
    return json.loads(r.stdout)["verdict"].lower()


def run_nca(nca, d):
    out = f"{d}/nca.txt"
    if os.path.exists(out):
        os.remove(out)
    r = subprocess.run([nca, "--connectivity", f"{d}/policies.yaml", "--pod_list",
                        f"{d}/cluster.yaml", "--ns_list", f"{d}/cluster.yaml", "--output_format",
                        "txt_no_fw_rules", "--output_endpoints", "pods", "--file_out", out],
                       capture_output=True, text=True)
    if not os.path.exists(out):
        msg = [l for l in (r.stdout + r.stderr).splitlines() if "rror" in l or "invalid" in l]
        return None, (msg or ["no output"])[0][:160]
    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from compare import nca_side, read_nca_lines  # noqa: E402
    return nca_side((s, t, c) for _, s, t, c in read_nca_lines(out)), None


def nca_verdict(side, err, src, dst, proto, port):
    if side is None:
        return "rejects input"
    pn = {"tcp": 6, "udp": 17, "sctp": 132}[proto]
    c = side.pp.get((src, dst))
    if c is None:
        return "deny"
    return "allow" if any(a <= port <= b for a, b in c.m.get(pn, ())) else "deny"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--polc", required=True)
    ap.add_argument("--nca", required=True)
    ap.add_argument("--out")
    a = ap.parse_args()
    base = a.out or tempfile.mkdtemp(prefix="nca-probes.")
    rows = []
    for name, what, cl, pol, flows in PROBES:
        d = os.path.join(base, name)
        os.makedirs(d, exist_ok=True)
        with open(f"{d}/cluster.yaml", "w") as f:
            f.write(cl)
        with open(f"{d}/policies.yaml", "w") as f:
            f.write(pol)
        side, err = run_nca(a.nca, d)
        print(f"## {name}: {what}")
        if err:
            print(f"   nca: {err}")
        for src, dst, proto, port, k8s, cilium in flows:
            p = run_polc(a.polc, d, src, dst, proto, port)
            n = nca_verdict(side, err, src, dst, proto, port)
            cil = cilium or k8s
            print(f"   {src} -> {dst} {proto.upper()}/{port}: Kubernetes {k8s}, Cilium {cil}; "
                  f"polc {p}, nca {n}")
            rows.append({"probe": name, "flow": f"{src} -> {dst} {proto.upper()}/{port}",
                         "kubernetes": k8s, "cilium": cil, "polc": p, "nca": n,
                         "nca_error": err})
    rows += graph_host_probe(a.polc, base)
    with open(os.path.join(base, "probes.json"), "w") as f:
        json.dump(rows, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
