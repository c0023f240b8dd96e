//! Documents written by JavaScript's Automerge, which stores every string as collaborative
//! Text unless told otherwise: wherever the schema has a string, such Text reads as that
//! string, and writes keep working on the document.

mod common;

use common::*;
use weft_schema::automerge::transaction::{Transactable, Transaction};
use weft_schema::automerge::{Automerge, ObjId, ObjType, ROOT};
use weft_schema::*;

/// `obj[key] = s`, as JavaScript writes a string: a Text object.
fn text(tx: &mut Transaction<'_>, obj: &ObjId, key: &str, s: &str) {
    let t = tx.put_object(obj, key, ObjType::Text).unwrap();
    tx.splice_text(&t, 0, 0, s).unwrap();
}

fn map(tx: &mut Transaction<'_>, obj: &ObjId, key: &str) -> ObjId {
    tx.put_object(obj, key, ObjType::Map).unwrap()
}

/// A timestamp for the `n`th record.
fn at(n: u64) -> Hlc {
    Hlc::new(T0 + n, 0, 7).unwrap()
}

/// The root header and chat of a chat document, every string as Text.
fn js_chat(tx: &mut Transaction<'_>, kind: &str) -> ObjId {
    text(tx, &ROOT, "kind", kind);
    tx.put(&ROOT, "schema_version", 2).unwrap();
    text(tx, &ROOT, "title", "Lisbon");
    let msgs = map(tx, &ROOT, "messages");
    for (n, author, body) in [(1, "alice", "Noon?"), (2, "bob", "Yes!")] {
        let key = MessageKey {
            created_at: at(n),
            id: id(n as u32),
        };
        let m = map(tx, &msgs, &key.to_string());
        text(tx, &m, "id", id(n as u32).as_str());
        text(tx, &m, "author", author);
        text(tx, &m, "body", body);
        text(tx, &m, "created_at", &at(n).to_string());
        tx.put(&m, "deleted", false).unwrap();
        if n == 2 {
            text(tx, &m, "reply_to", id(1).as_str());
            text(tx, &m, "edited_at", &at(3).to_string());
            let a = map(tx, &m, "attachment");
            text(tx, &a, "url", "https://example.com/map.png");
            text(tx, &a, "mime_type", "image/png");
            tx.put(&a, "size", 1234).unwrap();
            text(tx, &a, "name", "map.png");
        }
    }
    let read = map(tx, &ROOT, "read");
    let key = MessageKey {
        created_at: at(2),
        id: id(2),
    };
    text(tx, &read, "alice", &key.to_string());
    let reactions = map(tx, &ROOT, "reactions");
    let per = map(tx, &reactions, id(1).as_str());
    let users = map(tx, &per, "👍");
    tx.put(&users, "bob", true).unwrap();
    msgs
}

#[test]
fn a_conversation_written_by_javascript_reads_with_its_strings() {
    let mut doc = Automerge::new().with_actor(device(0));
    let mut tx = doc.transaction();
    js_chat(&mut tx, "conversation");
    let p = tx.put_object(&ROOT, "participants", ObjType::List).unwrap();
    for (i, user) in ["alice", "bob"].into_iter().enumerate() {
        let t = tx.insert_object(&p, i, ObjType::Text).unwrap();
        tx.splice_text(&t, 0, 0, user).unwrap();
    }
    tx.commit();

    assert_eq!(kind(&doc).unwrap(), Kind::Conversation);
    assert_eq!(raw_kind(&doc).as_deref(), Some("conversation"));
    let c = complete(Conversation::read(&doc));
    assert_eq!(c.title, "Lisbon");
    assert_eq!(c.participants, ["alice", "bob"]);
    let [first, second] = &c.chat.messages[..] else {
        panic!("two messages: {:?}", c.chat.messages)
    };
    assert_eq!(
        (first.id.clone(), first.author.as_str(), first.body.as_str()),
        (id(1), "alice", "Noon?")
    );
    assert_eq!(first.created_at, at(1));
    assert_eq!(second.author, "bob");
    assert_eq!(second.reply_to, Some(id(1)));
    assert_eq!(second.edited_at, Some(at(3)));
    let a = second.attachment.as_ref().unwrap();
    assert_eq!(
        (
            a.url.as_str(),
            a.mime_type.as_str(),
            a.size,
            a.name.as_deref()
        ),
        (
            "https://example.com/map.png",
            "image/png",
            1234,
            Some("map.png")
        )
    );
    assert_eq!(c.chat.read["alice"], second.key());
    assert!(c.chat.reactions[&id(1)]["👍"].contains("bob"));
    let json = complete(messages_json(&doc));
    assert!(
        json.contains(r#""author":"alice","body":"Noon?""#),
        "{json}"
    );
    assert!(matches!(
        complete(read_typed(&doc)),
        TypedDoc::Conversation(_)
    ));

    // Writes work on it too, and the messages keep reading.
    let sent = send_message(&mut doc, &NewMessage::text("bob", "See you"), id(9), T0).unwrap();
    assert!(sent.created_at > second.created_at);
    edit_message(&mut doc, &id(1), "Noon, then?", T0).unwrap();
    delete_message(&mut doc, &id(2), T0).unwrap();
    assert!(mark_read(&mut doc, "alice", &sent.key(), T0).unwrap());
    Conversation::add_participant(&mut doc, "bob", T0).unwrap();
    let c = complete(Conversation::read(&doc));
    assert_eq!(c.participants, ["alice", "bob"], "bob was already there");
    Conversation::remove_participant(&mut doc, "alice", T0).unwrap();
    let bodies: Vec<&str> = c.chat.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["Noon, then?", "", "See you"]);
    assert_eq!(complete(Conversation::read(&doc)).participants, ["bob"]);
}

#[test]
fn a_trip_written_by_javascript_reads_with_its_strings() {
    let mut doc = Automerge::new().with_actor(device(0));
    let mut tx = doc.transaction();
    js_chat(&mut tx, "trip");
    text(&mut tx, &ROOT, "start_date", "2024-06-01");
    let members = map(&mut tx, &ROOT, "members");
    text(&mut tx, &members, "alice", "organizer");
    let tasks = map(&mut tx, &ROOT, "tasks");
    let t = map(&mut tx, &tasks, id(5).as_str());
    text(&mut tx, &t, "title", "Book hotel");
    text(&mut tx, &t, "assignee", "bob");
    tx.put(&t, "done", false).unwrap();
    text(&mut tx, &t, "created_at", &at(5).to_string());
    let it = map(&mut tx, &ROOT, "itinerary");
    let i = map(&mut tx, &it, id(6).as_str());
    text(&mut tx, &i, "title", "Tram 28");
    text(&mut tx, &i, "starts_at", "2024-06-02T09:00");
    text(&mut tx, &i, "location", "Martim Moniz");
    text(&mut tx, &i, "notes", "Go early");
    let bs = map(&mut tx, &ROOT, "broadcasts");
    let b = map(&mut tx, &bs, id(7).as_str());
    text(&mut tx, &b, "author", "alice");
    text(&mut tx, &b, "body", "Passports!");
    text(&mut tx, &b, "priority", "high");
    text(&mut tx, &b, "created_at", &at(7).to_string());
    tx.commit();

    let t = complete(Trip::read(&doc));
    assert_eq!(t.title, "Lisbon");
    assert_eq!(t.start_date.as_deref(), Some("2024-06-01"));
    assert_eq!(t.members["alice"], "organizer");
    assert_eq!(
        t.tasks,
        [Task {
            id: id(5),
            title: "Book hotel".into(),
            assignee: Some("bob".into()),
            done: false,
            created_at: at(5),
        }]
    );
    assert_eq!(
        t.itinerary,
        [ItineraryItem {
            id: id(6),
            title: "Tram 28".into(),
            starts_at: "2024-06-02T09:00".into(),
            location: Some("Martim Moniz".into()),
            notes: Some("Go early".into()),
        }]
    );
    assert_eq!(
        t.broadcasts,
        [Broadcast {
            id: id(7),
            author: "alice".into(),
            body: "Passports!".into(),
            priority: Priority::High,
            created_at: at(7),
        }]
    );
    assert_eq!(t.chat.messages.len(), 2);

    // A new task sorts after the one JavaScript wrote.
    let task = NewTask {
        title: "Pack".into(),
        assignee: None,
    };
    let added = Trip::add_task(&mut doc, id(8), &task, T0).unwrap();
    assert!(added.created_at > at(5));
    Trip::set_task_done(&mut doc, &id(5), true, T0).unwrap();
    let t = complete(Trip::read(&doc));
    assert_eq!(t.tasks.len(), 2);
    assert!(t.tasks[0].done);
}

#[test]
fn a_profile_written_by_javascript_reads_with_its_strings() {
    let mut doc = Automerge::new().with_actor(device(0));
    let mut tx = doc.transaction();
    text(&mut tx, &ROOT, "kind", "profile");
    tx.put(&ROOT, "schema_version", 2).unwrap();
    text(&mut tx, &ROOT, "user", "alice");
    text(&mut tx, &ROOT, "display_name", "Alice");
    text(&mut tx, &ROOT, "avatar_url", "https://example.com/a.png");
    text(&mut tx, &ROOT, "status", "in Lisbon");
    tx.commit();
    let expected = Profile {
        user: "alice".into(),
        display_name: "Alice".into(),
        avatar_url: Some("https://example.com/a.png".into()),
        status: Some("in Lisbon".into()),
    };
    assert_eq!(complete(Profile::read(&doc)), expected);
    // Updating one field leaves the others as they are.
    let before = heads(&doc);
    Profile::update(&mut doc, &expected, T0).unwrap();
    assert_eq!(heads(&doc), before, "nothing differs: no change");
    let away = Profile {
        status: Some("away".into()),
        ..expected.clone()
    };
    Profile::update(&mut doc, &away, T0).unwrap();
    assert_eq!(complete(Profile::read(&doc)), away);
}
