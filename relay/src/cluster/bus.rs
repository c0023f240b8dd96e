//! Presence and ephemeral messages between the relays of a cluster, never stored: each relay
//! publishes its members' `Presence` and `Ephemeral` messages with `NOTIFY weft_ephemeral`
//! (best effort, like the messages themselves), and the follower's connection, which also
//! `LISTEN`s on that channel, hands the other relays' to its hub.
//!
//! A payload is `RELAY BASE64`: the relay's name and the message as a frame. A NOTIFY payload
//! holds under 8,000 bytes, so a message whose frame is over [`MAX_FRAME`] stays on its relay.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::sync::mpsc;
use weft_core::wire::{self, Message};

use crate::checkpoint::{Chain, PgConn, PgTarget};
use crate::metrics::Metrics;

/// The channel presence travels on.
pub(super) const CHANNEL: &str = "weft_ephemeral";

/// Largest frame sent between relays (its base64 and the relay's name fit a NOTIFY payload).
const MAX_FRAME: usize = 5_600;

/// Messages waiting to be published at most (more are dropped: ephemeral).
const MAX_QUEUED: usize = 4_096;

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
}

/// The bus and the task that publishes for it (ends once every [`Bus`] is dropped).
pub(super) fn start(
    target: PgTarget,
    relay: &str,
    metrics: Arc<Metrics>,
) -> (Bus, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(MAX_QUEUED);
    let task = tokio::spawn(publish_loop(target, rx, metrics));
    (
        Bus {
            relay: relay.into(),
            tx,
        },
        task,
    )
}

async fn publish_loop(target: PgTarget, mut rx: mpsc::Receiver<String>, metrics: Arc<Metrics>) {
    let mut conn: Option<PgConn> = None;
    while let Some(first) = rx.recv().await {
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

/// The message in a payload another relay published, or `None` (this relay's own, or not a
/// presence or ephemeral message).
pub(super) fn decode(payload: &str, me: &str) -> Option<Message> {
    let (relay, b64) = payload.split_once(' ')?;
    if relay == me {
        return None;
    }
    let frame = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let (msg, _) = wire::decode_frame(&frame, MAX_FRAME).ok()??;
    matches!(msg, Message::Presence { .. } | Message::Ephemeral { .. }).then_some(msg)
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
            Some(Message::Presence { .. })
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
    }
}
