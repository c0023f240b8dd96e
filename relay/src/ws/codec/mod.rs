//! automerge-repo's WebSocket messages: CBOR maps with a `type` field, as encoded by
//! `@automerge/automerge-repo`'s `cbor-x` encoder (`useRecords: false`, plain byte strings).
//!
//! Decoding is strict about what weft uses and lenient where the JavaScript encoder varies:
//! optional fields may be absent, `null` or `undefined`; `count` and `timestamp` may be integers
//! or floats; unknown extra fields are ignored. A field of the wrong type, a missing required
//! field, an unknown `type`, trailing bytes or a document id that is not a bs58check id is an
//! error, and the socket that sent it is closed.
//!
//! `messages.rs` holds the message types, `error.rs` the error, `decode.rs` reads a client's frame
//! (its fields through `fields.rs`, weft's own messages through `weft.rs`), `encode.rs` writes
//! the relay's.

mod decode;
mod encode;
mod error;
mod fields;
mod messages;
mod weft;

pub(crate) use decode::decode;
pub(crate) use encode::encode;
pub(crate) use error::MAX_PEER_ID_LEN;
pub(crate) use messages::{FromClient, ToClient};
pub(crate) use weft::{WeftRequest, MAX_STATUS_LEN};

#[cfg(test)]
mod tests;
