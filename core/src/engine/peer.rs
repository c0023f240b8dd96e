//! A peer's state per document: opening and closing, the sync rounds of a peer in sync mode,
//! the fast path of a live one (durable changes fanned out, acks), and the fall back to sync
//! mode (resync) when something is lost or no progress is made.

use automerge::sync::{self, SyncDoc};
use automerge::ChangeHash;
use bytes::Bytes;

use super::docs::{knows, sorted};
use super::whole::{holds_nothing, Whole, KEEP_WHOLE_FROM};
use super::{
    ConnId, Deferred, DocState, Engine, Message, OpenOptions, Origin, Output, PeerDoc,
    PersistEffect, Queued, Slot, Write, MAX_QUEUED_WHILE_LOADING,
};
use crate::DocId;

impl Engine {
    /// Starts syncing `doc` with `conn` (loads the document first if needed).
    pub fn open(&mut self, conn: ConnId, doc: DocId, opts: OpenOptions) {
        self.run_due_pumps();
        self.touched.insert(doc);
        self.add_conn(conn);
        if let Some(docs) = self.conns.get_mut(&conn) {
            docs.insert(doc);
        }
        self.load(doc);
        let now = self.now;
        let ds = match self.docs.get_mut(&doc) {
            Some(Slot::Loading(q)) => {
                q.push(Queued::Open(conn, opts));
                return;
            }
            Some(Slot::Ready(ds)) => ds,
            None => return,
        };
        let mut state = opts
            .saved_sync_state
            .as_deref()
            .and_then(|b| sync::State::decode(b).ok())
            .unwrap_or_default();
        state.read_only = !opts.accept_changes;
        ds.last_used = now;
        ds.peers.insert(
            conn,
            PeerDoc {
                sync: state,
                opts,
                live: false,
                send_reset: false,
                their_heads: None,
                reported_synced: false,
                last_progress: now,
                save_state: false,
                state_saved_at: None,
                stalls: 0,
                lacking_since: None,
                ack_resynced_at: None,
                withheld_resyncs: 0,
                unanswered: None,
                reported_unaccepted: false,
                whole_sent: false,
                whole_waiting: false,
                answer_held: false,
            },
        );
        self.pump(doc, conn);
    }

    pub(super) fn close_peer(&mut self, doc: DocId, conn: ConnId) {
        self.touched.insert(doc);
        match self.docs.get_mut(&doc) {
            Some(Slot::Ready(ds)) => {
                ds.deferred.retain(|d| match d {
                    Deferred::Msg(c, _) | Deferred::SyncAfterReload(c, ..) | Deferred::Pump(c) => {
                        *c != conn
                    }
                });
                if let Some(pd) = ds.peers.remove(&conn) {
                    if let Some(peer) = pd.opts.stable_peer.clone() {
                        let state = pd.sync.encode();
                        self.persist_write(
                            doc,
                            Write::SyncState { peer, state },
                            PersistEffect::None,
                        );
                    }
                }
            }
            Some(Slot::Loading(queue)) => queue.retain(|q| match q {
                Queued::Open(c, _) | Queued::Msg(c, _) => *c != conn,
            }),
            None => {}
        }
    }

    /// Sends whatever the sync protocol has for a peer in sync mode.
    pub(super) fn pump(&mut self, doc: DocId, conn: ConnId) {
        self.pump_with(doc, conn, false);
    }

    /// [`Self::pump`] for a peer sent a change ahead of its write (see
    /// [`EngineConfig::forward_before_durable`](super::EngineConfig::forward_before_durable)):
    /// only writes of changes *other* peers sent may be in flight. The peer's own, and local
    /// ones, still hold its answer until they are durable.
    pub(super) fn pump_ahead(&mut self, doc: DocId, conn: ConnId) {
        self.pump_with(doc, conn, true);
    }

    fn pump_with(&mut self, doc: DocId, conn: ConnId, ahead: bool) {
        let Some(Slot::Ready(ds)) = self.docs.get(&doc) else {
            return;
        };
        if ds.peers.get(&conn).is_none_or(|pd| pd.live) {
            self.check_synced(doc, conn);
            return;
        }
        self.shed_heavy(doc);
        let Some(Slot::Ready(ds)) = self.docs.get(&doc) else {
            return;
        };
        if ds.stale {
            if let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) {
                if ds.deferred.len() < MAX_QUEUED_WHILE_LOADING {
                    ds.deferred.push(Deferred::Pump(conn));
                }
            }
            self.materialize_for(doc, "pump");
            return;
        }
        if !self.fold_logged(doc) {
            return;
        }
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
        };
        let held = ds.persists.iter().any(|p| match &p.effect {
            PersistEffect::None => false,
            PersistEffect::Changes {
                origin: Origin::Remote(from),
                ..
            } if ahead => *from == conn,
            PersistEffect::Changes { .. } => true,
        });
        if held {
            // Not everything in the document is durable yet; `persisted` pumps again.
            if let Some(pd) = ds.peers.get_mut(&conn) {
                pd.answer_held = true;
            }
            return;
        }
        let Some(pd) = ds.peers.get_mut(&conn) else {
            return;
        };
        pd.answer_held = false;
        if pd.stalls >= self.cfg.stall_rounds {
            self.stalled(doc, conn);
            return;
        }
        let data = if holds_nothing(&pd.sync) && !ds.heads.is_empty() {
            // What Automerge would send too (the whole document), made once for every such
            // peer, and only once per peer.
            if std::mem::replace(&mut pd.whole_sent, true) {
                None
            } else {
                match ds.whole_for(doc, conn, self.cfg.whole_off_thread_from) {
                    Whole::Send(data) => Some(data),
                    Whole::Wait => None,
                    Whole::Make(job) => {
                        self.out.push_back(Output::MakeWhole(job));
                        None
                    }
                }
            }
        } else {
            pd.whole_sent = false;
            pd.whole_waiting = false;
            generate(ds.doc.automerge(), &mut pd.sync).map(|m| Bytes::from(m.encode()))
        };
        if let Some(data) = data {
            let Some(pd) = ds.peers.get_mut(&conn) else {
                return;
            };
            let reset = std::mem::take(&mut pd.send_reset);
            self.out.push_back(Output::Send {
                conn,
                msg: Message::Sync { doc, reset, data },
            });
        }
        self.check_synced(doc, conn);
    }

    pub(super) fn check_synced(&mut self, doc: DocId, conn: ConnId) {
        let sync_only = self.sync_only.contains(&conn);
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
        };
        let is_synced = ds.peers.get(&conn).is_some_and(|pd| synced(ds, pd));
        let Some(pd) = ds.peers.get_mut(&conn) else {
            return;
        };
        if !is_synced {
            pd.reported_synced = false;
            return;
        }
        pd.live = !sync_only;
        if ds
            .whole
            .as_ref()
            .is_some_and(|w| w.data.len() < KEEP_WHOLE_FROM)
            && ds.peers.values().all(|p| p.live)
        {
            ds.whole = None;
        }
        let Some(pd) = ds.peers.get_mut(&conn) else {
            return;
        };
        if pd.reported_synced {
            return;
        }
        pd.reported_synced = true;
        let heads = ds.heads.clone();
        // Persisting on every ack would cost a write per change per peer; after a sync exchange
        // (and on disconnect) is enough for a cheap reconnect. A peer that syncs every change
        // (a WebSocket client) has its state written at most once per `sync_state_every`; what
        // is left pending is written when it leaves. A state older than the last exchange only
        // makes the next reconnect send a little more.
        let now = self.now;
        let due = pd
            .state_saved_at
            .is_none_or(|t| now.saturating_sub(t) >= self.cfg.sync_state_every);
        let save = (pd.save_state && due)
            .then(|| pd.opts.stable_peer.clone())
            .flatten();
        let state = save.as_ref().map(|_| {
            pd.save_state = false;
            pd.state_saved_at = Some(now);
            let mut state = pd.sync.clone();
            state.shared_heads = heads.clone();
            state.encode()
        });
        self.out.push_back(Output::Synced { conn, doc, heads });
        if let (Some(peer), Some(state)) = (save, state) {
            self.persist_write(doc, Write::SyncState { peer, state }, PersistEffect::None);
        }
    }

    /// Durable changes go out: acked to the peer that sent them over the fast path, forwarded
    /// as the same bytes to every live peer, offered by sync to the others.
    pub(super) fn announce(
        &mut self,
        doc: DocId,
        origin: Origin,
        raw: Vec<Bytes>,
        via_fast_path: bool,
    ) {
        let now = self.now;
        let max = self.cfg.max_changes_bytes;
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
        };
        let heads = ds.durable_heads.clone();
        let mut live_targets = Vec::new();
        for (conn, pd) in ds.peers.iter_mut() {
            if Origin::Remote(*conn) == origin {
                continue;
            }
            if pd.live && pd.opts.send_changes {
                if pd.reported_synced {
                    // The peer was idle and synced: its ack is now due.
                    pd.last_progress = now;
                    pd.reported_synced = false;
                }
                live_targets.push(*conn);
            }
        }
        if !live_targets.is_empty() {
            for msg in split_changes(doc, &raw, max) {
                for conn in &live_targets {
                    self.out.push_back(Output::Send {
                        conn: *conn,
                        msg: msg.clone(),
                    });
                }
            }
        }
        if let (Origin::Remote(from), true) = (origin, via_fast_path) {
            if ds.peers.contains_key(&from) {
                self.out.push_back(Output::Send {
                    conn: from,
                    msg: Message::Ack {
                        doc,
                        heads: heads.clone(),
                    },
                });
            }
        }
        self.out.push_back(Output::Changed { doc, heads, origin });
    }

    pub(super) fn on_ack(&mut self, conn: ConnId, doc: DocId, heads: Vec<ChangeHash>) {
        let now = self.now;
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
        };
        let all_known = heads.iter().all(|h| knows(ds, h));
        let Some(pd) = ds.peers.get_mut(&conn) else {
            return;
        };
        pd.last_progress = now;
        if !all_known {
            // At most one resync per `retry_after` for acks: each costs a sync message over
            // the whole document, and a hostile peer can send acks naming anything. A change
            // still missing after it is the stall check's to chase.
            let wait = self.cfg.retry_after;
            if pd.ack_resynced_at.is_some_and(|t| now < t + wait) {
                tracing::debug!(%doc, conn = conn.0, "an ack names changes we lack: resynced lately");
                return;
            }
            pd.ack_resynced_at = Some(now);
            tracing::debug!(%doc, conn = conn.0, "an ack names changes we lack: resync");
            self.resync(doc, conn);
            return;
        }
        let heads = sorted(heads);
        pd.sync.shared_heads = heads.clone();
        pd.sync.their_heads = Some(heads.clone());
        pd.their_heads = Some(heads);
        self.check_synced(doc, conn);
    }

    /// Whether `conn` is synced on `doc` (each side has the other's heads).
    pub fn is_synced(&self, conn: ConnId, doc: DocId) -> bool {
        match self.docs.get(&doc) {
            Some(Slot::Ready(ds)) => ds.peers.get(&conn).is_some_and(|pd| synced(ds, pd)),
            _ => false,
        }
    }
}

/// The next sync message for a peer, never a whole-document snapshot for a peer that already
/// holds part of the document.
///
/// Automerge sends a peer that speaks its "v2" messages the whole document, compressed, as soon
/// as it lacks more than a third of the changes: the sender saves (deflates) the document and
/// the receiver loads it twice (checked, then applied) and merges it change by change with what
/// it has. For a reconnect after offline writes on both sides that is most of the exchange's
/// cost. Hiding the capability while the message is built makes Automerge list only the changes
/// the peer lacks; the message keeps its flags (read-only, sync reset), and a peer that has
/// nothing still gets the snapshot, which is the cheap way for it.
fn generate(am: &automerge::Automerge, state: &mut sync::State) -> Option<sync::Message> {
    let has_something = state.their_heads.as_ref().is_some_and(|h| !h.is_empty());
    let caps = state.their_capabilities.clone();
    if has_something {
        if let Some(c) = state.their_capabilities.as_mut() {
            c.retain(|c| *c != sync::Capability::MessageV2);
        }
    }
    let msg = am.generate_sync_message(state);
    state.their_capabilities = caps;
    msg
}

/// Each side has what it can take from the other: with writes both ways, equal heads.
fn synced(ds: &DocState, pd: &PeerDoc) -> bool {
    synced_with(ds, pd, &ds.heads)
}

/// Whether the peer has everything of `ours` (our heads, or the durable ones) that it takes,
/// and we everything of its that we take.
fn synced_with(ds: &DocState, pd: &PeerDoc, ours: &[ChangeHash]) -> bool {
    let Some(theirs) = &pd.their_heads else {
        return false;
    };
    match (pd.opts.send_changes, pd.opts.accept_changes) {
        (true, true) => theirs == ours,
        // The peer takes nothing from us: we are synced once we have all it has.
        (false, _) => theirs.iter().all(|h| knows(ds, h)),
        // We take nothing from the peer (its own changes may be unknown to us): synced once
        // every head of ours is one of its heads or a head both sides are known to share.
        (true, false) => ours
            .iter()
            .all(|h| theirs.contains(h) || pd.sync.shared_heads.contains(h)),
    }
}

/// Whether we expect the peer to make progress (so a lack of it triggers a resync).
///
/// A live peer is sent changes once they are durable ([`Engine::announce`], which also
/// restarts its progress clock when it was idle), so it owes an ack for the durable heads
/// only. Measured against every received head instead, a peer idle for longer than
/// `retry_after` looked stalled the moment a new change arrived, if a tick ran before that
/// change was durable: every live peer of the document was reset.
pub(super) fn waiting(ds: &DocState, pd: &PeerDoc) -> bool {
    if pd.live {
        !synced_with(ds, pd, &ds.durable_heads)
    } else {
        !synced(ds, pd)
    }
}

fn split_changes(doc: DocId, raw: &[Bytes], max: usize) -> Vec<Message> {
    let mut msgs = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for c in raw {
        if !cur.is_empty() && size + c.len() > max {
            msgs.push(Message::Changes {
                doc,
                changes: std::mem::take(&mut cur),
            });
            size = 0;
        }
        size += c.len();
        cur.push(c.clone());
    }
    if !cur.is_empty() {
        msgs.push(Message::Changes { doc, changes: cur });
    }
    msgs
}
