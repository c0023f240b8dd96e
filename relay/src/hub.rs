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
//! Sharing, discovery and revocation live in `hub/control.rs`: control requests are checked
//! ([`crate::sharing`]), committed, and only once durable applied to live connections (ended
//! or re-opened subscriptions, `Docs` deltas to every connection of each affected user) and
//! answered.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use weft_core::engine::{
    ConnId, Engine, EngineConfig, EngineError, Inbound, OpenOptions, Output, Rejection,
};
use weft_core::hash::{HashMap, HashSet};
use weft_core::host::{self, Action, Host, HostConfig, Loaded, Waiting};
use weft_core::store::docs::{self as docstore, DocStoreError};
use weft_core::store::{CommitTicket, DocMeta, GroupCommit, StoreError};
use weft_core::wire::{self, ErrorCode, Message};
use weft_core::{DeviceId, DocId, Role};

use crate::access::{decide, refusal_code, Decision};
use crate::metrics::Metrics;
use crate::rate::RateLimit;
use crate::sharing::{self, Change};
use crate::{Claims, Verifier};

mod control;
mod quota;

pub use quota::Quotas;

/// How stale the hub's idea of the engine's next timer may get (see [`Hub::run`]).
const WAKE_RECHECK: Duration = Duration::from_millis(100);

/// Events the hub handles in one pass of its loop when they are already queued (see
/// [`Hub::run`]). Bounds the delay a burst adds to the first event's output: a pass of this
/// many frames takes well under a millisecond.
const EVENTS_PER_PASS: usize = 32;

use control::QueuedControl;

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
    /// live peer was resynced for want of progress.
    pub max_loads: usize,
    /// What one member may cost the relay (see `hub/quota.rs`).
    pub quotas: Quotas,
    /// The kinds of document whose write rules the relay enforces (built-in and declared).
    pub kinds: Arc<weft_schema::rules::Kinds>,
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
    /// Send this error, then close the connection.
    Close {
        /// Why.
        code: ErrorCode,
        /// A sentence for the peer.
        reason: String,
    },
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
}

struct Conn {
    device: DeviceId,
    claims: Claims,
    out: mpsc::Sender<Outbound>,
    docs: HashMap<DocId, Role>,
    /// Documents whose messages were dropped on a full queue: resync once it drains.
    lagging: HashSet<DocId>,
    closing: bool,
    /// Control requests allowed from this connection.
    control_rate: RateLimit,
    /// Document creations allowed from this connection.
    create_rate: RateLimit,
    /// A discovery message was dropped on a full queue: list everything again once it drains.
    relist: bool,
    /// Control replies that did not fit in the queue, in order (bounded).
    replies: VecDeque<Arc<Vec<u8>>>,
    /// Reliable frames queued during this pass of the hub loop (see [`Hub::flush`]).
    batch: Batch,
    /// Bytes of the last batch flushed: the next one starts with that capacity, so a busy
    /// connection's batch is not regrown (and recopied) by doubling on every pass.
    last_batch_bytes: usize,
}

/// Frames for one connection, concatenated, that go on its queue as one entry.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    frames: u64,
    /// Documents with sync frames (`Sync`, `Changes`, `Ack`) in the batch: resynced if it
    /// is dropped.
    docs: Vec<DocId>,
    /// The batch holds a frame a resync cannot replace (`Subscribed`, `Error`, ...).
    must_arrive: bool,
}

/// A connection's batch is put on its queue once it holds this many bytes, without waiting
/// for the end of the pass.
const MAX_BATCH_BYTES: usize = 256 * 1024;

enum Done {
    /// A background write that needs nothing more.
    Nothing,
    Loaded(DocId, Box<Result<Option<Loaded>, DocStoreError>>),
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
        request: QueuedControl,
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
    conns: HashMap<ConnId, Conn>,
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
    controls: HashMap<DocId, VecDeque<QueuedControl>>,
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
    /// Documents deleted while their load ran: its result is dropped (see `hub/control.rs`).
    erased: HashSet<DocId>,
    /// Engine writes in flight, in submission order.
    commits: VecDeque<(Waiting, CommitTicket)>,
    /// Connections with a non-empty [`Batch`].
    unflushed: Vec<ConnId>,
    start: Instant,
    metrics: Arc<Metrics>,
    /// When the latest fast-path change of a document arrived, for the fan-out histogram.
    arrivals: HashMap<DocId, Instant>,
    /// What the quotas count.
    usage: quota::Usage,
    /// Housekeeping passes since the recorded document sizes were last stored.
    passes_since_sizes: u32,
    // Postgres checkpoints (begin)
    /// Where changed documents are marked for the checkpointer, when Postgres is configured.
    dirty: Option<Arc<crate::checkpoint::DirtyDocs>>,
    // Postgres checkpoints (end)
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
            erased: HashSet::default(),
            commits: VecDeque::new(),
            unflushed: Vec::new(),
            start: Instant::now(),
            metrics,
            arrivals: HashMap::default(),
            usage: quota::Usage::default(),
            passes_since_sizes: 0,
            dirty: None,
        }
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

    /// Runs until `events` closes (every connection task and the acceptor are gone), then
    /// waits for every write in flight. Cancel safety: dropping the future loses no acknowledged
    /// write (acks are sent only after commits), but in-flight commits are not awaited.
    pub async fn run(mut self, mut events: mpsc::Receiver<HubEvent>) {
        self.index_upgrade().await;
        let store = self.host.store().clone();
        match tokio::task::spawn_blocking(move || quota::Usage::scan(store.as_ref())).await {
            Ok(usage) => self.usage = usage,
            Err(e) => tracing::error!(error = %e, "counting the store's usage failed"),
        }
        let mut resync_timer = tokio::time::interval(Duration::from_millis(500));
        resync_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The engine keeps its timers indexed, but bringing the index up to date costs
        // O(peers) per document touched since the last time, and every ack touches one: asked
        // after every event, that was a few O(peers) scans per delivery. It is asked at most
        // once per WAKE_RECHECK; events in between may move a timer earlier, so the loop looks
        // again WAKE_RECHECK after them (the engine's timers are a second or more).
        let mut wake: Option<Instant> = None;
        let mut checked_at: Option<Instant> = None;
        let mut moved = false;
        loop {
            self.pump_actions();
            self.flush();
            let now = Instant::now();
            if checked_at.is_none_or(|t| now >= t + WAKE_RECHECK) {
                wake = self
                    .host
                    .next_wakeup()
                    .map(|ms| self.start + Duration::from_millis(ms));
                checked_at = Some(now);
                moved = false;
            }
            let recheck = checked_at.map(|t| t + WAKE_RECHECK).filter(|_| moved);
            let deadline = match (wake, recheck) {
                (Some(w), Some(r)) => Some(w.min(r)),
                (w, r) => w.or(r),
            };
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => {
                        self.on_event(ev);
                        // Events already queued join this pass: under load the pass's fixed
                        // costs (the `select!`, the clock, pumping and flushing) are paid per
                        // burst instead of per frame, and each connection's frames of the
                        // burst go out as one batch.
                        for _ in 1..EVENTS_PER_PASS {
                            let Ok(ev) = events.try_recv() else { break };
                            if matches!(ev, HubEvent::Closed { .. }) {
                                // Output already produced reaches the connection's queue
                                // before it is forgotten, as it did one event per pass.
                                self.pump_actions();
                                self.flush();
                            }
                            self.on_event(ev);
                        }
                    }
                    None => break,
                },
                done = std::future::poll_fn(|cx| Self::poll_commits(&mut self.commits, cx)), if !self.commits.is_empty() => {
                    for (what, result) in done {
                        self.host.committed(what, result);
                    }
                }
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => match done {
                    Ok(done) => self.on_done(done),
                    Err(e) => tracing::error!(error = %e, "hub task failed"),
                },
                _ = sleep => {
                    if wake.is_some_and(|w| Instant::now() >= w) {
                        let now = self.now_ms();
                        self.host.tick(now);
                    }
                    checked_at = None;
                }
                _ = resync_timer.tick() => self.housekeeping(),
            }
            moved = true;
        }
        // Drain: every write in flight completes before the hub returns.
        loop {
            if let Some((what, ticket)) = self.commits.pop_front() {
                let result = ticket.await;
                self.host.committed(what, result);
            } else if let Some(done) = self.tasks.join_next().await {
                if let Ok(done) = done {
                    self.on_done(done);
                }
            } else {
                break;
            }
            self.pump_actions();
            self.flush();
        }
        self.record_sizes();
        while let Some(done) = self.tasks.join_next().await {
            if let Ok(done) = done {
                self.on_done(done);
            }
        }
        self.flush();
    }

    /// Waits for the oldest engine write in flight, then takes every later one that is also
    /// durable. The group-commit writer completes tickets in submission order, so polling the
    /// front is enough: one wake-up serves a whole group commit, where a task per ticket cost
    /// a spawn and a wake-up per change.
    fn poll_commits(
        commits: &mut VecDeque<(Waiting, CommitTicket)>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Vec<(Waiting, Result<(), StoreError>)>> {
        let mut done = Vec::new();
        while let Some((_, ticket)) = commits.front_mut() {
            match std::future::Future::poll(std::pin::Pin::new(ticket), cx) {
                std::task::Poll::Ready(result) => {
                    let (what, _) = commits.pop_front().expect("front exists");
                    done.push((what, result));
                }
                std::task::Poll::Pending => break,
            }
        }
        if done.is_empty() {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(done)
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn unix_now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn on_event(&mut self, ev: HubEvent) {
        match ev {
            HubEvent::Open {
                conn,
                device,
                claims,
                out,
            } => {
                let welcome = Message::Welcome {
                    protocol: wire::PROTOCOL_VERSION,
                    user: claims.sub.clone(),
                    device,
                    max_frame: self.cfg.max_frame as u32,
                };
                self.users
                    .entry(claims.sub.clone())
                    .or_default()
                    .insert(conn);
                self.conns.insert(
                    conn,
                    Conn {
                        device,
                        claims,
                        out,
                        docs: HashMap::default(),
                        lagging: HashSet::default(),
                        closing: false,
                        control_rate: RateLimit::new(self.cfg.control_burst, self.cfg.control_rate),
                        create_rate: RateLimit::new(self.cfg.create_burst, self.cfg.create_rate),
                        relist: false,
                        replies: VecDeque::new(),
                        batch: Batch::default(),
                        last_batch_bytes: 0,
                    },
                );
                self.host.add_conn(self.now_ms(), conn);
                if let Some(c) = self.conns.get(&conn) {
                    let (user, admin) = (c.claims.sub.clone(), c.claims.admin);
                    if let Some(rules) = self.rules() {
                        rules.connect(conn, &user, admin, false);
                    }
                }
                self.send(conn, &welcome);
                let declared = self.cfg.kinds.declared_toml();
                if !declared.is_empty() {
                    let kinds = Message::Kinds {
                        toml: declared.to_string(),
                    };
                    self.send(conn, &kinds);
                }
                self.send_listing(conn);
            }
            HubEvent::Frame { conn, msg } => {
                if let Some(doc) = msg.doc() {
                    Metrics::inc(&self.metrics.messages_in);
                    if matches!(msg, Message::Changes { .. }) {
                        self.arrivals.insert(doc, Instant::now());
                    }
                }
                self.on_frame(conn, msg)
            }
            HubEvent::Inbound { conn, inbound } => {
                Metrics::inc(&self.metrics.messages_in);
                if matches!(inbound, Inbound::Changes { .. }) {
                    self.arrivals.insert(inbound.doc(), Instant::now());
                }
                self.on_inbound(conn, inbound)
            }
            // WebSocket hook (begin)
            HubEvent::SyncOnly { conn } => {
                if self.conns.contains_key(&conn) {
                    self.host.set_sync_only(self.now_ms(), conn);
                }
            }
            HubEvent::SubscribeExisting { conn, doc } => {
                if self.conns.get(&conn).is_some_and(|c| !c.closing) {
                    Metrics::inc(&self.metrics.messages_in);
                    self.subscribe(conn, doc, false);
                }
            }
            // WebSocket hook (end)
            HubEvent::Closed { conn } => self.on_closed(conn),
        }
    }

    fn on_frame(&mut self, conn: ConnId, msg: Message) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        match msg {
            Message::Subscribe { doc } => self.on_subscribe(conn, doc),
            Message::Unsubscribe { doc } => {
                self.unsubscribe(conn, doc);
            }
            Message::Sync { doc, .. } | Message::Changes { doc, .. } | Message::Ack { doc, .. } => {
                let limits = &self.cfg.engine.limits;
                match weft_core::engine::check_message(msg, limits) {
                    Ok(inbound) => self.on_inbound(conn, inbound),
                    Err(e) => self.malformed(conn, doc, &e),
                }
            }
            Message::Ephemeral { doc, data, .. } => {
                if !c.docs.contains_key(&doc) {
                    self.send(conn, &forbidden(doc));
                    return;
                }
                let fwd = Message::Ephemeral {
                    doc,
                    user: Some(c.claims.sub.clone()),
                    device: Some(c.device),
                    data,
                };
                self.broadcast(doc, Some(conn), &fwd);
            }
            Message::Token { token } => match self.verifier.verify(&token, Self::unix_now()) {
                Ok(claims) if claims.sub == c.claims.sub => {
                    let admin = claims.admin;
                    let user = claims.sub.clone();
                    if let Some(c) = self.conns.get_mut(&conn) {
                        let old = std::mem::replace(&mut c.claims, claims);
                        if let Some(rules) = self.rules() {
                            rules.connect(conn, &user, admin, false);
                        }
                        self.recheck_access(conn, &old);
                    }
                }
                Ok(_) => self.close(
                    conn,
                    ErrorCode::UNAUTHENTICATED,
                    "a refreshed token must be for the same user".into(),
                ),
                Err(e) => {
                    tracing::info!(conn = conn.0, error = %e, "refused a refreshed token");
                    self.close(
                        conn,
                        ErrorCode::UNAUTHENTICATED,
                        "the refreshed token was refused".into(),
                    );
                }
            },
            Message::Share {
                id,
                doc,
                user,
                role,
            } => self.on_control(conn, id, doc, sharing::Control::Share { user, role }),
            Message::Unshare { id, doc, user } => {
                self.on_control(conn, id, doc, sharing::Control::Unshare { user })
            }
            Message::Delete { id, doc } => self.on_control(conn, id, doc, sharing::Control::Delete),
            Message::Hello { .. } => {
                self.close(conn, ErrorCode::MALFORMED, "hello sent twice".into())
            }
            other => {
                tracing::info!(
                    conn = conn.0,
                    ?other,
                    "closing a connection that sent an unexpected message"
                );
                self.close(conn, ErrorCode::MALFORMED, "unexpected message".into());
            }
        }
    }

    /// Tells `conn` which user each actor of `doc` writes for, as far as the store knows.
    fn send_actors(&mut self, conn: ConnId, doc: DocId) {
        let records = match docstore::load_gate_records(self.host.store().as_ref(), doc) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%doc, error = %e, "reading a document's actors failed");
                return;
            }
        };
        let actors: Vec<wire::ActorEntry> = records
            .into_iter()
            .filter_map(|(actor, user)| {
                Some(wire::ActorEntry {
                    actor,
                    user: String::from_utf8(user).ok()?,
                })
            })
            .collect();
        if !actors.is_empty() {
            self.send(conn, &Message::Actors { doc, actors });
        }
    }

    /// The engine's gate: identities and write rules.
    fn rules(&mut self) -> Option<&mut weft_schema::rules::RulesGate> {
        self.host
            .gate_mut()?
            .as_any_mut()
            .downcast_mut::<weft_schema::rules::RulesGate>()
    }

    /// A checked document message: handed to the engine if `conn` is subscribed to its
    /// document. A panic inside Automerge on it costs that connection and reloads the
    /// document, never the relay.
    fn on_inbound(&mut self, conn: ConnId, inbound: Inbound) {
        let doc = inbound.doc();
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        if !c.docs.contains_key(&doc) {
            self.send(conn, &forbidden(doc));
            return;
        }
        if !self.within_user_bytes(conn, &inbound) {
            return;
        }
        let now = self.now_ms();
        let host = &mut self.host;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            host.handle_inbound(now, conn, inbound)
        }));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.malformed(conn, doc, &e),
            Err(_) => {
                tracing::error!(conn = conn.0, %doc, "automerge panicked on a peer's message: closing that connection and reloading the document");
                Metrics::inc(&self.metrics.protocol_errors);
                self.close(
                    conn,
                    ErrorCode::MALFORMED,
                    format!("the relay could not process a message for document {doc}"),
                );
                self.reload_after_panic(doc, conn);
            }
        }
    }

    fn malformed(&mut self, conn: ConnId, doc: DocId, e: &EngineError) {
        tracing::info!(conn = conn.0, %doc, error = %e, "closing a connection that sent an invalid message");
        Metrics::inc(&self.metrics.protocol_errors);
        self.close(
            conn,
            ErrorCode::MALFORMED,
            format!("invalid message for document {doc}"),
        );
    }

    /// The engine's copy of `doc` may be half-changed after a panic: drop it and open it
    /// again, from the store, for every subscriber but `culprit`.
    fn reload_after_panic(&mut self, doc: DocId, culprit: ConnId) {
        self.host.forget(doc);
        let subscribers: Vec<(ConnId, Role)> = self
            .subscribers
            .get(&doc)
            .map(|s| s.iter().map(|(c, r)| (*c, *r)).collect())
            .unwrap_or_default();
        for (conn, role) in subscribers {
            if conn == culprit {
                continue;
            }
            if let Some(opts) = self.open_options(conn, doc, role) {
                self.host.open(self.now_ms(), conn, doc, opts);
            }
        }
    }

    /// How the engine syncs `doc` with `conn`, which holds `role`.
    fn open_options(&self, conn: ConnId, doc: DocId, role: Role) -> Option<OpenOptions> {
        let device = self.conns.get(&conn)?.device;
        let saved = host::saved_sync_state(self.host.store().as_ref(), doc, device.as_bytes())
            .unwrap_or_else(|e| {
                tracing::warn!(%doc, error = %e, "ignoring an unreadable sync state");
                None
            });
        Some(OpenOptions {
            accept_changes: role.can_write(),
            send_changes: true,
            stable_peer: Some(device.as_bytes().to_vec()),
            saved_sync_state: saved,
        })
    }

    fn on_subscribe(&mut self, conn: ConnId, doc: DocId) {
        self.subscribe(conn, doc, true);
    }

    /// `may_create: false` refuses an unknown document instead of creating it (WebSocket hook).
    fn subscribe(&mut self, conn: ConnId, doc: DocId, may_create: bool) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.docs.contains_key(&doc) {
            return;
        }
        let claims = c.claims.clone();
        if c.docs.len() >= self.cfg.max_docs_per_conn {
            self.send(
                conn,
                &Message::Error {
                    code: ErrorCode::RATE_LIMITED,
                    doc: Some(doc),
                    message: "too many documents open on this connection".into(),
                },
            );
            return;
        }
        let meta = match self.meta(doc) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(%doc, error = %e, "reading document metadata failed");
                self.send(conn, &internal(doc));
                return;
            }
        };
        match decide(&claims, &doc, meta.as_ref()) {
            Decision::Refused => {
                let code = refusal_code(&claims, &doc, meta.as_ref());
                self.send(conn, &refusal(code, doc));
            }
            Decision::Allowed(_) => {
                if !self.may_load(conn, doc) {
                    return;
                }
                self.tasks.spawn(async move {
                    Done::Subscribe {
                        conn,
                        doc,
                        created: false,
                        result: Ok(()),
                    }
                });
            }
            // WebSocket hook: a request never creates.
            Decision::Create if !may_create => self.send(conn, &forbidden(doc)),
            Decision::Create => {
                // Counted now (by `may_create`), not once durable: a burst of creations must
                // not all pass the quota while the first ones are in flight.
                if !self.may_create(conn, doc, &claims.sub) {
                    return;
                }
                // The owner is recorded, durably and with its index row, before the document
                // is served.
                let change = sharing::create(&claims.sub, doc, Self::unix_now() * 1000);
                self.metas.insert(doc, change.meta);
                let ticket = self.group.submit(change.batch);
                self.tasks.spawn(async move {
                    Done::Subscribe {
                        conn,
                        doc,
                        created: true,
                        result: ticket.await,
                    }
                });
            }
        }
    }

    /// The relay metadata of `doc`: cached for documents with subscribers, else read.
    fn meta(&self, doc: DocId) -> Result<Option<DocMeta>, DocStoreError> {
        if let Some(m) = self.metas.get(&doc) {
            return Ok(Some(m.clone()));
        }
        // A point read in redb: microseconds, so it is done inline.
        docstore::load_meta(self.host.store().as_ref(), doc)
    }

    /// Opens a subscription whose authorization (and owner record, if it created the
    /// document) completed, deciding again: an access change may have landed meanwhile.
    fn open_subscription(&mut self, conn: ConnId, doc: DocId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let claims = c.claims.clone();
        let meta = match self.meta(doc) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(%doc, error = %e, "reading document metadata failed");
                self.send(conn, &internal(doc));
                return;
            }
        };
        let Some(role) = crate::access::readable_role(&claims, &doc, meta.as_ref()) else {
            let code = refusal_code(&claims, &doc, meta.as_ref());
            self.send(conn, &refusal(code, doc));
            return;
        };
        if let Some(m) = meta {
            if let (Some(owner), Some(rules)) = (m.owner.clone(), self.rules()) {
                rules.set_owner(doc, &owner);
            }
            self.metas.entry(doc).or_insert(m);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.docs.contains_key(&doc) {
            return;
        }
        c.docs.insert(doc, role);
        let device = c.device;
        let user = c.claims.sub.clone();
        let Some(opts) = self.open_options(conn, doc, role) else {
            return;
        };
        self.send(conn, &Message::Subscribed { doc, role });
        self.send_actors(conn, doc);
        // Presence: the newcomer learns who is here; the others learn of the newcomer.
        let here: Vec<(String, DeviceId)> = self
            .subscribers
            .get(&doc)
            .into_iter()
            .flat_map(|s| s.keys())
            .filter_map(|c| self.conns.get(c).map(|c| (c.claims.sub.clone(), c.device)))
            .collect();
        for (u, d) in here {
            self.send(
                conn,
                &Message::Presence {
                    doc,
                    user: u,
                    device: d,
                    online: true,
                },
            );
        }
        self.broadcast(
            doc,
            Some(conn),
            &Message::Presence {
                doc,
                user,
                device,
                online: true,
            },
        );
        self.subscribers.entry(doc).or_default().insert(conn, role);
        self.host.open(self.now_ms(), conn, doc, opts);
    }

    fn unsubscribe(&mut self, conn: ConnId, doc: DocId) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if c.docs.remove(&doc).is_none() {
            return false;
        }
        c.lagging.remove(&doc);
        let (user, device) = (c.claims.sub.clone(), c.device);
        if let Some(s) = self.subscribers.get_mut(&doc) {
            s.remove(&conn);
            if s.is_empty() {
                self.subscribers.remove(&doc);
                self.metas.remove(&doc);
            }
        }
        self.host.close(self.now_ms(), conn, doc);
        self.broadcast(
            doc,
            Some(conn),
            &Message::Presence {
                doc,
                user,
                device,
                online: false,
            },
        );
        true
    }

    fn on_closed(&mut self, conn: ConnId) {
        let docs: Vec<DocId> = self
            .conns
            .get(&conn)
            .map(|c| c.docs.keys().copied().collect())
            .unwrap_or_default();
        for doc in docs {
            self.unsubscribe(conn, doc);
        }
        self.host.remove_conn(self.now_ms(), conn);
        if let Some(rules) = self.rules() {
            rules.disconnect(conn);
        }
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(set) = self.users.get_mut(&c.claims.sub) {
                set.remove(&conn);
                if set.is_empty() {
                    self.users.remove(&c.claims.sub);
                }
            }
        }
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Nothing => {}
            Done::Loaded(doc, result) => {
                self.loads_running = self.loads_running.saturating_sub(1);
                self.loading.remove(&doc);
                self.start_loads();
                if self.erased.remove(&doc) {
                    // Deleted while it loaded: it must not come back, nor be compacted.
                    return;
                }
                if let Err(e) = self.host.loaded(doc, *result) {
                    tracing::error!(%doc, error = %e, "loading a document failed");
                }
            }
            Done::Subscribe {
                conn,
                doc,
                created,
                result,
            } => match result {
                Ok(()) => {
                    if created {
                        self.mark_dirty(doc); // Postgres checkpoints: the owner record
                    }
                    self.open_subscription(conn, doc);
                    if created {
                        self.created(doc);
                    }
                }
                Err(e) => {
                    tracing::error!(%doc, error = %e, "recording a document's owner failed");
                    if let Some(owner) = self.metas.get(&doc).and_then(|m| m.owner.clone()) {
                        self.creation_failed(&owner);
                    }
                    if !self.subscribers.contains_key(&doc) {
                        self.metas.remove(&doc);
                    }
                    self.send(conn, &internal(doc));
                }
            },
            Done::Control {
                doc,
                request,
                change,
                result,
            } => {
                if result.is_ok() {
                    self.mark_dirty(doc); // Postgres checkpoints: access or deletion changed
                }
                self.control_committed(doc, request, *change, result)
            }
            Done::Erased { doc, result } => {
                if let Err(e) = result {
                    tracing::error!(%doc, error = %e, "erasing a deleted document's content failed; it is erased at the next start");
                }
            }
        }
    }

    fn pump_actions(&mut self) {
        // The engine sends the same `Changes` to every live peer of a document, one after
        // another: encode it once.
        let mut last: Option<(Message, Arc<Vec<u8>>)> = None;
        while let Some(action) = self.host.poll_action() {
            match action {
                Action::Send { conn, msg } => {
                    // Nothing of a document reaches a connection not subscribed to it (this
                    // also covers output produced just before a revocation closed it). Asked of
                    // the document's subscribers, not the connection's documents: the engine
                    // sends one document's output to its peers one after another, so the one
                    // small map stays in cache where a connection's thousands of documents
                    // missed it once per send.
                    let subscribed = msg.doc().is_none_or(|doc| {
                        self.subscribers
                            .get(&doc)
                            .is_some_and(|s| s.contains_key(&conn))
                    });
                    if !subscribed {
                        continue;
                    }
                    if let Message::Changes { doc, .. } = &msg {
                        let doc = *doc;
                        if let Some(t) = self.arrivals.remove(&doc) {
                            self.metrics.observe_fanout(t.elapsed());
                        }
                        let frame = match &last {
                            Some((m, f)) if same_changes(m, &msg) => f.clone(),
                            _ => {
                                let Some(f) = self.encode(&msg) else { continue };
                                last = Some((msg, f.clone()));
                                f
                            }
                        };
                        self.push(conn, Outbound::Frame(frame), Some(doc));
                        continue;
                    }
                    self.send(conn, &msg)
                }
                Action::Wait { what, ticket } => self.commits.push_back((what, ticket)),
                Action::Load { doc } => {
                    if self.host.is_stale(doc) {
                        self.reloads_waiting.push_back(doc);
                    } else {
                        self.loads_waiting.push_back(doc);
                    }
                    self.start_loads();
                }
                Action::Event(Output::Rejected {
                    conn,
                    doc,
                    reason: Rejection::ReadOnly,
                }) => {
                    Metrics::inc(&self.metrics.refused_read_only);
                    let msg = Message::Error {
                        code: ErrorCode::READ_ONLY,
                        doc: Some(doc),
                        message: "read-only: changes were not applied".into(),
                    };
                    self.send(conn, &msg);
                }
                Action::Event(Output::Rejected { conn, doc, reason }) => {
                    // Nothing of the changes was stored or forwarded. The subscription ends, so
                    // the sender does not offer them again and again: a device takes the
                    // relay's version back, an automerge-repo client is told and closed.
                    Metrics::inc(&self.metrics.refused_limit);
                    tracing::info!(conn = conn.0, %doc, %reason, "refused changes");
                    let msg = Message::Error {
                        code: ErrorCode::REFUSED,
                        doc: Some(doc),
                        message: format!("changes refused: {reason}"),
                    };
                    self.send(conn, &msg);
                    self.unsubscribe(conn, doc);
                }
                Action::Event(Output::ProtocolError { conn, doc, error }) => {
                    tracing::info!(conn = conn.0, %doc, %error, "closing a connection that sent an invalid message");
                    self.close(
                        conn,
                        ErrorCode::MALFORMED,
                        format!("invalid message for document {doc}"),
                    );
                }
                Action::Event(Output::Failed { doc, conns }) => {
                    for conn in conns {
                        if let Some(c) = self.conns.get_mut(&conn) {
                            c.docs.remove(&doc);
                        }
                        if let Some(s) = self.subscribers.get_mut(&doc) {
                            s.remove(&conn);
                        }
                        self.send(conn, &internal(doc));
                    }
                }
                Action::Event(Output::GateRecord { doc, key, value }) => {
                    // A new actor binding: every device of the document learns which user it
                    // writes for (a device checks what its own peers forward by it).
                    if let Ok(user) = String::from_utf8(value) {
                        let msg = Message::Actors {
                            doc,
                            actors: vec![wire::ActorEntry { actor: key, user }],
                        };
                        self.broadcast(doc, None, &msg);
                    }
                }
                // Postgres checkpoints: `Changed` is reported once the change is durable.
                Action::Event(Output::Changed { doc, .. }) => {
                    self.mark_dirty(doc);
                    self.count_stored(doc);
                }
                Action::Event(_) => {}
                _ => {}
            }
        }
    }

    /// Starts waiting loads (first loads before reloads) while fewer than `max_loads` run.
    fn start_loads(&mut self) {
        while self.loads_running < self.cfg.max_loads.max(1) {
            let Some(doc) = self
                .loads_waiting
                .pop_front()
                .or_else(|| self.reloads_waiting.pop_front())
            else {
                return;
            };
            self.loads_running += 1;
            self.loading.insert(doc);
            let store = self.host.store().clone();
            // A reload for compaction also saves the document there, off the hub's thread.
            let snapshot = self.host.wants_snapshot(doc);
            self.tasks.spawn(async move {
                let r = tokio::task::spawn_blocking(move || {
                    if snapshot {
                        host::load_for_compaction(store.as_ref(), doc)
                    } else {
                        host::load(store.as_ref(), doc)
                    }
                })
                .await;
                let r = r.unwrap_or_else(|e| {
                    Err(DocStoreError::Store {
                        source: StoreError::Backend {
                            path: Default::default(),
                            message: format!("load task failed: {e}"),
                        },
                    })
                });
                Done::Loaded(doc, Box::new(r))
            });
        }
    }

    fn broadcast(&mut self, doc: DocId, except: Option<ConnId>, msg: &Message) {
        let Some(frame) = self.encode(msg) else {
            return;
        };
        let targets: Vec<ConnId> = self
            .subscribers
            .get(&doc)
            .map(|s| s.keys().copied().filter(|c| Some(*c) != except).collect())
            .unwrap_or_default();
        for conn in targets {
            self.push(conn, outbound(msg, frame.clone()), resyncable(msg));
        }
    }

    fn encode(&self, msg: &Message) -> Option<Arc<Vec<u8>>> {
        match wire::frame(msg, self.cfg.max_frame) {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => {
                tracing::error!(error = %e, "could not encode a message");
                None
            }
        }
    }

    fn send(&mut self, conn: ConnId, msg: &Message) {
        if let Some(frame) = self.encode(msg) {
            self.push(conn, outbound(msg, frame), resyncable(msg));
        }
    }

    /// Queues a frame for `conn`. `resync` names the document of a sync frame (`Sync`,
    /// `Changes`, `Ack`): dropped on a full queue, the document is resynced from heads once
    /// the queue drains. Any other reliable frame (`Subscribed`, `Error`, `Docs`, `Reply`...)
    /// cannot be recovered that way, so a connection too far behind to take one is closed;
    /// the device reconnects and starts afresh.
    ///
    /// Reliable frames are gathered per connection during a pass of the hub loop and put on
    /// the queue as one entry at its end ([`Hub::flush`]): a burst (a group commit releasing
    /// hundreds of changes) takes one queue slot and one wake-up of the writer, not one per
    /// frame. The queue's bound is then `queue_len` batches of at most `MAX_BATCH_BYTES` plus
    /// one frame.
    fn push(&mut self, conn: ConnId, out: Outbound, resync: Option<DocId>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        let frame = match out {
            Outbound::Frame(frame) => frame,
            // Best-effort frames never take the second half of a queue (it is kept for frames
            // that must arrive), and dropping one needs no resync: a resync would not bring it
            // back.
            ephemeral @ Outbound::Ephemeral(_) => {
                if c.out.capacity() * 2 < c.out.max_capacity() {
                    Metrics::inc(&self.metrics.queue_drops);
                    return;
                }
                match c.out.try_send(ephemeral) {
                    Ok(()) => Metrics::inc(&self.metrics.messages_out),
                    Err(_) => Metrics::inc(&self.metrics.queue_drops),
                }
                return;
            }
            close @ Outbound::Close { .. } => {
                let _ = c.out.try_send(close);
                return;
            }
        };
        if c.batch.bytes.is_empty() {
            self.unflushed.push(conn);
            // A frame larger than a whole batch (a large change) takes what it needs.
            c.batch.bytes.reserve(
                (c.last_batch_bytes + c.last_batch_bytes / 4)
                    .min(MAX_BATCH_BYTES)
                    .max(frame.len()),
            );
        }
        c.batch.bytes.extend_from_slice(&frame);
        c.batch.frames += 1;
        match resync {
            Some(doc) => c.batch.docs.push(doc),
            None => c.batch.must_arrive = true,
        }
        if c.batch.bytes.len() >= MAX_BATCH_BYTES {
            self.flush_conn(conn);
        }
    }

    /// Puts every connection's batch on its queue.
    fn flush(&mut self) {
        for conn in std::mem::take(&mut self.unflushed) {
            self.flush_conn(conn);
        }
    }

    /// Puts `conn`'s batch on its queue. On a full queue nothing blocks: the batch is dropped,
    /// its documents are resynced from heads once the queue drains, and a connection that
    /// lost a frame no resync replaces is closed (the device reconnects and starts afresh).
    pub(super) fn flush_conn(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.batch.bytes.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut c.batch);
        c.last_batch_bytes = batch.bytes.len();
        match c.out.try_send(Outbound::Frame(Arc::new(batch.bytes))) {
            Ok(()) => Metrics::add(&self.metrics.messages_out, batch.frames),
            Err(mpsc::error::TrySendError::Full(_)) => {
                Metrics::add(&self.metrics.queue_drops, batch.frames);
                c.lagging.extend(batch.docs);
                if batch.must_arrive {
                    self.close(
                        conn,
                        ErrorCode::RATE_LIMITED,
                        "the connection fell too far behind".into(),
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn close(&mut self, conn: ConnId, code: ErrorCode, reason: String) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        // The close order must get through even when the queue is full.
        let out = c.out.clone();
        c.closing = true;
        tokio::spawn(async move {
            let _ = out.send(Outbound::Close { code, reason }).await;
        });
    }

    /// Resyncs lagging peers whose queues drained; closes connections whose token expired.
    fn housekeeping(&mut self) {
        self.arrivals
            .retain(|_, t| t.elapsed() < Duration::from_secs(10));
        let loaded = self.host.loaded_docs() as u64;
        self.metrics
            .documents_loaded
            .store(loaded, std::sync::atomic::Ordering::Relaxed);
        self.enforce_memory_budget();
        self.passes_since_sizes += 1;
        if self.passes_since_sizes >= 20 {
            self.passes_since_sizes = 0;
            self.record_sizes();
        }
        self.metrics.chunks_quarantined.store(
            self.host.quarantined(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let now = Self::unix_now();
        let leeway = self.verifier.leeway_secs();
        let expired: Vec<ConnId> = self
            .conns
            .iter()
            // An issuer may write any `exp` up to u64::MAX: saturate rather than overflow.
            .filter(|(_, c)| c.claims.exp.saturating_add(leeway) < now)
            .map(|(id, _)| *id)
            .collect();
        for conn in expired {
            self.close(conn, ErrorCode::UNAUTHENTICATED, "the token expired".into());
        }
        let ready: Vec<(ConnId, Vec<DocId>)> = self
            .conns
            .iter_mut()
            .filter(|(_, c)| !c.lagging.is_empty() && c.out.capacity() * 2 >= c.out.max_capacity())
            .map(|(id, c)| (*id, c.lagging.drain().collect()))
            .collect();
        for (conn, docs) in ready {
            for doc in docs {
                self.host.resync(self.now_ms(), doc, conn);
            }
        }
        self.retry_discovery();
    }
}

/// Ephemeral data and presence are best-effort; everything else must arrive in order.
/// The document whose sync a dropped `msg` can be recovered by (a resync from heads).
fn resyncable(msg: &Message) -> Option<DocId> {
    match msg {
        Message::Sync { doc, .. } | Message::Changes { doc, .. } | Message::Ack { doc, .. } => {
            Some(*doc)
        }
        _ => None,
    }
}

/// Whether two `Changes` messages are clones of one (the engine sends the same message to
/// every live peer): the same document and the same shared buffers, so no bytes are compared.
fn same_changes(a: &Message, b: &Message) -> bool {
    match (a, b) {
        (
            Message::Changes {
                doc: d1,
                changes: c1,
            },
            Message::Changes {
                doc: d2,
                changes: c2,
            },
        ) => {
            d1 == d2
                && c1.len() == c2.len()
                && c1
                    .iter()
                    .zip(c2)
                    .all(|(x, y)| x.as_ptr() == y.as_ptr() && x.len() == y.len())
        }
        _ => false,
    }
}

fn outbound(msg: &Message, frame: Arc<Vec<u8>>) -> Outbound {
    match msg {
        Message::Ephemeral { .. } | Message::Presence { .. } => Outbound::Ephemeral(frame),
        _ => Outbound::Frame(frame),
    }
}

fn forbidden(doc: DocId) -> Message {
    refusal(ErrorCode::FORBIDDEN, doc)
}

/// A refusal for one document: `FORBIDDEN` (never saying whether it exists) or `DELETED`.
fn refusal(code: ErrorCode, doc: DocId) -> Message {
    let message = if code == ErrorCode::DELETED {
        "the document was deleted"
    } else {
        "not permitted"
    };
    Message::Error {
        code,
        doc: Some(doc),
        message: message.into(),
    }
}

fn internal(doc: DocId) -> Message {
    Message::Error {
        code: ErrorCode::INTERNAL,
        doc: Some(doc),
        message: "the relay could not serve this document".into(),
    }
}
