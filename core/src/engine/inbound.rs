//! A peer's document message with its changes checked: [`Inbound`], made by [`check_message`].
//!
//! Every change a peer sends goes through [`check_message`] before anything else sees it: what
//! does not parse closes the peer (`EngineError::Check`), what is over a limit is refused
//! ([`Inbound::Refused`]) and nothing of it is stored, applied or forwarded. Checking is pure
//! and as costly as parsing the changes, so a driver may run it off its event loop and hand the
//! engine the result (`Engine::handle_inbound`).

use automerge::sync;
use automerge::ChangeHash;

use super::types::EngineError;
use bytes::Bytes;

use crate::check::{self, CheckError, CheckedChange, Limits, WholeDocument};
use crate::wire::Message;
use crate::DocId;

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
        /// Instead of `changes`: the one document chunk it carried, loaded whole (with
        /// [`Limits::whole_documents`](crate::check::Limits::whole_documents)).
        whole: Option<Box<WholeDocument>>,
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
            let mut whole = None;
            if limits.whole_documents && msg.changes.len() == 1 {
                let chunk = Bytes::copy_from_slice(msg.changes.iter().next().unwrap_or_default());
                match check::check_whole_document(&chunk, limits) {
                    Ok(w) => whole = w.map(Box::new),
                    Err(e) => return refused(doc, e),
                }
            }
            if whole.is_none() {
                let mut inflated = 0;
                for chunk in msg.changes.iter() {
                    if let Err(e) = check::check_chunks(chunk, limits, &mut inflated, &mut changes)
                    {
                        return refused(doc, e);
                    }
                }
            }
            msg.changes = Vec::<Vec<u8>>::new().into();
            Ok(Inbound::Sync {
                doc,
                reset,
                msg: Box::new(msg),
                changes,
                whole,
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
