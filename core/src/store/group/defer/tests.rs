//! Deferred writes: what is deferred, when it becomes readable, and that nothing submitted
//! after passes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::store::{KvStore, MemStore};

fn lazy_chunk(key: &[u8]) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.put(Table::CHUNKS, key.to_vec(), b"v".to_vec());
    b.set_lazy();
    b
}

fn has(store: &MemStore, key: &[u8]) -> bool {
    store.get(Table::CHUNKS, key).unwrap().is_some()
}

#[test]
fn only_lazy_puts_of_chunks_are_deferred() {
    let group = GroupCommit::new(Arc::new(MemStore::new())).unwrap();
    let mut durable = WriteBatch::new();
    durable.put(Table::CHUNKS, b"d".to_vec(), b"v".to_vec());
    assert!(group.defer(durable).is_err());
    let mut meta = lazy_chunk(b"m");
    meta.put(Table::DOC_META, b"m".to_vec(), b"v".to_vec());
    assert!(group.defer(meta).is_err());
    let mut delete = lazy_chunk(b"x");
    delete.delete(Table::CHUNKS, b"y".to_vec());
    assert!(group.defer(delete).is_err());
    assert!(group.defer(WriteBatch::new()).is_err());
    assert!(group.barrier().is_none(), "nothing was deferred");
    // Bounded: past the bound the caller writes it itself.
    let mut big = WriteBatch::new();
    big.put(Table::CHUNKS, b"big".to_vec(), vec![0; DEFER_MAX_BYTES + 1]);
    big.set_lazy();
    assert!(group.defer(big).is_err());
}

#[test]
fn a_deferred_write_is_readable_after_a_barrier_and_found_before() {
    let store = Arc::new(MemStore::new());
    let group = GroupCommit::new(store.clone()).unwrap();
    group.defer(lazy_chunk(b"a")).unwrap();
    assert!(group.deferred_has(Table::CHUNKS, b"a"));
    assert!(!group.deferred_has(Table::CHUNKS, b"b"));
    // A small lazy write may not pass it either.
    assert!(group.write_lazy_now(lazy_chunk(b"c")).is_err());
    group
        .barrier()
        .expect("something is deferred")
        .wait()
        .unwrap();
    assert!(has(&store, b"a"));
    assert!(!group.deferred_has(Table::CHUNKS, b"a"));
    assert!(group.barrier().is_none());
}

#[test]
fn a_batch_submitted_after_a_deferred_one_is_written_after_it() {
    let store = Arc::new(MemStore::new());
    let group = GroupCommit::new(store.clone()).unwrap();
    group.defer(lazy_chunk(b"doc-1")).unwrap();
    group.defer(lazy_chunk(b"doc-2")).unwrap();
    // Deleting the document's chunks must find them written, or they would come back.
    let mut erase = WriteBatch::new();
    erase.delete_prefix(Table::CHUNKS, b"doc-".to_vec());
    group.submit(erase).wait().unwrap();
    group.shutdown();
    assert!(!has(&store, b"doc-1") && !has(&store, b"doc-2"));
}

#[test]
fn the_writer_writes_what_is_deferred_soon_in_one_commit() {
    let store = Arc::new(MemStore::new());
    let group = GroupCommit::new(store.clone()).unwrap();
    for key in [b"a", b"b", b"c"] {
        group.defer(lazy_chunk(key)).unwrap();
    }
    // Awaited as an event, bounded: the writer's timer, not a barrier, writes them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !has(&store, b"c") {
        assert!(Instant::now() < deadline, "deferred writes never written");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(has(&store, b"a") && has(&store, b"b"));
    assert_eq!(group.commits(), 1, "three deferred writes, one commit");
}

#[test]
fn shutdown_writes_what_is_deferred() {
    let store = Arc::new(MemStore::new());
    let group = GroupCommit::new(store.clone()).unwrap();
    group.defer(lazy_chunk(b"a")).unwrap();
    drop(group);
    assert!(has(&store, b"a"));
}

#[test]
fn a_barrier_waits_for_deferred_writes_the_writer_is_writing() {
    /// Releases the store's write when told, or when dropped (before the group, whose drop
    /// joins the writer thread: a failing assertion must not leave it blocked).
    struct Release(Option<std::sync::mpsc::Sender<()>>);
    impl Release {
        fn now(&mut self) {
            if let Some(r) = self.0.take() {
                let _ = r.send(());
            }
        }
    }
    impl Drop for Release {
        fn drop(&mut self) {
            self.now();
        }
    }
    let (store, release) = super::super::tests::GatedStore::new();
    let group = GroupCommit::new(store.clone()).unwrap();
    let mut release = Release(Some(release));
    group.defer(lazy_chunk(b"a")).unwrap();
    // The writer's timer takes it and blocks in the store's write.
    let deadline = Instant::now() + Duration::from_secs(10);
    while group.gate.deferred_ops.load(Ordering::SeqCst) != 0 {
        assert!(
            Instant::now() < deadline,
            "the writer never took the deferred write"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(store.get(Table::CHUNKS, b"a").unwrap().is_none());
    let barrier = group
        .barrier()
        .expect("taken for writing is not written: a load must wait");
    release.now();
    barrier.wait().unwrap();
    assert!(store.get(Table::CHUNKS, b"a").unwrap().is_some());
    assert!(group.barrier().is_none());
}
