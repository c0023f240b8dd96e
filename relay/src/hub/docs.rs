//! Documents: subscriptions (who is subscribed to what, with which role, and the relay
//! metadata of documents with subscribers), presence, and the engine's output fanned out to
//! subscribers.
//!
//! A subscription is decided ([`crate::access`]), recorded (a created document's owner record
//! is committed first), decided again once that is durable, then opened in the engine. The
//! engine's messages reach only connections subscribed to their document.

use std::sync::Arc;

use weft_core::engine::{ConnId, EngineError, OpenOptions, Origin, Output, Rejection};
use weft_core::host;
use weft_core::store::docs::{self as docstore, DocStoreError};
use weft_core::store::StoreError;

use crate::meta::DocMeta;
use weft_core::wire::{self, Encoding, ErrorCode, Message};
use weft_core::{DeviceId, DocId, Role};

use super::{Done, Hub, Outbound};
use crate::access::{decide, refusal_code, Decision};
use crate::metrics::Metrics;
use crate::sharing;

impl Hub {
    pub(super) fn on_subscribe(&mut self, conn: ConnId, doc: DocId) {
        self.subscribe(conn, doc, true);
    }

    /// `may_create: false` refuses an unknown document instead of creating it (WebSocket hook).
    pub(super) fn subscribe(&mut self, conn: ConnId, doc: DocId, may_create: bool) {
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
                let change = sharing::create(&claims.sub, doc, self.unix_now() * 1000);
                let ticket = self.durable_meta(change.batch, doc, &change.meta);
                self.metas.insert(doc, change.meta);
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
    pub(super) fn meta(&self, doc: DocId) -> Result<Option<DocMeta>, DocStoreError> {
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
        self.announce(conn, doc, user, device);
        self.subscribers.entry(doc).or_default().insert(conn, role);
        self.host.open(self.now_ms(), conn, doc, opts);
    }

    /// Presence for a subscription being opened (before `conn` joins the subscribers): the
    /// newcomer learns who is here; the others learn of the newcomer.
    fn announce(&mut self, conn: ConnId, doc: DocId, user: String, device: DeviceId) {
        let mut here: Vec<(String, DeviceId)> = self
            .subscribers
            .get(&doc)
            .into_iter()
            .flat_map(|s| s.keys())
            .filter_map(|c| self.conns.get(c).map(|c| (c.claims.sub.clone(), c.device)))
            .collect();
        here.extend(self.remote_members(doc));
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
        let joined = Message::Presence {
            doc,
            user,
            device,
            online: true,
        };
        self.broadcast(doc, Some(conn), &joined);
        self.publish(&joined);
    }

    /// How the engine syncs `doc` with `conn`, which holds `role`.
    pub(super) fn open_options(&self, conn: ConnId, doc: DocId, role: Role) -> Option<OpenOptions> {
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

    /// A subscription's owner record (or nothing, for a document that exists) is durable: the
    /// subscription opens, or the connection is told it failed.
    pub(super) fn subscription_recorded(
        &mut self,
        conn: ConnId,
        doc: DocId,
        created: bool,
        result: Result<(), StoreError>,
    ) {
        match result {
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
        }
    }

    /// Ends `conn`'s subscription to `doc`, if it has one (`false` if not): the engine closes
    /// the peer, and the other subscribers see it leave.
    pub(super) fn unsubscribe(&mut self, conn: ConnId, doc: DocId) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if c.docs.remove(&doc).is_none() {
            return false;
        }
        c.lagging.remove(&doc);
        let (user, device) = (c.claims.sub.clone(), c.device);
        self.forget_presence(doc, conn);
        if let Some(s) = self.subscribers.get_mut(&doc) {
            s.remove(&conn);
            if s.is_empty() {
                self.subscribers.remove(&doc);
                self.metas.remove(&doc);
            }
        }
        self.host.close(self.now_ms(), conn, doc);
        let left = Message::Presence {
            doc,
            user,
            device,
            online: false,
        };
        self.broadcast(doc, Some(conn), &left);
        self.publish(&left);
        true
    }

    /// Delivers one of the engine's messages to `conn`. `last` is the latest `Changes` encoded
    /// in this pump: the engine sends the same one to every live peer of a document, one after
    /// another, so it is encoded once (per encoding).
    pub(super) fn deliver(
        &mut self,
        conn: ConnId,
        msg: Message,
        last: &mut Option<(Message, Encoding, Arc<Vec<u8>>)>,
    ) {
        // Nothing of a document reaches a connection not subscribed to it (this also covers
        // output produced just before a revocation closed it). Asked of the document's
        // subscribers, not the connection's documents: the engine sends one document's output
        // to its peers one after another, so the one small map stays in cache where a
        // connection's thousands of documents missed it once per send.
        let subscribed = msg.doc().is_none_or(|doc| {
            self.subscribers
                .get(&doc)
                .is_some_and(|s| s.contains_key(&conn))
        });
        if !subscribed {
            return;
        }
        if let Message::Changes { doc, .. } = &msg {
            let doc = *doc;
            if let Some(t) = self.arrivals.remove(&doc) {
                self.metrics.observe_fanout(t.elapsed());
            }
            let encoding = self.encoding_of(conn);
            let frame = match &*last {
                Some((m, e, f)) if *e == encoding && same_changes(m, &msg) => f.clone(),
                _ => {
                    let Some(f) = self.encode(&msg, encoding) else {
                        return;
                    };
                    *last = Some((msg, encoding, f.clone()));
                    f
                }
            };
            self.push(conn, Outbound::Frame(frame), Some(doc));
            return;
        }
        self.send(conn, &msg)
    }

    /// What the engine reports about a document: changes refused, a peer's protocol error, a
    /// document that failed to open, a new actor binding, a change made durable.
    pub(super) fn on_output(&mut self, output: Output) {
        match output {
            Output::Rejected {
                conn,
                doc,
                reason: Rejection::ReadOnly,
            } => {
                Metrics::inc(&self.metrics.refused_read_only);
                let msg = Message::Error {
                    code: ErrorCode::READ_ONLY,
                    doc: Some(doc),
                    message: "read-only: changes were not applied".into(),
                };
                self.send(conn, &msg);
            }
            Output::Rejected { conn, doc, reason } => {
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
            Output::ProtocolError { conn, doc, error } => {
                tracing::info!(conn = conn.0, %doc, %error, "closing a connection that sent an invalid message");
                let reason = match error {
                    // Says what to do: a stock client that reconnects sends its changes again.
                    EngineError::Withheld { .. } => error.to_string(),
                    _ => format!("invalid message for document {doc}"),
                };
                self.close(conn, ErrorCode::MALFORMED, reason);
            }
            Output::Failed { doc, conns } => {
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
            Output::GateRecord { doc, key, value } => {
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
            // An idle document left memory: nothing of it stays in the hub either (its owner
            // is set again before it is next opened).
            Output::Evicted { doc } => {
                self.arrivals.remove(&doc);
                if let Some(rules) = self.rules() {
                    rules.forget_owner(doc);
                }
            }
            // Postgres checkpoints: `Changed` is reported once the change is durable.
            // Changes made here are those imported from the cluster's log: the relay that
            // accepted them checkpoints them and reports their messages.
            Output::Changed {
                doc,
                origin: Origin::Local,
                ..
            } => self.count_stored(doc),
            Output::Changed { doc, .. } => {
                self.mark_dirty(doc);
                self.count_stored(doc);
                self.notify_messages(doc);
            }
            _ => {}
        }
    }

    /// The engine's copy of `doc` may be half-changed after a panic: drop it and open it
    /// again, from the store, for every subscriber but `culprit`.
    pub(super) fn reload_after_panic(&mut self, doc: DocId, culprit: ConnId) {
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

pub(super) fn forbidden(doc: DocId) -> Message {
    refusal(ErrorCode::FORBIDDEN, doc)
}

/// A refusal for one document: `FORBIDDEN` (never saying whether it exists) or `DELETED`.
pub(super) fn refusal(code: ErrorCode, doc: DocId) -> Message {
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

pub(super) fn internal(doc: DocId) -> Message {
    Message::Error {
        code: ErrorCode::INTERNAL,
        doc: Some(doc),
        message: "the relay could not serve this document".into(),
    }
}
