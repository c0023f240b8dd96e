//! Storage: a narrow key-value trait, its redb and in-memory implementations, a group-commit
//! writer thread and the document store built on top.
//!
//! # Layout
//!
//! - [`KvStore`]: get, prefix scan and one atomic, durable [`WriteBatch`] of puts and deletes
//!   across named [`Table`]s (`batch.rs`). Everything above it speaks only this trait.
//! - [`RedbStore`] (`redb.rs`): the real store, one redb file.
//!   Small puts go to its staging log (`staging.rs`), appended in commit order, and reach
//!   their tables later or never; reads merge them in, so the trait's semantics are unchanged.
//! - [`MemStore`] (`memory.rs`): a `BTreeMap` store for tests, with injected faults and a model of
//!   a crash ([`MemStore::crash_copy`]).
//! - [`GroupCommit`] (`group.rs`): one writer thread that merges concurrently submitted batches
//!   into one durable write, so many callers share one fsync.
//! - [`docs`] (`docs.rs`): how documents are laid out in tables: content-addressed automerge
//!   chunks, per-peer sync states, document metadata and the relay's per-user index.
//! - [`erase`] (`erase.rs`): hard deletion of a document's content, and finding content that
//!   a deletion left behind.
//!   `redb/scrub.rs` is how [`RedbStore`] makes deleted bytes unreadable in its file: a rewrite
//!   into a fresh file on open, when a batch asked for it with [`WriteBatch::scrub`].
//!
//! The sync engine never calls any of this; the drivers read from the store, feed the engine,
//! and submit the bytes it asks them to persist.
//!
//! # Crash safety
//!
//! The whole argument rests on one property of [`KvStore::write`]: a batch is applied entirely or
//! not at all, and is durable when `write` returns `Ok` (a lazy batch,
//! [`WriteBatch::set_lazy`], only once a later durable write returns: a crash may lose it and
//! the lazy ones after it, never a durable one, so the store is still at some prefix of the
//! batches; only data with a durable copy elsewhere is written lazily). Every state-changing operation of the
//! document store is expressed as one batch (a chunk put, or a compaction that puts a snapshot
//! and deletes the chunks it covers), so a crash at any instant leaves the store at the state
//! after some prefix of the acknowledged batches, plus possibly the one in flight — never half
//! of one. [`docs`] explains why every such state loads a document containing every
//! acknowledged change.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

mod batch;
#[cfg(test)]
mod crash_model;
pub mod docs;
pub mod erase;
mod group;
mod memory;
mod redb;
mod staging;

pub use self::batch::{BatchOp, WriteBatch};
pub use self::docs::{ChunkKey, ChunkKind, DocMeta, DocStoreError, MetaExt, NoExt};
pub use self::group::{CommitTicket, GroupCommit, GroupLimits};
pub use self::memory::MemStore;
pub use self::redb::RedbStore;
pub use self::staging::StagingLimits;

/// A named table of byte keys to byte values.
///
/// Core's own tables are [`Table::CORE`]; a user of the store declares its own with
/// [`Table::new`] and registers them when it opens the store
/// ([`RedbStore::open_with_tables`]), so every store knows all its tables when it opens.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Table {
    name: &'static str,
    /// The table's tag in the staging index's in-memory keys (never stored): a hash of the
    /// name, unique among a store's tables (checked when the store opens).
    tag: u8,
}

impl Table {
    /// Automerge chunks, keyed by document, kind and content hash (see [`docs`]).
    pub const CHUNKS: Table = Table::new("chunks");
    /// Encoded automerge sync states, keyed by document and peer.
    pub const SYNC_STATES: Table = Table::new("sync_states");
    /// Document metadata, keyed by document.
    pub const DOC_META: Table = Table::new("doc_meta");
    /// Records an engine's gate keeps with a document (see `engine::Gate`: which actor is
    /// whose), keyed by document and the gate's key. Added in schema version 3.
    pub const GATE_RECORDS: Table = Table::new("gate_records");

    /// Core's own tables, which every store holds.
    ///
    /// Adding a table to a store that has shipped needs a new schema version (`redb.rs`): an
    /// older build would find the new table's staged rows in the staging log and refuse them
    /// ([`StoreError::UnknownTable`]).
    pub const CORE: [Table; 4] = [
        Table::CHUNKS,
        Table::SYNC_STATES,
        Table::DOC_META,
        Table::GATE_RECORDS,
    ];

    /// A table named `name`, as stored: 1 to 255 bytes, distinct from every other table of
    /// the store it is registered with (checked when the store opens).
    pub const fn new(name: &'static str) -> Table {
        Table {
            name,
            tag: name_tag(name),
        }
    }

    /// The table's name, as stored.
    pub const fn name(self) -> &'static str {
        self.name
    }

    /// The table's tag in the staging index (see the field).
    pub(crate) const fn tag(self) -> u8 {
        self.tag
    }
}

/// FNV-1a of `name`, folded to a byte.
const fn name_tag(name: &str) -> u8 {
    let bytes = name.as_bytes();
    let mut h: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        h = (h ^ bytes[i] as u32).wrapping_mul(0x0100_0193);
        i += 1;
    }
    (h ^ (h >> 8) ^ (h >> 16) ^ (h >> 24)) as u8
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Table({})", self.name)
    }
}

/// Why a store operation failed.
///
/// Cheap to clone, so [`GroupCommit`] can hand the same failure to every caller of a group.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file is damaged, truncated, or not a weft store at all.
    #[error("store file {} is corrupt or not a weft store: {reason}", path.display())]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file was written by a newer weft whose schema this build does not know.
    #[error(
        "store file {} has schema version {found}, newer than the {supported} this build reads; \
         upgrade weft",
        path.display()
    )]
    UnsupportedVersion {
        /// The store file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// Another process has the store open.
    #[error("store file {} is already open in another process", path.display())]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// The disk (or quota) is full.
    #[error("store file {}: no space left", path.display())]
    Full {
        /// The store file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },
    /// Reading or writing the file failed.
    #[error("I/O error on store file {}", path.display())]
    Io {
        /// The store file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },
    /// Any other failure of the storage engine.
    #[error("store file {}: {message}", path.display())]
    Backend {
        /// The store file.
        path: PathBuf,
        /// The engine's description of the failure.
        message: String,
    },
    /// The store was asked about a table it was not opened with, or its file holds rows of
    /// one (a table the opener did not register).
    #[error("store file {}: table {table:?} is not one of the tables it was opened with", path.display())]
    UnknownTable {
        /// The store file.
        path: PathBuf,
        /// The table's name.
        table: String,
    },
    /// The tables a store was opened with cannot all be told apart, or a name is unusable.
    #[error("store file {}: {reason}", path.display())]
    BadTables {
        /// The store file.
        path: PathBuf,
        /// What is wrong with them.
        reason: String,
    },
    /// A fault injected by a test store.
    #[error("injected {op} fault")]
    Injected {
        /// Which kind of operation failed: `"read"` or `"write"`.
        op: &'static str,
    },
    /// The store or its writer thread has shut down.
    #[error("the store is closed")]
    Closed,
    /// The group-commit writer thread could not be started.
    #[error("cannot start the store writer thread")]
    WriterThread {
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },
}

/// Storage behind the document store: tables of byte keys and values.
///
/// Implementations block; async callers go through [`GroupCommit`] for writes and
/// `spawn_blocking` (or a dedicated thread) for reads.
pub trait KvStore: Send + Sync + 'static {
    /// The value of `key` in `table`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every entry of `table` whose key starts with `prefix`, in key order.
    #[allow(clippy::type_complexity)] // plain pairs of bytes read better than an alias
    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>;

    /// Every key of `table` that starts with `prefix`, in key order.
    ///
    /// The default scans values too; stores override it to skip copying them.
    fn scan_keys(&self, table: Table, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .scan_prefix(table, prefix)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Applies every op atomically and durably (fsync) before returning.
    ///
    /// On `Err` nothing of the batch is visible, now or after a restart.
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError>;
}

/// The smallest key greater than every key starting with `prefix`, or `None` when no such key
/// exists (empty or all-`0xff` prefix): the exclusive upper bound of a prefix range.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

/// Lowercase hex of a byte string, for messages.
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_exclusive_bound_of_the_prefix_range() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(&[]), None);
    }

    #[test]
    fn a_batch_keeps_its_operations_in_order_and_counts_bytes() {
        let mut a = WriteBatch::new();
        assert!(a.is_empty());
        a.put(Table::CHUNKS, b"k".to_vec(), b"value".to_vec());
        let mut b = WriteBatch::new();
        b.delete(Table::CHUNKS, b"k".to_vec());
        b.delete_prefix(Table::SYNC_STATES, b"".to_vec());
        a.extend(b);
        assert_eq!(a.len(), 3);
        assert_eq!(a.size_bytes(), 7);
        assert!(matches!(a.ops()[1], BatchOp::Delete { .. }));
        assert_eq!(format!("{:?}", a.ops()[0]), "Put(chunks, 6b, 5 bytes)");
    }

    #[test]
    fn store_errors_are_shareable_between_threads() {
        fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync_clone::<StoreError>();
    }
}
