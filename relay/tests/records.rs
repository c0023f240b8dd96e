//! Documents of declared kinds as `weft_records` rows: what a backend job reads with SQL
//! while a user creates, moves and deletes an escrow with the `weft` command line through the
//! real relay; and, with the checkpointer in process, when a record's row changes and when it
//! goes.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::pg::{self, PgServer};
use common::weft::Weft;
use common::{now, RelayProcess};
use serde_json::json;
use weft_core::automerge::{Automerge, ScalarValue};
use weft_core::store::docs::{self as docstore, ChunkKind};
use weft_core::store::{GroupCommit, KvStore, MemStore, WriteBatch};
use weft_core::DocId;
use weft_relay::RelayDocMeta as DocMeta;
use weft_relay::{CheckpointConfig, Checkpointer, Claims, DirtyDocs, Metrics};
use weft_schema::rules::{record, Kinds};

const ESCROW: &str = include_str!("../../schema/tests/fixtures/escrow.toml");

/// How long a test waits for a checkpoint to show in Postgres.
const PATIENCE: Duration = Duration::from_secs(60);

/// A document's `weft_records` row.
#[derive(Debug)]
struct Record {
    kind: String,
    fields: serde_json::Value,
    updated_at: SystemTime,
}

async fn record_row(db: &tokio_postgres::Client, doc: &str) -> Option<Record> {
    db.query_opt(
        "select kind, fields, updated_at from weft_records where doc_id = $1",
        &[&doc],
    )
    .await
    .unwrap()
    .map(|r| Record {
        kind: r.get(0),
        fields: r.get(1),
        updated_at: r.get(2),
    })
}

/// Waits until `query` (one boolean column, `doc` as `$1`) holds, polling Postgres: the
/// checkpointer gives no other sign that it wrote.
async fn until(db: &tokio_postgres::Client, doc: &str, what: &str, query: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let holds = db
            .query_opt(query, &[&doc])
            .await
            .unwrap()
            .is_some_and(|r| r.get::<_, bool>(0));
        if holds {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Bob opens an escrow as its buyer with the CLI, funds it, then deletes it. A backend job
/// sees its record appear with the fields Bob set, follow the move to `funded`, and go with
/// the deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escrow_made_with_the_cli_is_a_weft_records_row_until_it_is_deleted() {
    let Some(pg) = PgServer::start() else { return };
    let kinds = tempfile::tempdir().unwrap();
    let kinds_file = kinds.path().join("kinds.toml");
    std::fs::write(&kinds_file, ESCROW).unwrap();
    let relay = RelayProcess::start(
        tempfile::tempdir().unwrap(),
        &[
            "--http",
            "off",
            "--kinds",
            kinds_file.to_str().unwrap(),
            "--postgres",
            &pg.url(),
            "--checkpoint-interval",
            "100ms",
        ],
        &[],
    );
    let db = pg::client(&pg).await;
    let bob_t = relay.token(&Claims::new("bob", now(), 3600).with_create(true));
    let bob = Weft::user("bob");

    // Bob's device learns the declared kinds from the relay, then opens the escrow.
    bob.sync(&relay, &bob_t);
    let doc = bob
        .ok(&[
            "doc",
            "new",
            "--kind",
            "escrow",
            "--set",
            "buyer=bob",
            "--set",
            "seller=carol",
            "--set",
            "amount=100",
        ])
        .trim()
        .to_owned();
    bob.sync(&relay, &bob_t);
    until(
        &db,
        &doc,
        "the escrow's record",
        "select true from weft_records where doc_id = $1",
    )
    .await;
    let pending = record_row(&db, &doc).await.unwrap();
    assert_eq!(pending.kind, "escrow");
    assert_eq!(
        pending.fields,
        json!({ "buyer": "bob", "seller": "carol", "amount": 100, "status": "pending" })
    );
    // What `weft rec show --json` says is what the row holds.
    let shown: serde_json::Value =
        serde_json::from_str(&bob.ok(&["rec", "show", &doc, "--json"])).unwrap();
    assert_eq!(shown["fields"], pending.fields);

    // Bob, the buyer, funds it.
    bob.ok(&["rec", "set", &doc, "status", "funded"]);
    bob.sync(&relay, &bob_t);
    until(
        &db,
        &doc,
        "the record's status funded",
        "select fields->>'status' = 'funded' from weft_records where doc_id = $1",
    )
    .await;
    let funded = record_row(&db, &doc).await.unwrap();
    assert_eq!(
        funded.fields,
        json!({ "buyer": "bob", "seller": "carol", "amount": 100, "status": "funded" })
    );
    assert!(funded.updated_at > pending.updated_at);

    // Bob deletes it: the checkpoint that records the deletion removes the record with it.
    bob.ok(&["doc", "delete", &doc]);
    bob.sync(&relay, &bob_t);
    until(
        &db,
        &doc,
        "the deletion checkpointed",
        "select deleted_at is not null from weft_documents where doc_id = $1",
    )
    .await;
    assert!(record_row(&db, &doc).await.is_none());
    let count: i64 = db
        .query_one("select count(*) from weft_records", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
}

/// A relay store the test writes documents into directly.
struct Store {
    group: Arc<GroupCommit>,
}

impl Store {
    fn new() -> Store {
        let kv: Arc<dyn KvStore> = Arc::new(MemStore::new());
        Store {
            group: Arc::new(GroupCommit::new(kv).unwrap()),
        }
    }

    /// Stores `am` as `doc`, owned by bob (its whole content as one more snapshot chunk).
    async fn put(&self, doc: DocId, am: &Automerge) {
        let mut meta = DocMeta::default();
        meta.owner = Some("bob".into());
        let mut batch = WriteBatch::new();
        docstore::put_meta(&mut batch, doc, &meta);
        docstore::put_chunk(&mut batch, doc, ChunkKind::Snapshot, am.save());
        self.group.submit(batch).await.unwrap();
    }

    /// A checkpointer over this store writing the records of `kinds`, and its dirty set.
    async fn checkpointer(&self, pg: &PgServer, kinds: Kinds) -> (Checkpointer, Arc<DirtyDocs>) {
        let dirty = DirtyDocs::new();
        let mut cfg = CheckpointConfig::new(pg.url(), Duration::from_secs(3600));
        cfg.kinds = Arc::new(kinds);
        let metrics = Arc::new(Metrics::default());
        let (cp, _) = Checkpointer::start(cfg, self.group.clone(), dirty.clone(), metrics)
            .await
            .unwrap();
        (cp, dirty)
    }
}

/// A checkpoint of `doc` by `cp`: one document written.
async fn checkpoint(cp: &mut Checkpointer, dirty: &DirtyDocs, doc: DocId) {
    dirty.mark(doc);
    assert_eq!(cp.round(true).await.unwrap().documents, 1);
}

fn set(am: &mut Automerge, field: &str, value: &str) {
    record::set(am, field, ScalarValue::Str(value.into())).unwrap();
}

/// An escrow's record is rewritten when a declared field changes and left as it was (its
/// `updated_at` too) when only something undeclared does; a relay that stops declaring the
/// kind removes the record at the document's next checkpoint, and keeps its document row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_follows_its_declared_fields_and_goes_when_its_kind_is_no_longer_declared() {
    let Some(pg) = PgServer::start() else { return };
    let db = pg::client(&pg).await;
    let store = Store::new();
    let doc = DocId::random(&mut rand::rng());
    let id = doc.to_string();
    let kinds = Kinds::with_declared(ESCROW).unwrap();
    let spec = kinds.get("escrow").unwrap();
    let mut am = Automerge::new();
    let sets = [("buyer", "bob"), ("seller", "carol"), ("amount", "100")]
        .map(|(f, v)| (f.to_string(), record::parse_value(spec, f, v).unwrap()));
    record::create(&mut am, spec, &sets).unwrap();
    store.put(doc, &am).await;
    let (mut cp, dirty) = store.checkpointer(&pg, kinds.clone()).await;
    checkpoint(&mut cp, &dirty, doc).await;
    let first = record_row(&db, &id).await.expect("a record");
    assert_eq!(first.kind, "escrow");
    assert_eq!(first.fields["status"], "pending");

    // Something outside the declared fields changes: the document's row is rewritten, the
    // record's is not.
    set(&mut am, "memo", "not declared");
    store.put(doc, &am).await;
    checkpoint(&mut cp, &dirty, doc).await;
    let same = record_row(&db, &id).await.unwrap();
    assert_eq!(same.fields, first.fields);
    assert_eq!(same.updated_at, first.updated_at);

    set(&mut am, "note", "ships monday");
    store.put(doc, &am).await;
    checkpoint(&mut cp, &dirty, doc).await;
    let noted = record_row(&db, &id).await.unwrap();
    assert_eq!(noted.fields["note"], "ships monday");
    assert!(noted.updated_at > first.updated_at);
    drop(cp);

    // The relay restarts without the kind declared: the next checkpoint drops the record.
    let (mut cp, dirty) = store.checkpointer(&pg, Kinds::builtin()).await;
    set(&mut am, "memo", "changed again");
    store.put(doc, &am).await;
    checkpoint(&mut cp, &dirty, doc).await;
    assert!(record_row(&db, &id).await.is_none());
    let kind: Option<String> = db
        .query_one("select kind from weft_documents where doc_id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kind.as_deref(), Some("escrow"));
}
