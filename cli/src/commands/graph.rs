//! `polc graph --policies PATH... --inventory PATH...`: who can talk to whom, on which ports,
//! as DOT, Mermaid or JSON.
//!
//! The ends are the cluster's workloads (one node per identity), every node's host and the
//! outside address classes the policies tell apart; an edge carries the protocols and port
//! ranges the flow is allowed on (none between two outside addresses: no cluster policy is on
//! that path). Ends with the same edges in and out are merged into one
//! equivalence class. The connectivity engine (`polc_compiler::connectivity`) computes both
//! from the selector policies, per class of ends rather than per flow.

use super::cluster::{self, ClusterArgs};
use super::diff::ends;
use crate::{EXIT_CLEAN, EXIT_USAGE, Io};
use polc_compiler::connectivity::{Connectivity, Graph, PROTOS, PortSet, PortSetId, domain};
use polc_compiler::eval::Peer;
use std::collections::HashMap;
use std::io::Write;

/// Output formats of `graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
    /// JSON: nodes and edges.
    Json,
}

/// Arguments of `polc graph`.
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// Policies, inventory and agent settings.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
}

/// The allowed port ranges of one flow direction, per protocol, as text: `TCP 80,443; UDP
/// all`.
fn allowed_text(set: &PortSet) -> String {
    let mut parts = Vec::new();
    for proto in PROTOS {
        let (min, max) = domain(proto);
        let text: Vec<String> = set
            .ranges(proto)
            .iter()
            .map(|&(a, b)| match (a, b) {
                (a, b) if a == min && b == max => "all".to_string(),
                (a, b) if a == b => a.to_string(),
                (a, b) => format!("{a}-{b}"),
            })
            .collect();
        if !text.is_empty() {
            parts.push(format!("{} {}", proto.name(), text.join(",")));
        }
    }
    parts.join("; ")
}

/// Runs `polc graph`.
pub fn run(args: &GraphArgs, io: &mut Io<'_>) -> anyhow::Result<i32> {
    let Some(loaded) = cluster::load(&args.cluster, &[], io.stdin, io.stderr) else {
        return Ok(EXIT_USAGE);
    };
    let model = &loaded.model;
    let all = ends(model, model);
    let peers: Vec<Peer> = all.iter().map(|(p, _)| *p).collect();
    crate::timing::lap(io.stderr, "ends");
    let mut conn = Connectivity::new(model, &peers);
    crate::timing::lap(io.stderr, "connectivity");
    let graph = conn.graph();
    crate::timing::lap(io.stderr, "graph");
    let names: Vec<String> = graph
        .classes
        .iter()
        .map(|c| {
            let names: Vec<&str> = c.iter().map(|&i| all[i].1.as_str()).collect();
            names.join(" | ")
        })
        .collect();
    let mut texts: HashMap<PortSetId, String> = HashMap::new();
    for &(_, _, l) in &graph.edges {
        texts
            .entry(l)
            .or_insert_with(|| allowed_text(conn.sets().get(l)));
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut *io.stdout);
    match args.format {
        GraphFormat::Dot => dot(&mut out, &names, &graph, &texts)?,
        GraphFormat::Mermaid => mermaid(&mut out, &names, &graph, &texts)?,
        GraphFormat::Json => json(&mut out, &graph, &all, &texts)?,
    }
    out.flush()?;
    drop(out);
    crate::timing::lap(io.stderr, "write");
    // The process ends here: freeing millions of small values one by one would only cost
    // time (a few hundred milliseconds at our users' scale).
    std::mem::forget((loaded, conn, graph, names, texts));
    Ok(EXIT_CLEAN)
}

/// Appends the decimal digits of `n`.
fn push_number(buf: &mut Vec<u8>, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// Writes `buf` out once it is large.
fn drain(out: &mut impl Write, buf: &mut Vec<u8>) -> std::io::Result<()> {
    if buf.len() >= 1 << 20 {
        out.write_all(buf)?;
        buf.clear();
    }
    Ok(())
}

/// The edge texts, each prepared once by `quote`, by port set.
fn quoted(
    texts: &HashMap<PortSetId, String>,
    quote: impl Fn(&str) -> anyhow::Result<String>,
) -> anyhow::Result<HashMap<PortSetId, Vec<u8>>> {
    texts
        .iter()
        .map(|(l, t)| Ok((*l, quote(t)?.into_bytes())))
        .collect()
}

fn dot(
    out: &mut impl Write,
    names: &[String],
    graph: &Graph,
    texts: &HashMap<PortSetId, String>,
) -> anyhow::Result<()> {
    out.write_all(b"digraph polc {\n  rankdir=LR;\n  node [shape=box];\n")?;
    for (i, name) in names.iter().enumerate() {
        writeln!(out, "  n{i} [label={name:?}];")?;
    }
    let labels = quoted(texts, |t| Ok(format!("{t:?}")))?;
    let mut buf = Vec::with_capacity(2 << 20);
    for (a, b, l) in &graph.edges {
        buf.extend_from_slice(b"  n");
        push_number(&mut buf, *a);
        buf.extend_from_slice(b" -> n");
        push_number(&mut buf, *b);
        buf.extend_from_slice(b" [label=");
        buf.extend_from_slice(labels.get(l).map_or(&[][..], Vec::as_slice));
        buf.extend_from_slice(b"];\n");
        drain(out, &mut buf)?;
    }
    buf.extend_from_slice(b"}\n");
    out.write_all(&buf)?;
    Ok(())
}

fn mermaid(
    out: &mut impl Write,
    names: &[String],
    graph: &Graph,
    texts: &HashMap<PortSetId, String>,
) -> anyhow::Result<()> {
    out.write_all(b"flowchart LR\n")?;
    for (i, name) in names.iter().enumerate() {
        writeln!(out, "  n{i}[\"{}\"]", name.replace('"', "#quot;"))?;
    }
    let labels = quoted(texts, |t| Ok(t.replace('"', "#quot;")))?;
    let mut buf = Vec::with_capacity(2 << 20);
    for (a, b, l) in &graph.edges {
        buf.extend_from_slice(b"  n");
        push_number(&mut buf, *a);
        buf.extend_from_slice(b" -->|\"");
        buf.extend_from_slice(labels.get(l).map_or(&[][..], Vec::as_slice));
        buf.extend_from_slice(b"\"| n");
        push_number(&mut buf, *b);
        buf.push(b'\n');
        drain(out, &mut buf)?;
    }
    out.write_all(&buf)?;
    Ok(())
}

/// `{"nodes": [{"id", "members"}], "edges": [{"from", "to", "allowed"}]}`, pretty-printed as
/// `serde_json` does (two-space indent), written as it goes: a users'-scale graph has
/// millions of edges.
fn json(
    out: &mut impl Write,
    graph: &Graph,
    all: &[(Peer, String)],
    texts: &HashMap<PortSetId, String>,
) -> anyhow::Result<()> {
    out.write_all(b"{\n  \"nodes\": [")?;
    for (i, class) in graph.classes.iter().enumerate() {
        out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        write!(out, "    {{\n      \"id\": {i},\n      \"members\": [")?;
        for (k, &m) in class.iter().enumerate() {
            out.write_all(if k == 0 { b"\n" } else { b",\n" })?;
            write!(out, "        {}", serde_json::to_string(&all[m].1)?)?;
        }
        out.write_all(if class.is_empty() { b"]" } else { b"\n      ]" })?;
        out.write_all(b"\n    }")?;
    }
    out.write_all(if graph.classes.is_empty() {
        b"],\n  \"edges\": ["
    } else {
        b"\n  ],\n  \"edges\": ["
    })?;
    let labels = quoted(texts, |t| Ok(serde_json::to_string(t)?))?;
    let mut buf = Vec::with_capacity(2 << 20);
    for (k, (a, b, l)) in graph.edges.iter().enumerate() {
        buf.extend_from_slice(if k == 0 { b"\n" } else { b",\n" });
        buf.extend_from_slice(b"    {\n      \"from\": ");
        push_number(&mut buf, *a);
        buf.extend_from_slice(b",\n      \"to\": ");
        push_number(&mut buf, *b);
        buf.extend_from_slice(b",\n      \"allowed\": ");
        buf.extend_from_slice(labels.get(l).map_or(&[][..], Vec::as_slice));
        buf.extend_from_slice(b"\n    }");
        drain(out, &mut buf)?;
    }
    buf.extend_from_slice(if graph.edges.is_empty() {
        b"]\n}\n"
    } else {
        b"\n  ]\n}\n"
    });
    out.write_all(&buf)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use polc_compiler::eval::Peer;
    use serde_json::json;

    /// The streamed JSON is what `serde_json::to_string_pretty` writes, with and without
    /// edges, and with text that needs escaping.
    #[test]
    fn json_is_serde_json_pretty() {
        let all: Vec<(Peer, String)> = vec![
            (Peer::Host(0), "host/a".into()),
            (Peer::Host(1), "ns/{app=\"x\\y\"}".into()),
            (Peer::Host(2), "world (2001:db8::1)\t".into()),
        ];
        let texts: HashMap<PortSetId, String> = [
            (7, "TCP 80,443; UDP all".to_string()),
            (9, "\"odd\"".into()),
        ]
        .into_iter()
        .collect();
        for edges in [vec![], vec![(0, 1, 7), (1, 0, 9)]] {
            let graph = Graph {
                classes: vec![vec![0, 2], vec![1]],
                edges,
            };
            let mut got = Vec::new();
            json(&mut got, &graph, &all, &texts).unwrap();
            let nodes: Vec<_> = graph
                .classes
                .iter()
                .enumerate()
                .map(|(i, c)| json!({"id": i, "members": c.iter().map(|&k| all[k].1.clone()).collect::<Vec<_>>()}))
                .collect();
            let edges: Vec<_> = graph
                .edges
                .iter()
                .map(|(a, b, l)| json!({"from": a, "to": b, "allowed": texts[l]}))
                .collect();
            let mut want =
                serde_json::to_string_pretty(&json!({"nodes": nodes, "edges": edges})).unwrap();
            want.push('\n');
            assert_eq!(String::from_utf8(got).unwrap(), want);
        }
    }

    /// DOT and Mermaid as `format!` writes them, line by line.
    #[test]
    fn dot_and_mermaid_lines() {
        let names = vec!["host/a".to_string(), "ns/{app=\"x\"}".to_string()];
        let texts: HashMap<PortSetId, String> = [(7, "TCP 80,443; UDP \"all\"".to_string())]
            .into_iter()
            .collect();
        let graph = Graph {
            classes: vec![vec![0], vec![1]],
            edges: vec![(0, 1, 7), (1, 0, 7)],
        };
        let mut got = Vec::new();
        dot(&mut got, &names, &graph, &texts).unwrap();
        let mut want = String::from("digraph polc {\n  rankdir=LR;\n  node [shape=box];\n");
        for (i, n) in names.iter().enumerate() {
            want.push_str(&format!("  n{i} [label={n:?}];\n"));
        }
        for (a, b, l) in &graph.edges {
            want.push_str(&format!("  n{a} -> n{b} [label={:?}];\n", texts[l]));
        }
        want.push_str("}\n");
        assert_eq!(String::from_utf8(got).unwrap(), want);
        let mut got = Vec::new();
        mermaid(&mut got, &names, &graph, &texts).unwrap();
        let mut want = String::from("flowchart LR\n");
        for (i, n) in names.iter().enumerate() {
            want.push_str(&format!("  n{i}[\"{}\"]\n", n.replace('"', "#quot;")));
        }
        for (a, b, l) in &graph.edges {
            want.push_str(&format!(
                "  n{a} -->|\"{}\"| n{b}\n",
                texts[l].replace('"', "#quot;")
            ));
        }
        assert_eq!(String::from_utf8(got).unwrap(), want);
    }
}
