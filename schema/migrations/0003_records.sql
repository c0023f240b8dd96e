-- Records: one row per document of a kind declared to the relay (`--kinds`), holding its
-- declared fields as JSON (root fields, and each collection as an object of its records).
-- Written in the checkpoint transaction of the document's other rows; a row goes when its
-- document is deleted or is no longer of a declared kind. No foreign key: a record row is
-- derived from the document's content and managed by the checkpointer alone.
create table weft_records (
    doc_id     text primary key,               -- bare bs58check id
    kind       text not null,                  -- the declared kind
    fields     jsonb not null,                 -- its declared fields that read
    updated_at timestamptz not null            -- when a checkpoint last changed the row
);
create index weft_records_kind on weft_records (kind);
