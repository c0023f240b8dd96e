//! Erasing a deleted document from the device: what the driver does when the relay says a
//! document was deleted (`DELETED`, or the answer to this device's own delete request).

use weft_core::store::docs;
use weft_core::store::{erase, WriteBatch};
use weft_core::DocId;

use super::{ControlOp, Done, Driver, Event, Op, Queued};
use crate::status::SyncState;
use crate::{unix_ms, DeviceError};

impl Driver {
    /// Whether this device holds `doc` (known and not deleted).
    pub(super) fn holds(&self, doc: DocId) -> bool {
        self.metas
            .get(&doc)
            .is_some_and(|m| m.deleted_at_ms.is_none())
    }

    /// Whether `doc` was deleted and erased here (only its tombstone is left).
    pub(super) fn is_deleted(&self, doc: DocId) -> bool {
        self.metas
            .get(&doc)
            .is_some_and(|m| m.deleted_at_ms.is_some())
    }

    /// The relay says `doc` was deleted: erase this device's copy. It leaves memory (with
    /// its pending operations, which fail), the store loses its chunks and sync states in one
    /// batch that also records the tombstone and asks the store to scrub its file, queued
    /// requests about it are dropped, and versions kept aside in `rejected/` are removed.
    /// Writes already in flight were submitted before the erasing batch, which the store
    /// applies after them; nothing of the document is written after it.
    pub(super) fn erase(&mut self, doc: DocId) {
        let Some(meta) = self.metas.get(&doc) else {
            return;
        };
        if meta.deleted_at_ms.is_some() {
            return;
        }
        let tombstone = erase::tombstone(meta, unix_ms());
        self.host.forget(doc);
        self.announced.remove(&doc);
        self.resetting.remove(&doc);
        self.dirty_metas.remove(&doc);
        for op in self.pending.remove(&doc).unwrap_or_default() {
            match op {
                Op::Change(_, r) | Op::Read(_, r) => {
                    let _ = r.send(Err(DeviceError::Deleted(doc)));
                }
            }
        }
        let links: Vec<u64> = self
            .conns
            .values_mut()
            .filter_map(|c| c.docs.remove(&doc).then_some(c.link))
            .collect();
        for link in links {
            if let Some(d) = self.links.get_mut(&link).and_then(|l| l.docs.get_mut(&doc)) {
                d.state = SyncState::Refused;
            }
        }
        self.status_dirty = true;
        let mut batch = WriteBatch::new();
        erase::erase_content(&mut batch, doc);
        super::tail::delete(&mut batch, doc);
        self.cached_tails.remove(&doc);
        docs::put_meta(&mut batch, doc, &tombstone);
        self.metas.insert(doc, tombstone);
        let ticket = self.group.submit(batch);
        self.tasks.spawn(async move { Done::Meta(ticket.await) });
        self.drop_requests_about(doc);
        self.remove_kept_versions(doc);
        tracing::info!(%doc, "the document was deleted by its owner; erased this device's copy");
        let _ = self.events.send(Event::Deleted { doc });
    }

    /// Drops queued requests about a deleted document: its deletion is done, and sharing it
    /// no longer can be.
    fn drop_requests_about(&mut self, doc: DocId) {
        let (about, rest): (Vec<Queued>, Vec<Queued>) = std::mem::take(&mut self.outbox)
            .into_iter()
            .partition(|q| q.op.doc() == doc);
        self.outbox = rest;
        if about.is_empty() {
            return;
        }
        if let Err(e) = self.save_outbox() {
            tracing::error!(error = %e, "cannot update the request queue");
        }
        for q in about {
            let result = match q.op {
                ControlOp::Delete { .. } => Ok(()),
                _ => Err("the document was deleted".to_string()),
            };
            if let Some(w) = self.control_waiters.remove(&q.id) {
                let _ = w.send(result.clone());
            }
            let _ = self.events.send(Event::Control { op: q.op, result });
        }
    }

    /// Removes the versions of `doc` that read-only refusals kept aside (`rejected/DOC-*`).
    fn remove_kept_versions(&self, doc: DocId) {
        let dir = self.dir.rejected_path();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let prefix = format!("{doc}-");
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::error!(%doc, path = %entry.path().display(), error = %e, "cannot remove a kept-aside version of a deleted document");
                }
            }
        }
    }
}
