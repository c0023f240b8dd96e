//! Saves off the driver's thread. Saving a large document takes long (~65 ms per MB saved) and
//! the driver's thread serves every document, so the host hands the driver a copy of the
//! document to save elsewhere ([`Action::Save`]) when it is large: the whole document for a
//! newcomer (asked by the engine) and a compaction's snapshot (the host's own).

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{Action, Host};
use crate::engine::{Millis, WholeJob, WholeMade};
use crate::store::docs::ChunkKey;
use crate::{DocId, Document};

/// A save for the driver to run on a blocking thread ([`SaveJob::run`]), then hand back to
/// [`Host::saved`].
pub struct SaveJob(Job);

enum Job {
    Whole(WholeJob),
    Compact {
        doc: DocId,
        copy: Box<Document>,
        /// The chunks the snapshot replaces (their changes are all in `copy`).
        replaces: Vec<ChunkKey>,
        /// Which compaction of the document this is (see [`Host::saved`]).
        epoch: u64,
    },
}

/// What a [`SaveJob`] made.
pub struct Saved(Done);

enum Done {
    Whole(WholeMade),
    Compact {
        doc: DocId,
        /// `None` when saving failed.
        snapshot: Option<Vec<u8>>,
        replaces: Vec<ChunkKey>,
        epoch: u64,
    },
}

impl SaveJob {
    /// The document.
    pub fn doc(&self) -> DocId {
        match &self.0 {
            Job::Whole(job) => job.doc(),
            Job::Compact { doc, .. } => *doc,
        }
    }

    /// Whether a peer waits for this save (a whole document for a newcomer), rather than a
    /// compaction that only tidies the store.
    pub fn for_newcomer(&self) -> bool {
        matches!(self.0, Job::Whole(_))
    }

    /// Saves (blocking). Never panics: a failed save comes back as such.
    pub fn run(self) -> Saved {
        match self.0 {
            Job::Whole(job) => Saved(Done::Whole(job.run())),
            Job::Compact {
                doc,
                copy,
                replaces,
                epoch,
            } => {
                let snapshot = catch_unwind(AssertUnwindSafe(|| copy.save())).ok();
                Saved(Done::Compact {
                    doc,
                    snapshot,
                    replaces,
                    epoch,
                })
            }
        }
    }
}

impl fmt::Debug for SaveJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Job::Whole(job) => job.fmt(f),
            Job::Compact { doc, replaces, .. } => f
                .debug_struct("Compact")
                .field("doc", doc)
                .field("replaces", &replaces.len())
                .finish_non_exhaustive(),
        }
    }
}

impl fmt::Debug for Saved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Done::Whole(made) => made.fmt(f),
            Done::Compact { doc, snapshot, .. } => f
                .debug_struct("Compacted")
                .field("doc", doc)
                .field("bytes", &snapshot.as_ref().map(Vec::len))
                .finish_non_exhaustive(),
        }
    }
}

impl Host {
    /// The engine asks for a whole-document message: the driver makes it.
    pub(super) fn save_whole(&mut self, job: WholeJob) {
        self.actions
            .push_back(Action::Save(SaveJob(Job::Whole(job))));
    }

    /// Compacts `doc` from a copy saved by the driver, when the document is large enough for
    /// that to pay; `false` when the caller should save in place.
    pub(super) fn compact_elsewhere(&mut self, doc: DocId, stored_bytes: usize) -> bool {
        if stored_bytes < self.cfg.compact_off_thread_from {
            return false;
        }
        let Some(copy) = self.engine.copy(doc) else {
            return false;
        };
        // Every recorded chunk is in the copy. They stay the document's until the snapshot
        // replaces them ([`Host::compact`]).
        let replaces = self
            .chunks
            .get(&doc)
            .map(|s| s.chunks.clone())
            .unwrap_or_default();
        self.next_save += 1;
        let epoch = self.next_save;
        self.compacting.insert(doc, replaces.len());
        self.saving.insert(doc, epoch);
        self.actions.push_back(Action::Save(SaveJob(Job::Compact {
            doc,
            copy,
            replaces,
            epoch,
        })));
        true
    }

    /// `doc` left memory: a compaction being saved for it is not written.
    pub(super) fn forget_save(&mut self, doc: DocId) {
        if self.saving.remove(&doc).is_some() {
            self.compacting.remove(&doc);
        }
    }

    /// A [`SaveJob`] finished, at `now`. A compaction's snapshot is written unless the
    /// document left memory (evicted, failed, forgotten) since the copy was taken: its chunks
    /// may have been reloaded, compacted or erased meanwhile, and the snapshot is not needed
    /// to lose nothing (the chunks hold every change).
    pub fn saved(&mut self, now: Millis, saved: Saved) {
        self.engine.set_now(now);
        match saved.0 {
            Done::Whole(made) => self.engine.whole_made(made),
            Done::Compact {
                doc,
                snapshot,
                replaces,
                epoch,
            } => {
                if self.saving.get(&doc) != Some(&epoch) {
                    return;
                }
                self.saving.remove(&doc);
                self.compacting.remove(&doc);
                match snapshot {
                    Some(snapshot) => self.compact(doc, snapshot, replaces),
                    None => {
                        tracing::error!(%doc, "saving a document to compact it panicked; its chunks stay as they are");
                    }
                }
            }
        }
    }
}
