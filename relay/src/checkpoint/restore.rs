//! The restore: an empty (or partial) store filled from the last checkpoint before the relay
//! serves anything.

use std::collections::HashMap;
use std::sync::Arc;

use weft_core::store::docs::{self as docstore, ChunkKind};
use weft_core::store::{GroupCommit, WriteBatch};

use crate::meta::DocMeta;
use weft_core::{DocId, Role};

use super::pg::{pg, PgConn};
use super::CheckpointError;
use crate::index;

/// Documents restored per page.
const RESTORE_PAGE: i64 = 500;

/// What a restore did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Documents in Postgres.
    pub checkpointed: u64,
    /// Documents the relay's store lacked and got from Postgres.
    pub restored: u64,
}

/// Copies into the relay's store every checkpointed document it lacks: content (one snapshot
/// chunk), owner, access list, deletion and the `user_docs` rows, page by page. A document the
/// store already has is left alone (its metadata is the newer one). So a relay whose data
/// directory was lost serves every document, with exactly its access, and none is claimable.
pub(crate) async fn restore(
    conn: &mut PgConn,
    group: &Arc<GroupCommit>,
) -> Result<RestoreStats, CheckpointError> {
    let mut stats = RestoreStats::default();
    let mut after = String::new();
    loop {
        let ids: Vec<String> = conn
            .client
            .query(
                "select doc_id from weft_documents where doc_id > $1 order by doc_id limit $2",
                &[&after, &RESTORE_PAGE],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let Some(last) = ids.last() else {
            break;
        };
        after = last.clone();
        stats.checkpointed += ids.len() as u64;
        let missing = missing_from_store(group, parse_ids(&ids)).await?;
        if missing.is_empty() {
            continue;
        }
        let ids: Vec<String> = missing.iter().map(DocId::to_string).collect();
        let rows = conn
            .client
            .query(
                "select doc_id, owner, content, content_blake3, \
                 (extract(epoch from created_at) * 1000)::int8, \
                 (extract(epoch from deleted_at) * 1000)::int8 \
                 from weft_documents where doc_id = any($1)",
                &[&ids],
            )
            .await
            .map_err(pg)?;
        let mut access = access_of(conn, &ids).await?;
        let mut batch = WriteBatch::new();
        for r in &rows {
            if restore_row(r, &mut access, &mut batch) {
                stats.restored += 1;
            }
        }
        group
            .submit(batch)
            .await
            .map_err(|source| CheckpointError::StoreWrite { source })?;
    }
    Ok(stats)
}

/// The page's ids that parse; the others are skipped with a warning.
fn parse_ids(ids: &[String]) -> Vec<DocId> {
    ids.iter()
        .filter_map(|id| match id.parse() {
            Ok(doc) => Some(doc),
            Err(_) => {
                tracing::warn!(doc_id = %id, "skipping a checkpoint row with a malformed id");
                None
            }
        })
        .collect()
}

/// Those of `docs` the relay's store has no metadata for (read on a blocking thread).
async fn missing_from_store(
    group: &Arc<GroupCommit>,
    docs: Vec<DocId>,
) -> Result<Vec<DocId>, CheckpointError> {
    let store = group.store().clone();
    tokio::task::spawn_blocking(move || {
        docs.into_iter()
            .filter_map(|doc| {
                match docstore::load_meta::<crate::meta::RelayMeta>(store.as_ref(), doc) {
                    Ok(None) => Some(Ok(doc)),
                    Ok(Some(_)) => None,
                    Err(source) => Some(Err(CheckpointError::Store { doc, source })),
                }
            })
            .collect::<Result<Vec<DocId>, _>>()
    })
    .await
    .map_err(|_| CheckpointError::TaskFailed)?
}

/// The access lists of `ids`, by document id; rows with an unknown role are skipped.
async fn access_of(
    conn: &mut PgConn,
    ids: &[String],
) -> Result<HashMap<String, Vec<(String, Role)>>, CheckpointError> {
    let access_rows = conn
        .client
        .query(
            "select doc_id, user_id, role from weft_access where doc_id = any($1)",
            &[&ids],
        )
        .await
        .map_err(pg)?;
    let mut access: HashMap<String, Vec<(String, Role)>> = HashMap::new();
    for r in &access_rows {
        let role = match r.get::<_, &str>(2) {
            "rw" => Role::ReadWrite,
            "ro" => Role::ReadOnly,
            other => {
                tracing::warn!(role = other, "skipping an access row with an unknown role");
                continue;
            }
        };
        access.entry(r.get(0)).or_default().push((r.get(1), role));
    }
    Ok(access)
}

/// Adds to `batch` one checkpointed document (a `weft_documents` row): its content when it
/// matches its hash and the document is not deleted, its metadata with its access list (taken
/// from `access`) and its `user_docs` rows. False for a row whose id does not parse.
fn restore_row(
    r: &tokio_postgres::Row,
    access: &mut HashMap<String, Vec<(String, Role)>>,
    batch: &mut WriteBatch,
) -> bool {
    let id: String = r.get(0);
    let Ok(doc) = id.parse::<DocId>() else {
        return false;
    };
    let content: Option<Vec<u8>> = r.get(2);
    let hash: Option<Vec<u8>> = r.get(3);
    let deleted_at: Option<i64> = r.get(5);
    match (content, hash) {
        // A deleted document has no content to restore: only its tombstone.
        _ if deleted_at.is_some() => {}
        (Some(content), Some(hash))
            if blake3::hash(&content).as_bytes().as_slice() == hash.as_slice() =>
        {
            if !content.is_empty() {
                docstore::put_chunk(batch, doc, ChunkKind::Snapshot, content);
            }
        }
        _ => {
            // The metadata is still restored: the document stays unclaimable.
            tracing::error!(%doc, "checkpointed content is missing or does not match its blake3; not restored");
        }
    }
    let mut meta = DocMeta::default();
    meta.owner = r.get(1);
    let to_ms = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
    meta.created_at_ms = to_ms(r.get(4)).unwrap_or(0);
    meta.updated_at_ms = meta.created_at_ms;
    meta.deleted_at_ms = to_ms(deleted_at);
    meta.access = access.remove(&id).unwrap_or_default().into_iter().collect();
    for (user, holding) in index::user_docs_of(&meta) {
        index::put_user_doc(batch, &user, doc, holding);
    }
    docstore::put_meta(batch, doc, &meta);
    true
}
