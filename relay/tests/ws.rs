//! The relay's WebSocket endpoint driven by a raw client (tokio-tungstenite, hand-built CBOR):
//! what malformed or hostile automerge-repo clients get. `ws_interop.rs` drives the real npm
//! client.

mod common;

use ciborium::Value;
use common::ws::{now, Device, Relay, RELAY};
use common::wsclient::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use weft_core::wire::Message;
use weft_core::{Document, Role};
use weft_relay::Claims;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_frame_closes_only_its_own_socket() {
    let relay = Relay::start(&["--ws-max-frame", "64KiB"]);
    let token = relay.token(&Claims::new("alice", now(), 3600).with_create(true));

    // A well-behaved client is connected throughout.
    let mut good = joined(&relay, &token, "good").await;
    let first = upload(&mut good, "good", doc(1)).await;
    assert_eq!((first.kind(), first.doc()), (Some("sync"), Some(doc(1))));

    // A refused token never gets a WebSocket.
    assert_eq!(connect(&relay, "not-a-jwt").await.err(), Some(401));

    // Anything before join.
    let mut ws = connect(&relay, &token).await.unwrap();
    send(&mut ws, sync_msg("sync", "early", doc(2), empty_sync())).await;
    assert_eq!(close_code(&recv(&mut ws).await), Some(CloseCode::Policy));

    // Each bad frame, on a socket of its own.
    for (what, frame, code) in bad_frames() {
        let mut ws = joined(&relay, &token, "bad").await;
        ws.send(frame).await.unwrap();
        let got = recv_skipping_errors(&mut ws).await;
        assert_eq!(close_code(&got), Some(code), "{what}: {got:?}");
    }

    // Gossip and legacy messages are accepted (and ignored): the socket stays open.
    for frame in ignored_messages() {
        send(&mut good, frame).await;
    }

    // The well-behaved client never noticed.
    let later = upload(&mut good, "good", doc(3)).await;
    assert_eq!((later.kind(), later.doc()), (Some("sync"), Some(doc(3))));
}

/// Frames that close the socket that sent them, each with what it is and the close code.
fn bad_frames() -> Vec<(&'static str, WsMessage, CloseCode)> {
    let not_automerge = sync_msg("sync", "bad", doc(2), vec![1, 2, 3]);
    let data_as_text = cbor(vec![
        ("type", text("sync")),
        ("senderId", text("bad")),
        ("documentId", text(&doc(2).to_string())),
        ("data", text("AAEC")),
    ]);
    vec![
        (
            "a text frame",
            WsMessage::Text("{}".into()),
            CloseCode::Unsupported,
        ),
        (
            "not CBOR",
            WsMessage::Binary(vec![0xff, 0xfe].into()),
            CloseCode::Invalid,
        ),
        (
            "CBOR but not a message",
            WsMessage::Binary(vec![0x82, 0x01, 0x02].into()),
            CloseCode::Invalid,
        ),
        (
            "a wrong field type",
            WsMessage::Binary(data_as_text.into()),
            CloseCode::Invalid,
        ),
        (
            "sync data that is not an Automerge sync message",
            WsMessage::Binary(not_automerge.into()),
            CloseCode::Invalid,
        ),
        (
            "a frame over --ws-max-frame",
            WsMessage::Binary(vec![0u8; 65 * 1024].into()),
            CloseCode::Size,
        ),
        (
            "another peer's senderId",
            WsMessage::Binary(sync_msg("sync", "someone-else", doc(2), empty_sync()).into()),
            CloseCode::Policy,
        ),
        (
            "a second join",
            WsMessage::Binary(join_msg("bad").into()),
            CloseCode::Policy,
        ),
    ]
}

/// Gossip and legacy messages the relay accepts and ignores.
fn ignored_messages() -> [Vec<u8>; 4] {
    let heads = Value::Map(vec![(
        text("storage-1"),
        Value::Map(vec![
            (text("heads"), Value::Array(vec![])),
            (text("timestamp"), Value::Float(1.7e12)),
        ]),
    )]);
    [
        cbor(vec![
            ("type", text("remote-subscription-change")),
            ("senderId", text("good")),
            ("targetId", text("relay")),
            ("add", Value::Array(vec![text("storage-1")])),
            ("remove", Value::Null),
        ]),
        cbor(vec![
            ("type", text("remote-heads-changed")),
            ("senderId", text("good")),
            ("targetId", text("relay")),
            ("documentId", text(&doc(1).to_string())),
            ("newHeads", heads),
        ]),
        cbor(vec![
            ("type", text("doc-unavailable")),
            ("senderId", text("good")),
            ("targetId", text("relay")),
            ("documentId", text(&doc(1).to_string())),
        ]),
        cbor(vec![("type", text("leave")), ("senderId", text("good"))]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_the_token_does_not_grant_is_unavailable_whether_or_not_it_exists() {
    let relay = Relay::start(&[]);
    let alice = relay.token(&Claims::new("alice", now(), 3600).with_create(true));
    let mut ws = joined(&relay, &alice, "alice-tab").await;
    // Asking for a document nobody has is not creating it, even with a token that may create.
    let got = request(&mut ws, "alice-tab", doc(1)).await;
    assert_eq!(
        (got.kind(), got.doc()),
        (Some("doc-unavailable"), Some(doc(1)))
    );
    let got = upload(&mut ws, "alice-tab", doc(1)).await;
    assert_eq!(got.kind(), Some("sync"));

    let bob = relay.token(&Claims::new("bob", now(), 3600));
    let mut ws = joined(&relay, &bob, "bob-tab").await;
    for d in [doc(1), doc(9)] {
        let got = request(&mut ws, "bob-tab", d).await;
        assert_eq!((got.kind(), got.doc()), (Some("doc-unavailable"), Some(d)));
    }
    // Ephemeral data for a refused document goes nowhere, and the socket stays usable.
    send(
        &mut ws,
        cbor(vec![
            ("type", text("ephemeral")),
            ("senderId", text("bob-tab")),
            ("targetId", text("relay")),
            ("documentId", text(&doc(1).to_string())),
            ("count", Value::Float(1.0)),
            ("sessionId", text("s")),
            ("data", Value::Bytes(vec![0xa0])),
        ]),
    )
    .await;
    let got = request(&mut ws, "bob-tab", doc(1)).await;
    assert_eq!(got.kind(), Some("doc-unavailable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_peer_id_under_another_user_neither_evicts_nor_sees_the_first() {
    let relay = Relay::start(&[]);
    let alice = relay.token(&Claims::new("alice", now(), 3600).with_create(true));
    let mallory = relay.token(&Claims::new("mallory", now(), 3600));
    let mut a = joined(&relay, &alice, "tab").await;
    assert_eq!(upload(&mut a, "tab", doc(1)).await.kind(), Some("sync"));

    let mut m = joined(&relay, &mallory, "tab").await;
    // Alice keeps working on her socket, on her document and a new one.
    send(
        &mut a,
        cbor(vec![
            ("type", text("ephemeral")),
            ("senderId", text("tab")),
            ("targetId", text("relay")),
            ("documentId", text(&doc(1).to_string())),
            ("count", Value::Integer(1.into())),
            ("sessionId", text("s")),
            ("data", Value::Bytes(vec![0xa0])),
        ]),
    )
    .await;
    let got = upload(&mut a, "tab", doc(2)).await;
    assert_eq!((got.kind(), got.doc()), (Some("sync"), Some(doc(2))));

    // Mallory gets nothing of Alice's: her next messages are exactly the refusals she asked for.
    for d in [doc(1), doc(2)] {
        let got = request(&mut m, "tab", d).await;
        assert_eq!((got.kind(), got.doc()), (Some("doc-unavailable"), Some(d)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_closes_the_socket() {
    let relay = Relay::start(&["--jwt-leeway", "0s"]);
    let short = relay.token(&Claims::new("alice", now(), 2).with_create(true));
    let mut ws = joined(&relay, &short, "tab").await;
    assert_eq!(upload(&mut ws, "tab", doc(1)).await.kind(), Some("sync"));
    // Whatever sync traffic comes first, the socket ends with a close saying why.
    let got = loop {
        let got = recv(&mut ws).await;
        if matches!(got, Got::Closed(_)) {
            break got;
        }
    };
    let Got::Closed(Some(frame)) = &got else {
        panic!("expected a close frame: {got:?}")
    };
    assert_eq!(frame.code, CloseCode::Policy);
    assert!(frame.reason.contains("expired"), "{frame:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_websocket_clients_and_the_relay_exits_cleanly() {
    let relay = Relay::start(&[]);
    let token = relay.token(&Claims::new("alice", now(), 3600).with_create(true));
    let mut ws = joined(&relay, &token, "tab").await;
    assert_eq!(upload(&mut ws, "tab", doc(1)).await.kind(), Some("sync"));
    let mut child = relay.terminate();
    let got = loop {
        let got = recv(&mut ws).await;
        if matches!(got, Got::Closed(_)) {
            break got;
        }
    };
    assert_eq!(close_code(&got), Some(CloseCode::Away), "{got:?}");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_gives_a_websocket_client_the_document_and_unsharing_takes_it_away() {
    let relay = Relay::start(&[]);
    let d = doc(5);
    let mut phone = Device::connect(
        &relay,
        relay.token(&Claims::new("alice", now(), 3600).with_create(true)),
    )
    .await;
    phone.engine.create(d, Document::new());
    phone.set(d, "title", "trip");
    phone.subscribe(d).await;
    assert!(phone.until(|p| p.engine.is_synced(RELAY, d)).await);

    let bob = relay.token(&Claims::new("bob", now(), 3600));
    let mut ws = joined(&relay, &bob, "bob-tab").await;
    assert_eq!(
        request(&mut ws, "bob-tab", d).await.kind(),
        Some("doc-unavailable")
    );

    // Alice shares: Bob's browser now gets the document.
    let share = Message::Share {
        id: 1,
        doc: d,
        user: "bob".into(),
        role: Role::ReadWrite,
    };
    phone.writer.send(&share).await.unwrap();
    assert!(phone.until(|p| p.done.contains(&1)).await);
    let got = request(&mut ws, "bob-tab", d).await;
    assert_eq!((got.kind(), got.doc()), (Some("sync"), Some(d)));

    // Alice unshares: the open subscription ends at once.
    let unshare = Message::Unshare {
        id: 2,
        doc: d,
        user: "bob".into(),
    };
    phone.writer.send(&unshare).await.unwrap();
    assert!(phone.until(|p| p.done.contains(&2)).await);
    loop {
        let got = recv(&mut ws).await;
        assert!(!matches!(got, Got::Closed(_)), "the socket closed: {got:?}");
        if got.kind() == Some("doc-unavailable") {
            assert_eq!(got.doc(), Some(d));
            break;
        }
    }
}
