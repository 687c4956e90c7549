#!/usr/bin/env python3
"""Compares polc's and nca's answers on the same cluster, as sets of
(source, destination, protocol, port range).

  compare.py graph --cluster C --policies P --polc polc-graph.json --nca nca-conn.txt
  compare.py diff  --cluster C --policies OLD --policies NEW --polc polc-diff.json \
                   --nca nca-diff.txt
  (--json OUT writes the counts and examples as JSON as well)
  compare.py report RESULTS_JSON   (Markdown tables from scripts/bench-nca.sh's results)

Ends:
- pods: nca names pods (`ns/name`); polc names identities (`ns/{k=v,...}`: the pod's
  identity-relevant labels). A pod is mapped to the polc identity whose labels are the
  largest subset of the pod's labels in its namespace. nca keeps at most 2 pods per
  (namespace, workload, labels) group and drops the rest (they are indistinguishable by
  any selector); the comparison runs over the pods nca kept.
- outside addresses (IPv4): the policies' ipBlock prefixes cut the address space into
  elementary intervals; each is compared once, polc's answer being that of its
  `world (IP)` end with the same set of containing prefixes, nca's that of the IP range
  that contains the interval.
- node IPs: polc has `host/NODE` ends (Cilium's host and remote-node identities), nca
  treats a node IP as a plain address; compared separately.

Protocols compared: TCP, UDP and SCTP with exact port sets, and ICMP (any type allowed or
not). nca's "All connections" covers every IP protocol; polc names only TCP, UDP, SCTP,
ICMP and ICMPv6, so the other IP protocols are left out.
"""

import argparse
import ipaddress
import json
import re
import sys
from collections import defaultdict

import yaml

try:
    from yaml import CSafeLoader as Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as Loader

PROTO_NUM = {"TCP": 6, "UDP": 17, "SCTP": 132, "ICMP": 1, "ICMPV6": 58}
PORT_PROTOS = (6, 17, 132)
COMPARED = (6, 17, 132, 1)
NAME = {6: "TCP", 17: "UDP", 132: "SCTP", 1: "ICMP", 58: "ICMPv6"}
FULL = ((1, 65535),)

# ---- interval sets ------------------------------------------------------------------


def norm(iv):
    out = []
    for a, b in sorted(iv):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return tuple(out)


def iv_union(x, y):
    return norm(list(x) + list(y))


def iv_minus(x, y):
    out = []
    for a, b in x:
        cur = a
        for c, d in y:
            if d < cur or c > b:
                continue
            if c > cur:
                out.append((cur, c - 1))
            cur = max(cur, d + 1)
            if cur > b:
                break
        if cur <= b:
            out.append((cur, b))
    return tuple(out)


def iv_text(x):
    if x == FULL:
        return "all"
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in x)


class Conn:
    """Allowed traffic: protocol number -> port intervals (ICMP: (1, 65535) meaning any)."""

    __slots__ = ("m",)

    def __init__(self, m=None):
        self.m = {k: v for k, v in (m or {}).items() if v}

    @staticmethod
    def all():
        return Conn({p: FULL for p in range(256)})

    def __or__(self, o):
        m = dict(self.m)
        for p, iv in o.m.items():
            m[p] = iv_union(m.get(p, ()), iv)
        return Conn(m)

    def __sub__(self, o):
        return Conn({p: iv_minus(iv, o.m.get(p, ())) for p, iv in self.m.items()})

    def restrict(self):
        return Conn({p: (self.m[p] if p in PORT_PROTOS else FULL)
                     for p in COMPARED if p in self.m})

    def key(self):
        return tuple(sorted(self.restrict().m.items()))

    def __bool__(self):
        return bool(self.m)

    def text(self):
        r = self.restrict().m
        if not r:
            return "nothing"
        return "; ".join(f"{NAME[p]} {iv_text(r[p]) if p in PORT_PROTOS else 'any'}"
                         for p in COMPARED if p in r)


EMPTY = Conn()

# ---- polc ---------------------------------------------------------------------------

_polc_cache = {}


def parse_polc_allowed(s):
    """`TCP 80,443-445; UDP all; ICMP all` -> Conn."""
    if s in _polc_cache:
        return _polc_cache[s]
    m = {}
    for part in filter(None, (x.strip() for x in s.split(";"))):
        proto, _, ports = part.partition(" ")
        p = PROTO_NUM[proto.upper()]
        if p not in PORT_PROTOS:
            m[p] = FULL
            continue
        iv = []
        for r in ports.split(","):
            r = r.strip()
            if r == "all":
                iv.append((1, 65535))
            elif "-" in r:
                a, b = r.split("-")
                iv.append((int(a), int(b)))
            else:
                iv.append((int(r), int(r)))
        m[p] = norm(iv)
    c = Conn(m)
    _polc_cache[s] = c
    return c


def parse_member(s):
    """-> ('pod', ns, frozenset labels) | ('host', node) | ('world', ip)."""
    if s.startswith("world (") and s.endswith(")"):
        return ("world", s[7:-1])
    if s.startswith("host/"):
        return ("host", s[5:])
    ns, _, rest = s.partition("/")
    assert rest.startswith("{") and rest.endswith("}"), s
    body = rest[1:-1]
    labels = frozenset(tuple(kv.split("=", 1)) for kv in body.split(",")) if body else frozenset()
    return ("pod", ns, labels)


# ---- nca ----------------------------------------------------------------------------

_nca_cache = {}


def parse_ports(v):
    v = v.strip()
    if v in ("*", ""):
        return FULL
    iv = []
    for r in v.split(","):
        r = r.strip()
        if "-" in r:
            a, b = r.split("-")
            iv.append((int(a), int(b)))
        else:
            iv.append((int(r), int(r)))
    return norm(iv)


def parse_protocols(v):
    v = v.strip()
    if v == "*":
        return set(range(256))
    neg = v.startswith("all but ")
    if neg:
        v = v[len("all but "):]
    ps = set()
    for x in v.split(","):
        x = x.strip()
        if re.fullmatch(r"\d+-\d+", x):
            a, b = map(int, x.split("-"))
            ps |= set(range(a, b + 1))
        elif x.isdigit():
            ps.add(int(x))
        else:
            ps.add(PROTO_NUM.get(x.upper(), -1))
    return set(range(256)) - ps if neg else ps


def parse_cube(body):
    # `protocols:TCP, UDP,dst_ports:53,9153`: split at the `key:` tokens.
    keys = list(re.finditer(r"(?:^|,)([a-z_]+):", body))
    fields = {}
    for i, k in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(body)
        fields[k.group(1)] = body[k.end():end]
    unknown = set(fields) - {"protocols", "dst_ports"}
    if unknown:
        raise ValueError(f"nca cube with fields {sorted(unknown)}: {body}")
    protos = parse_protocols(fields["protocols"]) if "protocols" in fields else set(range(256))
    ports = parse_ports(fields["dst_ports"]) if "dst_ports" in fields else FULL
    m = {}
    for p in protos:
        m[p] = ports if p in PORT_PROTOS else FULL
    return Conn(m)


def parse_nca_conn(s):
    if s in _nca_cache:
        return _nca_cache[s]
    s0 = s
    s = s.strip()
    if s == "All connections":
        c = Conn.all()
    elif s == "No connections":
        c = Conn()
    else:
        neg = s.startswith("All but ")
        if neg:
            s = s[len("All but "):]
        c = Conn()
        for body in re.findall(r"\{([^}]*)\}", s):
            c = c | parse_cube(body)
        if neg:
            c = Conn.all() - c
    _nca_cache[s0] = c
    return c


IP_RANGE = re.compile(r"^[0-9a-fA-F:.]+(-[0-9a-fA-F:.]+|/\d+)?$")


def parse_nca_end(s):
    """-> ('ip', lo, hi) for IPv4 ranges, ('ip6',) for IPv6, ('pod', 'ns/name')."""
    s = s.strip()
    if IP_RANGE.match(s) and not re.match(r"^[a-z]", s):
        if ":" in s:
            return ("ip6",)
        if "/" in s:
            n = ipaddress.ip_network(s, strict=False)
            return ("ip", int(n.network_address), int(n.broadcast_address))
        a, _, b = s.partition("-")
        lo = int(ipaddress.ip_address(a))
        return ("ip", lo, int(ipaddress.ip_address(b)) if b else lo)
    return ("pod", s)


def read_nca_lines(path):
    """Yields (section header or None, src, dst, conn text)."""
    section = None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if " => " not in line:
                section = line.strip()
                continue
            src, _, rest = line.partition(" => ")
            dst, _, conn = rest.partition(" : ")
            yield section, src, dst, conn


# ---- cluster and policies -----------------------------------------------------------


def owner_of(md):
    """nca's workload name: a ReplicaSet owner with a hex suffix stands for its Deployment."""
    refs = md.get("ownerReferences") or []
    if not refs:
        return ("Pod", md["name"])
    kind, name = refs[0].get("kind", ""), refs[0].get("name", "")
    if kind == "ReplicaSet":
        suffix = name[name.rfind("-") + 1:]
        if all(c in "0123456789abcdefABCDEF" for c in suffix):
            return ("Deployment-StatefulSet", name[:name.rfind("-")])
    return (kind, name)


class Cluster:
    def __init__(self, path):
        with open(path) as f:
            docs = list(yaml.load_all(f, Loader=Loader))
        items = []
        for d in docs:
            items.extend(d.get("items", []) if d.get("kind") == "List" else [d])
        self.pods = {}  # ns/name -> dict
        self.node_ip = {}
        for o in items:
            if o["kind"] == "Pod":
                md = o["metadata"]
                key = f"{md['namespace']}/{md['name']}"
                self.pods[key] = {"ns": md["namespace"], "labels": md.get("labels", {}),
                                  "ip": o["status"]["podIP"],
                                  "node": o["spec"].get("nodeName"),
                                  "owner": owner_of(md),
                                  "ports": [(pt.get("name"), pt.get("protocol", "TCP"),
                                             pt["containerPort"])
                                            for c in o["spec"].get("containers", [])
                                            for pt in c.get("ports") or []]}
            elif o["kind"] == "Node":
                for a in o["status"]["addresses"]:
                    if a["type"] == "InternalIP":
                        self.node_ip[o["metadata"]["name"]] = int(ipaddress.ip_address(a["address"]))


def policy_prefixes(paths):
    out = set()
    for p in paths:
        with open(p) as f:
            for d in yaml.load_all(f, Loader=Loader):
                if not d or d.get("kind") != "NetworkPolicy":
                    continue
                spec = d.get("spec") or {}
                for sec, peer_key in (("ingress", "from"), ("egress", "to")):
                    for rule in spec.get(sec) or []:
                        for peer in (rule or {}).get(peer_key) or []:
                            ib = peer.get("ipBlock")
                            if ib:
                                for c in [ib["cidr"]] + list(ib.get("except") or []):
                                    n = ipaddress.ip_network(c, strict=False)
                                    if n.version == 4:
                                        out.add(n)
    return sorted(out)


class IpClasses:
    """Elementary IPv4 intervals cut by the prefixes, and their class (containing set)."""

    def __init__(self, prefixes):
        self.prefixes = [(int(n.network_address), int(n.broadcast_address), str(n))
                         for n in prefixes]
        b = {0, 2 ** 32}
        for lo, hi, _ in self.prefixes:
            b.add(lo)
            b.add(hi + 1)
        b = sorted(b)
        self.intervals = [(b[i], b[i + 1] - 1) for i in range(len(b) - 1)]

    def cls(self, ip):
        return frozenset(n for lo, hi, n in self.prefixes if lo <= ip <= hi)


# ---- known categories of disagreement ------------------------------------------------


class Explainer:
    """Names the known reasons polc (Cilium semantics) and nca (Kubernetes semantics) differ.
    Each check tests the disagreement against the rule that explains it; anything else is
    reported as unexplained."""

    def __init__(self, cluster, policy_paths):
        self.cluster = cluster
        # Cluster-wide numbers of each (name, protocol) named port.
        self.numbers = defaultdict(set)
        for p in cluster.pods.values():
            for name, proto, num in p["ports"]:
                if name:
                    self.numbers[(name, PROTO_NUM[proto.upper()])].add(num)
        # Named ports in egress rules, per namespace.
        self.egress_names = defaultdict(set)
        for path in policy_paths:
            with open(path) as f:
                for d in yaml.load_all(f, Loader=Loader):
                    if not d or d.get("kind") != "NetworkPolicy":
                        continue
                    ns = d["metadata"].get("namespace", "default")
                    for rule in (d.get("spec") or {}).get("egress") or []:
                        for port in (rule or {}).get("ports") or []:
                            if isinstance(port.get("port"), str):
                                proto = PROTO_NUM[port.get("protocol", "TCP").upper()]
                                self.egress_names[ns].add((port["port"], proto))

    def set_mapping(self, mapping):
        """polc judges an identity by its first pod in (namespace, name) order."""
        first = {}
        for key in sorted(self.cluster.pods):
            first.setdefault(mapping.pod_ident.get(key), key)
        self.representative = {k: first[mapping.pod_ident[k]] for k in self.cluster.pods
                               if k in mapping.pod_ident}

    def named_port_numbers(self, pod):
        """(numbers of the egress named ports of pod's namespace per protocol, ambiguous?)"""
        ns = self.cluster.pods[pod]["ns"]
        per_proto = defaultdict(set)
        ambiguous = defaultdict(bool)
        for name, proto in self.egress_names.get(ns, ()):
            nums = self.numbers.get((name, proto), set())
            per_proto[proto] |= nums
            ambiguous[proto] |= len(nums) > 1
        return per_proto, ambiguous

    def __call__(self, kind, ends, only_polc, only_nca):
        src, dst = ends
        if kind == "pod<->node IP":
            if isinstance(src, tuple):  # node -> pod
                node = src[1]
                local = self.cluster.pods[dst]["node"] == node
                rep = self.representative.get(dst)
                rep_local = rep is not None and self.cluster.pods[rep]["node"] == node
                if local and rep_local and not only_nca:
                    return ("polc allows the pod's own node: Cilium always admits traffic from "
                            "the local host (allow-localhost), Kubernetes/nca treat the node IP "
                            "as any address")
                if not local and rep_local and not only_nca:
                    return ("polc bug: the host/NODE -> identity edge is judged for one pod of "
                            "the identity, which runs on NODE (local host, always allowed); "
                            "this pod runs on another node, where NODE is remote-node and the "
                            "policy applies")
                return None
            if only_nca and not only_polc:
                return ("node IP as a destination: an ipBlock that covers the node IP allows it "
                        "in Kubernetes/nca; Cilium does not match node IPs with CIDR rules")
            return None
        if only_nca or not only_polc:
            return None
        if not isinstance(src, str) or src not in self.cluster.pods:
            return None
        per_proto, ambiguous = self.named_port_numbers(src)
        fits = all(p in per_proto and not iv_minus(iv, tuple((n, n) for n in sorted(per_proto[p])))
                   for p, iv in only_polc.m.items())
        if not fits:
            return None
        to_ip = isinstance(dst, tuple)
        if any(ambiguous[p] for p in only_polc.m):
            return ("egress named port whose name has several numbers in the cluster: polc "
                    "allows every number; Kubernetes/nca resolve it on the destination pod"
                    + (" (none for an ipBlock)" if to_ip else "")
                    + "; Cilium ≤ 1.19 skips the port entry (ErrDuplicateNamedPorts)")
        if to_ip:
            return ("egress named port to an ipBlock: Cilium resolves the name cluster-wide, "
                    "Kubernetes/nca resolve it on the destination pod (none for an address)")
        return ("egress named port the destination pod does not define: Cilium resolves the "
                "name cluster-wide, Kubernetes/nca on the destination pod")


# ---- the two sides as maps (src end, dst end) -> Conn ----------------------------------


class Mapping:
    """Maps cluster pods to polc identity names."""

    def __init__(self, cluster, members):
        self.by_ns = defaultdict(list)
        for m in members:
            pm = parse_member(m)
            if pm[0] == "pod":
                self.by_ns[pm[1]].append((pm[2], m))
        self.pod_ident = {}
        for key, p in cluster.pods.items():
            labels = set(p["labels"].items())
            best = None
            for ls, m in self.by_ns.get(p["ns"], []):
                if ls <= labels and (best is None or len(ls) > len(best[0])):
                    best = (ls, m)
            if best:
                self.pod_ident[key] = best[1]


def ip_ranges_lookup(ranges, lo, hi):
    """Union of the conns of `ranges` [(a, b, conn)] that contain [lo, hi]; flags partial."""
    c = EMPTY
    partial = False
    for a, b, conn in ranges:
        if a <= lo and hi <= b:
            c = c | conn
        elif not (b < lo or a > hi):
            partial = True
    return c, partial


class Side:
    """One tool's answer: pod pairs, pod->ip ranges, ip ranges->pod."""

    def __init__(self):
        self.pp = {}  # (pod, pod) -> Conn   (polc: identity names)
        self.p2ip = defaultdict(list)  # pod -> [(lo, hi, Conn)]
        self.ip2p = defaultdict(list)
        self.world = {}  # polc: (ident, class) -> Conn, (class, ident) -> Conn
        self.host = {}  # polc: (ident, node) / (node, ident)


def nca_side(lines):
    s = Side()
    for src, dst, conn in lines:
        c = parse_nca_conn(conn)
        a, b = parse_nca_end(src), parse_nca_end(dst)
        if a[0] == "ip6" or b[0] == "ip6":
            continue
        if a[0] == "pod" and b[0] == "pod":
            k = (a[1], b[1])
            s.pp[k] = s.pp.get(k, EMPTY) | c
        elif a[0] == "pod" and b[0] == "ip":
            s.p2ip[a[1]].append((b[1], b[2], c))
        elif a[0] == "ip" and b[0] == "pod":
            s.ip2p[b[1]].append((a[1], a[2], c))
    return s


def polc_side(pairs, classes):
    """pairs: iterable of (src member, dst member, Conn)."""
    s = Side()
    for a, b, c in pairs:
        pa, pb = parse_member(a), parse_member(b)
        if pa[0] == "world":
            ip = ipaddress.ip_address(pa[1])
            if ip.version == 4 and pb[0] == "pod":
                k = (classes.cls(int(ip)), b)
                s.world[k] = s.world.get(k, EMPTY) | c
        elif pb[0] == "world":
            ip = ipaddress.ip_address(pb[1])
            if ip.version == 4 and pa[0] == "pod":
                k = (a, classes.cls(int(ip)))
                s.world[k] = s.world.get(k, EMPTY) | c
        elif pa[0] == "host" and pb[0] == "pod":
            s.host[(pa[1], b)] = s.host.get((pa[1], b), EMPTY) | c
        elif pb[0] == "host" and pa[0] == "pod":
            s.host[(a, pb[1])] = s.host.get((a, pb[1]), EMPTY) | c
        elif pa[0] == "pod" and pb[0] == "pod":
            s.pp[(a, b)] = s.pp.get((a, b), EMPTY) | c
    return s


# ---- comparison ---------------------------------------------------------------------


class Tally:
    def __init__(self):
        self.n = defaultdict(int)
        self.examples = {}
        self.counts = defaultdict(int)

    def add(self, kind, polc, nca, example, explain=None, ends=None):
        """`explain(kind, ends, only_polc, only_nca)` names the category of a disagreement."""
        self.n[kind + " compared"] += 1
        nonempty = bool(polc.restrict()) or bool(nca.restrict())
        if nonempty:
            self.n[kind + " with traffic"] += 1
        if polc.key() == nca.key():
            self.n[kind + " agree"] += 1
            if nonempty:
                self.n[kind + " with traffic, agree"] += 1
            return
        self.n[kind + " differ"] += 1
        only_polc = (polc - nca).restrict()
        only_nca = (nca - polc).restrict()
        sig = (kind, only_polc.text() if only_polc else "-", only_nca.text() if only_nca else "-")
        base = kind.split(" ", 1)[-1] if kind.startswith(("added ", "removed ")) else kind
        cat = explain(base, ends, only_polc, only_nca) if explain else None
        key = (kind, cat or "unexplained", sig[1] if not cat else "", sig[2] if not cat else "")
        self.counts[key] += 1
        if key not in self.examples:
            self.examples[key] = {"pair": example, "polc": polc.text(), "nca": nca.text(),
                                  "only_polc": sig[1], "only_nca": sig[2]}

    def report(self, out):
        for k in sorted(self.n):
            print(f"  {k}: {self.n[k]}", file=out)
        if self.counts:
            print("  disagreements by category:", file=out)
        for key in sorted(self.counts, key=lambda k: -self.counts[k]):
            ex = self.examples[key]
            print(f"  - [{key[0]}] {key[1]}  ({self.counts[key]} pairs)", file=out)
            print(f"      e.g. {ex['pair']}", file=out)
            print(f"      polc: {ex['polc']}", file=out)
            print(f"      nca:  {ex['nca']}", file=out)
            print(f"      only polc: {ex['only_polc']}   only nca: {ex['only_nca']}", file=out)

    def to_json(self):
        return {"counts": dict(self.n),
                "categories": [{"kind": k[0], "category": k[1], "pairs": self.counts[k],
                                "example": self.examples[k]}
                               for k in sorted(self.counts, key=lambda k: -self.counts[k])]}


def compare(cluster, mapping, classes, polc, nca, kind_prefix, tally, explain=None):
    nca_pods = nca_kept_pods(cluster)
    seen = {p for k in nca.pp for p in k} | set(nca.p2ip) | set(nca.ip2p)
    if not seen <= set(nca_pods):
        raise SystemExit(f"nca names pods outside its kept set: {sorted(seen - set(nca_pods))[:3]}")
    ident = mapping.pod_ident
    missing = [p for p in nca_pods if p not in ident]
    if missing:
        print(f"warning: {len(missing)} pods have no polc identity, e.g. {missing[0]}",
              file=sys.stderr)
    same_identity = 0
    same_identity_nca_allowed = 0
    for p in nca_pods:
        if p not in ident:
            continue
        for q in nca_pods:
            if p == q or q not in ident:
                continue
            n = nca.pp.get((p, q), EMPTY)
            if ident[p] == ident[q]:
                same_identity += 1
                if n.restrict():
                    same_identity_nca_allowed += 1
                continue
            pc = polc.pp.get((ident[p], ident[q]), EMPTY)
            tally.add(f"{kind_prefix}pod->pod", pc, n, f"{p} -> {q}", explain, (p, q))
    tally.n[f"{kind_prefix}pod->pod same identity (polc has no answer)"] = same_identity
    tally.n[f"{kind_prefix}pod->pod same identity, nca allows something"] = \
        same_identity_nca_allowed
    # Outside addresses.
    for lo, hi in classes.intervals:
        cls = classes.cls(lo)
        for p in nca_pods:
            if p not in ident:
                continue
            for direction in ("egress", "ingress"):
                if direction == "egress":
                    n, partial = ip_ranges_lookup(nca.p2ip.get(p, []), lo, hi)
                    pc = polc.world.get((ident[p], cls), EMPTY)
                    ex = f"{p} -> {ipaddress.ip_address(lo)}-{ipaddress.ip_address(hi)}"
                    ends = (p, ("ip", lo, hi))
                else:
                    n, partial = ip_ranges_lookup(nca.ip2p.get(p, []), lo, hi)
                    pc = polc.world.get((cls, ident[p]), EMPTY)
                    ex = f"{ipaddress.ip_address(lo)}-{ipaddress.ip_address(hi)} -> {p}"
                    ends = (("ip", lo, hi), p)
                if partial:
                    # nca cut the interval finer: compare at the first address.
                    n, _ = ip_ranges_lookup(nca.p2ip.get(p, []) if direction == "egress"
                                            else nca.ip2p.get(p, []), lo, lo)
                    tally.n[f"{kind_prefix}pod<->world nca cuts finer"] += 1
                tally.add(f"{kind_prefix}pod<->world", pc, n, ex, explain, ends)
    # Node addresses: polc's host/remote-node ends against nca's plain address.
    for node, ip in sorted(cluster.node_ip.items()):
        for p in nca_pods:
            if p not in ident:
                continue
            n, _ = ip_ranges_lookup(nca.p2ip.get(p, []), ip, ip)
            pc = polc.host.get((ident[p], node), EMPTY)
            tally.add(f"{kind_prefix}pod<->node IP", pc, n,
                      f"{p} -> {node} ({ipaddress.ip_address(ip)})", explain, (p, ("node", node)))
            n, _ = ip_ranges_lookup(nca.ip2p.get(p, []), ip, ip)
            pc = polc.host.get((node, ident[p]), EMPTY)
            tally.add(f"{kind_prefix}pod<->node IP", pc, n,
                      f"{node} ({ipaddress.ip_address(ip)}) -> {p}", explain, (("node", node), p))


def nca_kept_pods(cluster):
    """The pods nca keeps: at most 2 per (namespace, workload, labels), in input order
    (nca's `PodsFinder._add_peer` and `Pod.canonical_form`)."""
    seen = defaultdict(int)
    out = []
    for key, p in cluster.pods.items():
        canon = (p["ns"], p["owner"], tuple(sorted(p["labels"].items())))
        if seen[canon] < 2:
            out.append(key)
        seen[canon] += 1
    return out


def report(path):
    """Markdown tables: times, agreement, disagreement categories."""
    rows = json.load(open(path))

    def t(s, rc):
        return "timeout" if rc == 124 else (f"{s:.2f} s" if rc in (0, 1) else f"exit {rc}")

    def load(p):
        try:
            return json.load(open(p))
        except (OSError, ValueError):
            return None

    print("| pods | query | polc wall | polc CPU | nca wall | nca CPU | nca / polc, wall | "
          "nca / polc, CPU | polc peak RSS | nca peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for q, name in (("graph", "connectivity map"), ("diff", "semantic diff")):
            x = r[q]
            ok = x["polc_exit"] == 0 and x["nca_exit"] in (0, 1)
            rw = f"{x['nca_s'] / x['polc_s']:.2f}×" if ok else "—"
            rc = f"{x['nca_cpu_s'] / max(x['polc_cpu_s'], 0.01):.2f}×" if ok else "—"
            print(f"| {r['pods']:,} | {name} | {t(x['polc_s'], x['polc_exit'])} "
                  f"(median of {x['polc_runs']}) | {x['polc_cpu_s']:.1f} s | "
                  f"{t(x['nca_s'], x['nca_exit'])} | {x['nca_cpu_s']:.1f} s | {rw} | {rc} | "
                  f"{x['polc_rss_kib'] / 1024:.0f} MiB | {x['nca_rss_kib'] / 1024:.0f} MiB |")
    print()
    print("| pods | query | pairs | compared | with traffic | agree (with traffic) | differ |")
    print("|---|---|---|---|---|---|---|")
    cats = []
    for r in rows:
        for q, name in (("graph", "connectivity map"), ("diff", "semantic diff")):
            c = load(r[q]["compare"])
            if not c:
                print(f"| {r['pods']:,} | {name} | not compared | | | | |")
                continue
            n = c["counts"]
            kinds = sorted({k[: -len(" compared")] for k in n if k.endswith(" compared")})
            for k in kinds:
                print(f"| {r['pods']:,} | {name} | {k} | {n[k + ' compared']:,} | "
                      f"{n.get(k + ' with traffic', 0):,} | "
                      f"{n.get(k + ' with traffic, agree', 0):,} | {n.get(k + ' differ', 0):,} |")
            same = [k for k in n if k.endswith("same identity (polc has no answer)")]
            for k in sorted(same):
                allowed = n.get(k.replace(" (polc has no answer)", ", nca allows something"), 0)
                print(f"| {r['pods']:,} | {name} | {k} | {n[k]:,} | {allowed:,} (nca) | — | — |")
            for cat in c["categories"]:
                cats.append((r["pods"], name, cat))
    print()
    print("| pods | query | pairs | category | pairs | example |")
    print("|---|---|---|---|---|---|")
    for pods, name, cat in cats:
        ex = cat["example"]
        print(f"| {pods:,} | {name} | {cat['kind']} | {cat['category']} | {cat['pairs']:,} | "
              f"`{ex['pair']}`: polc {ex['polc']}; nca {ex['nca']} |")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "report":
        report(sys.argv[2])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["graph", "diff"])
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--policies", action="append", required=True)
    ap.add_argument("--polc", required=True)
    ap.add_argument("--nca", required=True)
    ap.add_argument("--json")
    a = ap.parse_args()

    cluster = Cluster(a.cluster)
    classes = IpClasses(policy_prefixes(a.policies))
    explain = Explainer(cluster, a.policies)
    with open(a.polc) as f:
        pj = json.load(f)
    tally = Tally()
    out = sys.stdout
    if a.mode == "graph":
        members = {n["id"]: n["members"] for n in pj["nodes"]}
        all_members = [m for ms in members.values() for m in ms]
        pairs = []
        for e in pj["edges"]:
            c = parse_polc_allowed(e["allowed"])
            for x in members[e["from"]]:
                for y in members[e["to"]]:
                    if x != y:
                        pairs.append((x, y, c))
        pod_members = {m for m in all_members if parse_member(m)[0] == "pod"}
        if pod_members != identity_names(cluster):
            raise SystemExit("polc's identities are not the ones expected from the labels: "
                             f"{sorted(pod_members ^ identity_names(cluster))[:4]}")
        mapping = Mapping(cluster, pod_members)
        explain.set_mapping(mapping)
        polc = polc_side(pairs, classes)
        nca = nca_side((s, d, c) for _, s, d, c in read_nca_lines(a.nca))
        compare(cluster, mapping, classes, polc, nca, "", tally, explain)
        print(f"graph: {len(cluster.pods)} pods, {len(all_members)} polc ends, "
              f"{len(classes.intervals)} IPv4 intervals", file=out)
    else:
        added, removed = [], []
        members = set()
        for ch in pj["changes"]:
            c = parse_polc_allowed(f"{ch['protocol']} {ch['ports'][0]}-{ch['ports'][1]}")
            (added if ch["change"] == "widened" else removed).append((ch["from"], ch["to"], c))
            members.update([ch["from"], ch["to"]])
        # Every identity of the cluster: diff names only those with changes, so map pods
        # through identities computed from all pods' labels.
        mapping = Mapping(cluster, identity_names(cluster))
        explain.set_mapping(mapping)
        nca_added, nca_removed = [], []
        for sec, s, d, c in read_nca_lines(a.nca):
            if sec and sec.startswith("Added"):
                nca_added.append((s, d, c))
            elif sec and sec.startswith("Removed"):
                nca_removed.append((s, d, c))
            else:
                raise SystemExit(f"unknown nca section {sec!r}")
        for name, pl, nl in (("added ", added, nca_added), ("removed ", removed, nca_removed)):
            polc = polc_side(pl, classes)
            nca = nca_side(nl)
            compare(cluster, mapping, classes, polc, nca, name, tally, explain)
        print(f"diff: polc {pj['widened']} widened / {pj['narrowed']} narrowed change rows; "
              f"nca {len(nca_added)} added / {len(nca_removed)} removed lines", file=out)
    tally.report(out)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(tally.to_json(), f, indent=2)
            f.write("\n")


def identity_names(cluster):
    """polc identity names for every pod, under the generator's label conventions (labels
    Cilium leaves out of identities removed)."""
    dropped = {"pod-template-hash", "controller-revision-hash",
               "statefulset.kubernetes.io/pod-name"}
    out = set()
    for p in cluster.pods.values():
        kv = sorted((k, v) for k, v in p["labels"].items() if k not in dropped)
        out.add(f"{p['ns']}/{{{','.join(f'{k}={v}' for k, v in kv)}}}")
    return out


if __name__ == "__main__":
    main()
