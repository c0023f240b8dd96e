//! Turning one document of the relay's store into its checkpoint rows (blocking: run it with
//! `spawn_blocking`). Reads only what is durable in redb, so a checkpoint never holds a change
//! the relay has not stored, and never touches the hub's engine.

use std::collections::BTreeMap;
use std::time::Duration;

use weft_core::automerge::{Automerge, ChangeHash};
use weft_core::host;
use weft_core::store::docs as docstore;
use weft_core::store::KvStore;
use weft_core::{hash_hex, DocId, Document, Role};
use weft_schema::rules::{record, Kinds};
use weft_schema::MessageRow;

use super::CheckpointError;

/// What Postgres holds for a document, read under its lock at the start of a checkpoint.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stored {
    /// `weft_documents.heads`.
    pub(crate) heads: Vec<String>,
    /// `weft_documents.content`, fetched only when the relay lacks some of `heads`.
    pub(crate) content: Option<Vec<u8>>,
    /// `weft_documents.deleted_at` is set (by this relay or another).
    pub(crate) deleted: bool,
}

/// One document's checkpoint, ready to write.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) doc: DocId,
    pub(crate) kind: Option<String>,
    pub(crate) owner: Option<String>,
    pub(crate) created_ms: Option<i64>,
    pub(crate) deleted_ms: Option<i64>,
    pub(crate) access: Vec<(String, &'static str)>,
    pub(crate) body: Body,
    /// Postgres' content had changes the relay lacked: the stored bytes, to add to the
    /// relay's store as a chunk so its copy holds the union too.
    pub(crate) merged_in: Option<Vec<u8>>,
    /// How long preparing the row took (for the hot-document bound).
    pub(crate) cost: Duration,
}

/// The content part of a row.
#[derive(Debug)]
pub(crate) enum Body {
    /// Postgres already holds exactly these heads: only metadata and access are written.
    Unchanged,
    /// The document was deleted: its row keeps only who owned it and when it was deleted
    /// (content, JSON view and heads cleared), and its message rows go.
    Deleted,
    /// New content.
    Content {
        heads: Vec<String>,
        content: Vec<u8>,
        blake3: Vec<u8>,
        json: Option<serde_json::Value>,
        /// Every message row is replaced (`true`) or only `messages` are upserted.
        full: bool,
        messages: Vec<MessageRow>,
        removed: Vec<String>,
        /// Its `weft_records` row when it is of a declared kind; `None` removes the row.
        record: Option<Box<Record>>,
    },
}

/// A `weft_records` row: the declared kind and the `fields` object of
/// [`record::to_json`] (root fields and collections; fields that don't read are left out).
#[derive(Debug, PartialEq)]
pub(crate) struct Record {
    pub(crate) kind: String,
    pub(crate) fields: serde_json::Value,
}

/// The outcome of preparing a document.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// Ready to write.
    Row(Box<Row>),
    /// Postgres holds heads the relay lacks: fetch its content and prepare again.
    NeedsStored,
    /// The relay has no such document (nothing to write).
    Absent,
}

/// Prepares `doc`'s rows given what Postgres holds (`stored`, `None` when it has no row);
/// `kinds` says which documents are records.
pub(crate) fn prepare(
    store: &dyn KvStore,
    kinds: &Kinds,
    doc: DocId,
    stored: Option<&Stored>,
) -> Result<Prepared, CheckpointError> {
    let started = std::time::Instant::now();
    let store_err = |source| CheckpointError::Store { doc, source };
    let Some(meta) =
        docstore::load_meta::<crate::meta::RelayMeta>(store, doc).map_err(store_err)?
    else {
        return Ok(Prepared::Absent);
    };
    let ms = |v: u64| i64::try_from(v).ok();
    let row = |kind, body, merged_in| Row {
        doc,
        kind,
        owner: meta.owner.as_deref().map(weft_schema::strip_nul),
        created_ms: (meta.created_at_ms > 0)
            .then(|| ms(meta.created_at_ms))
            .flatten(),
        deleted_ms: meta.deleted_at_ms.and_then(ms),
        access: access_rows(&meta),
        body,
        merged_in,
        cost: started.elapsed(),
    };
    if meta.deleted_at_ms.is_some() || stored.is_some_and(|s| s.deleted) {
        // Nothing of the content is read, let alone written: the row only records the
        // deletion (and another relay's copy never brings content back).
        return Ok(Prepared::Row(Box::new(row(None, Body::Deleted, None))));
    }
    let local = host::load(store, doc)
        .map_err(store_err)?
        .map(|l| l.doc)
        .unwrap_or_default();
    let loaded_in = started.elapsed();
    let stored_heads: Vec<ChangeHash> = stored
        .map(|s| s.heads.iter().filter_map(|h| h.parse().ok()).collect())
        .unwrap_or_default();
    let lacking = stored_heads.iter().any(|h| !local.has_change(h));
    let (document, merged_in) = match (lacking, stored.and_then(|s| s.content.as_ref())) {
        (false, _) => (local, None),
        (true, None) => return Ok(Prepared::NeedsStored),
        (true, Some(theirs)) => {
            // Both snapshots concatenated load as their union.
            let mut both = local.save();
            both.extend_from_slice(theirs);
            let merged =
                Document::load(&both).map_err(|source| CheckpointError::Merge { doc, source })?;
            (merged, Some(theirs.clone()))
        }
    };
    let heads: Vec<String> = document.heads().iter().map(hash_hex).collect();
    let am = document.automerge();
    let body = if stored.is_some_and(|s| sorted(&s.heads) == heads) {
        Body::Unchanged
    } else {
        let content = Content {
            doc,
            document: &document,
            stored: stored.is_some(),
            stored_heads: &stored_heads,
            loaded_in,
        };
        content.body(kinds, heads)
    };
    let kind = weft_schema::raw_kind(am).map(|k| weft_schema::strip_nul(&k));
    Ok(Prepared::Row(Box::new(row(kind, body, merged_in))))
}

/// A document's access list as `weft_access` rows: user (without NUL) and `rw` or `ro`.
fn access_rows(meta: &crate::meta::DocMeta) -> Vec<(String, &'static str)> {
    meta.access
        .iter()
        .map(|(user, role)| {
            let role = match role {
                Role::ReadWrite => "rw",
                Role::ReadOnly => "ro",
            };
            (weft_schema::strip_nul(user), role)
        })
        .collect()
}

/// A document whose content Postgres lacks, and what preparing it needs to know.
struct Content<'a> {
    doc: DocId,
    document: &'a Document,
    /// Postgres has a row for it, with these heads.
    stored: bool,
    stored_heads: &'a [ChangeHash],
    /// How long loading it took (traced).
    loaded_in: Duration,
}

impl Content<'_> {
    /// The new content: saved bytes and their hash, the JSON view, the message rows and the
    /// record.
    fn body(&self, kinds: &Kinds, heads: Vec<String>) -> Body {
        let (doc, am) = (self.doc, self.document.automerge());
        let t = std::time::Instant::now();
        let content = self.document.save();
        let saved_in = t.elapsed();
        let blake3 = blake3::hash(&content).as_bytes().to_vec();
        let t = std::time::Instant::now();
        let json = match weft_schema::to_json(am) {
            Ok(v) => Some(weft_schema::strip_nul_json(v)),
            Err(e) => {
                tracing::warn!(%doc, error = %e, "document has no JSON view; doc is null");
                None
            }
        };
        let record = record_of(kinds, am);
        let json_in = t.elapsed();
        let t = std::time::Instant::now();
        let (full, messages, removed) = message_rows(doc, am, self.stored, self.stored_heads);
        tracing::trace!(
            %doc,
            load_ms = self.loaded_in.as_millis() as u64,
            save_ms = saved_in.as_millis() as u64,
            json_ms = json_in.as_millis() as u64,
            messages_ms = t.elapsed().as_millis() as u64,
            "prepared"
        );
        Body::Content {
            heads,
            content,
            blake3,
            json,
            full,
            messages,
            removed,
            record,
        }
    }
}

/// `doc`'s message rows: whether every row is replaced, the rows to write, and the message ids
/// whose rows go.
fn message_rows(
    doc: DocId,
    am: &Automerge,
    stored_present: bool,
    stored_heads: &[ChangeHash],
) -> (bool, Vec<MessageRow>, Vec<String>) {
    // Incremental when Postgres' rows follow heads this document contains. Entries of
    // `messages` that don't read as messages (another writer's malformed data) get no
    // row, and a message that stopped reading loses its row.
    if stored_present {
        match weft_schema::messages_changed_since(am, stored_heads) {
            Ok(ch) => {
                log_skipped(doc, &ch.skipped);
                let unreadable = ch.skipped.iter().filter_map(|s| s.message_key());
                (
                    false,
                    dedup(ch.value.changed.iter().map(MessageRow::from_message)),
                    ch.value
                        .removed
                        .iter()
                        .cloned()
                        .chain(unreadable)
                        .map(|k| weft_schema::strip_nul(k.id.as_ref()))
                        .collect(),
                )
            }
            Err(e) => match weft_schema::messages(am) {
                Ok(all) => {
                    log_skipped(doc, &all.skipped);
                    (
                        true,
                        dedup(all.value.iter().map(MessageRow::from_message)),
                        Vec::new(),
                    )
                }
                // A chat whose messages do not read keeps its rows as they were.
                Err(_) if weft_schema::kind(am).is_ok_and(|k| k.has_chat()) => {
                    tracing::warn!(%doc, error = %e, "messages unreadable; rows left as they were");
                    (false, Vec::new(), Vec::new())
                }
                // Not a chat (any more): no message rows.
                Err(_) => (true, Vec::new(), Vec::new()),
            },
        }
    } else {
        let all = match weft_schema::messages(am) {
            Ok(all) => {
                log_skipped(doc, &all.skipped);
                all.value
            }
            Err(_) => Vec::new(),
        };
        (
            true,
            dedup(all.iter().map(MessageRow::from_message)),
            Vec::new(),
        )
    }
}

/// The `weft_records` row of `am` when it is of a declared kind, NULs removed.
fn record_of(kinds: &Kinds, am: &Automerge) -> Option<Box<Record>> {
    let spec = record::kind_of(kinds, am)?;
    let mut json = record::to_json(kinds, am)?;
    let fields = match json.get_mut("fields") {
        Some(f) => f.take(),
        None => serde_json::Value::Object(serde_json::Map::new()),
    };
    Some(Box::new(Record {
        kind: weft_schema::strip_nul(&spec.name),
        fields: weft_schema::strip_nul_json(fields),
    }))
}

/// Logs the message entries a checkpoint left without a row: a warning with the first, each
/// one at debug (a hostile writer can make many, and every checkpoint meets them again).
fn log_skipped(doc: DocId, skipped: &[weft_schema::Skipped]) {
    let Some(first) = skipped.first() else {
        return;
    };
    tracing::warn!(%doc, count = skipped.len(), %first, "message entries that don't read were skipped");
    for s in skipped {
        tracing::debug!(%doc, skipped = %s, "message entry skipped");
    }
}

fn sorted(heads: &[String]) -> Vec<String> {
    let mut h: Vec<String> = heads.iter().map(|s| s.to_ascii_lowercase()).collect();
    h.sort_unstable();
    h
}

/// One row per message id (a row's key): the last in display order wins, so one insert never
/// touches a row twice.
fn dedup(rows: impl Iterator<Item = MessageRow>) -> Vec<MessageRow> {
    let by_id: BTreeMap<String, MessageRow> = rows.map(|r| (r.message_id.clone(), r)).collect();
    by_id.into_values().collect()
}

#[cfg(test)]
mod tests;
