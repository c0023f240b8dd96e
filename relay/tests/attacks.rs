//! A hostile member on the QUIC wire: a client that skips the `weft` CLI and sends the relay
//! whatever it likes with a valid token. Against the real `weft-relay` binary, each attack is
//! refused, nothing of it is stored (after a restart, a fresh device of the owner fetches the
//! document exactly as it was), and honest devices connected meanwhile keep syncing.
//! `ws_attacks.rs` does the same over the WebSocket endpoint.

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::ws::{now, Device, Relay, RELAY};
use weft_core::automerge::sync::{self, SyncDoc};
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{ActorId, Automerge, ChangeHash, ObjType, ROOT};
use weft_core::wire::{ErrorCode, Message};
use weft_core::{ChunkKind, DocId, Document, KvStore, RedbStore, Role, WriteBatch};
use weft_relay::Claims;

fn alice_claims() -> Claims {
    Claims::new("alice", now(), 3600).with_create(true)
}

/// Alice's device with a document titled "original", synced with the relay.
async fn alice_with_doc(relay: &Relay) -> (Device, DocId, Vec<ChangeHash>) {
    let mut alice = Device::connect(relay, relay.token(&alice_claims())).await;
    let doc = DocId::random(&mut rand::rng());
    alice.engine.create(
        doc,
        Document::from_automerge(Automerge::new().with_actor(ActorId::random())),
    );
    alice.set(doc, "title", "original");
    alice.subscribe(doc).await;
    assert!(alice.until(|d| d.engine.is_synced(RELAY, doc)).await);
    let heads = alice.engine.heads(doc).unwrap();
    (alice, doc, heads)
}

/// A member's device subscribed to `doc` and synced.
async fn member(relay: &Relay, user: &str, doc: DocId, role: Role) -> Device {
    let claims = Claims::new(user, now(), 3600).with_doc(doc, role);
    let mut d = Device::connect(relay, relay.token(&claims)).await;
    d.subscribe(doc).await;
    assert!(d.until(|d| d.engine.is_synced(RELAY, doc)).await);
    d
}

/// After the relay restarts, a fresh device of Alice's fetches `doc`: it has exactly `heads`
/// and the title "original".
async fn fetched_unchanged(relay: &Relay, doc: DocId, heads: &[ChangeHash]) {
    let mut fresh = Device::connect(relay, relay.token(&alice_claims())).await;
    fresh.subscribe(doc).await;
    assert!(fresh.until(|d| d.engine.is_synced(RELAY, doc)).await);
    assert_eq!(fresh.engine.heads(doc).unwrap(), heads);
    assert_eq!(fresh.get(doc, "title").as_deref(), Some("original"));
}

/// A change of `doc` setting `key`, made by a device that holds what `from` holds but writes
/// with an actor of its own: its raw bytes.
fn forged_change(from: &mut Device, doc: DocId, key: &str, value: &str) -> Vec<u8> {
    let saved = from.engine.read(doc, |d| d.save()).unwrap();
    let mut am = Automerge::load(&saved)
        .unwrap()
        .with_actor(ActorId::random());
    let mut tx = am.transaction();
    tx.put(ROOT, key, value).unwrap();
    tx.commit();
    am.get_last_local_change().unwrap().raw_bytes().to_vec()
}

/// A sync message from a peer holding nothing, carrying `chunks` as its changes.
fn sync_carrying(doc: DocId, chunks: Vec<Vec<u8>>) -> Message {
    let mut msg = Automerge::new()
        .generate_sync_message(&mut sync::State::new())
        .unwrap();
    msg.changes = chunks.into();
    Message::Sync {
        doc,
        reset: false,
        data: msg.encode().into(),
    }
}

/// Reads from the relay until an error with `code` arrives; its message.
async fn error_with(d: &mut Device, code: ErrorCode) -> String {
    loop {
        match d.recv(Duration::from_secs(30)).await {
            Ok(Some(Message::Error {
                code: c, message, ..
            })) if c == code => return message,
            Ok(Some(_)) => {}
            other => panic!("expected an error {code:?}, got {other:?}"),
        }
    }
}

/// Reads from the relay until it closes the connection.
async fn closed(d: &mut Device) {
    loop {
        match d.recv(Duration::from_secs(30)).await {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

/// Bob writes, Carol receives: the relay still serves honest members.
async fn still_serves(relay: &Relay, doc: DocId) {
    let mut bob = member(relay, "bob", doc, Role::ReadWrite).await;
    let mut carol = member(relay, "carol", doc, Role::ReadOnly).await;
    bob.set(doc, "note", "still here");
    assert!(bob.until(|d| d.engine.is_synced(RELAY, doc)).await);
    assert!(
        carol
            .until(|d| d.get(doc, "note").as_deref() == Some("still here"))
            .await
    );
}

/// An Automerge chunk of `kind` around `data` (the checksum is not checked before the bounds).
fn chunk(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, kind];
    let mut n = data.len() as u64;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(data);
    out
}

/// Deflated zeros: `gib` GiB of them in about a megabyte per GiB.
fn zeros_deflated(gib: usize) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    for _ in 0..gib * 1024 {
        e.write_all(&block).unwrap();
    }
    e.finish().unwrap()
}

/// The relay's peak resident memory so far, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_member_gets_nothing_stored_on_either_path() {
    let relay = Relay::start(&[]);
    let (mut alice, doc, heads) = alice_with_doc(&relay).await;
    let mut mallory = member(&relay, "mallory", doc, Role::ReadOnly).await;
    let forged = forged_change(&mut alice, doc, "title", "forged");

    // On the fast path, then inside a sync message, as a patched client would.
    let fast = Message::Changes {
        doc,
        changes: vec![forged.clone().into()],
    };
    mallory.writer.send(&fast).await.unwrap();
    error_with(&mut mallory, ErrorCode::READ_ONLY).await;
    mallory
        .writer
        .send(&sync_carrying(doc, vec![forged]))
        .await
        .unwrap();
    error_with(&mut mallory, ErrorCode::READ_ONLY).await;

    still_serves(&relay, doc).await;
    assert_eq!(alice.get(doc, "title").as_deref(), Some("original"));
    // Alice's document took Bob's note since; what the restart must show is its title.
    let heads_now = {
        let mut a = Device::connect(&relay, relay.token(&alice_claims())).await;
        a.subscribe(doc).await;
        assert!(a.until(|d| d.engine.is_synced(RELAY, doc)).await);
        a.engine.heads(doc).unwrap()
    };
    assert_ne!(heads_now, heads);
    let relay = relay.restart();
    fetched_unchanged(&relay, doc, &heads_now).await;
}

/// A member whose heads name a change she never sends (even when the relay asks for it, even
/// after it resyncs her) would keep the relay answering without end: it closes her
/// connection instead, stores nothing of hers, and serves everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_withholding_a_change_her_heads_name_is_closed() {
    let relay = Relay::start(&[]);
    let (mut alice, doc, heads) = alice_with_doc(&relay).await;
    let mut mallory = member(&relay, "mallory", doc, Role::ReadWrite).await;
    // Mallory's own copy, with a change she will announce and never send.
    let saved = mallory.engine.read(doc, |d| d.save()).unwrap();
    let mut am = Automerge::load(&saved)
        .unwrap()
        .with_actor(ActorId::random());
    let mut tx = am.transaction();
    tx.put(ROOT, "title", "withheld").unwrap();
    tx.commit();
    // Speaking the sync protocol as Automerge does, with the changes taken out.
    let mut state = sync::State::new();
    // The relay waits retry_after (5 s) of such heads before closing; a relay that never
    // closes keeps answering, so the exchange is bounded in time.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let error = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still answering Mallory after 60 s"
        );
        if let Some(mut msg) = am.generate_sync_message(&mut state) {
            msg.changes = Vec::<Vec<u8>>::new().into();
            let data = msg.encode().into();
            let sent = mallory
                .writer
                .send(&Message::Sync {
                    doc,
                    reset: false,
                    data,
                })
                .await;
            if sent.is_err() {
                panic!("the connection ended without an error message");
            }
        }
        match mallory.recv(Duration::from_secs(30)).await {
            Ok(Some(Message::Sync { reset, data, .. })) => {
                if reset {
                    state = sync::State::new();
                }
                let msg = sync::Message::decode(&data).unwrap();
                am.receive_sync_message(&mut state, msg).unwrap();
            }
            Ok(Some(Message::Error { code, message, .. })) if code == ErrorCode::MALFORMED => {
                break message;
            }
            Ok(Some(_)) => {}
            other => panic!("the relay ended otherwise: {other:?}"),
        }
    };
    assert!(error.contains("sync stalled"), "{error}");
    closed(&mut mallory).await;
    still_serves(&relay, doc).await;
    assert!(alice.until(|d| d.get(doc, "note").is_some()).await);
    assert_eq!(alice.get(doc, "title").as_deref(), Some("original"));
    assert_ne!(
        alice.engine.heads(doc).unwrap(),
        heads,
        "Bob's note arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_its_sender_and_never_reaches_the_store() {
    let relay = Relay::start(&[]);
    let (mut alice, doc, heads) = alice_with_doc(&relay).await;
    let garbage: Vec<u8> = (0..37u8).map(|i| i.wrapping_mul(97) ^ 0x5a).collect();
    let valid = forged_change(&mut alice, doc, "title", "smuggled");
    let attacks = [
        sync_carrying(doc, vec![garbage.clone()]),
        // A valid change with garbage after it, in one chunk and in two.
        sync_carrying(doc, vec![[valid.clone(), garbage.clone()].concat()]),
        sync_carrying(doc, vec![valid.clone(), garbage.clone()]),
        Message::Changes {
            doc,
            changes: vec![garbage.clone().into()],
        },
    ];
    for attack in attacks {
        let mut mallory = member(&relay, "mallory", doc, Role::ReadWrite).await;
        mallory.writer.send(&attack).await.unwrap();
        closed(&mut mallory).await;
    }
    // Alice was connected throughout and saw nothing.
    alice.set(doc, "after", "yes");
    assert!(alice.until(|d| d.engine.is_synced(RELAY, doc)).await);
    assert_eq!(alice.get(doc, "title").as_deref(), Some("original"));
    let heads_now = alice.engine.heads(doc).unwrap();
    assert_ne!(heads_now, heads);
    let relay = relay.restart();
    fetched_unchanged(&relay, doc, &heads_now).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_are_refused_without_inflating_them() {
    let relay = Relay::start(&[]);
    let (_alice, doc, heads) = alice_with_doc(&relay).await;
    let bomb = zeros_deflated(1);
    assert!(bomb.len() < 4 << 20, "{}", bomb.len());

    // A compressed change (chunk type 2) inflating to 1 GiB, on the fast path.
    let mut mallory = member(&relay, "mallory", doc, Role::ReadWrite).await;
    let compressed = chunk(2, &bomb);
    mallory
        .writer
        .send(&Message::Changes {
            doc,
            changes: vec![compressed.clone().into()],
        })
        .await
        .unwrap();
    let why = error_with(&mut mallory, ErrorCode::REFUSED).await;
    assert!(why.contains("limit"), "{why}");

    // The same inside a sync message, and a document chunk whose one column is the bomb.
    let mut column_bomb = Vec::new();
    column_bomb.extend([0, 0, 1, 0x18]); // no actors, no heads, one deflated change column
    let mut n = bomb.len() as u64;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            column_bomb.push(b);
            break;
        }
        column_bomb.push(b | 0x80);
    }
    column_bomb.push(0); // no op columns
    column_bomb.extend_from_slice(&bomb);
    for chunks in [vec![compressed], vec![chunk(0, &column_bomb)]] {
        let mut mallory = member(&relay, "mallory", doc, Role::ReadWrite).await;
        mallory
            .writer
            .send(&sync_carrying(doc, chunks))
            .await
            .unwrap();
        let why = error_with(&mut mallory, ErrorCode::REFUSED).await;
        assert!(why.contains("limit"), "{why}");
    }
    let peak = peak_rss(relay.pid());
    assert!(
        peak < 256 << 20,
        "the relay's memory peaked at {peak} bytes"
    );

    still_serves(&relay, doc).await;
    let mut a = Device::connect(&relay, relay.token(&alice_claims())).await;
    a.subscribe(doc).await;
    assert!(a.until(|d| d.engine.is_synced(RELAY, doc)).await);
    let heads_now = a.engine.heads(doc).unwrap();
    assert_ne!(heads_now, heads, "Bob's note landed");
    let relay = relay.restart();
    fetched_unchanged(&relay, doc, &heads_now).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_over_the_limits_is_refused_and_ends_only_that_subscription() {
    let relay = Relay::start(&["--max-change-bytes", "16KiB", "--max-change-ops", "5000"]);
    let (mut alice, doc, heads) = alice_with_doc(&relay).await;
    let mut mallory = member(&relay, "mallory", doc, Role::ReadWrite).await;
    let big = forged_change(&mut alice, doc, "title", &"x".repeat(40_000));
    mallory
        .writer
        .send(&Message::Changes {
            doc,
            changes: vec![big.into()],
        })
        .await
        .unwrap();
    let why = error_with(&mut mallory, ErrorCode::REFUSED).await;
    assert!(why.contains("16384 bytes"), "{why}");

    // Many operations in few bytes: a text of 6,000 equal characters compresses well.
    let mut mallory = member(&relay, "mallory", doc, Role::ReadWrite).await;
    let saved = alice.engine.read(doc, |d| d.save()).unwrap();
    let mut am = Automerge::load(&saved)
        .unwrap()
        .with_actor(ActorId::random());
    let mut tx = am.transaction();
    let t = tx.put_object(ROOT, "essay", ObjType::Text).unwrap();
    tx.splice_text(&t, 0, 0, &"a".repeat(6000)).unwrap();
    tx.commit();
    let many = am.get_last_local_change().unwrap().raw_bytes().to_vec();
    assert!(many.len() < 16 << 10);
    mallory
        .writer
        .send(&sync_carrying(doc, vec![many]))
        .await
        .unwrap();
    let why = error_with(&mut mallory, ErrorCode::REFUSED).await;
    assert!(why.contains("5000 operations"), "{why}");

    still_serves(&relay, doc).await;
    let relay = relay.restart();
    let mut fresh = Device::connect(&relay, relay.token(&alice_claims())).await;
    fresh.subscribe(doc).await;
    assert!(fresh.until(|d| d.engine.is_synced(RELAY, doc)).await);
    assert_eq!(fresh.get(doc, "title").as_deref(), Some("original"));
    assert_eq!(fresh.get(doc, "essay"), None);
    assert_ne!(fresh.engine.heads(doc).unwrap(), heads);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_bound_documents_and_bytes_per_user() {
    let relay = Relay::start(&["--max-docs-per-user", "3", "--max-user-bytes", "8KiB"]);
    let mut alice = Device::connect(&relay, relay.token(&alice_claims())).await;
    let docs: Vec<DocId> = (0..5).map(|_| DocId::random(&mut rand::rng())).collect();
    for doc in &docs {
        alice.engine.create(*doc, Document::new());
        alice.set(*doc, "title", "t");
        alice
            .writer
            .send(&Message::Subscribe { doc: *doc })
            .await
            .unwrap();
    }
    let mut subscribed = 0;
    let mut refused = Vec::new();
    while subscribed + refused.len() < docs.len() {
        match alice.recv(Duration::from_secs(30)).await {
            Ok(Some(Message::Subscribed { .. })) => subscribed += 1,
            Ok(Some(Message::Error {
                code: ErrorCode::LIMIT_REACHED,
                message,
                ..
            })) => refused.push(message),
            Ok(Some(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(subscribed, 3);
    assert_eq!(refused.len(), 2);
    assert!(refused[0].contains("at most 3 documents"), "{refused:?}");

    // Bob may write into Alice's first document, but not past her storage quota.
    let doc = docs[0];
    let mut bob = member(&relay, "bob", doc, Role::ReadWrite).await;
    let fill = forged_change(&mut bob, doc, "filler", &"y".repeat(10_000));
    bob.writer
        .send(&Message::Changes {
            doc,
            changes: vec![fill.into()],
        })
        .await
        .unwrap();
    let why = error_with(&mut bob, ErrorCode::REFUSED).await;
    assert!(why.contains("quota"), "{why}");
    let mut check = member(&relay, "carol", doc, Role::ReadOnly).await;
    assert_eq!(check.get(doc, "filler"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_change_is_applied_off_the_hub_and_others_keep_syncing() {
    let relay = Relay::start(&[
        "--max-change-bytes",
        "4MiB",
        "--max-change-ops",
        "2000000",
        "--max-bytes-per-sec",
        "64MiB",
    ]);
    let (mut alice, doc, _) = alice_with_doc(&relay).await;
    let other = {
        let d = DocId::random(&mut rand::rng());
        alice.engine.create(d, Document::new());
        alice.set(d, "title", "other");
        alice.subscribe(d).await;
        assert!(alice.until(|a| a.engine.is_synced(RELAY, d)).await);
        d
    };
    let mut bob = member(&relay, "bob", doc, Role::ReadWrite).await;
    let mut carol = member(&relay, "carol", other, Role::ReadWrite).await;
    // Bob pastes a million characters.
    bob.engine
        .change(doc, |am| {
            let mut tx = am.transaction();
            let t = tx.put_object(ROOT, "essay", ObjType::Text).unwrap();
            tx.splice_text(&t, 0, 0, &"z".repeat(1_000_000)).unwrap();
            tx.commit();
        })
        .unwrap();
    bob.flush().await;
    // Meanwhile Carol writes to another document, and Alice gets it.
    carol.set(other, "reply", "quick");
    assert!(carol.until(|d| d.engine.is_synced(RELAY, other)).await);
    assert!(
        alice
            .until(|d| d.get(other, "reply").as_deref() == Some("quick"))
            .await
    );
    // And the essay reaches Alice whole.
    assert!(bob.until(|d| d.engine.is_synced(RELAY, doc)).await);
    assert!(
        alice
            .until(|d| d.get(doc, "essay").is_some_and(|e| e.len() == 1_000_000))
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_poisoned_before_checks_existed_serves_its_documents_again() {
    let relay = Relay::start(&[]);
    let (_alice, doc, heads) = alice_with_doc(&relay).await;
    // What an older relay stored from a member's sync message: garbage as a change chunk.
    let relay = relay.restart_after(|dir| {
        let store = RedbStore::open_with_tables(
            dir.join("relay.redb"),
            &weft_relay::TABLES,
            Default::default(),
        )
        .unwrap();
        let garbage: Vec<u8> = (0..37u8).map(|i| i.wrapping_mul(13) ^ 0xa5).collect();
        let mut batch = WriteBatch::new();
        weft_core::store::docs::put_chunk(&mut batch, doc, ChunkKind::Incremental, garbage);
        store.write(&batch).unwrap();
    });
    fetched_unchanged(&relay, doc, &heads).await;
    // Set aside for good: after another restart it loads without healing.
    let relay = relay.restart();
    fetched_unchanged(&relay, doc, &heads).await;
}

/// A member sending acks that name a change nobody has costs the relay one resync of her
/// document per `retry_after`, not one per ack (each is a sync message over the document).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_naming_unknown_changes_cost_one_resync_not_one_each() {
    let relay = Relay::start(&[]);
    let (_alice, doc, _) = alice_with_doc(&relay).await;
    let mut mallory = member(&relay, "mallory", doc, Role::ReadWrite).await;
    let unknown = ChangeHash([0x5a; 32]);
    for _ in 0..200 {
        let ack = Message::Ack {
            doc,
            heads: vec![unknown],
        };
        mallory.writer.send(&ack).await.unwrap();
    }
    // Then a sync message from a fresh session: the relay's answer to it comes after whatever
    // the acks made it send (one ordered stream each way), and carries no reset of its own.
    let saved = mallory.engine.read(doc, |d| d.save()).unwrap();
    let am = Automerge::load(&saved).unwrap();
    let msg = am.generate_sync_message(&mut sync::State::new()).unwrap();
    let data = msg.encode().into();
    let hello = Message::Sync {
        doc,
        reset: true,
        data,
    };
    mallory.writer.send(&hello).await.unwrap();
    let mut resyncs = 0;
    loop {
        match mallory.recv(Duration::from_secs(30)).await {
            Ok(Some(Message::Sync { reset: true, .. })) => resyncs += 1,
            Ok(Some(Message::Sync { reset: false, .. })) => break,
            Ok(Some(_)) => {}
            other => panic!("the relay ended otherwise: {other:?}"),
        }
    }
    assert!(resyncs <= 2, "{resyncs} resyncs for 200 acks");
    still_serves(&relay, doc).await;
}
