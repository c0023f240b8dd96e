//! Staging is invisible: any sequence of batches, with reopens between them (some of them
//! rewriting the file after a scrub) and a log small enough to be cleaned often, reads back
//! exactly as the in-memory model store does.

use proptest::prelude::*;

use super::*;
use crate::store::{KvStore, MemStore, WriteBatch};

#[derive(Clone, Debug)]
enum Op {
    Put(usize, u8, usize, u8),
    Delete(usize, u8),
    DeletePrefix(usize, u8),
    /// Ask for a scrub: the next reopen rewrites the file.
    Scrub,
    Reopen,
}

const TABLES: [Table; 2] = [Table::CHUNKS, Table::SYNC_STATES];

fn key(k: u8) -> Vec<u8> {
    // Two-byte keys over a small space, so prefixes, overwrites and deletes collide.
    vec![b'a' + (k % 3), b'0' + (k / 3 % 4)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, any::<u8>(), prop_oneof![4 => 0..40usize, 1 => 70..90usize], any::<u8>())
            .prop_map(|(t, k, len, fill)| Op::Put(t, k, len, fill)),
        2 => (0..2usize, any::<u8>()).prop_map(|(t, k)| Op::Delete(t, k)),
        1 => (0..2usize, any::<u8>()).prop_map(|(t, k)| Op::DeletePrefix(t, k)),
        1 => Just(Op::Scrub),
        1 => Just(Op::Reopen),
    ]
}

fn cases() -> u32 {
    std::env::var("WEFT_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn the_staged_store_reads_like_the_model(
        batches in prop::collection::vec(prop::collection::vec(op(), 1..6), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        // Values over 64 bytes go direct, and so do puts beyond 4 entries or 300 bytes in
        // one batch; the log is cleaned past 16 entries or 1,200 bytes.
        let limits = StagingLimits { max_value: 64, ..StagingLimits::with_capacity(16, 1200) };
        let mut store = RedbStore::open_with(&path, limits).unwrap();
        let model = MemStore::new();
        for ops in batches {
            let mut batch = WriteBatch::new();
            for op in ops {
                match op {
                    Op::Put(t, k, len, fill) => {
                        batch.put(TABLES[t], key(k), vec![fill; len]);
                    }
                    Op::Delete(t, k) => {
                        batch.delete(TABLES[t], key(k));
                    }
                    Op::DeletePrefix(t, k) => {
                        batch.delete_prefix(TABLES[t], key(k)[..1].to_vec());
                    }
                    Op::Scrub => {
                        batch.scrub();
                    }
                    Op::Reopen => {
                        drop(store);
                        store = RedbStore::open_with(&path, limits).unwrap();
                    }
                }
            }
            store.write(&batch).unwrap();
            model.write(&batch).unwrap();
            for table in TABLES {
                prop_assert_eq!(
                    store.scan_prefix(table, b"").unwrap(),
                    model.scan_prefix(table, b"").unwrap()
                );
                prop_assert_eq!(
                    store.scan_keys(table, b"b").unwrap(),
                    model.scan_keys(table, b"b").unwrap()
                );
                for k in 0..12u8 {
                    prop_assert_eq!(
                        store.get(table, &key(k)).unwrap(),
                        model.get(table, &key(k)).unwrap()
                    );
                }
            }
            let state = *lock(&store.writer);
            // A batch stages at most 4 puts plus its tombstones (at most 6 ops in all).
            prop_assert!(state.entries <= 16 + 6 && state.bytes <= 1200 + 6 * 120,
                "the log is not cleaned: {state:?}");
        }
    }
}
