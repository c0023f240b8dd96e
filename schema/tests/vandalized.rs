//! Documents come from peers: whatever junk a peer writes wherever, typed reads and writes
//! never panic, reading never writes, and with a good header every typed read returns what
//! reads rather than failing.

mod common;

use common::*;
use proptest::prelude::*;
use weft_schema::automerge::transaction::Transactable;
use weft_schema::automerge::{Automerge, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use weft_schema::*;

/// A value to write at a random place.
#[derive(Clone, Debug)]
enum Junk {
    Scalar(ScalarValue),
    Obj(ObjType),
    Delete,
}

fn junk() -> impl Strategy<Value = Junk> {
    prop_oneof![
        any::<String>().prop_map(|s| Junk::Scalar(ScalarValue::Str(s.into()))),
        Just(Junk::Scalar(ScalarValue::Str(
            "2024-01-01T00:00:00.000Z-00000-0000000000000000".into()
        ))),
        Just(Junk::Scalar(ScalarValue::Str(
            "0000000000000000000000000000000a".into()
        ))),
        any::<i64>().prop_map(|i| Junk::Scalar(ScalarValue::Int(i))),
        any::<u64>().prop_map(|i| Junk::Scalar(ScalarValue::Uint(i))),
        any::<f64>().prop_map(|f| Junk::Scalar(ScalarValue::F64(f))),
        any::<bool>().prop_map(|b| Junk::Scalar(ScalarValue::Boolean(b))),
        any::<i64>().prop_map(|i| Junk::Scalar(ScalarValue::Timestamp(i))),
        any::<i64>().prop_map(|i| Junk::Scalar(ScalarValue::counter(i))),
        proptest::collection::vec(any::<u8>(), 0..8)
            .prop_map(|b| Junk::Scalar(ScalarValue::Bytes(b))),
        Just(Junk::Scalar(ScalarValue::Null)),
        Just(Junk::Obj(ObjType::Map)),
        Just(Junk::Obj(ObjType::List)),
        Just(Junk::Obj(ObjType::Text)),
        Just(Junk::Delete),
    ]
}

const KEYS: &[&str] = &[
    "kind",
    "schema_version",
    "title",
    "participants",
    "messages",
    "read",
    "reactions",
    "id",
    "author",
    "body",
    "created_at",
    "edited_at",
    "deleted",
    "reply_to",
    "attachment",
    "url",
    "size",
    "members",
    "tasks",
    "done",
    "itinerary",
    "broadcasts",
    "starts_at",
    "priority",
    "start_date",
    "bob",
    "👍",
];

/// Every object of the document, breadth first (a bounded number).
fn objects(doc: &Automerge) -> Vec<(ObjId, ObjType)> {
    let mut out = vec![(ROOT, ObjType::Map)];
    let mut i = 0;
    while i < out.len() && out.len() < 200 {
        let (obj, ty) = out[i].clone();
        match ty {
            ObjType::Map | ObjType::Table => {
                for k in doc.keys(&obj).collect::<Vec<_>>() {
                    if let Ok(Some((Value::Object(t), id))) = doc.get(&obj, k.as_str()) {
                        out.push((id, t));
                    }
                }
            }
            ObjType::List => {
                for n in 0..doc.length(&obj) {
                    if let Ok(Some((Value::Object(t), id))) = doc.get(&obj, n) {
                        out.push((id, t));
                    }
                }
            }
            ObjType::Text => {}
        }
        i += 1;
    }
    out
}

fn vandalize(doc: &mut Automerge, ops: &[(usize, usize, Junk)]) {
    for (target, key, junk) in ops {
        let objs = objects(doc);
        let (obj, ty) = objs[target % objs.len()].clone();
        let mut tx = doc.transaction();
        let _ = match (ty, junk) {
            (ObjType::Text, _) => tx.splice_text(&obj, 0, 0, "junk").map(|_| ()),
            (ObjType::List, Junk::Scalar(s)) => tx.insert(&obj, 0, s.clone()),
            (ObjType::List, Junk::Obj(t)) => tx.insert_object(&obj, 0, *t).map(|_| ()),
            (ObjType::List, Junk::Delete) if tx.length(&obj) > 0 => tx.delete(&obj, 0),
            (ObjType::List, Junk::Delete) => Ok(()),
            (_, Junk::Scalar(s)) => tx.put(&obj, KEYS[key % KEYS.len()], s.clone()),
            (_, Junk::Obj(t)) => tx.put_object(&obj, KEYS[key % KEYS.len()], *t).map(|_| ()),
            (_, Junk::Delete) => tx.delete(&obj, KEYS[key % KEYS.len()]),
        };
        tx.commit();
    }
}

/// Every read, checking heads, then every write; nothing may panic.
fn exercise(doc: &mut Automerge) {
    let before = heads(doc);
    let _ = kind(doc);
    let _ = schema_version(doc);
    let _ = read_typed(doc);
    let _ = messages(doc);
    let _ = last_messages(doc, 3);
    let _ = find_message(doc, &id(1));
    let _ = reactions(doc, &id(1));
    let _ = read_positions(doc);
    let _ = messages_json(doc);
    let _ = conflicts(doc, &["messages".into(), "x".into()]);
    to_json(doc).expect("the raw view renders any shallow document");
    assert_eq!(heads(doc), before, "reading never writes");
    // Only the header fails a read whole: with a good one, every read returns what reads.
    if let (Ok(k), Ok(_)) = (kind(doc), schema_version(doc)) {
        let _ = read_typed(doc).expect("a typed document reads");
        if k.has_chat() {
            let _ = messages(doc).expect("messages read");
            let _ = last_messages(doc, 3).expect("the tail reads");
            let _ = find_message(doc, &id(1)).expect("finding reads");
            let _ = reactions(doc, &id(1)).expect("reactions read");
            let _ = read_positions(doc).expect("read positions read");
            let _ = messages_json(doc).expect("the JSON list reads");
        }
    }
    // Malformed entries don't stop a new message: only a bad header or no map of messages.
    let sent = send_message(doc, &NewMessage::text("eve", "hi"), id(9), T0);
    let chat_ok = kind(doc).is_ok_and(|k| k.has_chat())
        && schema_version(doc).is_ok_and(|v| v <= SCHEMA_VERSION)
        && matches!(
            doc.get(ROOT, "messages"),
            Ok(Some((Value::Object(ObjType::Map), _)))
        );
    if chat_ok {
        sent.expect("a message is sent whatever the other entries hold");
        let listed = messages(doc).expect("messages read");
        assert!(listed.value.iter().any(|m| m.id == id(9)));
    }
    let _ = edit_message(doc, &id(1), "edited", T0);
    let _ = react(doc, &id(1), "👍", "eve", T0);
    let _ = unreact(doc, &id(1), "👍", "bob", T0);
    let _ = delete_message(doc, &id(1), T0);
    let _ = set_title(doc, "t", T0);
    let _ = Trip::add_task(
        doc,
        id(3),
        &NewTask {
            title: "x".into(),
            assignee: None,
        },
        T0,
    );
    let _ = Trip::set_task_done(doc, &id(2), true, T0);
    let _ = Trip::read(doc);
    let _ = migrate(doc);
    let _ = Conversation::read(doc);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn vandalized_documents_never_panic(
        is_trip in any::<bool>(),
        ops in proptest::collection::vec((any::<usize>(), any::<usize>(), junk()), 1..12),
    ) {
        let mut doc = if is_trip { trip("t") } else { conversation("c") };
        send_message(&mut doc, &NewMessage::text("alice", "hi"), id(1), T0).unwrap();
        react(&mut doc, &id(1), "👍", "bob", T0).unwrap();
        if is_trip {
            Trip::add_task(&mut doc, id(2), &NewTask { title: "a".into(), assignee: None }, T0).unwrap();
        }
        vandalize(&mut doc, &ops);
        exercise(&mut doc);
    }
}
