//! The messages of the protocol and their error codes.

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};

use crate::{DeviceId, DocId, Role};

/// An error code carried by [`Message::Error`]. Codes are numbers so newer peers can add codes
/// an older peer still decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// The token is missing, malformed, wrongly signed or expired.
    pub const UNAUTHENTICATED: ErrorCode = ErrorCode(1);
    /// The caller may not read this document (whether or not it exists).
    pub const FORBIDDEN: ErrorCode = ErrorCode(2);
    /// The caller may read but not change this document; its changes were not applied.
    pub const READ_ONLY: ErrorCode = ErrorCode(3);
    /// A frame or message was malformed; the connection closes.
    pub const MALFORMED: ErrorCode = ErrorCode(4);
    /// A frame exceeded the maximum size; the connection closes.
    pub const TOO_LARGE: ErrorCode = ErrorCode(5);
    /// Too many messages, documents or connections.
    pub const RATE_LIMITED: ErrorCode = ErrorCode(6);
    /// The peer speaks a protocol version this side does not.
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(7);
    /// Something failed on this side (storage, ...).
    pub const INTERNAL: ErrorCode = ErrorCode(8);
    /// The document was deleted.
    pub const DELETED: ErrorCode = ErrorCode(9);
    /// The device key is not the one expected or allowed.
    pub const DEVICE_NOT_ALLOWED: ErrorCode = ErrorCode(10);
    /// A size limit was reached (for example a document's access list is full).
    pub const LIMIT_REACHED: ErrorCode = ErrorCode(11);
    /// A well-formed request that cannot be carried out as asked (for example an empty user id);
    /// unlike [`ErrorCode::MALFORMED`] the connection stays open.
    pub const INVALID: ErrorCode = ErrorCode(12);
    /// Changes to the document were refused (over a size limit or a quota, or against a write
    /// rule): nothing of them was stored or forwarded, and the document's subscription ended.
    /// The message says which limit or rule, in a sentence.
    pub const REFUSED: ErrorCode = ErrorCode(13);
}

/// One actor of a document and the user it writes for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorEntry {
    /// The actor id's bytes.
    #[serde(with = "serde_bytes")]
    pub actor: Vec<u8>,
    /// The user.
    pub user: String,
}

/// One document in a discovery list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocEntry {
    /// The document.
    pub doc: DocId,
    /// The receiving user's role on it.
    pub role: Role,
}

/// A v1 protocol message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// First message of a connection, from the dialing side.
    Hello {
        /// [`PROTOCOL_VERSION`](crate::wire::PROTOCOL_VERSION) of the sender.
        protocol: u16,
        /// The sender's device id (checked against its TLS key by the receiver).
        device: DeviceId,
        /// A JWT for the relay; empty between two devices of one user.
        token: String,
        /// Free-form software name and version, for logs.
        agent: String,
    },
    /// The answer to an accepted `Hello`.
    Welcome {
        /// [`PROTOCOL_VERSION`](crate::wire::PROTOCOL_VERSION) of the sender.
        protocol: u16,
        /// The authenticated user (`sub` of the token).
        user: String,
        /// The answering side's device id.
        device: DeviceId,
        /// The largest frame body the answering side accepts.
        max_frame: u32,
    },
    /// An error about the connection (`doc` absent) or one document.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// The document concerned, only where the receiver may know it.
        doc: Option<DocId>,
        /// A human-readable sentence.
        message: String,
    },
    /// A fresh token for a live connection.
    Token {
        /// The new JWT.
        token: String,
    },
    /// Discovery: documents the user may read. `full` replaces the receiver's list.
    Docs {
        /// Whether this is the complete list rather than a delta.
        full: bool,
        /// Documents added (or whose role changed).
        added: Vec<DocEntry>,
        /// Documents the user may no longer read.
        removed: Vec<DocId>,
    },
    /// Ask to sync a document.
    Subscribe {
        /// The document.
        doc: DocId,
    },
    /// A subscription was accepted.
    Subscribed {
        /// The document.
        doc: DocId,
        /// The subscriber's role.
        role: Role,
    },
    /// Stop syncing a document.
    Unsubscribe {
        /// The document.
        doc: DocId,
    },
    /// An Automerge sync-protocol message.
    Sync {
        /// The document.
        doc: DocId,
        /// The sender started afresh: the receiver drops its sync state for this peer too.
        #[serde(default)]
        reset: bool,
        /// `automerge::sync::Message::encode()` output. A shared buffer: the relay sends one
        /// whole-document snapshot to every peer that joins at the same heads without copying
        /// it. Encoded as a MessagePack `bin`, as `serde_bytes` encodes a `Vec<u8>`.
        data: bytes::Bytes,
    },
    /// Fast path: raw Automerge changes the receiver is expected to be able to apply.
    Changes {
        /// The document.
        doc: DocId,
        /// Raw change bytes, in causal order (shared buffers: the relay forwards the same
        /// bytes to every subscriber without copying them).
        changes: Vec<bytes::Bytes>,
    },
    /// The sender's heads after durably storing what it received.
    Ack {
        /// The document.
        doc: DocId,
        /// The sender's heads.
        #[serde(with = "heads_serde")]
        heads: Vec<ChangeHash>,
    },
    /// Ephemeral data (presence state, typing indicators); never stored.
    Ephemeral {
        /// The document it concerns.
        doc: DocId,
        /// The originating user, filled in by the relay.
        #[serde(default)]
        user: Option<String>,
        /// The originating device, filled in by the relay.
        #[serde(default)]
        device: Option<DeviceId>,
        /// Opaque payload.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Who is connected to a document.
    Presence {
        /// The document.
        doc: DocId,
        /// The user.
        user: String,
        /// The user's device.
        device: DeviceId,
        /// Joined (`true`) or left.
        online: bool,
    },
    /// The end of a full discovery listing (see the module docs).
    DocsEnd {
        /// How many entries the listing held.
        total: u64,
        /// The user may read more documents than the relay lists at once; the rest were left out.
        truncated: bool,
    },
    /// Control: give `user` the role `role` on `doc` (replacing any role they had). Owner or
    /// `admin` token only; answered by a [`Message::Reply`] with the same `id`.
    Share {
        /// Chosen by the device; the reply carries it back.
        id: u64,
        /// The document.
        doc: DocId,
        /// The user (a token `sub`) to share with.
        user: String,
        /// `rw` or `ro`.
        role: Role,
    },
    /// Control: take `user` off `doc`'s access list. Owner or `admin` token only.
    Unshare {
        /// Chosen by the device; the reply carries it back.
        id: u64,
        /// The document.
        doc: DocId,
        /// The user to remove.
        user: String,
    },
    /// Control: delete `doc` for everyone; its id can never be used again. Owner or `admin`
    /// token only.
    Delete {
        /// Chosen by the device; the reply carries it back.
        id: u64,
        /// The document.
        doc: DocId,
    },
    /// Which user actors of a document write for, as the relay bound them (see
    /// `weft_schema::rules`): sent after `Subscribed` and whenever the relay binds a new actor, so
    /// a device checks what its own peers forward as the right user's.
    Actors {
        /// The document.
        doc: DocId,
        /// Actor id bytes and the user each writes for.
        actors: Vec<ActorEntry>,
    },
    /// The kinds of document declared to the relay (`weft-relay serve --kinds`), as TOML: sent
    /// after `Welcome` when there are any, so a device checks its writes against them offline.
    Kinds {
        /// The declared kinds' TOML.
        toml: String,
    },
    /// The answer to `Share`, `Unshare` or `Delete`: done (the change is durable and in force on
    /// every live connection), or why not.
    Reply {
        /// The request's id.
        id: u64,
        /// The request's document.
        doc: DocId,
        /// `None` when the request was carried out (or had already been); otherwise
        /// [`ErrorCode::FORBIDDEN`], [`ErrorCode::DELETED`], [`ErrorCode::LIMIT_REACHED`],
        /// [`ErrorCode::INVALID`], [`ErrorCode::RATE_LIMITED`] or [`ErrorCode::INTERNAL`].
        code: Option<ErrorCode>,
        /// A human-readable sentence (empty on success).
        message: String,
    },
}

impl Message {
    /// The document a message concerns, if any.
    pub fn doc(&self) -> Option<DocId> {
        match self {
            Message::Hello { .. }
            | Message::Welcome { .. }
            | Message::Token { .. }
            | Message::Docs { .. }
            | Message::Kinds { .. }
            | Message::DocsEnd { .. } => None,
            Message::Error { doc, .. } => *doc,
            Message::Subscribe { doc }
            | Message::Subscribed { doc, .. }
            | Message::Unsubscribe { doc }
            | Message::Sync { doc, .. }
            | Message::Changes { doc, .. }
            | Message::Ack { doc, .. }
            | Message::Ephemeral { doc, .. }
            | Message::Presence { doc, .. }
            | Message::Share { doc, .. }
            | Message::Unshare { doc, .. }
            | Message::Delete { doc, .. }
            | Message::Actors { doc, .. }
            | Message::Reply { doc, .. } => Some(*doc),
        }
    }
}

/// Heads travel as one byte string of concatenated 32-byte hashes.
mod heads_serde {
    use automerge::ChangeHash;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(heads: &[ChangeHash], s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(heads.len() * 32);
        for h in heads {
            bytes.extend_from_slice(&h.0);
        }
        s.serialize_bytes(&bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<ChangeHash>, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        if !bytes.len().is_multiple_of(32) {
            return Err(D::Error::invalid_length(
                bytes.len(),
                &"a multiple of 32 bytes",
            ));
        }
        Ok(bytes
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                ChangeHash(h)
            })
            .collect())
    }
}
