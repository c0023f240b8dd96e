//! The device runtime as an app embeds it: local writes, typed reads, events with patches,
//! status, and ephemeral messages through a relay and peer to peer.

mod common;

use std::time::Duration;

use common::events::{next_event, now_ms};
use common::in_process::InProcessRelay;
use common::Relay;
use weft_core::clock::ManualClock;
use weft_peer::schema::{self, NewConversation, NewMessage};
use weft_peer::{
    DataDir, Device, DeviceError, Event, EventOrigin, PeerConfig, RelayConfig, SyncState,
    TokenSource,
};

async fn conversation(device: &Device, title: &str) -> weft_peer::DocId {
    let new = NewConversation {
        title: title.into(),
        participants: vec!["alice".into()],
    };
    let (doc, r) = device
        .create(Some("conversation"), move |am| {
            schema::Conversation::create(am, &new, now_ms())
        })
        .await
        .unwrap();
    r.unwrap();
    doc
}

async fn send(device: &Device, doc: weft_peer::DocId, body: &str) -> schema::Message {
    let msg = NewMessage::text("alice", body);
    let id = schema::Id::from_bytes(rand::random());
    device
        .change(doc, move |am| schema::send_message(am, &msg, id, now_ms()))
        .await
        .unwrap()
        .unwrap()
}

/// The relay's dev certificate, to pin.
fn relay_certs(relay: &Relay) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(relay.cert())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_writes_are_durable_typed_and_announced_with_patches() {
    let tmp = tempfile::tempdir().unwrap();
    let device = Device::open(DataDir::new(tmp.path())).await.unwrap();
    let mut events = device.events();
    let doc = conversation(&device, "Lunch").await;
    let sent = send(&device, doc, "noon?").await;
    let patches = next_event(&mut events, |e| match e {
        Event::Changed {
            doc: d,
            origin: EventOrigin::Local,
            patches,
            ..
        } if d == doc && !patches.is_empty() => Some(patches),
        _ => None,
    })
    .await;
    assert!(!patches.is_empty());
    // A second open of the same directory fails while this one holds it.
    let err = Device::open(DataDir::new(tmp.path())).await.unwrap_err();
    assert!(
        matches!(
            err,
            DeviceError::Store(weft_core::StoreError::Locked { .. })
        ),
        "{err}"
    );
    device.close().await;

    // Everything is there after reopening.
    let device = Device::open(DataDir::new(tmp.path())).await.unwrap();
    let msgs = device
        .read(doc, schema::messages)
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].id, sent.id);
    let list = device.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].kind.as_deref(), Some("conversation"));
    // An unknown document is a clear error.
    let other = weft_peer::DocId::from_bytes([3; 16]);
    assert!(
        matches!(device.read(other, |_| ()).await, Err(DeviceError::UnknownDoc(d)) if d == other)
    );
    device.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_messages_and_presence_cross_a_relay_and_remote_changes_are_events() {
    let relay = tokio::task::spawn_blocking(Relay::start).await.unwrap();
    let certs = relay_certs(&relay);
    let token = relay.token("alice", &["--create"]);
    let (ta, tb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Device::open(DataDir::new(ta.path())).await.unwrap();
    let b = Device::open(DataDir::new(tb.path())).await.unwrap();
    let doc = conversation(&a, "Trip").await;
    let cfg = |docs| RelayConfig {
        addr: relay.addr(),
        alternates: Vec::new(),
        token: TokenSource::Static(token.clone()),
        pinned_cert: Some(certs.clone()),
        docs,
        reconnect: true,
        max_backoff: Duration::from_secs(10),
    };
    let mut eb = b.events();
    let _la = a.connect_relay(cfg(vec![])).await.unwrap();
    let _lb = b.connect_relay(cfg(vec![doc])).await.unwrap();

    // B receives A's document and then A's live message, as remote change events.
    send(&a, doc, "hello").await;
    next_event(&mut eb, |e| match e {
        Event::Changed {
            doc: d,
            origin: EventOrigin::Remote,
            ..
        } if d == doc => Some(()),
        _ => None,
    })
    .await;
    let mut status = b.status();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let synced = status.borrow_and_update().links.values().any(|l| {
                l.docs
                    .get(&doc)
                    .is_some_and(|d| d.state == SyncState::Synced)
            });
            if synced {
                break;
            }
            status.changed().await.unwrap();
        }
    })
    .await
    .expect("B's status never showed the document synced");

    // Typing indicators: A's ephemeral message reaches B, never stored.
    let heads_before = b.read(doc, |am| am.get_heads()).await.unwrap();
    a.send_ephemeral(doc, b"typing".to_vec()).await.unwrap();
    let (data, user) = next_event(&mut eb, |e| match e {
        Event::Ephemeral {
            doc: d, data, user, ..
        } if d == doc => Some((data, user)),
        _ => None,
    })
    .await;
    assert_eq!(data, b"typing");
    assert_eq!(user.as_deref(), Some("alice"));
    assert_eq!(
        b.read(doc, |am| am.get_heads()).await.unwrap(),
        heads_before
    );
    a.close().await;
    // A left: B sees its presence go.
    next_event(&mut eb, |e| match e {
        Event::Presence {
            doc: d,
            online: false,
            ..
        } if d == doc => Some(()),
        _ => None,
    })
    .await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_messages_cross_peer_to_peer() {
    let (ta, tb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Device::open(DataDir::new(ta.path())).await.unwrap();
    let b = Device::open(DataDir::new(tb.path())).await.unwrap();
    let doc = conversation(&a, "Notes").await;
    let addr = b
        .listen_p2p("127.0.0.1:0".parse().unwrap(), vec![a.id()])
        .await
        .unwrap();
    let mut eb = b.events();
    let _link = a
        .connect_peer(PeerConfig {
            addr: addr.to_string(),
            peer: b.id(),
            docs: vec![],
            reconnect: true,
            max_backoff: Duration::from_secs(10),
        })
        .await
        .unwrap();
    next_event(&mut eb, |e| match e {
        Event::Changed {
            doc: d,
            origin: EventOrigin::Remote,
            ..
        } if d == doc => Some(()),
        _ => None,
    })
    .await;
    a.send_ephemeral(doc, b"cursor 42".to_vec()).await.unwrap();
    let (data, device) = next_event(&mut eb, |e| match e {
        Event::Ephemeral {
            doc: d,
            data,
            device,
            ..
        } if d == doc => Some((data, device)),
        _ => None,
    })
    .await;
    assert_eq!(data, b"cursor 42");
    assert_eq!(device, Some(a.id()));
    a.close().await;
    b.close().await;
}

/// A fresh token handed to a live link keeps it open past the old token's expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_token_keeps_a_live_connection_open_past_expiry() {
    // The relay reads a clock the test moves, and allows nothing past `exp`.
    let clock = ManualClock::at(now_ms());
    let mut relay = InProcessRelay::start(clock.wall(), 0);
    let short = relay.token("alice", 3);
    let long = relay.token("alice", 3600);
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let [a, b, c] = [0, 1, 2].map(|i| Device::open(DataDir::new(dirs[i].path())));
    let (a, b, c) = (a.await.unwrap(), b.await.unwrap(), c.await.unwrap());
    let doc = conversation(&b, "Live").await;
    let cfg = |token: &str, docs, reconnect| RelayConfig {
        addr: relay.addr.to_string(),
        alternates: Vec::new(),
        token: TokenSource::Static(token.to_owned()),
        pinned_cert: Some(relay.cert.clone()),
        docs,
        reconnect,
        max_backoff: Duration::from_secs(10),
    };
    // B writes with a long token; A and C read with short ones, and only A will refresh.
    let _lb = b.connect_relay(cfg(&long, vec![], true)).await.unwrap();
    let (mut ea, mut eb, mut ec) = (a.events(), b.events(), c.events());
    let la = a.connect_relay(cfg(&short, vec![doc], true)).await.unwrap();
    let lc = c
        .connect_relay(cfg(&short, vec![doc], false))
        .await
        .unwrap();
    for events in [&mut ea, &mut ec] {
        next_event(events, |e| match e {
            Event::Changed { doc: d, .. } if d == doc => Some(()),
            _ => None,
        })
        .await;
    }
    let a_went_offline = went_offline(&a, la.id());
    let c_went_offline = went_offline(&c, lc.id());

    // A presents the long token before the short one expires. Once the relay has it, a
    // message A sends afterwards reaching B means the relay has taken the refresh.
    la.set_token(long.clone());
    tokio::time::timeout(Duration::from_secs(20), relay.refreshes.recv())
        .await
        .expect("the refresh never reached the relay")
        .unwrap();
    send(&a, doc, "refreshed").await;
    next_event(&mut eb, |e| match e {
        Event::Changed {
            doc: d,
            origin: EventOrigin::Remote,
            ..
        } if d == doc => Some(()),
        _ => None,
    })
    .await;

    // Past the short token's expiry: the relay closes C, which kept its expired token, in
    // the same sweep that finds A's token fresh.
    clock.advance(Duration::from_secs(5));
    tokio::time::timeout(Duration::from_secs(20), c_went_offline)
        .await
        .expect("the connection with an expired token stayed open")
        .unwrap();
    send(&b, doc, "after expiry").await;
    next_event(&mut ea, |e| match e {
        Event::Changed {
            doc: d,
            origin: EventOrigin::Remote,
            ..
        } if d == doc => Some(()),
        _ => None,
    })
    .await;
    assert!(
        !a_went_offline.is_finished(),
        "the connection dropped at the old token's expiry"
    );
    a_went_offline.abort();
    for device in [a, b, c] {
        device.close().await;
    }
}

/// Resolves once the device's link `link` is in any state but online.
fn went_offline(device: &Device, link: u64) -> tokio::task::JoinHandle<()> {
    let mut status = device.status();
    tokio::spawn(async move {
        loop {
            if status.changed().await.is_err() {
                return;
            }
            let s = status.borrow_and_update();
            if s.links
                .get(&link)
                .is_some_and(|l| l.state != weft_peer::LinkState::Online)
            {
                return;
            }
        }
    })
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_private_even_in_a_directory_that_already_existed() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = DataDir::new(tmp.path());
    let device = Device::open(dir.clone()).await.unwrap();
    assert_eq!(mode(dir.path()), 0o700);
    assert_eq!(mode(&dir.store_path()), 0o600);
    assert_eq!(mode(&dir.key_path()), 0o600);
    device.close().await;
}

/// Documents made offline past the relay's creation burst are refused "try again", not for
/// good: the device asks for each again after a backoff, and every one reaches the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_past_the_relays_creation_burst_are_uploaded_after_a_backoff() {
    let clock = ManualClock::at(now_ms());
    let config = weft_relay::HubConfig {
        create_burst: 2,
        create_rate: 10,
        ..Default::default()
    };
    let relay = InProcessRelay::start_with(clock.wall(), 60, config);
    let dir = tempfile::tempdir().unwrap();
    let device = Device::open(DataDir::new(dir.path())).await.unwrap();
    let mut docs = Vec::new();
    for i in 0..8 {
        docs.push(conversation(&device, &format!("trip {i}")).await);
    }
    let mut status = device.status();
    let link = device
        .connect_relay(RelayConfig {
            addr: relay.addr.to_string(),
            alternates: Vec::new(),
            token: TokenSource::Static(relay.token("alice", 3600)),
            pinned_cert: Some(relay.cert.clone()),
            docs: vec![],
            reconnect: true,
            max_backoff: Duration::from_secs(10),
        })
        .await
        .unwrap();
    loop {
        {
            let s = status.borrow_and_update();
            if let Some(l) = s.links.get(&link.id()) {
                let refused: Vec<_> = l
                    .docs
                    .iter()
                    .filter(|(_, d)| d.state == SyncState::Refused)
                    .collect();
                assert!(refused.is_empty(), "refused for good: {refused:?}");
                let synced = |d: &weft_peer::DocId| {
                    l.docs.get(d).is_some_and(|d| d.state == SyncState::Synced)
                };
                if docs.iter().all(synced) {
                    break;
                }
            }
        }
        tokio::time::timeout(Duration::from_secs(60), status.changed())
            .await
            .expect("the documents never all reached the relay")
            .unwrap();
    }
}

/// A store that fails every write while its switch is on.
struct FailingWrites {
    inner: std::sync::Arc<dyn weft_core::KvStore>,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl weft_core::KvStore for FailingWrites {
    fn get(
        &self,
        table: weft_core::store::Table,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, weft_core::store::StoreError> {
        self.inner.get(table, key)
    }

    fn scan_prefix(
        &self,
        table: weft_core::store::Table,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, weft_core::store::StoreError> {
        self.inner.scan_prefix(table, prefix)
    }

    fn write(
        &self,
        batch: &weft_core::store::WriteBatch,
    ) -> Result<(), weft_core::store::StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(weft_core::store::StoreError::Io {
                path: "test".into(),
                source: std::sync::Arc::new(std::io::Error::other("injected write failure")),
            });
        }
        self.inner.write(batch)
    }
}

/// A store write that fails drops the document from memory; once the store works again the
/// device reopens it with the relay and syncs both ways, on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_whose_store_write_failed_is_reopened_and_syncs_again() {
    let clock = ManualClock::at(now_ms());
    let relay = InProcessRelay::start(clock.wall(), 60);
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let switch = fail.clone();
    let a = Device::open_wrapped(DataDir::new(da.path()), move |inner| {
        std::sync::Arc::new(FailingWrites {
            inner,
            fail: switch,
        })
    })
    .await
    .unwrap();
    let b = Device::open(DataDir::new(db.path())).await.unwrap();
    let doc = conversation(&a, "Trip").await;
    let cfg = |docs| RelayConfig {
        addr: relay.addr.to_string(),
        alternates: Vec::new(),
        token: TokenSource::Static(relay.token("alice", 3600)),
        pinned_cert: Some(relay.cert.clone()),
        docs,
        reconnect: false,
        max_backoff: Duration::from_secs(10),
    };
    let (mut ea, mut eb) = (a.events(), b.events());
    let _la = a.connect_relay(cfg(vec![])).await.unwrap();
    let _lb = b.connect_relay(cfg(vec![doc])).await.unwrap();
    let remote = |doc| {
        move |e| match e {
            Event::Changed {
                doc: d,
                origin: EventOrigin::Remote,
                ..
            } if d == doc => Some(()),
            _ => None,
        }
    };
    next_event(&mut eb, remote(doc)).await;

    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let msg = NewMessage::text("alice", "lost");
    let id = schema::Id::from_bytes(rand::random());
    let failed = a
        .change(doc, move |am| schema::send_message(am, &msg, id, now_ms()))
        .await;
    assert!(failed.is_err(), "the write did not fail: {failed:?}");
    fail.store(false, std::sync::atomic::Ordering::SeqCst);

    send(&b, doc, "after").await;
    next_event(&mut ea, remote(doc)).await;
    send(&a, doc, "again").await;
    next_event(&mut eb, remote(doc)).await;
    let bodies = |d: &Device| {
        let d = d.clone();
        async move {
            d.read(doc, schema::messages)
                .await
                .unwrap()
                .unwrap()
                .value
                .into_iter()
                .map(|m| m.body)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(bodies(&a).await, ["after", "again"]);
    assert_eq!(bodies(&b).await, ["after", "again"]);
}

/// The tail cached beside a document never hides a change received from the relay: not while
/// the device runs (the document was not loaded when it came), nor after it reopens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_from_the_relay_shows_in_the_last_messages_over_a_cached_tail() {
    let relay = tokio::task::spawn_blocking(Relay::start).await.unwrap();
    let certs = relay_certs(&relay);
    let token = relay.token("alice", &["--create"]);
    let (ta, tb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = |docs| RelayConfig {
        addr: relay.addr(),
        alternates: Vec::new(),
        token: TokenSource::Static(token.clone()),
        pinned_cert: Some(certs.clone()),
        docs,
        reconnect: true,
        max_backoff: Duration::from_secs(10),
    };
    let last = |device: Device, doc| async move {
        let read = device.last_messages(doc, 2).await.unwrap().unwrap();
        read.value.into_iter().map(|m| m.body).collect::<Vec<_>>()
    };
    let a = Device::open(DataDir::new(ta.path())).await.unwrap();
    let doc = conversation(&a, "Trip").await;
    send(&a, doc, "one").await;
    send(&a, doc, "two").await;
    let la = a.connect_relay(cfg(vec![])).await.unwrap();
    // B gets the document, and closing writes its tail.
    let b = Device::open(DataDir::new(tb.path())).await.unwrap();
    let mut eb = b.events();
    let lb = b.connect_relay(cfg(vec![doc])).await.unwrap();
    let heads = sorted(a.read(doc, |am| am.get_heads()).await.unwrap());
    next_event(&mut eb, |e| match e {
        Event::Changed {
            doc: d, heads: h, ..
        } if d == doc && sorted(h.clone()) == heads => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(last(b.clone(), doc).await, ["one", "two"]);
    lb.stop().await;
    b.close().await;

    // B again, its tail cached and the document not loaded: A's next message arrives.
    let b = Device::open(DataDir::new(tb.path())).await.unwrap();
    assert_eq!(last(b.clone(), doc).await, ["one", "two"]);
    let mut eb = b.events();
    let lb = b.connect_relay(cfg(vec![doc])).await.unwrap();
    send(&a, doc, "three").await;
    let heads = sorted(a.read(doc, |am| am.get_heads()).await.unwrap());
    next_event(&mut eb, |e| match e {
        Event::Changed {
            doc: d,
            heads: h,
            origin: EventOrigin::Remote,
            ..
        } if d == doc && sorted(h.clone()) == heads => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(last(b.clone(), doc).await, ["two", "three"]);
    lb.stop().await;
    b.close().await;
    let b = Device::open(DataDir::new(tb.path())).await.unwrap();
    assert_eq!(last(b.clone(), doc).await, ["two", "three"]);
    b.close().await;
    la.stop().await;
    a.close().await;
}

fn sorted(
    mut heads: Vec<weft_core::automerge::ChangeHash>,
) -> Vec<weft_core::automerge::ChangeHash> {
    heads.sort_unstable();
    heads
}

/// "Bob edited the chat": alice shares a conversation with bob, bob writes in it, and alice's
/// device tells her the remote change was bob's (her own writes, hers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_change_names_its_author() {
    let relay = tokio::task::spawn_blocking(Relay::start).await.unwrap();
    let certs = relay_certs(&relay);
    let cfg = |token: String, docs| RelayConfig {
        addr: relay.addr(),
        alternates: Vec::new(),
        token: TokenSource::Static(token),
        pinned_cert: Some(certs.clone()),
        docs,
        reconnect: true,
        max_backoff: Duration::from_secs(10),
    };
    let (ta, tb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Device::open(DataDir::new(ta.path())).await.unwrap();
    let new = NewConversation {
        title: "Trip".into(),
        participants: vec!["alice".into(), "bob".into()],
    };
    let (doc, r) = a
        .create(Some("conversation"), move |am| {
            schema::Conversation::create(am, &new, now_ms())
        })
        .await
        .unwrap();
    r.unwrap();
    let shared = a
        .control(weft_peer::ControlOp::Share {
            doc,
            user: "bob".into(),
            role: weft_peer::Role::ReadWrite,
        })
        .await
        .unwrap();
    let mut ea = a.events();
    let la = a
        .connect_relay(cfg(relay.token("alice", &["--create"]), vec![]))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), shared)
        .await
        .expect("the relay never answered the share")
        .unwrap()
        .unwrap();

    // Alice's own message, once her device knows its user, is hers.
    send(&a, doc, "lunch?").await;
    let authors = next_event(&mut ea, |e| match e {
        Event::Changed {
            doc: d,
            origin: EventOrigin::Local,
            authors,
            ..
        } if d == doc => Some(authors),
        _ => None,
    })
    .await;
    assert_eq!(authors, ["alice"]);

    // Bob's device gets the chat and answers; alice is told it was bob.
    let b = Device::open(DataDir::new(tb.path())).await.unwrap();
    let mut eb = b.events();
    let lb = b
        .connect_relay(cfg(relay.token("bob", &[]), vec![doc]))
        .await
        .unwrap();
    next_event(&mut eb, |e| match e {
        Event::Changed { doc: d, .. } if d == doc => Some(()),
        _ => None,
    })
    .await;
    let msg = NewMessage::text("bob", "yes!");
    let id = schema::Id::from_bytes(rand::random());
    b.change(doc, move |am| schema::send_message(am, &msg, id, now_ms()))
        .await
        .unwrap()
        .unwrap();
    let authors = next_event(&mut ea, |e| match e {
        Event::Changed {
            doc: d,
            origin: EventOrigin::Remote,
            authors,
            ..
        } if d == doc => Some(authors),
        _ => None,
    })
    .await;
    assert_eq!(authors, ["bob"]);
    lb.stop().await;
    b.close().await;
    la.stop().await;
    a.close().await;
}
