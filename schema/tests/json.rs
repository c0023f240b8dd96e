//! The two JSON views, byte for byte.

mod common;

use common::*;
use serde_json::json;
use weft_schema::automerge::transaction::Transactable;
use weft_schema::automerge::{ObjType, ScalarValue, ROOT};
use weft_schema::*;

#[test]
fn the_message_list_has_exactly_the_contract_fields_in_display_order() {
    let mut doc = conversation("x");
    let a = send_message(
        &mut doc,
        &NewMessage::text("alice", "Hi \"Bob\"\n👋"),
        id(1),
        T0,
    )
    .unwrap();
    let b = send_message(&mut doc, &NewMessage::text("bob", "hey"), id(2), T0 + 1500).unwrap();
    edit_message(&mut doc, &b.id, "hey!", T0 + 2000).unwrap();
    let c = send_message(
        &mut doc,
        &NewMessage::text("alice", "secret"),
        id(3),
        T0 + 2000,
    )
    .unwrap();
    delete_message(&mut doc, &c.id, T0 + 3000).unwrap();
    assert!(a.created_at < b.created_at && b.created_at < c.created_at);
    let expected = format!(
        concat!(
            r#"[{{"id":"{}","author":"alice","body":"Hi \"Bob\"\n👋","created_at":"2023-11-14T22:13:20.000Z","edited_at":null,"deleted":false}},"#,
            r#"{{"id":"{}","author":"bob","body":"hey!","created_at":"2023-11-14T22:13:21.500Z","edited_at":"2023-11-14T22:13:22.000Z","deleted":false}},"#,
            r#"{{"id":"{}","author":"alice","body":"","created_at":"2023-11-14T22:13:22.000Z","edited_at":null,"deleted":true}}]"#
        ),
        id(1),
        id(2),
        id(3)
    );
    assert_eq!(complete(messages_json(&doc)), expected);
    assert_eq!(
        messages_to_json(&complete(last_messages(&doc, 3))),
        expected
    );
    assert_eq!(messages_to_json(&[]), "[]");
}

#[test]
fn the_whole_document_renders_every_field() {
    let mut doc = conversation("Lunch");
    let m = send_message(&mut doc, &NewMessage::text("alice", "hi"), id(1), T0).unwrap();
    let mut tx = doc.transaction();
    tx.put(ROOT, "f", 1.5).unwrap();
    tx.put(ROOT, "nan", f64::NAN).unwrap();
    tx.put(ROOT, "u", ScalarValue::Uint(u64::MAX)).unwrap();
    tx.put(ROOT, "neg", -3).unwrap();
    tx.put(ROOT, "views", ScalarValue::counter(5)).unwrap();
    tx.put(ROOT, "at", ScalarValue::Timestamp(T0 as i64))
        .unwrap();
    tx.put(ROOT, "far", ScalarValue::Timestamp(i64::MAX))
        .unwrap();
    tx.put(ROOT, "raw", ScalarValue::Bytes(vec![0xff, 0xfe, 0x00]))
        .unwrap();
    tx.put(ROOT, "nothing", ScalarValue::Null).unwrap();
    let l = tx.put_object(ROOT, "tags", ObjType::List).unwrap();
    tx.insert(&l, 0, "a").unwrap();
    tx.insert_object(&l, 1, ObjType::Map).unwrap();
    tx.commit();
    let mut tx = doc.transaction();
    tx.increment(ROOT, "views", 2).unwrap();
    tx.commit();

    let key = m.key().to_string();
    assert_eq!(
        to_json(&doc).unwrap(),
        json!({
            "kind": "conversation",
            "schema_version": 2,
            "title": "Lunch",
            "participants": ["alice", "bob"],
            "messages": {
                key: {
                    "id": id(1).as_str(),
                    "author": "alice",
                    "body": "hi",
                    "created_at": m.created_at.to_string(),
                    "deleted": false,
                }
            },
            "read": {},
            "reactions": {},
            "f": 1.5,
            "nan": null,
            "u": u64::MAX,
            "neg": -3,
            "views": 7,
            "at": "2023-11-14T22:13:20.000Z",
            "far": i64::MAX,
            "raw": "//4A",
            "nothing": null,
            "tags": ["a", {}],
        })
    );
    // Keys come out sorted, whatever the map's insertion order.
    let s = serde_json::to_string(&to_json(&doc).unwrap()).unwrap();
    assert!(s.starts_with(r#"{"at":"#), "{s}");
}
