//! Discovery from the hub's side: the full listing after `Welcome`, listing deltas, the
//! housekeeping that resends what did not fit a connection's queue, and the one-time build of
//! the per-user index.

use std::sync::Arc;

use tokio::sync::mpsc;

use weft_core::engine::ConnId;
use weft_core::store::docs as docstore;
use weft_core::store::WriteBatch;
use weft_core::wire::DocEntry;
use weft_core::DocId;

use super::{Hub, Outbound};
use crate::discovery;
use crate::index;
use crate::metrics::Metrics;

impl Hub {
    /// Sends `conn` the full listing of what its user may read, all of it or (when the queue
    /// lacks room, or the store fails) nothing yet: it is retried from housekeeping.
    pub(super) fn send_listing(&mut self, conn: ConnId) {
        // Frames put on the queue directly must not overtake the connection's batch.
        self.flush_conn(conn);
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let claims = c.claims.clone();
        let store = self.host.store().clone();
        let metas = &self.metas;
        let listing = discovery::listing(
            store.as_ref(),
            &claims,
            self.cfg.max_listed_docs,
            |doc| match metas.get(&doc) {
                Some(m) => Ok(Some(m.clone())),
                None => docstore::load_meta::<crate::meta::RelayMeta>(store.as_ref(), doc),
            },
        );
        let frames: Option<Vec<Arc<Vec<u8>>>> = match listing {
            Ok(listing) => {
                if listing.truncated {
                    tracing::warn!(conn = conn.0, user = %claims.sub, max = self.cfg.max_listed_docs, "discovery list truncated");
                }
                discovery::listing_messages(listing, self.cfg.docs_per_message)
                    .iter()
                    .map(|m| self.encode(m, self.encoding_of(conn)))
                    .collect()
            }
            Err(e) => {
                tracing::error!(conn = conn.0, error = %e, "listing a user's documents failed");
                None
            }
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        let Some(frames) = frames.filter(|f| f.len() <= c.out.capacity()) else {
            c.relist = true;
            return;
        };
        c.relist = false;
        // The hub is the queue's only sender, so the room checked above is there.
        for frame in frames {
            if c.out.try_send(Outbound::Frame(frame)).is_err() {
                c.relist = true;
                return;
            }
            Metrics::inc(&self.metrics.messages_out);
        }
    }

    /// Sends a listing delta, unless a full listing is due anyway.
    pub(super) fn send_delta(&mut self, conn: ConnId, added: Vec<DocEntry>, removed: Vec<DocId>) {
        self.flush_conn(conn);
        for msg in discovery::delta_messages(added, removed, self.cfg.docs_per_message) {
            let Some(frame) = self.encode(&msg, self.encoding_of(conn)) else {
                continue;
            };
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if c.closing || c.relist {
                return;
            }
            match c.out.try_send(Outbound::Frame(frame)) {
                Ok(()) => Metrics::inc(&self.metrics.messages_out),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    Metrics::inc(&self.metrics.queue_drops);
                    c.relist = true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }

    /// Housekeeping: sends waiting replies and due listings to connections with room again.
    pub(super) fn retry_discovery(&mut self) {
        let due: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.closing && (c.relist || !c.replies.is_empty()))
            .map(|(id, _)| *id)
            .collect();
        for conn in due {
            self.flush_conn(conn);
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            while let Some(frame) = c.replies.pop_front() {
                match c.out.try_send(Outbound::Frame(frame)) {
                    Ok(()) => Metrics::inc(&self.metrics.messages_out),
                    Err(mpsc::error::TrySendError::Full(Outbound::Frame(frame))) => {
                        c.replies.push_front(frame);
                        break;
                    }
                    Err(_) => break,
                }
            }
            if c.relist && c.replies.is_empty() {
                self.send_listing(conn);
            }
        }
    }

    /// Builds the per-user index of a store written before it existed (once; later starts
    /// find it built). Runs before the hub serves anything, so no metadata changes meanwhile.
    pub(super) async fn index_upgrade(&mut self) {
        let store = self.host.store().clone();
        let rebuilt = tokio::task::spawn_blocking(move || {
            if index::user_index_built(store.as_ref())? {
                return Ok(None);
            }
            index::rebuild_user_index(store.as_ref()).map(Some)
        })
        .await;
        let batch: WriteBatch = match rebuilt {
            Ok(Ok(Some(batch))) => batch,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "building the per-user document index failed");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "building the per-user document index failed");
                return;
            }
        };
        let rows = batch.len().saturating_sub(1);
        match self.group.submit(batch).await {
            Ok(()) => tracing::info!(rows, "built the per-user document index"),
            Err(e) => tracing::error!(error = %e, "storing the per-user document index failed"),
        }
    }
}
