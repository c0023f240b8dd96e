//! The display cache of a chat's tail: the last [`TAIL_LEN`] messages of a document, read at
//! some heads, kept in the device's store beside the document, so that showing a
//! conversation's last messages needs no load of the document
//! (`docs/decisions/0026-tail-cache-for-opening.md`).
//!
//! A cached tail is served only when its heads equal the heads of what is stored, read from the
//! chunks' headers ([`docs::stored_heads`]); anything else (no row, a row that does not decode,
//! other heads, heads that do not read) falls back to loading the document. Since a tail is a
//! function of its heads, a tail written from any copy of the document at any time is right
//! whenever those heads are the stored ones, so writing it needs no ordering with the
//! document's own writes: it is written when the device closes, for each document it holds
//! loaded whose tail changed, and never on the write path.

use weft_core::automerge::ChangeHash;
use weft_core::store::docs;
use weft_core::store::{KvStore, Table, WriteBatch};
use weft_core::DocId;
use weft_schema::{Message, Partial, Tail};

use super::driver::{Done, Driver};

/// The cache's table: document id -> [`Tail::encode`]. Registered when the device opens its
/// store.
pub(crate) const TAIL_CACHE: Table = Table::new("tail_cache");

/// Messages a cached tail holds: a request for more than this loads the document.
pub(crate) const TAIL_LEN: usize = 100;

/// What a cache lookup answers: the last messages, and the heads they were read at.
pub(crate) type Hit = (Partial<Vec<Message>>, Vec<ChangeHash>);

/// The cached last `n` messages of `doc`, if its cached tail was read at the heads stored now.
/// Never fails: a damaged or unreadable row, like a stale one, is a miss.
pub(crate) fn lookup(store: &dyn KvStore, doc: DocId, n: usize) -> Option<Hit> {
    let row = match store.get(TAIL_CACHE, doc.as_bytes()) {
        Ok(row) => row?,
        Err(e) => {
            tracing::warn!(%doc, error = %e, "reading the cached tail failed; loading instead");
            return None;
        }
    };
    let tail = match Tail::decode(&row) {
        Ok(tail) => tail,
        Err(e) => {
            tracing::warn!(%doc, error = %e, "a cached tail does not decode; loading instead");
            return None;
        }
    };
    let messages = tail.last(n)?;
    match docs::stored_heads(store, doc) {
        Ok(Some(heads)) if heads == tail.heads => Some((messages, tail.heads)),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(%doc, error = %e, "reading the stored heads failed; loading instead");
            None
        }
    }
}

/// Writes `tail` as `doc`'s cached tail.
pub(crate) fn put(batch: &mut WriteBatch, doc: DocId, tail: &Tail) {
    batch.put(TAIL_CACHE, doc.as_bytes().to_vec(), tail.encode());
}

/// Removes `doc`'s cached tail (the document is erased or emptied).
pub(crate) fn delete(batch: &mut WriteBatch, doc: DocId) {
    batch.delete(TAIL_CACHE, doc.as_bytes().to_vec());
}

impl Driver {
    /// Answers a request for the cached last `n` messages of `doc`: `None` (the caller reads
    /// the document) when it is loaded or loading (the read is cheap, or about to be), unknown,
    /// deleted, or when the cache misses.
    pub(super) fn cached_tail(
        &mut self,
        doc: DocId,
        n: usize,
        reply: tokio::sync::oneshot::Sender<Option<Partial<Vec<Message>>>>,
    ) {
        let known = self
            .metas
            .get(&doc)
            .is_some_and(|m| m.deleted_at_ms.is_none());
        if !known || n > TAIL_LEN || self.host.is_loaded(doc) || self.loading.contains(&doc) {
            let _ = reply.send(None);
            return;
        }
        let store = self.host.store().clone();
        self.tasks.spawn(async move {
            let hit = tokio::task::spawn_blocking(move || lookup(store.as_ref(), doc, n))
                .await
                .ok()
                .flatten();
            let heads = hit.as_ref().map(|(_, heads)| heads.clone());
            let _ = reply.send(hit.map(|(messages, _)| messages));
            Done::TailRead(doc, heads)
        });
    }

    /// Writes the tail of every loaded chat whose cached tail is not at its heads, in one batch
    /// (the device is closing; the drain that follows awaits it).
    pub(super) fn flush_tails(&mut self) {
        let mut batch = WriteBatch::new();
        let docs: Vec<DocId> = self
            .metas
            .iter()
            .filter(|(doc, m)| {
                m.deleted_at_ms.is_none()
                    && self.host.is_loaded(**doc)
                    && !self.host.is_stale(**doc)
            })
            .map(|(doc, _)| *doc)
            .collect();
        for doc in docs {
            let heads = self.host.heads(doc);
            if heads.is_some() && heads.as_ref() == self.cached_tails.get(&doc) {
                continue;
            }
            let Ok(Some(tail)) = self.host.read(doc, |d| Tail::read(d.automerge(), TAIL_LEN))
            else {
                continue;
            };
            put(&mut batch, doc, &tail);
            self.cached_tails.insert(doc, tail.heads);
        }
        if batch.ops().is_empty() {
            return;
        }
        let ticket = self.group.submit(batch);
        self.tasks.spawn(async move { Done::Meta(ticket.await) });
    }
}

#[cfg(test)]
mod tests;
