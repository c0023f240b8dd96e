//! [`Document`]: weft's handle on one Automerge document.
//!
//! Every version-sensitive Automerge call the engine and the store make goes through here, so
//! the automerge version (see ARCHITECTURE.md for why 0.12) can be revisited in one place.

use automerge::{Automerge, Change, ChangeHash, ReadDoc};

/// Why a document or a change could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DocError {
    /// The bytes are not a loadable Automerge document.
    #[error("not a loadable Automerge document: {source}")]
    Load {
        /// Automerge's reason.
        #[source]
        source: Box<automerge::AutomergeError>,
    },
    /// The bytes are not a valid Automerge change.
    #[error("not a valid Automerge change: {reason}")]
    Change {
        /// Automerge's reason.
        reason: String,
    },
    /// Changes could not be applied.
    #[error("could not apply changes: {source}")]
    Apply {
        /// Automerge's reason.
        #[source]
        source: Box<automerge::AutomergeError>,
    },
}

/// One Automerge document.
#[derive(Debug, Clone)]
pub struct Document {
    am: Automerge,
}

impl Default for Document {
    fn default() -> Self {
        Self::new()
    }
}

impl Document {
    /// An empty document.
    pub fn new() -> Self {
        Document {
            am: Automerge::new(),
        }
    }

    /// Loads a document from a concatenation of Automerge chunks (a `save()` snapshot followed
    /// by incremental changes, in any combination). Changes whose dependencies are missing are
    /// kept back, as Automerge keeps them when they arrive in a sync message, rather than
    /// failing the load: weft stores such changes as they arrive.
    pub fn load(bytes: &[u8]) -> Result<Self, DocError> {
        let am = load_automerge(bytes).map_err(|source| DocError::Load {
            source: Box::new(source),
        })?;
        Ok(Document { am })
    }

    /// Wraps an Automerge document.
    pub fn from_automerge(am: Automerge) -> Self {
        Document { am }
    }

    /// The compressed snapshot of the whole document.
    pub fn save(&self) -> Vec<u8> {
        self.am.save()
    }

    /// The document's heads, sorted.
    pub fn heads(&self) -> Vec<ChangeHash> {
        let mut h = self.am.get_heads();
        h.sort_unstable();
        h
    }

    /// Whether the document contains the change `hash` (applied, not merely queued).
    pub fn has_change(&self, hash: &ChangeHash) -> bool {
        self.am.get_change_meta_by_hash(hash).is_some()
    }

    /// Whether Automerge holds changes back because their dependencies are missing. A snapshot
    /// (`save`) leaves such changes out.
    pub fn has_queued_changes(&self) -> bool {
        !self.am.get_missing_deps(&[]).is_empty()
    }

    /// Applies a batch of changes at once (one call per batch: applying changes one at a time
    /// costs time proportional to the document in automerge >= 0.7).
    pub fn apply(&mut self, changes: Vec<Change>) -> Result<(), DocError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.am
            .apply_changes(changes)
            .map_err(|source| DocError::Apply {
                source: Box::new(source),
            })
    }

    /// The changes not reachable from `since`, in causal order.
    pub fn changes_since(&self, since: &[ChangeHash]) -> Vec<Change> {
        self.am.get_changes(since)
    }

    /// The Automerge document, for reading.
    pub fn automerge(&self) -> &Automerge {
        &self.am
    }

    /// The Automerge document, for changing. Callers that change it through this must report
    /// the new changes to the engine (the engine's `change` does).
    pub(crate) fn automerge_mut(&mut self) -> &mut Automerge {
        &mut self.am
    }
}

/// Parses and structurally validates one raw change (its columns decode and its hash matches).
pub fn parse_change(bytes: &[u8]) -> Result<Change, DocError> {
    let change = Change::try_from(bytes).map_err(|e| DocError::Change {
        reason: e.to_string(),
    })?;
    Ok(change)
}

/// The lowercase hex form of a change hash, as the contract prints heads.
pub fn hash_hex(hash: &ChangeHash) -> String {
    hash.to_string()
}

/// `Automerge::load`, except that changes with missing dependencies are held back instead of
/// failing the load. Any other error (a chunk that does not parse) still fails it.
pub(crate) fn load_automerge(bytes: &[u8]) -> Result<Automerge, automerge::AutomergeError> {
    match Automerge::load(bytes) {
        Err(automerge::AutomergeError::MissingDeps) => Automerge::load_with_options(
            bytes,
            automerge::LoadOptions::new().on_partial_load(automerge::OnPartialLoad::Ignore),
        ),
        other => other,
    }
}
