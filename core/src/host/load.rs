//! Loading a document from the store for the host, and taking a load's result.

use super::{Host, Stored};
use crate::engine::Millis;
use crate::hash::HashSet;
use crate::store::docs::{self, ChunkKey, DocStoreError};
use crate::store::KvStore;
use crate::{DocId, Document};

/// A loaded document and the chunks it was loaded from.
#[derive(Debug)]
pub struct Loaded {
    /// The document.
    pub doc: Document,
    /// The chunks it covers.
    pub chunks: Vec<ChunkKey>,
    /// `doc` saved, from [`load_for_compaction`]: a snapshot holding exactly the changes of
    /// `chunks`.
    pub snapshot: Option<Vec<u8>>,
    /// Bytes of `chunks`, by kind: what the host's compaction policy starts from.
    pub sizes: docs::ChunkBytes,
    /// Stored chunks that do not parse, left out of `doc`: the host sets them aside.
    pub quarantine: Vec<docs::Quarantine>,
    /// What the engine's gate keeps with the document (see `engine::Gate`).
    pub gate_records: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Loads a document from the store (blocking). `Ok(None)`: the store has no such document.
pub fn load(store: &dyn KvStore, doc: DocId) -> Result<Option<Loaded>, DocStoreError> {
    let Some(l) = docs::load_document_sized(store, doc)? else {
        return Ok(None);
    };
    Ok(Some(Loaded {
        doc: Document::from_automerge(l.doc),
        chunks: l.chunks,
        snapshot: None,
        sizes: l.sizes,
        quarantine: l.quarantine,
        gate_records: docs::load_gate_records(store, doc)?,
    }))
}

/// [`load`], then saves the document too (blocking, and as costly as the load): for a load
/// the host asked for to compact the document ([`Host::wants_snapshot`]). The host then
/// compacts without saving on the driver's thread.
pub fn load_for_compaction(
    store: &dyn KvStore,
    doc: DocId,
) -> Result<Option<Loaded>, DocStoreError> {
    let mut loaded = load(store, doc)?;
    if let Some(l) = &mut loaded {
        l.snapshot = Some(l.doc.save());
    }
    Ok(loaded)
}

/// The persisted sync state of `doc` with `peer`, in the form [`crate::engine::OpenOptions`]
/// takes.
pub fn saved_sync_state(
    store: &dyn KvStore,
    doc: DocId,
    peer: &[u8],
) -> Result<Option<Vec<u8>>, DocStoreError> {
    Ok(docs::load_sync_state(store, doc, peer)?.map(|s| s.encode()))
}

impl Host {
    /// Reports a load's result, at `now`. A load error is reported as an empty document being
    /// unavailable: the engine drops the document's queued inputs and the error is returned for
    /// the driver to report.
    pub fn loaded(
        &mut self,
        now: Millis,
        doc: DocId,
        result: Result<Option<Loaded>, DocStoreError>,
    ) -> Result<(), DocStoreError> {
        self.engine.set_now(now);
        match result {
            Ok(Some(mut l)) => {
                let wanted = self.snapshot_on_load.remove(&doc);
                let quarantine = std::mem::take(&mut l.quarantine);
                // A first load starts the compaction policy from what the store holds (a
                // large snapshot is not redone after the first few new chunks).
                let stored = self.chunks.entry(doc).or_insert_with(|| Stored {
                    chunks: Vec::new(),
                    incremental_bytes: l.sizes.incremental,
                    snapshot_bytes: l.sizes.snapshot,
                });
                // A reload of a stale document keeps what the host already knows (chunks
                // written since the load read the store are not in `l.chunks`).
                let known: HashSet<ChunkKey> = stored.chunks.iter().copied().collect();
                stored
                    .chunks
                    .extend(l.chunks.iter().copied().filter(|k| !known.contains(k)));
                if !quarantine.is_empty() {
                    self.set_aside(doc, &quarantine);
                }
                if let (true, Some(snapshot)) = (wanted, l.snapshot) {
                    if !self.compacting.contains_key(&doc) {
                        self.compacted_from_loads += 1;
                        self.compact(doc, snapshot, l.chunks);
                    }
                }
                let stored_bytes = self
                    .chunks
                    .get(&doc)
                    .map_or(0, |s| s.incremental_bytes + s.snapshot_bytes);
                self.engine.loaded_with(doc, Some(l.doc), &l.gate_records);
                self.engine.set_stored_bytes(doc, stored_bytes as u64);
                Ok(())
            }
            Ok(None) => {
                self.snapshot_on_load.remove(&doc);
                self.chunks.entry(doc).or_default();
                self.engine.loaded(doc, None);
                Ok(())
            }
            Err(e) => {
                self.snapshot_on_load.remove(&doc);
                self.engine.load_failed(doc);
                Err(e)
            }
        }
    }
}
