#!/usr/bin/env python3
"""Deterministic generator of Kubernetes-NetworkPolicy-only clusters for the polc/nca benchmark.

Writes, under OUT:
  cluster.yaml        one `kind: List` with Namespaces, Nodes and Pods (what
                      `kubectl get ns,nodes,pods -A -o yaml` prints), read by both tools
  old/policies.yaml   the NetworkPolicies (networking.k8s.io/v1), one document each
  new/policies.yaml   the same policies after a change: one policy widened, one narrowed
  change.json         what the change is, for the report
  stats.json          counts of objects and of the policy features used

Usage: gen_cluster.py --pods N --out DIR [--seed S]

The output depends only on N and the seed (random.Random(seed) and sorted iteration
everywhere). Python 3.11, PyYAML.
"""

import argparse
import json
import os
import random
import re
import sys

import yaml

APP_NAMES = [
    "web", "api", "auth", "cart", "orders", "payments", "search", "catalog", "redis",
    "postgres", "kafka", "worker", "metrics", "gateway", "inventory", "shipping", "email",
    "recommend", "ads", "billing", "profile", "session", "notify", "media", "reports",
]
TIERS = ["frontend", "backend", "db", "cache", "worker"]
TEAMS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
ENVS = ["prod", "staging", "dev"]
HEX = "0123456789abcdef"
ALNUM = "bcdfghjklmnpqrstvwxz2456789"

# Named container ports per tier. The same name maps to different numbers on different
# workloads (as in real clusters), which is what makes named-port resolution matter.
PORTS_BY_TIER = {
    "frontend": lambda r: [("http", "TCP", r.choice([80, 8080, 3000])), ("metrics", "TCP", 9090)],
    "backend": lambda r: [("http", "TCP", r.choice([8080, 8000])), ("grpc", "TCP", 50051),
                          ("metrics", "TCP", 9090)],
    "db": lambda r: [r.choice([("postgres", "TCP", 5432), ("mysql", "TCP", 3306)]),
                     ("metrics", "TCP", 9187)],
    "cache": lambda r: [("redis", "TCP", 6379), ("metrics", "TCP", 9121)],
    "worker": lambda r: r.choice([
        [("metrics", "TCP", 9100)],
        [("metrics", "TCP", 9100), ("statsd", "UDP", 8125)],
        [("diameter", "SCTP", 3868), ("metrics", "TCP", 9100)],
    ]),
}


def rand_hex(r, n):
    return "".join(r.choice(HEX) for _ in range(n))


def rand_suffix(r, n=5):
    return "".join(r.choice(ALNUM) for _ in range(n))


class Gen:
    def __init__(self, pods, seed):
        self.r = random.Random(seed)
        self.n_pods = pods
        self.namespaces = []  # dicts: name, labels
        self.nodes = []
        self.workloads = []  # dicts: ns, app, tier, kind, replicas, labels, ports, sa
        self.pods = []
        self.policies = []
        self.features = {}

    def feature(self, name):
        self.features[name] = self.features.get(name, 0) + 1

    # ---- topology -------------------------------------------------------------------
    def topology(self):
        r = self.r
        n_nodes = max(3, min(10, self.n_pods // 100))
        for i in range(n_nodes):
            labels = {
                "kubernetes.io/hostname": f"node-{i}",
                "kubernetes.io/os": "linux",
                "topology.kubernetes.io/zone": f"zone-{i % 3}",
            }
            if i == 0:
                labels["node-role.kubernetes.io/control-plane"] = ""
            self.nodes.append({"name": f"node-{i}", "labels": labels, "ip": f"172.18.0.{10 + i}"})

        # Namespaces: kube-system, monitoring, and application namespaces.
        n_app_ns = max(4, self.n_pods // 40)
        self.namespaces.append({"name": "kube-system", "labels": {}})
        self.namespaces.append({"name": "monitoring", "labels": {"team": "platform",
                                                                 "purpose": "monitoring"}})
        for i in range(n_app_ns):
            team = TEAMS[i % len(TEAMS)]
            env = ENVS[r.randrange(len(ENVS))]
            name = f"{team}-{env}-{i}"
            labels = {"team": team, "env": env}
            if r.random() < 0.3:
                labels["compliance"] = r.choice(["pci", "hipaa"])
            self.namespaces.append({"name": name, "labels": labels})
        for ns in self.namespaces:
            ns["labels"]["kubernetes.io/metadata.name"] = ns["name"]

        # System workloads.
        self.add_workload("kube-system", "coredns", "system", "Deployment", 2,
                          {"k8s-app": "kube-dns"},
                          [("dns", "UDP", 53), ("dns-tcp", "TCP", 53), ("metrics", "TCP", 9153)])
        self.add_workload("monitoring", "prometheus", "system", "StatefulSet", 2,
                          {"app": "prometheus", "app.kubernetes.io/name": "prometheus"},
                          [("web", "TCP", 9090)])
        self.add_workload("monitoring", "grafana", "frontend", "Deployment", 1,
                          {"app": "grafana", "app.kubernetes.io/name": "grafana"},
                          [("http", "TCP", 3000)])

        # Application workloads until the pod budget is used.
        app_ns = [ns["name"] for ns in self.namespaces[2:]]
        # Each namespace runs its own mix of applications (and so of tiers and ports).
        order = {ns: r.sample(APP_NAMES, len(APP_NAMES)) for ns in app_ns}
        budget = self.n_pods - sum(w["replicas"] for w in self.workloads)
        k = 0
        while budget > 0:
            ns = app_ns[k % len(app_ns)]
            idx = k // len(app_ns)
            k += 1
            base = order[ns][idx % len(APP_NAMES)]
            app = base if idx < len(APP_NAMES) else f"{base}{idx // len(APP_NAMES)}"
            tier = self.tier_for(base)
            kind = "StatefulSet" if tier in ("db", "cache") and r.random() < 0.7 else "Deployment"
            replicas = min(budget, r.choice([1, 2, 2, 3, 3, 4, 5, 6, 8]))
            budget -= replicas
            labels = {"app": app, "tier": tier}
            if r.random() < 0.4:
                labels["version"] = r.choice(["v1", "v2"])
            if r.random() < 0.3:
                labels["monitoring"] = "enabled"
            if r.random() < 0.1:
                labels["canary"] = "true"
            if r.random() < 0.3:
                labels["app.kubernetes.io/part-of"] = ns.split("-")[0]
            ports = PORTS_BY_TIER[tier](r)
            self.add_workload(ns, app, tier, kind, replicas, labels, ports)

    @staticmethod
    def tier_for(base):
        if base in ("web", "gateway", "media"):
            return "frontend"
        if base in ("postgres", "kafka", "inventory", "billing"):
            return "db"
        if base in ("redis", "session"):
            return "cache"
        if base in ("worker", "email", "notify", "reports", "metrics"):
            return "worker"
        return "backend"

    def add_workload(self, ns, app, tier, kind, replicas, labels, ports):
        r = self.r
        sa = app if r.random() < 0.5 else "default"
        w = {"ns": ns, "app": app, "tier": tier, "kind": kind, "replicas": replicas,
             "labels": dict(labels), "ports": ports, "sa": sa}
        self.workloads.append(w)
        rs_hash = rand_hex(r, 10)
        rev_hash = f"{app}-{rand_hex(r, 10)}"
        for i in range(replicas):
            pl = dict(labels)
            if kind == "Deployment":
                name = f"{app}-{rs_hash}-{rand_suffix(r)}"
                pl["pod-template-hash"] = rs_hash
                owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                         "name": f"{app}-{rs_hash}", "controller": True}
            else:
                name = f"{app}-{i}"
                pl["controller-revision-hash"] = rev_hash
                pl["statefulset.kubernetes.io/pod-name"] = name
                owner = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": app,
                         "controller": True}
            node = self.nodes[r.randrange(len(self.nodes))]
            self.pods.append({"ns": ns, "name": name, "labels": pl, "owner": owner,
                              "node": node["name"], "host_ip": node["ip"], "ports": ports,
                              "sa": sa, "ip": None})

    def assign_ips(self):
        # 10.244.<node>.<n> style, deterministic by pod order.
        for i, p in enumerate(self.pods):
            p["ip"] = f"10.244.{i // 250}.{i % 250 + 2}"

    # ---- policies -------------------------------------------------------------------
    def app_workloads(self, ns):
        return [w for w in self.workloads if w["ns"] == ns and w["tier"] != "system"]

    def policy(self, ns, name, spec, labels=None):
        meta = {"name": name, "namespace": ns}
        if labels:
            meta["labels"] = labels
        self.policies.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                              "metadata": meta, "spec": spec})

    def port_entry(self, w, prefer_named=True):
        """A port entry that fits workload w: a named port, a number, or a range."""
        r = self.r
        name, proto, num = r.choice(w["ports"])
        roll = r.random()
        if prefer_named and roll < 0.45:
            self.feature("port-named")
            e = {"port": name}
            if proto != "TCP":
                e["protocol"] = proto
            return e
        if roll < 0.85:
            self.feature("port-number")
            e = {"port": num}
            if proto != "TCP" or r.random() < 0.5:
                e["protocol"] = proto
            if proto == "SCTP":
                self.feature("proto-sctp")
            if proto == "UDP":
                self.feature("proto-udp")
            return e
        self.feature("port-endPort")
        lo = max(1, num - r.choice([0, 5, 10]))
        return {"protocol": proto, "port": lo, "endPort": num + r.choice([0, 10, 100])}

    def selector(self, w, allow_expressions=True):
        r = self.r
        roll = r.random()
        if allow_expressions and roll < 0.2:
            self.feature("matchExpressions-In")
            return {"matchExpressions": [{"key": "app", "operator": "In",
                                          "values": sorted({w["app"], r.choice(APP_NAMES)})}]}
        if allow_expressions and roll < 0.3:
            self.feature("matchExpressions-mixed")
            return {"matchLabels": {"tier": w["tier"]},
                    "matchExpressions": [{"key": "canary", "operator": "DoesNotExist"},
                                         {"key": "version", "operator": "NotIn",
                                          "values": ["v2"]}]}
        self.feature("matchLabels")
        return {"matchLabels": {"app": w["app"]}}

    def ingress_peer(self, ns, target):
        """One `from` peer for an ingress rule to `target`."""
        r = self.r
        roll = r.random()
        same_ns = [w for w in self.app_workloads(ns) if w is not target]
        if roll < 0.35 and same_ns:
            self.feature("peer-podSelector")
            return {"podSelector": self.selector(r.choice(same_ns))}
        if roll < 0.5:
            self.feature("peer-namespaceSelector")
            return {"namespaceSelector": {"matchLabels": {"team": r.choice(TEAMS)}}}
        if roll < 0.7:
            self.feature("peer-namespaceSelector+podSelector")
            other = r.choice([w for w in self.workloads if w["tier"] != "system"])
            nss = r.choice([
                {"matchLabels": {"kubernetes.io/metadata.name": other["ns"]}},
                {"matchLabels": {"env": r.choice(ENVS)}},
                {"matchExpressions": [{"key": "env", "operator": "In",
                                       "values": ["prod", "staging"]}]},
                {"matchExpressions": [{"key": "compliance", "operator": "Exists"}]},
                {},
            ])
            return {"namespaceSelector": nss,
                    "podSelector": {"matchLabels": {"tier": r.choice(["frontend", "backend"])}}}
        if roll < 0.8:
            self.feature("peer-monitoring")
            return {"namespaceSelector": {"matchLabels": {"purpose": "monitoring"}},
                    "podSelector": {"matchLabels": {"app": "prometheus"}}}
        self.feature("peer-ipBlock")
        return {"ipBlock": r.choice([
            {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]},
            {"cidr": "192.168.0.0/16", "except": ["192.168.100.0/24"]},
            {"cidr": "198.51.100.0/24"},
            {"cidr": "100.64.0.0/10", "except": ["100.64.10.0/24", "100.64.11.0/24"]},
        ])}

    def egress_peer(self, ns, src):
        r = self.r
        roll = r.random()
        same_ns = [w for w in self.app_workloads(ns) if w is not src]
        if roll < 0.35 and same_ns:
            self.feature("peer-podSelector")
            dst = r.choice(same_ns)
            return {"podSelector": self.selector(dst)}, dst
        if roll < 0.6:
            self.feature("peer-namespaceSelector+podSelector")
            dst = r.choice([w for w in self.workloads if w["tier"] not in ("system",)])
            return {"namespaceSelector": {"matchLabels": {"team": dst["ns"].split("-")[0]}},
                    "podSelector": {"matchLabels": {"tier": dst["tier"]}}}, dst
        if roll < 0.7:
            self.feature("peer-namespaceSelector")
            return {"namespaceSelector": {"matchLabels": {"env": r.choice(ENVS)}}}, None
        self.feature("peer-ipBlock")
        return {"ipBlock": r.choice([
            {"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]},
            {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]},
            {"cidr": "52.0.0.0/8"},
            {"cidr": "192.168.0.0/16", "except": ["192.168.100.0/24"]},
        ])}, None

    def ingress_rule(self, ns, target):
        r = self.r
        roll = r.random()
        if roll < 0.06:
            self.feature("rule-allow-all")
            return {}
        rule = {"from": [self.ingress_peer(ns, target) for _ in range(r.choice([1, 1, 2]))]}
        if roll < 0.15:
            self.feature("rule-no-ports")
            return rule
        ports = [self.port_entry(target) for _ in range(r.choice([1, 1, 2, 3]))]
        if r.random() < 0.05:
            self.feature("port-protocol-only")
            ports.append({"protocol": "UDP"})
        rule["ports"] = ports
        return rule

    def egress_rule(self, ns, src):
        r = self.r
        roll = r.random()
        if roll < 0.05:
            self.feature("rule-allow-all")
            return {}
        peers = []
        dsts = []
        for _ in range(r.choice([1, 1, 2])):
            p, d = self.egress_peer(ns, src)
            peers.append(p)
            if d:
                dsts.append(d)
        rule = {"to": peers}
        if roll < 0.12:
            self.feature("rule-no-ports")
            return rule
        if dsts and r.random() < 0.8:
            ports = [self.port_entry(d) for d in dsts]
        else:
            ports = [r.choice([
                {"protocol": "TCP", "port": 443},
                {"protocol": "TCP", "port": 8000, "endPort": 8999},
                {"protocol": "UDP", "port": 123},
                {"port": 5432},
            ])]
            self.feature("port-number")
        rule["ports"] = ports
        return rule

    def policies_for(self):
        r = self.r
        # kube-system and monitoring: a couple of fixed policies.
        self.policy("monitoring", "prometheus-ingress", {
            "podSelector": {"matchLabels": {"app": "prometheus"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "grafana"}}}],
                         "ports": [{"port": "web"}]}],
        })
        self.policy("kube-system", "coredns-ingress", {
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53},
                                   {"protocol": "TCP", "port": "metrics"}]}],
        })
        self.feature("port-named")
        for ns in [n["name"] for n in self.namespaces[2:]]:
            apps = self.app_workloads(ns)
            if r.random() < 0.6:
                self.feature("default-deny-ingress")
                self.policy(ns, "default-deny-ingress", {"podSelector": {},
                                                         "policyTypes": ["Ingress"]})
            if r.random() < 0.3:
                self.feature("default-deny-egress")
                self.policy(ns, "default-deny-egress", {"podSelector": {},
                                                        "policyTypes": ["Egress"]})
                self.policy(ns, "allow-dns", {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"namespaceSelector": {"matchLabels": {
                                            "kubernetes.io/metadata.name": "kube-system"}},
                                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                                "ports": [{"protocol": "UDP", "port": 53},
                                          {"protocol": "TCP", "port": 53}]}],
                })
            if r.random() < 0.1:
                self.feature("allow-all-ingress-namespace")
                self.policy(ns, "allow-same-namespace", {
                    "podSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn",
                                                          "values": ["db"]}]},
                    "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"podSelector": {}}]}],
                })
            for w in apps:
                if r.random() < 0.4:
                    n_rules = r.choice([1, 1, 2, 3])
                    spec = {"podSelector": self.selector(w),
                            "ingress": [self.ingress_rule(ns, w) for _ in range(n_rules)]}
                    if r.random() < 0.9:
                        spec["policyTypes"] = ["Ingress"]
                    else:
                        self.feature("policyTypes-missing")
                    self.policy(ns, f"{w['app']}-ingress", spec)
                if r.random() < 0.15:
                    n_rules = r.choice([1, 1, 2])
                    spec = {"podSelector": {"matchLabels": {"app": w["app"]}},
                            "egress": [self.egress_rule(ns, w) for _ in range(n_rules)]}
                    roll = r.random()
                    if roll < 0.75:
                        spec["policyTypes"] = ["Egress"]
                    elif roll < 0.9:
                        self.feature("policyTypes-both")
                        spec["policyTypes"] = ["Ingress", "Egress"]
                    else:
                        # No policyTypes with an egress section: Ingress and Egress.
                        self.feature("policyTypes-missing")
                    self.policy(ns, f"{w['app']}-egress", spec)

    def change(self):
        """The new policy set: one ingress policy widened (a port range added to its first
        rule, or a rule with ports dropped to no ports), one narrowed (its last rule removed,
        or a peer dropped)."""
        r = random.Random(f"change-{self.n_pods}")
        new = json.loads(json.dumps(self.policies))
        cand = [i for i, p in enumerate(new)
                if p["metadata"]["name"].endswith("-ingress")
                and p["spec"].get("ingress") and all(x for x in p["spec"]["ingress"])
                and p["metadata"]["namespace"] not in ("kube-system", "monitoring")]
        widen, narrow = r.sample(cand, 2)
        desc = []
        pw = new[widen]
        rule = pw["spec"]["ingress"][0]
        rule.setdefault("ports", [])
        if rule["ports"]:
            rule["ports"].append({"protocol": "TCP", "port": 8000, "endPort": 8100})
            desc.append({"policy": f"{pw['metadata']['namespace']}/{pw['metadata']['name']}",
                         "change": "widened: TCP 8000-8100 added to the first ingress rule"})
        else:
            rule["from"].append({"namespaceSelector": {"matchLabels": {"env": "prod"}}})
            desc.append({"policy": f"{pw['metadata']['namespace']}/{pw['metadata']['name']}",
                         "change": "widened: a namespaceSelector env=prod peer added"})
        pn = new[narrow]
        rules = pn["spec"]["ingress"]
        if len(rules) > 1:
            rules.pop()
            what = "narrowed: its last ingress rule removed"
        elif len(rules[0].get("from", [])) > 1:
            rules[0]["from"].pop()
            what = "narrowed: the last peer of its ingress rule removed"
        else:
            rules[0]["ports"] = [{"protocol": "TCP", "port": 1}]
            what = "narrowed: its only rule restricted to TCP port 1"
        desc.append({"policy": f"{pn['metadata']['namespace']}/{pn['metadata']['name']}",
                     "change": what})
        return new, desc

    # ---- output ---------------------------------------------------------------------
    def inventory(self):
        items = []
        for ns in self.namespaces:
            items.append({"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": ns["name"], "labels": ns["labels"]},
                          "status": {"phase": "Active"}})
        for n in self.nodes:
            items.append({"apiVersion": "v1", "kind": "Node",
                          "metadata": {"name": n["name"], "labels": n["labels"]},
                          "status": {"addresses": [{"type": "InternalIP", "address": n["ip"]},
                                                   {"type": "Hostname", "address": n["name"]}]}})
        for p in self.pods:
            containers = [{
                "name": "main",
                "image": f"registry.example/{p['labels'].get('app', 'app')}:1.0",
                "ports": [{"name": name, "containerPort": num, "protocol": proto}
                          for name, proto, num in p["ports"]],
            }]
            items.append({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": p["name"], "namespace": p["ns"], "labels": p["labels"],
                             "ownerReferences": [p["owner"]]},
                "spec": {"nodeName": p["node"], "serviceAccountName": p["sa"],
                         "containers": containers},
                "status": {"phase": "Running", "hostIP": p["host_ip"], "podIP": p["ip"],
                           "podIPs": [{"ip": p["ip"]}]},
            })
        return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
                "items": items}


# Plain scalars that a YAML 1.2 reader (polc, Go's YAML libraries behind kubectl) takes for a
# number, a boolean or null, such as the pod-template-hash `269e283442`. PyYAML follows YAML 1.1
# and would leave them unquoted.
YAML12_NON_STRING = re.compile(
    r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|0x[0-9a-fA-F]+|0o[0-7]+"
    r"|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)|true|True|TRUE|false|False|FALSE"
    r"|null|Null|NULL|~|y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF")


class Dumper(yaml.SafeDumper):
    pass


def _str(dumper, value):
    style = '"' if YAML12_NON_STRING.fullmatch(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _str)


def dump_all(path, docs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        yaml.dump_all(docs, f, Dumper=Dumper, sort_keys=False, default_flow_style=False,
                      width=1000)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=20261126)
    a = ap.parse_args()
    g = Gen(a.pods, a.seed + a.pods)
    g.topology()
    g.assign_ips()
    g.policies_for()
    new, desc = g.change()
    os.makedirs(a.out, exist_ok=True)
    dump_all(os.path.join(a.out, "cluster.yaml"), [g.inventory()])
    dump_all(os.path.join(a.out, "old", "policies.yaml"), g.policies)
    dump_all(os.path.join(a.out, "new", "policies.yaml"), new)
    with open(os.path.join(a.out, "change.json"), "w") as f:
        json.dump(desc, f, indent=2)
        f.write("\n")
    stats = {"pods": len(g.pods), "namespaces": len(g.namespaces), "nodes": len(g.nodes),
             "workloads": len(g.workloads), "policies": len(g.policies),
             "features": dict(sorted(g.features.items()))}
    with open(os.path.join(a.out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=2)
        f.write("\n")
    print(json.dumps({k: v for k, v in stats.items() if k != "features"}), file=sys.stderr)


if __name__ == "__main__":
    main()
