//! A damaged file gives errors, never panics.

use super::*;

/// Opening must give an error, or a store whose reads and writes give errors or data —
/// never a panic.
fn open_and_use(path: &Path) -> Result<(), StoreError> {
    let store = RedbStore::open(path)?;
    for table in Table::CORE {
        store.scan_prefix(table, b"")?;
        store.get(table, b"key 7")?;
    }
    store.write(&put(Table::CHUNKS, b"after", b"damage"))?;
    store.scan_prefix(Table::CHUNKS, b"")?;
    Ok(())
}

fn filled_store(path: &Path) {
    let store = RedbStore::open(path).unwrap();
    for i in 0..200u32 {
        let mut b = WriteBatch::new();
        b.put(
            Table::CHUNKS,
            format!("key {i}").into_bytes(),
            vec![i as u8; 100 + (i as usize * 37) % 3000],
        );
        store.write(&b).unwrap();
    }
}

#[test]
fn garbage_files_are_reported_as_corrupt_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let sizes = [1usize, 7, 100, 511, 4096, 4097, 65536, 1 << 20];
    for (i, size) in sizes.into_iter().enumerate() {
        for fill in ["zeros", "random", "ones"] {
            let path = dir.path().join(format!("garbage-{i}-{fill}.redb"));
            let bytes: Vec<u8> = match fill {
                "zeros" => vec![0; size],
                "ones" => vec![0xff; size],
                _ => (0..size).map(|_| next() as u8).collect(),
            };
            fs::write(&path, &bytes).unwrap();
            let err = RedbStore::open(&path).expect_err("garbage opened as a store");
            assert!(
                matches!(err, StoreError::Corrupt { .. }),
                "{size} bytes of {fill}: {err:?}"
            );
            assert!(
                err.to_string().contains(&format!("garbage-{i}-{fill}")),
                "{err}"
            );
        }
    }
}

#[test]
fn truncated_files_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("full.redb");
    filled_store(&original);
    let full = fs::read(&original).unwrap();
    let mut cuts: Vec<usize> = vec![1, 8, 64, 511, 512, 4095, 4096, 4097, 8192, 12288];
    cuts.extend((1..16).map(|i| full.len() * i / 16));
    cuts.push(full.len() - 1);
    for cut in cuts {
        let path = dir.path().join(format!("cut-{cut}.redb"));
        fs::write(&path, &full[..cut]).unwrap();
        // redb records the file's length, so any cut is caught on open.
        let err = open_and_use(&path).expect_err("a truncated store opened");
        assert!(
            matches!(err, StoreError::Corrupt { .. }),
            "cut at {cut}: {err:?}"
        );
    }
}

#[test]
fn overwritten_regions_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("full.redb");
    filled_store(&original);
    let full = fs::read(&original).unwrap();
    let step = (full.len() / 24).max(1);
    for start in (0..full.len()).step_by(step) {
        for fill in [0x00u8, 0xa5] {
            let mut damaged = full.clone();
            let end = (start + 4096).min(damaged.len());
            damaged[start..end].fill(fill);
            let path = dir.path().join(format!("hole-{start}-{fill}.redb"));
            fs::write(&path, &damaged).unwrap();
            // A hole in pages no longer in use is harmless; one in live data is corruption.
            if let Err(err) = open_and_use(&path) {
                assert!(
                    matches!(err, StoreError::Corrupt { .. }),
                    "hole at {start}: {err:?}"
                );
            }
        }
    }
}
