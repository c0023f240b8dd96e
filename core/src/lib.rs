//! weft-core: the deterministic heart of weft.
//!
//! - `id`: document, device and content ids ([`DocId`], [`DeviceId`], [`ContentHash`]).
//! - [`wire`]: protocol v1 frames and messages.
//! - [`check`]: what a peer's changes must pass before anything of them is stored.
//! - [`engine`]: the sans-IO sync engine that devices and the relay both drive.
//! - [`host`]: the engine wired to a store (persist, load, compaction), shared by drivers.
//! - `quic` (feature `quic`): the QUIC transport devices and the relay share: device keys,
//!   TLS configuration, framed streams and datagrams.
//! - [`AcceptBackoff`]: how the relay's and the device's accept loops wait after a failed
//!   accept (out of file descriptors and the like).
//! - [`store`]: the storage trait, its redb and in-memory implementations, group commit and the
//!   document store. The engine never calls the store: drivers connect the two.
#![deny(missing_docs, unreachable_pub)]

mod accept;
pub mod check;
#[cfg(feature = "quic")]
pub mod clock;
mod doc;
#[cfg(feature = "quic")]
pub mod driver;
pub mod engine;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod hash;
pub mod host;
mod id;
#[cfg(feature = "quic")]
pub mod quic;
mod role;
pub mod store;
pub mod wire;

pub use accept::{AcceptBackoff, AcceptPause, ACCEPT_BACKOFF_FIRST, ACCEPT_BACKOFF_MAX};
/// Automerge, re-exported so every crate uses the version weft-core chose.
pub use automerge;
pub use doc::{hash_hex, parse_change, DocError, Document};
pub use id::{ContentHash, DeviceId, DocId, ParseIdError};
pub use role::{ParseRoleError, Role};
pub use store::{
    ChunkKey, ChunkKind, CommitTicket, DocMeta, DocStoreError, GroupCommit, KvStore, MemStore,
    RedbStore, StoreError, Table, WriteBatch,
};
