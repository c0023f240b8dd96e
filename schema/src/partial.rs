//! [`Partial`]: what a typed read returns. Documents come from peers, and one malformed entry
//! written by one of them must not hide every other entry from every device: a read returns
//! the entries that fit the schema and reports each one that doesn't as [`Skipped`], with its
//! path and the reason.

use crate::error::{At, Path, ReadError};
use crate::MessageKey;

/// A typed read's result: the value built from every entry that fits the schema, and the
/// entries left out of it.
///
/// Only the header fails a read outright ([`ReadError::Untyped`], [`ReadError::WrongKind`],
/// a bad `schema_version`). Anything below it that doesn't fit is skipped: an entry of a
/// collection (a message, a read position, a reaction, a participant, a member, a task, an
/// itinerary item, a broadcast) is left out; a collection that isn't one reads as empty; a
/// field reads as absent (an optional one) or empty (a required string such as a title).
#[derive(Debug)]
#[must_use = "a read may have skipped entries: look at `skipped` or take `value` explicitly"]
pub struct Partial<T> {
    /// What reads.
    pub value: T,
    /// What doesn't, in the order the read met it (the same on every replica with the same
    /// heads).
    pub skipped: Vec<Skipped>,
}

impl<T> Partial<T> {
    /// Whether nothing was skipped.
    pub fn is_complete(&self) -> bool {
        self.skipped.is_empty()
    }

    /// The value when nothing was skipped, or else the reason the first skipped entry
    /// doesn't read: the all-or-nothing read, for callers that want it.
    pub fn strict(self) -> Result<T, ReadError> {
        match self.skipped.into_iter().next() {
            None => Ok(self.value),
            Some(s) => Err(s.reason),
        }
    }

    /// The same skipped entries with the value mapped.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Partial<U> {
        Partial {
            value: f(self.value),
            skipped: self.skipped,
        }
    }

    pub(crate) fn new(value: T, skipped: Vec<Skipped>) -> Self {
        Partial { value, skipped }
    }
}

/// An entry a typed read left out.
#[derive(Debug, thiserror::Error)]
#[error("skipped {path}: {reason}")]
pub struct Skipped {
    /// The entry left out: `messages["{key}"]`, `read.bob`, `tasks["{id}"]`, `title`.
    pub path: Path,
    /// Why: the first thing in it that doesn't fit, with its own (possibly deeper) path.
    #[source]
    pub reason: ReadError,
}

impl Skipped {
    /// The key of the chat message this entry is, when it is one (`messages["{key}"]` with a
    /// well-formed key): lets a reader that keeps a copy of messages (the checkpoint's rows)
    /// drop the one that no longer reads.
    pub fn message_key(&self) -> Option<MessageKey> {
        match self.path.segments() {
            [crate::Segment::Key(m), crate::Segment::Key(k)] if m == "messages" => k.parse().ok(),
            _ => None,
        }
    }
}

/// Where a reader puts what it skips.
pub(crate) type Skips = Vec<Skipped>;

/// Whether `e` is about the document's content (and so an entry to skip) rather than a
/// failure of the read itself (Automerge refusing, a wrong kind), which fails the read.
fn is_content(e: &ReadError) -> bool {
    matches!(
        e,
        ReadError::Invalid { .. }
            | ReadError::Missing { .. }
            | ReadError::TooLarge { .. }
            | ReadError::TooDeep { .. }
    )
}

/// The entry at `at`: `Some` when it reads, `None` (recorded in `skips`) when its content
/// doesn't fit; other errors fail the read.
pub(crate) fn entry<T>(
    r: Result<T, ReadError>,
    at: At<'_>,
    skips: &mut Skips,
) -> Result<Option<T>, ReadError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_content(&e) => {
            skips.push(Skipped {
                path: at.to_path(),
                reason: e,
            });
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Records `reason` for the entry at `at`.
pub(crate) fn skip(at: At<'_>, reason: ReadError, skips: &mut Skips) {
    skips.push(Skipped {
        path: at.to_path(),
        reason,
    });
}
