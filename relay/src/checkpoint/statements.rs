//! The checkpoint's prepared statements, one per write it makes, and their SQL.

use tokio_postgres::{Client, Statement};

use super::CheckpointError;

/// The prepared statements of one connection.
pub(super) struct Statements {
    pub(super) upsert_doc: Statement,
    pub(super) touch_doc: Statement,
    pub(super) erase_doc: Statement,
    pub(super) delete_messages: Statement,
    pub(super) upsert_messages: Statement,
    pub(super) remove_messages: Statement,
    pub(super) delete_access: Statement,
    pub(super) insert_access: Statement,
    pub(super) upsert_record: Statement,
    pub(super) delete_record: Statement,
}

impl Statements {
    /// Prepares every statement on `c`.
    pub(super) async fn prepare(c: &Client) -> Result<Statements, CheckpointError> {
        Ok(Statements {
            upsert_doc: prepare(c, UPSERT_DOC).await?,
            touch_doc: prepare(c, TOUCH_DOC).await?,
            erase_doc: prepare(c, ERASE_DOC).await?,
            delete_messages: prepare(c, DELETE_MESSAGES).await?,
            upsert_messages: prepare(c, UPSERT_MESSAGES).await?,
            remove_messages: prepare(c, REMOVE_MESSAGES).await?,
            delete_access: prepare(c, DELETE_ACCESS).await?,
            insert_access: prepare(c, INSERT_ACCESS).await?,
            upsert_record: prepare(c, UPSERT_RECORD).await?,
            delete_record: prepare(c, DELETE_RECORD).await?,
        })
    }
}

/// Prepares `sql` on `c`.
async fn prepare(c: &Client, sql: &str) -> Result<Statement, CheckpointError> {
    c.prepare(sql)
        .await
        .map_err(|source| CheckpointError::Postgres { source })
}

const UPSERT_DOC: &str = "insert into weft_documents (doc_id, kind, owner, heads, content, \
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
    content_bytes = excluded.content_bytes";

const TOUCH_DOC: &str = "update weft_documents set kind = coalesce($2, kind), \
    owner = coalesce(owner, $3), checkpointed_at = now(), \
    deleted_at = coalesce(deleted_at, to_timestamp($4::int8 / 1000.0)) \
    where doc_id = $1";

/// A deleted document's row: who owned it and when it was deleted; nothing of its
/// content, its JSON view or its heads.
const ERASE_DOC: &str =
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
    created_at = coalesce(weft_documents.created_at, excluded.created_at)";

const DELETE_MESSAGES: &str = "delete from weft_messages where doc_id = $1";

const UPSERT_MESSAGES: &str =
    "insert into weft_messages (doc_id, message_id, author, body, created_at, \
    edited_at, deleted, sort_key) \
    select $1, m, a, b, to_timestamp(c / 1000.0), to_timestamp(e / 1000.0), d, s \
    from unnest($2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], \
    $7::bool[], $8::text[]) as t(m, a, b, c, e, d, s) \
    on conflict (doc_id, message_id) do update set author = excluded.author, \
    body = excluded.body, created_at = excluded.created_at, \
    edited_at = excluded.edited_at, deleted = excluded.deleted, \
    sort_key = excluded.sort_key";

const REMOVE_MESSAGES: &str =
    "delete from weft_messages where doc_id = $1 and message_id = any($2)";

const DELETE_ACCESS: &str = "delete from weft_access where doc_id = $1";

const INSERT_ACCESS: &str = "insert into weft_access (doc_id, user_id, role) \
    select $1, u, r from unnest($2::text[], $3::text[]) as t(u, r)";

/// A row whose kind and fields are as they were is left alone, so `updated_at`
/// says when the record last changed, not when its document last did.
const UPSERT_RECORD: &str = "insert into weft_records (doc_id, kind, fields, updated_at) \
    values ($1, $2, $3, now()) \
    on conflict (doc_id) do update set kind = excluded.kind, \
    fields = excluded.fields, updated_at = excluded.updated_at \
    where (weft_records.kind, weft_records.fields) \
    is distinct from (excluded.kind, excluded.fields)";

const DELETE_RECORD: &str = "delete from weft_records where doc_id = $1";
