//! New messages noted for the push hook: each accepted message once, with its writer, the
//! document's kind and (when asked) its body; nothing for refused changes or other writes.

use automerge::transaction::Transactable;
use automerge::{ReadDoc, ROOT};

use super::{conversation, last, World, BOB, DOC, T};
use crate::{Id, NewMessage};

#[test]
fn each_accepted_message_is_noted_once_with_its_writer_kind_and_body() {
    let (alice, alices) = conversation();
    let mut w = World::new(&alice);
    // Not asked yet: nothing noted for the conversation's first message.
    assert!(w.gate.take_messages(DOC).is_empty());
    w.gate.note_messages(true);

    let mut bob = w.device();
    crate::send_message(
        &mut bob,
        &NewMessage::text("bob", "see you"),
        Id::from_bytes([2; 16]),
        T + 1,
    )
    .unwrap();
    w.offer(BOB, &last(&bob)).unwrap();
    // Refused: a message in alice's name.
    let mut forger = w.device();
    crate::send_message(
        &mut forger,
        &NewMessage::text("alice", "forged"),
        Id::from_bytes([3; 16]),
        T + 2,
    )
    .unwrap();
    assert!(w.offer(BOB, &last(&forger)).is_err());
    // A body typed as text (as JavaScript writes strings).
    let (typed, key) = super::js_message(&w, "bob", T + 3, 4, "typed");
    w.offer(BOB, &typed).unwrap();

    let noted = w.gate.take_messages(DOC);
    let seen: Vec<(&str, Option<&str>, Option<&str>)> = noted
        .iter()
        .map(|m| (m.author.as_str(), m.kind.as_deref(), m.body.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("bob", Some("conversation"), Some("see you")),
            ("bob", Some("conversation"), Some("typed")),
        ]
    );
    assert_eq!(noted[1].key, key);
    assert!(noted[0].key.ends_with(&Id::from_bytes([2; 16]).to_string()));
    // Taken: gone.
    assert!(w.gate.take_messages(DOC).is_empty());

    // Alice deletes her own message: a write, not a new message.
    let mut alice = w.device();
    let messages = alice.get(ROOT, "messages").unwrap().unwrap().1;
    let first = alice
        .keys(&messages)
        .find(|k| k.ends_with(&alices.to_string()))
        .unwrap();
    let rec = alice.get(&messages, first.as_str()).unwrap().unwrap().1;
    alice
        .transact::<_, _, automerge::AutomergeError>(|tx| tx.put(&rec, "deleted", true))
        .unwrap();
    w.offer(super::ALICE, &last(&alice)).unwrap();
    assert!(w.gate.take_messages(DOC).is_empty());
    assert_eq!(w.gate.take_dropped_messages(), 0);
}

#[test]
fn without_bodies_asked_none_is_kept() {
    let (alice, _) = conversation();
    let mut w = World::new(&alice);
    w.gate.note_messages(false);
    let mut bob = w.device();
    crate::send_message(
        &mut bob,
        &NewMessage::text("bob", "secret plans"),
        Id::from_bytes([2; 16]),
        T + 1,
    )
    .unwrap();
    w.offer(BOB, &last(&bob)).unwrap();
    let noted = w.gate.take_messages(DOC);
    assert_eq!(noted.len(), 1);
    assert_eq!(noted[0].body, None);
}
