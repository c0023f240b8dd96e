//! Requests for the relay (share, unshare, delete): queued durably while offline, sent when
//! a relay is connected, answered when it replies.

use tokio::sync::oneshot;
use weft_core::engine::ConnId;
use weft_core::wire::{ErrorCode, Message};
use weft_core::{DocId, Role};

use super::{ConnKind, Driver, Event};
use crate::DeviceError;

/// A sharing or lifecycle request for the relay, queued durably until a relay answers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlOp {
    /// Give `user` `role` on `doc`.
    Share {
        /// The document.
        doc: DocId,
        /// The user.
        user: String,
        /// The role.
        role: Role,
    },
    /// Take `user` off `doc`'s access list.
    Unshare {
        /// The document.
        doc: DocId,
        /// The user.
        user: String,
    },
    /// Delete `doc` for everyone.
    Delete {
        /// The document.
        doc: DocId,
    },
}

impl ControlOp {
    /// The document concerned.
    pub fn doc(&self) -> DocId {
        match self {
            ControlOp::Share { doc, .. }
            | ControlOp::Unshare { doc, .. }
            | ControlOp::Delete { doc } => *doc,
        }
    }

    pub(super) fn message(&self, id: u64) -> Message {
        match self.clone() {
            ControlOp::Share { doc, user, role } => Message::Share {
                id,
                doc,
                user,
                role,
            },
            ControlOp::Unshare { doc, user } => Message::Unshare { id, doc, user },
            ControlOp::Delete { doc } => Message::Delete { id, doc },
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Queued {
    pub(super) id: u64,
    pub(super) op: ControlOp,
}

/// Most requests waiting for a relay at once.
pub(super) const MAX_OUTBOX: usize = 10_000;

impl Driver {
    pub(super) fn save_outbox(&self) -> Result<(), DeviceError> {
        let bytes = serde_json::to_vec(&self.outbox).map_err(|e| DeviceError::DataDir {
            path: self.dir.outbox_path(),
            message: e.to_string(),
        })?;
        crate::dir::write_private(&self.dir.outbox_path(), &bytes).map_err(|e| {
            DeviceError::DataDir {
                path: self.dir.outbox_path(),
                message: format!("cannot write the request queue: {e}"),
            }
        })
    }

    pub(super) fn queue_control(
        &mut self,
        op: ControlOp,
    ) -> Result<oneshot::Receiver<Result<(), String>>, DeviceError> {
        if self.outbox.len() >= MAX_OUTBOX {
            return Err(DeviceError::Connection(format!(
                "{MAX_OUTBOX} requests are already waiting for a relay"
            )));
        }
        let id: u64 = rand::random();
        self.outbox.push(Queued { id, op: op.clone() });
        if let Err(e) = self.save_outbox() {
            self.outbox.pop();
            return Err(e);
        }
        let (tx, rx) = oneshot::channel();
        self.control_waiters.insert(id, tx);
        let relays: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.kind == ConnKind::Relay)
            .map(|(id, _)| *id)
            .collect();
        for conn in relays {
            self.send(conn, op.message(id));
            self.note_control_sent(conn);
        }
        Ok(rx)
    }

    pub(super) fn note_control_sent(&mut self, conn: ConnId) {
        let link = self.conns.get(&conn).map(|c| c.link);
        if let Some(l) = link.and_then(|l| self.links.get_mut(&l)) {
            l.pending_controls += 1;
            self.status_dirty = true;
        }
    }

    pub(super) fn on_reply(
        &mut self,
        conn: ConnId,
        id: u64,
        code: Option<ErrorCode>,
        message: String,
    ) {
        let link = self.conns.get(&conn).map(|c| c.link);
        if let Some(l) = link.and_then(|l| self.links.get_mut(&l)) {
            l.pending_controls = l.pending_controls.saturating_sub(1);
            self.status_dirty = true;
        }
        let Some(pos) = self.outbox.iter().position(|q| q.id == id) else {
            return;
        };
        let q = self.outbox.remove(pos);
        if let Err(e) = self.save_outbox() {
            tracing::error!(error = %e, "cannot update the request queue");
        }
        let result = match code {
            None => Ok(()),
            Some(code) => {
                let why = if message.is_empty() {
                    format!("refused with code {}", code.0)
                } else {
                    message
                };
                if let Some(l) = link.and_then(|l| self.links.get_mut(&l)) {
                    l.control_errors.push(format!("{}: {why}", q.op.doc()));
                }
                Err(why)
            }
        };
        if let Some(w) = self.control_waiters.remove(&id) {
            let _ = w.send(result.clone());
        }
        let deleted = match (&q.op, &result) {
            (ControlOp::Delete { doc }, Ok(())) => Some(*doc),
            _ => None,
        };
        let _ = self.events.send(Event::Control { op: q.op, result });
        if let Some(doc) = deleted {
            self.erase(doc);
        }
    }
}
