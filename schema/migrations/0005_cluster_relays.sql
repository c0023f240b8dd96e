-- Where each relay of a cluster has read the change log to (`weft-relay serve --cluster`):
-- entries that every relay seen within the log's retention has read, and that are older than
-- the retention (so their checkpoints are written), are deleted.
create table weft_cluster_relays (
    relay    text primary key,
    position bigint not null,
    seen_at  timestamptz not null default now()
);
