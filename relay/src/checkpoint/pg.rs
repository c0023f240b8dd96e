//! The Postgres side: connecting (bounded), migrating, writing a batch of prepared rows in one
//! transaction, and restoring an empty store from the last checkpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{Client, Statement, Transaction};
use weft_core::store::docs::{self as docstore, ChunkKind};
use weft_core::store::{DocMeta, GroupCommit, WriteBatch};
use weft_core::{DocId, Role};

use super::prepare::{Body, Row, Stored};
use super::tls::PgTarget;
use super::{Chain, CheckpointError};

use crate::index;

/// Lock key serializing migrations across relays sharing one database.
const MIGRATION_LOCK: i64 = 0x7765_6674_6d69_6772; // "weftmigr"

/// Documents restored per page.
const RESTORE_PAGE: i64 = 500;

/// One Postgres connection and its statements. The connection's IO runs in a task aborted
/// when this is dropped.
pub(crate) struct PgConn {
    client: Client,
    io: tokio::task::JoinHandle<()>,
    stmts: Option<Statements>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        self.io.abort();
    }
}

struct Statements {
    upsert_doc: Statement,
    touch_doc: Statement,
    erase_doc: Statement,
    delete_messages: Statement,
    upsert_messages: Statement,
    remove_messages: Statement,
    delete_access: Statement,
    insert_access: Statement,
    upsert_record: Statement,
    delete_record: Statement,
}

fn pg(source: tokio_postgres::Error) -> CheckpointError {
    CheckpointError::Postgres { source }
}

impl PgConn {
    /// Connects to `target` (TLS as its `sslmode` says), giving up after `timeout`.
    pub(crate) async fn connect(
        target: &PgTarget,
        timeout: Duration,
    ) -> Result<PgConn, CheckpointError> {
        let mut config = target.config.clone();
        config.connect_timeout(timeout);
        if config.get_application_name().is_none() {
            config.application_name("weft-relay");
        }
        let (client, connection) =
            tokio::time::timeout(timeout, config.connect(target.tls.clone()))
                .await
                .map_err(|_| CheckpointError::Timeout)?
                .map_err(pg)?;
        let io = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %Chain(&e), "Postgres connection ended");
            }
        });
        Ok(PgConn {
            client,
            io,
            stmts: None,
        })
    }

    /// Whether the connection is gone (the next use needs a new one).
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Applies every migration this database lacks, in one transaction, under an advisory lock
    /// so relays starting together don't race.
    pub(crate) async fn migrate(&mut self) -> Result<Vec<u32>, CheckpointError> {
        let tx = self.client.transaction().await.map_err(pg)?;
        tx.execute("select pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg)?;
        let exists: bool = tx
            .query_one(
                "select to_regclass('weft_schema_migrations') is not null",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        if !exists {
            tx.batch_execute(
                "create table weft_schema_migrations (
                 version integer primary key,
                 name text not null,
                 applied_at timestamptz not null default now())",
            )
            .await
            .map_err(pg)?;
        }
        let done: Vec<i32> = tx
            .query("select version from weft_schema_migrations", &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let newest_known = weft_schema::MIGRATIONS.last().map_or(0, |m| m.version);
        if let Some(newer) = done.iter().find(|v| **v as i64 > newest_known as i64) {
            return Err(CheckpointError::NewerSchema {
                found: *newer as i64,
                known: newest_known,
            });
        }
        let mut applied = Vec::new();
        for m in weft_schema::MIGRATIONS {
            if done.contains(&(m.version as i32)) {
                continue;
            }
            tx.batch_execute(m.sql).await.map_err(pg)?;
            tx.execute(
                "insert into weft_schema_migrations (version, name) values ($1, $2)",
                &[&(m.version as i32), &m.name],
            )
            .await
            .map_err(pg)?;
            applied.push(m.version);
        }
        tx.commit().await.map_err(pg)?;
        Ok(applied)
    }

    async fn statements(&mut self) -> Result<(), CheckpointError> {
        if self.stmts.is_some() {
            return Ok(());
        }
        let c = &self.client;
        let stmts = Statements {
            upsert_doc: c
                .prepare(
                    "insert into weft_documents (doc_id, kind, owner, heads, content, \
                     content_blake3, doc, checkpointed_at, deleted_at, created_at, content_bytes) \
                     values ($1, $2, $3, $4, $5, $6, $7, now(), \
                     to_timestamp($8::int8 / 1000.0), to_timestamp($9::int8 / 1000.0), $10) \
                     on conflict (doc_id) do update set kind = excluded.kind, \
                     owner = coalesce(weft_documents.owner, excluded.owner), \
                     heads = excluded.heads, content = excluded.content, \
                     content_blake3 = excluded.content_blake3, doc = excluded.doc, \
                     checkpointed_at = excluded.checkpointed_at, \
                     deleted_at = coalesce(weft_documents.deleted_at, excluded.deleted_at), \
                     created_at = coalesce(weft_documents.created_at, excluded.created_at), \
                     content_bytes = excluded.content_bytes",
                )
                .await
                .map_err(pg)?,
            touch_doc: c
                .prepare(
                    "update weft_documents set kind = coalesce($2, kind), \
                     owner = coalesce(owner, $3), checkpointed_at = now(), \
                     deleted_at = coalesce(deleted_at, to_timestamp($4::int8 / 1000.0)) \
                     where doc_id = $1",
                )
                .await
                .map_err(pg)?,
            // A deleted document's row: who owned it and when it was deleted; nothing of its
            // content, its JSON view or its heads.
            erase_doc: c
                .prepare(
                    "insert into weft_documents (doc_id, owner, heads, content, content_blake3, \
                     doc, checkpointed_at, deleted_at, created_at, content_bytes) \
                     values ($1, $2, '{}', null, null, null, now(), \
                     coalesce(to_timestamp($3::int8 / 1000.0), now()), \
                     to_timestamp($4::int8 / 1000.0), null) \
                     on conflict (doc_id) do update set \
                     owner = coalesce(weft_documents.owner, excluded.owner), \
                     heads = '{}', content = null, content_blake3 = null, doc = null, \
                     content_bytes = null, checkpointed_at = excluded.checkpointed_at, \
                     deleted_at = coalesce(weft_documents.deleted_at, excluded.deleted_at), \
                     created_at = coalesce(weft_documents.created_at, excluded.created_at)",
                )
                .await
                .map_err(pg)?,
            delete_messages: c
                .prepare("delete from weft_messages where doc_id = $1")
                .await
                .map_err(pg)?,
            upsert_messages: c
                .prepare(
                    "insert into weft_messages (doc_id, message_id, author, body, created_at, \
                     edited_at, deleted, sort_key) \
                     select $1, m, a, b, to_timestamp(c / 1000.0), to_timestamp(e / 1000.0), d, s \
                     from unnest($2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], \
                     $7::bool[], $8::text[]) as t(m, a, b, c, e, d, s) \
                     on conflict (doc_id, message_id) do update set author = excluded.author, \
                     body = excluded.body, created_at = excluded.created_at, \
                     edited_at = excluded.edited_at, deleted = excluded.deleted, \
                     sort_key = excluded.sort_key",
                )
                .await
                .map_err(pg)?,
            remove_messages: c
                .prepare("delete from weft_messages where doc_id = $1 and message_id = any($2)")
                .await
                .map_err(pg)?,
            delete_access: c
                .prepare("delete from weft_access where doc_id = $1")
                .await
                .map_err(pg)?,
            insert_access: c
                .prepare(
                    "insert into weft_access (doc_id, user_id, role) \
                     select $1, u, r from unnest($2::text[], $3::text[]) as t(u, r)",
                )
                .await
                .map_err(pg)?,
            // A row whose kind and fields are as they were is left alone, so `updated_at`
            // says when the record last changed, not when its document last did.
            upsert_record: c
                .prepare(
                    "insert into weft_records (doc_id, kind, fields, updated_at) \
                     values ($1, $2, $3, now()) \
                     on conflict (doc_id) do update set kind = excluded.kind, \
                     fields = excluded.fields, updated_at = excluded.updated_at \
                     where (weft_records.kind, weft_records.fields) \
                     is distinct from (excluded.kind, excluded.fields)",
                )
                .await
                .map_err(pg)?,
            delete_record: c
                .prepare("delete from weft_records where doc_id = $1")
                .await
                .map_err(pg)?,
        };
        self.stmts = Some(stmts);
        Ok(())
    }
}

/// Reads the stored content of `docs` inside the checkpoint transaction.
pub(crate) async fn stored_content(
    tx: &Transaction<'_>,
    docs: &[DocId],
) -> Result<HashMap<DocId, Vec<u8>>, CheckpointError> {
    let ids: Vec<String> = docs.iter().map(DocId::to_string).collect();
    let rows = tx
        .query(
            "select doc_id, content from weft_documents \
             where doc_id = any($1) and content is not null",
            &[&ids],
        )
        .await
        .map_err(pg)?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let id: String = r.get(0);
            Some((id.parse().ok()?, r.get::<_, Option<Vec<u8>>>(1)?))
        })
        .collect())
}

/// Writes one document's rows in all four tables (inside the caller's transaction).
pub(crate) async fn write_row(
    conn_stmts: &StatementsRef<'_>,
    tx: &Transaction<'_>,
    row: &Row,
) -> Result<(), CheckpointError> {
    let s = conn_stmts.0;
    let id = row.doc.to_string();
    match &row.body {
        Body::Unchanged => {
            tx.execute(&s.touch_doc, &[&id, &row.kind, &row.owner, &row.deleted_ms])
                .await
                .map_err(pg)?;
        }
        Body::Deleted => {
            tx.execute(
                &s.erase_doc,
                &[&id, &row.owner, &row.deleted_ms, &row.created_ms],
            )
            .await
            .map_err(pg)?;
            tx.execute(&s.delete_messages, &[&id]).await.map_err(pg)?;
            tx.execute(&s.delete_record, &[&id]).await.map_err(pg)?;
        }
        Body::Content {
            heads,
            content,
            blake3,
            json,
            full,
            messages,
            removed,
            record,
        } => {
            let len = i64::try_from(content.len()).unwrap_or(i64::MAX);
            tx.execute(
                &s.upsert_doc,
                &[
                    &id,
                    &row.kind,
                    &row.owner,
                    heads,
                    content,
                    blake3,
                    json,
                    &row.deleted_ms,
                    &row.created_ms,
                    &len,
                ],
            )
            .await
            .map_err(pg)?;
            if *full {
                tx.execute(&s.delete_messages, &[&id]).await.map_err(pg)?;
            }
            if !removed.is_empty() {
                tx.execute(&s.remove_messages, &[&id, removed])
                    .await
                    .map_err(pg)?;
            }
            for chunk in messages.chunks(5_000) {
                let ids: Vec<&str> = chunk.iter().map(|m| m.message_id.as_str()).collect();
                let authors: Vec<&str> = chunk.iter().map(|m| m.author.as_str()).collect();
                let bodies: Vec<&str> = chunk.iter().map(|m| m.body.as_str()).collect();
                let created: Vec<i64> = chunk
                    .iter()
                    .map(|m| i64::try_from(m.created_at_ms).unwrap_or(i64::MAX))
                    .collect();
                let edited: Vec<Option<i64>> = chunk
                    .iter()
                    .map(|m| m.edited_at_ms.and_then(|v| i64::try_from(v).ok()))
                    .collect();
                let deleted: Vec<bool> = chunk.iter().map(|m| m.deleted).collect();
                let keys: Vec<&str> = chunk.iter().map(|m| m.sort_key.as_str()).collect();
                tx.execute(
                    &s.upsert_messages,
                    &[
                        &id, &ids, &authors, &bodies, &created, &edited, &deleted, &keys,
                    ],
                )
                .await
                .map_err(pg)?;
            }
            match record {
                Some(r) => tx
                    .execute(&s.upsert_record, &[&id, &r.kind, &r.fields])
                    .await
                    .map_err(pg)?,
                // Not (or no longer) of a declared kind.
                None => tx.execute(&s.delete_record, &[&id]).await.map_err(pg)?,
            };
        }
    }
    tx.execute(&s.delete_access, &[&id]).await.map_err(pg)?;
    if !row.access.is_empty() {
        let users: Vec<&str> = row.access.iter().map(|(u, _)| u.as_str()).collect();
        let roles: Vec<&str> = row.access.iter().map(|(_, r)| *r).collect();
        tx.execute(&s.insert_access, &[&id, &users, &roles])
            .await
            .map_err(pg)?;
    }
    Ok(())
}

impl PgConn {
    /// A plain `VACUUM` of the tables a deletion changed, so that the dead row versions
    /// holding the deleted content (and their index entries) are removed from the tables'
    /// pages instead of waiting for autovacuum. Outside any transaction (VACUUM cannot run in
    /// one); it takes no lock that blocks reads or writes.
    pub(crate) async fn vacuum_deleted(&self) -> Result<(), CheckpointError> {
        self.client
            .batch_execute("vacuum weft_documents, weft_messages, weft_records")
            .await
            .map_err(pg)
    }
}

/// The prepared statements, borrowed apart from the client so a transaction can use them.
pub(crate) struct StatementsRef<'a>(&'a Statements);

impl PgConn {
    /// Opens a checkpoint transaction over `docs`: takes each document's advisory lock (in one
    /// order, so two relays never deadlock; a row that doesn't exist yet is covered too) and
    /// reads the heads Postgres holds. Returns the prepared statements beside it.
    pub(crate) async fn begin_with_statements(
        &mut self,
        docs: &[DocId],
    ) -> Result<(StatementsRef<'_>, Transaction<'_>, HashMap<DocId, Stored>), CheckpointError> {
        self.statements().await?;
        let PgConn { client, stmts, .. } = self;
        let stmts = stmts
            .as_ref()
            .expect("statements() prepared them just above");
        let ids: Vec<String> = docs.iter().map(DocId::to_string).collect();
        let tx = client.transaction().await.map_err(pg)?;
        tx.query(
            "select pg_advisory_xact_lock(k) from \
             (select hashtextextended(d, 7) as k from unnest($1::text[]) as d order by 1) s",
            &[&ids],
        )
        .await
        .map_err(pg)?;
        let rows = tx
            .query(
                "select doc_id, heads, deleted_at is not null from weft_documents \
                 where doc_id = any($1)",
                &[&ids],
            )
            .await
            .map_err(pg)?;
        let mut stored = HashMap::new();
        for r in rows {
            let id: String = r.get(0);
            if let Ok(doc) = id.parse::<DocId>() {
                stored.insert(
                    doc,
                    Stored {
                        heads: r.get::<_, Option<Vec<String>>>(1).unwrap_or_default(),
                        content: None,
                        deleted: r.get(2),
                    },
                );
            }
        }
        Ok((StatementsRef(stmts), tx, stored))
    }
}

/// What a restore did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Documents in Postgres.
    pub checkpointed: u64,
    /// Documents the relay's store lacked and got from Postgres.
    pub restored: u64,
}

/// Copies into the relay's store every checkpointed document it lacks: content (one snapshot
/// chunk), owner, access list, deletion and the `user_docs` rows, page by page. A document the
/// store already has is left alone (its metadata is the newer one). So a relay whose data
/// directory was lost serves every document, with exactly its access, and none is claimable.
pub(crate) async fn restore(
    conn: &mut PgConn,
    group: &Arc<GroupCommit>,
) -> Result<RestoreStats, CheckpointError> {
    let mut stats = RestoreStats::default();
    let mut after = String::new();
    loop {
        let ids: Vec<String> = conn
            .client
            .query(
                "select doc_id from weft_documents where doc_id > $1 order by doc_id limit $2",
                &[&after, &RESTORE_PAGE],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let Some(last) = ids.last() else {
            break;
        };
        after = last.clone();
        stats.checkpointed += ids.len() as u64;
        let parsed: Vec<DocId> = ids
            .iter()
            .filter_map(|id| match id.parse() {
                Ok(doc) => Some(doc),
                Err(_) => {
                    tracing::warn!(doc_id = %id, "skipping a checkpoint row with a malformed id");
                    None
                }
            })
            .collect();
        let store = group.store().clone();
        let missing = tokio::task::spawn_blocking(move || {
            parsed
                .into_iter()
                .filter_map(|doc| match docstore::load_meta(store.as_ref(), doc) {
                    Ok(None) => Some(Ok(doc)),
                    Ok(Some(_)) => None,
                    Err(source) => Some(Err(CheckpointError::Store { doc, source })),
                })
                .collect::<Result<Vec<DocId>, _>>()
        })
        .await
        .map_err(|_| CheckpointError::TaskFailed)??;
        if missing.is_empty() {
            continue;
        }
        let ids: Vec<String> = missing.iter().map(DocId::to_string).collect();
        let rows = conn
            .client
            .query(
                "select doc_id, owner, content, content_blake3, \
                 (extract(epoch from created_at) * 1000)::int8, \
                 (extract(epoch from deleted_at) * 1000)::int8 \
                 from weft_documents where doc_id = any($1)",
                &[&ids],
            )
            .await
            .map_err(pg)?;
        let access_rows = conn
            .client
            .query(
                "select doc_id, user_id, role from weft_access where doc_id = any($1)",
                &[&ids],
            )
            .await
            .map_err(pg)?;
        let mut access: HashMap<String, Vec<(String, Role)>> = HashMap::new();
        for r in &access_rows {
            let role = match r.get::<_, &str>(2) {
                "rw" => Role::ReadWrite,
                "ro" => Role::ReadOnly,
                other => {
                    tracing::warn!(role = other, "skipping an access row with an unknown role");
                    continue;
                }
            };
            access.entry(r.get(0)).or_default().push((r.get(1), role));
        }
        let mut batch = WriteBatch::new();
        for r in &rows {
            let id: String = r.get(0);
            let Ok(doc) = id.parse::<DocId>() else {
                continue;
            };
            let content: Option<Vec<u8>> = r.get(2);
            let hash: Option<Vec<u8>> = r.get(3);
            let deleted_at: Option<i64> = r.get(5);
            match (content, hash) {
                // A deleted document has no content to restore: only its tombstone.
                _ if deleted_at.is_some() => {}
                (Some(content), Some(hash))
                    if blake3::hash(&content).as_bytes().as_slice() == hash.as_slice() =>
                {
                    if !content.is_empty() {
                        docstore::put_chunk(&mut batch, doc, ChunkKind::Snapshot, content);
                    }
                }
                _ => {
                    // The metadata is still restored: the document stays unclaimable.
                    tracing::error!(%doc, "checkpointed content is missing or does not match its blake3; not restored");
                }
            }
            let mut meta = DocMeta::default();
            meta.owner = r.get(1);
            let to_ms = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
            meta.created_at_ms = to_ms(r.get(4)).unwrap_or(0);
            meta.updated_at_ms = meta.created_at_ms;
            meta.deleted_at_ms = to_ms(deleted_at);
            meta.access = access.remove(&id).unwrap_or_default().into_iter().collect();
            for (user, holding) in index::user_docs_of(&meta) {
                index::put_user_doc(&mut batch, &user, doc, holding);
            }
            docstore::put_meta(&mut batch, doc, &meta);
            stats.restored += 1;
        }
        group
            .submit(batch)
            .await
            .map_err(|source| CheckpointError::StoreWrite { source })?;
    }
    Ok(stats)
}
