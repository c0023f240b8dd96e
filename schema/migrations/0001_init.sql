-- weft checkpoint tables (see the contract's "Postgres (read by backend jobs)").
-- Written by weft-relay's checkpointer; backend jobs read them. A document's rows in all three
-- tables are written in one transaction.

create table weft_documents (
    doc_id          text primary key,          -- bare bs58check id
    kind            text,                      -- "conversation", "trip", "profile", or null
    owner           text,                      -- the sub of the token that created it
    heads           text[] not null,           -- lowercase hex change hashes, sorted
    content         bytea not null,            -- Automerge save() output
    content_blake3  bytea not null,            -- blake3 of content
    doc             jsonb,                     -- the whole document as JSON
    checkpointed_at timestamptz not null,
    deleted_at      timestamptz,
    created_at      timestamptz,               -- when the relay first stored it
    content_bytes   bigint not null            -- length of content, for monitoring
);
create index weft_documents_owner on weft_documents (owner);

create table weft_messages (
    doc_id     text not null references weft_documents (doc_id) on delete cascade,
    message_id text not null,
    author     text,
    body       text,
    created_at timestamptz,
    edited_at  timestamptz,
    deleted    boolean not null default false,
    sort_key   text collate "C" not null,      -- "{created_at}_{id}": byte order is display order
    primary key (doc_id, message_id)
);
create index weft_messages_display on weft_messages (doc_id, sort_key);
create index weft_messages_body_search on weft_messages
    using gin (to_tsvector('simple', coalesce(body, '')));

create table weft_access (
    doc_id  text not null references weft_documents (doc_id) on delete cascade,
    user_id text not null,
    role    text not null check (role in ('rw', 'ro')),
    primary key (doc_id, user_id)
);
create index weft_access_user on weft_access (user_id);
