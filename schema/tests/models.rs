//! Round trips of every model, refused writes, untyped documents and what a checkpoint learns;
//! what users see when they write concurrently is in `concurrent.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::json;
use weft_schema::automerge::Automerge;
use weft_schema::*;

#[test]
fn a_conversation_round_trips() {
    let mut doc = conversation("Lunch");
    let m1 = send_message(&mut doc, &NewMessage::text("alice", "Noon?"), id(1), T0).unwrap();
    let m2 = send_message(
        &mut doc,
        &NewMessage {
            author: "bob".into(),
            body: "Here's the menu".into(),
            reply_to: Some(m1.id.clone()),
            attachment: Some(Attachment {
                url: "https://example.com/menu.pdf".into(),
                mime_type: "application/pdf".into(),
                size: 12_345,
                name: Some("menu.pdf".into()),
            }),
        },
        id(2),
        T0 + 1000,
    )
    .unwrap();
    react(&mut doc, &m1.id, "👍", "bob", T0 + 2000).unwrap();
    assert!(mark_read(&mut doc, "bob", &m2.key(), T0 + 3000).unwrap());
    Conversation::add_participant(&mut doc, "carol", T0).unwrap();
    Conversation::remove_participant(&mut doc, "bob", T0).unwrap();

    let c = complete(Conversation::read(&doc));
    assert_eq!(
        c,
        Conversation {
            title: "Lunch".into(),
            participants: vec!["alice".into(), "carol".into()],
            chat: Chat {
                messages: vec![m1.clone(), m2.clone()],
                read: BTreeMap::from([("bob".to_owned(), m2.key())]),
                reactions: BTreeMap::from([(
                    m1.id.clone(),
                    BTreeMap::from([("👍".to_owned(), BTreeSet::from(["bob".to_owned()]))])
                )]),
            },
        }
    );
    assert_eq!(complete(read_typed(&doc)), TypedDoc::Conversation(c));
    assert_eq!(kind(&doc).unwrap(), Kind::Conversation);
    assert_eq!(schema_version(&doc).unwrap(), SCHEMA_VERSION);
    assert_eq!(complete(find_message(&doc, &m2.id)), Some(m2.clone()));
    assert_eq!(complete(find_message(&doc, &id(99))), None);
    assert_eq!(last_message(&doc).unwrap(), Some(m2));
}

/// Two itinerary items (`day1`, `day2`) as the trip ends up with them: one added and removed,
/// one updated.
fn plan_itinerary(doc: &mut Automerge) -> (ItineraryItem, ItineraryItem) {
    let day2 = ItineraryItem {
        id: id(10),
        title: "Sintra".into(),
        starts_at: "2024-06-02T09:30".into(),
        location: Some("Sintra".into()),
        notes: Some("Train from Rossio".into()),
    };
    let day1 = ItineraryItem {
        id: id(11),
        title: "Arrive".into(),
        starts_at: "2024-06-01".into(),
        location: None,
        notes: None,
    };
    Trip::put_itinerary_item(doc, &day2, T0).unwrap();
    Trip::put_itinerary_item(doc, &day1, T0).unwrap();
    let gone = ItineraryItem {
        id: id(12),
        ..day1.clone()
    };
    Trip::put_itinerary_item(doc, &gone, T0).unwrap();
    Trip::remove_itinerary_item(doc, &gone.id, T0).unwrap();
    // Updating an item rewrites only what changed.
    let day2 = ItineraryItem {
        notes: Some("Train from Rossio, 9:11".into()),
        ..day2
    };
    Trip::put_itinerary_item(doc, &day2, T0).unwrap();
    (day1, day2)
}

/// Two tasks (`hotel`, `tickets`) as the trip ends up with them: the second done, reassigned
/// and renamed; a third one added and removed.
fn plan_tasks(doc: &mut Automerge) -> (Task, Task) {
    let hotel = Trip::add_task(
        doc,
        id(20),
        &NewTask {
            title: "Book hotel".into(),
            assignee: Some("alice".into()),
        },
        T0,
    )
    .unwrap();
    let mut tickets = Trip::add_task(
        doc,
        id(21),
        &NewTask {
            title: "Tickets".into(),
            assignee: None,
        },
        T0,
    )
    .unwrap();
    assert!(
        tickets.created_at > hotel.created_at,
        "tasks added in one millisecond stay ordered"
    );
    Trip::set_task_done(doc, &tickets.id, true, T0).unwrap();
    Trip::assign_task(doc, &tickets.id, Some("bob"), T0).unwrap();
    Trip::rename_task(doc, &tickets.id, "Train tickets", T0).unwrap();
    tickets.done = true;
    tickets.assignee = Some("bob".into());
    tickets.title = "Train tickets".into();
    let t3 = Trip::add_task(
        doc,
        id(22),
        &NewTask {
            title: "x".into(),
            assignee: None,
        },
        T0,
    )
    .unwrap();
    Trip::remove_task(doc, &t3.id, T0).unwrap();
    (hotel, tickets)
}

#[test]
fn a_trip_round_trips() {
    let mut doc = trip("Lisbon");
    Trip::set_member(&mut doc, "alice", "organizer", T0).unwrap();
    Trip::set_member(&mut doc, "bob", "member", T0).unwrap();
    Trip::set_member(&mut doc, "eve", "member", T0).unwrap();
    Trip::remove_member(&mut doc, "eve", T0).unwrap();
    let (day1, day2) = plan_itinerary(&mut doc);
    let (hotel, tickets) = plan_tasks(&mut doc);

    let b = Trip::broadcast(
        &mut doc,
        id(30),
        &NewBroadcast {
            author: "alice".into(),
            body: "Meet at the station".into(),
            priority: Priority::Urgent,
        },
        T0,
    )
    .unwrap();
    let m = send_message(&mut doc, &NewMessage::text("bob", "On my way"), id(40), T0).unwrap();
    Trip::set_dates(&mut doc, Some("2024-06-01"), None, T0).unwrap();
    set_title(&mut doc, "Lisbon & Sintra", T0).unwrap();

    let t = complete(Trip::read(&doc));
    assert_eq!(
        t,
        Trip {
            title: "Lisbon & Sintra".into(),
            start_date: Some("2024-06-01".into()),
            end_date: None,
            members: BTreeMap::from([
                ("alice".to_owned(), "organizer".to_owned()),
                ("bob".to_owned(), "member".to_owned())
            ]),
            itinerary: vec![day1, day2],
            tasks: vec![hotel, tickets],
            broadcasts: vec![b],
            chat: Chat {
                messages: vec![m],
                ..Chat::default()
            },
        }
    );
    assert_eq!(complete(read_typed(&doc)), TypedDoc::Trip(t));
}

#[test]
fn a_profile_round_trips() {
    let mut doc = Automerge::new();
    let mut p = Profile {
        user: "alice".into(),
        display_name: "Alice".into(),
        avatar_url: Some("https://example.com/a.png".into()),
        status: None,
    };
    Profile::create(&mut doc, &p, T0).unwrap();
    assert_eq!(complete(Profile::read(&doc)), p);
    p.status = Some("In Lisbon".into());
    p.avatar_url = None;
    Profile::update(&mut doc, &p, T0).unwrap();
    assert_eq!(complete(read_typed(&doc)), TypedDoc::Profile(p.clone()));
    // An update that changes nothing makes no change.
    let before = heads(&doc);
    Profile::update(&mut doc, &p, T0).unwrap();
    assert_eq!(heads(&doc), before);
}

#[test]
fn wrong_kinds_and_double_creation_are_refused() {
    let mut doc = conversation("x");
    assert!(matches!(
        Trip::read(&doc),
        Err(ReadError::WrongKind {
            expected: Kind::Trip,
            found: Kind::Conversation
        })
    ));
    assert!(matches!(
        Trip::create(&mut doc, &NewTrip::default(), T0),
        Err(WriteError::AlreadyInitialized { .. })
    ));
    assert!(matches!(
        Trip::set_member(&mut doc, "a", "b", T0),
        Err(WriteError::Read { .. })
    ));
    let mut p = Automerge::new();
    Profile::create(
        &mut p,
        &Profile {
            user: "a".into(),
            display_name: "A".into(),
            ..Profile::default()
        },
        T0,
    )
    .unwrap();
    assert!(matches!(messages(&p), Err(ReadError::WrongKind { .. })));
    assert!(send_message(&mut p, &NewMessage::text("a", "hi"), id(1), T0).is_err());
}

#[test]
fn bad_arguments_change_nothing() {
    let mut doc = conversation("x");
    let before = heads(&doc);
    let big = "x".repeat(MAX_BODY_LEN + 1);
    assert!(matches!(
        send_message(
            &mut doc,
            &NewMessage::text("alice", big.as_str()),
            id(1),
            T0
        ),
        Err(WriteError::InvalidInput { field: "body", .. })
    ));
    assert!(matches!(
        send_message(&mut doc, &NewMessage::text("", "hi"), id(1), T0),
        Err(WriteError::InvalidInput {
            field: "author",
            ..
        })
    ));
    assert!(matches!(
        send_message(&mut doc, &NewMessage::text("alice", "a\0b"), id(1), T0),
        Err(WriteError::InvalidInput { field: "body", .. })
    ));
    assert!(matches!(
        edit_message(&mut doc, &id(5), "x", T0),
        Err(WriteError::NotFound { .. })
    ));
    let m = send_message(&mut doc, &NewMessage::text("alice", "hi"), id(1), T0).unwrap();
    let after_send = heads(&doc);
    assert_ne!(after_send, before);
    // The same id at the same timestamp is the same key: refused, nothing written.
    let dup = Trip::add_task(
        &mut trip("t"),
        id(1),
        &NewTask {
            title: "a".into(),
            assignee: None,
        },
        T0,
    );
    assert!(dup.is_ok());
    assert!(matches!(
        mark_read(
            &mut doc,
            "bob",
            &MessageKey {
                created_at: m.created_at,
                id: id(7)
            },
            T0
        ),
        Err(WriteError::NotFound { .. })
    ));
    assert_eq!(heads(&doc), after_send);
    let mut t = trip("t");
    Trip::add_task(
        &mut t,
        id(1),
        &NewTask {
            title: "a".into(),
            assignee: None,
        },
        T0,
    )
    .unwrap();
    assert!(matches!(
        Trip::add_task(
            &mut t,
            id(1),
            &NewTask {
                title: "b".into(),
                assignee: None
            },
            T0
        ),
        Err(WriteError::DuplicateId { what: "task", .. })
    ));
    assert!(matches!(
        Trip::set_dates(&mut t, Some("2024-02-30"), None, T0),
        Err(WriteError::InvalidInput {
            field: "start_date",
            ..
        })
    ));
}

#[test]
fn untyped_documents_are_kept_and_shown_raw() {
    use weft_schema::automerge::transaction::Transactable;
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(weft_schema::automerge::ROOT, "kind", "spreadsheet")
        .unwrap();
    tx.put(weft_schema::automerge::ROOT, "cells", 3).unwrap();
    tx.commit();
    assert!(matches!(kind(&doc), Err(ReadError::Untyped { found: Some(k) }) if k == "spreadsheet"));
    assert!(matches!(read_typed(&doc), Err(ReadError::Untyped { .. })));
    assert!(matches!(
        messages_json(&doc),
        Err(ReadError::Untyped { .. })
    ));
    assert!(matches!(
        send_message(&mut doc, &NewMessage::text("a", "b"), id(1), T0),
        Err(WriteError::Read {
            source: ReadError::Untyped { .. }
        })
    ));
    assert_eq!(
        to_json(&doc).unwrap(),
        json!({"kind": "spreadsheet", "cells": 3})
    );
    assert_eq!(raw_kind(&doc).as_deref(), Some("spreadsheet"));
    let empty = Automerge::new();
    assert!(matches!(
        kind(&empty),
        Err(ReadError::Untyped { found: None })
    ));
    assert_eq!(to_json(&empty).unwrap(), json!({}));
    assert_eq!(doc.get_heads().len(), 1);
}

#[test]
fn a_checkpoint_learns_which_messages_changed() {
    let mut relay = conversation("x");
    let a = send_message(&mut relay, &NewMessage::text("alice", "one"), id(1), T0).unwrap();
    let b = send_message(&mut relay, &NewMessage::text("alice", "two"), id(2), T0 + 1).unwrap();
    let c = send_message(
        &mut relay,
        &NewMessage::text("alice", "three"),
        id(3),
        T0 + 2,
    )
    .unwrap();
    let checkpoint = relay.get_heads();
    assert_eq!(
        complete(messages_changed_since(&relay, &checkpoint)),
        MessageChanges::default()
    );

    let mut bob = fork(&relay, 2);
    edit_message(&mut bob, &a.id, "one!", T0 + 10).unwrap();
    delete_message(&mut bob, &c.id, T0 + 11).unwrap();
    react(&mut bob, &b.id, "👍", "bob", T0 + 12).unwrap();
    let d = send_message(&mut bob, &NewMessage::text("bob", "four"), id(4), T0 + 13).unwrap();
    relay.merge(&mut bob).unwrap();

    let changes = complete(messages_changed_since(&relay, &checkpoint));
    let ids: Vec<&Id> = changes.changed.iter().map(|m| &m.id).collect();
    assert_eq!(
        ids,
        [&a.id, &c.id, &d.id],
        "edited, deleted and new; not the one that got a reaction"
    );
    assert!(changes.changed[1].deleted);
    assert!(changes.removed.is_empty());
    // Heads it never had: everything is reported.
    let unknown = [weft_schema::automerge::ChangeHash([7; 32])];
    assert_eq!(
        complete(messages_changed_since(&relay, &unknown))
            .changed
            .len(),
        4
    );
}
