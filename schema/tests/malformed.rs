//! Documents come from peers: whatever their shape, typed reads give typed errors naming the
//! path, never a panic, and reading never writes.

mod common;

use common::*;
use proptest::prelude::*;
use weft_schema::automerge::transaction::Transactable;
use weft_schema::automerge::{Automerge, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use weft_schema::*;

/// A conversation with one message, and that message's object and key.
fn one_message() -> (Automerge, ObjId, String) {
    let mut doc = conversation("x");
    let m = send_message(&mut doc, &NewMessage::text("alice", "hi"), id(1), T0).unwrap();
    let key = m.key().to_string();
    let (_, msgs) = doc.get(ROOT, "messages").unwrap().unwrap();
    let (_, obj) = doc.get(&msgs, key.as_str()).unwrap().unwrap();
    (doc, obj, key)
}

fn edit(
    doc: &mut Automerge,
    f: impl FnOnce(&mut weft_schema::automerge::transaction::Transaction<'_>),
) {
    let mut tx = doc.transaction();
    f(&mut tx);
    tx.commit();
}

/// Reads `doc` as a conversation, checking that reading leaves its heads alone.
fn read_conversation(doc: &Automerge) -> Result<Conversation, ReadError> {
    let before = heads(doc);
    let r = Conversation::read(doc);
    let _ = messages_json(doc);
    let _ = last_messages(doc, 5);
    let _ = to_json(doc);
    assert_eq!(heads(doc), before);
    r
}

fn invalid_at(r: Result<impl std::fmt::Debug, ReadError>) -> String {
    match r {
        Err(
            e
            @ (ReadError::Invalid { .. } | ReadError::Missing { .. } | ReadError::TooLarge { .. }),
        ) => e.to_string(),
        other => panic!("expected a path error, got {other:?}"),
    }
}

#[test]
fn wrong_types_name_their_path() {
    let (mut doc, m, key) = one_message();
    edit(&mut doc, |tx| tx.put(&m, "author", 42).unwrap());
    assert_eq!(
        invalid_at(read_conversation(&doc)),
        format!("at messages[{key:?}].author: expected a user id, found the integer 42")
    );

    let (mut doc, m, key) = one_message();
    edit(&mut doc, |tx| tx.delete(&m, "body").unwrap());
    assert_eq!(
        invalid_at(read_conversation(&doc)),
        format!("at messages[{key:?}].body: missing, expected text or a string")
    );

    let (mut doc, m, key) = one_message();
    edit(&mut doc, |tx| {
        tx.put(&m, "created_at", "yesterday").unwrap()
    });
    assert_eq!(
        invalid_at(read_conversation(&doc)),
        format!("at messages[{key:?}].created_at: expected a timestamp, found \"yesterday\"")
    );

    let (mut doc, m, key) = one_message();
    edit(&mut doc, |tx| tx.put(&m, "id", "someone-else").unwrap());
    assert!(invalid_at(read_conversation(&doc)).starts_with(&format!(
        "at messages[{key:?}].id: expected the id in the message's key"
    )));

    let (mut doc, m, key) = one_message();
    edit(&mut doc, |tx| tx.put(&m, "deleted", "no").unwrap());
    assert!(invalid_at(read_conversation(&doc)).starts_with(&format!(
        "at messages[{key:?}].deleted: expected true or false"
    )));

    let (mut doc, m, key) = one_message();
    edit(&mut doc, |tx| {
        let a = tx.put_object(&m, "attachment", ObjType::Map).unwrap();
        tx.put(&a, "url", "https://x").unwrap();
        tx.put(&a, "mime_type", "image/png").unwrap();
        tx.put(&a, "size", -1).unwrap();
    });
    assert_eq!(
        invalid_at(read_conversation(&doc)),
        format!("at messages[{key:?}].attachment.size: expected a non-negative integer, found the integer -1")
    );

    let mut doc = conversation("x");
    edit(&mut doc, |tx| {
        let (_, msgs) = tx.get(ROOT, "messages").unwrap().unwrap();
        tx.put(&msgs, "hello", "world").unwrap();
    });
    assert_eq!(
        invalid_at(read_conversation(&doc)),
        "at messages.hello: expected a message key ({created_at}_{id}), found \"hello\""
    );

    let mut doc = conversation("x");
    edit(&mut doc, |tx| {
        tx.put_object(ROOT, "messages", ObjType::List).unwrap();
    });
    assert_eq!(
        invalid_at(read_conversation(&doc)),
        "at messages: expected a map of messages, found a list"
    );

    let mut doc = conversation("x");
    edit(&mut doc, |tx| {
        let p = tx.put_object(ROOT, "participants", ObjType::List).unwrap();
        tx.insert(&p, 0, "alice").unwrap();
        tx.insert(&p, 1, true).unwrap();
    });
    assert_eq!(
        invalid_at(read_conversation(&doc)),
        "at participants[1]: expected a user id, found true"
    );

    let mut doc = conversation("x");
    edit(&mut doc, |tx| {
        tx.put_object(ROOT, "title", ObjType::List).unwrap();
    });
    assert_eq!(
        invalid_at(read_conversation(&doc)),
        "at title: expected text or a string, found a list"
    );

    let mut doc = conversation("x");
    edit(&mut doc, |tx| tx.put(ROOT, "schema_version", "2").unwrap());
    assert_eq!(
        invalid_at(read_conversation(&doc)),
        "at schema_version: expected a non-negative integer, found the string \"2\""
    );
    let mut doc = conversation("x");
    edit(&mut doc, |tx| tx.delete(ROOT, "schema_version").unwrap());
    assert_eq!(
        invalid_at(read_conversation(&doc)),
        "at schema_version: missing, expected a schema version"
    );

    let mut doc = conversation("x");
    edit(&mut doc, |tx| {
        let (_, r) = tx.get(ROOT, "read").unwrap().unwrap();
        tx.put(&r, "bob", 7).unwrap();
    });
    assert_eq!(
        invalid_at(read_conversation(&doc)),
        "at read.bob: expected a message key, found the integer 7"
    );

    let mut doc = conversation("x");
    edit(&mut doc, |tx| {
        let (_, r) = tx.get(ROOT, "reactions").unwrap().unwrap();
        let per = tx.put_object(&r, "abc", ObjType::Map).unwrap();
        let users = tx.put_object(&per, "👍", ObjType::Map).unwrap();
        tx.put(&users, "bob", "yes").unwrap();
    });
    assert_eq!(
        invalid_at(read_conversation(&doc)),
        "at reactions.abc[\"👍\"].bob: expected true, found the string \"yes\""
    );
}

#[test]
fn trips_name_their_paths_too() {
    let mut doc = trip("t");
    Trip::add_task(
        &mut doc,
        id(1),
        &NewTask {
            title: "a".into(),
            assignee: None,
        },
        T0,
    )
    .unwrap();
    edit(&mut doc, |tx| {
        let (_, tasks) = tx.get(ROOT, "tasks").unwrap().unwrap();
        let (_, t) = tx.get(&tasks, id(1).as_str()).unwrap().unwrap();
        tx.put(&t, "done", "yes").unwrap();
    });
    let before = heads(&doc);
    assert_eq!(
        invalid_at(Trip::read(&doc)),
        format!(
            "at tasks[\"{}\"].done: expected true or false, found the string \"yes\"",
            id(1)
        )
    );
    assert_eq!(heads(&doc), before);
    // A write that needs the broken part is refused; the document is unchanged.
    assert!(matches!(
        Trip::add_task(
            &mut doc,
            id(2),
            &NewTask {
                title: "b".into(),
                assignee: None
            },
            T0
        ),
        Err(WriteError::Read { .. })
    ));
    assert_eq!(heads(&doc), before);

    let mut doc = trip("t");
    edit(&mut doc, |tx| tx.put(ROOT, "start_date", "June").unwrap());
    assert_eq!(
        invalid_at(Trip::read(&doc)),
        "at start_date: expected a date (YYYY-MM-DD), found \"June\""
    );
    let mut doc = trip("t");
    edit(&mut doc, |tx| {
        let (_, it) = tx.get(ROOT, "itinerary").unwrap().unwrap();
        tx.put(&it, "not an id!", 1).unwrap();
    });
    assert_eq!(
        invalid_at(Trip::read(&doc)),
        "at itinerary[\"not an id!\"]: expected an id, found \"not an id!\""
    );
}

#[test]
fn huge_values_are_refused_by_size() {
    let (mut doc, m, key) = one_message();
    edit(&mut doc, |tx| {
        let (_, body) = tx.get(&m, "body").unwrap().unwrap();
        tx.splice_text(&body, 0, 0, &"x".repeat(MAX_BODY_LEN + 1))
            .unwrap();
    });
    assert!(matches!(
        read_conversation(&doc),
        Err(ReadError::TooLarge { .. })
    ));
    assert!(
        invalid_at(read_conversation(&doc)).starts_with(&format!("at messages[{key:?}].body: "))
    );
    // The raw view still shows everything.
    assert!(to_json(&doc).is_ok());

    let (mut doc, m, _) = one_message();
    edit(&mut doc, |tx| {
        tx.put(&m, "author", "a".repeat(10_000)).unwrap()
    });
    assert!(matches!(
        read_conversation(&doc),
        Err(ReadError::TooLarge {
            len: 10_000,
            max: MAX_NAME_LEN,
            ..
        })
    ));
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let mut doc = conversation("x");
    edit(&mut doc, |tx| {
        let mut obj = tx.put_object(ROOT, "deep", ObjType::Map).unwrap();
        for _ in 0..5000 {
            obj = tx.put_object(&obj, "d", ObjType::Map).unwrap();
        }
    });
    assert!(matches!(to_json(&doc), Err(ReadError::TooDeep { .. })));
    // Typed reads don't descend into unknown fields.
    assert!(Conversation::read(&doc).is_ok());
}

#[test]
fn unknown_fields_are_kept_and_ignored() {
    let (mut doc, m, _) = one_message();
    edit(&mut doc, |tx| {
        tx.put(ROOT, "theme", "dark").unwrap();
        tx.put(&m, "pinned", true).unwrap();
        tx.put_object(&m, "mentions", ObjType::List).unwrap();
    });
    let c = Conversation::read(&doc).unwrap();
    assert_eq!(c.chat.messages.len(), 1);
    // Writing keeps them.
    edit_message(&mut doc, &id(1), "hello", T0).unwrap();
    let j = to_json(&doc).unwrap();
    assert_eq!(j["theme"], "dark");
    let key = Conversation::read(&doc).unwrap().chat.messages[0]
        .key()
        .to_string();
    assert_eq!(j["messages"][key]["pinned"], true);
}

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
    let _ = send_message(doc, &NewMessage::text("eve", "hi"), id(9), T0);
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
