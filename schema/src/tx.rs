//! One typed write as one Automerge change.

use automerge::transaction::{CommitOptions, Transaction};
use automerge::Automerge;

use crate::error::WriteError;

/// Runs `f` in a transaction stamped with `wall_ms`: committed when it returns `Ok` (a
/// transaction that made no operation creates no change), rolled back otherwise.
pub(crate) fn transact<R>(
    doc: &mut Automerge,
    wall_ms: u64,
    message: Option<&str>,
    f: impl FnOnce(&mut Transaction<'_>) -> Result<R, WriteError>,
) -> Result<R, WriteError> {
    let mut tx = doc.transaction();
    match f(&mut tx) {
        Ok(r) => {
            // Automerge's change time is advisory, in seconds.
            let mut opts = CommitOptions::default().with_time((wall_ms / 1000) as i64);
            if let Some(m) = message {
                opts = opts.with_message(m);
            }
            tx.commit_with(opts);
            Ok(r)
        }
        Err(e) => {
            tx.rollback();
            Err(e)
        }
    }
}
