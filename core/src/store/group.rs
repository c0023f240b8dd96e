//! [`GroupCommit`]: one writer thread that turns many concurrent batches into few durable writes.
//!
//! Each durable write costs an fsync, which dwarfs the cost of the data. Callers
//! [`submit`](GroupCommit::submit) batches into a bounded queue; the writer thread takes the
//! first, drains whatever else is already queued (up to [`GroupLimits`]), concatenates them in
//! submission order into one [`WriteBatch`] and calls [`KvStore::write`] once. Every caller's
//! [`CommitTicket`] then completes with the result. Under load, many callers share one fsync;
//! alone, a caller pays one fsync as before and waits for nothing else.
//!
//! # Guarantees
//!
//! - A ticket completes with `Ok` only after its batch is durable; for a lazy batch
//!   ([`WriteBatch::set_lazy`]) once it is written, durable with the next durable commit
//!   (a group is committed durably when any batch in it that writes, or a
//!   [`WriteBatch::sync`], asks for it).
//! - Batches apply in submission order, each atomically: a merged write is all-or-nothing, and
//!   if it fails the writer retries each batch of the group alone, so one bad batch fails only
//!   its own caller. The outcome is what writing each batch alone, in order, would give.
//! - Reads go straight to the store ([`GroupCommit::store`]) and see every completed write,
//!   but not deferred ones until [`GroupCommit::barrier`] completes.
//! - [`GroupCommit::shutdown`] (or drop) writes everything already submitted, then joins the
//!   thread.
//! - [`GroupCommit::write_lazy_now`] writes a small lazy batch on the caller's thread, only
//!   when nothing submitted or deferred is still unwritten and the writer is not writing: it
//!   then counts as submitted at that moment, so the order above holds.
//! - [`GroupCommit::defer`] holds small lazy puts of chunks for a few milliseconds, to write
//!   many in one commit (rules in `group/defer.rs`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::{KvStore, StoreError, WriteBatch};

mod defer;
mod ticket;

pub use self::ticket::CommitTicket;

/// How much the writer merges into one write, and how many batches may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupLimits {
    /// Stop draining the queue once a group holds this many operations.
    pub max_ops: usize,
    /// Stop draining the queue once a group holds this many bytes of keys and values.
    pub max_bytes: usize,
    /// Batches that may wait in the queue before [`GroupCommit::submit`] blocks.
    pub queue: usize,
    /// Once woken by a batch, the writer yields the CPU once before draining the queue (see
    /// [`GroupLimits::yield_to_producers`]).
    pub yield_to_producers: bool,
}

impl GroupLimits {
    /// Whether the writer, woken by the first batch of a group, yields its CPU once
    /// (`std::thread::yield_now`) before taking what else is queued.
    ///
    /// For a process whose producer may share a CPU with the writer under load (the relay,
    /// whose hub submits a burst of writes per pass): the writer wakes at the burst's first
    /// submit and, preempting the producer, would commit it alone; yielding lets the producer
    /// finish the burst, so one commit and one fsync carry all of it. With nothing else
    /// runnable the yield returns at once. Off by default: a device's lone writes gain nothing
    /// and could wait behind an unrelated thread.
    pub fn yield_to_producers(mut self, on: bool) -> Self {
        self.yield_to_producers = on;
        self
    }
}

impl Default for GroupLimits {
    fn default() -> Self {
        GroupLimits {
            max_ops: 16 * 1024,
            max_bytes: 16 * 1024 * 1024,
            queue: 1024,
            yield_to_producers: false,
        }
    }
}

struct Request {
    batch: WriteBatch,
    done: oneshot::Sender<Result<(), StoreError>>,
    /// The deferred writes it carries, up to this one ([`Gate::take_deferred`]; 0: none).
    deferred_to: u64,
}

/// A store shared by many writers through one writer thread that groups their commits.
pub struct GroupCommit {
    store: Arc<dyn KvStore>,
    sender: Option<SyncSender<Request>>,
    writer: Option<JoinHandle<()>>,
    commits: Arc<AtomicU64>,
    gate: Arc<Gate>,
}

/// What the writer thread and [`GroupCommit::write_lazy_now`] share.
#[derive(Default)]
struct Gate {
    /// Held by whoever is writing to the store.
    writing: Mutex<()>,
    /// Batches submitted whose outcome is not yet known.
    pending: AtomicUsize,
    /// Writes touching `Table::DOC_META` made (see [`GroupCommit::meta_writes`]).
    meta_writes: AtomicU64,
    /// Deferred writes ([`GroupCommit::defer`]) not yet taken for writing.
    deferred: Mutex<defer::Deferred>,
    /// How many operations `deferred` holds (read without its lock).
    deferred_ops: AtomicUsize,
    /// Deferred batches so far, and how many of them (in that count) have been written
    /// (failed ones too): a barrier is needed while they differ.
    deferred_count: AtomicU64,
    deferred_done: AtomicU64,
    /// Held while a batch and what was deferred before it are queued, so that no other
    /// submission slips between them.
    order: Mutex<()>,
}

/// The largest batch [`GroupCommit::write_lazy_now`] writes on the caller's thread.
const NOW_MAX_OPS: usize = 64;
/// The most bytes of keys and values it writes so.
const NOW_MAX_BYTES: usize = 64 * 1024;

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("commits", &self.commits())
            .field("running", &self.sender.is_some())
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Start the writer thread for `store` with the default [`GroupLimits`].
    pub fn new(store: Arc<dyn KvStore>) -> Result<GroupCommit, StoreError> {
        GroupCommit::with_limits(store, GroupLimits::default())
    }

    /// Start the writer thread for `store`.
    pub fn with_limits(
        store: Arc<dyn KvStore>,
        limits: GroupLimits,
    ) -> Result<GroupCommit, StoreError> {
        let (sender, receiver) = sync_channel(limits.queue.max(1));
        let commits = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(Gate::default());
        let writer = {
            let (store, commits, gate) =
                (Arc::clone(&store), Arc::clone(&commits), Arc::clone(&gate));
            thread::Builder::new()
                .name("weft-store-writer".into())
                .spawn(move || run_writer(&*store, &receiver, &commits, &gate, limits))
                .map_err(|source| StoreError::WriterThread {
                    source: Arc::new(source),
                })?
        };
        Ok(GroupCommit {
            store,
            sender: Some(sender),
            writer: Some(writer),
            commits,
            gate,
        })
    }

    /// Queue `batch` for a durable write; the ticket completes when it is durable or has failed.
    ///
    /// Blocks only while [`GroupLimits::queue`] batches are already waiting (backpressure).
    /// An empty batch writes nothing; its ticket completes after every batch submitted before
    /// it, so it serves as a flush barrier.
    pub fn submit(&self, batch: WriteBatch) -> CommitTicket {
        let (done, receiver) = oneshot::channel();
        let _order = self.gate.order.lock().unwrap_or_else(|e| e.into_inner());
        // What was deferred goes first, as a request of its own (nobody waits for it; the
        // writer logs a failure).
        let (deferred, deferred_to) = self.gate.take_deferred();
        if !deferred.is_empty() {
            let (done, _) = oneshot::channel();
            self.queue(Request {
                batch: deferred,
                done,
                deferred_to,
            });
        }
        let sent = self.queue(Request {
            batch,
            done,
            deferred_to: 0,
        });
        if sent {
            CommitTicket::waiting(receiver)
        } else {
            // The writer thread is gone (it panicked): nothing can be written any more.
            CommitTicket::ready(Err(StoreError::Closed))
        }
    }

    /// Queues `request` for the writer (blocking while the queue is full); `false` when the
    /// writer thread is gone.
    fn queue(&self, request: Request) -> bool {
        // Counted before it is queued, so `write_lazy_now` never passes it.
        self.gate.pending.fetch_add(1, Ordering::SeqCst);
        let sent = match &self.sender {
            Some(sender) => sender.send(request).is_ok(),
            None => false,
        };
        if !sent {
            self.gate.pending.fetch_sub(1, Ordering::SeqCst);
        }
        sent
    }

    /// Writes `batch` on this thread, when it is lazy ([`WriteBatch::set_lazy`]), small (at most
    /// 64 operations and 64 KiB) and every batch submitted before has been written: the
    /// writer thread's hand-off (a wake-up there and one back) costs more than such a write.
    /// It counts as submitted now (a batch submitted after this call is written after it).
    /// `Err(batch)` when it cannot (the caller submits it instead); never waits for the
    /// writer. The write blocks this thread as long as the store takes (no fsync).
    pub fn write_lazy_now(&self, batch: WriteBatch) -> Result<Result<(), StoreError>, WriteBatch> {
        if !batch.is_lazy()
            || batch.len() > NOW_MAX_OPS
            || batch.size_bytes() > NOW_MAX_BYTES
            || self.sender.is_none()
        {
            return Err(batch);
        }
        let Ok(_writing) = self.gate.writing.try_lock() else {
            return Err(batch);
        };
        // Under the lock the writer cannot be writing; nothing submitted or deferred may wait
        // either.
        if self.gate.pending.load(Ordering::SeqCst) != 0
            || self.gate.deferred_ops.load(Ordering::SeqCst) != 0
        {
            return Err(batch);
        }
        Ok(write_counted(
            &*self.store,
            &batch,
            &self.commits,
            &self.gate,
        ))
    }

    /// Writes `batch` the cheapest way it allows: deferred ([`GroupCommit::defer`]), else on
    /// this thread ([`GroupCommit::write_lazy_now`]), else submitted. The ticket is complete at
    /// once for the first two.
    pub fn write_soon(&self, batch: WriteBatch) -> CommitTicket {
        let Err(batch) = self.defer(batch) else {
            return CommitTicket::ready(Ok(()));
        };
        match self.write_lazy_now(batch) {
            Ok(written) => CommitTicket::ready(written),
            Err(batch) => self.submit(batch),
        }
    }

    /// How many writes touching documents' metadata (`Table::DOC_META`) have been made, each
    /// counted once it is in the store (failed ones too). A reader that reads this, then the
    /// metadata, knows its reading still holds while the count stays the same: up to a write
    /// that has landed and is not counted yet, as a reading just before that write would not.
    pub fn meta_writes(&self) -> u64 {
        self.gate.meta_writes.load(Ordering::SeqCst)
    }

    /// The store, for reads. Reads see every write whose ticket has completed; a deferred write
    /// ([`GroupCommit::defer`]) only once a [`GroupCommit::barrier`] taken after it completes.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    /// How many writes have been made so far: one per group the writer thread wrote, one per
    /// [`GroupCommit::write_lazy_now`] that wrote.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Write everything already submitted, then stop the writer thread. Blocks until done, as
    /// dropping does.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        // Closing the channel ends the writer's loop once it has drained the queue.
        drop(self.sender.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("the store writer thread panicked");
            }
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run_writer(
    store: &dyn KvStore,
    queue: &Receiver<Request>,
    commits: &AtomicU64,
    gate: &Gate,
    limits: GroupLimits,
) {
    loop {
        let first = match gate.deferred_due() {
            None => match queue.recv() {
                Ok(first) => first,
                Err(_) => break,
            },
            Some(due) => match queue.recv_timeout(due) {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => {
                    write_deferred(store, commits, gate);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
        if limits.yield_to_producers {
            thread::yield_now();
        }
        let (mut ops, mut bytes) = (first.batch.len(), first.batch.size_bytes());
        let mut group = vec![first];
        while ops < limits.max_ops && bytes < limits.max_bytes {
            let Ok(next) = queue.try_recv() else { break };
            ops += next.batch.len();
            bytes += next.batch.size_bytes();
            group.push(next);
        }
        commit_group(store, group, commits, gate);
    }
    // Nothing can be deferred once the queue is closed (`defer` needs the sender).
    write_deferred(store, commits, gate);
}

/// Writes what is deferred, if anything.
fn write_deferred(store: &dyn KvStore, commits: &AtomicU64, gate: &Gate) {
    let (batch, deferred_to) = gate.take_deferred();
    if batch.is_empty() {
        return;
    }
    if let Err(e) = write_gated(store, &batch, commits, gate) {
        // Like a lazy write whose ticket nobody kept: the store failing fails what follows too.
        tracing::error!(error = %e, ops = batch.len(), "writing deferred chunks failed");
    }
    gate.deferred_written(deferred_to);
}

/// Writes `batch` holding the gate's lock, which is released before any caller is told (so
/// a caller woken by its ticket finds the writer idle).
fn write_gated(
    store: &dyn KvStore,
    batch: &WriteBatch,
    commits: &AtomicU64,
    gate: &Gate,
) -> Result<(), StoreError> {
    // A poisoned lock only means a write panicked on another thread; the store decides what
    // that write left.
    let _writing = gate
        .writing
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    write_counted(store, batch, commits, gate)
}

fn commit_group(store: &dyn KvStore, group: Vec<Request>, commits: &AtomicU64, gate: &Gate) {
    let count = group.len();
    let mut merged = WriteBatch::new();
    let mut ends = Vec::with_capacity(group.len());
    let mut dones = Vec::with_capacity(group.len());
    let deferred_to = group.iter().map(|r| r.deferred_to).max().unwrap_or(0);
    for Request {
        batch,
        done,
        deferred_to: _,
    } in group
    {
        let flags = (batch.lazy, batch.sync);
        merged.extend(batch);
        ends.push((merged.len(), flags));
        dones.push(done);
    }
    let result = write_gated(store, &merged, commits, gate);
    if result.is_ok() || dones.len() == 1 {
        gate.deferred_written(deferred_to);
        gate.pending.fetch_sub(count, Ordering::SeqCst);
        for done in dones {
            tell(done, result.clone());
        }
        return;
    }
    if let Err(err) = &result {
        tracing::warn!(
            ?err,
            batches = dones.len(),
            "group write failed; writing its batches one by one"
        );
    }
    let mut start = 0;
    for ((end, (lazy, sync)), done) in ends.into_iter().zip(dones) {
        let mut alone = WriteBatch::from_ops(merged.ops()[start..end].to_vec());
        (alone.lazy, alone.sync) = (lazy, sync);
        start = end;
        let result = write_gated(store, &alone, commits, gate);
        gate.pending.fetch_sub(1, Ordering::SeqCst);
        tell(done, result);
    }
    gate.deferred_written(deferred_to);
}

/// Tells a batch's caller its outcome. A dropped ticket means its caller stopped waiting, not
/// that the write is undone; a failure nobody waits for (deferred writes, dropped tickets) is
/// logged here.
fn tell(done: oneshot::Sender<Result<(), StoreError>>, result: Result<(), StoreError>) {
    if let Err(Err(err)) = done.send(result).map_err(|unsent| unsent.into_inner()) {
        tracing::error!(?err, "a store write nobody waits for failed");
    }
}

fn write_counted(
    store: &dyn KvStore,
    batch: &WriteBatch,
    commits: &AtomicU64,
    gate: &Gate,
) -> Result<(), StoreError> {
    if batch.is_empty() && !batch.wants_sync() {
        return Ok(());
    }
    let written = store.write(batch);
    if batch.touches(super::Table::DOC_META) {
        gate.meta_writes.fetch_add(1, Ordering::SeqCst);
    }
    written?;
    commits.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests;
