//! The hub in a cluster (`crate::cluster`): what it appends to the cluster's log before it
//! acknowledges or applies anything, and what it does with the other relays' entries.
//!
//! Received changes are durable once both the store and the log hold them ([`Durable`]), so a
//! device is acknowledged, and other devices are sent the changes, only then. Metadata changes
//! (a creation, sharing, deletion) are appended the same way before they take effect. Imported
//! changes are applied to a loaded document as changes of this node (the engine sends them to
//! its subscribers; they are not logged again nor checkpointed here), and imported metadata
//! updates the cache and live connections as a control request committed here would.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use weft_core::automerge::ActorId;
use weft_core::host::LogWrite;
use weft_core::store::{CommitTicket, GroupCommit, StoreError, WriteBatch};
use weft_core::wire::Message;
use weft_core::{DeviceId, DocId};

use super::Hub;
use crate::cluster::{ClusterLog, Entry, Imported, LogTicket, SILENT_AFTER};
use crate::meta::DocMeta;

/// Members online on other relays remembered per document at most.
const MAX_REMOTE_PRESENCE: usize = 1_024;
/// How long documents whose changes another relay accepted are remembered, in case it dies
/// before their checkpoint: well past a checkpoint interval and its retries (a relay that
/// cannot reach Postgres accepts nothing in a cluster, so its checkpoints lag only by those).
const IMPORTS_KEPT: std::time::Duration = std::time::Duration::from_secs(600);
/// Documents remembered per relay at most (past it, the oldest beyond [`IMPORTS_KEPT`] go,
/// then new ones are not remembered).
const MAX_RECENT_IMPORTS: usize = 100_000;

/// A write that is durable once its store ticket and, in a cluster, its log append complete.
/// In a cluster the log comes first: the batch is submitted to the store only once the log
/// holds its entry (see `Action::LogThenWrite`), so a relay killed in between has the change
/// in the log, which its follower reads back, never only in its own store.
pub(crate) struct Durable {
    /// The batch and the store it goes to once the log holds the entry.
    batch: Option<(Arc<GroupCommit>, WriteBatch)>,
    log: Option<LogTicket>,
    ticket: Option<CommitTicket>,
    /// The append failed before it was queued (the log is behind or stopped): nothing of the
    /// write is stored.
    failed: Option<StoreError>,
}

impl Durable {
    /// A write to the store alone, submitted already.
    pub(crate) fn store(ticket: CommitTicket) -> Durable {
        Durable {
            batch: None,
            log: None,
            ticket: Some(ticket),
            failed: None,
        }
    }
}

impl Future for Durable {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Err(e));
        }
        if let Some(log) = self.log.as_mut() {
            match Pin::new(log).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    self.log = None;
                    if let Some((group, batch)) = self.batch.take() {
                        // The change's chunk waits to share a commit with the next ones
                        // (the log holds it); else a lone lazy write is made here when the
                        // store's writer is idle (cheaper than its hand-off).
                        self.ticket = Some(group.write_soon(batch));
                    }
                }
            }
        }
        match self.ticket.as_mut() {
            Some(ticket) => Pin::new(ticket).poll(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl Hub {
    /// Makes this relay one of a cluster: received changes and metadata changes go to `log`
    /// before they take effect.
    pub fn with_cluster(mut self, log: ClusterLog) -> Self {
        self.host.set_log_received(true);
        self.cluster = Some(log);
        self
    }

    /// `batch` written to the store; in a cluster, only once `entry` is in the log.
    fn durable_with(&self, batch: WriteBatch, entry: Entry) -> Durable {
        let Some(log) = &self.cluster else {
            return Durable::store(self.group.submit(batch));
        };
        let mut d = Durable {
            batch: Some((self.group.clone(), batch)),
            log: None,
            ticket: None,
            failed: None,
        };
        match log.append(entry) {
            Ok(t) => d.log = Some(t),
            Err(e) => d.failed = Some(e),
        }
        d
    }

    /// An engine write of received changes (`Action::LogThenWrite`). In a cluster the store
    /// write is lazy (no fsync of its own): the log in Postgres is the change's durable copy
    /// before the store sees it, and a crash that loses the write leaves the entry after the
    /// follower's saved cursor, which the next process looks at and writes again
    /// (`cluster/follow.rs`; decision 0035).
    pub(super) fn durable_changes(&self, mut batch: WriteBatch, log: LogWrite) -> Durable {
        if self.cluster.is_some() {
            batch.set_lazy();
        }
        self.durable_with(
            batch,
            Entry::Changes {
                doc: log.doc,
                changes: log.changes,
                records: log.records,
            },
        )
    }

    /// A metadata write (creation, sharing, deletion): `batch` stores it.
    pub(super) fn durable_meta(&self, batch: WriteBatch, doc: DocId, meta: &DocMeta) -> Durable {
        self.durable_with(
            batch,
            Entry::Meta {
                doc,
                meta: meta.clone(),
            },
        )
    }

    /// An entry of another relay, already in the store.
    pub(super) fn on_imported(&mut self, imported: Imported) {
        match imported {
            Imported::Changes {
                doc,
                changes,
                bindings,
                relay,
                own,
            } => {
                if own {
                    self.mark_dirty(doc);
                } else {
                    self.remember_import(relay, doc);
                }
                if self.loading.contains(&doc) {
                    // The load may have read the store before the entry was written.
                    self.imports_waiting.entry(doc).or_default().push(changes);
                    return;
                }
                if !self.host.is_loaded(doc) {
                    // The store has it for the next load; its owner's quota counts it now.
                    if !own {
                        self.count_imported(doc, changes.len() as u64);
                    }
                    return;
                }
                if let Some(rules) = self.rules() {
                    for (actor, user) in &bindings {
                        rules.learn_binding(doc, ActorId::from(actor.as_slice()), user);
                    }
                }
                self.apply_imported(doc, &changes);
            }
            Imported::Ephemeral { from, msg } => {
                self.heard(&from);
                self.remote_ephemeral(from, msg)
            }
            Imported::Alive { from } => self.heard(&from),
            Imported::Meta {
                doc,
                meta,
                users,
                created,
            } => {
                if created && meta.deleted_at_ms.is_none() {
                    // Quotas count the cluster's documents, not this relay's creations.
                    self.count_created_elsewhere(&meta);
                }
                if let Some(cached) = self.metas.get_mut(&doc) {
                    *cached = (*meta).clone();
                }
                if meta.deleted_at_ms.is_some() {
                    self.count_deleted(doc, &meta);
                    self.erase(doc);
                }
                self.apply_access_change(doc, &meta, &users);
            }
        }
    }

    /// Publishes a member's `Presence` or `Ephemeral` message to the cluster's other relays.
    pub(super) fn publish(&self, msg: &Message) {
        if let Some(log) = &self.cluster {
            log.publish(msg);
        }
    }

    /// A member's presence or ephemeral message on another relay: to this relay's
    /// subscribers of the document; presence is remembered for those who join later.
    fn remote_ephemeral(&mut self, from: Arc<str>, msg: Message) {
        let Some(doc) = msg.doc() else { return };
        if let Message::Presence {
            user,
            device,
            online,
            ..
        } = &msg
        {
            let here = self.remote_presence.entry(doc).or_default();
            if *online {
                if here.len() < MAX_REMOTE_PRESENCE {
                    here.insert((user.clone(), *device), from);
                }
            } else {
                here.remove(&(user.clone(), *device));
                if here.is_empty() {
                    self.remote_presence.remove(&doc);
                }
            }
        }
        if self.subscribers.contains_key(&doc) {
            self.broadcast(doc, None, &msg);
        }
    }

    /// Another relay's process spoke: it is alive.
    fn heard(&mut self, from: &Arc<str>) {
        let now = self.now_ms();
        match self.relays_heard.get_mut(from) {
            Some(at) => *at = now,
            None => {
                self.relays_heard.insert(from.clone(), now);
            }
        }
    }

    /// `doc` has changes `relay` accepted: remembered for [`IMPORTS_KEPT`] (at most
    /// [`MAX_RECENT_IMPORTS`] documents per relay), in case it dies before checkpointing them.
    fn remember_import(&mut self, relay: Arc<str>, doc: DocId) {
        let now = self.now_ms();
        let docs = self.recent_imports.entry(relay).or_default();
        if docs.len() >= MAX_RECENT_IMPORTS && !docs.contains_key(&doc) {
            let kept = u64::try_from(IMPORTS_KEPT.as_millis()).unwrap_or(u64::MAX);
            docs.retain(|_, at| now.saturating_sub(*at) < kept);
            if docs.len() >= MAX_RECENT_IMPORTS {
                return;
            }
        }
        docs.insert(doc, now);
    }

    /// A relay of the cluster went silent: the documents whose changes it accepted lately may
    /// lack their checkpoint (its dirty set died with it), so this relay, which holds the same
    /// changes, writes them (a checkpoint merges with what Postgres holds: a document written
    /// by both is written once more, never lost). Imports older than [`IMPORTS_KEPT`] are
    /// taken as checkpointed by their relay.
    fn checkpoint_for(&mut self, relay: &str) {
        let Some(docs) = self.recent_imports.remove(relay) else {
            return;
        };
        let now = self.now_ms();
        let kept = u64::try_from(IMPORTS_KEPT.as_millis()).unwrap_or(u64::MAX);
        let mut marked = 0usize;
        for (doc, at) in docs {
            if now.saturating_sub(at) < kept {
                self.mark_dirty(doc);
                marked += 1;
            }
        }
        if marked > 0 {
            tracing::info!(
                relay,
                documents = marked,
                "checkpointing what a silent relay of the cluster accepted lately"
            );
        }
    }

    /// Forgets the members of relay processes silent for [`SILENT_AFTER`] (killed, or cut off
    /// from Postgres), telling this relay's subscribers they went offline: a relay that dies
    /// announces no one's leaving. Their devices reconnect elsewhere and announce themselves
    /// again. The documents such a relay accepted lately are checkpointed here.
    pub(super) fn forget_silent_relays(&mut self) {
        let now = self.now_ms();
        let limit = u64::try_from(SILENT_AFTER.as_millis()).unwrap_or(u64::MAX);
        let mut silent: Vec<Arc<str>> = Vec::new();
        self.relays_heard.retain(|from, at| {
            let alive = now.saturating_sub(*at) < limit;
            if !alive {
                silent.push(from.clone());
            }
            alive
        });
        if silent.is_empty() {
            return;
        }
        let mut gone = Vec::new();
        self.remote_presence.retain(|doc, members| {
            members.retain(|(user, device), from| {
                let keep = !silent.contains(from);
                if !keep {
                    gone.push(Message::Presence {
                        doc: *doc,
                        user: user.clone(),
                        device: *device,
                        online: false,
                    });
                }
                keep
            });
            !members.is_empty()
        });
        for from in &silent {
            tracing::info!(relay = %from, "a relay of the cluster went silent; its members are offline here");
            // The speaker is `NAME#PROCESS` (see `cluster/bus.rs`); imports are by name.
            let name = from.rsplit_once('#').map_or(&**from, |(name, _)| name);
            self.checkpoint_for(name);
        }
        for msg in gone {
            if let Some(doc) = msg.doc() {
                if self.subscribers.contains_key(&doc) {
                    self.broadcast(doc, None, &msg);
                }
            }
        }
    }

    /// Members of `doc` online on other relays, as they announced themselves.
    pub(super) fn remote_members(&self, doc: DocId) -> Vec<(String, DeviceId)> {
        self.remote_presence
            .get(&doc)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }
}
