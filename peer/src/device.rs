//! [`Device`]: the handle an app holds, and the driver task that alone owns the engine, the
//! store writer and the connections' document state.
//!
//! Every request is a message to the driver over a bounded channel. Writes are answered when
//! their store batch is durable (the engine's persist request for the change completed), so a
//! caller never sees a change that a crash could lose. Connection tasks (`net.rs`) feed the
//! driver the frames they read and carry out the frames it sends; the driver never awaits a
//! connection (sends are `try_send` on bounded queues; a full queue marks the document lagging
//! and it is resynced from heads once the queue has room).
//!
//! When the relay says a document was deleted (`DELETED`, or the answer to this device's own
//! delete request), the driver erases it (`device/erasing.rs`): it leaves memory, its chunks and
//! sync states leave the store (which then scrubs its file), its queued requests and any
//! version kept aside in `rejected/` go, and only a tombstone stays, so that it is not listed,
//! not synced again, and commands on it fail with [`DeviceError::Deleted`].

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use weft_core::automerge::{Automerge, ChangeHash, Patch};
use weft_core::engine::{ConnId, Engine, EngineConfig, OpenOptions, Origin, Output, Rejection};
use weft_core::host::{self, Action, Host, HostConfig, Loaded, Waiting};
use weft_core::quic::DeviceKey;
use weft_core::store::docs::{self, DocMeta, DocStoreError};
use weft_core::store::{erase, GroupCommit, KvStore, StagingLimits, StoreError, WriteBatch};
use weft_core::wire::{DocEntry, ErrorCode, Message};
use weft_core::{DeviceId, DocId, Document, Role};

use crate::net::{self, LinkHandle, Outgoing, PeerConfig, RelayConfig};
use crate::status::{DocStatus, LinkState, LinkStatus, Status, SyncState};
use crate::{unix_ms, DataDir, DeviceError};

mod erasing;

/// Commands queued to the driver at most.
const CMD_QUEUE: usize = 1024;
/// Events buffered for slow subscribers (older ones are skipped, see [`Device::events`]).
const EVENT_BUFFER: usize = 4096;
/// How often dirty metadata is written and lagging documents are resynced.
const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// Where a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOrigin {
    /// Made on this device.
    Local,
    /// Received from a relay or peer.
    Remote,
}

/// Something that happened on the device, for an app to show.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A document changed and the change is durable.
    Changed {
        /// The document.
        doc: DocId,
        /// Its heads now.
        heads: Vec<ChangeHash>,
        /// Local or remote.
        origin: EventOrigin,
        /// What changed, as Automerge patches from the previous event's heads.
        patches: Arc<Vec<Patch>>,
    },
    /// Ephemeral data (typing indicators, cursors) for a document; never stored.
    Ephemeral {
        /// The document.
        doc: DocId,
        /// The sender's user, when a relay names it.
        user: Option<String>,
        /// The sender's device, when known.
        device: Option<DeviceId>,
        /// The payload.
        data: Vec<u8>,
    },
    /// Someone joined or left a document.
    Presence {
        /// The document.
        doc: DocId,
        /// The user.
        user: String,
        /// Their device.
        device: DeviceId,
        /// Joined or left.
        online: bool,
    },
    /// The relay refused this device's changes to a read-only document; they were not applied
    /// there. The local version was kept aside (at `kept`, an Automerge file) and the document
    /// returns to the relay's version.
    Rejected {
        /// The document.
        doc: DocId,
        /// Where the rejected version was saved, if it could be.
        kept: Option<std::path::PathBuf>,
    },
    /// A relay answered a share, unshare or delete request.
    Control {
        /// The request.
        op: ControlOp,
        /// `Ok` when done; otherwise why not.
        result: Result<(), String>,
    },
    /// The relay refused the document (not permitted, or deleted).
    Refused {
        /// The document.
        doc: DocId,
        /// Why, in a sentence.
        reason: String,
    },
    /// The document was deleted by its owner; this device erased its copy.
    Deleted {
        /// The document.
        doc: DocId,
    },
}

/// A document this device holds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DocInfo {
    /// Its id.
    pub id: DocId,
    /// Its kind (`conversation`, `trip`, ...), when known.
    pub kind: Option<String>,
    /// This device's user's role, when a relay told it.
    pub role: Option<Role>,
    /// Its owner, when known.
    pub owner: Option<String>,
    /// Whether the relay no longer shares it with this user.
    pub revoked: bool,
    /// Whether it was deleted (a deleted document is erased and no longer listed).
    pub deleted: bool,
    /// The heads a relay or peer last confirmed, lowercase hex.
    pub confirmed_heads: Vec<String>,
    /// When a relay or peer last confirmed it in sync (ms since the Unix epoch).
    pub last_sync_ms: Option<u64>,
}

impl DocInfo {
    fn new(id: DocId, m: &DocMeta) -> Self {
        DocInfo {
            id,
            kind: m.kind.clone(),
            role: m.role,
            owner: m.owner.clone(),
            revoked: m.revoked,
            deleted: m.deleted_at_ms.is_some(),
            confirmed_heads: m.confirmed_heads.clone(),
            last_sync_ms: m.last_sync_ms,
        }
    }
}

/// A sharing or lifecycle request for the relay, queued durably until a relay answers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlOp {
    /// Give `user` `role` on `doc`.
    Share {
        /// The document.
        doc: DocId,
        /// The user.
        user: String,
        /// The role.
        role: Role,
    },
    /// Take `user` off `doc`'s access list.
    Unshare {
        /// The document.
        doc: DocId,
        /// The user.
        user: String,
    },
    /// Delete `doc` for everyone.
    Delete {
        /// The document.
        doc: DocId,
    },
}

impl ControlOp {
    /// The document concerned.
    pub fn doc(&self) -> DocId {
        match self {
            ControlOp::Share { doc, .. }
            | ControlOp::Unshare { doc, .. }
            | ControlOp::Delete { doc } => *doc,
        }
    }

    fn message(&self, id: u64) -> Message {
        match self.clone() {
            ControlOp::Share { doc, user, role } => Message::Share {
                id,
                doc,
                user,
                role,
            },
            ControlOp::Unshare { doc, user } => Message::Unshare { id, doc, user },
            ControlOp::Delete { doc } => Message::Delete { id, doc },
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Queued {
    id: u64,
    op: ControlOp,
}

/// Most requests waiting for a relay at once.
const MAX_OUTBOX: usize = 10_000;

type ChangeFn = Box<dyn FnOnce(&mut Automerge) -> Box<dyn Any + Send> + Send>;
type ReadFn = Box<dyn FnOnce(&Document) -> Box<dyn Any + Send> + Send>;
type Reply<T> = oneshot::Sender<Result<T, DeviceError>>;
/// A caller waiting for its write to be durable, and the closure's result to hand it.
type Waiter = (Reply<Box<dyn Any + Send>>, Box<dyn Any + Send>);

pub(crate) enum Op {
    Change(ChangeFn, Reply<Box<dyn Any + Send>>),
    Read(ReadFn, Reply<Box<dyn Any + Send>>),
}

/// What kind of connection a [`ConnId`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnKind {
    /// To a relay: it grants roles and lists documents.
    Relay,
    /// To a peer device we dialed.
    Dialer,
    /// From a peer device that dialed us.
    Listener,
}

pub(crate) struct Registration {
    pub(crate) link: u64,
    pub(crate) kind: ConnKind,
    pub(crate) out: mpsc::Sender<Outgoing>,
    /// The stable id the other side's sync states are stored under.
    pub(crate) peer_key: Vec<u8>,
    pub(crate) user: Option<String>,
    /// Documents to ask for besides the local ones.
    pub(crate) extra_docs: Vec<DocId>,
}

pub(crate) enum Cmd {
    Create {
        kind: Option<String>,
        init: ChangeFn,
        reply: Reply<DocId>,
    },
    Op(DocId, Op),
    List(oneshot::Sender<Vec<DocInfo>>),
    Info(DocId, oneshot::Sender<Option<DocInfo>>),
    NewLink(String, oneshot::Sender<u64>),
    LinkState {
        link: u64,
        state: LinkState,
        error: Option<String>,
        refused: bool,
    },
    DropLink(u64),
    AddConn(Registration, oneshot::Sender<ConnId>),
    Inbound(ConnId, Message),
    Closed(ConnId),
    Ephemeral(DocId, Vec<u8>),
    Control(
        ControlOp,
        oneshot::Sender<Result<oneshot::Receiver<Result<(), String>>, DeviceError>>,
    ),
    Shutdown(oneshot::Sender<()>),
}

struct Shared {
    cmds: mpsc::Sender<Cmd>,
    events: broadcast::Sender<Event>,
    status: watch::Receiver<Arc<Status>>,
    key: DeviceKey,
    dir: DataDir,
    cancel: CancellationToken,
    driver: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    links: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// One device: its documents, its store and its connections. Cheap to clone; every clone
/// drives the same device. [`Device::close`] shuts it down (dropping every clone also stops it,
/// without waiting).
#[derive(Clone)]
pub struct Device {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("id", &self.id())
            .field("dir", &self.shared.dir.path())
            .finish()
    }
}

impl Device {
    /// Opens the device in `dir` (creating the directory, key and store if missing) and starts
    /// its driver. Fails with [`StoreError::Locked`] inside [`DeviceError::Store`] when another
    /// process holds the store.
    pub async fn open(dir: DataDir) -> Result<Device, DeviceError> {
        let key = dir.init(None)?;
        let store_path = dir.store_path();
        // Content that deleted documents left behind is erased, and the file rewritten without
        // it, before anything reads the store.
        let store = tokio::task::spawn_blocking(move || {
            erase::open_redb(&store_path, StagingLimits::default())
        })
        .await
        .map_err(|e| DeviceError::Connection(format!("store open task failed: {e}")))?
        .map_err(|e| match e {
            // A store error stays one: `Locked` tells a busy directory.
            DocStoreError::Store { source } => DeviceError::Store(source),
            other => DeviceError::DocStore(other),
        })?;
        // The store creates its file with the default mode.
        dir.make_store_private()?;
        let store: Arc<dyn KvStore> = Arc::new(store);
        let metas = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || load_metas(store.as_ref()))
                .await
                .map_err(|e| DeviceError::Connection(format!("store read task failed: {e}")))??
        };
        let outbox: Vec<Queued> = match std::fs::read(dir.outbox_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| DeviceError::DataDir {
                path: dir.outbox_path(),
                message: format!("unreadable request queue: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(DeviceError::DataDir {
                    path: dir.outbox_path(),
                    message: e.to_string(),
                })
            }
        };
        let group = Arc::new(GroupCommit::new(store)?);
        let (cmd_tx, cmd_rx) = mpsc::channel(CMD_QUEUE);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (status_tx, status_rx) = watch::channel(Arc::new(Status::default()));
        let mut engine = Engine::new(EngineConfig::device());
        // Changes from this device's own peers are checked (identities and write rules); the
        // relay's were checked by the relay.
        let mut gate = weft_schema::rules::RulesGate::new(Arc::new(dir.kinds()));
        if let Some(user) = dir.name() {
            gate.set_local_user(&user);
        }
        for (doc, m) in &metas {
            if let Some(owner) = &m.owner {
                gate.set_owner(*doc, owner);
            }
        }
        engine.set_gate(Box::new(gate));
        let host = Host::new(engine, group.clone(), HostConfig::default());
        let driver = Driver {
            host,
            group,
            metas,
            conns: HashMap::new(),
            links: BTreeMap::new(),
            next_link: 1,
            next_conn: 1,
            waiters: HashMap::new(),
            pending: HashMap::new(),
            loading: HashSet::new(),
            tasks: JoinSet::new(),
            start: Instant::now(),
            events: events.clone(),
            announced: HashMap::new(),
            status_tx,
            status_dirty: false,
            dirty_metas: HashSet::new(),
            device: key.device_id(),
            actor_secret: blake3::derive_key(
                "weft device actor secret v1",
                key.to_pem().as_bytes(),
            ),
            dir: dir.clone(),
            resetting: HashSet::new(),
            outbox,
            control_waiters: HashMap::new(),
        };
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(driver.run(cmd_rx));
        Ok(Device {
            shared: Arc::new(Shared {
                cmds: cmd_tx,
                events,
                status: status_rx,
                key,
                dir,
                cancel,
                driver: std::sync::Mutex::new(Some(handle)),
                links: std::sync::Mutex::new(Vec::new()),
            }),
        })
    }

    /// This device's id: the fingerprint of its key.
    pub fn id(&self) -> DeviceId {
        self.shared.key.device_id()
    }

    /// The device key (for connections).
    pub(crate) fn key(&self) -> &DeviceKey {
        &self.shared.key
    }

    /// The data directory.
    pub fn dir(&self) -> &DataDir {
        &self.shared.dir
    }

    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        &self.shared.cancel
    }

    pub(crate) async fn cmd(&self, cmd: Cmd) -> Result<(), DeviceError> {
        self.shared
            .cmds
            .send(cmd)
            .await
            .map_err(|_| DeviceError::Closed)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, DeviceError> {
        let (tx, rx) = oneshot::channel();
        self.cmd(make(tx)).await?;
        rx.await.map_err(|_| DeviceError::Closed)
    }

    /// Creates a document of `kind` whose first change `init` makes, and returns its id once
    /// that change is durable.
    pub async fn create<R: Send + 'static>(
        &self,
        kind: Option<&str>,
        init: impl FnOnce(&mut Automerge) -> R + Send + 'static,
    ) -> Result<(DocId, R), DeviceError> {
        let (rtx, rrx) = std::sync::mpsc::channel();
        let init: ChangeFn = Box::new(move |am| {
            let _ = rtx.send(init(am));
            Box::new(())
        });
        let doc = self
            .ask(|reply| Cmd::Create {
                kind: kind.map(str::to_owned),
                init,
                reply,
            })
            .await??;
        let r = rrx.recv().map_err(|_| DeviceError::Closed)?;
        Ok((doc, r))
    }

    /// Changes a document: `f` runs on it, and the call returns once the change is durable.
    /// Fails with [`DeviceError::ReadOnly`] (changing nothing) when this device's user may only
    /// read it.
    pub async fn change<R: Send + 'static>(
        &self,
        doc: DocId,
        f: impl FnOnce(&mut Automerge) -> R + Send + 'static,
    ) -> Result<R, DeviceError> {
        let f: ChangeFn = Box::new(move |am| Box::new(f(am)));
        let r = self
            .ask(|reply| Cmd::Op(doc, Op::Change(f, reply)))
            .await??;
        Ok(*r.downcast::<R>().map_err(|_| DeviceError::Closed)?)
    }

    /// Reads a document.
    pub async fn read<R: Send + 'static>(
        &self,
        doc: DocId,
        f: impl FnOnce(&Automerge) -> R + Send + 'static,
    ) -> Result<R, DeviceError> {
        let f: ReadFn = Box::new(move |d| Box::new(f(d.automerge())));
        let r = self.ask(|reply| Cmd::Op(doc, Op::Read(f, reply))).await??;
        Ok(*r.downcast::<R>().map_err(|_| DeviceError::Closed)?)
    }

    /// The documents this device holds, by id.
    pub async fn list(&self) -> Result<Vec<DocInfo>, DeviceError> {
        self.ask(Cmd::List).await
    }

    /// What the device knows about one document. Fails with [`DeviceError::Deleted`] for a
    /// document its owner deleted.
    pub async fn info(&self, doc: DocId) -> Result<DocInfo, DeviceError> {
        let info = self
            .ask(|r| Cmd::Info(doc, r))
            .await?
            .ok_or(DeviceError::UnknownDoc(doc))?;
        if info.deleted {
            return Err(DeviceError::Deleted(doc));
        }
        Ok(info)
    }

    /// Every event from now on. A subscriber that falls more than a few thousand events
    /// behind gets `RecvError::Lagged` and continues with newer ones.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// The sync status, updated as it changes.
    pub fn status(&self) -> watch::Receiver<Arc<Status>> {
        self.shared.status.clone()
    }

    /// Sends ephemeral data about `doc` to every relay and peer it is synced with. Best effort.
    pub async fn send_ephemeral(&self, doc: DocId, data: Vec<u8>) -> Result<(), DeviceError> {
        self.cmd(Cmd::Ephemeral(doc, data)).await
    }

    /// Queues a sharing or deletion request for the relay (durably, so it survives restarts and
    /// is sent at the next connection). Returns once it is queued, with a receiver for the
    /// relay's answer.
    pub async fn control(
        &self,
        op: ControlOp,
    ) -> Result<oneshot::Receiver<Result<(), String>>, DeviceError> {
        self.ask(|r| Cmd::Control(op, r)).await?
    }

    /// Keeps a connection to a relay, reconnecting with backoff until the handle is dropped or
    /// stopped.
    pub async fn connect_relay(&self, cfg: RelayConfig) -> Result<LinkHandle, DeviceError> {
        let link = self
            .ask(|r| Cmd::NewLink(format!("relay {}", cfg.addr), r))
            .await?;
        Ok(net::spawn_relay_link(self.clone(), link, cfg))
    }

    /// Keeps a direct connection to a peer device, reconnecting until stopped.
    pub async fn connect_peer(&self, cfg: PeerConfig) -> Result<LinkHandle, DeviceError> {
        let link = self
            .ask(|r| Cmd::NewLink(format!("peer {}", cfg.addr), r))
            .await?;
        Ok(net::spawn_peer_link(self.clone(), link, cfg))
    }

    /// Accepts peer devices in `allow` on `addr`; returns the bound address. Runs until the
    /// device closes.
    pub async fn listen_p2p(
        &self,
        addr: std::net::SocketAddr,
        allow: Vec<DeviceId>,
    ) -> Result<std::net::SocketAddr, DeviceError> {
        let (bound, task) = net::listen(self.clone(), addr, allow)?;
        self.track(task);
        Ok(bound)
    }

    pub(crate) fn track(&self, task: tokio::task::JoinHandle<()>) {
        if let Ok(mut links) = self.shared.links.lock() {
            links.retain(|t| !t.is_finished());
            links.push(task);
        }
    }

    pub(crate) async fn new_link(&self, name: String) -> Result<u64, DeviceError> {
        self.ask(|r| Cmd::NewLink(name, r)).await
    }

    /// Stops every connection, writes what is pending and closes the store. Waits for all of it.
    pub async fn close(self) {
        self.shared.cancel.cancel();
        let tasks: Vec<_> = match self.shared.links.lock() {
            Ok(mut l) => l.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for t in tasks {
            let _ = t.await;
        }
        let (tx, rx) = oneshot::channel();
        if self.shared.cmds.send(Cmd::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self.shared.driver.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = h.await;
        }
    }
}

fn load_metas(store: &dyn KvStore) -> Result<HashMap<DocId, DocMeta>, DeviceError> {
    let mut out = HashMap::new();
    for doc in docs::list_docs(store)? {
        let meta = docs::load_meta(store, doc)?.unwrap_or_default();
        out.insert(doc, meta);
    }
    Ok(out)
}

enum Done {
    Committed(Waiting, Result<(), StoreError>),
    /// A document's store was emptied to take the relay's version again.
    Reset(DocId, Result<(), StoreError>),
    /// A metadata batch.
    Meta(Result<(), StoreError>),
    Loaded(DocId, Box<Result<Option<Loaded>, DocStoreError>>),
}

struct Conn {
    link: u64,
    kind: ConnKind,
    out: mpsc::Sender<Outgoing>,
    peer_key: Vec<u8>,
    /// Documents asked for (relay/dialer) or opened.
    docs: HashSet<DocId>,
    lagging: HashSet<DocId>,
}

struct Driver {
    host: Host,
    group: Arc<GroupCommit>,
    metas: HashMap<DocId, DocMeta>,
    conns: HashMap<ConnId, Conn>,
    links: BTreeMap<u64, LinkStatus>,
    next_link: u64,
    next_conn: u64,
    /// Callers waiting for a write to be durable.
    waiters: HashMap<weft_core::engine::PersistId, Waiter>,
    /// Operations waiting for their document to load.
    pending: HashMap<DocId, Vec<Op>>,
    loading: HashSet<DocId>,
    tasks: JoinSet<Done>,
    start: Instant,
    events: broadcast::Sender<Event>,
    /// The heads of each document's last `Changed` event (patches are computed from there).
    announced: HashMap<DocId, Vec<ChangeHash>>,
    status_tx: watch::Sender<Arc<Status>>,
    status_dirty: bool,
    dirty_metas: HashSet<DocId>,
    device: DeviceId,
    /// Derived from the device key: the actor ids this device writes with (see
    /// [`Driver::actor_for`]).
    actor_secret: [u8; 32],
    dir: DataDir,
    /// Documents being reset to the relay's version.
    resetting: HashSet<DocId>,
    /// Requests for the relay not yet answered, oldest first.
    outbox: Vec<Queued>,
    control_waiters: HashMap<u64, oneshot::Sender<Result<(), String>>>,
}

impl Driver {
    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>) {
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown: Option<oneshot::Sender<()>> = None;
        loop {
            self.pump();
            self.publish_status();
            let wake = self
                .host
                .next_wakeup()
                .map(|ms| self.start + Duration::from_millis(ms));
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Shutdown(reply)) => { shutdown = Some(reply); break; }
                    Some(cmd) => self.on_cmd(cmd),
                    None => break,
                },
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => match done {
                    Ok(done) => self.on_done(done),
                    Err(e) => tracing::error!(error = %e, "device task failed"),
                },
                _ = sleep => {
                    let now = self.now_ms();
                    self.host.tick(now);
                }
                _ = housekeeping.tick() => self.housekeeping(),
            }
        }
        // Drain: every write in flight completes, then the metadata, then the store closes.
        for conn in self.conns.values() {
            let _ = conn.out.try_send(Outgoing::Close);
        }
        self.flush_metas();
        loop {
            self.pump();
            match self.tasks.join_next().await {
                Some(Ok(done)) => self.on_done(done),
                Some(Err(e)) => tracing::error!(error = %e, "device task failed"),
                None => break,
            }
        }
        // Answer whoever still waits on a load that will not happen.
        for (_, ops) in self.pending.drain() {
            for op in ops {
                match op {
                    Op::Change(_, r) | Op::Read(_, r) => {
                        let _ = r.send(Err(DeviceError::Closed));
                    }
                }
            }
        }
        drop(self.host);
        if let Some(group) = Arc::into_inner(self.group) {
            let _ = tokio::task::spawn_blocking(move || group.shutdown()).await;
        }
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Create { kind, init, reply } => self.create(kind, init, reply),
            Cmd::Op(doc, op) => self.op(doc, op),
            Cmd::List(reply) => {
                let mut list: Vec<DocInfo> = self
                    .metas
                    .iter()
                    .filter(|(_, m)| m.deleted_at_ms.is_none())
                    .map(|(id, m)| DocInfo::new(*id, m))
                    .collect();
                list.sort_by_key(|d| d.id.to_string());
                let _ = reply.send(list);
            }
            Cmd::Info(doc, reply) => {
                let _ = reply.send(self.metas.get(&doc).map(|m| DocInfo::new(doc, m)));
            }
            Cmd::NewLink(name, reply) => {
                let id = self.next_link;
                self.next_link += 1;
                self.links.insert(id, LinkStatus::new(name));
                self.status_dirty = true;
                let _ = reply.send(id);
            }
            Cmd::LinkState {
                link,
                state,
                error,
                refused,
            } => {
                if let Some(l) = self.links.get_mut(&link) {
                    l.state = state;
                    if state != LinkState::Online {
                        l.last_error = error;
                        l.refused = refused;
                        for d in l.docs.values_mut() {
                            if d.state != SyncState::Refused {
                                d.state = SyncState::Offline;
                            }
                        }
                    } else {
                        l.last_error = None;
                        l.refused = false;
                    }
                    self.status_dirty = true;
                }
            }
            Cmd::DropLink(link) => {
                self.links.remove(&link);
                self.status_dirty = true;
            }
            Cmd::AddConn(reg, reply) => {
                let conn = ConnId(self.next_conn);
                self.next_conn += 1;
                let _ = reply.send(conn);
                self.add_conn(conn, reg);
            }
            Cmd::Inbound(conn, msg) => self.inbound(conn, msg),
            Cmd::Closed(conn) => {
                if let Some(rules) = self.rules() {
                    rules.disconnect(conn);
                }
                if let Some(c) = self.conns.remove(&conn) {
                    self.host.remove_conn(self.now_ms(), conn);
                    if let Some(l) = self.links.get_mut(&c.link) {
                        l.discovered = false;
                        l.pending_controls = 0;
                        for d in l.docs.values_mut() {
                            if d.state != SyncState::Refused {
                                d.state = SyncState::Offline;
                            }
                        }
                        self.status_dirty = true;
                    }
                }
            }
            Cmd::Ephemeral(doc, data) => {
                let targets: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.docs.contains(&doc))
                    .map(|(id, _)| *id)
                    .collect();
                for conn in targets {
                    let msg = Message::Ephemeral {
                        doc,
                        user: None,
                        device: Some(self.device),
                        data: data.clone(),
                    };
                    self.send(conn, msg);
                }
            }
            Cmd::Control(op, reply) => {
                let _ = reply.send(self.queue_control(op));
            }
            Cmd::Shutdown(_) => {}
        }
    }

    fn save_outbox(&self) -> Result<(), DeviceError> {
        let bytes = serde_json::to_vec(&self.outbox).map_err(|e| DeviceError::DataDir {
            path: self.dir.outbox_path(),
            message: e.to_string(),
        })?;
        crate::dir::write_private(&self.dir.outbox_path(), &bytes).map_err(|e| {
            DeviceError::DataDir {
                path: self.dir.outbox_path(),
                message: format!("cannot write the request queue: {e}"),
            }
        })
    }

    fn queue_control(
        &mut self,
        op: ControlOp,
    ) -> Result<oneshot::Receiver<Result<(), String>>, DeviceError> {
        if self.outbox.len() >= MAX_OUTBOX {
            return Err(DeviceError::Connection(format!(
                "{MAX_OUTBOX} requests are already waiting for a relay"
            )));
        }
        let id: u64 = rand::random();
        self.outbox.push(Queued { id, op: op.clone() });
        if let Err(e) = self.save_outbox() {
            self.outbox.pop();
            return Err(e);
        }
        let (tx, rx) = oneshot::channel();
        self.control_waiters.insert(id, tx);
        let relays: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.kind == ConnKind::Relay)
            .map(|(id, _)| *id)
            .collect();
        for conn in relays {
            self.send(conn, op.message(id));
            self.note_control_sent(conn);
        }
        Ok(rx)
    }

    fn note_control_sent(&mut self, conn: ConnId) {
        let link = self.conns.get(&conn).map(|c| c.link);
        if let Some(l) = link.and_then(|l| self.links.get_mut(&l)) {
            l.pending_controls += 1;
            self.status_dirty = true;
        }
    }

    fn on_reply(&mut self, conn: ConnId, id: u64, code: Option<ErrorCode>, message: String) {
        let link = self.conns.get(&conn).map(|c| c.link);
        if let Some(l) = link.and_then(|l| self.links.get_mut(&l)) {
            l.pending_controls = l.pending_controls.saturating_sub(1);
            self.status_dirty = true;
        }
        let Some(pos) = self.outbox.iter().position(|q| q.id == id) else {
            return;
        };
        let q = self.outbox.remove(pos);
        if let Err(e) = self.save_outbox() {
            tracing::error!(error = %e, "cannot update the request queue");
        }
        let result = match code {
            None => Ok(()),
            Some(code) => {
                let why = if message.is_empty() {
                    format!("refused with code {}", code.0)
                } else {
                    message
                };
                if let Some(l) = link.and_then(|l| self.links.get_mut(&l)) {
                    l.control_errors.push(format!("{}: {why}", q.op.doc()));
                }
                Err(why)
            }
        };
        if let Some(w) = self.control_waiters.remove(&id) {
            let _ = w.send(result.clone());
        }
        let deleted = match (&q.op, &result) {
            (ControlOp::Delete { doc }, Ok(())) => Some(*doc),
            _ => None,
        };
        let _ = self.events.send(Event::Control { op: q.op, result });
        if let Some(doc) = deleted {
            self.erase(doc);
        }
    }

    /// The relay refused this device's changes to `doc` (read-only): keep the local version
    /// aside, empty the document in the store and take the relay's version again, so the
    /// device never diverges from the relay for good.
    fn reset_to_remote(&mut self, doc: DocId) {
        self.reset_to_remote_as(doc, Some(Role::ReadOnly));
    }

    /// [`Self::reset_to_remote`], for any refusal: `role` is what the device now knows of its
    /// role (`None`: unchanged).
    fn reset_to_remote_as(&mut self, doc: DocId, role: Option<Role>) {
        if !self.resetting.insert(doc) {
            return;
        }
        let saved = self.host.read(doc, |d| d.save()).ok();
        let kept = saved.and_then(|bytes| {
            let dir = self.dir.rejected_path();
            let path = dir.join(format!("{doc}-{}.automerge", unix_ms()));
            let r = crate::dir::create_private_dir(&dir)
                .and_then(|()| crate::dir::write_private(&path, &bytes));
            match r {
                Ok(()) => Some(path),
                Err(e) => {
                    tracing::error!(%doc, error = %e, "cannot keep the rejected version aside");
                    None
                }
            }
        });
        if kept.is_none() {
            // Without a copy aside the local changes would be lost: keep the document as it is
            // (read-only); it stays out of sync with the relay until the app resolves it.
            self.resetting.remove(&doc);
            let _ = self.events.send(Event::Rejected { doc, kept: None });
            return;
        }
        let conns: Vec<ConnId> = self
            .conns
            .iter_mut()
            .filter_map(|(id, c)| c.docs.remove(&doc).then_some(*id))
            .collect();
        for conn in &conns {
            self.send(*conn, Message::Unsubscribe { doc });
            // Still syncing as far as the app can tell: the document is asked for again once
            // the store is reset.
            let link = self.conns.get(conn).map(|c| c.link);
            if let Some(d) = link
                .and_then(|l| self.links.get_mut(&l))
                .and_then(|l| l.docs.get_mut(&doc))
            {
                d.state = SyncState::Syncing;
                self.status_dirty = true;
            }
        }
        self.host.forget(doc);
        self.announced.remove(&doc);
        let mut meta = self.metas.get(&doc).cloned().unwrap_or_default();
        if role.is_some() {
            meta.role = role;
        }
        meta.confirmed_heads.clear();
        meta.actor_epoch = meta.actor_epoch.wrapping_add(1);
        self.metas.insert(doc, meta.clone());
        self.dirty_metas.remove(&doc);
        let mut batch = WriteBatch::new();
        docs::delete_doc(&mut batch, doc);
        docs::put_meta(&mut batch, doc, &meta);
        let ticket = self.group.submit(batch);
        self.tasks
            .spawn(async move { Done::Reset(doc, ticket.await) });
        tracing::warn!(%doc, kept = ?kept, "the relay refused local changes; kept them aside and taking the relay's version");
        let _ = self.events.send(Event::Rejected { doc, kept });
    }

    fn create(&mut self, kind: Option<String>, init: ChangeFn, reply: Reply<DocId>) {
        let doc = DocId::random(&mut rand::rng());
        let now = unix_ms();
        let mut meta = DocMeta::default();
        meta.kind = kind;
        meta.created_at_ms = now;
        meta.updated_at_ms = now;
        // The creator owns it (the relay records the first uploader as the owner).
        meta.owner = self.dir.name();
        if let Some(owner) = meta.owner.clone() {
            if let Some(rules) = self.rules() {
                rules.set_owner(doc, &owner);
            }
        }
        let mut batch = WriteBatch::new();
        docs::put_meta(&mut batch, doc, &meta);
        // The metadata batch is submitted before the first change's: the group-commit writer
        // applies batches in order, so the document is listed once its first change is durable.
        let ticket = self.group.submit(batch);
        self.tasks.spawn(async move { Done::Meta(ticket.await) });
        self.metas.insert(doc, meta);
        self.host.create(self.now_ms(), doc, Document::new());
        let (tx, rx) = oneshot::channel::<Result<Box<dyn Any + Send>, DeviceError>>();
        self.run_op(doc, Op::Change(init, tx));
        tokio::spawn(async move {
            let r = match rx.await {
                Ok(Ok(_)) => Ok(doc),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(DeviceError::Closed),
            };
            let _ = reply.send(r);
        });
        self.subscribe_everywhere(doc);
    }

    /// A new local document is asked for on every relay and dialed peer connection.
    fn subscribe_everywhere(&mut self, doc: DocId) {
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.kind != ConnKind::Listener)
            .map(|(id, _)| *id)
            .collect();
        for conn in conns {
            self.ask_for(conn, doc);
        }
    }

    fn op(&mut self, doc: DocId, op: Op) {
        let known = self.metas.get(&doc).map(|m| m.deleted_at_ms.is_some());
        if known != Some(false) {
            let r = Err(match known {
                Some(true) => DeviceError::Deleted(doc),
                _ => DeviceError::UnknownDoc(doc),
            });
            match op {
                Op::Change(_, reply) | Op::Read(_, reply) => {
                    let _ = reply.send(r);
                }
            }
            return;
        }
        if self.host.is_loaded(doc) {
            self.run_op(doc, op);
        } else {
            self.pending.entry(doc).or_default().push(op);
            self.loading.insert(doc);
            self.host.load(self.now_ms(), doc);
        }
    }

    fn run_op(&mut self, doc: DocId, op: Op) {
        match op {
            Op::Read(f, reply) => {
                let r = self
                    .host
                    .read(doc, f)
                    .map_err(|e| DeviceError::Connection(e.to_string()));
                let _ = reply.send(r);
            }
            Op::Change(f, reply) => {
                let meta = self.metas.get(&doc);
                if meta.is_some_and(|m| m.role == Some(Role::ReadOnly) || m.revoked) {
                    let _ = reply.send(Err(DeviceError::ReadOnly(doc)));
                    return;
                }
                // One actor per document and device (a new one after the relay refused this
                // device's changes): the relay binds it to this device's user, and nobody can
                // predict it to claim it first.
                let actor = self.actor_for(doc);
                let f: ChangeFn = Box::new(move |am: &mut weft_core::automerge::Automerge| {
                    am.set_actor(actor);
                    f(am)
                });
                match self.host.change(self.now_ms(), doc, f) {
                    Ok((r, None)) => {
                        let _ = reply.send(Ok(r));
                    }
                    Ok((r, Some(id))) => {
                        self.waiters.insert(id, (reply, r));
                        if let Some(m) = self.metas.get_mut(&doc) {
                            m.updated_at_ms = unix_ms();
                        }
                        self.mark_all_syncing(doc, None);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(DeviceError::Connection(e.to_string())));
                    }
                }
            }
        }
    }

    /// The actor this device writes `doc` with: a keyed hash of the document and its epoch
    /// (which a reset to the relay's version moves on, so refused changes' sequence numbers are
    /// never reused).
    fn actor_for(&self, doc: DocId) -> weft_core::automerge::ActorId {
        let epoch = self.metas.get(&doc).map_or(0, |m| m.actor_epoch);
        let mut h = blake3::Hasher::new_keyed(&self.actor_secret);
        h.update(doc.as_bytes());
        h.update(&epoch.to_be_bytes());
        weft_core::automerge::ActorId::from(&h.finalize().as_bytes()[..16])
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Meta(Err(e)) => {
                tracing::error!(error = %e, "writing document metadata failed");
            }
            Done::Meta(Ok(())) => {}
            Done::Reset(doc, result) => {
                self.resetting.remove(&doc);
                if let Err(e) = result {
                    tracing::error!(%doc, error = %e, "resetting a document failed");
                }
                let relays: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.kind == ConnKind::Relay)
                    .map(|(id, _)| *id)
                    .collect();
                for conn in relays {
                    self.ask_for(conn, doc);
                }
            }
            Done::Committed(what, result) => {
                if let (Waiting::Persist(id), Err(e)) = (what, &result) {
                    if let Some((reply, _)) = self.waiters.remove(&id) {
                        let _ = reply.send(Err(DeviceError::Store(e.clone())));
                    }
                }
                self.host.committed(what, result);
                if let Waiting::Persist(id) = what {
                    if let Some((reply, r)) = self.waiters.remove(&id) {
                        let _ = reply.send(Ok(r));
                    }
                }
            }
            Done::Loaded(doc, result) => {
                self.loading.remove(&doc);
                if self.is_deleted(doc) {
                    // Erased while it loaded: it must not come back.
                    for op in self.pending.remove(&doc).unwrap_or_default() {
                        match op {
                            Op::Change(_, r) | Op::Read(_, r) => {
                                let _ = r.send(Err(DeviceError::Deleted(doc)));
                            }
                        }
                    }
                    return;
                }
                if let Err(e) = self.host.loaded(doc, *result) {
                    tracing::error!(%doc, error = %e, "loading a document failed");
                    for op in self.pending.remove(&doc).unwrap_or_default() {
                        match op {
                            Op::Change(_, r) | Op::Read(_, r) => {
                                let _ = r.send(Err(DeviceError::DocStore(clone_err(&e))));
                            }
                        }
                    }
                    return;
                }
                for op in self.pending.remove(&doc).unwrap_or_default() {
                    self.run_op(doc, op);
                }
            }
        }
    }

    fn pump(&mut self) {
        while let Some(action) = self.host.poll_action() {
            match action {
                Action::Send { conn, msg } => self.send(conn, msg),
                Action::Wait { what, ticket } => {
                    self.tasks
                        .spawn(async move { Done::Committed(what, ticket.await) });
                }
                Action::Load { doc } => {
                    let store = self.host.store().clone();
                    self.loading.insert(doc);
                    self.tasks.spawn(async move {
                        let r =
                            tokio::task::spawn_blocking(move || host::load(store.as_ref(), doc))
                                .await
                                .unwrap_or_else(|e| {
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
                Action::Event(out) => self.on_output(out),
                _ => {}
            }
        }
    }

    fn on_output(&mut self, out: Output) {
        match out {
            Output::Changed { doc, heads, origin } => {
                self.announce(doc, heads, origin);
            }
            Output::Synced { conn, doc, heads } => {
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                let link = c.link;
                let now = unix_ms();
                let current = self.host.heads(doc);
                if current.as_ref() == Some(&heads) {
                    if let Some(l) = self.links.get_mut(&link) {
                        if let Some(d) = l.docs.get_mut(&doc) {
                            d.state = SyncState::Synced;
                            d.last_sync_ms = Some(now);
                        }
                    }
                    if let Some(m) = self.metas.get_mut(&doc) {
                        m.confirmed_heads = hex_sorted(&heads);
                        m.last_sync_ms = Some(now);
                        self.dirty_metas.insert(doc);
                    }
                    self.status_dirty = true;
                }
            }
            Output::Rejected {
                doc,
                reason: Rejection::ReadOnly,
                ..
            } => {
                let _ = self.events.send(Event::Rejected { doc, kept: None });
            }
            Output::Rejected { conn, doc, reason } => {
                // A peer sent changes over this device's limits: nothing was stored. Tell it
                // why and stop syncing the document with it.
                tracing::warn!(%doc, %reason, "refused changes from a peer");
                let message = format!("changes refused: {reason}");
                self.send(
                    conn,
                    Message::Error {
                        code: ErrorCode::REFUSED,
                        doc: Some(doc),
                        message: message.clone(),
                    },
                );
                self.refuse(conn, doc, message);
            }
            Output::Unaccepted { conn, doc }
                if self
                    .conns
                    .get(&conn)
                    .is_some_and(|c| c.kind == ConnKind::Relay) =>
            {
                self.reset_to_remote(doc);
            }
            Output::ProtocolError { conn, doc, error } => {
                tracing::warn!(%doc, %error, "closing a connection that sent an invalid message");
                if let Some(c) = self.conns.get(&conn) {
                    let _ = c.out.try_send(Outgoing::Close);
                }
            }
            Output::Failed { doc, .. } => {
                tracing::error!(%doc, "a document was dropped from memory after a store failure");
            }
            _ => {}
        }
    }

    fn announce(&mut self, doc: DocId, heads: Vec<ChangeHash>, origin: Origin) {
        let before = self.announced.insert(doc, heads.clone());
        if let Some(m) = self.metas.get(&doc) {
            if m.kind.is_none() {
                let kind = self
                    .host
                    .read(doc, |d| weft_schema::raw_kind(d.automerge()))
                    .ok()
                    .flatten();
                if let (Some(kind), Some(m)) = (kind, self.metas.get_mut(&doc)) {
                    m.kind = Some(kind);
                    self.dirty_metas.insert(doc);
                }
            }
        }
        if let Origin::Remote(from) = origin {
            self.mark_all_syncing(doc, Some(from));
        }
        if self.events.receiver_count() == 0 {
            return;
        }
        let before = before.unwrap_or_default();
        let patches = self
            .host
            .read(doc, |d| d.automerge().diff(&before, &heads))
            .unwrap_or_default();
        let _ = self.events.send(Event::Changed {
            doc,
            heads,
            origin: match origin {
                Origin::Local => EventOrigin::Local,
                _ => EventOrigin::Remote,
            },
            patches: Arc::new(patches),
        });
    }

    /// After a change, every link that had the document synced is syncing again (except the
    /// connection it came from, which has it).
    fn mark_all_syncing(&mut self, doc: DocId, except: Option<ConnId>) {
        let except_link = except.and_then(|c| self.conns.get(&c)).map(|c| c.link);
        let links: HashSet<u64> = self
            .conns
            .values()
            .filter(|c| c.docs.contains(&doc))
            .map(|c| c.link)
            .collect();
        for link in links {
            if Some(link) == except_link {
                continue;
            }
            if let Some(d) = self.links.get_mut(&link).and_then(|l| l.docs.get_mut(&doc)) {
                if d.state == SyncState::Synced {
                    d.state = SyncState::Syncing;
                    self.status_dirty = true;
                }
            }
        }
    }

    /// The engine's gate: identities and write rules for what peers send.
    fn rules(&mut self) -> Option<&mut weft_schema::rules::RulesGate> {
        self.host
            .gate_mut()?
            .as_any_mut()
            .downcast_mut::<weft_schema::rules::RulesGate>()
    }

    fn add_conn(&mut self, conn: ConnId, reg: Registration) {
        self.host.add_conn(self.now_ms(), conn);
        // The user may have been learned just now, from the relay's welcome.
        if let Some(user) = self.dir.name() {
            if let Some(rules) = self.rules() {
                rules.set_local_user(&user);
            }
        }
        if reg.kind != ConnKind::Relay {
            // A peer is a device of this device's user: its changes are this user's, except
            // those of actors the relay bound to others (which it forwards).
            if let Some(user) = self.dir.name() {
                if let Some(rules) = self.rules() {
                    rules.connect(conn, &user, false, true);
                }
            }
        }
        if let Some(l) = self.links.get_mut(&reg.link) {
            l.state = LinkState::Online;
            l.user = reg.user.clone();
            l.last_error = None;
            l.refused = false;
            self.status_dirty = true;
        }
        self.conns.insert(
            conn,
            Conn {
                link: reg.link,
                kind: reg.kind,
                out: reg.out,
                peer_key: reg.peer_key,
                docs: HashSet::new(),
                lagging: HashSet::new(),
            },
        );
        let is_relay = reg.kind == ConnKind::Relay;
        match reg.kind {
            ConnKind::Relay | ConnKind::Dialer => {
                let mut want: Vec<DocId> = self
                    .metas
                    .iter()
                    .filter(|(_, m)| !m.revoked && m.deleted_at_ms.is_none())
                    .map(|(d, _)| *d)
                    .collect();
                want.sort_by_key(|d| *d.as_bytes());
                want.extend(reg.extra_docs);
                for doc in want {
                    self.ask_for(conn, doc);
                }
            }
            ConnKind::Listener => {
                let added: Vec<DocEntry> = self
                    .metas
                    .iter()
                    .filter(|(_, m)| m.deleted_at_ms.is_none())
                    .map(|(d, m)| DocEntry {
                        doc: *d,
                        role: m.role.unwrap_or(Role::ReadWrite),
                    })
                    .collect();
                // The whole list as the relay sends one: `Docs{full: true}` first (even when
                // empty), continuations, then `DocsEnd`, which the dialer waits for before it
                // calls itself synced.
                let total = added.len() as u64;
                let mut chunks: Vec<Vec<DocEntry>> =
                    added.chunks(1024).map(<[DocEntry]>::to_vec).collect();
                if chunks.is_empty() {
                    chunks.push(Vec::new());
                }
                for (i, chunk) in chunks.into_iter().enumerate() {
                    self.send(
                        conn,
                        Message::Docs {
                            full: i == 0,
                            added: chunk,
                            removed: Vec::new(),
                        },
                    );
                }
                self.send(
                    conn,
                    Message::DocsEnd {
                        total,
                        truncated: false,
                    },
                );
            }
        }
        // Queued requests go after the subscriptions: a document created offline reaches the
        // relay (which handles a connection's messages in order) before it is shared.
        if is_relay {
            let queued: Vec<Queued> = self.outbox.clone();
            for q in queued {
                self.send(conn, q.op.message(q.id));
                self.note_control_sent(conn);
            }
        }
    }

    /// Sends `Subscribe` for `doc` on `conn` once. A document known to be deleted is not asked
    /// for; it shows as refused.
    fn ask_for(&mut self, conn: ConnId, doc: DocId) {
        if self.is_deleted(doc) {
            let link = self.conns.get(&conn).map(|c| c.link);
            if let Some(l) = link.and_then(|l| self.links.get_mut(&l)) {
                l.docs.insert(
                    doc,
                    DocStatus {
                        state: SyncState::Refused,
                        role: None,
                        last_sync_ms: None,
                    },
                );
                self.status_dirty = true;
            }
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.docs.insert(doc) {
            return;
        }
        let link = c.link;
        if let Some(l) = self.links.get_mut(&link) {
            let role = self.metas.get(&doc).and_then(|m| m.role);
            let last_sync_ms = self.metas.get(&doc).and_then(|m| m.last_sync_ms);
            l.docs.insert(
                doc,
                DocStatus {
                    state: SyncState::Syncing,
                    role,
                    last_sync_ms,
                },
            );
            self.status_dirty = true;
        }
        self.send(conn, Message::Subscribe { doc });
    }

    fn inbound(&mut self, conn: ConnId, msg: Message) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let kind = c.kind;
        match msg {
            Message::Subscribed { doc, role } if kind != ConnKind::Listener => {
                self.open(conn, doc, role)
            }
            Message::Subscribe { doc } if kind == ConnKind::Listener && self.is_deleted(doc) => {
                self.send(
                    conn,
                    Message::Error {
                        code: ErrorCode::DELETED,
                        doc: Some(doc),
                        message: "the document was deleted".into(),
                    },
                );
            }
            Message::Subscribe { doc } if kind == ConnKind::Listener => {
                let role = self
                    .metas
                    .get(&doc)
                    .and_then(|m| m.role)
                    .unwrap_or(Role::ReadWrite);
                let mut link = None;
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.docs.insert(doc);
                    link = Some(c.link);
                }
                if let Some(l) = link.and_then(|l| self.links.get_mut(&l)) {
                    l.docs.entry(doc).or_insert(DocStatus {
                        state: SyncState::Syncing,
                        role: Some(role),
                        last_sync_ms: None,
                    });
                    self.status_dirty = true;
                }
                self.send(conn, Message::Subscribed { doc, role });
                self.open(conn, doc, role);
            }
            Message::Docs {
                full,
                added,
                removed,
            } => {
                let _ = full;
                for e in added {
                    if kind == ConnKind::Relay {
                        if let Some(m) = self.metas.get_mut(&e.doc) {
                            if m.role != Some(e.role) || m.revoked {
                                m.role = Some(e.role);
                                m.revoked = false;
                                self.dirty_metas.insert(e.doc);
                            }
                        }
                    }
                    self.ask_for(conn, e.doc);
                }
                if kind == ConnKind::Relay {
                    for doc in removed {
                        self.removed(conn, doc);
                    }
                }
            }
            Message::Reply {
                id, code, message, ..
            } if kind == ConnKind::Relay => self.on_reply(conn, id, code, message),
            Message::Kinds { toml } if kind == ConnKind::Relay => {
                match weft_schema::rules::Kinds::with_declared(&toml) {
                    Ok(kinds) => {
                        if let Err(e) = self.dir.write_kinds(&toml) {
                            tracing::warn!(error = %e, "cannot keep the relay's kinds");
                        }
                        if let Some(rules) = self.rules() {
                            rules.set_kinds(Arc::new(kinds));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "the relay's kinds do not parse"),
                }
            }
            Message::Actors { doc, actors } if kind == ConnKind::Relay => {
                let mut batch = WriteBatch::new();
                for a in &actors {
                    docs::put_gate_record(&mut batch, doc, &a.actor, a.user.as_bytes());
                }
                if let Some(rules) = self.rules() {
                    for a in actors {
                        let actor = weft_core::automerge::ActorId::from(a.actor.as_slice());
                        rules.learn_binding(doc, actor, &a.user);
                    }
                }
                let ticket = self.group.submit(batch);
                self.tasks.spawn(async move { Done::Meta(ticket.await) });
            }
            Message::DocsEnd { truncated, .. } => {
                if truncated {
                    tracing::warn!("the relay listed only part of this user's documents");
                }
                let link = self.conns.get(&conn).map(|c| c.link);
                if let Some(l) = link.and_then(|l| self.links.get_mut(&l)) {
                    l.discovered = true;
                    self.status_dirty = true;
                }
            }
            Message::Error {
                code,
                doc: Some(doc),
                message,
            } => match code {
                ErrorCode::READ_ONLY => {
                    if let Some(m) = self.metas.get_mut(&doc) {
                        m.role = Some(Role::ReadOnly);
                        self.dirty_metas.insert(doc);
                    }
                    if kind == ConnKind::Relay {
                        self.reset_to_remote(doc);
                    } else {
                        let _ = self.events.send(Event::Rejected { doc, kept: None });
                    }
                }
                ErrorCode::LIMIT_REACHED | ErrorCode::RATE_LIMITED
                    if kind == ConnKind::Relay
                        && self.conns.get(&conn).is_some_and(|c| c.docs.contains(&doc)) =>
                {
                    // A quota: the document stays as it is here, unsynced with the relay.
                    let link = self.conns.get(&conn).map(|c| c.link);
                    if let Some(l) = link.and_then(|l| self.links.get_mut(&l)) {
                        l.change_refusals.push(format!("{doc}: {message}"));
                        self.status_dirty = true;
                    }
                    self.refuse(conn, doc, message);
                }
                ErrorCode::REFUSED => {
                    let reason = if message.is_empty() {
                        "changes refused".to_string()
                    } else {
                        message
                    };
                    let link = self.conns.get(&conn).map(|c| c.link);
                    if let Some(l) = link.and_then(|l| self.links.get_mut(&l)) {
                        let kept = if kind == ConnKind::Relay {
                            " (this device's version was kept in the data directory's rejected/ folder)"
                        } else {
                            ""
                        };
                        l.change_refusals.push(format!("{doc}: {reason}{kept}"));
                        self.status_dirty = true;
                    }
                    tracing::warn!(%doc, %reason, "the other side refused this device's changes");
                    if kind == ConnKind::Relay {
                        self.reset_to_remote_as(doc, None);
                    } else {
                        self.refuse(conn, doc, reason);
                    }
                }
                // The relay decides deletions: whether or not this connection asked.
                ErrorCode::DELETED if kind == ConnKind::Relay && self.holds(doc) => self.erase(doc),
                ErrorCode::FORBIDDEN | ErrorCode::DELETED
                    if !self.conns.get(&conn).is_some_and(|c| c.docs.contains(&doc)) =>
                {
                    // About a document this connection no longer asks for (a reset in
                    // progress, or messages that crossed an unsubscribe): nothing to do.
                    tracing::debug!(%doc, ?code, "refusal for a document not asked for");
                }
                ErrorCode::FORBIDDEN | ErrorCode::DELETED => {
                    let reason = if message.is_empty() {
                        format!("refused ({code:?})")
                    } else {
                        message
                    };
                    if kind == ConnKind::Relay {
                        self.revoke(conn, doc, reason);
                    } else {
                        self.refuse(conn, doc, reason);
                    }
                }
                _ => {
                    tracing::warn!(%doc, ?code, %message, "the other side reported an error");
                }
            },
            Message::Error { code, message, .. } => {
                tracing::warn!(?code, %message, "the other side reported a connection error");
            }
            m @ (Message::Sync { .. } | Message::Changes { .. } | Message::Ack { .. }) => {
                let doc = m.doc();
                if let Err(e) = self.host.handle(self.now_ms(), conn, m) {
                    tracing::debug!(?doc, error = %e, "ignored a message for a document not open");
                }
            }
            Message::Ephemeral {
                doc,
                user,
                device,
                data,
            } => {
                let _ = self.events.send(Event::Ephemeral {
                    doc,
                    user,
                    device,
                    data,
                });
            }
            Message::Presence {
                doc,
                user,
                device,
                online,
            } => {
                let _ = self.events.send(Event::Presence {
                    doc,
                    user,
                    device,
                    online,
                });
            }
            _ => {}
        }
    }

    /// The other side granted `doc` with `role`: open it in the engine (unless it was deleted
    /// meanwhile).
    fn open(&mut self, conn: ConnId, doc: DocId, role: Role) {
        if self.is_deleted(doc) {
            self.send(conn, Message::Unsubscribe { doc });
            return;
        }
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (link, kind, peer_key) = (c.link, c.kind, c.peer_key.clone());
        let now = unix_ms();
        let mut changed = !self.metas.contains_key(&doc);
        let meta = self.metas.entry(doc).or_insert_with(|| {
            let mut m = DocMeta::default();
            m.created_at_ms = now;
            m
        });
        if kind == ConnKind::Relay && (meta.role != Some(role) || meta.revoked) {
            meta.role = Some(role);
            meta.revoked = false;
            changed = true;
        }
        if changed {
            self.dirty_metas.insert(doc);
            // A document first seen here must be listed durably before its content arrives.
            self.flush_metas();
        }
        if let Some(d) = self.links.get_mut(&link).and_then(|l| l.docs.get_mut(&doc)) {
            d.role = Some(role);
            self.status_dirty = true;
        }
        let saved = host::saved_sync_state(self.host.store().as_ref(), doc, &peer_key)
            .unwrap_or_else(|e| {
                tracing::warn!(%doc, error = %e, "unreadable sync state; starting afresh");
                None
            });
        let opts = OpenOptions {
            accept_changes: true,
            // Changes are offered even on a read-only grant: local changes made before the
            // device knew its role draw a READ_ONLY refusal, which resets the document.
            send_changes: true,
            stable_peer: Some(peer_key),
            saved_sync_state: saved,
        };
        self.host.open(self.now_ms(), conn, doc, opts);
    }

    fn refuse(&mut self, conn: ConnId, doc: DocId, reason: String) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.docs.remove(&doc);
        let link = c.link;
        self.host.close(self.now_ms(), conn, doc);
        if let Some(l) = self.links.get_mut(&link) {
            l.docs
                .entry(doc)
                .or_insert(DocStatus {
                    state: SyncState::Refused,
                    role: None,
                    last_sync_ms: None,
                })
                .state = SyncState::Refused;
            self.status_dirty = true;
        }
        let _ = self.events.send(Event::Refused { doc, reason });
    }

    /// The relay's listing dropped `doc`: unshared (the copy stays, read-only) or deleted
    /// (the copy goes). A subscribed connection was told which with a refusal, which came
    /// first; otherwise the device asks, and the refusal that answers says.
    fn removed(&mut self, conn: ConnId, doc: DocId) {
        if self.is_deleted(doc) {
            return;
        }
        let asked = self.conns.get(&conn).is_some_and(|c| c.docs.contains(&doc));
        let revoked = self.metas.get(&doc).is_some_and(|m| m.revoked);
        self.revoke(conn, doc, "no longer shared with this user".into());
        if !asked && !revoked && self.metas.contains_key(&doc) {
            self.ask_for(conn, doc);
        }
    }

    /// The relay stopped serving `doc` to this user: keep the copy, read-only.
    fn revoke(&mut self, conn: ConnId, doc: DocId, reason: String) {
        if let Some(m) = self.metas.get_mut(&doc) {
            // Only a document the relay had granted before is marked revoked; one it never
            // granted (never uploaded, or not permitted) stays as it is.
            if m.role.is_some() && !m.revoked {
                m.revoked = true;
                self.dirty_metas.insert(doc);
            }
        }
        self.refuse(conn, doc, reason);
    }

    fn send(&mut self, conn: ConnId, msg: Message) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let doc = msg.doc();
        match c.out.try_send(Outgoing::Msg(msg)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if let Some(doc) = doc {
                    c.lagging.insert(doc);
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn housekeeping(&mut self) {
        self.flush_metas();
        let mut resync = Vec::new();
        for (id, c) in &mut self.conns {
            if !c.lagging.is_empty() && c.out.capacity() > c.out.max_capacity() / 2 {
                for doc in c.lagging.drain() {
                    resync.push((*id, doc));
                }
            }
        }
        for (conn, doc) in resync {
            self.host.resync(self.now_ms(), doc, conn);
        }
    }

    fn flush_metas(&mut self) {
        if self.dirty_metas.is_empty() {
            return;
        }
        let mut batch = WriteBatch::new();
        for doc in self.dirty_metas.drain() {
            if let Some(m) = self.metas.get(&doc) {
                docs::put_meta(&mut batch, doc, m);
            }
        }
        let ticket = self.group.submit(batch);
        self.tasks.spawn(async move { Done::Meta(ticket.await) });
    }

    fn publish_status(&mut self) {
        if !self.status_dirty {
            return;
        }
        self.status_dirty = false;
        let status = Status {
            links: self.links.clone(),
        };
        self.status_tx.send_replace(Arc::new(status));
    }
}

fn hex_sorted(heads: &[ChangeHash]) -> Vec<String> {
    let mut v: Vec<String> = heads.iter().map(weft_core::hash_hex).collect();
    v.sort();
    v
}

fn clone_err(e: &DocStoreError) -> DocStoreError {
    DocStoreError::Store {
        source: StoreError::Backend {
            path: Default::default(),
            message: e.to_string(),
        },
    }
}
