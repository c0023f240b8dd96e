//! Checkpoint throughput and the cost of a hot, large document, against a throwaway Postgres.
//!
//! ```text
//! cargo bench -p weft-relay --bench checkpoint            # 10,000 conversations, 100k hot
//! cargo bench -p weft-relay --bench checkpoint -- --quick # 1,000 conversations, 10k hot
//! ```
//! Sizes: `WEFT_BENCH_DOCS`, `WEFT_BENCH_MESSAGES` (per conversation), `WEFT_BENCH_HOT`.
//!
//! Workloads (figures printed, not asserted; a human table on stderr, one JSON object on
//! stdout):
//! - **throughput**: N dirty conversations of M messages in the relay's redb store, one
//!   checkpoint round writes them all (first checkpoint: every row is new). Baseline: the same
//!   content bytes inserted into a plain `(id, bytes)` table with the same batching — what
//!   Postgres alone costs.
//! - **incremental**: one new message in each of 10% of them, one round.
//! - **hot**: one conversation of H messages receiving one message per round: time per
//!   checkpoint, and the resulting minimum gap the checkpointer enforces (10x that cost).
//! - **lag**: `WEFT_BENCH_RATE` changes/s (default 50) over a tenth of the conversations (at
//!   most 500), 1 s interval, the checkpointer running as in the relay: p50/p99 of the lag
//!   gauge sampled every 100 ms.

// The bench uses part of the tests' Postgres helper.
#[allow(dead_code)]
#[path = "../tests/common/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_core::automerge::Automerge;
use weft_core::store::docs::{self as docstore, ChunkKind};
use weft_core::store::{GroupCommit, KvStore, RedbStore, WriteBatch};
use weft_core::DocId;
use weft_relay::RelayDocMeta as DocMeta;
use weft_relay::{CheckpointConfig, Checkpointer, DirtyDocs, Metrics, RoundStats};
use weft_schema::{Conversation, Id, NewConversation, NewMessage};

const T0: u64 = 1_700_000_000_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn conversation(messages: usize, seed: u8) -> Automerge {
    let mut am = Automerge::new();
    Conversation::create(
        &mut am,
        &NewConversation {
            title: "Bench".into(),
            participants: vec!["alice".into(), "bob".into()],
        },
        T0,
    )
    .expect("a valid conversation");
    for i in 0..messages {
        say(&mut am, i, seed);
    }
    am
}

fn say(am: &mut Automerge, i: usize, seed: u8) {
    let mut id = [seed; 16];
    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
    let author = ["alice", "bob"][i & 1];
    weft_schema::send_message(
        am,
        &NewMessage::text(
            author,
            format!("message number {i}: see you at the station at noon"),
        ),
        Id::from_bytes(id),
        T0 + i as u64,
    )
    .expect("a valid message");
}

fn doc_id(i: usize) -> DocId {
    let mut b = [0xd0; 16];
    b[..8].copy_from_slice(&(i as u64).to_be_bytes());
    DocId::from_bytes(b)
}

fn meta() -> DocMeta {
    let mut m = DocMeta::default();
    m.owner = Some("alice".into());
    m.created_at_ms = T0;
    m.access.insert("bob".into(), weft_core::Role::ReadWrite);
    m
}

/// The workloads' sizes, from the environment and `--quick`.
struct Sizes {
    quick: bool,
    docs: usize,
    per_doc: usize,
    hot_messages: usize,
}

impl Sizes {
    fn from_env() -> Sizes {
        let quick = std::env::args().any(|a| a == "--quick");
        Sizes {
            quick,
            docs: env("WEFT_BENCH_DOCS", if quick { 1_000 } else { 10_000 }),
            per_doc: env("WEFT_BENCH_MESSAGES", 100),
            hot_messages: env("WEFT_BENCH_HOT", if quick { 10_000 } else { 100_000 }),
        }
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let sizes = Sizes::from_env();
    let Some(server) = pg::PgServer::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temp dir");
    let kv: Arc<dyn KvStore> = Arc::new(
        RedbStore::open_with_tables(
            dir.path().join("relay.redb"),
            &weft_relay::TABLES,
            Default::default(),
        )
        .expect("a store"),
    );
    let group = Arc::new(GroupCommit::new(kv).expect("a writer"));
    let (docs, per_doc) = (sizes.docs, sizes.per_doc);
    eprintln!("building {docs} conversations of {per_doc} messages...");
    let template = conversation(per_doc, 1);
    let bytes = template.save();
    for start in (0..docs).step_by(1_000) {
        let mut batch = WriteBatch::new();
        for i in start..(start + 1_000).min(docs) {
            docstore::put_chunk(&mut batch, doc_id(i), ChunkKind::Snapshot, bytes.clone());
            docstore::put_meta(&mut batch, doc_id(i), &meta());
        }
        group.submit(batch).wait().expect("stored");
    }
    let bench = Bench {
        sizes,
        server,
        group,
        dirty: DirtyDocs::new(),
        template,
        bytes,
    };
    rt.block_on(bench.run());
}

/// What the workloads share: the relay's store holding the conversations, and Postgres.
struct Bench {
    sizes: Sizes,
    server: pg::PgServer,
    group: Arc<GroupCommit>,
    dirty: Arc<DirtyDocs>,
    /// The conversation every stored one is a copy of, and its saved bytes.
    template: Automerge,
    bytes: Vec<u8>,
}

impl Bench {
    /// Every workload in turn, then the JSON report on stdout.
    async fn run(&self) {
        let metrics = Arc::new(Metrics::default());
        let cfg = CheckpointConfig::new(self.server.url(), Duration::from_secs(5));
        let (mut cp, _) = Checkpointer::start(cfg, self.group.clone(), self.dirty.clone(), metrics)
            .await
            .expect("checkpointer");
        let (stats, docs_s, mb_s) = self.throughput(&mut cp).await;
        let (base_docs_s, base_mb_s) = self.baseline().await;
        let inc_docs_s = self.incremental(&mut cp).await;
        let (hot_mb, median) = self.hot(&mut cp).await;
        drop(cp);
        let lag = self.lag().await;
        println!(
            "{}",
            serde_json::json!({
                "workload": "checkpoint",
                "lag_changes_per_s": lag.rate,
                "lag_documents": lag.docs,
                "lag_p50_s": lag.p50,
                "lag_p99_s": lag.p99,
                "documents": stats.documents,
                "messages_per_document": self.sizes.per_doc,
                "docs_per_s": docs_s,
                "mb_per_s": mb_s,
                "incremental_docs_per_s": inc_docs_s,
                "hot_messages": self.sizes.hot_messages,
                "hot_content_mb": hot_mb,
                "hot_checkpoint_s": median.as_secs_f64(),
                "hot_min_gap_s": (median * 10).as_secs_f64().max(5.0),
                "baseline": {
                    "what": "raw bytea inserts of the same content, same batching",
                    "docs_per_s": base_docs_s,
                    "mb_per_s": base_mb_s,
                },
            })
        );
    }

    /// Throughput: every conversation new to Postgres, one round. Its stats, docs/s, MB/s.
    async fn throughput(&self, cp: &mut Checkpointer) -> (RoundStats, f64, f64) {
        for i in 0..self.sizes.docs {
            self.dirty.mark(doc_id(i));
        }
        let t = Instant::now();
        let stats = cp.round(true).await.expect("a round");
        let secs = t.elapsed().as_secs_f64();
        let mb = stats.bytes as f64 / 1e6;
        let (docs_s, mb_s) = (stats.documents as f64 / secs, mb / secs);
        eprintln!(
            "checkpoint: {} docs, {:.1} MB content in {secs:.2}s: {docs_s:.0} docs/s, {mb_s:.2} MB/s",
            stats.documents, mb
        );
        (stats, docs_s, mb_s)
    }

    /// Baseline: the same bytes, plain inserts, same batch size, no Automerge work. Docs/s
    /// and MB/s.
    async fn baseline(&self) -> (f64, f64) {
        let (docs, bytes) = (self.sizes.docs, &self.bytes);
        let db = pg::client(&self.server).await;
        db.batch_execute("create table bench_raw (id text primary key, content bytea)")
            .await
            .expect("table");
        let stmt = db
            .prepare("insert into bench_raw values ($1, $2)")
            .await
            .expect("prepared");
        let t = Instant::now();
        let mut db = db;
        for start in (0..docs).step_by(64) {
            let tx = db.transaction().await.expect("tx");
            for i in start..(start + 64).min(docs) {
                tx.execute(&stmt, &[&doc_id(i).to_string(), bytes])
                    .await
                    .expect("insert");
            }
            tx.commit().await.expect("commit");
        }
        let base_secs = t.elapsed().as_secs_f64();
        let base_docs_s = docs as f64 / base_secs;
        let base_mb_s = (bytes.len() * docs) as f64 / 1e6 / base_secs;
        eprintln!("baseline (raw bytea inserts): {base_docs_s:.0} docs/s, {base_mb_s:.2} MB/s");
        (base_docs_s, base_mb_s)
    }

    /// Incremental: one new message in a tenth of them, one round. Docs/s.
    async fn incremental(&self, cp: &mut Checkpointer) -> f64 {
        let touched = (self.sizes.docs / 10).max(1);
        let mut am = self.template.clone();
        let before = am.get_heads();
        say(&mut am, self.sizes.per_doc, 2);
        let change = am.save_after(&before);
        let mut batch = WriteBatch::new();
        for i in 0..touched {
            docstore::put_chunk(
                &mut batch,
                doc_id(i),
                ChunkKind::Incremental,
                change.clone(),
            );
        }
        self.group.submit(batch).await.expect("stored");
        for i in 0..touched {
            self.dirty.mark(doc_id(i));
        }
        let t = Instant::now();
        let inc = cp.round(true).await.expect("a round");
        let inc_secs = t.elapsed().as_secs_f64();
        eprintln!(
            "incremental: {} docs with one new message in {inc_secs:.2}s: {:.0} docs/s",
            inc.documents,
            inc.documents as f64 / inc_secs
        );
        inc.documents as f64 / inc_secs
    }

    /// Hot: one large conversation, one message per round. Its content in MB and the median
    /// cost of a round.
    async fn hot(&self, cp: &mut Checkpointer) -> (f64, Duration) {
        let hot_messages = self.sizes.hot_messages;
        eprintln!("building a {hot_messages}-message conversation...");
        let mut hot = conversation(hot_messages, 3);
        let hot_doc = DocId::from_bytes([0xee; 16]);
        let mut batch = WriteBatch::new();
        docstore::put_chunk(&mut batch, hot_doc, ChunkKind::Snapshot, hot.save());
        docstore::put_meta(&mut batch, hot_doc, &meta());
        self.group.submit(batch).await.expect("stored");
        self.dirty.mark(hot_doc);
        let t = Instant::now();
        let first = cp.round(true).await.expect("a round");
        let hot_first = t.elapsed();
        let mut costs = Vec::new();
        for i in 0..5 {
            let before = hot.get_heads();
            say(&mut hot, hot_messages + i, 3);
            let mut batch = WriteBatch::new();
            docstore::put_chunk(
                &mut batch,
                hot_doc,
                ChunkKind::Incremental,
                hot.save_after(&before),
            );
            self.group.submit(batch).await.expect("stored");
            self.dirty.mark(hot_doc);
            let t = Instant::now();
            cp.round(true).await.expect("a round");
            costs.push(t.elapsed());
        }
        costs.sort();
        let median = costs[costs.len() / 2];
        eprintln!(
            "hot: {hot_messages} messages, {:.1} MB; first checkpoint {:.2}s; one new message: \
             median {:.2}s per checkpoint -> checkpointed at most every {:.1}s",
            first.bytes as f64 / 1e6,
            hot_first.as_secs_f64(),
            median.as_secs_f64(),
            (median * 10).as_secs_f64().max(5.0),
        );
        (first.bytes as f64 / 1e6, median)
    }

    /// Lag under a steady load: `rate` changes per second spread over `lag_docs`
    /// conversations, a 1 s interval, the checkpointer running as in the relay; the lag
    /// gauge (age of the oldest change not yet checkpointed) sampled every 100 ms.
    async fn lag(&self) -> Lag {
        let lag_docs = (self.sizes.docs / 10).clamp(1, 500);
        let rate = env("WEFT_BENCH_RATE", 50);
        let lag_secs = env(
            "WEFT_BENCH_LAG_SECS",
            if self.sizes.quick { 10 } else { 30 },
        );
        let chain = self.lag_chain(rate * lag_secs / lag_docs + 2);
        let metrics = Arc::new(Metrics::default());
        let stop = Arc::new(tokio::sync::Notify::new());
        let runner = {
            let stop = stop.clone();
            let cfg = CheckpointConfig::new(self.server.url(), Duration::from_secs(1));
            let (cp, _) =
                Checkpointer::start(cfg, self.group.clone(), self.dirty.clone(), metrics.clone())
                    .await
                    .expect("checkpointer");
            tokio::spawn(cp.run(async move { stop.notified().await }))
        };
        let mut samples = Vec::new();
        let t = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        let mut sample = tokio::time::interval(Duration::from_millis(100));
        let mut written = 0usize;
        while t.elapsed() < Duration::from_secs(lag_secs as u64) {
            tokio::select! {
                _ = tick.tick() => {
                    let (doc, step) = (written % lag_docs, written / lag_docs);
                    if step < chain.len() {
                        let mut batch = WriteBatch::new();
                        docstore::put_chunk(&mut batch, doc_id(doc), ChunkKind::Incremental, chain[step].clone());
                        self.group.submit(batch).await.expect("stored");
                        self.dirty.mark(doc_id(doc));
                        written += 1;
                    }
                }
                _ = sample.tick() => samples.push(
                    metrics.checkpoint_lag_ms.load(std::sync::atomic::Ordering::Relaxed),
                ),
            }
        }
        stop.notify_one();
        runner.await.expect("checkpointer ran");
        samples.sort_unstable();
        let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize] as f64 / 1e3;
        let (lag_p50, lag_p99) = (p(0.5), p(0.99));
        eprintln!(
            "lag: {written} changes over {lag_docs} conversations in {lag_secs}s, 1s interval: \
             p50 {lag_p50:.2}s, p99 {lag_p99:.2}s"
        );
        Lag {
            rate,
            docs: lag_docs,
            p50: lag_p50,
            p99: lag_p99,
        }
    }

    /// `steps` successive one-message changes after what the incremental round added.
    fn lag_chain(&self, steps: usize) -> Vec<Vec<u8>> {
        let per_doc = self.sizes.per_doc;
        let mut chain = Vec::with_capacity(steps);
        let mut am = self.template.clone();
        say(&mut am, per_doc, 2); // what the incremental round added
        for j in 0..steps {
            let before = am.get_heads();
            say(&mut am, per_doc + 1 + j, 4);
            chain.push(am.save_after(&before));
        }
        chain
    }
}

/// What the lag workload measured.
struct Lag {
    rate: usize,
    docs: usize,
    p50: f64,
    p99: f64,
}
