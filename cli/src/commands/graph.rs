//! `polc graph --policies PATH... --inventory PATH...`: who can talk to whom, on which ports,
//! as DOT, Mermaid or JSON.
//!
//! The ends are the cluster's workloads (one node per identity), every node's host and the
//! outside address classes the policies tell apart; an edge carries the protocols and port
//! ranges the flow is allowed on, judged by the reference evaluator over exact port classes.
//! Ends with the same edges in and out are merged into one equivalence class.

use super::cluster::{self, ClusterArgs};
use super::diff::ends;
use super::test::{family_fits, port_points_of};
use crate::{EXIT_CLEAN, EXIT_USAGE, Io};
use petgraph::graph::{DiGraph, NodeIndex};
use polc_compiler::eval::{self, Flow, Peer, Verdict};
use polc_compiler::ir::Proto;
use polc_compiler::model::Model;
use polc_grammar::polt;
use serde_json::json;
use std::collections::BTreeMap;
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

/// The allowed port ranges of one flow direction, per protocol, as text.
fn allowed(model: &Model, src: Peer, dst: Peer, points: &BTreeMap<Proto, Vec<u16>>) -> String {
    let mut parts = Vec::new();
    for (proto, pts) in points {
        if !family_fits(*proto, src, dst) {
            continue;
        }
        let (min, max) = if matches!(proto, Proto::Icmp | Proto::Icmpv6) {
            (0, 255)
        } else {
            (1, 65535)
        };
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for (k, &port) in pts.iter().enumerate() {
            let end = pts.get(k + 1).map_or(max, |n| n.saturating_sub(1));
            let flow = Flow {
                src,
                dst,
                proto: *proto,
                port,
                request: None,
            };
            if eval::decide(model, &flow).verdict == Verdict::Allow {
                match ranges.last_mut() {
                    Some(r) if r.1.saturating_add(1) == port => r.1 = end,
                    _ => ranges.push((port, end)),
                }
            }
        }
        let text: Vec<String> = ranges
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
    let mut points: BTreeMap<Proto, Vec<u16>> = BTreeMap::new();
    for (proto, port) in port_points_of(&[model], &polt::Ports::Any) {
        points.entry(proto).or_default().push(port);
    }
    // The full matrix of edge labels.
    let n = all.len();
    let mut label = vec![vec![String::new(); n]; n];
    for (i, (src, _)) in all.iter().enumerate() {
        for (j, (dst, _)) in all.iter().enumerate() {
            if i != j {
                label[i][j] = allowed(model, *src, *dst, &points);
            }
        }
    }
    // Ends with the same row and column are one class.
    let mut classes: Vec<Vec<usize>> = Vec::new();
    let signature = |i: usize| -> (Vec<&String>, Vec<&String>) {
        (
            (0..n).map(|j| &label[i][j]).collect(),
            (0..n).map(|j| &label[j][i]).collect(),
        )
    };
    for (i, row) in label.iter().enumerate() {
        match classes
            .iter_mut()
            .find(|c| signature(c[0]) == signature(i) && label[c[0]][i] == row[c[0]])
        {
            Some(c) => c.push(i),
            None => classes.push(vec![i]),
        }
    }
    let mut graph: DiGraph<String, String> = DiGraph::new();
    let nodes: Vec<NodeIndex> = classes
        .iter()
        .map(|c| {
            let names: Vec<&str> = c.iter().map(|&i| all[i].1.as_str()).collect();
            graph.add_node(names.join(" | "))
        })
        .collect();
    for (a, ca) in classes.iter().enumerate() {
        for (b, cb) in classes.iter().enumerate() {
            // Within a class, and between classes, the label of one representative pair.
            let (i, j) = (ca[0], cb[0]);
            let l = if a == b {
                cb.get(1).map_or(String::new(), |&k| label[i][k].clone())
            } else {
                label[i][j].clone()
            };
            if !l.is_empty() {
                graph.add_edge(nodes[a], nodes[b], l);
            }
        }
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
