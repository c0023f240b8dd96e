//! An in-memory [`KvStore`] for tests, with injected faults and a model of a crash.
//!
//! Tables are `BTreeMap`s behind one mutex. A write first decides whether it fails (an injected
//! fault) and only then mutates, and applying ops to a `BTreeMap` cannot fail half way, so a
//! failed write changes nothing and a successful one is all there. Because every write is atomic
//! under the lock, "what a crash would leave" is exactly the tables at that moment:
//! [`MemStore::crash_copy`] returns them in a fresh store; lazy writes
//! ([`WriteBatch::set_lazy`]) since the last durable one are not in it, as a crash loses them.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{prefix_end, BatchOp, KvStore, StoreError, Table, WriteBatch};

type Rows = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory store whose reads and writes can be made to fail.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    tables: BTreeMap<Table, Rows>,
    /// Writes left to succeed before injected failures start; `None`: no write fault armed.
    writes_before_fault: Option<u64>,
    /// Whether an armed write fault fails one write (then disarms) or every write.
    fault_once: bool,
    read_fault: bool,
    writes: u64,
    /// Successful writes that asked for a scrub ([`BatchOp::Scrub`]).
    scrubs: u64,
    /// The tables as the last durable write left them, while lazy writes followed it (`None`:
    /// every write is durable).
    durable: Option<BTreeMap<Table, Rows>>,
}

impl MemStore {
    /// An empty store with no faults armed.
    pub fn new() -> Self {
        MemStore::default()
    }

    /// Let the next `n` writes succeed, then fail every later write with
    /// [`StoreError::Injected`] (a disk that died) until [`MemStore::clear_faults`].
    pub fn fail_writes_after(&self, n: u64) {
        let mut inner = self.lock();
        inner.writes_before_fault = Some(n);
        inner.fault_once = false;
    }

    /// Fail the next write only; later writes succeed.
    pub fn fail_next_write(&self) {
        let mut inner = self.lock();
        inner.writes_before_fault = Some(0);
        inner.fault_once = true;
    }

    /// Make every read fail (or succeed again).
    pub fn set_read_fault(&self, fail: bool) {
        self.lock().read_fault = fail;
    }

    /// Disarm every injected fault.
    pub fn clear_faults(&self) {
        let mut inner = self.lock();
        inner.writes_before_fault = None;
        inner.read_fault = false;
    }

    /// The number of writes that succeeded.
    pub fn write_count(&self) -> u64 {
        self.lock().writes
    }

    /// The number of successful writes that asked for a scrub. Memory holds no freed bytes, so
    /// a scrub has nothing more to do here.
    pub fn scrub_count(&self) -> u64 {
        self.lock().scrubs
    }

    /// What a crash now would leave on disk: a new store holding every successful write,
    /// except lazy ones no durable write has followed, and nothing else, with no faults armed.
    pub fn crash_copy(&self) -> MemStore {
        let inner = self.lock();
        let tables = inner.durable.as_ref().unwrap_or(&inner.tables).clone();
        drop(inner);
        MemStore {
            inner: Mutex::new(Inner {
                tables,
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No method panics between a check and its mutation, so a poisoned lock (a panic in a
        // test thread holding it) still guards consistent tables.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        let inner = self.lock();
        if inner.read_fault {
            return Err(StoreError::Injected { op: "read" });
        }
        Ok(inner)
    }
}

fn prefix_range<'a>(
    rows: &'a Rows,
    prefix: &[u8],
) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> {
    let upper = prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded);
    rows.range::<[u8], _>((Bound::Included(prefix), upper.as_ref().map(Vec::as_slice)))
}

impl KvStore for MemStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let inner = self.read()?;
        Ok(inner
            .tables
            .get(&table)
            .and_then(|rows| rows.get(key))
            .cloned())
    }

    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let inner = self.read()?;
        let Some(rows) = inner.tables.get(&table) else {
            return Ok(Vec::new());
        };
        Ok(prefix_range(rows, prefix)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn scan_keys(&self, table: Table, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let inner = self.read()?;
        let Some(rows) = inner.tables.get(&table) else {
            return Ok(Vec::new());
        };
        Ok(prefix_range(rows, prefix).map(|(k, _)| k.clone()).collect())
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        let mut inner = self.lock();
        match inner.writes_before_fault {
            Some(0) => {
                if inner.fault_once {
                    inner.writes_before_fault = None;
                }
                return Err(StoreError::Injected { op: "write" });
            }
            Some(n) => inner.writes_before_fault = Some(n - 1),
            None => {}
        }
        // Past the fault check nothing below can fail, so the batch applies entirely.
        if batch.is_lazy() {
            if inner.durable.is_none() {
                inner.durable = Some(inner.tables.clone());
            }
        } else if !batch.is_empty() || batch.wants_sync() {
            // A durable write makes every write before it durable too (an empty one writes
            // nothing, as in the redb store).
            inner.durable = None;
        }
        for op in batch.ops() {
            match op {
                BatchOp::Put { table, key, value } => {
                    inner
                        .tables
                        .entry(*table)
                        .or_default()
                        .insert(key.clone(), value.clone());
                }
                BatchOp::Delete { table, key } => {
                    if let Some(rows) = inner.tables.get_mut(table) {
                        rows.remove(key);
                    }
                }
                BatchOp::DeletePrefix { table, prefix } => {
                    if let Some(rows) = inner.tables.get_mut(table) {
                        let doomed: Vec<Vec<u8>> =
                            prefix_range(rows, prefix).map(|(k, _)| k.clone()).collect();
                        for key in doomed {
                            rows.remove(&key);
                        }
                    }
                }
                BatchOp::Scrub => inner.scrubs += 1,
            }
        }
        inner.writes += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(ops: impl FnOnce(&mut WriteBatch)) -> WriteBatch {
        let mut b = WriteBatch::new();
        ops(&mut b);
        b
    }

    #[test]
    fn puts_deletes_and_prefix_deletes_apply_in_order() {
        let store = MemStore::new();
        store
            .write(&batch(|b| {
                b.put(Table::CHUNKS, b"a1".to_vec(), b"x".to_vec())
                    .put(Table::CHUNKS, b"a2".to_vec(), b"y".to_vec())
                    .put(Table::CHUNKS, b"b1".to_vec(), b"z".to_vec())
                    .put(Table::DOC_META, b"a1".to_vec(), b"m".to_vec());
            }))
            .unwrap();
        store
            .write(&batch(|b| {
                b.delete_prefix(Table::CHUNKS, b"a".to_vec())
                    .put(Table::CHUNKS, b"a3".to_vec(), b"w".to_vec())
                    .delete(Table::CHUNKS, b"b1".to_vec());
            }))
            .unwrap();
        assert_eq!(
            store.scan_prefix(Table::CHUNKS, b"").unwrap(),
            vec![(b"a3".to_vec(), b"w".to_vec())]
        );
        // Other tables are untouched by a prefix delete.
        assert_eq!(
            store.get(Table::DOC_META, b"a1").unwrap(),
            Some(b"m".to_vec())
        );
        assert_eq!(
            store.scan_keys(Table::CHUNKS, b"a").unwrap(),
            vec![b"a3".to_vec()]
        );
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let store = MemStore::new();
        store
            .write(&batch(|b| {
                b.put(Table::CHUNKS, b"k".to_vec(), b"old".to_vec());
            }))
            .unwrap();
        store.fail_next_write();
        let doomed = batch(|b| {
            b.put(Table::CHUNKS, b"k".to_vec(), b"new".to_vec())
                .put(Table::CHUNKS, b"k2".to_vec(), b"v".to_vec())
                .delete_prefix(Table::CHUNKS, b"".to_vec());
        });
        assert!(matches!(
            store.write(&doomed),
            Err(StoreError::Injected { op: "write" })
        ));
        assert_eq!(
            store.scan_prefix(Table::CHUNKS, b"").unwrap(),
            vec![(b"k".to_vec(), b"old".to_vec())]
        );
        // The fault was for one write only.
        store.write(&doomed).unwrap();
        assert!(store.scan_prefix(Table::CHUNKS, b"").unwrap().is_empty());
    }

    #[test]
    fn writes_fail_after_the_allowed_count_until_cleared() {
        let store = MemStore::new();
        store.fail_writes_after(2);
        let one = batch(|b| {
            b.put(Table::CHUNKS, b"k".to_vec(), b"v".to_vec());
        });
        assert!(store.write(&one).is_ok());
        assert!(store.write(&one).is_ok());
        assert!(store.write(&one).is_err());
        assert!(store.write(&one).is_err());
        store.clear_faults();
        assert!(store.write(&one).is_ok());
        assert_eq!(store.write_count(), 3);
    }

    #[test]
    fn read_faults_fail_reads_only() {
        let store = MemStore::new();
        store.set_read_fault(true);
        assert!(store.get(Table::CHUNKS, b"k").is_err());
        assert!(store.scan_prefix(Table::CHUNKS, b"").is_err());
        assert!(store.scan_keys(Table::CHUNKS, b"").is_err());
        store
            .write(&batch(|b| {
                b.put(Table::CHUNKS, b"k".to_vec(), b"v".to_vec());
            }))
            .unwrap();
        store.set_read_fault(false);
        assert_eq!(store.get(Table::CHUNKS, b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn a_crash_copy_keeps_committed_writes_and_drops_faults() {
        let store = MemStore::new();
        store
            .write(&batch(|b| {
                b.put(Table::CHUNKS, b"k".to_vec(), b"v".to_vec());
            }))
            .unwrap();
        store.fail_writes_after(0);
        let _ = store.write(&batch(|b| {
            b.put(Table::CHUNKS, b"lost".to_vec(), b"v".to_vec());
        }));
        let after_crash = store.crash_copy();
        assert_eq!(
            after_crash.scan_keys(Table::CHUNKS, b"").unwrap(),
            vec![b"k".to_vec()]
        );
        assert!(after_crash
            .write(&batch(|b| {
                b.put(Table::CHUNKS, b"k2".to_vec(), b"v".to_vec());
            }))
            .is_ok());
        // The copy is independent of the original.
        assert_eq!(store.get(Table::CHUNKS, b"k2").unwrap(), None);
    }

    #[test]
    fn a_crash_loses_lazy_writes_until_a_durable_one_follows() {
        let store = MemStore::new();
        let put = |key: &[u8], lazy: bool| {
            let mut b = batch(|b| {
                b.put(Table::CHUNKS, key.to_vec(), b"v".to_vec());
            });
            if lazy {
                b.set_lazy();
            }
            b
        };
        store.write(&put(b"a", false)).unwrap();
        store.write(&put(b"b", true)).unwrap();
        store.write(&put(b"c", true)).unwrap();
        assert_eq!(store.scan_keys(Table::CHUNKS, b"").unwrap().len(), 3);
        assert_eq!(
            store.crash_copy().scan_keys(Table::CHUNKS, b"").unwrap(),
            vec![b"a".to_vec()]
        );
        store.write(&WriteBatch::sync()).unwrap();
        assert_eq!(
            store
                .crash_copy()
                .scan_keys(Table::CHUNKS, b"")
                .unwrap()
                .len(),
            3
        );
    }
}
