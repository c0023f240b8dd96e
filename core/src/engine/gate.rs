//! Gates: what decides, change by change, whether a peer may write what it sent.
//!
//! The engine checks that a change parses and fits the limits ([`crate::check`]); whether its
//! writer may make it (who wrote it, what the document's kind allows) is a gate's call. A
//! driver installs one with [`super::Engine::set_gate`]: the relay checks every connection, a
//! device only its direct peers. The engine hands the gate each change that is new to the
//! document, in causal order, once every change it depends on is in the document or was just
//! accepted; a refused change takes every change that depends on it with it, and nothing of
//! them is stored or forwarded.
//!
//! A gate keeps what it needs per document (who owns which object, which actor is whose): it
//! builds it when the engine first holds the document ([`Gate::opened`], with the document and
//! the records the gate asked to keep), follows every change that enters the document
//! ([`Gate::check`] when accepted, [`Gate::observe`] for changes nobody checks: local writes,
//! peers trusted by the driver), and drops it when the document leaves memory.

use automerge::Change;

use super::types::ConnId;
use crate::check::CheckedChange;
use crate::{DocId, Document};

/// A gate's verdict on an accepted change: records it wants kept with the document (written
/// before the change, in the same store, and handed back to [`Gate::opened`] on the next
/// load).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Records to keep: key and value, both the gate's own format.
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Decides which changes a peer may make. See the module docs.
pub trait Gate: Send {
    /// Whether changes from `conn` are checked at all (unchecked ones are observed).
    fn checks(&self, conn: ConnId) -> bool;

    /// The engine holds `doc` for the first time since it was last closed: `records` are those
    /// the gate asked to keep for it (see [`Accepted`]).
    fn opened(&mut self, doc: DocId, document: &Document, records: &[(Vec<u8>, Vec<u8>)]);

    /// `change` from `conn`, whose dependencies are all in the document or were accepted by
    /// this gate (expanded ahead when large: [`CheckedChange::expanded`]). `document` is the engine's copy, which may lack changes the gate accepted or
    /// observed since it last saw it materialized ([`Gate::materialized`]). `Ok`: accepted, and
    /// the gate counts it in; `Err`: refused, with a sentence naming the rule.
    fn check(
        &mut self,
        doc: DocId,
        conn: ConnId,
        change: &CheckedChange,
        document: &Document,
    ) -> Result<Accepted, String>;

    /// The engine's copy of `doc` now holds every change the gate accepted or observed.
    fn materialized(&mut self, doc: DocId, document: &Document) {
        let _ = (doc, document);
    }

    /// `change` entered the document unchecked: made here (`from` is `None`), or from a
    /// connection not checked (or released by Automerge once its dependencies arrived).
    fn observe(&mut self, doc: DocId, change: &Change, from: Option<ConnId>);

    /// `doc` left memory.
    fn closed(&mut self, doc: DocId);

    /// Whether what the gate keeps for `doc` since it last saw it materialized has grown past
    /// its bound: the engine then reloads a stale document so the gate can let go of it.
    fn wants_materialized(&self, doc: DocId) -> bool {
        let _ = doc;
        false
    }

    /// Gives back the memory of documents that left (see [`Engine::shrink`](super::Engine::shrink)).
    fn shrink(&mut self) {}

    /// The gate itself, for a driver that installed it to tell it things (who is behind a
    /// connection) through its own type.
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}
