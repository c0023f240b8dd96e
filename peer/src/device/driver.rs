//! The driver task: it alone owns the host (engine and store) and the connections' document
//! state, and answers the handle's commands.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use weft_core::automerge::ChangeHash;
use weft_core::clock::Monotonic;
use weft_core::engine::{ConnId, Output, Rejection};
use weft_core::host::{Action, Host, Loaded, Waiting};
use weft_core::store::docs::{self, DocStoreError};

use super::meta::DocMeta;
use weft_core::store::{GroupCommit, StoreError, WriteBatch};
use weft_core::wire::{ErrorCode, Message};
use weft_core::{DeviceId, DocId};

use super::cmd::Outgoing;
use super::{Cmd, ConnKind, DocInfo, Event, Op, Queued, Waiter};
use crate::status::{LinkState, LinkStatus, Status, SyncState};
use crate::{unix_ms, DataDir, DeviceError};

/// How often dirty metadata is written and lagging documents are resynced.
const HOUSEKEEPING: Duration = Duration::from_millis(250);

pub(super) enum Done {
    Committed(Waiting, Result<(), StoreError>),
    /// A document's store was emptied to take the relay's version again.
    Reset(DocId, Result<(), StoreError>),
    /// A metadata batch.
    Meta(Result<(), StoreError>),
    Loaded(DocId, Box<Result<Option<Loaded>, DocStoreError>>),
    /// A save the host handed out (`None`: the task was cancelled).
    Saved(Option<Box<weft_core::host::Saved>>),
    /// A cached tail lookup, with the heads of the row when it was served.
    TailRead(DocId, Option<Vec<ChangeHash>>),
}

pub(super) struct Conn {
    pub(super) link: u64,
    pub(super) kind: ConnKind,
    pub(super) out: mpsc::Sender<Outgoing>,
    pub(super) peer_key: Vec<u8>,
    /// Documents asked for (relay/dialer) or opened.
    pub(super) docs: HashSet<DocId>,
    pub(super) lagging: HashSet<DocId>,
}

pub(super) struct Driver {
    pub(super) host: Host,
    pub(super) group: Arc<GroupCommit>,
    pub(super) metas: HashMap<DocId, DocMeta>,
    pub(super) conns: HashMap<ConnId, Conn>,
    pub(super) links: BTreeMap<u64, LinkStatus>,
    pub(super) next_link: u64,
    pub(super) next_conn: u64,
    /// Callers waiting for a write to be durable.
    pub(super) waiters: HashMap<weft_core::engine::PersistId, Waiter>,
    /// Operations waiting for their document to load.
    pub(super) pending: HashMap<DocId, Vec<Op>>,
    pub(super) loading: HashSet<DocId>,
    pub(super) tasks: JoinSet<Done>,
    pub(super) clock: Monotonic,
    pub(super) events: broadcast::Sender<Event>,
    /// The heads of each document's last `Changed` event (patches are computed from there).
    pub(super) announced: HashMap<DocId, Vec<ChangeHash>>,
    pub(super) status_tx: watch::Sender<Arc<Status>>,
    pub(super) status_dirty: bool,
    pub(super) dirty_metas: HashSet<DocId>,
    pub(super) device: DeviceId,
    /// Derived from the device key: the actor ids this device writes with (see
    /// [`Driver::actor_for`]).
    pub(super) actor_secret: [u8; 32],
    pub(super) dir: DataDir,
    /// Documents being reset to the relay's version.
    pub(super) resetting: HashSet<DocId>,
    /// Requests for the relay not yet answered, oldest first.
    pub(super) outbox: Vec<Queued>,
    pub(super) control_waiters: HashMap<u64, oneshot::Sender<Result<(), String>>>,
    pub(super) retries: super::conns::Retries,
    /// The heads of documents' cached tails as stored (known from a lookup that served one, or
    /// a write of one), so that closing rewrites only the tails that changed.
    pub(super) cached_tails: HashMap<DocId, Vec<ChangeHash>>,
}

impl Driver {
    pub(super) async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>) {
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown: Option<oneshot::Sender<()>> = None;
        loop {
            self.pump();
            self.publish_status();
            let wake = self.host.next_wakeup().map(|ms| self.clock.instant(ms));
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
        self.flush_tails();
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

    pub(super) fn now_ms(&self) -> u64 {
        self.clock.now()
    }

    pub(super) fn on_cmd(&mut self, cmd: Cmd) {
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
            Cmd::CachedTail(doc, n, reply) => self.cached_tail(doc, n, reply),
            Cmd::TrimMemory(reply) => {
                // Tails first: an evicted chat opens from its cached tail.
                self.flush_tails();
                let evicted = self.host.evict_idle(0);
                self.pump();
                self.host.shrink();
                let _ = reply.send(evicted);
            }
            Cmd::Shutdown(_) => {}
        }
    }

    pub(super) fn on_done(&mut self, done: Done) {
        match done {
            Done::Meta(Err(e)) => {
                tracing::error!(error = %e, "writing document metadata failed");
            }
            Done::Meta(Ok(())) => {}
            Done::TailRead(doc, heads) => {
                // A lookup that ran while the document was erased must not bring it back.
                if let (Some(heads), false) = (heads, self.is_deleted(doc)) {
                    self.cached_tails.insert(doc, heads);
                }
            }
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
                self.host.committed(self.now_ms(), what, result);
                if let Waiting::Persist(id) = what {
                    if let Some((reply, r)) = self.waiters.remove(&id) {
                        let _ = reply.send(Ok(r));
                    }
                }
            }
            Done::Saved(Some(saved)) => self.host.saved(self.now_ms(), *saved),
            Done::Saved(None) => {}
            Done::Loaded(doc, result) => self.loaded(doc, *result),
        }
    }

    pub(super) fn pump(&mut self) {
        while let Some(action) = self.host.poll_action() {
            match action {
                Action::Send { conn, msg } => self.send(conn, msg),
                Action::Wait { what, ticket } => {
                    self.tasks
                        .spawn(async move { Done::Committed(what, ticket.await) });
                }
                Action::Load { doc } => {
                    let store = self.host.store().clone();
                    let for_compaction = self.host.wants_snapshot(doc);
                    self.loading.insert(doc);
                    self.tasks.spawn(async move {
                        let r = weft_core::driver::load(store, doc, for_compaction).await;
                        Done::Loaded(doc, Box::new(r))
                    });
                }
                Action::Save(job) => {
                    self.tasks.spawn(async move {
                        Done::Saved(weft_core::driver::save(job).await.map(Box::new))
                    });
                }
                Action::Event(out) => self.on_output(out),
                _ => {}
            }
        }
    }

    pub(super) fn on_output(&mut self, out: Output) {
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
                        m.ext.confirmed_heads = hex_sorted(&heads);
                        m.ext.last_sync_ms = Some(now);
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
            Output::Failed { doc, conns } => self.store_failed(doc, conns),
            _ => {}
        }
    }

    pub(super) fn send(&mut self, conn: ConnId, msg: Message) {
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

    pub(super) fn housekeeping(&mut self) {
        self.flush_metas();
        self.retry_due();
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

    pub(super) fn flush_metas(&mut self) {
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

    pub(super) fn publish_status(&mut self) {
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

pub(super) fn hex_sorted(heads: &[ChangeHash]) -> Vec<String> {
    let mut v: Vec<String> = heads.iter().map(weft_core::hash_hex).collect();
    v.sort();
    v
}

pub(super) fn clone_err(e: &DocStoreError) -> DocStoreError {
    DocStoreError::Store {
        source: StoreError::Backend {
            path: Default::default(),
            message: e.to_string(),
        },
    }
}
