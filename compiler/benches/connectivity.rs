//! Connectivity at our users' scale (400 nodes, 36,000 pods, 3,000 CNPs, 200 CCNPs, 500 CIDR
//! groups, from the generator behind `polc gen`): what `polc graph` and `polc diff` compute
//! between reading the model and writing the output.
//!
//! ```text
//! cargo bench -p polc-compiler --bench connectivity
//! ```
//!
//! - `graph`: the selector policies of every end's class, the sides and identity classes,
//!   and the graph's classes and edges, for the ends `polc graph` draws (one pod per
//!   identity, every host, one outside address per class of the named prefixes);
//! - `diff_one_policy`: the pairs of ends whose ports change when one CNP gains a port (the
//!   old policies' classes computed in full, the changed classes recomputed, the pairs they
//!   reach compared).
//!
//! Reading the YAML and building the models happen once, outside the measurement. Under
//! `cargo test` (no `--bench` argument) the benchmarks run once on the small scale.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/cluster.rs"]
mod cluster;

use cluster::{changed_rule, model};
use criterion::{Criterion, criterion_group, criterion_main};
use polc_compiler::connectivity::{self, Connectivity};
use std::hint::black_box;
use std::time::Duration;

fn connectivity(c: &mut Criterion) {
    let old = model();
    let peers = connectivity::ends(&old, &old);
    let mut new = old.clone();
    let (index, _, changed) = changed_rule(&new);
    new.policies.rules[index] = changed;
    new.reindex();

    let mut group = c.benchmark_group("connectivity");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(120));
    group.bench_function("graph", |b| {
        b.iter(|| {
            let mut conn = Connectivity::new(&old, &peers);
            black_box(conn.graph())
        })
    });
    group.bench_function("diff_one_policy", |b| {
        b.iter(|| black_box(connectivity::changes(&old, &new, &peers)))
    });
    group.finish();
}

criterion_group!(benches, connectivity);
criterion_main!(benches);
