//! The loader's map sync in a real kernel (needs root; prints why it skips otherwise):
//!
//! - `from_empty/100000`: 100,000 policy-map entries (8 endpoints of 12,500) written into
//!   empty maps (the maps are emptied, untimed, before each run);
//! - `delta/100`: 100 entry changes (50 added, 50 removed) on top of those 100,000, with the
//!   loader's record of what is installed (as `polc lab` or an agent holds it);
//! - `reopen/100000`: a new loader over the same pins (what `polc load` pays on each run):
//!   reading the 100,000 entries back from the kernel; the programs are reused, not verified.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use criterion::{Criterion, criterion_group, criterion_main};
use polc_compiler::ir::Direction;
use polc_compiler::mapstate::{Entry, Key};
use polc_ebpf::loader::{self, Loader, Options};
use polc_ebpf::state::{EndpointState, NodeState, policy_bytes};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const ENDPOINTS: u16 = 8;
const PER_ENDPOINT: u32 = 12_500;

/// `PER_ENDPOINT` entries per endpoint; `shift` moves the first `n` of endpoint 1 to new keys.
fn state(shift: u32) -> NodeState {
    let mut s = NodeState::new(&[]).expect("ipcache");
    for ep in 1..=ENDPOINTS {
        let mut map = BTreeMap::new();
        for i in 0..PER_ENDPOINT {
            let moved = ep == 1 && i < shift;
            let identity = 256 + i + if moved { 1_000_000 } else { 0 };
            let key = Key {
                direction: if i % 2 == 0 {
                    Direction::Ingress
                } else {
                    Direction::Egress
                },
                identity,
                proto: 6,
                port: 1000 + (i % 50) as u16,
                port_prefix: 16,
            };
            map.insert(key, Entry::allow());
        }
        s.insert_endpoint(
            ep,
            EndpointState {
                name: format!("bench/pod-{ep}"),
                identity: 1000 + u32::from(ep),
                ingress_enforced: true,
                egress_enforced: true,
                policy: policy_bytes(&map),
            },
        );
    }
    s
}

fn empty() -> NodeState {
    let mut s = state(0);
    for e in s.endpoints.values_mut() {
        e.policy.clear();
    }
    s
}

struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = loader::unload(&self.0);
    }
}

fn bench(c: &mut Criterion) {
    if polc_ebpf::sys::euid() != 0 {
        eprintln!("SKIPPED: the sync benchmark needs root (BPF maps)");
        return;
    }
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/polc-bench-{}",
        std::process::id()
    )));
    let mut l = Loader::open(&pins.0, &Options::default()).expect("open");
    let full = state(0);
    let shifted = state(50);
    let none = empty();
    assert_eq!(full.policy_entries(), 100_000);
    l.install(&none, &[]).expect("install");

    let mut g = c.benchmark_group("sync");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("from_empty/100000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                l.sync(&none).expect("empty");
                let t = Instant::now();
                let r = l.sync(&full).expect("fill");
                total += t.elapsed();
                assert_eq!(r.changes.policy.added, 100_000);
            }
            total
        })
    });
    l.sync(&full).expect("fill");
    g.bench_function("reopen/100000", |b| {
        b.iter(|| {
            let again = Loader::open(&pins.0, &Options::default()).expect("reopen");
            assert_eq!(again.installed().state.policy_entries(), 100_000);
        })
    });
    g.sample_size(100);
    g.measurement_time(Duration::from_secs(10));
    let mut flip = false;
    g.bench_function("delta/100", |b| {
        b.iter(|| {
            flip = !flip;
            let next = if flip { &shifted } else { &full };
            let r = l.sync(next).expect("delta");
            assert_eq!(r.changes.policy.total(), 100);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
