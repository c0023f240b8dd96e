//! Loading a document whose stored chunks hold bytes that do not parse.
//!
//! Before every peer's change was checked ([`crate::check`]), a relay stored the change chunks
//! of a sync message as they arrived, so a store may hold garbage a member sent, and Automerge
//! refuses to load a concatenation that contains any. [`salvage`] goes through the stored
//! chunks one Automerge chunk at a time, keeps every piece that parses, and names the stored
//! chunks that held something that does not, so the caller sets them aside
//! ([`quarantine`]) and the document is served again.

use std::panic::catch_unwind;

use automerge::{Automerge, AutomergeError};

use super::chunks::{put_chunk, ChunkKey, ChunkKind};
use super::error::DocStoreError;
use crate::check::{self, Limits};
use crate::store::{Table, WriteBatch};
use crate::DocId;

type Chunks = Vec<(ChunkKey, Vec<u8>)>;

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

/// Loads `doc` from the pieces of `chunks` that parse. Returns the document, the chunks kept
/// whole, and the chunks to set aside (with what was salvaged from each).
pub(super) fn salvage(
    doc: DocId,
    chunks: Chunks,
) -> Result<(Automerge, Chunks, Vec<Quarantine>), DocStoreError> {
    // What this store wrote is held to the device's limits, which only guard against bombs.
    let limits = Limits::device();
    let mut kept = Vec::with_capacity(chunks.len());
    let mut quarantine = Vec::new();
    for (key, bytes) in chunks {
        match pieces(&bytes, &limits) {
            Ok(()) => kept.push((key, bytes)),
            Err((salvaged, reason)) => quarantine.push(Quarantine {
                key,
                bytes,
                salvaged,
                reason,
            }),
        }
    }
    let mut all = Vec::new();
    for (_, bytes) in &kept {
        all.extend_from_slice(bytes);
    }
    for q in &quarantine {
        all.extend_from_slice(&q.salvaged);
    }
    match catch_unwind(|| crate::doc::load_automerge(&all)) {
        Ok(Ok(am)) => {
            for q in &quarantine {
                tracing::warn!(%doc, chunk = %q.key, reason = %q.reason, salvaged = q.salvaged.len(),
                    "a stored chunk does not parse: setting it aside");
            }
            Ok((am, kept, quarantine))
        }
        Ok(Err(source)) => Err(DocStoreError::Load {
            doc,
            chunk: first_unparsable(&kept),
            source: Box::new(source),
        }),
        Err(_) => Err(DocStoreError::LoadPanicked { doc }),
    }
}

/// `Ok` when every Automerge chunk in `bytes` parses; else the pieces that do, concatenated,
/// and why the rest does not. After a piece whose header does not parse nothing further can be
/// delimited, so the rest of the stored chunk is lost.
fn pieces(bytes: &[u8], limits: &Limits) -> Result<(), (Vec<u8>, String)> {
    let mut salvaged = Vec::new();
    let mut first_error = None;
    let mut at = 0;
    while at < bytes.len() {
        match check::first_chunk(&bytes[at..]) {
            Ok(span) => {
                keep_if_valid(
                    &bytes[at..at + span.end],
                    limits,
                    &mut salvaged,
                    &mut first_error,
                );
                at += span.end;
            }
            Err(e) => {
                first_error.get_or_insert(e.to_string());
                break;
            }
        }
    }
    match first_error {
        None => Ok(()),
        Some(reason) => Err((salvaged, reason)),
    }
}

fn keep_if_valid(
    piece: &[u8],
    limits: &Limits,
    salvaged: &mut Vec<u8>,
    first_error: &mut Option<String>,
) {
    let mut out = Vec::new();
    match check::check_chunks(piece, limits, &mut 0, &mut out) {
        Ok(()) => salvaged.extend_from_slice(piece),
        Err(e) => {
            first_error.get_or_insert(e.to_string());
        }
    }
}
