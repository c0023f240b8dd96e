//! A hostile (or buggy) client writes malformed entries into a shared chat, and they sync to
//! everyone: each device still reads every other entry, the same on all of them, is told
//! what was skipped and where, and keeps writing.

mod common;

use common::*;
use weft_schema::automerge::transaction::Transactable;
use weft_schema::automerge::{Automerge, ChangeHash, ObjType, ReadDoc, ROOT};
use weft_schema::*;

/// The key of Eve's message, whose author is a number.
fn eves_key() -> MessageKey {
    MessageKey {
        created_at: Hlc::new(T0 + 1500, 0, 9).unwrap(),
        id: id(66),
    }
}

/// Eve's client writes junk with raw Automerge: a key that isn't a message key, a message
/// whose author is a number, reactions and a read position of the wrong shape.
fn eve_vandalizes(doc: &mut Automerge) {
    let mut tx = doc.transaction();
    let (_, msgs) = tx.get(ROOT, "messages").unwrap().unwrap();
    tx.put(&msgs, "zzz", 42).unwrap();
    let key = eves_key();
    let m = tx
        .put_object(&msgs, key.to_string().as_str(), ObjType::Map)
        .unwrap();
    tx.put(&m, "id", key.id.as_str()).unwrap();
    tx.put(&m, "author", 42).unwrap();
    tx.put(&m, "created_at", key.created_at.to_string())
        .unwrap();
    tx.put(&m, "body", "boo").unwrap();
    let (_, reactions) = tx.get(ROOT, "reactions").unwrap().unwrap();
    tx.put(&reactions, id(1).as_str(), "lol").unwrap();
    let (_, read) = tx.get(ROOT, "read").unwrap().unwrap();
    tx.put(&read, "eve", true).unwrap();
    tx.commit();
}

fn paths<T>(p: &Partial<T>) -> Vec<String> {
    p.skipped.iter().map(|s| s.path.to_string()).collect()
}

/// The last messages, a lookup by id and a message's reactions read around Eve's junk
/// (`bad` is the path of her message) and name what they skipped.
fn lookups_reach_past_the_junk(alice: &Automerge, noon: &Message, yes: &Message, bad: &str) {
    // The tail still holds two messages, reaching past the junk at its end.
    let last = last_messages(alice, 2).unwrap();
    assert_eq!(last.value, [noon.clone(), yes.clone()]);
    assert_eq!(paths(&last), [bad.to_string(), "messages.zzz".into()]);
    let last = last_messages(alice, 1).unwrap();
    assert_eq!(last.value, std::slice::from_ref(yes));
    assert_eq!(
        paths(&last),
        [bad.to_string(), "messages.zzz".into()],
        "both newer than it"
    );
    // Looking Eve's message up finds it malformed rather than failing.
    let found = find_message(alice, &id(66)).unwrap();
    assert_eq!(paths(&found), [bad.to_string()]);
    assert_eq!(found.value, None);
    assert_eq!(complete(find_message(alice, &noon.id)), Some(noon.clone()));
    // Reactions to the message whose reactions Eve broke: none, and why.
    let r = reactions(alice, &id(1)).unwrap();
    assert!(r.value.is_empty());
    assert_eq!(paths(&r), [format!("reactions[\"{}\"]", id(1))]);
}

#[test]
fn everyone_reads_around_a_hostile_clients_junk_and_keeps_writing() {
    let mut alice = conversation("Lunch");
    let noon = send_message(&mut alice, &NewMessage::text("alice", "Noon?"), id(1), T0).unwrap();
    let yes = send_message(
        &mut alice,
        &NewMessage::text("bob", "Yes"),
        id(2),
        T0 + 1000,
    )
    .unwrap();
    react(&mut alice, &yes.id, "👍", "alice", T0 + 1100).unwrap();
    let before_eve: Vec<ChangeHash> = alice.get_heads();
    let mut bob = fork(&alice, 1);
    let mut eve = fork(&alice, 9);
    eve_vandalizes(&mut eve);
    let mut docs = [alice, bob.fork(), eve];
    merge_all(&mut docs);
    let [alice, b, _] = &mut docs;
    bob = b.fork();

    // Alice sees Bob's and her own messages; Eve's entries are named, in key order.
    let c = Conversation::read(alice).unwrap();
    let bad = format!("messages[\"{}\"]", eves_key());
    assert_eq!(
        paths(&c),
        [
            bad.clone(),
            "messages.zzz".into(),
            "read.eve".into(),
            format!("reactions[\"{}\"]", id(1)),
        ]
    );
    assert_eq!(c.value.chat.messages, [noon.clone(), yes.clone()]);
    assert_eq!(c.value.chat.reactions[&yes.id]["👍"].len(), 1);
    assert_eq!(c.value.title, "Lunch");
    // The all-or-nothing read is still there for whoever wants it.
    assert!(matches!(
        Conversation::read(alice).unwrap().strict(),
        Err(ReadError::Invalid { .. })
    ));

    // Bob's device reads the same, byte for byte.
    let (a, b) = (messages_json(alice).unwrap(), messages_json(&bob).unwrap());
    assert_eq!(a.value, b.value);
    assert_eq!(paths(&a), paths(&b));
    assert_eq!(paths(&a), [bad.clone(), "messages.zzz".into()]);

    lookups_reach_past_the_junk(alice, &noon, &yes, &bad);

    // What a checkpoint sees since before Eve: no message rows to write, and the key of the
    // one that doesn't read (so its row, if it had one, can go).
    let ch = messages_changed_since(alice, &before_eve).unwrap();
    assert!(ch.value.changed.is_empty());
    let keys: Vec<_> = ch.skipped.iter().filter_map(|s| s.message_key()).collect();
    assert_eq!(keys, [eves_key()]);

    // Everyone keeps writing, and it all syncs.
    let later = send_message(
        alice,
        &NewMessage::text("alice", "See you"),
        id(3),
        T0 + 2000,
    )
    .unwrap();
    assert!(later.created_at > yes.created_at);
    edit_message(&mut bob, &noon.id, "Noon, then?", T0 + 2100).unwrap();
    react(&mut bob, &id(1), "🎉", "bob", T0 + 2200).unwrap();
    assert!(
        mark_read(&mut bob, "bob", &later.key(), T0 + 2300).is_err(),
        "not synced yet"
    );
    assert!(mark_read(&mut bob, "bob", &yes.key(), T0 + 2300).unwrap());
    set_title(&mut bob, "Lunch at noon", T0 + 2400).unwrap();
    alice.merge(&mut bob).unwrap();
    bob.merge(alice).unwrap();
    let c = Conversation::read(&bob).unwrap();
    let bodies: Vec<&str> = c
        .value
        .chat
        .messages
        .iter()
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(bodies, ["Noon, then?", "Yes", "See you"]);
    assert_eq!(c.value.title, "Lunch at noon");
    assert_eq!(c.value.chat.read["bob"], yes.key());
    // Bob's reaction went into a map beside Eve's junk, which is still reported.
    assert!(c.value.chat.reactions[&id(1)]["🎉"].contains("bob"));
    assert_eq!(
        messages_json(alice).unwrap().value,
        messages_json(&bob).unwrap().value
    );
    assert!(paths(&c).contains(&bad));
}
