//! weft-ffi: the device runtime ([`weft_peer::Device`]) for Swift and Kotlin apps, through
//! [uniffi](https://mozilla.github.io/uniffi-rs/) (proc-macros, no UDL; decision 0032).
//!
//! An app opens a [`WeftDevice`] for a data directory and a user ([`open_device`]), creates
//! conversations, trips and records of declared kinds, sends, edits, deletes and lists
//! messages, and hears about every change through a [`WeftListener`] (what changed, and
//! whether it came from this device or another), the sync status and presence. Syncing is
//! a relay link (tokens from a [`TokenProvider`]) and peer links, stopped by
//! [`WeftDevice::pause`] when the app goes to the background and started again by
//! [`WeftDevice::resume`]. Every failure is a [`WeftError`] case.
//!
//! Every async call runs on this crate's tokio runtime (`runtime.rs`) and may be awaited from
//! any executor (Kotlin coroutines, Swift tasks). Ids cross the boundary as strings
//! (documents in automerge-repo's bs58check form).
//!
//! # Layout
//! - `device.rs`: [`open_device`], [`WeftDevice`]: documents, messages, records, sharing.
//! - `sync.rs`: relay and peer links, pause / resume / network_changed, [`TokenProvider`].
//! - `listener.rs`: [`WeftListener`] and the task that feeds it.
//! - `types.rs`: the records and enums that cross; `error.rs`: [`WeftError`].
//!
//! ```no_run
//! # async fn demo(token: String) -> Result<(), weft_ffi::WeftError> {
//! struct Fixed(String);
//! impl weft_ffi::TokenProvider for Fixed {
//!     fn token(&self) -> Result<String, weft_ffi::TokenError> {
//!         Ok(self.0.clone())
//!     }
//! }
//! let device = weft_ffi::open_device("/tmp/alice".into(), "alice".into()).await?;
//! let chat = device.create_conversation("Lunch".into(), vec![]).await?;
//! device.send_message(chat.clone(), "noon?".into()).await?;
//! device
//!     .start_relay_sync("127.0.0.1:4433".into(), None, Box::new(Fixed(token)), vec![])
//!     .await?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs, unreachable_pub)]

mod device;
mod error;
mod links;
mod listener;
mod runtime;
mod sync;
mod trips;
mod types;
mod typing;

pub use device::{open_device, WeftDevice};
pub use error::WeftError;
pub use links::{TokenError, TokenProvider};
pub use listener::WeftListener;
pub use trips::{ItineraryItem, Trip, TripMember, TripTask};
pub use types::{
    ChangeOrigin, ChatMessage, DocumentChange, DocumentInfo, DocumentNotice, FieldValue, LinkInfo,
    PresenceChange, RecordField, ShareRole, SyncPhase, SyncStatus, TypingChange,
};

uniffi::setup_scaffolding!();
