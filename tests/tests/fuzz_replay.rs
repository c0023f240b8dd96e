//! Replays every committed fuzz corpus file and every crash ever found through the fuzz targets'
//! logic, so CI exercises them on stable.
//!
//! `WEFT_WRITE_SEED_CORPUS=1` (re)writes the seed files this test generates into `fuzz/corpus/`.

use std::path::{Path, PathBuf};

use std::io::Write as _;

use weft_core::automerge::sync::{self, SyncDoc};
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{Automerge, ObjType, ROOT};
use weft_core::fuzz_targets;
use weft_core::wire::{self, DocEntry, ErrorCode, Message};
use weft_core::{DeviceId, DocId, Role};
use weft_relay::fuzz_targets as relay_fuzz_targets;

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
            data: vec![0x42, 0, 0, 0].into(),
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
    let m2_bytes = m2.encode();
    out.push((
        "sync_message",
        "seed-with-changes".into(),
        [vec![1], m2_bytes.clone()].concat(),
    ));
    let change = b.get_last_local_change().unwrap();
    out.push((
        "sync_message",
        "seed-raw-change".into(),
        [vec![0], change.raw_bytes().to_vec()].concat(),
    ));

    check_changes_seeds(&mut out, &a, &b, m2_bytes.clone());
    for (name, bytes) in relay_fuzz_targets::ws_decode_seeds() {
        out.push(("ws_decode", name.into(), bytes));
    }

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

/// An Automerge chunk of `kind` around `data`, its checksum zeros (checked after the bounds).
fn chunk(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, kind];
    uleb(data.len() as u64, &mut out);
    out.extend(data);
    out
}

fn uleb(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// 1 MiB of zeros, deflated (about 1 KB): past every limit `check_changes` checks against.
fn zeros_bomb() -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![0u8; 1 << 20]).unwrap();
    e.finish().unwrap()
}

/// Seeds for `check_changes`: each kind of chunk a peer may send, valid, over a limit, or not
/// a chunk at all.
fn check_changes_seeds(
    out: &mut Vec<(&'static str, String, Vec<u8>)>,
    a: &Automerge,
    b: &Automerge,
    sync_message: Vec<u8>,
) {
    let mut seed = |name: &str, bytes: Vec<u8>| out.push(("check_changes", name.into(), bytes));
    let change = b.get_last_local_change().unwrap().clone();
    seed("seed-change", change.raw_bytes().to_vec());
    let mut long = Automerge::new().with_actor(vec![4; 16].into());
    {
        let mut tx = long.transaction();
        tx.put(ROOT, "note", "a long note ".repeat(50)).unwrap();
        tx.commit();
    }
    let mut compressed = long.get_last_local_change().unwrap().clone();
    let compressed = compressed.bytes().to_vec();
    assert_eq!(compressed[8], 2, "a long change compresses");
    seed("seed-compressed-change", compressed);
    seed("seed-document", a.save());
    seed("seed-sync-message", sync_message);
    let garbage: Vec<u8> = (0..37u8).map(|i| i.wrapping_mul(97) ^ 0x5a).collect();
    seed("seed-garbage", garbage.clone());
    seed(
        "seed-valid-then-garbage",
        [change.raw_bytes().to_vec(), garbage].concat(),
    );
    let bomb = zeros_bomb();
    seed("seed-compressed-bomb", chunk(2, &bomb));
    // A document chunk's layout: no actors, no heads, one deflated change column, no op
    // columns, then the column.
    let mut layout = Vec::new();
    for v in [0, 0, 1, (1 << 4) | 0b1000, bomb.len() as u64, 0] {
        uleb(v, &mut layout);
    }
    seed("seed-document-bomb", chunk(0, &[layout, bomb].concat()));
    seed("seed-bundle", chunk(3, &[0, 0, 0]));
}

/// The logic of each fuzz target, by name.
fn target(name: &str) -> fn(&[u8]) {
    match name {
        "frame_decode" => fuzz_targets::frame_decode,
        "sync_message" => fuzz_targets::sync_message,
        "load_document" => fuzz_targets::load_document,
        "check_changes" => fuzz_targets::check_changes,
        "ws_decode" => relay_fuzz_targets::ws_decode,
        other => panic!("no fuzz target {other}"),
    }
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
fn check_changes_corpus() {
    replay("check_changes", fuzz_targets::check_changes);
}

#[test]
fn ws_decode_corpus() {
    replay("ws_decode", relay_fuzz_targets::ws_decode);
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
    for (target_name, _, bytes) in seeds() {
        let f = target(target_name);
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
                let dir = fuzz_dir().join("regressions").join(target_name);
                let path = dir.join(format!("crash-{}", blake3_hex(&m)));
                std::fs::create_dir_all(&dir).ok();
                std::fs::write(&path, &m).ok();
                panic!(
                    "{target_name} panicked on a mutated seed, saved to {}",
                    path.display()
                );
            }
        }
    }
}

fn blake3_hex(b: &[u8]) -> String {
    weft_core::ContentHash::of(b).to_string()[..16].to_string()
}
