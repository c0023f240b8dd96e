//! [`RedbStore`]: the [`KvStore`] on disk, one redb file.
//!
//! # Layout
//!
//! Each [`Table`] the store is opened with (core's and the user's,
//! [`RedbStore::open_with_tables`]) is a redb table of `&[u8]` keys to `&[u8]` values, created
//! when the file is created; a table added in a later build (the relay's `user_docs`) is
//! created empty when a file without it opens, which is its upgrade path. A table in the file
//! that the opener did not register is left alone (and dropped by a scrub's rewrite only if
//! empty). A `meta` table holds `schema_version` (4 bytes, big-endian), written together
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

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ::redb::{Database, TableDefinition, TableError};

use super::staging::{DecodeError, Layers, LogState, StagingLimits};
use super::{StoreError, Table};

mod open;
mod read;
mod scrub;
#[cfg(test)]
mod staging_equivalence;
#[cfg(test)]
mod tests;
mod write;

/// The newest schema this build reads and the one it writes. Version 2 added the staging log:
/// a build that ignored it would miss staged rows, so version 1 builds must refuse the file.
/// Version 3 added the `gate_records` table (its staged rows would be unknown to version 2).
/// Version 4 added the device's `tail_cache` table (`weft-peer`), for the same reason: a table
/// registered by a driver is a table too. Opening an older file upgrades it: missing tables
/// are created empty.
const SCHEMA_VERSION: u32 = 4;
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SCHEMA_VERSION_KEY: &str = "schema_version";
/// Present in `meta` while a scrub is pending (see `redb/scrub.rs`).
const SCRUB_KEY: &str = "scrub_pending";
/// The value of [`SCRUB_KEY`]: a format byte.
const SCRUB_FORMAT: u8 = 0x01;

/// The staging log in a read transaction.
type LogTable = ::redb::ReadOnlyTable<u64, &'static [u8]>;

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

/// A [`KvStore`](crate::store::KvStore) in one redb file.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    limits: StagingLimits,
    /// The tables it was opened with: core's, then the user's.
    tables: Box<[Table]>,
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

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

impl RedbStore {
    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, err: impl Into<::redb::Error>) -> StoreError {
        classify(&self.path, err.into())
    }

    /// `table` unless the store was not opened with it.
    fn known(&self, table: Table) -> Result<Table, StoreError> {
        if self.tables.contains(&table) {
            Ok(table)
        } else {
            Err(self.unknown(table.name()))
        }
    }

    fn unknown(&self, table: &str) -> StoreError {
        StoreError::UnknownTable {
            path: self.path.clone(),
            table: table.to_string(),
        }
    }

    /// A staged entry `seq` that does not decode.
    fn undecodable(&self, seq: u64, err: DecodeError) -> StoreError {
        match err {
            DecodeError::UnknownTable(table) => self.unknown(&table),
            DecodeError::Damaged(reason) => self.corrupt(format!("staged entry {seq}: {reason}")),
        }
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
