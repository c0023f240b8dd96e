//! Postgres checkpoints through the real `weft-relay` binary, a throwaway Postgres and light
//! QUIC devices: what a backend job reads after devices chat, what survives Postgres going
//! away, a SIGTERM, the loss of the relay's data directory, and two relays writing one document.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use common::pg::{self, PgServer};
use common::session::{self, Session};
use common::{now, now_ms, Link, RelayProcess, RELAY};
use weft_core::wire::{ErrorCode, Message};
use weft_core::{hash_hex, DocId, Document, Role};
use weft_relay::Claims;
use weft_schema::{Conversation, Id, NewConversation, NewMessage};

/// The relay binary checkpointing into `pg`.
struct Relay {
    process: RelayProcess,
    addr: SocketAddr,
    http: SocketAddr,
}

impl Relay {
    fn start(pg: &PgServer, interval: &str) -> Relay {
        Self::start_in(tempfile::tempdir().unwrap(), pg, interval)
    }

    fn start_in(dir: tempfile::TempDir, pg: &PgServer, interval: &str) -> Relay {
        let process = RelayProcess::start(
            dir,
            &["--http", "127.0.0.1:0", "--checkpoint-interval", interval],
            &[("WEFT_POSTGRES_URL", &pg.url())],
        );
        Relay {
            addr: process.addr("quic="),
            http: process.addr("http="),
            process,
        }
    }

    fn token(&self, claims: &Claims) -> String {
        self.process.token(claims)
    }

    fn user(&self, sub: &str) -> String {
        self.token(&Claims::new(sub, now(), 3600).with_create(true))
    }

    /// SIGTERM; the exit status and the data directory.
    fn terminate_keeping_data(mut self) -> (std::process::ExitStatus, tempfile::TempDir) {
        self.process.sigterm();
        let status = self.process.child.wait().unwrap();
        let dir = self.process.take_dir();
        (status, dir)
    }

    /// SIGTERM, and the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        self.process.sigterm();
        self.process.child.wait().unwrap()
    }

    fn metric(&self, name: &str) -> f64 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.http).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no metric {name}"))
            .trim()
            .parse()
            .unwrap()
    }
}

/// A light device: its own engine and key, one QUIC connection.
struct Device {
    session: Session,
    user: String,
}

crate::extends!(Device, session: Session);

impl Device {
    async fn connect(relay: &Relay, user: &str) -> Device {
        Self::connect_with(relay, user, relay.user(user)).await
    }

    async fn connect_with(relay: &Relay, user: &str, token: String) -> Device {
        let cert = relay.process.cert();
        let link = Link::connect(relay.addr, cert, token, "postgres-test").await;
        let session = Session::start(link, Duration::from_secs(30), 100_000).await;
        Device {
            session,
            user: user.into(),
        }
    }

    async fn until(&mut self, done: impl FnMut(&mut Device) -> bool) {
        session::until(self, done).await
    }

    async fn synced(&mut self, doc: DocId) {
        self.until(|d| d.engine.is_synced(RELAY, doc)).await;
    }

    async fn control(&mut self, request: impl FnOnce(u64) -> Message) -> Option<ErrorCode> {
        session::control(self, request).await
    }

    async fn share(&mut self, doc: DocId, user: &str, role: Role) {
        let user = user.to_string();
        let code = self
            .control(|id| Message::Share {
                id,
                doc,
                user,
                role,
            })
            .await;
        assert_eq!(code, None);
    }

    async fn delete(&mut self, doc: DocId) {
        assert_eq!(self.control(|id| Message::Delete { id, doc }).await, None);
    }

    /// Alice starts a conversation and uploads it.
    async fn create_conversation(&mut self, doc: DocId, title: &str) {
        self.engine.create(doc, Document::new());
        let user = self.user.clone();
        self.engine
            .change(doc, |am| {
                Conversation::create(
                    am,
                    &NewConversation {
                        title: title.into(),
                        participants: vec![user],
                    },
                    now_ms(),
                )
                .unwrap()
            })
            .unwrap();
        self.writer.send(&Message::Subscribe { doc }).await.unwrap();
        self.synced(doc).await;
    }

    /// Subscribes to a document it does not hold yet; the role, or the refusal.
    async fn subscribe(&mut self, doc: DocId) -> Result<Role, ErrorCode> {
        self.engine.load(doc);
        self.flush().await;
        self.writer.send(&Message::Subscribe { doc }).await.unwrap();
        self.until(|d| d.roles.contains_key(&doc) || d.refused(doc).is_some())
            .await;
        match self.refused(doc) {
            Some(code) => Err(code),
            None => {
                self.synced(doc).await;
                Ok(self.roles[&doc])
            }
        }
    }

    /// Sends a chat message (not waiting for the relay).
    fn say(&mut self, doc: DocId, text: &str) -> Id {
        let author = self.user.clone();
        let id = Id::from_bytes(rand_bytes());
        let id2 = id.clone();
        self.engine
            .change(doc, |am| {
                weft_schema::send_message(am, &NewMessage::text(author, text), id2, now_ms())
                    .unwrap()
            })
            .unwrap();
        id
    }

    fn edit(&mut self, doc: DocId, id: &Id, text: &str) {
        self.engine
            .change(doc, |am| {
                weft_schema::edit_message(am, id, text, now_ms()).unwrap()
            })
            .unwrap();
    }

    fn delete_message(&mut self, doc: DocId, id: &Id) {
        self.engine
            .change(doc, |am| {
                weft_schema::delete_message(am, id, now_ms()).unwrap()
            })
            .unwrap();
    }

    fn heads(&mut self, doc: DocId) -> Vec<String> {
        self.engine
            .read(doc, |d| d.heads().iter().map(hash_hex).collect())
            .unwrap()
    }

    fn messages(&mut self, doc: DocId) -> Vec<weft_schema::Message> {
        self.engine
            .read(doc, |d| weft_schema::messages(d.automerge()).unwrap().value)
            .unwrap()
    }
}

fn rand_bytes() -> [u8; 16] {
    use rand::RngCore;
    let mut b = [0; 16];
    rand::rng().fill_bytes(&mut b);
    b
}

fn new_doc() -> DocId {
    DocId::from_bytes(rand_bytes())
}

/// A `weft_messages` row as a backend job sees it.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MsgRow {
    sort_key: String,
    id: String,
    author: String,
    body: String,
    deleted: bool,
    created_ms: i64,
    edited: bool,
}

fn expected_rows(messages: &[weft_schema::Message]) -> Vec<MsgRow> {
    messages
        .iter()
        .map(|m| MsgRow {
            sort_key: m.key().to_string(),
            id: m.id.to_string(),
            author: m.author.clone(),
            body: m.body.clone(),
            deleted: m.deleted,
            created_ms: m.created_at.physical_ms() as i64,
            edited: m.edited_at.is_some(),
        })
        .collect()
}

async fn message_rows(db: &tokio_postgres::Client, doc: DocId) -> Vec<MsgRow> {
    db.query(
        "select sort_key, message_id, author, body, deleted, \
         (extract(epoch from created_at) * 1000)::int8, edited_at is not null \
         from weft_messages where doc_id = $1 order by sort_key",
        &[&doc.to_string()],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| MsgRow {
        sort_key: r.get(0),
        id: r.get(1),
        author: r.get(2),
        body: r.get(3),
        deleted: r.get(4),
        created_ms: r.get(5),
        edited: r.get(6),
    })
    .collect()
}

/// The stored heads of `doc`, if it has a row.
async fn stored_heads(db: &tokio_postgres::Client, doc: DocId) -> Option<Vec<String>> {
    db.query_opt(
        "select heads from weft_documents where doc_id = $1",
        &[&doc.to_string()],
    )
    .await
    .ok()
    .flatten()
    .map(|r| r.get(0))
}

/// Waits (polling Postgres, as a backend job would) until `doc`'s row holds `heads`.
async fn checkpointed(db: &tokio_postgres::Client, doc: DocId, heads: &[String]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if stored_heads(db, doc).await.as_deref() == Some(heads) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{doc} was never checkpointed with heads {heads:?} (stored {:?})",
            stored_heads(db, doc).await
        );
        // Polling Postgres (or the relay binary's metrics): they give no event to await.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn access_rows(db: &tokio_postgres::Client, doc: DocId) -> Vec<(String, String)> {
    db.query(
        "select user_id, role from weft_access where doc_id = $1 order by user_id",
        &[&doc.to_string()],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn load_plain(content: &[u8]) -> weft_core::automerge::Automerge {
    weft_core::automerge::Automerge::load(content).unwrap()
}

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

/// Whether `text` occurs anywhere in the raw bytes of the file at `path`.
fn file_holds(path: &std::path::Path, text: &str) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

/// Waits until `query` (one boolean column, `doc` as `$1`) holds.
async fn until_row(db: &tokio_postgres::Client, doc: DocId, what: &str, query: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let holds = db
            .query_opt(query, &[&doc.to_string()])
            .await
            .unwrap()
            .is_some_and(|r| r.get::<_, bool>(0));
        if holds {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        // Polling Postgres (or the relay binary's metrics): they give no event to await.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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
