//! Lint throughput: `polc_compiler::lint` over 5,000 generated policies (one per file, about
//! 10 MB in all), reported per byte and per file.
//!
//! ```text
//! cargo bench -p polc-compiler --bench lint
//! ```
//!
//! The corpus comes from `common/gen.rs`, the generator behind the `gen_policies` example, and
//! is built once, outside the measurement: the numbers cover parsing, decoding and validation,
//! not file reading; dropping the result is included (see `scripts/bench-lint.sh` for end-to-end CLI numbers).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/gen.rs"]
mod generator;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use polc_compiler::Options;
use polc_compiler::source::{SourceFile, SourceMap};
use std::hint::black_box;
use std::time::Duration;

const FILES: usize = 5000;

fn sources() -> (SourceMap, u64) {
    let mut map = SourceMap::new();
    let mut bytes = 0;
    for (name, text) in generator::corpus(FILES) {
        bytes += text.len() as u64;
        map.add(SourceFile::new(name, text));
    }
    (map, bytes)
}

fn lint(c: &mut Criterion) {
    let (map, bytes) = sources();
    let opts = Options::default();

    // The corpus is meant to be clean: a finding here means the generator or a check is wrong,
    // and the benchmark would time the error path instead.
    let (objects, diags) = polc_compiler::lint(&map, &opts);
    assert_eq!(
        objects.len(),
        FILES,
        "every generated file holds one object"
    );
    let first = diags.iter().next().map(|d| {
        format!(
            "{} {} in {}",
            d.code.as_str(),
            d.message,
            map.get(d.loc.file).name
        )
    });
    assert!(
        first.is_none(),
        "the generated corpus has {} findings, the first: {}",
        diags.len(),
        first.unwrap_or_default()
    );

    let mut group = c.benchmark_group("lint");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.warm_up_time(Duration::from_secs(3));

    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("5000_files/bytes", |b| {
        b.iter(|| polc_compiler::lint(black_box(&map), &opts));
    });

    group.throughput(Throughput::Elements(FILES as u64));
    group.bench_function("5000_files/files", |b| {
        b.iter(|| polc_compiler::lint(black_box(&map), &opts));
    });
    group.finish();
}

criterion_group!(benches, lint);
criterion_main!(benches);
