//! The document header: `kind` and `schema_version` at the root, and [`read_typed`], which
//! dispatches on them.

use std::fmt;
use std::str::FromStr;

use automerge::{Automerge, ObjType, ReadDoc, ScalarValue, Value, ROOT};

use crate::error::{At, ReadError};
use crate::value::{describe, get, opt_u64};

/// The schema version this build writes. See [`migrate`](crate::migrate) for what changed.
pub const SCHEMA_VERSION: u64 = 2;

/// What a typed document is, from its root `kind` string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `"conversation"`: a chat between participants.
    Conversation,
    /// `"trip"`: a shared trip with members, itinerary, tasks, broadcasts and a chat.
    Trip,
    /// `"profile"`: one user's public profile.
    Profile,
}

impl Kind {
    /// The `kind` string stored at the root.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Conversation => "conversation",
            Kind::Trip => "trip",
            Kind::Profile => "profile",
        }
    }

    /// Whether documents of this kind have a chat (`messages`, `read`, `reactions`).
    pub fn has_chat(self) -> bool {
        matches!(self, Kind::Conversation | Kind::Trip)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`Kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown document kind {0:?} (expected conversation, trip or profile)")]
pub struct ParseKindError(pub String);

impl FromStr for Kind {
    type Err = ParseKindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "conversation" => Ok(Kind::Conversation),
            "trip" => Ok(Kind::Trip),
            "profile" => Ok(Kind::Profile),
            _ => Err(ParseKindError(s.to_owned())),
        }
    }
}

/// The `kind` string at the root, whatever it says (for listing untyped documents and the
/// checkpoint's `kind` column); `None` when absent or not a string (or Text, as JavaScript
/// writes strings).
pub fn raw_kind(doc: &Automerge) -> Option<String> {
    kind_str(doc).ok()?
}

/// The root's `kind` as a string: a string scalar or Text.
fn kind_str<D: ReadDoc>(doc: &D) -> Result<Option<String>, ReadError> {
    Ok(match get(doc, &ROOT, "kind")? {
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        Some((Value::Object(ObjType::Text), id)) => Some(doc.text(&id)?),
        _ => None,
    })
}

/// The document's kind. A document with no `kind`, a non-string one or one this build doesn't
/// know is [`ReadError::Untyped`]: valid, kept and synced, shown raw.
pub fn kind(doc: &Automerge) -> Result<Kind, ReadError> {
    kind_in(doc)
}

pub(crate) fn kind_in<D: ReadDoc>(doc: &D) -> Result<Kind, ReadError> {
    let found = kind_str(doc)?;
    match found.as_deref().map(str::parse::<Kind>) {
        Some(Ok(k)) => Ok(k),
        _ => Err(ReadError::Untyped { found }),
    }
}

/// The document's `schema_version` (a non-negative integer at the root, required).
pub fn schema_version(doc: &Automerge) -> Result<u64, ReadError> {
    version_in(doc)
}

pub(crate) fn version_in<D: ReadDoc>(doc: &D) -> Result<u64, ReadError> {
    let at = At::Root;
    let at = at.key("schema_version");
    match opt_u64(doc, &ROOT, "schema_version", at)? {
        Some(0) => Err(at.invalid("a schema version (1 or more)", "0")),
        Some(v) => Ok(v),
        None => match get(doc, &ROOT, "schema_version")? {
            Some((v, _)) => Err(at.invalid("a schema version", describe(&v))),
            None => Err(at.missing("a schema version")),
        },
    }
}

/// Checks the header for a read of a `expected` document: its kind and a version this build
/// can read (any version: older ones are read as they are, newer ones are attempted, their
/// unknown fields ignored).
pub(crate) fn expect_kind<D: ReadDoc>(doc: &D, expected: Kind) -> Result<u64, ReadError> {
    let found = kind_in(doc)?;
    if found != expected {
        return Err(ReadError::WrongKind { expected, found });
    }
    version_in(doc)
}

/// The kinds that hold a chat (messages, reactions, read markers).
pub(crate) const CHAT_KINDS: &[Kind] = &[Kind::Conversation, Kind::Trip];
