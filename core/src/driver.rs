//! What the device runtime and the relay do alike as drivers of a [`Host`]: loading and saving
//! a document off the event loop.
//!
//! [`Host`]: crate::host::Host

use std::sync::Arc;

use crate::host::{self, Loaded, SaveJob, Saved};
use crate::store::docs::DocStoreError;
use crate::store::{KvStore, StoreError};
use crate::DocId;

/// Loads `doc` from `store` on a blocking thread (Automerge's load is CPU work that would stall
/// the driver's loop), saving it too when the host asked for a snapshot to compact with
/// ([`crate::host::Host::wants_snapshot`]). A load task that panicked or was cancelled is a
/// store error for the document.
pub async fn load(
    store: Arc<dyn KvStore>,
    doc: DocId,
    for_compaction: bool,
) -> Result<Option<Loaded>, DocStoreError> {
    tokio::task::spawn_blocking(move || {
        if for_compaction {
            host::load_for_compaction(store.as_ref(), doc)
        } else {
            host::load(store.as_ref(), doc)
        }
    })
    .await
    .unwrap_or_else(|e| {
        Err(DocStoreError::Store {
            source: StoreError::Backend {
                path: Default::default(),
                message: format!("load task failed: {e}"),
            },
        })
    })
}

/// Runs a save the host handed out ([`crate::host::Action::Save`]) on a blocking thread.
/// `None` only when the task was cancelled (a runtime shutting down): [`SaveJob::run`] catches
/// panics.
pub async fn save(job: SaveJob) -> Option<Saved> {
    let doc = job.doc();
    match tokio::task::spawn_blocking(move || job.run()).await {
        Ok(saved) => Some(saved),
        Err(e) => {
            tracing::warn!(%doc, error = %e, "a save task ended without a result");
            None
        }
    }
}
