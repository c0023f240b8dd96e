//! Changes a peer sends: filtered to what is new, refused or accepted, then stored.
//!
//! A peer's document message arrives checked ([`check_message`]): [`Engine::handle_inbound`]
//! routes it to its document (queued while the document loads, deferred while a stale one
//! reloads) and to its path: `Changes` on the fast path here, the changes inside a `Sync`
//! message on the sync path (`sync_path.rs`), an `Ack` to the peer's state. Both receive paths
//! store only the checked changes' canonical bytes, never the bytes as received, and only those
//! new to the document; what is read-only, past `max_doc_bytes` or refused by the gate is
//! refused (`Output::Rejected`).

use automerge::{Change, ChangeHash};

use super::docs::knows;
use super::{
    ConnId, Deferred, DocState, Engine, EngineError, Gate, Inbound, Message, Origin, Output,
    PersistEffect, Queued, Rejection, Slot, Write, MAX_QUEUED_WHILE_LOADING,
};
use crate::check::CheckedChange;
use crate::hash::HashSet;
use crate::DocId;

impl Engine {
    /// Handles a document message whose changes were checked already
    /// ([`check_message`](super::check_message), with this engine's
    /// [`EngineConfig::limits`](super::EngineConfig::limits)): a driver may check large messages
    /// off its event loop.
    ///
    /// An `Err` means the peer misbehaved for this document; the driver should close it.
    pub fn handle_inbound(&mut self, conn: ConnId, msg: Inbound) -> Result<(), EngineError> {
        self.run_due_pumps();
        let doc = msg.doc();
        self.touched.insert(doc);
        let open = self
            .conns
            .get(&conn)
            .ok_or(EngineError::UnknownConn(conn))?
            .contains(&doc);
        if !open {
            return Err(EngineError::NotOpen { doc });
        }
        if matches!(msg, Inbound::Sync { .. }) {
            self.shed_heavy(doc);
        }
        match self.docs.get_mut(&doc) {
            Some(Slot::Loading(q)) => {
                // Bounded: past the cap a message is dropped, which the protocol repairs (a
                // missing change is asked for again once the document is loaded).
                if q.len() < MAX_QUEUED_WHILE_LOADING {
                    q.push(Queued::Msg(conn, msg));
                }
                return Ok(());
            }
            Some(Slot::Ready(ds)) if ds.stale && matches!(msg, Inbound::Sync { .. }) => {
                // A sync round needs the materialized document.
                if ds.deferred.len() < MAX_QUEUED_WHILE_LOADING {
                    ds.deferred.push(Deferred::Msg(conn, msg));
                }
                self.materialize_for(doc, "sync");
                return Ok(());
            }
            Some(Slot::Ready(_)) => {}
            None => return Err(EngineError::NotOpen { doc }),
        }
        let result = match msg {
            Inbound::Sync {
                reset,
                msg,
                changes,
                whole,
                ..
            } => self.on_sync(conn, doc, reset, msg, changes, whole),
            Inbound::Changes { changes, .. } => self.on_changes(conn, doc, changes),
            Inbound::Ack { heads, .. } => {
                self.on_ack(conn, doc, heads);
                Ok(())
            }
            Inbound::Refused { error, .. } => {
                self.out.push_back(Output::Rejected {
                    conn,
                    doc,
                    reason: Rejection::Limit(error),
                });
                Ok(())
            }
        };
        self.after_input(doc);
        result
    }

    /// Writes a gate record (before the changes it came with) and tells the driver.
    pub(super) fn record(&mut self, doc: DocId, key: Vec<u8>, value: Vec<u8>) {
        self.out.push_back(Output::GateRecord {
            doc,
            key: key.clone(),
            value: value.clone(),
        });
        self.persist_write(doc, Write::GateRecord { key, value }, PersistEffect::None);
    }

    pub(super) fn on_changes(
        &mut self,
        conn: ConnId,
        doc: DocId,
        parsed: Vec<CheckedChange>,
    ) -> Result<(), EngineError> {
        let now = self.now;
        let max_doc_bytes = self.cfg.max_doc_bytes;
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return Ok(());
        };
        let Some(pd) = ds.peers.get_mut(&conn) else {
            return Err(EngineError::NotOpen { doc });
        };
        pd.last_progress = now;
        if !pd.opts.accept_changes {
            self.out.push_back(Output::Rejected {
                conn,
                doc,
                reason: Rejection::ReadOnly,
            });
            return Ok(());
        }
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return Ok(());
        };
        ds.last_used = now;
        let Some(new) = new_changes(ds, parsed) else {
            // Something was lost or reordered on the way: fall back to a sync round, which
            // brings these changes and whatever they depend on.
            self.resync(doc, conn);
            return Ok(());
        };
        if new.is_empty() {
            // Duplicates only: the peer still deserves an ack so it knows we have them.
            let heads = ds.durable_heads.clone();
            self.out.push_back(Output::Send {
                conn,
                msg: Message::Ack { doc, heads },
            });
            return Ok(());
        }
        if let Some(reason) = over_doc_bytes(ds.stored_bytes, &new, max_doc_bytes) {
            self.out.push_back(Output::Rejected { conn, doc, reason });
            return Ok(());
        }
        let mut gated = gate_and_observe(self.gate.as_deref_mut(), doc, conn, ds, new);
        let refusal = gated.refusal.take().map(Rejection::Rule);
        let new = std::mem::take(&mut gated.accepted);
        for (key, value) in std::mem::take(&mut gated.records) {
            self.record(doc, key, value);
        }
        if let Some(reason) = refusal {
            self.out.push_back(Output::Rejected { conn, doc, reason });
        }
        if new.is_empty() {
            return Ok(());
        }
        self.store_fast_path(Some(conn), doc, new, None);
        self.materialize_for_gate(doc);
        Ok(())
    }

    /// The gate keeps what it follows until it sees the document materialized: fold what
    /// waits in memory, or, for a document every peer follows live (which stays stale for as
    /// long as it is written), reload it.
    fn materialize_for_gate(&mut self, doc: DocId) {
        if self
            .gate
            .as_ref()
            .is_some_and(|g| g.wants_materialized(doc))
        {
            self.fold_or_drop(doc);
            self.materialize_for(doc, "gate");
        }
    }

    /// Changes another node accepted and vouches for (a relay of the same cluster, whose log
    /// holds them): they join `doc` as a peer's fast-path changes do, waiting in memory to be
    /// folded (no Automerge work here), persisted as this node's own ([`Origin::Local`]) and
    /// then sent to every live peer. No gate judges them (the accepting node did); the gate
    /// observes them. `stored` is the chunk the driver has already written them to its store
    /// in (the node's copy of the log entry): it is not written again ([`Write::Stored`]).
    /// `Ok(None)`: one depends on a change the document lacks, and nothing was done (try again
    /// once the rest came, or apply them with [`Engine::change`], which Automerge holds until
    /// the rest comes); `Ok(Some(n))`: `n` of them were new.
    pub fn import(
        &mut self,
        doc: DocId,
        checked: Vec<CheckedChange>,
        stored: Vec<u8>,
    ) -> Result<Option<usize>, EngineError> {
        self.run_due_pumps();
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return Err(EngineError::NotLoaded { doc });
        };
        ds.last_used = self.now;
        let Some(new) = new_changes(ds, checked) else {
            return Ok(None);
        };
        let n = new.len();
        if n == 0 {
            return Ok(Some(0));
        }
        if let Some(g) = self.gate.as_mut() {
            for c in &new {
                g.observe(doc, &c.change, None);
            }
        }
        self.store_fast_path(None, doc, new, Some(stored));
        self.materialize_for_gate(doc);
        Ok(Some(n))
    }

    /// Accepted fast-path changes: the sender's heads advance with them, and they wait in
    /// memory (`pending`) to be folded while they are persisted. `conn` is the sender (`None`:
    /// imported, this node's own from then on, and `stored` the chunk the driver holds them
    /// in).
    fn store_fast_path(
        &mut self,
        conn: Option<ConnId>,
        doc: DocId,
        new: Vec<CheckedChange>,
        stored: Option<Vec<u8>>,
    ) {
        let now = self.now;
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
        };
        if let Some(pd) = conn.and_then(|conn| ds.peers.get_mut(&conn)) {
            // The sender has what it sent: its heads advance like ours.
            if let Some(theirs) = pd.their_heads.as_mut() {
                for c in &new {
                    advance_heads(theirs, &c.change);
                }
                pd.sync.shared_heads = theirs.clone();
            }
        }
        let mut raw = Vec::with_capacity(new.len());
        let mut hashes = Vec::with_capacity(new.len());
        for CheckedChange {
            change, raw: bytes, ..
        } in new
        {
            // The checked bytes are forwarded and stored without a copy.
            raw.push(bytes);
            advance_heads(&mut ds.heads, &change);
            let hash = change.hash();
            ds.pending_hashes.insert(hash);
            hashes.push(hash);
            ds.pending.push(change);
        }
        ds.pending_since.get_or_insert(now);
        let origin = conn.map_or(Origin::Local, Origin::Remote);
        let write = match stored {
            Some(chunk) => Write::Stored(chunk),
            None => Write::Changes(raw.concat()),
        };
        self.persist_changes_as(doc, origin, raw, true, write);
        if let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) {
            if let Some(p) = ds.persists.back_mut() {
                p.pending = hashes;
            }
        }
    }
}

/// A refusal when storing `new` would take the document past `max` stored bytes.
pub(super) fn over_doc_bytes<C: std::borrow::Borrow<CheckedChange>>(
    stored: u64,
    new: &[C],
    max: u64,
) -> Option<Rejection> {
    let adding: u64 = new.iter().map(|c| c.borrow().raw.len() as u64).sum();
    (stored.saturating_add(adding) > max).then_some(Rejection::DocumentFull { limit: max })
}

/// The changes of a fast-path message new to the document, in the order sent; `None` when one
/// depends on a change that neither the document nor the message holds.
fn new_changes(ds: &DocState, parsed: Vec<CheckedChange>) -> Option<Vec<CheckedChange>> {
    let mut new = Vec::new();
    let mut batch_hashes = HashSet::default();
    for c in parsed {
        let hash = c.change.hash();
        if knows(ds, &hash) || batch_hashes.contains(&hash) {
            continue;
        }
        if !c
            .change
            .deps()
            .iter()
            .all(|d| knows(ds, d) || batch_hashes.contains(d))
        {
            return None;
        }
        batch_hashes.insert(hash);
        new.push(c);
    }
    Some(new)
}

/// What a gate made of a peer's new changes.
#[derive(Default)]
pub(super) struct Gated {
    /// In causal order.
    pub(super) accepted: Vec<CheckedChange>,
    /// Records the gate keeps, to write before the changes.
    pub(super) records: Vec<(Vec<u8>, Vec<u8>)>,
    /// The first refusal, if any.
    pub(super) refusal: Option<String>,
    /// Some changes were left out because their dependencies are not here (see
    /// [`gate_changes`]).
    pub(super) dropped: bool,
}

/// [`gate_changes`], then a gate that does not check `conn` is shown the changes accepted
/// from it, so that it still follows every change that enters the document.
pub(super) fn gate_and_observe(
    mut gate: Option<&mut (dyn Gate + 'static)>,
    doc: DocId,
    conn: ConnId,
    ds: &DocState,
    new: Vec<CheckedChange>,
) -> Gated {
    let checked_here = gate.as_ref().is_some_and(|g| g.checks(conn));
    let gated = gate_changes(gate.as_deref_mut(), doc, conn, ds, new);
    if !checked_here {
        if let Some(g) = gate {
            for c in &gated.accepted {
                g.observe(doc, &c.change, Some(conn));
            }
        }
    }
    gated
}

/// Runs `gate` over `new` (changes from `conn` new to the document). Without a gate, or for a
/// connection it does not check, every change is accepted as it is. Otherwise changes are
/// taken in causal order: one whose dependencies are all in the document or accepted is put
/// to the gate, one that depends on a refused change is refused with it, and one whose
/// dependencies never arrive is dropped (not stored, `Gated::dropped`). Its sender counts it
/// as sent and would never offer it again: on the sync path the engine asks it to
/// (`Engine::ask_to_resend`), the fast path resyncs.
pub(super) fn gate_changes(
    gate: Option<&mut (dyn Gate + 'static)>,
    doc: DocId,
    conn: ConnId,
    ds: &DocState,
    new: Vec<CheckedChange>,
) -> Gated {
    let Some(gate) = gate.filter(|g| g.checks(conn)) else {
        return Gated {
            accepted: new,
            ..Default::default()
        };
    };
    let mut out = Gated::default();
    let mut accepted = HashSet::default();
    let mut refused = HashSet::default();
    let mut waiting = new;
    loop {
        let before = waiting.len();
        let mut still = Vec::with_capacity(waiting.len());
        for c in waiting {
            let hash = c.change.hash();
            let deps = c.change.deps();
            if deps.iter().any(|d| refused.contains(d)) {
                refused.insert(hash);
                continue;
            }
            if !deps.iter().all(|d| accepted.contains(d) || knows(ds, d)) {
                still.push(c);
                continue;
            }
            match gate.check(doc, conn, &c, &ds.doc) {
                Ok(a) => {
                    out.records.extend(a.records);
                    accepted.insert(hash);
                    out.accepted.push(c);
                }
                Err(reason) => {
                    tracing::debug!(%doc, conn = conn.0, %reason, "a change was refused");
                    refused.insert(hash);
                    out.refusal.get_or_insert(reason);
                }
            }
        }
        waiting = still;
        if waiting.is_empty() || waiting.len() == before {
            break;
        }
    }
    if !waiting.is_empty() {
        tracing::debug!(%doc, conn = conn.0, dropped = waiting.len(), "changes whose dependencies are missing were not taken");
        out.dropped = true;
    }
    out
}

pub(super) fn advance_heads(heads: &mut Vec<ChangeHash>, change: &Change) {
    heads.retain(|h| !change.deps().contains(h));
    let hash = change.hash();
    if let Err(at) = heads.binary_search(&hash) {
        heads.insert(at, hash);
    }
}
