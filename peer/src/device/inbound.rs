//! What a connection's messages do: subscriptions a peer asks for, the relay's listing,
//! kinds, actor bindings and replies, refusals, document messages for the engine, and
//! ephemeral messages and presence for the app.

use std::sync::Arc;

use weft_core::engine::ConnId;
use weft_core::store::docs;
use weft_core::store::WriteBatch;
use weft_core::wire::{ActorEntry, DocEntry, ErrorCode, Message};
use weft_core::{DocId, Role};

use super::{ConnKind, Done, Driver, Event};
use crate::status::{DocStatus, SyncState};

impl Driver {
    pub(super) fn inbound(&mut self, conn: ConnId, msg: Message) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let kind = c.kind;
        match msg {
            Message::Subscribed { doc, role } if kind != ConnKind::Listener => {
                self.open(conn, doc, role)
            }
            Message::Subscribe { doc } if kind == ConnKind::Listener => {
                self.peer_subscribes(conn, doc)
            }
            Message::Docs {
                full: _,
                added,
                removed,
            } => self.on_docs(conn, kind, added, removed),
            Message::Reply {
                id, code, message, ..
            } if kind == ConnKind::Relay => self.on_reply(conn, id, code, message),
            Message::Kinds { toml } if kind == ConnKind::Relay => self.on_kinds(&toml),
            Message::Actors { doc, actors } if kind == ConnKind::Relay => {
                self.on_actors(conn, doc, actors)
            }
            Message::DocsEnd { truncated, .. } => self.on_docs_end(conn, truncated),
            Message::Error {
                code,
                doc: Some(doc),
                message,
            } => self.on_doc_error(conn, kind, doc, code, message),
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

    /// A peer device (on this device's listener) asks for `doc`: granted with this device's
    /// role, unless it was deleted.
    fn peer_subscribes(&mut self, conn: ConnId, doc: DocId) {
        if self.is_deleted(doc) {
            self.send(
                conn,
                Message::Error {
                    code: ErrorCode::DELETED,
                    doc: Some(doc),
                    message: "the document was deleted".into(),
                },
            );
            return;
        }
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

    /// A listing (or its delta): every listed document is asked for; from the relay, its role
    /// is recorded and the removed ones are given up.
    fn on_docs(&mut self, conn: ConnId, kind: ConnKind, added: Vec<DocEntry>, removed: Vec<DocId>) {
        for e in added {
            if kind == ConnKind::Relay {
                if let Some(m) = self.metas.get_mut(&e.doc) {
                    if m.role != Some(e.role) || m.ext.revoked {
                        m.role = Some(e.role);
                        m.ext.revoked = false;
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

    /// The relay's declared kinds: kept in the data directory and given to the write rules.
    fn on_kinds(&mut self, toml: &str) {
        match weft_schema::rules::Kinds::with_declared(toml) {
            Ok(kinds) => {
                if let Err(e) = self.dir.write_kinds(toml) {
                    tracing::warn!(error = %e, "cannot keep the relay's kinds");
                }
                if let Some(rules) = self.rules() {
                    rules.set_kinds(Arc::new(kinds));
                }
            }
            Err(e) => tracing::warn!(error = %e, "the relay's kinds do not parse"),
        }
    }

    /// The relay's actor bindings for `doc`, which `conn` asked for: learned by the rules
    /// (held until the document opens if it is still loading) and those taken stored as gate
    /// records, so a later load knows them too.
    fn on_actors(&mut self, conn: ConnId, doc: DocId, actors: Vec<ActorEntry>) {
        if !self.conns.get(&conn).is_some_and(|c| c.docs.contains(&doc)) {
            tracing::debug!(%doc, "ignored actor bindings for a document not asked for");
            return;
        }
        let Some(rules) = self.rules() else {
            return;
        };
        let mut batch = WriteBatch::new();
        for a in actors {
            let actor = weft_core::automerge::ActorId::from(a.actor.as_slice());
            if rules.learn_binding(doc, actor, &a.user) {
                docs::put_gate_record(&mut batch, doc, &a.actor, a.user.as_bytes());
            }
        }
        if batch.is_empty() {
            return;
        }
        let ticket = self.group.submit(batch);
        self.tasks.spawn(async move { Done::Meta(ticket.await) });
    }

    /// The end of the listing: the link has discovered the user's documents.
    fn on_docs_end(&mut self, conn: ConnId, truncated: bool) {
        if truncated {
            tracing::warn!("the relay listed only part of this user's documents");
        }
        let link = self.conns.get(&conn).map(|c| c.link);
        if let Some(l) = link.and_then(|l| self.links.get_mut(&l)) {
            l.discovered = true;
            self.status_dirty = true;
        }
    }

    /// An error about `doc` from the other side.
    fn on_doc_error(
        &mut self,
        conn: ConnId,
        kind: ConnKind,
        doc: DocId,
        code: ErrorCode,
        message: String,
    ) {
        let asked = |d: &Driver| d.conns.get(&conn).is_some_and(|c| c.docs.contains(&doc));
        match code {
            ErrorCode::READ_ONLY => self.read_only(kind, doc),
            // Try again shortly (too many documents created at once, the relay's memory
            // budget): the document stays syncing and is asked for again after a backoff.
            ErrorCode::RATE_LIMITED if kind == ConnKind::Relay && asked(self) => {
                self.retry_later(conn, doc, &message);
            }
            ErrorCode::LIMIT_REACHED if kind == ConnKind::Relay && asked(self) => {
                // A quota: the document stays as it is here, unsynced with the relay.
                let link = self.conns.get(&conn).map(|c| c.link);
                if let Some(l) = link.and_then(|l| self.links.get_mut(&l)) {
                    l.change_refusals.push(format!("{doc}: {message}"));
                    self.status_dirty = true;
                }
                self.refuse(conn, doc, message);
            }
            ErrorCode::REFUSED => self.changes_refused(conn, kind, doc, message),
            // The relay decides deletions: whether or not this connection asked.
            ErrorCode::DELETED if kind == ConnKind::Relay && self.holds(doc) => self.erase(doc),
            ErrorCode::FORBIDDEN | ErrorCode::DELETED if !asked(self) => {
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
        }
    }

    /// `doc` is read-only for this device there: recorded; the relay's version replaces this
    /// device's, a peer's refusal is an event.
    fn read_only(&mut self, kind: ConnKind, doc: DocId) {
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

    /// The other side refused this device's changes to `doc`: noted in the link's status; from
    /// the relay, its version replaces this device's (kept aside in `rejected/`).
    fn changes_refused(&mut self, conn: ConnId, kind: ConnKind, doc: DocId, message: String) {
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
}
