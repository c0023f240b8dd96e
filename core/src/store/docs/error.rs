//! Why a document-store read failed.

use automerge::AutomergeError;

use super::chunks::ChunkKey;
use crate::store::{Hex, StoreError, Table};
use crate::{ContentHash, DocId};

/// Why a document-store read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DocStoreError {
    /// The store itself failed.
    #[error(transparent)]
    Store {
        /// The store's error.
        #[from]
        source: StoreError,
    },
    /// A chunk's bytes do not match the hash in its key: the stored data is damaged.
    #[error("stored chunk {key} of document {} is corrupt: its bytes hash to {actual}", key.doc())]
    CorruptChunk {
        /// The damaged chunk.
        key: ChunkKey,
        /// The hash of the bytes actually stored.
        actual: ContentHash,
    },
    /// A key in a table is not one this module writes.
    #[error("malformed key {} in table {table}", Hex(key))]
    BadKey {
        /// The table.
        table: Table,
        /// The key.
        key: Vec<u8>,
    },
    /// Automerge refused the document's chunks.
    #[error(
        "document {doc} does not load from its stored chunks{}",
        culprit(chunk)
    )]
    Load {
        /// The document.
        doc: DocId,
        /// The first chunk that does not load on its own, if one was found.
        chunk: Option<ChunkKey>,
        /// Automerge's error.
        #[source]
        source: Box<AutomergeError>,
    },
    /// Automerge panicked while loading the document's chunks.
    #[error("document {doc} does not load from its stored chunks: automerge panicked")]
    LoadPanicked {
        /// The document.
        doc: DocId,
    },
    /// A record starts with a format byte this build does not know (a newer weft wrote it).
    #[error("document {doc}: stored {record} has unknown format byte {tag:#04x}")]
    UnknownFormat {
        /// The document.
        doc: DocId,
        /// Which record: `"metadata"` or `"sync state"`.
        record: &'static str,
        /// The format byte found.
        tag: u8,
    },
    /// A record's body does not decode.
    #[error("document {doc}: stored {record} does not decode")]
    Decode {
        /// The document.
        doc: DocId,
        /// Which record: `"metadata"` or `"sync state"`.
        record: &'static str,
        /// The decoder's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn culprit(chunk: &Option<ChunkKey>) -> String {
    match chunk {
        Some(key) => format!(" (chunk {key} does not parse)"),
        None => String::new(),
    }
}
