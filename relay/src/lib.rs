//! weft-relay: the server that weft devices sync through.
//!
//! This library holds the relay's self-contained pieces; the `weft-relay` binary wires them to
//! its command line.
//!
//! - [`Verifier`] and [`Minter`]: HS256 JSON Web Tokens carrying [`Claims`] (who the caller is,
//!   which documents the token grants, whether it may create documents or administer). Only
//!   HS256 is accepted, `exp` is required and checked against a caller-supplied `now`, so
//!   verification is deterministic.
//! - [`JwtSecret`], [`load_secret`] and [`ensure_dev_secret`]: the HMAC secret, read from a file
//!   (at least [`MIN_SECRET_LEN`] bytes) or generated once into the data directory by `--dev`.
//! - [`TlsIdentity`], [`load_cert_and_key`] and [`ensure_dev_cert`]: the relay's certificate and
//!   key as rustls types, from PEM files or a self-signed pair generated once by `--dev`.
//! - [`Checkpointer`] and [`DirtyDocs`]: Postgres checkpoints of changed documents, and the
//!   restore of a relay's store from them.
//! - [`NotifyConfig`], [`start_notify`] and [`Notifier`]: the push hook, a signed POST per new
//!   message for members without a live connection.
//! - [`parse_duration`] and [`parse_byte_size`]: the command line's `24h` and `16MiB` values.
//! - [`ws_accept_loop`]: the WebSocket endpoint for `@automerge/automerge-repo` clients, feeding
//!   the same [`Hub`] as the QUIC [`accept_loop`] (see `ws/mod.rs` for the message flow).
//!
//! # Example
//!
//! ```
//! use weft_relay::{Claims, JwtSecret, Minter, Verifier};
//! use weft_core::{DocId, Role};
//!
//! let secret = JwtSecret::new(b"an example secret of at least 32 bytes".to_vec())?;
//! let now = 1_700_000_000;
//! let doc = DocId::from_bytes([7; 16]);
//! let claims = Claims::new("alice", now, 3600).with_doc(doc, Role::ReadOnly);
//!
//! let token = Minter::new(&secret).mint(&claims)?;
//! let verified = Verifier::new(&secret).verify(&token, now + 10)?;
//! assert_eq!(verified.sub, "alice");
//! assert_eq!(verified.role_for(&doc), Some(Role::ReadOnly));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs, unreachable_pub)]

mod access;
mod allocator;
mod auth;
mod checkpoint;
mod cluster;
mod datadir;
mod discovery;
#[doc(hidden)]
pub mod fuzz_targets;
mod http;
mod hub;
mod inbound;
mod index;
mod meta;
mod metrics;
mod notify;
mod rate;
mod secret;
mod server;
mod sharing;
mod tls;
mod units;
mod web;
mod ws;

pub use access::{decide, readable_role, refusal_code, Decision};
pub use allocator::{disable_thp, tune_allocator, ALLOCATOR_PURGE_DELAY_MS};
pub use auth::{AuthError, Claims, DocGrant, MintError, Minter, ParseDocGrantError, Verifier};
pub use auth::{DEFAULT_LEEWAY_SECS, MAX_LEEWAY_SECS, MAX_TOKEN_LEN, MAX_USER_LEN};
pub use checkpoint::{
    CheckpointConfig, CheckpointError, Checkpointer, DirtyDocs, RestoreStats, RoundStats,
};
pub use cluster::{
    load_or_create_cluster_name, start_cluster, ClusterConfig, ClusterLog, ClusterTasks, Imported,
    CLUSTER_NAME_FILE,
};
pub use datadir::{make_file_private, prepare_data_dir, DataDirError, STORE_FILE};
pub use http::serve as serve_http;
pub use hub::{Hub, HubConfig, HubEvent, Outbound, Quotas};
pub use meta::{DocMeta as RelayDocMeta, RelayMeta};
pub use metrics::Metrics;
pub use notify::{
    event_json, signature, start as start_notify, MessageEvent, Notifier, NotifyConfig,
    NotifyTasks, NotifyUrlError,
};
pub use secret::{
    ensure_dev_secret, is_readable_by_others, load_named_secret, load_secret, JwtSecret,
    SecretError, DEV_SECRET_FILE, MIN_SECRET_LEN,
};
pub use server::{accept_loop, bind as bind_quic, ServerLimits};
pub use tls::{
    dev_cert_paths, ensure_dev_cert, load_cert_and_key, TlsError, TlsIdentity,
    DEV_SUBJECT_ALT_NAMES,
};
pub use units::{parse_byte_size, parse_duration, ParseUnitError};
pub use web::Web;
pub use ws::{
    bind_ws, load_or_create_storage_id, ws_accept_loop, StorageIdError, TicketError, Tickets,
    WsContext, WsLimits, MAX_TICKETS, STORAGE_ID_FILE, TICKET_TTL,
};

/// The relay's own tables, next to core's: open the relay's store with them
/// (`RedbStore::open_with_tables`, `erase::open_redb`).
pub const TABLES: [weft_core::store::Table; 1] = [index::USER_DOCS];

/// The relay's store settings, for `RedbStore::open_with` and `GroupCommit::with_limits`: a
/// staging log large enough to hold a busy document's changes between compactions, and a
/// writer that yields to the hub once before each group (see
/// `GroupLimits::yield_to_producers`).
pub fn store_limits() -> (
    weft_core::store::StagingLimits,
    weft_core::store::GroupLimits,
) {
    (
        weft_core::store::StagingLimits::large(),
        weft_core::store::GroupLimits::default().yield_to_producers(true),
    )
}
