//! Sharing and deletion: what a control request (`Share`, `Unshare`, `Delete`) does to a
//! document's relay metadata and to the per-user index.
//!
//! [`apply`] is pure: it checks the caller against the document's [`DocMeta`] and returns the new
//! metadata with the one [`WriteBatch`] that stores it together with the matching `user_docs`
//! rows (and, for a deletion, erases the document's content), or `None` when the request is already in effect (requests are idempotent: a device
//! resends what it queued offline). The hub commits the batch and, only once it is durable,
//! applies it to live connections and answers.
//!
//! Only the owner or an `admin` token may change a document. Every other caller gets
//! [`ControlError::Forbidden`] whether or not the document exists or was deleted.

use weft_core::store::docs as docstore;

use crate::index::{self, Holding};
use weft_core::store::{erase, WriteBatch};

use crate::meta::DocMeta;
use weft_core::wire::ErrorCode;
use weft_core::{DocId, Role};

use crate::auth::MAX_USER_LEN;
use crate::Claims;

/// A control request, as the hub received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// Give `user` `role` (replacing any role they had).
    Share { user: String, role: Role },
    /// Take `user` off the access list.
    Unshare { user: String },
    /// Delete the document for everyone, for good.
    Delete,
}

/// Why a control request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ControlError {
    /// The caller is neither the owner nor an admin, or the document is unknown: the two are
    /// indistinguishable on purpose.
    #[error("not permitted")]
    Forbidden,
    /// The document was deleted; its access list no longer changes.
    #[error("the document was deleted")]
    Deleted,
    /// Sharing with one more user would exceed the access-list limit.
    #[error("the document's access list is full ({max} users)")]
    AccessListFull {
        /// The limit.
        max: usize,
    },
    /// The user id is empty or too long.
    #[error("a user id must be 1 to {MAX_USER_LEN} bytes long")]
    BadUser,
}

impl ControlError {
    /// The wire code of the reply.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            ControlError::Forbidden => ErrorCode::FORBIDDEN,
            ControlError::Deleted => ErrorCode::DELETED,
            ControlError::AccessListFull { .. } => ErrorCode::LIMIT_REACHED,
            ControlError::BadUser => ErrorCode::INVALID,
        }
    }
}

/// A change to commit: the new metadata, the batch storing it (metadata and index rows
/// together) and the users whose readable documents it changes.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) meta: DocMeta,
    pub(crate) batch: WriteBatch,
    pub(crate) users: Vec<String>,
}

/// The metadata and batch that record `owner` as the owner of the new document `doc`.
pub(crate) fn create(owner: &str, doc: DocId, now_ms: u64) -> Change {
    let mut meta = DocMeta::default();
    meta.owner = Some(owner.to_string());
    meta.created_at_ms = now_ms;
    meta.updated_at_ms = now_ms;
    let mut batch = WriteBatch::new();
    docstore::put_meta(&mut batch, doc, &meta);
    index::put_user_doc(&mut batch, owner, doc, Holding::Owner);
    Change {
        meta,
        batch,
        users: vec![owner.to_string()],
    }
}

/// What `control` from `claims` does to `doc`, whose stored metadata is `meta`: `Ok(None)` when
/// it is already in effect.
pub(crate) fn apply(
    claims: &Claims,
    doc: DocId,
    meta: Option<&DocMeta>,
    control: &Control,
    max_access_list: usize,
    now_ms: u64,
) -> Result<Option<Change>, ControlError> {
    let Some(meta) = meta else {
        return Err(ControlError::Forbidden);
    };
    let owner = meta.owner.as_deref();
    if owner != Some(claims.sub.as_str()) && !claims.admin {
        return Err(ControlError::Forbidden);
    }
    if meta.deleted_at_ms.is_some() {
        return match control {
            Control::Delete => Ok(None),
            Control::Share { .. } | Control::Unshare { .. } => Err(ControlError::Deleted),
        };
    }
    let mut new = meta.clone();
    let mut batch = WriteBatch::new();
    let users = match control {
        Control::Share { user, role } => {
            check_user(user)?;
            // The owner already reads and writes; the list never names them.
            if owner == Some(user.as_str()) || meta.access.get(user) == Some(role) {
                return Ok(None);
            }
            if !meta.access.contains_key(user) && meta.access.len() >= max_access_list {
                return Err(ControlError::AccessListFull {
                    max: max_access_list,
                });
            }
            new.access.insert(user.clone(), *role);
            index::put_user_doc(&mut batch, user, doc, Holding::Shared(*role));
            if let Some(owner) = owner {
                // Idempotent; it keeps the batch whole even if the owner record it follows
                // (committed just before, possibly in the same group) was lost.
                index::put_user_doc(&mut batch, owner, doc, Holding::Owner);
            }
            vec![user.clone()]
        }
        Control::Unshare { user } => {
            check_user(user)?;
            if new.access.remove(user).is_none() {
                return Ok(None);
            }
            index::delete_user_doc(&mut batch, user, doc);
            vec![user.clone()]
        }
        Control::Delete => {
            new.deleted_at_ms = Some(now_ms);
            // Every index row of the document goes; the access list stays in the metadata as a
            // record (checkpoints carry it with `deleted_at`, and former members are told the
            // document was deleted rather than that it is not theirs).
            let users: Vec<String> = index::user_docs_of(meta)
                .into_iter()
                .map(|(user, _)| user)
                .collect();
            for user in &users {
                index::delete_user_doc(&mut batch, user, doc);
            }
            // Its content goes in the same batch: chunks, sync states, and (by a scrub of the
            // store's file) the bytes they occupied.
            erase::erase_content(&mut batch, doc);
            users
        }
    };
    docstore::put_meta(&mut batch, doc, &new);
    Ok(Some(Change {
        meta: new,
        batch,
        users,
    }))
}

fn check_user(user: &str) -> Result<(), ControlError> {
    if user.is_empty() || user.len() > MAX_USER_LEN {
        return Err(ControlError::BadUser);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::store::{KvStore, MemStore};

    const NOW: u64 = 1_700_000_000;
    const DOC: DocId = DocId::from_bytes([4; 16]);

    fn alice() -> Claims {
        Claims::new("alice", NOW, 60)
    }

    fn share(user: &str, role: Role) -> Control {
        Control::Share {
            user: user.into(),
            role,
        }
    }

    /// Alice's document, created and stored.
    fn stored() -> (MemStore, DocMeta) {
        let store = MemStore::new();
        let created = create("alice", DOC, 1);
        store.write(&created.batch).unwrap();
        (store, created.meta)
    }

    fn commit(store: &MemStore, change: Option<Change>) -> DocMeta {
        let change = change.expect("a change");
        store.write(&change.batch).unwrap();
        change.meta
    }

    #[test]
    fn the_owner_shares_changes_roles_and_unshares_and_the_index_follows() {
        let (store, meta) = stored();
        let meta = commit(
            &store,
            apply(
                &alice(),
                DOC,
                Some(&meta),
                &share("bob", Role::ReadOnly),
                10,
                2,
            )
            .unwrap(),
        );
        assert_eq!(meta.access.get("bob"), Some(&Role::ReadOnly));
        assert_eq!(
            index::load_user_docs(&store, "bob").unwrap(),
            vec![(DOC, Holding::Shared(Role::ReadOnly))]
        );
        // The same share again is already in effect; an upgrade is a change.
        assert!(apply(
            &alice(),
            DOC,
            Some(&meta),
            &share("bob", Role::ReadOnly),
            10,
            3
        )
        .unwrap()
        .is_none());
        let meta = commit(
            &store,
            apply(
                &alice(),
                DOC,
                Some(&meta),
                &share("bob", Role::ReadWrite),
                10,
                3,
            )
            .unwrap(),
        );
        assert_eq!(
            index::load_user_docs(&store, "bob").unwrap(),
            vec![(DOC, Holding::Shared(Role::ReadWrite))]
        );
        let unshare = Control::Unshare { user: "bob".into() };
        let change = apply(&alice(), DOC, Some(&meta), &unshare, 10, 4).unwrap();
        assert_eq!(change.as_ref().unwrap().users, vec!["bob".to_string()]);
        let meta = commit(&store, change);
        assert!(meta.access.is_empty());
        assert!(index::load_user_docs(&store, "bob").unwrap().is_empty());
        // Unsharing someone not listed is already in effect.
        assert!(apply(&alice(), DOC, Some(&meta), &unshare, 10, 5)
            .unwrap()
            .is_none());
        // The owner is never listed.
        assert!(apply(
            &alice(),
            DOC,
            Some(&meta),
            &share("alice", Role::ReadOnly),
            10,
            5
        )
        .unwrap()
        .is_none());
    }

    #[test]
    fn only_the_owner_or_an_admin_may_change_a_document_and_strangers_learn_nothing() {
        let (_, meta) = stored();
        let bob = Claims::new("bob", NOW, 60).with_create(true);
        let mut shared_rw = meta.clone();
        shared_rw.access.insert("bob".into(), Role::ReadWrite);
        let mut deleted = meta.clone();
        deleted.deleted_at_ms = Some(9);
        for control in [
            share("carol", Role::ReadOnly),
            Control::Unshare {
                user: "alice".into(),
            },
            Control::Delete,
        ] {
            for m in [None, Some(&meta), Some(&shared_rw), Some(&deleted)] {
                assert_eq!(
                    apply(&bob, DOC, m, &control, 10, 1).unwrap_err(),
                    ControlError::Forbidden
                );
            }
        }
        let admin = Claims::new("backend", NOW, 60).with_admin(true);
        let change = apply(
            &admin,
            DOC,
            Some(&meta),
            &share("carol", Role::ReadOnly),
            10,
            1,
        )
        .unwrap()
        .unwrap();
        assert_eq!(change.meta.access.get("carol"), Some(&Role::ReadOnly));
        assert_eq!(change.meta.owner.as_deref(), Some("alice"));
    }

    #[test]
    fn delete_removes_every_index_row_keeps_the_record_and_is_final() {
        let (store, meta) = stored();
        let meta = commit(
            &store,
            apply(
                &alice(),
                DOC,
                Some(&meta),
                &share("bob", Role::ReadOnly),
                10,
                2,
            )
            .unwrap(),
        );
        // Content and a sync state, as the hub's engine stores them.
        let mut content = WriteBatch::new();
        docstore::put_chunk(
            &mut content,
            DOC,
            weft_core::ChunkKind::Incremental,
            b"a change".to_vec(),
        );
        docstore::put_sync_state(
            &mut content,
            DOC,
            b"device",
            &weft_core::automerge::sync::State::new(),
        );
        store.write(&content).unwrap();
        let change = apply(&alice(), DOC, Some(&meta), &Control::Delete, 10, 77)
            .unwrap()
            .unwrap();
        // The content goes in the batch that records the deletion, with a scrub of the file.
        assert!(change.batch.wants_scrub());
        let mut users = change.users.clone();
        users.sort();
        assert_eq!(users, vec!["alice".to_string(), "bob".to_string()]);
        let meta = commit(&store, Some(change));
        assert_eq!(meta.deleted_at_ms, Some(77));
        for table in [weft_core::Table::CHUNKS, weft_core::Table::SYNC_STATES] {
            assert!(store.scan_keys(table, DOC.as_bytes()).unwrap().is_empty());
        }
        assert_eq!(meta.access.get("bob"), Some(&Role::ReadOnly));
        assert!(index::load_user_docs(&store, "alice").unwrap().is_empty());
        assert!(index::load_user_docs(&store, "bob").unwrap().is_empty());
        assert_eq!(
            docstore::load_meta(&store, DOC).unwrap(),
            Some(meta.clone())
        );
        // Deleting again is already done; sharing a deleted document says so to the owner.
        assert!(apply(&alice(), DOC, Some(&meta), &Control::Delete, 10, 78)
            .unwrap()
            .is_none());
        assert_eq!(
            apply(
                &alice(),
                DOC,
                Some(&meta),
                &share("carol", Role::ReadOnly),
                10,
                78
            )
            .unwrap_err(),
            ControlError::Deleted
        );
    }

    #[test]
    fn access_lists_and_user_ids_are_bounded() {
        let (_, mut meta) = stored();
        meta.access.insert("bob".into(), Role::ReadOnly);
        meta.access.insert("carol".into(), Role::ReadOnly);
        let err = apply(
            &alice(),
            DOC,
            Some(&meta),
            &share("dave", Role::ReadOnly),
            2,
            1,
        )
        .unwrap_err();
        assert_eq!(err, ControlError::AccessListFull { max: 2 });
        assert_eq!(err.code(), ErrorCode::LIMIT_REACHED);
        assert!(err.to_string().contains("full"), "{err}");
        // Changing the role of someone already listed is not an addition.
        assert!(apply(
            &alice(),
            DOC,
            Some(&meta),
            &share("bob", Role::ReadWrite),
            2,
            1
        )
        .unwrap()
        .is_some());
        for user in [String::new(), "x".repeat(MAX_USER_LEN + 1)] {
            let err = apply(
                &alice(),
                DOC,
                Some(&meta),
                &share(&user, Role::ReadOnly),
                10,
                1,
            )
            .unwrap_err();
            assert_eq!(err.code(), ErrorCode::INVALID);
        }
    }
}
