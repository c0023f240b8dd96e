//! Loading a document from its chunks.

use std::panic::catch_unwind;

use automerge::{Automerge, ReadDoc};

use super::chunks::{ChunkKey, ChunkKind};
use super::error::DocStoreError;
use super::heal::Quarantine;
use crate::store::{KvStore, Table};
use crate::{ContentHash, DocId};

/// Load `doc` from its chunks, or `None` if it has none. Also returns the keys of the chunks
/// loaded: pass them to [`compact`](crate::store::docs::compact) as `replaces` with a snapshot of this document. Chunks
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
    /// Stored chunks that held bytes that do not parse, to set aside with [`quarantine`](crate::store::docs::quarantine).
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
        if key.kind() == ChunkKind::Quarantined {
            continue;
        }
        let actual = ContentHash::of(&bytes);
        if actual != key.hash() {
            return Err(DocStoreError::CorruptChunk { key, actual });
        }
        chunks.push((key, bytes));
    }
    Ok(chunks)
}
