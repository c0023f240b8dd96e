//! Pre-generated chat changes: one linear chain of Automerge changes, made before anything is
//! timed, so the benchmark measures the relay rather than the clients' local commits.

use std::collections::HashMap;

use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{ActorId, Automerge, ChangeHash, ObjType, ROOT};

/// A linear chain of changes (each depends on the one before): change 0 creates a `messages`
/// map, every later one appends a chat message of about 170 bytes as a raw change.
pub struct Chain {
    /// Raw change bytes, in order.
    pub raw: Vec<Vec<u8>>,
    /// Each change's hash, in order.
    pub hashes: Vec<ChangeHash>,
    index: HashMap<ChangeHash, usize>,
}

impl Chain {
    /// `len` changes made by one fresh actor.
    pub fn generate(len: usize) -> Chain {
        let mut am = Automerge::new().with_actor(ActorId::random());
        let mut raw = Vec::with_capacity(len);
        let mut hashes = Vec::with_capacity(len);
        let mut messages = None;
        for i in 0..len {
            let mut tx = am.transaction();
            match &messages {
                None => {
                    // Invariant: a put on a fresh transaction of a local document cannot fail.
                    let m = tx
                        .put_object(ROOT, "messages", ObjType::Map)
                        .expect("put on a fresh document");
                    messages = Some(m);
                }
                Some(m) => {
                    let key = format!("{:016}_{:012x}", 1_700_000_000_000u64 + i as u64, i);
                    let msg = tx
                        .put_object(m, key.as_str(), ObjType::Map)
                        .expect("put on a local document");
                    tx.put(&msg, "author", "alice").expect("put on a local map");
                    tx.put(&msg, "created_at", 1_700_000_000_000i64 + i as i64)
                        .expect("put on a local map");
                    tx.put(
                        &msg,
                        "body",
                        format!("message {i}: on my way, see you at the station in ten minutes"),
                    )
                    .expect("put on a local map");
                }
            }
            tx.commit();
            let change = am
                .get_last_local_change()
                .expect("a change was just committed");
            hashes.push(change.hash());
            raw.push(change.raw_bytes().to_vec());
        }
        let index = hashes.iter().enumerate().map(|(i, h)| (*h, i)).collect();
        Chain { raw, hashes, index }
    }

    /// The position of a change in the chain.
    pub fn position(&self, hash: &ChangeHash) -> Option<usize> {
        self.index.get(hash).copied()
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.raw.len()
    }
}
