//! Costs of the chat operations on large conversations. Figures are printed, not asserted.
//!
//! `cargo bench -p weft-schema` (add `-- --quick` for a fast pass). Building the 100k-message
//! conversation takes a while: it is written in batches of 1,000 messages per change, in the
//! same layout `send_message` writes, and checked with a typed read before measuring.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use weft_schema::automerge::transaction::Transactable;
use weft_schema::automerge::{ActorId, Automerge, ObjType, ReadDoc, ROOT};
use weft_schema::{
    edit_message, find_message, last_messages, messages_changed_since, messages_json, send_message,
    to_json, Conversation, Hlc, Id, MessageKey, NewConversation, NewMessage,
};

const T0: u64 = 1_700_000_000_000;

fn id(n: u64) -> Id {
    let mut b = [0u8; 16];
    b[8..].copy_from_slice(&n.to_be_bytes());
    Id::from_bytes(b)
}

/// A conversation of `n` messages, built once per run.
fn conversation(n: u64) -> &'static Automerge {
    static BUILT: OnceLock<Mutex<BTreeMap<u64, &'static Automerge>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    built
        .entry(n)
        .or_insert_with(|| Box::leak(Box::new(build(n))))
}

/// A conversation of `n` messages, one every second from `T0`.
fn build(n: u64) -> Automerge {
    let mut doc = Automerge::new().with_actor(ActorId::from(vec![1u8; 16]));
    Conversation::create(
        &mut doc,
        &NewConversation {
            title: "big".into(),
            participants: vec!["alice".into(), "bob".into()],
        },
        T0,
    )
    .unwrap();
    let node = Hlc::node_for_actor(doc.get_actor());
    let (_, msgs) = doc.get(ROOT, "messages").unwrap().unwrap();
    let mut i = 0;
    while i < n {
        let mut tx = doc.transaction();
        for _ in 0..1000.min(n - i) {
            let key = MessageKey {
                created_at: Hlc::new(T0 + i * 1000, 0, node).unwrap(),
                id: id(i),
            };
            let m = tx.put_object(&msgs, key.to_string(), ObjType::Map).unwrap();
            tx.put(&m, "id", key.id.as_str()).unwrap();
            tx.put(&m, "author", if i % 2 == 0 { "alice" } else { "bob" })
                .unwrap();
            tx.put(&m, "created_at", key.created_at.to_string())
                .unwrap();
            let body = tx.put_object(&m, "body", ObjType::Text).unwrap();
            tx.splice_text(&body, 0, 0, &format!("message number {i}"))
                .unwrap();
            tx.put(&m, "deleted", false).unwrap();
            i += 1;
        }
        tx.commit();
    }
    assert_eq!(last_messages(&doc, 1).unwrap().value[0].id, id(n - 1));
    doc
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append one message");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut next = 10_000_000u64;
    for n in [1_000u64, 10_000, 100_000] {
        let base = conversation(n);
        g.bench_function(format!("{n} messages"), |b| {
            b.iter_custom(|iters| {
                // Start again from the base conversation every 100 appends, so the measured
                // conversation stays within 10% of its nominal size (clones are not timed).
                let mut total = Duration::ZERO;
                let mut doc = base.clone();
                for i in 0..iters {
                    if i % 100 == 99 {
                        doc = base.clone();
                    }
                    next += 1;
                    let msg = NewMessage::text("alice", "a new message");
                    let t = Instant::now();
                    let wall = T0 + n * 1000 + i;
                    black_box(send_message(&mut doc, &msg, id(next), wall).unwrap());
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn reads(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let big = conversation(100_000);
    g.bench_function("last 50 of 100000 messages", |b| {
        b.iter(|| black_box(last_messages(big, 50).unwrap()))
    });
    g.bench_function("find by id in 100000 messages", |b| {
        b.iter(|| black_box(find_message(big, &id(50_000)).unwrap()))
    });
    // A checkpoint after one new message and one edit.
    let mut later = big.clone();
    let since = later.get_heads();
    send_message(
        &mut later,
        &NewMessage::text("bob", "new"),
        id(200_000),
        T0 + 200_000_000,
    )
    .unwrap();
    edit_message(&mut later, &id(50_000), "edited", T0 + 200_000_001).unwrap();
    g.bench_function(
        "messages changed since a checkpoint, 100000 messages",
        |b| b.iter(|| black_box(messages_changed_since(&later, &since).unwrap())),
    );
    drop(later);
    let mid = conversation(10_000);
    g.bench_function("messages_json of 10000 messages", |b| {
        b.iter(|| black_box(messages_json(mid).unwrap()))
    });
    g.bench_function("to_json of 10000 messages", |b| {
        b.iter(|| black_box(to_json(mid).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, append, reads);
criterion_main!(benches);
