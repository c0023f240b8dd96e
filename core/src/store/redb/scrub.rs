//! Scrubbing a [`RedbStore`]'s file: making the bytes that deletions removed unreadable.
//!
//! # Why a rewrite
//!
//! redb is copy-on-write. Deleting or overwriting a value frees the pages that held it, and its
//! allocator hands freed pages out again later without clearing them: freeing a page only
//! updates the allocator's bitmaps (redb 4.5, `page_manager.rs`, `free_helper`), and a page is
//! written in full only when it is reused. So a deleted value stays in the file, byte for byte,
//! until its page happens to be reused. `Database::compact` does not remove it either: it moves
//! the pages at the end of the file into the lowest free pages and truncates the freed tail
//! (`transactions.rs`, `compact_pages`; `page_manager.rs`, `try_shrink`), so a freed page below
//! the new end of the file keeps its old bytes. The staging log adds its own copies: a staged
//! put that a later delete made dead stays in the log, as a live entry of the log table, until
//! the log is cleaned past it.
//!
//! So a scrub copies every live row into a fresh file and renames it over the old one: the new
//! file has never held anything else.
//!
//! # Crash safety
//!
//! - A batch with [`BatchOp::Scrub`](crate::store::BatchOp::Scrub) records `scrub_pending` in
//!   the `meta` table in its own transaction, so the request is durable exactly when the
//!   deletions it is about are.
//! - On open, a pending scrub copies the rows (staged ones into their tables; the new log is
//!   empty) into `PATH.rewrite`, commits durably, fsyncs the file, renames it over `PATH` and
//!   fsyncs the directory. The copy never carries `scrub_pending`.
//! - A crash before the rename leaves the old file as it was, request included: the next open
//!   deletes the partial copy and starts again. After the rename, the new file is complete and
//!   durable. Every state holds every acknowledged write.
//! - The copy is made while this process holds the old file open (redb's lock), so no other
//!   process writes to it between the copy and the rename.
//!
//! # What it does not reach
//!
//! The old file's blocks go back to the filesystem without being overwritten; copies in a
//! filesystem's journal or snapshots, in backups, or in an SSD's remapped blocks are outside
//! the store's reach.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ::redb::{
    Builder, Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableHandle,
};

use super::{classify, definition, RedbStore, META, SCRUB_KEY};
use crate::store::staging::{Delta, LOG};
use crate::store::{StoreError, Table};

/// Bytes copied into the new file between two (non-durable) commits, bounding the memory a
/// rewrite of a large store holds in dirty pages. Small in tests, so they cross commits.
const COMMIT_EVERY: u64 = if cfg!(test) { 4096 } else { 32 * 1024 * 1024 };

/// What a rewrite copied.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Copied {
    /// Rows of every table (the staging log's live puts included).
    pub(super) rows: u64,
    /// Their keys' and values' bytes.
    pub(super) bytes: u64,
}

/// Where the copy is made before it replaces the store's file.
fn rewrite_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".rewrite");
    path.with_file_name(name)
}

impl RedbStore {
    /// Whether a batch asked for a scrub that has not been done yet.
    pub(super) fn scrub_pending(&self) -> Result<bool, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let meta = txn.open_table(META).map_err(|e| self.error(e))?;
        let found = meta.get(SCRUB_KEY).map_err(|e| self.error(e))?.is_some();
        Ok(found)
    }

    /// Copies every live row into a fresh file and renames it over this store's file; this
    /// store must be dropped and the file opened again to use the copy. On an error the old
    /// file is untouched (and still asks for the scrub) and the partial copy is removed.
    pub(super) fn rewrite(&self) -> Result<Copied, StoreError> {
        let tmp = rewrite_path(&self.path);
        let result = self.copy_to(&tmp).and_then(|copied| {
            self.replace_with(&tmp)?;
            Ok(copied)
        });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Writes the copy at `tmp` and makes it durable.
    fn copy_to(&self, tmp: &Path) -> Result<Copied, StoreError> {
        let io_err = |source: io::Error| StoreError::Io {
            path: tmp.to_path_buf(),
            source: source.into(),
        };
        match fs::remove_file(tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        // The rows as of one commit, the staged ones with the index of exactly that commit.
        let tables = self.tables.clone();
        let (txn, log, staged) = self.view(|v| {
            tables
                .iter()
                .map(|&table| v.staged_in(&Delta::new(), table, b""))
                .collect::<Vec<_>>()
        })?;
        for table in txn.list_tables().map_err(|e| self.error(e))? {
            let name = table.name();
            if name == META.name() || name == LOG.name() || tables.iter().any(|t| t.name() == name)
            {
                continue;
            }
            // A table the opener did not register is copied only if empty (that is, dropped):
            // a file written when core named its user's tables has an empty `user_docs`.
            let rows = txn
                .open_table(TableDefinition::<&[u8], &[u8]>::new(name))
                .map_err(|e| self.error(e))?;
            if !rows.is_empty().map_err(|e| self.error(e))? {
                return Err(self.unknown(name));
            }
        }
        let new = Builder::new()
            .create(tmp)
            .map_err(|e| classify(tmp, e.into()))?;
        let mut out = Writer::begin(&new, tmp)?;
        {
            let meta = txn.open_table(META).map_err(|e| self.error(e))?;
            for row in meta.iter().map_err(|e| self.error(e))? {
                let (key, value) = row.map_err(|e| self.error(e))?;
                if key.value() == SCRUB_KEY {
                    continue;
                }
                let mut table = out.txn()?.open_table(META).map_err(|e| out.error(e))?;
                table
                    .insert(key.value(), value.value())
                    .map_err(|e| out.error(e))?;
            }
        }
        out.txn()?.open_table(LOG).map_err(|e| out.error(e))?;
        for (&table, staged) in tables.iter().zip(staged) {
            out.create(table)?;
            let rows = match txn.open_table(definition(table)) {
                Ok(rows) => Some(rows),
                Err(::redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(self.error(e)),
            };
            let mut staged = staged.into_iter().peekable();
            if let Some(rows) = rows {
                for row in rows.iter().map_err(|e| self.error(e))? {
                    let (key, value) = row.map_err(|e| self.error(e))?;
                    let key = key.value();
                    while let Some((staged_key, seq)) = staged.next_if(|(k, _)| k.as_slice() < key)
                    {
                        let value = self.staged_value(&log, seq)?;
                        out.put(table, &staged_key, &value)?;
                    }
                    // A staged row of the same key is the newer value.
                    if let Some((staged_key, seq)) = staged.next_if(|(k, _)| k.as_slice() == key) {
                        let value = self.staged_value(&log, seq)?;
                        out.put(table, &staged_key, &value)?;
                        continue;
                    }
                    out.put(table, key, value.value())?;
                }
            }
            for (key, seq) in staged {
                let value = self.staged_value(&log, seq)?;
                out.put(table, &key, &value)?;
            }
        }
        let copied = out.copied;
        out.finish()?;
        drop(new);
        // redb fsynced the last commit; the close may have written more since.
        fs::File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err)?;
        Ok(copied)
    }

    /// Renames the durable copy at `tmp` over the store's file, durably.
    fn replace_with(&self, tmp: &Path) -> Result<(), StoreError> {
        let io_err = |source: io::Error| StoreError::Io {
            path: self.path.clone(),
            source: source.into(),
        };
        fs::rename(tmp, &self.path).map_err(io_err)?;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err)
    }
}

/// The new file's write transaction, committed (not durably) every [`COMMIT_EVERY`] bytes.
struct Writer<'db> {
    db: &'db Database,
    path: &'db Path,
    /// `None` only between a commit and the next `begin_write`.
    txn: Option<::redb::WriteTransaction>,
    since_commit: u64,
    copied: Copied,
}

impl<'db> Writer<'db> {
    fn begin(db: &'db Database, path: &'db Path) -> Result<Writer<'db>, StoreError> {
        Ok(Writer {
            db,
            path,
            txn: Some(Writer::start(db, path)?),
            since_commit: 0,
            copied: Copied::default(),
        })
    }

    fn start(db: &Database, path: &Path) -> Result<::redb::WriteTransaction, StoreError> {
        let mut txn = db.begin_write().map_err(|e| classify(path, e.into()))?;
        // Only the last commit needs to be durable: the file is not in use until the rename.
        txn.set_durability(Durability::None)
            .map_err(|e| classify(path, e.into()))?;
        Ok(txn)
    }

    fn txn(&self) -> Result<&::redb::WriteTransaction, StoreError> {
        self.txn.as_ref().ok_or_else(|| StoreError::Backend {
            path: self.path.to_path_buf(),
            message: "the rewrite's transaction ended early".to_string(),
        })
    }

    /// Opens `table` in the new file (creating it).
    fn create(&self, table: Table) -> Result<(), StoreError> {
        self.txn()?
            .open_table(definition(table))
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    fn error(&self, err: impl Into<::redb::Error>) -> StoreError {
        classify(self.path, err.into())
    }

    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        {
            let mut rows = self
                .txn()?
                .open_table(definition(table))
                .map_err(|e| self.error(e))?;
            rows.insert(key, value).map_err(|e| self.error(e))?;
        }
        let n = (key.len() + value.len()) as u64;
        self.copied.rows += 1;
        self.copied.bytes += n;
        self.since_commit += n;
        if self.since_commit >= COMMIT_EVERY {
            if let Some(done) = self.txn.take() {
                done.commit().map_err(|e| self.error(e))?;
            }
            self.txn = Some(Writer::start(self.db, self.path)?);
            self.since_commit = 0;
        }
        Ok(())
    }

    /// Commits the rest durably.
    fn finish(mut self) -> Result<(), StoreError> {
        let Some(mut txn) = self.txn.take() else {
            return Err(self.error(::redb::Error::TransactionInProgress));
        };
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.error(e))?;
        txn.commit().map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KvStore, StagingLimits, WriteBatch};

    /// Whether `needle` occurs anywhere in the file's raw bytes.
    fn file_holds(path: &Path, needle: &[u8]) -> bool {
        let bytes = fs::read(path).unwrap();
        bytes.windows(needle.len()).any(|w| w == needle)
    }

    fn value(text: &str, len: usize) -> Vec<u8> {
        text.as_bytes().iter().copied().cycle().take(len).collect()
    }

    type Rows = Vec<(Vec<u8>, Vec<u8>)>;

    /// A store with rows of every kind: staged small puts, large direct puts, rows in two
    /// tables; then the "secret" ones deleted with a scrub. Its `chunks` and `doc_meta` rows.
    fn store_with_deleted_secrets(path: &Path) -> (Rows, Rows) {
        let store = RedbStore::open(path).unwrap();
        let mut b = WriteBatch::new();
        b.put(
            Table::CHUNKS,
            b"keep/small".to_vec(),
            value("kept-small-value ", 300),
        )
        .put(
            Table::CHUNKS,
            b"keep/large".to_vec(),
            value("kept-large-value ", 40_000),
        )
        .put(Table::DOC_META, b"keep".to_vec(), b"kept-meta".to_vec())
        .put(
            Table::CHUNKS,
            b"secret/small".to_vec(),
            value("secret-small-text ", 300),
        )
        .put(
            Table::CHUNKS,
            b"secret/large".to_vec(),
            value("secret-large-text ", 40_000),
        )
        .put(
            Table::SYNC_STATES,
            b"secret/peer".to_vec(),
            value("secret-sync-state ", 200),
        );
        store.write(&b).unwrap();
        // Overwritten before the delete: the first value is dead in the staging log.
        let mut b = WriteBatch::new();
        b.put(
            Table::CHUNKS,
            b"secret/small".to_vec(),
            value("secret-rewritten ", 300),
        );
        store.write(&b).unwrap();
        let mut b = WriteBatch::new();
        b.delete_prefix(Table::CHUNKS, b"secret/".to_vec())
            .delete_prefix(Table::SYNC_STATES, b"secret/".to_vec())
            .scrub();
        store.write(&b).unwrap();
        let mut chunks = store.scan_prefix(Table::CHUNKS, b"").unwrap();
        chunks.sort();
        let meta = store.scan_prefix(Table::DOC_META, b"").unwrap();
        (chunks, meta)
    }

    const SECRETS: [&[u8]; 4] = [
        b"secret-small-text",
        b"secret-large-text",
        b"secret-sync-state",
        b"secret-rewritten",
    ];

    #[test]
    fn deleted_values_stay_in_the_file_until_the_scrubbing_open_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let (chunks, meta) = store_with_deleted_secrets(&path);
        // What the scrub is for: deleted values are still in the file's bytes.
        assert!(
            SECRETS.iter().any(|s| file_holds(&path, s)),
            "the deleted values are already gone: this test no longer shows anything"
        );

        let store = RedbStore::open(&path).unwrap();
        for secret in SECRETS {
            assert!(
                !file_holds(&path, secret),
                "{}",
                String::from_utf8_lossy(secret)
            );
        }
        assert!(!store.scrub_pending().unwrap());
        assert!(!rewrite_path(&path).exists());
        // Every live row reads back as before, and the staging log starts empty.
        assert_eq!(store.scan_prefix(Table::CHUNKS, b"").unwrap(), chunks);
        assert_eq!(store.scan_prefix(Table::DOC_META, b"").unwrap(), meta);
        assert!(store
            .scan_prefix(Table::SYNC_STATES, b"")
            .unwrap()
            .is_empty());
        assert_eq!(super::super::lock(&store.writer).entries, 0);
        // It stays a normal store.
        let mut b = WriteBatch::new();
        b.put(Table::CHUNKS, b"after".to_vec(), b"v".to_vec());
        store.write(&b).unwrap();
        drop(store);
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.scan_keys(Table::CHUNKS, b"").unwrap().len(), 3);
    }

    #[test]
    fn a_rewrite_cut_short_by_a_crash_is_done_again_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let (chunks, _) = store_with_deleted_secrets(&path);
        // A crash in the middle of the copy leaves a partial file beside the store.
        fs::write(rewrite_path(&path), b"half a copy").unwrap();
        let store = RedbStore::open(&path).unwrap();
        assert!(!store.scrub_pending().unwrap());
        assert_eq!(store.scan_prefix(Table::CHUNKS, b"").unwrap(), chunks);
        for secret in SECRETS {
            assert!(!file_holds(&path, secret));
        }
        assert!(!rewrite_path(&path).exists());
    }

    #[test]
    fn a_failed_rewrite_leaves_the_store_as_it_was_and_still_pending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let (chunks, _) = store_with_deleted_secrets(&path);
        // The copy cannot be made: a directory is in its way.
        fs::create_dir(rewrite_path(&path)).unwrap();
        let store = RedbStore::open(&path).unwrap();
        assert!(store.scrub_pending().unwrap());
        assert_eq!(store.scan_prefix(Table::CHUNKS, b"").unwrap(), chunks);
        drop(store);
        fs::remove_dir(rewrite_path(&path)).unwrap();
        let store = RedbStore::open(&path).unwrap();
        assert!(!store.scrub_pending().unwrap());
        assert_eq!(store.scan_prefix(Table::CHUNKS, b"").unwrap(), chunks);
    }

    #[test]
    fn a_large_staged_store_is_copied_whole_across_many_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let limits = StagingLimits::with_capacity(64, 1 << 20);
        let user_docs = Table::new("user_docs");
        let tables: Vec<Table> = Table::CORE.into_iter().chain([user_docs]).collect();
        let store = RedbStore::open_with_tables(&path, &[user_docs], limits).unwrap();
        for i in 0..300u32 {
            let mut b = WriteBatch::new();
            // Some keys are written twice, so that staged rows replace table rows.
            b.put(
                Table::CHUNKS,
                format!("k{:04}", i % 250).into_bytes(),
                vec![i as u8; 100 + i as usize % 50],
            );
            if i % 7 == 0 {
                b.put(user_docs, format!("u{i}").into_bytes(), vec![1, 2]);
            }
            store.write(&b).unwrap();
        }
        let mut b = WriteBatch::new();
        b.delete(Table::CHUNKS, b"k0003".to_vec()).scrub();
        store.write(&b).unwrap();
        let before: Vec<_> = tables
            .iter()
            .map(|t| store.scan_prefix(*t, b"").unwrap())
            .collect();
        drop(store);
        let store = RedbStore::open_with_tables(&path, &[user_docs], limits).unwrap();
        let after: Vec<_> = tables
            .iter()
            .map(|t| store.scan_prefix(*t, b"").unwrap())
            .collect();
        assert_eq!(before, after);
        assert_eq!(after[0].len(), 249);
    }
}
