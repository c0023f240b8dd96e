//! A peer that makes no progress: resynced (both sides start over from what survives a
//! reconnect), asked to send again what it counts as sent, or closed when neither can help
//! (decision 0042).

use automerge::sync;

use super::docs::knows;
use super::{ConnId, DocState, Engine, EngineError, Output, PeerDoc, Slot};
use crate::DocId;

/// Resyncs for a stall while a peer's heads name changes we lack, after which it is closed
/// (see [`Engine::stalled`]).
const MAX_WITHHELD_RESYNCS: u32 = 1;

impl Engine {
    /// Drops a peer back to sync mode from a fresh state and tells it to reset too: the way to
    /// recover after messages to it were dropped (a full queue).
    pub fn resync(&mut self, doc: DocId, conn: ConnId) {
        self.run_due_pumps();
        let now = self.now;
        self.touched.insert(doc);
        let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) else {
            return;
        };
        let Some(pd) = ds.peers.get_mut(&conn) else {
            return;
        };
        pd.sync = fresh_state(&pd.sync);
        // A sync-only peer has no `reset` on its wire; Automerge's own flag reaches it.
        pd.sync.needs_reset = resets_on_request(&pd.sync);
        pd.live = false;
        pd.whole_sent = false;
        pd.send_reset = true;
        pd.reported_synced = false;
        pd.last_progress = now;
        pd.stalls = 0;
        self.pump(doc, conn);
    }

    /// `conn` made no progress on `doc` (`EngineConfig::stall_rounds` rounds, or
    /// `retry_after`): it is resynced, unless its heads have named changes we lack for
    /// `retry_after` and a resync cannot bring them.
    ///
    /// Automerge sends a change once per sync session: a peer that believes it sent one we
    /// never took (a lost message, a bug, or a client lying about its heads) asks us to catch
    /// up with heads we cannot reach, forever. A resync asks the peer to forget what it sent
    /// (weft's `reset`, and Automerge's own flag where the peer's Automerge has it); a peer
    /// still withholding after one, or a sync-only one that cannot be asked, will not change.
    /// Closing is what helps then: a stock client reconnects with a fresh session and sends
    /// its changes again. Heads naming changes still on their way are normal for a moment (a
    /// stall is counted in rounds, and rounds are fast), hence the wait. A peer we take no
    /// changes from (read-only) is never closed for offering changes we refuse.
    pub(super) fn stalled(&mut self, doc: DocId, conn: ConnId) {
        let sync_only = self.sync_only.contains(&conn);
        let now = self.now;
        let wait = self.cfg.retry_after;
        if let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) {
            let lacking = !ds.stale
                && ds
                    .peers
                    .get(&conn)
                    .is_some_and(|pd| pd.opts.accept_changes && names_unknown(ds, pd));
            if let Some(pd) = ds.peers.get_mut(&conn).filter(|_| sync_only && !lacking) {
                // A stock client answers a message whose heads differ from its own or that
                // brings it changes, and its wire loses nothing: silence after our resync
                // means it holds exactly our heads (our view of them was stale). Resyncing it
                // again would repeat forever.
                if pd.unanswered.as_ref() == Some(&ds.heads) {
                    pd.their_heads = Some(ds.heads.clone());
                    pd.unanswered = None;
                    pd.stalls = 0;
                    pd.last_progress = now;
                    self.check_synced(doc, conn);
                    return;
                }
                pd.unanswered = Some(ds.heads.clone());
            }
            if let Some(pd) = ds.peers.get_mut(&conn).filter(|_| lacking) {
                let long = pd.lacking_since.is_some_and(|t| t + wait <= now);
                let cannot_reset = sync_only && !resets_on_request(&pd.sync);
                if long && (cannot_reset || pd.withheld_resyncs >= MAX_WITHHELD_RESYNCS) {
                    tracing::info!(%doc, conn = conn.0, "a peer's heads name changes it does not send: closing it");
                    // Not reported again before the driver closes the connection.
                    pd.stalls = 0;
                    pd.last_progress = now;
                    pd.lacking_since = Some(now);
                    self.out.push_back(Output::ProtocolError {
                        conn,
                        doc,
                        error: EngineError::Withheld { doc },
                    });
                    return;
                }
                pd.withheld_resyncs += 1;
            }
        }
        self.resync(doc, conn);
    }

    /// `conn` sent changes we did not take because their dependencies had not arrived: it
    /// counts them as sent, so our next message asks it to forget what it sent, and it offers
    /// them again with what they depend on. A peer that cannot be asked is left to the stall
    /// check ([`Engine::stalled`]).
    pub(super) fn ask_to_resend(&mut self, doc: DocId, conn: ConnId) {
        if let Some(Slot::Ready(ds)) = self.docs.get_mut(&doc) {
            if let Some(pd) = ds.peers.get_mut(&conn) {
                if resets_on_request(&pd.sync) {
                    pd.sync.needs_reset = true;
                    // So that a message goes though our heads did not move.
                    pd.sync.have_responded = false;
                }
            }
        }
    }
}

/// Whether the peer's heads, as last told, name a change the document does not know.
pub(super) fn names_unknown(ds: &DocState, pd: &PeerDoc) -> bool {
    pd.their_heads
        .as_ref()
        .is_some_and(|theirs| theirs.iter().any(|h| !knows(ds, h)))
}

/// A state that remembers only what survives a reconnect, keeping the read-only setting.
pub(super) fn fresh_state(old: &sync::State) -> sync::State {
    let mut s = sync::State::decode(&old.encode()).unwrap_or_default();
    s.read_only = old.read_only;
    // What the peer supports does not change within a connection.
    s.their_capabilities.clone_from(&old.their_capabilities);
    s
}

/// Whether the peer's Automerge clears its record of what it sent when our message says so
/// (`SYNC_RESET`, automerge >= 0.12 and @automerge/automerge >= 3.5): a reset that reaches
/// an automerge-repo client too. Automerge asks an older peer by sending empty heads instead,
/// which makes it send its whole document; not asked of one.
pub(super) fn resets_on_request(state: &sync::State) -> bool {
    state
        .their_capabilities
        .as_ref()
        .is_some_and(|c| c.contains(&sync::Capability::SyncReset))
}
