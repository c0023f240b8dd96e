//! The Postgres side of checkpoints: the numbered migrations that create the tables a relay
//! checkpoints into ([`MIGRATIONS`]), the row form of a chat message ([`MessageRow`]), and the
//! decoding of a `weft_documents` row back into a typed document ([`decode_content`]) for
//! backend jobs.
//!
//! This crate holds no Postgres client: the relay applies the migrations, and a backend job
//! reads rows with whatever client it likes and hands `content` (and `content_blake3`) here.
//!
//! ```
//! use weft_schema::automerge::Automerge;
//! use weft_schema::{Conversation, NewConversation, TypedDoc};
//!
//! let mut doc = Automerge::new();
//! Conversation::create(&mut doc, &NewConversation {
//!     title: "Support".into(),
//!     participants: vec!["alice".into()],
//! }, 1_700_000_000_000)?;
//! // What a backend job reads from `weft_documents.content` and `content_blake3`.
//! let content = doc.save();
//! let hash = blake3::hash(&content);
//! let read = weft_schema::decode_content(&content, Some(hash.as_bytes()))?;
//! assert!(read.skipped.is_empty()); // every entry fits the schema
//! let TypedDoc::Conversation(c) = read.value else { unreachable!() };
//! assert_eq!(c.title, "Support");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use weft_core::Document;

use crate::{Message, Partial, ReadError, TypedDoc};

/// One schema migration: applied in `version` order, each once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// Its number (the file name's prefix); versions start at 1 and have no gaps.
    pub version: u32,
    /// What it does, for logs.
    pub name: &'static str,
    /// The SQL, run in one transaction.
    pub sql: &'static str,
}

/// Every migration, oldest first. A relay records the versions it applied in
/// `weft_schema_migrations` and runs the rest in one transaction on start.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "hard delete",
        sql: include_str!("../migrations/0002_hard_delete.sql"),
    },
    Migration {
        version: 3,
        name: "records",
        sql: include_str!("../migrations/0003_records.sql"),
    },
    Migration {
        version: 4,
        name: "cluster change log",
        sql: include_str!("../migrations/0004_cluster.sql"),
    },
    Migration {
        version: 5,
        name: "cluster relays' positions",
        sql: include_str!("../migrations/0005_cluster_relays.sql"),
    },
];

/// Why a `weft_documents` row does not decode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RowError {
    /// `content` does not hash to `content_blake3`: the row is damaged or was altered.
    #[error("content does not match content_blake3")]
    HashMismatch,
    /// `content` is not a loadable Automerge document.
    #[error("content is not a loadable Automerge document")]
    Load {
        /// Automerge's reason.
        #[source]
        source: weft_core::DocError,
    },
    /// The document loads but is not a typed document (no known kind, or a bad header).
    #[error("content is not a valid weft document: {source}")]
    Read {
        /// Where and why.
        #[source]
        source: ReadError,
    },
}

/// Loads a `weft_documents.content` into Automerge, checking it against `content_blake3`
/// when given.
pub fn load_content(
    content: &[u8],
    content_blake3: Option<&[u8]>,
) -> Result<automerge::Automerge, RowError> {
    if let Some(expected) = content_blake3 {
        if blake3::hash(content).as_bytes().as_slice() != expected {
            return Err(RowError::HashMismatch);
        }
    }
    let doc = Document::load(content).map_err(|source| RowError::Load { source })?;
    Ok(doc.automerge().clone())
}

/// Decodes a `weft_documents.content` into the typed document (see [`load_content`]), with
/// the entries that don't fit the schema (skipped, see [`read_typed`](crate::read_typed)).
pub fn decode_content(
    content: &[u8],
    content_blake3: Option<&[u8]>,
) -> Result<Partial<TypedDoc>, RowError> {
    let doc = load_content(content, content_blake3)?;
    crate::read_typed(&doc).map_err(|source| RowError::Read { source })
}

/// A chat message as a `weft_messages` row. Text has NUL characters removed (Postgres text
/// cannot hold them); timestamps are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRow {
    /// `message_id`.
    pub message_id: String,
    /// `author`.
    pub author: String,
    /// `body` (empty for a deleted message).
    pub body: String,
    /// `created_at`, Unix milliseconds (the physical part of the message's clock).
    pub created_at_ms: u64,
    /// `edited_at`, Unix milliseconds.
    pub edited_at_ms: Option<u64>,
    /// `deleted`.
    pub deleted: bool,
    /// `sort_key`: the message's key, whose byte order is display order.
    pub sort_key: String,
}

impl MessageRow {
    /// The row of `m`.
    pub fn from_message(m: &Message) -> MessageRow {
        MessageRow {
            message_id: strip_nul(m.id.as_ref()),
            author: strip_nul(&m.author),
            body: if m.deleted {
                String::new()
            } else {
                strip_nul(&m.body)
            },
            created_at_ms: m.created_at.physical_ms(),
            edited_at_ms: m.edited_at.map(|h| h.physical_ms()),
            deleted: m.deleted,
            sort_key: strip_nul(&m.key().to_string()),
        }
    }
}

/// `s` without NUL characters, which Postgres `text` and `jsonb` refuse.
pub fn strip_nul(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "")
    } else {
        s.to_owned()
    }
}

/// `value` with NUL characters removed from every string and key, for a `jsonb` column.
pub fn strip_nul_json(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(strip_nul(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nul_json).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (strip_nul(&k), strip_nul_json(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Conversation, Id, NewConversation, NewMessage};
    use automerge::Automerge;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
            assert!(!m.sql.trim().is_empty(), "{}", m.name);
        }
        for table in ["weft_documents", "weft_messages", "weft_access"] {
            assert!(MIGRATIONS[0].sql.contains(&format!("create table {table}")));
        }
    }

    #[test]
    fn a_row_decodes_and_a_damaged_one_is_refused() {
        let mut doc = Automerge::new();
        Conversation::create(
            &mut doc,
            &NewConversation {
                title: "t".into(),
                participants: vec!["alice".into()],
            },
            1_700_000_000_000,
        )
        .unwrap();
        let m = crate::send_message(
            &mut doc,
            &NewMessage::text("alice", "hi there"),
            Id::from_bytes([3; 16]),
            1_700_000_000_001,
        )
        .unwrap();
        let content = doc.save();
        let hash = blake3::hash(&content);
        assert!(matches!(
            decode_content(&content, Some(hash.as_bytes()))
                .unwrap()
                .value,
            TypedDoc::Conversation(_)
        ));
        assert!(matches!(
            decode_content(&content, Some(&[0; 32])),
            Err(RowError::HashMismatch)
        ));
        assert!(matches!(
            decode_content(b"nope", None),
            Err(RowError::Load { .. })
        ));
        let row = MessageRow::from_message(&m);
        assert_eq!(row.body, "hi there");
        assert_eq!(strip_nul("a\0b"), "ab");
        assert_eq!(
            strip_nul_json(serde_json::json!({"k\0": ["v\0"]})),
            serde_json::json!({"k": ["v"]})
        );
        assert_eq!(row.created_at_ms, 1_700_000_000_001);
        assert_eq!(row.sort_key, m.key().to_string());
    }
}
