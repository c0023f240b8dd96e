//! Driving one node: loading documents from its store, carrying out its host's actions and
//! reporting its store writes durable in order.

use rand::Rng;
use weft_core::automerge::{ActorId, Automerge};
use weft_core::engine::Output;
use weft_core::host::{self, Action, Loaded};
use weft_core::store::docs::DocStoreError;
use weft_core::{DocId, Document};

use super::Sim;

impl Sim {
    pub(super) fn ensure_loaded(&mut self, node: usize, doc: DocId) {
        let now = self.now;
        if !self.nodes[node].host.is_loaded(doc) {
            self.nodes[node].host.load(now, doc);
            self.drain(node);
        }
        // A relay's document may be stale (lazy folding): reading it reloads it first.
        if self.nodes[node].host.is_stale(doc) {
            self.nodes[node].host.materialize(now, doc);
            self.drain(node);
        }
    }

    /// A load as the drivers do it, with an actor of the simulator's choosing (a reloaded
    /// document writes with a new actor, and the run stays reproducible).
    pub(super) fn load(
        &mut self,
        node: usize,
        doc: DocId,
    ) -> Result<Option<Loaded>, DocStoreError> {
        let n = &mut self.nodes[node];
        n.actor_seed = n.actor_seed.wrapping_add(7919);
        let mut actor = [0u8; 16];
        actor[..8].copy_from_slice(&n.actor_seed.to_be_bytes());
        actor[8..].copy_from_slice(&doc.as_bytes()[..8]);
        let store = n.store.as_ref();
        let loaded = if n.host.wants_snapshot(doc) {
            host::load_for_compaction(store, doc)
        } else {
            host::load(store, doc)
        }?;
        let actor = ActorId::from(actor.to_vec());
        Ok(Some(match loaded {
            Some(mut l) => {
                let am = l.doc.automerge().clone();
                l.doc = Document::from_automerge(am.with_actor(actor));
                l
            }
            // A document new to this node starts empty, with the simulator's actor too.
            None => Loaded {
                doc: Document::from_automerge(Automerge::new().with_actor(actor)),
                chunks: Vec::new(),
                snapshot: None,
                sizes: Default::default(),
                quarantine: Vec::new(),
                gate_records: Vec::new(),
            },
        }))
    }

    /// Carries out every action node `node`'s host has queued.
    pub(super) fn drain(&mut self, node: usize) {
        loop {
            // A store fault is armed for the writes the next step of the host submits, and
            // disarmed once they are done. It is armed only when no earlier write can still be
            // in the writer thread (the driver has waited on all of them), so whether a write
            // fails never depends on that thread's timing.
            let fail = self.faults.store_failure > 0.0
                && !self.nodes[node].host.has_queued_actions()
                && self.rng.random_bool(self.faults.store_failure);
            if fail {
                self.nodes[node].store.fail_next_write();
            }
            let Some(action) = self.nodes[node].host.poll_action() else {
                self.nodes[node].store.clear_faults();
                break;
            };
            match action {
                Action::Wait { what, ticket } => {
                    let result = ticket.wait();
                    self.failed_writes += u64::from(result.is_err());
                    if self.trace && result.is_err() {
                        eprintln!("t={} node {node} write failed {what:?}", self.now);
                    }
                    let at = self.now + self.persist_delay;
                    let n = &mut self.nodes[node];
                    n.store.clear_faults();
                    n.durable.push_back((at, what, result));
                }
                Action::Send { conn, msg } => {
                    self.nodes[node].store.clear_faults();
                    self.send(node, conn, msg);
                }
                Action::Load { doc } => {
                    self.nodes[node].store.clear_faults();
                    let result = self.load(node, doc);
                    // A load that fails is reported to the document's waiters by the host.
                    let _ = self.nodes[node].host.loaded(self.now, doc, result);
                }
                Action::Save(job) => {
                    self.nodes[node].store.clear_faults();
                    let at = self.now + self.persist_delay;
                    self.nodes[node].saves.push_back((at, job));
                }
                Action::Event(out) => {
                    self.nodes[node].store.clear_faults();
                    self.on_event(node, out);
                }
                _ => self.nodes[node].store.clear_faults(),
            }
        }
    }

    pub(super) fn on_event(&mut self, node: usize, out: Output) {
        if self.trace {
            eprintln!(
                "t={} node {node} event {:?}",
                self.now,
                crate::sim::short(&out)
            );
        }
        match out {
            Output::Rejected { conn, doc, reason }
                if reason != weft_core::engine::Rejection::ReadOnly =>
            {
                self.reset_peer(node, conn, doc);
            }
            // A peer closed for withholding changes reconnects, as a device (after its
            // backoff) and an automerge-repo client do, with a fresh sync session.
            Output::ProtocolError {
                conn,
                error: weft_core::engine::EngineError::Withheld { .. },
                ..
            } => {
                self.withheld_closes += 1;
                self.reconnect_conn(conn);
            }
            Output::ProtocolError { conn, .. } => self.disconnect_conn(conn),
            // A document whose write failed left memory: its connections close and its peers
            // reconnect and sync again, as a device does after its backoff.
            Output::Failed { conns, .. } => {
                for conn in conns {
                    self.reconnect_conn(conn);
                }
            }
            _ => {}
        }
    }

    pub(super) fn complete_persists(&mut self, node: usize) -> bool {
        let now = self.now;
        let n = &mut self.nodes[node];
        let mut any = false;
        // In order: a write is reported only after every earlier one.
        while n.durable.front().is_some_and(|(at, ..)| *at <= now) {
            let Some((_, what, result)) = n.durable.pop_front() else {
                break;
            };
            n.host.committed(now, what, result);
            any = true;
        }
        while n.saves.front().is_some_and(|(at, _)| *at <= now) {
            let Some((_, job)) = n.saves.pop_front() else {
                break;
            };
            n.host.saved(now, job.run());
            any = true;
        }
        any
    }
}
