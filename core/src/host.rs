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

use std::sync::Arc;

use automerge::sync;

use crate::engine::{ConnId, Engine, Output, PersistId, Write};
use crate::hash::{HashMap, HashSet};
use crate::store::docs::{self, ChunkKey, ChunkKind, DocStoreError};
use crate::store::{CommitTicket, GroupCommit, KvStore, StoreError, WriteBatch};
use crate::wire::Message;
use crate::{DocId, Document};

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
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            compact_after_chunks: 64,
            compact_growth: 32,
            compact_max_chunks: 4096,
        }
    }
}

/// The chunks a loaded document is stored in.
#[derive(Debug, Default)]
struct Stored {
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
    /// Load the document with [`load`] (blocking: run it off the event loop), then call
    /// [`Host::loaded`].
    Load {
        /// The document.
        doc: DocId,
    },
    /// An engine event for the application (changes, sync status, rejections, errors).
    Event(Output),
}

/// A loaded document and the chunks it was loaded from.
#[derive(Debug)]
pub struct Loaded {
    /// The document.
    pub doc: Document,
    /// The chunks it covers.
    pub chunks: Vec<ChunkKey>,
    /// `doc` saved, from [`load_for_compaction`]: a snapshot holding exactly the changes of
    /// `chunks`.
    pub snapshot: Option<Vec<u8>>,
    /// Bytes of `chunks`, by kind: what the host's compaction policy starts from.
    pub sizes: docs::ChunkBytes,
    /// Stored chunks that do not parse, left out of `doc`: the host sets them aside.
    pub quarantine: Vec<docs::Quarantine>,
    /// What the engine's gate keeps with the document (see `engine::Gate`).
    pub gate_records: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Loads a document from the store (blocking). `Ok(None)`: the store has no such document.
pub fn load(store: &dyn KvStore, doc: DocId) -> Result<Option<Loaded>, DocStoreError> {
    let Some(l) = docs::load_document_sized(store, doc)? else {
        return Ok(None);
    };
    Ok(Some(Loaded {
        doc: Document::from_automerge(l.doc),
        chunks: l.chunks,
        snapshot: None,
        sizes: l.sizes,
        quarantine: l.quarantine,
        gate_records: docs::load_gate_records(store, doc)?,
    }))
}

/// [`load`], then saves the document too (blocking, and as costly as the load): for a load
/// the host asked for to compact the document ([`Host::wants_snapshot`]). The host then
/// compacts without saving on the driver's thread.
pub fn load_for_compaction(
    store: &dyn KvStore,
    doc: DocId,
) -> Result<Option<Loaded>, DocStoreError> {
    let mut loaded = load(store, doc)?;
    if let Some(l) = &mut loaded {
        l.snapshot = Some(l.doc.save());
    }
    Ok(loaded)
}

/// The persisted sync state of `doc` with `peer`, in the form [`crate::engine::OpenOptions`]
/// takes.
pub fn saved_sync_state(
    store: &dyn KvStore,
    doc: DocId,
    peer: &[u8],
) -> Result<Option<Vec<u8>>, DocStoreError> {
    Ok(docs::load_sync_state(store, doc, peer)?.map(|s| s.encode()))
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
        }
    }

    /// The engine, to feed inputs to.
    pub fn engine(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        self.group.store()
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
            Output::Persist { id, doc, write } => {
                let mut batch = WriteBatch::new();
                match write {
                    Write::Changes(bytes) => {
                        let len = bytes.len();
                        let key = docs::put_chunk(&mut batch, doc, ChunkKind::Incremental, bytes);
                        let stored = self.chunks.entry(doc).or_default();
                        stored.chunks.push(key);
                        stored.incremental_bytes += len;
                    }
                    Write::GateRecord { key, value } => {
                        docs::put_gate_record(&mut batch, doc, &key, &value);
                    }
                    Write::SyncState { peer, state } => {
                        // The engine produced these bytes with `encode`; they decode.
                        let state = sync::State::decode(&state).unwrap_or_default();
                        docs::put_sync_state(&mut batch, doc, &peer, &state);
                    }
                }
                let ticket = self.group.submit(batch);
                self.actions.push_back(Action::Wait {
                    what: Waiting::Persist(id),
                    ticket,
                });
            }
            Output::Folded { doc } => {
                self.maybe_compact(doc);
                self.actions
                    .push_back(Action::Event(Output::Folded { doc }));
            }
            Output::Evicted { doc } => {
                self.chunks.remove(&doc);
                self.actions
                    .push_back(Action::Event(Output::Evicted { doc }));
            }
            Output::Failed { doc, conns } => {
                self.chunks.remove(&doc);
                self.actions
                    .push_back(Action::Event(Output::Failed { doc, conns }));
            }
            other => self.actions.push_back(Action::Event(other)),
        }
    }

    /// Reports a load's result. A load error is reported as an empty document being
    /// unavailable: the engine drops the document's queued inputs and the error is returned for
    /// the driver to report.
    pub fn loaded(
        &mut self,
        doc: DocId,
        result: Result<Option<Loaded>, DocStoreError>,
    ) -> Result<(), DocStoreError> {
        match result {
            Ok(Some(mut l)) => {
                let wanted = self.snapshot_on_load.remove(&doc);
                let quarantine = std::mem::take(&mut l.quarantine);
                // A first load starts the compaction policy from what the store holds (a
                // large snapshot is not redone after the first few new chunks).
                let stored = self.chunks.entry(doc).or_insert_with(|| Stored {
                    chunks: Vec::new(),
                    incremental_bytes: l.sizes.incremental,
                    snapshot_bytes: l.sizes.snapshot,
                });
                // A reload of a stale document keeps what the host already knows (chunks
                // written since the load read the store are not in `l.chunks`).
                let known: HashSet<ChunkKey> = stored.chunks.iter().copied().collect();
                stored
                    .chunks
                    .extend(l.chunks.iter().copied().filter(|k| !known.contains(k)));
                if !quarantine.is_empty() {
                    self.set_aside(doc, &quarantine);
                }
                if let (true, Some(snapshot)) = (wanted, l.snapshot) {
                    if !self.compacting.contains_key(&doc) {
                        self.compacted_from_loads += 1;
                        self.compact(doc, snapshot, l.chunks);
                    }
                }
                let stored_bytes = self
                    .chunks
                    .get(&doc)
                    .map_or(0, |s| s.incremental_bytes + s.snapshot_bytes);
                self.engine.loaded_with(doc, Some(l.doc), &l.gate_records);
                self.engine.set_stored_bytes(doc, stored_bytes as u64);
                Ok(())
            }
            Ok(None) => {
                self.snapshot_on_load.remove(&doc);
                self.chunks.entry(doc).or_default();
                self.engine.loaded(doc, None);
                Ok(())
            }
            Err(e) => {
                self.snapshot_on_load.remove(&doc);
                self.engine.load_failed(doc);
                Err(e)
            }
        }
    }

    /// Reports a commit ticket's result.
    pub fn committed(&mut self, what: Waiting, result: Result<(), StoreError>) {
        match (what, result) {
            (Waiting::Persist(id), Ok(())) => {
                let doc = self.engine.persist_doc(id);
                self.engine.persisted(id);
                if let Some(doc) = doc {
                    self.maybe_compact(doc);
                }
            }
            (Waiting::Persist(id), Err(e)) => {
                tracing::error!(error = %e, "store write failed; dropping the document from memory");
                self.engine.persist_failed(id);
            }
            (Waiting::Compaction(doc, replaced), Ok(())) => {
                self.compacting.remove(&doc);
                tracing::debug!(%doc, replaced, "compacted");
            }
            (Waiting::Quarantine(doc), result) => {
                // Failed, the chunks stay where they were and are set aside at the next load.
                if let Err(e) = result {
                    tracing::warn!(%doc, error = %e, "setting unparsable chunks aside failed");
                }
            }
            (Waiting::Compaction(doc, _), Err(e)) => {
                // The old chunks are still there (the batch was atomic); try again later.
                tracing::warn!(%doc, error = %e, "compaction failed");
                self.compacting.remove(&doc);
            }
        }
    }

    /// Replaces a document's chunks by one snapshot when enough have accumulated.
    ///
    /// Called when a write is durable and when received changes were folded. The snapshot is
    /// the engine's document as it stands, which holds every change of every chunk recorded so
    /// far provided no received change waits to be folded: local changes and sync-path changes
    /// enter the document at once, fast-path changes when folded. Chunks whose writes are still
    /// in flight may be replaced too: the compaction batch is submitted after them and the
    /// group-commit writer applies batches in order.
    ///
    /// A document with received changes still pending waits for a moment without any, except
    /// a stale one past `compact_max_chunks`: its compaction snapshots what a reload reads
    /// from the store, which pending changes do not affect, and a document written to
    /// without pause would otherwise never compact and grow without bound.
    fn maybe_compact(&mut self, doc: DocId) {
        if self.compacting.contains_key(&doc) {
            return;
        }
        let Some(stored) = self.chunks.get(&doc) else {
            return;
        };
        let n = stored.chunks.len();
        let over_bound = n >= self.cfg.compact_max_chunks;
        let due = over_bound
            || (n >= self.cfg.compact_after_chunks
                && stored.incremental_bytes >= stored.snapshot_bytes * self.cfg.compact_growth);
        if !due {
            return;
        }
        let stale = self.engine.is_stale(doc);
        if self.engine.has_pending(doc) && !(stale && over_bound) {
            return;
        }
        if stale {
            // Reloaded from the store, and saved by the load ([`load_for_compaction`], when
            // the driver honours `wants_snapshot`) or else by the fold after it, which
            // reports `Folded` and so comes back here.
            self.snapshot_on_load.insert(doc);
            self.engine.materialize(doc);
            return;
        }
        let Some(snapshot) = self.engine.snapshot(doc) else {
            return;
        };
        // Every recorded chunk is in the snapshot: take them all.
        let replaces = self
            .chunks
            .get_mut(&doc)
            .map(|s| std::mem::take(&mut s.chunks))
            .unwrap_or_default();
        self.compact(doc, snapshot, replaces);
    }

    /// Writes `snapshot` in place of the chunks `replaces`, which must hold no change the
    /// snapshot lacks (see [`docs::compact`]); chunks the host knows beyond them stay.
    fn compact(&mut self, doc: DocId, snapshot: Vec<u8>, replaces: Vec<ChunkKey>) {
        let stored = self.chunks.entry(doc).or_default();
        if !stored.chunks.is_empty() {
            let replaced: HashSet<ChunkKey> = replaces.iter().copied().collect();
            stored.chunks.retain(|k| !replaced.contains(k));
        }
        // Chunks that stay were written after the snapshot's source was read: a few at most.
        stored.incremental_bytes = 0;
        stored.snapshot_bytes = snapshot.len();
        // What stays: the snapshot and the chunks written after its source was read.
        self.engine.set_stored_bytes(
            doc,
            (stored.snapshot_bytes + stored.incremental_bytes) as u64,
        );
        let mut batch = WriteBatch::new();
        let key = docs::compact(&mut batch, doc, snapshot, &replaces);
        stored.chunks.push(key);
        self.compacting.insert(doc, replaces.len());
        let ticket = self.group.submit(batch);
        self.actions.push_back(Action::Wait {
            what: Waiting::Compaction(doc, replaces.len()),
            ticket,
        });
    }

    /// Moves chunks a load found unparsable out of the document's way, keeping what could be
    /// salvaged from them as a new chunk (already in the loaded document).
    fn set_aside(&mut self, doc: DocId, quarantine: &[docs::Quarantine]) {
        let mut batch = WriteBatch::new();
        let stored = self.chunks.entry(doc).or_default();
        for q in quarantine {
            stored.chunks.retain(|k| *k != q.key);
            if let Some(key) = docs::quarantine(&mut batch, doc, q) {
                stored.chunks.push(key);
            }
        }
        self.quarantined += quarantine.len() as u64;
        let ticket = self.group.submit(batch);
        self.actions.push_back(Action::Wait {
            what: Waiting::Quarantine(doc),
            ticket,
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineConfig, OpenOptions};
    use crate::store::MemStore;
    use automerge::transaction::Transactable;
    use automerge::ROOT;

    /// Runs every action synchronously.
    fn settle(host: &mut Host) -> Vec<Action> {
        let mut other = Vec::new();
        while let Some(a) = host.poll_action() {
            match a {
                Action::Wait { what, ticket } => host.committed(what, ticket.wait()),
                Action::Load { doc } => {
                    let r = load(host.store().as_ref(), doc);
                    host.loaded(doc, r).unwrap();
                }
                a => other.push(a),
            }
        }
        other
    }

    #[test]
    fn a_document_with_a_garbage_chunk_loads_and_the_garbage_is_set_aside() {
        let kv = Arc::new(MemStore::new());
        let group = Arc::new(GroupCommit::new(kv.clone()).unwrap());
        let doc = DocId::from_bytes([6; 16]);
        let mut host = Host::new(
            Engine::new(EngineConfig::relay()),
            group.clone(),
            HostConfig::default(),
        );
        host.engine().load(doc);
        settle(&mut host);
        host.engine()
            .change(doc, |am| {
                let mut tx = am.transaction();
                tx.put(ROOT, "title", "kept").unwrap();
                tx.commit();
            })
            .unwrap();
        settle(&mut host);
        let heads = host.engine().heads(doc).unwrap();
        // What an older relay stored from a member's sync message.
        let garbage: Vec<u8> = (0..37u8)
            .map(|i| i.wrapping_mul(29).wrapping_add(3))
            .collect();
        let mut batch = WriteBatch::new();
        docs::put_chunk(&mut batch, doc, ChunkKind::Incremental, garbage);
        kv.write(&batch).unwrap();

        let mut fresh = Host::new(
            Engine::new(EngineConfig::relay()),
            group.clone(),
            HostConfig::default(),
        );
        fresh.engine().load(doc);
        settle(&mut fresh);
        assert_eq!(fresh.engine().heads(doc).unwrap(), heads);
        assert_eq!(fresh.quarantined(), 1);
        // Set aside for good: the next load finds nothing to heal.
        let again = load(kv.as_ref(), doc).unwrap().unwrap();
        assert!(again.quarantine.is_empty());
        assert_eq!(again.doc.heads(), heads);
    }

    #[test]
    fn writes_are_durable_and_compacted_without_losing_anything() {
        let kv = Arc::new(MemStore::new());
        let group = Arc::new(GroupCommit::new(kv.clone()).unwrap());
        let doc = DocId::from_bytes([5; 16]);
        let mut host = Host::new(
            Engine::new(EngineConfig::device()),
            group.clone(),
            HostConfig {
                compact_after_chunks: 10,
                compact_growth: 0,
                ..HostConfig::default()
            },
        );
        host.engine().load(doc);
        settle(&mut host);
        for i in 0..35 {
            host.engine()
                .change(doc, |am| {
                    let mut tx = am.transaction();
                    tx.put(ROOT, format!("k{i}"), i).unwrap();
                    tx.commit();
                })
                .unwrap();
            settle(&mut host);
        }
        assert!(
            host.chunk_count(doc) < 10,
            "compaction never ran: {} chunks",
            host.chunk_count(doc)
        );
        let heads = host.engine().heads(doc).unwrap();
        // A fresh host on the same store sees every write.
        let reloaded = load(kv.as_ref(), doc).unwrap().unwrap();
        assert_eq!(reloaded.doc.heads(), heads);
        assert_eq!(reloaded.chunks.len(), host.chunk_count(doc));
        let _ = OpenOptions::default();
    }

    /// Runs the relay's actions; its sends are returned. With `hold`, writes are left in
    /// flight in `held` instead of completing.
    fn drive(
        relay: &mut Host,
        held: &mut Vec<(Waiting, CommitTicket)>,
        hold: bool,
        snapshots_from_loads: &mut usize,
    ) -> Vec<Message> {
        let mut sends = Vec::new();
        while let Some(a) = relay.poll_action() {
            match a {
                Action::Wait {
                    what: what @ Waiting::Persist(_),
                    ticket,
                } if hold => held.push((what, ticket)),
                Action::Wait { what, ticket } => relay.committed(what, ticket.wait()),
                Action::Load { doc } => {
                    let r = if relay.wants_snapshot(doc) {
                        *snapshots_from_loads += 1;
                        load_for_compaction(relay.store().as_ref(), doc)
                    } else {
                        load(relay.store().as_ref(), doc)
                    };
                    relay.loaded(doc, r).unwrap();
                }
                Action::Send { msg, .. } => sends.push(msg),
                _ => {}
            }
        }
        sends
    }

    /// A device writes 300 changes to a relay (lazy folding) over the fast path, one at a
    /// time. With `no_pause`, the relay's writes complete only once the device's next change
    /// has arrived, so a received change is always pending when a write completes: a
    /// document written to without pause. Returns the relay, the device, the relay's store, how
    /// many loads asked for a snapshot and the most chunks the document had after a change.
    fn stale_relay_run(
        cfg: HostConfig,
        no_pause: bool,
    ) -> (Host, Engine, Arc<MemStore>, usize, usize) {
        let kv = Arc::new(MemStore::new());
        let group = Arc::new(GroupCommit::new(kv.clone()).unwrap());
        let doc = DocId::from_bytes([6; 16]);
        let mut relay = Host::new(
            Engine::new(EngineConfig {
                fold_batch: 4,
                ..EngineConfig::relay()
            }),
            group.clone(),
            cfg,
        );
        let mut snapshots = 0;
        let mut most_chunks = 0;
        let mut held = Vec::new();
        relay.engine().load(doc);
        drive(&mut relay, &mut held, false, &mut snapshots);
        let mut device = Engine::new(EngineConfig::device());
        device.create(doc, Document::new());
        device.open(ConnId(1), doc, OpenOptions::default());
        relay.engine().open(ConnId(1), doc, OpenOptions::default());
        for i in 0..300 {
            device
                .change(doc, |am| {
                    let mut tx = am.transaction();
                    tx.put(ROOT, format!("k{i}"), i).unwrap();
                    tx.commit();
                })
                .unwrap();
            // The first changes bring the peer live and the document stale (the fast path).
            let hold = no_pause && i >= 20;
            // Exchange until both are quiet.
            for _ in 0..20 {
                let mut to_relay = Vec::new();
                while let Some(o) = device.poll_output() {
                    match o {
                        Output::Send { msg, .. } => to_relay.push(msg),
                        Output::Persist { id, .. } => device.persisted(id),
                        _ => {}
                    }
                }
                let changes = to_relay
                    .iter()
                    .any(|m| matches!(m, Message::Changes { .. }));
                for m in to_relay.drain(..) {
                    relay.engine().handle(ConnId(1), m).unwrap();
                }
                // Writes submitted before a change that is now pending complete only now.
                let older = if changes || !hold {
                    std::mem::take(&mut held)
                } else {
                    Vec::new()
                };
                let mut to_device = drive(&mut relay, &mut held, hold, &mut snapshots);
                for (what, ticket) in older {
                    relay.committed(what, ticket.wait());
                }
                to_device.extend(drive(&mut relay, &mut held, hold, &mut snapshots));
                if to_device.is_empty() && device.poll_output().is_none() {
                    break;
                }
                for m in to_device {
                    device.handle(ConnId(1), m).unwrap();
                }
            }
            most_chunks = most_chunks.max(relay.chunk_count(doc));
        }
        // The last writes complete.
        while !held.is_empty() {
            for (what, ticket) in std::mem::take(&mut held) {
                relay.committed(what, ticket.wait());
            }
            drive(&mut relay, &mut held, false, &mut snapshots);
        }
        (relay, device, kv, snapshots, most_chunks)
    }

    /// A relay (lazy folding) compacts a stale document from the reload itself: the load
    /// brings the snapshot ([`load_for_compaction`]), and nothing is lost.
    #[test]
    fn a_stale_document_is_compacted_from_its_reload() {
        let doc = DocId::from_bytes([6; 16]);
        let (mut relay, device, kv, snapshots_from_loads, _) = stale_relay_run(
            HostConfig {
                compact_after_chunks: 16,
                ..HostConfig::default()
            },
            false,
        );
        assert!(relay.engine().is_stale(doc), "the fast path left it stale");
        assert!(
            snapshots_from_loads > 0,
            "no reload was asked for a snapshot"
        );
        assert!(
            relay.compacted_from_loads() > 0,
            "no compaction used a reload's snapshot"
        );
        assert!(
            relay.chunk_count(doc) < 64,
            "{} chunks: compaction is not keeping up",
            relay.chunk_count(doc)
        );
        // Everything the device wrote is in the store.
        let stored = load(kv.as_ref(), doc).unwrap().unwrap();
        assert_eq!(stored.doc.heads(), device.heads(doc).unwrap());
        assert_eq!(stored.chunks.len(), relay.chunk_count(doc));
    }

    /// A stale document whose received changes never stop being pending (a write always in
    /// flight) waits for no quiet moment once it reaches `compact_max_chunks`, and loses
    /// nothing.
    #[test]
    fn a_stale_document_written_without_pause_is_compacted_at_its_bound() {
        let doc = DocId::from_bytes([6; 16]);
        let (relay, device, kv, _, most_chunks) = stale_relay_run(
            HostConfig {
                compact_after_chunks: 16,
                compact_max_chunks: 48,
                ..HostConfig::default()
            },
            true,
        );
        // Without the exception for the bound, the document reached 286 chunks here.
        assert!(
            most_chunks <= 48,
            "{most_chunks} chunks: past the bound of 48"
        );
        assert!(
            relay.compacted_from_loads() > 2,
            "compaction did not keep up"
        );
        let stored = load(kv.as_ref(), doc).unwrap().unwrap();
        assert_eq!(stored.doc.heads(), device.heads(doc).unwrap());
        assert_eq!(stored.chunks.len(), relay.chunk_count(doc));
    }

    /// After a restart the compaction policy starts from the stored sizes: a document with a
    /// snapshot is not compacted again after the first `compact_after_chunks` new chunks
    /// unless they outgrow the snapshot.
    #[test]
    fn a_reopened_document_keeps_its_compaction_policy() {
        let kv = Arc::new(MemStore::new());
        let doc = DocId::from_bytes([7; 16]);
        let cfg = HostConfig {
            compact_after_chunks: 10,
            compact_growth: 4,
            ..HostConfig::default()
        };
        let write = |host: &mut Host, i: usize| {
            host.engine()
                .change(doc, |am| {
                    let mut tx = am.transaction();
                    // A long value that does not compress, so that the snapshot outweighs
                    // a few small changes.
                    let mut x: u32 = 1;
                    let value: String = (0..if i == 0 { 4000 } else { 1 })
                        .map(|_| {
                            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                            char::from(b'a' + (x >> 16) as u8 % 26)
                        })
                        .collect();
                    tx.put(ROOT, format!("k{i}"), value).unwrap();
                    tx.commit();
                })
                .unwrap();
            settle(host);
        };
        {
            let group = Arc::new(GroupCommit::new(kv.clone()).unwrap());
            let mut host = Host::new(Engine::new(EngineConfig::device()), group, cfg.clone());
            host.engine().load(doc);
            settle(&mut host);
            for i in 0..12 {
                write(&mut host, i);
            }
            assert_eq!(host.chunk_count(doc), 3, "compacted once, two chunks after");
        }
        // A new host on the same store: 12 more small chunks are far less than 4x the snapshot.
        let group = Arc::new(GroupCommit::new(kv.clone()).unwrap());
        let mut host = Host::new(Engine::new(EngineConfig::device()), group, cfg);
        host.engine().load(doc);
        settle(&mut host);
        for i in 12..24 {
            write(&mut host, i);
        }
        assert_eq!(
            host.chunk_count(doc),
            15,
            "no compaction: the snapshot is large"
        );
        let stored = load(kv.as_ref(), doc).unwrap().unwrap();
        assert_eq!(stored.doc.heads(), host.engine().heads(doc).unwrap());
    }
}
