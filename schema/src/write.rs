//! The frame of every typed write: check the header, migrate an older document first, then
//! make the write in one transaction, committed on success and rolled back on error.

use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, ObjId, ObjType, ReadDoc, Value, ROOT};

use crate::error::WriteError;
use crate::kind::{kind_in, version_in};
use crate::tx::transact;
use crate::{migrate, Hlc, Kind, ReadError, SCHEMA_VERSION};

/// What a write knows about its writer.
pub(crate) struct Ctx {
    /// The writer's wall clock, Unix milliseconds, as the caller passed it.
    pub(crate) wall_ms: u64,
    /// The writer's HLC node, from its actor id.
    pub(crate) node: u64,
}

impl Ctx {
    pub(crate) fn now(&self, last_seen: Option<Hlc>) -> Hlc {
        Hlc::now(self.wall_ms, self.node, last_seen)
    }
}

/// Runs `f` as one change on a document of one of `kinds`.
pub(crate) fn write<R>(
    doc: &mut Automerge,
    kinds: &[Kind],
    wall_ms: u64,
    f: impl FnOnce(&mut Transaction<'_>, &Ctx) -> Result<R, WriteError>,
) -> Result<R, WriteError> {
    let kind = kind_in(doc)?;
    if !kinds.contains(&kind) {
        return Err(ReadError::WrongKind {
            expected: kinds[0],
            found: kind,
        }
        .into());
    }
    let version = version_in(doc)?;
    if version > SCHEMA_VERSION {
        return Err(WriteError::TooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < SCHEMA_VERSION {
        migrate(doc)?;
    }
    let ctx = Ctx {
        wall_ms,
        node: Hlc::node_for_actor(doc.get_actor()),
    };
    transact(doc, wall_ms, None, |tx| f(tx, &ctx))
}

/// Refuses to create a document over one that already has a kind.
pub(crate) fn check_empty(doc: &Automerge) -> Result<(), WriteError> {
    match doc.get(ROOT, "kind")? {
        None => Ok(()),
        Some(_) => Err(WriteError::AlreadyInitialized {
            kind: crate::raw_kind(doc).unwrap_or_else(|| "(not a string)".into()),
        }),
    }
}

/// A map at `obj[key]` to write into: the winning value when it is a map, else a map among
/// the conflicting values (reads take the union of them all), else a new map, which
/// replaces whatever isn't one there (reads skip such a value anyway).
pub(crate) fn ensure_map(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
) -> Result<ObjId, WriteError> {
    // Automerge lists the winner last.
    let existing = tx.get_all(obj, key)?.into_iter().rev().find_map(|(v, id)| {
        matches!(v, Value::Object(ObjType::Map | ObjType::Table)).then_some(id)
    });
    match existing {
        Some(id) => Ok(id),
        None => Ok(tx.put_object(obj, key, ObjType::Map)?),
    }
}

/// Validates a string argument of a write: size, emptiness, no NUL.
pub(crate) fn check_arg(
    field: &'static str,
    s: &str,
    max: usize,
    non_empty: bool,
) -> Result<(), WriteError> {
    if s.len() > max {
        return Err(WriteError::InvalidInput {
            field,
            reason: format!("{} bytes is over the limit of {max}", s.len()),
        });
    }
    if non_empty && s.is_empty() {
        return Err(WriteError::InvalidInput {
            field,
            reason: "must not be empty".into(),
        });
    }
    // Postgres text and jsonb (the checkpoint) cannot hold NUL characters.
    if s.contains('\0') {
        return Err(WriteError::InvalidInput {
            field,
            reason: "must not contain NUL characters".into(),
        });
    }
    Ok(())
}
