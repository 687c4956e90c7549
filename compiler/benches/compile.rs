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

#[path = "common/cluster.rs"]
mod cluster;

use cluster::{changed_rule, model};
use criterion::{Criterion, criterion_group, criterion_main};
use polc_compiler::compile::Compilation;
use polc_compiler::mapstate::ProxyPorts;
use std::hint::black_box;
use std::time::Duration;

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
