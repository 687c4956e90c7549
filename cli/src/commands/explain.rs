//! `polc explain`: the verdict of one flow (or of every flow of a flows file), the rules that
//! decided it, the identities involved, and the map entry the datapath would hit.

use super::cluster::{self, ClusterArgs, Loaded};
use crate::render::Format;
use crate::{EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE, Io};
use polc_compiler::diag::Code;
use polc_compiler::eval::{self, Decision, Flow, Outcome, Peer, Request, Verdict};
use polc_compiler::flows::{self, FlowSpec};
use polc_compiler::ir::{Direction, Proto};
use polc_compiler::mapstate::{self, Entry, Key, ProxyPorts, SelectorCache};
use polc_compiler::model::{EndpointRef, Model};
use polc_compiler::source::{Loc, SourceMap};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// Output formats of `explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExplainFormat {
    /// Text for people.
    Human,
    /// JSON: `{"verdict": ..., "reasons": [...]}`.
    Json,
}

/// Arguments of `polc explain`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "EP is NAMESPACE/POD, host/NODE (that node's host), or an IP address.\n\
    Exit codes: 0 the flow was judged (whatever the verdict; with --flows: every flow as \
    expected), 1 a flow of --flows did not get its expected verdict, 2 bad query or input."
)]
pub struct ExplainArgs {
    /// Policies, inventory and agent settings.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Where the flow comes from.
    #[arg(long, value_name = "EP", required_unless_present = "flows")]
    pub from: Option<String>,
    /// Where the flow goes.
    #[arg(long, value_name = "EP", required_unless_present = "flows")]
    pub to: Option<String>,
    /// Protocol: tcp, udp, sctp, icmp or icmpv6.
    #[arg(long, value_name = "PROTO", required_unless_present = "flows")]
    pub proto: Option<String>,
    /// Destination port (TCP, UDP, SCTP).
    #[arg(long)]
    pub port: Option<u16>,
    /// ICMP type (ICMP, ICMPv6).
    #[arg(long, value_name = "N")]
    pub icmp_type: Option<u8>,
    /// The L7 request the flow carries, if any.
    #[command(flatten)]
    pub request: RequestArgs,
    /// Check every flow of a flows file against its `expect`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["from", "to"])]
    pub flows: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExplainFormat::Human)]
    pub format: ExplainFormat,
}

/// The L7 request of a flow given on the command line (`polc explain`, `polc lab probe`).
#[derive(Debug, Default, clap::Args)]
pub struct RequestArgs {
    /// HTTP request method.
    #[arg(long, value_name = "M")]
    pub http_method: Option<String>,
    /// HTTP request path.
    #[arg(long, value_name = "P")]
    pub http_path: Option<String>,
    /// HTTP request host.
    #[arg(long, value_name = "H")]
    pub http_host: Option<String>,
    /// HTTP request header, `Name: value` (repeatable).
    #[arg(long, value_name = "K: V")]
    pub http_header: Vec<String>,
    /// DNS query name (a request to a DNS server on port 53).
    #[arg(long, value_name = "NAME", visible_alias = "dns")]
    pub dns_query: Option<String>,
    /// Kafka request API key (`produce`, `fetch`, ...).
    #[arg(long, value_name = "KEY")]
    pub kafka_api_key: Option<String>,
    /// Kafka request API version.
    #[arg(long, value_name = "N")]
    pub kafka_api_version: Option<i64>,
    /// Kafka request client ID.
    #[arg(long, value_name = "ID")]
    pub kafka_client_id: Option<String>,
    /// Kafka request topic.
    #[arg(long, value_name = "TOPIC")]
    pub kafka_topic: Option<String>,
}

impl RequestArgs {
    /// The request these flags describe (`None` without any), or why they describe none.
    pub(crate) fn request(&self) -> Result<Option<Request>, QueryError> {
        let http = self.http_method.is_some()
            || self.http_path.is_some()
            || self.http_host.is_some()
            || !self.http_header.is_empty();
        let kafka = self.kafka_api_key.is_some()
            || self.kafka_api_version.is_some()
            || self.kafka_client_id.is_some()
            || self.kafka_topic.is_some();
        if [http, self.dns_query.is_some(), kafka]
            .iter()
            .filter(|b| **b)
            .count()
            > 1
        {
            return Err(bad(
                Code::InvalidFlow,
                "a flow carries one request: HTTP, DNS or Kafka, not several",
                None,
            ));
        }
        let mut headers = Vec::new();
        for h in &self.http_header {
            headers.push(parse_header(h, None)?);
        }
        Ok(if http {
            Some(Request::Http {
                method: self.http_method.clone().unwrap_or_else(|| "GET".into()),
                path: self.http_path.clone().unwrap_or_else(|| "/".into()),
                host: self.http_host.clone().unwrap_or_default(),
                headers,
            })
        } else if kafka {
            Some(Request::Kafka {
                api_key: self.kafka_api_key.clone().unwrap_or_default(),
                api_version: self.kafka_api_version,
                client_id: self.kafka_client_id.clone().unwrap_or_default(),
                topic: self.kafka_topic.clone().unwrap_or_default(),
            })
        } else {
            self.dns_query
                .as_ref()
                .map(|q| Request::Dns { query: q.clone() })
        })
    }
}

impl From<ExplainFormat> for Format {
    fn from(f: ExplainFormat) -> Self {
        match f {
            ExplainFormat::Human => Format::Human,
            ExplainFormat::Json => Format::Json,
        }
    }
}

/// A query problem: what is wrong and where (a flows-file location, if any).
pub(crate) struct QueryError {
    code: Code,
    message: String,
    loc: Option<Loc>,
}

pub(crate) fn bad(code: Code, message: impl Into<String>, loc: Option<Loc>) -> QueryError {
    QueryError {
        code,
        message: message.into(),
        loc,
    }
}

/// Runs `polc explain`.
pub fn run(args: &ExplainArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    // The flows file is read on its own (it is not a manifest), before the cluster, so `-`
    // can name it.
    let flows = match &args.flows {
        None => None,
        Some(path) => match read_flows(&args.cluster, path, io) {
            Some(f) => Some(f),
            None => return Ok(EXIT_USAGE),
        },
    };
    let Some(loaded) = cluster::load(&args.cluster, &[], io.stdin, io.stderr) else {
        return Ok(EXIT_USAGE);
    };
    let mut ctx = Ctx::new(&loaded);
    match flows {
        None => {
            let flow = match single_flow(&loaded.model, args) {
                Ok(f) => f,
                Err(e) => {
                    report(io, &loaded.sources, &e);
                    return Ok(EXIT_USAGE);
                }
            };
            let outcome = eval::decide(&loaded.model, &flow);
            let text = match args.format {
                ExplainFormat::Human => ctx.human(&flow, &outcome),
                ExplainFormat::Json => {
                    let mut s = serde_json::to_string_pretty(&ctx.json(&flow, &outcome))?;
                    s.push('\n');
                    s
                }
            };
            io.stdout.write_all(text.as_bytes())?;
            Ok(EXIT_CLEAN)
        }
        Some((sources, specs)) => run_flows(&mut ctx, &sources, &specs, args.format, io),
    }
}

/// Reads and decodes the flows file; problems are reported and give `None`. Warnings
/// (unknown fields) are reported and the flows still run.
pub(crate) fn read_flows(
    cluster: &ClusterArgs,
    path: &std::path::Path,
    io: &mut Io<'_>,
) -> Option<(SourceMap, Vec<FlowSpec>)> {
    let stdin_twice = path.as_os_str() == "-"
        && cluster
            .policies
            .iter()
            .chain(cluster.inventory.iter())
            .any(|p| p.as_os_str() == "-");
    if path.is_dir() || stdin_twice {
        let why = if stdin_twice {
            "standard input can hold the flows or the policies, not both"
        } else {
            "`--flows` takes one file, not a directory"
        };
        report(
            io,
            &SourceMap::new(),
            &bad(
                Code::InvalidFlow,
                format!("{}: {why}", path.display()),
                None,
            ),
        );
        return None;
    }
    let inputs = crate::input::gather(&[path.to_path_buf()], io.stdin, cluster.max_file_size);
    if inputs.unreadable || !inputs.diagnostics.is_empty() {
        let text = crate::render::human_diagnostics(&inputs.sources, &inputs.diagnostics, false);
        let _ = io.stderr.write_all(text.as_bytes());
        return None;
    }
    let file = inputs.sources.files().map(|(id, _)| id).next()?;
    let (specs, diags) = flows::read(
        file,
        inputs.sources.get(file),
        polc_compiler::yaml::Limits::default(),
    );
    if !diags.is_empty() {
        let text = crate::render::human_diagnostics(&inputs.sources, &diags, false);
        let _ = io.stderr.write_all(text.as_bytes());
    }
    let errors = diags
        .iter()
        .filter(|d| d.severity == polc_compiler::diag::Severity::Error)
        .count();
    if errors > 0 {
        for d in diags
            .iter()
            .filter(|d| d.severity == polc_compiler::diag::Severity::Error)
        {
            report(
                io,
                &inputs.sources,
                &bad(d.code, d.message.clone(), Some(d.loc)),
            );
        }
        return None;
    }
    Some((inputs.sources, specs))
}

/// Prints a query problem (with its place in the flows file, if any).
pub(crate) fn report(io: &mut Io<'_>, sources: &SourceMap, e: &QueryError) {
    let at = e.loc.map(|l| {
        let lc = sources.line_col(l);
        format!("{}:{}:{}: ", sources.get(l.file).name, lc.line, lc.col)
    });
    let _ = writeln!(
        io.stderr,
        "polc: error[{}]: {}{}",
        e.code.as_str(),
        at.unwrap_or_default(),
        e.message
    );
}

fn run_flows(
    ctx: &mut Ctx<'_>,
    fsrc: &SourceMap,
    specs: &[FlowSpec],
    format: ExplainFormat,
    io: &mut Io<'_>,
) -> anyhow::Result<i32> {
    // Check every flow first: a bad flow makes the whole file a bad query.
    let mut flows = Vec::new();
    for spec in specs {
        match flow_of_spec(&ctx.loaded.model, spec) {
            Ok(f) => flows.push((spec, f)),
            Err(e) => {
                report(io, fsrc, &e);
                return Ok(EXIT_USAGE);
            }
        }
    }
    let mut failed = 0usize;
    let mut out = String::new();
    let mut results = Vec::new();
    for (spec, (flow, expect)) in &flows {
        let outcome = eval::decide(&ctx.loaded.model, flow);
        let ok = outcome.verdict == *expect;
        if !ok {
            failed += 1;
        }
        let lc = fsrc.line_col(spec.loc);
        match format {
            ExplainFormat::Human => {
                let _ = writeln!(
                    out,
                    "{} {}:{} {} -> {}: {}{}",
                    if ok { "ok  " } else { "FAIL" },
                    fsrc.get(spec.loc.file).name,
                    lc.line,
                    spec.from.as_ref().map_or("", |s| s.value.as_str()),
                    spec.to.as_ref().map_or("", |s| s.value.as_str()),
                    describe_l4(flow),
                    if ok {
                        format!(" {}", outcome.verdict.name())
                    } else {
                        format!(
                            " expected {}, got {} ({})",
                            expect.name(),
                            outcome.verdict.name(),
                            ctx.short_reason(&outcome)
                        )
                    }
                );
            }
            ExplainFormat::Json => {
                let mut v = ctx.json(flow, &outcome);
                if let Value::Object(m) = &mut v {
                    m.insert("expect".into(), json!(expect.name()));
                    m.insert("ok".into(), json!(ok));
                    m.insert("line".into(), json!(lc.line));
                    if let Some(n) = &spec.name {
                        m.insert("name".into(), json!(n.value));
                    }
                }
                results.push(v);
            }
        }
    }
    match format {
        ExplainFormat::Human => {
            let _ = writeln!(
                out,
                "{} {}, {} as expected, {} not",
                flows.len(),
                if flows.len() == 1 { "flow" } else { "flows" },
                flows.len() - failed,
                failed
            );
        }
        ExplainFormat::Json => {
            out = serde_json::to_string_pretty(&json!({
                "flows": results,
                "passed": flows.len() - failed,
                "failed": failed,
            }))?;
            out.push('\n');
        }
    }
    io.stdout.write_all(out.as_bytes())?;
    Ok(if failed > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_CLEAN
    })
}

/// Parses `NS/POD`, `host/NODE` or an address.
fn parse_endpoint(model: &Model, text: &str, loc: Option<Loc>) -> Result<Peer, QueryError> {
    let text = text.trim();
    if let Ok(ip) = IpAddr::from_str(text) {
        if let Some(svc) = model
            .inventory
            .services
            .iter()
            .find(|s| s.cluster_ips.contains(&ip))
        {
            return Err(bad(
                Code::UnknownEndpoint,
                format!(
                    "{ip} is the ClusterIP of Service {}/{}: policy applies to the backend pod \
                     the service translates it to; name that pod instead",
                    svc.namespace, svc.name
                ),
                loc,
            ));
        }
        return Ok(eval::locate(model, ip));
    }
    let Some((ns, name)) = text.split_once('/') else {
        return Err(bad(
            Code::UnknownEndpoint,
            format!("`{text}` is not NAMESPACE/POD, host/NODE or an IP address"),
            loc,
        ));
    };
    if ns == "host" {
        if let Some(i) = model.inventory.nodes.iter().position(|n| n.name == name) {
            return Ok(Peer::Host(i));
        }
        if model.inventory.pod(ns, name).is_none() {
            let known: Vec<&str> = model
                .inventory
                .nodes
                .iter()
                .take(5)
                .map(|n| n.name.as_str())
                .collect();
            return Err(bad(
                Code::UnknownEndpoint,
                format!(
                    "no node `{name}` in the inventory{}",
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!(" (nodes: {})", known.join(", "))
                    }
                ),
                loc,
            ));
        }
    }
    match model
        .inventory
        .pods
        .iter()
        .position(|p| p.namespace == ns && p.name == name)
    {
        Some(i) if model.inventory.pods[i].host_network => {
            // A host-network pod is its node's host.
            let node = &model.inventory.pods[i].node;
            match model.inventory.nodes.iter().position(|n| n.name == *node) {
                Some(n) => Ok(Peer::Host(n)),
                None => Err(bad(
                    Code::UnknownEndpoint,
                    format!(
                        "pod {ns}/{name} uses the host network, and its node `{node}` is not in \
                         the inventory"
                    ),
                    loc,
                )),
            }
        }
        Some(i) => {
            if model.inventory.pods[i].ips.is_empty() {
                // Policy still applies by identity; the flow is judged without an address.
            }
            Ok(Peer::Pod(i))
        }
        None => Err(bad(
            Code::UnknownEndpoint,
            format!("no pod `{name}` in namespace `{ns}` in the inventory"),
            loc,
        )),
    }
}

/// A flow as written: ends, protocol, port or ICMP type, request.
pub(crate) struct FlowParts<'a> {
    pub(crate) from: &'a str,
    pub(crate) to: &'a str,
    pub(crate) proto: &'a str,
    pub(crate) port: Option<i64>,
    pub(crate) icmp_type: Option<i64>,
    pub(crate) request: Option<Request>,
    pub(crate) loc: Option<Loc>,
}

/// Builds and checks a flow.
pub(crate) fn build_flow(model: &Model, p: FlowParts<'_>) -> Result<Flow, QueryError> {
    let src = parse_endpoint(model, p.from, p.loc)?;
    let dst = parse_endpoint(model, p.to, p.loc)?;
    let proto_ok = Proto::parse(p.proto);
    for text in [p.from, p.to] {
        let family_clash = match (IpAddr::from_str(text.trim()), proto_ok) {
            (Ok(IpAddr::V6(_)), Some(Proto::Icmp)) => {
                Some("ICMP is IPv4; an IPv6 address needs ICMPv6")
            }
            (Ok(IpAddr::V4(_)), Some(Proto::Icmpv6)) => {
                Some("ICMPv6 is IPv6; an IPv4 address needs ICMP")
            }
            _ => None,
        };
        if let Some(why) = family_clash {
            return Err(bad(Code::InvalidFlow, format!("{text}: {why}"), p.loc));
        }
    }
    let Some(proto) = proto_ok else {
        return Err(bad(
            Code::InvalidFlow,
            format!(
                "`{}` is not a protocol: use tcp, udp, sctp, icmp or icmpv6",
                p.proto
            ),
            p.loc,
        ));
    };
    let port = match proto {
        Proto::Icmp | Proto::Icmpv6 => {
            if p.port.is_some() {
                return Err(bad(
                    Code::InvalidFlow,
                    "ICMP has no ports: give the ICMP type (`icmpType`, `--icmp-type`)",
                    p.loc,
                ));
            }
            match p.icmp_type.map(u8::try_from) {
                Some(Ok(t)) => u16::from(t),
                Some(Err(_)) => {
                    return Err(bad(Code::InvalidFlow, "an ICMP type is 0-255", p.loc));
                }
                None => {
                    return Err(bad(
                        Code::InvalidFlow,
                        "an ICMP flow needs its type (`icmpType`, `--icmp-type`; 8 is an echo \
                         request)",
                        p.loc,
                    ));
                }
            }
        }
        _ => {
            if p.icmp_type.is_some() {
                return Err(bad(
                    Code::InvalidFlow,
                    format!("`{}` has ports, not ICMP types", proto.name()),
                    p.loc,
                ));
            }
            match p.port.map(u16::try_from) {
                Some(Ok(n)) if n > 0 => n,
                Some(_) => {
                    return Err(bad(Code::InvalidFlow, "a port is 1-65535", p.loc));
                }
                None => {
                    return Err(bad(
                        Code::InvalidFlow,
                        format!("a {} flow needs a destination port", proto.name()),
                        p.loc,
                    ));
                }
            }
        }
    };
    if p.request.is_some() && matches!(proto, Proto::Icmp | Proto::Icmpv6) {
        return Err(bad(
            Code::InvalidFlow,
            "an L7 request needs TCP or UDP",
            p.loc,
        ));
    }
    Ok(Flow {
        src,
        dst,
        proto,
        port,
        request: p.request,
    })
}

fn single_flow(model: &Model, args: &ExplainArgs) -> Result<Flow, QueryError> {
    let request = args.request.request()?;
    build_flow(
        model,
        FlowParts {
            from: args.from.as_deref().unwrap_or_default(),
            to: args.to.as_deref().unwrap_or_default(),
            proto: args.proto.as_deref().unwrap_or_default(),
            port: args.port.map(i64::from),
            icmp_type: args.icmp_type.map(i64::from),
            request,
            loc: None,
        },
    )
}

fn parse_header(h: &str, loc: Option<Loc>) -> Result<(String, String), QueryError> {
    match h.split_once(':') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(bad(
            Code::InvalidFlow,
            format!("`{h}` is not a header: write `Name: value`"),
            loc,
        )),
    }
}

/// The flow of a flows-file entry and its `expect`.
pub(crate) fn flow_of_spec(model: &Model, spec: &FlowSpec) -> Result<(Flow, Verdict), QueryError> {
    let loc = Some(spec.loc);
    let need = |f: &Option<polc_compiler::raw::decode::Spanned<String>>, name: &str| {
        f.as_ref()
            .map(|s| s.value.clone())
            .ok_or_else(|| bad(Code::InvalidFlow, format!("the flow has no `{name}`"), loc))
    };
    let from = need(&spec.from, "from")?;
    let to = need(&spec.to, "to")?;
    let proto = need(&spec.proto, "proto")?;
    let expect = match need(&spec.expect, "expect")?.to_ascii_lowercase().as_str() {
        "allow" => Verdict::Allow,
        "deny" => Verdict::Deny,
        other => {
            return Err(bad(
                Code::InvalidFlow,
                format!("`expect: {other}`: write `allow` or `deny`"),
                spec.expect.as_ref().map(|e| e.loc),
            ));
        }
    };
    let n_requests = [
        spec.http.is_some(),
        spec.dns.is_some(),
        spec.kafka.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if n_requests > 1 {
        return Err(bad(
            Code::InvalidFlow,
            "a flow carries at most one request (`http`, `dns` or `kafka`)",
            loc,
        ));
    }
    let request = if let Some(h) = &spec.http {
        let mut headers = Vec::new();
        for s in h.headers.iter().flat_map(|v| v.iter()) {
            headers.push(parse_header(&s.value, Some(s.loc))?);
        }
        Some(Request::Http {
            method: h
                .method
                .as_ref()
                .map_or_else(|| "GET".to_string(), |m| m.value.clone()),
            path: h
                .path
                .as_ref()
                .map_or_else(|| "/".to_string(), |m| m.value.clone()),
            host: h.host.as_ref().map(|m| m.value.clone()).unwrap_or_default(),
            headers,
        })
    } else if let Some(d) = &spec.dns {
        let Some(q) = &d.query else {
            return Err(bad(Code::InvalidFlow, "`dns` needs a `query`", Some(d.loc)));
        };
        Some(Request::Dns {
            query: q.value.clone(),
        })
    } else {
        spec.kafka.as_ref().map(|k| Request::Kafka {
            api_key: k
                .api_key
                .as_ref()
                .map(|v| v.value.clone())
                .unwrap_or_default(),
            api_version: k.api_version.as_ref().map(|v| v.value),
            client_id: k
                .client_id
                .as_ref()
                .map(|v| v.value.clone())
                .unwrap_or_default(),
            topic: k
                .topic
                .as_ref()
                .map(|v| v.value.clone())
                .unwrap_or_default(),
        })
    };
    let flow = build_flow(
        model,
        FlowParts {
            from: &from,
            to: &to,
            proto: &proto,
            port: spec.port.as_ref().map(|p| p.value),
            icmp_type: spec.icmp_type.as_ref().map(|p| p.value),
            request,
            loc,
        },
    )?;
    Ok((flow, expect))
}

/// `TCP/8080`, `ICMP type 8`.
pub(crate) fn describe_l4(flow: &Flow) -> String {
    match flow.proto {
        Proto::Icmp | Proto::Icmpv6 => format!("{} type {}", flow.proto.name(), flow.port),
        p => format!("{}/{}", p.name(), flow.port),
    }
}

/// Rendering state: the loaded cluster and computed endpoint policies.
struct Ctx<'a> {
    loaded: &'a Loaded,
    cache: SelectorCache,
    policies: HashMap<EndpointRef, mapstate::EndpointPolicy>,
    listeners: Vec<String>,
}

impl<'a> Ctx<'a> {
    fn new(loaded: &'a Loaded) -> Self {
        Ctx {
            loaded,
            cache: SelectorCache::new(&loaded.model),
            policies: HashMap::new(),
            listeners: mapstate::listeners(&loaded.model),
        }
    }

    /// The map entry the datapath hits for a decision.
    fn map_hit(&mut self, d: &Decision, flow: &Flow) -> Option<(Key, Entry)> {
        let model = &self.loaded.model;
        if !self.policies.contains_key(&d.endpoint) {
            let p = mapstate::compute(
                model,
                &mut self.cache,
                d.endpoint,
                &ProxyPorts::default(),
                &self.listeners,
            );
            self.policies.insert(d.endpoint, p);
        }
        let policy = self.policies.get(&d.endpoint)?;
        mapstate::lookup(
            &policy.map,
            d.direction,
            d.remote_identity,
            flow.proto.number(),
            flow.port,
        )
        .map(|(k, e)| (*k, e.clone()))
    }

    fn endpoint_name(&self, ep: EndpointRef) -> String {
        polc_compiler::incremental::endpoint_name(&self.loaded.model, ep)
    }

    fn peer_name(&self, p: Peer) -> String {
        match p {
            Peer::Pod(i) => self.endpoint_name(EndpointRef::Pod(i)),
            Peer::Host(n) => self.endpoint_name(EndpointRef::Host(n)),
            Peer::External(ip) => format!("{ip} (outside the cluster)"),
        }
    }

    fn place(&self, loc: Loc) -> (String, usize, usize) {
        let lc = self.loaded.sources.line_col(loc);
        (
            self.loaded.sources.get(loc.file).name.clone(),
            lc.line,
            lc.col,
        )
    }

    fn short_reason(&self, o: &Outcome) -> String {
        o.decisions
            .iter()
            .find(|d| d.verdict == o.verdict)
            .or(o.decisions.first())
            .map(|d| {
                let rule = d.rules.first().map(|r| {
                    let (f, l, _) = self.place(r.loc);
                    format!(": {} {} at {f}:{l}", r.policy, r.path)
                });
                format!(
                    "{} of {}: {}{}",
                    d.direction.name(),
                    self.endpoint_name(d.endpoint),
                    why_name(&d.why),
                    rule.unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "no endpoint enforces policy".into())
    }

    fn human(&mut self, flow: &Flow, o: &Outcome) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "flow: {} -> {} {}{}",
            self.peer_name(flow.src),
            self.peer_name(flow.dst),
            describe_l4(flow),
            request_text(flow)
        );
        let _ = writeln!(s, "verdict: {}", o.verdict.name().to_ascii_uppercase());
        if o.decisions.is_empty() {
            let _ = writeln!(s, "  neither end is an endpoint that enforces policy");
        }
        for d in &o.decisions {
            let model = &self.loaded.model;
            let own = model.identity_of(d.endpoint).unwrap_or(0);
            let _ = writeln!(
                s,
                "  {} of {} (identity {}), remote identity {}: {} ({})",
                d.direction.name(),
                self.endpoint_name(d.endpoint),
                own,
                d.remote_identity,
                d.verdict.name(),
                why_name(&d.why)
            );
            if !d.note.is_empty() {
                let _ = writeln!(s, "    {}", d.note);
            }
            for r in &d.rules {
                let (f, l, c) = self.place(r.loc);
                let _ = writeln!(s, "    {} {}  ({f}:{l}:{c})", r.policy, r.path);
            }
            if let Some(p) = &d.proxy {
                let _ = writeln!(s, "    port redirected to the {p} proxy");
            }
            match self.map_hit(d, flow) {
                Some((k, e)) => {
                    let _ = writeln!(s, "    map entry: {}", entry_text(&k, &e));
                }
                None => {
                    let _ = writeln!(s, "    map entry: none (DROP_POLICY)");
                }
            }
        }
        s
    }

    fn json(&mut self, flow: &Flow, o: &Outcome) -> Value {
        let mut reasons = Vec::new();
        for d in &o.decisions {
            let rules: Vec<Value> = d
                .rules
                .iter()
                .map(|r| {
                    let (f, l, c) = self.place(r.loc);
                    json!({"policy": r.policy, "path": r.path, "file": f, "line": l, "column": c})
                })
                .collect();
            let hit = self.map_hit(d, flow).map(|(k, e)| {
                json!({
                    "key": {
                        "direction": k.direction.name(),
                        "identity": k.identity,
                        "protocol": k.proto,
                        "port": k.port,
                        "prefix_len": k.prefix_len(),
                    },
                    "verdict": if e.deny { "deny" } else if e.proxy.is_some() { "redirect" } else { "allow" },
                    "proxy_port": e.proxy_port(),
                    "precedence": format!("0x{:08x}", e.precedence()),
                    "text": entry_text(&k, &e),
                })
            });
            let model = &self.loaded.model;
            reasons.push(json!({
                "endpoint": self.endpoint_name(d.endpoint),
                "identity": model.identity_of(d.endpoint),
                "direction": d.direction.name(),
                "verdict": d.verdict.name(),
                "why": why_name(&d.why),
                "remote_identity": d.remote_identity,
                "rules": rules,
                "proxy": d.proxy,
                "note": d.note,
                "map_entry": hit,
            }));
        }
        json!({
            "verdict": o.verdict.name(),
            "flow": {
                "from": self.peer_name(flow.src),
                "to": self.peer_name(flow.dst),
                "proto": flow.proto.name(),
                "port": flow.port,
            },
            "reasons": reasons,
        })
    }
}

/// The flow's L7 request, for people.
pub(crate) fn request_text(flow: &Flow) -> String {
    match &flow.request {
        None => String::new(),
        Some(Request::Http { method, path, .. }) => format!(" HTTP {method} {path}"),
        Some(Request::Dns { query }) => format!(" DNS {query}"),
        Some(Request::Kafka { api_key, topic, .. }) => format!(" Kafka {api_key} {topic}"),
    }
}

fn why_name(w: &eval::Why) -> &'static str {
    match w {
        eval::Why::NotEnforced => "not enforced",
        eval::Why::DenyRule => "deny rule",
        eval::Why::AllowRule => "allow rule",
        eval::Why::L7Allowed => "L7 rule allows the request",
        eval::Why::L7Denied => "L7 rules reject the request",
        eval::Why::DefaultDeny => "default deny",
        eval::Why::AllowLocalhost => "allow-localhost",
    }
}

fn entry_text(k: &Key, e: &Entry) -> String {
    let l4 = match (k.proto, k.port_prefix) {
        (0, _) => "any".to_string(),
        (p, 0) => format!("proto {p}"),
        (p, 16) => format!("proto {p} port {}", k.port),
        (p, bits) => format!("proto {p} port {}/{bits}", k.port),
    };
    let verdict = if e.deny {
        "deny".to_string()
    } else if let Some(p) = &e.proxy {
        format!("redirect to {} (port {})", p.listener, p.port)
    } else {
        "allow".to_string()
    };
    let dir = match k.direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    format!(
        "{dir} identity {} {l4} -> {verdict}, precedence 0x{:08x}",
        k.identity,
        e.precedence()
    )
}
