use std::fs;
use std::path::Path;
use std::sync::Arc;

use ::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::*;
use crate::store::staging::{Delta, Entry, LOG};
use crate::store::{KvStore, WriteBatch};

mod damage;
mod layout;

/// A table of the store's user, as the relay registers its per-user index.
const USER_DOCS: Table = Table::new("user_docs");

/// The tables core created in every file before its users registered their own.
const PREVIOUS_LAYOUT: [Table; 5] = [
    Table::CHUNKS,
    Table::SYNC_STATES,
    Table::DOC_META,
    USER_DOCS,
    Table::GATE_RECORDS,
];

fn put(table: Table, key: &[u8], value: &[u8]) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.put(table, key.to_vec(), value.to_vec());
    b
}

#[test]
fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        let mut b = put(Table::CHUNKS, b"a1", b"one");
        b.put(Table::CHUNKS, b"a2".to_vec(), b"two".to_vec())
            .put(Table::CHUNKS, b"b1".to_vec(), b"three".to_vec())
            .put(Table::DOC_META, b"a".to_vec(), b"meta".to_vec());
        store.write(&b).unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(
        store.get(Table::CHUNKS, b"a2").unwrap(),
        Some(b"two".to_vec())
    );
    assert_eq!(store.get(Table::SYNC_STATES, b"a2").unwrap(), None);
    assert_eq!(
        store.scan_prefix(Table::CHUNKS, b"a").unwrap(),
        vec![
            (b"a1".to_vec(), b"one".to_vec()),
            (b"a2".to_vec(), b"two".to_vec())
        ]
    );
    assert_eq!(store.scan_keys(Table::CHUNKS, b"").unwrap().len(), 3);
}

/// A lazy batch is readable at once, lost by a crash before the next durable commit (a copy
/// of the file taken then opens at the last durable commit) and durable after a sync.
#[test]
fn a_lazy_batch_is_durable_only_after_a_durable_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = RedbStore::open(&path).unwrap();
    store.write(&put(Table::CHUNKS, b"a", b"durable")).unwrap();
    let mut lazy = put(Table::CHUNKS, b"b", b"lazy");
    lazy.set_lazy();
    assert!(lazy.is_lazy());
    store.write(&lazy).unwrap();
    assert_eq!(
        store.get(Table::CHUNKS, b"b").unwrap(),
        Some(b"lazy".to_vec())
    );
    let crashed = dir.path().join("crashed.redb");
    fs::copy(&path, &crashed).unwrap();
    store.write(&WriteBatch::sync()).unwrap();
    let synced = dir.path().join("synced.redb");
    fs::copy(&path, &synced).unwrap();

    let at_crash = RedbStore::open(&crashed).unwrap();
    assert_eq!(
        at_crash.get(Table::CHUNKS, b"a").unwrap(),
        Some(b"durable".to_vec())
    );
    assert_eq!(at_crash.get(Table::CHUNKS, b"b").unwrap(), None);
    let after_sync = RedbStore::open(&synced).unwrap();
    assert_eq!(
        after_sync.get(Table::CHUNKS, b"b").unwrap(),
        Some(b"lazy".to_vec())
    );
}

#[test]
fn ops_apply_in_order_and_prefix_deletes_stay_in_their_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("s.redb")).unwrap();
    let mut b = WriteBatch::new();
    for key in [&b"a\xff"[..], b"a\xff\x01", b"b", b"a"] {
        b.put(Table::CHUNKS, key.to_vec(), b"v".to_vec());
    }
    store.write(&b).unwrap();
    let mut b = WriteBatch::new();
    b.delete_prefix(Table::CHUNKS, b"a\xff".to_vec())
        .put(Table::CHUNKS, b"a\xff\x02".to_vec(), b"w".to_vec())
        .delete(Table::CHUNKS, b"b".to_vec());
    store.write(&b).unwrap();
    assert_eq!(
        store.scan_keys(Table::CHUNKS, b"").unwrap(),
        vec![b"a".to_vec(), b"a\xff\x02".to_vec()]
    );
    let mut all = WriteBatch::new();
    all.delete_prefix(Table::CHUNKS, Vec::new());
    store.write(&all).unwrap();
    assert!(store.scan_keys(Table::CHUNKS, b"").unwrap().is_empty());
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let _first = RedbStore::open(&path).unwrap();
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
}

/// Writes a schema version 1 file at `path` with `tables` and one `(table, key, value)` row.
fn write_version_1(path: &Path, tables: &[Table], row: (Table, &[u8], &[u8])) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(META)
        .unwrap()
        .insert(SCHEMA_VERSION_KEY, &1u32.to_be_bytes()[..])
        .unwrap();
    for table in tables {
        txn.open_table(definition(*table)).unwrap();
    }
    txn.open_table(definition(row.0))
        .unwrap()
        .insert(row.1, row.2)
        .unwrap();
    txn.commit().unwrap();
}

/// Writes `bytes` as staging log entry `seq` of the closed store at `path`, bypassing
/// `RedbStore`.
fn put_log_entry(path: &Path, seq: u64, bytes: &[u8]) {
    let db = Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(LOG).unwrap().insert(seq, bytes).unwrap();
    txn.commit().unwrap();
}

#[test]
fn a_file_from_before_the_user_index_opens_with_the_index_table_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    // Schema version 1 as first shipped: three tables.
    write_version_1(
        &path,
        &[Table::CHUNKS, Table::SYNC_STATES, Table::DOC_META],
        (Table::DOC_META, b"doc", b"meta"),
    );
    let store = RedbStore::open_with_tables(&path, &[USER_DOCS], StagingLimits::default()).unwrap();
    assert_eq!(
        store.get(Table::DOC_META, b"doc").unwrap(),
        Some(b"meta".to_vec())
    );
    assert!(store.scan_prefix(USER_DOCS, b"").unwrap().is_empty());
    store.write(&put(USER_DOCS, b"row", b"v")).unwrap();
    assert_eq!(store.scan_keys(USER_DOCS, b"").unwrap().len(), 1);
}

#[test]
fn a_newer_schema_version_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    drop(RedbStore::open(&path).unwrap());
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_VERSION_KEY, &7u32.to_be_bytes()[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::UnsupportedVersion {
                found: 7,
                supported: SCHEMA_VERSION,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("s.redb"), "{err}");
}

#[test]
fn a_redb_file_of_another_program_is_not_a_weft_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.redb");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let def: TableDefinition<u64, u64> = TableDefinition::new("chunks");
        txn.open_table(def).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

#[test]
fn a_file_copied_mid_use_opens_through_redb_repair_with_its_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.redb");
    let crashed = dir.path().join("crashed.redb");
    let store = RedbStore::open(&path).unwrap();
    for i in 0..20u8 {
        store.write(&put(Table::CHUNKS, &[i], &[i; 1000])).unwrap();
    }
    // The store is still open, so the copy records no clean shutdown: it is what a crash
    // right now would leave, and opening it runs redb's repair.
    fs::copy(&path, &crashed).unwrap();
    drop(store);
    let recovered = RedbStore::open(&crashed).unwrap();
    assert_eq!(recovered.scan_keys(Table::CHUNKS, b"").unwrap().len(), 20);
    recovered.write(&put(Table::CHUNKS, b"more", b"v")).unwrap();
}

#[test]
fn a_version_2_file_is_upgraded_with_an_empty_gate_records_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        store.write(&put(Table::CHUNKS, b"kept", b"row")).unwrap();
    }
    {
        // What a version 2 build wrote: no gate_records table.
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let gate: TableDefinition<&[u8], &[u8]> = TableDefinition::new(Table::GATE_RECORDS.name());
        assert!(txn.delete_table(gate).unwrap());
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_VERSION_KEY, &2u32.to_be_bytes()[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(
        store.scan_prefix(Table::CHUNKS, b"").unwrap(),
        vec![(b"kept".to_vec(), b"row".to_vec())]
    );
    assert!(store
        .scan_prefix(Table::GATE_RECORDS, b"")
        .unwrap()
        .is_empty());
    store.write(&put(Table::GATE_RECORDS, b"g", b"v")).unwrap();
    drop(store);
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.scan_keys(Table::GATE_RECORDS, b"").unwrap().len(), 1);
}

#[test]
fn a_version_1_file_is_upgraded_and_stages_from_then_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.redb");
    write_version_1(&path, &PREVIOUS_LAYOUT, (Table::CHUNKS, b"old", b"row"));
    {
        let store = RedbStore::open(&path).unwrap();
        store.write(&put(Table::CHUNKS, b"new", b"staged")).unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(
        store.scan_prefix(Table::CHUNKS, b"").unwrap(),
        vec![
            (b"new".to_vec(), b"staged".to_vec()),
            (b"old".to_vec(), b"row".to_vec())
        ]
    );
    drop(store);
    let db = Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let version = txn.open_table(META).unwrap();
    let version = version.get(SCHEMA_VERSION_KEY).unwrap().unwrap();
    assert_eq!(version.value(), &SCHEMA_VERSION.to_be_bytes()[..]);
    assert_eq!(txn.open_table(LOG).unwrap().iter().unwrap().count(), 1);
}

#[test]
fn a_damaged_staged_entry_is_reported_as_corrupt_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    drop(RedbStore::open(&path).unwrap());
    put_log_entry(&path, 1, b"\x07garbage");
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("staged entry 1"), "{err}");
}

/// The rows generation `g` of `reads_beside_a_writer_see_whole_commits` leaves in `chunks`:
/// its keys, each with a value naming `g`, some small (staged, while the batch has room)
/// and some over `max_value` (written to the table directly).
fn generation_rows(g: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let keys = 3 + (g % 5);
    let mut rows: Vec<(Vec<u8>, Vec<u8>)> = (0..keys)
        .map(|k| {
            let n = (g + k) % 7;
            let mut value = g.to_be_bytes().to_vec();
            if n.is_multiple_of(3) {
                value.resize(20_000, 0xab);
            }
            (format!("k{n}").into_bytes(), value)
        })
        .collect();
    rows.sort();
    rows
}

/// Readers running beside a writer see whole commits only: each generation replaces every
/// row, so a read must show exactly one generation's rows, or none before the first.
#[test]
fn reads_beside_a_writer_see_whole_commits() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        RedbStore::open_with(
            dir.path().join("s.redb"),
            StagingLimits::with_capacity(16, 1 << 20),
        )
        .unwrap(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let rows = store.scan_prefix(Table::CHUNKS, b"").unwrap();
                    if let Some((_, v)) = rows.first() {
                        let g = u64::from_be_bytes(v[..8].try_into().unwrap());
                        assert_eq!(rows, generation_rows(g), "a torn read");
                    }
                    let keys = store.scan_keys(Table::CHUNKS, b"k").unwrap();
                    assert!(keys.len() <= 7, "{keys:?}");
                    // A later commit may have deleted it; if not, it is a whole value.
                    if let Some(value) = store.get(Table::CHUNKS, b"k3").unwrap() {
                        assert!(value.len() == 8 || value.len() == 20_000);
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for g in 0u64..300 {
        let mut b = WriteBatch::new();
        b.delete_prefix(Table::CHUNKS, Vec::new());
        for (key, value) in generation_rows(g) {
            b.put(Table::CHUNKS, key, value);
        }
        store.write(&b).unwrap();
        if g.is_multiple_of(4) {
            // A commit that appends nothing to the log: one large row in another table.
            store
                .write(&put(Table::DOC_META, b"big", &[g as u8; 20_000]))
                .unwrap();
        }
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
    assert_eq!(
        store.scan_prefix(Table::CHUNKS, b"").unwrap(),
        generation_rows(299)
    );
}

#[test]
fn a_staged_entry_numbered_out_of_range_is_corrupt_not_a_panic() {
    for seq in [0, u64::MAX] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        drop(RedbStore::open(&path).unwrap());
        let entry = Entry::Put {
            table: Table::CHUNKS,
            key: b"k",
            value: b"v",
        };
        put_log_entry(&path, seq, &entry.encode());
        let err = RedbStore::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{seq}: {err:?}");
    }
}

#[test]
fn a_batch_as_large_as_the_log_stages_a_quarter_and_older_entries_stay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = RedbStore::open_with(&path, StagingLimits::with_capacity(100, 1 << 20)).unwrap();
    for i in 0..80u32 {
        store
            .write(&put(Table::CHUNKS, format!("old {i:03}").as_bytes(), b"v"))
            .unwrap();
    }
    assert_eq!(lock(&store.writer).entries, 80);
    let mut big = WriteBatch::new();
    for i in 0..95u32 {
        big.put(
            Table::CHUNKS,
            format!("new {i:03}").into_bytes(),
            b"w".to_vec(),
        );
    }
    store.write(&big).unwrap();
    let state = *lock(&store.writer);
    // 25 of the new puts were staged; cleaning took the log back under 7/8 of 100 and
    // no further: most of the older entries are still staged.
    let staged = |prefix: &str, n: u32| {
        let layers = read(&store.layers);
        (0..n)
            .filter(|i| {
                let key = format!("{prefix} {i:03}");
                layers
                    .latest()
                    .get(&Delta::new(), Table::CHUNKS, key.as_bytes())
                    .is_some()
            })
            .count()
    };
    assert_eq!(staged("new", 95), 25);
    assert!(staged("old", 80) >= 50, "{}", staged("old", 80));
    assert!(state.entries <= 100, "{state:?}");
    assert_eq!(store.scan_keys(Table::CHUNKS, b"").unwrap().len(), 175);
    drop(store);
    let store = RedbStore::open_with(&path, StagingLimits::with_capacity(100, 1 << 20)).unwrap();
    assert_eq!(lock(&store.writer).entries, state.entries);
    assert_eq!(store.scan_keys(Table::CHUNKS, b"").unwrap().len(), 175);
}
