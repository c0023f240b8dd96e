//! Frames: the version byte, the length and the MessagePack body of one [`Message`].

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
