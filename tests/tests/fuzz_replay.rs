//! Replays every committed fuzz corpus file and every crash ever found through the fuzz targets'
//! logic, so CI exercises them on stable.
//!
//! `WEFT_WRITE_SEED_CORPUS=1` (re)writes the seed files this test generates into `fuzz/corpus/`.

use std::path::{Path, PathBuf};

use weft_core::automerge::sync::{self, SyncDoc};
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{Automerge, ObjType, ROOT};
use weft_core::fuzz_targets;
use weft_core::wire::{self, DocEntry, ErrorCode, Message};
use weft_core::{DeviceId, DocId, Role};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(target: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.path().is_file() && !e.file_name().to_string_lossy().starts_with('.') {
                    out.push(e.path());
                }
            }
        }
    }
    out.sort();
    out
}

fn replay(target: &str, f: fn(&[u8])) {
    let paths = files(target);
    assert!(
        !paths.is_empty(),
        "no corpus for {target}: run with WEFT_WRITE_SEED_CORPUS=1"
    );
    for p in paths {
        let data = std::fs::read(&p).expect("corpus file readable");
        let r = std::panic::catch_unwind(|| f(&data));
        assert!(
            r.is_ok(),
            "fuzz target {target} panicked on {}",
            p.display()
        );
    }
}

fn chat(n: usize, actor: u8) -> Automerge {
    let mut am = Automerge::new().with_actor(vec![actor; 16].into());
    let mut tx = am.transaction();
    let list = tx.put_object(ROOT, "messages", ObjType::List).unwrap();
    tx.commit();
    for i in 0..n {
        let mut tx = am.transaction();
        let m = tx.insert_object(&list, i, ObjType::Map).unwrap();
        tx.put(&m, "body", format!("message {i}")).unwrap();
        tx.commit();
    }
    am
}

fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let doc = DocId::from_bytes([1; 16]);
    let mut out = Vec::new();
    let msgs = [
        Message::Hello {
            protocol: 1,
            device: DeviceId::from_bytes([2; 32]),
            token: "a.b.c".into(),
            agent: "x".into(),
        },
        Message::Docs {
            full: true,
            added: vec![DocEntry {
                doc,
                role: Role::ReadWrite,
            }],
            removed: vec![doc],
        },
        Message::Error {
            code: ErrorCode::FORBIDDEN,
            doc: Some(doc),
            message: "refused".into(),
        },
        Message::Ack { doc, heads: vec![] },
        Message::Sync {
            doc,
            reset: false,
            data: vec![0x42, 0, 0, 0],
        },
    ];
    let mut stream = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let f = wire::frame(m, usize::MAX).unwrap();
        stream.extend_from_slice(&f);
        out.push(("frame_decode", format!("seed-{i}"), f));
    }
    out.push(("frame_decode", "seed-stream".into(), stream));

    // Real sync messages between two chats with shared history.
    let a = chat(5, 1);
    let mut b = a.fork().with_actor(vec![2; 16].into());
    {
        let mut tx = b.transaction();
        tx.put(ROOT, "title", "b's title").unwrap();
        tx.commit();
    }
    let mut sa = sync::State::new();
    let mut sb = sync::State::new();
    let m1 = a.generate_sync_message(&mut sa).unwrap();
    out.push((
        "sync_message",
        "seed-first".into(),
        [vec![0], m1.clone().encode()].concat(),
    ));
    b.receive_sync_message(&mut sb, m1).unwrap();
    let m2 = b.generate_sync_message(&mut sb).unwrap();
    out.push((
        "sync_message",
        "seed-with-changes".into(),
        [vec![1], m2.encode()].concat(),
    ));
    let change = b.get_last_local_change().unwrap();
    out.push((
        "sync_message",
        "seed-raw-change".into(),
        [vec![0], change.raw_bytes().to_vec()].concat(),
    ));

    out.push(("load_document", "seed-chat".into(), chat(20, 3).save()));
    out.push((
        "load_document",
        "seed-incremental".into(),
        [a.save(), b.save_after(&a.get_heads())].concat(),
    ));
    out.push((
        "load_document",
        "seed-empty".into(),
        Automerge::new().save(),
    ));
    out
}

#[test]
fn seed_corpus_is_committed() {
    let write = std::env::var("WEFT_WRITE_SEED_CORPUS").is_ok_and(|v| v == "1");
    for (target, name, bytes) in seeds() {
        let path = fuzz_dir().join("corpus").join(target).join(&name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            assert!(
                path.exists(),
                "missing seed {}: run with WEFT_WRITE_SEED_CORPUS=1",
                path.display()
            );
        }
    }
}

#[test]
fn frame_decode_corpus() {
    replay("frame_decode", fuzz_targets::frame_decode);
}

#[test]
fn sync_message_corpus() {
    replay("sync_message", fuzz_targets::sync_message);
}

#[test]
fn load_document_corpus() {
    replay("load_document", fuzz_targets::load_document);
}

#[test]
fn mutated_seeds_never_panic() {
    // A cheap stand-in for fuzzing on stable: flip, truncate and splice every seed.
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let rounds: usize = std::env::var("WEFT_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    for (target, _, bytes) in seeds() {
        let f: fn(&[u8]) = match target {
            "frame_decode" => fuzz_targets::frame_decode,
            "sync_message" => fuzz_targets::sync_message,
            _ => fuzz_targets::load_document,
        };
        for _ in 0..rounds {
            let mut m = bytes.clone();
            match rng.random_range(0..3) {
                0 if !m.is_empty() => {
                    let i = rng.random_range(0..m.len());
                    m[i] ^= 1 << rng.random_range(0..8);
                }
                1 if !m.is_empty() => m.truncate(rng.random_range(0..m.len())),
                _ => {
                    let i = rng.random_range(0..=m.len());
                    let junk: Vec<u8> =
                        (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                    m.splice(i..i, junk);
                }
            }
            let r = std::panic::catch_unwind(|| f(&m));
            if r.is_err() {
                let path = fuzz_dir()
                    .join("regressions")
                    .join(target)
                    .join(format!("crash-{}", blake3_hex(&m)));
                std::fs::write(&path, &m).ok();
                panic!(
                    "{target} panicked on a mutated seed, saved to {}",
                    path.display()
                );
            }
        }
    }
}

fn blake3_hex(b: &[u8]) -> String {
    weft_core::ContentHash::of(b).to_string()[..16].to_string()
}
