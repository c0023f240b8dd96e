//! The host's inputs and queries: the one way a driver reaches the engine.
//!
//! Every input carries the time it happens at (`now`, milliseconds on the driver's monotonic
//! clock), as quinn-proto's `handle_timeout(now)` does: a driver cannot forget to advance the
//! clock, and the engine never reads one. After inputs, the driver drains
//! [`Host::poll_action`].

use automerge::{Automerge, ChangeHash};

use super::Host;
use crate::engine::{ConnId, EngineError, Gate, Inbound, Millis, OpenOptions, PersistId};
use crate::wire::Message;
use crate::{DocId, Document};

impl Host {
    /// Registers a connection.
    pub fn add_conn(&mut self, now: Millis, conn: ConnId) {
        self.engine.set_now(now);
        self.engine.add_conn(conn);
    }

    /// Marks `conn` as one that only speaks the sync protocol (no fast path).
    pub fn set_sync_only(&mut self, now: Millis, conn: ConnId) {
        self.engine.set_now(now);
        self.engine.set_sync_only(conn);
    }

    /// Forgets a connection and every subscription of it.
    pub fn remove_conn(&mut self, now: Millis, conn: ConnId) {
        self.engine.set_now(now);
        self.engine.remove_conn(conn);
    }

    /// Subscribes `conn` to `doc` (loading it if needed).
    pub fn open(&mut self, now: Millis, conn: ConnId, doc: DocId, opts: OpenOptions) {
        self.engine.set_now(now);
        self.engine.open(conn, doc, opts);
    }

    /// Ends `conn`'s subscription to `doc`.
    pub fn close(&mut self, now: Millis, conn: ConnId, doc: DocId) {
        self.engine.set_now(now);
        self.engine.close(conn, doc);
    }

    /// A message from `conn` (checked and parsed by the engine).
    pub fn handle(&mut self, now: Millis, conn: ConnId, msg: Message) -> Result<(), EngineError> {
        self.engine.set_now(now);
        self.engine.handle(conn, msg)
    }

    /// A document message from `conn` already checked off the driver's loop.
    pub fn handle_inbound(
        &mut self,
        now: Millis,
        conn: ConnId,
        msg: Inbound,
    ) -> Result<(), EngineError> {
        self.engine.set_now(now);
        self.engine.handle_inbound(conn, msg)
    }

    /// Adds a new document.
    pub fn create(&mut self, now: Millis, doc: DocId, d: Document) {
        self.engine.set_now(now);
        self.engine.create(doc, d);
    }

    /// Asks for `doc` to be loaded (a [`super::Action::Load`] follows unless it is loaded).
    pub fn load(&mut self, now: Millis, doc: DocId) {
        self.engine.set_now(now);
        self.engine.load(doc);
    }

    /// Makes a local change (see [`crate::engine::Engine::change`]).
    pub fn change<R>(
        &mut self,
        now: Millis,
        doc: DocId,
        f: impl FnOnce(&mut Automerge) -> R,
    ) -> Result<(R, Option<PersistId>), EngineError> {
        self.engine.set_now(now);
        self.engine.change(doc, f)
    }

    /// Changes another node vouches for, already in the store as the incremental chunk
    /// `stored` (see [`crate::engine::Engine::import`]).
    pub fn import(
        &mut self,
        now: Millis,
        doc: DocId,
        checked: Vec<crate::check::CheckedChange>,
        stored: Vec<u8>,
    ) -> Result<Option<usize>, EngineError> {
        self.engine.set_now(now);
        self.engine.import(doc, checked, stored)
    }

    /// Starts `doc`'s sync with `conn` over from nothing.
    pub fn resync(&mut self, now: Millis, doc: DocId, conn: ConnId) {
        self.engine.set_now(now);
        self.engine.resync(doc, conn);
    }

    /// Whether `doc` is materialized (loaded and not stale); a stale one is reloaded from the
    /// store (a [`super::Action::Load`] follows).
    pub fn materialize(&mut self, now: Millis, doc: DocId) -> bool {
        self.engine.set_now(now);
        self.engine.materialize(doc)
    }

    /// Time passed: timers due by `now` fire.
    pub fn tick(&mut self, now: Millis) {
        self.engine.set_now(now);
        self.engine.tick(now);
    }

    /// Gives back the memory that documents which left memory held in the host's and the
    /// engine's maps ([`Engine::shrink`](crate::engine::Engine::shrink)); for housekeeping.
    pub fn shrink(&mut self) {
        crate::hash::shrink_if_sparse(&mut self.chunks);
        crate::hash::shrink_if_sparse(&mut self.compacting);
        crate::hash::shrink_set_if_sparse(&mut self.snapshot_on_load);
        crate::hash::shrink_if_sparse(&mut self.log_records);
        self.engine.shrink();
    }

    /// Evicts idle documents until the loaded ones take at most `target` bytes; how many went.
    pub fn evict_idle(&mut self, target: u64) -> usize {
        self.engine.evict_idle(target)
    }

    /// When [`Host::tick`] should next be called, if anything waits on time.
    pub fn next_wakeup(&mut self) -> Option<Millis> {
        self.engine.next_wakeup()
    }

    /// Reads the document (after folding received changes into it).
    pub fn read<R>(
        &mut self,
        doc: DocId,
        f: impl FnOnce(&Document) -> R,
    ) -> Result<R, EngineError> {
        self.engine.read(doc, f)
    }

    /// Whether `doc` is loaded.
    pub fn is_loaded(&self, doc: DocId) -> bool {
        self.engine.is_loaded(doc)
    }

    /// Whether `doc`'s loaded copy lags what is stored (changes taken on the fast path).
    pub fn is_stale(&self, doc: DocId) -> bool {
        self.engine.is_stale(doc)
    }

    /// The heads of a loaded document.
    pub fn heads(&self, doc: DocId) -> Option<Vec<ChangeHash>> {
        self.engine.heads(doc)
    }

    /// Bytes `doc` takes in the store, as last recorded.
    pub fn stored_bytes(&self, doc: DocId) -> Option<u64> {
        self.engine.stored_bytes(doc)
    }

    /// Documents loaded.
    pub fn loaded_docs(&self) -> usize {
        self.engine.loaded_docs()
    }

    /// Bytes the loaded documents take, about.
    pub fn loaded_bytes(&self) -> u64 {
        self.engine.loaded_bytes()
    }

    /// Installs the gate the engine checks what peers send with (identities, write rules).
    pub fn set_gate(&mut self, gate: Box<dyn Gate>) {
        self.engine.set_gate(gate);
    }

    /// The engine's gate, to tell it what it needs (who is behind a connection, ...).
    pub fn gate_mut(&mut self) -> Option<&mut (dyn Gate + 'static)> {
        self.engine.gate_mut()
    }

    /// Turns [`HostConfig::log_received`](super::HostConfig::log_received) on or off for
    /// writes submitted from now on.
    pub fn set_log_received(&mut self, on: bool) {
        self.cfg.log_received = on;
    }
}
