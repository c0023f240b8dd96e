//! The hub with real redb, driven by device engines over in-process channels (the QUIC
//! transport is tested on its own): what devices see when they sync through the relay.

mod common;

use std::time::Duration;

use common::hub::{
    decode_frames, decode_frames_with_bodies, open_store, spawn_hub, test_secret, HubConn,
};
use common::{now, open_subscribed, RELAY};
use tokio::sync::mpsc;
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{ReadDoc, ROOT};
use weft_core::engine::{ConnId, Engine, EngineConfig, Output};
use weft_core::wire::{ErrorCode, Message};
use weft_core::{DeviceId, DocId, Document, Role};
use weft_relay::{Claims, HubConfig, HubEvent, JwtSecret, Outbound};

struct Device {
    hub: HubConn,
    engine: Engine,
    errors: Vec<(ErrorCode, Option<DocId>)>,
    presence: Vec<(String, bool)>,
    ephemeral: Vec<Vec<u8>>,
    closed: bool,
    /// The first body byte of every `Changes` and `Ack` frame received.
    live_bodies: Vec<u8>,
}

crate::extends!(Device, hub: HubConn);

impl Device {
    async fn connect(events: &mpsc::Sender<HubEvent>, id: u64, claims: Claims) -> Device {
        Self::connect_speaking(events, id, claims, weft_core::wire::PROTOCOL_VERSION).await
    }

    async fn connect_speaking(
        events: &mpsc::Sender<HubEvent>,
        id: u64,
        claims: Claims,
        protocol: u16,
    ) -> Device {
        let hub = HubConn::open_speaking(events, id, claims, 256, protocol).await;
        let mut d = Device {
            hub,
            engine: Engine::new(EngineConfig::device()),
            errors: Vec::new(),
            presence: Vec::new(),
            ephemeral: Vec::new(),
            closed: false,
            live_bodies: Vec::new(),
        };
        d.engine.add_conn(RELAY);
        match d.next().await {
            Some(Message::Welcome { .. }) => {}
            other => panic!("expected welcome, got {other:?}"),
        }
        d
    }

    async fn next(&mut self) -> Option<Message> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        match tokio::time::timeout(Duration::from_secs(10), self.inbox.recv())
            .await
            .expect("relay went silent")
        {
            Some(
                out @ (Outbound::Frame(_)
                | Outbound::Ephemeral(_)
                | Outbound::EphemeralBatch { .. }
                | Outbound::Chunks(_)),
            ) => {
                for (m, body) in decode_frames_with_bodies(&out.bytes().unwrap_or_default()) {
                    if matches!(m, Message::Changes { .. } | Message::Ack { .. }) {
                        self.live_bodies.push(body);
                    }
                    self.pending.push_back(m);
                }
                self.pending.pop_front()
            }
            Some(Outbound::Close { code, .. }) => {
                self.errors.push((code, None));
                self.closed = true;
                None
            }
            None => None,
        }
    }

    fn new_doc(&mut self, doc: DocId) {
        self.engine.create(doc, Document::new());
    }

    fn write(&mut self, doc: DocId, key: &str) {
        let (_, id) = self
            .engine
            .change(doc, |am| {
                let mut tx = am.transaction();
                tx.put(ROOT, key, true).unwrap();
                tx.commit();
            })
            .unwrap();
        let _ = id;
    }

    /// Flushes engine outputs to the relay (persisting at once).
    async fn flush(&mut self) {
        loop {
            let mut sent = false;
            while let Some(o) = self.engine.poll_output() {
                match o {
                    Output::Send { msg, .. } => {
                        self.send(msg).await;
                        sent = true;
                    }
                    Output::Persist { id, .. } => self.engine.persisted(id),
                    Output::Load { doc } => self.engine.loaded(doc, None),
                    _ => {}
                }
            }
            if !sent {
                return;
            }
        }
    }

    /// Handles one message from the relay.
    async fn handle(&mut self, msg: Message) {
        match msg {
            Message::Subscribed { doc, role } => {
                open_subscribed(&mut self.engine, doc, role);
            }
            Message::Error { code, doc, .. } => self.errors.push((code, doc)),
            Message::Presence { user, online, .. } => self.presence.push((user, online)),
            Message::Ephemeral { data, .. } => self.ephemeral.push(data),
            m @ (Message::Sync { .. } | Message::Changes { .. } | Message::Ack { .. }) => {
                self.engine.handle(RELAY, m).unwrap();
            }
            _ => {}
        }
        self.flush().await;
    }

    /// Processes relay messages until `done` holds (bounded by the relay going silent).
    async fn until(&mut self, mut done: impl FnMut(&mut Device) -> bool) {
        self.flush().await;
        for _ in 0..10_000 {
            if done(self) {
                return;
            }
            match self.next().await {
                Some(m) => self.handle(m).await,
                None => return,
            }
        }
        panic!("condition never held");
    }

    fn keys(&mut self, doc: DocId) -> Vec<String> {
        self.engine
            .read(doc, |d| d.automerge().keys(ROOT).collect())
            .unwrap_or_default()
    }
}

struct Relay {
    events: mpsc::Sender<HubEvent>,
    secret: JwtSecret,
    _dir: tempfile::TempDir,
}

fn start_relay() -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let events = spawn_hub(open_store(dir.path()), HubConfig::default());
    Relay {
        events,
        secret: test_secret(),
        _dir: dir,
    }
}

#[tokio::test]
async fn alice_shares_through_a_token_grant_and_bob_reads_but_cannot_write() {
    let relay = start_relay();
    let doc = DocId::from_bytes([42; 16]);
    let _ = &relay.secret;

    let mut alice = Device::connect(
        &relay.events,
        1,
        Claims::new("alice", now(), 3600).with_create(true),
    )
    .await;
    alice.new_doc(doc);
    for i in 0..3 {
        alice.write(doc, &format!("alice-{i}"));
    }
    alice.send(Message::Subscribe { doc }).await;
    alice.until(|d| d.engine.is_synced(RELAY, doc)).await;

    let bob_claims = Claims::new("bob", now(), 3600).with_doc(doc, Role::ReadOnly);
    let mut bob = Device::connect(&relay.events, 2, bob_claims).await;
    bob.engine.load(doc);
    bob.flush().await;
    bob.send(Message::Subscribe { doc }).await;
    bob.until(|d| d.keys(doc).len() == 3).await;
    assert_eq!(bob.keys(doc), alice.keys(doc));

    // Bob writes anyway: the relay rejects it and Alice never sees it.
    bob.write(doc, "bob-sneaky");
    let raw = bob
        .engine
        .read(doc, |d| {
            d.automerge()
                .get_last_local_change()
                .unwrap()
                .raw_bytes()
                .to_vec()
        })
        .unwrap();
    bob.send(Message::Changes {
        doc,
        changes: vec![bytes::Bytes::from(raw)],
    })
    .await;
    bob.until(|d| d.errors.iter().any(|(c, _)| *c == ErrorCode::READ_ONLY))
        .await;

    alice.write(doc, "alice-3");
    alice.flush().await;
    bob.until(|d| d.keys(doc).contains(&"alice-3".to_string()))
        .await;
    alice.until(|d| d.engine.is_synced(RELAY, doc)).await;
    assert!(!alice.keys(doc).contains(&"bob-sneaky".to_string()));
    assert!(alice.presence.contains(&("bob".to_string(), true)));

    // Ephemeral messages cross, never stored.
    bob.send(Message::Ephemeral {
        doc,
        user: None,
        device: None,
        data: b"typing".to_vec(),
    })
    .await;
    alice.until(|d| !d.ephemeral.is_empty()).await;
}

#[tokio::test]
async fn a_document_the_token_does_not_grant_is_refused_alike_whether_or_not_it_exists() {
    let relay = start_relay();
    let doc = DocId::from_bytes([43; 16]);
    let missing = DocId::from_bytes([44; 16]);
    let mut alice = Device::connect(
        &relay.events,
        1,
        Claims::new("alice", now(), 3600).with_create(true),
    )
    .await;
    alice.new_doc(doc);
    alice.write(doc, "secret");
    alice.send(Message::Subscribe { doc }).await;
    alice.until(|d| d.engine.is_synced(RELAY, doc)).await;

    let mut carol = Device::connect(&relay.events, 3, Claims::new("carol", now(), 3600)).await;
    carol.send(Message::Subscribe { doc }).await;
    carol.send(Message::Subscribe { doc: missing }).await;
    carol.until(|d| d.errors.len() == 2).await;
    assert_eq!(
        carol.errors,
        vec![
            (ErrorCode::FORBIDDEN, Some(doc)),
            (ErrorCode::FORBIDDEN, Some(missing))
        ]
    );
    // Her connection is still usable.
    assert!(!carol.closed);

    // Sync for a document she is not subscribed to is refused too, and garbage closes her.
    carol
        .send(Message::Sync {
            doc,
            reset: false,
            data: vec![1, 2, 3].into(),
        })
        .await;
    carol.until(|d| d.errors.len() == 3).await;
    let other = DocId::from_bytes([45; 16]);
    let mut dave = Device::connect(
        &relay.events,
        4,
        Claims::new("dave", now(), 3600).with_create(true),
    )
    .await;
    dave.send(Message::Subscribe { doc: other }).await;
    dave.until(|d| d.engine.is_synced(RELAY, other)).await;
    dave.send(Message::Sync {
        doc: other,
        reset: false,
        data: vec![0xde, 0xad].into(),
    })
    .await;
    dave.until(|d| d.closed).await;
    assert_eq!(dave.errors.last(), Some(&(ErrorCode::MALFORMED, None)));
}

/// A connection whose queue is too full to take a `Subscribed` reply is closed rather than
/// left with a subscription it never heard of (sync frames for it would follow).
#[tokio::test]
async fn a_device_too_far_behind_for_a_reply_is_closed_not_left_inconsistent() {
    let relay = start_relay();
    let (tx, mut inbox) = mpsc::channel(4);
    relay
        .events
        .send(HubEvent::Open {
            conn: ConnId(9),
            device: DeviceId::from_bytes([9; 32]),
            claims: Claims::new("alice", now(), 3600).with_create(true),
            protocol: weft_core::wire::PROTOCOL_VERSION,
            out: tx,
        })
        .await
        .unwrap();
    for i in 0..64u8 {
        relay
            .events
            .send(HubEvent::Frame {
                conn: ConnId(9),
                msg: Message::Subscribe {
                    doc: DocId::from_bytes([i; 16]),
                },
            })
            .await
            .unwrap();
    }
    let mut subscribed = std::collections::HashSet::new();
    let mut closed = None;
    while let Ok(Some(out)) = tokio::time::timeout(Duration::from_secs(10), inbox.recv()).await {
        match out {
            Outbound::Frame(f) | Outbound::Ephemeral(f) => {
                for m in decode_frames(&f) {
                    match m {
                        Message::Subscribed { doc, .. } => {
                            subscribed.insert(doc);
                        }
                        m @ (Message::Sync { .. }
                        | Message::Changes { .. }
                        | Message::Ack { .. }) => {
                            let doc = m.doc().unwrap();
                            assert!(
                                subscribed.contains(&doc),
                                "sync for {doc} before its Subscribed"
                            );
                        }
                        _ => {}
                    }
                }
            }
            Outbound::EphemeralBatch { .. } | Outbound::Chunks(_) => {}
            Outbound::Close { code, .. } => {
                closed = Some(code);
                break;
            }
        }
    }
    assert_eq!(
        closed,
        Some(ErrorCode::RATE_LIMITED),
        "the connection was never closed"
    );
}

/// Loads queue behind `max_loads`: with one at a time, forty documents subscribed at once all
/// load (each waiting for the one before it) and sync, for their writer and a second device.
#[tokio::test]
async fn loads_beyond_max_loads_wait_their_turn_and_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let config = HubConfig {
        max_loads: 1,
        ..HubConfig::default()
    };
    let events = spawn_hub(open_store(dir.path()), config);
    let claims = || Claims::new("alice", now(), 3600).with_create(true);
    let docs: Vec<DocId> = (0..40u8).map(|i| DocId::from_bytes([i + 1; 16])).collect();

    let mut writer = Device::connect(&events, 1, claims()).await;
    for (i, doc) in docs.iter().enumerate() {
        writer.new_doc(*doc);
        writer.write(*doc, &format!("message-{i}"));
    }
    for doc in &docs {
        writer.send(Message::Subscribe { doc: *doc }).await;
    }
    writer
        .until(|d| docs.iter().all(|doc| d.engine.is_synced(RELAY, *doc)))
        .await;

    let mut reader = Device::connect(&events, 2, claims()).await;
    for doc in &docs {
        reader.engine.load(*doc);
    }
    reader.flush().await;
    for doc in &docs {
        reader.send(Message::Subscribe { doc: *doc }).await;
    }
    reader
        .until(|d| {
            docs.iter()
                .enumerate()
                .all(|(i, doc)| d.keys(*doc) == vec![format!("message-{i}")])
        })
        .await;
}

#[tokio::test]
async fn a_token_whose_exp_is_the_largest_number_survives_the_expiry_sweep() {
    let relay = start_relay();
    let doc = DocId::from_bytes([44; 16]);
    // Alice's issuer wrote the largest `exp` a token can carry.
    let mut forever = Claims::new("alice", now(), 3600).with_create(true);
    forever.exp = u64::MAX;
    let mut alice = Device::connect(&relay.events, 1, forever).await;
    // Bob's token expired long ago: the sweep closing his connection shows that it ran over
    // every connection, Alice's included, without overflowing.
    let mut bob = Device::connect(&relay.events, 2, Claims::new("bob", 0, 0)).await;
    while bob.next().await.is_some() {}
    assert_eq!(bob.errors, [(ErrorCode::UNAUTHENTICATED, None)]);

    // Alice is still served.
    alice.new_doc(doc);
    alice.write(doc, "still-here");
    alice.send(Message::Subscribe { doc }).await;
    alice.until(|d| d.engine.is_synced(RELAY, doc)).await;
    assert!(!alice.closed);
}

#[tokio::test]
async fn live_frames_are_compact_only_for_devices_that_announced_protocol_2() {
    let relay = start_relay();
    let doc = DocId::from_bytes([43; 16]);
    let claims = |user: &str| Claims::new(user, now(), 3600).with_doc(doc, Role::ReadWrite);
    let mut new = Device::connect_speaking(
        &relay.events,
        1,
        claims("alice").with_create(true),
        weft_core::wire::PROTOCOL_VERSION,
    )
    .await;
    let mut old = Device::connect_speaking(&relay.events, 2, claims("bob"), 1).await;
    new.new_doc(doc);
    new.write(doc, "first");
    new.send(Message::Subscribe { doc }).await;
    new.until(|d| d.engine.is_synced(RELAY, doc)).await;
    old.engine.load(doc);
    old.flush().await;
    old.send(Message::Subscribe { doc }).await;
    old.until(|d| d.engine.is_synced(RELAY, doc)).await;
    // Both live now: each one's change reaches the other as `Changes` and is acknowledged.
    for i in 0..3 {
        new.write(doc, &format!("alice-{i}"));
        old.write(doc, &format!("bob-{i}"));
        new.flush().await;
        old.flush().await;
    }
    new.until(|d| d.keys(doc).len() == 7).await;
    old.until(|d| d.keys(doc).len() == 7).await;
    new.until(|d| d.engine.is_synced(RELAY, doc)).await;
    old.until(|d| d.engine.is_synced(RELAY, doc)).await;
    assert!(!new.live_bodies.is_empty() && !old.live_bodies.is_empty());
    // A compact body starts with its tag (0x01, 0x02); MessagePack's named map with 0x81.
    assert!(
        new.live_bodies.iter().all(|b| *b == 0x01 || *b == 0x02),
        "{:?}",
        new.live_bodies
    );
    assert!(
        old.live_bodies.iter().all(|b| *b == 0x81),
        "{:?}",
        old.live_bodies
    );
}

#[tokio::test]
async fn in_a_crowded_document_statuses_are_batched_and_each_member_gets_the_last_one() {
    // Batching from three subscribers, so three members make a crowd.
    let dir = tempfile::tempdir().unwrap();
    let config = HubConfig {
        presence_batch_from: 3,
        presence_batch_every: Duration::from_millis(20),
        ..HubConfig::default()
    };
    let events = spawn_hub(open_store(dir.path()), config);
    let doc = DocId::from_bytes([45; 16]);
    let mut alice = Device::connect(
        &events,
        1,
        Claims::new("alice", now(), 3600).with_create(true),
    )
    .await;
    alice.new_doc(doc);
    alice.write(doc, "hello");
    alice.send(Message::Subscribe { doc }).await;
    alice.until(|d| d.engine.is_synced(RELAY, doc)).await;
    let mut members = Vec::new();
    for (id, user) in [(2, "bob"), (3, "carol")] {
        let claims = Claims::new(user, now(), 3600).with_doc(doc, Role::ReadWrite);
        let mut m = Device::connect(&events, id, claims).await;
        m.send(Message::Subscribe { doc }).await;
        m.until(|d| d.engine.is_synced(RELAY, doc)).await;
        members.push(m);
    }
    alice
        .until(|d| d.presence.iter().filter(|(_, online)| *online).count() >= 2)
        .await;

    // Alice changes her status three times in a row; Bob once.
    let statuses: [&[u8]; 3] = [b"away", b"busy", b"here"];
    for status in statuses {
        alice
            .send(Message::Ephemeral {
                doc,
                user: None,
                device: None,
                data: status.to_vec(),
            })
            .await;
    }
    members[0]
        .send(Message::Ephemeral {
            doc,
            user: None,
            device: None,
            data: b"bob: lunch".to_vec(),
        })
        .await;

    // Everyone else ends with Alice's last status; what arrived of the earlier ones arrived
    // in order, and nothing of hers came after it.
    for m in &mut members {
        m.until(|d| {
            let mut hers = d
                .ephemeral
                .iter()
                .filter(|e| statuses.contains(&e.as_slice()));
            hers.next_back().map(Vec::as_slice) == Some(b"here".as_slice())
        })
        .await;
        let seen: Vec<&[u8]> = m
            .ephemeral
            .iter()
            .map(Vec::as_slice)
            .filter(|e| statuses.contains(e))
            .collect();
        let mut order = statuses.iter();
        assert!(
            seen.iter().all(|s| order.any(|t| t == s)),
            "out of order: {seen:?}"
        );
        assert_eq!(seen.last(), Some(&b"here".as_slice()));
    }
    // Alice gets Bob's status, and never her own back.
    alice
        .until(|d| d.ephemeral.iter().any(|e| e == b"bob: lunch"))
        .await;
    assert!(alice
        .ephemeral
        .iter()
        .all(|e| !statuses.contains(&e.as_slice())));
    // Carol got Bob's too; Bob did not get his own.
    members[1]
        .until(|d| d.ephemeral.iter().any(|e| e == b"bob: lunch"))
        .await;
    assert!(members[0].ephemeral.iter().all(|e| e != b"bob: lunch"));
}
