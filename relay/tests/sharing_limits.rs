//! The hub's sharing limits, with real redb and small limits, driven over in-process channels
//! (the QUIC transport is tested in `sharing.rs`): discovery in bounded messages, a listing
//! that waits for room in a full queue, access-list size, and the control-request rate.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::hub::{decode_frames, open_store, spawn_hub, HubConn};
use common::now;
use tokio::sync::mpsc;
use weft_core::wire::{ErrorCode, Message};
use weft_core::{DocId, Role};
use weft_relay::{Claims, HubConfig, HubEvent, Outbound};

struct Device {
    hub: HubConn,
}

crate::extends!(Device, hub: HubConn);

impl Device {
    /// Connects with an outbound queue of `queue` frames; reads nothing yet.
    async fn connect(
        events: &mpsc::Sender<HubEvent>,
        id: u64,
        claims: Claims,
        queue: usize,
    ) -> Device {
        let hub = HubConn::open(events, id, claims, queue).await;
        Device { hub }
    }

    async fn next(&mut self) -> Message {
        if let Some(m) = self.pending.pop_front() {
            return m;
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
                self.pending
                    .extend(decode_frames(&out.bytes().unwrap_or_default()));
                self.pending.pop_front().expect("an entry holds a frame")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Skips messages until one matches.
    async fn find<T>(&mut self, mut f: impl FnMut(Message) -> Option<T>) -> T {
        loop {
            if let Some(t) = f(self.next().await) {
                return t;
            }
        }
    }

    /// Reads the whole listing: every `Docs` message's entries, then `DocsEnd`'s total.
    async fn listing(&mut self) -> (Vec<Vec<DocId>>, u64) {
        let mut messages = Vec::new();
        loop {
            match self.next().await {
                Message::Docs { full, added, .. } => {
                    assert_eq!(full, messages.is_empty(), "only the first message is full");
                    messages.push(added.into_iter().map(|e| e.doc).collect());
                }
                Message::DocsEnd { total, truncated } => {
                    assert!(!truncated);
                    return (messages, total);
                }
                Message::Welcome { .. } => {}
                other => panic!("unexpected {other:?} in a listing"),
            }
        }
    }

    async fn reply(&mut self, msg: Message) -> Option<ErrorCode> {
        let (Message::Share { id, .. } | Message::Unshare { id, .. }) = &msg else {
            panic!("not a request");
        };
        let id = *id;
        self.send(msg).await;
        self.find(|m| match m {
            Message::Reply { id: got, code, .. } if got == id => Some(code),
            _ => None,
        })
        .await
    }
}

fn doc(n: u8) -> DocId {
    DocId::from_bytes([n; 16])
}

fn share(id: u64, doc: DocId, user: &str) -> Message {
    Message::Share {
        id,
        doc,
        user: user.into(),
        role: Role::ReadOnly,
    }
}

#[tokio::test]
async fn lists_access_lists_and_control_requests_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = HubConfig {
        docs_per_message: 2,
        max_access_list: 3,
        control_burst: 8,
        // No refill: the burst is all a connection gets, whatever the clock does.
        control_rate: 0,
        ..HubConfig::default()
    };
    let events = spawn_hub(open_store(dir.path()), cfg);
    let alice = || Claims::new("alice", now(), 3600).with_create(true);

    // Alice uploads five documents.
    let mut laptop = Device::connect(&events, 1, alice(), 1024).await;
    assert_eq!(laptop.listing().await.1, 0);
    for n in 1..=5 {
        laptop.send(Message::Subscribe { doc: doc(n) }).await;
        laptop
            .find(|m| matches!(m, Message::Subscribed { doc: d, .. } if d == doc(n)).then_some(()))
            .await;
    }

    // Her phone's queue holds four frames: the welcome plus a listing of four messages does not
    // fit, so the listing waits (whole, never partial) until the phone reads its welcome.
    let mut phone = Device::connect(&events, 2, alice(), 4).await;
    assert!(matches!(phone.next().await, Message::Welcome { .. }));
    let (messages, total) = phone.listing().await;
    assert_eq!(total, 5);
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages.iter().all(|m| m.len() <= 2));
    let listed: BTreeSet<DocId> = messages.into_iter().flatten().collect();
    assert_eq!(listed, (1..=5).map(doc).collect());

    // An access list holds three users; changing a listed user's role still works.
    for (i, user) in ["u1", "u2", "u3"].into_iter().enumerate() {
        assert_eq!(laptop.reply(share(i as u64, doc(1), user)).await, None);
    }
    assert_eq!(
        laptop.reply(share(3, doc(1), "u4")).await,
        Some(ErrorCode::LIMIT_REACHED)
    );
    let upgrade = Message::Share {
        id: 4,
        doc: doc(1),
        user: "u1".into(),
        role: Role::ReadWrite,
    };
    assert_eq!(laptop.reply(upgrade).await, None);

    // Eight requests in all, then the connection is over its control rate (others are not).
    let unshare = |id| Message::Unshare {
        id,
        doc: doc(2),
        user: "nobody".into(),
    };
    for id in 5..8 {
        assert_eq!(laptop.reply(unshare(id)).await, None);
    }
    assert_eq!(
        laptop.reply(unshare(8)).await,
        Some(ErrorCode::RATE_LIMITED)
    );
    phone.send(unshare(9)).await;
    let code = phone
        .find(|m| match m {
            Message::Reply { id: 9, code, .. } => Some(code),
            _ => None,
        })
        .await;
    assert_eq!(code, None);
}

#[tokio::test]
async fn a_store_written_before_the_user_index_existed_is_indexed_at_start() {
    use weft_core::store::docs as docstore;
    use weft_core::store::WriteBatch;
    use weft_relay::RelayDocMeta as DocMeta;

    let dir = tempfile::tempdir().unwrap();
    let kv = open_store(dir.path());
    // What an older relay left: metadata only.
    let mut meta = DocMeta::default();
    meta.owner = Some("alice".into());
    meta.access.insert("bob".into(), Role::ReadOnly);
    let mut batch = WriteBatch::new();
    docstore::put_meta(&mut batch, doc(1), &meta);
    kv.write(&batch).unwrap();

    let events = spawn_hub(kv, HubConfig::default());
    let mut bob = Device::connect(&events, 1, Claims::new("bob", now(), 3600), 1024).await;
    assert_eq!(bob.listing().await, (vec![vec![doc(1)]], 1));
    let mut alice = Device::connect(&events, 2, Claims::new("alice", now(), 3600), 1024).await;
    assert_eq!(alice.listing().await, (vec![vec![doc(1)]], 1));
}
