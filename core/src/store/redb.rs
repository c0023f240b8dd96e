//! [`RedbStore`]: the [`KvStore`] on disk, one redb file.
//!
//! # Layout
//!
//! Each [`Table`] is a redb table of `&[u8]` keys to `&[u8]` values, all created when the file
//! is created; a table added in a later build (`user_docs`) is created empty when a file
//! without it opens, which is its upgrade path. A `meta` table holds `schema_version` (4 bytes, big-endian), written together
//! with the tables in the first transaction. An open refuses a newer version rather than guess
//! at its layout, and refuses a redb file with tables but no version: it is not a weft store.
//! `meta` may also hold `scrub_pending` (`0x01`), written by a batch with
//! [`BatchOp::Scrub`](super::BatchOp::Scrub): the next open rewrites the file so that deleted
//! bytes are gone from it (`redb/scrub.rs`); older builds ignore the key.
//!
//! # Staged puts
//!
//! Small puts are not written into their table's B-tree but appended to a log table in commit
//! order, with an in-memory index of the live ones; reads merge them in, and the log's oldest
//! entries are cleaned into their tables once it outgrows its [`StagingLimits`]. This turns a
//! commit's scattered leaf-page copies into a few sequential pages (`staging.rs` has the design
//! and its figures). The [`KvStore`] semantics are unchanged: a read sees exactly the state
//! after the commits its redb read transaction sees, staged or not.
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
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ::redb::{
    Builder, Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    TableError, TableHandle, WriteTransaction,
};

use super::staging::{ikey, Delta, Entry, Index, Layers, LogState, StagingLimits, View, LOG};
use super::{prefix_end, BatchOp, KvStore, StoreError, Table, WriteBatch};

mod scrub;

/// The newest schema this build reads and the one it writes. Version 2 added the staging log:
/// a build that ignored it would miss staged rows, so version 1 builds must refuse the file.
/// Version 3 added the `gate_records` table (its staged rows would be unknown to version 2).
/// Opening an older file upgrades it: missing tables are created empty.
const SCHEMA_VERSION: u32 = 3;
/// Read transactions a read may start before it finds the index version of one of them.
const VIEW_ATTEMPTS: usize = 64;
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SCHEMA_VERSION_KEY: &str = "schema_version";
/// Present in `meta` while a scrub is pending (see `redb/scrub.rs`).
const SCRUB_KEY: &str = "scrub_pending";
/// The value of [`SCRUB_KEY`]: a format byte.
const SCRUB_FORMAT: u8 = 0x01;

/// The staging log in a read transaction.
type LogTable = ::redb::ReadOnlyTable<u64, &'static [u8]>;

/// Rows read back, key and value (empty when not asked for).
type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

type Rows<'txn> = ::redb::Table<'txn, &'static [u8], &'static [u8]>;

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

/// A [`KvStore`] in one redb file.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    limits: StagingLimits,
    /// The staging index, by commit, for readers and the writer.
    layers: RwLock<Layers>,
    /// The log's extent; held for the whole of a write, so writes are serialized.
    writer: Mutex<LogState>,
}

// The guarded values are changed only by whole steps that cannot panic midway (map inserts
// and removes of computed values), so a poisoned lock still guards a consistent value.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The tables of one write transaction, each opened once: a group commit can carry thousands
/// of ops.
struct Homes<'txn> {
    txn: &'txn WriteTransaction,
    open: Vec<(Table, Rows<'txn>)>,
}

impl<'txn> Homes<'txn> {
    fn get(&mut self, store: &RedbStore, table: Table) -> Result<&mut Rows<'txn>, StoreError> {
        let index = match self.open.iter().position(|(t, _)| *t == table) {
            Some(index) => index,
            None => {
                let rows = self
                    .txn
                    .open_table(definition(table))
                    .map_err(|e| store.error(e))?;
                self.open.push((table, rows));
                self.open.len() - 1
            }
        };
        Ok(&mut self.open[index].1)
    }
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
        RedbStore::open_with(path, StagingLimits::default())
    }

    /// [`RedbStore::open`] with the staging log's limits given.
    ///
    /// When a batch asked for a scrub ([`WriteBatch::scrub`]) since the file was last
    /// rewritten, the open first copies every live row into a fresh file and renames it over
    /// this one, so that nothing deleted stays readable in the file (`redb/scrub.rs`). A
    /// failed rewrite is logged and the store opens as it is; the next open tries again.
    pub fn open_with(
        path: impl AsRef<Path>,
        limits: StagingLimits,
    ) -> Result<RedbStore, StoreError> {
        let store = RedbStore::open_file(path.as_ref(), limits)?;
        if !store.scrub_pending()? {
            return Ok(store);
        }
        let path = store.path.clone();
        let started = std::time::Instant::now();
        match store.rewrite() {
            Ok(copied) => {
                drop(store);
                let store = RedbStore::open_file(&path, limits)?;
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
    fn open_file(path: &Path, limits: StagingLimits) -> Result<RedbStore, StoreError> {
        let path = path.to_path_buf();
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
        let mut store = RedbStore {
            db,
            path,
            limits,
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
            Entry::decode(bytes)
                .map_err(|reason| self.corrupt(format!("staged entry {seq}: {reason}")))?
                .replay(seq, &mut index);
            state.entries += 1;
            state.bytes += bytes.len() as u64;
        }
        state.next_seq = last + 1;
        state.first_seq = first.unwrap_or(state.next_seq);
        Ok((state, index))
    }

    /// A read transaction, the staging log as it sees it, and `lookup` applied to the staging
    /// index of exactly the commit the transaction sees.
    fn view<T>(
        &self,
        lookup: impl Fn(&View<'_>) -> T,
    ) -> Result<(ReadTransaction, LogTable, T), StoreError> {
        for _ in 0..VIEW_ATTEMPTS {
            let txn = self.db.begin_read().map_err(|e| self.error(e))?;
            let log = txn.open_table(LOG).map_err(|e| self.error(e))?;
            let last = log.last().map_err(|e| self.error(e))?;
            let last = last.map_or(0, |(seq, _)| seq.value());
            if let Some(found) = read(&self.layers).view(last).map(|view| lookup(&view)) {
                return Ok((txn, log, found));
            }
            // Commits moved on past the layers kept between starting the transaction and
            // looking up its index: start again.
        }
        Err(StoreError::Backend {
            path: self.path.clone(),
            message: "the staging log moved on faster than a read could start".to_string(),
        })
    }

    /// The value of the staged put with sequence number `seq` in `log`.
    fn staged_value(&self, log: &LogTable, seq: u64) -> Result<Vec<u8>, StoreError> {
        let Some(bytes) = log.get(seq).map_err(|e| self.error(e))? else {
            return Err(self.corrupt(format!("staged entry {seq} is missing from its log")));
        };
        match Entry::decode(bytes.value()) {
            Ok(Entry::Put { value, .. }) => Ok(value.to_vec()),
            Ok(other) => Err(self.corrupt(format!(
                "staged entry {seq} should be a put but is {other:?}"
            ))),
            Err(reason) => Err(self.corrupt(format!("staged entry {seq}: {reason}"))),
        }
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
                if found < SCHEMA_VERSION {
                    // Version 1 lacks only the staging log, created below.
                    let mut meta = txn.open_table(META).map_err(|e| self.error(e))?;
                    meta.insert(SCHEMA_VERSION_KEY, &SCHEMA_VERSION.to_be_bytes()[..])
                        .map_err(|e| self.error(e))?;
                }
            }
        }
        txn.open_table(LOG).map_err(|e| self.not_ours(e))?;
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

    /// The rows of `table` starting with `prefix`, staged ones merged in; values only if asked.
    fn read_range(
        &self,
        table: Table,
        prefix: &[u8],
        values: bool,
    ) -> Result<KeyValues, StoreError> {
        let (txn, log, staged) = self.view(|v| v.staged_in(&Delta::new(), table, prefix))?;
        let mut home = Vec::new();
        match txn.open_table(definition(table)) {
            Ok(rows) => {
                let end = prefix_end(prefix);
                let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                for entry in rows
                    .range::<&[u8]>((Bound::Included(prefix), upper))
                    .map_err(|e| self.error(e))?
                {
                    let (key, value) = entry.map_err(|e| self.error(e))?;
                    let value = if values {
                        value.value().to_vec()
                    } else {
                        Vec::new()
                    };
                    home.push((key.value().to_vec(), value));
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(err) => return Err(self.error(err)),
        }
        if staged.is_empty() {
            return Ok(home);
        }
        // Merge two key-ordered lists; a staged row is newer than a table row of the same key.
        let mut out = Vec::with_capacity(home.len() + staged.len());
        let mut home = home.into_iter().peekable();
        for (key, seq) in staged {
            while let Some(row) = home.next_if(|(k, _)| *k < key) {
                out.push(row);
            }
            home.next_if(|(k, _)| *k == key);
            let value = if values {
                self.staged_value(&log, seq)?
            } else {
                Vec::new()
            };
            out.push((key, value));
        }
        out.extend(home);
        Ok(out)
    }
}

impl KvStore for RedbStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let (txn, log, staged) = self.view(|v| v.get(&Delta::new(), table, key))?;
        if let Some(seq) = staged {
            return self.staged_value(&log, seq).map(Some);
        }
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
        self.read_range(table, prefix, true)
    }

    fn scan_keys(&self, table: Table, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let rows = self.read_range(table, prefix, false)?;
        Ok(rows.into_iter().map(|(k, _)| k).collect())
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut state = lock(&self.writer);
        let mut next = *state;
        // This batch's changes to the staging index; lookups go through it to the latest
        // commit's index (this thread is the only writer, so that does not change meanwhile).
        let mut delta = Delta::new();
        let staged = |delta: &Delta, table: Table, key: &[u8]| {
            read(&self.layers).latest().get(delta, table, key)
        };
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        let mut scrub = false;
        {
            let mut homes = Homes {
                txn: &txn,
                open: Vec::new(),
            };
            let mut log = txn.open_table(LOG).map_err(|e| self.error(e))?;
            let mut append = |entry: Entry<'_>, next: &mut LogState| {
                let bytes = entry.encode();
                log.insert(next.next_seq, bytes.as_slice())
                    .map_err(|e| self.error(e))?;
                next.next_seq += 1;
                next.entries += 1;
                next.bytes += bytes.len() as u64;
                Ok::<(), StoreError>(())
            };
            for op in batch.ops() {
                match op {
                    BatchOp::Put { table, key, value }
                        if self.limits.stages(key, value)
                            && self.limits.batch_has_room(&state, &next) =>
                    {
                        delta.insert(ikey(*table, key), Some(next.next_seq));
                        append(
                            Entry::Put {
                                table: *table,
                                key,
                                value,
                            },
                            &mut next,
                        )?;
                    }
                    BatchOp::Put { table, key, value } => {
                        homes
                            .get(self, *table)?
                            .insert(key.as_slice(), value.as_slice())
                            .map_err(|e| self.error(e))?;
                        if staged(&delta, *table, key).is_some() {
                            delta.insert(ikey(*table, key), None);
                            append(Entry::Delete { table: *table, key }, &mut next)?;
                        }
                    }
                    BatchOp::Delete { table, key } => {
                        homes
                            .get(self, *table)?
                            .remove(key.as_slice())
                            .map_err(|e| self.error(e))?;
                        if staged(&delta, *table, key).is_some() {
                            delta.insert(ikey(*table, key), None);
                            append(Entry::Delete { table: *table, key }, &mut next)?;
                        }
                    }
                    BatchOp::DeletePrefix { table, prefix } => {
                        let end = prefix_end(prefix);
                        let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                        homes
                            .get(self, *table)?
                            .retain_in::<&[u8], _>(
                                (Bound::Included(prefix.as_slice()), upper),
                                |_, _| false,
                            )
                            .map_err(|e| self.error(e))?;
                        let keys = read(&self.layers)
                            .latest()
                            .staged_in(&delta, *table, prefix);
                        if !keys.is_empty() {
                            for (key, _) in keys {
                                delta.insert(ikey(*table, &key), None);
                            }
                            append(
                                Entry::DeletePrefix {
                                    table: *table,
                                    prefix,
                                },
                                &mut next,
                            )?;
                        }
                    }
                    BatchOp::Scrub => scrub = true,
                }
            }
            if scrub {
                // Durable with the deletions it is about: the next open rewrites the file.
                txn.open_table(META)
                    .map_err(|e| self.error(e))?
                    .insert(SCRUB_KEY, &[SCRUB_FORMAT][..])
                    .map_err(|e| self.error(e))?;
            }
            if next.next_seq > state.next_seq && next.over(&self.limits) {
                self.clean(&mut log, &mut homes, &mut delta, &mut next, state.next_seq)?;
            }
        }
        let appended = next.next_seq > state.next_seq;
        let last = next.next_seq - 1;
        if appended {
            write(&self.layers).push(last, delta);
        }
        // An error above drops `txn`, which aborts it: nothing of the batch is written.
        match txn.commit() {
            Ok(()) => {
                *state = next;
                if appended {
                    write(&self.layers).fold();
                }
                Ok(())
            }
            Err(err) => {
                if appended {
                    write(&self.layers).pop(last);
                }
                Err(self.error(err))
            }
        }
    }
}

impl RedbStore {
    /// Clean the log's oldest entries, older than `before`, until it is back under 7/8 of its
    /// limits: live puts move into their tables, the rest is dropped.
    fn clean(
        &self,
        log: &mut ::redb::Table<'_, u64, &'static [u8]>,
        homes: &mut Homes<'_>,
        delta: &mut Delta,
        state: &mut LogState,
        before: u64,
    ) -> Result<(), StoreError> {
        let start = state.first_seq;
        let mut upto = start;
        let mut moves = Vec::new();
        for entry in log.range(start..before).map_err(|e| self.error(e))? {
            let (seq, bytes) = entry.map_err(|e| self.error(e))?;
            let (seq, bytes) = (seq.value(), bytes.value());
            let entry = Entry::decode(bytes)
                .map_err(|reason| self.corrupt(format!("staged entry {seq}: {reason}")))?;
            if let Entry::Put { table, key, value } = entry {
                if read(&self.layers).latest().get(delta, table, key) == Some(seq) {
                    delta.insert(ikey(table, key), None);
                    moves.push((table, key.to_vec(), value.to_vec()));
                }
            }
            state.entries -= 1;
            state.bytes -= bytes.len() as u64;
            upto = seq + 1;
            if state.clean_enough(&self.limits) {
                break;
            }
        }
        for (table, key, value) in &moves {
            homes
                .get(self, *table)?
                .insert(key.as_slice(), value.as_slice())
                .map_err(|e| self.error(e))?;
        }
        log.retain_in(start..upto, |_, _| false)
            .map_err(|e| self.error(e))?;
        state.first_seq = upto;
        tracing::debug!(
            cleaned = upto - start,
            moved = moves.len(),
            staged = state.entries,
            "cleaned the staging log"
        );
        Ok(())
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
            let gate: TableDefinition<&[u8], &[u8]> =
                TableDefinition::new(Table::GATE_RECORDS.name());
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
        write_version_1(&path, &Table::ALL, (Table::CHUNKS, b"old", b"row"));
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
        let store =
            RedbStore::open_with(&path, StagingLimits::with_capacity(100, 1 << 20)).unwrap();
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
        let store =
            RedbStore::open_with(&path, StagingLimits::with_capacity(100, 1 << 20)).unwrap();
        assert_eq!(lock(&store.writer).entries, state.entries);
        assert_eq!(store.scan_keys(Table::CHUNKS, b"").unwrap().len(), 175);
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

/// Staging is invisible: any sequence of batches, with reopens between them (some of them
/// rewriting the file after a scrub) and a log small enough to be cleaned often, reads back
/// exactly as the in-memory model store does.
#[cfg(test)]
mod staging_equivalence {
    use proptest::prelude::*;

    use super::*;
    use crate::store::MemStore;

    #[derive(Clone, Debug)]
    enum Op {
        Put(usize, u8, usize, u8),
        Delete(usize, u8),
        DeletePrefix(usize, u8),
        /// Ask for a scrub: the next reopen rewrites the file.
        Scrub,
        Reopen,
    }

    const TABLES: [Table; 2] = [Table::CHUNKS, Table::SYNC_STATES];

    fn key(k: u8) -> Vec<u8> {
        // Two-byte keys over a small space, so prefixes, overwrites and deletes collide.
        vec![b'a' + (k % 3), b'0' + (k / 3 % 4)]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..2usize, any::<u8>(), prop_oneof![4 => 0..40usize, 1 => 70..90usize], any::<u8>())
                .prop_map(|(t, k, len, fill)| Op::Put(t, k, len, fill)),
            2 => (0..2usize, any::<u8>()).prop_map(|(t, k)| Op::Delete(t, k)),
            1 => (0..2usize, any::<u8>()).prop_map(|(t, k)| Op::DeletePrefix(t, k)),
            1 => Just(Op::Scrub),
            1 => Just(Op::Reopen),
        ]
    }

    fn cases() -> u32 {
        std::env::var("WEFT_PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(48)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        #[test]
        fn the_staged_store_reads_like_the_model(
            batches in prop::collection::vec(prop::collection::vec(op(), 1..6), 1..40),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.redb");
            // Values over 64 bytes go direct, and so do puts beyond 4 entries or 300 bytes in
            // one batch; the log is cleaned past 16 entries or 1,200 bytes.
            let limits = StagingLimits { max_value: 64, ..StagingLimits::with_capacity(16, 1200) };
            let mut store = RedbStore::open_with(&path, limits).unwrap();
            let model = MemStore::new();
            for ops in batches {
                let mut batch = WriteBatch::new();
                for op in ops {
                    match op {
                        Op::Put(t, k, len, fill) => {
                            batch.put(TABLES[t], key(k), vec![fill; len]);
                        }
                        Op::Delete(t, k) => {
                            batch.delete(TABLES[t], key(k));
                        }
                        Op::DeletePrefix(t, k) => {
                            batch.delete_prefix(TABLES[t], key(k)[..1].to_vec());
                        }
                        Op::Scrub => {
                            batch.scrub();
                        }
                        Op::Reopen => {
                            drop(store);
                            store = RedbStore::open_with(&path, limits).unwrap();
                        }
                    }
                }
                store.write(&batch).unwrap();
                model.write(&batch).unwrap();
                for table in TABLES {
                    prop_assert_eq!(
                        store.scan_prefix(table, b"").unwrap(),
                        model.scan_prefix(table, b"").unwrap()
                    );
                    prop_assert_eq!(
                        store.scan_keys(table, b"b").unwrap(),
                        model.scan_keys(table, b"b").unwrap()
                    );
                    for k in 0..12u8 {
                        prop_assert_eq!(
                            store.get(table, &key(k)).unwrap(),
                            model.get(table, &key(k)).unwrap()
                        );
                    }
                }
                let state = *lock(&store.writer);
                // A batch stages at most 4 puts plus its tombstones (at most 6 ops in all).
                prop_assert!(state.entries <= 16 + 6 && state.bytes <= 1200 + 6 * 120,
                    "the log is not cleaned: {state:?}");
            }
        }
    }
}
