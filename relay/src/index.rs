//! The relay's per-user index of readable documents, in the store's `user_docs` table: one
//! row per (user, document) for the owner and every access-list entry of each document not
//! deleted. Writers change it in the same batch as the `DocMeta` it mirrors, so the two never
//! disagree after a crash; a user's documents are one prefix scan ([`load_user_docs`]).
//!
//! | key                                         | value                          |
//! |---------------------------------------------|--------------------------------|
//! | user length (u32 BE) ++ user ++ doc id (16) | `0x01` ++ [`Holding`] tag (1)  |

use weft_core::store::docs::{load_meta, DocStoreError};

use crate::meta::DocMeta;
use weft_core::store::{KvStore, Table, WriteBatch};
use weft_core::{DocId, Role};

/// The per-user index's table. Its name is the one core created in every store before its
/// users registered their own tables, so existing stores keep their rows.
pub(crate) const USER_DOCS: Table = Table::new("user_docs");

/// Format byte of a `user_docs` value.
const USER_DOC_FORMAT: u8 = 0x01;

/// How a user holds a document, as the `user_docs` index records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Holding {
    /// The user owns the document.
    Owner,
    /// The document's access list gives the user this role.
    Shared(Role),
}

impl Holding {
    /// The role the holding gives (an owner reads and writes).
    pub(crate) fn role(self) -> Role {
        match self {
            Holding::Owner => Role::ReadWrite,
            Holding::Shared(role) => role,
        }
    }

    const fn tag(self) -> u8 {
        match self {
            Holding::Owner => 0,
            Holding::Shared(Role::ReadWrite) => 1,
            Holding::Shared(Role::ReadOnly) => 2,
        }
    }

    const fn from_tag(tag: u8) -> Option<Holding> {
        match tag {
            0 => Some(Holding::Owner),
            1 => Some(Holding::Shared(Role::ReadWrite)),
            2 => Some(Holding::Shared(Role::ReadOnly)),
            _ => None,
        }
    }
}

/// The `user_docs` prefix of every row of `user`: its length first, so no user's prefix is
/// another's (`al` and `alice`).
fn user_prefix(user: &str) -> Vec<u8> {
    // A user id longer than 4 GiB cannot reach here: tokens are far smaller.
    let len = u32::try_from(user.len()).unwrap_or(u32::MAX);
    let mut key = Vec::with_capacity(4 + user.len() + 16);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(user.as_bytes());
    key
}

fn user_doc_key(user: &str, doc: DocId) -> Vec<u8> {
    let mut key = user_prefix(user);
    key.extend_from_slice(doc.as_bytes());
    key
}

/// Record in the per-user index that `user` holds `doc` (replacing an earlier holding).
pub(crate) fn put_user_doc(batch: &mut WriteBatch, user: &str, doc: DocId, holding: Holding) {
    batch.put(
        USER_DOCS,
        user_doc_key(user, doc),
        vec![USER_DOC_FORMAT, holding.tag()],
    );
}

/// Remove `doc` from `user`'s index rows, if it is there.
pub(crate) fn delete_user_doc(batch: &mut WriteBatch, user: &str, doc: DocId) {
    batch.delete(USER_DOCS, user_doc_key(user, doc));
}

/// The index rows `meta` implies: its owner and every access-list entry, none if it is deleted.
pub(crate) fn user_docs_of(meta: &DocMeta) -> Vec<(String, Holding)> {
    if meta.deleted_at_ms.is_some() {
        return Vec::new();
    }
    let mut rows: Vec<(String, Holding)> = meta
        .access
        .iter()
        .filter(|(user, _)| Some(user.as_str()) != meta.owner.as_deref())
        .map(|(user, role)| (user.clone(), Holding::Shared(*role)))
        .collect();
    if let Some(owner) = &meta.owner {
        rows.push((owner.clone(), Holding::Owner));
    }
    rows
}

/// Every document in `user`'s index rows, in document-id order.
///
/// A row this build cannot read (a malformed key, an unknown format) is skipped with a
/// warning, so one damaged row does not hide the user's other documents.
pub(crate) fn load_user_docs(
    store: &dyn KvStore,
    user: &str,
) -> Result<Vec<(DocId, Holding)>, DocStoreError> {
    let prefix = user_prefix(user);
    let rows = store.scan_prefix(USER_DOCS, &prefix)?;
    let mut docs = Vec::with_capacity(rows.len());
    for (key, value) in rows {
        let doc = key
            .get(prefix.len()..)
            .and_then(|rest| <[u8; 16]>::try_from(rest).ok())
            .map(DocId::from_bytes);
        let holding = match value.as_slice() {
            [USER_DOC_FORMAT, tag] => Holding::from_tag(*tag),
            _ => None,
        };
        match (doc, holding) {
            (Some(doc), Some(holding)) => docs.push((doc, holding)),
            _ => tracing::warn!(key = ?key, "skipping an unreadable user_docs row"),
        }
    }
    Ok(docs)
}

/// The key of the row saying the index is complete: the prefix of the empty user id, which no
/// token carries.
const USER_INDEX_BUILT: [u8; 4] = [0; 4];

/// Whether the `user_docs` index was built (by [`rebuild_user_index`]); a store written before
/// the index existed has metadata but no index rows.
pub(crate) fn user_index_built(store: &dyn KvStore) -> Result<bool, DocStoreError> {
    Ok(store.get(USER_DOCS, &USER_INDEX_BUILT)?.is_some())
}

/// A batch that writes the index rows of every stored document's metadata and marks the index
/// built: the upgrade path for a store written before the index existed. Idempotent. Writers
/// must not change metadata between the read and the commit of this batch.
pub(crate) fn rebuild_user_index(store: &dyn KvStore) -> Result<WriteBatch, DocStoreError> {
    let mut batch = WriteBatch::new();
    batch.put(USER_DOCS, USER_INDEX_BUILT, vec![USER_DOC_FORMAT]);
    for key in store.scan_keys(Table::DOC_META, &[])? {
        let Ok(id) = <[u8; 16]>::try_from(key.as_slice()) else {
            continue;
        };
        let doc = DocId::from_bytes(id);
        match load_meta(store, doc) {
            Ok(Some(meta)) => {
                for (user, holding) in user_docs_of(&meta) {
                    put_user_doc(&mut batch, &user, doc, holding);
                }
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(%doc, error = %err, "not indexing unreadable metadata"),
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use weft_core::store::docs::put_meta;
    use weft_core::store::{MemStore, StoreError};

    use super::*;

    const DOC: DocId = DocId::from_bytes([1; 16]);
    const OTHER: DocId = DocId::from_bytes([2; 16]);

    fn commit(store: &MemStore, build: impl FnOnce(&mut WriteBatch)) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        build(&mut batch);
        store.write(&batch)
    }

    #[test]
    fn the_user_index_lists_a_users_documents_and_no_one_elses() {
        let store = MemStore::new();
        let third = DocId::from_bytes([3; 16]);
        commit(&store, |b| {
            put_user_doc(b, "alice", DOC, Holding::Owner);
            put_user_doc(b, "alice", OTHER, Holding::Shared(Role::ReadOnly));
            put_user_doc(b, "al", third, Holding::Owner);
            put_user_doc(b, "alice2", third, Holding::Shared(Role::ReadWrite));
        })
        .unwrap();
        assert_eq!(
            load_user_docs(&store, "alice").unwrap(),
            vec![
                (DOC, Holding::Owner),
                (OTHER, Holding::Shared(Role::ReadOnly))
            ]
        );
        assert_eq!(
            load_user_docs(&store, "al").unwrap(),
            vec![(third, Holding::Owner)]
        );
        commit(&store, |b| {
            put_user_doc(b, "alice", OTHER, Holding::Shared(Role::ReadWrite));
            delete_user_doc(b, "alice", DOC);
        })
        .unwrap();
        assert_eq!(
            load_user_docs(&store, "alice").unwrap(),
            vec![(OTHER, Holding::Shared(Role::ReadWrite))]
        );
        assert!(load_user_docs(&store, "nobody").unwrap().is_empty());
    }

    #[test]
    fn unreadable_index_rows_are_skipped() {
        let store = MemStore::new();
        commit(&store, |b| {
            put_user_doc(b, "bob", DOC, Holding::Owner);
            b.put(USER_DOCS, user_doc_key("bob", OTHER), vec![0x02, 0]);
            b.put(
                USER_DOCS,
                [user_prefix("bob"), b"short".to_vec()].concat(),
                vec![USER_DOC_FORMAT, 0],
            );
        })
        .unwrap();
        assert_eq!(
            load_user_docs(&store, "bob").unwrap(),
            vec![(DOC, Holding::Owner)]
        );
    }

    #[test]
    fn the_index_is_rebuilt_from_metadata_leaving_deleted_documents_out() {
        let store = MemStore::new();
        let mut shared = DocMeta::default();
        shared.owner = Some("alice".into());
        shared.access = BTreeMap::from([
            ("bob".into(), Role::ReadOnly),
            ("alice".into(), Role::ReadOnly),
        ]);
        let mut deleted = shared.clone();
        deleted.deleted_at_ms = Some(5);
        commit(&store, |b| {
            put_meta(b, DOC, &shared);
            put_meta(b, OTHER, &deleted);
        })
        .unwrap();
        assert!(!user_index_built(&store).unwrap());
        let batch = rebuild_user_index(&store).unwrap();
        store.write(&batch).unwrap();
        assert!(user_index_built(&store).unwrap());
        assert_eq!(
            load_user_docs(&store, "alice").unwrap(),
            vec![(DOC, Holding::Owner)]
        );
        assert_eq!(
            load_user_docs(&store, "bob").unwrap(),
            vec![(DOC, Holding::Shared(Role::ReadOnly))]
        );
    }
}
