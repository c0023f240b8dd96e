//! The document store: how automerge documents, sync states and metadata live in a [`KvStore`].
//!
//! # Layout
//!
//! | table         | key                                           | value                          |
//! |---------------|-----------------------------------------------|--------------------------------|
//! | `chunks`      | doc id (16) ++ kind (1) ++ blake3(value) (32) | automerge bytes                |
//! | `sync_states` | doc id (16) ++ peer key                       | `0x01` ++ `sync::State::encode` |
//! | `doc_meta`    | doc id (16)                                   | `0x01` ++ msgpack [`DocMeta`]  |
//! | `user_docs`   | user length (u32 BE) ++ user ++ doc id (16)   | `0x01` ++ [`Holding`] tag (1)  |
//!
//! `user_docs` is the relay's index of who may read what: one row per (user, document) for the
//! owner and every access-list entry of each document not deleted. Writers change it in the
//! same batch as the [`DocMeta`] it mirrors, so the two never disagree after a crash; a
//! user's documents are one prefix scan ([`load_user_docs`]).
//!
//! A chunk is anything `Automerge::load` accepts: a snapshot (`save()`, kind 0) or incremental
//! data (one change's raw bytes, or `save_after` output; kind 1). Chunks are keyed by the hash
//! of their bytes, so writing the same chunk twice is idempotent, and a reader can tell damaged
//! bytes from good ones. Keys sort snapshots before incrementals within a document.
//!
//! Writers add operations to a [`WriteBatch`] with the pure functions here ([`put_chunk`],
//! [`compact`], [`put_sync_state`], [`put_meta`], [`delete_doc`], ...) and commit it, usually
//! through a [`GroupCommit`](super::GroupCommit); readers ([`load_document`], ...) read a
//! [`KvStore`] directly.
//!
//! A document loads by concatenating all its chunks (snapshots first) and calling
//! `Automerge::load` once: automerge parses a sequence of chunks, ignores changes it already has
//! and applies changes in dependency order whatever order they come in.
//!
//! # Crash safety
//!
//! The invariant: *every acknowledged change is in some chunk of its document.* A change is
//! acknowledged when the batch that stores it has been durably written ([`KvStore::write`]
//! returned, or the [`CommitTicket`](super::CommitTicket) completed, with `Ok`). Every
//! operation keeps the invariant in one atomic batch:
//!
//! - [`put_chunk`] only adds a chunk.
//! - [`compact`] puts a snapshot and deletes exactly the chunks it `replaces`. The caller passes
//!   chunks whose changes the snapshot contains: the keys [`load_document`] returned for the
//!   document the snapshot was saved from, plus chunks written from it since. Whether the
//!   batch lands or not, every change is in the old chunks or in the snapshot. Chunks written
//!   concurrently by someone else are not in `replaces` and survive.
//! - Nothing else deletes chunks except [`delete_doc`], which is meant to lose the document.
//!
//! Since the store applies a batch entirely or not at all, a crash at any instant leaves the
//! state after some prefix of the durable batches (plus at most the one in flight), each of
//! which satisfies the invariant; the acknowledged change's batch is in that prefix. So the
//! document loads, and contains every acknowledged change. The hash in each key catches
//! damage from outside (bit rot, a bad disk) as [`DocStoreError::CorruptChunk`] rather than
//! loading wrong data.
//!
//! Two duties fall on the writer, not the store: acknowledge a change only once every change
//! it depends on is durable too (write pending changes before, or with, a new one), and after
//! a crash continue with a fresh actor id, since changes of the old actor that were never
//! acknowledged may be lost and their sequence numbers must not be reused.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::catch_unwind;

use automerge::{sync, Automerge, AutomergeError, ReadDoc};
use serde::{Deserialize, Serialize};

use super::{Hex, KvStore, StoreError, Table, WriteBatch};
use crate::{ContentHash, DocId, Role};

/// The length of a chunk key: doc id, kind byte, blake3 hash.
const CHUNK_KEY_LEN: usize = 16 + 1 + 32;
/// Format byte of a stored [`DocMeta`].
const META_FORMAT: u8 = 0x01;
/// Format byte of a stored sync state.
const SYNC_STATE_FORMAT: u8 = 0x01;

/// What a stored chunk holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ChunkKind {
    /// A whole document, from `Automerge::save`.
    Snapshot,
    /// Changes: one change's raw bytes, or `save_after` output.
    Incremental,
    /// Bytes a load set aside because they do not parse (see `heal.rs`): kept for an operator
    /// to look at, never loaded, deleted with the document.
    Quarantined,
}

impl ChunkKind {
    const fn tag(self) -> u8 {
        match self {
            ChunkKind::Snapshot => 0,
            ChunkKind::Incremental => 1,
            ChunkKind::Quarantined => 0x51,
        }
    }

    const fn from_tag(tag: u8) -> Option<ChunkKind> {
        match tag {
            0 => Some(ChunkKind::Snapshot),
            1 => Some(ChunkKind::Incremental),
            0x51 => Some(ChunkKind::Quarantined),
            _ => None,
        }
    }
}

/// The key of a stored chunk: its document, its kind and the blake3 hash of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkKey {
    doc: DocId,
    kind: ChunkKind,
    hash: ContentHash,
}

impl ChunkKey {
    /// The key under which `bytes` are stored as a chunk of `doc`.
    pub fn for_bytes(doc: DocId, kind: ChunkKind, bytes: &[u8]) -> ChunkKey {
        ChunkKey {
            doc,
            kind,
            hash: ContentHash::of(bytes),
        }
    }

    /// The document the chunk belongs to.
    pub fn doc(&self) -> DocId {
        self.doc
    }

    /// Snapshot or incremental.
    pub fn kind(&self) -> ChunkKind {
        self.kind
    }

    /// The blake3 hash of the chunk's bytes.
    pub fn hash(&self) -> ContentHash {
        self.hash
    }

    /// The key as stored in the `chunks` table.
    pub fn to_bytes(&self) -> [u8; CHUNK_KEY_LEN] {
        let mut key = [0; CHUNK_KEY_LEN];
        key[..16].copy_from_slice(self.doc.as_bytes());
        key[16] = self.kind.tag();
        key[17..].copy_from_slice(self.hash.as_bytes());
        key
    }

    /// Parse a stored key; `None` if it is not one.
    pub fn from_bytes(key: &[u8]) -> Option<ChunkKey> {
        let key: &[u8; CHUNK_KEY_LEN] = key.try_into().ok()?;
        let (doc, rest) = key.split_first_chunk::<16>()?;
        let (&tag, hash) = rest.split_first()?;
        Some(ChunkKey {
            doc: DocId::from_bytes(*doc),
            kind: ChunkKind::from_tag(tag)?,
            hash: ContentHash::from_bytes(hash.try_into().ok()?),
        })
    }
}

impl fmt::Display for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ChunkKind::Snapshot => "snapshot",
            ChunkKind::Incremental => "incremental",
            ChunkKind::Quarantined => "quarantined",
        };
        write!(f, "{}/{kind}/{}", self.doc, Hex(&self.hash.as_bytes()[..8]))
    }
}

impl fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkKey({self})")
    }
}

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

/// Why a document-store read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DocStoreError {
    /// The store itself failed.
    #[error(transparent)]
    Store {
        /// The store's error.
        #[from]
        source: StoreError,
    },
    /// A chunk's bytes do not match the hash in its key: the stored data is damaged.
    #[error("stored chunk {key} of document {} is corrupt: its bytes hash to {actual}", key.doc())]
    CorruptChunk {
        /// The damaged chunk.
        key: ChunkKey,
        /// The hash of the bytes actually stored.
        actual: ContentHash,
    },
    /// A key in a table is not one this module writes.
    #[error("malformed key {} in table {table}", Hex(key))]
    BadKey {
        /// The table.
        table: Table,
        /// The key.
        key: Vec<u8>,
    },
    /// Automerge refused the document's chunks.
    #[error(
        "document {doc} does not load from its stored chunks{}",
        culprit(chunk)
    )]
    Load {
        /// The document.
        doc: DocId,
        /// The first chunk that does not load on its own, if one was found.
        chunk: Option<ChunkKey>,
        /// Automerge's error.
        #[source]
        source: Box<AutomergeError>,
    },
    /// Automerge panicked while loading the document's chunks.
    #[error("document {doc} does not load from its stored chunks: automerge panicked")]
    LoadPanicked {
        /// The document.
        doc: DocId,
    },
    /// A record starts with a format byte this build does not know (a newer weft wrote it).
    #[error("document {doc}: stored {record} has unknown format byte {tag:#04x}")]
    UnknownFormat {
        /// The document.
        doc: DocId,
        /// Which record: `"metadata"` or `"sync state"`.
        record: &'static str,
        /// The format byte found.
        tag: u8,
    },
    /// A record's body does not decode.
    #[error("document {doc}: stored {record} does not decode")]
    Decode {
        /// The document.
        doc: DocId,
        /// Which record: `"metadata"` or `"sync state"`.
        record: &'static str,
        /// The decoder's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn culprit(chunk: &Option<ChunkKey>) -> String {
    match chunk {
        Some(key) => format!(" (chunk {key} does not parse)"),
        None => String::new(),
    }
}

/// Add `bytes` as a chunk of `doc`. Idempotent: the key is the hash of the bytes.
pub fn put_chunk(
    batch: &mut WriteBatch,
    doc: DocId,
    kind: ChunkKind,
    bytes: impl Into<Vec<u8>>,
) -> ChunkKey {
    let bytes = bytes.into();
    let key = ChunkKey::for_bytes(doc, kind, &bytes);
    batch.put(Table::CHUNKS, key.to_bytes(), bytes);
    key
}

/// Replace the chunks `replaces` of `doc` by one snapshot, atomically (one batch).
///
/// `replaces` must be chunks whose changes `snapshot` contains (see the module docs). A key of
/// another document is a caller bug: it is never deleted (and a debug build panics). A replaced
/// key equal to the new snapshot's is kept.
pub fn compact(
    batch: &mut WriteBatch,
    doc: DocId,
    snapshot: impl Into<Vec<u8>>,
    replaces: &[ChunkKey],
) -> ChunkKey {
    let new = put_chunk(batch, doc, ChunkKind::Snapshot, snapshot);
    for old in replaces {
        debug_assert_eq!(
            old.doc, doc,
            "compacting {doc} would delete a chunk of another document"
        );
        // Saving an unchanged document yields the same bytes, hence the same key.
        if old.doc == doc && *old != new {
            batch.delete(Table::CHUNKS, old.to_bytes());
        }
    }
    new
}

fn sync_state_key(doc: DocId, peer: &[u8]) -> Vec<u8> {
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

/// Every chunk of `doc` to load (quarantined ones left out), snapshots first, each checked
/// against the hash in its key.
pub fn load_chunks(
    store: &dyn KvStore,
    doc: DocId,
) -> Result<Vec<(ChunkKey, Vec<u8>)>, DocStoreError> {
    let rows = store.scan_prefix(Table::CHUNKS, doc.as_bytes())?;
    let mut chunks = Vec::with_capacity(rows.len());
    for (raw_key, bytes) in rows {
        let key = ChunkKey::from_bytes(&raw_key).ok_or(DocStoreError::BadKey {
            table: Table::CHUNKS,
            key: raw_key,
        })?;
        if key.kind == ChunkKind::Quarantined {
            continue;
        }
        let actual = ContentHash::of(&bytes);
        if actual != key.hash {
            return Err(DocStoreError::CorruptChunk { key, actual });
        }
        chunks.push((key, bytes));
    }
    Ok(chunks)
}

/// Load `doc` from its chunks, or `None` if it has none. Also returns the keys of the chunks
/// loaded: pass them to [`compact`] as `replaces` with a snapshot of this document. Chunks
/// that do not parse are left out (see [`load_document_sized`]); the caller that wants them
/// set aside for good uses that.
pub fn load_document(
    store: &dyn KvStore,
    doc: DocId,
) -> Result<Option<(Automerge, Vec<ChunkKey>)>, DocStoreError> {
    Ok(load_document_sized(store, doc)?.map(|l| (l.doc, l.chunks)))
}

/// Bytes of a document's stored chunks, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkBytes {
    /// Bytes in snapshot chunks.
    pub snapshot: usize,
    /// Bytes in incremental chunks.
    pub incremental: usize,
}

/// A document as read from its chunks.
#[derive(Debug)]
pub struct StoredDocument {
    /// The document.
    pub doc: Automerge,
    /// The chunks it was loaded from (not those quarantined).
    pub chunks: Vec<ChunkKey>,
    /// Bytes of `chunks`, by kind.
    pub sizes: ChunkBytes,
    /// Stored chunks that held bytes that do not parse, to set aside with [`quarantine`].
    pub quarantine: Vec<Quarantine>,
}

/// [`load_document`], also telling how many bytes of each kind of chunk it read.
///
/// A chunk that does not parse no longer fails the whole document (a store written before
/// every peer's change was checked may hold one): the load is retried piece by piece
/// (`heal.rs`), the good Automerge chunks inside a bad stored chunk are kept, and the bad
/// stored chunk is reported in [`StoredDocument::quarantine`].
pub fn load_document_sized(
    store: &dyn KvStore,
    doc: DocId,
) -> Result<Option<StoredDocument>, DocStoreError> {
    let chunks = load_chunks(store, doc)?;
    if chunks.is_empty() {
        return Ok(None);
    }
    let mut all = Vec::with_capacity(chunks.iter().map(|(_, bytes)| bytes.len()).sum());
    for (_, bytes) in &chunks {
        all.extend_from_slice(bytes);
    }
    // The chunks passed their hash check, so this store wrote them; still, a panic in the
    // loader must cost this document, not the process.
    let (document, chunks, quarantine) = match catch_unwind(|| crate::doc::load_automerge(&all)) {
        Ok(Ok(document)) => (document, chunks, Vec::new()),
        Ok(Err(_)) | Err(_) => {
            drop(all);
            super::heal::salvage(doc, chunks)?
        }
    };
    let missing = document.get_missing_deps(&[]);
    if !missing.is_empty() {
        // Only possible if chunks were lost: changes waiting on them are left out.
        tracing::warn!(%doc, missing = missing.len(), "document loaded with missing dependencies");
    }
    let mut sizes = ChunkBytes::default();
    for (key, bytes) in &chunks {
        match key.kind() {
            ChunkKind::Snapshot => sizes.snapshot += bytes.len(),
            _ => sizes.incremental += bytes.len(),
        }
    }
    Ok(Some(StoredDocument {
        doc: document,
        chunks: chunks.into_iter().map(|(key, _)| key).collect(),
        sizes,
        quarantine,
    }))
}

/// A stored chunk that holds bytes that do not parse.
#[derive(Debug)]
pub struct Quarantine {
    /// The chunk.
    pub key: ChunkKey,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The Automerge chunks inside it that do parse, concatenated (loaded with the document).
    pub salvaged: Vec<u8>,
    /// Why it was set aside.
    pub reason: String,
}

/// Sets a chunk aside: its bytes move to a quarantined chunk of the same document (never
/// loaded, deleted with the document) and what could be salvaged from it becomes an
/// incremental chunk. Returns the salvaged chunk's key, if any.
pub fn quarantine(batch: &mut WriteBatch, doc: DocId, q: &Quarantine) -> Option<ChunkKey> {
    put_chunk(batch, doc, ChunkKind::Quarantined, q.bytes.as_slice());
    batch.delete(Table::CHUNKS, q.key.to_bytes());
    (!q.salvaged.is_empty())
        .then(|| put_chunk(batch, doc, ChunkKind::Incremental, q.salvaged.as_slice()))
}

/// The first chunk automerge refuses on its own (slow; only used to explain a failure). A lone
/// chunk may lack the changes it depends on; that alone is not the chunk's fault.
pub(super) fn first_unparsable(chunks: &[(ChunkKey, Vec<u8>)]) -> Option<ChunkKey> {
    chunks
        .iter()
        .find(|(_, bytes)| match catch_unwind(|| Automerge::load(bytes)) {
            Ok(Ok(_)) | Ok(Err(AutomergeError::MissingDeps)) => false,
            Ok(Err(_)) | Err(_) => true,
        })
        .map(|(key, _)| *key)
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
                docs.insert(chunk.doc);
            }
            None => tracing::warn!(key = %Hex(&key), "skipping malformed chunk key"),
        }
    }
    Ok(docs.into_iter().collect())
}

/// Format byte of a `user_docs` value.
const USER_DOC_FORMAT: u8 = 0x01;

/// How a user holds a document, as the `user_docs` index records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Holding {
    /// The user owns the document.
    Owner,
    /// The document's access list gives the user this role.
    Shared(Role),
}

impl Holding {
    /// The role the holding gives (an owner reads and writes).
    pub fn role(self) -> Role {
        match self {
            Holding::Owner => Role::ReadWrite,
            Holding::Shared(role) => role,
        }
    }

    const fn tag(self) -> u8 {
        match self {
            Holding::Owner => 0,
            Holding::Shared(Role::ReadWrite) => 1,
            Holding::Shared(Role::ReadOnly) => 2,
        }
    }

    const fn from_tag(tag: u8) -> Option<Holding> {
        match tag {
            0 => Some(Holding::Owner),
            1 => Some(Holding::Shared(Role::ReadWrite)),
            2 => Some(Holding::Shared(Role::ReadOnly)),
            _ => None,
        }
    }
}

/// The `user_docs` prefix of every row of `user`: its length first, so no user's prefix is
/// another's (`al` and `alice`).
fn user_prefix(user: &str) -> Vec<u8> {
    // A user id longer than 4 GiB cannot reach here: tokens are far smaller.
    let len = u32::try_from(user.len()).unwrap_or(u32::MAX);
    let mut key = Vec::with_capacity(4 + user.len() + 16);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(user.as_bytes());
    key
}

fn user_doc_key(user: &str, doc: DocId) -> Vec<u8> {
    let mut key = user_prefix(user);
    key.extend_from_slice(doc.as_bytes());
    key
}

/// Record in the per-user index that `user` holds `doc` (replacing an earlier holding).
pub fn put_user_doc(batch: &mut WriteBatch, user: &str, doc: DocId, holding: Holding) {
    batch.put(
        Table::USER_DOCS,
        user_doc_key(user, doc),
        vec![USER_DOC_FORMAT, holding.tag()],
    );
}

/// Remove `doc` from `user`'s index rows, if it is there.
pub fn delete_user_doc(batch: &mut WriteBatch, user: &str, doc: DocId) {
    batch.delete(Table::USER_DOCS, user_doc_key(user, doc));
}

/// The index rows `meta` implies: its owner and every access-list entry, none if it is deleted.
pub fn user_docs_of(meta: &DocMeta) -> Vec<(String, Holding)> {
    if meta.deleted_at_ms.is_some() {
        return Vec::new();
    }
    let mut rows: Vec<(String, Holding)> = meta
        .access
        .iter()
        .filter(|(user, _)| Some(user.as_str()) != meta.owner.as_deref())
        .map(|(user, role)| (user.clone(), Holding::Shared(*role)))
        .collect();
    if let Some(owner) = &meta.owner {
        rows.push((owner.clone(), Holding::Owner));
    }
    rows
}

/// Every document in `user`'s index rows, in document-id order.
///
/// A row this build cannot read (a malformed key, an unknown format) is skipped with a
/// warning, so one damaged row does not hide the user's other documents.
pub fn load_user_docs(
    store: &dyn KvStore,
    user: &str,
) -> Result<Vec<(DocId, Holding)>, DocStoreError> {
    let prefix = user_prefix(user);
    let rows = store.scan_prefix(Table::USER_DOCS, &prefix)?;
    let mut docs = Vec::with_capacity(rows.len());
    for (key, value) in rows {
        let doc = key
            .get(prefix.len()..)
            .and_then(|rest| <[u8; 16]>::try_from(rest).ok())
            .map(DocId::from_bytes);
        let holding = match value.as_slice() {
            [USER_DOC_FORMAT, tag] => Holding::from_tag(*tag),
            _ => None,
        };
        match (doc, holding) {
            (Some(doc), Some(holding)) => docs.push((doc, holding)),
            _ => tracing::warn!(key = %Hex(&key), "skipping an unreadable user_docs row"),
        }
    }
    Ok(docs)
}

/// The key of the row saying the index is complete: the prefix of the empty user id, which no
/// token carries.
const USER_INDEX_BUILT: [u8; 4] = [0; 4];

/// Whether the `user_docs` index was built (by [`rebuild_user_index`]); a store written before
/// the index existed has metadata but no index rows.
pub fn user_index_built(store: &dyn KvStore) -> Result<bool, DocStoreError> {
    Ok(store.get(Table::USER_DOCS, &USER_INDEX_BUILT)?.is_some())
}

/// A batch that writes the index rows of every stored document's metadata and marks the index
/// built: the upgrade path for a store written before the index existed. Idempotent. Writers
/// must not change metadata between the read and the commit of this batch.
pub fn rebuild_user_index(store: &dyn KvStore) -> Result<WriteBatch, DocStoreError> {
    let mut batch = WriteBatch::new();
    batch.put(Table::USER_DOCS, USER_INDEX_BUILT, vec![USER_DOC_FORMAT]);
    for key in store.scan_keys(Table::DOC_META, &[])? {
        let Ok(id) = <[u8; 16]>::try_from(key.as_slice()) else {
            continue;
        };
        let doc = DocId::from_bytes(id);
        match load_meta(store, doc) {
            Ok(Some(meta)) => {
                for (user, holding) in user_docs_of(&meta) {
                    put_user_doc(&mut batch, &user, doc, holding);
                }
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(%doc, error = %err, "not indexing unreadable metadata"),
        }
    }
    Ok(batch)
}

#[cfg(test)]
pub(crate) mod tests {
    use automerge::transaction::Transactable;
    use automerge::{ChangeHash, ObjType, ROOT};

    use super::*;
    use crate::store::MemStore;

    pub(crate) const DOC: DocId = DocId::from_bytes([1; 16]);
    const OTHER: DocId = DocId::from_bytes([2; 16]);

    fn commit(store: &MemStore, build: impl FnOnce(&mut WriteBatch)) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        build(&mut batch);
        store.write(&batch)
    }

    /// Append `text` to the document's "log" list; returns the new change's hash and raw bytes.
    pub(crate) fn append(doc: &mut Automerge, text: &str) -> (ChangeHash, Vec<u8>) {
        let log = doc.get(ROOT, "log").unwrap().map(|(_, id)| id);
        let outcome = doc
            .transact::<_, _, AutomergeError>(|tx| {
                let log = match log {
                    Some(id) => id,
                    None => tx.put_object(ROOT, "log", ObjType::List)?,
                };
                let len = tx.length(&log);
                tx.insert(&log, len, text)?;
                Ok(())
            })
            .unwrap();
        let hash = outcome.hash.expect("an insert makes a change");
        let bytes = doc.get_change_by_hash(&hash).unwrap().raw_bytes().to_vec();
        (hash, bytes)
    }

    pub(crate) fn log_len(doc: &Automerge) -> usize {
        doc.get(ROOT, "log")
            .unwrap()
            .map_or(0, |(_, log)| doc.length(&log))
    }

    #[test]
    fn chunk_keys_round_trip_and_reject_other_bytes() {
        let key = ChunkKey::for_bytes(DOC, ChunkKind::Incremental, b"bytes");
        assert_eq!(ChunkKey::from_bytes(&key.to_bytes()), Some(key));
        assert_eq!(key.to_bytes()[16], 1);
        assert_eq!(ChunkKey::from_bytes(&key.to_bytes()[..48]), None);
        let mut bad_kind = key.to_bytes();
        bad_kind[16] = 9;
        assert_eq!(ChunkKey::from_bytes(&bad_kind), None);
        // Snapshots sort before incrementals, as keys and as values.
        let snapshot = ChunkKey::for_bytes(DOC, ChunkKind::Snapshot, b"zzz");
        assert!(snapshot < key && snapshot.to_bytes() < key.to_bytes());
    }

    #[test]
    fn a_document_loads_from_a_snapshot_and_changes_stored_in_any_order() {
        let store = MemStore::new();
        let mut doc = Automerge::new();
        let mut hashes = Vec::new();
        for i in 0..3 {
            hashes.push(append(&mut doc, &format!("early {i}")).0);
        }
        commit(&store, |b| {
            put_chunk(b, DOC, ChunkKind::Snapshot, doc.save());
        })
        .unwrap();
        // Ten changes, each its own chunk: keys order them by hash, not causally.
        for i in 0..10 {
            let (hash, bytes) = append(&mut doc, &format!("late {i}"));
            hashes.push(hash);
            commit(&store, |b| {
                put_chunk(b, DOC, ChunkKind::Incremental, bytes);
            })
            .unwrap();
        }
        // And a save_after chunk overlapping some of them.
        let overlap = doc.save_after(&[hashes[5]]);
        commit(&store, |b| {
            put_chunk(b, DOC, ChunkKind::Incremental, overlap);
        })
        .unwrap();
        let (loaded, keys) = load_document(&store, DOC).unwrap().unwrap();
        assert_eq!(keys.len(), 12);
        assert_eq!(keys[0].kind(), ChunkKind::Snapshot);
        assert_eq!(loaded.get_heads(), doc.get_heads());
        assert_eq!(log_len(&loaded), 13);
        assert!(load_document(&store, OTHER).unwrap().is_none());
    }

    #[test]
    fn changes_alone_load_without_a_snapshot() {
        let store = MemStore::new();
        let mut doc = Automerge::new();
        for i in 0..5 {
            let (_, bytes) = append(&mut doc, &i.to_string());
            commit(&store, |b| {
                put_chunk(b, DOC, ChunkKind::Incremental, bytes);
            })
            .unwrap();
        }
        let (loaded, _) = load_document(&store, DOC).unwrap().unwrap();
        assert_eq!(loaded.get_heads(), doc.get_heads());
    }

    #[test]
    fn compaction_replaces_the_chunks_it_covers_and_nothing_else() {
        let store = MemStore::new();
        let mut doc = Automerge::new();
        let mut keys = Vec::new();
        for i in 0..4 {
            let (_, bytes) = append(&mut doc, &i.to_string());
            commit(&store, |b| {
                keys.push(put_chunk(b, DOC, ChunkKind::Incremental, bytes))
            })
            .unwrap();
        }
        // Another document's chunk, and a chunk this writer has not seen (a concurrent write).
        commit(&store, |b| {
            put_chunk(b, OTHER, ChunkKind::Incremental, doc.save());
        })
        .unwrap();
        let mut other_writer = doc.fork();
        let (late, late_bytes) = append(&mut other_writer, "late");
        commit(&store, |b| {
            put_chunk(b, DOC, ChunkKind::Incremental, late_bytes);
        })
        .unwrap();

        let snapshot = commit(&store, |b| {
            compact(b, DOC, doc.save(), &keys);
        });
        snapshot.unwrap();
        let chunks = load_chunks(&store, DOC).unwrap();
        assert_eq!(chunks.len(), 2, "the snapshot and the concurrent change");
        let (loaded, _) = load_document(&store, DOC).unwrap().unwrap();
        assert!(loaded.get_change_by_hash(&late).is_some());
        assert_eq!(log_len(&loaded), 5);
        assert_eq!(load_chunks(&store, OTHER).unwrap().len(), 1);
    }

    #[test]
    fn a_failed_compaction_leaves_the_previous_chunks_loadable() {
        let store = MemStore::new();
        let mut doc = Automerge::new();
        let mut keys = Vec::new();
        for i in 0..5 {
            let (_, bytes) = append(&mut doc, &i.to_string());
            commit(&store, |b| {
                keys.push(put_chunk(b, DOC, ChunkKind::Incremental, bytes))
            })
            .unwrap();
        }
        store.fail_next_write();
        let failed = commit(&store, |b| {
            compact(b, DOC, doc.save(), &keys);
        });
        assert!(matches!(failed, Err(StoreError::Injected { .. })));
        let (loaded, loaded_keys) = load_document(&store, DOC).unwrap().unwrap();
        assert_eq!(loaded_keys.len(), 5);
        assert_eq!(loaded.get_heads(), doc.get_heads());

        // Retried, it lands whole.
        commit(&store, |b| {
            compact(b, DOC, doc.save(), &loaded_keys);
        })
        .unwrap();
        let (loaded, loaded_keys) = load_document(&store, DOC).unwrap().unwrap();
        assert_eq!(loaded_keys.len(), 1);
        assert_eq!(loaded.get_heads(), doc.get_heads());
    }

    #[test]
    fn compacting_an_unchanged_document_keeps_its_snapshot() {
        let store = MemStore::new();
        let mut doc = Automerge::new();
        append(&mut doc, "only");
        let mut first = None;
        commit(&store, |b| first = Some(compact(b, DOC, doc.save(), &[]))).unwrap();
        let first = first.unwrap();
        let mut second = None;
        commit(&store, |b| {
            second = Some(compact(b, DOC, doc.save(), &[first]))
        })
        .unwrap();
        assert_eq!(second, Some(first));
        assert!(load_document(&store, DOC).unwrap().is_some());
    }

    #[test]
    fn damaged_chunk_bytes_are_reported_as_corruption() {
        let store = MemStore::new();
        let mut doc = Automerge::new();
        let (_, bytes) = append(&mut doc, "x");
        let key = ChunkKey::for_bytes(DOC, ChunkKind::Incremental, &bytes);
        let mut damaged = bytes.clone();
        damaged[bytes.len() / 2] ^= 1;
        commit(&store, |b| {
            b.put(Table::CHUNKS, key.to_bytes(), damaged);
        })
        .unwrap();
        let err = load_document(&store, DOC).unwrap_err();
        assert!(
            matches!(err, DocStoreError::CorruptChunk { key: k, .. } if k == key),
            "{err:?}"
        );
        assert!(err.to_string().contains(&DOC.to_string()), "{err}");
    }

    #[test]
    fn chunks_that_do_not_parse_are_set_aside_and_the_rest_loads() {
        let store = MemStore::new();
        let mut doc = Automerge::new();
        let (first, good) = append(&mut doc, "x");
        let (second, also_good) = append(&mut doc, "y");
        let garbage: Vec<u8> = (0..37u8).map(|i| i.wrapping_mul(31)).collect();
        // Old relays stored a sync message's chunks as they came: a good change and garbage
        // in one stored chunk, and garbage alone in another.
        let mut mixed = also_good.clone();
        mixed.extend_from_slice(&garbage);
        let mut keys = Vec::new();
        commit(&store, |b| {
            put_chunk(b, DOC, ChunkKind::Incremental, good);
            keys.push(put_chunk(b, DOC, ChunkKind::Incremental, mixed));
            keys.push(put_chunk(b, DOC, ChunkKind::Incremental, garbage.clone()));
        })
        .unwrap();
        let loaded = load_document_sized(&store, DOC).unwrap().unwrap();
        assert!(loaded.doc.get_change_by_hash(&first).is_some());
        assert!(loaded.doc.get_change_by_hash(&second).is_some(), "salvaged");
        let mut bad: Vec<ChunkKey> = loaded.quarantine.iter().map(|q| q.key).collect();
        bad.sort();
        keys.sort();
        assert_eq!(bad, keys);
        assert!(loaded.chunks.iter().all(|k| !keys.contains(k)));
        // Set aside, they are never read again; the salvaged change stays.
        commit(&store, |b| {
            for q in &loaded.quarantine {
                quarantine(b, DOC, q);
            }
        })
        .unwrap();
        let again = load_document_sized(&store, DOC).unwrap().unwrap();
        assert!(again.quarantine.is_empty());
        assert!(again.doc.get_change_by_hash(&second).is_some());
        let stored = store.scan_prefix(Table::CHUNKS, DOC.as_bytes()).unwrap();
        let quarantined: Vec<Vec<u8>> = stored
            .iter()
            .filter(|(k, _)| ChunkKey::from_bytes(k).unwrap().kind() == ChunkKind::Quarantined)
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(quarantined.len(), 2);
        assert!(quarantined.contains(&garbage));
        // Deleting the document deletes them too.
        commit(&store, |b| delete_doc(b, DOC)).unwrap();
        assert!(store
            .scan_prefix(Table::CHUNKS, DOC.as_bytes())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn malformed_chunk_keys_are_errors_for_the_document_and_skipped_in_listings() {
        let store = MemStore::new();
        commit(&store, |b| {
            b.put(
                Table::CHUNKS,
                [DOC.as_bytes().as_slice(), b"short"].concat(),
                b"v".to_vec(),
            );
        })
        .unwrap();
        assert!(matches!(
            load_document(&store, DOC),
            Err(DocStoreError::BadKey { .. })
        ));
        assert!(list_docs(&store).unwrap().is_empty());
    }

    #[test]
    fn read_faults_surface_as_store_errors() {
        let store = MemStore::new();
        store.set_read_fault(true);
        assert!(matches!(
            load_document(&store, DOC),
            Err(DocStoreError::Store {
                source: StoreError::Injected { .. }
            })
        ));
        assert!(load_meta(&store, DOC).is_err());
        assert!(list_docs(&store).is_err());
    }

    #[test]
    fn sync_states_round_trip_per_peer_and_are_deleted_together() {
        let store = MemStore::new();
        let mut ours = Automerge::new();
        append(&mut ours, "hello");
        let mut state = sync::State::new();
        // Generating a message records what we sent in the state.
        let _ = sync::SyncDoc::generate_sync_message(&ours, &mut state);
        let alice = [0xa1; 32];
        let bob = [0xb0; 32];
        commit(&store, |b| {
            put_sync_state(b, DOC, &alice, &state);
            put_sync_state(b, DOC, &bob, &sync::State::new());
            put_sync_state(b, OTHER, &alice, &sync::State::new());
        })
        .unwrap();
        let loaded = load_sync_state(&store, DOC, &alice).unwrap().unwrap();
        assert_eq!(loaded.encode(), state.encode());
        assert!(load_sync_state(&store, DOC, &[0xcc; 32]).unwrap().is_none());

        commit(&store, |b| delete_sync_states(b, DOC)).unwrap();
        assert!(load_sync_state(&store, DOC, &alice).unwrap().is_none());
        assert!(load_sync_state(&store, DOC, &bob).unwrap().is_none());
        assert!(load_sync_state(&store, OTHER, &alice).unwrap().is_some());
    }

    #[test]
    fn sync_states_with_an_unknown_format_byte_are_refused() {
        let store = MemStore::new();
        let peer = [7; 32];
        commit(&store, |b| {
            b.put(
                Table::SYNC_STATES,
                sync_state_key(DOC, &peer),
                vec![0x02, 0x43, 0],
            );
        })
        .unwrap();
        assert!(matches!(
            load_sync_state(&store, DOC, &peer),
            Err(DocStoreError::UnknownFormat {
                tag: 2,
                record: "sync state",
                ..
            })
        ));
        commit(&store, |b| {
            b.put(
                Table::SYNC_STATES,
                sync_state_key(DOC, &peer),
                vec![0x01, 0xff],
            );
        })
        .unwrap();
        assert!(matches!(
            load_sync_state(&store, DOC, &peer),
            Err(DocStoreError::Decode { .. })
        ));
    }

    #[test]
    fn metadata_round_trips() {
        let store = MemStore::new();
        let meta = DocMeta {
            kind: Some("chat".into()),
            owner: Some("alice".into()),
            role: Some(Role::ReadWrite),
            access: BTreeMap::from([("bob".into(), Role::ReadOnly)]),
            created_at_ms: 1,
            updated_at_ms: 2,
            deleted_at_ms: Some(3),
            confirmed_heads: vec!["ab".into()],
            last_sync_ms: Some(4),
            revoked: true,
            stored_bytes: 5,
            actor_epoch: 6,
        };
        commit(&store, |b| put_meta(b, DOC, &meta)).unwrap();
        assert_eq!(load_meta(&store, DOC).unwrap(), Some(meta));
        assert_eq!(load_meta(&store, OTHER).unwrap(), None);
    }

    #[test]
    fn metadata_format_1_reads_with_missing_and_unknown_fields() {
        // Format 1 as written by hand: fields in any order, some absent, one from the future.
        let stored = b"\x01\x85\xa4kind\xa4chat\xa4role\xa2rw\xa6access\x81\xa5alice\xa2ro\
                       \xadcreated_at_ms\x05\xa9zz_future\xc3";
        let store = MemStore::new();
        commit(&store, |b| {
            b.put(Table::DOC_META, DOC.as_bytes().to_vec(), stored.to_vec());
        })
        .unwrap();
        let meta = load_meta(&store, DOC).unwrap().unwrap();
        let expected = DocMeta {
            kind: Some("chat".into()),
            role: Some(Role::ReadWrite),
            access: BTreeMap::from([("alice".into(), Role::ReadOnly)]),
            created_at_ms: 5,
            ..DocMeta::default()
        };
        assert_eq!(meta, expected);

        for (value, expect_unknown) in [
            (vec![0x02, 0x80], true),
            (vec![], false),
            (vec![1, 0xc1], false),
        ] {
            commit(&store, |b| {
                b.put(Table::DOC_META, DOC.as_bytes().to_vec(), value);
            })
            .unwrap();
            let err = load_meta(&store, DOC).unwrap_err();
            assert_eq!(
                matches!(err, DocStoreError::UnknownFormat { .. }),
                expect_unknown,
                "{err:?}"
            );
        }
    }

    #[test]
    fn deleting_a_document_removes_all_of_it_and_only_it() {
        let store = MemStore::new();
        let mut doc = Automerge::new();
        append(&mut doc, "x");
        for id in [DOC, OTHER] {
            commit(&store, |b| {
                put_chunk(b, id, ChunkKind::Snapshot, doc.save());
                put_sync_state(b, id, &[1; 32], &sync::State::new());
                put_meta(b, id, &DocMeta::default());
            })
            .unwrap();
        }
        // A document known only by its metadata is listed too.
        let third = DocId::from_bytes([3; 16]);
        commit(&store, |b| put_meta(b, third, &DocMeta::default())).unwrap();
        assert_eq!(list_docs(&store).unwrap(), vec![DOC, OTHER, third]);

        commit(&store, |b| delete_doc(b, DOC)).unwrap();
        assert!(load_document(&store, DOC).unwrap().is_none());
        assert!(load_meta(&store, DOC).unwrap().is_none());
        assert!(load_sync_state(&store, DOC, &[1; 32]).unwrap().is_none());
        assert!(load_document(&store, OTHER).unwrap().is_some());
        assert!(load_sync_state(&store, OTHER, &[1; 32]).unwrap().is_some());
        assert_eq!(list_docs(&store).unwrap(), vec![OTHER, third]);
    }

    #[test]
    fn the_user_index_lists_a_users_documents_and_no_one_elses() {
        let store = MemStore::new();
        let third = DocId::from_bytes([3; 16]);
        commit(&store, |b| {
            put_user_doc(b, "alice", DOC, Holding::Owner);
            put_user_doc(b, "alice", OTHER, Holding::Shared(Role::ReadOnly));
            put_user_doc(b, "al", third, Holding::Owner);
            put_user_doc(b, "alice2", third, Holding::Shared(Role::ReadWrite));
        })
        .unwrap();
        assert_eq!(
            load_user_docs(&store, "alice").unwrap(),
            vec![
                (DOC, Holding::Owner),
                (OTHER, Holding::Shared(Role::ReadOnly))
            ]
        );
        assert_eq!(
            load_user_docs(&store, "al").unwrap(),
            vec![(third, Holding::Owner)]
        );
        commit(&store, |b| {
            put_user_doc(b, "alice", OTHER, Holding::Shared(Role::ReadWrite));
            delete_user_doc(b, "alice", DOC);
        })
        .unwrap();
        assert_eq!(
            load_user_docs(&store, "alice").unwrap(),
            vec![(OTHER, Holding::Shared(Role::ReadWrite))]
        );
        assert!(load_user_docs(&store, "nobody").unwrap().is_empty());
    }

    #[test]
    fn unreadable_index_rows_are_skipped() {
        let store = MemStore::new();
        commit(&store, |b| {
            put_user_doc(b, "bob", DOC, Holding::Owner);
            b.put(Table::USER_DOCS, user_doc_key("bob", OTHER), vec![0x02, 0]);
            b.put(
                Table::USER_DOCS,
                [user_prefix("bob"), b"short".to_vec()].concat(),
                vec![USER_DOC_FORMAT, 0],
            );
        })
        .unwrap();
        assert_eq!(
            load_user_docs(&store, "bob").unwrap(),
            vec![(DOC, Holding::Owner)]
        );
    }

    #[test]
    fn the_index_is_rebuilt_from_metadata_leaving_deleted_documents_out() {
        let store = MemStore::new();
        let shared = DocMeta {
            owner: Some("alice".into()),
            access: BTreeMap::from([
                ("bob".into(), Role::ReadOnly),
                ("alice".into(), Role::ReadOnly),
            ]),
            ..DocMeta::default()
        };
        let mut deleted = shared.clone();
        deleted.deleted_at_ms = Some(5);
        commit(&store, |b| {
            put_meta(b, DOC, &shared);
            put_meta(b, OTHER, &deleted);
        })
        .unwrap();
        assert!(!user_index_built(&store).unwrap());
        let batch = rebuild_user_index(&store).unwrap();
        store.write(&batch).unwrap();
        assert!(user_index_built(&store).unwrap());
        assert_eq!(
            load_user_docs(&store, "alice").unwrap(),
            vec![(DOC, Holding::Owner)]
        );
        assert_eq!(
            load_user_docs(&store, "bob").unwrap(),
            vec![(DOC, Holding::Shared(Role::ReadOnly))]
        );
    }
}
