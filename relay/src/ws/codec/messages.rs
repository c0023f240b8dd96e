//! The messages both ways.

use ciborium::Value;
use weft_core::DocId;

use super::weft::WeftRequest;

/// A message from an automerge-repo client.
#[derive(Debug, PartialEq)]
pub(crate) enum FromClient {
    /// `join`: the first message; binds the socket to `sender`.
    Join {
        sender: String,
        /// `supportedProtocolVersions`; absent means "1" (as the reference server reads it).
        versions: Option<Vec<String>>,
    },
    /// `request` (the first sync message from a peer that lacks the document) or `sync`.
    Sync {
        sender: String,
        doc: DocId,
        data: Vec<u8>,
        request: bool,
    },
    /// `ephemeral`: opaque application data for the document's other peers.
    Ephemeral {
        sender: String,
        doc: DocId,
        data: Vec<u8>,
    },
    /// `remote-subscription-change`: the storage ids whose heads the client wants to hear
    /// about (`add`) or no longer (`remove`); the relay answers for its own.
    RemoteSubscription {
        sender: String,
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// A `weft-…` request (`weft.rs`).
    Weft {
        sender: String,
        request: WeftRequest,
    },
    /// `doc-unavailable`, `remote-heads-changed`, `leave`: checked, then ignored.
    Ignored { sender: String, kind: &'static str },
}

impl FromClient {
    /// The peer id the message names as its sender.
    pub(crate) fn sender(&self) -> &str {
        match self {
            FromClient::Join { sender, .. }
            | FromClient::Sync { sender, .. }
            | FromClient::Ephemeral { sender, .. }
            | FromClient::RemoteSubscription { sender, .. }
            | FromClient::Weft { sender, .. }
            | FromClient::Ignored { sender, .. } => sender,
        }
    }
}

/// A message for a client. `sender` is the relay's peer id, `target` the client's.
#[derive(Debug)]
pub(crate) enum ToClient<'a> {
    /// The answer to `join`, with the relay's storage id (`peerMetadata`: `storageId`,
    /// `isEphemeral: false`): clients keep sync state and remote heads under it.
    Peer { storage_id: &'a str },
    /// An Automerge sync message.
    Sync { doc: DocId, data: &'a [u8] },
    /// The relay will not serve the document (refused, whether or not it exists).
    DocUnavailable { doc: DocId },
    /// Another peer's ephemeral data. `session` names the originating device (the client
    /// drops messages whose `count` does not increase per sender and session).
    Ephemeral {
        doc: DocId,
        data: &'a [u8],
        session: &'a str,
        count: u64,
    },
    /// `remote-heads-changed`: the relay's heads of `doc` (bs58check-encoded hashes, as
    /// automerge-repo writes them) under its storage id, at `timestamp` (ms since the epoch).
    RemoteHeads {
        doc: DocId,
        storage_id: &'a str,
        heads: &'a [String],
        timestamp: u64,
    },
    /// A `weft-…` message (`weft.rs`): its type and fields.
    Weft {
        kind: &'static str,
        fields: Vec<(&'static str, Value)>,
    },
    /// Sent just before the relay closes the socket.
    Error { message: &'a str },
}
