//! Sync status, as an app shows it: per link (a relay or a peer) and per document.

use std::collections::BTreeMap;

use serde::Serialize;
use weft_core::{DocId, Role};

/// The state of one link (a relay or a peer connection that reconnects).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Not connected (waiting to retry, or stopped).
    Offline,
    /// Dialing or handshaking.
    Connecting,
    /// Connected.
    Online,
}

/// The sync state of one document on one link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    /// The link is down.
    Offline,
    /// Asked for, or exchanging changes.
    Syncing,
    /// Both sides hold the same heads.
    Synced,
    /// The other side refused it (not permitted, or deleted).
    Refused,
}

/// One document on one link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DocStatus {
    /// The sync state.
    pub state: SyncState,
    /// This device's user's role, as the other side granted it.
    pub role: Option<Role>,
    /// When the document was last confirmed in sync on this link (ms since the Unix epoch).
    pub last_sync_ms: Option<u64>,
}

/// One link.
#[derive(Clone, Debug, Serialize)]
pub struct LinkStatus {
    /// What it connects to (`relay 127.0.0.1:4433`, `peer ADDR`, `peer DEVICE` for accepted ones).
    pub name: String,
    /// The connection state.
    pub state: LinkState,
    /// The authenticated user, from the relay's welcome.
    pub user: Option<String>,
    /// The last connection error, if the link is not online.
    pub last_error: Option<String>,
    /// Whether the last error was a refusal (bad token, key mismatch, device not allowed).
    pub refused: bool,
    /// Whether the other side's list of documents (discovery) has arrived on this connection.
    pub discovered: bool,
    /// Share, unshare and delete requests sent on this connection and not yet answered.
    pub pending_controls: usize,
    /// Requests the relay refused, one sentence each.
    pub control_errors: Vec<String>,
    /// Changes the other side refused (a limit, a quota or a write rule), one sentence each
    /// naming the document. The refused version was kept aside and the document took the
    /// other side's version.
    pub change_refusals: Vec<String>,
    /// The documents on this link.
    pub docs: BTreeMap<DocId, DocStatus>,
}

/// Everything at once.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    /// Links by id.
    pub links: BTreeMap<u64, LinkStatus>,
}

impl LinkStatus {
    pub(crate) fn new(name: String) -> Self {
        LinkStatus {
            name,
            state: LinkState::Connecting,
            user: None,
            last_error: None,
            refused: false,
            discovered: false,
            pending_controls: 0,
            control_errors: Vec::new(),
            change_refusals: Vec::new(),
            docs: BTreeMap::new(),
        }
    }

    /// Whether every document on the link is synced or refused (and the link is online).
    pub fn settled(&self) -> bool {
        self.state == LinkState::Online
            && self.pending_controls == 0
            && self
                .docs
                .values()
                .all(|d| matches!(d.state, SyncState::Synced | SyncState::Refused))
    }
}
