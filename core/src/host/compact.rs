//! Durable writes coming back, and compaction: a document's chunks replaced by one snapshot.

use super::{Action, Host, Waiting};
use crate::engine::Millis;
use crate::hash::HashSet;
use crate::store::docs::{self, ChunkKey};
use crate::store::{StoreError, WriteBatch};
use crate::DocId;

impl Host {
    /// Reports a commit ticket's result, at `now`.
    pub fn committed(&mut self, now: Millis, what: Waiting, result: Result<(), StoreError>) {
        self.engine.set_now(now);
        match (what, result) {
            (Waiting::Persist(id), Ok(())) => {
                let doc = self.engine.persist_doc(id);
                self.engine.persisted(id);
                if let Some(doc) = doc {
                    self.maybe_compact(doc);
                }
            }
            (Waiting::Persist(id), Err(e)) => {
                tracing::error!(error = %e, "store write failed; dropping the document from memory");
                self.engine.persist_failed(id);
            }
            (Waiting::Compaction(doc, replaced), Ok(())) => {
                self.compacting.remove(&doc);
                tracing::debug!(%doc, replaced, "compacted");
            }
            (Waiting::Quarantine(doc), result) => {
                // Failed, the chunks stay where they were and are set aside at the next load.
                if let Err(e) = result {
                    tracing::warn!(%doc, error = %e, "setting unparsable chunks aside failed");
                }
            }
            (Waiting::Compaction(doc, _), Err(e)) => {
                // The old chunks are still there (the batch was atomic); try again later.
                tracing::warn!(%doc, error = %e, "compaction failed");
                self.compacting.remove(&doc);
            }
        }
    }

    /// Replaces a document's chunks by one snapshot when enough have accumulated.
    ///
    /// Called when a write is durable and when received changes were folded. The snapshot is
    /// the engine's document as it stands, which holds every change of every chunk recorded so
    /// far provided no received change waits to be folded: local changes and sync-path changes
    /// enter the document at once, fast-path changes when folded. Chunks whose writes are still
    /// in flight may be replaced too: the compaction batch is submitted after them and the
    /// group-commit writer applies batches in order.
    ///
    /// A document with received changes still pending waits for a moment without any, except
    /// a stale one past `compact_max_chunks`: its compaction snapshots what a reload reads
    /// from the store, which pending changes do not affect, and a document written to
    /// without pause would otherwise never compact and grow without bound.
    pub(super) fn maybe_compact(&mut self, doc: DocId) {
        if self.compacting.contains_key(&doc) {
            return;
        }
        let Some(stored) = self.chunks.get(&doc) else {
            return;
        };
        let n = stored.chunks.len();
        let over_bound = n >= self.cfg.compact_max_chunks;
        let due = over_bound
            || (n >= self.cfg.compact_after_chunks
                && stored.incremental_bytes >= stored.snapshot_bytes * self.cfg.compact_growth);
        if !due {
            return;
        }
        let stale = self.engine.is_stale(doc);
        if self.engine.has_pending(doc) && !(stale && over_bound) {
            return;
        }
        if stale {
            // Reloaded from the store, and saved by the load ([`load_for_compaction`], when
            // the driver honours `wants_snapshot`) or else by the fold after it, which
            // reports `Folded` and so comes back here.
            self.snapshot_on_load.insert(doc);
            self.engine.materialize(doc);
            return;
        }
        let stored_bytes = stored.snapshot_bytes + stored.incremental_bytes;
        if self.compact_elsewhere(doc, stored_bytes) {
            return;
        }
        let Some(snapshot) = self.engine.snapshot(doc) else {
            return;
        };
        // Every recorded chunk is in the snapshot: take them all.
        let replaces = self
            .chunks
            .get_mut(&doc)
            .map(|s| std::mem::take(&mut s.chunks))
            .unwrap_or_default();
        self.compact(doc, snapshot, replaces);
    }

    /// Writes `snapshot` in place of the chunks `replaces`, which must hold no change the
    /// snapshot lacks (see [`docs::compact`]); chunks the host knows beyond them stay.
    pub(super) fn compact(&mut self, doc: DocId, snapshot: Vec<u8>, replaces: Vec<ChunkKey>) {
        let stored = self.chunks.entry(doc).or_default();
        if !stored.chunks.is_empty() {
            let replaced: HashSet<ChunkKey> = replaces.iter().copied().collect();
            stored.chunks.retain(|k| !replaced.contains(k));
        }
        // Chunks that stay were written after the snapshot's source was read: a few at most.
        stored.incremental_bytes = 0;
        stored.snapshot_bytes = snapshot.len();
        // What stays: the snapshot and the chunks written after its source was read.
        self.engine.set_stored_bytes(
            doc,
            (stored.snapshot_bytes + stored.incremental_bytes) as u64,
        );
        let mut batch = WriteBatch::new();
        let key = docs::compact(&mut batch, doc, snapshot, &replaces);
        stored.chunks.push(key);
        self.compacting.insert(doc, replaces.len());
        let ticket = self.group.submit(batch);
        self.actions.push_back(Action::Wait {
            what: Waiting::Compaction(doc, replaces.len()),
            ticket,
        });
    }

    /// Moves chunks a load found unparsable out of the document's way, keeping what could be
    /// salvaged from them as a new chunk (already in the loaded document).
    pub(super) fn set_aside(&mut self, doc: DocId, quarantine: &[docs::Quarantine]) {
        let mut batch = WriteBatch::new();
        let stored = self.chunks.entry(doc).or_default();
        for q in quarantine {
            stored.chunks.retain(|k| *k != q.key);
            if let Some(key) = docs::quarantine(&mut batch, doc, q) {
                stored.chunks.push(key);
            }
        }
        self.quarantined += quarantine.len() as u64;
        let ticket = self.group.submit(batch);
        self.actions.push_back(Action::Wait {
            what: Waiting::Quarantine(doc),
            ticket,
        });
    }
}
