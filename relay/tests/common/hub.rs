//! The hub in process, without the binary or QUIC: real redb in a directory of its own,
//! tokens verified against a fixed test secret, events over a channel.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;
use weft_core::engine::ConnId;
use weft_core::store::{GroupCommit, KvStore, RedbStore};
use weft_core::wire::{self, Message};
use weft_core::DeviceId;
use weft_relay::{Claims, Hub, HubConfig, HubEvent, JwtSecret, Outbound, Verifier};

/// The secret the in-process hub verifies tokens with.
pub fn test_secret() -> JwtSecret {
    JwtSecret::new(vec![7; 32]).unwrap()
}

/// The relay's redb store in `dir`.
pub fn open_store(dir: &Path) -> Arc<dyn KvStore> {
    Arc::new(
        RedbStore::open_with_tables(
            dir.join("relay.redb"),
            &weft_relay::TABLES,
            Default::default(),
        )
        .unwrap(),
    )
}

/// Runs a hub on `kv` with `config` on the current runtime; the sender of its events.
pub fn spawn_hub(kv: Arc<dyn KvStore>, config: HubConfig) -> mpsc::Sender<HubEvent> {
    let group = Arc::new(GroupCommit::new(kv).unwrap());
    let secret = test_secret();
    let hub = Hub::new(config, group, Verifier::new(&secret), Default::default());
    let (events, rx) = mpsc::channel(1024);
    tokio::spawn(hub.run(rx));
    events
}

/// One device's connection to the in-process hub: its events in, its outbound queue out.
pub struct HubConn {
    pub conn: ConnId,
    pub events: mpsc::Sender<HubEvent>,
    pub inbox: mpsc::Receiver<Outbound>,
    /// Messages decoded from an inbox entry and not read yet (see [`decode_frames`]).
    pub pending: VecDeque<Message>,
}

/// Every message of one outbound entry: the hub queues all of a connection's frames from one
/// pass of its loop as a single entry, so an entry holds one or more whole frames.
pub fn decode_frames(buf: &[u8]) -> Vec<Message> {
    decode_frames_with_bodies(buf)
        .into_iter()
        .map(|(m, _)| m)
        .collect()
}

/// Like [`decode_frames`], with the first byte of each frame's body (which tells a compact
/// body from a MessagePack one).
pub fn decode_frames_with_bodies(mut buf: &[u8]) -> Vec<(Message, u8)> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (msg, used) = wire::decode_frame(buf, usize::MAX)
            .unwrap()
            .expect("an outbound entry holds whole frames");
        out.push((msg, buf[wire::FRAME_HEADER_LEN]));
        buf = &buf[used..];
    }
    out
}

impl HubConn {
    /// Opens connection `id` (device `[id; 32]`) with an outbound queue of `queue` frames;
    /// reads nothing yet.
    pub async fn open(
        events: &mpsc::Sender<HubEvent>,
        id: u64,
        claims: Claims,
        queue: usize,
    ) -> HubConn {
        Self::open_speaking(events, id, claims, queue, wire::PROTOCOL_VERSION).await
    }

    /// Like [`HubConn::open`], for a device that announced `protocol`.
    pub async fn open_speaking(
        events: &mpsc::Sender<HubEvent>,
        id: u64,
        claims: Claims,
        queue: usize,
        protocol: u16,
    ) -> HubConn {
        let (out, inbox) = mpsc::channel(queue);
        events
            .send(HubEvent::Open {
                conn: ConnId(id),
                device: DeviceId::from_bytes([id as u8; 32]),
                claims,
                protocol,
                out,
            })
            .await
            .unwrap();
        HubConn {
            conn: ConnId(id),
            events: events.clone(),
            inbox,
            pending: VecDeque::new(),
        }
    }

    /// Sends `msg` as a frame from this connection.
    pub async fn send(&self, msg: Message) {
        self.events
            .send(HubEvent::Frame {
                conn: self.conn,
                msg,
            })
            .await
            .unwrap();
    }
}
