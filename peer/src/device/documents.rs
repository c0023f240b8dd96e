//! The driver's documents: creating, changing and reading them, telling the app what changed,
//! and taking the relay's version again when it refused local changes.

use std::any::Any;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use tokio::sync::oneshot;
use weft_core::automerge::{ActorId, ChangeHash};
use weft_core::engine::{ConnId, Origin};
use weft_core::store::docs;

use super::meta::DocMeta;
use weft_core::store::WriteBatch;
use weft_core::wire::Message;
use weft_core::{DocId, Document, Role};

use super::event::MAX_ATTRIBUTED;
use super::{ChangeFn, ConnKind, Done, Driver, Event, EventOrigin, Op, Reply};
use crate::status::SyncState;
use crate::{unix_ms, DeviceError};

impl Driver {
    /// A load finished: the operations waiting for the document run, or fail with it (a
    /// document erased while it loaded does not come back).
    pub(super) fn loaded(
        &mut self,
        doc: DocId,
        result: Result<Option<weft_core::host::Loaded>, weft_core::store::docs::DocStoreError>,
    ) {
        self.loading.remove(&doc);
        if self.is_deleted(doc) {
            for op in self.pending.remove(&doc).unwrap_or_default() {
                match op {
                    Op::Change(_, r) | Op::Read(_, r) => {
                        let _ = r.send(Err(DeviceError::Deleted(doc)));
                    }
                }
            }
            return;
        }
        if let Err(e) = self.host.loaded(self.now_ms(), doc, result) {
            tracing::error!(%doc, error = %e, "loading a document failed");
            for op in self.pending.remove(&doc).unwrap_or_default() {
                match op {
                    Op::Change(_, r) | Op::Read(_, r) => {
                        let _ = r.send(Err(DeviceError::DocStore(super::driver::clone_err(&e))));
                    }
                }
            }
            return;
        }
        for op in self.pending.remove(&doc).unwrap_or_default() {
            self.run_op(doc, op);
        }
    }

    /// The relay refused this device's changes to `doc` (read-only): keep the local version
    /// aside, empty the document in the store and take the relay's version again, so the
    /// device never diverges from the relay for good.
    pub(super) fn reset_to_remote(&mut self, doc: DocId) {
        self.reset_to_remote_as(doc, Some(Role::ReadOnly));
    }

    /// [`Self::reset_to_remote`], for any refusal: `role` is what the device now knows of its
    /// role (`None`: unchanged).
    pub(super) fn reset_to_remote_as(&mut self, doc: DocId, role: Option<Role>) {
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
        meta.ext.confirmed_heads.clear();
        meta.ext.actor_epoch = meta.ext.actor_epoch.wrapping_add(1);
        self.metas.insert(doc, meta.clone());
        self.dirty_metas.remove(&doc);
        let mut batch = WriteBatch::new();
        docs::delete_doc(&mut batch, doc);
        super::tail::delete(&mut batch, doc);
        self.cached_tails.remove(&doc);
        docs::put_meta(&mut batch, doc, &meta);
        let ticket = self.group.submit(batch);
        self.tasks
            .spawn(async move { Done::Reset(doc, ticket.await) });
        tracing::warn!(%doc, kept = ?kept, "the relay refused local changes; kept them aside and taking the relay's version");
        let _ = self.events.send(Event::Rejected { doc, kept });
    }

    pub(super) fn create(&mut self, kind: Option<String>, init: ChangeFn, reply: Reply<DocId>) {
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
    pub(super) fn subscribe_everywhere(&mut self, doc: DocId) {
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

    pub(super) fn op(&mut self, doc: DocId, op: Op) {
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

    pub(super) fn run_op(&mut self, doc: DocId, op: Op) {
        match op {
            Op::Read(f, reply) => {
                let r = self.host.read(doc, f).map_err(DeviceError::from);
                let _ = reply.send(r);
            }
            Op::Change(f, reply) => {
                let meta = self.metas.get(&doc);
                if meta.is_some_and(|m| m.role == Some(Role::ReadOnly) || m.ext.revoked) {
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
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
        }
    }

    /// The actor this device writes `doc` with: a keyed hash of the document and its epoch
    /// (which a reset to the relay's version moves on, so refused changes' sequence numbers are
    /// never reused).
    pub(super) fn actor_for(&self, doc: DocId) -> weft_core::automerge::ActorId {
        let epoch = self.metas.get(&doc).map_or(0, |m| m.ext.actor_epoch);
        let mut h = blake3::Hasher::new_keyed(&self.actor_secret);
        h.update(doc.as_bytes());
        h.update(&epoch.to_be_bytes());
        weft_core::automerge::ActorId::from(&h.finalize().as_bytes()[..16])
    }

    pub(super) fn announce(&mut self, doc: DocId, heads: Vec<ChangeHash>, origin: Origin) {
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
        let authors = self.authors(doc, &before, origin);
        let _ = self.events.send(Event::Changed {
            doc,
            heads,
            origin: match origin {
                Origin::Local => EventOrigin::Local,
                _ => EventOrigin::Remote,
            },
            patches: Arc::new(patches),
            authors,
        });
    }

    /// The users who wrote `doc`'s changes since `before`, sorted, each once: this device's
    /// user for its own changes, else whom the rules gate knows each actor writes for. A
    /// first event (`before` empty) names nobody rather than walk the whole history.
    fn authors(&mut self, doc: DocId, before: &[ChangeHash], origin: Origin) -> Vec<String> {
        if before.is_empty() {
            return Vec::new();
        }
        let actors: BTreeSet<ActorId> = self
            .host
            .read(doc, |d| {
                d.automerge()
                    .get_changes(before)
                    .into_iter()
                    .take(MAX_ATTRIBUTED)
                    .map(|c| c.actor_id().clone())
                    .collect()
            })
            .unwrap_or_default();
        if actors.is_empty() {
            return Vec::new();
        }
        let Some(rules) = self.rules() else {
            return Vec::new();
        };
        if origin == Origin::Local {
            return rules.local_user().map(str::to_string).into_iter().collect();
        }
        let users: BTreeSet<&str> = actors
            .iter()
            .filter_map(|actor| rules.binding(doc, actor))
            .collect();
        users.into_iter().map(str::to_string).collect()
    }

    /// After a change, every link that had the document synced is syncing again (except the
    /// connection it came from, which has it).
    pub(super) fn mark_all_syncing(&mut self, doc: DocId, except: Option<ConnId>) {
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
    pub(super) fn rules(&mut self) -> Option<&mut weft_schema::rules::RulesGate> {
        self.host
            .gate_mut()?
            .as_any_mut()
            .downcast_mut::<weft_schema::rules::RulesGate>()
    }
}
