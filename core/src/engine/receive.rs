//! Changes a peer sends: checked, filtered to what is new, refused or accepted, then stored.
//!
//! Both paths (`Changes` on the fast path, the changes inside a `Sync` message) go through
//! [`crate::check`] before anything else sees them: what does not parse closes the peer
//! (`EngineError::Check`), what is over a limit is refused (`Output::Rejected`) and nothing
//! of it is stored, applied or forwarded. What is stored is the checked changes' canonical
//! bytes, never the bytes as received.

use automerge::sync::{self, SyncDoc};
use bytes::Bytes;

use super::*;
use crate::check::{self, CheckError, CheckedChange};

impl Engine {
    pub(super) fn on_sync(
        &mut self,
        conn: ConnId,
        doc: DocId,
        reset: bool,
        data: &[u8],
    ) -> Result<(), EngineError> {
        let mut msg = sync::Message::decode(data).map_err(|e| EngineError::BadSyncMessage {
            reason: e.to_string(),
        })?;
        let mut checked = Vec::new();
        let mut inflated = 0;
        for chunk in msg.changes.iter() {
            if let Err(e) =
                check::check_chunks(chunk, &self.cfg.limits, &mut inflated, &mut checked)
            {
                return self.refuse_checked(conn, doc, e);
            }
        }
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
        let carried_changes = !checked.is_empty();
        // Automerge is handed every checked change (the canonical bytes, not the received
        // ones), repeats included: whether a message carried changes steers its protocol. Only
        // what is new to us is stored.
        let mut seen = HashSet::default();
        let new: Vec<&CheckedChange> = checked
            .iter()
            .filter(|c| {
                let h = c.change.hash();
                !ds.doc.has_change(&h) && seen.insert(h)
            })
            .collect();
        let mut rejected = None;
        if !new.is_empty() {
            if !pd.opts.accept_changes {
                // Automerge applies nothing for a read-only state; nothing is stored either.
                rejected = Some(Rejection::ReadOnly);
            } else if let Some(r) = over_doc_bytes(ds.stored_bytes, &new, max_doc_bytes) {
                self.out.push_back(Output::Rejected {
                    conn,
                    doc,
                    reason: r,
                });
                return Ok(());
            }
        }
        let chunk_bytes: Vec<u8> = if rejected.is_some() {
            Vec::new()
        } else {
            new.iter().flat_map(|c| c.raw.iter().copied()).collect()
        };
        msg.changes = checked
            .iter()
            .map(|c| c.raw.to_vec())
            .collect::<Vec<Vec<u8>>>()
            .into();
        let before = ds.doc.automerge().get_heads();
        ds.doc
            .automerge_mut()
            .receive_sync_message(&mut pd.sync, msg)
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
            // Individual changes are needed only to forward them to live peers.
            let forward = ds
                .peers
                .iter()
                .any(|(c, p)| *c != conn && p.live && p.opts.send_changes);
            let raw: Vec<Bytes> = if forward {
                ds.doc
                    .changes_since(&before)
                    .iter()
                    .map(|c| raw_of(c, None))
                    .collect()
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
        changes: Vec<Bytes>,
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
        let mut parsed = Vec::with_capacity(changes.len());
        for raw in changes {
            match check::check_change(raw, &self.cfg.limits) {
                Ok(c) => parsed.push(c),
                Err(e) => return self.refuse_checked(conn, doc, e),
            }
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

    /// A peer's changes failed their check: over a limit, they are refused (the peer may act
    /// on the reason); malformed, the peer misbehaved and the driver closes it.
    fn refuse_checked(
        &mut self,
        conn: ConnId,
        doc: DocId,
        error: CheckError,
    ) -> Result<(), EngineError> {
        if error.is_limit() {
            self.out.push_back(Output::Rejected {
                conn,
                doc,
                reason: Rejection::Limit(error),
            });
            Ok(())
        } else {
            Err(EngineError::Check(error))
        }
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
