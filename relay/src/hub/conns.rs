//! Connections: their state, their queues, and what the hub sends them.
//!
//! Every frame for a connection goes through [`Hub::push`]: reliable frames gather in the
//! connection's `Batch` during a pass of the hub loop and go on its bounded queue as one entry
//! ([`Hub::flush`]); best-effort frames (ephemeral data, presence) go straight on it, and only
//! while it is at most half full. Nothing blocks on a full queue: sync frames are dropped and
//! their documents resynced once it drains ([`Hub::resync_drained`]), and a connection that
//! loses a frame no resync replaces is closed.
//!
//! A large `Sync` frame (a whole-document snapshot, the same for every device joining a
//! document at the same heads) is queued as its few leading bytes and the engine's shared
//! buffer ([`Hub::push_shared`]), not copied into the batch: 200 devices joining one 15 MB
//! document hold one snapshot between them while they wait for their transport to send it,
//! not 200. What a slow joiner costs is then its queue's own bytes (as for any connection)
//! plus a reference that keeps one snapshot alive until it is sent or dropped with its batch;
//! the engine sends a peer one snapshot per document until it resyncs.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use tokio::sync::mpsc;
use weft_core::engine::ConnId;
use weft_core::hash::{HashMap, HashSet};
use weft_core::wire::{self, Encoding, ErrorCode, Message};
use weft_core::{DeviceId, DocId, Role};

use super::{Hub, Outbound};
use crate::metrics::Metrics;
use crate::rate::RateLimit;
use crate::Claims;

/// What the hub knows of one connection.
pub(super) struct Conn {
    pub(super) device: DeviceId,
    pub(super) claims: Claims,
    pub(super) out: mpsc::Sender<Outbound>,
    pub(super) docs: HashMap<DocId, Role>,
    /// Documents whose messages were dropped on a full queue: resync once it drains.
    pub(super) lagging: HashSet<DocId>,
    pub(super) closing: bool,
    /// Control requests allowed from this connection.
    pub(super) control_rate: RateLimit,
    /// Document creations allowed from this connection.
    pub(super) create_rate: RateLimit,
    /// A discovery message was dropped on a full queue: list everything again once it drains.
    pub(super) relist: bool,
    /// Control replies that did not fit in the queue, in order (bounded).
    pub(super) replies: VecDeque<Arc<Vec<u8>>>,
    /// Reliable frames queued during this pass of the hub loop (see [`Hub::flush`]).
    batch: Batch,
    /// Bytes of the last batch flushed: the next one starts with that capacity, so a busy
    /// connection's batch is not regrown (and recopied) by doubling on every pass.
    last_batch_bytes: usize,
    /// How its frames are encoded (by the protocol version it announced).
    pub(super) encoding: Encoding,
    /// A WebSocket client, kept in sync mode (`Engine::set_sync_only`): its sync messages
    /// leave as soon as they are made (see [`Hub::pump_actions`]).
    pub(super) sync_only: bool,
}

/// Frames for one connection, concatenated, that go on its queue as one entry.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    /// The batch's bytes before `bytes` when it holds a shared frame: its own bytes and the
    /// shared buffers, in order ([`Hub::push_shared`]).
    chunks: Vec<Bytes>,
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

/// `Sync` data from which a frame is queued as a shared buffer rather than copied into the
/// connection's batch: below, the copy is cheaper than a write of its own.
const SHARED_FROM: usize = 64 * 1024;

impl Hub {
    /// An authenticated connection: registered with the engine and its gate, then greeted
    /// (`Welcome`, the declared kinds, the discovery listing).
    pub(super) fn open_conn(
        &mut self,
        conn: ConnId,
        device: DeviceId,
        claims: Claims,
        protocol: u16,
        out: mpsc::Sender<Outbound>,
    ) {
        let welcome = Message::Welcome {
            protocol,
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
                encoding: Encoding::for_protocol(protocol),
                sync_only: false,
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

    /// A refreshed token: for the same user, it replaces the connection's claims and access is
    /// decided again ([`Hub::recheck_access`]); anything else closes the connection.
    pub(super) fn refresh_token(&mut self, conn: ConnId, token: String) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match self.verifier.verify_now(&token) {
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
        }
    }

    /// The connection ended: its subscriptions end (the other subscribers see it leave), and it
    /// leaves the engine, the gate and its user's connections.
    pub(super) fn on_closed(&mut self, conn: ConnId) {
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

    pub(super) fn broadcast(&mut self, doc: DocId, except: Option<ConnId>, msg: &Message) {
        let targets: Vec<ConnId> = self
            .subscribers
            .get(&doc)
            .map(|s| s.keys().copied().filter(|c| Some(*c) != except).collect())
            .unwrap_or_default();
        // Encoded once per encoding the targets use.
        let mut frames: [Option<Arc<Vec<u8>>>; 2] = [None, None];
        for conn in targets {
            let encoding = self.encoding_of(conn);
            let slot = &mut frames[encoding as usize];
            if slot.is_none() {
                *slot = self.encode(msg, encoding);
            }
            let Some(frame) = slot.clone() else {
                return;
            };
            self.push(conn, outbound(msg, frame), resyncable(msg));
        }
    }

    /// How frames for `conn` are encoded (named for a connection that is gone: it gets
    /// nothing anyway).
    pub(super) fn encoding_of(&self, conn: ConnId) -> Encoding {
        self.conns
            .get(&conn)
            .map(|c| c.encoding)
            .unwrap_or_default()
    }

    pub(super) fn encode(&self, msg: &Message, encoding: Encoding) -> Option<Arc<Vec<u8>>> {
        match wire::frame_as(msg, encoding, self.cfg.max_frame) {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => {
                tracing::error!(error = %e, "could not encode a message");
                None
            }
        }
    }

    pub(super) fn send(&mut self, conn: ConnId, msg: &Message) {
        if let Message::Sync { doc, .. } = msg {
            match wire::frame_split(msg, self.encoding_of(conn), self.cfg.max_frame, SHARED_FROM) {
                Ok(Some((head, data))) => return self.push_shared(conn, &head, data, *doc),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "could not encode a message");
                    return;
                }
            }
        }
        if let Some(frame) = self.encode(msg, self.encoding_of(conn)) {
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
    pub(super) fn push(&mut self, conn: ConnId, out: Outbound, resync: Option<DocId>) {
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
            ephemeral @ (Outbound::Ephemeral(_) | Outbound::EphemeralBatch { .. }) => {
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
            // Shared parts are queued by `push_shared`; anything else handing them here is
            // copied into the batch like one frame.
            Outbound::Chunks(chunks) => Arc::new(chunks.concat()),
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

    /// Queues a `Sync` frame of `doc` given as its leading bytes (`head`) and its data, a
    /// buffer shared with other connections (`wire::frame_split`): the data joins the batch
    /// as a reference, and the batch goes on the queue at once, as one entry like any other.
    /// Dropped on a full queue, the document is resynced like any sync frame.
    pub(super) fn push_shared(&mut self, conn: ConnId, head: &[u8], data: Bytes, doc: DocId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        c.batch.bytes.extend_from_slice(head);
        let own = std::mem::take(&mut c.batch.bytes);
        c.batch.chunks.push(Bytes::from(own));
        c.batch.chunks.push(data);
        c.batch.frames += 1;
        c.batch.docs.push(doc);
        self.flush_conn(conn);
    }

    /// Puts every connection's batch on its queue.
    pub(super) fn flush(&mut self) {
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
        if c.batch.bytes.is_empty() && c.batch.chunks.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut c.batch);
        let entry = if batch.chunks.is_empty() {
            c.last_batch_bytes = batch.bytes.len();
            Outbound::Frame(Arc::new(batch.bytes))
        } else {
            let mut chunks = batch.chunks;
            if !batch.bytes.is_empty() {
                chunks.push(Bytes::from(batch.bytes));
            }
            Outbound::Chunks(chunks)
        };
        match c.out.try_send(entry) {
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

    pub(super) fn close(&mut self, conn: ConnId, code: ErrorCode, reason: String) {
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

    /// Closes connections whose token expired.
    pub(super) fn close_expired(&mut self) {
        let now = self.unix_now();
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
    }

    /// Resyncs the documents whose frames were dropped, for connections whose queue drained.
    pub(super) fn resync_drained(&mut self) {
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
    }
}

/// The document whose sync a dropped `msg` can be recovered by (a resync from heads).
fn resyncable(msg: &Message) -> Option<DocId> {
    match msg {
        Message::Sync { doc, .. } | Message::Changes { doc, .. } | Message::Ack { doc, .. } => {
            Some(*doc)
        }
        _ => None,
    }
}

/// Ephemeral data and presence are best-effort; everything else must arrive in order.
fn outbound(msg: &Message, frame: Arc<Vec<u8>>) -> Outbound {
    match msg {
        Message::Ephemeral { .. } | Message::Presence { .. } => Outbound::Ephemeral(frame),
        _ => Outbound::Frame(frame),
    }
}
