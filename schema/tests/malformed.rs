//! Documents come from peers: what doesn't fit the schema is skipped and reported with its
//! path and a typed reason, everything else reads, and writes keep working; only a bad header
//! (kind, schema version) fails a read whole. Reading never writes. (Random vandalism is in
//! `vandalized.rs`.)

mod common;

use common::*;
use weft_schema::automerge::transaction::Transactable;
use weft_schema::automerge::{Automerge, ObjId, ObjType, ReadDoc, ROOT};
use weft_schema::*;

/// A conversation with two messages, and the first one's object and key (the one the cases
/// break; the second must keep reading).
fn one_message() -> (Automerge, ObjId, String) {
    let mut doc = conversation("x");
    let m = send_message(&mut doc, &NewMessage::text("alice", "hi"), id(1), T0).unwrap();
    send_message(&mut doc, &NewMessage::text("bob", "still here"), id(2), T0).unwrap();
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

/// Each skipped entry as (path, reason).
fn skipped<T>(p: &Partial<T>) -> Vec<(String, String)> {
    p.skipped
        .iter()
        .map(|s| (s.path.to_string(), s.reason.to_string()))
        .collect()
}

/// Reads `doc` as a conversation, checking that reading leaves its heads alone and that the
/// other reads of its chat skip the same messages; returns the read and what it skipped.
fn read_conversation(doc: &Automerge) -> (Conversation, Vec<(String, String)>) {
    let before = heads(doc);
    let r = Conversation::read(doc).expect("only the header fails a read");
    let msgs = messages(doc).unwrap();
    assert_eq!(msgs.value, r.value.chat.messages);
    let json = messages_json(doc).unwrap();
    assert_eq!(json.value, messages_to_json(&r.value.chat.messages));
    assert_eq!(skipped(&json), skipped(&msgs));
    let _ = last_messages(doc, 5).unwrap();
    let _ = to_json(doc);
    assert_eq!(heads(doc), before);
    let s = skipped(&r);
    (r.value, s)
}

/// The ids of the messages that read.
fn ids(c: &Conversation) -> Vec<Id> {
    c.chat.messages.iter().map(|m| m.id.clone()).collect()
}

fn header_error(r: Result<impl std::fmt::Debug, ReadError>) -> String {
    match r {
        Err(e @ (ReadError::Invalid { .. } | ReadError::Missing { .. })) => e.to_string(),
        other => panic!("expected a header error, got {other:?}"),
    }
}

#[test]
fn a_broken_message_is_skipped_with_its_path_and_the_rest_reads() {
    // Each case breaks message 1; message 2 reads, and message 1 is reported at its key.
    type Break = Box<dyn Fn(&mut Automerge, &ObjId)>;
    let cases: Vec<(&str, Break, String)> = vec![
        (
            "a number for an author",
            Box::new(|doc, m| edit(doc, |tx| tx.put(m, "author", 42).unwrap())),
            "at {key}.author: expected a user id, found the integer 42".into(),
        ),
        (
            "no body",
            Box::new(|doc, m| edit(doc, |tx| tx.delete(m, "body").unwrap())),
            "at {key}.body: missing, expected text or a string".into(),
        ),
        (
            "a date that isn't a timestamp",
            Box::new(|doc, m| edit(doc, |tx| tx.put(m, "created_at", "yesterday").unwrap())),
            "at {key}.created_at: expected a timestamp, found \"yesterday\"".into(),
        ),
        (
            "another message's id",
            Box::new(|doc, m| edit(doc, |tx| tx.put(m, "id", "someone-else").unwrap())),
            "at {key}.id: expected the id in the message's key, found someone-else".into(),
        ),
        (
            "a string for deleted",
            Box::new(|doc, m| edit(doc, |tx| tx.put(m, "deleted", "no").unwrap())),
            "at {key}.deleted: expected true or false, found the string \"no\"".into(),
        ),
        (
            "a negative attachment size",
            Box::new(|doc, m| {
                edit(doc, |tx| {
                    let a = tx.put_object(m, "attachment", ObjType::Map).unwrap();
                    tx.put(&a, "url", "https://x").unwrap();
                    tx.put(&a, "mime_type", "image/png").unwrap();
                    tx.put(&a, "size", -1).unwrap();
                })
            }),
            "at {key}.attachment.size: expected a non-negative integer, found the integer -1"
                .into(),
        ),
    ];
    for (what, break_it, reason) in cases {
        let (mut doc, m, key) = one_message();
        break_it(&mut doc, &m);
        let at = format!("messages[{key:?}]");
        let (c, skipped) = read_conversation(&doc);
        assert_eq!(ids(&c), [id(2)], "{what}");
        assert_eq!(
            skipped,
            [(at.clone(), reason.replace("{key}", &at))],
            "{what}"
        );
        // Writes that don't need the broken message keep working.
        let sent = send_message(&mut doc, &NewMessage::text("carol", "hi"), id(3), T0).unwrap();
        edit_message(&mut doc, &id(2), "edited", T0).unwrap();
        react(&mut doc, &id(2), "👍", "carol", T0).unwrap();
        assert!(mark_read(&mut doc, "carol", &sent.key(), T0).unwrap());
        let (c, _) = read_conversation(&doc);
        assert_eq!(ids(&c), [id(2), id(3)], "{what}");
        // One that needs it is refused, and changes nothing.
        let before = heads(&doc);
        assert!(
            matches!(
                edit_message(&mut doc, &id(1), "x", T0),
                Err(WriteError::Read { .. })
            ),
            "{what}"
        );
        assert_eq!(heads(&doc), before);
    }
}

#[test]
fn broken_entries_of_the_chat_are_skipped_with_their_paths() {
    broken_messages_are_skipped();
    broken_participants_and_title_are_skipped();
    broken_read_positions_and_reactions_are_skipped();
}

/// A message entry whose key is not a message key; messages that are not a map.
fn broken_messages_are_skipped() {
    let mut doc = conversation("x");
    send_message(&mut doc, &NewMessage::text("alice", "hi"), id(1), T0).unwrap();
    edit(&mut doc, |tx| {
        let (_, msgs) = tx.get(ROOT, "messages").unwrap().unwrap();
        tx.put(&msgs, "hello", "world").unwrap();
    });
    let (c, skipped) = read_conversation(&doc);
    assert_eq!(ids(&c), [id(1)]);
    assert_eq!(
        skipped,
        [(
            "messages.hello".into(),
            "at messages.hello: expected a message key ({created_at}_{id}), found \"hello\"".into()
        )]
    );

    // A chat whose messages aren't a map has none, and says why.
    let mut doc = conversation("x");
    edit(&mut doc, |tx| {
        tx.put_object(ROOT, "messages", ObjType::List).unwrap();
    });
    let (c, skipped) = read_conversation(&doc);
    assert!(c.chat.messages.is_empty());
    assert_eq!(
        skipped,
        [(
            "messages".into(),
            "at messages: expected a map of messages, found a list".into()
        )]
    );
}

/// A participant that is not a user id; a title that is not text.
fn broken_participants_and_title_are_skipped() {
    let mut doc = conversation("x");
    edit(&mut doc, |tx| {
        let p = tx.put_object(ROOT, "participants", ObjType::List).unwrap();
        tx.insert(&p, 0, "alice").unwrap();
        tx.insert(&p, 1, true).unwrap();
        tx.insert(&p, 2, "bob").unwrap();
    });
    let (c, skipped) = read_conversation(&doc);
    assert_eq!(c.participants, ["alice", "bob"]);
    assert_eq!(
        skipped,
        [(
            "participants[1]".into(),
            "at participants[1]: expected a user id, found true".into()
        )]
    );

    // A title that isn't text reads as empty; setting it writes text over it.
    let mut doc = conversation("x");
    edit(&mut doc, |tx| {
        tx.put_object(ROOT, "title", ObjType::List).unwrap();
    });
    let (c, skipped) = read_conversation(&doc);
    assert_eq!(c.title, "");
    assert_eq!(
        skipped,
        [(
            "title".into(),
            "at title: expected text or a string, found a list".into()
        )]
    );
    set_title(&mut doc, "fixed", T0).unwrap();
    assert_eq!(complete(Conversation::read(&doc)).title, "fixed");
}

/// A read position that is not a message key; a reaction that is not `true`.
fn broken_read_positions_and_reactions_are_skipped() {
    let mut doc = conversation("x");
    let m = send_message(&mut doc, &NewMessage::text("alice", "hi"), id(1), T0).unwrap();
    mark_read(&mut doc, "alice", &m.key(), T0).unwrap();
    edit(&mut doc, |tx| {
        let (_, r) = tx.get(ROOT, "read").unwrap().unwrap();
        tx.put(&r, "bob", 7).unwrap();
    });
    let (c, skipped) = read_conversation(&doc);
    assert_eq!(c.chat.read.keys().collect::<Vec<_>>(), ["alice"]);
    assert_eq!(
        skipped,
        [(
            "read.bob".into(),
            "at read.bob: expected a message key, found the integer 7".into()
        )]
    );
    // Bob's position can still be written, over the bad one.
    assert!(mark_read(&mut doc, "bob", &m.key(), T0).unwrap());
    assert_eq!(complete(read_positions(&doc))["bob"], m.key());

    let mut doc = conversation("x");
    let m = send_message(&mut doc, &NewMessage::text("alice", "hi"), id(1), T0).unwrap();
    react(&mut doc, &m.id, "👍", "alice", T0).unwrap();
    edit(&mut doc, |tx| {
        let (_, r) = tx.get(ROOT, "reactions").unwrap().unwrap();
        let (_, per) = tx.get(&r, m.id.as_str()).unwrap().unwrap();
        let (_, users) = tx.get(&per, "👍").unwrap().unwrap();
        tx.put(&users, "bob", "yes").unwrap();
    });
    let (c, skipped) = read_conversation(&doc);
    let path = format!("reactions[\"{}\"][\"👍\"].bob", m.id);
    assert_eq!(
        skipped,
        [(
            path.clone(),
            format!("at {path}: expected true, found the string \"yes\"")
        )]
    );
    assert_eq!(
        c.chat.reactions[&m.id]["👍"].iter().collect::<Vec<_>>(),
        ["alice"]
    );
}

#[test]
fn only_a_bad_header_fails_a_read() {
    let mut doc = conversation("x");
    edit(&mut doc, |tx| tx.put(ROOT, "schema_version", "2").unwrap());
    assert_eq!(
        header_error(Conversation::read(&doc)),
        "at schema_version: expected a non-negative integer, found the string \"2\""
    );
    let mut doc = conversation("x");
    edit(&mut doc, |tx| tx.delete(ROOT, "schema_version").unwrap());
    assert_eq!(
        header_error(Conversation::read(&doc)),
        "at schema_version: missing, expected a schema version"
    );
    let mut doc = conversation("x");
    edit(&mut doc, |tx| tx.put(ROOT, "kind", "spreadsheet").unwrap());
    assert!(matches!(
        Conversation::read(&doc),
        Err(ReadError::Untyped { .. })
    ));
    assert!(matches!(messages(&doc), Err(ReadError::Untyped { .. })));
}

#[test]
fn a_broken_task_is_skipped_and_trip_writes_keep_working() {
    let mut doc = trip("t");
    for n in [1, 2] {
        let task = NewTask {
            title: format!("task {n}"),
            assignee: None,
        };
        Trip::add_task(&mut doc, id(n), &task, T0).unwrap();
    }
    edit(&mut doc, |tx| {
        let (_, tasks) = tx.get(ROOT, "tasks").unwrap().unwrap();
        let (_, t) = tx.get(&tasks, id(1).as_str()).unwrap().unwrap();
        tx.put(&t, "done", "yes").unwrap();
    });
    let before = heads(&doc);
    let t = Trip::read(&doc).unwrap();
    assert_eq!(heads(&doc), before);
    let at = format!("tasks[\"{}\"]", id(1));
    assert_eq!(
        skipped(&t),
        [(
            at.clone(),
            format!("at {at}.done: expected true or false, found the string \"yes\"")
        )]
    );
    assert_eq!(
        t.value.tasks.iter().map(|t| &t.id).collect::<Vec<_>>(),
        [&id(2)]
    );
    // Adding a task reads the others' timestamps: the broken one doesn't stop it.
    let task = NewTask {
        title: "task 3".into(),
        assignee: None,
    };
    let added = Trip::add_task(&mut doc, id(3), &task, T0).unwrap();
    assert!(added.created_at > t.value.tasks[0].created_at);
    // Setting the broken field writes over it: the task reads again.
    Trip::set_task_done(&mut doc, &id(1), true, T0).unwrap();
    let t = complete(Trip::read(&doc));
    assert_eq!(t.tasks.len(), 3);

    let mut doc = trip("t");
    edit(&mut doc, |tx| tx.put(ROOT, "start_date", "June").unwrap());
    let t = Trip::read(&doc).unwrap();
    assert_eq!(t.value.start_date, None);
    assert_eq!(t.value.end_date.as_deref(), Some("2024-06-09"));
    assert_eq!(
        skipped(&t),
        [(
            "start_date".into(),
            "at start_date: expected a date (YYYY-MM-DD), found \"June\"".into()
        )]
    );
    let mut doc = trip("t");
    edit(&mut doc, |tx| {
        let (_, it) = tx.get(ROOT, "itinerary").unwrap().unwrap();
        tx.put(&it, "not an id!", 1).unwrap();
    });
    assert_eq!(
        skipped(&Trip::read(&doc).unwrap()),
        [(
            "itinerary[\"not an id!\"]".into(),
            "at itinerary[\"not an id!\"]: expected an id, found \"not an id!\"".into()
        )]
    );
}

#[test]
fn huge_values_are_skipped_by_size() {
    let (mut doc, m, key) = one_message();
    edit(&mut doc, |tx| {
        let (_, body) = tx.get(&m, "body").unwrap().unwrap();
        tx.splice_text(&body, 0, 0, &"x".repeat(MAX_BODY_LEN + 1))
            .unwrap();
    });
    let r = Conversation::read(&doc).unwrap();
    assert!(matches!(
        r.skipped[..],
        [Skipped {
            reason: ReadError::TooLarge { .. },
            ..
        }]
    ));
    assert!(r.skipped[0]
        .reason
        .to_string()
        .starts_with(&format!("at messages[{key:?}].body: ")));
    assert_eq!(ids(&r.value), [id(2)]);
    // The raw view still shows everything.
    assert!(to_json(&doc).is_ok());

    let (mut doc, m, _) = one_message();
    edit(&mut doc, |tx| {
        tx.put(&m, "author", "a".repeat(10_000)).unwrap()
    });
    assert!(matches!(
        Conversation::read(&doc).unwrap().skipped[..],
        [Skipped {
            reason: ReadError::TooLarge {
                len: 10_000,
                max: MAX_NAME_LEN,
                ..
            },
            ..
        }]
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
    complete(Conversation::read(&doc));
}

#[test]
fn unknown_fields_are_kept_and_ignored() {
    let (mut doc, m, _) = one_message();
    edit(&mut doc, |tx| {
        tx.put(ROOT, "theme", "dark").unwrap();
        tx.put(&m, "pinned", true).unwrap();
        tx.put_object(&m, "mentions", ObjType::List).unwrap();
    });
    let c = complete(Conversation::read(&doc));
    assert_eq!(c.chat.messages.len(), 2);
    // Writing keeps them.
    edit_message(&mut doc, &id(1), "hello", T0).unwrap();
    let j = to_json(&doc).unwrap();
    assert_eq!(j["theme"], "dark");
    let key = complete(Conversation::read(&doc)).chat.messages[0]
        .key()
        .to_string();
    assert_eq!(j["messages"][key]["pinned"], true);
}
