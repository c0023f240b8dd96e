//! Pumps left due: the peers a durable write (or a change sent ahead of its write) gives
//! something to send are pumped as the driver polls, not inside the input that found them.

use super::{ConnId, Engine, Output};
use crate::DocId;

/// A pump left for [`Engine::poll_output`].
#[derive(Debug)]
pub(super) struct DuePump {
    pub(super) doc: DocId,
    pub(super) conn: ConnId,
    /// Sends what the document holds though writes are in flight (see
    /// [`EngineConfig::forward_before_durable`](super::EngineConfig::forward_before_durable)).
    pub(super) ahead: bool,
}

impl Engine {
    /// The next output for the driver, if any.
    ///
    /// The pumps a completed write leaves due ([`Engine::persisted`]) run here, one per poll
    /// that finds nothing else queued: a driver that sends each output as it polls it lets the
    /// first peer's sync message leave while the next peer's is being generated, instead of
    /// after all of them (a document with many WebSocket readers generates one per reader).
    pub fn poll_output(&mut self) -> Option<Output> {
        loop {
            if let Some(out) = self.out.pop_front() {
                return Some(out);
            }
            let due = self.due_pumps.pop_front()?;
            self.in_due_pump = true;
            self.run_due(due);
            self.in_due_pump = false;
        }
    }

    /// Runs the pumps left due. Every input that can change what a pump sees calls this
    /// first, so a due pump sees what it would have seen run at once: deferring it changes
    /// when its output is generated, never what it is.
    ///
    /// A pump may call inputs itself (a resync, a reload); inside one, the rest stay due, so
    /// pumps never nest.
    pub(super) fn run_due_pumps(&mut self) {
        if self.in_due_pump {
            return;
        }
        self.in_due_pump = true;
        while let Some(due) = self.due_pumps.pop_front() {
            self.run_due(due);
        }
        self.in_due_pump = false;
    }

    fn run_due(&mut self, due: DuePump) {
        if due.ahead {
            self.pump_ahead(due.doc, due.conn);
        } else {
            self.pump(due.doc, due.conn);
        }
    }
}
