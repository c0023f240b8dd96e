//! The write rules over the WebSocket endpoint: a member speaking the automerge-repo wire
//! protocol directly sends sync messages carrying changes it crafted (in another's name, to
//! another's message, breaking the schema, changing the kind, skipping an escrow's step). Each
//! is refused (an `error` message, the socket closed) and nothing is stored; an honest change
//! from the same kind of client is taken. `rules.rs` does the same over QUIC.

mod common;

use ciborium::Value;
use common::ws::{now, Device, Relay, RELAY};
use common::wsclient::*;
use weft_core::automerge::sync::{self, SyncDoc};
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{ActorId, Automerge, ReadDoc, ROOT};
use weft_core::{DocId, Document, Role};
use weft_relay::Claims;
use weft_schema::{Conversation, Id, NewConversation, NewMessage};

const T: u64 = 1_700_000_000_000;

const ESCROW: &str = include_str!("../../schema/tests/fixtures/escrow.toml");

fn alice_claims() -> Claims {
    Claims::new("alice", now(), 3600).with_create(true)
}

/// Alice's QUIC device with a new document made by `init`, synced.
async fn alice_creates(relay: &Relay, init: impl FnOnce(&mut Automerge)) -> (Device, DocId) {
    let mut alice = Device::connect(relay, relay.token(&alice_claims())).await;
    let doc = DocId::random(&mut rand::rng());
    let mut am = Automerge::new().with_actor(ActorId::random());
    init(&mut am);
    alice.engine.create(doc, Document::from_automerge(am));
    alice.subscribe(doc).await;
    assert!(alice.until(|d| d.engine.is_synced(RELAY, doc)).await);
    (alice, doc)
}

/// What Bob's client sends: a sync message carrying the change `f` makes on a copy of
/// `saved`, under an actor of his own.
fn crafted(saved: &[u8], f: impl FnOnce(&mut Automerge)) -> Vec<u8> {
    let mut am = Automerge::load(saved)
        .unwrap()
        .with_actor(ActorId::random());
    f(&mut am);
    let change = am.get_last_local_change().unwrap().raw_bytes().to_vec();
    let mut msg = Automerge::new()
        .generate_sync_message(&mut sync::State::new())
        .unwrap();
    msg.heads = am.get_heads();
    msg.changes = vec![change].into();
    msg.encode()
}

/// Bob's raw WebSocket client sends `data` for `doc`; what the relay answers first (skipping
/// its sync replies).
async fn bob_sends(relay: &Relay, doc: DocId, data: Vec<u8>) -> Got {
    let token = relay.token(&Claims::new("bob", now(), 3600).with_doc(doc, Role::ReadWrite));
    let mut ws = joined(relay, &token, "bob-browser").await;
    send(&mut ws, sync_msg("sync", "bob-browser", doc, data)).await;
    loop {
        let got = recv(&mut ws).await;
        if got.kind() != Some("sync") {
            return got;
        }
    }
}

fn error_text(got: &Got) -> String {
    match got.field("message") {
        Some(Value::Text(t)) => t.clone(),
        _ => panic!("expected an error message, got {got:?}"),
    }
}

fn lunch(am: &mut Automerge) {
    Conversation::create(
        am,
        &NewConversation {
            title: "Lunch".into(),
            participants: vec![],
        },
        T,
    )
    .unwrap();
    weft_schema::send_message(
        am,
        &NewMessage::text("alice", "noon?"),
        Id::from_bytes([1; 16]),
        T,
    )
    .unwrap();
}

/// A write that breaks the rules, made to a document by the attacker.
type Attack<'a> = Box<dyn FnOnce(&mut Automerge) + 'a>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_member_cannot_write_in_anothers_name() {
    let relay = Relay::start(&[]);
    let (mut alice, doc) = alice_creates(&relay, lunch).await;
    let saved = alice.engine.read(doc, |d| d.save()).unwrap();
    let first = Id::from_bytes([1; 16]);
    let attacks: Vec<(&str, Attack<'_>)> = vec![
        (
            "author",
            Box::new(|am| {
                weft_schema::send_message(
                    am,
                    &NewMessage::text("alice", "forged"),
                    Id::from_bytes([2; 16]),
                    T,
                )
                .unwrap();
            }),
        ),
        (
            "its author",
            Box::new(|am| weft_schema::edit_message(am, &first, "hijacked", T).unwrap()),
        ),
        (
            "deleted",
            Box::new(|am| weft_schema::delete_message(am, &first, T).unwrap()),
        ),
        (
            "not a message key",
            Box::new(|am| {
                let m = am.get(ROOT, "messages").unwrap().unwrap().1;
                let mut tx = am.transaction();
                tx.put(&m, "zzz", 42).unwrap();
                tx.commit();
            }),
        ),
        (
            "kind",
            Box::new(|am| {
                let mut tx = am.transaction();
                tx.put(ROOT, "kind", "trip").unwrap();
                tx.commit();
            }),
        ),
    ];
    for (says, attack) in attacks {
        let got = bob_sends(&relay, doc, crafted(&saved, attack)).await;
        assert_eq!(got.kind(), Some("error"), "{says}: {got:?}");
        let why = error_text(&got);
        assert!(why.contains(says), "refused for {why:?}, expected {says:?}");
    }
    // An honest message from the same kind of client is taken, and reaches Alice.
    let honest = crafted(&saved, |am| {
        weft_schema::send_message(
            am,
            &NewMessage::text("bob", "yes"),
            Id::from_bytes([3; 16]),
            T,
        )
        .unwrap();
    });
    let token = relay.token(&Claims::new("bob", now(), 3600).with_doc(doc, Role::ReadWrite));
    let mut ws = joined(&relay, &token, "bob-browser").await;
    send(&mut ws, sync_msg("sync", "bob-browser", doc, honest)).await;
    let count = |d: &mut Device| {
        d.engine
            .read(doc, |x| {
                weft_schema::messages(x.automerge())
                    .map(|m| m.value.len())
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    };
    assert!(alice.until(|d| count(d) == 2).await);
    let heads = alice.engine.heads(doc).unwrap();
    drop(ws);

    let relay = relay.restart();
    let mut fresh = Device::connect(&relay, relay.token(&alice_claims())).await;
    fresh.subscribe(doc).await;
    assert!(fresh.until(|d| d.engine.is_synced(RELAY, doc)).await);
    assert_eq!(fresh.engine.heads(doc).unwrap(), heads);
    let msgs = fresh
        .engine
        .read(doc, |d| weft_schema::messages(d.automerge()).unwrap().value)
        .unwrap();
    let shown: Vec<(&str, &str)> = msgs
        .iter()
        .map(|m| (m.author.as_str(), m.body.as_str()))
        .collect();
    assert_eq!(shown, [("alice", "noon?"), ("bob", "yes")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_member_cannot_move_an_escrow_out_of_turn() {
    let dir = tempfile::tempdir().unwrap();
    let kinds = dir.path().join("kinds.toml");
    std::fs::write(&kinds, ESCROW).unwrap();
    let relay = Relay::start(&["--kinds", kinds.to_str().unwrap()]);
    let (mut alice, doc) = alice_creates(&relay, |am| {
        let mut tx = am.transaction();
        tx.put(ROOT, "kind", "escrow").unwrap();
        tx.put(ROOT, "buyer", "bob").unwrap();
        tx.put(ROOT, "seller", "alice").unwrap();
        tx.put(ROOT, "status", "pending").unwrap();
        tx.commit();
    })
    .await;
    let saved = alice.engine.read(doc, |d| d.save()).unwrap();
    let heads = alice.engine.heads(doc).unwrap();
    let got = bob_sends(
        &relay,
        doc,
        crafted(&saved, |am| {
            let mut tx = am.transaction();
            tx.put(ROOT, "status", "shipped").unwrap();
            tx.commit();
        }),
    )
    .await;
    assert!(error_text(&got).contains("may not go from"), "{got:?}");
    let relay = relay.restart();
    let mut fresh = Device::connect(&relay, relay.token(&alice_claims())).await;
    fresh.subscribe(doc).await;
    assert!(fresh.until(|d| d.engine.is_synced(RELAY, doc)).await);
    assert_eq!(fresh.engine.heads(doc).unwrap(), heads);
    assert_eq!(fresh.get(doc, "status").as_deref(), Some("pending"));
}
