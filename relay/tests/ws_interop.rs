//! Interop with the real JavaScript client: `@automerge/automerge-repo` 2.5 and its WebSocket
//! network adapter from npm (pinned in `tests/js/package-lock.json`), driven by
//! `tests/js/driver.mjs`, against the real `weft-relay` binary and QUIC devices.
//!
//! The npm packages are installed once into `tests/js/node_modules` (`npm install` of the
//! locked versions; see `common/js.rs`). Without node or npm these tests fail when `CI` is set
//! and are skipped (with a note on stderr) otherwise.

mod common;

use ciborium::Value as Cbor;
use common::js::{npm_ready, Node};
use common::ws::{now, Device, Relay, RELAY};
use serde_json::json;
use weft_core::wire::Message;
use weft_core::{DocId, Document, Role};
use weft_relay::Claims;

/// The scripted automerge-repo client (`tests/js/driver.mjs`) connected to `url`.
fn driver(url: &str) -> Node {
    // 200: the client's reconnect interval, ms.
    Node::start("driver.mjs", &[url, "200"])
}

fn cbor(value: &Cbor) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).unwrap();
    out
}

fn new_doc() -> DocId {
    DocId::from_bytes(rand::random())
}

/// A QUIC device of `user` that creates `doc` with `key = value` and syncs it to the relay.
async fn device_with_doc(relay: &Relay, user: &str, doc: DocId, key: &str, value: &str) -> Device {
    let mut device = Device::connect(
        relay,
        relay.token(&Claims::new(user, now(), 3600).with_create(true)),
    )
    .await;
    device.engine.create(doc, Document::new());
    device.set(doc, key, value);
    device.subscribe(doc).await;
    assert!(device.until(|d| d.engine.is_synced(RELAY, doc)).await);
    device
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_created_in_javascript_is_read_by_a_quic_device() {
    if !npm_ready() {
        return;
    }
    let relay = Relay::start(&[]);
    let token = relay.token(&Claims::new("alice", now(), 3600).with_create(true));
    let mut js = driver(&relay.url(&token));
    let created = js
        .call(json!({"cmd": "create", "value": {"title": "from the web"}}))
        .await;
    let doc: DocId = created["doc"].as_str().unwrap().parse().unwrap();

    // Alice's phone (another device of hers) reads it over QUIC.
    let mut phone = Device::connect(&relay, token).await;
    phone.subscribe(doc).await;
    assert!(
        phone
            .until(|d| d.get(doc, "title").as_deref() == Some("from the web"))
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_devices_document_is_found_in_javascript_and_changes_flow_both_ways() {
    if !npm_ready() {
        return;
    }
    let relay = Relay::start(&[]);
    let doc = new_doc();
    let mut phone = device_with_doc(&relay, "alice", doc, "from_phone", "hello").await;

    // Bob's browser, granted the document by his token, finds it.
    let bob = relay.token(&Claims::new("bob", now(), 3600).with_doc(doc, Role::ReadWrite));
    let mut js = driver(&relay.url(&bob));
    let found = js
        .call(json!({"cmd": "find", "doc": doc.to_string()}))
        .await;
    assert_eq!(found["value"]["from_phone"], json!("hello"), "{found}");

    js.call(json!({"cmd": "set", "doc": doc.to_string(), "key": "from_web", "value": "hi"}))
        .await;
    assert!(
        phone
            .until(|d| d.get(doc, "from_web").as_deref() == Some("hi"))
            .await
    );

    phone.set(doc, "reply", "welcome");
    phone.flush().await;
    let seen = js
        .call(json!({"cmd": "wait", "doc": doc.to_string(), "key": "reply"}))
        .await;
    assert_eq!(seen["value"]["reply"], json!("welcome"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_messages_cross_between_javascript_and_a_quic_device() {
    if !npm_ready() {
        return;
    }
    let relay = Relay::start(&[]);
    let doc = new_doc();
    let mut phone = device_with_doc(&relay, "alice", doc, "title", "trip").await;
    let token = relay.token(&Claims::new("alice", now(), 3600));
    let mut js = driver(&relay.url(&token));
    js.call(json!({"cmd": "find", "doc": doc.to_string()}))
        .await;

    // The browser's cursor reaches the phone as automerge-repo encoded it (CBOR).
    js.call(json!({"cmd": "broadcast", "doc": doc.to_string(), "message": {"cursor": 7}}))
        .await;
    let (on, data) = phone.ephemeral().await;
    assert_eq!(on, doc);
    let got: Cbor = ciborium::from_reader(&data[..]).unwrap();
    assert_eq!(
        got,
        Cbor::Map(vec![(Cbor::Text("cursor".into()), Cbor::Integer(7.into()))])
    );

    // The phone's typing indicator reaches the browser.
    let typing = cbor(&Cbor::Map(vec![(
        Cbor::Text("typing".into()),
        Cbor::Bool(true),
    )]));
    phone
        .writer
        .send(&Message::Ephemeral {
            doc,
            user: None,
            device: None,
            data: typing,
        })
        .await
        .unwrap();
    let event = js.event().await;
    assert_eq!(event["event"], json!("ephemeral"), "{event}");
    assert_eq!(event["doc"], json!(doc.to_string()));
    assert_eq!(event["message"], json!({"typing": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_client_without_a_grant_gets_doc_unavailable() {
    if !npm_ready() {
        return;
    }
    let relay = Relay::start(&[]);
    let doc = new_doc();
    let _phone = device_with_doc(&relay, "alice", doc, "secret", "plans").await;
    let mallory = relay.token(&Claims::new("mallory", now(), 3600));
    let mut js = driver(&relay.url(&mallory));
    // The same answer whether the document exists or not.
    for d in [doc, new_doc()] {
        let found = js.call(json!({"cmd": "find", "doc": d.to_string()})).await;
        assert_eq!(found["unavailable"], json!(true), "{found}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_client_reconnects_after_a_relay_restart_and_catches_up() {
    if !npm_ready() {
        return;
    }
    let relay = Relay::start(&[]);
    let token = relay.token(&Claims::new("alice", now(), 3600).with_create(true));
    let mut js = driver(&relay.url(&token));
    let created = js.call(json!({"cmd": "create", "value": {"v": "1"}})).await;
    let doc: DocId = created["doc"].as_str().unwrap().parse().unwrap();
    {
        // The relay has it once another device can read it.
        let mut phone = Device::connect(&relay, token.clone()).await;
        phone.subscribe(doc).await;
        assert!(
            phone
                .until(|d| d.get(doc, "v").as_deref() == Some("1"))
                .await
        );
    }

    // The relay restarts on the same address; meanwhile both sides write.
    let relay = relay.restart();
    js.call(json!({"cmd": "set", "doc": doc.to_string(), "key": "offline", "value": "web"}))
        .await;
    let mut phone = Device::connect(&relay, token).await;
    phone.subscribe(doc).await;
    assert!(
        phone
            .until(|d| d.get(doc, "v").as_deref() == Some("1"))
            .await
    );
    phone.set(doc, "while_away", "phone");
    phone.flush().await;

    // The browser reconnects by itself and both catch up.
    let seen = js
        .call(json!({"cmd": "wait", "doc": doc.to_string(), "key": "while_away"}))
        .await;
    assert_eq!(seen["value"]["while_away"], json!("phone"));
    assert!(
        phone
            .until(|d| d.get(doc, "offline").as_deref() == Some("web"))
            .await
    );
}
