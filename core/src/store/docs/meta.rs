//! The small records kept beside a document's chunks: its metadata, a sync state per peer, the
//! gate's records; and listing and deleting documents.

use std::collections::{BTreeMap, BTreeSet};

use automerge::sync;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::chunks::ChunkKey;
use super::error::DocStoreError;
use crate::store::{Hex, KvStore, Table, WriteBatch};
use crate::{DocId, Role};

/// Format byte of a stored [`DocMeta`].
const META_FORMAT: u8 = 0x01;
/// Format byte of a stored sync state.
const SYNC_STATE_FORMAT: u8 = 0x01;

/// What weft knows about a document besides its content: the fields the device and the
/// relay share, and `ext`, what only one of them keeps (`DeviceMeta` in `weft-peer`,
/// `RelayMeta` in `weft-relay`).
///
/// Stored as one msgpack map: `ext`'s fields sit beside the shared ones (flattened), as they
/// did when this was one struct of every field, so rows of either shape read as the other.
/// Every field defaults when absent, and unknown fields are ignored, so records written by
/// older and newer builds stay readable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct DocMeta<X> {
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
    /// What only the device or only the relay keeps.
    #[serde(flatten)]
    pub ext: X,
}

/// The part of [`DocMeta`] only one side keeps: fields stored beside the shared ones.
pub trait MetaExt: Serialize + DeserializeOwned + Default {
    /// What a deleted document's tombstone keeps of it ([`crate::store::erase::tombstone`]).
    fn tombstone(&self) -> Self;
}

/// No extension: the shared fields only, for readers that need nothing else (a row read this
/// way must not be written back, which would drop the other fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoExt {}

impl MetaExt for NoExt {
    fn tombstone(&self) -> Self {
        NoExt {}
    }
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
pub fn put_meta<X: Serialize>(batch: &mut WriteBatch, doc: DocId, meta: &DocMeta<X>) {
    let mut value = vec![META_FORMAT];
    rmp_serde::encode::write_named(&mut value, meta)
        .expect("DocMeta encodes into a Vec: strings, integers, maps, and an extension that is a struct of such fields");
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
pub fn load_meta<X: DeserializeOwned + Default>(
    store: &dyn KvStore,
    doc: DocId,
) -> Result<Option<DocMeta<X>>, DocStoreError> {
    let Some(value) = store.get(Table::DOC_META, doc.as_bytes())? else {
        return Ok(None);
    };
    decode_meta(doc, &value).map(Some)
}

/// Decodes `value`, the stored `doc_meta` row of `doc` (for readers that scan the table).
pub fn decode_meta<X: DeserializeOwned + Default>(
    doc: DocId,
    value: &[u8],
) -> Result<DocMeta<X>, DocStoreError> {
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
