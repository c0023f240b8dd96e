//! The driver's connections: registering them, what they ask for and send, refusals. What
//! their messages do is in `inbound.rs`.

use std::collections::HashSet;

use weft_core::engine::{ConnId, OpenOptions};
use weft_core::host::{self};

use super::meta::DocMeta;
use weft_core::wire::{DocEntry, ErrorCode, Message};
use weft_core::{DocId, Role};

use super::{Conn, ConnKind, Driver, Event, Queued, Registration};
use crate::status::{DocStatus, LinkState, SyncState};
use crate::unix_ms;

/// The first wait before asking again for a document the relay said to try later.
const RETRY_FIRST_MS: u64 = 250;
/// The longest such wait.
const RETRY_MAX_MS: u64 = 30_000;

/// Documents the relay said to try again later (`RATE_LIMITED`): bounded by the documents
/// asked for, one entry per document and connection.
#[derive(Default)]
pub(super) struct Retries {
    /// When to ask again, on which connection.
    pub(super) due: Vec<(u64, ConnId, DocId)>,
    /// Refusals in a row per document, for the backoff; cleared once granted.
    pub(super) attempts: std::collections::HashMap<DocId, u32>,
}

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

    /// The relay asked to try `doc` again later: it is asked for again after a backoff that
    /// doubles with each refusal in a row (from [`RETRY_FIRST_MS`] to [`RETRY_MAX_MS`]), and
    /// stays syncing meanwhile.
    pub(super) fn retry_later(&mut self, conn: ConnId, doc: DocId, reason: &str) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.docs.remove(&doc);
        self.host.close(self.now_ms(), conn, doc);
        self.schedule_retry(conn, doc, reason);
    }

    /// Asks for `doc` on `conn` again after the backoff of its refusals in a row.
    fn schedule_retry(&mut self, conn: ConnId, doc: DocId, reason: &str) {
        let attempt = self.retries.attempts.entry(doc).or_insert(0);
        let wait = RETRY_FIRST_MS
            .saturating_mul(1 << (*attempt).min(16))
            .min(RETRY_MAX_MS);
        *attempt = attempt.saturating_add(1);
        tracing::debug!(%doc, wait_ms = wait, reason, "the relay asked to try again later");
        let due = self.now_ms().saturating_add(wait);
        self.retries.due.push((due, conn, doc));
    }

    /// A store write for `doc` failed: the engine dropped it from memory (the store lacks the
    /// failed write; nothing acknowledged is lost) and closed it for `conns`. Each connection
    /// that asked for it unsubscribes and asks again after a backoff, which reloads the
    /// document from the store; a peer that asked us is told, and asks again itself.
    pub(super) fn store_failed(&mut self, doc: DocId, conns: Vec<ConnId>) {
        tracing::error!(%doc, "a store write failed; the document is reopened after a backoff");
        for conn in conns {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            if c.kind == ConnKind::Listener {
                self.send(
                    conn,
                    Message::Error {
                        code: ErrorCode::INTERNAL,
                        doc: Some(doc),
                        message: "a store write failed here; ask again".into(),
                    },
                );
                continue;
            }
            if !c.docs.remove(&doc) {
                continue;
            }
            let link = c.link;
            if let Some(d) = self.links.get_mut(&link).and_then(|l| l.docs.get_mut(&doc)) {
                d.state = SyncState::Syncing;
                self.status_dirty = true;
            }
            self.send(conn, Message::Unsubscribe { doc });
            self.schedule_retry(conn, doc, "a store write failed");
        }
    }

    /// Asks again for the documents whose backoff ended, on connections still open.
    pub(super) fn retry_due(&mut self) {
        let now = self.now_ms();
        if self.retries.due.iter().all(|(at, _, _)| *at > now) {
            return;
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retries.due)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.retries.due = later;
        for (_, conn, doc) in due {
            if self.conns.contains_key(&conn) {
                self.ask_for(conn, doc);
            }
        }
    }

    /// The other side granted `doc` with `role`: open it in the engine (unless it was deleted
    /// meanwhile).
    pub(super) fn open(&mut self, conn: ConnId, doc: DocId, role: Role) {
        self.retries.attempts.remove(&doc);
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
