//! The document store: how automerge documents, sync states and metadata live in a [`KvStore`](crate::store::KvStore).
//!
//! # Layout
//!
//! | table         | key                                           | value                          |
//! |---------------|-----------------------------------------------|--------------------------------|
//! | `chunks`      | doc id (16) ++ kind (1) ++ blake3(value) (32) | automerge bytes                |
//! | `sync_states` | doc id (16) ++ peer key                       | `0x01` ++ `sync::State::encode` |
//! | `doc_meta`    | doc id (16)                                   | `0x01` ++ msgpack [`DocMeta`]  |
//!
//! `gate_records` belong to the engine's gate (`meta.rs` reads and writes them). A user of the
//! store registers its own tables when it opens it (the relay's per-user index, `user_docs`).
//!
//! A chunk is anything `Automerge::load` accepts: a snapshot (`save()`, kind 0) or incremental
//! data (one change's raw bytes, or `save_after` output; kind 1). Chunks are keyed by the hash
//! of their bytes, so writing the same chunk twice is idempotent, and a reader can tell damaged
//! bytes from good ones. Keys sort snapshots before incrementals within a document.
//!
//! Writers add operations to a [`WriteBatch`](crate::store::WriteBatch) with the pure functions here ([`put_chunk`],
//! [`compact`], [`put_sync_state`], [`put_meta`], [`delete_doc`], ...) and commit it, usually
//! through a [`GroupCommit`](super::GroupCommit); readers ([`load_document`], ...) read a
//! [`KvStore`](crate::store::KvStore) directly.
//!
//! A document loads by concatenating all its chunks (snapshots first) and calling
//! `Automerge::load` once: automerge parses a sequence of chunks, ignores changes it already has
//! and applies changes in dependency order whatever order they come in.
//!
//! # Crash safety
//!
//! The invariant: *every acknowledged change is in some chunk of its document.* A change is
//! acknowledged when the batch that stores it has been durably written ([`KvStore::write`](crate::store::KvStore::write)
//! returned, or the [`CommitTicket`](super::CommitTicket) completed, with `Ok`). Every
//! operation keeps the invariant in one atomic batch:
//!
//! - [`put_chunk`] only adds a chunk.
//! - [`compact`] puts a snapshot and deletes exactly the chunks it `replaces`. The caller passes
//!   chunks whose changes the snapshot contains: the keys [`load_document`] returned for the
//!   document the snapshot was saved from, plus chunks written from it since. Whether the
//!   batch lands or not, every change is in the old chunks or in the snapshot. Chunks written
//!   concurrently by someone else are not in `replaces` and survive.
//! - Nothing else deletes chunks except [`delete_doc`], which is meant to lose the document.
//!
//! Since the store applies a batch entirely or not at all, a crash at any instant leaves the
//! state after some prefix of the durable batches (plus at most the one in flight), each of
//! which satisfies the invariant; the acknowledged change's batch is in that prefix. So the
//! document loads, and contains every acknowledged change. The hash in each key catches
//! damage from outside (bit rot, a bad disk) as [`DocStoreError::CorruptChunk`] rather than
//! loading wrong data.
//!
//! Two duties fall on the writer, not the store: acknowledge a change only once every change
//! it depends on is durable too (write pending changes before, or with, a new one), and after
//! a crash continue with a fresh actor id, since changes of the old actor that were never
//! acknowledged may be lost and their sequence numbers must not be reused.

mod chunks;
mod error;
mod heads;
mod heal;
mod load;
mod meta;
#[cfg(test)]
pub(crate) mod tests;

pub use chunks::{compact, put_chunk, ChunkKey, ChunkKind};
pub use error::DocStoreError;
pub use heads::stored_heads;
pub use heal::{quarantine, Quarantine};
pub use load::{load_chunks, load_document, load_document_sized, ChunkBytes, StoredDocument};
pub use meta::{
    decode_meta, delete_doc, delete_sync_states, list_docs, load_gate_records, load_meta,
    load_sync_state, put_gate_record, put_meta, put_sync_state, DocMeta, GateRecord, MetaExt,
    NoExt,
};
