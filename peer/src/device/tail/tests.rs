//! The cached tail through a real device and its redb store: served when its heads are the
//! stored ones, and a fallback to the document otherwise.

use std::path::Path;

use weft_core::automerge::Automerge;
use weft_core::store::docs::{self, ChunkKind};
use weft_core::store::{KvStore, RedbStore, StagingLimits, WriteBatch};
use weft_core::DocId;
use weft_schema::{self as schema, NewConversation, NewMessage};

use super::*;
use crate::{DataDir, Device};

async fn conversation(device: &Device, messages: usize) -> DocId {
    let new = NewConversation {
        title: "t".into(),
        participants: vec!["alice".into()],
    };
    let (doc, r) = device
        .create(Some("conversation"), move |am| {
            schema::Conversation::create(am, &new, 1_000)
        })
        .await
        .unwrap();
    r.unwrap();
    for i in 0..messages {
        send(device, doc, &format!("message {i}")).await;
    }
    doc
}

async fn send(device: &Device, doc: DocId, body: &str) {
    let msg = NewMessage::text("alice", body);
    let id = schema::Id::from_bytes(rand::random());
    device
        .change(doc, move |am| schema::send_message(am, &msg, id, 2_000))
        .await
        .unwrap()
        .unwrap();
}

/// The device's store, opened as the device opens it (the device must be closed).
fn store(dir: &Path) -> RedbStore {
    RedbStore::open_with_tables(
        DataDir::new(dir).store_path(),
        &[TAIL_CACHE],
        StagingLimits::default(),
    )
    .unwrap()
}

fn bodies(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.body.clone()).collect()
}

async fn last(device: &Device, doc: DocId, n: usize) -> Vec<String> {
    let read = device.last_messages(doc, n).await.unwrap().unwrap();
    assert!(read.is_complete());
    bodies(&read.value)
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("message {i}")).collect()
}

/// A change made outside the device (as a peer's change the device stored while it did not
/// hold the document loaded, with no chance to rewrite the tail), written as the host writes
/// one: an incremental chunk.
fn store_a_peers_message(store: &RedbStore, doc: DocId, body: &str) {
    let (mut am, _): (Automerge, _) = docs::load_document(store, doc).unwrap().unwrap();
    let before = am.get_heads();
    am.set_actor(weft_core::automerge::ActorId::random());
    let msg = NewMessage::text("bob", body);
    schema::send_message(&mut am, &msg, schema::Id::from_bytes(rand::random()), 3_000).unwrap();
    let mut batch = WriteBatch::new();
    docs::put_chunk(
        &mut batch,
        doc,
        ChunkKind::Incremental,
        am.save_after(&before),
    );
    store.write(&batch).unwrap();
}

#[tokio::test]
async fn closing_writes_the_tail_and_a_reopened_device_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::open(DataDir::new(dir.path())).await.unwrap();
    let doc = conversation(&device, 7).await;
    assert_eq!(last(&device, doc, 3).await, expected(4..7));
    device.close().await;

    let s = store(dir.path());
    let (hit, heads) =
        lookup(&s, doc, 3).expect("the tail written at close is at the stored heads");
    assert_eq!(bodies(&hit.value), expected(4..7));
    assert_eq!(Some(heads), docs::stored_heads(&s, doc).unwrap());
    // More than the chat holds: the tail holds every message.
    assert_eq!(
        bodies(&lookup(&s, doc, 50).unwrap().0.value),
        expected(0..7)
    );
    assert_eq!(
        bodies(&lookup(&s, doc, TAIL_LEN + 1).unwrap().0.value),
        expected(0..7)
    );
    drop(s);

    let device = Device::open(DataDir::new(dir.path())).await.unwrap();
    assert_eq!(last(&device, doc, 3).await, expected(4..7));
    assert_eq!(last(&device, doc, TAIL_LEN + 1).await, expected(0..7));
    device.close().await;
}

#[tokio::test]
async fn a_change_stored_after_the_tail_makes_it_miss_and_the_change_shows() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::open(DataDir::new(dir.path())).await.unwrap();
    let doc = conversation(&device, 5).await;
    device.close().await;

    let s = store(dir.path());
    assert!(lookup(&s, doc, 2).is_some());
    store_a_peers_message(&s, doc, "from bob");
    assert!(lookup(&s, doc, 2).is_none(), "a stale tail was served");
    drop(s);

    let device = Device::open(DataDir::new(dir.path())).await.unwrap();
    assert_eq!(
        last(&device, doc, 2).await,
        vec!["message 4".to_string(), "from bob".to_string()]
    );
    // Closing rewrites the tail at the new heads.
    device.close().await;
    let s = store(dir.path());
    let (hit, _) = lookup(&s, doc, 2).unwrap();
    assert_eq!(bodies(&hit.value), vec!["message 4", "from bob"]);
}

#[tokio::test]
async fn a_local_change_after_reopening_is_shown_and_cached_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::open(DataDir::new(dir.path())).await.unwrap();
    let doc = conversation(&device, 3).await;
    device.close().await;

    let device = Device::open(DataDir::new(dir.path())).await.unwrap();
    assert_eq!(last(&device, doc, 1).await, expected(2..3));
    send(&device, doc, "message 3").await;
    assert_eq!(last(&device, doc, 2).await, expected(2..4));
    device.close().await;

    let s = store(dir.path());
    assert_eq!(bodies(&lookup(&s, doc, 2).unwrap().0.value), expected(2..4));
}

#[tokio::test]
async fn damaged_cache_rows_fall_back_to_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::open(DataDir::new(dir.path())).await.unwrap();
    let doc = conversation(&device, 4).await;
    device.close().await;

    let s = store(dir.path());
    let good = s.get(TAIL_CACHE, doc.as_bytes()).unwrap().unwrap();
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    let damaged = [
        Vec::new(),
        vec![0x7f],
        good[..good.len() / 2].to_vec(),
        flipped,
        // A valid row of another document's tail: other heads.
        {
            let mut other = Tail::decode(&good).unwrap();
            other.heads = vec![weft_core::automerge::ChangeHash([9; 32])];
            other.encode()
        },
    ];
    drop(s);
    for row in damaged {
        let s = store(dir.path());
        let mut batch = WriteBatch::new();
        batch.put(TAIL_CACHE, doc.as_bytes().to_vec(), row);
        s.write(&batch).unwrap();
        assert!(lookup(&s, doc, 2).is_none());
        drop(s);
        let device = Device::open(DataDir::new(dir.path())).await.unwrap();
        assert_eq!(last(&device, doc, 2).await, expected(2..4));
        device.close().await;
    }
}

#[tokio::test]
async fn a_document_that_is_not_a_chat_reads_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::open(DataDir::new(dir.path())).await.unwrap();
    let (doc, ()) = device
        .create(None, |am| {
            use weft_core::automerge::transaction::Transactable;
            let mut tx = am.transaction();
            tx.put(weft_core::automerge::ROOT, "x", 1).unwrap();
            tx.commit();
        })
        .await
        .unwrap();
    device.close().await;
    let s = store(dir.path());
    assert!(s.get(TAIL_CACHE, doc.as_bytes()).unwrap().is_none());
    drop(s);
    let device = Device::open(DataDir::new(dir.path())).await.unwrap();
    assert!(device.last_messages(doc, 5).await.unwrap().is_err());
    device.close().await;
}
