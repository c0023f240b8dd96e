//! Durable local writes and document loads, each against its baseline measured in the same run:
//! - one small change made durable through weft's group commit, alone and with 8 concurrent
//!   writers, against a raw redb insert (one transaction, immediate durability) of the same bytes;
//! - loading a 100k-change document from the store against `Automerge::load` of the same bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{Automerge, ObjType, ReadDoc, ROOT};
use weft_core::store::docs as store;
use weft_core::store::{ChunkKind, GroupCommit, KvStore, RedbStore, WriteBatch};
use weft_core::DocId;

fn small_change(i: u64) -> Vec<u8> {
    let mut am = Automerge::new();
    let mut tx = am.transaction();
    tx.put(ROOT, "typing", format!("message number {i}"))
        .unwrap();
    tx.commit();
    am.get_last_local_change().unwrap().raw_bytes().to_vec()
}

fn durable_writes(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let doc = DocId::from_bytes([1; 16]);
    let mut g = c.benchmark_group("durable-write");
    g.sample_size(20).measurement_time(Duration::from_secs(4));

    // Baseline: a raw redb transaction per insert, same bytes, same durability.
    let raw = redb::Database::create(dir.path().join("raw.redb")).unwrap();
    let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("raw");
    let mut i = 0u64;
    g.bench_function("raw-redb-insert", |b| {
        b.iter_batched(
            || {
                i += 1;
                (i.to_be_bytes(), small_change(i))
            },
            |(k, v)| {
                let tx = raw.begin_write().unwrap();
                tx.open_table(table)
                    .unwrap()
                    .insert(&k[..], &v[..])
                    .unwrap();
                tx.commit().unwrap();
            },
            BatchSize::SmallInput,
        )
    });

    let kv: Arc<dyn KvStore> = Arc::new(RedbStore::open(dir.path().join("weft.redb")).unwrap());
    let group = Arc::new(GroupCommit::new(kv).unwrap());
    g.bench_function("weft-one-writer", |b| {
        b.iter_batched(
            || {
                i += 1;
                small_change(i)
            },
            |bytes| {
                let mut batch = WriteBatch::new();
                store::put_chunk(&mut batch, doc, ChunkKind::Incremental, bytes);
                group.submit(batch).wait().unwrap();
            },
            BatchSize::SmallInput,
        )
    });
    // Eight writers at once: the time for all eight to be durable, per write.
    g.bench_function("weft-8-writers-per-write", |b| {
        b.iter_custom(|iters| {
            let changes: Vec<Vec<u8>> = (0..8).map(|k| small_change(1_000_000 + k)).collect();
            let start = Instant::now();
            std::thread::scope(|s| {
                for (w, bytes) in changes.iter().enumerate() {
                    let group = &group;
                    s.spawn(move || {
                        for n in 0..iters {
                            let mut batch = WriteBatch::new();
                            let mut v = bytes.clone();
                            v.extend_from_slice(&n.to_be_bytes());
                            v.push(w as u8);
                            store::put_chunk(&mut batch, doc, ChunkKind::Incremental, v);
                            group.submit(batch).wait().unwrap();
                        }
                    });
                }
            });
            start.elapsed() / 8
        })
    });
    g.finish();
    eprintln!("group commit: {} commits so far", group.commits());
}

fn big_doc(changes: usize) -> Automerge {
    let mut am = Automerge::new();
    let mut tx = am.transaction();
    let list = tx.put_object(ROOT, "messages", ObjType::List).unwrap();
    tx.commit();
    for i in 0..changes {
        let mut tx = am.transaction();
        let len = tx.length(&list);
        tx.insert(&list, len, format!("m{i}")).unwrap();
        tx.commit();
    }
    am
}

fn loads(c: &mut Criterion) {
    let n = std::env::var("WEFT_BENCH_LOAD_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let am = big_doc(n);
    let saved = am.save();
    let dir = tempfile::tempdir().unwrap();
    let kv = RedbStore::open(dir.path().join("load.redb")).unwrap();
    let doc = DocId::from_bytes([2; 16]);
    let mut batch = WriteBatch::new();
    store::put_chunk(&mut batch, doc, ChunkKind::Snapshot, saved.clone());
    kv.write(&batch).unwrap();

    let mut g = c.benchmark_group(format!("load-{n}-changes"));
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("automerge-load", |b| {
        b.iter(|| Automerge::load(&saved).unwrap())
    });
    g.bench_function("weft-store-load", |b| {
        b.iter(|| store::load_document(&kv, doc).unwrap().unwrap())
    });
    g.finish();
}

criterion_group!(benches, durable_writes, loads);
criterion_main!(benches);
