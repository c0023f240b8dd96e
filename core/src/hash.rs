//! Hash maps and sets for the hot path: `std`'s types with foldhash's per-process seeded
//! hasher instead of SipHash. Keys here are ids (16-byte documents, 32-byte change hashes)
//! that peers choose, so the hasher stays seeded; it is not meant to be cryptographic.
//!
//! Build them with `default()` (or `collect()`), not `new()`.

/// [`std::collections::HashMap`] with foldhash.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// [`std::collections::HashSet`] with foldhash.
pub type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
