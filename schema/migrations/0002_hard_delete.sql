-- Hard delete: a deleted document's row keeps doc_id, kind, owner, created_at and deleted_at;
-- its content, content_blake3, doc and content_bytes become null, its heads empty, and its
-- weft_messages rows are deleted (in the checkpoint transaction that records the deletion).
-- Its weft_access rows stay: they tell a relay restored from this database whom to answer
-- "deleted" rather than "not permitted".
alter table weft_documents
    alter column content drop not null,
    alter column content_blake3 drop not null,
    alter column content_bytes drop not null;

-- Documents deleted before this migration kept their content: erase it now.
update weft_documents
set content = null, content_blake3 = null, doc = null, content_bytes = null, heads = '{}'
where deleted_at is not null;
delete from weft_messages m
using weft_documents d
where d.doc_id = m.doc_id and d.deleted_at is not null;
