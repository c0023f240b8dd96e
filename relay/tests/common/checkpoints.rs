//! What the Postgres checkpoint tests share: the relay binary checkpointing into a throwaway
//! Postgres, light QUIC devices that chat, and what a backend job reads back.

use std::net::SocketAddr;
use std::time::Duration;

use weft_core::wire::{ErrorCode, Message};
use weft_core::{hash_hex, DocId, Document, Role};
use weft_relay::Claims;
use weft_schema::{Conversation, Id, NewConversation, NewMessage};

use super::pg::PgServer;
use super::session::{self, Session};
use super::{now, now_ms, Link, RelayProcess, RELAY};

/// The relay binary checkpointing into `pg`.
pub struct Relay {
    pub process: RelayProcess,
    pub addr: SocketAddr,
    pub http: SocketAddr,
}

impl Relay {
    pub fn start(pg: &PgServer, interval: &str) -> Relay {
        Self::start_in(tempfile::tempdir().unwrap(), pg, interval)
    }

    pub fn start_in(dir: tempfile::TempDir, pg: &PgServer, interval: &str) -> Relay {
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

    pub fn token(&self, claims: &Claims) -> String {
        self.process.token(claims)
    }

    pub fn user(&self, sub: &str) -> String {
        self.token(&Claims::new(sub, now(), 3600).with_create(true))
    }

    /// SIGTERM; the exit status and the data directory.
    pub fn terminate_keeping_data(mut self) -> (std::process::ExitStatus, tempfile::TempDir) {
        self.process.sigterm();
        let status = self.process.child.wait().unwrap();
        let dir = self.process.take_dir();
        (status, dir)
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.process.sigterm();
        self.process.child.wait().unwrap()
    }

    pub fn metric(&self, name: &str) -> f64 {
        super::relay::metric(self.http, name)
    }
}

/// A light device: its own engine and key, one QUIC connection.
pub struct Device {
    pub session: Session,
    pub user: String,
}

crate::extends!(Device, session: Session);

impl Device {
    pub async fn connect(relay: &Relay, user: &str) -> Device {
        Self::connect_with(relay, user, relay.user(user)).await
    }

    pub async fn connect_with(relay: &Relay, user: &str, token: String) -> Device {
        let cert = relay.process.cert();
        let link = Link::connect(relay.addr, cert, token, "postgres-test").await;
        let session = Session::start(link, Duration::from_secs(30), 100_000).await;
        Device {
            session,
            user: user.into(),
        }
    }

    pub async fn until(&mut self, done: impl FnMut(&mut Device) -> bool) {
        session::until(self, done).await
    }

    pub async fn synced(&mut self, doc: DocId) {
        self.until(|d| d.engine.is_synced(RELAY, doc)).await;
    }

    pub async fn control(&mut self, request: impl FnOnce(u64) -> Message) -> Option<ErrorCode> {
        session::control(self, request).await
    }

    pub async fn share(&mut self, doc: DocId, user: &str, role: Role) {
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

    pub async fn delete(&mut self, doc: DocId) {
        assert_eq!(self.control(|id| Message::Delete { id, doc }).await, None);
    }

    /// Alice starts a conversation and uploads it.
    pub async fn create_conversation(&mut self, doc: DocId, title: &str) {
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
    pub async fn subscribe(&mut self, doc: DocId) -> Result<Role, ErrorCode> {
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
    pub fn say(&mut self, doc: DocId, text: &str) -> Id {
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

    pub fn edit(&mut self, doc: DocId, id: &Id, text: &str) {
        self.engine
            .change(doc, |am| {
                weft_schema::edit_message(am, id, text, now_ms()).unwrap()
            })
            .unwrap();
    }

    pub fn delete_message(&mut self, doc: DocId, id: &Id) {
        self.engine
            .change(doc, |am| {
                weft_schema::delete_message(am, id, now_ms()).unwrap()
            })
            .unwrap();
    }

    pub fn heads(&mut self, doc: DocId) -> Vec<String> {
        self.engine
            .read(doc, |d| d.heads().iter().map(hash_hex).collect())
            .unwrap()
    }

    pub fn messages(&mut self, doc: DocId) -> Vec<weft_schema::Message> {
        self.engine
            .read(doc, |d| weft_schema::messages(d.automerge()).unwrap().value)
            .unwrap()
    }
}

pub fn rand_bytes() -> [u8; 16] {
    use rand::RngCore;
    let mut b = [0; 16];
    rand::rng().fill_bytes(&mut b);
    b
}

pub fn new_doc() -> DocId {
    DocId::from_bytes(rand_bytes())
}

/// A `weft_messages` row as a backend job sees it.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MsgRow {
    pub sort_key: String,
    pub id: String,
    pub author: String,
    pub body: String,
    pub deleted: bool,
    pub created_ms: i64,
    pub edited: bool,
}

pub fn expected_rows(messages: &[weft_schema::Message]) -> Vec<MsgRow> {
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

pub async fn message_rows(db: &tokio_postgres::Client, doc: DocId) -> Vec<MsgRow> {
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
pub async fn stored_heads(db: &tokio_postgres::Client, doc: DocId) -> Option<Vec<String>> {
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
pub async fn checkpointed(db: &tokio_postgres::Client, doc: DocId, heads: &[String]) {
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

pub async fn access_rows(db: &tokio_postgres::Client, doc: DocId) -> Vec<(String, String)> {
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

pub fn load_plain(content: &[u8]) -> weft_core::automerge::Automerge {
    weft_core::automerge::Automerge::load(content).unwrap()
}

/// Whether `text` occurs anywhere in the raw bytes of the file at `path`.
pub fn file_holds(path: &std::path::Path, text: &str) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

/// Waits until `query` (one boolean column, `doc` as `$1`) holds.
pub async fn until_row(db: &tokio_postgres::Client, doc: DocId, what: &str, query: &str) {
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
