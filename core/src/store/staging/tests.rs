use super::*;

/// A table of the store's user, next to core's.
const EXTRA: Table = Table::new("extra");
const TABLES: [Table; 5] = [
    Table::CHUNKS,
    Table::SYNC_STATES,
    Table::DOC_META,
    Table::GATE_RECORDS,
    EXTRA,
];

#[test]
fn entries_round_trip_and_damaged_ones_are_errors() {
    let entries = [
        Entry::Put {
            table: Table::CHUNKS,
            key: b"k1",
            value: b"value",
        },
        Entry::Put {
            table: Table::SYNC_STATES,
            key: b"",
            value: b"",
        },
        Entry::Delete {
            table: Table::DOC_META,
            key: b"k2",
        },
        Entry::DeletePrefix {
            table: EXTRA,
            prefix: b"",
        },
    ];
    for entry in &entries {
        let bytes = entry.encode();
        assert_eq!(&Entry::decode(&bytes, &TABLES).unwrap(), entry);
        for cut in 0..bytes.len().min(12) {
            if let Ok(e) = Entry::decode(&bytes[..cut], &TABLES) {
                // A put cut inside its value is still a put, of a shorter value.
                assert!(matches!(e, Entry::Put { .. }), "{e:?}");
            }
        }
    }
    let mut unknown = entries[0].encode();
    unknown[0] = 9;
    assert!(Entry::decode(&unknown, &TABLES)
        .unwrap_err()
        .to_string()
        .contains("tag 9"));
    let mut bad_table = entries[0].encode();
    bad_table[2] = b'X';
    assert!(matches!(
        Entry::decode(&bad_table, &TABLES),
        Err(DecodeError::UnknownTable(_))
    ));
    // A table the store was not opened with is unknown, however well formed the entry.
    assert_eq!(
        Entry::decode(&entries[3].encode(), &Table::CORE),
        Err(DecodeError::UnknownTable("extra".to_string()))
    );
}

#[test]
fn layers_answer_as_of_each_kept_commit_and_fold_the_rest() {
    let key = |n: u8| vec![b'k', n];
    let mut base = Index::new();
    base.insert(ikey(Table::CHUNKS, &key(0)), 1);
    let mut layers = Layers::new(1, base);
    // Commit c (last sequence number c + 1) stages key c and unstages key c - 1.
    for c in 1..=8u8 {
        let mut delta = Delta::new();
        delta.insert(ikey(Table::CHUNKS, &key(c)), Some(u64::from(c) + 1));
        delta.insert(ikey(Table::CHUNKS, &key(c - 1)), None);
        layers.push(u64::from(c) + 1, delta);
        layers.fold();
    }
    let none = Delta::new();
    let staged = |view: &View<'_>| view.staged_in(&none, Table::CHUNKS, b"k");
    // The newest DELTAS_KEPT commits answer as of themselves.
    for c in (8 - DELTAS_KEPT as u8)..=8 {
        let view = layers.view(u64::from(c) + 1).expect("a kept layer");
        assert_eq!(
            staged(&view),
            vec![(key(c), u64::from(c) + 1)],
            "commit {c}"
        );
        assert_eq!(
            view.get(&none, Table::CHUNKS, &key(c)),
            Some(u64::from(c) + 1)
        );
        assert_eq!(view.get(&none, Table::SYNC_STATES, &key(c)), None);
    }
    // Older ones are folded away: their readers start again.
    assert!(layers.view(2).is_none());
    // A failed commit's layer is withdrawn; popping another number changes nothing.
    let mut delta = Delta::new();
    delta.insert(ikey(Table::CHUNKS, &key(9)), Some(10));
    layers.push(10, delta);
    layers.pop(11);
    assert!(layers.view(10).is_some());
    layers.pop(10);
    assert!(layers.view(10).is_none());
    assert_eq!(staged(&layers.latest()), vec![(key(8), 9)]);
    // The writer's own delta goes over the view.
    let mut mine = Delta::new();
    mine.insert(ikey(Table::CHUNKS, &key(8)), None);
    assert_eq!(layers.latest().get(&mine, Table::CHUNKS, &key(8)), None);
    assert!(layers
        .latest()
        .staged_in(&mine, Table::CHUNKS, b"")
        .is_empty());
}

/// Inline and heap keys order, compare and look up exactly as their bytes do, across the
/// inline limit and with one key a prefix of another.
#[test]
fn index_keys_behave_as_their_bytes() {
    let keys: Vec<Vec<u8>> = [0usize, 1, 2, 48, 60, 61, 62, 63, 200]
        .into_iter()
        .flat_map(|n| [vec![7u8; n], vec![9u8; n], [vec![7u8; n], vec![0]].concat()])
        .collect();
    let mut index = Index::new();
    for (seq, key) in keys.iter().enumerate() {
        index.insert(ikey(Table::CHUNKS, key), seq as u64);
    }
    let mut expected: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| [&[tag(Table::CHUNKS)][..], k].concat())
        .collect();
    expected.sort();
    expected.dedup();
    let got: Vec<Vec<u8>> = index.keys().map(|k| k.to_vec()).collect();
    assert_eq!(got, expected);
    for (seq, key) in keys.iter().enumerate() {
        let k = ikey(Table::CHUNKS, key);
        assert_eq!(
            &*k,
            &expected[expected.binary_search(&k.to_vec()).unwrap()][..]
        );
        assert!(matches!(k, IKey::Inline { .. }) == (key.len() < INLINE_KEY));
        // The last insert of equal bytes wins.
        let last = keys.iter().rposition(|other| other == key).unwrap();
        assert!(last >= seq);
        assert_eq!(index.get(&*k), Some(&(last as u64)));
    }
    assert!(!index.contains_key(&ikey(Table::SYNC_STATES, &[7u8; 2])[..]));
}

#[test]
fn replay_applies_puts_and_tombstones_in_order() {
    let mut index = Index::new();
    let log = [
        Entry::Put {
            table: Table::CHUNKS,
            key: b"a1",
            value: b"x",
        },
        Entry::Put {
            table: Table::CHUNKS,
            key: b"a2",
            value: b"x",
        },
        Entry::Put {
            table: Table::CHUNKS,
            key: b"b1",
            value: b"x",
        },
        Entry::Put {
            table: Table::SYNC_STATES,
            key: b"a1",
            value: b"x",
        },
        Entry::DeletePrefix {
            table: Table::CHUNKS,
            prefix: b"a",
        },
        Entry::Put {
            table: Table::CHUNKS,
            key: b"a3",
            value: b"x",
        },
        Entry::Delete {
            table: Table::CHUNKS,
            key: b"b1",
        },
    ];
    for (seq, entry) in log.iter().enumerate() {
        entry.replay(seq as u64 + 1, &mut index);
    }
    assert_eq!(
        staged_in(&index, Table::CHUNKS, b""),
        vec![(b"a3".to_vec(), 6)]
    );
    assert_eq!(
        staged_in(&index, Table::SYNC_STATES, b"a"),
        vec![(b"a1".to_vec(), 4)]
    );
}
