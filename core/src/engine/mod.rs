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
//! becomes synced and when it disconnects, so a reconnect exchanges only what is new.
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

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::hash::{HashMap, HashSet};

use automerge::sync::{self, SyncDoc};
use automerge::{Change, ChangeHash};
use bytes::Bytes;

use crate::doc::{DocError, Document};
use crate::wire::Message;
use crate::DocId;

mod gate;
mod receive;
mod types;
pub use gate::{Accepted, Gate};
pub use receive::{check_message, Inbound};
pub use types::*;

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
    /// Consecutive sync messages that changed nothing on either side.
    stalls: u32,
    /// `Output::Unaccepted` was reported for this peer.
    reported_unaccepted: bool,
}

/// Messages kept per document while it loads.
const MAX_QUEUED_WHILE_LOADING: usize = 1024;

/// Sync rounds that change nothing before the exchange is restarted from a fresh state.
/// Automerge's protocol assumes reliable delivery: after a loss, a sender may keep withholding a
/// change it believes it sent while the receiver keeps asking, forever.
const MAX_STALLS: u32 = 3;

struct PendingPersist {
    id: PersistId,
    done: bool,
    /// Heads once this write is durable.
    heads_after: Vec<ChangeHash>,
    effect: PersistEffect,
    /// Received changes this write stores that wait in `pending` (fast path).
    pending: Vec<ChangeHash>,
}

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

enum Slot {
    Loading(Vec<Queued>),
    Ready(Box<DocState>),
}

enum Queued {
    Open(ConnId, OpenOptions),
    Msg(ConnId, Inbound),
}

/// The sync engine. See the module docs.
pub struct Engine {
    cfg: EngineConfig,
    now: Millis,
    docs: HashMap<DocId, Slot>,
    conns: HashMap<ConnId, HashSet<DocId>>,
    persist_doc: HashMap<PersistId, DocId>,
    next_persist: u64,
    out: VecDeque<Output>,
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

    /// The next output for the driver, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Advances the engine's clock (never backwards).
    pub fn set_now(&mut self, now: Millis) {
        self.now = self.now.max(now);
    }

    /// Registers a connection.
    pub fn add_conn(&mut self, conn: ConnId) {
        self.conns.entry(conn).or_default();
    }

    /// Keeps every document of `conn` in sync mode: it is sent `Sync` messages only, never the
    /// `Changes`/`Ack` fast path. For peers that speak only Automerge's sync protocol (the
    /// relay's WebSocket clients). Call it before opening documents for `conn`.
    pub fn set_sync_only(&mut self, conn: ConnId) {
        self.sync_only.insert(conn);
    }

    /// Forgets a connection: every document it had open is closed for it, and stable peers'
    /// sync states are persisted in their reconnect form.
    pub fn remove_conn(&mut self, conn: ConnId) {
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
        if let Some(docs) = self.conns.get_mut(&conn) {
            docs.remove(&doc);
        }
        self.close_peer(doc, conn);
    }

    fn close_peer(&mut self, doc: DocId, conn: ConnId) {
        self.touched.insert(doc);
        match self.docs.get_mut(&doc) {
            Some(Slot::Ready(ds)) => {
                ds.deferred.retain(|d| match d {
                    Deferred::Msg(c, _) | Deferred::SyncAfterReload(c, ..) | Deferred::Pump(c) => {
                        *c != conn
                    }
                });
                if let Some(pd) = ds.peers.remove(&conn) {
                    if let Some(peer) = pd.opts.stable_peer.clone() {
                        let state = pd.sync.encode();
                        self.persist_write(
                            doc,
                            Write::SyncState { peer, state },
                            PersistEffect::None,
                        );
                    }
                }
            }
            Some(Slot::Loading(queue)) => queue.retain(|q| match q {
                Queued::Open(c, _) | Queued::Msg(c, _) => *c != conn,
            }),
            None => {}
        }
    }

    fn gate_closed(&mut self, doc: DocId) {
        if let Some(g) = self.gate.as_mut() {
            g.closed(doc);
        }
    }

    /// Whether a document is loaded and ready.
    pub fn is_loaded(&self, doc: DocId) -> bool {
        matches!(self.docs.get(&doc), Some(Slot::Ready(_)))
    }

    /// Asks for a document to be loaded (an `Output::Load` unless it is loaded or loading).
    pub fn load(&mut self, doc: DocId) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.docs.entry(doc) {
            e.insert(Slot::Loading(Vec::new()));
            self.out.push_back(Output::Load { doc });
        }
    }

    /// Hands the engine a document it asked for (`None`: the store has none; it starts empty).
    pub fn loaded(&mut self, doc: DocId, loaded: Option<Document>) {
        self.loaded_with(doc, loaded, &[]);
    }

    /// [`Engine::loaded`], with the records the gate asked to keep for the document (see
    /// [`Accepted`]).
    pub fn loaded_with(
        &mut self,
        doc: DocId,
        loaded: Option<Document>,
        records: &[(Vec<u8>, Vec<u8>)],
    ) {
        self.touched.insert(doc);
        let queue = match self.docs.remove(&doc) {
            Some(Slot::Loading(q)) => q,
            Some(Slot::Ready(mut ds)) => {
                if ds.reloading {
                    match loaded {
                        Some(d) => ds.doc = d,
                        None => {
                            tracing::error!(%doc, "a stale document reloaded empty; keeping what memory has")
                        }
                    }
                    ds.reloading = false;
                    ds.stale = false;
                    ds.recent.clear();
                    let deferred = std::mem::take(&mut ds.deferred);
                    self.docs.insert(doc, Slot::Ready(ds));
                    self.materialized(doc, deferred);
                } else {
                    self.docs.insert(doc, Slot::Ready(ds));
                }
                return;
            }
            None => Vec::new(),
        };
        let d = loaded.unwrap_or_default();
        if let Some(g) = self.gate.as_mut() {
            g.opened(doc, &d, records);
        }
        let heads = d.heads();
        self.docs.insert(
            doc,
            Slot::Ready(Box::new(DocState {
                doc: d,
                pending: Vec::new(),
                pending_hashes: HashSet::default(),
                pending_since: None,
                durable_heads: heads.clone(),
                heads,
                persists: VecDeque::new(),
                peers: BTreeMap::new(),
                last_used: self.now,
                stale: false,
                recent: HashSet::default(),
                reloading: false,
                deferred: Vec::new(),
                reload_wanted: false,
                stored_bytes: 0,
            })),
        );
        for q in queue {
            match q {
                Queued::Open(conn, opts) => self.open(conn, doc, opts),
                Queued::Msg(conn, msg) => {
                    if let Err(error) = self.handle_inbound(conn, msg) {
                        self.out
                            .push_back(Output::ProtocolError { conn, doc, error });
                    }
                }
            }
        }
    }

    /// Reports that a document asked for with `Output::Load` could not be loaded. Connections
    /// waiting on it are reported in `Output::Failed` (the driver tells them); a later `open`
    /// tries again.
    pub fn load_failed(&mut self, doc: DocId) {
        if matches!(self.docs.get(&doc), Some(Slot::Ready(ds)) if ds.reloading) {
            // A stale document that cannot be read back is dropped like a failed write: its
            // peers are closed and the next use loads it afresh.
            self.drop_failed(doc);
            return;
        }
        if let Some(Slot::Loading(queue)) = self.docs.remove(&doc) {
            self.gate_closed(doc);
            let mut conns: Vec<ConnId> = queue
                .iter()
                .map(|q| match q {
                    Queued::Open(c, _) | Queued::Msg(c, _) => *c,
                })
                .collect();
            conns.sort_unstable();
            conns.dedup();
            for c in &conns {
                if let Some(docs) = self.conns.get_mut(c) {
                    docs.remove(&doc);
                }
            }
            self.out.push_back(Output::Failed { doc, conns });
        }
    }

    /// The document a persist request belongs to, while it is in flight.
    pub fn persist_doc(&self, id: PersistId) -> Option<DocId> {
        self.persist_doc.get(&id).copied()
    }

    /// Creates a document in memory (a new local document). Its first change is persisted like
    /// any other.
    pub fn create(&mut self, doc: DocId, d: Document) {
        if self.docs.remove(&doc).is_some() {
            self.gate_closed(doc);
        }
        self.docs.insert(doc, Slot::Loading(Vec::new()));
        self.loaded(doc, Some(d));
    }

    /// Drops `doc` from memory and from every connection, with whatever is queued or in flight
    /// for it: persist requests still in flight complete without effect. For a driver that is
    /// about to replace the document in its store (a device resetting a document to the relay's
    /// version); the next use loads it again.
    pub fn forget(&mut self, doc: DocId) {
        self.touched.insert(doc);
        self.docs.remove(&doc);
        self.gate_closed(doc);
        for docs in self.conns.values_mut() {
            docs.remove(&doc);
        }
        self.persist_doc.retain(|_, d| *d != doc);
    }

    /// Starts syncing `doc` with `conn` (loads the document first if needed).
    pub fn open(&mut self, conn: ConnId, doc: DocId, opts: OpenOptions) {
        self.touched.insert(doc);
        self.add_conn(conn);
        if let Some(docs) = self.conns.get_mut(&conn) {
            docs.insert(doc);
        }
        self.load(doc);
        let now = self.now;
        let ds = match self.docs.get_mut(&doc) {
            Some(Slot::Loading(q)) => {
                q.push(Queued::Open(conn, opts));
                return;
            }
            Some(Slot::Ready(ds)) => ds,
            None => return,
        };
        let mut state = opts
            .saved_sync_state
            .as_deref()
            .and_then(|b| sync::State::decode(b).ok())
            .unwrap_or_default();
        state.read_only = !opts.accept_changes;
        ds.last_used = now;
        ds.peers.insert(
            conn,
            PeerDoc {
                sync: state,
                opts,
                live: false,
                send_reset: false,
                their_heads: None,
                reported_synced: false,
                last_progress: now,
                save_state: false,
                stalls: 0,
                reported_unaccepted: false,
            },
        );
        self.pump(doc, conn);
    }

    /// Handles a document message (`Sync`, `Changes` or `Ack`) from `conn`: checks its changes
    /// ([`check_message`]), then [`Engine::handle_inbound`].
    ///
    /// An `Err` means the peer misbehaved for this document; the driver should close it.
    pub fn handle(&mut self, conn: ConnId, msg: Message) -> Result<(), EngineError> {
        let inbound = check_message(msg, &self.cfg.limits)?;
        self.handle_inbound(conn, inbound)
    }

    /// Handles a document message whose changes were checked already ([`check_message`], with
    /// this engine's [`EngineConfig::limits`]): a driver may check large messages off its
    /// event loop.
    ///
    /// An `Err` means the peer misbehaved for this document; the driver should close it.
    pub fn handle_inbound(&mut self, conn: ConnId, msg: Inbound) -> Result<(), EngineError> {
        let doc = msg.doc();
        self.touched.insert(doc);
        let open = self
            .conns
            .get(&conn)
            .ok_or(EngineError::UnknownConn(conn))?
            .contains(&doc);
        if !open {
            return Err(EngineError::NotOpen { doc });
        }
        if matches!(msg, Inbound::Sync { .. }) {
            self.shed_heavy(doc);
        }
        match self.docs.get_mut(&doc) {
            Some(Slot::Loading(q)) => {
                // Bounded: past the cap a message is dropped, which the protocol repairs (a
                // missing change is asked for again once the document is loaded).
                if q.len() < MAX_QUEUED_WHILE_LOADING {
                    q.push(Queued::Msg(conn, msg));
                }
                return Ok(());
            }
            Some(Slot::Ready(ds)) if ds.stale && matches!(msg, Inbound::Sync { .. }) => {
                // A sync round needs the materialized document.
                if ds.deferred.len() < MAX_QUEUED_WHILE_LOADING {
                    ds.deferred.push(Deferred::Msg(conn, msg));
                }
                self.materialize_for(doc, "sync");
                return Ok(());
            }
            Some(Slot::Ready(_)) => {}
            None => return Err(EngineError::NotOpen { doc }),
        }
        let result = match msg {
            Inbound::Sync {
                reset,
                msg,
                changes,
                ..
            } => self.on_sync(conn, doc, reset, msg, changes),
            Inbound::Changes { changes, .. } => self.on_changes(conn, doc, changes),
            Inbound::Ack { heads, .. } => {
                self.on_ack(conn, doc, heads);
                Ok(())
            }
            Inbound::Refused { error, .. } => {
                self.out.push_back(Output::Rejected {
                    conn,
                    doc,
                    reason: Rejection::Limit(error),
                });
                Ok(())
            }
        };
        self.after_input(doc);
        result
    }

    /// Makes a local change: runs `f` on the document, then persists and sends the new changes.
    /// Returns `f`'s result and the persist request the write is durable with (`None` when `f`
    /// changed nothing).
    pub fn change<R>(
        &mut self,
        doc: DocId,
        f: impl FnOnce(&mut automerge::Automerge) -> R,
    ) -> Result<(R, Option<PersistId>), EngineError> {
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

    /// Whether received changes wait to be folded into the document (so a [`Self::snapshot`]
    /// would leave them out).
    pub fn has_pending(&self, doc: DocId) -> bool {
        matches!(self.docs.get(&doc), Some(Slot::Ready(ds)) if !ds.pending.is_empty())
    }

    /// A loaded document with every pending change folded in, marked used now.
    fn ready_folded(&mut self, doc: DocId) -> Result<&mut DocState, EngineError> {
        let now = self.now;
        self.touched.insert(doc);
        if !self.is_loaded(doc) {
            return Err(EngineError::NotLoaded { doc });
        }
        if !self.materialize(doc) {
            return Err(EngineError::NotLoaded { doc });
        }
        self.fold(doc)?;
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return Err(EngineError::NotLoaded { doc });
        };
        ds.last_used = now;
        Ok(ds)
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

    /// Reports a persist request durable.
    pub fn persisted(&mut self, id: PersistId) {
        let Some(doc) = self.persist_doc.remove(&id) else {
            return;
        };
        self.touched.insert(doc);
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
        };
        if let Some(p) = ds.persists.iter_mut().find(|p| p.id == id) {
            p.done = true;
        }
        // Completions are applied in submission order: a write is announced only when it and
        // everything submitted before it are durable.
        let mut effects = Vec::new();
        let mut durable_pending = Vec::new();
        while ds.persists.front().is_some_and(|p| p.done) {
            let Some(p) = ds.persists.pop_front() else {
                break;
            };
            ds.durable_heads = p.heads_after;
            effects.push(p.effect);
            durable_pending.extend(p.pending);
        }
        if ds.stale && !ds.reloading && !durable_pending.is_empty() {
            // Durable now: the store has them for the reload, memory need not.
            drop_from_memory(ds, &durable_pending.into_iter().collect());
        }
        let reload = ds.stale
            && ds.reload_wanted
            && !ds.reloading
            && pending_ops(ds) < self.cfg.inline_apply_ops;
        let mut origins = Vec::new();
        for effect in effects {
            if let PersistEffect::Changes {
                origin,
                raw,
                via_fast_path,
            } = effect
            {
                if let Origin::Remote(conn) = origin {
                    origins.push(conn);
                }
                self.announce(doc, origin, raw, via_fast_path);
            }
        }
        if reload {
            self.materialize_for(doc, "durable");
        }
        // Peers in sync mode may have something to send now; a sender may now be synced.
        // Other live peers were just sent the changes (`announce`) and stay unsynced until
        // they ack: pumping them would only find that out again, per peer per change.
        let conns: Vec<ConnId> = match self.docs.get(&doc) {
            Some(Slot::Ready(ds)) => ds
                .peers
                .iter()
                .filter(|(c, pd)| !pd.live || origins.contains(c))
                .map(|(c, _)| *c)
                .collect(),
            _ => Vec::new(),
        };
        for conn in conns {
            self.pump(doc, conn);
        }
        self.after_input(doc);
    }

    /// Reports a persist request failed. The document is dropped from memory (it is reloaded
    /// from the store, which lacks the failed write, on next use) and its peers are closed.
    pub fn persist_failed(&mut self, id: PersistId) {
        let Some(doc) = self.persist_doc.remove(&id) else {
            return;
        };
        self.drop_failed(doc);
    }

    /// Drops a ready document after a storage failure: its writes in flight complete without
    /// effect, its peers are reported in `Output::Failed`, and the next use loads it afresh.
    fn drop_failed(&mut self, doc: DocId) {
        self.touched.insert(doc);
        if let Some(Slot::Ready(ds)) = self.docs.remove(&doc) {
            self.gate_closed(doc);
            for p in &ds.persists {
                self.persist_doc.remove(&p.id);
            }
            let conns: Vec<ConnId> = ds.peers.keys().copied().collect();
            for c in &conns {
                if let Some(docs) = self.conns.get_mut(c) {
                    docs.remove(&doc);
                }
            }
            self.out.push_back(Output::Failed { doc, conns });
        }
    }

    /// Runs timers: folds that are due, peers to resync, documents to evict.
    pub fn tick(&mut self, now: Millis) {
        self.set_now(now);
        self.refresh_timers();
        let due: Vec<DocId> = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, d)| *d)
            .collect();
        let mut folds = 0;
        for doc in due {
            self.touched.insert(doc);
            let Some(Slot::Ready(ds)) = self.docs.get(&doc) else {
                continue;
            };
            if ds
                .pending_since
                .is_some_and(|t| t + self.cfg.fold_delay <= now)
                && folds < self.cfg.max_folds_per_tick
                && self.fold_or_drop(doc)
            {
                folds += 1;
            }
            let Some(Slot::Ready(ds)) = self.docs.get(&doc) else {
                continue;
            };
            let stalled: Vec<ConnId> = ds
                .peers
                .iter()
                .filter(|(_, pd)| waiting(ds, pd) && pd.last_progress + self.cfg.retry_after <= now)
                .map(|(c, _)| *c)
                .collect();
            for conn in stalled {
                tracing::debug!(%doc, conn = conn.0, "no progress from a peer within retry_after: resync");
                self.resync(doc, conn);
            }
            let Some(Slot::Ready(ds)) = self.docs.get(&doc) else {
                continue;
            };
            if ds.peers.is_empty()
                && ds.persists.is_empty()
                && ds.last_used + self.cfg.evict_after <= now
            {
                self.docs.remove(&doc);
                self.gate_closed(doc);
                self.out.push_back(Output::Evicted { doc });
            }
        }
    }

    /// When `tick` should next be called, if anything is waiting on time.
    pub fn next_wakeup(&mut self) -> Option<Millis> {
        self.refresh_timers();
        let next = self.timers.first().map(|(t, _)| *t);
        #[cfg(test)]
        assert_eq!(next, self.next_wakeup_scan(), "the timer index is stale");
        next
    }

    /// Brings the timer index up to date for the documents touched since the last refresh.
    fn refresh_timers(&mut self) {
        if self.touched.is_empty() {
            return;
        }
        let touched = std::mem::take(&mut self.touched);
        for doc in touched {
            if let Some(old) = self.deadlines.remove(&doc) {
                self.timers.remove(&(old, doc));
            }
            let due = match self.docs.get(&doc) {
                Some(Slot::Ready(ds)) => doc_deadline(&self.cfg, ds),
                _ => None,
            };
            if let Some(t) = due {
                self.deadlines.insert(doc, t);
                self.timers.insert((t, doc));
            }
        }
    }

    /// `next_wakeup` by scanning every document: what the index must agree with.
    #[cfg(test)]
    fn next_wakeup_scan(&self) -> Option<Millis> {
        self.docs
            .values()
            .filter_map(|slot| match slot {
                Slot::Ready(ds) => doc_deadline(&self.cfg, ds),
                Slot::Loading(_) => None,
            })
            .min()
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

    /// Evicts idle documents (no peer, nothing in flight), least recently used first, until
    /// [`Engine::loaded_bytes`] is at most `target`. Each is reported as `Output::Evicted`.
    /// Returns how many were evicted. O(loaded documents log loaded documents).
    pub fn evict_idle(&mut self, target: u64) -> usize {
        let mut total = self.loaded_bytes();
        if total <= target {
            return 0;
        }
        let mut idle: Vec<(Millis, DocId, u64)> = self
            .docs
            .iter()
            .filter_map(|(doc, slot)| match slot {
                Slot::Ready(ds)
                    if ds.peers.is_empty() && ds.persists.is_empty() && !ds.reloading =>
                {
                    Some((ds.last_used, *doc, ds.stored_bytes))
                }
                _ => None,
            })
            .collect();
        idle.sort_unstable();
        let mut evicted = 0;
        for (_, doc, bytes) in idle {
            if total <= target {
                break;
            }
            self.touched.insert(doc);
            self.docs.remove(&doc);
            self.gate_closed(doc);
            self.out.push_back(Output::Evicted { doc });
            total = total.saturating_sub(bytes);
            evicted += 1;
        }
        evicted
    }

    /// The persist requests not yet reported durable, for a document.
    pub fn persists_in_flight(&self, doc: DocId) -> usize {
        match self.docs.get(&doc) {
            Some(Slot::Ready(ds)) => ds.persists.len(),
            _ => 0,
        }
    }

    /// Whether `conn` is synced on `doc` (each side has the other's heads).
    pub fn is_synced(&self, conn: ConnId, doc: DocId) -> bool {
        match self.docs.get(&doc) {
            Some(Slot::Ready(ds)) => ds.peers.get(&conn).is_some_and(|pd| synced(ds, pd)),
            _ => false,
        }
    }

    // ---- message handlers ----

    fn on_ack(&mut self, conn: ConnId, doc: DocId, heads: Vec<ChangeHash>) {
        let now = self.now;
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
        };
        let all_known = heads.iter().all(|h| knows(ds, h));
        let Some(pd) = ds.peers.get_mut(&conn) else {
            return;
        };
        pd.last_progress = now;
        if !all_known {
            tracing::debug!(%doc, conn = conn.0, "an ack names changes we lack: resync");
            self.resync(doc, conn);
            return;
        }
        let heads = sorted(heads);
        pd.sync.shared_heads = heads.clone();
        pd.sync.their_heads = Some(heads.clone());
        pd.their_heads = Some(heads);
        self.check_synced(doc, conn);
    }

    // ---- internals ----

    fn persist_write(&mut self, doc: DocId, write: Write, effect: PersistEffect) -> PersistId {
        let id = PersistId(self.next_persist);
        self.next_persist += 1;
        if let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) {
            if let Write::Changes(bytes) = &write {
                ds.stored_bytes = ds.stored_bytes.saturating_add(bytes.len() as u64);
            }
            ds.persists.push_back(PendingPersist {
                id,
                done: false,
                heads_after: ds.heads.clone(),
                effect,
                pending: Vec::new(),
            });
        }
        self.persist_doc.insert(id, doc);
        self.out.push_back(Output::Persist { id, doc, write });
        id
    }

    fn persist_changes(
        &mut self,
        doc: DocId,
        origin: Origin,
        raw: Vec<Bytes>,
        via_fast_path: bool,
    ) -> PersistId {
        let chunk = raw.concat();
        self.persist_write(
            doc,
            Write::Changes(chunk),
            PersistEffect::Changes {
                origin,
                raw,
                via_fast_path,
            },
        )
    }

    /// Durable changes go out: acked to the peer that sent them over the fast path, forwarded
    /// as the same bytes to every live peer, offered by sync to the others.
    fn announce(&mut self, doc: DocId, origin: Origin, raw: Vec<Bytes>, via_fast_path: bool) {
        let now = self.now;
        let max = self.cfg.max_changes_bytes;
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
        };
        let heads = ds.durable_heads.clone();
        let mut live_targets = Vec::new();
        for (conn, pd) in ds.peers.iter_mut() {
            if Origin::Remote(*conn) == origin {
                continue;
            }
            if pd.live && pd.opts.send_changes {
                if pd.reported_synced {
                    // The peer was idle and synced: its ack is now due.
                    pd.last_progress = now;
                    pd.reported_synced = false;
                }
                live_targets.push(*conn);
            }
        }
        if !live_targets.is_empty() {
            for msg in split_changes(doc, &raw, max) {
                for conn in &live_targets {
                    self.out.push_back(Output::Send {
                        conn: *conn,
                        msg: msg.clone(),
                    });
                }
            }
        }
        if let (Origin::Remote(from), true) = (origin, via_fast_path) {
            if ds.peers.contains_key(&from) {
                self.out.push_back(Output::Send {
                    conn: from,
                    msg: Message::Ack {
                        doc,
                        heads: heads.clone(),
                    },
                });
            }
        }
        self.out.push_back(Output::Changed { doc, heads, origin });
    }

    /// Drops a peer back to sync mode from a fresh state and tells it to reset too: the way to
    /// recover after messages to it were dropped (a full queue).
    pub fn resync(&mut self, doc: DocId, conn: ConnId) {
        let now = self.now;
        self.touched.insert(doc);
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
        };
        let Some(pd) = ds.peers.get_mut(&conn) else {
            return;
        };
        pd.sync = fresh_state(&pd.sync);
        pd.live = false;
        pd.send_reset = true;
        pd.reported_synced = false;
        pd.last_progress = now;
        pd.stalls = 0;
        self.pump(doc, conn);
    }

    /// Sends whatever the sync protocol has for a peer in sync mode.
    fn pump(&mut self, doc: DocId, conn: ConnId) {
        let Some(Slot::Ready(ds)) = self.docs.get(&doc) else {
            return;
        };
        if ds.peers.get(&conn).is_none_or(|pd| pd.live) {
            self.check_synced(doc, conn);
            return;
        }
        self.shed_heavy(doc);
        let Some(Slot::Ready(ds)) = self.docs.get(&doc) else {
            return;
        };
        if ds.stale {
            if let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) {
                if ds.deferred.len() < MAX_QUEUED_WHILE_LOADING {
                    ds.deferred.push(Deferred::Pump(conn));
                }
            }
            self.materialize_for(doc, "pump");
            return;
        }
        if !self.fold_logged(doc) {
            return;
        }
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
        };
        if !ds
            .persists
            .iter()
            .all(|p| matches!(p.effect, PersistEffect::None))
        {
            // Not everything in the document is durable yet; `persisted` pumps again.
            return;
        }
        let Some(pd) = ds.peers.get_mut(&conn) else {
            return;
        };
        if pd.stalls >= MAX_STALLS {
            self.resync(doc, conn);
            return;
        }
        if let Some(m) = ds.doc.automerge().generate_sync_message(&mut pd.sync) {
            let reset = std::mem::take(&mut pd.send_reset);
            self.out.push_back(Output::Send {
                conn,
                msg: Message::Sync {
                    doc,
                    reset,
                    data: m.encode(),
                },
            });
        }
        self.check_synced(doc, conn);
    }

    fn check_synced(&mut self, doc: DocId, conn: ConnId) {
        let sync_only = self.sync_only.contains(&conn);
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
        };
        let is_synced = ds.peers.get(&conn).is_some_and(|pd| synced(ds, pd));
        let Some(pd) = ds.peers.get_mut(&conn) else {
            return;
        };
        if !is_synced {
            pd.reported_synced = false;
            return;
        }
        pd.live = !sync_only;
        if pd.reported_synced {
            return;
        }
        pd.reported_synced = true;
        let heads = ds.heads.clone();
        // Persisting on every ack would cost a write per change per peer; after a sync exchange
        // (and on disconnect) is enough for a cheap reconnect.
        let save = std::mem::take(&mut pd.save_state)
            .then(|| pd.opts.stable_peer.clone())
            .flatten();
        let mut state = pd.sync.clone();
        state.shared_heads = heads.clone();
        self.out.push_back(Output::Synced { conn, doc, heads });
        if let Some(peer) = save {
            self.persist_write(
                doc,
                Write::SyncState {
                    peer,
                    state: state.encode(),
                },
                PersistEffect::None,
            );
        }
    }

    fn after_input(&mut self, doc: DocId) {
        let due = match self.docs.get(&doc) {
            Some(Slot::Ready(ds)) => {
                self.cfg.fold_delay == 0 || ds.pending.len() >= self.cfg.fold_batch
            }
            _ => false,
        };
        if due {
            self.fold_or_drop(doc);
        }
    }

    /// Pending received changes are due to leave memory: folded into the document, or, with
    /// [`EngineConfig::lazy_fold`] while every peer of the document is live (nothing needs the
    /// materialized document), dropped from memory once durable, the document going stale.
    /// Returns whether it folded.
    fn fold_or_drop(&mut self, doc: DocId) -> bool {
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return false;
        };
        if ds.reloading {
            // Pending changes are folded into the reloaded document.
            return false;
        }
        // Too many operations to apply here: they leave memory once durable and a reload
        // (off the driver's thread) applies them, whatever the peers' modes.
        let heavy = pending_ops(ds) >= self.cfg.inline_apply_ops;
        if self.cfg.lazy_fold && (heavy || ds.peers.values().all(|pd| pd.live)) {
            ds.stale = true;
            let in_flight: HashSet<ChangeHash> = ds
                .persists
                .iter()
                .flat_map(|p| p.pending.iter().copied())
                .collect();
            let durable: HashSet<ChangeHash> = ds
                .pending
                .iter()
                .map(Change::hash)
                .filter(|h| !in_flight.contains(h))
                .collect();
            drop_from_memory(ds, &durable);
            ds.pending_since = if ds.pending.is_empty() {
                None
            } else {
                Some(self.now)
            };
            return false;
        }
        self.fold_logged(doc);
        true
    }

    /// With lazy folding, received changes waiting to be folded that hold too many operations
    /// to apply here ([`EngineConfig::inline_apply_ops`]) are not folded by whatever needs the
    /// materialized document: the document goes stale instead, and the reload applies them.
    fn shed_heavy(&mut self, doc: DocId) {
        let heavy = matches!(self.docs.get(&doc), Some(Slot::Ready(ds))
            if self.cfg.lazy_fold && !ds.stale && !ds.reloading
                && pending_ops(ds) >= self.cfg.inline_apply_ops);
        if heavy {
            self.fold_or_drop(doc);
        }
    }

    /// Whether the document is materialized (loaded and not stale). A stale one is reloaded
    /// from the store (an `Output::Load`); inputs that need it wait for [`Engine::loaded`].
    pub fn materialize(&mut self, doc: DocId) -> bool {
        self.materialize_for(doc, "api")
    }

    fn materialize_for(&mut self, doc: DocId, why: &str) -> bool {
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return false;
        };
        if !ds.stale {
            return true;
        }
        if !ds.reloading {
            if pending_ops(ds) >= self.cfg.inline_apply_ops {
                // Reloaded now, they would be folded in here; once durable they leave memory
                // and the load (off the driver's thread) applies them. `persisted` reloads.
                ds.reload_wanted = true;
                return false;
            }
            tracing::debug!(%doc, why, "reloading a stale document");
            ds.reloading = true;
            ds.reload_wanted = false;
            self.out.push_back(Output::Load { doc });
        }
        false
    }

    /// Whether the document is stale (see [`EngineConfig::lazy_fold`]).
    pub fn is_stale(&self, doc: DocId) -> bool {
        matches!(self.docs.get(&doc), Some(Slot::Ready(ds)) if ds.stale)
    }

    /// A stale document was reloaded: fold what memory holds into it and run the inputs that
    /// waited for it.
    fn materialized(&mut self, doc: DocId, deferred: Vec<Deferred>) {
        self.touched.insert(doc);
        let nothing_pending = !self.has_pending(doc);
        self.fold_logged(doc);
        if nothing_pending {
            // The reload alone brought the document up to date: report it like a fold, so a
            // driver that reloaded it to compact it does so now (before it goes stale again).
            self.out.push_back(Output::Folded { doc });
        }
        if let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) {
            let actual = sorted(ds.doc.heads());
            if actual != sorted(ds.heads.clone()) {
                tracing::error!(%doc, "a reloaded document's heads differ from the engine's");
            }
            if let Some(g) = self.gate.as_mut() {
                g.materialized(doc, &ds.doc);
            }
        }
        for d in deferred {
            match d {
                Deferred::Msg(conn, msg) => {
                    if let Err(error) = self.handle_inbound(conn, msg) {
                        self.out
                            .push_back(Output::ProtocolError { conn, doc, error });
                    }
                }
                Deferred::SyncAfterReload(conn, reset, msg) => {
                    if let Err(error) = self.sync_after_reload(conn, doc, reset, *msg) {
                        self.out
                            .push_back(Output::ProtocolError { conn, doc, error });
                    }
                }
                Deferred::Pump(conn) => self.pump(doc, conn),
            }
        }
    }

    /// Folds pending received changes into the document in one batch.
    ///
    /// Automerge keeps changes whose dependencies are missing in a queue of its own; a batch
    /// that supplies the missing dependency releases them into the document. Those changes were
    /// never persisted or announced, so they are now.
    fn fold(&mut self, doc: DocId) -> Result<(), DocError> {
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return Ok(());
        };
        if ds.pending.is_empty() || ds.stale {
            return Ok(());
        }
        let batch = std::mem::take(&mut ds.pending);
        ds.pending_hashes.clear();
        ds.pending_since = None;
        let applied = ds.doc.apply(batch);
        if applied.is_ok() {
            self.out.push_back(Output::Folded { doc });
            if let Some(g) = self.gate.as_mut() {
                g.materialized(doc, &ds.doc);
            }
        }
        let actual = ds.doc.heads();
        if actual != ds.heads {
            let released = ds.doc.changes_since(&ds.heads);
            ds.heads = actual;
            if let Some(g) = self.gate.as_mut() {
                for c in &released {
                    g.observe(doc, c, Some(ConnId(u64::MAX)));
                }
            }
            if !released.is_empty() {
                let raw = released.iter().map(|c| raw_of(c, None)).collect();
                self.persist_changes(doc, Origin::Released, raw, false);
            }
        }
        applied
    }

    /// [`Self::fold`], logging a failure; returns whether it succeeded.
    fn fold_logged(&mut self, doc: DocId) -> bool {
        match self.fold(doc) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%doc, error = %e, "folding received changes failed");
                false
            }
        }
    }
}

/// When `tick` next has something to do for a document: a fold falling due, a waiting peer's
/// retry, or an idle document's eviction.
fn doc_deadline(cfg: &EngineConfig, ds: &DocState) -> Option<Millis> {
    let mut next: Option<Millis> = None;
    let mut at = |t: Millis| next = Some(next.map_or(t, |n| n.min(t)));
    if let Some(t) = ds.pending_since {
        at(t + cfg.fold_delay);
    }
    for pd in ds.peers.values() {
        if waiting(ds, pd) {
            at(pd.last_progress + cfg.retry_after);
        }
    }
    if ds.peers.is_empty() && ds.persists.is_empty() {
        at(ds.last_used + cfg.evict_after);
    }
    next
}

/// Drops the pending changes in `durable` from memory (the store has them), remembering their
/// hashes in `recent`.
fn drop_from_memory(ds: &mut DocState, durable: &HashSet<ChangeHash>) {
    if durable.is_empty() {
        return;
    }
    if ds.recent.len() + durable.len() > MAX_RECENT {
        ds.recent.clear();
    }
    ds.pending.retain(|c| !durable.contains(&c.hash()));
    for h in durable {
        ds.pending_hashes.remove(h);
        ds.recent.insert(*h);
    }
}

/// Operations in the received changes waiting to be folded.
fn pending_ops(ds: &DocState) -> usize {
    ds.pending.iter().map(Change::len).sum()
}

fn knows(ds: &DocState, hash: &ChangeHash) -> bool {
    ds.heads.binary_search(hash).is_ok()
        || ds.pending_hashes.contains(hash)
        || ds.recent.contains(hash)
        || ds.doc.has_change(hash)
}

fn advance_heads(heads: &mut Vec<ChangeHash>, change: &Change) {
    heads.retain(|h| !change.deps().contains(h));
    let hash = change.hash();
    if let Err(at) = heads.binary_search(&hash) {
        heads.insert(at, hash);
    }
}

fn sorted(mut heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
    heads.sort_unstable();
    heads.dedup();
    heads
}

/// A state that remembers only what survives a reconnect, keeping the read-only setting.
fn fresh_state(old: &sync::State) -> sync::State {
    let mut s = sync::State::decode(&old.encode()).unwrap_or_default();
    s.read_only = old.read_only;
    s
}

/// Each side has what it can take from the other: with writes both ways, equal heads.
fn synced(ds: &DocState, pd: &PeerDoc) -> bool {
    synced_with(ds, pd, &ds.heads)
}

/// Whether the peer has everything of `ours` (our heads, or the durable ones) that it takes,
/// and we everything of its that we take.
fn synced_with(ds: &DocState, pd: &PeerDoc, ours: &[ChangeHash]) -> bool {
    let Some(theirs) = &pd.their_heads else {
        return false;
    };
    match (pd.opts.send_changes, pd.opts.accept_changes) {
        (true, true) => theirs == ours,
        // The peer takes nothing from us: we are synced once we have all it has.
        (false, _) => theirs.iter().all(|h| knows(ds, h)),
        // We take nothing from the peer (its own changes may be unknown to us): synced once
        // every head of ours is one of its heads or a head both sides are known to share.
        (true, false) => ours
            .iter()
            .all(|h| theirs.contains(h) || pd.sync.shared_heads.contains(h)),
    }
}

/// Whether we expect the peer to make progress (so a lack of it triggers a resync).
///
/// A live peer is sent changes once they are durable ([`Engine::announce`], which also
/// restarts its progress clock when it was idle), so it owes an ack for the durable heads
/// only. Measured against every received head instead, a peer idle for longer than
/// `retry_after` looked stalled the moment a new change arrived, if a tick ran before that
/// change was durable: every live peer of the document was reset.
fn waiting(ds: &DocState, pd: &PeerDoc) -> bool {
    if pd.live {
        !synced_with(ds, pd, &ds.durable_heads)
    } else {
        !synced(ds, pd)
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

fn split_changes(doc: DocId, raw: &[Bytes], max: usize) -> Vec<Message> {
    let mut msgs = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for c in raw {
        if !cur.is_empty() && size + c.len() > max {
            msgs.push(Message::Changes {
                doc,
                changes: std::mem::take(&mut cur),
            });
            size = 0;
        }
        size += c.len();
        cur.push(c.clone());
    }
    if !cur.is_empty() {
        msgs.push(Message::Changes { doc, changes: cur });
    }
    msgs
}

#[cfg(test)]
mod tests;
