//! The write path of a [`RedbStore`]: one redb write transaction per batch, small puts
//! appended to the staging log, and the log cleaned into its tables when it outgrows its
//! limits.

use std::ops::Bound;

use ::redb::{ReadableTable, WriteTransaction};

use super::{definition, lock, read, write, RedbStore, META, SCRUB_FORMAT, SCRUB_KEY};
use crate::store::staging::{ikey, Delta, Entry, LogState, LOG};
use crate::store::{prefix_end, BatchOp, StoreError, Table, WriteBatch};

type Rows<'txn> = ::redb::Table<'txn, &'static [u8], &'static [u8]>;

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

impl RedbStore {
    /// [`KvStore::write`](crate::store::KvStore::write): the batch in one redb write transaction.
    pub(super) fn write_batch(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() && !batch.wants_sync() {
            return Ok(());
        }
        for op in batch.ops() {
            match op {
                BatchOp::Put { table, .. }
                | BatchOp::Delete { table, .. }
                | BatchOp::DeletePrefix { table, .. } => {
                    self.known(*table)?;
                }
                BatchOp::Scrub => {}
            }
        }
        let mut state = lock(&self.writer);
        let mut next = *state;
        // This batch's changes to the staging index; lookups go through it to the latest
        // commit's index (this thread is the only writer, so that does not change meanwhile).
        let mut delta = Delta::new();
        let mut txn = self.db.begin_write().map_err(|e| self.error(e))?;
        if batch.is_lazy() {
            // Persisted by the next durable commit; a crash before it rolls back to the last
            // durable one, this commit and the staging log's part of it together.
            txn.set_durability(::redb::Durability::None)
                .map_err(|e| self.error(e))?;
        }
        self.apply(&txn, batch, &state, &mut next, &mut delta)?;
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

    /// Every op of `batch` into `txn`: small puts staged (their changes to the index in
    /// `delta`, the log's extent in `next`), the rest into their tables, then the log cleaned
    /// if it outgrew its limits. `state` is the log as the last commit left it.
    fn apply(
        &self,
        txn: &WriteTransaction,
        batch: &WriteBatch,
        state: &LogState,
        next: &mut LogState,
        delta: &mut Delta,
    ) -> Result<(), StoreError> {
        let staged = |delta: &Delta, table: Table, key: &[u8]| {
            read(&self.layers).latest().get(delta, table, key)
        };
        let mut scrub = false;
        let mut homes = Homes {
            txn,
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
                        && self.limits.batch_has_room(state, next) =>
                {
                    delta.insert(ikey(*table, key), Some(next.next_seq));
                    append(
                        Entry::Put {
                            table: *table,
                            key,
                            value,
                        },
                        next,
                    )?;
                }
                BatchOp::Put { table, key, value } => {
                    homes
                        .get(self, *table)?
                        .insert(key.as_slice(), value.as_slice())
                        .map_err(|e| self.error(e))?;
                    if staged(delta, *table, key).is_some() {
                        delta.insert(ikey(*table, key), None);
                        append(Entry::Delete { table: *table, key }, next)?;
                    }
                }
                BatchOp::Delete { table, key } => {
                    homes
                        .get(self, *table)?
                        .remove(key.as_slice())
                        .map_err(|e| self.error(e))?;
                    if staged(delta, *table, key).is_some() {
                        delta.insert(ikey(*table, key), None);
                        append(Entry::Delete { table: *table, key }, next)?;
                    }
                }
                BatchOp::DeletePrefix { table, prefix } => {
                    self.remove_prefix(homes.get(self, *table)?, prefix)?;
                    let keys = read(&self.layers).latest().staged_in(delta, *table, prefix);
                    if !keys.is_empty() {
                        for (key, _) in keys {
                            delta.insert(ikey(*table, &key), None);
                        }
                        append(
                            Entry::DeletePrefix {
                                table: *table,
                                prefix,
                            },
                            next,
                        )?;
                    }
                }
                BatchOp::Scrub => scrub = true,
            }
        }
        if scrub {
            self.request_scrub(txn)?;
        }
        if next.next_seq > state.next_seq && next.over(&self.limits) {
            self.clean(&mut log, &mut homes, delta, next, state.next_seq)?;
        }
        Ok(())
    }

    /// Removes every row under `prefix` from its table (`rows`).
    fn remove_prefix(&self, rows: &mut Rows<'_>, prefix: &[u8]) -> Result<(), StoreError> {
        let end = prefix_end(prefix);
        let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        rows.retain_in::<&[u8], _>((Bound::Included(prefix), upper), |_, _| false)
            .map_err(|e| self.error(e))
    }

    /// Records in `txn` that the next open must scrub the file: durable with the deletions it
    /// is about, so the next open rewrites the file.
    fn request_scrub(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        txn.open_table(META)
            .map_err(|e| self.error(e))?
            .insert(SCRUB_KEY, &[SCRUB_FORMAT][..])
            .map_err(|e| self.error(e))?;
        Ok(())
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
            let entry = Entry::decode(bytes, &self.tables).map_err(|e| self.undecodable(seq, e))?;
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
