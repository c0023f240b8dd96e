//! Ephemeral data (presence statuses, typing indicators) in crowded documents, batched.
//!
//! Relayed one by one, a member's status costs the relay a frame (a QUIC datagram) per other
//! member: with a thousand members, a thousand packets per change. In a document with at
//! least `HubConfig::presence_batch_from` subscribers the hub instead keeps, per document,
//! the latest ephemeral frame of each sending connection, and once per tick sends each
//! subscriber one entry holding all of them (its own left out) on its stream: one write per
//! member per tick, however many changed.
//!
//! A tick's cost grows with the crowd (a stream write and a packet per member, ~10-20 us), so
//! the tick grows with it too: `HubConfig::presence_batch_per_member` per subscriber, at least
//! `presence_batch_every` and at most `presence_batch_max`. A crowded document's presence then
//! costs the relay about the same CPU per second whatever its size, and a status waits at most
//! a quarter of a second in a 1,000-member document (measured in `weft-bench presence`).
//!
//! What a member sees: every other member's latest state, at most one tick late; states a
//! member replaced within one tick are not delivered (ephemeral data is best-effort either
//! way: datagrams may be lost). A member that leaves takes its pending state with it, so no
//! status of it arrives after its `Presence { online: false }`.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_core::engine::ConnId;
use weft_core::hash::HashMap;
use weft_core::DocId;

use super::{Hub, Outbound};

/// A document's waiting frames: each sender's latest, in the order senders first spoke.
type Pending = Vec<(ConnId, Arc<Vec<u8>>)>;

/// One document's batch: its frames and when they go out.
#[derive(Debug)]
struct Batch {
    due: Instant,
    entries: Pending,
}

/// The ephemeral frames waiting for their document's next tick.
#[derive(Debug, Default)]
pub(super) struct PresenceBatches {
    pending: HashMap<DocId, Batch>,
    /// Each pending document by its tick, earliest first: a relay with many crowded documents
    /// finds the next one due without a scan.
    order: BTreeSet<(Instant, DocId)>,
}

impl PresenceBatches {
    /// When [`Hub::flush_presence`] must run next, if anything waits.
    pub(super) fn due(&self) -> Option<Instant> {
        self.order.first().map(|(due, _)| *due)
    }

    /// Keeps `frame` as `conn`'s latest state in `doc`, replacing the one it sent earlier in
    /// this tick. A document's first frame since its last tick sets the next one, `tick` from
    /// `now`.
    fn keep(
        &mut self,
        doc: DocId,
        conn: ConnId,
        frame: Arc<Vec<u8>>,
        now: Instant,
        tick: Duration,
    ) {
        let batch = self.pending.entry(doc).or_insert_with(|| {
            self.order.insert((now + tick, doc));
            Batch {
                due: now + tick,
                entries: Vec::new(),
            }
        });
        match batch.entries.iter_mut().find(|(c, _)| *c == conn) {
            Some(entry) => entry.1 = frame,
            None => batch.entries.push((conn, frame)),
        }
    }

    /// Drops what `conn` waits to send in `doc`.
    fn forget(&mut self, doc: DocId, conn: ConnId) {
        if let Some(batch) = self.pending.get_mut(&doc) {
            batch.entries.retain(|(c, _)| *c != conn);
            if batch.entries.is_empty() {
                self.order.remove(&(batch.due, doc));
                self.pending.remove(&doc);
            }
        }
    }

    /// Takes the batches whose tick has come by `now`; the others wait for theirs.
    fn take_due(&mut self, now: Instant) -> Vec<(DocId, Pending)> {
        let mut taken = Vec::new();
        while let Some(&(due, doc)) = self.order.first() {
            if due > now {
                break;
            }
            self.order.pop_first();
            if let Some(batch) = self.pending.remove(&doc) {
                taken.push((doc, batch.entries));
            }
        }
        taken
    }
}

impl super::HubConfig {
    /// How long a batched document with `subscribers` waits between ticks.
    pub fn presence_tick(&self, subscribers: usize) -> Duration {
        let grown = self
            .presence_batch_per_member
            .saturating_mul(u32::try_from(subscribers).unwrap_or(u32::MAX));
        grown
            .max(self.presence_batch_every)
            .min(self.presence_batch_max.max(self.presence_batch_every))
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
        let subscribers = self.subscribers.get(&doc).map_or(0, |s| s.len());
        let tick = self.cfg.presence_tick(subscribers);
        self.presence.keep(doc, conn, frame, Instant::now(), tick);
    }

    /// `conn` left `doc`: its pending state is not delivered.
    pub(super) fn forget_presence(&mut self, doc: DocId, conn: ConnId) {
        self.presence.forget(doc, conn);
    }

    /// Sends the pending states of every document whose tick has come: per document, one
    /// entry per subscriber holding the latest frame of every sender but itself. Every
    /// subscriber shares the same bytes; a sender's entry names the range of its own frame,
    /// which its writer leaves out.
    pub(super) fn flush_presence(&mut self) {
        for (doc, entries) in self.presence.take_due(Instant::now()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(b: u8) -> Arc<Vec<u8>> {
        Arc::new(vec![b])
    }

    #[test]
    fn each_document_goes_out_at_its_own_tick() {
        let t0 = Instant::now();
        let (small, crowd) = (DocId::from_bytes([1; 16]), DocId::from_bytes([2; 16]));
        let mut b = PresenceBatches::default();
        b.keep(crowd, ConnId(1), frame(1), t0, Duration::from_millis(250));
        b.keep(small, ConnId(2), frame(2), t0, Duration::from_millis(100));
        // A later frame replaces the sender's earlier one and keeps the tick already set.
        b.keep(
            small,
            ConnId(2),
            frame(3),
            t0 + Duration::from_millis(50),
            Duration::from_millis(100),
        );
        assert_eq!(b.due(), Some(t0 + Duration::from_millis(100)));
        assert!(b.take_due(t0 + Duration::from_millis(99)).is_empty());

        let out = b.take_due(t0 + Duration::from_millis(100));
        assert_eq!(out, vec![(small, vec![(ConnId(2), frame(3))])]);
        assert_eq!(b.due(), Some(t0 + Duration::from_millis(250)));

        let out = b.take_due(t0 + Duration::from_millis(250));
        assert_eq!(out, vec![(crowd, vec![(ConnId(1), frame(1))])]);
        assert_eq!(b.due(), None);
    }

    #[test]
    fn a_forgotten_sender_leaves_nothing_due() {
        let t0 = Instant::now();
        let doc = DocId::from_bytes([3; 16]);
        let mut b = PresenceBatches::default();
        b.keep(doc, ConnId(1), frame(1), t0, Duration::from_millis(100));
        b.forget(doc, ConnId(1));
        assert!(b.take_due(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(b.due(), None);
    }

    #[test]
    fn the_tick_grows_with_the_crowd_between_its_bounds() {
        let cfg = super::super::HubConfig::default();
        assert_eq!(cfg.presence_tick(32), cfg.presence_batch_every);
        assert_eq!(cfg.presence_tick(1_000), Duration::from_millis(250));
        assert_eq!(cfg.presence_tick(1_000_000), cfg.presence_batch_max);
        let floor = super::super::HubConfig {
            presence_batch_max: Duration::ZERO,
            ..cfg
        };
        assert_eq!(floor.presence_tick(1_000_000), floor.presence_batch_every);
    }
}
