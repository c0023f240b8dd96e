//! Frames: the version byte, the length and the MessagePack body of one [`Message`].

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
