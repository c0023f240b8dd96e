//! Errors of typed reads ([`ReadError`]) and typed writes ([`WriteError`]), and the [`Path`]
//! that names where in a document a read went wrong.

use std::fmt;

use crate::{Id, Kind};

/// Where in a document a value sits: `messages["2025-...Z-00000-..._ab12"].author`,
/// `participants[3]`, `title`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Path(Vec<Segment>);

/// One step of a [`Path`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Segment {
    /// A key in a map.
    Key(String),
    /// An index in a list.
    Index(usize),
}

impl Path {
    /// The document root.
    pub fn root() -> Self {
        Path(Vec::new())
    }

    /// The steps from the root.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    pub(crate) fn from_props(props: &[automerge::Prop]) -> Self {
        Path(
            props
                .iter()
                .map(|p| match p {
                    automerge::Prop::Map(k) => Segment::Key(k.clone()),
                    automerge::Prop::Seq(i) => Segment::Index(*i),
                })
                .collect(),
        )
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(root)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if is_plain(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Key(k) => write!(f, "[{k:?}]")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

fn is_plain(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A borrowed path under construction: readers pass one down as they descend, and only an
/// error turns it into an owned [`Path`], so the happy path allocates nothing for it.
#[derive(Clone, Copy)]
pub(crate) enum At<'a> {
    Root,
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl<'a> At<'a> {
    pub(crate) fn key(&'a self, k: &'a str) -> At<'a> {
        At::Key(self, k)
    }

    pub(crate) fn index(&'a self, i: usize) -> At<'a> {
        At::Index(self, i)
    }

    pub(crate) fn to_path(self) -> Path {
        let mut segs = Vec::new();
        let mut cur = self;
        loop {
            match cur {
                At::Root => break,
                At::Key(parent, k) => {
                    segs.push(Segment::Key(k.to_owned()));
                    cur = *parent;
                }
                At::Index(parent, i) => {
                    segs.push(Segment::Index(i));
                    cur = *parent;
                }
            }
        }
        segs.reverse();
        Path(segs)
    }

    pub(crate) fn invalid(self, expected: &'static str, found: impl Into<String>) -> ReadError {
        ReadError::Invalid {
            path: self.to_path(),
            expected,
            found: found.into(),
        }
    }

    pub(crate) fn missing(self, expected: &'static str) -> ReadError {
        ReadError::Missing {
            path: self.to_path(),
            expected,
        }
    }

    pub(crate) fn too_large(self, len: usize, max: usize) -> ReadError {
        ReadError::TooLarge {
            path: self.to_path(),
            len,
            max,
        }
    }
}

/// Why a typed read of a document failed. The document itself is untouched and still syncs;
/// only the typed view of it is unavailable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The document has no `kind`, or one this build doesn't know. It is kept and synced as
    /// it is and can be shown raw ([`to_json`](crate::to_json)).
    #[error("untyped document (kind {}): shown raw only", found.as_deref().map_or("missing".to_owned(), |k| format!("{k:?}")))]
    Untyped {
        /// The `kind` string at the root, when there is one.
        found: Option<String>,
    },
    /// The document is of another kind than the one asked for.
    #[error("the document is a {found}, not a {expected}")]
    WrongKind {
        /// The kind asked for.
        expected: Kind,
        /// The document's kind.
        found: Kind,
    },
    /// A value has the wrong type or form.
    #[error("at {path}: expected {expected}, found {found}")]
    Invalid {
        /// Where.
        path: Path,
        /// What the schema wants there.
        expected: &'static str,
        /// What is there.
        found: String,
    },
    /// A required value is absent.
    #[error("at {path}: missing, expected {expected}")]
    Missing {
        /// Where.
        path: Path,
        /// What the schema wants there.
        expected: &'static str,
    },
    /// A value is larger than the schema allows.
    #[error("at {path}: {len} bytes is over the limit of {max}")]
    TooLarge {
        /// Where.
        path: Path,
        /// Its size in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Objects nest deeper than the JSON view renders.
    #[error("at {path}: objects nest deeper than {max} levels")]
    TooDeep {
        /// The object at the limit.
        path: Path,
        /// The limit.
        max: usize,
    },
    /// Automerge refused a read (an object id that isn't in this document).
    #[error("automerge: {source}")]
    Automerge {
        /// Automerge's reason (boxed: it is larger than every other variant).
        #[source]
        source: Box<automerge::AutomergeError>,
    },
}

impl From<automerge::AutomergeError> for ReadError {
    fn from(source: automerge::AutomergeError) -> Self {
        ReadError::Automerge {
            source: Box::new(source),
        }
    }
}

/// Why a typed write failed. A failed write changes nothing: its transaction is rolled back
/// (a migration that ran before it stays, see [`migrate`](crate::migrate)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The document doesn't have the shape its kind requires; writing to it is refused.
    #[error("the document is not valid: {source}")]
    Read {
        /// What is wrong with it.
        #[from]
        source: ReadError,
    },
    /// The document was written by a newer build, which may have moved data this build
    /// doesn't know about; this build only reads it.
    #[error("schema version {found} is newer than this build's {supported}; read-only here")]
    TooNew {
        /// The document's `schema_version`.
        found: u64,
        /// The newest version this build writes.
        supported: u64,
    },
    /// The document already has a kind, so it can't be created again.
    #[error("the document is already a {kind:?} document")]
    AlreadyInitialized {
        /// Its `kind`.
        kind: String,
    },
    /// No message, task, itinerary item or broadcast with this id.
    #[error("no {what} with id {id}")]
    NotFound {
        /// "message", "task", ...
        what: &'static str,
        /// The id asked for.
        id: Id,
    },
    /// The message is deleted; deleted messages can't be edited.
    #[error("message {id} is deleted")]
    Deleted {
        /// The message.
        id: Id,
    },
    /// An id is already taken in this document.
    #[error("{what} id {id} is already used in this document")]
    DuplicateId {
        /// "message", "task", ...
        what: &'static str,
        /// The id.
        id: Id,
    },
    /// An argument doesn't fit the schema (too long, empty, badly formed).
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which argument.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Automerge refused an operation.
    #[error("automerge: {source}")]
    Automerge {
        /// Automerge's reason (boxed: it is larger than every other variant).
        #[source]
        source: Box<automerge::AutomergeError>,
    },
}

impl From<automerge::AutomergeError> for WriteError {
    fn from(source: automerge::AutomergeError) -> Self {
        WriteError::Automerge {
            source: Box::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_code() {
        let root = At::Root;
        let m = root.key("messages");
        let k = m.key("2025-01-01T00:00:00.000Z-00000-0000000000000000_ab");
        let a = k.key("author");
        assert_eq!(
            a.to_path().to_string(),
            "messages[\"2025-01-01T00:00:00.000Z-00000-0000000000000000_ab\"].author"
        );
        let p = root.key("participants");
        assert_eq!(p.index(3).to_path().to_string(), "participants[3]");
        assert_eq!(At::Root.to_path().to_string(), "(root)");
    }
}
