//! weft-peer: the device runtime an app embeds. The package's `weft` binary is the command line
//! built on it.
//!
//! A [`Device`] owns one data directory ([`DataDir`]): its redb store, its long-lived device key
//! and, while a long-running `weft` command holds it, a local socket other commands hand their
//! work to. Everything happens on the device first: [`Device::create`] and [`Device::change`]
//! return once the change is durable on disk, whether or not any network is reachable.
//! Connections ([`Device::connect_relay`], [`Device::connect_peer`], [`Device::listen_p2p`]) sync
//! every document in the background with the same sans-IO engine the relay runs, reconnecting
//! with backoff; [`Device::status`] and [`Device::events`] let an app show what is happening.
//!
//! # Layout of the crate
//! - `dir.rs`: the data directory (store, device key, name, socket path).
//! - `device/`: [`Device`], the handle, and its driver task, which alone owns the engine and
//!   the store writer.
//! - `net/`: QUIC links to a relay or a peer (dial, handshake, reconnect, token refresh) and the
//!   peer-to-peer listener; each connection is a reader and a writer task talking to the driver.
//! - `status.rs`: sync status types.
//! - `error.rs`: [`DeviceError`].
//!
//! The `weft` binary's own modules sit beside these and are not part of the library: `main.rs`,
//! `cli/` (the commands) and `ipc.rs` (the local socket that lets every `weft` command work
//! while another holds the directory).
#![deny(missing_docs, unreachable_pub)]

mod device;
mod dir;
mod error;
mod net;
mod status;

pub use device::{ControlOp, Device, DocInfo, Event, EventOrigin};
pub use dir::DataDir;
pub use error::DeviceError;
pub use net::{LinkHandle, PeerConfig, RelayConfig, TokenCallback, TokenSource};
pub use status::{DocStatus, LinkState, LinkStatus, Status, SyncState};

/// Re-exported so apps use the same versions.
pub use weft_core::{automerge, DeviceId, DocId, Role};
pub use weft_schema as schema;

/// Milliseconds since the Unix epoch.
pub(crate) use weft_core::clock::unix_ms;
