//! What a device tells its app: events and what it knows of each document.

use std::sync::Arc;

use super::meta::DocMeta;
use weft_core::automerge::{ChangeHash, Patch};
use weft_core::{DeviceId, DocId, Role};

use super::ControlOp;

/// The most changes of one event whose writers are looked up for [`Event::Changed`]'s
/// `authors`.
pub(super) const MAX_ATTRIBUTED: usize = 10_000;

/// Where a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOrigin {
    /// Made on this device.
    Local,
    /// Received from a relay or peer.
    Remote,
}

/// Something that happened on the device, for an app to show.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A document changed and the change is durable.
    Changed {
        /// The document.
        doc: DocId,
        /// Its heads now.
        heads: Vec<ChangeHash>,
        /// Local or remote.
        origin: EventOrigin,
        /// What changed, as Automerge patches from the previous event's heads.
        patches: Arc<Vec<Patch>>,
        /// The users who wrote the changes since the previous event's heads, sorted, each
        /// once (for "Sam edited the itinerary"). Empty on a document's first event (its
        /// whole history) and for writers the device cannot attribute; at most the first
        /// 10,000 changes are looked at.
        authors: Vec<String>,
    },
    /// Ephemeral data (typing indicators, cursors) for a document; never stored.
    Ephemeral {
        /// The document.
        doc: DocId,
        /// The sender's user, when a relay names it.
        user: Option<String>,
        /// The sender's device, when known.
        device: Option<DeviceId>,
        /// The payload.
        data: Vec<u8>,
    },
    /// Someone joined or left a document.
    Presence {
        /// The document.
        doc: DocId,
        /// The user.
        user: String,
        /// Their device.
        device: DeviceId,
        /// Joined or left.
        online: bool,
    },
    /// The relay refused this device's changes to a read-only document; they were not applied
    /// there. The local version was kept aside (at `kept`, an Automerge file) and the document
    /// returns to the relay's version.
    Rejected {
        /// The document.
        doc: DocId,
        /// Where the rejected version was saved, if it could be.
        kept: Option<std::path::PathBuf>,
    },
    /// A relay answered a share, unshare or delete request.
    Control {
        /// The request.
        op: ControlOp,
        /// `Ok` when done; otherwise why not.
        result: Result<(), String>,
    },
    /// The relay refused the document (not permitted, or deleted).
    Refused {
        /// The document.
        doc: DocId,
        /// Why, in a sentence.
        reason: String,
    },
    /// The document was deleted by its owner; this device erased its copy.
    Deleted {
        /// The document.
        doc: DocId,
    },
}

/// A document this device holds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DocInfo {
    /// Its id.
    pub id: DocId,
    /// Its kind (`conversation`, `trip`, ...), when known.
    pub kind: Option<String>,
    /// This device's user's role, when a relay told it.
    pub role: Option<Role>,
    /// Its owner, when known.
    pub owner: Option<String>,
    /// Whether the relay no longer shares it with this user.
    pub revoked: bool,
    /// Whether it was deleted (a deleted document is erased and no longer listed).
    pub deleted: bool,
    /// The heads a relay or peer last confirmed, lowercase hex.
    pub confirmed_heads: Vec<String>,
    /// When a relay or peer last confirmed it in sync (ms since the Unix epoch).
    pub last_sync_ms: Option<u64>,
}

impl DocInfo {
    pub(super) fn new(id: DocId, m: &DocMeta) -> Self {
        DocInfo {
            id,
            kind: m.kind.clone(),
            role: m.role,
            owner: m.owner.clone(),
            revoked: m.ext.revoked,
            deleted: m.deleted_at_ms.is_some(),
            confirmed_heads: m.ext.confirmed_heads.clone(),
            last_sync_ms: m.ext.last_sync_ms,
        }
    }
}
