//! The staging log of [`RedbStore`](super::RedbStore): small puts appended in commit order
//! instead of written into their tables' B-trees.
//!
//! # Why
//!
//! A put into a B-tree keyed by document copies the leaf page it lands in (redb is
//! copy-on-write), checksums it and writes it: a whole page of I/O and its checksum for a
//! 200-byte change, because concurrent writes to many documents touch a different leaf each.
//! Appending to a log keyed by a sequence number touches only the rightmost leaf, so a commit
//! of hundreds of changes writes a handful of pages (BENCHMARKS.md has the measured costs of
//! both).
//!
//! # How
//!
//! - The log is one redb table, `staged_log`: `u64` sequence number to an encoded [`Entry`].
//!   A staged put is [`Entry::Put`]; deleting or overwriting a staged key appends a tombstone
//!   ([`Entry::Delete`], [`Entry::DeletePrefix`]). The log is written in the same transaction
//!   as the rest of the batch, so it shares redb's atomicity and durability.
//! - An in-memory index maps each live staged `(table, key)` to the sequence number of its
//!   put. Replaying the log in order on open rebuilds it exactly.
//! - Reads consult the index, then the table. The index is kept as [`Layers`]: a base map plus
//!   the changes of each recent commit that appended to the log, each identified by the log's
//!   last sequence number after that commit. A reader opens a redb read transaction, reads the
//!   log's last sequence number in it, and looks up through the layers up to that commit. So a
//!   read sees the index of exactly the commit its transaction sees, and never waits for a
//!   commit in flight (whose layer is published before it commits). Older layers are folded
//!   into the base; a reader whose transaction is older than the base starts a new one.
//!   (A persistent map with one version per commit, tried first, cost a copied 64-entry node
//!   per insert, more than the layers' lookups.)
//! - When the log outgrows its [`StagingLimits`], the commit that grew it also cleans its
//!   oldest entries: a put still live is written into its table, everything else (dead puts,
//!   tombstones) is dropped, and the range is deleted from the log. Puts that die young (chunks
//!   a compaction replaces, sync states rewritten) never reach their table's B-tree.

use std::collections::{BTreeMap, VecDeque};

use super::Table;

mod log;

pub(super) use self::log::{DecodeError, Entry, LOG};

/// Live staged keys, as [`ikey`]s (table tag, then key), to the sequence number of the put that
/// holds the value.
pub(super) type Index = BTreeMap<IKey, u64>;

/// One commit's changes to the index: a new sequence number, or `None` for a key no longer
/// staged.
pub(super) type Delta = BTreeMap<IKey, Option<u64>>;

/// A table's one-byte tag in index keys ([`Table::tag`]; a store's tables have distinct tags).
fn tag(table: Table) -> u8 {
    table.tag()
}

/// Bytes an [`IKey`] holds inline: chunk keys take 50 with their tag, sync-state keys fewer.
const INLINE_KEY: usize = 62;

/// An index key: the table's tag byte, then the key; ordered, compared and looked up as those
/// bytes. Short keys (all that weft writes) live inside the value, so the index's B-tree nodes
/// hold the bytes they compare instead of pointers to them, and making one allocates nothing:
/// with `Vec<u8>` keys the writer's index updates were a visible share of the relay's CPU
/// under load, most of it chasing pointers in comparisons.
#[derive(Clone)]
pub(super) enum IKey {
    /// `bytes[..len]`.
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    /// A key too long to fit inline.
    Heap(Box<[u8]>),
}

impl std::ops::Deref for IKey {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            IKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            IKey::Heap(bytes) => bytes,
        }
    }
}

impl std::borrow::Borrow<[u8]> for IKey {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl PartialEq for IKey {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for IKey {}

impl PartialOrd for IKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl std::fmt::Debug for IKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

/// The index key of `(table, key)`: tag byte, then the key. Byte order sorts by table, then key.
pub(super) fn ikey(table: Table, key: &[u8]) -> IKey {
    if key.len() < INLINE_KEY {
        let mut bytes = [0u8; INLINE_KEY];
        bytes[0] = tag(table);
        bytes[1..=key.len()].copy_from_slice(key);
        // Fits: key.len() + 1 <= INLINE_KEY < 256.
        IKey::Inline {
            len: (key.len() + 1) as u8,
            bytes,
        }
    } else {
        let mut k = Vec::with_capacity(1 + key.len());
        k.push(tag(table));
        k.extend_from_slice(key);
        IKey::Heap(k.into_boxed_slice())
    }
}

/// How large the staging log may grow, which puts go to it, and how much memory redb may keep
/// as its page cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StagingLimits {
    /// Bytes of pages redb keeps in memory. Its own default, 1 GiB, let a long-running process
    /// keep every page it wrote or read until then: the relay's memory grew ~50 KiB per
    /// document it ever served, evicted or not (`weft-bench memory`).
    pub cache_bytes: usize,
    /// Puts whose value is longer than this are written into their table directly.
    pub max_value: usize,
    /// Entries (live or not) the log may hold before a commit cleans its oldest.
    pub max_entries: u64,
    /// Bytes of encoded entries the log may hold before a commit cleans its oldest.
    pub max_bytes: u64,
}

impl Default for StagingLimits {
    /// Sized for a device: 16 KiB values; 32,768 entries or 16 MiB, so the index (~120 bytes
    /// per live entry) stays under ~4 MiB; a 16 MiB page cache.
    fn default() -> Self {
        StagingLimits {
            cache_bytes: 16 * 1024 * 1024,
            max_value: 16 * 1024,
            max_entries: 32 * 1024,
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

impl StagingLimits {
    /// Sized for a relay: 524,288 entries or 256 MiB, an index of up to ~60 MiB. A change
    /// stays in the log until a compaction replaces it or it is cleaned into its table; the
    /// log must hold the changes written between a busy document's compactions, or cleaning
    /// moves most entries and staging costs more than it saves (a quarter of these entries
    /// was too few for the relay's throughput benchmark; see BENCHMARKS.md). A 64 MiB page
    /// cache.
    pub fn large() -> StagingLimits {
        StagingLimits {
            cache_bytes: 64 * 1024 * 1024,
            max_value: 16 * 1024,
            max_entries: 512 * 1024,
            max_bytes: 256 * 1024 * 1024,
        }
    }

    /// Limits with `max_entries` and `max_bytes` set; for tests that need the log cleaned often.
    pub fn with_capacity(max_entries: u64, max_bytes: u64) -> StagingLimits {
        StagingLimits {
            max_entries: max_entries.max(1),
            max_bytes: max_bytes.max(1),
            ..StagingLimits::default()
        }
    }

    /// Whether a put of this key and value is staged.
    pub(super) fn stages(&self, key: &[u8], value: &[u8]) -> bool {
        value.len() <= self.max_value && key.len() <= usize::from(u16::MAX)
    }

    /// Whether one batch may stage another put: a batch stages at most a quarter of the log's
    /// limits, and writes the rest of its puts directly. Otherwise a batch as large as the log
    /// would leave it over its limits by itself, and that commit and the next would clean every
    /// older entry, live ones included.
    pub(super) fn batch_has_room(&self, before: &LogState, now: &LogState) -> bool {
        now.entries.saturating_sub(before.entries) < self.max_entries / 4
            && now.bytes.saturating_sub(before.bytes) < self.max_bytes / 4
    }
}

/// The staged keys of `table` starting with `prefix`, in key order, with their sequence numbers.
pub(super) fn staged_in(index: &Index, table: Table, prefix: &[u8]) -> Vec<(Vec<u8>, u64)> {
    range_of(index, &ikey(table, prefix))
        .map(|(k, seq)| (k[1..].to_vec(), *seq))
        .collect()
}

/// The entries of `map` whose index keys start with `start` (an index key of a prefix).
fn range_of<'m, V>(
    map: &'m BTreeMap<IKey, V>,
    start: &[u8],
) -> impl Iterator<Item = (&'m IKey, &'m V)> {
    let owned = start.to_vec();
    map.range::<[u8], _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(&owned))
}

fn staged_keys(index: &Index, table: Table, prefix: &[u8]) -> Vec<Vec<u8>> {
    staged_in(index, table, prefix)
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// The staging index as a base plus the deltas of recent commits, oldest first, each with
/// the log's last sequence number after its commit.
#[derive(Debug, Default)]
pub(super) struct Layers {
    base_last: u64,
    base: Index,
    deltas: VecDeque<(u64, Delta)>,
}

/// Deltas kept unfolded after a commit, so readers whose transactions are a few commits old
/// still find their layer.
const DELTAS_KEPT: usize = 4;

/// The index as of one commit: the base and the deltas up to that commit.
pub(super) struct View<'a> {
    base: &'a Index,
    deltas: Vec<&'a Delta>,
}

impl Layers {
    pub(super) fn new(last_seq: u64, base: Index) -> Layers {
        Layers {
            base_last: last_seq,
            base,
            deltas: VecDeque::new(),
        }
    }

    /// The index as of the commit after which the log's last sequence number was `last_seq`;
    /// `None` if that commit's layer is already folded away.
    pub(super) fn view(&self, last_seq: u64) -> Option<View<'_>> {
        let upto = if last_seq == self.base_last {
            0
        } else {
            1 + self.deltas.iter().position(|(seq, _)| *seq == last_seq)?
        };
        Some(View {
            base: &self.base,
            deltas: self.deltas.iter().take(upto).map(|(_, d)| d).collect(),
        })
    }

    /// The index after the newest commit (or the one in flight).
    pub(super) fn latest(&self) -> View<'_> {
        View {
            base: &self.base,
            deltas: self.deltas.iter().map(|(_, d)| d).collect(),
        }
    }

    /// Publish the delta of a commit about to be made.
    pub(super) fn push(&mut self, last_seq: u64, delta: Delta) {
        self.deltas.push_back((last_seq, delta));
    }

    /// Withdraw the delta of a commit that failed.
    pub(super) fn pop(&mut self, last_seq: u64) {
        if self.deltas.back().is_some_and(|(s, _)| *s == last_seq) {
            self.deltas.pop_back();
        }
    }

    /// Fold all but the newest few deltas into the base.
    pub(super) fn fold(&mut self) {
        while self.deltas.len() > DELTAS_KEPT {
            let Some((last, delta)) = self.deltas.pop_front() else {
                break;
            };
            for (key, seq) in delta {
                match seq {
                    Some(seq) => self.base.insert(key, seq),
                    None => self.base.remove(&key),
                };
            }
            self.base_last = last;
        }
    }
}

impl View<'_> {
    /// The sequence number of `(table, key)`'s staged put, if it is staged; `delta` (the
    /// writer's own uncommitted changes) goes over the view.
    pub(super) fn get(&self, delta: &Delta, table: Table, key: &[u8]) -> Option<u64> {
        let k = ikey(table, key);
        if let Some(seq) = delta.get(&k) {
            return *seq;
        }
        for d in self.deltas.iter().rev() {
            if let Some(seq) = d.get(&k) {
                return *seq;
            }
        }
        self.base.get(&k).copied()
    }

    /// The staged keys of `table` starting with `prefix`, in key order, with their sequence
    /// numbers; `delta` goes over the view.
    pub(super) fn staged_in(
        &self,
        delta: &Delta,
        table: Table,
        prefix: &[u8],
    ) -> Vec<(Vec<u8>, u64)> {
        let mut out: BTreeMap<Vec<u8>, u64> =
            staged_in(self.base, table, prefix).into_iter().collect();
        let start = ikey(table, prefix);
        for d in self.deltas.iter().copied().chain(std::iter::once(delta)) {
            for (key, seq) in range_of(d, &start) {
                match seq {
                    Some(seq) => out.insert(key[1..].to_vec(), *seq),
                    None => out.remove(&key[1..]),
                };
            }
        }
        out.into_iter().collect()
    }
}

/// The log's extent, kept by the writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct LogState {
    /// The sequence number of the next entry.
    pub next_seq: u64,
    /// The oldest entry's sequence number (`next_seq` when the log is empty).
    pub first_seq: u64,
    /// Entries in the log.
    pub entries: u64,
    /// Bytes of encoded entries in the log.
    pub bytes: u64,
}

impl LogState {
    pub(super) fn over(&self, limits: &StagingLimits) -> bool {
        self.entries > limits.max_entries || self.bytes > limits.max_bytes
    }

    /// Whether cleaning may stop: the log is back under 7/8 of its limits.
    pub(super) fn clean_enough(&self, limits: &StagingLimits) -> bool {
        self.entries <= limits.max_entries - limits.max_entries / 8
            && self.bytes <= limits.max_bytes - limits.max_bytes / 8
    }
}

#[cfg(test)]
mod tests;
