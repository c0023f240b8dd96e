//! Devices joining one large document at once: each gets the whole document as one snapshot,
//! the same bytes for all, queued as one buffer shared by their connections rather than a
//! copy each (what keeps the relay's memory near one snapshot however many join).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::hub::{decode_frames, open_store, spawn_hub, HubConn};
use common::{now, open_subscribed, RELAY};
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{ChangeHash, ROOT};
use weft_core::engine::{Engine, EngineConfig, Output};
use weft_core::wire::{self, Message};
use weft_core::{DocId, Document, Role};
use weft_relay::{Claims, HubConfig, HubEvent, Outbound};

/// A device's engine beside its connection to the hub.
struct Device {
    hub: HubConn,
    engine: Engine,
}

impl Device {
    /// The next entry of its queue, whatever it is.
    async fn entry(&mut self) -> Outbound {
        tokio::time::timeout(Duration::from_secs(10), self.hub.inbox.recv())
            .await
            .expect("relay went silent")
            .expect("the hub dropped the connection")
    }

    /// Sends the engine's messages to the hub, completing its writes and loads at once.
    async fn flush(&mut self) {
        while let Some(o) = self.engine.poll_output() {
            match o {
                Output::Send { msg, .. } => self.hub.send(msg).await,
                Output::Persist { id, .. } => self.engine.persisted(id),
                Output::Load { doc } => self.engine.loaded(doc, None),
                _ => {}
            }
        }
    }

    /// Hands the engine every message of `entry`.
    async fn take(&mut self, entry: &Outbound, doc: DocId) {
        for m in decode_frames(&entry.bytes().unwrap_or_default()) {
            match m {
                Message::Subscribed { doc: d, role } if d == doc => {
                    open_subscribed(&mut self.engine, doc, role);
                }
                m @ (Message::Sync { .. } | Message::Changes { .. } | Message::Ack { .. }) => {
                    self.engine.handle(RELAY, m).unwrap();
                }
                _ => {}
            }
        }
        self.flush().await;
    }
}

/// Text deflate cannot shrink much, so the saved document is about as large as the text.
fn noise(len: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

async fn device(events: &tokio::sync::mpsc::Sender<HubEvent>, id: u64, claims: Claims) -> Device {
    let hub = HubConn::open(events, id, claims, 256).await;
    let mut d = Device {
        hub,
        engine: Engine::new(EngineConfig::device()),
    };
    d.engine.add_conn(RELAY);
    let welcome = d.entry().await;
    assert!(matches!(
        decode_frames(&welcome.bytes().unwrap_or_default()).first(),
        Some(Message::Welcome { .. })
    ));
    d
}

fn sorted(heads: Option<Vec<ChangeHash>>) -> Vec<ChangeHash> {
    let mut heads = heads.expect("the document is open");
    heads.sort_unstable();
    heads
}

#[tokio::test]
async fn joiners_at_the_same_heads_get_one_shared_snapshot_and_all_sync() {
    let dir = tempfile::tempdir().unwrap();
    let events = spawn_hub(open_store(dir.path()), HubConfig::default());
    let doc = DocId::from_bytes([61; 16]);

    // The owner uploads 300 KB of text (about 180 KB saved).
    let mut owner = device(
        &events,
        1,
        Claims::new("owner", now(), 3600).with_create(true),
    )
    .await;
    owner.engine.create(doc, Document::new());
    for i in 0..3 {
        owner
            .engine
            .change(doc, |am| {
                let mut tx = am.transaction();
                tx.put(ROOT, format!("part {i}"), noise(100_000)).unwrap();
                tx.commit();
            })
            .unwrap();
    }
    owner.flush().await;
    owner.hub.send(Message::Subscribe { doc }).await;
    while !owner.engine.is_synced(RELAY, doc) {
        let e = owner.entry().await;
        owner.take(&e, doc).await;
    }
    let heads = sorted(owner.engine.heads(doc));

    // Four devices holding nothing subscribe and say so before any of them takes an answer.
    let mut joiners = Vec::new();
    for id in 2..6 {
        let claims = Claims::new(format!("reader{id}"), now(), 3600).with_doc(doc, Role::ReadWrite);
        let mut j = device(&events, id, claims).await;
        j.engine.load(doc);
        j.flush().await;
        j.hub.send(Message::Subscribe { doc }).await;
        joiners.push(j);
    }
    // Each one's queue, up to and with the entry carrying the snapshot (the answer to its
    // first sync message, sent as soon as it is subscribed).
    let mut received: Vec<Vec<Outbound>> = Vec::new();
    let mut snapshots: Vec<(Bytes, Vec<u8>)> = Vec::new();
    for j in &mut joiners {
        let mut entries = Vec::new();
        loop {
            let e = j.entry().await;
            let subscribed = decode_frames(&e.bytes().unwrap_or_default())
                .iter()
                .any(|m| matches!(m, Message::Subscribed { .. }));
            if subscribed {
                j.take(&e, doc).await;
                continue;
            }
            if let Outbound::Chunks(chunks) = &e {
                let shared = chunks
                    .iter()
                    .max_by_key(|c| c.len())
                    .cloned()
                    .expect("a shared entry has parts");
                snapshots.push((shared, e.bytes().unwrap_or_default().into_owned()));
                entries.push(e);
                break;
            }
            entries.push(e);
        }
        received.push(entries);
    }
    assert_eq!(snapshots.len(), 4, "every joiner got the document whole");
    let (first, first_bytes) = &snapshots[0];
    assert!(first.len() > 150_000, "the snapshot is the whole document");
    for (shared, bytes) in &snapshots[1..] {
        assert_eq!(
            bytes, first_bytes,
            "the joiners got different snapshot bytes"
        );
        assert_eq!(
            (shared.as_ptr(), shared.len()),
            (first.as_ptr(), first.len()),
            "a joiner's snapshot is a copy, not the shared buffer"
        );
    }
    let frames = decode_frames(first_bytes);
    let Some(Message::Sync { data, .. }) = frames.last() else {
        panic!("the shared entry ends with a Sync frame: {frames:?}");
    };
    let msg = weft_core::automerge::sync::Message::decode(data).unwrap();
    assert_eq!(sorted(Some(msg.heads)), heads);
    assert!(wire::decode_frame(first_bytes, wire::DEFAULT_MAX_FRAME)
        .unwrap()
        .is_some());

    // Then each takes what it received and syncs.
    for (j, entries) in joiners.iter_mut().zip(received) {
        for e in &entries {
            j.take(e, doc).await;
        }
        while !j.engine.is_synced(RELAY, doc) {
            let e = j.entry().await;
            j.take(&e, doc).await;
        }
        assert_eq!(sorted(j.engine.heads(doc)), heads);
    }
}

/// A newcomer to many large documents at once: each one's whole document is saved off the
/// hub's thread, one at a time here (`max_loads` 1), the rest waiting, and past the bound of
/// waiting saves made on the hub's thread; the device gets every document either way.
#[tokio::test]
async fn a_newcomer_to_many_large_documents_gets_every_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = HubConfig {
        max_loads: 1,
        ..HubConfig::default()
    };
    let events = spawn_hub(open_store(dir.path()), cfg);
    let docs: Vec<DocId> = (0..12u8).map(|i| DocId::from_bytes([70 + i; 16])).collect();
    let mut owner = device(
        &events,
        1,
        Claims::new("owner", now(), 3600).with_create(true),
    )
    .await;
    for (i, doc) in docs.iter().enumerate() {
        owner.engine.create(*doc, Document::new());
        owner
            .engine
            .change(*doc, |am| {
                let mut tx = am.transaction();
                tx.put(ROOT, "body", noise(200_000 + i)).unwrap();
                tx.commit();
            })
            .unwrap();
        owner.flush().await;
        owner.hub.send(Message::Subscribe { doc: *doc }).await;
        while !owner.engine.is_synced(RELAY, *doc) {
            let e = owner.entry().await;
            owner.take(&e, *doc).await;
        }
    }

    let mut claims = Claims::new("reader", now(), 3600);
    for doc in &docs {
        claims = claims.with_doc(*doc, Role::ReadWrite);
    }
    let mut reader = device(&events, 2, claims).await;
    for doc in &docs {
        reader.engine.load(*doc);
        reader.flush().await;
        reader.hub.send(Message::Subscribe { doc: *doc }).await;
    }
    while !docs.iter().all(|d| reader.engine.is_synced(RELAY, *d)) {
        let e = reader.entry().await;
        for m in decode_frames(&e.bytes().unwrap_or_default()) {
            match m {
                Message::Subscribed { doc, role } => {
                    open_subscribed(&mut reader.engine, doc, role);
                }
                m @ (Message::Sync { .. } | Message::Changes { .. } | Message::Ack { .. }) => {
                    reader.engine.handle(RELAY, m).unwrap();
                }
                _ => {}
            }
        }
        reader.flush().await;
    }
    for doc in &docs {
        assert_eq!(
            sorted(reader.engine.heads(*doc)),
            sorted(owner.engine.heads(*doc))
        );
    }
}
