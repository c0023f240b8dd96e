//! The engine's public input and output types.

use automerge::ChangeHash;

use crate::check::{CheckError, Limits};
use crate::doc::DocError;
use crate::wire::Message;
use crate::DocId;

/// A point in time, in milliseconds since an arbitrary epoch chosen by the driver.
pub type Millis = u64;

/// A driver-assigned handle for one connection to a remote peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Identifies one persist request, to be answered with [`Engine::persisted`](crate::engine::Engine::persisted) or
/// [`Engine::persist_failed`](crate::engine::Engine::persist_failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersistId(pub u64);

/// Engine tuning.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// A peer that is not synced and has made no progress for this long is resynced from scratch.
    pub retry_after: Millis,
    /// Sync rounds with a peer that change nothing on either side before it is resynced (see
    /// `stall.rs`). Automerge's protocol assumes reliable delivery: after a loss, a sender may
    /// keep withholding a change it believes it sent while the receiver keeps asking, forever.
    /// `u32::MAX` never counts them (a test node standing for an automerge-repo client, which
    /// has no such check).
    pub stall_rounds: u32,
    /// Fold pending received changes into the document once this many are waiting.
    pub fold_batch: usize,
    /// Fold pending received changes at most this long after the first arrived. `0` folds at
    /// the end of every input (what a device showing changes to a user wants).
    pub fold_delay: Millis,
    /// While every peer of a document is live, drop received changes from memory once durable
    /// instead of folding them (the document goes *stale*), and reload it from the store when
    /// something needs it materialized (a sync round, a compaction). Folding is costly even
    /// in batches (Automerge 0.12); a relay whose subscribers are caught up never needs the
    /// result.
    pub lazy_fold: bool,
    /// Timed folds one `tick` performs at most; documents beyond it stay due and are folded by
    /// the next ticks, so a driver that handles events between ticks is never stalled by
    /// thousands of documents falling due at once.
    pub max_folds_per_tick: usize,
    /// Evict a document with no open peers and nothing in flight after this long unused.
    pub evict_after: Millis,
    /// Most change bytes in one `Changes` message; more are split across messages.
    pub max_changes_bytes: usize,
    /// What a peer's changes must fit to be parsed at all (see [`crate::check`]).
    pub limits: Limits,
    /// Most bytes one document may take in the store: a peer's changes that would take it
    /// past this are refused.
    pub max_doc_bytes: u64,
    /// With [`Self::lazy_fold`]: received changes with at least this many operations in all
    /// are never applied on the driver's thread (applying costs time per operation, so one
    /// large change would stall every other document): they are stored, forwarded, then
    /// applied by the reload that materializes the document, which drivers run elsewhere.
    pub inline_apply_ops: usize,
    /// A document taking at least this many bytes in the store has the whole-document message
    /// for a newcomer (a peer holding none of it) saved off the driver's thread: the engine
    /// hands out a copy as [`Output::MakeWhole`]. Below it the message is made in place.
    pub whole_off_thread_from: u64,
    /// A peer's sync state is persisted after a sync exchange at most this often (and always
    /// when it leaves): a peer that syncs every change (a WebSocket client) would otherwise
    /// cost a store write per change.
    pub sync_state_every: Millis,
    /// A change a peer sends on the sync path reaches the document's other sync-only peers
    /// (WebSocket clients) as soon as it is applied, before it is durable here; the answer to
    /// its sender and every announcement of it (live peers, `Changed`) still wait for the
    /// write. A node that loses the write loses nothing the others do not hold and give back
    /// (`docs/decisions/0043-websocket-readers-before-the-write.md`).
    pub forward_before_durable: bool,
}

impl EngineConfig {
    /// Settings for a device: received changes are visible at once.
    pub fn device() -> Self {
        EngineConfig {
            retry_after: 5_000,
            stall_rounds: 3,
            fold_batch: 1024,
            fold_delay: 0,
            max_folds_per_tick: usize::MAX,
            lazy_fold: false,
            evict_after: 300_000,
            max_changes_bytes: 1 << 20,
            limits: Limits::device(),
            max_doc_bytes: u64::MAX,
            inline_apply_ops: usize::MAX,
            whole_off_thread_from: u64::MAX,
            sync_state_every: 0,
            forward_before_durable: false,
        }
    }

    /// Settings for the relay: received changes are forwarded as bytes and folded in batches.
    ///
    /// While every peer of a document is live nothing needs the materialized document, and
    /// applying changes is most of what a change costs the relay (Automerge's per-apply
    /// overhead dominates for small changes), so folds are rare and large: every 512 pending
    /// changes or 10 s after the first. A peer in sync mode folds at once.
    pub fn relay() -> Self {
        EngineConfig {
            retry_after: 5_000,
            stall_rounds: 3,
            fold_batch: 512,
            fold_delay: 10_000,
            max_folds_per_tick: 4,
            lazy_fold: true,
            evict_after: 60_000,
            max_changes_bytes: 1 << 20,
            limits: Limits::default(),
            max_doc_bytes: 64 << 20,
            inline_apply_ops: 4096,
            // Saving 64 KiB takes ~4 ms; copying the document a few percent of that.
            whole_off_thread_from: 64 << 10,
            sync_state_every: 10_000,
            forward_before_durable: true,
        }
    }
}

/// How a document is synced with one peer.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Apply changes this peer sends (it may write).
    pub accept_changes: bool,
    /// Send our changes to this peer (it accepts them).
    pub send_changes: bool,
    /// A stable id for the peer (e.g. its device id) under which its sync state is persisted.
    pub stable_peer: Option<Vec<u8>>,
    /// The peer's persisted sync state (`Write::SyncState` bytes from an earlier session).
    pub saved_sync_state: Option<Vec<u8>>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            accept_changes: true,
            send_changes: true,
            stable_peer: None,
            saved_sync_state: None,
        }
    }
}

/// Where a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Made on this node.
    Local,
    /// Received from a peer.
    Remote(ConnId),
    /// Received earlier and held back until its dependencies arrived.
    Released,
}

/// Something for the driver to write to its store.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Raw changes to store as one incremental chunk (concatenated change bytes).
    Changes(Vec<u8>),
    /// Changes the driver has stored already, as this incremental chunk (see
    /// [`Engine::import`](crate::engine::Engine::import)): nothing is written again; the
    /// driver counts the chunk as the document's (for compaction) and reports it durable.
    Stored(Vec<u8>),
    /// A record the gate asked to keep with the document (see
    /// [`Accepted`](crate::engine::Accepted)); written before the changes it came with.
    GateRecord {
        /// The gate's key.
        key: Vec<u8>,
        /// The gate's value.
        value: Vec<u8>,
    },
    /// A peer's sync state, `sync::State::encode()` bytes.
    SyncState {
        /// The stable peer id given in [`OpenOptions::stable_peer`].
        peer: Vec<u8>,
        /// The encoded state.
        state: Vec<u8>,
    },
}

/// Why changes from a peer were not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The peer may only read this document.
    #[error("the document is read-only for this user")]
    ReadOnly,
    /// A change was over a size limit.
    #[error(transparent)]
    Limit(CheckError),
    /// The gate refused a change: its writer may not make it.
    #[error("{0}")]
    Rule(String),
    /// The document would grow past the most bytes a document may take.
    #[error("the document would grow past the limit of {limit} bytes")]
    DocumentFull {
        /// The limit.
        limit: u64,
    },
}

/// What the engine asks of its driver, or tells it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Output {
    /// Send a message to a peer.
    Send {
        /// The connection.
        conn: ConnId,
        /// The message (`Sync`, `Changes` or `Ack`).
        msg: Message,
    },
    /// Make these bytes durable, then call [`Engine::persisted`](crate::engine::Engine::persisted) (in order per document).
    Persist {
        /// The request id.
        id: PersistId,
        /// The document.
        doc: DocId,
        /// What to write.
        write: Write,
        /// The write stores changes received from a peer (not made on this node): a relay in a
        /// cluster also appends those to the cluster's log.
        received: bool,
    },
    /// Load this document (or report it absent) with [`Engine::loaded`](crate::engine::Engine::loaded).
    Load {
        /// The document.
        doc: DocId,
    },
    /// The document's content changed and the change is durable.
    Changed {
        /// The document.
        doc: DocId,
        /// Its heads now.
        heads: Vec<ChangeHash>,
        /// Where the change came from.
        origin: Origin,
    },
    /// A peer now has exactly our heads for this document (and we have theirs).
    Synced {
        /// The connection.
        conn: ConnId,
        /// The document.
        doc: DocId,
        /// The shared heads.
        heads: Vec<ChangeHash>,
    },
    /// Changes from a peer were refused; nothing was applied or forwarded.
    Rejected {
        /// The connection.
        conn: ConnId,
        /// The document.
        doc: DocId,
        /// Why.
        reason: Rejection,
    },
    /// The peer takes no changes from us on this document (it is read-only for us) and lacks
    /// some we hold, so the two will never converge. Reported once per open; a device resets
    /// the document to the peer's version.
    Unaccepted {
        /// The connection.
        conn: ConnId,
        /// The document.
        doc: DocId,
    },
    /// A peer sent something invalid for this document; the driver should close it.
    ProtocolError {
        /// The connection.
        conn: ConnId,
        /// The document.
        doc: DocId,
        /// What was wrong.
        error: EngineError,
    },
    /// The document was dropped from memory after a storage failure; its peers were closed.
    Failed {
        /// The document.
        doc: DocId,
        /// The connections that had it open.
        conns: Vec<ConnId>,
    },
    /// Pending received changes were folded into the document: it now holds every change
    /// persisted for it so far (a moment for the driver to compact its stored chunks into an
    /// [`Engine::snapshot`](crate::engine::Engine::snapshot)).
    Folded {
        /// The document.
        doc: DocId,
    },
    /// The gate asked to keep a record with the document (see
    /// [`Accepted`](crate::engine::Accepted)); it is being written with the next changes. For a
    /// driver that tells others (a relay telling devices which user an actor writes for).
    GateRecord {
        /// The document.
        doc: DocId,
        /// The gate's key.
        key: Vec<u8>,
        /// The gate's value.
        value: Vec<u8>,
    },
    /// The document was evicted from memory (it stays in the store).
    Evicted {
        /// The document.
        doc: DocId,
    },
    /// Make a whole-document message off the driver's thread ([`WholeJob::run`](super::WholeJob::run), blocking),
    /// then hand the result to [`Engine::whole_made`](crate::engine::Engine::whole_made):
    /// peers that hold nothing of the document wait for it.
    MakeWhole(super::WholeJob),
}

/// Errors of the engine's inputs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The connection was never added or is gone.
    #[error("unknown connection {0:?}")]
    UnknownConn(ConnId),
    /// The document is not open on this connection.
    #[error("document {doc} is not open on this connection")]
    NotOpen {
        /// The document.
        doc: DocId,
    },
    /// The document is not loaded; ask for it with [`Engine::load`](crate::engine::Engine::load) first.
    #[error("document {doc} is not loaded")]
    NotLoaded {
        /// The document.
        doc: DocId,
    },
    /// The message is not one the engine handles.
    #[error("message is not a document sync message")]
    NotSyncMessage,
    /// An Automerge sync message could not be decoded.
    #[error("invalid sync message: {reason}")]
    BadSyncMessage {
        /// Automerge's reason.
        reason: String,
    },
    /// A document or change was invalid.
    #[error(transparent)]
    Doc(#[from] DocError),
    /// The peer's heads name changes it does not send, even after a resync (or, for a
    /// sync-only peer, which cannot be resynced, at its first stall).
    #[error("document {doc}: sync stalled: the peer's heads name changes it does not send; reconnect to send them again")]
    Withheld {
        /// The document.
        doc: DocId,
    },
    /// A peer's changes are malformed.
    #[error(transparent)]
    Check(CheckError),
}
