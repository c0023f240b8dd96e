//! weft-schema: typed, validated documents on top of Automerge, so app code never hand-walks
//! Automerge maps.
//!
//! Three kinds of document: [`Conversation`] (a chat), [`Trip`] (members, itinerary, tasks,
//! broadcasts and a chat) and [`Profile`]. Every document records `kind` and `schema_version`
//! at its root; one with no or an unknown kind is valid, synced and shown raw
//! ([`to_json`]), and the typed API reports it as [`ReadError::Untyped`].
//!
//! # How to use it
//! Reads take `&Automerge` (what `weft_core::Document::automerge` gives) and never write.
//! Documents come from peers, so a read never fails whole because of one bad entry: it
//! returns a [`Partial`], the entries that fit the schema (`value`) and each one that doesn't
//! (`skipped`, a [`Skipped`] with its [`Path`] and the reason). Only the header fails a read:
//! no or an unknown `kind`, another kind than the one asked for, a bad `schema_version`.
//! Writes work on a document holding malformed entries, as long as they don't need the
//! malformed entry itself (editing a message that doesn't read is refused).
//! Writes take `&mut Automerge` (what the closure of `weft_core::engine::Engine::change` gets),
//! make one Automerge change per call, and take the caller's wall clock (`wall_ms`, Unix
//! milliseconds) and, for new records, an [`Id`] from the caller's RNG: the library reads no
//! clock and no entropy.
//!
//! ```
//! use weft_schema::automerge::Automerge;
//! use weft_schema::{Conversation, NewConversation, NewMessage, Id};
//!
//! let mut alice = Automerge::new();
//! Conversation::create(&mut alice, &NewConversation {
//!     title: "Lunch".into(),
//!     participants: vec!["alice".into(), "bob".into()],
//! }, 1_700_000_000_000)?;
//! let hi = weft_schema::send_message(&mut alice, &NewMessage::text("alice", "Noon?"),
//!     Id::from_bytes([1; 16]), 1_700_000_000_000)?;
//!
//! // Bob's device has the document too; his clock is a minute behind.
//! let mut bob = alice.fork();
//! let reply = weft_schema::send_message(&mut bob, &NewMessage::text("bob", "Yes!"),
//!     Id::from_bytes([2; 16]), 1_699_999_940_000)?;
//! assert!(reply.created_at > hi.created_at); // a reply sorts after what its author saw
//!
//! alice.merge(&mut bob)?;
//! bob.merge(&mut alice)?;
//! let last = weft_schema::last_messages(&alice, 10)?;
//! assert!(last.skipped.is_empty()); // every entry read
//! let bodies: Vec<&str> = last.value.iter().map(|m| m.body.as_str()).collect();
//! assert_eq!(bodies, ["Noon?", "Yes!"]);
//! // Same heads, same bytes, on every device.
//! assert_eq!(
//!     weft_schema::messages_json(&alice)?.value,
//!     weft_schema::messages_json(&bob)?.value,
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout of the crate
//! - [`kind`](crate::kind()), [`read_typed`]: the header and dispatch on it.
//! - [`Conversation`], [`Trip`], [`Profile`]: the models, with their writes as associated
//!   functions.
//! - [`send_message`], [`edit_message`], [`delete_message`], [`react`], [`mark_read`],
//!   [`set_title`]; [`messages`], [`last_messages`], [`find_message`],
//!   [`messages_changed_since`]: the chat that conversations and trips share.
//! - [`Hlc`]: the hybrid logical clock behind `created_at`; [`Id`], [`MessageKey`].
//! - [`to_json`], [`messages_json`], [`conflicts`]: JSON views.
//! - [`migrate`]: schema versions and the migration from version 1.
//! - [`MIGRATIONS`], [`MessageRow`], [`decode_content`]: the Postgres checkpoint tables, and
//!   decoding a `weft_documents` row back into a typed document.
//! - [`Partial`], [`Skipped`]: what reads return, and the entries they left out.
//! - [`ReadError`], [`WriteError`]: typed errors naming the [`Path`] that is wrong.
//!
//! # Layout of a document (schema version 2)
//! ```text
//! kind: "conversation" | "trip" | "profile"       schema_version: 2
//! conversation: title (Text), participants [user id], messages, read, reactions
//! trip:         title (Text), start_date?, end_date? ("YYYY-MM-DD"), members {user: role},
//!               itinerary {id: {title, starts_at, location?, notes? (Text)}},
//!               tasks {id: {title, assignee?, done, created_at}},
//!               broadcasts {id: {author, body, priority, created_at}}, messages, read, reactions
//! profile:      user, display_name, avatar_url?, status?
//!
//! messages  {"{created_at}_{id}": {id, author, body (Text), created_at, edited_at?, deleted,
//!                                  reply_to?, attachment? {url, mime_type, size, name?}}}
//! read      {user: "{created_at}_{id}"}               (read up to that message)
//! reactions {message id: {emoji: {user: true}}}
//! ```
//! Timestamps are [`Hlc`] strings, ids [`Id`]s. Members and participants are for display:
//! access is decided by the relay's access list, never by document content. Fields this build
//! doesn't know are ignored by typed reads and kept in the document. Wherever the schema has
//! a string, Text holding that string reads the same (JavaScript's Automerge writes strings
//! as Text unless told otherwise).
//!
//! # Ordering
//! Display order is `(created_at, id)`, the same on every device. `created_at` comes from a
//! hybrid logical clock that accounts for the newest message already in the chat, so a reply
//! sorts after what its author saw even when the author's clock is behind.
//!
//! Messages are a map keyed by [`MessageKey`] (`{created_at}_{id}`, whose byte order is display
//! order) rather than a list: Automerge keeps map keys sorted, so the stored order *is* display
//! order on every replica whatever order changes arrived in, appending is one new key, and the
//! last N messages are found by a binary search over key prefixes without reading the others.
//! A list was measured and rejected: after concurrent appends a list is ordered by Automerge's
//! op ids, not by time, so its tail is not the display tail, and finding that means reading
//! every element's timestamp; appending to it was also slower (figures in BENCHMARKS.md).
//!
//! # Merge semantics
//! - Concurrent messages are all kept: each is a new key.
//! - Concurrent edits of one body merge as text (an edit is a minimal splice of the body's
//!   Text, as is [`set_title`]); `edited_at` is a plain value, one edit's wins, the same
//!   everywhere.
//! - Scalars (a task's `done` or `title`, a member's role, profile fields, `edited_at`) are
//!   registers: concurrent writes resolve to one value, the same on every replica, and the
//!   others stay visible through [`conflicts`] until the next write. (Writing the value a field
//!   already holds makes no operation, so it conflicts with nothing.)
//! - [`delete_message`] sets `deleted: true`, clears the body and drops the attachment; nothing
//!   sets `deleted` back to false, so a delete concurrent with an edit ends deleted everywhere.
//!   Characters the edit inserted may survive in the stored Text (and in [`to_json`]), but the
//!   typed views show a deleted message with an empty body.
//! - Reactions are a set per (message, emoji). Containers created concurrently by two writers
//!   both survive as a conflict and reads take the union of all of them, so no reaction is
//!   lost; [`unreact`] removes the user from every such container.
//! - Read positions only move forward: concurrent writes resolve to the greatest.
//! - Records of a trip (tasks, itinerary items, broadcasts) are keyed by id: concurrent
//!   additions never collide. Participants are a list: two devices adding the same user leave
//!   two entries, which reads fold into one.
//!
//! # Why not autosurgeon
//! autosurgeon 0.14 builds against automerge 0.12, so it would fit, but the mapping is written
//! by hand over Automerge's API: hydrating reports no path on error, reads a whole subtree
//! (the last 50 of 100k messages would hydrate all of them), and reconciling diffs whole
//! structures where every write here is a targeted operation (one new key per message, a text
//! splice per edit) and the migration must control its exact operations to be deterministic.
#![deny(missing_docs, unreachable_pub)]

mod chat;
mod conversation;
mod error;
mod hlc;
mod id;
mod json;
mod kind;
mod message;
mod migrate;
mod partial;
mod pg;
mod profile;
mod reactions;
pub mod rules;
mod tail;
mod time;
mod trip;
mod tx;
mod typed;
mod value;
mod write;

/// Automerge, as weft-core re-exports it: one version in the whole build.
pub use weft_core::automerge;

pub use chat::{
    delete_message, edit_message, last_message, mark_read, read_positions, send_message, Chat,
    NewMessage,
};
pub use conversation::{set_title, Conversation, NewConversation};
pub use error::{Path, ReadError, Segment, WriteError};
pub use hlc::{Hlc, ParseHlcError, MAX_HLC_MS};
pub use id::{Id, MessageKey, ParseIdError, ParseMessageKeyError, MAX_ID_LEN};
pub use json::{conflicts, messages_json, messages_to_json, to_json, MAX_JSON_DEPTH};
pub use kind::{kind, raw_kind, schema_version, Kind, ParseKindError, SCHEMA_VERSION};
pub use message::{
    find_message, last_messages, messages, messages_changed_since, Attachment, Message,
    MessageChanges,
};
pub use migrate::migrate;
pub use partial::{Partial, Skipped};
pub use pg::{
    decode_content, load_content, strip_nul, strip_nul_json, MessageRow, Migration, RowError,
    MIGRATIONS,
};
pub use profile::Profile;
pub use reactions::{react, reactions, unreact, Reactions, MAX_REACTION_LEN};
pub use tail::{Tail, TailError};
pub use trip::{Broadcast, ItineraryItem, NewBroadcast, NewTask, NewTrip, Priority, Task, Trip};
pub use typed::{read_typed, TypedDoc};

/// Proptest cases for unit tests: 64, or `WEFT_PROPTEST_CASES`.
#[cfg(test)]
pub(crate) fn proptest_cases() -> u32 {
    std::env::var("WEFT_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

/// The longest message body, broadcast body or note, in bytes.
pub const MAX_BODY_LEN: usize = 64 * 1024;
/// The longest title (conversation, trip, task, itinerary item), place or status, in bytes.
pub const MAX_TITLE_LEN: usize = 1024;
/// The longest user id, author, role, media type or file name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// The longest URL, in bytes.
pub const MAX_URL_LEN: usize = 4096;
