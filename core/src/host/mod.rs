//! [`Host`]: the engine wired to a document store, shared by the device runtime and the relay.
//!
//! The engine asks for bytes to be persisted and documents to be loaded; the host turns those
//! requests into store batches (submitted to the group-commit writer) and loads, tracks which
//! chunks each loaded document covers, and compacts a document's chunks into a snapshot once
//! enough have accumulated. It performs no network IO and owns no task: the driver calls
//! [`Host::poll_action`] after feeding the engine, carries out each [`Action`] (awaiting commit
//! tickets, running loads off its event loop) and reports back.
//!
//! Compaction is safe to interleave with writes because the group-commit writer applies batches
//! in submission order: a compaction submitted after a chunk's batch deletes that chunk only
//! after it was written, and the snapshot, saved from the engine's document after the chunk's
//! changes entered it, contains them.

mod compact;
mod inputs;
mod load;
mod save;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use automerge::sync;

use crate::engine::{ConnId, Engine, Output, PersistId, Write};
use crate::hash::{HashMap, HashSet};
use crate::store::docs::{self, ChunkKey, ChunkKind};
use crate::store::{CommitTicket, GroupCommit, KvStore, WriteBatch};
use crate::wire::Message;
use crate::DocId;

pub use load::{load, load_for_compaction, saved_sync_state, Loaded};
pub use save::{SaveJob, Saved};

/// Host tuning.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Compact a document once it has this many chunks and its incremental chunks hold at
    /// least `compact_growth` times the bytes of its last snapshot, so a large document is not
    /// re-saved (or, when stale, reloaded) every few small changes: the cost of compaction
    /// stays proportional to what was written.
    pub compact_after_chunks: usize,
    /// See `compact_after_chunks`. Raw changes take ~30x the bytes they add to a compressed
    /// snapshot, so 32 means roughly "as many new changes as the document holds".
    pub compact_growth: usize,
    /// Compact a document once it has this many chunks whatever their size (a bound on the
    /// rows a load reads).
    pub compact_max_chunks: usize,
    /// Hand the driver every write of received changes as [`Action::LogThenWrite`], with the
    /// gate records written before them, so it can also append them to a log it awaits (a
    /// relay in a cluster). Changes made on this node (and imports from the log, which a
    /// driver makes as local changes) are not logged.
    pub log_received: bool,
    /// A document taking at least this many bytes in the store is compacted from a copy the
    /// driver saves off its thread ([`Action::Save`]); smaller ones are saved in place.
    pub compact_off_thread_from: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            compact_after_chunks: 64,
            compact_growth: 32,
            compact_max_chunks: 4096,
            log_received: false,
            // Saving 64 KiB takes ~4 ms; copying the document a few percent of that.
            compact_off_thread_from: 64 << 10,
        }
    }
}

/// The chunks a loaded document is stored in.
#[derive(Debug, Default)]
pub(super) struct Stored {
    /// Every chunk, in write order.
    chunks: Vec<ChunkKey>,
    /// Bytes in incremental chunks since the last snapshot (as loaded, then as written).
    incremental_bytes: usize,
    /// Size of the last snapshot (as loaded, or as this host wrote it; 0 when there is none).
    snapshot_bytes: usize,
}

/// What a commit ticket completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// An engine persist request.
    Persist(PersistId),
    /// A compaction of a document that replaced this many chunks.
    Compaction(DocId, usize),
    /// Unparsable chunks of a document set aside.
    Quarantine(DocId),
}

/// Something for the driver to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Action {
    /// Send a message on a connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: Message,
    },
    /// Await `ticket`, then call [`Host::committed`] with `what` and the result.
    Wait {
        /// What completes.
        what: Waiting,
        /// The store's ticket.
        ticket: CommitTicket,
    },
    /// A write of received changes when [`HostConfig::log_received`] is set: append `log` to
    /// the driver's log, *then* submit `batch` to the store ([`Host::submit`]), and call
    /// [`Host::committed`] with `what` once both are done. In that order, a crash between the
    /// two leaves the changes in the log (which the node reads back) rather than only in its
    /// store (where no other node would ever see them). Writes submitted meanwhile may land
    /// first; the chunk is tracked already, so a compaction in between makes it redundant,
    /// never lost (the snapshot holds its changes).
    LogThenWrite {
        /// What completes.
        what: Waiting,
        /// The store batch, not yet submitted.
        batch: WriteBatch,
        /// What to append first.
        log: LogWrite,
    },
    /// Load the document with [`load`] (blocking: run it off the event loop), then call
    /// [`Host::loaded`].
    Load {
        /// The document.
        doc: DocId,
    },
    /// Run the job on a blocking thread ([`SaveJob::run`]: as costly as saving the document),
    /// then hand its result to [`Host::saved`].
    Save(SaveJob),
    /// An engine event for the application (changes, sync status, rejections, errors).
    Event(Output),
}

/// Gate records as written: key and value.
type GateRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// Received changes of one document for a driver's log (see [`HostConfig::log_received`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogWrite {
    /// The document.
    pub doc: DocId,
    /// The changes, concatenated (the bytes of the stored chunk).
    pub changes: Vec<u8>,
    /// The gate records (key, value) written for the document since its last logged
    /// changes: actor bindings, which every node serving the document must know.
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The engine and its store.
pub struct Host {
    engine: Engine,
    group: Arc<GroupCommit>,
    cfg: HostConfig,
    /// Chunks each loaded document covers.
    chunks: HashMap<DocId, Stored>,
    /// Documents with a compaction in flight.
    compacting: HashMap<DocId, usize>,
    /// Stale documents reloaded to be compacted: their load should bring a snapshot.
    snapshot_on_load: HashSet<DocId>,
    /// Compactions written from a snapshot that a load brought.
    compacted_from_loads: u64,
    /// Stored chunks set aside as unparsable.
    quarantined: u64,
    actions: std::collections::VecDeque<Action>,
    /// Gate records waiting to go to the log with their document's next received changes.
    log_records: HashMap<DocId, GateRecords>,
    /// Compactions whose snapshot the driver is saving, by document: which one (see
    /// [`Host::saved`]).
    saving: HashMap<DocId, u64>,
    /// The last compaction handed to the driver.
    next_save: u64,
}

impl Host {
    /// Wires `engine` to the store behind `group`.
    pub fn new(engine: Engine, group: Arc<GroupCommit>, cfg: HostConfig) -> Self {
        Host {
            engine,
            group,
            cfg,
            chunks: HashMap::default(),
            compacting: HashMap::default(),
            snapshot_on_load: HashSet::default(),
            compacted_from_loads: 0,
            quarantined: 0,
            actions: Default::default(),
            log_records: HashMap::default(),
            saving: HashMap::default(),
            next_save: 0,
        }
    }

    /// Submits a batch an [`Action::LogThenWrite`] handed over.
    pub fn submit(&self, batch: WriteBatch) -> CommitTicket {
        self.group.submit(batch)
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        self.group.store()
    }

    /// Whether actions are queued for the driver. When none are, every write this host
    /// submitted has been handed to the driver as an [`Action::Wait`] (a simulator that injects
    /// store faults arms them only then, so a fault hits exactly the next poll's writes).
    pub fn has_queued_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        loop {
            if let Some(a) = self.actions.pop_front() {
                return Some(a);
            }
            let out = self.engine.poll_output()?;
            self.translate(out);
        }
    }

    fn translate(&mut self, out: Output) {
        match out {
            Output::Send { conn, msg } => self.actions.push_back(Action::Send { conn, msg }),
            Output::Load { doc } => self.actions.push_back(Action::Load { doc }),
            Output::MakeWhole(job) => self.save_whole(job),
            Output::Persist {
                id,
                doc,
                write,
                received,
            } => {
                let mut batch = WriteBatch::new();
                let mut log = None;
                match write {
                    Write::Changes(bytes) => {
                        if received && self.cfg.log_received {
                            log = Some(LogWrite {
                                doc,
                                changes: bytes.clone(),
                                records: self.log_records.remove(&doc).unwrap_or_default(),
                            });
                        }
                        let len = bytes.len();
                        let key = docs::put_chunk(&mut batch, doc, ChunkKind::Incremental, bytes);
                        let stored = self.chunks.entry(doc).or_default();
                        stored.chunks.push(key);
                        stored.incremental_bytes += len;
                    }
                    Write::Stored(bytes) => {
                        // Written by the driver already: only counted as the document's.
                        let key = docs::ChunkKey::for_bytes(doc, ChunkKind::Incremental, &bytes);
                        let stored = self.chunks.entry(doc).or_default();
                        stored.chunks.push(key);
                        stored.incremental_bytes += bytes.len();
                    }
                    Write::GateRecord { key, value } => {
                        docs::put_gate_record(&mut batch, doc, &key, &value);
                        if self.cfg.log_received {
                            self.log_records.entry(doc).or_default().push((key, value));
                        }
                    }
                    Write::SyncState { peer, state } => {
                        // The engine produced these bytes with `encode`; they decode.
                        let state = sync::State::decode(&state).unwrap_or_default();
                        docs::put_sync_state(&mut batch, doc, &peer, &state);
                    }
                }
                let what = Waiting::Persist(id);
                self.actions.push_back(match log {
                    Some(log) => Action::LogThenWrite { what, batch, log },
                    // Changes the driver stored already: nothing to write, so no hand-off to
                    // the store's writer and back (the engine still announces a document's
                    // writes in the order they were asked for).
                    None if batch.is_empty() => Action::Wait {
                        what,
                        ticket: CommitTicket::done(),
                    },
                    None => Action::Wait {
                        what,
                        ticket: self.group.submit(batch),
                    },
                });
            }
            Output::Folded { doc } => {
                self.maybe_compact(doc);
                self.actions
                    .push_back(Action::Event(Output::Folded { doc }));
            }
            Output::Evicted { doc } => {
                self.chunks.remove(&doc);
                self.forget_save(doc);
                self.log_records.remove(&doc);
                self.actions
                    .push_back(Action::Event(Output::Evicted { doc }));
            }
            Output::Failed { doc, conns } => {
                self.chunks.remove(&doc);
                self.forget_save(doc);
                self.log_records.remove(&doc);
                self.actions
                    .push_back(Action::Event(Output::Failed { doc, conns }));
            }
            other => self.actions.push_back(Action::Event(other)),
        }
    }

    /// Stored chunks set aside because they do not parse, since this host started.
    pub fn quarantined(&self) -> u64 {
        self.quarantined
    }

    /// Drops `doc` from the engine ([`Engine::forget`]) and from the host's bookkeeping, for a
    /// document deleted for good: its writes in flight complete without effect and no
    /// compaction of it starts. A load of it already running must not be reported to
    /// [`Host::loaded`] (it would bring the document back, and might compact it).
    pub fn forget(&mut self, doc: DocId) {
        self.engine.forget(doc);
        self.chunks.remove(&doc);
        self.forget_save(doc);
        self.snapshot_on_load.remove(&doc);
    }

    /// Whether the host asked for `doc`'s pending load in order to compact it: a driver
    /// that can should load it with [`load_for_compaction`] rather than [`load`].
    pub fn wants_snapshot(&self, doc: DocId) -> bool {
        self.snapshot_on_load.contains(&doc)
    }

    /// Compactions written from a snapshot a load brought (for tests and metrics).
    pub fn compacted_from_loads(&self) -> u64 {
        self.compacted_from_loads
    }

    /// Chunks currently recorded for a loaded document (for tests and metrics).
    pub fn chunk_count(&self, doc: DocId) -> usize {
        self.chunks.get(&doc).map_or(0, |s| s.chunks.len())
    }
}
