use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};

use super::*;
use crate::{
    delete_message, edit_message, send_message, Conversation, NewConversation, NewMessage,
};

fn chat(messages: usize) -> (Automerge, Vec<Id>) {
    let mut am = Automerge::new();
    let new = NewConversation {
        title: "t".into(),
        participants: vec!["alice".into()],
    };
    Conversation::create(&mut am, &new, 1_000).unwrap();
    let ids = (0..messages)
        .map(|i| {
            let id = Id::from_bytes([i as u8 + 1; 16]);
            let msg = NewMessage {
                reply_to: (i > 0).then(|| Id::from_bytes([i as u8; 16])),
                attachment: (i == 1).then(|| Attachment {
                    url: "https://example.com/a.jpg".into(),
                    mime_type: "image/jpeg".into(),
                    size: 42,
                    name: Some("a.jpg".into()),
                }),
                ..NewMessage::text("alice", format!("message {i}"))
            };
            send_message(&mut am, &msg, id.clone(), 2_000 + i as u64).unwrap();
            id
        })
        .collect();
    (am, ids)
}

#[test]
fn a_tail_round_trips_and_gives_what_last_messages_gives() {
    let (mut am, ids) = chat(8);
    edit_message(&mut am, &ids[6], "edited", 9_000).unwrap();
    delete_message(&mut am, &ids[7], 9_001).unwrap();
    let tail = Tail::read(&am, 5).unwrap();
    assert_eq!(tail.messages.len(), 5);
    let again = Tail::decode(&tail.encode()).unwrap();
    assert_eq!(again, tail);
    for n in 0..=5 {
        let cached = again.last(n).unwrap();
        assert!(cached.is_complete());
        assert_eq!(
            cached.value,
            last_messages(&am, n).unwrap().value,
            "n = {n}"
        );
    }
    // More than it holds, of a chat that may hold more: not from the cache.
    assert!(again.last(6).is_none());
}

#[test]
fn a_tail_of_a_short_chat_answers_any_n() {
    let (am, _) = chat(3);
    let tail = Tail::read(&am, 50).unwrap();
    assert_eq!(tail.messages.len(), 3);
    assert_eq!(
        tail.last(100).unwrap().value,
        last_messages(&am, 100).unwrap().value
    );
    let (empty, _) = chat(0);
    assert_eq!(
        Tail::read(&empty, 50).unwrap().last(10).unwrap().value,
        vec![]
    );
}

#[test]
fn heads_are_the_documents_and_move_with_it() {
    let (mut am, _) = chat(2);
    let before = Tail::read(&am, 10).unwrap();
    let mut heads = am.get_heads();
    heads.sort_unstable();
    assert_eq!(before.heads, heads);
    send_message(
        &mut am,
        &NewMessage::text("bob", "new"),
        Id::from_bytes([99; 16]),
        5_000,
    )
    .unwrap();
    let after = Tail::read(&am, 10).unwrap();
    assert_ne!(after.heads, before.heads);
    assert_eq!(after.messages.len(), 3);
}

#[test]
fn a_read_with_skipped_entries_or_of_another_kind_is_not_a_tail() {
    let (mut am, _) = chat(2);
    let mut tx = am.transaction();
    let messages = match tx.get(ROOT, "messages").unwrap() {
        Some((_, obj)) => obj,
        None => panic!("a chat has messages"),
    };
    tx.put(&messages, "9999-bad", "not a message").unwrap();
    tx.commit();
    assert!(!last_messages(&am, 10).unwrap().is_complete());
    assert_eq!(Tail::read(&am, 10), None);
    assert_eq!(Tail::read(&Automerge::new(), 10), None);
}

#[test]
fn damaged_bytes_are_errors_never_panics() {
    let (am, _) = chat(3);
    let good = Tail::read(&am, 10).unwrap().encode();
    assert!(matches!(Tail::decode(&[]), Err(TailError::Empty)));
    assert!(matches!(
        Tail::decode(&[9, b'{']),
        Err(TailError::UnknownFormat(9))
    ));
    assert!(matches!(
        Tail::decode(&good[..good.len() / 2]),
        Err(TailError::Decode(_))
    ));
    let text = String::from_utf8(good[1..].to_vec()).unwrap();
    let bad_hlc = text.replacen("\"created_at\":\"", "\"created_at\":\"x", 1);
    assert!(matches!(
        Tail::decode(&[&[1u8][..], bad_hlc.as_bytes()].concat()),
        Err(TailError::Field("created_at"))
    ));
    let bad_heads = text.replacen("\"heads\":[\"", "\"heads\":[\"zz", 1);
    assert!(matches!(
        Tail::decode(&[&[1u8][..], bad_heads.as_bytes()].concat()),
        Err(TailError::Field("heads"))
    ));
    let too_many = text.replacen("\"asked\":10", "\"asked\":1", 1);
    assert!(matches!(
        Tail::decode(&[&[1u8][..], too_many.as_bytes()].concat()),
        Err(TailError::Field("asked"))
    ));
    // Every truncation and every single flipped byte decodes or errs.
    for i in 0..good.len() {
        let _ = Tail::decode(&good[..i]);
        let mut flipped = good.clone();
        flipped[i] ^= 0x55;
        let _ = Tail::decode(&flipped);
    }
}
