//! Document loads: the engine asks for a document; the store read and `Automerge::load` run on
//! a blocking thread, at most `HubConfig::max_loads` at once, so a burst of loads cannot
//! starve the hub's own thread. First loads (a device is waiting for each) go before reloads
//! of stale documents (mostly for compaction). A document deleted while its load ran does not
//! come back (see `control.rs`). Saves the host hands out (a large document's whole for a
//! newcomer, a compaction's snapshot) run the same way, bounded alike, newcomers first.

use std::collections::VecDeque;

use weft_core::host::{Loaded, SaveJob, Saved};
use weft_core::store::docs::DocStoreError;
use weft_core::DocId;

use super::{Done, Hub};

/// Saves that wait for a blocking thread at most (each holds a copy of its document).
const MAX_SAVES_WAITING: usize = 8;

impl Hub {
    /// The engine needs `doc` loaded: it waits its turn, first loads before reloads.
    pub(super) fn queue_load(&mut self, doc: DocId) {
        if self.host.is_stale(doc) {
            self.reloads_waiting.push_back(doc);
        } else {
            self.loads_waiting.push_back(doc);
        }
        self.start_loads();
    }

    /// Starts waiting loads (first loads before reloads) while fewer than `max_loads` run.
    fn start_loads(&mut self) {
        while self.loads_running < self.cfg.max_loads.max(1) {
            let Some(doc) = self
                .loads_waiting
                .pop_front()
                .or_else(|| self.reloads_waiting.pop_front())
            else {
                return;
            };
            self.loads_running += 1;
            self.loading.insert(doc);
            let store = self.host.store().clone();
            // A reload for compaction also saves the document there, off the hub's thread.
            let snapshot = self.host.wants_snapshot(doc);
            // Chunks deferred until now are in the store before the load reads it (any
            // imported after it started wait for it: `imports_waiting`).
            let barrier = self.group.barrier();
            self.tasks.spawn(async move {
                let flushed = match barrier {
                    Some(barrier) => barrier.await,
                    None => Ok(()),
                };
                let r = match flushed {
                    Ok(()) => weft_core::driver::load(store, doc, snapshot).await,
                    Err(source) => Err(weft_core::store::docs::DocStoreError::Store { source }),
                };
                Done::Loaded(doc, Box::new(r))
            });
        }
    }

    /// A load finished: the next one starts, and the engine gets the document unless it was
    /// deleted meanwhile.
    pub(super) fn loaded(&mut self, doc: DocId, result: Result<Option<Loaded>, DocStoreError>) {
        self.loads_running = self.loads_running.saturating_sub(1);
        self.loading.remove(&doc);
        self.start_loads();
        if self.erased.remove(&doc) {
            // Deleted while it loaded: it must not come back, nor be compacted.
            return;
        }
        if let Err(e) = self.host.loaded(self.now_ms(), doc, result) {
            tracing::error!(%doc, error = %e, "loading a document failed");
        }
        // Its owner's usage follows what the store holds, before any change is judged: the
        // recorded size misses what other relays of a cluster wrote into it while it was not
        // loaded here (and what a relay killed before recording sizes stored).
        if self.host.is_loaded(doc) {
            self.count_stored(doc);
        }
        self.apply_waiting_imports(doc);
    }

    /// The host hands out a save: it waits its turn, newcomers' before compactions. Each
    /// waiting job holds a copy of its document, so past [`MAX_SAVES_WAITING`] a job runs here,
    /// on the hub's thread, as every save did before: many large documents due at once cost
    /// time then, never a copy each.
    pub(super) fn queue_save(&mut self, job: SaveJob) {
        let waiting: usize = self.saves_waiting.iter().map(VecDeque::len).sum();
        if waiting >= MAX_SAVES_WAITING {
            let saved = job.run();
            let now = self.now_ms();
            self.host.saved(now, saved);
            return;
        }
        let queue = usize::from(!job.for_newcomer());
        self.saves_waiting[queue].push_back(job);
        self.start_saves();
    }

    /// Starts waiting saves while fewer than `max_loads` run.
    fn start_saves(&mut self) {
        while self.saves_running < self.cfg.max_loads.max(1) {
            let [newcomers, compactions] = &mut self.saves_waiting;
            let Some(job) = newcomers.pop_front().or_else(|| compactions.pop_front()) else {
                return;
            };
            self.saves_running += 1;
            self.tasks.spawn(async move {
                Done::Saved(weft_core::driver::save(job).await.map(Box::new))
            });
        }
    }

    /// A save finished: the next one starts, and the host takes the result.
    pub(super) fn saved(&mut self, saved: Option<Saved>) {
        self.saves_running = self.saves_running.saturating_sub(1);
        self.start_saves();
        if let Some(saved) = saved {
            let now = self.now_ms();
            self.host.saved(now, saved);
        }
    }
}
