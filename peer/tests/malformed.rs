//! A document holding entries another writer malformed (a hostile or buggy client): every
//! `weft` command still works on the rest, and names what it skipped.

mod common;

use common::Dev;
use weft_peer::schema::automerge::transaction::Transactable;
use weft_peer::schema::automerge::{ObjType, ReadDoc, ROOT};
use weft_peer::schema::{Hlc, Id, MessageKey};
use weft_peer::{DataDir, Device, DocId};

/// Writes, with raw Automerge on this device's copy of `doc`, what a hostile client could
/// sync to it: a key that isn't a message key, and a message whose author is a number.
async fn vandalize(dev: &Dev, doc: &str) -> MessageKey {
    let device = Device::open(DataDir::new(dev.dir.path())).await.unwrap();
    let doc: DocId = doc.parse().unwrap();
    let key = MessageKey {
        created_at: Hlc::new(1_700_000_000_000, 0, 1).unwrap(),
        id: Id::from_bytes([7; 16]),
    };
    let (k, id, created_at) = (
        key.to_string(),
        key.id.to_string(),
        key.created_at.to_string(),
    );
    device
        .change(doc, move |am| {
            let mut tx = am.transaction();
            let (_, msgs) = tx.get(ROOT, "messages").unwrap().unwrap();
            tx.put(&msgs, "zzz", 42).unwrap();
            let m = tx.put_object(&msgs, k.as_str(), ObjType::Map).unwrap();
            tx.put(&m, "id", id).unwrap();
            tx.put(&m, "author", 42).unwrap();
            tx.put(&m, "created_at", created_at).unwrap();
            tx.put(&m, "body", "from nobody").unwrap();
            tx.commit();
        })
        .await
        .unwrap();
    device.close().await;
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msg_list_prints_the_valid_messages_and_names_the_bad_entries() {
    let alice = Dev::user("alice");
    let doc = alice.new_conversation("Lunch");
    let noon = alice.ok(&["msg", "send", &doc, "Noon?"]).trim().to_owned();
    let bad = vandalize(&alice, &doc).await;

    let out = alice.run(&["msg", "list", &doc, "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "msg list failed: {stderr}");
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], noon.as_str());
    assert_eq!(list[0]["body"], "Noon?");
    // One line on stderr per skipped entry, naming its path.
    let lines: Vec<&str> = stderr.lines().collect();
    let bad_at = format!("messages[\"{bad}\"]");
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines.contains(
            &format!(
                "skipped {bad_at}: at {bad_at}.author: expected a user id, found the integer 42"
            )
            .as_str()
        ),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("skipped messages.zzz: at messages.zzz: expected a message key")),
        "{stderr}"
    );

    // Writing still works, and so does the plain listing.
    let later = alice
        .ok(&["msg", "send", &doc, "Still on?"])
        .trim()
        .to_owned();
    alice.ok(&["msg", "edit", &doc, &noon, "Noon, then?"]);
    let out = alice.run(&["msg", "list", &doc]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("alice: Noon, then? (edited)"), "{text}");
    assert!(text.contains(&later), "{text}");
    assert!(!text.contains("from nobody"), "{text}");
    assert_eq!(alice.msg_count(&doc), 2);
}
