//! automerge-repo's "saved on the relay" status: the relay's storage id in its `peer` message
//! (stable across restarts, kept in `DATA_DIR/ws-storage-id`) and its answers to
//! `remote-subscription-change` (`remote-heads-changed` with its heads of each document), seen
//! by a raw client and by the npm client (`tests/js/driver.mjs`).

mod common;

use ciborium::Value;
use common::js::{npm_ready, Node};
use common::ws::{now, Relay};
use common::wsclient::*;
use serde_json::json;
use weft_core::automerge::sync::{self, SyncDoc};
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{Automerge, ROOT};
use weft_core::DocId;
use weft_relay::Claims;

fn map_field<'a>(map: &'a Value, name: &str) -> Option<&'a Value> {
    match map {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| matches!(k, Value::Text(t) if t == name))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// Connects and joins as `peer`: the socket and the storage id of the relay's `peer` answer.
async fn join_with_storage_id(relay: &Relay, token: &str, peer: &str) -> (Client, String) {
    let mut ws = connect(relay, token).await.unwrap();
    send(&mut ws, join_msg(peer)).await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer.kind(), Some("peer"), "{answer:?}");
    let metadata = answer.field("peerMetadata").expect("peer metadata");
    assert_eq!(
        map_field(metadata, "isEphemeral"),
        Some(&Value::Bool(false))
    );
    let Some(Value::Text(storage_id)) = map_field(metadata, "storageId") else {
        panic!("no storage id in {metadata:?}")
    };
    (ws, storage_id.clone())
}

fn encoded_heads(doc: &Automerge) -> Vec<Value> {
    doc.get_heads()
        .iter()
        .map(|h| text(&bs58::encode(h.0).with_check().into_string()))
        .collect()
}

fn subscription(peer: &str, add: &[&str], remove: &[&str]) -> Vec<u8> {
    let list = |ids: &[&str]| Value::Array(ids.iter().map(|s| text(s)).collect());
    cbor(vec![
        ("type", text("remote-subscription-change")),
        ("senderId", text(peer)),
        ("targetId", text("relay")),
        ("add", list(add)),
        ("remove", list(remove)),
    ])
}

/// Syncs `local` with the relay until the relay tells (`remote-heads-changed` under
/// `storage_id`) heads equal to `local`'s.
async fn sync_until_told(
    ws: &mut Client,
    peer: &str,
    id: DocId,
    local: &mut Automerge,
    state: &mut sync::State,
    storage_id: &str,
) {
    if let Some(msg) = local.generate_sync_message(state) {
        send(ws, sync_msg("sync", peer, id, msg.encode())).await;
    }
    for _ in 0..50 {
        let got = recv(ws).await;
        assert_eq!(got.doc(), Some(id), "{got:?}");
        match got.kind() {
            Some("sync") => {
                let Some(Value::Bytes(data)) = got.field("data") else {
                    panic!("sync without data")
                };
                let msg = sync::Message::decode(data).unwrap();
                local.receive_sync_message(state, msg).unwrap();
                if let Some(reply) = local.generate_sync_message(state) {
                    send(ws, sync_msg("sync", peer, id, reply.encode())).await;
                }
            }
            Some("remote-heads-changed") => {
                let new_heads = got.field("newHeads").unwrap();
                let entry = map_field(new_heads, storage_id).expect("our storage id");
                let Some(Value::Array(heads)) = map_field(entry, "heads") else {
                    panic!("no heads in {entry:?}")
                };
                assert!(matches!(
                    map_field(entry, "timestamp"),
                    Some(Value::Integer(_))
                ));
                if *heads == encoded_heads(local) {
                    return;
                }
            }
            other => panic!("unexpected {other:?}: {got:?}"),
        }
    }
    panic!("the relay never told heads equal to the client's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_tells_its_heads_under_a_storage_id_that_survives_restarts() {
    let relay = Relay::start(&[]);
    let token = relay.token(&Claims::new("alice", now(), 3600).with_create(true));
    let (mut ws, storage_id) = join_with_storage_id(&relay, &token, "tab").await;
    let kept = std::fs::read_to_string(relay.data_dir().join(weft_relay::STORAGE_ID_FILE)).unwrap();
    assert_eq!(kept.trim(), storage_id);

    // Subscribed before the document exists: told its heads once it does, and again after
    // every change the relay takes.
    send(&mut ws, subscription("tab", &[&storage_id], &[])).await;
    let id = doc(7);
    let mut local = Automerge::new();
    let mut state = sync::State::new();
    for value in ["one", "two"] {
        let mut tx = local.transaction();
        tx.put(ROOT, "k", value).unwrap();
        tx.commit();
        sync_until_told(&mut ws, "tab", id, &mut local, &mut state, &storage_id).await;
    }

    // A subscription asked again after an unsubscription is answered at once with the heads
    // known.
    send(&mut ws, subscription("tab", &[], &[&storage_id])).await;
    send(&mut ws, subscription("tab", &[&storage_id], &[])).await;
    let told = recv(&mut ws).await;
    assert_eq!(
        (told.kind(), told.doc()),
        (Some("remote-heads-changed"), Some(id))
    );
    let entry = map_field(told.field("newHeads").unwrap(), &storage_id).unwrap();
    assert_eq!(
        map_field(entry, "heads"),
        Some(&Value::Array(encoded_heads(&local)))
    );
    drop(ws);

    // Another relay process on the same data directory is the same storage.
    let relay = relay.restart();
    let (_ws, again) = join_with_storage_id(&relay, &token, "tab").await;
    assert_eq!(again, storage_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_npm_client_sees_the_relays_heads_reach_its_own() {
    if !npm_ready() {
        return;
    }
    let relay = Relay::start(&[]);
    let token = relay.token(&Claims::new("alice", now(), 3600).with_create(true));
    let storage_id =
        std::fs::read_to_string(relay.data_dir().join(weft_relay::STORAGE_ID_FILE)).unwrap();
    let storage_id = storage_id.trim();
    let mut js = Node::start("driver.mjs", &[&relay.url(&token), "200", "gossip"]);
    js.call(json!({"cmd": "subscribe-remotes", "storageIds": [storage_id]}))
        .await;
    let created = js.call(json!({"cmd": "create", "value": {"v": "1"}})).await;
    let doc = created["doc"].as_str().unwrap().to_owned();
    let first = js
        .call(json!({"cmd": "saved", "doc": doc, "storageId": storage_id}))
        .await;
    assert!(!first["heads"].as_array().unwrap().is_empty(), "{first}");

    js.call(json!({"cmd": "set", "doc": doc, "key": "v", "value": "2"}))
        .await;
    let second = js
        .call(json!({"cmd": "saved", "doc": doc, "storageId": storage_id}))
        .await;
    assert_ne!(first["heads"], second["heads"]);
}
