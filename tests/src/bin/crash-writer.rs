//! `crash-writer`: the child process of the crash-safety test (`tests/tests/crash_safety.rs`).
//!
//! Usage: `crash-writer <store file>`.
//!
//! Opens the store, loads its one document (or starts it), prints `ready <changes loaded>`,
//! then loops until killed: makes one to three changes, each appending a message to the
//! document's `log` list and submitted as its own chunk through [`GroupCommit`], waits until
//! they are durable and only then prints `ack <change hash>` for each. Every 50 changes it also
//! compacts: one snapshot replacing every chunk it loaded or wrote, then prints `compacted`.
//! The parent kills it with SIGKILL at a random moment and checks that every acknowledged
//! change survived.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use rand::Rng;
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{
    ActorId, Automerge, AutomergeError, ChangeHash, ObjType, ReadDoc, ROOT,
};
use weft_core::store::docs;
use weft_core::{ChunkKind, DocId, GroupCommit, RedbStore, WriteBatch};

/// The one document the writer works on.
const DOC: DocId = DocId::from_bytes(*b"crash-test-doc!!");
const COMPACT_EVERY: u64 = 50;

fn main() -> Result<()> {
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .context("usage: crash-writer <store file>")?
        .into();
    let store =
        Arc::new(RedbStore::open(&path).with_context(|| format!("opening {}", path.display()))?);
    let (doc, mut keys) = docs::load_document(&*store, DOC)
        .context("loading the document")?
        .unwrap_or_else(|| (Automerge::new(), Vec::new()));
    // Changes of an earlier run that were never acknowledged may be lost: never reuse its actor.
    let mut doc = doc.with_actor(ActorId::random());
    let group = GroupCommit::new(store).context("starting the writer thread")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {}", doc.get_changes(&[]).len())?;
    out.flush()?;

    let mut rng = rand::rng();
    let mut made = 0u64;
    let mut next_compaction = COMPACT_EVERY;
    loop {
        let mut in_flight = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            let (hash, bytes) = append(&mut doc, &format!("message {made}"))?;
            made += 1;
            let mut batch = WriteBatch::new();
            keys.push(docs::put_chunk(
                &mut batch,
                DOC,
                ChunkKind::Incremental,
                bytes,
            ));
            in_flight.push((hash, group.submit(batch)));
        }
        for (hash, ticket) in in_flight {
            ticket.wait().context("committing a change")?;
            writeln!(out, "ack {hash}")?;
        }
        out.flush()?;
        if made >= next_compaction {
            next_compaction += COMPACT_EVERY;
            let mut batch = WriteBatch::new();
            let snapshot = docs::compact(&mut batch, DOC, doc.save(), &keys);
            group.submit(batch).wait().context("compacting")?;
            keys = vec![snapshot];
            writeln!(out, "compacted")?;
            out.flush()?;
        }
    }
}

/// Append `text` to the `log` list: one change. Returns its hash and raw bytes.
fn append(doc: &mut Automerge, text: &str) -> Result<(ChangeHash, Vec<u8>)> {
    let log = doc.get(ROOT, "log")?.map(|(_, id)| id);
    let outcome = doc
        .transact::<_, _, AutomergeError>(|tx| {
            let log = match log {
                Some(id) => id,
                None => tx.put_object(ROOT, "log", ObjType::List)?,
            };
            let end = tx.length(&log);
            tx.insert(&log, end, text)?;
            Ok(())
        })
        .map_err(|failure| failure.error)
        .context("making a change")?;
    let hash = outcome.hash.context("an insert made no change")?;
    let change = doc
        .get_change_by_hash(&hash)
        .context("the change just made is missing")?;
    Ok((hash, change.raw_bytes().to_vec()))
}
