//! [`Device`]: the handle an app holds, and the driver task that alone owns the engine, the
//! store writer and the connections' document state.
//!
//! Every request is a message to the driver over a bounded channel. Writes are answered when
//! their store batch is durable (the engine's persist request for the change completed), so a
//! caller never sees a change that a crash could lose. Connection tasks (`net/`) feed the
//! driver the frames they read and carry out the frames it sends; the driver never awaits a
//! connection (sends are `try_send` on bounded queues; a full queue marks the document lagging
//! and it is resynced from heads once the queue has room).
//!
//! When the relay says a document was deleted (`DELETED`, or the answer to this device's own
//! delete request), the driver erases it (`device/erasing.rs`): it leaves memory, its chunks and
//! sync states leave the store (which then scrubs its file), its queued requests and any
//! version kept aside in `rejected/` go, and only a tombstone stays, so that it is not listed,
//! not synced again, and commands on it fail with [`DeviceError::Deleted`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use weft_core::automerge::Automerge;
use weft_core::engine::{Engine, EngineConfig};
use weft_core::host::{Host, HostConfig};
use weft_core::store::docs::{self, DocStoreError};

use self::meta::DocMeta;
use weft_core::store::{erase, GroupCommit, KvStore, StagingLimits};
use weft_core::{DeviceId, DocId};
use weft_schema::{Message, Partial, ReadError};

use crate::status::Status;
use crate::{DataDir, DeviceError};

pub(crate) mod cmd;
mod conns;
mod control;
mod documents;
mod driver;
mod erasing;
mod event;
mod inbound;
mod meta;
mod tail;

use cmd::{ChangeFn, Op, ReadFn, Reply, Waiter};
pub(crate) use cmd::{Cmd, ConnKind, DriverHandle, Registration};
pub use control::ControlOp;
use control::Queued;
use driver::{Conn, Done, Driver};
pub use event::{DocInfo, Event, EventOrigin};

/// Commands queued to the driver at most.
const CMD_QUEUE: usize = 1024;
/// Events buffered for slow subscribers (older ones are skipped, see [`Device::events`]).
const EVENT_BUFFER: usize = 4096;

struct Shared {
    handle: DriverHandle,
    events: broadcast::Sender<Event>,
    status: watch::Receiver<Arc<Status>>,
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
            .field("dir", &self.shared.handle.dir().path())
            .finish()
    }
}

impl Device {
    /// Opens the device in `dir` (creating the directory, key and store if missing) and starts
    /// its driver. Fails with [`StoreError::Locked`](weft_core::store::StoreError::Locked) inside [`DeviceError::Store`] when another
    /// process holds the store.
    pub async fn open(dir: DataDir) -> Result<Device, DeviceError> {
        Device::open_wrapped(dir, |store| store).await
    }

    /// [`Device::open`] with the store seen through `wrap`: tests inject store failures with
    /// it.
    #[doc(hidden)]
    pub async fn open_wrapped(
        dir: DataDir,
        wrap: impl FnOnce(Arc<dyn KvStore>) -> Arc<dyn KvStore>,
    ) -> Result<Device, DeviceError> {
        let key = dir.init(None)?;
        let store_path = dir.store_path();
        // Content that deleted documents left behind is erased, and the file rewritten without
        // it, before anything reads the store.
        let store = tokio::task::spawn_blocking(move || {
            erase::open_redb(&store_path, &[tail::TAIL_CACHE], StagingLimits::default())
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
        let store: Arc<dyn KvStore> = wrap(Arc::new(store));
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
            clock: weft_core::clock::Monotonic::start(),
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
            retries: Default::default(),
            cached_tails: HashMap::new(),
        };
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(driver.run(cmd_rx));
        Ok(Device {
            shared: Arc::new(Shared {
                handle: DriverHandle::new(cmd_tx, key, dir, cancel),
                events,
                status: status_rx,
                driver: std::sync::Mutex::new(Some(handle)),
                links: std::sync::Mutex::new(Vec::new()),
            }),
        })
    }

    /// This device's id: the fingerprint of its key.
    pub fn id(&self) -> DeviceId {
        self.shared.handle.id()
    }

    /// The data directory.
    pub fn dir(&self) -> &DataDir {
        self.shared.handle.dir()
    }

    pub(crate) async fn cmd(&self, cmd: Cmd) -> Result<(), DeviceError> {
        self.shared.handle.cmd(cmd).await
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
        // The driver answers with the id alone; `init`'s own result comes back beside it, sent
        // before that answer.
        let (rtx, rrx) = oneshot::channel();
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
        let r = rrx.await.map_err(|_| DeviceError::Closed)?;
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

    /// The last `n` messages of a chat, as [`weft_schema::last_messages`] reads them. Served
    /// from the tail cached beside the document when the document is not loaded and the cached
    /// tail was read at the heads stored now (no load of the document); otherwise the document
    /// is read (loaded first if need be), exactly as [`Device::read`] would.
    pub async fn last_messages(
        &self,
        doc: DocId,
        n: usize,
    ) -> Result<Result<Partial<Vec<Message>>, ReadError>, DeviceError> {
        if let Some(cached) = self.ask(|r| Cmd::CachedTail(doc, n, r)).await? {
            return Ok(Ok(cached));
        }
        self.read(doc, move |am| weft_schema::last_messages(am, n))
            .await
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

    /// Gives back the memory of every document no connection holds: each leaves memory (it
    /// stays in the store and loads again when next used; a chat's last messages are cached
    /// first, so it opens without a load). For an app going to the background: stop the links,
    /// then trim. Returns how many documents left memory; one with a write in flight stays.
    pub async fn trim_memory(&self) -> Result<usize, DeviceError> {
        self.ask(Cmd::TrimMemory).await
    }

    /// What the device's connection tasks hold of it.
    pub(crate) fn driver_handle(&self) -> &DriverHandle {
        &self.shared.handle
    }

    pub(crate) fn track(&self, task: tokio::task::JoinHandle<()>) {
        if let Ok(mut links) = self.shared.links.lock() {
            links.retain(|t| !t.is_finished());
            links.push(task);
        }
    }

    /// Stops every connection, writes what is pending and closes the store. Waits for all of it.
    pub async fn close(self) {
        self.shared.handle.cancel_token().cancel();
        let tasks: Vec<_> = match self.shared.links.lock() {
            Ok(mut l) => l.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for t in tasks {
            let _ = t.await;
        }
        let (tx, rx) = oneshot::channel();
        if self.shared.handle.cmd(Cmd::Shutdown(tx)).await.is_ok() {
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
