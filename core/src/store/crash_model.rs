//! The crash-safety argument of [`docs`](super::docs), checked as a property on [`MemStore`]:
//! a writer following the protocol there, with writes failing and the process crashing at
//! random points, never loses a change it saw committed, and the store always loads.

use automerge::{ActorId, Automerge, ChangeHash, ReadDoc};
use proptest::prelude::*;

use super::docs::tests::{append, log_len, DOC};
use super::docs::{compact, load_document, put_chunk, ChunkKey, ChunkKind};
use super::{KvStore, MemStore, WriteBatch};

#[derive(Clone, Debug)]
enum Step {
    /// Make `n` changes, then write them as one chunk each, or as one `save_after` chunk.
    Change { n: u8, bundled: bool },
    /// Compact everything this writer knows into a snapshot.
    Compact,
    /// The next write fails.
    FailNextWrite,
    /// The process dies; a new one reloads from what was committed.
    Crash,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1..4u8, any::<bool>()).prop_map(|(n, bundled)| Step::Change { n, bundled }),
        2 => Just(Step::Compact),
        1 => Just(Step::FailNextWrite),
        2 => Just(Step::Crash),
    ]
}

/// A writer following the protocol in the module docs.
struct Writer {
    doc: Automerge,
    /// Chunks this writer's document covers: what compaction may replace.
    keys: Vec<ChunkKey>,
    /// Changes made but not yet durable.
    pending: Vec<(ChangeHash, Vec<u8>)>,
    /// Heads as of the last durable write.
    persisted_heads: Vec<ChangeHash>,
}

impl Writer {
    fn open(store: &MemStore, session: u8) -> Writer {
        let (doc, keys) = load_document(store, DOC)
            .expect("every committed state loads")
            .unwrap_or_else(|| (Automerge::new(), Vec::new()));
        let doc = doc.with_actor(ActorId::from(vec![session; 16]));
        let persisted_heads = doc.get_heads();
        Writer {
            doc,
            keys,
            pending: Vec::new(),
            persisted_heads,
        }
    }

    /// Writes `batch`; on success returns the changes it made durable.
    fn commit(
        &mut self,
        store: &MemStore,
        batch: &WriteBatch,
        written: Vec<ChunkKey>,
        compacted: bool,
    ) -> Vec<ChangeHash> {
        if store.write(batch).is_err() {
            return Vec::new();
        }
        if compacted {
            self.keys = written;
        } else {
            self.keys.extend(written);
        }
        self.persisted_heads = self.doc.get_heads();
        self.pending.drain(..).map(|(hash, _)| hash).collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_committed_change_survives_any_crash(steps in prop::collection::vec(step(), 1..40)) {
        let mut store = MemStore::new();
        let mut session = 0u8;
        let mut writer = Writer::open(&store, session);
        let mut committed: Vec<ChangeHash> = Vec::new();
        let mut counter = 0u32;
        for step in steps {
            match step {
                Step::Change { n, bundled } => {
                    for _ in 0..n {
                        counter += 1;
                        let change = append(&mut writer.doc, &format!("m{counter}"));
                        writer.pending.push(change);
                    }
                    let mut batch = WriteBatch::new();
                    let written = if bundled {
                        let bytes = writer.doc.save_after(&writer.persisted_heads);
                        vec![put_chunk(&mut batch, DOC, ChunkKind::Incremental, bytes)]
                    } else {
                        // Pending changes from failed writes go again, with the new ones.
                        writer
                            .pending
                            .iter()
                            .map(|(_, bytes)| {
                                put_chunk(&mut batch, DOC, ChunkKind::Incremental, bytes.as_slice())
                            })
                            .collect()
                    };
                    committed.extend(writer.commit(&store, &batch, written, false));
                }
                Step::Compact => {
                    let mut batch = WriteBatch::new();
                    let snapshot = compact(&mut batch, DOC, writer.doc.save(), &writer.keys);
                    committed.extend(writer.commit(&store, &batch, vec![snapshot], true));
                }
                Step::FailNextWrite => store.fail_next_write(),
                Step::Crash => {
                    store = store.crash_copy();
                    session += 1;
                    writer = Writer::open(&store, session);
                    for hash in &committed {
                        prop_assert!(writer.doc.get_change_by_hash(hash).is_some(), "lost {hash}");
                    }
                }
            }
        }
        let after_crash = store.crash_copy();
        let loaded = Writer::open(&after_crash, 255);
        for hash in &committed {
            prop_assert!(loaded.doc.get_change_by_hash(hash).is_some(), "lost {hash}");
        }
        prop_assert!(log_len(&loaded.doc) >= committed.len());
    }
}
