//! Hash maps and sets for the hot path: `std`'s types with foldhash's seeded hasher instead of
//! SipHash. Keys here are ids (16-byte documents, 32-byte change hashes) that peers choose, so
//! the hasher stays randomly seeded; it is not meant to be cryptographic.
//!
//! Build them with `default()` (or `collect()`), not `new()`.
//!
//! The engine's outputs follow these maps' iteration order in places (the documents a tick
//! visits, the connections a change fans out to), so a random seed makes two runs of the same
//! inputs differ. A simulator that must replay a seed calls [`deterministic_on_this_thread`]
//! first; nothing else does.

use std::cell::Cell;
use std::hash::BuildHasher;

use foldhash::fast::{FoldHasher, SeedableRandomState};

/// [`std::collections::HashMap`] with foldhash.
pub type HashMap<K, V> = std::collections::HashMap<K, V, State>;

/// [`std::collections::HashSet`] with foldhash.
pub type HashSet<K> = std::collections::HashSet<K, State>;

thread_local! {
    static FIXED: Cell<bool> = const { Cell::new(false) };
}

/// Maps built on this thread from now on hash with a fixed seed, so the same operations
/// iterate in the same order in every run (for a seeded simulator; never for peer-facing use).
pub fn deterministic_on_this_thread() {
    FIXED.with(|f| f.set(true));
}

/// foldhash's hasher, seeded at random unless [`deterministic_on_this_thread`] was called.
#[derive(Clone, Debug)]
pub struct State(SeedableRandomState);

impl Default for State {
    fn default() -> Self {
        if FIXED.with(Cell::get) {
            State(SeedableRandomState::fixed())
        } else {
            State(SeedableRandomState::random())
        }
    }
}

impl BuildHasher for State {
    type Hasher = FoldHasher<'static>;

    #[inline(always)]
    fn build_hasher(&self) -> FoldHasher<'static> {
        self.0.build_hasher()
    }
}

/// Capacity below which a map is never shrunk: small tables are not worth rehashing.
const SHRINK_ABOVE: usize = 256;

/// Gives back a map's memory once it holds under a quarter of its capacity. A map keeps the
/// capacity of its fullest moment: one keyed by loaded documents would otherwise keep, for
/// good, a slot for every document that was ever loaded at once. O(len) when it shrinks;
/// call it from housekeeping, not per input.
pub fn shrink_if_sparse<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > SHRINK_ABOVE && map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
    }
}

/// [`shrink_if_sparse`] for a set.
pub fn shrink_set_if_sparse<K: Eq + std::hash::Hash>(set: &mut HashSet<K>) {
    if set.capacity() > SHRINK_ABOVE && set.len() < set.capacity() / 4 {
        set.shrink_to_fit();
    }
}
