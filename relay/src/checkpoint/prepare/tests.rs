//! Preparing rows: records of declared kinds, and messages that do not read.

use crate::meta::DocMeta;
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{Automerge, ReadDoc, ROOT};
use weft_core::store::docs::ChunkKind;
use weft_core::store::{MemStore, WriteBatch};
use weft_schema::{Conversation, Id, NewConversation, NewMessage};

use super::*;

const DOC: DocId = DocId::from_bytes([4; 16]);
const T0: u64 = 1_700_000_000_000;

/// Stores `am` as the relay would (its metadata and a snapshot chunk).
fn store(kv: &MemStore, am: &Automerge) {
    let mut batch = WriteBatch::new();
    let mut meta = DocMeta::default();
    meta.owner = Some("alice".into());
    meta.created_at_ms = T0;
    docstore::put_meta(&mut batch, DOC, &meta);
    docstore::put_chunk(&mut batch, DOC, ChunkKind::Snapshot, am.save());
    kv.write(&batch).unwrap();
}

fn content(p: Prepared) -> (bool, Vec<String>, Vec<String>) {
    let Prepared::Row(row) = p else {
        panic!("no row: {p:?}")
    };
    match row.body {
        Body::Content {
            full,
            messages,
            removed,
            ..
        } => (
            full,
            messages.into_iter().map(|m| m.message_id).collect(),
            removed,
        ),
        other => panic!("no content: {other:?}"),
    }
}

const ESCROW: &str = r#"
[escrow.fields]
buyer  = { type = "user", fixed = true }
seller = { type = "user", fixed = true }
amount = { type = "int", fixed = true }
note   = { type = "string" }
status = { type = "enum", values = ["pending", "funded"], initial = "pending" }

[escrow.collections.notes]
key = "id"
author = "author"
[escrow.collections.notes.fields]
text = { type = "string" }
"#;

fn record(p: Prepared) -> Option<Box<Record>> {
    let Prepared::Row(row) = p else {
        panic!("no row: {p:?}")
    };
    match row.body {
        Body::Content { record, .. } => record,
        other => panic!("no content: {other:?}"),
    }
}

/// Bob buys from Carol through an escrow: its row holds the fields and notes that read,
/// NULs removed; a conversation gets no record.
#[test]
fn a_document_of_a_declared_kind_gets_a_record_and_a_conversation_does_not() {
    let kinds = Kinds::with_declared(ESCROW).unwrap();
    let spec = kinds.get("escrow").unwrap();
    let mut am = Automerge::new();
    let sets = [
        ("buyer", "bob"),
        ("seller", "carol"),
        ("amount", "100"),
        ("note", "by\0 friday"),
    ]
    .map(|(f, v)| (f.to_string(), record::parse_value(spec, f, v).unwrap()));
    record::create(&mut am, spec, &sets).unwrap();
    // A note, and a malformed writer's map where the amount was (it has no place in the
    // row; the others keep theirs).
    let mut tx = am.transaction();
    let (_, notes) = tx.get(ROOT, "notes").unwrap().unwrap();
    let n = tx
        .put_object(&notes, "n1", weft_core::automerge::ObjType::Map)
        .unwrap();
    tx.put(&n, "author", "bob").unwrap();
    tx.put(&n, "text", "paid").unwrap();
    tx.put_object(ROOT, "amount", weft_core::automerge::ObjType::Map)
        .unwrap();
    tx.commit();
    let kv = MemStore::new();
    store(&kv, &am);

    let row = record(prepare(&kv, &kinds, DOC, None).unwrap()).expect("a record");
    assert_eq!(row.kind, "escrow");
    assert_eq!(
        row.fields,
        serde_json::json!({
            "buyer": "bob",
            "seller": "carol",
            "note": "by friday",
            "status": "pending",
            "notes": { "n1": { "author": "bob", "text": "paid" } },
        })
    );
    // A relay that doesn't declare escrow keeps no record of it.
    assert_eq!(
        record(prepare(&kv, &Kinds::builtin(), DOC, None).unwrap()),
        None
    );

    let mut am = Automerge::new();
    let new = NewConversation {
        title: "Lunch".into(),
        participants: vec!["alice".into()],
    };
    Conversation::create(&mut am, &new, T0).unwrap();
    let kv = MemStore::new();
    store(&kv, &am);
    assert_eq!(record(prepare(&kv, &kinds, DOC, None).unwrap()), None);
}

#[test]
fn messages_that_dont_read_get_no_row_and_lose_the_one_they_had() {
    let mut am = Automerge::new();
    let new = NewConversation {
        title: "Lunch".into(),
        participants: vec!["alice".into()],
    };
    Conversation::create(&mut am, &new, T0).unwrap();
    let (a, b) = (Id::from_bytes([1; 16]), Id::from_bytes([2; 16]));
    let noon = NewMessage::text("alice", "Noon?");
    weft_schema::send_message(&mut am, &noon, a.clone(), T0).unwrap();
    let yes = NewMessage::text("bob", "Yes");
    let yes = weft_schema::send_message(&mut am, &yes, b.clone(), T0 + 1).unwrap();
    let kv = MemStore::new();
    store(&kv, &am);
    let (full, rows, _) = content(prepare(&kv, &Kinds::builtin(), DOC, None).unwrap());
    assert!(full);
    assert_eq!(rows, [a.to_string(), b.to_string()]);
    let stored = Stored {
        heads: am.get_heads().iter().map(hash_hex).collect(),
        content: None,
        deleted: false,
    };

    // A malformed client breaks Bob's message and adds a key that isn't a message's.
    let mut tx = am.transaction();
    let (_, msgs) = tx.get(ROOT, "messages").unwrap().unwrap();
    let key = yes.key().to_string();
    let (_, m) = tx.get(&msgs, key.as_str()).unwrap().unwrap();
    tx.put(&m, "author", 42).unwrap();
    tx.put(&msgs, "zzz", 1).unwrap();
    tx.commit();
    store(&kv, &am);

    // Incrementally: nothing to write, and Bob's row goes.
    let (full, rows, removed) =
        content(prepare(&kv, &Kinds::builtin(), DOC, Some(&stored)).unwrap());
    assert!(!full);
    assert!(rows.is_empty(), "{rows:?}");
    assert_eq!(removed, [b.to_string()]);
    // From scratch: only the message that reads has a row.
    let (full, rows, _) = content(prepare(&kv, &Kinds::builtin(), DOC, None).unwrap());
    assert!(full);
    assert_eq!(rows, [a.to_string()]);
}
