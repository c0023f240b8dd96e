//! The bulk phase: N dirty conversations in a relay store, checkpointed by the relay's own
//! checkpointer in one round (first checkpoint: every row new; then one new message in each),
//! against the same rows written by a plain binary `COPY` into tables shaped like the
//! checkpoint's (the floor Postgres gives).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use weft_core::automerge::Automerge;
use weft_core::store::docs::{self as docstore, ChunkKind};
use weft_core::store::{GroupCommit, KvStore, RedbStore, WriteBatch};
use weft_core::DocId;
use weft_relay::{Checkpointer, DirtyDocs, Metrics};
use weft_schema::{Conversation, Id, NewConversation, NewMessage};

use super::pg::PgServer;

const T0: u64 = 1_700_000_000_000;

/// What the bulk phase measured.
pub(crate) struct Bulk {
    pub(crate) docs: usize,
    pub(crate) messages: usize,
    pub(crate) content_bytes: usize,
    /// First checkpoint of every document.
    pub(crate) first: Duration,
    /// Every document again, with one new message each.
    pub(crate) incremental: Duration,
    /// The same rows as the first checkpoint, by `COPY`.
    pub(crate) baseline_first: Duration,
    /// What the incremental round writes (documents, one message row each), by `COPY`
    /// into emptied tables.
    pub(crate) baseline_incremental: Duration,
}

pub(crate) async fn run(server: &PgServer, docs: usize, messages: usize) -> anyhow::Result<Bulk> {
    let dir = tempfile::tempdir()?;
    let (staging, writer) = weft_relay::store_limits();
    let kv: Arc<dyn KvStore> = Arc::new(RedbStore::open_with_tables(
        dir.path().join("relay.redb"),
        &weft_relay::TABLES,
        staging,
    )?);
    let group = Arc::new(GroupCommit::with_limits(kv, writer)?);
    let mut template = conversation(messages);
    let content = template.save();
    for start in (0..docs).step_by(1_000) {
        let mut batch = WriteBatch::new();
        for i in start..(start + 1_000).min(docs) {
            docstore::put_chunk(&mut batch, doc_id(i), ChunkKind::Snapshot, content.clone());
            docstore::put_meta(&mut batch, doc_id(i), &meta());
        }
        group
            .submit(batch)
            .await
            .context("storing the conversations")?;
    }
    let dirty = DirtyDocs::new();
    let cfg = super::config(server.url(), Duration::from_secs(3600));
    let (mut cp, _) = Checkpointer::start(
        cfg,
        group.clone(),
        dirty.clone(),
        Arc::new(Metrics::default()),
    )
    .await
    .context("starting the checkpointer")?;

    for i in 0..docs {
        dirty.mark(doc_id(i));
    }
    let t = Instant::now();
    let stats = cp.round(true).await.context("the first checkpoint")?;
    let first = t.elapsed();
    anyhow::ensure!(
        stats.documents as usize == docs,
        "the first checkpoint wrote {} of {docs} documents",
        stats.documents
    );

    let before = template.get_heads();
    say(&mut template, messages);
    let change = template.save_after(&before);
    let mut batch = WriteBatch::new();
    for i in 0..docs {
        docstore::put_chunk(
            &mut batch,
            doc_id(i),
            ChunkKind::Incremental,
            change.clone(),
        );
    }
    group
        .submit(batch)
        .await
        .context("storing the new messages")?;
    for i in 0..docs {
        dirty.mark(doc_id(i));
    }
    let t = Instant::now();
    let stats = cp.round(true).await.context("the incremental checkpoint")?;
    let incremental = t.elapsed();
    anyhow::ensure!(stats.documents as usize == docs, "incremental: {stats:?}");
    drop(cp);
    let db = super::client(server).await?;
    let rows: i64 = db
        .query_one("select count(*) from weft_messages", &[])
        .await?
        .get(0);
    anyhow::ensure!(
        rows as usize == docs * (messages + 1),
        "{rows} message rows for {docs} documents of {} messages",
        messages + 1
    );

    let (baseline_first, baseline_incremental) =
        baseline(server, docs, &conversation(messages), &template).await?;
    Ok(Bulk {
        docs,
        messages,
        content_bytes: content.len(),
        first,
        incremental,
        baseline_first,
        baseline_incremental,
    })
}

/// The same rows through binary `COPY` into tables made `like` the checkpoint's (indexes
/// included), one transaction: first every document with all its messages and access rows,
/// then (tables emptied) every document again with one message row each, as the
/// incremental round writes. Content, JSON and rows are computed before the clock starts.
async fn baseline(
    server: &PgServer,
    docs: usize,
    first: &Automerge,
    second: &Automerge,
) -> anyhow::Result<(Duration, Duration)> {
    let mut db = super::client(server).await?;
    db.batch_execute(
        "create table bench_documents (like weft_documents including all);
         create table bench_messages (like weft_messages including all);
         create table bench_access (like weft_access including all);",
    )
    .await
    .context("creating the baseline tables")?;
    let all = weft_schema::messages(first)?.value;
    let rows: Vec<weft_schema::MessageRow> = all
        .iter()
        .map(weft_schema::MessageRow::from_message)
        .collect();
    let t = Instant::now();
    copy(&mut db, docs, first, &rows).await?;
    let baseline_first = t.elapsed();
    db.batch_execute("truncate bench_documents, bench_messages, bench_access")
        .await?;
    let last = weft_schema::messages(second)?.value;
    let one: Vec<weft_schema::MessageRow> = last
        .iter()
        .max_by_key(|m| m.key())
        .map(weft_schema::MessageRow::from_message)
        .into_iter()
        .collect();
    let t = Instant::now();
    copy(&mut db, docs, second, &one).await?;
    Ok((baseline_first, t.elapsed()))
}

/// `docs` documents of content `am`, each with `messages` as its message rows and two
/// access rows, copied in one transaction.
async fn copy(
    db: &mut tokio_postgres::Client,
    docs: usize,
    am: &Automerge,
    messages: &[weft_schema::MessageRow],
) -> anyhow::Result<()> {
    let content = am.save();
    let blake = blake3::hash(&content).as_bytes().to_vec();
    let json = weft_schema::to_json(am)?;
    let heads: Vec<String> = am.get_heads().iter().map(weft_core::hash_hex).collect();
    let now = SystemTime::now();
    let tx = db.transaction().await?;
    let sink = tx
        .copy_in(
            "copy bench_documents (doc_id, kind, owner, heads, content, content_blake3, doc, \
             checkpointed_at, created_at, content_bytes) from stdin binary",
        )
        .await?;
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT_ARRAY,
        Type::BYTEA,
        Type::BYTEA,
        Type::JSONB,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::INT8,
    ];
    let w = BinaryCopyInWriter::new(sink, &types);
    tokio::pin!(w);
    let len = content.len() as i64;
    for i in 0..docs {
        let id = doc_id(i).to_string();
        let row: [&(dyn ToSql + Sync); 10] = [
            &id,
            &"conversation",
            &"alice",
            &heads,
            &content,
            &blake,
            &json,
            &now,
            &now,
            &len,
        ];
        w.as_mut().write(&row).await?;
    }
    w.finish().await?;
    let sink = tx
        .copy_in(
            "copy bench_messages (doc_id, message_id, author, body, created_at, deleted, \
             sort_key) from stdin binary",
        )
        .await?;
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::BOOL,
        Type::TEXT,
    ];
    let w = BinaryCopyInWriter::new(sink, &types);
    tokio::pin!(w);
    let created: Vec<SystemTime> = messages
        .iter()
        .map(|m| SystemTime::UNIX_EPOCH + Duration::from_millis(m.created_at_ms))
        .collect();
    for i in 0..docs {
        let id = doc_id(i).to_string();
        for (m, created) in messages.iter().zip(&created) {
            let row: [&(dyn ToSql + Sync); 7] = [
                &id,
                &m.message_id,
                &m.author,
                &m.body,
                created,
                &m.deleted,
                &m.sort_key,
            ];
            w.as_mut().write(&row).await?;
        }
    }
    w.finish().await?;
    let sink = tx
        .copy_in("copy bench_access (doc_id, user_id, role) from stdin binary")
        .await?;
    let w = BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::TEXT, Type::TEXT]);
    tokio::pin!(w);
    for i in 0..docs {
        let id = doc_id(i).to_string();
        for user in ["alice", "bob"] {
            w.as_mut().write(&[&id, &user, &"rw"]).await?;
        }
    }
    w.finish().await?;
    tx.commit().await?;
    Ok(())
}

fn conversation(messages: usize) -> Automerge {
    let mut am = Automerge::new();
    Conversation::create(
        &mut am,
        &NewConversation {
            title: "Bench".into(),
            participants: vec!["alice".into(), "bob".into()],
        },
        T0,
    )
    .expect("the schema's own conversation is valid");
    for i in 0..messages {
        say(&mut am, i);
    }
    am
}

fn say(am: &mut Automerge, i: usize) {
    let mut id = [7u8; 16];
    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
    let author = ["alice", "bob"][i & 1];
    weft_schema::send_message(
        am,
        &NewMessage::text(
            author,
            format!("message number {i}: see you at the station at noon"),
        ),
        Id::from_bytes(id),
        T0 + i as u64,
    )
    .expect("the schema's own message is valid");
}

fn doc_id(i: usize) -> DocId {
    let mut b = [0xd0; 16];
    b[..8].copy_from_slice(&(i as u64).to_be_bytes());
    DocId::from_bytes(b)
}

fn meta() -> weft_relay::RelayDocMeta {
    let mut m = weft_relay::RelayDocMeta::default();
    m.owner = Some("alice".into());
    m.created_at_ms = T0;
    m.access.insert("bob".into(), weft_core::Role::ReadWrite);
    m
}
