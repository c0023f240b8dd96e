//! Compact bodies for the two messages of the live path, `Changes` and `Ack` (protocol 2).
//!
//! A MessagePack body names the variant and every field as strings: ~45 bytes around a change
//! and ~70 in an acknowledgement, a third of a short chat change. The compact body
//! is a tag byte and the fields in a fixed order (24 and 18 bytes less than MessagePack):
//!
//! ```text
//! Changes: 0x01 | doc (16) | count (LEB128) | count x (length (LEB128) | change bytes)
//! Ack:     0x02 | doc (16) | count (LEB128) | count x hash (32)
//! ```
//!
//! A MessagePack body of a [`Message`] starts with a map or a string marker (`0x80..=0xbf`,
//! `0xd9..=0xdf`), never `0x01` or `0x02`, so a receiver tells the two apart by the first byte
//! and decodes both whatever the peer announced. A sender uses compact bodies only towards a
//! peer that announced protocol 2 or later in its `Hello` or `Welcome`. As with MessagePack
//! bodies, bytes after the message are ignored.

use automerge::ChangeHash;
use bytes::Bytes;

use super::Message;
use crate::DocId;

const TAG_CHANGES: u8 = 0x01;
const TAG_ACK: u8 = 0x02;

/// Why a compact body did not decode.
#[derive(Debug, thiserror::Error)]
#[error("malformed compact body: {0}")]
pub struct CompactError(&'static str);

/// Whether `body` is a compact one (by its first byte).
pub(super) fn is_compact(body: &[u8]) -> bool {
    matches!(body.first(), Some(&TAG_CHANGES) | Some(&TAG_ACK))
}

/// Appends the compact body of `msg`, or returns `false` (appending nothing) for a message
/// that has none.
pub(super) fn encode(msg: &Message, out: &mut Vec<u8>) -> bool {
    match msg {
        Message::Changes { doc, changes } => {
            let len: usize = changes.iter().map(|c| c.len() + 3).sum();
            out.reserve(1 + 16 + 5 + len);
            out.push(TAG_CHANGES);
            out.extend_from_slice(doc.as_bytes());
            put_len(out, changes.len());
            for c in changes {
                put_len(out, c.len());
                out.extend_from_slice(c);
            }
            true
        }
        Message::Ack { doc, heads } => {
            out.reserve(1 + 16 + 1 + heads.len() * 32);
            out.push(TAG_ACK);
            out.extend_from_slice(doc.as_bytes());
            put_len(out, heads.len());
            for h in heads {
                out.extend_from_slice(&h.0);
            }
            true
        }
        _ => false,
    }
}

/// Decodes a compact body. Every count and length is checked against the bytes that remain
/// before anything is allocated for it.
pub(super) fn decode(body: &[u8]) -> Result<Message, CompactError> {
    let mut r = Reader(body);
    let tag = r.take(1)?[0];
    let doc = DocId::from_bytes(
        r.take(16)?
            .try_into()
            .map_err(|_| CompactError("document id"))?,
    );
    let count = r.len()?;
    match tag {
        TAG_CHANGES => {
            // Every change takes at least its length byte.
            if count > r.0.len() {
                return Err(CompactError("more changes than bytes"));
            }
            let mut changes = Vec::with_capacity(count);
            for _ in 0..count {
                let len = r.len()?;
                changes.push(Bytes::copy_from_slice(r.take(len)?));
            }
            Ok(Message::Changes { doc, changes })
        }
        TAG_ACK => {
            if count > r.0.len() / 32 {
                return Err(CompactError("more heads than bytes"));
            }
            let mut heads = Vec::with_capacity(count);
            for _ in 0..count {
                let mut h = [0u8; 32];
                h.copy_from_slice(r.take(32)?);
                heads.push(ChangeHash(h));
            }
            Ok(Message::Ack { doc, heads })
        }
        _ => Err(CompactError("unknown tag")),
    }
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CompactError> {
        if n > self.0.len() {
            return Err(CompactError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// A LEB128 length of at most five bytes (a frame body is under 4 GiB).
    fn len(&mut self) -> Result<usize, CompactError> {
        let mut n = 0usize;
        for i in 0..5 {
            let b = self.take(1)?[0];
            n |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(CompactError("length too long"))
    }
}
