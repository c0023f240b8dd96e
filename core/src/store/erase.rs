//! Hard deletion: a deleted document's content leaves the store for good.
//!
//! A deleted document keeps a tombstone, its [`DocMeta`] with `deleted_at_ms` set (owner,
//! access list, kind, times), so that its id is never served or created again and its former
//! members can be told it was deleted. Its content goes: every chunk and every sync state,
//! removed by [`erase_content`] in the same atomic batch as the tombstone, with a scrub request
//! ([`WriteBatch::scrub`]) so that the store also erases the bytes from its file (a
//! [`RedbStore`] rewrites itself on its next open).
//!
//! A write already in flight when the deletion commits (a change being persisted, a
//! compaction, a peer's sync state) may land after it. A driver therefore drops the document
//! from memory once the deletion is durable and erases its content once more after that
//! (nothing of it can be written then). A crash between the two leaves content behind a
//! tombstone; so does a store written by a build that deleted only the metadata.
//! [`leftovers`] finds such content, and [`open_redb`] erases it before anything is served.

use std::path::Path;

use super::docs::{self, DocMeta, DocStoreError, MetaExt, NoExt};
use super::{KvStore, RedbStore, StagingLimits, Table, WriteBatch};
use crate::DocId;

/// Removes every chunk and sync state of `doc` and asks the store to scrub its file.
pub fn erase_content(batch: &mut WriteBatch, doc: DocId) {
    batch
        .delete_prefix(Table::CHUNKS, doc.as_bytes().to_vec())
        .delete_prefix(Table::SYNC_STATES, doc.as_bytes().to_vec())
        .delete_prefix(Table::GATE_RECORDS, doc.as_bytes().to_vec())
        .scrub();
}

/// The tombstone of a document whose metadata was `meta`, deleted at `deleted_at_ms` (an
/// earlier deletion time in `meta` is kept): who owned it, who could read it, its kind and
/// when, and nothing about its content.
pub fn tombstone<X: MetaExt>(meta: &DocMeta<X>, deleted_at_ms: u64) -> DocMeta<X> {
    let mut t = DocMeta::<X>::default();
    t.kind = meta.kind.clone();
    t.owner = meta.owner.clone();
    t.access = meta.access.clone();
    t.created_at_ms = meta.created_at_ms;
    t.deleted_at_ms = Some(meta.deleted_at_ms.unwrap_or(deleted_at_ms));
    t.updated_at_ms = t.deleted_at_ms.unwrap_or(deleted_at_ms);
    t.ext = meta.ext.tombstone();
    t
}

/// Documents whose metadata says they were deleted but whose chunks or sync states are still
/// stored, and one batch that erases them (with a scrub request); an empty batch when there
/// are none. Metadata that does not decode is skipped with a warning.
pub fn leftovers(store: &dyn KvStore) -> Result<(Vec<DocId>, WriteBatch), DocStoreError> {
    let mut found = Vec::new();
    let mut batch = WriteBatch::new();
    for (key, value) in store.scan_prefix(Table::DOC_META, &[])? {
        let Ok(id) = <[u8; 16]>::try_from(key.as_slice()) else {
            continue;
        };
        let doc = DocId::from_bytes(id);
        let deleted = match docs::decode_meta::<NoExt>(doc, &value) {
            Ok(meta) => meta.deleted_at_ms.is_some(),
            Err(err) => {
                tracing::warn!(%doc, error = %err, "skipping unreadable metadata");
                false
            }
        };
        if !deleted {
            continue;
        }
        let left = !store.scan_keys(Table::CHUNKS, doc.as_bytes())?.is_empty()
            || !store
                .scan_keys(Table::SYNC_STATES, doc.as_bytes())?
                .is_empty();
        if left {
            erase_content(&mut batch, doc);
            found.push(doc);
        }
    }
    Ok((found, batch))
}

/// Opens the [`RedbStore`] at `path`, first erasing what deleted documents left behind
/// ([`leftovers`]); the store is then opened again, which rewrites the file without the
/// erased bytes. Opening a store with no leftovers costs one scan of `doc_meta`, plus a
/// prefix scan per deleted document. `tables` are the user's own, registered as with
/// [`RedbStore::open_with_tables`].
pub fn open_redb(
    path: &Path,
    tables: &[Table],
    limits: StagingLimits,
) -> Result<RedbStore, DocStoreError> {
    let store = RedbStore::open_with_tables(path, tables, limits)?;
    let (found, batch) = leftovers(&store)?;
    if found.is_empty() {
        return Ok(store);
    }
    tracing::info!(
        documents = found.len(),
        "erasing content that deleted documents left behind"
    );
    store.write(&batch)?;
    drop(store);
    Ok(RedbStore::open_with_tables(path, tables, limits)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::docs::tests::TestExt;
    use crate::store::docs::{put_chunk, put_meta, put_sync_state};
    use crate::store::{ChunkKind, MemStore};

    const GONE: DocId = DocId::from_bytes([7; 16]);
    const KEPT: DocId = DocId::from_bytes([8; 16]);

    fn meta(owner: &str, deleted: Option<u64>) -> DocMeta<TestExt> {
        DocMeta {
            owner: Some(owner.into()),
            kind: Some("conversation".into()),
            created_at_ms: 5,
            deleted_at_ms: deleted,
            ext: TestExt {
                confirmed_heads: vec!["ab".into()],
                ..TestExt::default()
            },
            ..DocMeta::default()
        }
    }

    #[test]
    fn a_tombstone_keeps_who_and_when_and_nothing_about_content() {
        let mut m = meta("alice", None);
        m.access.insert("bob".into(), crate::Role::ReadOnly);
        let t = tombstone(&m, 99);
        assert_eq!(t.owner.as_deref(), Some("alice"));
        assert_eq!(t.access, m.access);
        assert_eq!((t.created_at_ms, t.deleted_at_ms), (5, Some(99)));
        assert!(t.ext.confirmed_heads.is_empty() && t.ext.revoked);
        // An earlier deletion time wins.
        assert_eq!(tombstone(&meta("a", Some(3)), 99).deleted_at_ms, Some(3));
    }

    #[test]
    fn leftovers_are_the_content_of_deleted_documents_only() {
        let store = MemStore::new();
        let mut b = WriteBatch::new();
        for doc in [GONE, KEPT] {
            put_chunk(&mut b, doc, ChunkKind::Incremental, b"bytes".to_vec());
            put_sync_state(&mut b, doc, b"peer", &automerge::sync::State::new());
        }
        put_meta(&mut b, GONE, &meta("alice", Some(1)));
        put_meta(&mut b, KEPT, &meta("alice", None));
        store.write(&b).unwrap();

        let (found, batch) = leftovers(&store).unwrap();
        assert_eq!(found, vec![GONE]);
        assert!(batch.wants_scrub());
        store.write(&batch).unwrap();
        assert!(store
            .scan_keys(Table::CHUNKS, GONE.as_bytes())
            .unwrap()
            .is_empty());
        assert!(store
            .scan_keys(Table::SYNC_STATES, GONE.as_bytes())
            .unwrap()
            .is_empty());
        assert_eq!(
            store
                .scan_keys(Table::CHUNKS, KEPT.as_bytes())
                .unwrap()
                .len(),
            1
        );
        assert!(docs::load_meta::<NoExt>(&store, GONE).unwrap().is_some());
        // Nothing is left the second time.
        assert!(leftovers(&store).unwrap().0.is_empty());
    }
}
