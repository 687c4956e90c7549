//! Compile performance at our users' scale: 400 nodes, 36,000 pods, 27,000 services, 3,000
//! CNPs, 200 CCNPs and 500 CIDR groups, from the deterministic generator (`polc gen`).
//!
//! ```text
//! cargo bench -p polc-compiler --bench compile
//! ```
//!
//! - `full_compile`: the selector policy of every endpoint class (which rules apply, with the
//!   identities each peer selects) and every endpoint's entry count;
//! - `one_node`: every endpoint of one node, down to its policy-map entries;
//! - `policy_change`: one CNP changes (a port is added, then removed again); only the
//!   endpoint classes the old or new rules select are recomputed.
//!
//! Reading the YAML and building the model (identities, lowering) happen once, outside the
//! measurement; `examples/scale.rs` prints those times too. Under `cargo test` (no `--bench`
//! argument) the benchmarks run once on the small scale so CI stays fast.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use polc_compiler::compile::Compilation;
use polc_compiler::r#gen::{Scale, generate};
use polc_compiler::ir::{PortRule, PortSpec, Ports, Proto, Rule};
use polc_compiler::mapstate::ProxyPorts;
use polc_compiler::model::{Config, Model};
use polc_compiler::raw::Kind;
use polc_compiler::source::{SourceFile, SourceMap};
use polc_compiler::{Options, lint};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

fn model() -> Model {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { Scale::users() } else { Scale::small() };
    let mut sources = SourceMap::new();
    for f in generate(&scale) {
        sources.add(SourceFile::new(f.path, f.text));
    }
    let (objects, diags) = lint(&sources, &Options::default());
    assert!(
        diags
            .iter()
            .all(|d| d.severity != polc_compiler::diag::Severity::Error),
        "the generated cluster must be valid"
    );
    let (model, _) = Model::build(&objects, Config::default());
    model
}

/// A CNP rule with an ingress item that has ports, and the same rule with one more port.
fn changed_rule(model: &Model) -> (usize, Arc<Rule>, Arc<Rule>) {
    let (i, rule) = model
        .policies
        .rules
        .iter()
        .enumerate()
        .find(|(_, r)| {
            r.origin.kind == Kind::CiliumNetworkPolicy
                && r.items
                    .iter()
                    .any(|it| !it.deny && matches!(&it.ports, Ports::List(p) if !p.is_empty()))
        })
        .expect("the generated cluster has a CNP with ports");
    let mut changed = (**rule).clone();
    for item in &mut changed.items {
        if let Ports::List(ports) = &mut item.ports
            && let Some(first) = ports.first().cloned()
        {
            ports.push(PortRule {
                proto: Proto::Tcp,
                port: PortSpec::Range(9443, 9443),
                redirect: None,
                loc: first.loc,
            });
            break;
        }
    }
    (i, rule.clone(), Arc::new(changed))
}

fn compile(c: &mut Criterion) {
    let mut model = model();
    let node = model.inventory.nodes[model.inventory.nodes.len() / 2]
        .name
        .clone();
    let mut group = c.benchmark_group("compile");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));

    group.bench_function("full_compile", |b| {
        b.iter(|| {
            let c = Compilation::new(&model, None, ProxyPorts::default());
            black_box(c.estimates(&model))
        })
    });

    group.bench_function("one_node", |b| {
        b.iter(|| {
            let c = Compilation::new(&model, Some(&node), ProxyPorts::default());
            let maps: Vec<_> = c
                .endpoints
                .iter()
                .map(|e| c.materialize(&model, e))
                .collect();
            black_box(maps)
        })
    });

    let (index, original, changed) = changed_rule(&model);
    let mut compilation = Compilation::new(&model, None, ProxyPorts::default());
    let mut flip = false;
    group.bench_function("policy_change", |b| {
        b.iter(|| {
            let (old, new) = if flip {
                (&changed, &original)
            } else {
                (&original, &changed)
            };
            flip = !flip;
            model.policies.rules[index] = new.clone();
            model.reindex();
            black_box(compilation.update(&model, &[(**old).clone()], &[(**new).clone()]))
        })
    });
    group.finish();
}

criterion_group!(benches, compile);
criterion_main!(benches);
