//! [`WeftError`]: every failure an app sees, as a typed enum (a Kotlin sealed exception class,
//! a Swift error enum), never a sentence to parse. The sentences are for logs.

use weft_core::store::StoreError;
use weft_peer::schema::rules::record::RecordError;
use weft_peer::schema::{ReadError, WriteError};
use weft_peer::DeviceError;

/// Why a call failed.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum WeftError {
    /// A document id that does not parse.
    #[error("not a document id: {id:?}")]
    InvalidDocumentId {
        /// What was given.
        id: String,
    },
    /// A device id that does not parse.
    #[error("not a device id: {id:?}")]
    InvalidDeviceId {
        /// What was given.
        id: String,
    },
    /// An argument that does not fit (a message id, a body too long, an empty title, a
    /// certificate that does not parse, an address).
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// Which argument.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// This device holds no such document.
    #[error("no document {doc} on this device")]
    UnknownDocument {
        /// The document.
        doc: String,
    },
    /// The document's owner deleted it; this device erased its copy.
    #[error("document {doc} was deleted by its owner")]
    DocumentDeleted {
        /// The document.
        doc: String,
    },
    /// This device's user may only read the document.
    #[error("document {doc} is read-only for this user")]
    ReadOnly {
        /// The document.
        doc: String,
    },
    /// The document is not of the kind the call needs (a message sent to a record, ...).
    #[error("document {doc} is {found}, not {expected}")]
    WrongKind {
        /// The document.
        doc: String,
        /// What the call needs.
        expected: String,
        /// What the document is (`untyped` when it has no kind this build knows).
        found: String,
    },
    /// No message with this id in the document.
    #[error("no message {message_id}")]
    MessageNotFound {
        /// The message.
        message_id: String,
    },
    /// The message is deleted; it cannot be edited.
    #[error("message {message_id} is deleted")]
    MessageDeleted {
        /// The message.
        message_id: String,
    },
    /// Only a message's author edits it (and only its author or the document's owner
    /// deletes it); the relay would refuse the change.
    #[error("message {message_id} is {author}'s")]
    NotAuthor {
        /// The message.
        message_id: String,
        /// Its author.
        author: String,
    },
    /// The kind is neither built in nor declared by the relay (sync once to learn them).
    #[error("unknown kind {kind:?}")]
    UnknownKind {
        /// The kind asked for.
        kind: String,
    },
    /// The record's kind has no such field.
    #[error("no field {field}")]
    UnknownField {
        /// The field.
        field: String,
    },
    /// The value does not fit the field.
    #[error("{field} must be {expected}")]
    BadValue {
        /// The field.
        field: String,
        /// What it takes.
        expected: String,
    },
    /// A write rule of the kind forbids the write (nothing was changed).
    #[error("forbidden: {reason}")]
    Forbidden {
        /// Which rule, in a sentence.
        reason: String,
    },
    /// The document does not have the shape its kind requires, or was written by a newer
    /// build; it is only read here.
    #[error("the document cannot be written or read as its kind: {reason}")]
    InvalidDocument {
        /// What is wrong.
        reason: String,
    },
    /// Another process holds the data directory.
    #[error("the data directory {path} is in use")]
    Busy {
        /// The directory.
        path: String,
    },
    /// The data directory or the store failed.
    #[error("storage: {reason}")]
    Storage {
        /// What failed.
        reason: String,
    },
    /// The relay or peer refused (a bad token, a token for another user, a device not
    /// allowed).
    #[error("refused: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
    /// A connection could not be made or failed.
    #[error("connection: {reason}")]
    Connection {
        /// Why.
        reason: String,
    },
    /// The device was closed.
    #[error("the device is closed")]
    Closed,
}

impl WeftError {
    pub(crate) fn invalid(field: &str, reason: impl ToString) -> Self {
        WeftError::InvalidArgument {
            field: field.to_owned(),
            reason: reason.to_string(),
        }
    }
}

impl From<DeviceError> for WeftError {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::UnknownDoc(doc) => WeftError::UnknownDocument {
                doc: doc.to_string(),
            },
            DeviceError::Deleted(doc) => WeftError::DocumentDeleted {
                doc: doc.to_string(),
            },
            DeviceError::ReadOnly(doc) => WeftError::ReadOnly {
                doc: doc.to_string(),
            },
            DeviceError::Busy { path } | DeviceError::Store(StoreError::Locked { path }) => {
                WeftError::Busy {
                    path: path.display().to_string(),
                }
            }
            DeviceError::Refused(reason) => WeftError::Refused { reason },
            DeviceError::Unreachable(reason) | DeviceError::Connection(reason) => {
                WeftError::Connection { reason }
            }
            DeviceError::Closed => WeftError::Closed,
            other => WeftError::Storage {
                reason: other.to_string(),
            },
        }
    }
}

impl From<WriteError> for WeftError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Read { source } => source.into(),
            WriteError::NotFound {
                what: "message",
                id,
            } => WeftError::MessageNotFound {
                message_id: id.to_string(),
            },
            WriteError::Deleted { id } => WeftError::MessageDeleted {
                message_id: id.to_string(),
            },
            WriteError::InvalidInput { field, reason } => WeftError::invalid(field, reason),
            other => WeftError::InvalidDocument {
                reason: other.to_string(),
            },
        }
    }
}

impl From<ReadError> for WeftError {
    fn from(e: ReadError) -> Self {
        WeftError::InvalidDocument {
            reason: e.to_string(),
        }
    }
}

impl From<RecordError> for WeftError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::UnknownKind(kind) => WeftError::UnknownKind { kind },
            RecordError::UnknownField { field, .. } => WeftError::UnknownField { field },
            RecordError::BadValue {
                field, expected, ..
            } => WeftError::BadValue { field, expected },
            RecordError::Forbidden(reason) => WeftError::Forbidden { reason },
            other => WeftError::InvalidDocument {
                reason: other.to_string(),
            },
        }
    }
}
