//! Ephemeral data (presence statuses, typing indicators) in crowded documents, batched.
//!
//! Relayed one by one, a member's status costs the relay a frame (a QUIC datagram) per other
//! member: with a thousand members, a thousand packets per change. In a document with at
//! least `HubConfig::presence_batch_from` subscribers the hub instead keeps, per document,
//! the latest ephemeral frame of each sending connection, and every
//! `HubConfig::presence_batch_every` sends each subscriber one entry holding all of them
//! (its own left out) on its stream: one write per member per tick, however many changed.
//!
//! What a member sees: every other member's latest state, at most one tick late; states a
//! member replaced within one tick are not delivered (ephemeral data is best-effort either
//! way: datagrams may be lost). A member that leaves takes its pending state with it, so no
//! status of it arrives after its `Presence { online: false }`.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use weft_core::engine::ConnId;
use weft_core::hash::HashMap;
use weft_core::DocId;

use super::{Hub, Outbound};

/// A document's waiting frames: each sender's latest, in the order senders first spoke.
type Pending = Vec<(ConnId, Arc<Vec<u8>>)>;

/// The ephemeral frames waiting for the next tick.
#[derive(Debug, Default)]
pub(super) struct PresenceBatches {
    pending: HashMap<DocId, Pending>,
    /// When the pending frames go out.
    due: Option<Instant>,
}

impl PresenceBatches {
    /// When [`Hub::flush_presence`] must run next, if anything waits.
    pub(super) fn due(&self) -> Option<Instant> {
        self.due
    }
}

impl Hub {
    /// Whether `doc`'s ephemeral traffic is batched (it has that many subscribers).
    pub(super) fn batches_presence(&self, doc: DocId) -> bool {
        self.subscribers
            .get(&doc)
            .is_some_and(|s| s.len() >= self.cfg.presence_batch_from)
    }

    /// Keeps `frame` (an encoded `Ephemeral` from `conn`) as `conn`'s latest state in `doc`,
    /// replacing the one it sent earlier in this tick.
    pub(super) fn batch_presence(&mut self, doc: DocId, conn: ConnId, frame: Arc<Vec<u8>>) {
        let entries = self.presence.pending.entry(doc).or_default();
        match entries.iter_mut().find(|(c, _)| *c == conn) {
            Some(entry) => entry.1 = frame,
            None => entries.push((conn, frame)),
        }
        if self.presence.due.is_none() {
            self.presence.due = Some(Instant::now() + self.cfg.presence_batch_every);
        }
    }

    /// `conn` left `doc`: its pending state is not delivered.
    pub(super) fn forget_presence(&mut self, doc: DocId, conn: ConnId) {
        if let Some(entries) = self.presence.pending.get_mut(&doc) {
            entries.retain(|(c, _)| *c != conn);
            if entries.is_empty() {
                self.presence.pending.remove(&doc);
            }
        }
    }

    /// Sends every pending state: per document, one entry per subscriber holding the latest
    /// frame of every sender but itself. Every subscriber shares the same bytes; a sender's
    /// entry names the range of its own frame, which its writer leaves out.
    pub(super) fn flush_presence(&mut self) {
        self.presence.due = None;
        let pending = std::mem::take(&mut self.presence.pending);
        for (doc, entries) in pending {
            let Some(subscribers) = self.subscribers.get(&doc) else {
                continue;
            };
            let mut bytes = Vec::with_capacity(entries.iter().map(|(_, f)| f.len()).sum());
            let mut own: HashMap<ConnId, Range<usize>> = HashMap::default();
            for (conn, frame) in &entries {
                let start = bytes.len();
                bytes.extend_from_slice(frame);
                own.insert(*conn, start..bytes.len());
            }
            let frames = Arc::new(bytes);
            let targets: Vec<(ConnId, Range<usize>)> = subscribers
                .keys()
                .map(|c| (*c, own.get(c).cloned().unwrap_or(0..0)))
                .filter(|(_, except)| except.len() < frames.len())
                .collect();
            for (conn, except) in targets {
                // Best-effort like a single ephemeral frame (see `Hub::push`).
                let out = Outbound::EphemeralBatch {
                    frames: frames.clone(),
                    except,
                };
                self.push(conn, out, None);
            }
        }
    }
}
