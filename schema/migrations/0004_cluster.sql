-- The cluster's change log (`weft-relay serve --cluster`): every change a relay accepts is
-- appended here, in the transaction that precedes the device's acknowledgement, and every other
-- relay of the cluster applies it. Also the documents' metadata (owner, access list,
-- deletion) as each change of it commits. Appends take one advisory lock per transaction, so
-- `seq` is committed in increasing order and a reader that remembers the last `seq` it applied
-- misses nothing. Relays without `--cluster` never write it.
create table weft_changes (
    seq      bigserial primary key,
    relay    text not null,                  -- the relay that accepted the entry
    doc_id   text not null,                  -- bare bs58check id
    kind     smallint not null,              -- 1: changes, 2: metadata
    body     bytea not null,                 -- changes: concatenated Automerge changes;
                                             -- metadata: the relay's record (MessagePack)
    records  bytea,                          -- changes: actor bindings (MessagePack pairs)
    at       timestamptz not null default now()
);
create index weft_changes_doc on weft_changes (doc_id, seq);
