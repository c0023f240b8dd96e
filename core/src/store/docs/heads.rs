//! A stored document's heads, read from its chunks' headers without loading it.
//!
//! A snapshot's header names its heads; an incremental chunk holds changes, each of which names
//! its hash and its dependencies. The stored document's heads are the snapshots' heads and the
//! changes' hashes that no stored change depends on. That is the heads `load_document` gives
//! as long as every stored change's dependencies are stored too (the writer's duty, see the
//! module docs of `docs`). When they are not, or when snapshots overlap (one's heads are
//! another's ancestors), the set read here holds a hash the loaded document does not have as a
//! head, so it differs from the heads of any document that was actually loaded: a reader that
//! compares the two then falls back to loading, never to a wrong answer.

use std::collections::BTreeSet;
use std::panic::catch_unwind;

use automerge::{Change, ChangeHash};

use super::error::DocStoreError;
use super::load::load_chunks;
use crate::check::split_chunks;
use crate::store::KvStore;
use crate::DocId;

/// Chunk type bytes (Automerge's binary format).
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED: u8 = 2;

/// The heads of `doc` as stored, sorted, read from its chunks' headers; `None` when it has no
/// chunks or a chunk's header does not read (the caller loads the document instead). Reads
/// every chunk's bytes (checked against its hash) but loads none.
pub fn stored_heads(
    store: &dyn KvStore,
    doc: DocId,
) -> Result<Option<Vec<ChangeHash>>, DocStoreError> {
    let chunks = load_chunks(store, doc)?;
    if chunks.is_empty() {
        return Ok(None);
    }
    let mut candidates = BTreeSet::new();
    let mut depended = BTreeSet::new();
    for (_, bytes) in &chunks {
        let Ok(spans) = split_chunks(bytes) else {
            return Ok(None);
        };
        for span in spans {
            match span.kind {
                CHUNK_DOCUMENT => {
                    let Some(heads) = document_heads(&bytes[span.data..span.end]) else {
                        return Ok(None);
                    };
                    candidates.extend(heads);
                }
                CHUNK_CHANGE | CHUNK_COMPRESSED => {
                    let chunk = &bytes[span.start..span.end];
                    // The bytes passed their hash check, so this store wrote them; still, a
                    // panic in the parser must cost this read, not the process.
                    let Ok(Ok(change)) = catch_unwind(|| Change::try_from(chunk)) else {
                        return Ok(None);
                    };
                    candidates.insert(change.hash());
                    depended.extend(change.deps().iter().copied());
                }
                _ => return Ok(None),
            }
        }
    }
    let heads: Vec<ChangeHash> = candidates.difference(&depended).copied().collect();
    Ok((!heads.is_empty()).then_some(heads))
}

/// The heads a document chunk's data names: after its actors (a count, then each actor's
/// length and bytes) come the heads (a count, then 32 bytes each). `None` if cut short.
fn document_heads(data: &[u8]) -> Option<Vec<ChangeHash>> {
    let mut at = 0;
    let actors = uleb(data, &mut at)?;
    for _ in 0..actors {
        let len = usize::try_from(uleb(data, &mut at)?).ok()?;
        at = at.checked_add(len)?;
    }
    let n = usize::try_from(uleb(data, &mut at)?).ok()?;
    // Every head takes 32 bytes: a count larger than the bytes left is damage, not a reason
    // to allocate.
    if n > data.len().saturating_sub(at) / 32 {
        return None;
    }
    (0..n)
        .map(|i| {
            let h: [u8; 32] = data.get(at + 32 * i..at + 32 * (i + 1))?.try_into().ok()?;
            Some(ChangeHash(h))
        })
        .collect()
}

/// An unsigned LEB128 number at `*at`, moving `at` past it.
fn uleb(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = *data.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{Automerge, ROOT};

    use super::*;
    use crate::store::docs::{put_chunk, ChunkKind};
    use crate::store::{MemStore, WriteBatch};

    const DOC: DocId = DocId::from_bytes([3; 16]);

    fn sorted(mut h: Vec<ChangeHash>) -> Vec<ChangeHash> {
        h.sort_unstable();
        h
    }

    fn put(store: &MemStore, kind: ChunkKind, bytes: Vec<u8>) {
        let mut b = WriteBatch::new();
        put_chunk(&mut b, DOC, kind, bytes);
        store.write(&b).unwrap();
    }

    fn edit(am: &mut Automerge, key: &str) {
        let mut tx = am.transaction();
        tx.put(ROOT, key, 1).unwrap();
        tx.commit();
    }

    #[test]
    fn a_snapshot_and_later_changes_give_the_loaded_heads() {
        let store = MemStore::new();
        assert_eq!(stored_heads(&store, DOC).unwrap(), None);
        let mut am = Automerge::new();
        edit(&mut am, "a");
        put(&store, ChunkKind::Snapshot, am.save());
        assert_eq!(
            stored_heads(&store, DOC).unwrap(),
            Some(sorted(am.get_heads()))
        );

        // Two concurrent changes on top: both are heads.
        let base = am.get_heads();
        let mut fork = am.fork();
        edit(&mut am, "b");
        edit(&mut fork, "c");
        put(&store, ChunkKind::Incremental, am.save_after(&base));
        put(&store, ChunkKind::Incremental, fork.save_after(&base));
        am.merge(&mut fork).unwrap();
        let got = stored_heads(&store, DOC).unwrap().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got, sorted(am.get_heads()));
        let (loaded, _) = crate::store::docs::load_document(&store, DOC)
            .unwrap()
            .unwrap();
        assert_eq!(got, sorted(loaded.get_heads()));
    }

    #[test]
    fn a_header_that_does_not_read_gives_none() {
        let store = MemStore::new();
        put(&store, ChunkKind::Incremental, b"not automerge".to_vec());
        assert_eq!(stored_heads(&store, DOC).unwrap(), None);
        assert_eq!(document_heads(&[0x05]), None);
        assert_eq!(document_heads(&[0x00, 0xff, 0xff, 0xff, 0x0f]), None);
    }
}
