//! Syncing between two weft engines in memory, against Automerge's own sync loop on the same
//! documents, measured in the same run:
//! - catch-up: one side has 1,000 changes the other lacks;
//! - live: 1,000 changes made one at a time on one side while both are connected (weft sends
//!   each as a `Changes` message and an `Ack` to a receiver configured as the relay; the
//!   baseline runs a full sync round per change).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use weft_core::automerge::sync::{self, SyncDoc};
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{Automerge, ROOT};
use weft_core::engine::EngineConfig;
use weft_core::DocId;
use weft_tests::sim::Sim;

const N: usize = 1_000;

fn am_edit(am: &mut Automerge, i: usize) {
    let mut tx = am.transaction();
    tx.put(ROOT, format!("k{i}").as_str(), true).unwrap();
    tx.put(ROOT, "last", format!("k{i}").as_str()).unwrap();
    tx.commit();
}

fn am_sync(a: &mut Automerge, b: &mut Automerge, sa: &mut sync::State, sb: &mut sync::State) {
    loop {
        let m1 = a.generate_sync_message(sa);
        if let Some(m) = m1.clone() {
            b.receive_sync_message(sb, m).unwrap();
        }
        let m2 = b.generate_sync_message(sb);
        if let Some(m) = m2.clone() {
            a.receive_sync_message(sa, m).unwrap();
        }
        if m1.is_none() && m2.is_none() {
            break;
        }
    }
}

fn catch_up(c: &mut Criterion) {
    let doc = DocId::from_bytes([1; 16]);
    let mut g = c.benchmark_group("sync-catch-up-1000");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("automerge-loop", |b| {
        b.iter_batched(
            || {
                let mut a = Automerge::new();
                for i in 0..N {
                    am_edit(&mut a, i);
                }
                (a, Automerge::new())
            },
            |(mut a, mut bdoc)| {
                am_sync(
                    &mut a,
                    &mut bdoc,
                    &mut sync::State::new(),
                    &mut sync::State::new(),
                );
                assert_eq!(a.get_heads(), bdoc.get_heads());
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("weft-engines", |b| {
        b.iter_batched(
            || {
                let mut sim = Sim::new(
                    vec![EngineConfig::device(), EngineConfig::device()],
                    vec![doc],
                    7,
                );
                for i in 0..N {
                    sim.edit(0, doc, &format!("k{i}"));
                }
                sim.heads(1, doc);
                sim
            },
            |mut sim| {
                sim.connect(0, 1);
                assert!(sim.run_until_quiet(100_000));
                assert_eq!(sim.heads(0, doc), sim.heads(1, doc));
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn live(c: &mut Criterion) {
    let doc = DocId::from_bytes([2; 16]);
    let mut g = c.benchmark_group("sync-live-1000-one-by-one");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("automerge-round-per-change", |b| {
        b.iter_batched(
            || {
                (
                    Automerge::new(),
                    Automerge::new(),
                    sync::State::new(),
                    sync::State::new(),
                )
            },
            |(mut a, mut bdoc, mut sa, mut sb)| {
                for i in 0..N {
                    am_edit(&mut a, i);
                    am_sync(&mut a, &mut bdoc, &mut sa, &mut sb);
                }
                assert_eq!(a.get_heads(), bdoc.get_heads());
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("weft-fast-path", |b| {
        b.iter_batched(
            || {
                let mut sim = Sim::new(
                    vec![EngineConfig::device(), EngineConfig::device()],
                    vec![doc],
                    9,
                );
                sim.connect(0, 1);
                assert!(sim.run_until_quiet(1_000));
                sim
            },
            |mut sim| {
                for i in 0..N {
                    sim.edit(0, doc, &format!("k{i}"));
                    assert!(sim.run_until_quiet(1_000));
                }
                assert_eq!(sim.heads(0, doc), sim.heads(1, doc));
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, catch_up, live);
criterion_main!(benches);
