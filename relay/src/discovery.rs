//! Discovery: the documents a user may read, and the bounded messages that carry the list.
//!
//! A user's list is their `user_docs` index rows (owned and shared documents: one prefix scan,
//! however many documents the relay holds) plus the documents their token's `docs` claim names
//! that are not deleted. The role of each is what [`crate::access::decide`] would give: the
//! owner and admins `rw`, otherwise the stronger of the access list and the token.
//!
//! The full list travels as `Docs{full: true}`, then `Docs{full: false}` continuations of at
//! most `per_message` entries each, then `DocsEnd` (see [`weft_core::wire`]).

use std::collections::BTreeMap;

use weft_core::store::docs::DocStoreError;
use weft_core::store::KvStore;

use crate::meta::DocMeta;
use weft_core::wire::{DocEntry, Message};
use weft_core::{DocId, Role};

use crate::access::readable_role;
use crate::index;
use crate::Claims;

/// The documents one connection's user may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Listing {
    pub(crate) entries: Vec<DocEntry>,
    /// More documents are readable than the relay lists at once.
    pub(crate) truncated: bool,
}

/// Lists what `claims` may read: at most `max` documents (in id order). `meta` gives a
/// document's current relay metadata (the hub's cache, else the store).
pub(crate) fn listing(
    store: &dyn KvStore,
    claims: &Claims,
    max: usize,
    mut meta: impl FnMut(DocId) -> Result<Option<DocMeta>, DocStoreError>,
) -> Result<Listing, DocStoreError> {
    let mut docs: BTreeMap<DocId, Role> = BTreeMap::new();
    for (doc, holding) in index::load_user_docs(store, &claims.sub)? {
        let role = match (claims.admin, claims.role_for(&doc)) {
            (true, _) => Role::ReadWrite,
            (false, Some(granted)) => holding.role().max(granted),
            (false, None) => holding.role(),
        };
        docs.insert(doc, role);
    }
    for doc in claims.docs.keys() {
        if docs.contains_key(doc) {
            continue;
        }
        if let Some(role) = readable_role(claims, doc, meta(*doc)?.as_ref()) {
            docs.insert(*doc, role);
        }
    }
    let truncated = docs.len() > max;
    let entries = docs
        .into_iter()
        .take(max)
        .map(|(doc, role)| DocEntry { doc, role })
        .collect();
    Ok(Listing { entries, truncated })
}

/// The messages of a full listing: `Docs{full: true}`, continuations, `DocsEnd`.
pub(crate) fn listing_messages(listing: Listing, per_message: usize) -> Vec<Message> {
    let total = listing.entries.len() as u64;
    let mut out: Vec<Message> = chunks(listing.entries, per_message)
        .into_iter()
        .enumerate()
        .map(|(i, added)| Message::Docs {
            full: i == 0,
            added,
            removed: Vec::new(),
        })
        .collect();
    if out.is_empty() {
        out.push(Message::Docs {
            full: true,
            added: Vec::new(),
            removed: Vec::new(),
        });
    }
    out.push(Message::DocsEnd {
        total,
        truncated: listing.truncated,
    });
    out
}

/// The messages of a change to a listing: `Docs{full: false}`, at most `per_message` entries
/// (added plus removed) each. Nothing for an empty change.
pub(crate) fn delta_messages(
    added: Vec<DocEntry>,
    removed: Vec<DocId>,
    per_message: usize,
) -> Vec<Message> {
    let mut out: Vec<Message> = chunks(added, per_message)
        .into_iter()
        .map(|added| Message::Docs {
            full: false,
            added,
            removed: Vec::new(),
        })
        .collect();
    out.extend(
        chunks(removed, per_message)
            .into_iter()
            .map(|removed| Message::Docs {
                full: false,
                added: Vec::new(),
                removed,
            }),
    );
    out
}

fn chunks<T>(items: Vec<T>, per_message: usize) -> Vec<Vec<T>> {
    let per_message = per_message.max(1);
    let mut out = Vec::with_capacity(items.len().div_ceil(per_message));
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        out.push(items.by_ref().take(per_message).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::store::docs as docstore;
    use weft_core::store::MemStore;

    const NOW: u64 = 1_700_000_000;

    fn doc(n: u8) -> DocId {
        DocId::from_bytes([n; 16])
    }

    fn entry(n: u8, role: Role) -> DocEntry {
        DocEntry { doc: doc(n), role }
    }

    fn store_with(metas: &[(DocId, DocMeta)]) -> MemStore {
        let store = MemStore::new();
        let mut batch = weft_core::store::WriteBatch::new();
        for (doc, meta) in metas {
            docstore::put_meta(&mut batch, *doc, meta);
            for (user, holding) in index::user_docs_of(meta) {
                index::put_user_doc(&mut batch, &user, *doc, holding);
            }
        }
        store.write(&batch).unwrap();
        store
    }

    fn meta(owner: &str, access: &[(&str, Role)], deleted: bool) -> DocMeta {
        let mut m = DocMeta::default();
        m.owner = Some(owner.into());
        m.access = access.iter().map(|(u, r)| (u.to_string(), *r)).collect();
        m.deleted_at_ms = deleted.then_some(1);
        m
    }

    fn list(store: &MemStore, claims: &Claims, max: usize) -> Listing {
        listing(store, claims, max, |d| docstore::load_meta(store, d)).unwrap()
    }

    #[test]
    fn a_user_lists_owned_shared_and_granted_documents_with_their_roles() {
        let store = store_with(&[
            (doc(1), meta("bob", &[], false)),
            (doc(2), meta("alice", &[("bob", Role::ReadOnly)], false)),
            (doc(3), meta("alice", &[("bob", Role::ReadOnly)], true)),
            (doc(4), meta("alice", &[], false)),
            (doc(5), meta("alice", &[], true)),
        ]);
        // The token upgrades doc 2, grants doc 4, names a deleted doc 5 and a doc 6 nobody
        // uploaded yet (which it may sync).
        let bob = Claims::new("bob", NOW, 60)
            .with_doc(doc(2), Role::ReadWrite)
            .with_doc(doc(4), Role::ReadOnly)
            .with_doc(doc(5), Role::ReadWrite)
            .with_doc(doc(6), Role::ReadOnly);
        assert_eq!(
            list(&store, &bob, 100),
            Listing {
                entries: vec![
                    entry(1, Role::ReadWrite),
                    entry(2, Role::ReadWrite),
                    entry(4, Role::ReadOnly),
                    entry(6, Role::ReadOnly),
                ],
                truncated: false,
            }
        );
        let plain = Claims::new("bob", NOW, 60);
        assert_eq!(
            list(&store, &plain, 100).entries,
            vec![entry(1, Role::ReadWrite), entry(2, Role::ReadOnly)]
        );
        assert!(list(&store, &Claims::new("carol", NOW, 60), 100)
            .entries
            .is_empty());
    }

    #[test]
    fn long_lists_are_truncated_and_split_into_bounded_messages() {
        let metas: Vec<(DocId, DocMeta)> =
            (1..=10).map(|n| (doc(n), meta("a", &[], false))).collect();
        let store = store_with(&metas);
        let a = Claims::new("a", NOW, 60);
        let capped = list(&store, &a, 7);
        assert!(capped.truncated);
        assert_eq!(capped.entries.len(), 7);

        let msgs = listing_messages(list(&store, &a, 100), 4);
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        let mut seen = 0;
        for (i, m) in msgs.iter().enumerate() {
            match m {
                Message::Docs {
                    full,
                    added,
                    removed,
                } => {
                    assert_eq!(*full, i == 0);
                    assert!(added.len() <= 4 && removed.is_empty());
                    seen += added.len();
                }
                Message::DocsEnd { total, truncated } => {
                    assert_eq!((i, *total, *truncated), (3, 10, false));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen, 10);

        let empty = listing_messages(
            Listing {
                entries: vec![],
                truncated: false,
            },
            4,
        );
        assert_eq!(
            empty,
            vec![
                Message::Docs {
                    full: true,
                    added: vec![],
                    removed: vec![]
                },
                Message::DocsEnd {
                    total: 0,
                    truncated: false
                }
            ]
        );
    }

    #[test]
    fn deltas_are_split_too_and_empty_changes_send_nothing() {
        assert!(delta_messages(vec![], vec![], 2).is_empty());
        let msgs = delta_messages(
            vec![entry(1, Role::ReadOnly)],
            vec![doc(2), doc(3), doc(4)],
            2,
        );
        assert_eq!(msgs.len(), 3);
        assert!(msgs
            .iter()
            .all(|m| matches!(m, Message::Docs { full: false, .. })));
    }
}
