//! Postgres checkpoints through the real `weft-relay` binary, a throwaway Postgres and light
//! QUIC devices: what a backend job reads after devices chat, what survives Postgres going
//! away, a SIGTERM, the loss of the relay's data directory, and two relays writing one document.
//! Deletions are in `postgres_delete.rs`; what both share is in `common/checkpoints.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::checkpoints::*;
use common::pg::{self, PgServer};
use weft_core::wire::ErrorCode;
use weft_core::{hash_hex, DocId, Document, Role};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_job_reads_the_conversation_and_its_rows_follow_edits_and_deletes() {
    let Some(pg) = PgServer::start() else { return };
    let relay = Relay::start(&pg, "200ms");
    let db = pg::client(&pg).await;
    let doc = new_doc();

    // Alice starts a conversation, shares it with Bob, and they chat.
    let mut alice = Device::connect(&relay, "alice").await;
    alice.create_conversation(doc, "Trip to Lyon").await;
    alice.share(doc, "bob", Role::ReadWrite).await;
    alice.share(doc, "carol", Role::ReadOnly).await;
    let first = alice.say(doc, "Train at 9?");
    let second = alice.say(doc, "Or the 10:15");
    alice.synced(doc).await;
    let mut bob = Device::connect(&relay, "bob").await;
    assert_eq!(bob.subscribe(doc).await, Ok(Role::ReadWrite));
    bob.say(doc, "9 works");
    bob.synced(doc).await;
    alice.until(|a| a.messages(doc).len() == 3).await;
    alice.synced(doc).await;

    let heads = alice.heads(doc);
    assert_eq!(bob.heads(doc), heads);
    checkpointed(&db, doc, &heads).await;

    assert_conversation_row(&db, doc, &heads).await;
    assert_eq!(
        access_rows(&db, doc).await,
        [("bob".into(), "rw".into()), ("carol".into(), "ro".into())]
    );
    assert_eq!(
        message_rows(&db, doc).await,
        expected_rows(&alice.messages(doc))
    );

    // Alice fixes a message and takes the other back: the rows follow.
    alice.edit(doc, &first, "Train at 9:30?");
    alice.delete_message(doc, &second);
    alice.synced(doc).await;
    let heads = alice.heads(doc);
    checkpointed(&db, doc, &heads).await;
    let rows = message_rows(&db, doc).await;
    assert_eq!(rows, expected_rows(&alice.messages(doc)));
    let edited = rows.iter().find(|r| r.id == first.to_string()).unwrap();
    assert_eq!(
        (edited.body.as_str(), edited.edited),
        ("Train at 9:30?", true)
    );
    let deleted = rows.iter().find(|r| r.id == second.to_string()).unwrap();
    assert!(deleted.deleted && deleted.body.is_empty());

    // Full-text search, as README shows a backend job doing it.
    let hits: Vec<String> = db
        .query(
            "select m.message_id from weft_messages m join weft_access a using (doc_id) \
             where a.user_id = 'carol' and not m.deleted \
             and to_tsvector('simple', coalesce(m.body, '')) @@ plainto_tsquery('simple', $1)",
            &[&"works"],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(hits.len(), 1);

    // The README's backend-job queries run as written.
    readme_queries_run(&db, doc).await;

    // Deleting the document marks the row.
    alice.delete(doc).await;
    until_row(
        &db,
        doc,
        "deletion checkpointed",
        "select deleted_at is not null from weft_documents where doc_id = $1",
    )
    .await;
}

/// `doc`'s `weft_documents` row holds the conversation at `heads`: its kind and owner, content
/// that plain Automerge and the typed API load, its hash, its JSON view, and no deletion.
async fn assert_conversation_row(db: &tokio_postgres::Client, doc: DocId, heads: &[String]) {
    let row = db
        .query_one(
            "select kind, owner, content, content_blake3, doc, deleted_at is null \
             from weft_documents where doc_id = $1",
            &[&doc.to_string()],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("conversation")
    );
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("alice"));
    let content: Vec<u8> = row.get(2);
    let hash: Vec<u8> = row.get(3);
    assert_eq!(hash, blake3::hash(&content).as_bytes().to_vec());
    // Plain Automerge loads the content with the devices' heads.
    let plain = load_plain(&content);
    let mut plain_heads: Vec<String> = plain.get_heads().iter().map(hash_hex).collect();
    plain_heads.sort();
    assert_eq!(plain_heads, heads);
    let json: serde_json::Value = row.get(4);
    assert_eq!(json["title"], "Trip to Lyon");
    assert!(row.get::<_, bool>(5));
    // The typed decoding API reads the same conversation.
    match weft_schema::decode_content(&content, Some(&hash))
        .unwrap()
        .value
    {
        weft_schema::TypedDoc::Conversation(c) => assert_eq!(c.title, "Trip to Lyon"),
        other => panic!("not a conversation: {other:?}"),
    }
}

/// The README's backend-job queries, as written there, find what they should in `doc`.
async fn readme_queries_run(db: &tokio_postgres::Client, doc: DocId) {
    let readme = include_str!("../../README.md");
    let sql = readme
        .split("```sql")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README has the backend-job SQL");
    let statements: Vec<&str> = sql
        .split(';')
        .map(|q| {
            q.lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .map(|q| Box::leak(q.into_boxed_str()) as &str)
        .filter(|q| !q.trim().is_empty())
        .collect();
    assert_eq!(statements.len(), 5, "{statements:?}");
    let mine = db.query(statements[0], &[&"bob"]).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].get::<_, String>("role"), "rw");
    let last = db.query(statements[1], &[&doc.to_string()]).await.unwrap();
    assert_eq!(last.len(), 3);
    let found = db
        .query(statements[2], &[&"carol", &"station OR works"])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    for q in &statements[3..] {
        assert_eq!(db.query(*q, &[&doc.to_string()]).await.unwrap().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_down_the_relay_keeps_serving_and_catches_up_when_it_returns() {
    let Some(pg) = PgServer::start() else { return };
    let relay = Relay::start(&pg, "200ms");
    let doc = new_doc();
    let mut alice = Device::connect(&relay, "alice").await;
    alice.create_conversation(doc, "Ops").await;
    alice.share(doc, "bob", Role::ReadWrite).await;
    alice.say(doc, "before the outage");
    alice.synced(doc).await;
    {
        let db = pg::client(&pg).await;
        checkpointed(&db, doc, &alice.heads(doc)).await;
    }

    pg.stop();
    let mut bob = Device::connect(&relay, "bob").await;
    assert_eq!(bob.subscribe(doc).await, Ok(Role::ReadWrite));
    for i in 0..5 {
        alice.say(doc, &format!("during the outage {i}"));
    }
    alice.synced(doc).await;
    bob.until(|b| b.messages(doc).len() == 6).await;
    // The checkpointer noticed and is retrying.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while relay.metric("weft_checkpoint_failures_total") < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "no failure counted");
        // Polling Postgres (or the relay binary's metrics): they give no event to await.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(relay.metric("weft_checkpoint_dirty_documents") >= 1.0);

    pg.start_again();
    let db = pg::client(&pg).await;
    let heads = alice.heads(doc);
    checkpointed(&db, doc, &heads).await;
    assert_eq!(
        message_rows(&db, doc).await,
        expected_rows(&alice.messages(doc))
    );
    assert_eq!(message_rows(&db, doc).await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_writes_a_final_checkpoint_holding_the_last_change() {
    let Some(pg) = PgServer::start() else { return };
    let relay = Relay::start(&pg, "1h");
    let doc = new_doc();
    let mut alice = Device::connect(&relay, "alice").await;
    alice.create_conversation(doc, "Last words").await;
    alice.say(doc, "one");
    alice.say(doc, "two");
    alice.synced(doc).await;
    let heads = alice.heads(doc);
    drop(alice);

    let status = relay.terminate();
    assert!(status.success(), "{status:?}");
    let db = pg::client(&pg).await;
    assert_eq!(stored_heads(&db, doc).await, Some(heads));
    assert_eq!(message_rows(&db, doc).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_rebuilt_from_postgres_serves_everything_with_exactly_the_same_access() {
    let Some(pg) = PgServer::start() else { return };
    let (shared, private, deleted) = (new_doc(), new_doc(), new_doc());
    let relay = Relay::start(&pg, "100ms");
    let mut alice = Device::connect(&relay, "alice").await;
    alice.create_conversation(shared, "Shared").await;
    alice.share(shared, "bob", Role::ReadOnly).await;
    for i in 0..20 {
        alice.say(shared, &format!("message {i}"));
    }
    alice.synced(shared).await;
    alice.create_conversation(private, "Private").await;
    alice.say(private, "just me");
    alice.synced(private).await;
    alice.create_conversation(deleted, "Gone").await;
    alice.delete(deleted).await;
    let expected = alice.messages(shared);
    drop(alice);
    assert!(relay.terminate().success());

    // The relay's disk is lost; a new one starts from Postgres alone.
    let relay = Relay::start(&pg, "100ms");
    let mut alice = Device::connect(&relay, "alice").await;
    assert_eq!(
        alice.listed,
        BTreeMap::from([(shared, Role::ReadWrite), (private, Role::ReadWrite)])
    );
    assert_eq!(alice.subscribe(shared).await, Ok(Role::ReadWrite));
    assert_eq!(alice.messages(shared), expected);
    assert_eq!(alice.subscribe(deleted).await, Err(ErrorCode::DELETED));

    let mut bob = Device::connect(&relay, "bob").await;
    assert_eq!(bob.listed, BTreeMap::from([(shared, Role::ReadOnly)]));
    assert_eq!(bob.subscribe(shared).await, Ok(Role::ReadOnly));
    assert_eq!(bob.messages(shared), expected);
    assert_eq!(bob.subscribe(private).await, Err(ErrorCode::FORBIDDEN));

    // Nobody can claim a restored document, even with a token that may create.
    let mut mallory = Device::connect(&relay, "mallory").await;
    assert!(mallory.listed.is_empty());
    for doc in [shared, private, deleted] {
        assert!(mallory.subscribe(doc).await.is_err());
    }

    // The restored relay goes on normally: Alice writes, the checkpoint follows.
    alice.say(shared, "after the restore");
    alice.synced(shared).await;
    let db = pg::client(&pg).await;
    checkpointed(&db, shared, &alice.heads(shared)).await;
    assert_eq!(message_rows(&db, shared).await.len(), 21);
    let owners: BTreeSet<(String, Option<String>)> = db
        .query("select doc_id, owner from weft_documents", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(owners.iter().all(|(_, o)| o.as_deref() == Some("alice")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_checkpointing_one_document_end_with_the_merged_union() {
    let Some(pg) = PgServer::start() else { return };
    let doc = new_doc();
    let east = Relay::start(&pg, "100ms");
    let mut alice = Device::connect(&east, "alice").await;
    alice.create_conversation(doc, "Two relays").await;
    alice.say(doc, "hello from the east");
    alice.synced(doc).await;
    let db = pg::client(&pg).await;
    checkpointed(&db, doc, &alice.heads(doc)).await;

    // A second relay on the same database restores the document at start.
    let west = Relay::start(&pg, "100ms");
    let mut alice_west = Device::connect(&west, "alice").await;
    assert_eq!(alice_west.subscribe(doc).await, Ok(Role::ReadWrite));
    // Concurrent messages through each relay, each checkpointing on its own.
    for i in 0..3 {
        alice.say(doc, &format!("east {i}"));
        alice_west.say(doc, &format!("west {i}"));
    }
    alice.synced(doc).await;
    alice_west.synced(doc).await;

    // Postgres ends with the union of both relays' changes.
    let mut union = alice.engine.read(doc, |d| d.save()).unwrap();
    union.extend(alice_west.engine.read(doc, |d| d.save()).unwrap());
    let union = Document::load(&union).unwrap();
    let heads: Vec<String> = union.heads().iter().map(hash_hex).collect();
    checkpointed(&db, doc, &heads).await;
    let rows = message_rows(&db, doc).await;
    assert_eq!(rows.len(), 7);
    assert_eq!(
        rows,
        expected_rows(&weft_schema::messages(union.automerge()).unwrap().value)
    );
    let content: Vec<u8> = db
        .query_one(
            "select content from weft_documents where doc_id = $1",
            &[&doc.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        weft_schema::messages(&load_plain(&content))
            .unwrap()
            .value
            .len(),
        7
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restarted_while_postgres_is_down_serves_its_store_and_checkpoints_when_it_returns()
{
    let Some(pg) = PgServer::start() else { return };
    let doc = new_doc();
    let relay = Relay::start(&pg, "100ms");
    let mut alice = Device::connect(&relay, "alice").await;
    alice.create_conversation(doc, "Outage").await;
    alice.say(doc, "before");
    alice.synced(doc).await;
    drop(alice);
    let (status, data) = relay.terminate_keeping_data();
    assert!(status.success());

    // Postgres is down when the relay comes back: it starts from its own store anyway.
    pg.stop();
    let relay = Relay::start_in(data, &pg, "100ms");
    let mut alice = Device::connect(&relay, "alice").await;
    assert_eq!(alice.subscribe(doc).await, Ok(Role::ReadWrite));
    alice.say(doc, "during");
    alice.synced(doc).await;
    assert_eq!(alice.messages(doc).len(), 2);

    pg.start_again();
    let db = pg::client(&pg).await;
    checkpointed(&db, doc, &alice.heads(doc)).await;
    assert_eq!(
        message_rows(&db, doc).await,
        expected_rows(&alice.messages(doc))
    );
}
