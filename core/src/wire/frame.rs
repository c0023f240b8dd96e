//! Frames: the version byte, the length and the MessagePack body of one [`Message`].

use bytes::Bytes;

use super::compact::{self, CompactError};
use super::{Message, FRAME_HEADER_LEN, PROTOCOL_V1};

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
    /// The body is a compact one (`Changes`, `Ack`) that does not decode.
    #[error(transparent)]
    Compact(#[from] CompactError),
    /// The message could not be encoded (a bug, not bad input).
    #[error("could not encode message: {source}")]
    Encode {
        /// The MessagePack encoding error.
        #[source]
        source: rmp_serde::encode::Error,
    },
}

/// How a frame's body is encoded for a peer: by what the peer announced it decodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// MessagePack with named fields, for every message (what a protocol 1 peer decodes).
    #[default]
    Named,
    /// Compact bodies for `Changes` and `Ack`, MessagePack for the rest (protocol 2 and later:
    /// see [`Encoding::for_protocol`]).
    Compact,
}

impl Encoding {
    /// The encoding for a peer that announced `protocol` in its `Hello` or `Welcome`.
    pub fn for_protocol(protocol: u16) -> Encoding {
        if protocol >= super::COMPACT_SINCE {
            Encoding::Compact
        } else {
            Encoding::Named
        }
    }
}

/// Appends the frame of `msg` to `out`, its body named MessagePack. Fails if the body would
/// exceed `max_frame`.
pub fn encode_frame(msg: &Message, max_frame: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
    encode_frame_as(msg, Encoding::Named, max_frame, out)
}

/// Appends the frame of `msg` to `out` in `encoding`. Fails if the body would exceed
/// `max_frame`.
pub fn encode_frame_as(
    msg: &Message,
    encoding: Encoding,
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let start = out.len();
    out.push(PROTOCOL_V1);
    out.extend_from_slice(&[0; 4]);
    let compact = encoding == Encoding::Compact && compact::encode(msg, out);
    if !compact {
        if let Err(source) = rmp_serde::encode::write_named(out, msg) {
            out.truncate(start);
            return Err(FrameError::Encode { source });
        }
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

/// The frame of `msg` as a new buffer, its body named MessagePack.
pub fn frame(msg: &Message, max_frame: usize) -> Result<Vec<u8>, FrameError> {
    frame_as(msg, Encoding::Named, max_frame)
}

/// The frame of `msg` in `encoding`, as a new buffer.
pub fn frame_as(
    msg: &Message,
    encoding: Encoding,
    max_frame: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode_frame_as(msg, encoding, max_frame, &mut out)?;
    Ok(out)
}

/// The frame of a [`Message::Sync`] whose data is at least `min_shared` bytes, as its leading
/// bytes (the header and the body up to the data) and the data itself, shared with `msg`
/// rather than copied: the data is the last value of the body, so the two parts concatenated
/// are exactly the bytes [`frame_as`] makes. This is how one whole-document snapshot is sent
/// to many peers without a copy each. `Ok(None)` for any other message, or smaller data:
/// frame it with [`frame_as`].
pub fn frame_split(
    msg: &Message,
    encoding: Encoding,
    max_frame: usize,
    min_shared: usize,
) -> Result<Option<(Vec<u8>, Bytes)>, FrameError> {
    let Message::Sync { doc, reset, data } = msg else {
        return Ok(None);
    };
    if data.len() < min_shared {
        return Ok(None);
    }
    let empty = Message::Sync {
        doc: *doc,
        reset: *reset,
        data: Bytes::new(),
    };
    let mut head = Vec::with_capacity(64);
    encode_frame_as(&empty, encoding, usize::MAX, &mut head)?;
    // Empty data ends the body as a MessagePack `bin 8` of length 0; were it encoded otherwise,
    // the split would not be the whole frame's bytes, so the caller frames it whole.
    if !head.ends_with(&[0xc4, 0x00]) {
        return Ok(None);
    }
    head.truncate(head.len() - 2);
    // The `bin` marker MessagePack uses for this length (the smallest that fits).
    let len = data.len();
    match (u8::try_from(len), u16::try_from(len), u32::try_from(len)) {
        (Ok(n), _, _) => head.extend_from_slice(&[0xc4, n]),
        (_, Ok(n), _) => {
            head.push(0xc5);
            head.extend_from_slice(&n.to_be_bytes());
        }
        (_, _, Ok(n)) => {
            head.push(0xc6);
            head.extend_from_slice(&n.to_be_bytes());
        }
        _ => {
            return Err(FrameError::TooLarge {
                len,
                max: max_frame,
            })
        }
    }
    let body = head.len() - FRAME_HEADER_LEN + len;
    let body32 = u32::try_from(body).map_err(|_| FrameError::TooLarge {
        len: body,
        max: max_frame,
    })?;
    if body > max_frame {
        return Err(FrameError::TooLarge {
            len: body,
            max: max_frame,
        });
    }
    head[1..FRAME_HEADER_LEN].copy_from_slice(&body32.to_be_bytes());
    Ok(Some((head, data.clone())))
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
/// Compact bodies ([`Encoding::Compact`]) are told apart by their first byte and decoded from
/// any peer.
pub fn decode_body(body: &[u8]) -> Result<Message, FrameError> {
    if compact::is_compact(body) {
        return Ok(compact::decode(body)?);
    }
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
