//! Why checkpointing failed, and how a failure is logged: with its whole cause chain.

use std::fmt;
use std::path::PathBuf;

use weft_core::store::docs::DocStoreError;
use weft_core::store::StoreError;
use weft_core::DocId;

/// Why a checkpoint (or the start of checkpointing) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The Postgres URL does not parse.
    #[error("invalid Postgres URL")]
    BadUrl {
        /// The parser's reason.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The URL's `sslmode` is not one of those supported.
    #[error("sslmode {value:?} is not one of disable, prefer, require, verify-ca, verify-full")]
    BadSslMode {
        /// The value given (shortened).
        value: String,
    },
    /// The `--postgres-ca` file cannot be read or holds no usable certificate.
    #[error("cannot use {} as the Postgres CA: {reason}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The TLS configuration for Postgres cannot be built.
    #[error("cannot set up TLS for Postgres: {reason}")]
    Tls {
        /// What was wrong.
        reason: String,
    },
    /// Postgres refused or failed a request, or the connection broke.
    #[error("Postgres failed")]
    Postgres {
        /// The client's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Postgres did not answer in time.
    #[error("Postgres did not answer in time")]
    Timeout,
    /// The cluster's configuration is not usable.
    #[error("{message}")]
    Cluster {
        /// What is wrong.
        message: String,
    },
    /// The database was migrated by a newer relay.
    #[error("the database has schema version {found}; this relay knows up to {known}")]
    NewerSchema {
        /// The newest version applied.
        found: i64,
        /// The newest this build knows.
        known: u32,
    },
    /// Reading a document from the relay's store failed.
    #[error("cannot read document {doc} from the relay's store")]
    Store {
        /// The document.
        doc: DocId,
        /// The store's error.
        #[source]
        source: DocStoreError,
    },
    /// Writing to the relay's store failed.
    #[error("cannot write to the relay's store")]
    StoreWrite {
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The relay's and Postgres' versions of a document do not merge.
    #[error("document {doc}: the checkpointed content does not merge with the relay's")]
    Merge {
        /// The document.
        doc: DocId,
        /// Automerge's reason.
        #[source]
        source: weft_core::DocError,
    },
    /// A blocking task panicked or was cancelled.
    #[error("a checkpoint task failed")]
    TaskFailed,
}

/// An error and its sources, `: `-separated, for one log line. A source whose text the
/// previous one already ends with (a wrapper that prints its cause) is not repeated.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut next = self.0.source();
        while let Some(err) = next {
            let text = err.to_string();
            if !last.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
            next = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_error_names_every_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("the handshake failed: invalid peer certificate: UnknownIssuer")]
        struct Printing(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("invalid peer certificate: UnknownIssuer")]
        struct Inner;
        #[derive(Debug, thiserror::Error)]
        #[error("error performing TLS handshake")]
        struct Silent(#[source] Inner);

        let e = CheckpointError::Tls { reason: "x".into() };
        assert_eq!(Chain(&e).to_string(), "cannot set up TLS for Postgres: x");
        assert_eq!(
            Chain(&Silent(Inner)).to_string(),
            "error performing TLS handshake: invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(
            Chain(&Printing(Inner)).to_string(),
            "the handshake failed: invalid peer certificate: UnknownIssuer"
        );
    }
}
