//! New messages noted for the relay's push hook: the gate sees every accepted change, knows its
//! writer and the document's kind, and finds the records it creates in `messages`; the relay
//! takes them once the change is durable ([`super::RulesGate::take_messages`]).

use weft_core::hash::{shrink_if_sparse, HashMap};
use weft_core::DocId;

use super::eval::MessageMade;

/// Most messages kept waiting to be taken, over all documents: beyond it new ones are counted
/// as dropped (a relay whose hook cannot keep up must not grow without bound).
pub const MAX_NOTED: usize = 10_000;

/// A message a change created, as accepted by the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Its key in the document's `messages`.
    pub key: String,
    /// The user who wrote it (the change's writer, which its author field must name).
    pub author: String,
    /// The document's kind.
    pub kind: Option<String>,
    /// Its body as written (at most 1 KiB), when bodies are noted.
    pub body: Option<String>,
}

/// Messages noted per document, until taken.
#[derive(Debug, Default)]
pub(super) struct Notes {
    /// Whether bodies are kept.
    pub(super) bodies: bool,
    pending: HashMap<DocId, Vec<NewMessage>>,
    count: usize,
    dropped: u64,
}

impl Notes {
    pub(super) fn new(bodies: bool) -> Notes {
        Notes {
            bodies,
            ..Notes::default()
        }
    }

    pub(super) fn add(
        &mut self,
        doc: DocId,
        author: &str,
        kind: Option<&str>,
        made: Vec<MessageMade>,
    ) {
        for m in made {
            if self.count >= MAX_NOTED {
                self.dropped += 1;
                continue;
            }
            self.count += 1;
            self.pending.entry(doc).or_default().push(NewMessage {
                key: m.key,
                author: author.to_string(),
                kind: kind.map(str::to_string),
                body: m.body,
            });
        }
    }

    pub(super) fn take(&mut self, doc: DocId) -> Vec<NewMessage> {
        let taken = self.pending.remove(&doc).unwrap_or_default();
        self.count -= taken.len();
        taken
    }

    pub(super) fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    pub(super) fn shrink(&mut self) {
        shrink_if_sparse(&mut self.pending);
    }
}
