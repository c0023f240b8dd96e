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

use super::pg::{self, PgConn};
use super::prepare::{self, Prepared, Row};
use super::{blocking, Chain, CheckpointError, Checkpointer, RoundStats, HOT_FACTOR};
use crate::metrics::Metrics;

impl Checkpointer {
    /// Writes every dirty document that is due (`all`: every dirty one, ignoring the hot
    /// bound). On an error the unwritten documents go back to the dirty set.
    pub async fn round(&mut self, all: bool) -> Result<RoundStats, CheckpointError> {
        let now = Instant::now();
        self.not_before.retain(|_, t| *t > now);
        let not_before = &self.not_before;
        let mut docs = self
            .dirty
            .take(|d| all || not_before.get(d).is_none_or(|t| *t <= now));
        docs.sort_unstable_by_key(|(d, _)| *d);
        let mut stats = RoundStats::default();
        let mut rest = docs.as_slice();
        while !rest.is_empty() {
            let (batch, tail) = rest.split_at(rest.len().min(self.cfg.batch_docs.max(1)));
            let result =
                tokio::time::timeout(self.cfg.batch_timeout, self.write_batch(batch)).await;
            let result = result.unwrap_or(Err(CheckpointError::Timeout));
            match result {
                Ok(s) => {
                    stats.documents += s.documents;
                    stats.bytes += s.bytes;
                    stats.merged += s.merged;
                    stats.deleted += s.deleted;
                    rest = tail;
                }
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    Metrics::inc(&self.metrics.checkpoint_failures);
                    tracing::warn!(error = %Chain(&e), failures = self.failures, pending = rest.len(), retry_in = ?self.backoff(), "checkpoint failed; will retry");
                    self.dirty.put_back(rest.iter().copied());
                    // The connection may be broken or mid-transaction: start afresh.
                    self.conn = None;
                    self.update_gauges();
                    return Err(e);
                }
            }
        }
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

    async fn write_batch(
        &mut self,
        batch: &[(DocId, Instant)],
    ) -> Result<RoundStats, CheckpointError> {
        if self.conn.as_ref().is_none_or(PgConn::is_closed) {
            let mut conn = PgConn::connect(&self.target, self.cfg.connect_timeout).await?;
            if !self.migrated {
                self.migrate(&mut conn).await?;
            }
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected just above");
        let ids: Vec<DocId> = batch.iter().map(|(d, _)| *d).collect();
        let (stmts, tx, mut stored) = conn.begin_with_statements(&ids).await?;

        let store = self.group.store().clone();
        let t_prepare = Instant::now();
        let kinds = self.cfg.kinds.clone();
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
                    tracing::error!(%doc, error = %Chain(&e), "cannot checkpoint a document");
                    Metrics::inc(&self.metrics.checkpoint_failures);
                    self.not_before
                        .insert(*doc, Instant::now() + self.cfg.max_backoff);
                    self.dirty.mark(*doc);
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
        let mut stats = RoundStats::default();
        // Pipelined: every document's statements are in flight at once on the connection
        // (each document's own statements still run in order).
        futures_util::future::try_join_all(rows.iter().map(|row| pg::write_row(&stmts, &tx, row)))
            .await?;
        for row in &rows {
            stats.documents += 1;
            match &row.body {
                prepare::Body::Content { content, .. } => stats.bytes += content.len() as u64,
                prepare::Body::Deleted => stats.deleted += 1,
                prepare::Body::Unchanged => {}
            }
        }
        tx.commit()
            .await
            .map_err(|source| CheckpointError::Postgres { source })?;
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
                stats.merged += 1;
                docstore::put_chunk(&mut feed, row.doc, ChunkKind::Snapshot, theirs.clone());
            }
            let gap = row.cost.saturating_mul(HOT_FACTOR);
            if gap > self.cfg.interval {
                self.not_before.insert(row.doc, Instant::now() + gap);
            }
        }
        if !feed.is_empty() {
            if let Err(e) = self.group.submit(feed).await {
                tracing::warn!(error = %Chain(&e), "could not store merged checkpoint content");
            }
        }
        Ok(stats)
    }

    /// After a round that erased deleted documents: `VACUUM` their tables, so the dead row
    /// versions that still hold the deleted content leave the tables' pages now rather than
    /// whenever autovacuum comes by. Best-effort: a failure is logged, and the next deletion's
    /// vacuum (or autovacuum) covers what this one missed.
    async fn vacuum(&mut self) {
        let Some(conn) = self.conn.as_ref() else {
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
                self.conn = None;
            }
            Err(_) => {
                tracing::warn!("VACUUM after erasing deleted documents timed out; dead rows stay until autovacuum");
                // The connection may still be running it: start afresh.
                self.conn = None;
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
