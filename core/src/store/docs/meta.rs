//! The small records kept beside a document's chunks: its metadata, a sync state per peer, the
//! gate's records; and listing and deleting documents.

use std::collections::{BTreeMap, BTreeSet};

use automerge::sync;
use serde::{Deserialize, Serialize};

use super::chunks::ChunkKey;
use super::error::DocStoreError;
use crate::store::{Hex, KvStore, Table, WriteBatch};
use crate::{DocId, Role};

/// Format byte of a stored [`DocMeta`].
const META_FORMAT: u8 = 0x01;
/// Format byte of a stored sync state.
const SYNC_STATE_FORMAT: u8 = 0x01;

/// What weft knows about a document besides its content.
///
/// Every field defaults when absent, and unknown fields are ignored, so records written by
/// older and newer builds stay readable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct DocMeta {
    /// The application's document type.
    pub kind: Option<String>,
    /// The owning user.
    pub owner: Option<String>,
    /// This device's user's role on the document.
    pub role: Option<Role>,
    /// Roles granted to other users, by user.
    pub access: BTreeMap<String, Role>,
    /// When the document was created (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// When the document last changed (ms since the Unix epoch).
    pub updated_at_ms: u64,
    /// When the document was deleted, if it was (ms since the Unix epoch).
    pub deleted_at_ms: Option<u64>,
    /// Device side: the heads the relay or a peer last confirmed holding (lowercase hex).
    pub confirmed_heads: Vec<String>,
    /// Device side: when a relay or peer last confirmed this document in sync (ms since the
    /// Unix epoch).
    pub last_sync_ms: Option<u64>,
    /// Device side: the relay no longer lets this device's user read the document (unshared or
    /// deleted); the local copy is kept, read-only.
    pub revoked: bool,
    /// Relay side: bytes the document took in the store when last recorded (its owner's
    /// storage quota counts them).
    pub stored_bytes: u64,
    /// Device side: moved on each time the relay refuses this device's changes and the
    /// document returns to the relay's version; the device writes with a new actor from then.
    pub actor_epoch: u32,
}

pub(super) fn sync_state_key(doc: DocId, peer: &[u8]) -> Vec<u8> {
    [doc.as_bytes().as_slice(), peer].concat()
}

/// Store the sync state of `doc` with `peer` (a peer's stable id, e.g. its `DeviceId` bytes).
pub fn put_sync_state(batch: &mut WriteBatch, doc: DocId, peer: &[u8], state: &sync::State) {
    let encoded = state.encode();
    let mut value = Vec::with_capacity(1 + encoded.len());
    value.push(SYNC_STATE_FORMAT);
    value.extend_from_slice(&encoded);
    batch.put(Table::SYNC_STATES, sync_state_key(doc, peer), value);
}

/// Forget every peer's sync state for `doc`.
pub fn delete_sync_states(batch: &mut WriteBatch, doc: DocId) {
    batch.delete_prefix(Table::SYNC_STATES, doc.as_bytes().to_vec());
}

/// Store the metadata of `doc`.
pub fn put_meta(batch: &mut WriteBatch, doc: DocId, meta: &DocMeta) {
    let mut value = vec![META_FORMAT];
    rmp_serde::encode::write_named(&mut value, meta)
        .expect("DocMeta encodes: strings, integers and a map of known length into a Vec");
    batch.put(Table::DOC_META, doc.as_bytes().to_vec(), value);
}

/// Remove `doc` entirely: its chunks, sync states and metadata.
pub fn delete_doc(batch: &mut WriteBatch, doc: DocId) {
    batch
        .delete_prefix(Table::CHUNKS, doc.as_bytes().to_vec())
        .delete_prefix(Table::SYNC_STATES, doc.as_bytes().to_vec())
        .delete_prefix(Table::GATE_RECORDS, doc.as_bytes().to_vec())
        .delete(Table::DOC_META, doc.as_bytes().to_vec());
}

/// Format byte of a stored gate record.
const GATE_RECORD_FORMAT: u8 = 0x01;

/// Keeps a record of the engine's gate with `doc` (see `engine::Gate`).
pub fn put_gate_record(batch: &mut WriteBatch, doc: DocId, key: &[u8], value: &[u8]) {
    let mut v = Vec::with_capacity(1 + value.len());
    v.push(GATE_RECORD_FORMAT);
    v.extend_from_slice(value);
    batch.put(
        Table::GATE_RECORDS,
        [doc.as_bytes().as_slice(), key].concat(),
        v,
    );
}

/// A gate record: the gate's key and value.
pub type GateRecord = (Vec<u8>, Vec<u8>);

/// Every gate record kept with `doc`. A record in a format this build does not know is skipped
/// with a warning.
pub fn load_gate_records(
    store: &dyn KvStore,
    doc: DocId,
) -> Result<Vec<GateRecord>, DocStoreError> {
    let rows = store.scan_prefix(Table::GATE_RECORDS, doc.as_bytes())?;
    let mut out = Vec::with_capacity(rows.len());
    for (key, value) in rows {
        match value.split_first() {
            Some((&GATE_RECORD_FORMAT, body)) => out.push((key[16..].to_vec(), body.to_vec())),
            _ => tracing::warn!(%doc, "skipping a gate record in an unknown format"),
        }
    }
    Ok(out)
}

/// The stored sync state of `doc` with `peer`, if any.
pub fn load_sync_state(
    store: &dyn KvStore,
    doc: DocId,
    peer: &[u8],
) -> Result<Option<sync::State>, DocStoreError> {
    const RECORD: &str = "sync state";
    let Some(value) = store.get(Table::SYNC_STATES, &sync_state_key(doc, peer))? else {
        return Ok(None);
    };
    let body = versioned_body(doc, RECORD, SYNC_STATE_FORMAT, &value)?;
    sync::State::decode(body)
        .map(Some)
        .map_err(|err| DocStoreError::Decode {
            doc,
            record: RECORD,
            source: Box::new(err),
        })
}

/// The stored metadata of `doc`, if any.
pub fn load_meta(store: &dyn KvStore, doc: DocId) -> Result<Option<DocMeta>, DocStoreError> {
    let Some(value) = store.get(Table::DOC_META, doc.as_bytes())? else {
        return Ok(None);
    };
    decode_meta(doc, &value).map(Some)
}

/// Decodes `value`, the stored `doc_meta` row of `doc` (for readers that scan the table).
pub fn decode_meta(doc: DocId, value: &[u8]) -> Result<DocMeta, DocStoreError> {
    const RECORD: &str = "metadata";
    let body = versioned_body(doc, RECORD, META_FORMAT, value)?;
    rmp_serde::from_slice(body).map_err(|err| DocStoreError::Decode {
        doc,
        record: RECORD,
        source: Box::new(err),
    })
}

fn versioned_body<'v>(
    doc: DocId,
    record: &'static str,
    format: u8,
    value: &'v [u8],
) -> Result<&'v [u8], DocStoreError> {
    match value.split_first() {
        Some((&tag, body)) if tag == format => Ok(body),
        Some((&tag, _)) => Err(DocStoreError::UnknownFormat { doc, record, tag }),
        None => Err(DocStoreError::Decode {
            doc,
            record,
            source: "the stored value is empty".into(),
        }),
    }
}

/// Every document with metadata or chunks (including ones whose metadata marks them deleted).
///
/// Keys that are not a document's are skipped with a warning, so one damaged key does not hide
/// every document.
pub fn list_docs(store: &dyn KvStore) -> Result<Vec<DocId>, DocStoreError> {
    let mut docs = BTreeSet::new();
    for key in store.scan_keys(Table::DOC_META, &[])? {
        match <[u8; 16]>::try_from(key.as_slice()) {
            Ok(id) => {
                docs.insert(DocId::from_bytes(id));
            }
            Err(_) => tracing::warn!(key = %Hex(&key), "skipping malformed doc_meta key"),
        }
    }
    for key in store.scan_keys(Table::CHUNKS, &[])? {
        match ChunkKey::from_bytes(&key) {
            Some(chunk) => {
                docs.insert(chunk.doc());
            }
            None => tracing::warn!(key = %Hex(&key), "skipping malformed chunk key"),
        }
    }
    Ok(docs.into_iter().collect())
}
