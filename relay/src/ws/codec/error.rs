//! Why a client's frame is not a valid message.

/// Longest peer id accepted (automerge-repo's are UUIDs or short names).
pub(crate) const MAX_PEER_ID_LEN: usize = 256;

/// Why a client's frame is not a valid message.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub(crate) enum CodecError {
    #[error("not CBOR: {reason}")]
    NotCbor { reason: String },
    #[error("trailing bytes after the message")]
    Trailing,
    #[error("a message must be a CBOR map")]
    NotAMap,
    #[error("unknown message type {kind:?}")]
    UnknownType { kind: String },
    #[error("field {field:?} is missing")]
    Missing { field: &'static str },
    #[error("field {field:?} must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("field {field:?} is not a document id")]
    BadDocId { field: &'static str },
    #[error("the peer id is empty or longer than {MAX_PEER_ID_LEN} bytes")]
    BadPeerId,
}
