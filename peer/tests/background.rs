//! A device whose app goes to the background: its documents leave memory and come back when
//! used, with nothing lost.

use weft_peer::schema::{self, NewConversation, NewMessage};
use weft_peer::{DataDir, Device};

const T: u64 = 1_700_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_documents_leave_memory_and_load_again_when_used() {
    let tmp = tempfile::tempdir().unwrap();
    let device = Device::open(DataDir::new(tmp.path())).await.unwrap();
    let mut docs = Vec::new();
    for i in 0..20u8 {
        let new = NewConversation {
            title: format!("chat {i}"),
            participants: vec!["alice".into()],
        };
        let (doc, r) = device
            .create(Some("conversation"), move |am| {
                schema::Conversation::create(am, &new, T)
            })
            .await
            .unwrap();
        r.unwrap();
        let msg = NewMessage::text("alice", format!("hello {i}"));
        device
            .change(doc, move |am| {
                schema::send_message(am, &msg, schema::Id::from_bytes([i; 16]), T)
            })
            .await
            .unwrap()
            .unwrap();
        docs.push(doc);
    }
    assert_eq!(device.trim_memory().await.unwrap(), 20);
    // Nothing is left to trim.
    assert_eq!(device.trim_memory().await.unwrap(), 0);
    // Each reads as before (the last message from its cached tail or a load), and takes writes.
    for (i, doc) in docs.iter().enumerate() {
        let last = device.last_messages(*doc, 1).await.unwrap().unwrap();
        assert_eq!(last.value[0].body, format!("hello {i}"));
    }
    let msg = NewMessage::text("alice", "after the trim");
    device
        .change(docs[0], move |am| {
            schema::send_message(am, &msg, schema::Id::from_bytes([99; 16]), T + 1)
        })
        .await
        .unwrap()
        .unwrap();
    device.close().await;
    let device = Device::open(DataDir::new(tmp.path())).await.unwrap();
    let last = device.last_messages(docs[0], 2).await.unwrap().unwrap();
    let bodies: Vec<&str> = last.value.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["hello 0", "after the trim"]);
    device.close().await;
}
