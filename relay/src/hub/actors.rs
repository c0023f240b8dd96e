//! Actor bindings (which user each Automerge actor writes for) sent to a connection that
//! subscribes to a document; each new one is broadcast as the engine reports it
//! (`Output::GateRecord`, in `docs.rs`).

use std::collections::BTreeMap;

use weft_core::engine::ConnId;
use weft_core::store::docs as docstore;
use weft_core::wire::{self, Message};
use weft_core::DocId;

use super::Hub;

/// An upper bound of what an entry of `Actors` adds to its frame besides the actor's and the
/// user's bytes (field names, lengths and map headers, in either encoding).
const ACTOR_ENTRY_OVERHEAD: usize = 32;

impl Hub {
    /// Tells `conn` which user each actor of `doc` writes for: what the store holds and,
    /// for a loaded document, what its gate knows (bindings of changes just accepted, whose
    /// records may not be durable yet, and which reached only the subscribers of then). Sent
    /// before the document's data, in messages that stay well within a frame.
    pub(super) fn send_actors(&mut self, conn: ConnId, doc: DocId) {
        let mut actors: BTreeMap<Vec<u8>, String> =
            match docstore::load_gate_records(self.host.store().as_ref(), doc) {
                Ok(r) => r
                    .into_iter()
                    .filter_map(|(actor, user)| Some((actor, String::from_utf8(user).ok()?)))
                    .collect(),
                Err(e) => {
                    tracing::warn!(%doc, error = %e, "reading a document's actors failed");
                    BTreeMap::new()
                }
            };
        if let Some(rules) = self.rules() {
            for (actor, user) in rules.bindings(doc) {
                actors.insert(actor.to_bytes().to_vec(), user.to_string());
            }
        }
        for actors in split(actors, self.cfg.max_frame / 2) {
            self.send(conn, &Message::Actors { doc, actors });
        }
    }
}

/// `actors` as the entries of consecutive `Actors` messages, each (but one holding a single
/// entry too large alone) within `budget` bytes of entries.
fn split(actors: BTreeMap<Vec<u8>, String>, budget: usize) -> Vec<Vec<wire::ActorEntry>> {
    let mut messages = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0;
    for (actor, user) in actors {
        let size = actor.len() + user.len() + ACTOR_ENTRY_OVERHEAD;
        if !batch.is_empty() && bytes + size > budget {
            messages.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += size;
        batch.push(wire::ActorEntry { actor, user });
    }
    if !batch.is_empty() {
        messages.push(batch);
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::wire::Encoding;

    #[test]
    fn many_bindings_go_in_several_messages_each_within_a_frame() {
        let max_frame = 4096;
        let actors: BTreeMap<Vec<u8>, String> = (0..1000u32)
            .map(|i| (i.to_be_bytes().repeat(4), format!("user-{i}")))
            .collect();
        let messages = split(actors.clone(), max_frame / 2);
        assert!(messages.len() > 1);
        let doc = DocId::from_bytes([1; 16]);
        for actors in &messages {
            let msg = Message::Actors {
                doc,
                actors: actors.clone(),
            };
            for encoding in [Encoding::Named, Encoding::Compact] {
                wire::frame_as(&msg, encoding, max_frame).expect("within a frame");
            }
        }
        let sent: Vec<(Vec<u8>, String)> = messages
            .into_iter()
            .flatten()
            .map(|e| (e.actor, e.user))
            .collect();
        assert_eq!(
            sent,
            actors.into_iter().collect::<Vec<_>>(),
            "each once, in order"
        );
        assert!(split(BTreeMap::new(), max_frame / 2).is_empty());
    }
}
