//! What users see when they write concurrently: one order of messages whatever the clocks,
//! edits and deletes that merge, conflicts that show, reactions and read positions.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::json;
use weft_schema::automerge::Prop;
use weft_schema::*;

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
