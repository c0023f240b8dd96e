//! Reads of a [`RedbStore`]: a read transaction paired with the staging index of exactly the
//! commit it sees, and table rows merged with staged ones.

use std::ops::Bound;

use ::redb::{ReadTransaction, ReadableDatabase, ReadableTable, TableError};

use super::{definition, read, LogTable, RedbStore};
use crate::store::staging::{Delta, Entry, View, LOG};
use crate::store::{prefix_end, KvStore, StoreError, Table, WriteBatch};

/// Read transactions a read may start before it finds the index version of one of them.
const VIEW_ATTEMPTS: usize = 64;

/// Rows read back, key and value (empty when not asked for).
type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

impl RedbStore {
    /// A read transaction, the staging log as it sees it, and `lookup` applied to the staging
    /// index of exactly the commit the transaction sees.
    pub(super) fn view<T>(
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
    pub(super) fn staged_value(&self, log: &LogTable, seq: u64) -> Result<Vec<u8>, StoreError> {
        let Some(bytes) = log.get(seq).map_err(|e| self.error(e))? else {
            return Err(self.corrupt(format!("staged entry {seq} is missing from its log")));
        };
        match Entry::decode(bytes.value(), &self.tables) {
            Ok(Entry::Put { value, .. }) => Ok(value.to_vec()),
            Ok(other) => Err(self.corrupt(format!(
                "staged entry {seq} should be a put but is {other:?}"
            ))),
            Err(err) => Err(self.undecodable(seq, err)),
        }
    }

    /// The rows of `table` starting with `prefix`, staged ones merged in; values only if asked.
    fn read_range(
        &self,
        table: Table,
        prefix: &[u8],
        values: bool,
    ) -> Result<KeyValues, StoreError> {
        let table = self.known(table)?;
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
        let table = self.known(table)?;
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
        self.write_batch(batch)
    }
}
