//! Checking one change against its document's kind: every operation is placed in the document
//! (which field, which record, who created that record) and judged by the field's spec.
//!
//! Where an operation lands comes from the objects it targets. An object id names the
//! operation that created it, so an object created since the gate last saw the document
//! materialized is found in [`DocRules::objects`] (kept from the changes themselves), an older
//! one through the document (`Automerge::parents`). A record's author is the user its creating
//! actor is bound to, which the creating change must also have written into its author field.
//!
//! - `state.rs`: [`DocRules`], what the gate keeps per document, and where an object sits
//!   (`place`); `Ctx`, the context of one change's check.
//! - `kind.rs`: the kind a change writes at the root (as a string, or as text).
//! - `check.rs`: [`check`], the kind a change is judged by, each operation placed and judged,
//!   and what must hold at the change's end.
//! - `root.rs`: root fields, and operations inside a root field's object.
//! - `collection.rs`: collections of entries and records (keys, authors, record fields).
//! - `allow.rs`: type checks, and who is allowed.

mod allow;
mod check;
mod collection;
mod kind;
mod root;
mod state;

pub(crate) use check::{check, MessageMade};
pub(crate) use state::{DocRules, Writer};
