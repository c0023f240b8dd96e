//! The driver's connections: registering them, what they ask for and send, refusals.

use std::collections::HashSet;
use std::sync::Arc;

use weft_core::engine::{ConnId, OpenOptions};
use weft_core::host::{self};
use weft_core::store::docs;

use super::meta::DocMeta;
use weft_core::store::WriteBatch;
use weft_core::wire::{DocEntry, ErrorCode, Message};
use weft_core::{DocId, Role};

use super::{Conn, ConnKind, Done, Driver, Event, Queued, Registration};
use crate::status::{DocStatus, LinkState, SyncState};
use crate::unix_ms;

impl Driver {
    pub(super) fn add_conn(&mut self, conn: ConnId, reg: Registration) {
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
                    .filter(|(_, m)| !m.ext.revoked && m.deleted_at_ms.is_none())
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
    pub(super) fn ask_for(&mut self, conn: ConnId, doc: DocId) {
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
            let last_sync_ms = self.metas.get(&doc).and_then(|m| m.ext.last_sync_ms);
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

    pub(super) fn inbound(&mut self, conn: ConnId, msg: Message) {
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
    pub(super) fn open(&mut self, conn: ConnId, doc: DocId, role: Role) {
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
        if kind == ConnKind::Relay && (meta.role != Some(role) || meta.ext.revoked) {
            meta.role = Some(role);
            meta.ext.revoked = false;
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

    pub(super) fn refuse(&mut self, conn: ConnId, doc: DocId, reason: String) {
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
    pub(super) fn removed(&mut self, conn: ConnId, doc: DocId) {
        if self.is_deleted(doc) {
            return;
        }
        let asked = self.conns.get(&conn).is_some_and(|c| c.docs.contains(&doc));
        let revoked = self.metas.get(&doc).is_some_and(|m| m.ext.revoked);
        self.revoke(conn, doc, "no longer shared with this user".into());
        if !asked && !revoked && self.metas.contains_key(&doc) {
            self.ask_for(conn, doc);
        }
    }

    /// The relay stopped serving `doc` to this user: keep the copy, read-only.
    pub(super) fn revoke(&mut self, conn: ConnId, doc: DocId, reason: String) {
        if let Some(m) = self.metas.get_mut(&doc) {
            // Only a document the relay had granted before is marked revoked; one it never
            // granted (never uploaded, or not permitted) stays as it is.
            if m.role.is_some() && !m.ext.revoked {
                m.ext.revoked = true;
                self.dirty_metas.insert(doc);
            }
        }
        self.refuse(conn, doc, reason);
    }
}
