//! A message written from the npm automerge-repo client with plain JavaScript strings (which
//! Automerge's JavaScript API stores as collaborative text) reads typed on a `weft` device:
//! `weft msg list` shows it like a message written by weft itself.

mod common;

use common::js::{npm_ready, Node};
use common::weft::Weft;
use common::ws::{now, Relay};
use serde_json::json;
use weft_relay::Claims;
use weft_schema::{Hlc, MessageKey};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_written_in_javascript_with_plain_strings_reads_typed() {
    if !npm_ready() {
        return;
    }
    let relay = Relay::start(&[]);
    let token = relay.token(&Claims::new("alice", now(), 3600).with_create(true));
    let alice = Weft::user("alice");
    let doc = alice
        .ok(&["doc", "new", "--kind", "conversation", "--title", "Lunch"])
        .trim()
        .to_owned();
    alice.ok(&["msg", "send", &doc, "from weft"]);
    alice.sync(relay.process(), &token);

    // The browser adds a message, every field a plain JavaScript string.
    let storage_id =
        std::fs::read_to_string(relay.data_dir().join(weft_relay::STORAGE_ID_FILE)).unwrap();
    let mut js = Node::start("driver.mjs", &[&relay.url(&token), "200"]);
    let found = js.call(json!({"cmd": "find", "doc": doc})).await;
    assert!(found["value"]["messages"].is_object(), "{found}");
    let key = MessageKey {
        created_at: Hlc::new(common::now_ms(), 0, 7).unwrap(),
        id: "fromjs1".parse().unwrap(),
    };
    let entry = json!({
        "id": "fromjs1",
        "author": "alice",
        "created_at": key.created_at.to_string(),
        "body": "from javascript",
    });
    js.call(
        json!({"cmd": "set-in", "doc": doc, "path": ["messages", key.to_string()], "value": entry}),
    )
    .await;
    js.call(json!({"cmd": "saved", "doc": doc, "storageId": storage_id.trim()}))
        .await;

    alice.sync(relay.process(), &token);
    let out = alice.run(&["msg", "list", &doc, "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "msg list failed: {stderr}");
    // Nothing skipped: both messages read typed.
    assert!(stderr.trim().is_empty(), "{stderr}");
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let bodies: Vec<&str> = list.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["from weft", "from javascript"], "{list:?}");
    assert_eq!(list[1]["id"], "fromjs1");
    assert_eq!(list[1]["author"], "alice");
}
