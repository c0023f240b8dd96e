//! Document chunks (type 0): what Automerge sends a peer that lacks most of a document. Their
//! deflated columns are inflated into a counter before Automerge loads them, then their changes
//! are checked one by one, or the chunk is taken whole (a snapshot for an empty document).

use automerge::Automerge;
use bytes::Bytes;

use super::{
    add_inflated, check_ops, inflated_len, read_uleb, split_chunks, too_large_change, CheckError,
    CheckedChange, ChunkSpan, Limits, CHUNK_DOCUMENT,
};

/// A document chunk: its deflated columns are inflated into a counter first (the sum must fit
/// what is left of the message's budget), then Automerge loads it and its changes are checked
/// one by one like any other.
pub(super) fn check_document_chunk(
    chunk: &[u8],
    span: ChunkSpan,
    limits: &Limits,
    inflated: &mut usize,
    out: &mut Vec<CheckedChange>,
) -> Result<(), CheckError> {
    let am = load_document_chunk(chunk, span, limits, inflated)?;
    push_changes(&am, limits, out)
}

/// A sync message's lone document chunk, loaded whole (see [`Limits::whole_documents`]).
#[derive(Debug)]
pub struct WholeDocument {
    /// The document the chunk holds.
    pub document: Automerge,
    /// The chunk as received (a compressed snapshot, checksum verified by the load): what
    /// is stored when the document is taken whole.
    pub raw: Bytes,
}

impl WholeDocument {
    /// The document's changes, each checked against `limits` as [`check_chunks`](crate::check::check_chunks) checks a
    /// document chunk's: for a node that cannot take the document whole.
    pub fn into_changes(self, limits: &Limits) -> Result<Vec<CheckedChange>, CheckError> {
        let mut out = Vec::new();
        push_changes(&self.document, limits, &mut out)?;
        Ok(out)
    }
}

/// `bytes` loaded whole when they are exactly one document chunk (inflated into a counter
/// first, within `limits.max_inflated_bytes`); `Ok(None)` for anything else, which
/// [`check_chunks`](crate::check::check_chunks) then checks.
pub fn check_whole_document(
    bytes: &Bytes,
    limits: &Limits,
) -> Result<Option<WholeDocument>, CheckError> {
    let span = match split_chunks(bytes)?.as_slice() {
        [span] if span.kind == CHUNK_DOCUMENT => *span,
        _ => return Ok(None),
    };
    let mut inflated = 0;
    let document = load_document_chunk(bytes, span, limits, &mut inflated)?;
    Ok(Some(WholeDocument {
        document,
        raw: bytes.clone(),
    }))
}

/// Loads a document chunk once its inflated size is known to fit the message's budget.
fn load_document_chunk(
    chunk: &[u8],
    span: ChunkSpan,
    limits: &Limits,
    inflated: &mut usize,
) -> Result<Automerge, CheckError> {
    let data = &chunk[span.data - span.start..];
    let columns = document_columns(data)?;
    let mut total = data.len();
    for col in columns.iter().filter(|c| c.deflated) {
        let budget = limits.max_inflated_bytes.saturating_sub(*inflated + total);
        let len = inflated_len(&data[col.range.clone()], budget)?.ok_or(CheckError::TooLarge {
            what: "the message's compressed data, inflated,",
            limit: limits.max_inflated_bytes as u64,
            unit: "bytes",
        })?;
        total += len;
    }
    add_inflated(inflated, total, limits)?;
    let loaded = std::panic::catch_unwind(|| {
        Automerge::load_with_options(
            chunk,
            automerge::LoadOptions::new().on_partial_load(automerge::OnPartialLoad::Error),
        )
    });
    match loaded {
        Ok(Ok(am)) => Ok(am),
        Ok(Err(e)) => Err(CheckError::malformed(e.to_string())),
        Err(_) => Err(CheckError::malformed("automerge panicked loading it")),
    }
}

/// A loaded document's changes, each checked against `limits`.
fn push_changes(
    am: &Automerge,
    limits: &Limits,
    out: &mut Vec<CheckedChange>,
) -> Result<(), CheckError> {
    for change in am.get_changes(&[]) {
        if change.raw_bytes().len() > limits.max_change_bytes {
            return Err(too_large_change(limits));
        }
        check_ops(&change, limits)?;
        let raw = Bytes::copy_from_slice(change.raw_bytes());
        out.push(CheckedChange::new(change, raw)?);
    }
    Ok(())
}

/// One column of a document chunk.
#[derive(Debug)]
struct Column {
    deflated: bool,
    range: std::ops::Range<usize>,
}

/// The columns of a document chunk's data (everything after its header): actors, heads, the
/// change and operation column metadata, then the columns themselves, in that order.
fn document_columns(data: &[u8]) -> Result<Vec<Column>, CheckError> {
    let bad = || CheckError::malformed("a document chunk's layout does not parse");
    let mut at = 0;
    let uleb = |at: &mut usize| -> Result<u64, CheckError> {
        let (v, n) = read_uleb(data.get(*at..).ok_or_else(bad)?).ok_or_else(bad)?;
        *at += n;
        Ok(v)
    };
    let actors = uleb(&mut at)?;
    for _ in 0..actors {
        let len = uleb(&mut at)?;
        at = usize::try_from(len)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|e| *e <= data.len())
            .ok_or_else(bad)?;
    }
    let heads = uleb(&mut at)?;
    at = usize::try_from(heads)
        .ok()
        .and_then(|h| h.checked_mul(32))
        .and_then(|l| at.checked_add(l))
        .filter(|e| *e <= data.len())
        .ok_or_else(bad)?;
    let mut specs = Vec::new();
    for _ in 0..2 {
        let n = uleb(&mut at)?;
        for _ in 0..n {
            let spec = uleb(&mut at)?;
            let len = uleb(&mut at)?;
            specs.push((spec & 0b1000 != 0, len));
            if specs.len() > data.len() {
                return Err(bad());
            }
        }
    }
    let mut columns = Vec::with_capacity(specs.len());
    for (deflated, len) in specs {
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|e| *e <= data.len())
            .ok_or_else(bad)?;
        columns.push(Column {
            deflated,
            range: at..end,
        });
        at = end;
    }
    Ok(columns)
}
