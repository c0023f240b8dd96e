//! Timers: folds falling due, a waiting peer's retry, idle eviction.
//!
//! The engine keeps each document's next deadline in an index (`Engine::deadlines` and the
//! time-ordered `Engine::timers`) and recomputes it only for the documents touched since the
//! index was last brought up to date, so neither [`Engine::tick`] nor [`Engine::next_wakeup`]
//! scans the loaded documents.

use super::peer::waiting;
use super::{ConnId, DocState, Engine, EngineConfig, Millis, Output, Slot};
use crate::DocId;

impl Engine {
    /// Runs timers: folds that are due, peers to resync, documents to evict.
    pub fn tick(&mut self, now: Millis) {
        self.run_due_pumps();
        self.set_now(now);
        self.refresh_timers();
        let due: Vec<DocId> = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, d)| *d)
            .collect();
        let mut folds = 0;
        for doc in due {
            self.touched.insert(doc);
            let Some(Slot::Ready(ds)) = self.docs.get(&doc) else {
                continue;
            };
            if ds
                .pending_since
                .is_some_and(|t| t + self.cfg.fold_delay <= now)
                && folds < self.cfg.max_folds_per_tick
                && self.fold_or_drop(doc)
            {
                folds += 1;
            }
            let Some(Slot::Ready(ds)) = self.docs.get(&doc) else {
                continue;
            };
            let stalled: Vec<ConnId> = ds
                .peers
                .iter()
                .filter(|(_, pd)| waiting(ds, pd) && pd.last_progress + self.cfg.retry_after <= now)
                .map(|(c, _)| *c)
                .collect();
            for conn in stalled {
                tracing::debug!(%doc, conn = conn.0, "no progress from a peer within retry_after");
                self.stalled(doc, conn);
            }
            let Some(Slot::Ready(ds)) = self.docs.get(&doc) else {
                continue;
            };
            if ds.peers.is_empty()
                && ds.persists.is_empty()
                && ds.last_used + self.cfg.evict_after <= now
            {
                self.docs.remove(&doc);
                self.gate_closed(doc);
                self.out.push_back(Output::Evicted { doc });
            }
        }
    }

    /// When `tick` should next be called, if anything is waiting on time.
    pub fn next_wakeup(&mut self) -> Option<Millis> {
        self.run_due_pumps();
        self.refresh_timers();
        let next = self.timers.first().map(|(t, _)| *t);
        #[cfg(test)]
        assert_eq!(next, self.next_wakeup_scan(), "the timer index is stale");
        next
    }

    /// Brings the timer index up to date for the documents touched since the last refresh.
    fn refresh_timers(&mut self) {
        if self.touched.is_empty() {
            return;
        }
        let touched = std::mem::take(&mut self.touched);
        for doc in touched {
            if let Some(old) = self.deadlines.remove(&doc) {
                self.timers.remove(&(old, doc));
            }
            let due = match self.docs.get(&doc) {
                Some(Slot::Ready(ds)) => doc_deadline(&self.cfg, ds),
                _ => None,
            };
            if let Some(t) = due {
                self.deadlines.insert(doc, t);
                self.timers.insert((t, doc));
            }
        }
    }

    /// `next_wakeup` by scanning every document: what the index must agree with.
    #[cfg(test)]
    fn next_wakeup_scan(&self) -> Option<Millis> {
        self.docs
            .values()
            .filter_map(|slot| match slot {
                Slot::Ready(ds) => doc_deadline(&self.cfg, ds),
                Slot::Loading(_) => None,
            })
            .min()
    }
}

/// When `tick` next has something to do for a document: a fold falling due, a waiting peer's
/// retry, or an idle document's eviction.
fn doc_deadline(cfg: &EngineConfig, ds: &DocState) -> Option<Millis> {
    let mut next: Option<Millis> = None;
    let mut at = |t: Millis| next = Some(next.map_or(t, |n| n.min(t)));
    // Only changes still in memory fall due, and not while a reload runs (it folds them):
    // `tick` could do nothing about them, and a deadline in the past wakes the driver at once,
    // again and again, until something else changes the document.
    if let Some(t) = ds.pending_since {
        if !ds.pending.is_empty() && !ds.reloading {
            at(t + cfg.fold_delay);
        }
    }
    for pd in ds.peers.values() {
        if waiting(ds, pd) {
            at(pd.last_progress + cfg.retry_after);
        }
    }
    if ds.peers.is_empty() && ds.persists.is_empty() {
        at(ds.last_used + cfg.evict_after);
    }
    next
}
