//! The Postgres side: connecting (bounded) and writing a batch of prepared rows in one
//! transaction. The migrations runner is in `migrate.rs`, the restore in `restore.rs`.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::{Client, Transaction};
use weft_core::DocId;
use weft_schema::MessageRow;

use super::prepare::{Body, Row, Stored};
use super::statements::Statements;
use super::tls::PgTarget;
use super::{Chain, CheckpointError};

/// One Postgres connection and its statements. The connection's IO runs in a task aborted
/// when this is dropped.
pub(crate) struct PgConn {
    pub(crate) client: Client,
    io: tokio::task::JoinHandle<()>,
    stmts: Option<Statements>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        self.io.abort();
    }
}

/// A Postgres error as a checkpoint error.
pub(super) fn pg(source: tokio_postgres::Error) -> CheckpointError {
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

    async fn statements(&mut self) -> Result<(), CheckpointError> {
        if self.stmts.is_none() {
            self.stmts = Some(Statements::prepare(&self.client).await?);
        }
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
            write_messages(s, tx, &id, *full, messages, removed).await?;
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

/// Document `id`'s message rows: all replaced when `full`, else `removed` deleted; then
/// `messages` upserted, 5,000 per statement.
async fn write_messages(
    s: &Statements,
    tx: &Transaction<'_>,
    id: &str,
    full: bool,
    messages: &[MessageRow],
    removed: &[String],
) -> Result<(), CheckpointError> {
    if full {
        tx.execute(&s.delete_messages, &[&id]).await.map_err(pg)?;
    }
    if !removed.is_empty() {
        tx.execute(&s.remove_messages, &[&id, &removed])
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
