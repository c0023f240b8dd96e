//! The sync path: the changes inside a peer's `Sync` message, and one round of Automerge's
//! sync protocol with that peer.
//!
//! With lazy folding (the relay), received changes with at least
//! [`EngineConfig::inline_apply_ops`](super::EngineConfig::inline_apply_ops) operations are
//! never applied here: they are stored and forwarded like fast-path changes, the document goes
//! stale, and the rest of the sync message runs once a reload (which the driver runs off its
//! thread) has applied them.

use automerge::sync::{self, SyncDoc};
use automerge::ChangeHash;
use bytes::Bytes;

use super::docs::{knows, sorted};
use super::receive::{advance_heads, gate_and_observe, gate_changes, over_doc_bytes, Gated};
use super::stall::{fresh_state, names_unknown};
use super::{
    raw_of, ConnId, Deferred, Engine, EngineError, Origin, Output, PersistEffect, Rejection, Slot,
    Write, MAX_QUEUED_WHILE_LOADING,
};

use crate::check::{CheckedChange, WholeDocument};
use crate::doc::{DocError, Document};
use crate::hash::HashSet;
use crate::DocId;

impl Engine {
    pub(super) fn on_sync(
        &mut self,
        conn: ConnId,
        doc: DocId,
        reset: bool,
        msg: Box<sync::Message>,
        checked: Vec<CheckedChange>,
        whole: Option<Box<WholeDocument>>,
    ) -> Result<(), EngineError> {
        let checked = match whole {
            None => checked,
            Some(whole) => {
                let Some(whole) = self.take_whole(conn, doc, *whole) else {
                    self.sync_round(conn, doc, reset, *msg, Vec::new(), true)?;
                    // Automerge did not see the snapshot arrive: what it would have recorded
                    // (the peer's heads are shared now, and ours are news to the peer, which
                    // waits to hear them).
                    if let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) {
                        if let Some(pd) = ds.peers.get_mut(&conn) {
                            pd.sync.shared_heads = ds.heads.clone();
                            pd.sync.last_sent_heads.clear();
                        }
                    }
                    self.pump(doc, conn);
                    return Ok(());
                };
                // The document cannot be taken whole: its changes, checked one by one.
                match whole.into_changes(&self.cfg.limits) {
                    Ok(changes) => changes,
                    Err(error) if error.is_limit() => {
                        self.out.push_back(Output::Rejected {
                            conn,
                            doc,
                            reason: Rejection::Limit(error),
                        });
                        return Ok(());
                    }
                    Err(error) => return Err(EngineError::Check(error)),
                }
            }
        };
        if self.cfg.lazy_fold
            && checked.iter().map(CheckedChange::ops).sum::<usize>() >= self.cfg.inline_apply_ops
        {
            return self.on_heavy_sync(conn, doc, reset, msg, checked);
        }
        let carried = !checked.is_empty();
        self.sync_round(conn, doc, reset, *msg, checked, carried)
    }

    /// A document chunk a peer sent (what Automerge sends a peer that lacks most of a
    /// document) becomes the document when it holds nothing yet: loaded once (by the check),
    /// stored as the compressed snapshot it is, no change extracted, applied or stored one by
    /// one. Only where that is all the chunk's changes would have done: an empty document with
    /// nothing pending, a peer whose changes are taken and that no gate checks, no other live
    /// peer to forward them to, within `max_doc_bytes`. `Some` hands the chunk back otherwise.
    fn take_whole(
        &mut self,
        conn: ConnId,
        doc: DocId,
        whole: WholeDocument,
    ) -> Option<WholeDocument> {
        let max_doc_bytes = self.cfg.max_doc_bytes;
        let checked = self.gate.as_ref().is_some_and(|g| g.checks(conn));
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return Some(whole);
        };
        let empty = ds.heads.is_empty()
            && ds.pending.is_empty()
            && !ds.stale
            && ds.doc.automerge().get_heads().is_empty()
            && !ds.doc.has_queued_changes();
        let accepts = ds.peers.get(&conn).is_some_and(|pd| pd.opts.accept_changes);
        let forward = ds
            .peers
            .iter()
            .any(|(c, p)| *c != conn && p.live && p.opts.send_changes);
        let fits = ds.stored_bytes.saturating_add(whole.raw.len() as u64) <= max_doc_bytes;
        if !empty || !accepts || checked || forward || !fits {
            return Some(whole);
        }
        ds.doc = Document::from_automerge(whole.document);
        ds.heads = ds.doc.heads();
        if let Some(g) = self.gate.as_mut() {
            g.materialized(doc, &ds.doc);
        }
        self.persist_write(
            doc,
            Write::Changes(Vec::from(whole.raw)),
            PersistEffect::Changes {
                origin: Origin::Remote(conn),
                raw: Vec::new(),
                via_fast_path: false,
            },
        );
        None
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
        self.sync_round(conn, doc, reset, msg, Vec::new(), true)?;
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
                    return self.sync_round(conn, doc, reset, *msg, Vec::new(), true);
                }
                return Ok(());
            }
            let mut gated = gate_and_observe(self.gate.as_deref_mut(), doc, conn, ds, new);
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
            if gated.dropped {
                self.ask_to_resend(doc, conn);
            }
            self.store_unapplied(conn, doc, gated.accepted);
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

    /// Accepted changes too heavy to apply here wait in memory like fast-path changes while
    /// they are persisted, and the document goes stale: the reload applies them.
    fn store_unapplied(&mut self, conn: ConnId, doc: DocId, new: Vec<CheckedChange>) {
        let now = self.now;
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
        };
        let mut raw = Vec::with_capacity(new.len());
        let mut hashes = Vec::with_capacity(new.len());
        for CheckedChange {
            change, raw: bytes, ..
        } in new
        {
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

    /// One round of the sync protocol with `conn`: `checked` are the message's changes.
    fn sync_round(
        &mut self,
        conn: ConnId,
        doc: DocId,
        reset: bool,
        msg: sync::Message,
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
            // The peer started afresh: whatever we sent it before may be lost.
            pd.whole_sent = false;
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
        let Some(before) = self.receive_round(conn, doc, reset, msg, to_apply, carried_changes)?
        else {
            return Ok(());
        };
        if gated.dropped {
            self.ask_to_resend(doc, conn);
        }
        if let Some(reason) = rejected {
            self.out.push_back(Output::Rejected { conn, doc, reason });
        }
        let stored = !chunk_bytes.is_empty();
        self.store_round(conn, doc, &before, chunk_bytes);
        self.pump(doc, conn);
        if stored && self.cfg.forward_before_durable {
            self.forward_ahead(doc, conn);
        }
        Ok(())
    }

    /// Queues a pump, ahead of the write in flight, for each sync-only peer of `doc` other
    /// than `from` (see [`EngineConfig::forward_before_durable`](super::EngineConfig)).
    fn forward_ahead(&mut self, doc: DocId, from: ConnId) {
        let Some(Slot::Ready(ds)) = self.docs.get(&doc) else {
            return;
        };
        let sync_only = &self.sync_only;
        let due = ds
            .peers
            .keys()
            .filter(|c| **c != from && sync_only.contains(c))
            .map(|&conn| super::due::DuePump {
                doc,
                conn,
                ahead: true,
            });
        self.due_pumps.extend(due);
    }

    /// Automerge receives the message with the changes it may take (`to_apply`); the peer's
    /// progress (or a stall) is recorded. Returns the document's heads from before, `None` when
    /// the document is not in memory.
    fn receive_round(
        &mut self,
        conn: ConnId,
        doc: DocId,
        reset: bool,
        mut msg: sync::Message,
        to_apply: Vec<CheckedChange>,
        carried_changes: bool,
    ) -> Result<Option<Vec<ChangeHash>>, EngineError> {
        let now = self.now;
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return Ok(None);
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
        // Automerge takes a message without changes whose heads equal ours for proof that the
        // peer heard our heads, and would then never send them. An answer of ours that waits
        // for what it announces to be durable has not reached the peer yet: it waits for it,
        // and without this the exchange stalls until a resync. (Only then: Automerge's own
        // bookkeeping of what was sent is also cleared when a peer says it holds nothing, after
        // which an echo of our heads does prove the peer has them.)
        let owed = (pd.answer_held
            && pd.sync.last_sent_heads != before
            && to_apply.is_empty()
            && msg.heads == before)
            .then(|| pd.sync.last_sent_heads.clone());
        ds.doc
            .automerge_mut()
            .receive_sync_message(&mut pd.sync, msg)
            .map_err(|source| {
                EngineError::Doc(DocError::Apply {
                    source: Box::new(source),
                })
            })?;
        if let Some(sent) = owed {
            pd.sync.last_sent_heads = sent;
        }
        let their_heads = pd.sync.their_heads.clone().map(sorted);
        if carried_changes || their_heads != pd.their_heads || reset {
            pd.last_progress = now;
            pd.stalls = 0;
        } else {
            pd.stalls += 1;
        }
        pd.their_heads = their_heads;
        pd.unanswered = None;
        let lacking = ds.peers.get(&conn).is_some_and(|pd| names_unknown(ds, pd));
        let Some(pd) = ds.peers.get_mut(&conn) else {
            return Ok(None);
        };
        if !lacking {
            pd.lacking_since = None;
            pd.withheld_resyncs = 0;
        } else if pd.lacking_since.is_none() {
            pd.lacking_since = Some(now);
        }
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
        Ok(Some(before))
    }

    /// What the round brought is stored: `chunk_bytes`, the accepted changes as they arrived,
    /// and, when the document's heads moved, what entered it since `before`, to forward to
    /// live peers once durable.
    fn store_round(
        &mut self,
        conn: ConnId,
        doc: DocId,
        before: &[ChangeHash],
        chunk_bytes: Vec<u8>,
    ) {
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
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
                ds.doc.changes_since(before)
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
    }
}
