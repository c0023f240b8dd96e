//! [`RedbStore`]: the [`KvStore`] on disk, one redb file.
//!
//! # Layout
//!
//! Each [`Table`] is a redb table of `&[u8]` keys to `&[u8]` values, all created when the file
//! is created; a table added in a later build (`user_docs`) is created empty when a file
//! without it opens, which is its upgrade path. A `meta` table holds `schema_version` (4 bytes, big-endian), written together
//! with the tables in the first transaction. An open refuses a newer version rather than guess
//! at its layout, and refuses a redb file with tables but no version: it is not a weft store.
//!
//! # Crash safety
//!
//! [`KvStore::write`] is one redb write transaction committed with redb's default
//! `Durability::Immediate`: `commit` returns after the new root is fsynced, and redb's
//! copy-on-write pages and checksummed commit slots mean a crash leaves either the previous
//! commit or the new one. After a crash redb repairs its allocator state on the next open.
//!
//! # Damaged files
//!
//! A file is opened with redb's integrity check: every page checksum of the committed trees is
//! verified on open, so a truncated, zero-filled or overwritten file is reported as
//! [`StoreError::Corrupt`] naming the file, where an unchecked open may panic on bytes redb did
//! not write. The check reads the whole file once per open; weft stores are small enough, and
//! opened rarely enough, for that to be the right trade.

use std::fs;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::redb::{
    Builder, Database, ReadableDatabase, ReadableTable, TableDefinition, TableError, TableHandle,
};

use super::{prefix_end, BatchOp, KvStore, StoreError, Table, WriteBatch};

/// The newest schema this build reads and the one it writes.
const SCHEMA_VERSION: u32 = 1;
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SCHEMA_VERSION_KEY: &str = "schema_version";

type Rows<'txn> = ::redb::Table<'txn, &'static [u8], &'static [u8]>;

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

/// A [`KvStore`] in one redb file.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

impl RedbStore {
    /// Open the store at `path`, creating it (and its tables) if the file is missing or empty.
    ///
    /// Fails with [`StoreError::Corrupt`] if the file is damaged or not a weft store,
    /// [`StoreError::UnsupportedVersion`] if a newer weft wrote it, and [`StoreError::Locked`]
    /// if another process has it open.
    pub fn open(path: impl AsRef<Path>) -> Result<RedbStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let had_contents = fs::metadata(&path).is_ok_and(|m| m.len() > 0);
        let db = Builder::new()
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|err| {
                let err = classify(&path, err.into());
                match err {
                    // redb reports a bad header as InvalidData, and a file cut short as a read
                    // past its end: both mean the bytes are not a (whole) database.
                    StoreError::Io { source, .. }
                        if had_contents
                            && matches!(
                                source.kind(),
                                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                            ) =>
                    {
                        StoreError::Corrupt {
                            path: path.clone(),
                            reason: source.to_string(),
                        }
                    }
                    other => other,
                }
            })?;
        let store = RedbStore { db, path };
        store.init_schema()?;
        tracing::debug!(path = %store.path.display(), "opened store");
        Ok(store)
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Check the schema version, or write it and create the tables in a new file.
    fn init_schema(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        let found = {
            let meta = txn.open_table(META).map_err(|e| self.not_ours(e))?;
            let value = meta.get(SCHEMA_VERSION_KEY).map_err(|e| self.error(e))?;
            value.map(|v| v.value().to_vec())
        };
        match found {
            None => {
                let foreign: Vec<String> = txn
                    .list_tables()
                    .map_err(|e| self.error(e))?
                    .map(|t| t.name().to_string())
                    .filter(|name| name != META.name())
                    .collect();
                if !foreign.is_empty() {
                    return Err(self.corrupt(format!(
                        "it holds tables {foreign:?} but no weft schema version"
                    )));
                }
                let mut meta = txn.open_table(META).map_err(|e| self.error(e))?;
                meta.insert(SCHEMA_VERSION_KEY, &SCHEMA_VERSION.to_be_bytes()[..])
                    .map_err(|e| self.error(e))?;
            }
            Some(bytes) => {
                let found = <[u8; 4]>::try_from(bytes.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| {
                        self.corrupt(format!("its schema version is {} bytes long", bytes.len()))
                    })?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::UnsupportedVersion {
                        path: self.path.clone(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                if found == 0 {
                    return Err(self.corrupt("its schema version is 0".to_string()));
                }
            }
        }
        for table in Table::ALL {
            txn.open_table(definition(table))
                .map_err(|e| self.not_ours(e))?;
        }
        txn.commit().map_err(|e| self.error(e))
    }

    fn error(&self, err: impl Into<::redb::Error>) -> StoreError {
        classify(&self.path, err.into())
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    /// A table of the wrong shape means the file belongs to someone else.
    fn not_ours(&self, err: TableError) -> StoreError {
        match err {
            TableError::TableTypeMismatch { .. }
            | TableError::TableIsMultimap(_)
            | TableError::TypeDefinitionChanged { .. } => {
                self.corrupt(format!("it is not a weft store: {err}"))
            }
            other => self.error(other),
        }
    }

    fn read_range<T>(
        &self,
        table: Table,
        prefix: &[u8],
        mut row: impl FnMut(&[u8], &[u8]) -> T,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let rows = match txn.open_table(definition(table)) {
            Ok(rows) => rows,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(err) => return Err(self.error(err)),
        };
        let end = prefix_end(prefix);
        let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut out = Vec::new();
        for entry in rows
            .range::<&[u8]>((Bound::Included(prefix), upper))
            .map_err(|e| self.error(e))?
        {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            out.push(row(key.value(), value.value()));
        }
        Ok(out)
    }
}

impl KvStore for RedbStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let rows = match txn.open_table(definition(table)) {
            Ok(rows) => rows,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(err) => return Err(self.error(err)),
        };
        let value = rows.get(key).map_err(|e| self.error(e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.read_range(table, prefix, |k, v| (k.to_vec(), v.to_vec()))
    }

    fn scan_keys(&self, table: Table, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read_range(table, prefix, |k, _| k.to_vec())
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            // Each table is opened once per batch; a group commit can carry thousands of ops.
            let mut open: Vec<(Table, Rows<'_>)> = Vec::new();
            for op in batch.ops() {
                let table = match op {
                    BatchOp::Put { table, .. }
                    | BatchOp::Delete { table, .. }
                    | BatchOp::DeletePrefix { table, .. } => *table,
                };
                let index = match open.iter().position(|(t, _)| *t == table) {
                    Some(index) => index,
                    None => {
                        let rows = txn
                            .open_table(definition(table))
                            .map_err(|e| self.error(e))?;
                        open.push((table, rows));
                        open.len() - 1
                    }
                };
                let rows = &mut open[index].1;
                match op {
                    BatchOp::Put { key, value, .. } => {
                        rows.insert(key.as_slice(), value.as_slice())
                            .map_err(|e| self.error(e))?;
                    }
                    BatchOp::Delete { key, .. } => {
                        rows.remove(key.as_slice()).map_err(|e| self.error(e))?;
                    }
                    BatchOp::DeletePrefix { prefix, .. } => {
                        let end = prefix_end(prefix);
                        let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                        rows.retain_in::<&[u8], _>(
                            (Bound::Included(prefix.as_slice()), upper),
                            |_, _| false,
                        )
                        .map_err(|e| self.error(e))?;
                    }
                }
            }
        }
        // An error above drops `txn`, which aborts it: nothing of the batch is written.
        txn.commit().map_err(|e| self.error(e))
    }
}

fn classify(path: &Path, err: ::redb::Error) -> StoreError {
    let path = path.to_path_buf();
    match err {
        ::redb::Error::Corrupted(reason) => StoreError::Corrupt { path, reason },
        ::redb::Error::DatabaseAlreadyOpen | ::redb::Error::LockProtocolMismatch => {
            StoreError::Locked { path }
        }
        ::redb::Error::Io(source) if is_full(&source) => StoreError::Full {
            path,
            source: Arc::new(source),
        },
        ::redb::Error::Io(source) => StoreError::Io {
            path,
            source: Arc::new(source),
        },
        ::redb::Error::DatabaseClosed => StoreError::Closed,
        other => StoreError::Backend {
            path,
            message: other.to_string(),
        },
    }
}

fn is_full(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_file_from_before_the_user_index_opens_with_the_index_table_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            // Schema version 1 as first shipped: three tables.
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(SCHEMA_VERSION_KEY, &1u32.to_be_bytes()[..])
                .unwrap();
            for table in [Table::CHUNKS, Table::SYNC_STATES, Table::DOC_META] {
                txn.open_table(definition(table)).unwrap();
            }
            txn.open_table(definition(Table::DOC_META))
                .unwrap()
                .insert(&b"doc"[..], &b"meta"[..])
                .unwrap();
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(
            store.get(Table::DOC_META, b"doc").unwrap(),
            Some(b"meta".to_vec())
        );
        assert!(store.scan_prefix(Table::USER_DOCS, b"").unwrap().is_empty());
        store.write(&put(Table::USER_DOCS, b"row", b"v")).unwrap();
        assert_eq!(store.scan_keys(Table::USER_DOCS, b"").unwrap().len(), 1);
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
                    supported: 1,
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

    /// Opening must give an error, or a store whose reads and writes give errors or data —
    /// never a panic.
    fn open_and_use(path: &Path) -> Result<(), StoreError> {
        let store = RedbStore::open(path)?;
        for table in Table::ALL {
            store.scan_prefix(table, b"")?;
            store.get(table, b"key 7")?;
        }
        store.write(&put(Table::CHUNKS, b"after", b"damage"))?;
        store.scan_prefix(Table::CHUNKS, b"")?;
        Ok(())
    }

    fn filled_store(path: &Path) {
        let store = RedbStore::open(path).unwrap();
        for i in 0..200u32 {
            let mut b = WriteBatch::new();
            b.put(
                Table::CHUNKS,
                format!("key {i}").into_bytes(),
                vec![i as u8; 100 + (i as usize * 37) % 3000],
            );
            store.write(&b).unwrap();
        }
    }

    #[test]
    fn garbage_files_are_reported_as_corrupt_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            rng_state
        };
        let sizes = [1usize, 7, 100, 511, 4096, 4097, 65536, 1 << 20];
        for (i, size) in sizes.into_iter().enumerate() {
            for fill in ["zeros", "random", "ones"] {
                let path = dir.path().join(format!("garbage-{i}-{fill}.redb"));
                let bytes: Vec<u8> = match fill {
                    "zeros" => vec![0; size],
                    "ones" => vec![0xff; size],
                    _ => (0..size).map(|_| next() as u8).collect(),
                };
                fs::write(&path, &bytes).unwrap();
                let err = RedbStore::open(&path).expect_err("garbage opened as a store");
                assert!(
                    matches!(err, StoreError::Corrupt { .. }),
                    "{size} bytes of {fill}: {err:?}"
                );
                assert!(
                    err.to_string().contains(&format!("garbage-{i}-{fill}")),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn truncated_files_give_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let original = dir.path().join("full.redb");
        filled_store(&original);
        let full = fs::read(&original).unwrap();
        let mut cuts: Vec<usize> = vec![1, 8, 64, 511, 512, 4095, 4096, 4097, 8192, 12288];
        cuts.extend((1..16).map(|i| full.len() * i / 16));
        cuts.push(full.len() - 1);
        for cut in cuts {
            let path = dir.path().join(format!("cut-{cut}.redb"));
            fs::write(&path, &full[..cut]).unwrap();
            // redb records the file's length, so any cut is caught on open.
            let err = open_and_use(&path).expect_err("a truncated store opened");
            assert!(
                matches!(err, StoreError::Corrupt { .. }),
                "cut at {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn overwritten_regions_give_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let original = dir.path().join("full.redb");
        filled_store(&original);
        let full = fs::read(&original).unwrap();
        let step = (full.len() / 24).max(1);
        for start in (0..full.len()).step_by(step) {
            for fill in [0x00u8, 0xa5] {
                let mut damaged = full.clone();
                let end = (start + 4096).min(damaged.len());
                damaged[start..end].fill(fill);
                let path = dir.path().join(format!("hole-{start}-{fill}.redb"));
                fs::write(&path, &damaged).unwrap();
                // A hole in pages no longer in use is harmless; one in live data is corruption.
                if let Err(err) = open_and_use(&path) {
                    assert!(
                        matches!(err, StoreError::Corrupt { .. }),
                        "hole at {start}: {err:?}"
                    );
                }
            }
        }
    }
}
