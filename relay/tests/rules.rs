//! Who wrote what, enforced by the real relay against members who craft their changes
//! directly on the QUIC wire (no CLI): forged authors, edits and deletions of others'
//! messages, keys that break the schema, a changed kind, an escrow skipping a step or released
//! by its seller. Each is refused with nothing stored (a fresh device of the owner fetches the
//! document unchanged after a restart), and the owner's moderation is allowed.

mod common;

use std::time::Duration;

use common::ws::{now, Device, Relay, RELAY};
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{ActorId, Automerge, ChangeHash, ReadDoc, ROOT};
use weft_core::wire::{ErrorCode, Message};
use weft_core::{DocId, Document, Role};
use weft_relay::Claims;
use weft_schema::{Conversation, Id, NewConversation, NewMessage};

const T: u64 = 1_700_000_000_000;

const ESCROW: &str = include_str!("../../schema/tests/fixtures/escrow.toml");

fn relay() -> (Relay, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kinds = dir.path().join("kinds.toml");
    std::fs::write(&kinds, ESCROW).unwrap();
    let relay = Relay::start(&["--kinds", kinds.to_str().unwrap()]);
    (relay, dir)
}

fn alice_claims() -> Claims {
    Claims::new("alice", now(), 3600).with_create(true)
}

/// A device of `user` holding `doc` (as `role`), synced with the relay.
async fn member(relay: &Relay, user: &str, doc: DocId, role: Role) -> Device {
    let claims = Claims::new(user, now(), 3600).with_doc(doc, role);
    let mut d = Device::connect(relay, relay.token(&claims)).await;
    d.subscribe(doc).await;
    assert!(d.until(|d| d.engine.is_synced(RELAY, doc)).await);
    d
}

/// Alice's device with a new document made by `init`, synced.
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

/// `d` makes a change with `f` and sends it; the relay's refusal, naming the rule.
async fn refused(d: &mut Device, doc: DocId, f: impl FnOnce(&mut Automerge)) -> String {
    d.engine.change(doc, |am| f(am)).unwrap();
    d.flush().await;
    loop {
        match d.recv(Duration::from_secs(30)).await {
            Ok(Some(Message::Error {
                code: ErrorCode::REFUSED,
                message,
                ..
            })) => return message,
            Ok(Some(
                m @ (Message::Sync { .. } | Message::Changes { .. } | Message::Ack { .. }),
            )) => {
                let _ = d.engine.handle(RELAY, m);
                d.flush().await;
            }
            Ok(Some(_)) => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

/// `d` makes a change with `f` and it is accepted (the relay confirms it holds it).
async fn accepted(d: &mut Device, doc: DocId, f: impl FnOnce(&mut Automerge)) {
    d.engine.change(doc, |am| f(am)).unwrap();
    assert!(d.until(|d| d.engine.is_synced(RELAY, doc)).await);
}

/// After a restart, a fresh device of Alice's fetches `doc` with exactly `heads`.
async fn fetched(relay: &Relay, doc: DocId, heads: &[ChangeHash]) -> Device {
    let mut fresh = Device::connect(relay, relay.token(&alice_claims())).await;
    fresh.subscribe(doc).await;
    assert!(fresh.until(|d| d.engine.is_synced(RELAY, doc)).await);
    assert_eq!(fresh.engine.heads(doc).unwrap(), heads);
    fresh
}

fn lunch(am: &mut Automerge) {
    Conversation::create(
        am,
        &NewConversation {
            title: "Lunch".into(),
            participants: vec!["alice".into(), "bob".into()],
        },
        T,
    )
    .unwrap();
    weft_schema::send_message(am, &NewMessage::text("alice", "noon?"), msg_id(1), T).unwrap();
}

fn msg_id(n: u8) -> Id {
    Id::from_bytes([n; 16])
}

/// A write that breaks the rules, made to a document by the attacker.
type Attack<'a> = Box<dyn FnOnce(&mut Automerge) + 'a>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_posts_edits_or_deletes_in_anothers_name_and_the_owner_moderates() {
    let (relay, _kinds) = relay();
    let (mut alice, doc) = alice_creates(&relay, lunch).await;

    // Bob posts as Alice; edits and deletes her message; writes a key that breaks the schema;
    // changes the kind. Each from a fresh device, since a refusal ends the subscription.
    let attacks: Vec<(&str, Attack<'_>)> = vec![
        (
            "author",
            Box::new(|am| {
                weft_schema::send_message(am, &NewMessage::text("alice", "forged"), msg_id(2), T)
                    .unwrap();
            }),
        ),
        (
            "its author",
            Box::new(|am| weft_schema::edit_message(am, &msg_id(1), "hijacked", T).unwrap()),
        ),
        (
            "deleted",
            Box::new(|am| weft_schema::delete_message(am, &msg_id(1), T).unwrap()),
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
        let mut bob = member(&relay, "bob", doc, Role::ReadWrite).await;
        let why = refused(&mut bob, doc, attack).await;
        assert!(why.contains(says), "refused for {why:?}, expected {says:?}");
    }

    // Bob's own message is fine, and Alice (the owner) may moderate it away.
    let mut bob = member(&relay, "bob", doc, Role::ReadWrite).await;
    accepted(&mut bob, doc, |am| {
        weft_schema::send_message(am, &NewMessage::text("bob", "spam"), msg_id(3), T + 1).unwrap();
    })
    .await;
    assert!(
        alice
            .until(|d| d
                .engine
                .read(doc, |x| weft_schema::find_message(
                    x.automerge(),
                    &msg_id(3)
                )
                .ok()
                .and_then(|p| p.value)
                .is_some())
                .unwrap_or(false))
            .await
    );
    accepted(&mut alice, doc, |am| {
        weft_schema::delete_message(am, &msg_id(3), T + 2).unwrap()
    })
    .await;
    let heads = alice.engine.heads(doc).unwrap();

    let relay = relay.restart();
    let mut fresh = fetched(&relay, doc, &heads).await;
    let msgs = fresh
        .engine
        .read(doc, |d| weft_schema::messages(d.automerge()).unwrap().value)
        .unwrap();
    let shown: Vec<(String, String, bool)> = msgs
        .iter()
        .map(|m| (m.author.clone(), m.body.clone(), m.deleted))
        .collect();
    assert_eq!(
        shown,
        vec![
            ("alice".to_string(), "noon?".to_string(), false),
            ("bob".to_string(), String::new(), true),
        ]
    );
}

fn set_status(to: &'static str) -> impl FnOnce(&mut Automerge) {
    move |am| {
        let mut tx = am.transaction();
        tx.put(ROOT, "status", to).unwrap();
        tx.commit();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escrow_moves_only_through_its_transitions_by_the_right_party() {
    let (relay, _kinds) = relay();
    // Alice sells to Bob.
    let (mut alice, doc) = alice_creates(&relay, |am| {
        let mut tx = am.transaction();
        tx.put(ROOT, "kind", "escrow").unwrap();
        tx.put(ROOT, "buyer", "bob").unwrap();
        tx.put(ROOT, "seller", "alice").unwrap();
        tx.put(ROOT, "amount", 100).unwrap();
        tx.put(ROOT, "status", "pending").unwrap();
        tx.commit();
    })
    .await;
    // The buyer skipping a step, the seller funding: refused.
    let mut bob = member(&relay, "bob", doc, Role::ReadWrite).await;
    let why = refused(&mut bob, doc, set_status("shipped")).await;
    assert!(why.contains("may not go from"), "{why}");
    let why = refused(&mut alice, doc, set_status("funded")).await;
    assert!(why.contains("buyer"), "{why}");
    // The right moves in the right order.
    let mut alice = Device::connect(&relay, relay.token(&alice_claims())).await;
    alice.subscribe(doc).await;
    assert!(alice.until(|d| d.engine.is_synced(RELAY, doc)).await);
    let mut bob = member(&relay, "bob", doc, Role::ReadWrite).await;
    accepted(&mut bob, doc, set_status("funded")).await;
    assert!(
        alice
            .until(|d| d.get(doc, "status").as_deref() == Some("funded"))
            .await
    );
    accepted(&mut alice, doc, set_status("shipped")).await;
    // The seller releasing the funds to herself: refused.
    let why = refused(&mut alice, doc, set_status("released")).await;
    assert!(why.contains("buyer"), "{why}");
    // Fixed fields stay fixed, even for the owner.
    let mut alice = Device::connect(&relay, relay.token(&alice_claims())).await;
    alice.subscribe(doc).await;
    assert!(alice.until(|d| d.engine.is_synced(RELAY, doc)).await);
    let why = refused(&mut alice, doc, |am| {
        let mut tx = am.transaction();
        tx.put(ROOT, "amount", 1_000_000).unwrap();
        tx.commit();
    })
    .await;
    assert!(why.contains("fixed"), "{why}");
    let mut check = member(&relay, "bob", doc, Role::ReadWrite).await;
    assert_eq!(check.get(doc, "status").as_deref(), Some("shipped"));
    let heads = check.engine.heads(doc).unwrap();
    let relay = relay.restart();
    let mut fresh = fetched(&relay, doc, &heads).await;
    assert_eq!(fresh.get(doc, "status").as_deref(), Some("shipped"));
    let amount = fresh
        .engine
        .read(doc, |d| {
            d.automerge()
                .get(ROOT, "amount")
                .unwrap()
                .map(|(v, _)| v.to_string())
        })
        .unwrap();
    assert_eq!(amount.as_deref(), Some("100"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_bound_to_one_user_cannot_be_used_by_another() {
    let (relay, _kinds) = relay();
    let (mut alice, doc) = alice_creates(&relay, lunch).await;
    let heads = alice.engine.heads(doc).unwrap();
    // Bob replays a message written with Alice's actor.
    let saved = alice.engine.read(doc, |d| d.save()).unwrap();
    let alices_actor = alice
        .engine
        .read(doc, |d| {
            d.automerge()
                .get_last_local_change()
                .map(|c| c.actor_id().clone())
        })
        .unwrap()
        .unwrap();
    let mut stolen = Automerge::load(&saved).unwrap().with_actor(alices_actor);
    weft_schema::send_message(&mut stolen, &NewMessage::text("alice", "x"), msg_id(9), T).unwrap();
    let raw = stolen.get_last_local_change().unwrap().raw_bytes().to_vec();
    let mut bob = member(&relay, "bob", doc, Role::ReadWrite).await;
    bob.writer
        .send(&Message::Changes {
            doc,
            changes: vec![raw.into()],
        })
        .await
        .unwrap();
    loop {
        match bob.recv(Duration::from_secs(30)).await {
            Ok(Some(Message::Error {
                code: ErrorCode::REFUSED,
                message,
                ..
            })) => {
                assert!(message.contains("identity"), "{message}");
                break;
            }
            Ok(Some(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    let relay = relay.restart();
    fetched(&relay, doc, &heads).await;
}
