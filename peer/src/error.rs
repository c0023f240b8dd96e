//! The device runtime's errors.

use weft_core::engine::EngineError;
use weft_core::store::{DocStoreError, StoreError};
use weft_core::DocId;

/// Why a device operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The data directory could not be prepared or read.
    #[error("data directory {path}: {message}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Another process holds the data directory and does not answer on its socket.
    #[error("the data directory {path} is in use by another weft process")]
    Busy {
        /// The directory.
        path: std::path::PathBuf,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A document could not be read from the store.
    #[error(transparent)]
    DocStore(#[from] DocStoreError),
    /// The sync engine could not read or change a document: it was not loaded, or folding the
    /// changes received for it failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The device key could not be read or made.
    #[error("device key: {0}")]
    Key(#[from] weft_core::quic::KeyError),
    /// This device has no such document.
    #[error("no document {0} on this device")]
    UnknownDoc(DocId),
    /// The document's owner deleted it; this device erased its copy.
    #[error("document {0} was deleted by its owner; this device no longer holds it")]
    Deleted(DocId),
    /// This device's user may only read the document.
    #[error("document {0} is read-only for this device's user")]
    ReadOnly(DocId),
    /// The relay or peer refused: a bad or expired token, a document not permitted, a device not
    /// allowed, a key mismatch.
    #[error("{0}")]
    Refused(String),
    /// The relay or peer could not be reached in time.
    #[error("{0}")]
    Unreachable(String),
    /// A connection failed for another reason.
    #[error("{0}")]
    Connection(String),
    /// The device was closed.
    #[error("the device is shut down")]
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_error_keeps_its_type_and_its_sentence() {
        let doc = DocId::random(&mut rand::rng());
        let engine = EngineError::NotLoaded { doc };
        let sentence = engine.to_string();
        let e = DeviceError::from(engine);
        assert!(matches!(
            e,
            DeviceError::Engine(EngineError::NotLoaded { .. })
        ));
        assert_eq!(e.to_string(), sentence);
    }
}
