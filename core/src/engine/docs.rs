//! A document's slot: loading, loaded, failed, created, forgotten, evicted; and what a loaded
//! document knows (its changes and heads).

use std::collections::{BTreeMap, VecDeque};

use automerge::ChangeHash;

use super::{ConnId, DocState, Engine, Millis, Output, Queued, Slot};
use crate::doc::Document;
use crate::hash::HashSet;
use crate::DocId;

impl Engine {
    /// Asks for a document to be loaded (an `Output::Load` unless it is loaded or loading).
    pub fn load(&mut self, doc: DocId) {
        self.run_due_pumps();
        if let std::collections::hash_map::Entry::Vacant(e) = self.docs.entry(doc) {
            e.insert(Slot::Loading(Vec::new()));
            self.out.push_back(Output::Load { doc });
        }
    }

    /// Hands the engine a document it asked for (`None`: the store has none; it starts empty).
    pub fn loaded(&mut self, doc: DocId, loaded: Option<Document>) {
        self.loaded_with(doc, loaded, &[]);
    }

    /// [`Engine::loaded`], with the records the gate asked to keep for the document (see
    /// [`Accepted`](super::Accepted)).
    pub fn loaded_with(
        &mut self,
        doc: DocId,
        loaded: Option<Document>,
        records: &[(Vec<u8>, Vec<u8>)],
    ) {
        self.run_due_pumps();
        self.touched.insert(doc);
        let queue = match self.docs.remove(&doc) {
            Some(Slot::Loading(q)) => q,
            Some(Slot::Ready(ds)) => {
                self.reloaded(doc, ds, loaded);
                return;
            }
            None => Vec::new(),
        };
        let d = loaded.unwrap_or_default();
        if let Some(g) = self.gate.as_mut() {
            g.opened(doc, &d, records);
        }
        let heads = d.heads();
        self.docs.insert(
            doc,
            Slot::Ready(Box::new(DocState {
                doc: d,
                pending: Vec::new(),
                pending_hashes: HashSet::default(),
                pending_since: None,
                durable_heads: heads.clone(),
                heads,
                persists: VecDeque::new(),
                peers: BTreeMap::new(),
                last_used: self.now,
                stale: false,
                recent: HashSet::default(),
                reloading: false,
                deferred: Vec::new(),
                reload_wanted: false,
                stored_bytes: 0,
                whole: None,
                whole_building: false,
            })),
        );
        for q in queue {
            match q {
                Queued::Open(conn, opts) => self.open(conn, doc, opts),
                Queued::Msg(conn, msg) => {
                    if let Err(error) = self.handle_inbound(conn, msg) {
                        self.out
                            .push_back(Output::ProtocolError { conn, doc, error });
                    }
                }
            }
        }
    }

    /// Reports that a document asked for with `Output::Load` could not be loaded. Connections
    /// waiting on it are reported in `Output::Failed` (the driver tells them); a later `open`
    /// tries again.
    pub fn load_failed(&mut self, doc: DocId) {
        self.run_due_pumps();
        if matches!(self.docs.get(&doc), Some(Slot::Ready(ds)) if ds.reloading) {
            // A stale document that cannot be read back is dropped like a failed write: its
            // peers are closed and the next use loads it afresh.
            self.drop_failed(doc);
            return;
        }
        if let Some(Slot::Loading(queue)) = self.docs.remove(&doc) {
            self.gate_closed(doc);
            let mut conns: Vec<ConnId> = queue
                .iter()
                .map(|q| match q {
                    Queued::Open(c, _) | Queued::Msg(c, _) => *c,
                })
                .collect();
            conns.sort_unstable();
            conns.dedup();
            for c in &conns {
                if let Some(docs) = self.conns.get_mut(c) {
                    docs.remove(&doc);
                }
            }
            self.out.push_back(Output::Failed { doc, conns });
        }
    }

    /// Creates a document in memory (a new local document). Its first change is persisted like
    /// any other.
    pub fn create(&mut self, doc: DocId, d: Document) {
        self.run_due_pumps();
        if self.docs.remove(&doc).is_some() {
            self.gate_closed(doc);
        }
        self.docs.insert(doc, Slot::Loading(Vec::new()));
        self.loaded(doc, Some(d));
    }

    /// Drops `doc` from memory and from every connection, with whatever is queued or in flight
    /// for it: persist requests still in flight complete without effect. For a driver that is
    /// about to replace the document in its store (a device resetting a document to the relay's
    /// version); the next use loads it again.
    pub fn forget(&mut self, doc: DocId) {
        self.run_due_pumps();
        self.touched.insert(doc);
        self.docs.remove(&doc);
        self.gate_closed(doc);
        for docs in self.conns.values_mut() {
            docs.remove(&doc);
        }
        self.persist_doc.retain(|_, d| *d != doc);
    }

    /// Drops a ready document after a storage failure: its writes in flight complete without
    /// effect, its peers are reported in `Output::Failed`, and the next use loads it afresh.
    pub(super) fn drop_failed(&mut self, doc: DocId) {
        self.touched.insert(doc);
        if let Some(Slot::Ready(ds)) = self.docs.remove(&doc) {
            self.gate_closed(doc);
            for p in &ds.persists {
                self.persist_doc.remove(&p.id);
            }
            let conns: Vec<ConnId> = ds.peers.keys().copied().collect();
            for c in &conns {
                if let Some(docs) = self.conns.get_mut(c) {
                    docs.remove(&doc);
                }
            }
            self.out.push_back(Output::Failed { doc, conns });
        }
    }

    /// Evicts idle documents (no peer, nothing in flight), least recently used first, until
    /// [`Engine::loaded_bytes`] is at most `target`. Each is reported as `Output::Evicted`.
    /// Returns how many were evicted. O(loaded documents log loaded documents).
    pub fn evict_idle(&mut self, target: u64) -> usize {
        self.run_due_pumps();
        let mut total = self.loaded_bytes();
        if total <= target {
            return 0;
        }
        let mut idle: Vec<(Millis, DocId, u64)> = self
            .docs
            .iter()
            .filter_map(|(doc, slot)| match slot {
                Slot::Ready(ds)
                    if ds.peers.is_empty() && ds.persists.is_empty() && !ds.reloading =>
                {
                    Some((ds.last_used, *doc, ds.stored_bytes))
                }
                _ => None,
            })
            .collect();
        idle.sort_unstable();
        let mut evicted = 0;
        for (_, doc, bytes) in idle {
            if total <= target {
                break;
            }
            self.touched.insert(doc);
            self.docs.remove(&doc);
            self.gate_closed(doc);
            self.out.push_back(Output::Evicted { doc });
            total = total.saturating_sub(bytes);
            evicted += 1;
        }
        evicted
    }
}

pub(super) fn knows(ds: &DocState, hash: &ChangeHash) -> bool {
    ds.heads.binary_search(hash).is_ok()
        || ds.pending_hashes.contains(hash)
        || ds.recent.contains(hash)
        || ds.doc.has_change(hash)
}

pub(super) fn sorted(mut heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
    heads.sort_unstable();
    heads.dedup();
    heads
}
