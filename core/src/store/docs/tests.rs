//! The document store's tests.

use automerge::transaction::Transactable;
use automerge::{ChangeHash, ObjType, ROOT};

use std::collections::BTreeMap;

use automerge::{sync, Automerge, AutomergeError, ReadDoc};

use super::meta::sync_state_key;
use super::*;
use crate::store::MemStore;
use crate::store::{KvStore, StoreError, Table, WriteBatch};
use crate::{DocId, Role};

pub(crate) const DOC: DocId = DocId::from_bytes([1; 16]);
pub(crate) const OTHER: DocId = DocId::from_bytes([2; 16]);

pub(crate) fn commit(
    store: &MemStore,
    build: impl FnOnce(&mut WriteBatch),
) -> Result<(), StoreError> {
    let mut batch = WriteBatch::new();
    build(&mut batch);
    store.write(&batch)
}

/// Append `text` to the document's "log" list; returns the new change's hash and raw bytes.
pub(crate) fn append(doc: &mut Automerge, text: &str) -> (ChangeHash, Vec<u8>) {
    let log = doc.get(ROOT, "log").unwrap().map(|(_, id)| id);
    let outcome = doc
        .transact::<_, _, AutomergeError>(|tx| {
            let log = match log {
                Some(id) => id,
                None => tx.put_object(ROOT, "log", ObjType::List)?,
            };
            let len = tx.length(&log);
            tx.insert(&log, len, text)?;
            Ok(())
        })
        .unwrap();
    let hash = outcome.hash.expect("an insert makes a change");
    let bytes = doc.get_change_by_hash(&hash).unwrap().raw_bytes().to_vec();
    (hash, bytes)
}

pub(crate) fn log_len(doc: &Automerge) -> usize {
    doc.get(ROOT, "log")
        .unwrap()
        .map_or(0, |(_, log)| doc.length(&log))
}

#[test]
fn chunk_keys_round_trip_and_reject_other_bytes() {
    let key = ChunkKey::for_bytes(DOC, ChunkKind::Incremental, b"bytes");
    assert_eq!(ChunkKey::from_bytes(&key.to_bytes()), Some(key));
    assert_eq!(key.to_bytes()[16], 1);
    assert_eq!(ChunkKey::from_bytes(&key.to_bytes()[..48]), None);
    let mut bad_kind = key.to_bytes();
    bad_kind[16] = 9;
    assert_eq!(ChunkKey::from_bytes(&bad_kind), None);
    // Snapshots sort before incrementals, as keys and as values.
    let snapshot = ChunkKey::for_bytes(DOC, ChunkKind::Snapshot, b"zzz");
    assert!(snapshot < key && snapshot.to_bytes() < key.to_bytes());
}

#[test]
fn a_document_loads_from_a_snapshot_and_changes_stored_in_any_order() {
    let store = MemStore::new();
    let mut doc = Automerge::new();
    let mut hashes = Vec::new();
    for i in 0..3 {
        hashes.push(append(&mut doc, &format!("early {i}")).0);
    }
    commit(&store, |b| {
        put_chunk(b, DOC, ChunkKind::Snapshot, doc.save());
    })
    .unwrap();
    // Ten changes, each its own chunk: keys order them by hash, not causally.
    for i in 0..10 {
        let (hash, bytes) = append(&mut doc, &format!("late {i}"));
        hashes.push(hash);
        commit(&store, |b| {
            put_chunk(b, DOC, ChunkKind::Incremental, bytes);
        })
        .unwrap();
    }
    // And a save_after chunk overlapping some of them.
    let overlap = doc.save_after(&[hashes[5]]);
    commit(&store, |b| {
        put_chunk(b, DOC, ChunkKind::Incremental, overlap);
    })
    .unwrap();
    let (loaded, keys) = load_document(&store, DOC).unwrap().unwrap();
    assert_eq!(keys.len(), 12);
    assert_eq!(keys[0].kind(), ChunkKind::Snapshot);
    assert_eq!(loaded.get_heads(), doc.get_heads());
    assert_eq!(log_len(&loaded), 13);
    assert!(load_document(&store, OTHER).unwrap().is_none());
}

#[test]
fn changes_alone_load_without_a_snapshot() {
    let store = MemStore::new();
    let mut doc = Automerge::new();
    for i in 0..5 {
        let (_, bytes) = append(&mut doc, &i.to_string());
        commit(&store, |b| {
            put_chunk(b, DOC, ChunkKind::Incremental, bytes);
        })
        .unwrap();
    }
    let (loaded, _) = load_document(&store, DOC).unwrap().unwrap();
    assert_eq!(loaded.get_heads(), doc.get_heads());
}

#[test]
fn compaction_replaces_the_chunks_it_covers_and_nothing_else() {
    let store = MemStore::new();
    let mut doc = Automerge::new();
    let mut keys = Vec::new();
    for i in 0..4 {
        let (_, bytes) = append(&mut doc, &i.to_string());
        commit(&store, |b| {
            keys.push(put_chunk(b, DOC, ChunkKind::Incremental, bytes))
        })
        .unwrap();
    }
    // Another document's chunk, and a chunk this writer has not seen (a concurrent write).
    commit(&store, |b| {
        put_chunk(b, OTHER, ChunkKind::Incremental, doc.save());
    })
    .unwrap();
    let mut other_writer = doc.fork();
    let (late, late_bytes) = append(&mut other_writer, "late");
    commit(&store, |b| {
        put_chunk(b, DOC, ChunkKind::Incremental, late_bytes);
    })
    .unwrap();

    let snapshot = commit(&store, |b| {
        compact(b, DOC, doc.save(), &keys);
    });
    snapshot.unwrap();
    let chunks = load_chunks(&store, DOC).unwrap();
    assert_eq!(chunks.len(), 2, "the snapshot and the concurrent change");
    let (loaded, _) = load_document(&store, DOC).unwrap().unwrap();
    assert!(loaded.get_change_by_hash(&late).is_some());
    assert_eq!(log_len(&loaded), 5);
    assert_eq!(load_chunks(&store, OTHER).unwrap().len(), 1);
}

#[test]
fn a_failed_compaction_leaves_the_previous_chunks_loadable() {
    let store = MemStore::new();
    let mut doc = Automerge::new();
    let mut keys = Vec::new();
    for i in 0..5 {
        let (_, bytes) = append(&mut doc, &i.to_string());
        commit(&store, |b| {
            keys.push(put_chunk(b, DOC, ChunkKind::Incremental, bytes))
        })
        .unwrap();
    }
    store.fail_next_write();
    let failed = commit(&store, |b| {
        compact(b, DOC, doc.save(), &keys);
    });
    assert!(matches!(failed, Err(StoreError::Injected { .. })));
    let (loaded, loaded_keys) = load_document(&store, DOC).unwrap().unwrap();
    assert_eq!(loaded_keys.len(), 5);
    assert_eq!(loaded.get_heads(), doc.get_heads());

    // Retried, it lands whole.
    commit(&store, |b| {
        compact(b, DOC, doc.save(), &loaded_keys);
    })
    .unwrap();
    let (loaded, loaded_keys) = load_document(&store, DOC).unwrap().unwrap();
    assert_eq!(loaded_keys.len(), 1);
    assert_eq!(loaded.get_heads(), doc.get_heads());
}

#[test]
fn compacting_an_unchanged_document_keeps_its_snapshot() {
    let store = MemStore::new();
    let mut doc = Automerge::new();
    append(&mut doc, "only");
    let mut first = None;
    commit(&store, |b| first = Some(compact(b, DOC, doc.save(), &[]))).unwrap();
    let first = first.unwrap();
    let mut second = None;
    commit(&store, |b| {
        second = Some(compact(b, DOC, doc.save(), &[first]))
    })
    .unwrap();
    assert_eq!(second, Some(first));
    assert!(load_document(&store, DOC).unwrap().is_some());
}

#[test]
fn damaged_chunk_bytes_are_reported_as_corruption() {
    let store = MemStore::new();
    let mut doc = Automerge::new();
    let (_, bytes) = append(&mut doc, "x");
    let key = ChunkKey::for_bytes(DOC, ChunkKind::Incremental, &bytes);
    let mut damaged = bytes.clone();
    damaged[bytes.len() / 2] ^= 1;
    commit(&store, |b| {
        b.put(Table::CHUNKS, key.to_bytes(), damaged);
    })
    .unwrap();
    let err = load_document(&store, DOC).unwrap_err();
    assert!(
        matches!(err, DocStoreError::CorruptChunk { key: k, .. } if k == key),
        "{err:?}"
    );
    assert!(err.to_string().contains(&DOC.to_string()), "{err}");
}

#[test]
fn chunks_that_do_not_parse_are_set_aside_and_the_rest_loads() {
    let store = MemStore::new();
    let mut doc = Automerge::new();
    let (first, good) = append(&mut doc, "x");
    let (second, also_good) = append(&mut doc, "y");
    let garbage: Vec<u8> = (0..37u8).map(|i| i.wrapping_mul(31)).collect();
    // Old relays stored a sync message's chunks as they came: a good change and garbage
    // in one stored chunk, and garbage alone in another.
    let mut mixed = also_good.clone();
    mixed.extend_from_slice(&garbage);
    let mut keys = Vec::new();
    commit(&store, |b| {
        put_chunk(b, DOC, ChunkKind::Incremental, good);
        keys.push(put_chunk(b, DOC, ChunkKind::Incremental, mixed));
        keys.push(put_chunk(b, DOC, ChunkKind::Incremental, garbage.clone()));
    })
    .unwrap();
    let loaded = load_document_sized(&store, DOC).unwrap().unwrap();
    assert!(loaded.doc.get_change_by_hash(&first).is_some());
    assert!(loaded.doc.get_change_by_hash(&second).is_some(), "salvaged");
    let mut bad: Vec<ChunkKey> = loaded.quarantine.iter().map(|q| q.key).collect();
    bad.sort();
    keys.sort();
    assert_eq!(bad, keys);
    assert!(loaded.chunks.iter().all(|k| !keys.contains(k)));
    // Set aside, they are never read again; the salvaged change stays.
    commit(&store, |b| {
        for q in &loaded.quarantine {
            quarantine(b, DOC, q);
        }
    })
    .unwrap();
    let again = load_document_sized(&store, DOC).unwrap().unwrap();
    assert!(again.quarantine.is_empty());
    assert!(again.doc.get_change_by_hash(&second).is_some());
    let stored = store.scan_prefix(Table::CHUNKS, DOC.as_bytes()).unwrap();
    let quarantined: Vec<Vec<u8>> = stored
        .iter()
        .filter(|(k, _)| ChunkKey::from_bytes(k).unwrap().kind() == ChunkKind::Quarantined)
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(quarantined.len(), 2);
    assert!(quarantined.contains(&garbage));
    // Deleting the document deletes them too.
    commit(&store, |b| delete_doc(b, DOC)).unwrap();
    assert!(store
        .scan_prefix(Table::CHUNKS, DOC.as_bytes())
        .unwrap()
        .is_empty());
}

#[test]
fn malformed_chunk_keys_are_errors_for_the_document_and_skipped_in_listings() {
    let store = MemStore::new();
    commit(&store, |b| {
        b.put(
            Table::CHUNKS,
            [DOC.as_bytes().as_slice(), b"short"].concat(),
            b"v".to_vec(),
        );
    })
    .unwrap();
    assert!(matches!(
        load_document(&store, DOC),
        Err(DocStoreError::BadKey { .. })
    ));
    assert!(list_docs(&store).unwrap().is_empty());
}

#[test]
fn read_faults_surface_as_store_errors() {
    let store = MemStore::new();
    store.set_read_fault(true);
    assert!(matches!(
        load_document(&store, DOC),
        Err(DocStoreError::Store {
            source: StoreError::Injected { .. }
        })
    ));
    assert!(load_meta::<NoExt>(&store, DOC).is_err());
    assert!(list_docs(&store).is_err());
}

#[test]
fn sync_states_round_trip_per_peer_and_are_deleted_together() {
    let store = MemStore::new();
    let mut ours = Automerge::new();
    append(&mut ours, "hello");
    let mut state = sync::State::new();
    // Generating a message records what we sent in the state.
    let _ = sync::SyncDoc::generate_sync_message(&ours, &mut state);
    let alice = [0xa1; 32];
    let bob = [0xb0; 32];
    commit(&store, |b| {
        put_sync_state(b, DOC, &alice, &state);
        put_sync_state(b, DOC, &bob, &sync::State::new());
        put_sync_state(b, OTHER, &alice, &sync::State::new());
    })
    .unwrap();
    let loaded = load_sync_state(&store, DOC, &alice).unwrap().unwrap();
    assert_eq!(loaded.encode(), state.encode());
    assert!(load_sync_state(&store, DOC, &[0xcc; 32]).unwrap().is_none());

    commit(&store, |b| delete_sync_states(b, DOC)).unwrap();
    assert!(load_sync_state(&store, DOC, &alice).unwrap().is_none());
    assert!(load_sync_state(&store, DOC, &bob).unwrap().is_none());
    assert!(load_sync_state(&store, OTHER, &alice).unwrap().is_some());
}

#[test]
fn sync_states_with_an_unknown_format_byte_are_refused() {
    let store = MemStore::new();
    let peer = [7; 32];
    commit(&store, |b| {
        b.put(
            Table::SYNC_STATES,
            sync_state_key(DOC, &peer),
            vec![0x02, 0x43, 0],
        );
    })
    .unwrap();
    assert!(matches!(
        load_sync_state(&store, DOC, &peer),
        Err(DocStoreError::UnknownFormat {
            tag: 2,
            record: "sync state",
            ..
        })
    ));
    commit(&store, |b| {
        b.put(
            Table::SYNC_STATES,
            sync_state_key(DOC, &peer),
            vec![0x01, 0xff],
        );
    })
    .unwrap();
    assert!(matches!(
        load_sync_state(&store, DOC, &peer),
        Err(DocStoreError::Decode { .. })
    ));
}

/// An extension as a device or a relay keeps one.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(crate) struct TestExt {
    pub(crate) confirmed_heads: Vec<String>,
    pub(crate) last_sync_ms: Option<u64>,
    pub(crate) revoked: bool,
    pub(crate) stored_bytes: u64,
    pub(crate) actor_epoch: u32,
}

impl MetaExt for TestExt {
    fn tombstone(&self) -> Self {
        TestExt {
            revoked: true,
            ..TestExt::default()
        }
    }
}

#[test]
fn metadata_round_trips() {
    let store = MemStore::new();
    let meta = DocMeta {
        kind: Some("chat".into()),
        owner: Some("alice".into()),
        role: Some(Role::ReadWrite),
        access: BTreeMap::from([("bob".into(), Role::ReadOnly)]),
        created_at_ms: 1,
        updated_at_ms: 2,
        deleted_at_ms: Some(3),
        ext: TestExt {
            confirmed_heads: vec!["ab".into()],
            last_sync_ms: Some(4),
            revoked: true,
            stored_bytes: 5,
            actor_epoch: 6,
        },
    };
    commit(&store, |b| put_meta(b, DOC, &meta)).unwrap();
    assert_eq!(load_meta(&store, DOC).unwrap(), Some(meta.clone()));
    assert_eq!(load_meta::<TestExt>(&store, OTHER).unwrap(), None);
    // The shared fields alone read from the same row.
    let shared: DocMeta<NoExt> = load_meta(&store, DOC).unwrap().unwrap();
    assert_eq!(
        (shared.owner, shared.deleted_at_ms),
        (meta.owner, meta.deleted_at_ms)
    );
}

#[test]
fn metadata_format_1_reads_with_missing_and_unknown_fields() {
    // Format 1 as written by hand: fields in any order, some absent, one from the future.
    let stored = b"\x01\x85\xa4kind\xa4chat\xa4role\xa2rw\xa6access\x81\xa5alice\xa2ro\
                   \xadcreated_at_ms\x05\xa9zz_future\xc3";
    let store = MemStore::new();
    commit(&store, |b| {
        b.put(Table::DOC_META, DOC.as_bytes().to_vec(), stored.to_vec());
    })
    .unwrap();
    let meta: DocMeta<TestExt> = load_meta(&store, DOC).unwrap().unwrap();
    let expected = DocMeta {
        kind: Some("chat".into()),
        role: Some(Role::ReadWrite),
        access: BTreeMap::from([("alice".into(), Role::ReadOnly)]),
        created_at_ms: 5,
        ..DocMeta::default()
    };
    assert_eq!(meta, expected);

    for (value, expect_unknown) in [
        (vec![0x02, 0x80], true),
        (vec![], false),
        (vec![1, 0xc1], false),
    ] {
        commit(&store, |b| {
            b.put(Table::DOC_META, DOC.as_bytes().to_vec(), value);
        })
        .unwrap();
        let err = load_meta::<TestExt>(&store, DOC).unwrap_err();
        assert_eq!(
            matches!(err, DocStoreError::UnknownFormat { .. }),
            expect_unknown,
            "{err:?}"
        );
    }
}

#[test]
fn deleting_a_document_removes_all_of_it_and_only_it() {
    let store = MemStore::new();
    let mut doc = Automerge::new();
    append(&mut doc, "x");
    for id in [DOC, OTHER] {
        commit(&store, |b| {
            put_chunk(b, id, ChunkKind::Snapshot, doc.save());
            put_sync_state(b, id, &[1; 32], &sync::State::new());
            put_meta(b, id, &DocMeta::<NoExt>::default());
        })
        .unwrap();
    }
    // A document known only by its metadata is listed too.
    let third = DocId::from_bytes([3; 16]);
    commit(&store, |b| put_meta(b, third, &DocMeta::<NoExt>::default())).unwrap();
    assert_eq!(list_docs(&store).unwrap(), vec![DOC, OTHER, third]);

    commit(&store, |b| delete_doc(b, DOC)).unwrap();
    assert!(load_document(&store, DOC).unwrap().is_none());
    assert!(load_meta::<NoExt>(&store, DOC).unwrap().is_none());
    assert!(load_sync_state(&store, DOC, &[1; 32]).unwrap().is_none());
    assert!(load_document(&store, OTHER).unwrap().is_some());
    assert!(load_sync_state(&store, OTHER, &[1; 32]).unwrap().is_some());
    assert_eq!(list_docs(&store).unwrap(), vec![OTHER, third]);
}
