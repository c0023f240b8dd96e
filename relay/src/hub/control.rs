//! The hub's side of sharing, discovery and revocation.
//!
//! - **Control requests** (`Share`, `Unshare`, `Delete`) are rate limited per connection and
//!   run one at a time per document (later ones wait, bounded), so each builds on the durable
//!   result of the one before. [`crate::sharing::apply`] checks and computes the change; once
//!   its batch (metadata and index rows together) is durable, the change is applied to live
//!   connections and only then answered.
//! - **Applying a change**: every subscriber of the document is decided again: refused ones are
//!   unsubscribed (engine closed, no more fan-out or presence) and told `FORBIDDEN` or
//!   `DELETED`; ones whose role changed are re-opened with the new role and told
//!   `Subscribed{role}`. Every connection of each affected user gets a `Docs` delta.
//! - **Deletion** erases the document's content in the batch that records it (`sharing.rs`);
//!   once durable, the document also leaves the hub's memory and its content is erased once
//!   more, after any write for it that was in flight ([`Hub::erase`]).
//! - **Discovery**: the full listing after `Welcome` ([`crate::discovery`]); a delta or listing
//!   that does not fit a connection's queue is dropped and the whole listing is sent again once
//!   the queue drains. Replies that do not fit wait in a small per-connection buffer.

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use tokio::sync::mpsc;
use weft_core::engine::{ConnId, OpenOptions};
use weft_core::store::{erase, StoreError, WriteBatch};

use crate::meta::DocMeta;
use weft_core::wire::{DocEntry, ErrorCode, Message};
use weft_core::{DocId, Role};

use super::docs::refusal;
use super::{Done, Hub, Outbound};
use crate::access::{readable_role, refusal_code};
use crate::metrics::Metrics;
use crate::sharing::{self, Change, Control, ControlError};
use crate::Claims;

/// A control request waiting to be (or being) committed.
#[derive(Debug)]
pub(crate) struct QueuedControl {
    conn: ConnId,
    id: u64,
    control: Control,
}

/// Control requests one document may have waiting behind the one being committed.
const MAX_QUEUED_CONTROLS: usize = 64;
/// Control replies kept for a connection whose queue is full; older ones are dropped (the
/// device resends requests it got no reply to, and they are idempotent).
const MAX_PENDING_REPLIES: usize = 256;

impl Hub {
    pub(super) fn on_control(&mut self, conn: ConnId, id: u64, doc: DocId, control: Control) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let request = QueuedControl { conn, id, control };
        if !c.control_rate.allow(Instant::now()) {
            self.reply(
                &request,
                doc,
                Some(ErrorCode::RATE_LIMITED),
                "too many sharing requests; retry later",
            );
            return;
        }
        if let Some(queue) = self.controls.get_mut(&doc) {
            if queue.len() >= MAX_QUEUED_CONTROLS {
                self.reply(
                    &request,
                    doc,
                    Some(ErrorCode::RATE_LIMITED),
                    "too many requests waiting for this document; retry later",
                );
                return;
            }
            queue.push_back(request);
            return;
        }
        self.run_controls(doc, VecDeque::from([request]));
    }

    /// Runs `queue`'s requests in order until one has a change to commit; the rest wait for it
    /// in `controls`.
    fn run_controls(&mut self, doc: DocId, mut queue: VecDeque<QueuedControl>) {
        while let Some(request) = queue.pop_front() {
            let Some(c) = self.conns.get(&request.conn) else {
                continue;
            };
            let claims = c.claims.clone();
            let meta = match self.meta(doc) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(%doc, error = %e, "reading document metadata failed");
                    self.reply(&request, doc, Some(ErrorCode::INTERNAL), "storage failure");
                    continue;
                }
            };
            let applied = sharing::apply(
                &claims,
                doc,
                meta.as_ref(),
                &request.control,
                self.cfg.max_access_list,
                self.verifier.clock().unix_ms(),
            );
            match applied {
                Err(e) => {
                    let code = e.code();
                    if e != ControlError::Forbidden {
                        tracing::debug!(conn = request.conn.0, %doc, error = %e, "refused a control request");
                    }
                    self.reply(&request, doc, Some(code), &e.to_string());
                }
                Ok(None) => self.reply(&request, doc, None, ""),
                Ok(Some(mut change)) => {
                    let batch = std::mem::take(&mut change.batch);
                    let ticket = self.durable_meta(batch, doc, &change.meta);
                    self.tasks.spawn(async move {
                        Done::Control {
                            doc,
                            request,
                            change: Box::new(change),
                            result: ticket.await,
                        }
                    });
                    self.controls.insert(doc, queue);
                    return;
                }
            }
        }
    }

    /// A control request's change is durable (or failed): apply it to live connections,
    /// answer, and run the requests that waited for it.
    pub(super) fn control_committed(
        &mut self,
        doc: DocId,
        request: QueuedControl,
        change: Change,
        result: Result<(), StoreError>,
    ) {
        match result {
            Ok(()) => {
                if let Some(cached) = self.metas.get_mut(&doc) {
                    *cached = change.meta.clone();
                }
                if request.control == Control::Delete {
                    self.count_deleted(doc, &change.meta);
                    // Before the subscriptions end: closing a peer persists its sync state.
                    self.erase(doc);
                }
                self.apply_access_change(doc, &change.meta, &change.users);
                self.reply(&request, doc, None, "");
            }
            Err(e) => {
                tracing::error!(%doc, error = %e, "storing an access change failed");
                self.reply(
                    &request,
                    doc,
                    Some(ErrorCode::INTERNAL),
                    "the relay could not store the change",
                );
            }
        }
        let queue = self.controls.remove(&doc).unwrap_or_default();
        self.run_controls(doc, queue);
    }

    /// A deletion is durable: the document leaves memory (the engine, the host, waiting and
    /// running loads), and its content is erased once more. Writes for it already on their way
    /// to the store when the deletion committed (a change received meanwhile, a compaction)
    /// land after the deletion; the group-commit writer applies batches in submission order, so
    /// this erase, submitted once nothing more of the document can be written, lands after
    /// them. A crash in between is caught at the next start (`erase::open_redb`).
    pub(super) fn erase(&mut self, doc: DocId) {
        self.host.forget(doc);
        self.loads_waiting.retain(|d| *d != doc);
        self.reloads_waiting.retain(|d| *d != doc);
        if self.loading.contains(&doc) {
            self.erased.insert(doc);
        }
        self.arrivals.remove(&doc);
        let mut batch = WriteBatch::new();
        erase::erase_content(&mut batch, doc);
        let ticket = self.group.submit(batch);
        self.tasks.spawn(async move {
            Done::Erased {
                doc,
                result: ticket.await,
            }
        });
    }

    /// Brings live connections in line with `doc`'s new metadata: subscriptions end or change
    /// role; `users` (whose access changed) and, on deletion, every token grantee learn of it.
    pub(super) fn apply_access_change(&mut self, doc: DocId, meta: &DocMeta, users: &[String]) {
        let subscribers: Vec<(ConnId, Role)> = self
            .subscribers
            .get(&doc)
            .map(|s| s.iter().map(|(c, r)| (*c, *r)).collect())
            .unwrap_or_default();
        for (conn, role) in subscribers {
            let Some(c) = self.conns.get(&conn) else {
                continue;
            };
            match readable_role(&c.claims, &doc, Some(meta)) {
                Some(r) if r == role => {}
                Some(r) => self.reopen(conn, doc, r),
                None => {
                    let code = refusal_code(&c.claims, &doc, Some(meta));
                    self.unsubscribe(conn, doc);
                    self.send(conn, &refusal(code, doc));
                }
            }
        }
        let mut targets: BTreeSet<ConnId> = users
            .iter()
            .filter_map(|u| self.users.get(u))
            .flatten()
            .copied()
            .collect();
        if meta.deleted_at_ms.is_some() {
            targets.extend(
                self.conns
                    .iter()
                    .filter(|(_, c)| c.claims.docs.contains_key(&doc))
                    .map(|(id, _)| *id),
            );
        }
        for conn in targets {
            let Some(c) = self.conns.get(&conn) else {
                continue;
            };
            let (added, removed) = match readable_role(&c.claims, &doc, Some(meta)) {
                Some(role) => (vec![DocEntry { doc, role }], vec![]),
                None => (vec![], vec![doc]),
            };
            self.send_delta(conn, added, removed);
        }
    }

    /// A document was created: its owner's connections list it.
    pub(super) fn created(&mut self, doc: DocId) {
        let meta = match self.meta(doc) {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(%doc, error = %e, "reading document metadata failed");
                return;
            }
        };
        if !self.subscribers.contains_key(&doc) {
            // Its creator left before it opened; the store holds the record.
            self.metas.remove(&doc);
        }
        if let Some(owner) = meta.owner.clone() {
            self.apply_access_change(doc, &meta, &[owner]);
        }
    }

    /// Re-opens a live subscription with a new role: the engine accepts (or refuses) the
    /// connection's changes from now on, and the device learns its role.
    fn reopen(&mut self, conn: ConnId, doc: DocId, role: Role) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.docs.insert(doc, role);
        let device = c.device;
        if let Some(s) = self.subscribers.get_mut(&doc) {
            s.insert(conn, role);
        }
        self.host.close(self.now_ms(), conn, doc);
        self.send(conn, &Message::Subscribed { doc, role });
        let opts = OpenOptions {
            accept_changes: role.can_write(),
            send_changes: true,
            stable_peer: Some(device.as_bytes().to_vec()),
            // The state being persisted by `close` may not be durable yet: start afresh, which
            // costs one sync round.
            saved_sync_state: None,
        };
        self.host.open(self.now_ms(), conn, doc, opts);
    }

    /// After a token refresh (`old` was the previous token): subscriptions the new token no
    /// longer allows end, role changes take effect, and the listing follows the new grants.
    pub(super) fn recheck_access(&mut self, conn: ConnId, old: &Claims) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let claims = c.claims.clone();
        let docs: Vec<(DocId, Role)> = c.docs.iter().map(|(d, r)| (*d, *r)).collect();
        for (doc, role) in docs {
            let meta = self.meta_or_none(doc);
            match readable_role(&claims, &doc, meta.as_ref()) {
                Some(r) if r == role => {}
                Some(r) => self.reopen(conn, doc, r),
                None => {
                    self.unsubscribe(conn, doc);
                    let code = refusal_code(&claims, &doc, meta.as_ref());
                    self.send(conn, &refusal(code, doc));
                }
            }
        }
        if old.admin != claims.admin {
            self.send_listing(conn);
            return;
        }
        let changed: BTreeSet<DocId> = old
            .docs
            .keys()
            .chain(claims.docs.keys())
            .filter(|d| old.docs.get(d) != claims.docs.get(d))
            .copied()
            .collect();
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for doc in changed {
            let meta = self.meta_or_none(doc);
            let before = readable_role(old, &doc, meta.as_ref());
            let after = readable_role(&claims, &doc, meta.as_ref());
            match (before == after, after) {
                (true, _) => {}
                (false, Some(role)) => added.push(DocEntry { doc, role }),
                (false, None) => removed.push(doc),
            }
        }
        self.send_delta(conn, added, removed);
    }

    fn meta_or_none(&self, doc: DocId) -> Option<DocMeta> {
        self.meta(doc).unwrap_or_else(|e| {
            tracing::error!(%doc, error = %e, "reading document metadata failed");
            None
        })
    }

    /// Answers a control request; a reply that does not fit waits (bounded) for room.
    fn reply(
        &mut self,
        request: &QueuedControl,
        doc: DocId,
        code: Option<ErrorCode>,
        message: &str,
    ) {
        let msg = Message::Reply {
            id: request.id,
            doc,
            code,
            message: message.to_string(),
        };
        let Some(frame) = self.encode(&msg, self.encoding_of(request.conn)) else {
            return;
        };
        self.flush_conn(request.conn);
        let Some(c) = self.conns.get_mut(&request.conn) else {
            return;
        };
        if c.closing {
            return;
        }
        if c.replies.is_empty() {
            match c.out.try_send(Outbound::Frame(frame)) {
                Ok(()) => {
                    Metrics::inc(&self.metrics.messages_out);
                    return;
                }
                Err(mpsc::error::TrySendError::Full(Outbound::Frame(frame))) => {
                    c.replies.push_back(frame)
                }
                Err(_) => return,
            }
        } else {
            c.replies.push_back(frame);
        }
        if c.replies.len() > MAX_PENDING_REPLIES {
            c.replies.pop_front();
            Metrics::inc(&self.metrics.queue_drops);
        }
    }
}
