//! [`WriteBatch`]: what a [`KvStore`](super::KvStore) applies atomically, and how batches merge.

use std::fmt;

use super::{Hex, Table};

/// One operation of a [`WriteBatch`].
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchOp {
    /// Insert or replace `key` in `table`.
    Put {
        /// The table written.
        table: Table,
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Remove `key` from `table`, if present.
    Delete {
        /// The table written.
        table: Table,
        /// The key.
        key: Vec<u8>,
    },
    /// Remove every key of `table` that starts with `prefix`.
    DeletePrefix {
        /// The table written.
        table: Table,
        /// The prefix; empty means the whole table.
        prefix: Vec<u8>,
    },
    /// Make the bytes this batch and every earlier one removed unreadable in the store's
    /// storage, not just unreachable. A store may do it later: [`RedbStore`](super::RedbStore) records the
    /// request in the same transaction and rewrites its file on its next open. Changes no key.
    Scrub,
}

impl fmt::Debug for BatchOp {
    // Values can be megabytes of automerge; show sizes, not bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchOp::Put { table, key, value } => {
                write!(f, "Put({table}, {}, {} bytes)", Hex(key), value.len())
            }
            BatchOp::Delete { table, key } => write!(f, "Delete({table}, {})", Hex(key)),
            BatchOp::DeletePrefix { table, prefix } => {
                write!(f, "DeletePrefix({table}, {})", Hex(prefix))
            }
            BatchOp::Scrub => f.write_str("Scrub"),
        }
    }
}

/// An ordered list of puts and deletes that a [`KvStore`](super::KvStore) applies atomically.
///
/// Operations apply in the order they were added: a put after a delete of the same key leaves
/// the key present.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
    bytes: usize,
    /// Written without waiting for the disk (see [`WriteBatch::set_lazy`]).
    pub(super) lazy: bool,
    /// Committed durably even when empty (see [`WriteBatch::sync`]).
    pub(super) sync: bool,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Insert or replace `key` in `table`.
    pub fn put(
        &mut self,
        table: Table,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> &mut Self {
        let (key, value) = (key.into(), value.into());
        self.bytes += key.len() + value.len();
        self.ops.push(BatchOp::Put { table, key, value });
        self
    }

    /// Remove `key` from `table`, if present.
    pub fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) -> &mut Self {
        let key = key.into();
        self.bytes += key.len();
        self.ops.push(BatchOp::Delete { table, key });
        self
    }

    /// Remove every key of `table` starting with `prefix` (all of them if `prefix` is empty).
    pub fn delete_prefix(&mut self, table: Table, prefix: impl Into<Vec<u8>>) -> &mut Self {
        let prefix = prefix.into();
        self.bytes += prefix.len();
        self.ops.push(BatchOp::DeletePrefix { table, prefix });
        self
    }

    /// Ask the store to make what this batch (and every earlier one) removed unreadable in its
    /// storage, not just unreachable (see [`BatchOp::Scrub`]): for deletions that must not
    /// leave the deleted bytes in the file, such as a document's hard delete.
    pub fn scrub(&mut self) -> &mut Self {
        self.ops.push(BatchOp::Scrub);
        self
    }

    /// Whether the batch asks for a scrub.
    pub fn wants_scrub(&self) -> bool {
        self.ops.iter().any(|op| matches!(op, BatchOp::Scrub))
    }

    /// A batch that writes nothing and asks for a durable commit: once it completes, every
    /// batch submitted before it is durable, lazy ones included.
    pub fn sync() -> Self {
        WriteBatch {
            sync: true,
            ..WriteBatch::default()
        }
    }

    /// Whether the batch asks for a durable commit even though it may be empty.
    pub fn wants_sync(&self) -> bool {
        self.sync
    }

    /// Marks the batch lazy: the store may commit it without waiting for the disk, so a crash
    /// can lose it (whole: it stays atomic), until a later durable commit, which makes it
    /// durable too. For data with a durable copy elsewhere (a cluster's log). A lazy batch
    /// merged with a batch that writes durably is written durably.
    pub fn set_lazy(&mut self) -> &mut Self {
        self.lazy = !self.sync;
        self
    }

    /// Whether the store may commit the batch without waiting for the disk.
    pub fn is_lazy(&self) -> bool {
        self.lazy
    }

    /// Append every operation of `other`, after this batch's own. The result is lazy only if
    /// every part that writes something (or asks for a sync) is; an empty batch changes
    /// nothing.
    pub fn extend(&mut self, other: WriteBatch) -> &mut Self {
        let neutral = |b: &WriteBatch| b.ops.is_empty() && !b.sync;
        self.lazy = match (neutral(self), neutral(&other)) {
            (true, true) => self.lazy && other.lazy,
            (true, false) => other.lazy,
            (false, true) => self.lazy,
            (false, false) => self.lazy && other.lazy,
        };
        self.sync |= other.sync;
        self.bytes += other.bytes;
        self.ops.extend(other.ops);
        self
    }

    /// Whether an operation of the batch puts or deletes in `table`.
    pub fn touches(&self, table: Table) -> bool {
        self.ops.iter().any(|op| match op {
            BatchOp::Put { table: t, .. }
            | BatchOp::Delete { table: t, .. }
            | BatchOp::DeletePrefix { table: t, .. } => *t == table,
            BatchOp::Scrub => false,
        })
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The total size of the keys and values in the batch.
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    /// The operations, in the order they apply.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    pub(crate) fn from_ops(ops: Vec<BatchOp>) -> WriteBatch {
        let bytes = ops
            .iter()
            .map(|op| match op {
                BatchOp::Put { key, value, .. } => key.len() + value.len(),
                BatchOp::Delete { key, .. } => key.len(),
                BatchOp::DeletePrefix { prefix, .. } => prefix.len(),
                BatchOp::Scrub => 0,
            })
            .sum();
        WriteBatch {
            ops,
            bytes,
            ..WriteBatch::default()
        }
    }
}
