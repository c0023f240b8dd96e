//! One checkpoint round: take the due dirty documents, and per batch lock them, prepare their
//! rows (fetching Postgres's content when it holds heads the relay lacks), write them in one
//! transaction, and feed merged-in content back into the relay's store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use weft_core::store::docs::{self as docstore, ChunkKind};
use weft_core::store::WriteBatch;
use weft_core::DocId;
use weft_schema::rules::Kinds;

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::pg::{self, PgConn};
use super::prepare::{self, Prepared, Row};
use super::{blocking, Chain, CheckpointError, Checkpointer, DirtyDocs, RoundStats, HOT_FACTOR};
use crate::metrics::Metrics;

impl Checkpointer {
    /// Writes every dirty document that is due (`all`: every dirty one, ignoring the hot
    /// bound). Batches run `connections` at a time, each in its own transaction on its own
    /// connection, so one batch's preparation overlaps another's writes. On an error the
    /// unwritten documents go back to the dirty set.
    pub async fn round(&mut self, all: bool) -> Result<RoundStats, CheckpointError> {
        let now = Instant::now();
        self.not_before.retain(|_, t| *t > now);
        let not_before = &self.not_before;
        let mut docs = self
            .dirty
            .take(|d| all || not_before.get(d).is_none_or(|t| *t <= now));
        docs.sort_unstable_by_key(|(d, _)| *d);
        let batches: Vec<&[(DocId, Instant)]> = docs.chunks(self.cfg.batch_docs.max(1)).collect();
        let mut stats = RoundStats::default();
        let mut pool = match self.connect_pool(batches.len()).await {
            Ok(pool) => pool,
            Err(e) => {
                self.dirty.put_back(docs.iter().copied());
                self.failed(&e, docs.len());
                return Err(e);
            }
        };
        let shared = Shared {
            group: &self.group,
            kinds: &self.cfg.kinds,
            dirty: &self.dirty,
            metrics: &self.metrics,
            max_backoff: self.cfg.max_backoff,
            interval: self.cfg.interval,
        };
        let timeout = self.cfg.batch_timeout;
        let mut running = FuturesUnordered::new();
        let mut queue = batches.iter().copied();
        let mut failed: Option<CheckpointError> = None;
        let mut hot = Vec::new();
        loop {
            // Start a batch on every idle connection, unless one already failed.
            while failed.is_none() && !pool.is_empty() {
                let Some(batch) = queue.next() else { break };
                let mut conn = pool.pop().expect("checked non-empty just above");
                let shared = &shared;
                running.push(async move {
                    let r = tokio::time::timeout(timeout, write_batch(shared, &mut conn, batch))
                        .await
                        .unwrap_or(Err(CheckpointError::Timeout));
                    (conn, batch, r)
                });
            }
            let Some((conn, batch, result)) = running.next().await else {
                break;
            };
            match result {
                Ok(out) => {
                    stats.documents += out.stats.documents;
                    stats.bytes += out.stats.bytes;
                    stats.merged += out.stats.merged;
                    stats.deleted += out.stats.deleted;
                    hot.extend(out.hot);
                    for doc in out.unreadable {
                        hot.push((doc, Instant::now() + self.cfg.max_backoff));
                    }
                    pool.push(conn);
                }
                Err(e) => {
                    // The connection may be broken or mid-transaction: it is dropped.
                    self.dirty.put_back(batch.iter().copied());
                    failed.get_or_insert(e);
                }
            }
        }
        drop(running);
        self.not_before.extend(hot);
        if let Some(e) = failed {
            let pending: Vec<(DocId, Instant)> = queue.flatten().copied().collect();
            self.dirty.put_back(pending.iter().copied());
            self.failed(&e, pending.len());
            return Err(e);
        }
        self.conns = pool;
        self.failures = 0;
        if stats.deleted > 0 {
            self.vacuum().await;
        }
        self.update_gauges();
        Metrics::add(&self.metrics.checkpoint_documents, stats.documents);
        if stats.documents > 0 {
            tracing::debug!(
                documents = stats.documents,
                bytes = stats.bytes,
                merged = stats.merged,
                "checkpoint written"
            );
        }
        Ok(stats)
    }

    /// A round failed with `e`, `pending` documents unwritten (put back already).
    fn failed(&mut self, e: &CheckpointError, pending: usize) {
        self.failures = self.failures.saturating_add(1);
        Metrics::inc(&self.metrics.checkpoint_failures);
        tracing::warn!(error = %Chain(e), failures = self.failures, pending, retry_in = ?self.backoff(), "checkpoint failed; will retry");
        self.update_gauges();
    }

    /// Up to `connections` open connections (at most one per batch), connecting (and
    /// migrating, the first time) what is missing. Connections already open are kept.
    async fn connect_pool(&mut self, batches: usize) -> Result<Vec<PgConn>, CheckpointError> {
        self.conns.retain(|c| !c.is_closed());
        let want = self.cfg.connections.clamp(1, MAX_CONNECTIONS).min(batches);
        while self.conns.len() < want {
            let mut conn = PgConn::connect(&self.target, self.cfg.connect_timeout).await?;
            if !self.migrated {
                self.migrate(&mut conn).await?;
            }
            self.conns.push(conn);
        }
        Ok(std::mem::take(&mut self.conns))
    }
}

/// Connections a round may use at once, whatever the configuration asks.
const MAX_CONNECTIONS: usize = 16;

/// What every batch of a round reads.
struct Shared<'a> {
    group: &'a Arc<weft_core::store::GroupCommit>,
    kinds: &'a Arc<Kinds>,
    dirty: &'a DirtyDocs,
    metrics: &'a Metrics,
    max_backoff: std::time::Duration,
    interval: std::time::Duration,
}

/// What one batch wrote, and what the round must remember of it.
struct BatchOut {
    stats: RoundStats,
    /// Documents not to checkpoint again before the time given (hot ones).
    hot: Vec<(DocId, Instant)>,
    /// Documents that could not be read: marked dirty again, retried after the longest
    /// backoff.
    unreadable: Vec<DocId>,
}

/// One batch in one transaction on `conn`: lock, read the stored heads, prepare, write,
/// commit, then feed merged-in content back into the relay's store.
async fn write_batch(
    shared: &Shared<'_>,
    conn: &mut PgConn,
    batch: &[(DocId, Instant)],
) -> Result<BatchOut, CheckpointError> {
    let ids: Vec<DocId> = batch.iter().map(|(d, _)| *d).collect();
    let (stmts, tx, mut stored) = conn.begin_with_statements(&ids).await?;
    let mut out = BatchOut {
        stats: RoundStats::default(),
        hot: Vec::new(),
        unreadable: Vec::new(),
    };

    // Chunks deferred until now (a cluster's changes, `GroupCommit::defer`) are in the store
    // before it is read: a document marked dirty had its chunk deferred before.
    if let Some(barrier) = shared.group.barrier() {
        barrier
            .await
            .map_err(|source| CheckpointError::StoreWrite { source })?;
    }
    let store = shared.group.store().clone();
    let t_prepare = Instant::now();
    let kinds = shared.kinds.clone();
    let first = prepare_all(&store, &kinds, &ids, Arc::new(stored.clone())).await?;
    let mut rows: Vec<Box<Row>> = Vec::with_capacity(first.len());
    let mut again = Vec::new();
    for (doc, prepared) in ids.iter().zip(first) {
        match prepared {
            Ok(Prepared::Row(row)) => rows.push(row),
            Ok(Prepared::NeedsStored) => again.push(*doc),
            Ok(Prepared::Absent) => {}
            Err(e) => {
                // One unreadable document must not hold up the others: it is retried
                // after the longest backoff.
                tracing::error!(%doc, error = %Chain(&e), retry_in = ?shared.max_backoff, "cannot checkpoint a document");
                Metrics::inc(&shared.metrics.checkpoint_failures);
                out.unreadable.push(*doc);
                shared.dirty.mark(*doc);
            }
        }
    }
    if !again.is_empty() {
        let contents = pg::stored_content(&tx, &again).await?;
        for (doc, content) in contents {
            if let Some(s) = stored.get_mut(&doc) {
                s.content = Some(content);
            }
        }
        let merged = prepare_all(&store, &kinds, &again, Arc::new(stored)).await?;
        for prepared in merged {
            match prepared? {
                Prepared::Row(row) => rows.push(row),
                // Postgres changed under our lock: impossible; the next round retries.
                Prepared::NeedsStored | Prepared::Absent => {}
            }
        }
    }
    let t_write = Instant::now();
    let prepared_in = t_write - t_prepare;
    // Pipelined: every document's statements are in flight at once on the connection
    // (each document's own statements still run in order).
    futures_util::future::try_join_all(rows.iter().map(|row| pg::write_row(&stmts, &tx, row)))
        .await?;
    for row in &rows {
        out.stats.documents += 1;
        match &row.body {
            prepare::Body::Content { content, .. } => out.stats.bytes += content.len() as u64,
            prepare::Body::Deleted => out.stats.deleted += 1,
            prepare::Body::Unchanged => {}
        }
    }
    tx.commit()
        .await
        .map_err(|source| CheckpointError::Postgres { source })?;
    let committed = Instant::now();
    for row in &rows {
        // `batch` is sorted by document (the round sorts what it takes).
        if let Ok(i) = batch.binary_search_by_key(&row.doc, |(d, _)| *d) {
            shared
                .metrics
                .observe_checkpoint_lag(committed.saturating_duration_since(batch[i].1));
        }
    }
    tracing::debug!(
        documents = rows.len(),
        prepare_ms = prepared_in.as_millis() as u64,
        write_ms = t_write.elapsed().as_millis() as u64,
        "checkpoint batch"
    );

    // Feed what Postgres had and the relay lacked back into the relay's store.
    let mut feed = WriteBatch::new();
    for row in &rows {
        if let Some(theirs) = &row.merged_in {
            out.stats.merged += 1;
            docstore::put_chunk(&mut feed, row.doc, ChunkKind::Snapshot, theirs.clone());
        }
        let gap = row.cost.saturating_mul(HOT_FACTOR);
        if gap > shared.interval {
            out.hot.push((row.doc, committed + gap));
        }
    }
    if !feed.is_empty() {
        if let Err(e) = shared.group.submit(feed).await {
            tracing::warn!(error = %Chain(&e), "could not store merged checkpoint content");
        }
    }
    Ok(out)
}

impl Checkpointer {
    /// After a round that erased deleted documents: `VACUUM` their tables, so the dead row
    /// versions that still hold the deleted content leave the tables' pages now rather than
    /// whenever autovacuum comes by. Best-effort: a failure is logged, and the next deletion's
    /// vacuum (or autovacuum) covers what this one missed.
    async fn vacuum(&mut self) {
        let Some(conn) = self.conns.first() else {
            return;
        };
        let started = Instant::now();
        match tokio::time::timeout(self.cfg.batch_timeout, conn.vacuum_deleted()).await {
            Ok(Ok(())) => tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "vacuumed after erasing deleted documents"
            ),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "VACUUM after erasing deleted documents failed; dead rows stay until autovacuum");
                self.conns.remove(0);
            }
            Err(_) => {
                tracing::warn!("VACUUM after erasing deleted documents timed out; dead rows stay until autovacuum");
                // The connection may still be running it: start afresh.
                self.conns.remove(0);
            }
        }
    }
}

/// Blocking threads preparing one batch's rows at once.
const PREPARE_WORKERS: usize = 2;

/// Prepares `docs` on up to [`PREPARE_WORKERS`] blocking threads; results in `docs` order.
async fn prepare_all(
    store: &Arc<dyn weft_core::store::KvStore>,
    kinds: &Arc<Kinds>,
    docs: &[DocId],
    stored: Arc<HashMap<DocId, prepare::Stored>>,
) -> Result<Vec<Result<Prepared, CheckpointError>>, CheckpointError> {
    let per = docs.len().div_ceil(PREPARE_WORKERS).max(1);
    let tasks: Vec<_> = docs
        .chunks(per)
        .map(|chunk| {
            let (store, kinds, stored, chunk) =
                (store.clone(), kinds.clone(), stored.clone(), chunk.to_vec());
            blocking(move || {
                chunk
                    .iter()
                    .map(|d| prepare::prepare(store.as_ref(), &kinds, *d, stored.get(d)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut out = Vec::with_capacity(docs.len());
    for part in futures_util::future::try_join_all(tasks).await? {
        out.extend(part);
    }
    Ok(out)
}
