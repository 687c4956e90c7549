//! `polc graph --policies PATH... --inventory PATH...`: who can talk to whom, on which ports,
//! as DOT, Mermaid or JSON.
//!
//! The ends are the cluster's workloads (one node per identity), every node's host and the
//! outside address classes the policies tell apart; an edge carries the protocols and port
//! ranges the flow is allowed on. Ends with the same edges in and out are merged into one
//! equivalence class. The connectivity engine (`polc_compiler::connectivity`) computes both
//! from the selector policies, per class of ends rather than per flow.

use super::cluster::{self, ClusterArgs};
use super::diff::ends;
use crate::{EXIT_CLEAN, EXIT_USAGE, Io};
use petgraph::graph::{DiGraph, NodeIndex};
use polc_compiler::connectivity::{Connectivity, Graph, PROTOS, PortSet, PortSetId, domain};
use polc_compiler::eval::Peer;
use serde_json::json;
use std::collections::HashMap;
use std::fmt::Write as _;

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
    let mut conn = Connectivity::new(model, &peers);
    let Graph { classes, edges } = conn.graph();
    let mut texts: HashMap<PortSetId, String> = HashMap::new();
    let mut graph: DiGraph<String, String> = DiGraph::new();
    let nodes: Vec<NodeIndex> = classes
        .iter()
        .map(|c| {
            let names: Vec<&str> = c.iter().map(|&i| all[i].1.as_str()).collect();
            graph.add_node(names.join(" | "))
        })
        .collect();
    for (a, b, l) in edges {
        let text = texts
            .entry(l)
            .or_insert_with(|| allowed_text(conn.sets().get(l)))
            .clone();
        graph.add_edge(nodes[a], nodes[b], text);
    }
    let text = match args.format {
        GraphFormat::Dot => {
            let mut s = String::from("digraph polc {\n  rankdir=LR;\n  node [shape=box];\n");
            for i in graph.node_indices() {
                let _ = writeln!(s, "  n{} [label={:?}];", i.index(), graph[i]);
            }
            for e in graph.edge_indices() {
                if let Some((a, b)) = graph.edge_endpoints(e) {
                    let _ = writeln!(
                        s,
                        "  n{} -> n{} [label={:?}];",
                        a.index(),
                        b.index(),
                        graph[e]
                    );
                }
            }
            s.push_str("}\n");
            s
        }
        GraphFormat::Mermaid => {
            let mut s = String::from("flowchart LR\n");
            for i in graph.node_indices() {
                let _ = writeln!(
                    s,
                    "  n{}[\"{}\"]",
                    i.index(),
                    graph[i].replace('"', "#quot;")
                );
            }
            for e in graph.edge_indices() {
                if let Some((a, b)) = graph.edge_endpoints(e) {
                    let _ = writeln!(
                        s,
                        "  n{} -->|\"{}\"| n{}",
                        a.index(),
                        graph[e].replace('"', "#quot;"),
                        b.index()
                    );
                }
            }
            s
        }
        GraphFormat::Json => {
            let nodes: Vec<_> = graph
                .node_indices()
                .map(|i| {
                    json!({
                        "id": i.index(),
                        "members": classes[i.index()].iter().map(|&k| all[k].1.clone()).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let edges: Vec<_> = graph
                .edge_indices()
                .filter_map(|e| {
                    graph.edge_endpoints(e).map(
                        |(a, b)| json!({"from": a.index(), "to": b.index(), "allowed": graph[e]}),
                    )
                })
                .collect();
            let mut s = serde_json::to_string_pretty(&json!({"nodes": nodes, "edges": edges}))?;
            s.push('\n');
            s
        }
    };
    io.stdout.write_all(text.as_bytes())?;
    Ok(EXIT_CLEAN)
}
