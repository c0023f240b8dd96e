//! Registered tables: a file written when core named every table (its user's `user_docs`
//! too) opens unchanged, and tables the opener did not register are refused by name.

use super::*;

/// Writes a schema version 3 file as the build before registered tables wrote it: every
/// table of [`PREVIOUS_LAYOUT`], a `user_docs` row and a `doc_meta` row in their tables, and
/// one staged put of each (the staging log's bytes spelled out, as that build encoded them).
fn write_previous_layout(path: &Path, user_rows: bool) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(META)
        .unwrap()
        .insert(SCHEMA_VERSION_KEY, &3u32.to_be_bytes()[..])
        .unwrap();
    for table in PREVIOUS_LAYOUT {
        txn.open_table(definition(table)).unwrap();
    }
    txn.open_table(definition(Table::DOC_META))
        .unwrap()
        .insert(&b"doc"[..], &b"meta"[..])
        .unwrap();
    let mut log = txn.open_table(LOG).unwrap();
    // tag 0 (put) ++ name length ++ name ++ key length (u16 BE) ++ key ++ value
    log.insert(1, &b"\x00\x08doc_meta\x00\x04doc2meta2"[..])
        .unwrap();
    if user_rows {
        txn.open_table(definition(USER_DOCS))
            .unwrap()
            .insert(&b"alice"[..], &b"\x01\x00"[..])
            .unwrap();
        log.insert(2, &b"\x00\x09user_docs\x00\x03bob\x01\x01"[..])
            .unwrap();
    }
    drop(log);
    txn.commit().unwrap();
}

#[test]
fn a_relay_store_written_with_the_previous_layout_opens_with_its_tables_registered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.redb");
    write_previous_layout(&path, true);
    let store = RedbStore::open_with_tables(&path, &[USER_DOCS], StagingLimits::default()).unwrap();
    assert_eq!(
        store.scan_prefix(USER_DOCS, b"").unwrap(),
        vec![
            (b"alice".to_vec(), b"\x01\x00".to_vec()),
            (b"bob".to_vec(), b"\x01\x01".to_vec()),
        ]
    );
    assert_eq!(
        store.scan_prefix(Table::DOC_META, b"").unwrap(),
        vec![
            (b"doc".to_vec(), b"meta".to_vec()),
            (b"doc2".to_vec(), b"meta2".to_vec()),
        ]
    );
    // Written again, then read after a scrub's rewrite: nothing of the user's table is lost.
    let mut b = put(USER_DOCS, b"carol", b"\x01\x00");
    b.scrub();
    store.write(&b).unwrap();
    drop(store);
    let store = RedbStore::open_with_tables(&path, &[USER_DOCS], StagingLimits::default()).unwrap();
    assert_eq!(store.scan_keys(USER_DOCS, b"").unwrap().len(), 3);
}

#[test]
fn a_store_whose_log_holds_rows_of_an_unregistered_table_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.redb");
    write_previous_layout(&path, true);
    let err = RedbStore::open(&path).unwrap_err();
    assert!(
        matches!(&err, StoreError::UnknownTable { table, .. } if table == "user_docs"),
        "{err:?}"
    );
}

#[test]
fn a_device_store_written_with_the_previous_layout_opens_and_rewrites_with_core_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.redb");
    // A device never wrote `user_docs`: the table is there, empty.
    write_previous_layout(&path, false);
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.scan_keys(Table::DOC_META, b"").unwrap().len(), 2);
    let mut b = WriteBatch::new();
    b.delete(Table::DOC_META, b"doc".to_vec()).scrub();
    store.write(&b).unwrap();
    drop(store);
    let store = RedbStore::open(&path).unwrap();
    assert!(!store.scrub_pending().unwrap());
    assert_eq!(
        store.scan_keys(Table::DOC_META, b"").unwrap(),
        vec![b"doc2".to_vec()]
    );
}

#[test]
fn a_store_with_rows_in_an_unregistered_table_is_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.redb");
    {
        let store =
            RedbStore::open_with_tables(&path, &[USER_DOCS], StagingLimits::default()).unwrap();
        // A large value skips the staging log and lands in the table itself.
        store
            .write(&put(USER_DOCS, b"alice", &[1; 64 * 1024]))
            .unwrap();
        let mut b = WriteBatch::new();
        b.delete(Table::CHUNKS, b"x".to_vec()).scrub();
        store.write(&b).unwrap();
    }
    // Opened without the table: the rewrite would drop its rows, so it is not done.
    let store = RedbStore::open(&path).unwrap();
    assert!(store.scrub_pending().unwrap());
    drop(store);
    let store = RedbStore::open_with_tables(&path, &[USER_DOCS], StagingLimits::default()).unwrap();
    assert!(!store.scrub_pending().unwrap());
    assert_eq!(
        store.scan_keys(USER_DOCS, b"").unwrap(),
        vec![b"alice".to_vec()]
    );
}

#[test]
fn tables_not_registered_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = RedbStore::open(&path).unwrap();
    let unknown = |err: StoreError| matches!(&err, StoreError::UnknownTable { table, .. } if table == "user_docs");
    assert!(unknown(store.get(USER_DOCS, b"k").unwrap_err()));
    assert!(unknown(store.scan_prefix(USER_DOCS, b"").unwrap_err()));
    let mut b = put(Table::CHUNKS, b"k", b"v");
    b.put(USER_DOCS, b"k".to_vec(), b"v".to_vec());
    assert!(unknown(store.write(&b).unwrap_err()));
    assert_eq!(store.get(Table::CHUNKS, b"k").unwrap(), None);
}

#[test]
fn tables_that_cannot_be_told_apart_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let limits = StagingLimits::default();
    for extra in [
        vec![USER_DOCS, USER_DOCS],
        vec![Table::CHUNKS],
        vec![Table::new("")],
        vec![Table::new("meta")],
    ] {
        let err = RedbStore::open_with_tables(&path, &extra, limits).unwrap_err();
        assert!(
            matches!(err, StoreError::BadTables { .. }),
            "{extra:?}: {err:?}"
        );
    }
}
