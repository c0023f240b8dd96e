//! The group-commit writer: shared commits, submission order, failures, shutdown, barriers and
//! tickets, in both modes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Barrier;
use std::task::{Context, Waker};

use super::ticket::block_on;

use super::*;
use crate::store::{MemStore, Table};

fn put(key: &[u8]) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.put(Table::CHUNKS, key.to_vec(), b"v".to_vec());
    b
}

/// The writer's two modes: the default, and the relay's (yields before draining).
fn both_modes() -> [GroupLimits; 2] {
    [
        GroupLimits::default(),
        GroupLimits::default().yield_to_producers(true),
    ]
}

#[test]
fn eight_writers_share_commits_and_every_batch_lands() {
    for limits in both_modes() {
        eight_writers(limits);
    }
}

fn eight_writers(limits: GroupLimits) {
    const THREADS: usize = 8;
    const BATCHES: usize = 200;
    let store = Arc::new(MemStore::new());
    let group = GroupCommit::with_limits(store.clone(), limits).unwrap();
    let start = Barrier::new(THREADS);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (group, start) = (&group, &start);
            s.spawn(move || {
                start.wait();
                // Keep several batches in flight, as a driver serving many documents does.
                let mut tickets = Vec::new();
                for i in 0..BATCHES {
                    let mut b = put(format!("t{t}-{i:03}").as_bytes());
                    b.put(
                        Table::DOC_META,
                        format!("t{t}-{i:03}").into_bytes(),
                        vec![1],
                    );
                    tickets.push(group.submit(b));
                    if tickets.len() == 8 {
                        for ticket in tickets.drain(..) {
                            ticket.wait().unwrap();
                        }
                    }
                }
                for ticket in tickets {
                    ticket.wait().unwrap();
                }
            });
        }
    });
    let submitted = (THREADS * BATCHES) as u64;
    let commits = group.commits();
    group.shutdown();
    assert_eq!(
        store.scan_keys(Table::CHUNKS, b"").unwrap().len(),
        THREADS * BATCHES
    );
    assert_eq!(
        store.scan_keys(Table::DOC_META, b"").unwrap().len(),
        THREADS * BATCHES
    );
    assert_eq!(store.write_count(), commits);
    assert!(
        commits < submitted,
        "{commits} commits for {submitted} batches: no grouping"
    );
}

#[test]
fn batches_apply_in_submission_order() {
    for limits in both_modes() {
        let store = Arc::new(MemStore::new());
        let group = GroupCommit::with_limits(store.clone(), limits).unwrap();
        let mut tickets = Vec::new();
        for i in 0..100u8 {
            let mut b = WriteBatch::new();
            b.put(Table::CHUNKS, b"k".to_vec(), vec![i]);
            tickets.push(group.submit(b));
        }
        for ticket in tickets {
            ticket.wait().unwrap();
        }
        assert_eq!(store.get(Table::CHUNKS, b"k").unwrap(), Some(vec![99]));
    }
}

/// A store whose first write blocks until released, and which refuses any batch that
/// touches the key `poison`: lets a test line up a group deterministically.
pub(super) struct GatedStore {
    inner: MemStore,
    gate: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl GatedStore {
    /// The store, and the sender that releases its first write.
    pub(super) fn new() -> (Arc<GatedStore>, std::sync::mpsc::Sender<()>) {
        let (release, gate) = std::sync::mpsc::channel();
        let store = Arc::new(GatedStore {
            inner: MemStore::new(),
            gate: std::sync::Mutex::new(Some(gate)),
        });
        (store, release)
    }
}

impl KvStore for GatedStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(table, key)
    }
    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.inner.scan_prefix(table, prefix)
    }
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if let Some(gate) = self.gate.lock().unwrap().take() {
            gate.recv().unwrap();
        }
        let poisoned = batch
            .ops()
            .iter()
            .any(|op| matches!(op, crate::store::BatchOp::Put { key, .. } if key == b"poison"));
        if poisoned {
            return Err(StoreError::Injected { op: "write" });
        }
        self.inner.write(batch)
    }
}

#[test]
fn one_bad_batch_fails_only_its_own_caller() {
    let (store, release) = GatedStore::new();
    let group = GroupCommit::new(store.clone()).unwrap();
    let first = group.submit(put(b"first"));
    // The writer is now stuck in the first write; these three queue up behind it.
    let tickets: Vec<_> = [&b"a"[..], b"poison", b"c"]
        .iter()
        .map(|k| group.submit(put(k)))
        .collect();
    release.send(()).unwrap();
    first.wait().unwrap();
    let results: Vec<_> = tickets.into_iter().map(CommitTicket::wait).collect();
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(matches!(results[1], Err(StoreError::Injected { .. })));
    assert_eq!(
        store.scan_keys(Table::CHUNKS, b"").unwrap(),
        vec![b"a".to_vec(), b"c".to_vec(), b"first".to_vec()]
    );
    // first, then a and c alone after the merged write failed.
    assert_eq!(group.commits(), 3);
}

#[test]
fn a_dead_disk_fails_every_later_ticket() {
    let store = Arc::new(MemStore::new());
    let group = GroupCommit::new(store.clone()).unwrap();
    store.fail_writes_after(1);
    group.submit(put(b"first")).wait().unwrap();
    let tickets: Vec<_> = [&b"a"[..], b"b"]
        .iter()
        .map(|k| group.submit(put(k)))
        .collect();
    for ticket in tickets {
        assert!(matches!(ticket.wait(), Err(StoreError::Injected { .. })));
    }
    assert_eq!(
        store.scan_keys(Table::CHUNKS, b"").unwrap(),
        vec![b"first".to_vec()]
    );
}

#[test]
fn shutdown_writes_everything_already_submitted() {
    let store = Arc::new(MemStore::new());
    let group = GroupCommit::new(store.clone()).unwrap();
    let tickets: Vec<_> = (0..50u8).map(|i| group.submit(put(&[i]))).collect();
    group.shutdown();
    assert_eq!(store.scan_keys(Table::CHUNKS, b"").unwrap().len(), 50);
    for ticket in tickets {
        ticket.wait().unwrap();
    }
}

#[test]
fn an_empty_batch_is_a_barrier_that_writes_nothing() {
    let store = Arc::new(MemStore::new());
    let group = GroupCommit::new(store.clone()).unwrap();
    let write = group.submit(put(b"k"));
    group.submit(WriteBatch::new()).wait().unwrap();
    assert!(store.get(Table::CHUNKS, b"k").unwrap().is_some());
    write.wait().unwrap();
    drop(group);
    assert_eq!(store.write_count(), 1);
}

#[test]
fn tickets_can_be_awaited_and_dropped() {
    let store = Arc::new(MemStore::new());
    let group = GroupCommit::new(store.clone()).unwrap();
    // Awaited through a future, then waited after the first poll.
    let mut ticket = group.submit(put(b"a"));
    let waker = Waker::noop();
    let _ = Pin::new(&mut ticket).poll(&mut Context::from_waker(waker));
    ticket.wait().unwrap();
    block_on(group.submit(put(b"b"))).unwrap();
    // A dropped ticket still writes.
    drop(group.submit(put(b"c")));
    group.shutdown();
    assert_eq!(store.scan_keys(Table::CHUNKS, b"").unwrap().len(), 3);
}

/// A store that keeps the (lazy, sync) flags of every batch it is asked to write.
#[derive(Default)]
struct FlagStore {
    inner: MemStore,
    seen: std::sync::Mutex<Vec<(bool, bool, usize)>>,
}

impl KvStore for FlagStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(table, key)
    }
    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.inner.scan_prefix(table, prefix)
    }
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.seen
            .lock()
            .unwrap()
            .push((batch.is_lazy(), batch.wants_sync(), batch.len()));
        self.inner.write(batch)
    }
}

fn lazy_put(key: &[u8]) -> WriteBatch {
    let mut b = put(key);
    b.set_lazy();
    b
}

#[test]
fn a_group_is_lazy_only_when_every_batch_that_writes_is() {
    let merged = |batches: Vec<WriteBatch>| {
        let mut m = WriteBatch::new();
        for b in batches {
            m.extend(b);
        }
        (m.is_lazy(), m.wants_sync())
    };
    assert_eq!(merged(vec![lazy_put(b"a"), lazy_put(b"b")]), (true, false));
    // An empty barrier changes nothing; a durable write or a sync does.
    assert_eq!(
        merged(vec![lazy_put(b"a"), WriteBatch::new()]),
        (true, false)
    );
    assert_eq!(
        merged(vec![WriteBatch::new(), lazy_put(b"a")]),
        (true, false)
    );
    assert_eq!(merged(vec![lazy_put(b"a"), put(b"b")]), (false, false));
    assert_eq!(merged(vec![put(b"b"), lazy_put(b"a")]), (false, false));
    assert_eq!(
        merged(vec![lazy_put(b"a"), WriteBatch::sync()]),
        (false, true)
    );
    let mut sync = WriteBatch::sync();
    sync.set_lazy();
    assert!(!sync.is_lazy(), "a sync is never lazy");
}

#[test]
fn a_sync_alone_reaches_the_store_and_empty_barriers_do_not() {
    let store = Arc::new(FlagStore::default());
    let group = GroupCommit::new(store.clone()).unwrap();
    group.submit(lazy_put(b"a")).wait().unwrap();
    group.submit(WriteBatch::new()).wait().unwrap();
    group.submit(WriteBatch::sync()).wait().unwrap();
    group.shutdown();
    assert_eq!(
        *store.seen.lock().unwrap(),
        vec![(true, false, 1), (false, true, 0)]
    );
}

#[test]
fn a_small_lazy_batch_is_written_at_once_only_when_nothing_waits() {
    let store = Arc::new(FlagStore::default());
    let group = GroupCommit::new(store.clone()).unwrap();
    assert!(matches!(group.write_lazy_now(lazy_put(b"a")), Ok(Ok(()))));
    assert_eq!(store.get(Table::CHUNKS, b"a").unwrap(), Some(b"v".to_vec()));
    // Durable, or too large: the caller submits it.
    assert!(group.write_lazy_now(put(b"b")).is_err());
    let mut large = WriteBatch::new();
    for i in 0..=NOW_MAX_OPS {
        large.put(Table::CHUNKS, vec![i as u8], vec![]);
    }
    large.set_lazy();
    assert!(group.write_lazy_now(large).is_err());
    let mut heavy = WriteBatch::new();
    heavy.put(Table::CHUNKS, b"h".to_vec(), vec![0; NOW_MAX_BYTES + 1]);
    heavy.set_lazy();
    assert!(group.write_lazy_now(heavy).is_err());
    // Written as it was: lazy, one op.
    assert_eq!(*store.seen.lock().unwrap(), vec![(true, false, 1)]);
    assert_eq!(group.commits(), 1);
}

#[test]
fn a_batch_written_at_once_never_passes_one_submitted_before() {
    let (store, release) = GatedStore::new();
    let group = GroupCommit::new(store.clone()).unwrap();
    let mut first = WriteBatch::new();
    first.put(Table::CHUNKS, b"k".to_vec(), vec![1]);
    let first = group.submit(first);
    // Submitted and unwritten (queued, or the writer stuck in it): refused, handed back.
    let mut second = WriteBatch::new();
    second.put(Table::CHUNKS, b"k".to_vec(), vec![2]);
    second.set_lazy();
    let second = group
        .write_lazy_now(second)
        .expect_err("the first is unwritten");
    release.send(()).unwrap();
    first.wait().unwrap();
    assert_eq!(store.get(Table::CHUNKS, b"k").unwrap(), Some(vec![1]));
    // Nothing waits now.
    assert!(matches!(group.write_lazy_now(second), Ok(Ok(()))));
    assert_eq!(store.get(Table::CHUNKS, b"k").unwrap(), Some(vec![2]));
}

#[test]
fn callers_mixing_both_ways_keep_their_order() {
    const THREADS: usize = 4;
    const ROUNDS: u8 = 100;
    let store = Arc::new(MemStore::new());
    let group = GroupCommit::with_limits(
        store.clone(),
        GroupLimits::default().yield_to_producers(true),
    )
    .unwrap();
    thread::scope(|s| {
        for t in 0..THREADS {
            let group = &group;
            s.spawn(move || {
                let key = vec![t as u8];
                let batch = |v: u8| {
                    let mut b = WriteBatch::new();
                    b.put(Table::CHUNKS, key.clone(), vec![v]);
                    b.set_lazy();
                    b
                };
                for i in (0..ROUNDS).step_by(2) {
                    // Submitted, not waited for; then the next value, at once if it may.
                    let queued = group.submit(batch(i));
                    let next = group
                        .write_lazy_now(batch(i + 1))
                        .map_err(|b| group.submit(b));
                    queued.wait().unwrap();
                    match next {
                        Ok(result) => result.unwrap(),
                        Err(ticket) => ticket.wait().unwrap(),
                    }
                }
            });
        }
    });
    for t in 0..THREADS {
        assert_eq!(
            store.get(Table::CHUNKS, &[t as u8]).unwrap(),
            Some(vec![ROUNDS - 1]),
            "caller {t}'s last value"
        );
    }
}

#[test]
fn metadata_writes_are_counted_once_they_land_whichever_way() {
    let group = GroupCommit::new(Arc::new(MemStore::new())).unwrap();
    assert_eq!(group.meta_writes(), 0);
    let meta = |key: &[u8]| {
        let mut b = WriteBatch::new();
        b.put(Table::CHUNKS, key.to_vec(), b"c".to_vec());
        b.delete(Table::DOC_META, key.to_vec());
        b
    };
    // Other tables are not counted; metadata is, through the writer and on the caller's thread.
    group.submit(put(b"a")).wait().unwrap();
    group.write_lazy_now(lazy_put(b"b")).unwrap().unwrap();
    assert_eq!(group.meta_writes(), 0);
    group.submit(meta(b"c")).wait().unwrap();
    assert_eq!(group.meta_writes(), 1);
    let mut lazy = meta(b"d");
    lazy.set_lazy();
    group.write_lazy_now(lazy).unwrap().unwrap();
    assert_eq!(group.meta_writes(), 2);
    assert!(store_holds(&group, b"d"));
}

fn store_holds(group: &GroupCommit, key: &[u8]) -> bool {
    group.store().get(Table::CHUNKS, key).unwrap().is_some()
}
