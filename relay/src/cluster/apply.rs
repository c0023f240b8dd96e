//! Writing the log's entries into the relay's store: changes as content-addressed chunks with
//! their actor bindings, metadata with its per-user index rows (as `sharing.rs` would), several
//! entries per commit (changes without an fsync of their own), then handed to the hub in log
//! order.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use weft_core::store::docs::{self as docstore, ChunkKind};
use weft_core::store::{erase, GroupCommit, WriteBatch};
use weft_core::DocId;

use super::{decode_records, Imported, KIND_CHANGES, KIND_META};
use crate::hub::HubEvent;
use crate::index;
use crate::meta::DocMeta;
use crate::metrics::Metrics;

pub(super) struct Row {
    /// This relay appended it: applied only where the store lacks it (the relay died between
    /// the append and its own store write, or lost its disk).
    pub(super) own: bool,
    /// The relay that appended it.
    pub(super) relay: Arc<str>,
    pub(super) doc: String,
    pub(super) kind: i16,
    pub(super) body: Vec<u8>,
    pub(super) records: Option<Vec<u8>>,
}

/// Entries of the log written to the store together (one commit), then handed to the hub in
/// log order: under load a read brings many, and a commit each would serialize them.
#[derive(Default)]
pub(super) struct Pending {
    batch: WriteBatch,
    imported: Vec<Imported>,
    /// The first and last `seq` in it (for the log).
    seqs: Option<(i64, i64)>,
    /// It holds metadata (access lists, deletions): written durably.
    meta: bool,
}

/// Where entries go: the store, then the hub.
pub(super) struct Sink<'a> {
    pub(super) group: &'a GroupCommit,
    pub(super) hub: &'a mpsc::Sender<HubEvent>,
    pub(super) metrics: &'a Metrics,
    pub(super) live: &'a Mutex<LiveDocs>,
}

/// Documents the follower read as not deleted here, valid while the store's count of metadata
/// writes ([`GroupCommit::meta_writes`]) stays what it was: an entry of changes then skips
/// reading and decoding the document's metadata (~8 us of an importing relay's ~160 per
/// change). Any metadata write (a share, a deletion, here or imported) empties it.
#[derive(Default)]
pub(super) struct LiveDocs {
    meta_writes: u64,
    docs: HashSet<DocId>,
}

/// Documents [`LiveDocs`] holds at most (then it starts over).
const LIVE_DOCS_MAX: usize = 16_384;

impl LiveDocs {
    fn holds(&self, doc: DocId, meta_writes: u64) -> bool {
        self.meta_writes == meta_writes && self.docs.contains(&doc)
    }

    /// Notes `doc` as not deleted, read after the count was `meta_writes`.
    fn note(&mut self, doc: DocId, meta_writes: u64) {
        if self.meta_writes != meta_writes || self.docs.len() >= LIVE_DOCS_MAX {
            self.docs.clear();
            self.meta_writes = meta_writes;
        }
        self.docs.insert(doc);
    }
}

/// Entries pending at most before they are written: the entries of one read go to the store
/// in one commit (under load three relays went from ~1,600 to ~2,200 changes/s with it), then
/// to the hub in log order. A stale document's reload may read them from the store before
/// the hub imports them; the engine then announces what the reload found (`fold.rs`).
const PENDING_MAX: usize = 256;
/// Bytes pending at most before they are written.
const PENDING_BYTES: usize = 4 << 20;

/// Adds one entry to `pending`, writing what is pending first when the entry is metadata
/// (whose reading of the stored metadata must see what came before it) and after it when it
/// is metadata or `pending` is full. `false` when the hub is gone.
pub(super) async fn apply(f: &Sink<'_>, pending: &mut Pending, seq: i64, row: Row) -> bool {
    let meta = row.kind == KIND_META;
    if meta && !flush(f, pending).await {
        return false;
    }
    pending.meta |= meta;
    if let Some(imported) = prepare(f, seq, row, &mut pending.batch) {
        pending.imported.push(imported);
        let first = pending.seqs.map_or(seq, |(first, _)| first);
        pending.seqs = Some((first, seq));
    }
    if meta || pending.imported.len() >= PENDING_MAX || pending.batch.size_bytes() >= PENDING_BYTES
    {
        return flush(f, pending).await;
    }
    true
}

/// Writes what is pending (one commit), then hands it to the hub. `false` when the hub is
/// gone.
pub(super) async fn flush(f: &Sink<'_>, pending: &mut Pending) -> bool {
    let Pending {
        mut batch,
        imported,
        seqs,
        meta,
    } = std::mem::take(pending);
    if imported.is_empty() && batch.is_empty() {
        return true;
    }
    if !meta {
        // Changes have their durable copy in the log: written without an fsync of their own
        // (the next durable commit covers them; the cursor is saved only after one, so a crash
        // before it reads them again). Metadata (an access list, a deletion) is written
        // durably, so no crash takes back a revocation.
        batch.set_lazy();
    }
    // Chunks of changes wait to share a commit with the next ones (`GroupCommit::defer`;
    // the hub's loads wait for them). Else a lone entry is written on this thread when the
    // store's writer is idle (its hand-off, a wake-up there and one back, costs more than the
    // write).
    let written = f.group.write_soon(batch).await;
    if let Err(e) = written {
        // The entries are not skipped silently: the store failing stops everything else too.
        tracing::error!(?seqs, error = %e, "storing cluster log entries failed");
    }
    for i in imported {
        Metrics::inc(&f.metrics.cluster_imported);
        if f.hub.send(HubEvent::Cluster(i)).await.is_err() {
            return false;
        }
    }
    true
}

/// What one entry makes: its writes added to `batch`, and what to tell the hub once they are
/// stored (`None`: nothing, the entry is skipped).
fn prepare(f: &Sink<'_>, seq: i64, row: Row, batch: &mut WriteBatch) -> Option<Imported> {
    let Ok(doc) = DocId::from_str(&row.doc) else {
        tracing::error!(
            seq,
            doc = row.doc,
            "a cluster log entry names no document; skipped"
        );
        return None;
    };
    let store = f.group.store().clone();
    // This relay's own changes are nearly always in its store already (it wrote them after
    // the append): looked for before the metadata is read and decoded.
    if row.kind == KIND_CHANGES && row.own && has_chunk(f.group, doc, &row.body) {
        return None;
    }
    // Read before the metadata, so a write landing after the read changes it.
    let meta_writes = f.group.meta_writes();
    let live = || f.live.lock().unwrap_or_else(|e| e.into_inner());
    let (old, deleted_here) = if row.kind == KIND_CHANGES && live().holds(doc, meta_writes) {
        (None, false)
    } else {
        let old: Option<DocMeta> = match docstore::load_meta(store.as_ref(), doc) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(seq, %doc, error = %e, "reading a document's metadata failed; entry skipped");
                return None;
            }
        };
        let deleted = old.as_ref().is_some_and(|m| m.deleted_at_ms.is_some());
        if row.kind == KIND_CHANGES && !deleted {
            live().note(doc, meta_writes);
        }
        (old, deleted)
    };
    let imported = match row.kind {
        KIND_CHANGES if deleted_here => return None,
        KIND_CHANGES => {
            let bindings = match row.records.as_deref().map(decode_records) {
                None => Vec::new(),
                Some(Some(b)) => b,
                Some(None) => {
                    tracing::error!(seq, %doc, "a cluster log entry's bindings do not decode; skipped");
                    return None;
                }
            };
            for (actor, user) in &bindings {
                docstore::put_gate_record(batch, doc, actor, user.as_bytes());
            }
            docstore::put_chunk(batch, doc, ChunkKind::Incremental, row.body.clone());
            Imported::Changes {
                doc,
                changes: row.body,
                bindings,
                relay: row.relay,
                own: row.own,
            }
        }
        KIND_META => {
            let Ok(mut meta) = rmp_serde::from_slice::<DocMeta>(&row.body) else {
                tracing::error!(seq, %doc, "a cluster log entry's metadata does not decode; skipped");
                return None;
            };
            if deleted_here {
                return None;
            }
            // An entry of its own is older than what the relay stored unless the store lacks
            // it (its clock made both).
            if row.own
                && old
                    .as_ref()
                    .is_some_and(|o| o.updated_at_ms >= meta.updated_at_ms)
            {
                return None;
            }
            let mut users: Vec<String> = Vec::new();
            if let Some(old) = &old {
                // The stored size is this relay's own measure.
                meta.ext = old.ext.clone();
                for (user, _) in index::user_docs_of(old) {
                    index::delete_user_doc(batch, &user, doc);
                    users.push(user);
                }
            }
            for (user, holding) in index::user_docs_of(&meta) {
                index::put_user_doc(batch, &user, doc, holding);
                users.push(user);
            }
            users.sort();
            users.dedup();
            if meta.deleted_at_ms.is_some() {
                erase::erase_content(batch, doc);
            }
            docstore::put_meta(batch, doc, &meta);
            Imported::Meta {
                doc,
                meta: Box::new(meta),
                users,
                created: old.is_none(),
            }
        }
        other => {
            tracing::warn!(
                seq,
                kind = other,
                "a cluster log entry of an unknown kind; skipped"
            );
            return None;
        }
    };
    Some(imported)
}

/// Whether the store holds `changes` as a chunk of `doc`, or a deferred write puts it there
/// (a read error counts as no; so does a deferred write taken for writing and not yet
/// written, which only makes the chunk be put again, with the same bytes).
fn has_chunk(group: &GroupCommit, doc: DocId, changes: &[u8]) -> bool {
    let key = weft_core::store::docs::ChunkKey::for_bytes(doc, ChunkKind::Incremental, changes);
    let key = key.to_bytes();
    let table = weft_core::store::Table::CHUNKS;
    group.deferred_has(table, &key) || matches!(group.store().get(table, &key), Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_after_a_deletion_are_not_stored_though_the_document_was_live() {
        let group = GroupCommit::new(Arc::new(weft_core::store::MemStore::new())).unwrap();
        let (hub, mut told) = mpsc::channel(16);
        let (metrics, live) = (Metrics::default(), Mutex::new(LiveDocs::default()));
        let f = Sink {
            group: &group,
            hub: &hub,
            metrics: &metrics,
            live: &live,
        };
        let doc = DocId::from_bytes([7; 16]);
        let row = |kind, body: Vec<u8>| Row {
            own: false,
            relay: "b".into(),
            doc: doc.to_string(),
            kind,
            body,
            records: None,
        };
        let mut meta = DocMeta::default();
        meta.owner = Some("alice".into());
        (meta.created_at_ms, meta.updated_at_ms) = (1, 1);
        let encoded = |m: &DocMeta| rmp_serde::to_vec_named(m).unwrap();
        let mut pending = Pending::default();
        assert!(apply(&f, &mut pending, 1, row(KIND_META, encoded(&meta))).await);
        assert!(apply(&f, &mut pending, 2, row(KIND_CHANGES, b"first".to_vec())).await);
        assert!(flush(&f, &mut pending).await);
        assert!(live.lock().unwrap().holds(doc, group.meta_writes()));
        assert!(has_chunk(&group, doc, b"first"));
        // Deleted (another relay's entry), then changes appended before that relay heard.
        (meta.deleted_at_ms, meta.updated_at_ms) = (Some(2), 2);
        assert!(apply(&f, &mut pending, 3, row(KIND_META, encoded(&meta))).await);
        assert!(apply(&f, &mut pending, 4, row(KIND_CHANGES, b"second".to_vec())).await);
        assert!(flush(&f, &mut pending).await);
        assert!(!has_chunk(&group, doc, b"second") && !has_chunk(&group, doc, b"first"));
        let mut changes = 0;
        while let Ok(HubEvent::Cluster(i)) = told.try_recv() {
            changes += usize::from(matches!(i, Imported::Changes { .. }));
        }
        assert_eq!(
            changes, 1,
            "only the change before the deletion reaches the hub"
        );
    }

    #[test]
    fn live_documents_hold_only_while_no_metadata_was_written() {
        let (a, b) = (DocId::from_bytes([1; 16]), DocId::from_bytes([2; 16]));
        let mut live = LiveDocs::default();
        assert!(!live.holds(a, 0));
        live.note(a, 0);
        live.note(b, 0);
        assert!(live.holds(a, 0) && live.holds(b, 0));
        // A metadata write since: nothing holds, and noting at the new count forgets the rest.
        assert!(!live.holds(a, 1));
        live.note(a, 1);
        assert!(live.holds(a, 1) && !live.holds(b, 1));
        // Bounded.
        for i in 0..LIVE_DOCS_MAX as u32 + 1 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            live.note(DocId::from_bytes(id), 1);
        }
        assert!(live.docs.len() <= LIVE_DOCS_MAX);
    }
}
