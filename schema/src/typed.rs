//! Reading a document as whatever kind it says it is.

use automerge::Automerge;

use crate::error::ReadError;
use crate::kind::kind;
use crate::partial::{Partial, Skips};
use crate::{Conversation, Kind, Profile, Trip};

/// A typed document of any kind.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum TypedDoc {
    /// A conversation.
    Conversation(Conversation),
    /// A trip.
    Trip(Trip),
    /// A profile.
    Profile(Profile),
}

/// Reads a document as whatever kind it says it is, with what doesn't fit the schema
/// (skipped; see [`Partial`]). Reading never writes. An untyped document is
/// [`ReadError::Untyped`].
pub fn read_typed(doc: &Automerge) -> Result<Partial<TypedDoc>, ReadError> {
    let mut skips = Skips::new();
    let typed = match kind(doc)? {
        Kind::Conversation => TypedDoc::Conversation(Conversation::read_in(doc, &mut skips)?),
        Kind::Trip => TypedDoc::Trip(Trip::read_in(doc, &mut skips)?),
        Kind::Profile => TypedDoc::Profile(crate::profile::read_in(doc, &mut skips)?),
    };
    Ok(Partial::new(typed, skips))
}
