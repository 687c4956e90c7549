//! Times each stage of a full compile at our users' scale (`cargo run --release -p
//! polc-compiler --example scale`); the criterion benchmarks in `benches/compile.rs` measure
//! the same stages.

use polc_compiler::compile::Compilation;
use polc_compiler::r#gen::{Scale, generate};
use polc_compiler::mapstate::ProxyPorts;
use polc_compiler::model::{Config, Model};
use polc_compiler::source::{SourceFile, SourceMap};
use polc_compiler::{Options, lint};
use std::time::Instant;

fn main() {
    let t = Instant::now();
    let files = generate(&Scale::users());
    let mut sources = SourceMap::new();
    for f in files {
        sources.add(SourceFile::new(f.path, f.text));
    }
    println!("generate: {:?}", t.elapsed());
    let t = Instant::now();
    let (objects, diags) = lint(&sources, &Options::default());
    println!(
        "read+lint: {:?} ({} objects, {} diagnostics)",
        t.elapsed(),
        objects.len(),
        diags.len()
    );
    let t = Instant::now();
    let (model, _) = Model::build(&objects, Config::default());
    println!(
        "model: {:?} ({} rules, {} identities)",
        t.elapsed(),
        model.policies.rules.len(),
        model.identities.len()
    );
    let t = Instant::now();
    let c = Compilation::new(&model, None, ProxyPorts::default());
    let est = c.estimates(&model);
    println!(
        "compile: {:?} ({} endpoints, {} classes, entry estimate total {} max {}, {} over 16384)",
        t.elapsed(),
        c.endpoints.len(),
        c.policies.len(),
        est.iter().sum::<usize>(),
        est.iter().max().unwrap_or(&0),
        est.iter().filter(|n| **n > 16384).count()
    );
    let node = model.inventory.nodes[10].name.clone();
    let t = Instant::now();
    let c = Compilation::new(&model, Some(&node), ProxyPorts::default());
    let maps: Vec<_> = c
        .endpoints
        .iter()
        .map(|e| c.materialize(&model, e))
        .collect();
    println!(
        "one node: {:?} ({} endpoints, {} entries)",
        t.elapsed(),
        c.endpoints.len(),
        maps.iter().map(|m| m.map.len()).sum::<usize>()
    );
}
