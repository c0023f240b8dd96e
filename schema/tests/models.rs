//! Round trips of every model, and what users see when they write concurrently.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::json;
use weft_schema::automerge::{Automerge, Prop};
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
fn bob_replies_after_alice_even_with_his_clock_an_hour_behind() {
    let mut alice = conversation("Plans");
    let mut bob = fork(&alice, 2);
    let question = send_message(
        &mut alice,
        &NewMessage::text("alice", "Dinner?"),
        id(1),
        T0 + 3_600_000,
    )
    .unwrap();
    bob.merge(&mut alice).unwrap();
    let reply = send_message(&mut bob, &NewMessage::text("bob", "Sure"), id(0), T0).unwrap();
    assert!(reply.created_at > question.created_at);
    alice.merge(&mut bob).unwrap();
    let bodies: Vec<String> = complete(messages(&alice))
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies, ["Dinner?", "Sure"]);
    // Both show the question's wall time for the reply: it borrowed the later clock.
    assert_eq!(reply.created_at.physical_ms(), T0 + 3_600_000);
}

#[test]
fn alice_and_bob_write_offline_and_see_every_message_in_one_order() {
    let base = conversation("Offline");
    let mut alice = fork(&base, 1);
    let mut bob = fork(&base, 2);
    for i in 0..20u32 {
        send_message(
            &mut alice,
            &NewMessage::text("alice", format!("a{i}")),
            id(i),
            T0 + u64::from(i) * 1000,
        )
        .unwrap();
        send_message(
            &mut bob,
            &NewMessage::text("bob", format!("b{i}")),
            id(100 + i),
            T0 + u64::from(i) * 1000 + 500,
        )
        .unwrap();
    }
    let mut docs = [alice, bob];
    merge_all(&mut docs);
    let all = complete(messages(&docs[0]));
    assert_eq!(all.len(), 40);
    let bodies: Vec<&str> = all.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(
        &bodies[..4],
        ["a0", "b0", "a1", "b1"],
        "interleaved by time, not by device"
    );
    assert_eq!(
        complete(messages_json(&docs[0])),
        complete(messages_json(&docs[1]))
    );
    assert_eq!(complete(last_messages(&docs[1], 3)), all[37..].to_vec());
}

#[test]
fn concurrent_edits_of_one_message_merge_as_text() {
    let mut alice = conversation("x");
    let m = send_message(
        &mut alice,
        &NewMessage::text("alice", "meet at noon"),
        id(1),
        T0,
    )
    .unwrap();
    let mut bob = fork(&alice, 2);
    edit_message(&mut alice, &m.id, "meet at noon tomorrow", T0 + 10).unwrap();
    edit_message(&mut bob, &m.id, "let's meet at noon", T0 + 20).unwrap();
    let mut docs = [alice, bob];
    merge_all(&mut docs);
    for d in &docs {
        let got = complete(find_message(d, &m.id)).unwrap();
        assert_eq!(got.body, "let's meet at noon tomorrow");
        assert!(got.edited_at.is_some_and(|e| e > m.created_at));
    }
    assert_eq!(
        complete(messages_json(&docs[0])),
        complete(messages_json(&docs[1]))
    );
}

#[test]
fn a_delete_concurrent_with_an_edit_ends_deleted_everywhere() {
    let mut alice = conversation("x");
    let m = send_message(
        &mut alice,
        &NewMessage::text("alice", "oops wrong chat"),
        id(1),
        T0,
    )
    .unwrap();
    let mut bob = fork(&alice, 2);
    delete_message(&mut alice, &m.id, T0 + 10).unwrap();
    edit_message(&mut bob, &m.id, "oops wrong chat, sorry", T0 + 20).unwrap();
    let mut docs = [alice, bob];
    merge_all(&mut docs);
    for d in &docs {
        let got = complete(find_message(d, &m.id)).unwrap();
        assert!(got.deleted);
        assert_eq!(got.body, "");
    }
    assert_eq!(
        complete(messages_json(&docs[0])),
        complete(messages_json(&docs[1]))
    );
    assert!(matches!(
        edit_message(&mut docs[0], &m.id, "again", T0),
        Err(WriteError::Deleted { .. })
    ));
    // Deleting again is a no-op.
    let h = heads(&docs[0]);
    delete_message(&mut docs[0], &m.id, T0).unwrap();
    assert_eq!(heads(&docs[0]), h);
}

#[test]
fn concurrent_task_toggles_resolve_alike_and_the_conflict_is_visible() {
    let mut alice = trip("x");
    Trip::add_task(
        &mut alice,
        id(1),
        &NewTask {
            title: "Book hotel".into(),
            assignee: None,
        },
        T0,
    )
    .unwrap();
    let mut bob = fork(&alice, 2);
    Trip::set_task_done(&mut alice, &id(1), true, T0).unwrap();
    Trip::rename_task(&mut alice, &id(1), "Book hotel in Alfama", T0).unwrap();
    // Bob ticks it and changes his mind. (Writing the value a field already holds makes no
    // operation, so an untouched `false` would not conflict with Alice's `true`.)
    Trip::set_task_done(&mut bob, &id(1), true, T0).unwrap();
    Trip::set_task_done(&mut bob, &id(1), false, T0).unwrap();
    Trip::rename_task(&mut bob, &id(1), "Book hostel", T0).unwrap();
    let mut docs = [alice, bob];
    merge_all(&mut docs);
    let (a, b) = (
        complete(Trip::read(&docs[0])),
        complete(Trip::read(&docs[1])),
    );
    assert_eq!(a, b);
    let done: [Prop; 3] = ["tasks".into(), id(1).as_str().into(), "done".into()];
    let title: [Prop; 3] = ["tasks".into(), id(1).as_str().into(), "title".into()];
    for d in &docs {
        let c = conflicts(d, &done).unwrap();
        assert_eq!(c.len(), 2);
        assert!(c.contains(&json!(true)) && c.contains(&json!(false)));
        assert_eq!(
            c.last().unwrap(),
            &json!(a.tasks[0].done),
            "the winner is last"
        );
        let c = conflicts(d, &title).unwrap();
        assert_eq!(c.last().unwrap(), &json!(a.tasks[0].title));
        assert_eq!(c.len(), 2);
    }
    // The next write resolves the conflict.
    Trip::set_task_done(&mut docs[0], &id(1), true, T0).unwrap();
    assert_eq!(conflicts(&docs[0], &done).unwrap(), vec![json!(true)]);
    assert!(conflicts(&docs[0], &["nothing".into()]).unwrap().is_empty());
}

#[test]
fn concurrent_title_edits_merge_and_a_trip_title_conflict_shows() {
    let mut alice = conversation("Lunch");
    let mut bob = fork(&alice, 2);
    set_title(&mut alice, "Team lunch", T0).unwrap();
    set_title(&mut bob, "Lunch on Friday", T0).unwrap();
    let mut docs = [alice, bob];
    merge_all(&mut docs);
    let t = complete(Conversation::read(&docs[0])).title;
    assert_eq!(t, "Team lunch on Friday");
    assert_eq!(t, complete(Conversation::read(&docs[1])).title);
}

#[test]
fn reactions_from_two_devices_both_count() {
    let mut alice = conversation("x");
    let m = send_message(
        &mut alice,
        &NewMessage::text("alice", "🎉 shipped"),
        id(1),
        T0,
    )
    .unwrap();
    // Nobody has reacted yet, so each device creates the per-message container: a conflict.
    let mut bob = fork(&alice, 2);
    let mut carol = fork(&alice, 3);
    react(&mut bob, &m.id, "🎉", "bob", T0).unwrap();
    react(&mut carol, &m.id, "🎉", "carol", T0).unwrap();
    react(&mut carol, &m.id, "❤️", "carol", T0).unwrap();
    let mut docs = [alice, bob, carol];
    merge_all(&mut docs);
    let expected = BTreeMap::from([
        (
            "🎉".to_owned(),
            BTreeSet::from(["bob".to_owned(), "carol".to_owned()]),
        ),
        ("❤️".to_owned(), BTreeSet::from(["carol".to_owned()])),
    ]);
    for d in &docs {
        assert_eq!(complete(reactions(d, &m.id)), expected);
    }
    // Un-reacting removes it from whichever container holds it.
    unreact(&mut docs[0], &m.id, "🎉", "carol", T0).unwrap();
    unreact(&mut docs[0], &m.id, "🎉", "bob", T0).unwrap();
    let left = complete(reactions(&docs[0], &m.id));
    assert_eq!(
        left,
        BTreeMap::from([("❤️".to_owned(), BTreeSet::from(["carol".to_owned()]))])
    );
    assert_eq!(
        complete(Conversation::read(&docs[0])).chat.reactions.len(),
        1
    );
}

#[test]
fn read_positions_only_move_forward() {
    let mut alice = conversation("x");
    let m1 = send_message(&mut alice, &NewMessage::text("alice", "1"), id(1), T0).unwrap();
    let m2 = send_message(&mut alice, &NewMessage::text("alice", "2"), id(2), T0).unwrap();
    let mut phone = fork(&alice, 2);
    assert!(mark_read(&mut alice, "bob", &m2.key(), T0).unwrap());
    assert!(!mark_read(&mut alice, "bob", &m1.key(), T0).unwrap());
    assert!(mark_read(&mut phone, "bob", &m1.key(), T0).unwrap());
    let mut docs = [alice, phone];
    merge_all(&mut docs);
    for d in &docs {
        assert_eq!(complete(read_positions(d))["bob"], m2.key());
    }
}

#[test]
fn last_messages_of_a_long_chat_with_merged_histories() {
    let base = conversation("x");
    let mut a = fork(&base, 1);
    let mut b = fork(&base, 2);
    // Bob's device was offline for a while with a clock that runs 5 s behind.
    for i in 0..300u32 {
        send_message(
            &mut a,
            &NewMessage::text("alice", format!("a{i}")),
            id(i),
            T0 + u64::from(i) * 100,
        )
        .unwrap();
        if i % 3 == 0 {
            send_message(
                &mut b,
                &NewMessage::text("bob", format!("b{i}")),
                id(1000 + i),
                T0 + u64::from(i) * 100 - 5000,
            )
            .unwrap();
        }
    }
    let mut docs = [a, b];
    merge_all(&mut docs);
    let all = complete(messages(&docs[0]));
    for n in [0, 1, 7, 50, 399, 400, 1000] {
        let tail = complete(last_messages(&docs[0], n));
        assert_eq!(tail, all[all.len().saturating_sub(n)..].to_vec(), "n = {n}");
    }
    let mut sorted = all.clone();
    sorted.sort_by_key(|m| m.key());
    assert_eq!(sorted, all, "messages come in (created_at, id) order");
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
