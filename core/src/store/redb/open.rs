//! Opening a [`RedbStore`]'s file: redb's integrity check, the schema version (and the
//! upgrade of an older file), the replay of the staging log into its index, and the scrub a
//! pending request asks for.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Mutex, RwLock};

use ::redb::{Builder, ReadableDatabase, ReadableTable, TableHandle};

use super::{classify, definition, RedbStore, META, SCHEMA_VERSION, SCHEMA_VERSION_KEY};
use crate::store::staging::{Entry, Index, Layers, LogState, StagingLimits, LOG};
use crate::store::{StoreError, Table};

impl RedbStore {
    /// Open the store at `path`, creating it (and its tables) if the file is missing or empty.
    ///
    /// Fails with [`StoreError::Corrupt`] if the file is damaged or not a weft store,
    /// [`StoreError::UnsupportedVersion`] if a newer weft wrote it, and [`StoreError::Locked`]
    /// if another process has it open.
    pub fn open(path: impl AsRef<Path>) -> Result<RedbStore, StoreError> {
        RedbStore::open_with(path, StagingLimits::default())
    }

    /// [`RedbStore::open`] with the staging log's limits given.
    pub fn open_with(
        path: impl AsRef<Path>,
        limits: StagingLimits,
    ) -> Result<RedbStore, StoreError> {
        RedbStore::open_with_tables(path, &[], limits)
    }

    /// Opens the store with core's tables ([`Table::CORE`]) and the user's `extra` ones, and
    /// the staging log's limits given. Only these tables can be read or written
    /// ([`StoreError::UnknownTable`] otherwise), and a staging log holding rows of any other
    /// table is refused the same way. Table names must be distinct and 1 to 255 bytes
    /// ([`StoreError::BadTables`]).
    ///
    /// When a batch asked for a scrub ([`WriteBatch::scrub`](crate::store::WriteBatch::scrub)) since the file was last
    /// rewritten, the open first copies every live row into a fresh file and renames it over
    /// this one, so that nothing deleted stays readable in the file (`redb/scrub.rs`). A
    /// failed rewrite is logged and the store opens as it is; the next open tries again.
    pub fn open_with_tables(
        path: impl AsRef<Path>,
        extra: &[Table],
        limits: StagingLimits,
    ) -> Result<RedbStore, StoreError> {
        let tables = check_tables(path.as_ref(), extra)?;
        let store = RedbStore::open_file(path.as_ref(), tables.clone(), limits)?;
        if !store.scrub_pending()? {
            return Ok(store);
        }
        let path = store.path.clone();
        let started = std::time::Instant::now();
        match store.rewrite() {
            Ok(copied) => {
                drop(store);
                let store = RedbStore::open_file(&path, tables, limits)?;
                tracing::info!(
                    path = %path.display(),
                    rows = copied.rows,
                    bytes = copied.bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "rewrote the store so that deleted data is gone from its file"
                );
                Ok(store)
            }
            Err(e) => {
                tracing::error!(
                    path = %path.display(),
                    error = %e,
                    "could not rewrite the store to erase deleted data; deleted data may stay \
                     readable in the file until a later open succeeds"
                );
                Ok(store)
            }
        }
    }

    /// Opens the file as it is (no scrub).
    fn open_file(
        path: &Path,
        tables: Box<[Table]>,
        limits: StagingLimits,
    ) -> Result<RedbStore, StoreError> {
        let path = path.to_path_buf();
        let had_contents = fs::metadata(&path).is_ok_and(|m| m.len() > 0);
        let db = Builder::new()
            .set_check_integrity_on_open(true)
            .set_cache_size(limits.cache_bytes)
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
        let mut store = RedbStore {
            db,
            path,
            limits,
            tables,
            layers: RwLock::new(Layers::default()),
            writer: Mutex::new(LogState::default()),
        };
        store.init_schema()?;
        let (state, index) = store.replay()?;
        let last = state.next_seq - 1;
        store.layers = RwLock::new(Layers::new(last, index));
        store.writer = Mutex::new(state);
        tracing::debug!(
            path = %store.path.display(),
            staged = state.entries,
            "opened store"
        );
        Ok(store)
    }

    /// Read the whole staging log in order: its extent and the index of live staged keys.
    fn replay(&self) -> Result<(LogState, Index), StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let log = txn.open_table(LOG).map_err(|e| self.not_ours(e))?;
        let mut index = Index::new();
        let mut state = LogState::default();
        let mut first = None;
        let mut last = 0;
        for entry in log.iter().map_err(|e| self.error(e))? {
            let (seq, bytes) = entry.map_err(|e| self.error(e))?;
            let (seq, bytes) = (seq.value(), bytes.value());
            // Numbers start at 1 and never reach u64::MAX: anything else was not written here.
            if seq == 0 || seq == u64::MAX {
                return Err(self.corrupt(format!("its staging log has entry number {seq}")));
            }
            if first.is_some() && seq != last + 1 {
                return Err(
                    self.corrupt(format!("its staging log jumps from entry {last} to {seq}"))
                );
            }
            first.get_or_insert(seq);
            last = seq;
            Entry::decode(bytes, &self.tables)
                .map_err(|e| self.undecodable(seq, e))?
                .replay(seq, &mut index);
            state.entries += 1;
            state.bytes += bytes.len() as u64;
        }
        state.next_seq = last + 1;
        state.first_seq = first.unwrap_or(state.next_seq);
        Ok((state, index))
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
                if found < SCHEMA_VERSION {
                    // Version 1 lacks only the staging log, created below.
                    let mut meta = txn.open_table(META).map_err(|e| self.error(e))?;
                    meta.insert(SCHEMA_VERSION_KEY, &SCHEMA_VERSION.to_be_bytes()[..])
                        .map_err(|e| self.error(e))?;
                }
            }
        }
        txn.open_table(LOG).map_err(|e| self.not_ours(e))?;
        for &table in self.tables.iter() {
            txn.open_table(definition(table))
                .map_err(|e| self.not_ours(e))?;
        }
        txn.commit().map_err(|e| self.error(e))
    }
}

/// Core's tables then `extra`, once each checked: names of 1 to 255 bytes (the staging log
/// stores a name's length in a byte), none of the store's own (`meta`, `staged_log`), all
/// distinct, and distinct tags (the staging index tells tables apart by them).
fn check_tables(path: &Path, extra: &[Table]) -> Result<Box<[Table]>, StoreError> {
    let bad = |reason: String| StoreError::BadTables {
        path: path.to_path_buf(),
        reason,
    };
    let mut tables: Vec<Table> = Table::CORE.to_vec();
    for &table in extra {
        let name = table.name();
        if name.is_empty() || name.len() > 255 {
            return Err(bad(format!("table name {name:?} is not 1 to 255 bytes")));
        }
        if name == META.name() || name == LOG.name() {
            return Err(bad(format!("table name {name:?} is the store's own")));
        }
        if let Some(other) = tables.iter().find(|t| t.tag() == table.tag()) {
            if other.name() == name {
                return Err(bad(format!("table {name:?} is registered twice")));
            }
            return Err(bad(format!(
                "tables {:?} and {name:?} cannot be told apart by the staging index; rename one",
                other.name()
            )));
        }
        tables.push(table);
    }
    Ok(tables.into_boxed_slice())
}
