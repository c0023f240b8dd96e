//! The sans-IO sync engine: one state machine that devices and the relay both drive.
//!
//! The engine holds loaded documents and, per (connection, document), the state of syncing that
//! document with that peer. It never touches a socket, a disk or a clock: drivers feed it inputs
//! (`open`, `handle`, `change`, `persisted`, `tick(now)`) and drain [`Output`]s (messages to
//! send, bytes to persist, documents to load, events), then ask [`Engine::next_wakeup`] when to
//! call `tick` next.
//!
//! # Per-peer protocol
//!
//! A peer starts in *sync mode*: both sides run Automerge sync rounds (`Sync` messages) until
//! each knows the other's heads equal its own. The peer is then *live*: every new change that
//! becomes durable here is sent to it as a `Changes` message holding the raw change bytes (the
//! same bytes for every live peer), and it answers with an `Ack` of its heads once the changes
//! are durable there. Anything unexpected (a change whose dependencies are unknown, an `Ack`
//! naming unknown heads, no progress within `retry_after`) drops that peer back to sync mode with
//! a reset, which Automerge's protocol makes lossless. Sync state is kept per peer and, for peers
//! with a stable id, persisted in its `encode()`d form (only the shared heads) when the peer
//! becomes synced (at most once per [`EngineConfig::sync_state_every`]) and when it
//! disconnects, so a reconnect exchanges only what is new.
//!
//! # Durability
//!
//! Architecture invariant: a change leaves a node (forwarded, acknowledged, or offered in a sync
//! message) only after the node's driver has reported it durable with [`Engine::persisted`].
//! Persist requests complete in order per document.
//!
//! # Batching
//!
//! Received changes are not applied to the Automerge document one by one: they are checked,
//! persisted and forwarded as raw bytes, and *folded* into the document in batches (when
//! `fold_batch` are pending, after `fold_delay`, or when something needs the materialized
//! document: a sync round, a local change, a read). With [`EngineConfig::lazy_fold`] (the
//! relay) a document whose peers are all live is not folded at all: durable received changes
//! leave memory and the document goes *stale* (exact heads, an in-memory document lacking only
//! stored changes) until something needs it materialized, which reloads it from the store.
//!
//! # Layout
//!
//! This file holds what the engine holds, from the [`Engine`] down to a document's slot and
//! state, a peer's state per document and a write in flight, with the small public inputs and
//! queries. What acts on each part has a file of its own:
//!
//! - `docs.rs`: a document's slot: loading, loaded, failed, created, forgotten, evicted.
//! - `fold.rs`: received changes waiting in memory: folding, lazy folding, the reload.
//! - `peer.rs`: a peer's state per document: sync rounds, the fast path, resync.
//! - `persist.rs`: persist requests and their completion.
//! - `whole.rs`: the whole document for a peer that holds none of it, made off the driver's
//!   thread when large.
//! - `timers.rs`: `tick`, `next_wakeup` and the timer index.
//! - `inbound.rs` checks a peer's message; `receive.rs` routes it and runs the fast path;
//!   `sync_path.rs` the sync path.
//! - `gate.rs` the [`Gate`]; `types.rs` the public inputs, outputs, config and errors.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::hash::{HashMap, HashSet};

use automerge::sync;
use automerge::{Change, ChangeHash};
use bytes::Bytes;

use crate::doc::Document;
use crate::wire::Message;
use crate::DocId;

mod docs;
mod due;
mod fold;
mod gate;
mod inbound;
mod peer;
mod persist;
mod receive;
mod stall;
mod sync_path;
mod timers;
mod types;
mod whole;
use due::DuePump;
pub use gate::{Accepted, Gate};
pub use inbound::{check_message, Inbound};
pub use types::*;
pub use whole::{WholeJob, WholeMade};

/// The sync engine. See the module docs.
pub struct Engine {
    cfg: EngineConfig,
    now: Millis,
    docs: HashMap<DocId, Slot>,
    conns: HashMap<ConnId, HashSet<DocId>>,
    persist_doc: HashMap<PersistId, DocId>,
    next_persist: u64,
    out: VecDeque<Output>,
    /// Pumps a completed write (or a change sent ahead of its write) asked for, run one at a
    /// time as the driver polls (see [`Engine::poll_output`]) and all at once before the next
    /// input.
    due_pumps: VecDeque<DuePump>,
    /// A due pump is running (see [`Engine::run_due_pumps`]).
    in_due_pump: bool,
    /// Connections that never go live (see [`Engine::set_sync_only`]).
    sync_only: HashSet<ConnId>,
    /// The timer index: when each document's timers next fall due (`deadlines`), the same
    /// ordered by time (`timers`), and the documents whose deadline may have moved since the
    /// index was brought up to date (`touched`). Invariant: after [`Engine::refresh_timers`],
    /// `timers` holds `(doc_deadline(d), d)` for exactly the documents that have one, so
    /// `next_wakeup` and `tick` cost O(due documents), not O(loaded documents).
    touched: HashSet<DocId>,
    deadlines: HashMap<DocId, Millis>,
    timers: BTreeSet<(Millis, DocId)>,
    /// Decides which of a peer's changes a document takes (see [`Gate`]).
    gate: Option<Box<dyn Gate>>,
}

/// A document in memory: loading (inputs for it wait, bounded) or ready.
enum Slot {
    Loading(Vec<Queued>),
    Ready(Box<DocState>),
}

/// An input that waits for its document to load.
enum Queued {
    Open(ConnId, OpenOptions),
    Msg(ConnId, Inbound),
}

/// Messages kept per document while it loads.
const MAX_QUEUED_WHILE_LOADING: usize = 1024;

/// A loaded document: its Automerge document, the received changes not yet folded into it,
/// its peers and its writes in flight.
struct DocState {
    doc: Document,
    /// Received changes not yet folded into `doc`, in causal order.
    pending: Vec<Change>,
    pending_hashes: HashSet<ChangeHash>,
    pending_since: Option<Millis>,
    /// Heads including `pending`, sorted.
    heads: Vec<ChangeHash>,
    /// Heads that are durable, sorted.
    durable_heads: Vec<ChangeHash>,
    persists: VecDeque<PendingPersist>,
    peers: BTreeMap<ConnId, PeerDoc>,
    last_used: Millis,
    /// Lazy folding (see [`EngineConfig::lazy_fold`]): `doc` lacks durable received changes
    /// that were dropped from memory instead of folded; `heads` stays exact.
    stale: bool,
    /// Hashes of changes dropped from memory while stale (bounded), so `knows` still answers
    /// for the recent history a peer's next change or ack names.
    recent: HashSet<ChangeHash>,
    /// A reload from the store is in flight to materialize a stale document.
    reloading: bool,
    /// Inputs that need the materialized document, waiting for the reload (bounded).
    deferred: Vec<Deferred>,
    /// A reload is wanted but waits until received changes too large to apply here are
    /// durable and out of memory (see [`EngineConfig::inline_apply_ops`]).
    reload_wanted: bool,
    /// Bytes the document takes in the store: as loaded (told by the driver, see
    /// [`Engine::set_stored_bytes`]) plus every change written since. Checked against
    /// [`EngineConfig::max_doc_bytes`] before a peer's changes are accepted.
    stored_bytes: u64,
    /// The sync message that sends the whole document to a peer holding none of it, made
    /// once for every such peer at these heads (see `peer.rs`); dropped once every peer is
    /// live, unless large (kept while the document stays loaded, replaced at new heads).
    whole: Option<WholeMessage>,
    /// A [`WholeJob`] for this document is with the driver (see `whole.rs`).
    whole_building: bool,
}

/// An encoded sync message carrying the whole document as one snapshot.
struct WholeMessage {
    heads: Vec<ChangeHash>,
    read_only: bool,
    /// Shared by every peer sent it: each `Message::Sync` holds a clone of this buffer, not a
    /// copy, so a crowd joining at one heads costs one snapshot.
    data: Bytes,
}

/// An input deferred until a stale document is reloaded.
enum Deferred {
    Msg(ConnId, Inbound),
    /// A sync message whose changes were stored without being applied (too many operations
    /// to apply on the driver's thread): the rest of it runs once the reload brings them.
    SyncAfterReload(ConnId, bool, Box<sync::Message>),
    Pump(ConnId),
}

/// Most hashes `DocState::recent` keeps; past it the set starts afresh (an older hash named by
/// a peer then costs a resync, which reloads the document).
const MAX_RECENT: usize = 8192;

/// A peer's state for one document: its sync state, its mode (sync or live) and progress.
struct PeerDoc {
    sync: sync::State,
    opts: OpenOptions,
    /// Everything we have was sent to the peer on a stream it had our earlier heads on.
    live: bool,
    /// The next `Sync` we send tells the peer to reset its state too.
    send_reset: bool,
    /// The peer's heads as last confirmed (sync message or ack).
    their_heads: Option<Vec<ChangeHash>>,
    /// Whether we reported `Synced` for the current heads.
    reported_synced: bool,
    /// Last time the peer made progress (or we started waiting).
    last_progress: Millis,
    /// A sync exchange happened since the state was last persisted.
    save_state: bool,
    /// When its sync state was last persisted (see [`EngineConfig::sync_state_every`]).
    state_saved_at: Option<Millis>,
    /// Consecutive sync messages that changed nothing on either side.
    stalls: u32,
    /// Since when the peer's heads (as last told) have named changes we lack.
    lacking_since: Option<Millis>,
    /// When an ack naming changes we lack last made us resync (see `Engine::on_ack`).
    ack_resynced_at: Option<Millis>,
    /// Resyncs for a stall since `lacking_since` (see `Engine::stalled`).
    withheld_resyncs: u32,
    /// Our heads when a sync-only peer whose heads we all hold was resynced, until it next
    /// sends anything (see `Engine::stalled`).
    unanswered: Option<Vec<ChangeHash>>,
    /// `Output::Unaccepted` was reported for this peer.
    reported_unaccepted: bool,
    /// The whole document was sent to this peer, which held none of it, and it has not told
    /// us its heads since: its messages sent before it got the document say it holds nothing,
    /// and must not make us send the document again.
    whole_sent: bool,
    /// The peer waits for the whole document from a [`WholeJob`] in flight.
    whole_waiting: bool,
    /// An answer to the peer waits for what it announces to be durable (see
    /// `sync_path::receive_round`).
    answer_held: bool,
}

/// A write of the document in flight, until the driver reports it durable.
struct PendingPersist {
    id: PersistId,
    done: bool,
    /// Heads once this write is durable.
    heads_after: Vec<ChangeHash>,
    effect: PersistEffect,
    /// Received changes this write stores that wait in `pending` (fast path).
    pending: Vec<ChangeHash>,
}

/// What a write does once it and every write before it are durable.
enum PersistEffect {
    /// New changes to announce once durable.
    Changes {
        origin: Origin,
        raw: Vec<Bytes>,
        via_fast_path: bool,
    },
    /// Nothing to do on completion.
    None,
}

impl Engine {
    /// A new engine with no documents or connections.
    pub fn new(cfg: EngineConfig) -> Self {
        Engine {
            cfg,
            now: 0,
            docs: HashMap::default(),
            conns: HashMap::default(),
            persist_doc: HashMap::default(),
            next_persist: 0,
            out: VecDeque::new(),
            due_pumps: VecDeque::new(),
            in_due_pump: false,
            sync_only: HashSet::default(),
            touched: HashSet::default(),
            deadlines: HashMap::default(),
            timers: BTreeSet::new(),
            gate: None,
        }
    }

    /// Installs the gate that decides which of a peer's changes documents take. Install it
    /// before loading documents: it learns of those already loaded only from their next load.
    pub fn set_gate(&mut self, gate: Box<dyn Gate>) {
        self.gate = Some(gate);
    }

    /// The installed gate, to tell it what it needs (who is behind a connection, ...).
    pub fn gate_mut(&mut self) -> Option<&mut (dyn Gate + 'static)> {
        self.gate.as_deref_mut()
    }

    /// Advances the engine's clock (never backwards).
    pub fn set_now(&mut self, now: Millis) {
        self.now = self.now.max(now);
    }

    /// Registers a connection.
    pub fn add_conn(&mut self, conn: ConnId) {
        self.run_due_pumps();
        self.conns.entry(conn).or_default();
    }

    /// Keeps every document of `conn` in sync mode: it is sent `Sync` messages only, never the
    /// `Changes`/`Ack` fast path. For peers that speak only Automerge's sync protocol (the
    /// relay's WebSocket clients). Call it before opening documents for `conn`.
    pub fn set_sync_only(&mut self, conn: ConnId) {
        self.run_due_pumps();
        self.sync_only.insert(conn);
    }

    /// Forgets a connection: every document it had open is closed for it, and stable peers'
    /// sync states are persisted in their reconnect form.
    pub fn remove_conn(&mut self, conn: ConnId) {
        self.run_due_pumps();
        self.sync_only.remove(&conn);
        let Some(docs) = self.conns.remove(&conn) else {
            return;
        };
        for doc in docs {
            self.close_peer(doc, conn);
        }
    }

    /// Stops syncing `doc` with `conn`.
    pub fn close(&mut self, conn: ConnId, doc: DocId) {
        self.run_due_pumps();
        if let Some(docs) = self.conns.get_mut(&conn) {
            docs.remove(&doc);
        }
        self.close_peer(doc, conn);
    }

    fn gate_closed(&mut self, doc: DocId) {
        if let Some(g) = self.gate.as_mut() {
            g.closed(doc);
        }
    }

    /// Gives back the memory that documents which left (evicted, forgotten) and closed
    /// connections held in the engine's maps and its gate's: a map keeps the capacity of its
    /// fullest moment otherwise. For a driver's housekeeping (O(loaded documents) when a map
    /// shrinks), never per input.
    pub fn shrink(&mut self) {
        self.run_due_pumps();
        crate::hash::shrink_if_sparse(&mut self.docs);
        crate::hash::shrink_if_sparse(&mut self.conns);
        crate::hash::shrink_if_sparse(&mut self.persist_doc);
        crate::hash::shrink_if_sparse(&mut self.deadlines);
        crate::hash::shrink_set_if_sparse(&mut self.touched);
        if let Some(g) = self.gate.as_mut() {
            g.shrink();
        }
    }

    /// Whether a document is loaded and ready.
    pub fn is_loaded(&self, doc: DocId) -> bool {
        matches!(self.docs.get(&doc), Some(Slot::Ready(_)))
    }

    /// The document a persist request belongs to, while it is in flight.
    pub fn persist_doc(&self, id: PersistId) -> Option<DocId> {
        self.persist_doc.get(&id).copied()
    }

    /// Handles a document message (`Sync`, `Changes` or `Ack`) from `conn`: checks its changes
    /// ([`check_message`]), then [`Engine::handle_inbound`].
    ///
    /// An `Err` means the peer misbehaved for this document; the driver should close it.
    pub fn handle(&mut self, conn: ConnId, msg: Message) -> Result<(), EngineError> {
        let inbound = check_message(msg, &self.cfg.limits)?;
        self.handle_inbound(conn, inbound)
    }

    /// Makes a local change: runs `f` on the document, then persists and sends the new changes.
    /// Returns `f`'s result and the persist request the write is durable with (`None` when `f`
    /// changed nothing).
    pub fn change<R>(
        &mut self,
        doc: DocId,
        f: impl FnOnce(&mut automerge::Automerge) -> R,
    ) -> Result<(R, Option<PersistId>), EngineError> {
        self.run_due_pumps();
        let ds = self.ready_folded(doc)?;
        let before = ds.doc.automerge().get_heads();
        let r = f(ds.doc.automerge_mut());
        let new = ds.doc.changes_since(&before);
        if new.is_empty() {
            return Ok((r, None));
        }
        ds.heads = ds.doc.heads();
        let raw: Vec<Bytes> = new.iter().map(|c| raw_of(c, None)).collect();
        if let Some(g) = self.gate.as_mut() {
            for c in &new {
                g.observe(doc, c, None);
            }
        }
        let id = self.persist_changes(doc, Origin::Local, raw, false);
        Ok((r, Some(id)))
    }

    /// Reads the document (after folding pending changes).
    pub fn read<R>(
        &mut self,
        doc: DocId,
        f: impl FnOnce(&Document) -> R,
    ) -> Result<R, EngineError> {
        self.run_due_pumps();
        let ds = self.ready_folded(doc)?;
        Ok(f(&ds.doc))
    }

    /// The document saved as an Automerge snapshot as it stands, *without* folding pending
    /// changes first: it holds every change folded so far (reported by [`Output::Folded`]).
    /// `None` when the document is not loaded or Automerge holds changes back for missing
    /// dependencies (a snapshot would leave them out).
    pub fn snapshot(&self, doc: DocId) -> Option<Vec<u8>> {
        match self.docs.get(&doc) {
            Some(Slot::Ready(ds)) if !ds.stale && !ds.doc.has_queued_changes() => {
                Some(ds.doc.save())
            }
            _ => None,
        }
    }

    /// A copy of the document as it stands, under the conditions of [`Self::snapshot`]: for a
    /// driver that saves it elsewhere (a copy costs a few percent of a save).
    pub fn copy(&self, doc: DocId) -> Option<Box<Document>> {
        match self.docs.get(&doc) {
            Some(Slot::Ready(ds)) if !ds.stale && !ds.doc.has_queued_changes() => {
                Some(Box::new(ds.doc.clone()))
            }
            _ => None,
        }
    }

    /// Whether received changes wait to be folded into the document (so a [`Self::snapshot`]
    /// would leave them out).
    pub fn has_pending(&self, doc: DocId) -> bool {
        matches!(self.docs.get(&doc), Some(Slot::Ready(ds)) if !ds.pending.is_empty())
    }

    /// The document's heads, including received changes not yet folded.
    pub fn heads(&self, doc: DocId) -> Option<Vec<ChangeHash>> {
        match self.docs.get(&doc) {
            Some(Slot::Ready(ds)) => Some(ds.heads.clone()),
            _ => None,
        }
    }

    /// Tells the engine how many bytes `doc` takes in the store (after a load or a
    /// compaction); the engine adds every change it writes from then on.
    pub fn set_stored_bytes(&mut self, doc: DocId, bytes: u64) {
        self.run_due_pumps();
        if let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) {
            ds.stored_bytes = bytes;
        }
    }

    /// Bytes `doc` takes in the store as far as the engine knows (see
    /// [`Engine::set_stored_bytes`]).
    pub fn stored_bytes(&self, doc: DocId) -> Option<u64> {
        match self.docs.get(&doc) {
            Some(Slot::Ready(ds)) => Some(ds.stored_bytes),
            _ => None,
        }
    }

    /// Number of documents in memory.
    pub fn loaded_docs(&self) -> usize {
        self.docs.len()
    }

    /// Stored bytes of every loaded document (see [`Engine::set_stored_bytes`]): what a
    /// driver's memory budget for loaded documents counts. O(loaded documents).
    pub fn loaded_bytes(&self) -> u64 {
        self.docs
            .values()
            .map(|slot| match slot {
                Slot::Ready(ds) => ds.stored_bytes,
                Slot::Loading(_) => 0,
            })
            .sum()
    }

    /// The persist requests not yet reported durable, for a document.
    pub fn persists_in_flight(&self, doc: DocId) -> usize {
        match self.docs.get(&doc) {
            Some(Slot::Ready(ds)) => ds.persists.len(),
            _ => 0,
        }
    }
}

/// A change's bytes: `received` when they are exactly its canonical bytes (sharing the
/// buffer), else a copy of them.
fn raw_of(change: &Change, received: Option<Bytes>) -> Bytes {
    match received {
        Some(b) if b[..] == *change.raw_bytes() => b,
        _ => Bytes::copy_from_slice(change.raw_bytes()),
    }
}

#[cfg(test)]
mod tests;
