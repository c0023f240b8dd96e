//! Checking what a peer sends before anything of it is stored, applied or forwarded.
//!
//! Automerge parses whatever it is handed: `load_incremental` logs a chunk it cannot parse and
//! goes on, and it inflates compressed chunks with no bound before any checksum. A node that
//! stored what peers sent as it arrived could be made to keep garbage (a document that no
//! longer loads) or to inflate a 1 MB chunk into gigabytes. So every change a peer sends, on
//! every path (`Changes`, the changes inside a `Sync` message, whatever a load reads back), goes
//! through here first:
//!
//! - the bytes are split into Automerge chunks by their headers, without allocating;
//! - a change chunk (type 1) must be at most [`Limits::max_change_bytes`], parse
//!   (`Change::try_from` decodes every op column and checks the hash) and hold at most
//!   [`Limits::max_change_ops`] operations;
//! - a compressed change (type 2) and a document chunk (type 0, what Automerge sends a peer
//!   that lacks most of a document) are inflated first into a counter that stops at the cap,
//!   so nothing is allocated for a bomb; only then does Automerge parse them;
//! - a bundle (type 3) is refused: the sync protocol never sends one.
//!
//! What passes is a list of [`CheckedChange`]s: the parsed change and its canonical bytes
//! (uncompressed), which are what gets stored and forwarded, never the bytes as received.

use std::io::Read;

use std::sync::Arc;

use automerge::{Change, ExpandedChange};
use bytes::Bytes;

mod document;

use document::check_document_chunk;
pub use document::{check_whole_document, WholeDocument};

/// What a peer may make this node parse and inflate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one change, uncompressed.
    pub max_change_bytes: usize,
    /// Operations in one change.
    pub max_change_ops: usize,
    /// Bytes the chunks of one message may inflate to (document chunks, compressed changes).
    pub max_inflated_bytes: usize,
    /// A sync message whose changes are one document chunk (what Automerge sends a peer that
    /// lacks most of a document) is loaded whole ([`check_whole_document`]), within
    /// `max_inflated_bytes`, rather than split into its changes to check each against the
    /// other limits: splitting costs several microseconds per change, more than the load. For
    /// nodes that check no rule per change and take what their relay forwards (devices).
    pub whole_documents: bool,
}

impl Default for Limits {
    /// What a relay takes from any member.
    fn default() -> Self {
        Limits {
            max_change_bytes: 1 << 20,
            max_change_ops: 100_000,
            max_inflated_bytes: 64 << 20,
            whole_documents: false,
        }
    }
}

impl Limits {
    /// What a device takes: anything a relay may have accepted under larger limits than the
    /// defaults (a relay never forwards what it refused), still bounded against bombs.
    pub fn device() -> Self {
        Limits {
            max_change_bytes: 64 << 20,
            max_change_ops: usize::MAX,
            max_inflated_bytes: 256 << 20,
            whole_documents: true,
        }
    }
}

/// Why bytes from a peer were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The bytes are not valid Automerge chunks.
    #[error("not a valid Automerge change: {reason}")]
    Malformed {
        /// What was wrong.
        reason: String,
    },
    /// A size limit was exceeded.
    #[error("{what} is over the limit of {limit} {unit}")]
    TooLarge {
        /// What was too large ("a change", "a change's operation count", ...).
        what: &'static str,
        /// The limit.
        limit: u64,
        /// What `limit` counts ("bytes", "operations").
        unit: &'static str,
    },
    /// A kind of chunk this node does not take from peers.
    #[error("{what} chunks are not accepted from peers")]
    Unsupported {
        /// Which kind.
        what: &'static str,
    },
}

impl CheckError {
    /// Whether the bytes were well-formed but over a limit (a refusal the sender can act on),
    /// rather than malformed (a misbehaving peer).
    pub fn is_limit(&self) -> bool {
        matches!(self, CheckError::TooLarge { .. })
    }

    fn malformed(reason: impl Into<String>) -> Self {
        CheckError::Malformed {
            reason: reason.into(),
        }
    }
}

/// A change that parsed within the limits.
#[derive(Clone, Debug)]
pub struct CheckedChange {
    /// The parsed change.
    pub change: Change,
    /// Its canonical (uncompressed) bytes: what is stored and forwarded.
    pub raw: Bytes,
    /// Its operations expanded (Automerge's `Change::decode`), for a change of at least
    /// [`EXPAND_AHEAD_OPS`] operations: what a gate reads, made where the change is checked
    /// (off the driver's loop for a large message) rather than by the gate on the loop.
    expanded: Option<Arc<ExpandedChange>>,
}

/// Changes with at least this many operations are expanded as they are checked (see
/// [`CheckedChange`]); smaller ones cost the gate less to expand than they would to keep.
pub const EXPAND_AHEAD_OPS: usize = 1024;

impl CheckedChange {
    /// A checked change; expanded ahead when large. `Err`: Automerge panicked expanding it.
    pub fn new(change: Change, raw: Bytes) -> Result<CheckedChange, CheckError> {
        let expanded = if change.len() >= EXPAND_AHEAD_OPS {
            // Automerge has panicked on crafted input before; this costs the message only.
            match std::panic::catch_unwind(|| change.decode()) {
                Ok(e) => Some(Arc::new(e)),
                Err(_) => return Err(CheckError::malformed("automerge panicked expanding it")),
            }
        } else {
            None
        };
        Ok(CheckedChange {
            change,
            raw,
            expanded,
        })
    }

    /// Operations in the change.
    pub fn ops(&self) -> usize {
        self.change.len()
    }

    /// The change expanded, when [`CheckedChange::new`] did it ahead.
    pub fn expanded(&self) -> Option<&ExpandedChange> {
        self.expanded.as_deref()
    }
}

/// Automerge's magic bytes, at the start of every chunk.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Magic, checksum, type.
const FIXED_HEADER: usize = 9;

const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED: u8 = 2;
const CHUNK_BUNDLE: u8 = 3;

/// One chunk's place in a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSpan {
    /// The chunk type byte.
    pub kind: u8,
    /// The whole chunk, header included.
    pub start: usize,
    /// Where its data starts.
    pub data: usize,
    /// One past its end.
    pub end: usize,
}

/// Splits `bytes` into Automerge chunks by their headers (magic, checksum, type, length),
/// without parsing or allocating anything but the list.
pub fn split_chunks(bytes: &[u8]) -> Result<Vec<ChunkSpan>, CheckError> {
    let mut spans = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let span = first_chunk(&bytes[at..])?;
        spans.push(ChunkSpan {
            kind: span.kind,
            start: at,
            data: at + span.data,
            end: at + span.end,
        });
        at += span.end;
    }
    Ok(spans)
}

/// The first chunk of `bytes`, by its header.
pub fn first_chunk(bytes: &[u8]) -> Result<ChunkSpan, CheckError> {
    if bytes.len() < FIXED_HEADER + 1 {
        return Err(CheckError::malformed("a chunk header is cut short"));
    }
    if bytes[..4] != MAGIC {
        return Err(CheckError::malformed(
            "a chunk does not start with Automerge's magic bytes",
        ));
    }
    let kind = bytes[8];
    let (len, leb) = read_uleb(&bytes[FIXED_HEADER..])
        .ok_or_else(|| CheckError::malformed("a chunk's length is not a valid LEB128 number"))?;
    let data = FIXED_HEADER + leb;
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| data.checked_add(len))
        .filter(|end| *end <= bytes.len())
        .ok_or_else(|| CheckError::malformed("a chunk is longer than the bytes that hold it"))?;
    Ok(ChunkSpan {
        kind,
        start: 0,
        data,
        end,
    })
}

/// Checks every chunk in `bytes` and appends the changes they hold to `out`. `inflated` counts
/// the bytes the message's compressed data inflated to so far (shared by a message's chunks).
pub fn check_chunks(
    bytes: &[u8],
    limits: &Limits,
    inflated: &mut usize,
    out: &mut Vec<CheckedChange>,
) -> Result<(), CheckError> {
    for span in split_chunks(bytes)? {
        let chunk = &bytes[span.start..span.end];
        match span.kind {
            CHUNK_CHANGE => out.push(check_change_chunk(chunk, limits)?),
            CHUNK_COMPRESSED => {
                let len = inflated_len(&bytes[span.data..span.end], limits.max_change_bytes)?
                    .ok_or(CheckError::TooLarge {
                        what: "a change",
                        limit: limits.max_change_bytes as u64,
                        unit: "bytes",
                    })?;
                add_inflated(inflated, len, limits)?;
                out.push(check_change_chunk(chunk, limits)?);
            }
            CHUNK_DOCUMENT => check_document_chunk(chunk, span, limits, inflated, out)?,
            CHUNK_BUNDLE => return Err(CheckError::Unsupported { what: "bundle" }),
            other => {
                return Err(CheckError::malformed(format!("unknown chunk type {other}")));
            }
        }
    }
    Ok(())
}

/// Checks one change's bytes (as a `Changes` message carries them: one change chunk each).
pub fn check_change(bytes: Bytes, limits: &Limits) -> Result<CheckedChange, CheckError> {
    let spans = split_chunks(&bytes)?;
    match spans.as_slice() {
        [span] if span.kind == CHUNK_CHANGE => {
            if bytes.len() > limits.max_change_bytes {
                return Err(too_large_change(limits));
            }
            let change = parse(&bytes)?;
            check_ops(&change, limits)?;
            // The bytes as received are shared, not copied, when they are the canonical ones.
            let raw = if bytes[..] == *change.raw_bytes() {
                bytes
            } else {
                Bytes::copy_from_slice(change.raw_bytes())
            };
            CheckedChange::new(change, raw)
        }
        _ => {
            let mut inflated = 0;
            let mut out = Vec::new();
            check_chunks(&bytes, limits, &mut inflated, &mut out)?;
            match <[CheckedChange; 1]>::try_from(out) {
                Ok([one]) => Ok(one),
                Err(_) => Err(CheckError::malformed(
                    "a change entry must hold exactly one change",
                )),
            }
        }
    }
}

fn too_large_change(limits: &Limits) -> CheckError {
    CheckError::TooLarge {
        what: "a change",
        limit: limits.max_change_bytes as u64,
        unit: "bytes",
    }
}

fn add_inflated(inflated: &mut usize, len: usize, limits: &Limits) -> Result<(), CheckError> {
    *inflated = inflated.saturating_add(len);
    if *inflated > limits.max_inflated_bytes {
        return Err(CheckError::TooLarge {
            what: "the message's compressed data, inflated,",
            limit: limits.max_inflated_bytes as u64,
            unit: "bytes",
        });
    }
    Ok(())
}

fn parse(chunk: &[u8]) -> Result<Change, CheckError> {
    // Automerge has panicked on crafted input before; a panic costs this message, not the node.
    match std::panic::catch_unwind(|| Change::try_from(chunk)) {
        Ok(Ok(change)) => Ok(change),
        Ok(Err(e)) => Err(CheckError::malformed(e.to_string())),
        Err(_) => Err(CheckError::malformed("automerge panicked parsing it")),
    }
}

fn check_ops(change: &Change, limits: &Limits) -> Result<(), CheckError> {
    if change.len() > limits.max_change_ops {
        return Err(CheckError::TooLarge {
            what: "a change's operation count",
            limit: limits.max_change_ops as u64,
            unit: "operations",
        });
    }
    Ok(())
}

fn check_change_chunk(chunk: &[u8], limits: &Limits) -> Result<CheckedChange, CheckError> {
    if chunk.len() > limits.max_change_bytes && chunk[8] == CHUNK_CHANGE {
        return Err(too_large_change(limits));
    }
    let change = parse(chunk)?;
    if change.raw_bytes().len() > limits.max_change_bytes {
        return Err(too_large_change(limits));
    }
    check_ops(&change, limits)?;
    let raw = Bytes::copy_from_slice(change.raw_bytes());
    CheckedChange::new(change, raw)
}

/// How many bytes `deflated` inflates to, if at most `cap`; `None` past it. Nothing is kept:
/// the output goes through a fixed buffer.
fn inflated_len(deflated: &[u8], cap: usize) -> Result<Option<usize>, CheckError> {
    let mut decoder = flate2::bufread::DeflateDecoder::new(deflated);
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0usize;
    loop {
        let n = decoder
            .read(&mut buf)
            .map_err(|e| CheckError::malformed(format!("compressed data does not inflate: {e}")))?;
        if n == 0 {
            return Ok(Some(total));
        }
        total += n;
        if total > cap {
            return Ok(None);
        }
    }
}

/// An unsigned LEB128 number at the start of `bytes` and its length, if it fits in a `u64`.
fn read_uleb(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && part > 1 {
            return None;
        }
        value |= part << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests;
