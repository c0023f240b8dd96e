//! Wire protocol v1: the frames devices, peers and the relay exchange.
//!
//! # Frame layout
//!
//! ```text
//! +---------+----------------------+-------------------------------+
//! | version | length (u32, BE)     | body: MessagePack, named maps |
//! | 0x01    | of the body in bytes | (rmp-serde `to_vec_named`)    |
//! +---------+----------------------+-------------------------------+
//! ```
//!
//! The version byte comes first so a peer speaking another version is recognised before its
//! length is trusted. The length is checked against the receiver's maximum before anything is
//! allocated; a short buffer is "need more bytes" (`Ok(None)`), never an error. Struct fields are
//! encoded by name, so a later version may add optional fields that v1 decoders skip.
//!
//! Protocol 2 keeps the frame layout and adds compact bodies for the two messages of the live
//! path, `Changes` and `Ack` (see `compact.rs`: a tag byte, the document id and length-prefixed
//! fields: about 40 bytes less for a change and its acknowledgement). They are sent only to a peer
//! that announced protocol 2 ([`Encoding::for_protocol`]) and decoded from anyone.
//!
//! # Message flow
//!
//! ```text
//! device                                   relay (or listening peer)
//!   | Hello{protocol, device, token} ------->  |  authenticate token + TLS device key
//!   | <------------------- Welcome{user, ..}   |  (or Error{code} and close)
//!   | <------------------- Docs{full, added}   |  discovery: every readable doc + role
//!   | Subscribe{doc} ----------------------->  |  authorize
//!   | <------------------ Subscribed{doc, role}|  (or Error{code, doc} for this doc only)
//!   | Sync{doc, data} <--------------------->  |  Automerge sync rounds until both are quiet
//!   |                                          |
//!   | Changes{doc, [change]} --------------->  |  fast path: check, persist, then
//!   | <---------------------- Ack{doc, heads}  |  ack and forward the same bytes to every
//!   |                     Changes{doc, ..} --> |  other caught-up subscriber
//!   | Ephemeral{doc, data} <---------------->  |  never stored
//!   | Token{token} ------------------------->  |  refresh before `exp`
//!   | <------------------ Docs{added,removed}  |  pushed when access changes
//!   |                                          |
//!   | Share{id, doc, user, role} ----------->  |  owner or admin only; durable, then
//!   | Unshare{id, doc, user} --------------->  |  applied to live connections, then
//!   | Delete{id, doc} ---------------------->  |  answered
//!   | <--------------- Reply{id, doc, code}    |  same id; code None = done
//! ```
//!
//! # Discovery
//!
//! Right after `Welcome` the relay lists every document the user may read: one
//! `Docs{full: true}` (which replaces the receiver's list), then zero or more `Docs{full: false}`
//! continuing it (at most a relay-chosen number of entries per message), then
//! `DocsEnd{total, truncated}`. Until `DocsEnd` arrives the list is incomplete. Afterwards,
//! `Docs{full: false}` deltas arrive whenever what the user may read changes (a share, unshare,
//! delete, a new document of theirs, a refreshed token); an entry in `added` for a document
//! already listed is a role change. A relay may repeat the whole listing (`full: true` ...
//! `DocsEnd`) at any time, for example after it had to drop a delta for a slow receiver.
//!
//! # Control requests
//!
//! `Share`, `Unshare` and `Delete` carry an `id` the device chooses and are answered by one
//! `Reply` with that id. They are idempotent (sharing again with the same role, unsharing a user
//! who is not listed and deleting a deleted document all succeed), so a device may queue them
//! while offline and resend any whose reply it did not see. The document must be on the relay
//! already: send `Subscribe` for a new document before sharing it (the relay handles one
//! connection's messages in order). A caller who is neither the owner nor holds an `admin` token
//! gets [`ErrorCode::FORBIDDEN`] whether or not the document exists.
//!
//! `Sync` carries Automerge sync-protocol messages for peers that are behind (first contact, a
//! reconnect, a missed change). Once both sides' heads match, new changes travel as `Changes`:
//! the raw change bytes, forwarded unchanged, acknowledged with the receiver's heads after they
//! are durable. A `Changes` whose dependencies the receiver lacks, or an `Ack` naming heads the
//! sender lacks, drops that document back to `Sync` with `reset: true`.

mod compact;
mod frame;
mod message;

pub use compact::CompactError;
pub use frame::{
    decode_body, decode_frame, decode_header, encode_frame, encode_frame_as, frame, frame_as,
    frame_split, Encoding, FrameError,
};
pub use message::{ActorEntry, DocEntry, ErrorCode, Message};

/// The first byte of every v1 frame.
pub const PROTOCOL_V1: u8 = 0x01;
/// The protocol version this side announces in `Hello` and `Welcome`. The side that answers
/// announces the lower of the two versions; each side then encodes for the other's version.
pub const PROTOCOL_VERSION: u16 = 2;
/// The oldest protocol version a peer may announce and still be served.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// The first version whose peers decode compact `Changes` and `Ack` bodies ([`Encoding`]).
pub const COMPACT_SINCE: u16 = 2;
/// Bytes before the body: the version byte and the u32 length.
pub const FRAME_HEADER_LEN: usize = 5;
/// The default maximum body length of a frame (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

#[cfg(test)]
mod tests;
