//! `wire-bytes`: bytes per change on the live path against Automerge's sync protocol.

use std::sync::Arc;

use serde_json::{json, Value};
use weft_core::wire::{self, Encoding, Message};
use weft_core::DocId;

use crate::chain::Chain;
use crate::fanout;
use crate::relay::Relay;

pub struct Figures {
    pub raw_change: f64,
    /// weft frames per change between the writer and the relay (`Changes` up, `Ack` down).
    pub live_writer: f64,
    /// weft frames per change between the relay and one caught-up subscriber.
    pub live_subscriber: f64,
    /// The same frames with MessagePack bodies (what a protocol 1 peer is sent).
    pub live_named: f64,
    /// UDP bytes (QUIC headers, encryption, acknowledgements) per change, same two links.
    pub udp_writer: f64,
    pub udp_subscriber: f64,
    pub sync_messages: f64,
    pub sync_bytes: f64,
    pub sync_frames: f64,
    pub changes: usize,
}

pub async fn run(relay: &Relay, changes: usize, chain: Arc<Chain>) -> anyhow::Result<Figures> {
    let n = changes.min(chain.len());
    let doc = DocId::from_bytes([0; 16]);
    let mut raw = 0usize;
    let (mut frames, mut named) = (0usize, 0usize);
    for (r, h) in chain.raw.iter().zip(&chain.hashes).take(n) {
        raw += r.len();
        let up = Message::Changes {
            doc,
            changes: vec![bytes::Bytes::from(r.clone())],
        };
        let ack = Message::Ack {
            doc,
            heads: vec![*h],
        };
        for (encoding, total) in [
            (Encoding::Compact, &mut frames),
            (Encoding::Named, &mut named),
        ] {
            *total += wire::frame_as(&up, encoding, wire::DEFAULT_MAX_FRAME)?.len()
                + wire::frame_as(&ack, encoding, wire::DEFAULT_MAX_FRAME)?.len();
        }
    }
    let (sync_messages, sync_bytes) = fanout::sync_protocol_bytes(n, &chain)?;
    // Sync messages carried in weft `Sync` frames: the same envelope the live path pays.
    let envelope = wire::frame(
        &Message::Sync {
            doc,
            reset: false,
            data: Default::default(),
        },
        wire::DEFAULT_MAX_FRAME,
    )?
    .len() as f64;
    let measured = fanout::run(relay, 2, 10, n, chain.clone()).await?;
    let per = |b: u64| b as f64 / n as f64;
    Ok(Figures {
        raw_change: raw as f64 / n as f64,
        live_writer: frames as f64 / n as f64,
        live_subscriber: frames as f64 / n as f64,
        live_named: named as f64 / n as f64,
        udp_writer: per(measured.writer_udp_bytes),
        udp_subscriber: per(measured.receivers_udp_bytes),
        sync_messages,
        sync_bytes,
        sync_frames: sync_bytes + sync_messages * envelope,
        changes: n,
    })
}

impl Figures {
    pub fn json(&self) -> Value {
        json!({
            "workload": "wire-bytes",
            "changes": self.changes,
            "change": "one chat message appended to a conversation (Automerge 0.12 raw change)",
            "raw_change_bytes": round1(self.raw_change),
            "live_frame_bytes_per_change_writer_link": round1(self.live_writer),
            "live_frame_bytes_per_change_per_subscriber": round1(self.live_subscriber),
            "live_frame_bytes_per_change_protocol_1": round1(self.live_named),
            "live_frame_bytes_vs_raw_change": round2(self.live_subscriber / self.raw_change),
            "live_udp_bytes_vs_raw_change": round2(self.udp_subscriber / self.raw_change),
            "target_vs_raw_change": 1.5,
            "live_udp_bytes_per_change_writer_link": round1(self.udp_writer),
            "live_udp_bytes_per_change_per_subscriber": round1(self.udp_subscriber),
            "baseline": {
                "name": "automerge-sync-protocol",
                "description": "Automerge 0.12 sync messages to bring a peer that is in sync up \
                    to date with the same change, one change at a time (both directions, \
                    until neither side has anything to send), per pair of peers",
                "messages_per_change": round1(self.sync_messages),
                "message_bytes_per_change": round1(self.sync_bytes),
                "frame_bytes_per_change": round1(self.sync_frames),
            },
        })
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
