//! Quotas: what one member may cost the relay.
//!
//! - **Documents per user**: a user owns at most `max_docs_per_user` documents; creating one
//!   more is refused (`LIMIT_REACHED`). Creations are also rate limited per connection
//!   (`create_burst`, `create_rate`), so one socket cannot create thousands in a burst.
//! - **Bytes per user**: the documents a user owns take at most `max_user_bytes` in the store
//!   (whoever writes into them); a message that would take its document's owner past it is
//!   refused (`REFUSED`). Counted from each document's stored size: recorded in its metadata
//!   (summed at start), set from the store when the document loads (in a cluster, the others'
//!   writes into it), then followed as changes become durable. What other relays store into
//!   a document this relay has not loaded is added as it arrives (lost on a restart, until
//!   the document loads).
//! - **Memory for loaded documents**: when the loaded documents' stored bytes pass
//!   `max_loaded_bytes`, idle ones are evicted first (least recently used); while still over,
//!   documents that need loading are refused (`RATE_LIMITED`, try again).
//!
//! Bytes per document (`EngineConfig::max_doc_bytes`) and per change are the engine's; bytes
//! per second are each connection task's.

use weft_core::engine::Inbound;
use weft_core::hash::{HashMap, HashSet};
use weft_core::store::docs as docstore;

use crate::index::{self, Holding};
use weft_core::store::WriteBatch;
use weft_core::wire::{ErrorCode, Message};
use weft_core::{DocId, KvStore};

use super::Hub;
use crate::metrics::Metrics;

/// Quota settings (part of [`super::HubConfig`]).
#[derive(Clone, Debug)]
pub struct Quotas {
    /// Documents one user may own.
    pub max_docs_per_user: usize,
    /// Bytes the documents one user owns may take in the store.
    pub max_user_bytes: u64,
    /// Stored bytes of the documents loaded in memory at once (see the module docs).
    pub max_loaded_bytes: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_docs_per_user: 10_000,
            max_user_bytes: 1 << 30,
            max_loaded_bytes: 1 << 30,
        }
    }
}

/// What the hub counts for its quotas.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    /// Documents owned, per user (filled from the per-user index on a user's first creation).
    owned: HashMap<String, usize>,
    /// Stored bytes of the documents each user owns.
    bytes: HashMap<String, u64>,
    /// Documents whose recorded size changed and is not yet stored in their metadata.
    sizes_to_record: HashSet<DocId>,
    /// Bytes other relays of a cluster stored into documents not loaded here, with their
    /// owner: counted in `bytes`, not in the documents' recorded sizes (which the next load
    /// corrects).
    unrecorded: HashMap<DocId, (String, u64)>,
    /// Over the memory budget even after evicting every idle document.
    pub(crate) over_memory: bool,
}

impl Usage {
    /// See `Hub::shrink`.
    pub(crate) fn shrink(&mut self) {
        weft_core::hash::shrink_set_if_sparse(&mut self.sizes_to_record);
        weft_core::hash::shrink_if_sparse(&mut self.unrecorded);
    }

    /// Sums the recorded sizes of every document, by owner (blocking: a scan of the
    /// metadata table, before the hub serves anything).
    pub(crate) fn scan(store: &dyn KvStore) -> Usage {
        let mut usage = Usage::default();
        let docs = match docstore::list_docs(store) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "listing documents for the quotas failed");
                return usage;
            }
        };
        for doc in docs {
            if let Ok(Some(meta)) = docstore::load_meta::<crate::meta::RelayMeta>(store, doc) {
                if let (Some(owner), None) = (&meta.owner, meta.deleted_at_ms) {
                    *usage.bytes.entry(owner.clone()).or_default() += meta.ext.stored_bytes;
                }
            }
        }
        usage
    }
}

/// Bytes of changes a message carries.
fn carried_bytes(inbound: &Inbound) -> u64 {
    match inbound {
        Inbound::Sync { changes, .. } | Inbound::Changes { changes, .. } => {
            changes.iter().map(|c| c.raw.len() as u64).sum()
        }
        _ => 0,
    }
}

impl Hub {
    /// Whether `user` may create one more document (counting it if so); tells the connection
    /// why not.
    pub(super) fn may_create(
        &mut self,
        conn: weft_core::engine::ConnId,
        doc: DocId,
        user: &str,
    ) -> bool {
        let allowed = self
            .conns
            .get_mut(&conn)
            .is_some_and(|c| c.create_rate.allow(std::time::Instant::now()));
        if !allowed {
            Metrics::inc(&self.metrics.quota_refusals);
            self.send(
                conn,
                &Message::Error {
                    code: ErrorCode::RATE_LIMITED,
                    doc: Some(doc),
                    message: "too many documents created at once; try again shortly".into(),
                },
            );
            return false;
        }
        let owned = self.owned(user);
        if owned >= self.cfg.quotas.max_docs_per_user {
            Metrics::inc(&self.metrics.quota_refusals);
            tracing::info!(user, owned, "refused a document over the user's quota");
            self.send(
                conn,
                &Message::Error {
                    code: ErrorCode::LIMIT_REACHED,
                    doc: Some(doc),
                    message: format!(
                        "quota: a user may own at most {} documents",
                        self.cfg.quotas.max_docs_per_user
                    ),
                },
            );
            return false;
        }
        // Counted now: creations decided before their owner records commit count too.
        self.usage.owned.insert(user.to_string(), owned + 1);
        true
    }

    /// A document's creation for `user` failed: it no longer counts.
    pub(super) fn creation_failed(&mut self, user: &str) {
        if let Some(n) = self.usage.owned.get_mut(user) {
            *n = n.saturating_sub(1);
        }
    }

    /// Another relay of the cluster created a document: it counts against its owner here too
    /// (a count not read yet is read from the per-user index, which already holds it).
    pub(super) fn count_created_elsewhere(&mut self, meta: &crate::meta::DocMeta) {
        if let Some(n) = meta
            .owner
            .as_ref()
            .and_then(|o| self.usage.owned.get_mut(o))
        {
            *n += 1;
        }
    }

    /// A document was deleted: it no longer counts against its owner.
    pub(super) fn count_deleted(&mut self, doc: DocId, meta: &crate::meta::DocMeta) {
        let unrecorded = self.usage.unrecorded.remove(&doc).map_or(0, |(_, b)| b);
        let Some(owner) = &meta.owner else {
            return;
        };
        if let Some(n) = self.usage.owned.get_mut(owner) {
            *n = n.saturating_sub(1);
        }
        if let Some(b) = self.usage.bytes.get_mut(owner) {
            *b = b
                .saturating_sub(meta.ext.stored_bytes)
                .saturating_sub(unrecorded);
        }
    }

    fn owned(&mut self, user: &str) -> usize {
        if let Some(n) = self.usage.owned.get(user) {
            return *n;
        }
        let n = match index::load_user_docs(self.host.store().as_ref(), user) {
            Ok(rows) => rows.iter().filter(|(_, h)| *h == Holding::Owner).count(),
            Err(e) => {
                tracing::error!(user, error = %e, "counting a user's documents failed");
                0
            }
        };
        self.usage.owned.insert(user.to_string(), n);
        n
    }

    /// Whether the changes of `inbound` fit the quota of its document's owner; refuses them
    /// (and ends the subscription) when they do not.
    pub(super) fn within_user_bytes(
        &mut self,
        conn: weft_core::engine::ConnId,
        inbound: &Inbound,
    ) -> bool {
        let adding = carried_bytes(inbound);
        if adding == 0 {
            return true;
        }
        let doc = inbound.doc();
        let Some(owner) = self.metas.get(&doc).and_then(|m| m.owner.clone()) else {
            return true;
        };
        let used = self.usage.bytes.get(&owner).copied().unwrap_or(0);
        let max = self.cfg.quotas.max_user_bytes;
        if used.saturating_add(adding) <= max {
            return true;
        }
        Metrics::inc(&self.metrics.quota_refusals);
        tracing::info!(conn = conn.0, %doc, owner, used, "refused changes over the owner's storage quota");
        self.send(
            conn,
            &Message::Error {
                code: ErrorCode::REFUSED,
                doc: Some(doc),
                message: format!(
                    "changes refused: the documents of their owner would take more than the quota of {max} bytes"
                ),
            },
        );
        self.unsubscribe(conn, doc);
        false
    }

    /// A change to `doc` became durable: its owner's usage follows the document's size.
    pub(super) fn count_stored(&mut self, doc: DocId) {
        let Some(size) = self.host.stored_bytes(doc) else {
            return;
        };
        let Some(meta) = self.metas.get_mut(&doc) else {
            return;
        };
        let Some(owner) = meta.owner.clone() else {
            return;
        };
        // Counted already, though not recorded: what other relays stored while it was not
        // loaded here.
        let counted = meta
            .ext
            .stored_bytes
            .saturating_add(self.usage.unrecorded.remove(&doc).map_or(0, |(_, b)| b));
        if size == counted {
            return;
        }
        let used = self.usage.bytes.entry(owner).or_default();
        *used = used.saturating_add(size).saturating_sub(counted);
        meta.ext.stored_bytes = size;
        self.usage.sizes_to_record.insert(doc);
    }

    /// Another relay of the cluster stored `bytes` into `doc`, which is not loaded here: its
    /// owner's usage grows by them now (the document's recorded size catches up when it
    /// loads, [`Hub::count_stored`]).
    pub(super) fn count_imported(&mut self, doc: DocId, bytes: u64) {
        // The owner: from the entry of an earlier import, the cached metadata, or the store.
        let owner = match (self.usage.unrecorded.get(&doc), self.metas.get(&doc)) {
            (Some((owner, _)), _) => Some(owner.clone()),
            (None, Some(meta)) => meta.owner.clone(),
            (None, None) => {
                match docstore::load_meta::<crate::meta::RelayMeta>(self.host.store().as_ref(), doc)
                {
                    Ok(meta) => meta.and_then(|m| m.owner),
                    Err(e) => {
                        tracing::warn!(%doc, error = %e, "reading a document's owner failed; its import is not counted");
                        None
                    }
                }
            }
        };
        let Some(owner) = owner else {
            return;
        };
        let used = self.usage.bytes.entry(owner.clone()).or_default();
        *used = used.saturating_add(bytes);
        let unrecorded = &mut self.usage.unrecorded.entry(doc).or_insert((owner, 0)).1;
        *unrecorded = unrecorded.saturating_add(bytes);
    }

    /// Stores the sizes that changed in their documents' metadata (one batch).
    pub(super) fn record_sizes(&mut self) {
        if self.usage.sizes_to_record.is_empty() {
            return;
        }
        let mut batch = WriteBatch::new();
        for doc in std::mem::take(&mut self.usage.sizes_to_record) {
            // The cached metadata is the durable one (access changes go through the hub), so
            // writing it back changes only the size.
            if let Some(meta) = self.metas.get(&doc) {
                docstore::put_meta(&mut batch, doc, meta);
            } else if self.cluster.is_some() {
                // Another writer of metadata (the cluster's follower) could commit between
                // this read and this write, and its access list would be overwritten; the
                // size is recorded again when the document next loads.
                continue;
            } else if let Ok(Some(mut stored)) =
                docstore::load_meta::<crate::meta::RelayMeta>(self.host.store().as_ref(), doc)
            {
                if let Some(size) = self.host.stored_bytes(doc) {
                    stored.ext.stored_bytes = size;
                    docstore::put_meta(&mut batch, doc, &stored);
                }
            }
        }
        if !batch.is_empty() {
            let ticket = self.group.submit(batch);
            self.tasks.spawn(async move {
                if let Err(e) = ticket.await {
                    tracing::warn!(error = %e, "recording document sizes failed");
                }
                super::Done::Nothing
            });
        }
    }

    /// Keeps loaded documents within the memory budget: idle ones are evicted first; while
    /// still over, new loads are refused ([`Hub::may_load`]).
    pub(super) fn enforce_memory_budget(&mut self) {
        let max = self.cfg.quotas.max_loaded_bytes;
        self.host.evict_idle(max);
        let loaded = self.host.loaded_bytes();
        self.metrics
            .documents_loaded_bytes
            .store(loaded, std::sync::atomic::Ordering::Relaxed);
        let over = loaded > max;
        if over && !self.usage.over_memory {
            tracing::warn!(
                loaded,
                max,
                "loaded documents are over the memory budget; refusing new loads"
            );
        }
        self.usage.over_memory = over;
    }

    /// Whether `doc` may be opened for `conn` without going over the memory budget; tells the
    /// connection when not.
    pub(super) fn may_load(&mut self, conn: weft_core::engine::ConnId, doc: DocId) -> bool {
        if !self.usage.over_memory || self.host.is_loaded(doc) {
            return true;
        }
        Metrics::inc(&self.metrics.quota_refusals);
        self.send(
            conn,
            &Message::Error {
                code: ErrorCode::RATE_LIMITED,
                doc: Some(doc),
                message: "the relay is at its memory budget for documents; try again later".into(),
            },
        );
        false
    }
}
