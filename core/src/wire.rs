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

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};

use crate::{DeviceId, DocId, Role};

/// The first byte of every v1 frame.
pub const PROTOCOL_V1: u8 = 0x01;
/// The protocol version a v1 peer announces in `Hello` and `Welcome`.
pub const PROTOCOL_VERSION: u16 = 1;
/// Bytes before the body: the version byte and the u32 length.
pub const FRAME_HEADER_LEN: usize = 5;
/// The default maximum body length of a frame (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// An error code carried by [`Message::Error`]. Codes are numbers so newer peers can add codes
/// an older peer still decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// The token is missing, malformed, wrongly signed or expired.
    pub const UNAUTHENTICATED: ErrorCode = ErrorCode(1);
    /// The caller may not read this document (whether or not it exists).
    pub const FORBIDDEN: ErrorCode = ErrorCode(2);
    /// The caller may read but not change this document; its changes were not applied.
    pub const READ_ONLY: ErrorCode = ErrorCode(3);
    /// A frame or message was malformed; the connection closes.
    pub const MALFORMED: ErrorCode = ErrorCode(4);
    /// A frame exceeded the maximum size; the connection closes.
    pub const TOO_LARGE: ErrorCode = ErrorCode(5);
    /// Too many messages, documents or connections.
    pub const RATE_LIMITED: ErrorCode = ErrorCode(6);
    /// The peer speaks a protocol version this side does not.
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(7);
    /// Something failed on this side (storage, ...).
    pub const INTERNAL: ErrorCode = ErrorCode(8);
    /// The document was deleted.
    pub const DELETED: ErrorCode = ErrorCode(9);
    /// The device key is not the one expected or allowed.
    pub const DEVICE_NOT_ALLOWED: ErrorCode = ErrorCode(10);
    /// A size limit was reached (for example a document's access list is full).
    pub const LIMIT_REACHED: ErrorCode = ErrorCode(11);
    /// A well-formed request that cannot be carried out as asked (for example an empty user id);
    /// unlike [`ErrorCode::MALFORMED`] the connection stays open.
    pub const INVALID: ErrorCode = ErrorCode(12);
    /// Changes to the document were refused (over a size limit or a quota, or against a write
    /// rule): nothing of them was stored or forwarded, and the document's subscription ended.
    /// The message says which limit or rule, in a sentence.
    pub const REFUSED: ErrorCode = ErrorCode(13);
}

/// One actor of a document and the user it writes for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorEntry {
    /// The actor id's bytes.
    #[serde(with = "serde_bytes")]
    pub actor: Vec<u8>,
    /// The user.
    pub user: String,
}

/// One document in a discovery list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocEntry {
    /// The document.
    pub doc: DocId,
    /// The receiving user's role on it.
    pub role: Role,
}

/// A v1 protocol message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// First message of a connection, from the dialing side.
    Hello {
        /// [`PROTOCOL_VERSION`] of the sender.
        protocol: u16,
        /// The sender's device id (checked against its TLS key by the receiver).
        device: DeviceId,
        /// A JWT for the relay; empty between two devices of one user.
        token: String,
        /// Free-form software name and version, for logs.
        agent: String,
    },
    /// The answer to an accepted `Hello`.
    Welcome {
        /// [`PROTOCOL_VERSION`] of the sender.
        protocol: u16,
        /// The authenticated user (`sub` of the token).
        user: String,
        /// The answering side's device id.
        device: DeviceId,
        /// The largest frame body the answering side accepts.
        max_frame: u32,
    },
    /// An error about the connection (`doc` absent) or one document.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// The document concerned, only where the receiver may know it.
        doc: Option<DocId>,
        /// A human-readable sentence.
        message: String,
    },
    /// A fresh token for a live connection.
    Token {
        /// The new JWT.
        token: String,
    },
    /// Discovery: documents the user may read. `full` replaces the receiver's list.
    Docs {
        /// Whether this is the complete list rather than a delta.
        full: bool,
        /// Documents added (or whose role changed).
        added: Vec<DocEntry>,
        /// Documents the user may no longer read.
        removed: Vec<DocId>,
    },
    /// Ask to sync a document.
    Subscribe {
        /// The document.
        doc: DocId,
    },
    /// A subscription was accepted.
    Subscribed {
        /// The document.
        doc: DocId,
        /// The subscriber's role.
        role: Role,
    },
    /// Stop syncing a document.
    Unsubscribe {
        /// The document.
        doc: DocId,
    },
    /// An Automerge sync-protocol message.
    Sync {
        /// The document.
        doc: DocId,
        /// The sender started afresh: the receiver drops its sync state for this peer too.
        #[serde(default)]
        reset: bool,
        /// `automerge::sync::Message::encode()` output.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Fast path: raw Automerge changes the receiver is expected to be able to apply.
    Changes {
        /// The document.
        doc: DocId,
        /// Raw change bytes, in causal order (shared buffers: the relay forwards the same
        /// bytes to every subscriber without copying them).
        changes: Vec<bytes::Bytes>,
    },
    /// The sender's heads after durably storing what it received.
    Ack {
        /// The document.
        doc: DocId,
        /// The sender's heads.
        #[serde(with = "heads_serde")]
        heads: Vec<ChangeHash>,
    },
    /// Ephemeral data (presence state, typing indicators); never stored.
    Ephemeral {
        /// The document it concerns.
        doc: DocId,
        /// The originating user, filled in by the relay.
        #[serde(default)]
        user: Option<String>,
        /// The originating device, filled in by the relay.
        #[serde(default)]
        device: Option<DeviceId>,
        /// Opaque payload.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Who is connected to a document.
    Presence {
        /// The document.
        doc: DocId,
        /// The user.
        user: String,
        /// The user's device.
        device: DeviceId,
        /// Joined (`true`) or left.
        online: bool,
    },
    /// The end of a full discovery listing (see the module docs).
    DocsEnd {
        /// How many entries the listing held.
        total: u64,
        /// The user may read more documents than the relay lists at once; the rest were left out.
        truncated: bool,
    },
    /// Control: give `user` the role `role` on `doc` (replacing any role they had). Owner or
    /// `admin` token only; answered by a [`Message::Reply`] with the same `id`.
    Share {
        /// Chosen by the device; the reply carries it back.
        id: u64,
        /// The document.
        doc: DocId,
        /// The user (a token `sub`) to share with.
        user: String,
        /// `rw` or `ro`.
        role: Role,
    },
    /// Control: take `user` off `doc`'s access list. Owner or `admin` token only.
    Unshare {
        /// Chosen by the device; the reply carries it back.
        id: u64,
        /// The document.
        doc: DocId,
        /// The user to remove.
        user: String,
    },
    /// Control: delete `doc` for everyone; its id can never be used again. Owner or `admin`
    /// token only.
    Delete {
        /// Chosen by the device; the reply carries it back.
        id: u64,
        /// The document.
        doc: DocId,
    },
    /// Which user actors of a document write for, as the relay bound them (see
    /// `weft_schema::rules`): sent after `Subscribed` and whenever the relay binds a new actor, so
    /// a device checks what its own peers forward as the right user's.
    Actors {
        /// The document.
        doc: DocId,
        /// Actor id bytes and the user each writes for.
        actors: Vec<ActorEntry>,
    },
    /// The kinds of document declared to the relay (`weft-relay serve --kinds`), as TOML: sent
    /// after `Welcome` when there are any, so a device checks its writes against them offline.
    Kinds {
        /// The declared kinds' TOML.
        toml: String,
    },
    /// The answer to `Share`, `Unshare` or `Delete`: done (the change is durable and in force on
    /// every live connection), or why not.
    Reply {
        /// The request's id.
        id: u64,
        /// The request's document.
        doc: DocId,
        /// `None` when the request was carried out (or had already been); otherwise
        /// [`ErrorCode::FORBIDDEN`], [`ErrorCode::DELETED`], [`ErrorCode::LIMIT_REACHED`],
        /// [`ErrorCode::INVALID`], [`ErrorCode::RATE_LIMITED`] or [`ErrorCode::INTERNAL`].
        code: Option<ErrorCode>,
        /// A human-readable sentence (empty on success).
        message: String,
    },
}

impl Message {
    /// The document a message concerns, if any.
    pub fn doc(&self) -> Option<DocId> {
        match self {
            Message::Hello { .. }
            | Message::Welcome { .. }
            | Message::Token { .. }
            | Message::Docs { .. }
            | Message::Kinds { .. }
            | Message::DocsEnd { .. } => None,
            Message::Error { doc, .. } => *doc,
            Message::Subscribe { doc }
            | Message::Subscribed { doc, .. }
            | Message::Unsubscribe { doc }
            | Message::Sync { doc, .. }
            | Message::Changes { doc, .. }
            | Message::Ack { doc, .. }
            | Message::Ephemeral { doc, .. }
            | Message::Presence { doc, .. }
            | Message::Share { doc, .. }
            | Message::Unshare { doc, .. }
            | Message::Delete { doc, .. }
            | Message::Actors { doc, .. }
            | Message::Reply { doc, .. } => Some(*doc),
        }
    }
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The first byte is not a version this side speaks.
    #[error("unsupported protocol version byte {got:#04x} (expected {PROTOCOL_V1:#04x})")]
    UnsupportedVersion {
        /// The byte received.
        got: u8,
    },
    /// The frame's body is longer than allowed.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced or actual body length.
        len: usize,
        /// The maximum allowed.
        max: usize,
    },
    /// The body is not a valid message.
    #[error("malformed message: {source}")]
    Malformed {
        /// The MessagePack decoding error.
        #[source]
        source: rmp_serde::decode::Error,
    },
    /// The message could not be encoded (a bug, not bad input).
    #[error("could not encode message: {source}")]
    Encode {
        /// The MessagePack encoding error.
        #[source]
        source: rmp_serde::encode::Error,
    },
}

/// Appends the frame of `msg` to `out`. Fails if the body would exceed `max_frame`.
pub fn encode_frame(msg: &Message, max_frame: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.push(PROTOCOL_V1);
    out.extend_from_slice(&[0; 4]);
    if let Err(source) = rmp_serde::encode::write_named(out, msg) {
        out.truncate(start);
        return Err(FrameError::Encode { source });
    }
    let len = out.len() - start - FRAME_HEADER_LEN;
    if len > max_frame || len > u32::MAX as usize {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            len,
            max: max_frame,
        });
    }
    out[start + 1..start + FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// The frame of `msg` as a new buffer.
pub fn frame(msg: &Message, max_frame: usize) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode_frame(msg, max_frame, &mut out)?;
    Ok(out)
}

/// Reads a frame header: the body length, or `None` when fewer than [`FRAME_HEADER_LEN`] bytes
/// are available. Checks the version byte and the maximum before anything is allocated.
pub fn decode_header(buf: &[u8], max_frame: usize) -> Result<Option<usize>, FrameError> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != PROTOCOL_V1 {
        return Err(FrameError::UnsupportedVersion { got: version });
    }
    let Some(len_bytes) = buf.get(1..FRAME_HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
    if len > max_frame {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame,
        });
    }
    Ok(Some(len))
}

/// Decodes the message body of a frame (the bytes after the header). Bytes after the message
/// inside the frame are ignored: room for extensions. Byte strings are borrowed from `body` while
/// decoding, so a length inside the body never causes an allocation larger than the frame.
pub fn decode_body(body: &[u8]) -> Result<Message, FrameError> {
    rmp_serde::from_slice(body).map_err(|source| FrameError::Malformed { source })
}

/// Decodes one frame from the front of `buf`: the message and the bytes it used, or `Ok(None)`
/// when `buf` does not yet hold a whole frame.
pub fn decode_frame(buf: &[u8], max_frame: usize) -> Result<Option<(Message, usize)>, FrameError> {
    let Some(len) = decode_header(buf, max_frame)? else {
        return Ok(None);
    };
    let Some(body) = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, FRAME_HEADER_LEN + len)))
}

/// Heads travel as one byte string of concatenated 32-byte hashes.
mod heads_serde {
    use automerge::ChangeHash;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(heads: &[ChangeHash], s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(heads.len() * 32);
        for h in heads {
            bytes.extend_from_slice(&h.0);
        }
        s.serialize_bytes(&bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<ChangeHash>, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        if !bytes.len().is_multiple_of(32) {
            return Err(D::Error::invalid_length(
                bytes.len(),
                &"a multiple of 32 bytes",
            ));
        }
        Ok(bytes
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                ChangeHash(h)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn doc() -> DocId {
        DocId::from_bytes([3; 16])
    }

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello {
                protocol: PROTOCOL_VERSION,
                device: DeviceId::from_bytes([1; 32]),
                token: "t.o.k".into(),
                agent: "weft/0.1".into(),
            },
            Message::Error {
                code: ErrorCode::FORBIDDEN,
                doc: Some(doc()),
                message: "no".into(),
            },
            Message::Docs {
                full: true,
                added: vec![DocEntry {
                    doc: doc(),
                    role: Role::ReadOnly,
                }],
                removed: vec![],
            },
            Message::Sync {
                doc: doc(),
                reset: true,
                data: vec![0x42, 1, 2],
            },
            Message::Changes {
                doc: doc(),
                changes: vec![bytes::Bytes::from(vec![9; 100])],
            },
            Message::Ack {
                doc: doc(),
                heads: vec![ChangeHash([5; 32]), ChangeHash([6; 32])],
            },
            Message::DocsEnd {
                total: 12_000,
                truncated: false,
            },
            Message::Share {
                id: 7,
                doc: doc(),
                user: "bob".into(),
                role: Role::ReadWrite,
            },
            Message::Unshare {
                id: u64::MAX,
                doc: doc(),
                user: "bob".into(),
            },
            Message::Delete { id: 0, doc: doc() },
            Message::Reply {
                id: 7,
                doc: doc(),
                code: None,
                message: String::new(),
            },
            Message::Reply {
                id: 8,
                doc: doc(),
                code: Some(ErrorCode::FORBIDDEN),
                message: "not permitted".into(),
            },
        ]
    }

    #[test]
    fn frames_round_trip() {
        for msg in samples() {
            let f = frame(&msg, DEFAULT_MAX_FRAME).unwrap();
            assert_eq!(f[0], PROTOCOL_V1);
            let (back, used) = decode_frame(&f, DEFAULT_MAX_FRAME).unwrap().unwrap();
            assert_eq!(back, msg);
            assert_eq!(used, f.len());
        }
    }

    #[test]
    fn control_messages_and_replies_name_their_document() {
        for msg in samples() {
            match msg {
                Message::Share { .. }
                | Message::Unshare { .. }
                | Message::Delete { .. }
                | Message::Reply { .. } => assert_eq!(msg.doc(), Some(doc()), "{msg:?}"),
                Message::DocsEnd { .. } | Message::Docs { .. } => assert_eq!(msg.doc(), None),
                _ => {}
            }
        }
    }

    #[test]
    fn short_input_needs_more_bytes() {
        let f = frame(&samples()[0], DEFAULT_MAX_FRAME).unwrap();
        for cut in 0..f.len() {
            assert!(
                decode_frame(&f[..cut], DEFAULT_MAX_FRAME)
                    .unwrap()
                    .is_none(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn oversized_length_prefix_is_refused_before_allocating() {
        let buf = [PROTOCOL_V1, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_frame(&buf, DEFAULT_MAX_FRAME),
            Err(FrameError::TooLarge {
                len: 0xffff_ffff,
                ..
            })
        ));
        let big = Message::Sync {
            doc: doc(),
            reset: false,
            data: vec![0; 2000],
        };
        assert!(matches!(
            frame(&big, 1000),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn wrong_version_byte_is_refused() {
        let mut f = frame(&samples()[0], DEFAULT_MAX_FRAME).unwrap();
        f[0] = 0x02;
        assert!(matches!(
            decode_frame(&f, DEFAULT_MAX_FRAME),
            Err(FrameError::UnsupportedVersion { got: 2 })
        ));
    }

    #[test]
    fn garbage_bodies_are_malformed() {
        for body in [
            &b""[..],
            b"\xc1",
            b"\x81\xa4Sync\x80",
            b"\x92\x01\x02",
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
        ] {
            let mut f = vec![PROTOCOL_V1];
            f.extend_from_slice(&(body.len() as u32).to_be_bytes());
            f.extend_from_slice(body);
            assert!(
                matches!(
                    decode_frame(&f, DEFAULT_MAX_FRAME),
                    Err(FrameError::Malformed { .. })
                ),
                "{body:?}"
            );
        }
        // Heads whose length is not a multiple of 32.
        let mut f = frame(
            &Message::Ack {
                doc: doc(),
                heads: vec![ChangeHash([1; 32])],
            },
            DEFAULT_MAX_FRAME,
        )
        .unwrap();
        let n = f.len();
        f[n - 33] = 31; // bin8 length byte of the heads
        f.truncate(n - 1);
        f[1..5].copy_from_slice(&((n - 1 - FRAME_HEADER_LEN) as u32).to_be_bytes());
        assert!(decode_frame(&f, DEFAULT_MAX_FRAME).is_err());
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let doc = any::<[u8; 16]>().prop_map(DocId::from_bytes);
        prop_oneof![
            (
                doc.clone(),
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(doc, reset, data)| Message::Sync { doc, reset, data }),
            (
                doc.clone(),
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..5)
            )
                .prop_map(|(doc, cs)| Message::Changes {
                    doc,
                    changes: cs.into_iter().map(bytes::Bytes::from).collect()
                }),
            (
                doc.clone(),
                proptest::collection::vec(any::<[u8; 32]>(), 0..4)
            )
                .prop_map(|(doc, hs)| Message::Ack {
                    doc,
                    heads: hs.into_iter().map(ChangeHash).collect()
                }),
            (any::<u16>(), proptest::option::of(doc.clone()), ".{0,40}").prop_map(
                |(c, doc, message)| Message::Error {
                    code: ErrorCode(c),
                    doc,
                    message
                }
            ),
            (any::<u64>(), doc.clone(), ".{0,20}", any::<bool>(), 0..3u8).prop_map(
                |(id, doc, user, rw, kind)| {
                    let role = if rw { Role::ReadWrite } else { Role::ReadOnly };
                    match kind {
                        0 => Message::Share {
                            id,
                            doc,
                            user,
                            role,
                        },
                        1 => Message::Unshare { id, doc, user },
                        _ => Message::Delete { id, doc },
                    }
                }
            ),
            (
                any::<u64>(),
                doc.clone(),
                proptest::option::of(any::<u16>()),
                ".{0,40}"
            )
                .prop_map(|(id, doc, code, message)| Message::Reply {
                    id,
                    doc,
                    code: code.map(ErrorCode),
                    message
                }),
            (
                doc,
                proptest::option::of(".{0,10}"),
                proptest::collection::vec(any::<u8>(), 0..50)
            )
                .prop_map(|(doc, user, data)| Message::Ephemeral {
                    doc,
                    user,
                    device: None,
                    data
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_message_round_trips_through_a_stream(msgs in proptest::collection::vec(arb_message(), 1..6)) {
            let mut stream = Vec::new();
            for m in &msgs {
                encode_frame(m, DEFAULT_MAX_FRAME, &mut stream).unwrap();
            }
            let mut at = 0;
            let mut back = Vec::new();
            while let Some((m, used)) = decode_frame(&stream[at..], DEFAULT_MAX_FRAME).unwrap() {
                back.push(m);
                at += used;
            }
            prop_assert_eq!(at, stream.len());
            prop_assert_eq!(back, msgs);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame(&bytes, 4096);
            let _ = decode_body(&bytes);
        }
    }
}
