//! Changes a peer sends: checked, filtered to what is new, refused or accepted, then stored.
//!
//! Both paths (`Changes` on the fast path, the changes inside a `Sync` message) go through
//! [`check_message`] before anything else sees them: what does not parse closes the peer
//! (`EngineError::Check`), what is over a limit is refused (`Output::Rejected`) and nothing
//! of it is stored, applied or forwarded. What is stored is the checked changes' canonical
//! bytes, never the bytes as received. Checking is pure, so a driver may run it off its event
//! loop and hand the engine the result ([`Engine::handle_inbound`]).
//!
//! With lazy folding (the relay), received changes with at least
//! [`EngineConfig::inline_apply_ops`] operations are never applied here: they are stored and
//! forwarded like fast-path changes, the document goes stale, and the rest of the sync message
//! runs once a reload (which the driver runs off its thread) has applied them.

use automerge::sync::{self, SyncDoc};
use automerge::ChangeHash;
use bytes::Bytes;

use super::*;
use crate::check::{self, CheckError, CheckedChange, Limits};

/// A peer's document message, its changes checked (see [`check_message`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum Inbound {
    /// A sync-protocol message.
    Sync {
        /// The document.
        doc: DocId,
        /// The sender restarted its sync state.
        reset: bool,
        /// The message, without its changes.
        msg: Box<sync::Message>,
        /// The changes it carried, checked.
        changes: Vec<CheckedChange>,
    },
    /// Fast-path changes.
    Changes {
        /// The document.
        doc: DocId,
        /// The changes, checked.
        changes: Vec<CheckedChange>,
    },
    /// The sender holds these heads.
    Ack {
        /// The document.
        doc: DocId,
        /// Its heads.
        heads: Vec<ChangeHash>,
    },
    /// The message's changes are over a limit: refused, nothing of them kept.
    Refused {
        /// The document.
        doc: DocId,
        /// Which limit.
        error: CheckError,
    },
}

impl Inbound {
    /// The document the message is about.
    pub fn doc(&self) -> DocId {
        match self {
            Inbound::Sync { doc, .. }
            | Inbound::Changes { doc, .. }
            | Inbound::Ack { doc, .. }
            | Inbound::Refused { doc, .. } => *doc,
        }
    }

    /// Operations in the changes it carries.
    pub fn ops(&self) -> usize {
        match self {
            Inbound::Sync { changes, .. } | Inbound::Changes { changes, .. } => {
                changes.iter().map(CheckedChange::ops).sum()
            }
            _ => 0,
        }
    }
}

/// Checks the changes of a document message (`Sync`, `Changes` or `Ack`) against `limits`.
/// Pure and as costly as parsing the changes (linear in their operations): a driver may run it
/// off its event loop. `Err` for anything malformed (the peer misbehaved); a change over a
/// limit is `Ok(Inbound::Refused)`.
pub fn check_message(msg: Message, limits: &Limits) -> Result<Inbound, EngineError> {
    match msg {
        Message::Sync { doc, reset, data } => {
            let mut msg =
                sync::Message::decode(&data).map_err(|e| EngineError::BadSyncMessage {
                    reason: e.to_string(),
                })?;
            let mut changes = Vec::new();
            let mut inflated = 0;
            for chunk in msg.changes.iter() {
                if let Err(e) = check::check_chunks(chunk, limits, &mut inflated, &mut changes) {
                    return refused(doc, e);
                }
            }
            msg.changes = Vec::<Vec<u8>>::new().into();
            Ok(Inbound::Sync {
                doc,
                reset,
                msg: Box::new(msg),
                changes,
            })
        }
        Message::Changes { doc, changes } => {
            let mut checked = Vec::with_capacity(changes.len());
            for raw in changes {
                match check::check_change(raw, limits) {
                    Ok(c) => checked.push(c),
                    Err(e) => return refused(doc, e),
                }
            }
            Ok(Inbound::Changes {
                doc,
                changes: checked,
            })
        }
        Message::Ack { doc, heads } => Ok(Inbound::Ack { doc, heads }),
        _ => Err(EngineError::NotSyncMessage),
    }
}

fn refused(doc: DocId, error: CheckError) -> Result<Inbound, EngineError> {
    if error.is_limit() {
        Ok(Inbound::Refused { doc, error })
    } else {
        Err(EngineError::Check(error))
    }
}

impl Engine {
    /// Writes a gate record (before the changes it came with) and tells the driver.
    fn record(&mut self, doc: DocId, key: Vec<u8>, value: Vec<u8>) {
        self.out.push_back(Output::GateRecord {
            doc,
            key: key.clone(),
            value: value.clone(),
        });
        self.persist_write(doc, Write::GateRecord { key, value }, PersistEffect::None);
    }

    pub(super) fn on_sync(
        &mut self,
        conn: ConnId,
        doc: DocId,
        reset: bool,
        msg: Box<sync::Message>,
        checked: Vec<CheckedChange>,
    ) -> Result<(), EngineError> {
        if self.cfg.lazy_fold
            && checked.iter().map(CheckedChange::ops).sum::<usize>() >= self.cfg.inline_apply_ops
        {
            return self.on_heavy_sync(conn, doc, reset, msg, checked);
        }
        let carried = !checked.is_empty();
        self.sync_round(conn, doc, reset, msg, checked, carried)
    }

    /// Runs the rest of a sync message whose changes [`Self::on_heavy_sync`] stored without
    /// applying, once the reload has applied them.
    pub(super) fn sync_after_reload(
        &mut self,
        conn: ConnId,
        doc: DocId,
        reset: bool,
        msg: sync::Message,
    ) -> Result<(), EngineError> {
        self.sync_round(conn, doc, reset, Box::new(msg), Vec::new(), true)?;
        // Told nothing new, Automerge takes equal heads for "we already said so" and would
        // never answer: the sender still waits to hear that its changes arrived. The round
        // may have found the peer synced and made it live, and a pump sends a live peer
        // nothing: it is not live until it has heard this answer.
        if let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) {
            if let Some(pd) = ds.peers.get_mut(&conn) {
                pd.sync.last_sent_heads.clear();
                pd.live = false;
            }
        }
        self.pump(doc, conn);
        Ok(())
    }

    /// A sync message whose changes hold too many operations to apply on the driver's thread:
    /// they are handled like fast-path changes (refused, or stored and forwarded once durable),
    /// the document goes stale, and the rest of the message waits for the reload that applies
    /// them off the driver's thread.
    fn on_heavy_sync(
        &mut self,
        conn: ConnId,
        doc: DocId,
        reset: bool,
        msg: Box<sync::Message>,
        checked: Vec<CheckedChange>,
    ) -> Result<(), EngineError> {
        let now = self.now;
        let max_doc_bytes = self.cfg.max_doc_bytes;
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return Ok(());
        };
        ds.last_used = now;
        let Some(pd) = ds.peers.get_mut(&conn) else {
            return Err(EngineError::NotOpen { doc });
        };
        pd.last_progress = now;
        pd.live = false;
        let accepts = pd.opts.accept_changes;
        let mut seen = HashSet::default();
        let new: Vec<CheckedChange> = checked
            .into_iter()
            .filter(|c| {
                let h = c.change.hash();
                !knows(ds, &h) && seen.insert(h)
            })
            .collect();
        if !new.is_empty() {
            let reason = if !accepts {
                Some(Rejection::ReadOnly)
            } else {
                over_doc_bytes(ds.stored_bytes, &new, max_doc_bytes)
            };
            if let Some(reason) = reason {
                // Nothing stored; the rest of the message is an ordinary sync round.
                let read_only = reason == Rejection::ReadOnly;
                self.out.push_back(Output::Rejected { conn, doc, reason });
                if read_only {
                    return self.sync_round(conn, doc, reset, msg, Vec::new(), true);
                }
                return Ok(());
            }
            let checked_here = self.gate.as_ref().is_some_and(|g| g.checks(conn));
            let mut gated = gate_changes(self.gate.as_deref_mut(), doc, conn, ds, new);
            if !checked_here {
                if let Some(g) = self.gate.as_mut() {
                    for c in &gated.accepted {
                        g.observe(doc, &c.change, Some(conn));
                    }
                }
            }
            if let Some(reason) = gated.refusal.take() {
                self.out.push_back(Output::Rejected {
                    conn,
                    doc,
                    reason: Rejection::Rule(reason),
                });
            }
            for (key, value) in std::mem::take(&mut gated.records) {
                self.record(doc, key, value);
            }
            let new = gated.accepted;
            let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
                return Ok(());
            };
            let mut raw = Vec::with_capacity(new.len());
            let mut hashes = Vec::with_capacity(new.len());
            for CheckedChange { change, raw: bytes } in new {
                raw.push(bytes);
                // Heads move only for changes whose dependencies are here; the others wait in
                // the store, as Automerge would hold them back, until the reload.
                if change.deps().iter().all(|d| knows(ds, d)) {
                    advance_heads(&mut ds.heads, &change);
                }
                let hash = change.hash();
                ds.pending_hashes.insert(hash);
                hashes.push(hash);
                ds.pending.push(change);
            }
            ds.pending_since.get_or_insert(now);
            ds.stale = true;
            self.persist_changes(doc, Origin::Remote(conn), raw, false);
            if let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) {
                if let Some(p) = ds.persists.back_mut() {
                    p.pending = hashes;
                }
            }
        }
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return Ok(());
        };
        if ds.deferred.len() < MAX_QUEUED_WHILE_LOADING {
            ds.deferred
                .push(Deferred::SyncAfterReload(conn, reset, msg));
        }
        self.materialize_for(doc, "large changes");
        Ok(())
    }

    /// One round of the sync protocol with `conn`: `checked` are the message's changes.
    fn sync_round(
        &mut self,
        conn: ConnId,
        doc: DocId,
        reset: bool,
        mut msg: Box<sync::Message>,
        checked: Vec<CheckedChange>,
        carried_changes: bool,
    ) -> Result<(), EngineError> {
        let now = self.now;
        self.fold(doc)?;
        let max_doc_bytes = self.cfg.max_doc_bytes;
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return Ok(());
        };
        ds.last_used = now;
        let Some(pd) = ds.peers.get_mut(&conn) else {
            return Err(EngineError::NotOpen { doc });
        };
        if reset {
            pd.sync = fresh_state(&pd.sync);
        }
        pd.live = false;
        pd.save_state = true;
        let accepts = pd.opts.accept_changes;
        // Automerge is handed every change it may take (the canonical bytes, not the received
        // ones), repeats included: whether a message carried changes steers its protocol. Only
        // what is new to us, and accepted, is stored.
        let mut seen = HashSet::default();
        let (known, new): (Vec<CheckedChange>, Vec<CheckedChange>) = checked
            .into_iter()
            .filter(|c| seen.insert(c.change.hash()))
            .partition(|c| ds.doc.has_change(&c.change.hash()));
        let mut rejected = None;
        let mut to_apply = known;
        let mut gated = Gated::default();
        if !new.is_empty() {
            if !accepts {
                // Automerge applies nothing for a read-only state; nothing is stored either.
                rejected = Some(Rejection::ReadOnly);
                to_apply.extend(new);
            } else if let Some(r) = over_doc_bytes(ds.stored_bytes, &new, max_doc_bytes) {
                self.out.push_back(Output::Rejected {
                    conn,
                    doc,
                    reason: r,
                });
                return Ok(());
            } else {
                gated = gate_changes(self.gate.as_deref_mut(), doc, conn, ds, new);
                rejected = gated.refusal.take().map(Rejection::Rule);
                to_apply.extend(gated.accepted.iter().cloned());
            }
        }
        let chunk_bytes: Vec<u8> = gated
            .accepted
            .iter()
            .flat_map(|c| c.raw.iter().copied())
            .collect();
        for (key, value) in std::mem::take(&mut gated.records) {
            self.record(doc, key, value);
        }
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return Ok(());
        };
        let Some(pd) = ds.peers.get_mut(&conn) else {
            return Err(EngineError::NotOpen { doc });
        };
        msg.changes = to_apply
            .iter()
            .map(|c| c.raw.to_vec())
            .collect::<Vec<Vec<u8>>>()
            .into();
        let before = ds.doc.automerge().get_heads();
        ds.doc
            .automerge_mut()
            .receive_sync_message(&mut pd.sync, *msg)
            .map_err(|source| {
                EngineError::Doc(DocError::Apply {
                    source: Box::new(source),
                })
            })?;
        let their_heads = pd.sync.their_heads.clone().map(sorted);
        if carried_changes || their_heads != pd.their_heads || reset {
            pd.last_progress = now;
            pd.stalls = 0;
        } else {
            pd.stalls += 1;
        }
        pd.their_heads = their_heads;
        // A peer that takes nothing from us (read-only for us) and whose heads we all hold
        // while ours differ will never converge with us: the driver decides what to do.
        let unaccepted = !pd.reported_unaccepted
            && pd.sync.is_peer_read_only()
            && pd.their_heads.as_ref().is_some_and(|theirs| {
                theirs.iter().all(|h| ds.doc.has_change(h)) && *theirs != sorted(ds.doc.heads())
            });
        if unaccepted {
            pd.reported_unaccepted = true;
            self.out.push_back(Output::Unaccepted { conn, doc });
        }
        if let Some(reason) = rejected {
            self.out.push_back(Output::Rejected { conn, doc, reason });
        }
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return Ok(());
        };
        let heads = ds.doc.heads();
        if heads != ds.heads {
            ds.heads = heads;
            // Individual changes are needed only to forward them to live peers, and to show a
            // gate what entered the document unchecked (Automerge may have released changes it
            // held back).
            let forward = ds
                .peers
                .iter()
                .any(|(c, p)| *c != conn && p.live && p.opts.send_changes);
            let unchecked = self.gate.as_ref().is_some_and(|g| !g.checks(conn));
            let entered = if forward || unchecked {
                ds.doc.changes_since(&before)
            } else {
                Vec::new()
            };
            if unchecked {
                if let Some(g) = self.gate.as_mut() {
                    for c in &entered {
                        g.observe(doc, c, Some(conn));
                    }
                }
            }
            let raw: Vec<Bytes> = if forward {
                entered.iter().map(|c| raw_of(c, None)).collect()
            } else {
                Vec::new()
            };
            let effect = PersistEffect::Changes {
                origin: Origin::Remote(conn),
                raw,
                via_fast_path: false,
            };
            // The checked changes are stored as they arrive, including changes Automerge holds
            // back until their dependencies arrive: extracting the new changes back out of the
            // document would cost milliseconds per thousand changes.
            self.persist_write(doc, Write::Changes(chunk_bytes), effect);
        } else if !chunk_bytes.is_empty() {
            self.persist_write(doc, Write::Changes(chunk_bytes), PersistEffect::None);
        }
        self.pump(doc, conn);
        Ok(())
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
        let mut new = Vec::new();
        let mut batch_hashes = HashSet::default();
        let mut missing = false;
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
                missing = true;
                break;
            }
            batch_hashes.insert(hash);
            new.push(c);
        }
        if missing {
            // Something was lost or reordered on the way: fall back to a sync round, which
            // brings these changes and whatever they depend on.
            self.resync(doc, conn);
            return Ok(());
        }
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
        let checked_here = self.gate.as_ref().is_some_and(|g| g.checks(conn));
        let mut gated = gate_changes(self.gate.as_deref_mut(), doc, conn, ds, new);
        if !checked_here {
            if let Some(g) = self.gate.as_mut() {
                for c in &gated.accepted {
                    g.observe(doc, &c.change, Some(conn));
                }
            }
        }
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
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return Ok(());
        };
        if let Some(pd) = ds.peers.get_mut(&conn) {
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
        for CheckedChange { change, raw: bytes } in new {
            // The checked bytes are forwarded and stored without a copy.
            raw.push(bytes);
            advance_heads(&mut ds.heads, &change);
            let hash = change.hash();
            ds.pending_hashes.insert(hash);
            hashes.push(hash);
            ds.pending.push(change);
        }
        ds.pending_since.get_or_insert(now);
        self.persist_changes(doc, Origin::Remote(conn), raw, true);
        if let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) {
            if let Some(p) = ds.persists.back_mut() {
                p.pending = hashes;
            }
        }
        Ok(())
    }
}

/// A refusal when storing `new` would take the document past `max` stored bytes.
fn over_doc_bytes<C: std::borrow::Borrow<CheckedChange>>(
    stored: u64,
    new: &[C],
    max: u64,
) -> Option<Rejection> {
    let adding: u64 = new.iter().map(|c| c.borrow().raw.len() as u64).sum();
    (stored.saturating_add(adding) > max).then_some(Rejection::DocumentFull { limit: max })
}

/// What a gate made of a peer's new changes.
#[derive(Default)]
struct Gated {
    /// In causal order.
    accepted: Vec<CheckedChange>,
    /// Records the gate keeps, to write before the changes.
    records: Vec<(Vec<u8>, Vec<u8>)>,
    /// The first refusal, if any.
    refusal: Option<String>,
}

/// Runs `gate` over `new` (changes from `conn` new to the document). Without a gate, or for a
/// connection it does not check, every change is accepted as it is. Otherwise changes are
/// taken in causal order: one whose dependencies are all in the document or accepted is put
/// to the gate, one that depends on a refused change is refused with it, and one whose
/// dependencies never arrive is dropped (not stored; the sync protocol asks again).
fn gate_changes(
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
            match gate.check(doc, conn, &c.change, &ds.doc) {
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
    }
    out
}
