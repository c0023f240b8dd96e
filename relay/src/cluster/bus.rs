//! Presence and ephemeral messages between the relays of a cluster, never stored: each relay
//! publishes its members' `Presence` and `Ephemeral` messages with `NOTIFY weft_ephemeral`
//! (best effort, like the messages themselves), and the follower's connection, which also
//! `LISTEN`s on that channel, hands the other relays' to its hub.
//!
//! A payload starts with the speaker, the relay's name and a random number of its process
//! (so a restarted relay is a new speaker), then one of:
//! - `BASE64`: a message as a frame. A NOTIFY payload holds under 8,000 bytes, so a message
//!   whose frame is over [`MAX_FRAME`] stays on its relay;
//! - `!alive`: sent every [`ALIVE_EVERY`]; the hub forgets the presence of members of a
//!   speaker it has not heard for [`SILENT_AFTER`] (a relay that died announces no one's
//!   leaving);
//! - `!ticket ID UNTIL`: a WebSocket ticket redeemed there (`ws/tickets.rs`), good until
//!   UNTIL (Unix ms), so no other relay lets it in again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::sync::mpsc;
use weft_core::wire::{self, Message};

use crate::checkpoint::{Chain, PgConn, PgTarget};
use crate::metrics::Metrics;
use crate::ws::TICKET_ID_LEN;

/// The channel presence travels on.
pub(super) const CHANNEL: &str = "weft_ephemeral";

/// Largest frame sent between relays (its base64 and the relay's name fit a NOTIFY payload).
const MAX_FRAME: usize = 5_600;

/// Messages waiting to be published at most (more are dropped: ephemeral).
const MAX_QUEUED: usize = 4_096;

/// How often a relay says it is alive.
pub(crate) const ALIVE_EVERY: Duration = Duration::from_secs(2);
/// A speaker not heard for this long is taken for gone.
pub(crate) const SILENT_AFTER: Duration = Duration::from_secs(7);

/// What another relay said.
#[derive(Debug, PartialEq)]
pub(super) enum Heard {
    /// A member's `Presence` or `Ephemeral` message.
    Message(Message),
    /// It is alive.
    Alive,
    /// It let a WebSocket ticket in.
    TicketUsed {
        /// The ticket's id.
        id: [u8; TICKET_ID_LEN],
        /// The end of the ticket's life (Unix ms).
        until: u64,
    },
}

/// What the hub publishes to.
#[derive(Clone, Debug)]
pub(crate) struct Bus {
    relay: Arc<str>,
    tx: mpsc::Sender<String>,
}

impl Bus {
    /// Publishes `msg` (a `Presence` or `Ephemeral`) to the other relays, if it fits.
    pub(crate) fn publish(&self, msg: &Message) {
        let Ok(frame) = wire::frame(msg, MAX_FRAME) else {
            return;
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(frame);
        let _ = self.tx.try_send(format!("{} {b64}", self.relay));
    }

    /// Tells the other relays that ticket `id` (good until `until`, Unix ms) was redeemed here.
    pub(crate) fn ticket_used(&self, id: &[u8; TICKET_ID_LEN], until: u64) {
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id);
        let _ = self
            .tx
            .try_send(format!("{} !ticket {id} {until}", self.relay));
    }
}

/// The bus of speaker `speaker` and the task that publishes for it (ends once every [`Bus`] is
/// dropped).
pub(super) fn start(
    target: PgTarget,
    speaker: &str,
    metrics: Arc<Metrics>,
) -> (Bus, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(MAX_QUEUED);
    let alive = format!("{speaker} !alive");
    let task = tokio::spawn(publish_loop(target, rx, alive, metrics));
    (
        Bus {
            relay: speaker.into(),
            tx,
        },
        task,
    )
}

async fn publish_loop(
    target: PgTarget,
    mut rx: mpsc::Receiver<String>,
    alive: String,
    metrics: Arc<Metrics>,
) {
    let mut conn: Option<PgConn> = None;
    let mut heartbeat = tokio::time::interval(ALIVE_EVERY);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
            _ = heartbeat.tick() => alive.clone(),
        };
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if conn.as_ref().is_none_or(PgConn::is_closed) {
            match PgConn::connect(&target, Duration::from_secs(5)).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    // Dropped: presence is best effort, and the next message tries again.
                    tracing::debug!(error = %Chain(&e), "cannot publish presence to the cluster");
                    continue;
                }
            }
        }
        let Some(c) = conn.as_ref() else { continue };
        let sent = c
            .client
            .execute(
                "select pg_notify($1, p) from unnest($2::text[]) as p",
                &[&CHANNEL, &batch],
            )
            .await;
        match sent {
            Ok(_) => Metrics::add(&metrics.cluster_ephemeral_out, batch.len() as u64),
            Err(e) => {
                tracing::debug!(error = %Chain(&e), "publishing presence to the cluster failed");
                conn = None;
            }
        }
    }
}

/// Who published `payload` and what it said, unless it is `me` or the payload is not one of
/// the forms above (or its message is not a presence or ephemeral one).
pub(super) fn decode(payload: &str, me: &str) -> Option<(Arc<str>, Heard)> {
    let (speaker, said) = payload.split_once(' ')?;
    if speaker == me {
        return None;
    }
    let heard = match said.split_once(' ') {
        None if said == "!alive" => Heard::Alive,
        Some(("!ticket", rest)) => {
            let (id, until) = rest.split_once(' ')?;
            let id = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(id)
                .ok()?
                .try_into()
                .ok()?;
            let until = until.parse().ok()?;
            Heard::TicketUsed { id, until }
        }
        Some(_) => return None,
        None => {
            let frame = base64::engine::general_purpose::STANDARD
                .decode(said)
                .ok()?;
            let (msg, _) = wire::decode_frame(&frame, MAX_FRAME).ok()??;
            if !matches!(msg, Message::Presence { .. } | Message::Ephemeral { .. }) {
                return None;
            }
            Heard::Message(msg)
        }
    };
    Some((speaker.into(), heard))
}

/// Counts a presence message received from another relay.
pub(super) fn received(metrics: &Metrics) {
    metrics.cluster_ephemeral_in.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::{DeviceId, DocId};

    #[test]
    fn a_message_crosses_and_its_own_or_garbage_does_not() {
        let msg = Message::Presence {
            doc: DocId::from_bytes([3; 16]),
            user: "alice".into(),
            device: DeviceId::from_bytes([4; 32]),
            online: true,
        };
        let frame = wire::frame(&msg, MAX_FRAME).unwrap();
        let payload = format!(
            "a {}",
            base64::engine::general_purpose::STANDARD.encode(frame)
        );
        assert!(payload.len() < 8_000);
        assert!(matches!(
            decode(&payload, "b"),
            Some((from, Heard::Message(Message::Presence { .. }))) if &*from == "a"
        ));
        assert!(decode(&payload, "a").is_none());
        assert!(decode("b !!!", "a").is_none());
        assert!(decode("nospace", "a").is_none());
        let other = Message::Unsubscribe {
            doc: DocId::from_bytes([3; 16]),
        };
        let frame = wire::frame(&other, MAX_FRAME).unwrap();
        let payload = format!(
            "b {}",
            base64::engine::general_purpose::STANDARD.encode(frame)
        );
        assert!(decode(&payload, "a").is_none(), "only presence crosses");

        assert_eq!(decode("b !alive", "a").map(|(_, h)| h), Some(Heard::Alive));
        assert!(decode("a !alive", "a").is_none());
        let (tx, mut rx) = mpsc::channel(4);
        let bus = Bus {
            relay: "b#1".into(),
            tx,
        };
        bus.ticket_used(&[9; TICKET_ID_LEN], 77);
        let payload = rx.try_recv().unwrap();
        assert_eq!(
            decode(&payload, "a").map(|(_, h)| h),
            Some(Heard::TicketUsed {
                id: [9; TICKET_ID_LEN],
                until: 77
            })
        );
        assert!(decode("b !ticket AAAA 77", "a").is_none(), "a short id");
        assert!(decode("b !ticket x", "a").is_none());
        assert!(decode("b !other thing", "a").is_none());
    }
}
