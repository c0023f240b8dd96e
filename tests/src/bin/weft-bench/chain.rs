//! Pre-generated chat changes: one linear chain of Automerge changes, made before anything is
//! timed, so the benchmark measures the relay rather than the clients' local commits.

use std::collections::HashMap;

use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{ActorId, Automerge, ChangeHash, ObjType, ROOT};

/// A linear chain of changes (each depends on the one before): change 0 creates a
/// conversation (its header and empty `messages`, `read`, `reactions`), every later one appends
/// a chat message of about 200 bytes as a raw change, written by the user `bench` in the
/// schema's shape (key `{created_at}_{id}`, author, a one-line body), so the relay's write
/// rules check each one as they would a real message.
pub struct Chain {
    /// Raw change bytes, in order.
    pub raw: Vec<Vec<u8>>,
    /// Each change's hash, in order.
    pub hashes: Vec<ChangeHash>,
    index: HashMap<ChangeHash, usize>,
}

/// The user the bench's devices write for (their token's `sub`).
pub const USER: &str = "bench";

impl Chain {
    /// `len` changes made by one fresh actor.
    pub fn generate(len: usize) -> Chain {
        Chain::generate_with(len, |i| {
            format!("message {i}: on my way, see you at the station in ten minutes")
        })
        .0
    }

    /// `len` changes made by one fresh actor, message `i`'s body being `body(i)`, and the
    /// document they make.
    pub fn generate_with(len: usize, body: impl Fn(usize) -> String) -> (Chain, Automerge) {
        let mut am = Automerge::new().with_actor(ActorId::random());
        let mut raw = Vec::with_capacity(len);
        let mut hashes = Vec::with_capacity(len);
        let mut messages = None;
        for i in 0..len {
            let mut tx = am.transaction();
            match &messages {
                None => {
                    // Invariant: puts on a fresh transaction of a local document cannot fail.
                    tx.put(ROOT, "kind", "conversation")
                        .expect("put on a fresh document");
                    tx.put(ROOT, "schema_version", 2)
                        .expect("put on a fresh document");
                    tx.put(ROOT, "title", "bench")
                        .expect("put on a fresh document");
                    let m = tx
                        .put_object(ROOT, "messages", ObjType::Map)
                        .expect("put on a fresh document");
                    tx.put_object(ROOT, "read", ObjType::Map)
                        .expect("put on a fresh document");
                    tx.put_object(ROOT, "reactions", ObjType::Map)
                        .expect("put on a fresh document");
                    messages = Some(m);
                }
                Some(m) => {
                    let ms = 1_700_000_000_000u64 + i as u64;
                    let created_at = weft_schema::Hlc::new(ms, 0, 7)
                        .expect("a time before year 9999")
                        .to_string();
                    let id = weft_schema::Id::from_bytes((i as u128).to_be_bytes());
                    let key = format!("{created_at}_{id}");
                    let msg = tx
                        .put_object(m, key.as_str(), ObjType::Map)
                        .expect("put on a local document");
                    tx.put(&msg, "id", id.as_str()).expect("put on a local map");
                    tx.put(&msg, "author", USER).expect("put on a local map");
                    tx.put(&msg, "created_at", created_at.as_str())
                        .expect("put on a local map");
                    tx.put(&msg, "body", body(i)).expect("put on a local map");
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
        (Chain { raw, hashes, index }, am)
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
