//! Chunks: a document's Automerge bytes, keyed by document, kind and content hash.

use std::fmt;

use crate::store::{Hex, Table, WriteBatch};
use crate::{ContentHash, DocId};

/// The length of a chunk key: doc id, kind byte, blake3 hash.
const CHUNK_KEY_LEN: usize = 16 + 1 + 32;

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
