//! The documents waiting for a checkpoint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use weft_core::DocId;

/// The documents changed since their last checkpoint, each with when it first became dirty.
/// Shared by the hub (which marks) and the checkpointer (which takes).
#[derive(Debug, Default)]
pub struct DirtyDocs {
    inner: Mutex<HashMap<DocId, Instant>>,
}

impl DirtyDocs {
    /// An empty set.
    pub fn new() -> Arc<DirtyDocs> {
        Arc::new(DirtyDocs::default())
    }

    /// Marks `doc` changed (keeping the earliest time if it already is). One map insert under
    /// a mutex never held across an await: cheap enough for the hub's loop.
    pub fn mark(&self, doc: DocId) {
        self.lock().entry(doc).or_insert_with(Instant::now);
    }

    /// How many documents wait for a checkpoint.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DocId, Instant>> {
        // The map stays consistent whatever panicked while holding it: a plain insert/remove.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn take(&self, ready: impl Fn(&DocId) -> bool) -> Vec<(DocId, Instant)> {
        let mut map = self.lock();
        let docs: Vec<DocId> = map.keys().filter(|d| ready(d)).copied().collect();
        docs.into_iter()
            .filter_map(|d| map.remove(&d).map(|t| (d, t)))
            .collect()
    }

    pub(super) fn put_back(&self, docs: impl IntoIterator<Item = (DocId, Instant)>) {
        let mut map = self.lock();
        for (doc, since) in docs {
            let t = map.entry(doc).or_insert(since);
            *t = (*t).min(since);
        }
    }

    pub(super) fn oldest(&self) -> Option<Instant> {
        self.lock().values().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: DocId = DocId::from_bytes([1; 16]);
    const B: DocId = DocId::from_bytes([2; 16]);

    #[test]
    fn a_document_marked_twice_keeps_its_first_time_and_a_failed_take_is_put_back() {
        let dirty = DirtyDocs::default();
        dirty.mark(A);
        let first = dirty.oldest().unwrap();
        dirty.mark(A);
        dirty.mark(B);
        assert_eq!(dirty.len(), 2);
        assert_eq!(dirty.oldest(), Some(first));

        let taken = dirty.take(|d| *d == A);
        assert_eq!(taken.iter().map(|(d, _)| *d).collect::<Vec<_>>(), [A]);
        assert_eq!(dirty.len(), 1);
        // A changes again while its checkpoint fails: the earlier time wins when it goes back.
        dirty.mark(A);
        dirty.put_back(taken);
        assert_eq!(dirty.oldest(), Some(first));
        assert_eq!(dirty.take(|_| true).len(), 2);
        assert!(dirty.is_empty());
    }
}
