//! Persistence: the writes the engine asks its driver for, and their completion.
//!
//! Every write is an `Output::Persist` with a `PersistId`; the driver reports it durable
//! ([`Engine::persisted`]) or failed ([`Engine::persist_failed`]). Completions are applied in
//! submission order per document, and only then does what a write carries take effect: its
//! changes are announced to peers and the document's durable heads advance.

use bytes::Bytes;

use super::fold::{drop_from_memory, pending_ops};
use super::{
    ConnId, Engine, Origin, Output, PendingPersist, PersistEffect, PersistId, Slot, Write,
};
use crate::DocId;

impl Engine {
    /// Reports a persist request durable. The peers it gives something to send are pumped as
    /// the driver polls (see [`Engine::poll_output`]).
    pub fn persisted(&mut self, id: PersistId) {
        self.run_due_pumps();
        self.complete_persist(id, true);
    }

    /// A write is durable: what it and every write before it carry takes effect. `defer`
    /// leaves the pumps that follow to [`Engine::poll_output`].
    fn complete_persist(&mut self, id: PersistId, defer: bool) {
        let Some(doc) = self.persist_doc.remove(&id) else {
            return;
        };
        self.touched.insert(doc);
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
        };
        if let Some(p) = ds.persists.iter_mut().find(|p| p.id == id) {
            p.done = true;
        }
        // Completions are applied in submission order: a write is announced only when it and
        // everything submitted before it are durable.
        let mut effects = Vec::new();
        let mut durable_pending = Vec::new();
        while ds.persists.front().is_some_and(|p| p.done) {
            let Some(p) = ds.persists.pop_front() else {
                break;
            };
            ds.durable_heads = p.heads_after;
            effects.push(p.effect);
            durable_pending.extend(p.pending);
        }
        if ds.stale && !ds.reloading && !durable_pending.is_empty() {
            // Durable now: the store has them for the reload, memory need not.
            drop_from_memory(ds, &durable_pending.into_iter().collect());
        }
        let reload = ds.stale
            && ds.reload_wanted
            && !ds.reloading
            && pending_ops(ds) < self.cfg.inline_apply_ops;
        // Only changes made durable give sync-only peers (WebSocket clients) something new: a
        // completed sync state (one per peer per exchange) must not pump every one of them,
        // which cost a generate_sync_message per peer per acknowledgement, quadratic in the
        // subscribers. Other peers keep being pumped: a pump also folds and resumes resyncs,
        // and skipping it for them cost the `throughput` workload ~20% more CPU per change.
        let announced = effects.iter().any(|e| !matches!(e, PersistEffect::None));
        let mut origins = Vec::new();
        for effect in effects {
            if let PersistEffect::Changes {
                origin,
                raw,
                via_fast_path,
            } = effect
            {
                if let Origin::Remote(conn) = origin {
                    origins.push(conn);
                }
                self.announce(doc, origin, raw, via_fast_path);
            }
        }
        if reload {
            self.materialize_for(doc, "durable");
        }
        // Peers in sync mode may have something to send now; a sender may now be synced.
        // Other live peers were just sent the changes (`announce`) and stay unsynced until
        // they ack: pumping them would only find that out again, per peer per change.
        let sync_only = &self.sync_only;
        let conns: Vec<ConnId> = match self.docs.get(&doc) {
            Some(Slot::Ready(ds)) => ds
                .peers
                .iter()
                .filter(|(c, pd)| {
                    let sync_mode = !pd.live && (announced || reload || !sync_only.contains(c));
                    sync_mode || origins.contains(c)
                })
                .map(|(c, _)| *c)
                .collect(),
            _ => Vec::new(),
        };
        if defer {
            // The fold check does not depend on the pumps (they fold what they need first).
            self.after_input(doc);
            self.due_pumps
                .extend(conns.into_iter().map(|conn| super::due::DuePump {
                    doc,
                    conn,
                    ahead: false,
                }));
            return;
        }
        for conn in conns {
            self.pump(doc, conn);
        }
        self.after_input(doc);
    }

    /// Reports a persist request failed. The document is dropped from memory (it is reloaded
    /// from the store, which lacks the failed write, on next use) and its peers are closed.
    pub fn persist_failed(&mut self, id: PersistId) {
        self.run_due_pumps();
        let Some(doc) = self.persist_doc.remove(&id) else {
            return;
        };
        self.drop_failed(doc);
    }

    /// Announces changes the store already holds (written by the driver, found by a reload)
    /// as a write would be: after every write submitted before, with nothing written.
    pub(super) fn announce_stored(&mut self, doc: DocId, raw: Vec<Bytes>) {
        let id = self.queue_persist(
            doc,
            PersistEffect::Changes {
                origin: Origin::Released,
                raw,
                via_fast_path: false,
            },
        );
        self.complete_persist(id, false);
    }

    pub(super) fn persist_write(
        &mut self,
        doc: DocId,
        write: Write,
        effect: PersistEffect,
    ) -> PersistId {
        let received = matches!(write, Write::Changes(_))
            && !matches!(
                effect,
                PersistEffect::Changes {
                    origin: Origin::Local,
                    ..
                }
            );
        if let (Some(Slot::Ready(ds)), Write::Changes(bytes) | Write::Stored(bytes)) =
            (self.docs.get_mut(&doc), &write)
        {
            ds.stored_bytes = ds.stored_bytes.saturating_add(bytes.len() as u64);
        }
        let id = self.queue_persist(doc, effect);
        self.out.push_back(Output::Persist {
            id,
            doc,
            write,
            received,
        });
        id
    }

    /// A new persist request of `doc`, queued behind the earlier ones; its `effect` takes place
    /// once it and they are durable ([`Engine::persisted`]).
    fn queue_persist(&mut self, doc: DocId, effect: PersistEffect) -> PersistId {
        let id = PersistId(self.next_persist);
        self.next_persist += 1;
        if let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) {
            ds.persists.push_back(PendingPersist {
                id,
                done: false,
                heads_after: ds.heads.clone(),
                effect,
                pending: Vec::new(),
            });
        }
        self.persist_doc.insert(id, doc);
        id
    }

    pub(super) fn persist_changes(
        &mut self,
        doc: DocId,
        origin: Origin,
        raw: Vec<Bytes>,
        via_fast_path: bool,
    ) -> PersistId {
        let chunk = raw.concat();
        self.persist_changes_as(doc, origin, raw, via_fast_path, Write::Changes(chunk))
    }

    /// [`Engine::persist_changes`] with the write given ([`Write::Changes`] or
    /// [`Write::Stored`]).
    pub(super) fn persist_changes_as(
        &mut self,
        doc: DocId,
        origin: Origin,
        raw: Vec<Bytes>,
        via_fast_path: bool,
        write: Write,
    ) -> PersistId {
        self.persist_write(
            doc,
            write,
            PersistEffect::Changes {
                origin,
                raw,
                via_fast_path,
            },
        )
    }
}
