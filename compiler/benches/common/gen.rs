//! A deterministic generator of realistic, valid network policies, shared by the
//! `gen_policies` example and the `lint` benchmark.
//!
//! The mix follows a real cluster: mostly `CiliumNetworkPolicy`, some
//! `CiliumClusterwideNetworkPolicy` (namespace baselines and host policies) and some Kubernetes
//! `NetworkPolicy`. Rules use label selectors with `matchLabels` and `matchExpressions`,
//! endpoint, entity, CIDR-set, FQDN and service peers, quoted ports with `TCP`/`UDP`, port
//! ranges, HTTP and DNS L7 rules, ICMP items and deny sections. Every policy is meant to lint
//! with no errors and no warnings.
//!
//! Policy `i` depends only on `i` and a fixed seed, so a corpus is the same on every machine
//! and every prefix of a larger corpus is the smaller corpus.

const SEED: u64 = 0x706f_6c63_2d62_656e;

const NAMESPACES: &[&str] = &[
    "shop",
    "payments",
    "checkout",
    "catalog",
    "identity",
    "search",
    "analytics",
    "billing",
    "notifications",
    "media",
    "data-platform",
    "ml-serving",
    "partner-api",
    "backoffice",
    "inventory",
    "shipping",
    "reviews",
    "recommendations",
    "auth",
    "observability",
];
const APPS: &[&str] = &[
    "frontend",
    "api-gateway",
    "orders",
    "cart",
    "payments",
    "ledger",
    "users",
    "sessions",
    "search-indexer",
    "catalog",
    "pricing",
    "inventory",
    "shipping",
    "notifier",
    "mailer",
    "reports",
    "etl-worker",
    "kafka",
    "redis",
    "postgres",
    "elasticsearch",
    "prometheus",
    "grafana",
    "model-server",
    "feature-store",
    "image-resizer",
    "webhook-relay",
    "audit-log",
];
const TIERS: &[&str] = &["web", "backend", "cache", "db", "worker", "queue"];
const TEAMS: &[&str] = &["core", "growth", "platform", "data", "sre", "risk"];
const ENVS: &[&str] = &["prod", "staging", "canary", "qa"];
const VERSIONS: &[&str] = &["v1", "v2", "v3", "v1.4.2", "2024-11"];
const PURPOSES: &[&str] = &[
    "allow", "ingress", "egress", "l7", "lockdown", "baseline", "api",
];
const TCP_PORTS: &[u16] = &[
    80, 443, 8080, 8443, 9090, 9091, 3000, 5432, 6379, 9200, 9092, 27017, 3306, 5672, 15672, 8500,
    2379, 11211, 50051, 4317,
];
const UDP_PORTS: &[u16] = &[123, 514, 8125, 4789, 51820, 6831, 1812];
const PORT_NAMES: &[&str] = &["http", "https", "grpc", "metrics", "http-alt"];
const FQDN_NAMES: &[&str] = &[
    "api.stripe.com",
    "hooks.slack.com",
    "api.github.com",
    "sts.amazonaws.com",
    "s3.eu-west-1.amazonaws.com",
    "oauth2.googleapis.com",
    "api.sendgrid.com",
    "login.microsoftonline.com",
    "registry-1.docker.io",
    "api.twilio.com",
    "sentry.io",
    "api.datadoghq.eu",
];
const FQDN_PATTERNS: &[&str] = &[
    "*.googleapis.com",
    "*.s3.amazonaws.com",
    "*.blob.core.windows.net",
    "*.cloudfront.net",
    "*.internal.example.com",
    "*.okta.com",
];
const CIDRS: &[(&str, &[&str])] = &[
    ("10.0.0.0/8", &["10.96.0.0/12", "10.244.0.0/16"]),
    ("172.16.0.0/12", &["172.20.0.0/16"]),
    ("192.168.0.0/16", &["192.168.100.0/24"]),
    (
        "0.0.0.0/0",
        &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
    ),
    ("100.64.0.0/10", &[]),
    ("203.0.113.0/24", &[]),
    ("198.51.100.0/24", &["198.51.100.128/25"]),
    ("2001:db8::/32", &["2001:db8:ffff::/48"]),
    ("fd00::/8", &[]),
];
const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "GET|HEAD"];
const HTTP_PATHS: &[&str] = &[
    "/api/v1/orders(/.*)?",
    "/healthz",
    "/metrics",
    "/api/v2/users/[0-9]+",
    "/static/.*",
    "/graphql",
    "/v1/payments",
    "/login",
    "/.well-known/openid-configuration",
    "/api/v1/search",
];
const INGRESS_ENTITIES: &[&str] = &[
    "cluster",
    "host",
    "remote-node",
    "health",
    "ingress",
    "world",
];
const EGRESS_ENTITIES: &[&str] = &["world", "cluster", "host", "kube-apiserver", "remote-node"];
const ICMP_V4: &[&str] = &[
    "8",
    "0",
    "EchoRequest",
    "DestinationUnreachable",
    "TimeExceeded",
];
const ICMP_V6: &[&str] = &["128", "EchoRequest", "PacketTooBig", "NeighborSolicitation"];

/// The policies `1..=count`, as (file name, YAML text).
pub fn corpus(count: usize) -> Vec<(String, String)> {
    (1..=count)
        .map(|i| (format!("policy-{i:05}.yaml"), policy(i)))
        .collect()
}

/// The YAML text of policy `i`.
fn policy(i: usize) -> String {
    let mut g = Gen {
        rng: Rng::for_policy(i),
        out: String::with_capacity(4096),
    };
    match g.rng.below(100) {
        0..=74 => g.cilium_policy(i, false),
        75..=84 => g.cilium_policy(i, true),
        _ => g.network_policy(i),
    }
    g.out
}

/// xorshift64, seeded per policy through a splitmix64 step.
struct Rng(u64);

impl Rng {
    fn for_policy(i: usize) -> Self {
        let mut z = SEED.wrapping_add((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p` percent.
    fn chance(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    /// A small item count: mostly 1-4, sometimes up to 10.
    fn items(&mut self) -> usize {
        if self.chance(15) {
            self.range(5, 10)
        } else {
            self.range(1, 4)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    fn peer(self, what: &str) -> String {
        match self {
            Dir::Ingress => format!("from{what}"),
            Dir::Egress => format!("to{what}"),
        }
    }
}

struct Gen {
    rng: Rng,
    out: String,
}

impl Gen {
    fn line(&mut self, indent: usize, text: &str) {
        for _ in 0..indent {
            self.out.push(' ');
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn metadata(&mut self, name: &str, namespace: Option<&str>, app: &str) {
        self.line(0, "metadata:");
        self.line(2, &format!("name: {name}"));
        if let Some(ns) = namespace {
            self.line(2, &format!("namespace: {ns}"));
        }
        if self.rng.chance(60) {
            self.line(2, "labels:");
            self.line(4, &format!("app.kubernetes.io/name: {app}"));
            let manager = self.rng.pick(&["Helm", "argocd", "kustomize"]);
            self.line(4, &format!("app.kubernetes.io/managed-by: {manager}"));
            let team = self.rng.pick(TEAMS);
            self.line(4, &format!("team: {team}"));
        }
        if self.rng.chance(25) {
            self.line(2, "annotations:");
            let team = self.rng.pick(TEAMS);
            self.line(4, &format!("policy.example.com/owner: team-{team}"));
            self.line(4, "policy.example.com/reviewed: \"true\"");
        }
    }

    /// A CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy.
    fn cilium_policy(&mut self, i: usize, clusterwide: bool) {
        let app = self.rng.pick(APPS);
        let ns = self.rng.pick(NAMESPACES);
        let purpose = self.rng.pick(PURPOSES);
        self.line(0, "apiVersion: cilium.io/v2");
        if clusterwide {
            self.line(0, "kind: CiliumClusterwideNetworkPolicy");
            self.metadata(&format!("cluster-{purpose}-{i:05}"), None, app);
        } else {
            self.line(0, "kind: CiliumNetworkPolicy");
            self.metadata(&format!("{app}-{purpose}-{i:05}"), Some(ns), app);
        }
        if self.rng.chance(15) {
            self.line(0, "specs:");
            for _ in 0..self.rng.range(2, 3) {
                self.rule(2, true, clusterwide, app);
            }
        } else {
            self.line(0, "spec:");
            self.rule(2, false, clusterwide, app);
        }
    }

    /// One rule at `indent`; `listed` writes it as an item of `specs`.
    fn rule(&mut self, indent: usize, listed: bool, clusterwide: bool, app: &str) {
        // The first line of a list item carries `- `; the rest are indented past it.
        let (first, ind) = if listed {
            ("- ", indent + 2)
        } else {
            ("", indent)
        };
        let host = clusterwide && self.rng.chance(25);
        let mut lead = first;
        if self.rng.chance(40) {
            let team = self.rng.pick(TEAMS);
            self.line(
                indent,
                &format!("{lead}description: \"{app} traffic owned by team {team}\""),
            );
            lead = "";
        }
        let lead_ind = if lead.is_empty() { ind } else { indent };
        if host {
            self.line(lead_ind, &format!("{lead}nodeSelector:"));
            self.line(ind + 2, "matchLabels:");
            let role = self.rng.pick(&["control-plane", "worker", "ingress"]);
            self.line(ind + 4, &format!("node-role.kubernetes.io/{role}: \"\""));
            self.host_rule(ind);
            return;
        }
        self.line(lead_ind, &format!("{lead}endpointSelector:"));
        self.subject(ind + 2, clusterwide, app);

        let (ingress, egress) = match self.rng.below(100) {
            0..=34 => (self.rng.items(), 0),
            35..=59 => (0, self.rng.items()),
            _ => (self.rng.items(), self.rng.items()),
        };
        if self.rng.chance(20) {
            self.line(ind, "enableDefaultDeny:");
            if ingress > 0 {
                self.line(ind + 2, "ingress: true");
            }
            if egress > 0 {
                let on = self.rng.pick(&["true", "false"]);
                self.line(ind + 2, &format!("egress: {on}"));
            }
        }
        if ingress > 0 {
            self.line(ind, "ingress:");
            for _ in 0..ingress {
                self.ingress_item(ind);
            }
        }
        if self.rng.chance(10) {
            self.line(ind, "ingressDeny:");
            for _ in 0..self.rng.range(1, 2) {
                self.deny_item(ind, Dir::Ingress);
            }
        }
        if egress > 0 {
            self.line(ind, "egress:");
            let mut dns = self.rng.chance(50);
            let items: Vec<usize> = (0..egress).map(|_| self.rng.below(100)).collect();
            // toFQDNs needs the pods' DNS lookups to go through the DNS proxy.
            dns |= items.iter().any(|&k| (35..50).contains(&k));
            if dns {
                self.dns_item(ind);
            }
            for k in items {
                self.egress_item(ind, k);
            }
        }
        if self.rng.chance(5) {
            self.line(ind, "egressDeny:");
            self.deny_item(ind, Dir::Egress);
        }
        if self.rng.chance(10) {
            self.line(ind, "labels:");
            self.line(ind, "- key: owner");
            let team = self.rng.pick(TEAMS);
            self.line(ind + 2, &format!("value: {team}"));
            self.line(ind + 2, "source: k8s");
        }
    }

    /// The subject selector of a pod rule (the `endpointSelector` body).
    fn subject(&mut self, ind: usize, clusterwide: bool, app: &str) {
        if self.rng.chance(5) {
            // `{}`: every pod (of the namespace, or of the cluster).
            self.out.pop();
            self.out.push_str(" {}\n");
            return;
        }
        self.line(ind, "matchLabels:");
        if clusterwide && self.rng.chance(50) {
            let ns = self.rng.pick(NAMESPACES);
            self.line(ind + 2, &format!("k8s:io.kubernetes.pod.namespace: {ns}"));
        }
        self.line(ind + 2, &format!("app: {app}"));
        if self.rng.chance(40) {
            let tier = self.rng.pick(TIERS);
            self.line(ind + 2, &format!("tier: {tier}"));
        }
        if self.rng.chance(25) {
            self.line(ind, "matchExpressions:");
            self.expressions(ind);
        }
    }

    fn expressions(&mut self, ind: usize) {
        // One or two requirements, on different keys.
        let first = self.rng.below(3);
        for k in [first, (first + 1) % 3]
            .into_iter()
            .take(self.rng.range(1, 2))
        {
            match k {
                0 => {
                    self.line(ind, "- key: env");
                    self.line(ind + 2, "operator: In");
                    let (a, b) = (self.rng.pick(ENVS), self.rng.pick(ENVS));
                    if a == b {
                        self.line(ind + 2, &format!("values: [{a}]"));
                    } else {
                        self.line(ind + 2, &format!("values: [{a}, {b}]"));
                    }
                }
                1 => {
                    self.line(ind, "- key: version");
                    self.line(ind + 2, "operator: NotIn");
                    self.line(ind + 2, "values:");
                    let v = self.rng.pick(VERSIONS);
                    self.line(ind + 2, &format!("- \"{v}\""));
                }
                _ => {
                    let key = self.rng.pick(&["canary", "debug", "io.cilium/skip-policy"]);
                    self.line(ind, &format!("- key: {key}"));
                    let op = self.rng.pick(&["Exists", "DoesNotExist"]);
                    self.line(ind + 2, &format!("operator: {op}"));
                }
            }
        }
    }

    /// A list of peer selectors under `key` (`fromEndpoints`, `toEndpoints`, ...).
    fn endpoints(&mut self, ind: usize, key: &str, lead: &str) {
        self.line(ind, &format!("{lead}{key}:"));
        let ind = ind + 2;
        for _ in 0..self.rng.range(1, 3) {
            if self.rng.chance(4) {
                self.line(ind, "- {}");
                continue;
            }
            self.line(ind, "- matchLabels:");
            let app = self.rng.pick(APPS);
            self.line(ind + 4, &format!("app: {app}"));
            if self.rng.chance(35) {
                let ns = self.rng.pick(NAMESPACES);
                self.line(ind + 4, &format!("k8s:io.kubernetes.pod.namespace: {ns}"));
            }
            if self.rng.chance(15) {
                self.line(ind + 2, "matchExpressions:");
                self.expressions(ind + 2);
            }
        }
    }

    /// `toPorts` with `n` L4 ports (quoted, mostly with a protocol).
    fn l4_ports(&mut self, ind: usize, n: usize, deny: bool) {
        self.line(ind, "toPorts:");
        self.line(ind, "- ports:");
        let ind = ind + 2;
        if n > 10 {
            // A long list of distinct ports, as generated by tooling.
            let base = self.rng.range(10_000, 50_000);
            for j in 0..n {
                self.line(ind, &format!("- port: \"{}\"", base + j * 7));
                self.line(ind + 2, "protocol: TCP");
            }
            return;
        }
        let mut used = Vec::new();
        for _ in 0..n {
            let named = !deny && self.rng.chance(5);
            let (port, proto) = if named {
                (self.rng.pick(PORT_NAMES).to_string(), "TCP")
            } else if self.rng.chance(80) {
                (self.rng.pick(TCP_PORTS).to_string(), "TCP")
            } else {
                (self.rng.pick(UDP_PORTS).to_string(), "UDP")
            };
            if used.contains(&port) {
                continue;
            }
            self.line(ind, &format!("- port: \"{port}\""));
            if self.rng.chance(90) {
                self.line(ind + 2, &format!("protocol: {proto}"));
            }
            used.push(port);
        }
    }

    /// `toPorts` with one port range.
    fn port_range(&mut self, ind: usize) {
        let (start, end) =
            self.rng
                .pick(&[(30_000, 32_767), (8000, 8099), (6000, 6063), (9000, 9010)]);
        self.line(ind, "toPorts:");
        self.line(ind, "- ports:");
        self.line(ind + 2, &format!("- port: \"{start}\""));
        self.line(ind + 4, &format!("endPort: {end}"));
        let proto = self.rng.pick(&["TCP", "UDP"]);
        self.line(ind + 4, &format!("protocol: {proto}"));
    }

    /// `toPorts` with one TCP port and HTTP rules.
    fn http_ports(&mut self, ind: usize) {
        let port = self.rng.pick(&[80, 8080, 8443, 3000, 9090]);
        self.line(ind, "toPorts:");
        self.line(ind, "- ports:");
        self.line(ind + 2, &format!("- port: \"{port}\""));
        self.line(ind + 4, "protocol: TCP");
        self.line(ind + 2, "rules:");
        self.line(ind + 4, "http:");
        for _ in 0..self.rng.range(1, 4) {
            let method = self.rng.pick(HTTP_METHODS);
            self.line(ind + 4, &format!("- method: \"{method}\""));
            let path = self.rng.pick(HTTP_PATHS);
            self.line(ind + 6, &format!("path: \"{path}\""));
            if self.rng.chance(15) {
                self.line(ind + 6, "headers:");
                self.line(ind + 6, "- \"X-Tenant-Id\"");
            }
        }
    }

    fn cidr_set(&mut self, ind: usize, key: &str, lead: &str) {
        self.line(ind, &format!("{lead}{key}:"));
        for _ in 0..self.rng.range(1, 3) {
            let (cidr, except) = self.rng.pick(CIDRS);
            self.line(ind + 2, &format!("- cidr: {cidr}"));
            if !except.is_empty() {
                self.line(ind + 4, "except:");
                for e in except {
                    self.line(ind + 4, &format!("- {e}"));
                }
            }
        }
    }

    fn entities(&mut self, ind: usize, dir: Dir, lead: &str) {
        let pool = if dir == Dir::Ingress {
            INGRESS_ENTITIES
        } else {
            EGRESS_ENTITIES
        };
        let a = self.rng.pick(pool);
        let b = self.rng.pick(pool);
        let list = if a == b {
            a.to_string()
        } else {
            format!("{a}, {b}")
        };
        self.line(ind, &format!("{lead}{}: [{list}]", dir.peer("Entities")));
    }

    fn icmps(&mut self, ind: usize) {
        self.line(ind, "icmps:");
        self.line(ind, "- fields:");
        for _ in 0..self.rng.range(1, 3) {
            if self.rng.chance(70) {
                let t = self.rng.pick(ICMP_V4);
                self.line(ind + 2, &format!("- type: {t}"));
                self.line(ind + 4, "family: IPv4");
            } else {
                let t = self.rng.pick(ICMP_V6);
                self.line(ind + 2, &format!("- type: {t}"));
                self.line(ind + 4, "family: IPv6");
            }
        }
    }

    fn ingress_item(&mut self, ind: usize) {
        let k = self.rng.below(100);
        let inner = ind + 2;
        match k {
            0..=44 => {
                self.endpoints(ind, "fromEndpoints", "- ");
                let n = self.rng.range(1, 3);
                self.l4_ports(inner, n, false);
            }
            45..=59 => {
                self.endpoints(ind, "fromEndpoints", "- ");
                self.http_ports(inner);
            }
            60..=69 => {
                self.entities(ind, Dir::Ingress, "- ");
                let n = self.rng.range(1, 2);
                self.l4_ports(inner, n, false);
            }
            70..=79 => {
                self.cidr_set(ind, "fromCIDRSet", "- ");
                let n = self.rng.range(1, 3);
                self.l4_ports(inner, n, false);
            }
            80..=87 => self.endpoints(ind, "fromEndpoints", "- "),
            88..=92 => {
                self.entities(ind, Dir::Ingress, "- ");
                self.icmps(inner);
            }
            93..=95 => {
                self.endpoints(ind, "fromEndpoints", "- ");
                self.port_range(inner);
            }
            _ => {
                self.endpoints(ind, "fromEndpoints", "- ");
                let n = self.rng.range(20, 30);
                self.l4_ports(inner, n, false);
            }
        }
    }

    /// The egress item that sends DNS lookups to kube-dns through the DNS proxy.
    fn dns_item(&mut self, ind: usize) {
        self.line(ind, "- toEndpoints:");
        self.line(ind + 2, "- matchLabels:");
        self.line(ind + 6, "k8s:io.kubernetes.pod.namespace: kube-system");
        self.line(ind + 6, "k8s:k8s-app: kube-dns");
        self.line(ind + 2, "toPorts:");
        self.line(ind + 2, "- ports:");
        if self.rng.chance(50) {
            self.line(ind + 4, "- port: \"53\"");
            self.line(ind + 6, "protocol: ANY");
        } else {
            self.line(ind + 4, "- port: \"53\"");
            self.line(ind + 6, "protocol: UDP");
            self.line(ind + 4, "- port: \"53\"");
            self.line(ind + 6, "protocol: TCP");
        }
        self.line(ind + 4, "rules:");
        self.line(ind + 6, "dns:");
        if self.rng.chance(60) {
            self.line(ind + 6, "- matchPattern: \"*\"");
        } else {
            for _ in 0..self.rng.range(1, 3) {
                let p = self.rng.pick(FQDN_PATTERNS);
                self.line(ind + 6, &format!("- matchPattern: \"{p}\""));
            }
            self.line(ind + 6, "- matchPattern: \"*.cluster.local\"");
        }
    }

    /// One egress item of kind `k` (a number below 100).
    fn egress_item(&mut self, ind: usize, k: usize) {
        let inner = ind + 2;
        match k {
            0..=34 => {
                self.endpoints(ind, "toEndpoints", "- ");
                let n = self.rng.range(1, 3);
                self.l4_ports(inner, n, false);
            }
            35..=49 => {
                self.line(ind, "- toFQDNs:");
                for _ in 0..self.rng.range(1, 4) {
                    if self.rng.chance(70) {
                        let name = self.rng.pick(FQDN_NAMES);
                        self.line(inner, &format!("- matchName: {name}"));
                    } else {
                        let p = self.rng.pick(FQDN_PATTERNS);
                        self.line(inner, &format!("- matchPattern: \"{p}\""));
                    }
                }
                self.line(inner, "toPorts:");
                self.line(inner, "- ports:");
                self.line(inner + 2, "- port: \"443\"");
                self.line(inner + 4, "protocol: TCP");
            }
            50..=64 => {
                self.cidr_set(ind, "toCIDRSet", "- ");
                let n = self.rng.range(1, 2);
                self.l4_ports(inner, n, false);
            }
            65..=74 => {
                self.entities(ind, Dir::Egress, "- ");
                if self.rng.chance(50) {
                    self.l4_ports(inner, 1, false);
                }
            }
            75..=79 => {
                self.line(ind, "- toServices:");
                let svc = self.rng.pick(APPS);
                let ns = self.rng.pick(NAMESPACES);
                self.line(inner, "- k8sService:");
                self.line(inner + 4, &format!("serviceName: {svc}"));
                self.line(inner + 4, &format!("namespace: {ns}"));
            }
            80..=84 => {
                self.endpoints(ind, "toEndpoints", "- ");
                self.port_range(inner);
            }
            85..=89 => {
                self.entities(ind, Dir::Egress, "- ");
                self.icmps(inner);
            }
            90..=95 => {
                self.endpoints(ind, "toEndpoints", "- ");
                self.http_ports(inner);
            }
            _ => {
                self.endpoints(ind, "toEndpoints", "- ");
                let n = self.rng.range(20, 30);
                self.l4_ports(inner, n, false);
            }
        }
    }

    /// An `ingressDeny` or `egressDeny` item (deny port rules have only `ports`).
    fn deny_item(&mut self, ind: usize, dir: Dir) {
        let inner = ind + 2;
        match (dir, self.rng.below(3)) {
            (Dir::Egress, _) => {
                self.line(ind, "- toCIDRSet:");
                self.line(inner, "- cidr: 169.254.169.254/32");
            }
            (Dir::Ingress, 0) => {
                self.entities(ind, dir, "- ");
                let n = self.rng.range(1, 3);
                self.l4_ports(inner, n, true);
            }
            (Dir::Ingress, 1) => {
                self.cidr_set(ind, "fromCIDRSet", "- ");
            }
            (Dir::Ingress, _) => {
                self.line(ind, "- fromEntities: [world]");
                self.line(inner, "toPorts:");
                self.line(inner, "- ports:");
                self.line(inner + 2, "- port: \"22\"");
                self.line(inner + 4, "protocol: TCP");
            }
        }
    }

    /// The sections of a host policy (clusterwide, `nodeSelector`): L4 only.
    fn host_rule(&mut self, ind: usize) {
        self.line(ind, "ingress:");
        self.line(ind, "- fromEntities: [cluster, remote-node, health]");
        self.line(ind + 2, "toPorts:");
        self.line(ind + 2, "- ports:");
        let ports: &[(&str, &str)] = &[
            ("22", "TCP"),
            ("6443", "TCP"),
            ("10250", "TCP"),
            ("4240", "TCP"),
            ("8472", "UDP"),
            ("2379", "TCP"),
            ("9100", "TCP"),
        ];
        let n = self.rng.range(2, ports.len());
        for &(port, proto) in &ports[..n] {
            self.line(ind + 4, &format!("- port: \"{port}\""));
            self.line(ind + 6, &format!("protocol: {proto}"));
        }
        if self.rng.chance(50) {
            self.line(ind, "- fromEntities: [world]");
            self.line(ind + 2, "toPorts:");
            self.line(ind + 2, "- ports:");
            self.line(ind + 4, "- port: \"443\"");
            self.line(ind + 6, "protocol: TCP");
        }
        if self.rng.chance(50) {
            self.line(ind, "- fromEntities: [cluster]");
            self.icmps(ind + 2);
        }
        self.line(ind, "egress:");
        self.line(ind, "- toEntities: [cluster, kube-apiserver]");
        if self.rng.chance(50) {
            self.line(ind, "- toCIDRSet:");
            self.line(ind + 2, "- cidr: 0.0.0.0/0");
            self.line(ind + 4, "except:");
            self.line(ind + 4, "- 169.254.169.254/32");
            self.line(ind + 2, "toPorts:");
            self.line(ind + 2, "- ports:");
            self.line(ind + 4, "- port: \"443\"");
            self.line(ind + 6, "protocol: TCP");
        }
    }

    /// A Kubernetes `networking.k8s.io/v1` NetworkPolicy.
    fn network_policy(&mut self, i: usize) {
        let app = self.rng.pick(APPS);
        let ns = self.rng.pick(NAMESPACES);
        self.line(0, "apiVersion: networking.k8s.io/v1");
        self.line(0, "kind: NetworkPolicy");
        self.metadata(&format!("{app}-netpol-{i:05}"), Some(ns), app);
        self.line(0, "spec:");
        if self.rng.chance(10) {
            self.line(2, "podSelector: {}");
        } else {
            self.line(2, "podSelector:");
            self.line(4, "matchLabels:");
            self.line(6, &format!("app: {app}"));
            if self.rng.chance(30) {
                self.line(4, "matchExpressions:");
                self.expressions(4);
            }
        }
        let (ingress, egress) = match self.rng.below(100) {
            0..=9 => (0, 0),
            10..=54 => (self.rng.items(), 0),
            55..=69 => (0, self.rng.items()),
            _ => (self.rng.items(), self.rng.items()),
        };
        let mut types = Vec::new();
        if ingress > 0 || egress == 0 {
            types.push("Ingress");
        }
        if egress > 0 || self.rng.chance(30) {
            types.push("Egress");
        }
        self.line(2, "policyTypes:");
        for t in types {
            self.line(2, &format!("- {t}"));
        }
        if ingress > 0 {
            self.line(2, "ingress:");
            for _ in 0..ingress {
                self.knp_rule(2, "from");
            }
        }
        if egress > 0 {
            self.line(2, "egress:");
            if self.rng.chance(60) {
                self.line(2, "- to:");
                self.line(4, "- namespaceSelector:");
                self.line(8, "matchLabels:");
                self.line(10, "kubernetes.io/metadata.name: kube-system");
                self.line(6, "podSelector:");
                self.line(8, "matchLabels:");
                self.line(10, "k8s-app: kube-dns");
                self.line(4, "ports:");
                self.line(4, "- protocol: UDP");
                self.line(6, "port: 53");
                self.line(4, "- protocol: TCP");
                self.line(6, "port: 53");
            }
            for _ in 0..egress {
                self.knp_rule(2, "to");
            }
        }
    }

    fn knp_rule(&mut self, ind: usize, peers: &str) {
        let mut lead = "- ";
        let inner = ind + 2;
        if self.rng.chance(85) {
            self.line(ind, &format!("{lead}{peers}:"));
            lead = "";
            for _ in 0..self.rng.range(1, 3) {
                match self.rng.below(4) {
                    0 => {
                        self.line(inner, "- podSelector:");
                        self.line(inner + 4, "matchLabels:");
                        let a = self.rng.pick(APPS);
                        self.line(inner + 6, &format!("app: {a}"));
                    }
                    1 => {
                        self.line(inner, "- namespaceSelector:");
                        self.line(inner + 4, "matchLabels:");
                        let ns = self.rng.pick(NAMESPACES);
                        self.line(inner + 6, &format!("kubernetes.io/metadata.name: {ns}"));
                        if self.rng.chance(50) {
                            self.line(inner + 2, "podSelector:");
                            self.line(inner + 4, "matchLabels:");
                            let a = self.rng.pick(APPS);
                            self.line(inner + 6, &format!("app: {a}"));
                        }
                    }
                    2 => {
                        self.line(inner, "- namespaceSelector:");
                        self.line(inner + 4, "matchExpressions:");
                        self.line(inner + 4, "- key: team");
                        self.line(inner + 6, "operator: In");
                        let (a, b) = (self.rng.pick(TEAMS), self.rng.pick(TEAMS));
                        if a == b {
                            self.line(inner + 6, &format!("values: [{a}]"));
                        } else {
                            self.line(inner + 6, &format!("values: [{a}, {b}]"));
                        }
                    }
                    _ => {
                        let (cidr, except) = self.rng.pick(CIDRS);
                        self.line(inner, "- ipBlock:");
                        self.line(inner + 4, &format!("cidr: {cidr}"));
                        if !except.is_empty() {
                            self.line(inner + 4, "except:");
                            for e in except {
                                self.line(inner + 4, &format!("- {e}"));
                            }
                        }
                    }
                }
            }
        }
        if lead.is_empty() && self.rng.chance(20) {
            return;
        }
        let lead_ind = if lead.is_empty() { inner } else { ind };
        self.line(lead_ind, &format!("{lead}ports:"));
        // Up to three different kinds of port entry.
        let first = self.rng.below(10);
        let n = self.rng.range(1, 3);
        let base = self.rng.below(TCP_PORTS.len());
        for k in [first, (first + 1) % 10, (first + 5) % 10]
            .into_iter()
            .take(n)
        {
            match k {
                0 => {
                    let name = self.rng.pick(PORT_NAMES);
                    self.line(inner, "- protocol: TCP");
                    self.line(inner + 2, &format!("port: {name}"));
                }
                1 => {
                    self.line(inner, "- protocol: TCP");
                    self.line(inner + 2, "port: 32000");
                    self.line(inner + 2, "endPort: 32767");
                }
                2 => {
                    let p = self.rng.pick(UDP_PORTS);
                    self.line(inner, "- protocol: UDP");
                    self.line(inner + 2, &format!("port: {p}"));
                }
                _ => {
                    let p = TCP_PORTS[(base + k) % TCP_PORTS.len()];
                    self.line(inner, "- protocol: TCP");
                    self.line(inner + 2, &format!("port: {p}"));
                }
            }
        }
    }
}
