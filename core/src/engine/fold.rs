//! Received changes waiting in memory: folded into the document in batches, or, with lazy
//! folding, dropped from memory once durable (the document goes stale) and brought back by a
//! reload from the store when something needs the materialized document.

use automerge::{Change, ChangeHash};

use super::docs::sorted;
use super::{
    raw_of, ConnId, Deferred, DocState, Engine, EngineError, Origin, Output, Slot, MAX_RECENT,
};
use crate::doc::{DocError, Document};
use crate::hash::HashSet;
use crate::DocId;

impl Engine {
    /// After an input, pending received changes leave memory at once when folding is not
    /// delayed or a batch is full.
    pub(super) fn after_input(&mut self, doc: DocId) {
        let due = match self.docs.get(&doc) {
            Some(Slot::Ready(ds)) => {
                self.cfg.fold_delay == 0 || ds.pending.len() >= self.cfg.fold_batch
            }
            _ => false,
        };
        if due {
            self.fold_or_drop(doc);
        }
    }

    /// Pending received changes are due to leave memory: folded into the document, or, with
    /// [`EngineConfig::lazy_fold`] while every peer of the document is live (nothing needs the
    /// materialized document), dropped from memory once durable, the document going stale.
    /// Returns whether it folded.
    pub(super) fn fold_or_drop(&mut self, doc: DocId) -> bool {
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return false;
        };
        if ds.reloading {
            // Pending changes are folded into the reloaded document.
            return false;
        }
        // Too many operations to apply here: they leave memory once durable and a reload
        // (off the driver's thread) applies them, whatever the peers' modes.
        let heavy = pending_ops(ds) >= self.cfg.inline_apply_ops;
        if self.cfg.lazy_fold && (heavy || ds.peers.values().all(|pd| pd.live)) {
            ds.stale = true;
            let in_flight: HashSet<ChangeHash> = ds
                .persists
                .iter()
                .flat_map(|p| p.pending.iter().copied())
                .collect();
            let durable: HashSet<ChangeHash> = ds
                .pending
                .iter()
                .map(Change::hash)
                .filter(|h| !in_flight.contains(h))
                .collect();
            drop_from_memory(ds, &durable);
            ds.pending_since = if ds.pending.is_empty() {
                None
            } else {
                Some(self.now)
            };
            return false;
        }
        self.fold_logged(doc);
        true
    }

    /// With lazy folding, received changes waiting to be folded that hold too many operations
    /// to apply here ([`EngineConfig::inline_apply_ops`]) are not folded by whatever needs the
    /// materialized document: the document goes stale instead, and the reload applies them.
    pub(super) fn shed_heavy(&mut self, doc: DocId) {
        let heavy = matches!(self.docs.get(&doc), Some(Slot::Ready(ds))
            if self.cfg.lazy_fold && !ds.stale && !ds.reloading
                && pending_ops(ds) >= self.cfg.inline_apply_ops);
        if heavy {
            self.fold_or_drop(doc);
        }
    }

    /// Folds pending received changes into the document in one batch.
    ///
    /// Automerge keeps changes whose dependencies are missing in a queue of its own; a batch
    /// that supplies the missing dependency releases them into the document. Those changes were
    /// never persisted or announced, so they are now.
    pub(super) fn fold(&mut self, doc: DocId) -> Result<(), DocError> {
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return Ok(());
        };
        if ds.pending.is_empty() || ds.stale {
            return Ok(());
        }
        let batch = std::mem::take(&mut ds.pending);
        ds.pending_hashes.clear();
        ds.pending_since = None;
        let applied = ds.doc.apply(batch);
        if applied.is_ok() {
            self.out.push_back(Output::Folded { doc });
            if let Some(g) = self.gate.as_mut() {
                g.materialized(doc, &ds.doc);
            }
        }
        let actual = ds.doc.heads();
        if actual != ds.heads {
            let released = ds.doc.changes_since(&ds.heads);
            ds.heads = actual;
            if let Some(g) = self.gate.as_mut() {
                for c in &released {
                    g.observe(doc, c, Some(ConnId(u64::MAX)));
                }
            }
            if !released.is_empty() {
                let raw = released.iter().map(|c| raw_of(c, None)).collect();
                self.persist_changes(doc, Origin::Released, raw, false);
            }
        }
        applied
    }

    /// [`Self::fold`], logging a failure; returns whether it succeeded.
    pub(super) fn fold_logged(&mut self, doc: DocId) -> bool {
        match self.fold(doc) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%doc, error = %e, "folding received changes failed");
                false
            }
        }
    }

    /// A loaded document with every pending change folded in, marked used now.
    pub(super) fn ready_folded(&mut self, doc: DocId) -> Result<&mut DocState, EngineError> {
        let now = self.now;
        self.touched.insert(doc);
        if !self.is_loaded(doc) {
            return Err(EngineError::NotLoaded { doc });
        }
        if !self.materialize(doc) {
            return Err(EngineError::NotLoaded { doc });
        }
        self.fold(doc)?;
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return Err(EngineError::NotLoaded { doc });
        };
        ds.last_used = now;
        Ok(ds)
    }

    /// Whether the document is materialized (loaded and not stale). A stale one is reloaded
    /// from the store (an `Output::Load`); inputs that need it wait for [`Engine::loaded`].
    pub fn materialize(&mut self, doc: DocId) -> bool {
        self.run_due_pumps();
        self.materialize_for(doc, "api")
    }

    pub(super) fn materialize_for(&mut self, doc: DocId, why: &str) -> bool {
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return false;
        };
        if !ds.stale {
            return true;
        }
        if !ds.reloading {
            if pending_ops(ds) >= self.cfg.inline_apply_ops {
                // Reloaded now, they would be folded in here; once durable they leave memory
                // and the load (off the driver's thread) applies them. `persisted` reloads.
                ds.reload_wanted = true;
                return false;
            }
            tracing::debug!(%doc, why, "reloading a stale document");
            ds.reloading = true;
            ds.reload_wanted = false;
            // A reloading document's folds are not due (`doc_deadline`).
            self.touched.insert(doc);
            self.out.push_back(Output::Load { doc });
        }
        false
    }

    /// A document handed over for a slot that is ready: the reload of a stale document, which
    /// takes the place of what memory has.
    pub(super) fn reloaded(&mut self, doc: DocId, mut ds: Box<DocState>, loaded: Option<Document>) {
        if ds.reloading {
            match loaded {
                Some(d) => ds.doc = d,
                None => {
                    tracing::error!(%doc, "a stale document reloaded empty; keeping what memory has")
                }
            }
            ds.reloading = false;
            ds.stale = false;
            ds.recent.clear();
            let deferred = std::mem::take(&mut ds.deferred);
            self.docs.insert(doc, Slot::Ready(ds));
            self.materialized(doc, deferred);
        } else {
            self.docs.insert(doc, Slot::Ready(ds));
        }
    }

    /// A stale document was reloaded: fold what memory holds into it and run the inputs that
    /// waited for it.
    fn materialized(&mut self, doc: DocId, deferred: Vec<Deferred>) {
        self.touched.insert(doc);
        let nothing_pending = !self.has_pending(doc);
        self.fold_logged(doc);
        if nothing_pending {
            // The reload alone brought the document up to date: report it like a fold, so a
            // driver that reloaded it to compact it does so now (before it goes stale again).
            self.out.push_back(Output::Folded { doc });
        }
        self.adopt_reloaded(doc);
        if let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) {
            if let Some(g) = self.gate.as_mut() {
                g.materialized(doc, &ds.doc);
            }
        }
        for d in deferred {
            match d {
                Deferred::Msg(conn, msg) => {
                    if let Err(error) = self.handle_inbound(conn, msg) {
                        self.out
                            .push_back(Output::ProtocolError { conn, doc, error });
                    }
                }
                Deferred::SyncAfterReload(conn, reset, msg) => {
                    if let Err(error) = self.sync_after_reload(conn, doc, reset, *msg) {
                        self.out
                            .push_back(Output::ProtocolError { conn, doc, error });
                    }
                }
                Deferred::Pump(conn) => self.pump(doc, conn),
            }
        }
    }

    /// After a reload: changes the store held that the engine never announced (a driver that
    /// writes a change before it imports it, [`Engine::import`], may have had the reload read
    /// it first; the import then finds it known) are announced now, in causal order after
    /// every write before them, and the document's heads advance. Heads the reloaded document
    /// lacks are an inconsistency, logged.
    fn adopt_reloaded(&mut self, doc: DocId) {
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
        };
        let actual = sorted(ds.doc.heads());
        if actual == sorted(ds.heads.clone()) {
            return;
        }
        if !ds.heads.iter().all(|h| ds.doc.has_change(h)) {
            tracing::error!(%doc, "a reloaded document lacks heads the engine announced");
            return;
        }
        let found = ds.doc.changes_since(&ds.heads);
        ds.heads = actual;
        if found.is_empty() {
            // Heads that were not all heads (one an ancestor of another): now they are.
            tracing::debug!(%doc, "a reloaded document's heads replace the engine's");
            return;
        }
        tracing::debug!(%doc, changes = found.len(), "a reload found stored changes not yet imported");
        if let Some(g) = self.gate.as_mut() {
            // Not made here: from no connection the gate checks.
            for c in &found {
                g.observe(doc, c, Some(ConnId(u64::MAX)));
            }
        }
        let raw = found.iter().map(|c| raw_of(c, None)).collect();
        self.announce_stored(doc, raw);
    }

    /// Whether the document is stale (see
    /// [`EngineConfig::lazy_fold`](super::EngineConfig::lazy_fold)).
    pub fn is_stale(&self, doc: DocId) -> bool {
        matches!(self.docs.get(&doc), Some(Slot::Ready(ds)) if ds.stale)
    }
}

/// Drops the pending changes in `durable` from memory (the store has them), remembering their
/// hashes in `recent`.
pub(super) fn drop_from_memory(ds: &mut DocState, durable: &HashSet<ChangeHash>) {
    if durable.is_empty() {
        return;
    }
    if ds.recent.len() + durable.len() > MAX_RECENT {
        ds.recent.clear();
    }
    ds.pending.retain(|c| !durable.contains(&c.hash()));
    for h in durable {
        ds.pending_hashes.remove(h);
        ds.recent.insert(*h);
    }
}

/// Operations in the received changes waiting to be folded.
pub(super) fn pending_ops(ds: &DocState) -> usize {
    ds.pending.iter().map(Change::len).sum()
}
