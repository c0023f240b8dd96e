//! Deferred writes: small lazy puts of chunks that the writer thread writes together, a few
//! milliseconds later, instead of one commit each.
//!
//! # Why
//!
//! A relay of a cluster stores every change twice over: the log in Postgres holds its durable
//! copy, and each relay's store a copy it serves documents from. Those store writes are lazy
//! (no fsync), but each is still a whole store commit (~20 us), made on every relay for every
//! change even when changes come one at a time. Deferred, the changes of a few milliseconds
//! share one commit.
//!
//! # Rules
//!
//! - Only lazy batches that put into `Table::CHUNKS` and nothing else are deferred: chunks are
//!   content-addressed, so two such puts never disagree and their order does not matter.
//!   Anything else (deletes, metadata, actor bindings, sync states) is written in order as
//!   before.
//! - A deferred batch is written before any batch submitted after [`GroupCommit::defer`]
//!   returned: [`GroupCommit::submit`] queues what is deferred ahead of its own batch. A
//!   durable commit therefore covers every write deferred before it, as for any lazy write.
//! - Reads of the store do not see a deferred batch until it is written. A reader that must
//!   (a document's load, a checkpoint's read) first awaits [`GroupCommit::barrier`].
//! - The writer thread writes what is deferred at most [`DEFER_FOR`] after the first of it;
//!   [`DEFER_MAX_OPS`] / [`DEFER_MAX_BYTES`] bound what waits (past them `defer` refuses and
//!   the caller submits, which writes everything).

use std::sync::atomic::Ordering;
use std::sync::mpsc::TrySendError;
use std::time::{Duration, Instant};

use super::{CommitTicket, Gate, GroupCommit, Request};
use crate::store::{BatchOp, Table, WriteBatch};

/// How long a deferred write waits at most before the writer thread writes it.
pub(crate) const DEFER_FOR: Duration = Duration::from_millis(20);
/// Operations deferred at most.
pub(crate) const DEFER_MAX_OPS: usize = 4096;
/// Bytes of keys and values deferred at most.
pub(crate) const DEFER_MAX_BYTES: usize = 1 << 20;

/// What waits to be written.
#[derive(Default)]
pub(super) struct Deferred {
    batch: WriteBatch,
    /// When the first of it was deferred.
    since: Option<Instant>,
}

impl Gate {
    /// Takes what is deferred (an empty batch when nothing is), with the count of deferred
    /// batches it reaches (to report to [`Gate::deferred_written`] once it is written).
    pub(super) fn take_deferred(&self) -> (WriteBatch, u64) {
        // Every submit asks: without deferred writes (a device's store), no lock.
        if self.deferred_ops.load(Ordering::SeqCst) == 0 {
            return (WriteBatch::new(), 0);
        }
        let mut d = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        d.since = None;
        self.deferred_ops.store(0, Ordering::SeqCst);
        let to = self.deferred_count.load(Ordering::SeqCst);
        (std::mem::take(&mut d.batch), to)
    }

    /// The deferred batches up to `to` (a count from [`Gate::take_deferred`]) are written, or
    /// failed.
    pub(super) fn deferred_written(&self, to: u64) {
        if to != 0 {
            self.deferred_done.fetch_max(to, Ordering::SeqCst);
        }
    }

    /// How long until what is deferred is due (zero when overdue); `None` when nothing is.
    pub(super) fn deferred_due(&self) -> Option<Duration> {
        if self.deferred_ops.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let d = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        let since = d.since?;
        Some(DEFER_FOR.saturating_sub(since.elapsed()))
    }
}

impl GroupCommit {
    /// Defers `batch`, to be written with others within 20 ms (`group/defer.rs`): for a
    /// lazy batch of puts into `Table::CHUNKS` alone, while what is deferred stays within
    /// bounds. `Err(batch)` when it cannot be deferred: the caller writes it as usual.
    pub fn defer(&self, batch: WriteBatch) -> Result<(), WriteBatch> {
        let only_chunks = batch
            .ops()
            .iter()
            .all(|op| matches!(op, BatchOp::Put { table, .. } if *table == Table::CHUNKS));
        if !batch.is_lazy() || batch.is_empty() || !only_chunks || self.sender.is_none() {
            return Err(batch);
        }
        let was_empty = {
            let mut d = self.gate.deferred.lock().unwrap_or_else(|e| e.into_inner());
            if d.batch.len() + batch.len() > DEFER_MAX_OPS
                || d.batch.size_bytes() + batch.size_bytes() > DEFER_MAX_BYTES
            {
                return Err(batch);
            }
            let was_empty = d.batch.is_empty();
            if was_empty {
                d.since = Some(Instant::now());
            }
            d.batch.extend(batch);
            self.gate
                .deferred_ops
                .store(d.batch.len(), Ordering::SeqCst);
            // Under the lock, so that a take counts exactly what it took.
            self.gate.deferred_count.fetch_add(1, Ordering::SeqCst);
            was_empty
        };
        if was_empty {
            self.wake_writer();
        }
        Ok(())
    }

    /// A ticket that completes once every write deferred so far is in the store; `None` when
    /// every one is (not merely taken for writing: the writer may be writing it). Await it
    /// before reading what a deferred write may hold.
    pub fn barrier(&self) -> Option<CommitTicket> {
        let done = self.gate.deferred_done.load(Ordering::SeqCst);
        (self.gate.deferred_count.load(Ordering::SeqCst) != done)
            .then(|| self.submit(WriteBatch::new()))
    }

    /// Whether a deferred write not yet taken for writing puts `key` into `table`.
    pub fn deferred_has(&self, table: Table, key: &[u8]) -> bool {
        if self.gate.deferred_ops.load(Ordering::SeqCst) == 0 {
            return false;
        }
        let d = self.gate.deferred.lock().unwrap_or_else(|e| e.into_inner());
        d.batch.ops().iter().any(|op| {
            matches!(op, BatchOp::Put { table: t, key: k, .. } if *t == table && k.as_slice() == key)
        })
    }

    /// Wakes the writer thread, idle in its queue, so that it starts timing what was just
    /// deferred. A full queue needs no wake-up: the writer looks at what is deferred after
    /// every group it writes.
    fn wake_writer(&self) {
        let Some(sender) = &self.sender else { return };
        let (done, _) = oneshot::channel();
        self.gate.pending.fetch_add(1, Ordering::SeqCst);
        let wake = Request {
            batch: WriteBatch::new(),
            done,
            deferred_to: 0,
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = sender.try_send(wake) {
            self.gate.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests;
