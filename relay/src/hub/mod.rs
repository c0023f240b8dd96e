//! The hub: the one task that owns the relay's sync engine and store, fed by connection tasks.
//!
//! Connection tasks (QUIC connections and WebSocket sockets) authenticate their peer, then hand
//! the hub a [`HubEvent::Open`] with a bounded outbound queue, forward every decoded message as
//! [`HubEvent::Frame`] and report [`HubEvent::Closed`]. The hub authorizes subscriptions
//! ([`crate::access`]), drives the engine through [`Host`], and puts encoded frames on the
//! connections' queues with `try_send`: a full queue never blocks fan-out; the message is
//! dropped and that peer's document is resynced from heads once its queue drains, which the
//! CRDT makes lossless.
//!
//! Frames for a connection are gathered during one pass of the hub loop and put on its queue
//! as one entry at the end of the pass, so a burst (a group commit releasing hundreds of
//! changes) costs one queue slot and one writer wake-up.
//!
//! The engine's commit tickets wait in one FIFO that the loop polls from the front (the
//! group-commit writer completes them in submission order); document loads and subscription
//! records run as tasks in the hub's `JoinSet`. Both report back into the same loop, so the
//! engine is only ever touched from this task.
//!
//! Each file owns a part of the hub's state:
//!
//! - `run.rs`: the loop. Events from connection tasks, durable engine writes, finished
//!   background tasks and timers; each pass ends with the engine's output pumped and every
//!   connection's batch flushed. Housekeeping runs from here.
//! - `conns.rs`: connections (`Conn`): opening, closing, token refresh and expiry, and every
//!   frame the hub sends, batched per pass on each connection's bounded queue.
//! - `inbound.rs`: what a connection's messages do; document messages go to the engine.
//! - `docs.rs`: documents: subscriptions and their metadata, presence, the engine's output
//!   fanned out to subscribers, reload after a panic.
//! - `loads.rs`: document loads, bounded, on blocking threads, first loads before reloads.
//! - `control.rs`: sharing, discovery and revocation. Control requests are checked
//!   ([`crate::sharing`]), committed, and only once durable applied to live connections (ended
//!   or re-opened subscriptions, `Docs` deltas to every connection of each affected user) and
//!   answered.
//! - `quota.rs`: what one member may cost the relay (documents, bytes, memory for loads).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use weft_core::clock::Monotonic;
use weft_core::engine::{ConnId, Engine, EngineConfig, Inbound};
use weft_core::hash::{HashMap, HashSet};
use weft_core::host::{Host, HostConfig, Loaded, SaveJob, Saved, Waiting};
use weft_core::store::docs::DocStoreError;
use weft_core::store::{GroupCommit, StoreError};

use crate::meta::DocMeta;
use weft_core::wire::{self, ErrorCode, Message};
use weft_core::{DeviceId, DocId, Role};

use crate::metrics::Metrics;
use crate::sharing::Change;
use crate::{Claims, Verifier};

mod actors;
mod cluster;
mod conns;
mod control;
mod docs;
mod imports;
mod inbound;
mod listing;
mod loads;
mod notify;
mod presence;
mod quota;
mod run;

pub use quota::Quotas;

/// Hub limits.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Largest frame body sent or accepted.
    pub max_frame: usize,
    /// Documents one connection may have open at once.
    pub max_docs_per_conn: usize,
    /// Engine tuning.
    pub engine: EngineConfig,
    /// Store tuning.
    pub host: HostConfig,
    /// Users one document's access list may name.
    pub max_access_list: usize,
    /// Documents listed to one connection at once (more are left out, and `DocsEnd` says so).
    pub max_listed_docs: usize,
    /// Entries per `Docs` message.
    pub docs_per_message: usize,
    /// Control requests (share, unshare, delete) a connection may send in a burst.
    pub control_burst: u32,
    /// Control requests per second a connection may send once its burst is spent.
    pub control_rate: u32,
    /// Documents a connection may create in a burst.
    pub create_burst: u32,
    /// Documents per second a connection may create once its burst is spent.
    pub create_rate: u32,
    /// Document loads (store read and `Automerge::load`, each on a blocking thread) in flight
    /// at once; more wait their turn in order. Unbounded, a burst of reloads (every document
    /// of a busy relay reaching its compaction point together) ran hundreds of blocking
    /// threads that starved the hub's own thread for seconds: no acks were read, and every
    /// live peer was resynced for want of progress. Saves handed out by the host (a large
    /// document's whole for a newcomer, or its compaction snapshot) are bounded by the same
    /// number, separately.
    pub max_loads: usize,
    /// What one member may cost the relay (see `hub/quota.rs`).
    pub quotas: Quotas,
    /// The kinds of document whose write rules the relay enforces (built-in and declared).
    pub kinds: Arc<weft_schema::rules::Kinds>,
    /// Subscribers from which a document's ephemeral traffic is batched (`hub/presence.rs`);
    /// below, each frame is relayed at once.
    pub presence_batch_from: usize,
    /// How long a batched document's ephemeral frames wait to be sent together, at least.
    pub presence_batch_every: std::time::Duration,
    /// How much a batched document's tick grows per subscriber (`hub/presence.rs`).
    pub presence_batch_per_member: std::time::Duration,
    /// The longest a batched document's tick grows.
    pub presence_batch_max: std::time::Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_frame: wire::DEFAULT_MAX_FRAME,
            max_docs_per_conn: 10_000,
            engine: EngineConfig::relay(),
            host: HostConfig::default(),
            max_access_list: 1_000,
            max_listed_docs: 100_000,
            docs_per_message: 1_000,
            control_burst: 1_000,
            control_rate: 100,
            create_burst: 1_000,
            create_rate: 100,
            max_loads: 2,
            quotas: Quotas::default(),
            kinds: Arc::new(weft_schema::rules::Kinds::builtin()),
            presence_batch_from: 32,
            presence_batch_every: std::time::Duration::from_millis(100),
            presence_batch_per_member: std::time::Duration::from_micros(250),
            presence_batch_max: std::time::Duration::from_secs(1),
        }
    }
}

/// A frame for a connection's writer, or the order to close it.
#[derive(Clone, Debug)]
pub enum Outbound {
    /// An encoded frame (shared: the same bytes go to every subscriber).
    Frame(Arc<Vec<u8>>),
    /// An encoded `Ephemeral` or `Presence` frame: best-effort, so the transport may send it
    /// unreliably (a QUIC datagram when it fits), out of order with the stream's frames.
    Ephemeral(Arc<Vec<u8>>),
    /// Encoded `Ephemeral` frames of a crowded document, batched (see `hub/presence.rs`):
    /// best-effort like one, sent on the stream. The bytes are shared by every subscriber;
    /// `except` is the range of this connection's own frame, left out (empty for none).
    EphemeralBatch {
        /// Whole frames, one after another.
        frames: Arc<Vec<u8>>,
        /// The byte range of `frames` not to send.
        except: std::ops::Range<usize>,
    },
    /// Whole frames, one after another, in parts: the connection's own bytes and buffers
    /// shared with other connections' queues (a whole-document snapshot sent to every device
    /// that joins at the same heads: see `Hub::push_shared`). A transport writes the parts
    /// without copying them.
    Chunks(Vec<bytes::Bytes>),
    /// Send this error, then close the connection.
    Close {
        /// Why.
        code: ErrorCode,
        /// A sentence for the peer.
        reason: String,
    },
}

impl Outbound {
    /// The bytes a transport writes for it (whole frames, one after another), or `None` for
    /// a close.
    pub fn bytes(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        match self {
            Outbound::Frame(f) | Outbound::Ephemeral(f) => Some(f.as_slice().into()),
            Outbound::EphemeralBatch { frames, except } => Some(
                [&frames[..except.start], &frames[except.end..]]
                    .concat()
                    .into(),
            ),
            Outbound::Chunks(chunks) => Some(chunks.concat().into()),
            Outbound::Close { .. } => None,
        }
    }
}

/// What connection tasks tell the hub.
#[derive(Debug)]
pub enum HubEvent {
    /// An authenticated connection.
    Open {
        /// Its id (unique for the hub's lifetime).
        conn: ConnId,
        /// The device, from its TLS certificate.
        device: DeviceId,
        /// The verified token.
        claims: Claims,
        /// The protocol version its frames are encoded for (what it announced, at most ours;
        /// `wire::MIN_PROTOCOL_VERSION` for a WebSocket client, whose frames the relay
        /// translates).
        protocol: u16,
        /// Where its frames go (bounded).
        out: mpsc::Sender<Outbound>,
    },
    /// A message from the connection.
    Frame {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: Message,
    },
    /// A document message from the connection whose changes its task already checked
    /// (`weft_core::engine::check_message`, with [`HubConfig::engine`]'s limits), so the hub
    /// never parses a large upload itself.
    Inbound {
        /// The connection.
        conn: ConnId,
        /// The checked message.
        inbound: Inbound,
    },
    /// The connection ended.
    Closed {
        /// The connection.
        conn: ConnId,
    },
    // WebSocket hook (begin)
    /// Keep every document of this connection in sync mode (`Sync` messages only, no
    /// `Changes`/`Ack` fast path): its peer speaks only Automerge's sync protocol. Sent right
    /// after `Open`, before any subscription.
    SyncOnly {
        /// The connection.
        conn: ConnId,
    },
    /// `Subscribe` that never creates: a document the relay has never stored is refused like a
    /// forbidden one (`FORBIDDEN`), even for a token that may create documents. An
    /// automerge-repo `request` asks for a document; it does not upload one.
    SubscribeExisting {
        /// The connection.
        conn: ConnId,
        /// The document.
        doc: DocId,
    },
    // WebSocket hook (end)
    /// An entry of another relay of the cluster, already in this relay's store.
    Cluster(crate::cluster::Imported),
}

/// What the hub's background tasks report back to its loop.
enum Done {
    /// A background write that needs nothing more.
    Nothing,
    Loaded(DocId, Box<Result<Option<Loaded>, DocStoreError>>),
    /// A save handed out by the host finished.
    Saved(Option<Box<Saved>>),
    /// A subscription whose owner record (or nothing) is durable and may open now.
    Subscribe {
        conn: ConnId,
        doc: DocId,
        /// The subscription created the document (its owner record was just committed).
        created: bool,
        result: Result<(), StoreError>,
    },
    /// A control request's change was committed (or failed to be).
    Control {
        doc: DocId,
        request: control::QueuedControl,
        change: Box<Change>,
        result: Result<(), StoreError>,
    },
    /// A deleted document's content was erased once more, after its writes in flight.
    Erased {
        doc: DocId,
        result: Result<(), StoreError>,
    },
}

/// The hub. Build it with [`Hub::new`], then [`Hub::run`] it.
pub struct Hub {
    cfg: HubConfig,
    host: Host,
    group: Arc<GroupCommit>,
    verifier: Verifier,
    conns: HashMap<ConnId, conns::Conn>,
    /// Subscribers per document: `conn` is in `subscribers[doc]` exactly when `doc` is in
    /// `conns[conn].docs` (both change together; `open_subscription` sends before adding the
    /// second, but nothing is pumped in between).
    subscribers: HashMap<DocId, BTreeMap<ConnId, Role>>,
    /// Relay metadata of documents with subscribers (owner, access list, deletion), as durable
    /// (an owner record being committed is the one exception).
    metas: HashMap<DocId, DocMeta>,
    /// Live connections per user, for discovery deltas.
    users: HashMap<String, HashSet<ConnId>>,
    /// Control requests per document: the first is being committed, the rest wait for it.
    controls: HashMap<DocId, VecDeque<control::QueuedControl>>,
    tasks: JoinSet<Done>,
    /// Loads in flight (at most `cfg.max_loads`).
    loads_running: usize,
    /// First loads of documents waiting for a slot, in the order the engine asked: a device
    /// is waiting for each.
    loads_waiting: VecDeque<DocId>,
    /// Reloads of stale documents waiting for a slot (mostly for compaction); they go after
    /// every first load.
    reloads_waiting: VecDeque<DocId>,
    /// Documents whose load is running.
    loading: HashSet<DocId>,
    /// Saves in flight (at most `cfg.max_loads`).
    saves_running: usize,
    /// Saves waiting for a slot: whole documents for newcomers first, then compactions.
    saves_waiting: [VecDeque<SaveJob>; 2],
    /// Documents deleted while their load ran: its result is dropped (see `hub/control.rs`).
    erased: HashSet<DocId>,
    /// Engine writes in flight, in submission order.
    commits: VecDeque<(Waiting, cluster::Durable)>,
    /// Connections whose batch (see `conns.rs`) is not empty.
    unflushed: Vec<ConnId>,
    clock: Monotonic,
    metrics: Arc<Metrics>,
    /// When the latest fast-path change of a document arrived, for the fan-out histogram.
    arrivals: HashMap<DocId, Instant>,
    /// What the quotas count.
    usage: quota::Usage,
    /// Housekeeping passes since the recorded document sizes were last stored.
    passes_since_sizes: u32,
    /// The most documents loaded at once since the hub last gave back memory (`shrink`).
    peak_since_trim: usize,
    // Postgres checkpoints (begin)
    /// Where changed documents are marked for the checkpointer, when Postgres is configured.
    dirty: Option<Arc<crate::checkpoint::DirtyDocs>>,
    // Postgres checkpoints (end)
    /// Ephemeral frames of crowded documents waiting for their tick.
    presence: presence::PresenceBatches,
    /// The push hook, when configured: new messages reported once durable.
    notifier: Option<crate::notify::Notifier>,
    /// The cluster's log, when this relay is one of a cluster (`hub/cluster.rs`).
    cluster: Option<crate::cluster::ClusterLog>,
    /// Changes imported from the cluster's log for documents whose load was running.
    imports_waiting: HashMap<DocId, Vec<Vec<u8>>>,
    /// Changes imported from the cluster's log waiting for their dependencies
    /// (`hub/imports.rs`).
    orphans: imports::Orphans,
    /// Members online on the cluster's other relays, per document, with the relay process
    /// that announced them (`hub/cluster.rs`).
    remote_presence: HashMap<DocId, HashMap<(String, DeviceId), Arc<str>>>,
    /// When each of the cluster's other relay processes was last heard (the hub's clock, ms).
    relays_heard: HashMap<Arc<str>, u64>,
    /// Documents whose changes were imported lately, per accepting relay, with when: if that
    /// relay goes silent before its checkpoint, this one writes it (`hub/cluster.rs`).
    recent_imports: HashMap<Arc<str>, HashMap<DocId, u64>>,
}

impl Hub {
    /// A hub over the store behind `group`.
    pub fn new(
        cfg: HubConfig,
        group: Arc<GroupCommit>,
        verifier: Verifier,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut engine = Engine::new(cfg.engine.clone());
        // Every connection's changes are checked: identities and the kinds' write rules.
        engine.set_gate(Box::new(weft_schema::rules::RulesGate::new(
            cfg.kinds.clone(),
        )));
        let host = Host::new(engine, group.clone(), cfg.host.clone());
        Hub {
            cfg,
            host,
            group,
            verifier,
            conns: HashMap::default(),
            subscribers: HashMap::default(),
            metas: HashMap::default(),
            users: HashMap::default(),
            controls: HashMap::default(),
            tasks: JoinSet::new(),
            loads_running: 0,
            loads_waiting: VecDeque::new(),
            reloads_waiting: VecDeque::new(),
            loading: HashSet::default(),
            saves_running: 0,
            saves_waiting: Default::default(),
            erased: HashSet::default(),
            commits: VecDeque::new(),
            unflushed: Vec::new(),
            clock: Monotonic::start(),
            metrics,
            arrivals: HashMap::default(),
            usage: quota::Usage::default(),
            passes_since_sizes: 0,
            peak_since_trim: 0,
            dirty: None,
            presence: presence::PresenceBatches::default(),
            notifier: None,
            cluster: None,
            imports_waiting: HashMap::default(),
            orphans: imports::Orphans::default(),
            remote_presence: HashMap::default(),
            relays_heard: HashMap::default(),
            recent_imports: HashMap::default(),
        }
    }

    /// Reports every new message to `notifier` once it is durable (the push hook).
    pub fn with_notifier(mut self, notifier: crate::notify::Notifier) -> Self {
        if let Some(rules) = self.rules() {
            rules.note_messages(notifier.bodies());
        }
        self.notifier = Some(notifier);
        self
    }

    // Postgres checkpoints (begin)
    /// Marks in `dirty` every document whose content, access list or deletion changes (once
    /// durable), for the checkpointer.
    pub fn with_checkpoints(mut self, dirty: Arc<crate::checkpoint::DirtyDocs>) -> Self {
        self.dirty = Some(dirty);
        self
    }

    pub(crate) fn mark_dirty(&self, doc: DocId) {
        if let Some(d) = &self.dirty {
            d.mark(doc);
        }
    }
    // Postgres checkpoints (end)

    fn now_ms(&self) -> u64 {
        self.clock.now()
    }

    /// Unix seconds on the relay's wall clock (its verifier's, which tests may move).
    fn unix_now(&self) -> u64 {
        self.verifier.clock().unix_secs()
    }

    /// The engine's gate: identities and write rules.
    fn rules(&mut self) -> Option<&mut weft_schema::rules::RulesGate> {
        self.host
            .gate_mut()?
            .as_any_mut()
            .downcast_mut::<weft_schema::rules::RulesGate>()
    }
}
