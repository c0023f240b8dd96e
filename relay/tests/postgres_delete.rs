//! Deleted conversations and Postgres checkpoints, through the real `weft-relay` binary: what
//! leaves the relay's store file and Postgres, a relay that missed a deletion, and a database
//! migrated from before hard deletion.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::checkpoints::*;
use common::pg::{self, PgServer};
use weft_core::wire::ErrorCode;
use weft_core::Role;

/// Alice deletes a conversation she shared with Bob. Postgres keeps only who owned it and
/// when it was deleted; after a restart the relay's store file holds none of its text; Bob's
/// new device, and a relay rebuilt from Postgres, are told it was deleted; her other
/// conversation is untouched everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_conversation_leaves_no_text_in_relay_redb_after_a_restart_nor_in_postgres() {
    const SECRET: &str = "the surprise party is at Marguerite's on the 14th";
    const KEPT: &str = "buy oat milk and two lemons";
    let Some(pg) = PgServer::start() else { return };
    let relay = Relay::start(&pg, "100ms");
    let db = pg::client(&pg).await;
    let (gone, kept) = (new_doc(), new_doc());
    let mut alice = Device::connect(&relay, "alice").await;
    alice.create_conversation(gone, "Party").await;
    alice.share(gone, "bob", Role::ReadWrite).await;
    alice.say(gone, SECRET);
    alice.synced(gone).await;
    alice.create_conversation(kept, "Groceries").await;
    alice.say(kept, KEPT);
    alice.synced(kept).await;
    checkpointed(&db, gone, &alice.heads(gone)).await;
    checkpointed(&db, kept, &alice.heads(kept)).await;
    let kept_heads = alice.heads(kept);
    assert_eq!(message_rows(&db, gone).await[0].body, SECRET);

    alice.delete(gone).await;
    until_row(
        &db,
        gone,
        "the deleted row without content or messages",
        "select content is null and content_blake3 is null and doc is null \
         and content_bytes is null and heads = '{}' and deleted_at is not null \
         and not exists (select 1 from weft_messages m where m.doc_id = d.doc_id) \
         from weft_documents d where doc_id = $1",
    )
    .await;
    // The row still says whose it was; the access list stays for a restore.
    let owner: Option<String> = db
        .query_one(
            "select owner from weft_documents where doc_id = $1",
            &[&gone.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner.as_deref(), Some("alice"));
    assert_eq!(access_rows(&db, gone).await, [("bob".into(), "rw".into())]);
    // The checkpointer vacuumed the tables it erased from.
    until_row(
        &db,
        gone,
        "a VACUUM of weft_messages after the deletion",
        "select last_vacuum is not null and $1 <> '' from pg_stat_user_tables \
         where relname = 'weft_messages'",
    )
    .await;
    // The other conversation is as it was.
    assert_eq!(stored_heads(&db, kept).await, Some(kept_heads.clone()));
    assert_eq!(message_rows(&db, kept).await[0].body, KEPT);

    // Until the relay restarts, redb's freed pages (and its staging log) still hold the text.
    let store = relay.process.dir.path().join("relay.redb");
    assert!(
        file_holds(&store, SECRET),
        "the text is not in relay.redb even before the restart: this test shows nothing"
    );
    drop(alice);
    let (status, data) = relay.terminate_keeping_data();
    assert!(status.success(), "{status:?}");
    let relay = Relay::start_in(data, &pg, "100ms");
    let store = relay.process.dir.path().join("relay.redb");
    assert!(
        !file_holds(&store, SECRET),
        "relay.redb still holds the text"
    );
    assert!(!store.with_extension("redb.rewrite").exists());

    let mut alice = Device::connect(&relay, "alice").await;
    assert_eq!(alice.listed, BTreeMap::from([(kept, Role::ReadWrite)]));
    assert_eq!(alice.subscribe(kept).await, Ok(Role::ReadWrite));
    assert_eq!(alice.heads(kept), kept_heads);
    assert_eq!(alice.messages(kept)[0].body, KEPT);
    assert_eq!(alice.subscribe(gone).await, Err(ErrorCode::DELETED));
    // A new device of Bob's is told it was deleted, and gets nothing of it.
    let mut bob = Device::connect(&relay, "bob").await;
    assert!(bob.listed.is_empty());
    assert_eq!(bob.subscribe(gone).await, Err(ErrorCode::DELETED));
    assert_eq!(bob.doc_messages.get(&gone), None);

    // A relay rebuilt from Postgres alone refuses it the same way, and serves the other.
    let rebuilt = Relay::start(&pg, "100ms");
    let mut alice = Device::connect(&rebuilt, "alice").await;
    assert_eq!(alice.subscribe(gone).await, Err(ErrorCode::DELETED));
    assert_eq!(alice.subscribe(kept).await, Ok(Role::ReadWrite));
    assert_eq!(alice.messages(kept)[0].body, KEPT);
    let mut bob = Device::connect(&rebuilt, "bob").await;
    assert_eq!(bob.subscribe(gone).await, Err(ErrorCode::DELETED));
    let store = rebuilt.process.dir.path().join("relay.redb");
    assert!(!file_holds(&store, SECRET));
}

/// Two relays share Postgres. Alice deletes the conversation through one; the other, which
/// still holds it, takes a new message for it and checkpoints: the row stays without content
/// and without message rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_missed_a_deletion_never_puts_content_back_in_postgres() {
    let Some(pg) = PgServer::start() else { return };
    let doc = new_doc();
    let east = Relay::start(&pg, "100ms");
    let mut alice = Device::connect(&east, "alice").await;
    alice.create_conversation(doc, "Two relays").await;
    alice.say(doc, "hello");
    alice.synced(doc).await;
    let db = pg::client(&pg).await;
    checkpointed(&db, doc, &alice.heads(doc)).await;
    let west = Relay::start(&pg, "100ms");
    let mut alice_west = Device::connect(&west, "alice").await;
    assert_eq!(alice_west.subscribe(doc).await, Ok(Role::ReadWrite));

    alice.delete(doc).await;
    until_row(
        &db,
        doc,
        "the deleted row without content",
        "select content is null and deleted_at is not null from weft_documents where doc_id = $1",
    )
    .await;
    let erased_at: std::time::SystemTime = db
        .query_one(
            "select checkpointed_at from weft_documents where doc_id = $1",
            &[&doc.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    alice_west.say(doc, "the west relay has not heard");
    alice_west.synced(doc).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let at: std::time::SystemTime = db
            .query_one(
                "select checkpointed_at from weft_documents where doc_id = $1",
                &[&doc.to_string()],
            )
            .await
            .unwrap()
            .get(0);
        if at > erased_at {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "west never checkpointed"
        );
        // Polling Postgres (or the relay binary's metrics): they give no event to await.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let row = db
        .query_one(
            "select content is null and doc is null and deleted_at is not null \
             from weft_documents where doc_id = $1",
            &[&doc.to_string()],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert!(message_rows(&db, doc).await.is_empty());
}

/// A database written before hard delete (schema version 1) kept a deleted document's content
/// and messages: the relay's migration erases them, and leaves other documents alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_a_database_from_before_hard_delete_erases_deleted_content() {
    let Some(pg) = PgServer::start() else { return };
    let db = pg::client(&pg).await;
    db.batch_execute(
        "create table weft_schema_migrations (version integer primary key, name text not null, \
         applied_at timestamptz not null default now())",
    )
    .await
    .unwrap();
    db.batch_execute(weft_schema::MIGRATIONS[0].sql)
        .await
        .unwrap();
    db.execute(
        "insert into weft_schema_migrations (version, name) values (1, 'init')",
        &[],
    )
    .await
    .unwrap();
    let (gone, kept) = (new_doc(), new_doc());
    for (doc, deleted) in [(gone, true), (kept, false)] {
        let id = doc.to_string();
        db.execute(
            "insert into weft_documents (doc_id, kind, owner, heads, content, content_blake3, \
             doc, checkpointed_at, deleted_at, content_bytes) values ($1, 'conversation', \
             'alice', '{ab}', 'secret bytes', 'hash', '{\"title\": \"t\"}', now(), \
             case when $2 then now() end, 12)",
            &[&id, &deleted],
        )
        .await
        .unwrap();
        db.execute(
            "insert into weft_messages (doc_id, message_id, author, body, created_at, sort_key) \
             values ($1, 'm1', 'alice', 'a secret message', now(), 'k')",
            &[&id],
        )
        .await
        .unwrap();
    }

    let _relay = Relay::start(&pg, "1h");
    let row = db
        .query_one(
            "select content is null and content_blake3 is null and doc is null \
             and content_bytes is null and heads = '{}' and owner = 'alice' \
             from weft_documents where doc_id = $1",
            &[&gone.to_string()],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert!(message_rows(&db, gone).await.is_empty());
    let content: Option<Vec<u8>> = db
        .query_one(
            "select content from weft_documents where doc_id = $1",
            &[&kept.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(content.as_deref(), Some(&b"secret bytes"[..]));
    assert_eq!(message_rows(&db, kept).await.len(), 1);
}
