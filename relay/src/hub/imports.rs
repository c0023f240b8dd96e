//! Changes imported from the cluster's log entering a loaded document (`hub/cluster.rs` says
//! where they come from).
//!
//! They take the fast path, as a peer's `Changes` do: checked, stored and forwarded to the
//! document's subscribers as they came, with no Automerge work on the hub's loop. A change
//! whose dependencies the document lacks (the log holds them later than it: a relay that came
//! back after a crash, or entries read out of order) is held here and tried again after every
//! import into the document, so it is forwarded once it applies. Handing it to Automerge
//! instead would queue it inside the document, where it waits for its dependencies and is
//! then applied without reaching any subscriber. What is held is bounded, and after
//! [`ORPHANS_KEPT`] goes to Automerge after all (the store has it either way: the follower
//! wrote it before the hub saw it).

use weft_core::DocId;

use super::Hub;
use crate::metrics::Metrics;

/// Imported chunks held per document, waiting for their dependencies, at most (past it, a
/// chunk goes to Automerge at once).
const MAX_ORPHANS: usize = 1_024;
/// How long an imported chunk waits for its dependencies before it goes to Automerge.
const ORPHANS_KEPT_MS: u64 = 30_000;

/// What the fast path made of an imported chunk.
enum Fast {
    /// New changes entered the document.
    Applied,
    /// Nothing more to do: the document had every change (or the engine failed, and said so).
    Had,
    /// Some dependency is missing.
    Orphan,
    /// It did not go through the fast path (does not parse as checked changes, or the
    /// engine refused it): Automerge decides.
    Refused,
}

/// Imported chunks waiting for their dependencies, per document (`Hub::orphans`).
#[derive(Default)]
pub(crate) struct Orphans {
    /// When the oldest arrived (hub clock, ms) and the chunks in arrival order.
    by_doc: weft_core::hash::HashMap<DocId, (u64, Vec<Vec<u8>>)>,
}

impl Hub {
    /// `doc` finished loading: changes imported while it loaded enter it now.
    pub(super) fn apply_waiting_imports(&mut self, doc: DocId) {
        let Some(waiting) = self.imports_waiting.remove(&doc) else {
            return;
        };
        if self.host.is_loaded(doc) {
            for changes in waiting {
                self.apply_imported(doc, &changes);
            }
        }
    }

    /// An imported chunk into loaded `doc`: the fast path, held while a dependency is
    /// missing, Automerge when the fast path refuses it.
    pub(super) fn apply_imported(&mut self, doc: DocId, changes: &[u8]) {
        match self.import_fast(doc, changes) {
            Fast::Applied => self.retry_orphans(doc),
            Fast::Had => {}
            Fast::Orphan => {
                let now = self.now_ms();
                let held = self
                    .orphans
                    .by_doc
                    .entry(doc)
                    .or_insert_with(|| (now, Vec::new()));
                if held.1.len() < MAX_ORPHANS {
                    held.1.push(changes.to_vec());
                } else {
                    self.import_automerge(doc, changes);
                }
            }
            Fast::Refused => self.import_automerge(doc, changes),
        }
    }

    fn import_fast(&mut self, doc: DocId, changes: &[u8]) -> Fast {
        let now = self.now_ms();
        let mut checked = Vec::new();
        let parsed =
            weft_core::check::check_chunks(changes, &self.cfg.engine.limits, &mut 0, &mut checked);
        if parsed.is_err() {
            return Fast::Refused;
        }
        // The follower wrote `changes` as a chunk before the hub saw them.
        match self.host.import(now, doc, checked, changes.to_vec()) {
            Ok(Some(0)) => Fast::Had,
            Ok(Some(_)) => {
                Metrics::inc(&self.metrics.cluster_delivered);
                Fast::Applied
            }
            Ok(None) => Fast::Orphan,
            Err(e) => {
                tracing::warn!(%doc, error = %e, "changes from the cluster's log not applied");
                Fast::Had
            }
        }
    }

    /// New changes entered `doc`: the chunks held for it are tried again until none applies.
    fn retry_orphans(&mut self, doc: DocId) {
        loop {
            let Some((since, held)) = self.orphans.by_doc.remove(&doc) else {
                return;
            };
            let mut left = Vec::new();
            let mut progress = false;
            for changes in held {
                match self.import_fast(doc, &changes) {
                    Fast::Applied => progress = true,
                    Fast::Had => {}
                    Fast::Orphan => left.push(changes),
                    Fast::Refused => self.import_automerge(doc, &changes),
                }
            }
            if !left.is_empty() {
                self.orphans.by_doc.insert(doc, (since, left));
            }
            if !progress {
                return;
            }
        }
    }

    /// Chunks held longer than [`ORPHANS_KEPT_MS`] go to Automerge (which holds them inside
    /// the document); those of documents no longer loaded are dropped (the store has them).
    /// For housekeeping.
    pub(super) fn expire_orphans(&mut self) {
        if self.orphans.by_doc.is_empty() {
            return;
        }
        let now = self.now_ms();
        let mut expired = Vec::new();
        let host = &self.host;
        self.orphans.by_doc.retain(|doc, (since, held)| {
            if !host.is_loaded(*doc) {
                return false;
            }
            if now.saturating_sub(*since) < ORPHANS_KEPT_MS {
                return true;
            }
            expired.push((*doc, std::mem::take(held)));
            false
        });
        for (doc, held) in expired {
            tracing::warn!(
                %doc,
                chunks = held.len(),
                "changes from the cluster's log still lack their dependencies; applied as they are"
            );
            for changes in held {
                self.import_automerge(doc, &changes);
            }
        }
    }

    /// Through Automerge, which holds changes whose dependencies are missing.
    fn import_automerge(&mut self, doc: DocId, changes: &[u8]) {
        let now = self.now_ms();
        match self
            .host
            .change(now, doc, |am| am.load_incremental(changes))
        {
            Ok((Ok(_), Some(_))) => Metrics::inc(&self.metrics.cluster_delivered),
            Ok((Ok(_), None)) => {} // it had them
            Ok((Err(e), _)) => {
                tracing::error!(%doc, error = %e, "changes from the cluster's log do not load");
            }
            Err(e) => {
                tracing::warn!(%doc, error = %e, "changes from the cluster's log not applied")
            }
        }
    }
}
