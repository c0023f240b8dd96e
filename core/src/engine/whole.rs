//! The whole document for a peer that holds none of it: one sync message carrying the document
//! as a snapshot, made once per heads for every such peer. Saving a large document takes long
//! (~65 ms per MB saved), so past [`EngineConfig::whole_off_thread_from`] stored bytes the
//! engine hands the driver a copy of the document to save on another thread ([`WholeJob`]) and
//! sends the result to every peer that waited for it ([`Engine::whole_made`]): the driver's
//! thread pays for the copy (a few percent of a save) instead of the save.
//!
//! [`EngineConfig::whole_off_thread_from`]: super::EngineConfig::whole_off_thread_from

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use automerge::sync;
use automerge::ChangeHash;
use bytes::Bytes;

use super::{ConnId, DocState, Engine, Message, Output, Slot, WholeMessage};
use crate::{DocId, Document};

/// A whole-document message to make off the driver's thread: run [`WholeJob::run`] (blocking,
/// as costly as a save of the document), then hand the result to [`Engine::whole_made`].
pub struct WholeJob {
    pub(super) doc: DocId,
    pub(super) heads: Vec<ChangeHash>,
    pub(super) read_only: bool,
    copy: Box<Document>,
}

impl fmt::Debug for WholeJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WholeJob")
            .field("doc", &self.doc)
            .field("heads", &self.heads.len())
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// A [`WholeJob`]'s result.
#[derive(Debug)]
pub struct WholeMade {
    pub(super) doc: DocId,
    pub(super) heads: Vec<ChangeHash>,
    pub(super) read_only: bool,
    /// The encoded message; `None` when saving failed (the waiting peers then get one made on
    /// the driver's thread).
    pub(super) data: Option<Bytes>,
}

impl WholeJob {
    /// The document.
    pub fn doc(&self) -> DocId {
        self.doc
    }

    /// Saves the copy and encodes the message. Never panics: a panic in Automerge's save
    /// comes back as a result without a message.
    pub fn run(self) -> WholeMade {
        let WholeJob {
            doc,
            heads,
            read_only,
            copy,
        } = self;
        let data = catch_unwind(AssertUnwindSafe(|| {
            encode(heads.clone(), read_only, copy.save())
        }))
        .ok();
        if data.is_none() {
            tracing::error!(%doc, "saving the whole document for a newcomer panicked");
        }
        WholeMade {
            doc,
            heads,
            read_only,
            data,
        }
    }
}

impl WholeMade {
    /// The document.
    pub fn doc(&self) -> DocId {
        self.doc
    }
}

/// What a peer that holds nothing gets now.
pub(super) enum Whole {
    /// This message.
    Send(Bytes),
    /// Nothing yet: the message is being made (the peer waits for [`Engine::whole_made`]).
    Wait,
    /// Nothing yet: the driver makes the message with this job.
    Make(WholeJob),
}

impl DocState {
    /// The whole-document message for `conn`, which holds nothing of `doc`: the cached one when
    /// made at these heads, else made here for a document smaller than `off_thread_from`
    /// stored bytes, else made by the driver (one job at a time per document; a peer arriving
    /// meanwhile waits for it).
    pub(super) fn whole_for(&mut self, doc: DocId, conn: ConnId, off_thread_from: u64) -> Whole {
        let Some(pd) = self.peers.get_mut(&conn) else {
            return Whole::Wait;
        };
        let heads = self.doc.automerge().get_heads();
        let read_only = pd.sync.read_only;
        let fresh = self
            .whole
            .as_ref()
            .is_some_and(|w| w.heads == heads && w.read_only == read_only);
        if fresh || self.stored_bytes < off_thread_from {
            return Whole::Send(whole_message(&self.doc, &mut self.whole, &mut pd.sync));
        }
        pd.whole_waiting = true;
        if self.whole_building {
            return Whole::Wait;
        }
        self.whole_building = true;
        Whole::Make(WholeJob {
            doc,
            heads,
            read_only,
            copy: Box::new(self.doc.clone()),
        })
    }
}

impl Engine {
    /// A [`WholeJob`] finished: its message goes to every peer waiting for one (even if the
    /// document moved on meanwhile: the message holds durable changes, and the peer's answer
    /// names the heads it then has, after which the sync rounds send the rest). It is kept
    /// as the document's cached message too. A peer whose read-only flag differs from the
    /// job's, or every waiting peer when the save failed, is served as if it just arrived.
    pub fn whole_made(&mut self, made: WholeMade) {
        self.run_due_pumps();
        let doc = made.doc;
        self.touched.insert(doc);
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
        };
        ds.whole_building = false;
        if let Some(data) = &made.data {
            ds.whole = Some(WholeMessage {
                heads: made.heads.clone(),
                read_only: made.read_only,
                data: data.clone(),
            });
        }
        let mut again = Vec::new();
        for (&conn, pd) in ds.peers.iter_mut() {
            if !std::mem::take(&mut pd.whole_waiting) {
                continue;
            }
            match &made.data {
                Some(data) if pd.sync.read_only == made.read_only => {
                    sent_whole(&mut pd.sync, made.heads.clone());
                    let reset = std::mem::take(&mut pd.send_reset);
                    self.out.push_back(Output::Send {
                        conn,
                        msg: Message::Sync {
                            doc,
                            reset,
                            data: data.clone(),
                        },
                    });
                }
                _ => {
                    pd.whole_sent = false;
                    again.push(conn);
                }
            }
        }
        if made.data.is_none() {
            // Saving failed on the driver's side: these peers are served here, the slow way,
            // rather than by another job that might fail the same way.
            for conn in again {
                self.whole_here(doc, conn);
            }
            return;
        }
        for conn in again {
            self.pump(doc, conn);
        }
    }

    /// Sends `conn` the whole document made on this thread (after a failed job).
    fn whole_here(&mut self, doc: DocId, conn: ConnId) {
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
        };
        if ds.stale || ds.doc.has_queued_changes() {
            // The next pump reloads or folds it first, and comes back through `whole_for`.
            self.pump(doc, conn);
            return;
        }
        let Some(pd) = ds.peers.get_mut(&conn) else {
            return;
        };
        pd.whole_sent = true;
        let data = whole_message(&ds.doc, &mut ds.whole, &mut pd.sync);
        let reset = std::mem::take(&mut pd.send_reset);
        self.out.push_back(Output::Send {
            conn,
            msg: Message::Sync { doc, reset, data },
        });
    }
}

/// Whether the peer told us it holds nothing of the document, in a message whose reply
/// Automerge would fill with the whole document (a snapshot), the peer taking version 2
/// messages and our changes.
pub(super) fn holds_nothing(state: &sync::State) -> bool {
    state.their_heads.as_ref().is_some_and(|h| h.is_empty())
        && state.their_need.is_some()
        && state
            .their_have
            .as_ref()
            .is_some_and(|have| have.iter().all(|h| h.last_sync.is_empty()))
        && state
            .their_capabilities
            .as_ref()
            .is_some_and(|c| c.contains(&sync::Capability::MessageV2))
        && !state.is_peer_read_only()
        && !state.needs_reset
}

/// A whole-document message at least this large is kept while its heads hold, though every
/// peer is live: the next newcomer would otherwise wait for another `save()` of a large
/// document (~100 ms per 1.7 MB saved), and it costs memory small beside the loaded document
/// (a saved document is a few percent of its loaded size, or less).
pub(super) const KEEP_WHOLE_FROM: usize = 256 * 1024;

/// The sync message Automerge's `generate_sync_message` makes for a peer that holds nothing
/// (our heads and the whole document as one snapshot), from `cache` when it was made at the
/// same heads, and the state updated as that call updates it. Two differences: the message
/// carries no bloom filter of our changes (the peer, holding nothing, has nothing to send us
/// whatever it is told), and `sent_hashes` is not filled with every change of the document
/// (kept per peer, that costs ~50 bytes per change per joining peer; the peer's next message
/// names its heads, which is how we learn what it still lacks).
fn whole_message(
    doc: &Document,
    cache: &mut Option<WholeMessage>,
    state: &mut sync::State,
) -> Bytes {
    let heads = doc.automerge().get_heads();
    let read_only = state.read_only;
    let fresh = cache
        .as_ref()
        .is_some_and(|w| w.heads == heads && w.read_only == read_only);
    if !fresh {
        *cache = Some(WholeMessage {
            heads: heads.clone(),
            read_only,
            data: encode(heads.clone(), read_only, doc.save()),
        });
    }
    sent_whole(state, heads);
    cache.as_ref().map(|w| w.data.clone()).unwrap_or_default()
}

/// The message holding `saved` (the whole document at `heads`).
fn encode(heads: Vec<ChangeHash>, read_only: bool, saved: Vec<u8>) -> Bytes {
    let mut flags = sync::MessageFlags::new();
    flags.set(sync::MessageFlags::SUPPORTS_SYNC_RESET);
    if read_only {
        flags.set(sync::MessageFlags::READ_ONLY);
    }
    let msg = sync::Message {
        heads,
        need: Vec::new(),
        have: Vec::new(),
        changes: sync::ChunkList::from(vec![saved]),
        flags: Some(flags),
        version: sync::MessageVersion::V2,
    };
    Bytes::from(msg.encode())
}

/// The sync state after sending the whole document at `heads`, as Automerge's own
/// `generate_sync_message` leaves it.
fn sent_whole(state: &mut sync::State, heads: Vec<ChangeHash>) {
    state.have_responded = true;
    state.in_flight = true;
    state.last_sent_heads = heads;
}
