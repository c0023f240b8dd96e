//! weft's own messages on the automerge-repo socket (`weft-…`, decision 0014), driven by a raw
//! client against the real relay: discovery with live additions and removals, presence with a
//! status crossing between two sockets, share/unshare/delete under the hub's rules, and token
//! refresh on a live socket.

mod common;

use ciborium::Value;
use common::ws::{now, Device, Relay, RELAY};
use common::wsclient::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use weft_core::wire::Message;
use weft_core::{DocId, Document, Role};
use weft_relay::Claims;

fn weft(kind: &str, peer: &str, mut fields: Vec<(&str, Value)>) -> Vec<u8> {
    let mut all = vec![
        ("type", text(kind)),
        ("senderId", text(peer)),
        ("targetId", text("relay")),
    ];
    all.append(&mut fields);
    cbor(all)
}

fn id_field(id: u64) -> (&'static str, Value) {
    ("id", Value::Integer(id.into()))
}

fn doc_field(d: DocId) -> (&'static str, Value) {
    ("documentId", text(&d.to_string()))
}

/// The next message of type `kind`, skipping sync traffic and other `weft-…` messages; a close
/// fails the test.
async fn next(ws: &mut Client, kind: &str) -> Got {
    for _ in 0..100 {
        let got = recv(ws).await;
        if let Got::Closed(frame) = &got {
            panic!("closed while waiting for {kind}: {frame:?}");
        }
        if got.kind() == Some(kind) {
            return got;
        }
    }
    panic!("no {kind}");
}

/// The documents of a `weft-docs` message, with their roles.
fn listed(got: &Got) -> Vec<(DocId, String)> {
    let Some(Value::Array(docs)) = got.field("docs") else {
        panic!("no docs in {got:?}")
    };
    docs.iter()
        .map(|entry| {
            let Value::Map(fields) = entry else {
                panic!("{entry:?}")
            };
            let get = |name: &str| match fields.iter().find(|(k, _)| *k == text(name)) {
                Some((_, Value::Text(t))) => t.clone(),
                other => panic!("{name}: {other:?}"),
            };
            (get("documentId").parse().unwrap(), get("role"))
        })
        .collect()
}

fn removed(got: &Got) -> Vec<DocId> {
    let Some(Value::Array(docs)) = got.field("removed") else {
        panic!("no removed in {got:?}")
    };
    docs.iter()
        .map(|d| match d {
            Value::Text(t) => t.parse().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// A joined socket that said `weft-hello`, with its first listing.
async fn hello(relay: &Relay, token: &str, peer: &str) -> (Client, Got) {
    let mut ws = joined(relay, token, peer).await;
    send(&mut ws, weft("weft-hello", peer, vec![])).await;
    let welcome = next(&mut ws, "weft-welcome").await;
    assert!(matches!(welcome.field("storageId"), Some(Value::Text(_))));
    let listing = next(&mut ws, "weft-docs").await;
    assert_eq!(listing.field("full"), Some(&Value::Bool(true)));
    next(&mut ws, "weft-docs-end").await;
    (ws, listing)
}

/// A QUIC device of `user` that created `d` and synced it to the relay.
async fn owner_device(relay: &Relay, user: &str, d: DocId) -> Device {
    let token = relay.token(&Claims::new(user, now(), 3600).with_create(true));
    let mut device = Device::connect(relay, token).await;
    device.engine.create(d, Document::new());
    device.set(d, "title", "trip");
    device.subscribe(d).await;
    assert!(device.until(|p| p.engine.is_synced(RELAY, d)).await);
    device
}

async fn reply(ws: &mut Client, id: u64) -> Got {
    let got = next(ws, "weft-reply").await;
    assert_eq!(got.field("id"), Some(&Value::Integer(id.into())), "{got:?}");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_then_follows_what_a_quic_device_shares() {
    let relay = Relay::start(&[]);
    let (d, mine) = (doc(1), doc(2));
    let mut phone = owner_device(&relay, "alice", d).await;
    let bob = relay.token(&Claims::new("bob", now(), 3600).with_create(true));
    {
        // Bob owns a document: it is in his first listing.
        let mut ws = joined(&relay, &bob, "setup").await;
        upload(&mut ws, "setup", mine).await;
    }
    let (mut ws, first) = hello(&relay, &bob, "bob-tab").await;
    assert_eq!(listed(&first), vec![(mine, "rw".to_owned())]);

    let share = Message::Share {
        id: 1,
        doc: d,
        user: "bob".into(),
        role: Role::ReadOnly,
    };
    phone.writer.send(&share).await.unwrap();
    let added = next(&mut ws, "weft-docs").await;
    assert_eq!(added.field("full"), Some(&Value::Bool(false)));
    assert_eq!(listed(&added), vec![(d, "ro".to_owned())]);

    let unshare = Message::Unshare {
        id: 2,
        doc: d,
        user: "bob".into(),
    };
    phone.writer.send(&unshare).await.unwrap();
    let gone = next(&mut ws, "weft-docs").await;
    assert_eq!(removed(&gone), vec![d]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_statuses_cross_between_two_sockets() {
    let relay = Relay::start(&[]);
    let d = doc(3);
    let alice = relay.token(&Claims::new("alice", now(), 3600).with_create(true));
    let bob = relay.token(&Claims::new("bob", now(), 3600).with_doc(d, Role::ReadWrite));
    let (mut a, _) = hello(&relay, &alice, "alice-tab").await;
    send(&mut a, sync_msg("sync", "alice-tab", d, empty_sync())).await;
    next(&mut a, "sync").await;

    // Bob joins the document: he learns Alice is here, and she learns of him.
    let (mut b, _) = hello(&relay, &bob, "bob-tab").await;
    send(&mut b, sync_msg("request", "bob-tab", d, empty_sync())).await;
    let here = next(&mut b, "weft-presence").await;
    assert_eq!(here.doc(), Some(d));
    assert_eq!(here.field("user"), Some(&text("alice")));
    assert_eq!(here.field("online"), Some(&Value::Bool(true)));
    let joined_b = next(&mut a, "weft-presence").await;
    assert_eq!(joined_b.field("user"), Some(&text("bob")));

    // Alice types: Bob sees her status.
    let status = vec![doc_field(d), ("status", text("typing"))];
    send(&mut a, weft("weft-presence", "alice-tab", status)).await;
    let typing = next(&mut b, "weft-presence").await;
    assert_eq!(typing.field("user"), Some(&text("alice")));
    assert_eq!(typing.field("status"), Some(&text("typing")));

    // A status longer than the bound closes the sender's socket.
    let long = vec![doc_field(d), ("status", text(&"x".repeat(65)))];
    send(&mut a, weft("weft-presence", "alice-tab", long)).await;
    let end = recv_skipping_errors(&mut a).await;
    assert_eq!(close_code(&end), Some(CloseCode::Invalid));

    // Bob sees Alice leave.
    let left = next(&mut b, "weft-presence").await;
    assert_eq!(left.field("online"), Some(&Value::Bool(false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_unshare_and_delete_follow_the_hubs_rules() {
    let relay = Relay::start(&[]);
    let d = doc(4);
    let alice = relay.token(&Claims::new("alice", now(), 3600).with_create(true));
    let bob = relay.token(&Claims::new("bob", now(), 3600));
    let (mut a, _) = hello(&relay, &alice, "alice-tab").await;
    upload(&mut a, "alice-tab", d).await;
    let (mut b, _) = hello(&relay, &bob, "bob-tab").await;

    // Bob may not share Alice's document.
    let to_carol = |id| {
        let fields = vec![
            id_field(id),
            doc_field(d),
            ("user", text("carol")),
            ("role", text("rw")),
        ];
        weft("weft-share", "bob-tab", fields)
    };
    send(&mut b, to_carol(1)).await;
    let refused = reply(&mut b, 1).await;
    assert_eq!(refused.field("ok"), Some(&Value::Bool(false)));
    assert_eq!(refused.field("code"), Some(&Value::Integer(2.into())));

    // Alice shares with Bob: done, and Bob's listing gains the document.
    let share = vec![
        id_field(7),
        doc_field(d),
        ("user", text("bob")),
        ("role", text("rw")),
    ];
    send(&mut a, weft("weft-share", "alice-tab", share)).await;
    let done = reply(&mut a, 7).await;
    assert_eq!(done.field("ok"), Some(&Value::Bool(true)), "{done:?}");
    assert_eq!(done.doc(), Some(d));
    let added = next(&mut b, "weft-docs").await;
    assert_eq!(listed(&added), vec![(d, "rw".to_owned())]);

    // A writer is still not an owner: Bob may not delete it.
    send(
        &mut b,
        weft("weft-delete", "bob-tab", vec![id_field(2), doc_field(d)]),
    )
    .await;
    assert_eq!(
        reply(&mut b, 2).await.field("ok"),
        Some(&Value::Bool(false))
    );

    // Alice unshares, then deletes.
    let unshare = vec![id_field(8), doc_field(d), ("user", text("bob"))];
    send(&mut a, weft("weft-unshare", "alice-tab", unshare)).await;
    assert_eq!(reply(&mut a, 8).await.field("ok"), Some(&Value::Bool(true)));
    assert_eq!(removed(&next(&mut b, "weft-docs").await), vec![d]);
    send(
        &mut a,
        weft("weft-delete", "alice-tab", vec![id_field(9), doc_field(d)]),
    )
    .await;
    assert_eq!(reply(&mut a, 9).await.field("ok"), Some(&Value::Bool(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refreshed_on_a_live_socket_and_a_bad_one_refused() {
    let relay = Relay::start(&[]);
    let alice = relay.token(&Claims::new("alice", now(), 3600));
    let fresh = relay.token(&Claims::new("alice", now(), 7200));
    let expired = relay.token(&Claims::new("alice", now() - 7200, 3600));
    let mallory = relay.token(&Claims::new("mallory", now(), 3600));

    let (mut ws, _) = hello(&relay, &alice, "tab").await;
    let refresh = |id, token: &str| {
        weft(
            "weft-token",
            "tab",
            vec![id_field(id), ("token", text(token))],
        )
    };
    send(&mut ws, refresh(1, &fresh)).await;
    assert_eq!(
        reply(&mut ws, 1).await.field("ok"),
        Some(&Value::Bool(true))
    );
    // Still served after the refresh.
    send(&mut ws, weft("weft-hello", "tab", vec![])).await;
    next(&mut ws, "weft-welcome").await;

    for (peer, token) in [("tab-2", &expired), ("tab-3", &mallory)] {
        let (mut ws, _) = hello(&relay, &alice, peer).await;
        send(
            &mut ws,
            weft(
                "weft-token",
                peer,
                vec![id_field(5), ("token", text(token))],
            ),
        )
        .await;
        let refused = reply(&mut ws, 5).await;
        assert_eq!(refused.field("ok"), Some(&Value::Bool(false)));
        assert_eq!(refused.field("code"), Some(&Value::Integer(1.into())));
        // The hub then ends the socket, as it does a QUIC device's.
        let end = recv_skipping_errors(&mut ws).await;
        assert_eq!(close_code(&end), Some(CloseCode::Policy), "{end:?}");
    }
}
