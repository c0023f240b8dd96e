//! automerge-choice: measure automerge 0.6.1 against 0.12.0 on weft's chat workloads, in one run.
//!
//! Both versions are linked into this one binary under the renamed crates `am06` and `am12`; the
//! workloads are written once inside `workloads!` and instantiated for each version. Memory and
//! load time are measured in a child process per version (this same binary, `load <ver> <file>`)
//! so that neither version's freed heap skews the other's RSS figure.
//!
//! The document: root map { "messages": list of map { id: str, author: str, body: Text,
//! created_at: int } }, one change per message, written by 4 rotating actors.
//!
//! Run: `CARGO_TARGET_DIR=/tmp/am-choice-target cargo run --release`

use std::time::Instant;

const HIST_SMALL: usize = 1_000;
const HIST: usize = 10_000;
/// Local appends timed per history size.
const APPENDS: usize = 200;
/// Remote changes applied per batch-size measurement.
const REMOTE_CHANGES: usize = 512;
const BATCHES: [usize; 3] = [1, 16, 256];
/// Changes one replica has and the other lacks in the sync measurement.
const SYNC_CHANGES: usize = 1_000;
const LOAD_COPIES: usize = 10;
const SAVES: usize = 5;

const AUTHORS: [&str; 4] = ["alice", "bob", "carol", "dave"];
const CREATED_BASE: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z in ms

const WORDS: [&str; 32] = [
    "hey", "the", "meeting", "is", "moved", "to", "tomorrow", "at", "ten", "can", "you", "check",
    "draft", "before", "lunch", "thanks", "sure", "I'll", "send", "it", "over", "tonight", "ok",
    "sounds", "good", "see", "you", "then", "what", "about", "the", "budget",
];

/// Deterministic message body of 3..=14 words (~35 characters on average).
fn body_text(i: usize) -> String {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    let n = 3 + (x % 12) as usize;
    let mut s = String::new();
    for k in 0..n {
        if k > 0 {
            s.push(' ');
        }
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        s.push_str(WORDS[(x >> 59) as usize]);
    }
    s
}

/// A 26-character ULID-like message id.
fn msg_id(i: usize) -> String {
    format!("01K{:011X}{:012X}", CREATED_BASE as u64 + i as u64, (i as u64).wrapping_mul(0x2545F4914F6CDD1D) & 0xFFFF_FFFF_FFFF)
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

fn us(t: Instant, n: usize) -> f64 {
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

#[derive(Default, Clone, Copy)]
struct SyncRes {
    msgs: usize,
    round_trips: usize,
    bytes: usize,
    gen_ms: f64,
    recv_ms: f64,
}

#[derive(Default)]
struct Res {
    build_10k_s: f64,
    append_us_1k: f64,
    append_us_10k: f64,
    change_bytes: f64,
    apply_us: [f64; 3],
    sync_cold: SyncRes,
    sync_warm: SyncRes,
    save_ms: f64,
    save_bytes: usize,
    load_ms: f64,
    rss_kib_per_doc: f64,
    saved10k: Vec<u8>,
}

macro_rules! workloads {
    ($m:ident, $krate:ident, $label:expr) => {
        mod $m {
            use super::*;
            use ::$krate as am;
            use am::sync::{self, SyncDoc};
            use am::transaction::Transactable;
            use am::{ActorId, AutoCommit, Automerge, Change, ObjId, ObjType, ReadDoc, ROOT};

            pub const LABEL: &str = $label;

            fn messages<R: ReadDoc>(d: &R) -> ObjId {
                d.get(ROOT, "messages").unwrap().unwrap().1
            }

            /// Append message `i` as one change.
            fn append(d: &mut AutoCommit, msgs: &ObjId, i: usize) {
                let len = d.length(msgs);
                let m = d.insert_object(msgs, len, ObjType::Map).unwrap();
                d.put(&m, "id", msg_id(i)).unwrap();
                d.put(&m, "author", AUTHORS[i % AUTHORS.len()]).unwrap();
                let b = d.put_object(&m, "body", ObjType::Text).unwrap();
                d.splice_text(&b, 0, 0, &body_text(i)).unwrap();
                d.put(&m, "created_at", CREATED_BASE + i as i64 * 1_000).unwrap();
                d.commit();
            }

            /// A chat of `n` messages, one commit each, from 4 rotating actors.
            fn build(n: usize) -> (AutoCommit, ObjId) {
                let actors: Vec<ActorId> = (0..4).map(|_| ActorId::random()).collect();
                let mut d = AutoCommit::new();
                d.set_actor(actors[0].clone());
                let msgs = d.put_object(ROOT, "messages", ObjType::List).unwrap();
                d.commit();
                for i in 0..n {
                    d.set_actor(actors[i % actors.len()].clone());
                    append(&mut d, &msgs, i);
                }
                (d, msgs)
            }

            /// Mean us per local append+commit, and mean raw change size.
            fn local_appends(d: &mut AutoCommit, msgs: &ObjId, from: usize) -> (f64, f64) {
                let base = d.get_heads();
                let t = Instant::now();
                for i in from..from + APPENDS {
                    append(d, msgs, i);
                }
                let per = us(t, APPENDS);
                let sizes: usize = d.get_changes(&base).iter().map(|c| c.raw_bytes().len()).sum();
                (per, sizes as f64 / APPENDS as f64)
            }

            fn sync_until_quiet(
                a: &mut Automerge,
                sa: &mut sync::State,
                b: &mut Automerge,
                sb: &mut sync::State,
            ) -> SyncRes {
                let mut r = SyncRes::default();
                loop {
                    let mut any = false;
                    for dir in 0..2 {
                        let (x, sx, y, sy) = if dir == 0 {
                            (&mut *a, &mut *sa, &mut *b, &mut *sb)
                        } else {
                            (&mut *b, &mut *sb, &mut *a, &mut *sa)
                        };
                        let t = Instant::now();
                        let msg = x.generate_sync_message(sx).map(|m| m.encode());
                        r.gen_ms += t.elapsed().as_secs_f64() * 1e3;
                        if let Some(bytes) = msg {
                            any = true;
                            r.msgs += 1;
                            r.bytes += bytes.len();
                            let t = Instant::now();
                            let m = sync::Message::decode(&bytes).unwrap();
                            y.receive_sync_message(sy, m).unwrap();
                            r.recv_ms += t.elapsed().as_secs_f64() * 1e3;
                        }
                    }
                    if !any {
                        break;
                    }
                    r.round_trips += 1;
                    assert!(r.round_trips < 100, "sync did not converge");
                }
                assert_eq!(a.get_heads(), b.get_heads());
                r
            }

            pub fn run() -> Res {
                let mut res = Res::default();

                // 1. local append at history 1k and 10k
                let (mut d, msgs) = build(HIST_SMALL);
                res.append_us_1k = local_appends(&mut d, &msgs, HIST_SMALL).0;
                drop(d);
                let t = Instant::now();
                let (mut d, msgs) = build(HIST);
                res.build_10k_s = t.elapsed().as_secs_f64();
                let saved = d.save();
                let (per, bytes) = local_appends(&mut d, &msgs, HIST);
                res.append_us_10k = per;
                res.change_bytes = bytes;
                drop(d);

                // Remote changes: a new device appends SYNC_CHANGES messages on top of the 10k.
                let mut w = AutoCommit::load(&saved).unwrap();
                w.set_actor(ActorId::random());
                let wm = messages(&w);
                let base = w.get_heads();
                for i in 0..SYNC_CHANGES {
                    append(&mut w, &wm, HIST + i);
                }
                let changes: Vec<Vec<u8>> =
                    w.get_changes(&base).iter().map(|c| c.raw_bytes().to_vec()).collect();
                assert_eq!(changes.len(), SYNC_CHANGES);
                drop(w);

                // 2. receiving replica applies raw changes (decode included) in batches
                for (k, &bs) in BATCHES.iter().enumerate() {
                    let mut r = Automerge::load(&saved).unwrap();
                    let t = Instant::now();
                    for chunk in changes[..REMOTE_CHANGES].chunks(bs) {
                        let batch: Vec<Change> =
                            chunk.iter().map(|b| Change::from_bytes(b.clone()).unwrap()).collect();
                        r.apply_changes(batch).unwrap();
                    }
                    res.apply_us[k] = us(t, REMOTE_CHANGES);
                    assert_eq!(r.length(&messages(&r)), HIST + REMOTE_CHANGES);
                }

                // 3. sync protocol. Cold: fresh sync states (a reconnect).
                let all: Vec<Change> =
                    changes.iter().map(|b| Change::from_bytes(b.clone()).unwrap()).collect();
                let mut a = Automerge::load(&saved).unwrap();
                a.apply_changes(all.clone()).unwrap();
                let mut b = Automerge::load(&saved).unwrap();
                let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
                res.sync_cold = sync_until_quiet(&mut a, &mut sa, &mut b, &mut sb);
                assert_eq!(b.length(&messages(&b)), HIST + SYNC_CHANGES);
                drop((a, b));
                // Warm: states already in sync at 10k, then a gets the 1,000 changes.
                let mut a = Automerge::load(&saved).unwrap();
                let mut b = Automerge::load(&saved).unwrap();
                let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
                sync_until_quiet(&mut a, &mut sa, &mut b, &mut sb);
                a.apply_changes(all).unwrap();
                res.sync_warm = sync_until_quiet(&mut a, &mut sa, &mut b, &mut sb);
                assert_eq!(b.length(&messages(&b)), HIST + SYNC_CHANGES);
                drop((a, b));

                // 5. save of the 10k document (loaded from its save)
                let d = Automerge::load(&saved).unwrap();
                let t = Instant::now();
                let mut out = Vec::new();
                for _ in 0..SAVES {
                    out = d.save();
                }
                res.save_ms = us(t, SAVES) / 1e3;
                res.save_bytes = out.len();
                drop(d);

                res.saved10k = saved;
                res
            }

            /// 4. Child process: load LOAD_COPIES copies; mean ms per load and KiB RSS per doc.
            pub fn load_child(bytes: &[u8]) -> (f64, f64) {
                let before = rss_kb();
                let t = Instant::now();
                let docs: Vec<Automerge> =
                    (0..LOAD_COPIES).map(|_| Automerge::load(bytes).unwrap()).collect();
                let ms = us(t, LOAD_COPIES) / 1e3;
                let after = rss_kb();
                for d in &docs {
                    assert_eq!(d.length(&messages(d)), HIST);
                }
                (ms, (after.saturating_sub(before)) as f64 / LOAD_COPIES as f64)
            }

            pub fn load_len(bytes: &[u8]) -> usize {
                let d = Automerge::load(bytes).unwrap();
                d.length(&messages(&d))
            }

            /// A replica for the cross-version sync check.
            pub struct Peer {
                doc: Automerge,
                state: sync::State,
            }
            impl Peer {
                /// Load `base` and append `n` messages as a new actor.
                pub fn new(base: &[u8], n: usize, from: usize) -> Peer {
                    let mut w = AutoCommit::load(base).unwrap();
                    w.set_actor(ActorId::random());
                    let m = messages(&w);
                    for i in from..from + n {
                        append(&mut w, &m, i);
                    }
                    Peer { doc: Automerge::load(&w.save()).unwrap(), state: sync::State::new() }
                }
                pub fn gen(&mut self) -> Option<Vec<u8>> {
                    self.doc.generate_sync_message(&mut self.state).map(|m| m.encode())
                }
                pub fn recv(&mut self, b: &[u8]) {
                    let m = sync::Message::decode(b).unwrap();
                    self.doc.receive_sync_message(&mut self.state, m).unwrap();
                }
                pub fn heads(&self) -> Vec<String> {
                    let mut h: Vec<String> =
                        self.doc.get_heads().iter().map(|h| h.to_string()).collect();
                    h.sort();
                    h
                }
                pub fn len(&self) -> usize {
                    self.doc.length(&messages(&self.doc))
                }
            }
        }
    };
}

workloads!(v06, am06, "0.6.1");
workloads!(v12, am12, "0.12.0");

fn load_in_child(ver: &str, saved: &[u8]) -> (f64, f64) {
    let path = std::env::temp_dir().join(format!("automerge-choice-{}-{ver}.bin", std::process::id()));
    std::fs::write(&path, saved).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("load")
        .arg(ver)
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8(out.stdout).unwrap();
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// Cross-version sync: both start from `base`, each adds `n` messages, sync until quiet.
fn cross_sync(base: &[u8], n: usize) -> (usize, usize, bool) {
    let mut p06 = v06::Peer::new(base, n, HIST);
    let mut p12 = v12::Peer::new(base, n, HIST + n);
    let (mut msgs, mut bytes) = (0, 0);
    for _ in 0..100 {
        let mut any = false;
        if let Some(m) = p06.gen() {
            any = true;
            msgs += 1;
            bytes += m.len();
            p12.recv(&m);
        }
        if let Some(m) = p12.gen() {
            any = true;
            msgs += 1;
            bytes += m.len();
            p06.recv(&m);
        }
        if !any {
            break;
        }
    }
    let ok = p06.heads() == p12.heads() && p06.len() == HIST + 2 * n && p12.len() == HIST + 2 * n;
    (msgs, bytes, ok)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "load" {
        let bytes = std::fs::read(&args[3]).unwrap();
        let (ms, kib) = match args[2].as_str() {
            "0.6.1" => v06::load_child(&bytes),
            "0.12.0" => v12::load_child(&bytes),
            v => panic!("unknown version {v}"),
        };
        println!("{ms} {kib}");
        return;
    }

    let t0 = Instant::now();
    let mut rows: Vec<(&str, Res)> = Vec::new();
    for (label, run) in [(v06::LABEL, v06::run as fn() -> Res), (v12::LABEL, v12::run)] {
        let t = Instant::now();
        eprintln!("running workloads on automerge {label} ...");
        let mut r = run();
        let (ms, kib) = load_in_child(label, &r.saved10k);
        r.load_ms = ms;
        r.rss_kib_per_doc = kib;
        eprintln!("  done in {:.1} s", t.elapsed().as_secs_f64());
        rows.push((label, r));
    }
    let (s06, s12) = (&rows[0].1.saved10k, &rows[1].1.saved10k);
    let l06_of_12 = v06::load_len(s12);
    let l12_of_06 = v12::load_len(s06);
    let (xm, xb, xok) = cross_sync(s06, 50);

    println!("\nautomerge-choice: chat doc = list of {{id, author, body: Text, created_at}}; one change per message; 4 actors; release build\n");
    println!("1. Local append of one message + commit (mean over {APPENDS} appends)");
    println!("| automerge | history 1k (us/append) | history 10k (us/append) | raw change (B) | build 10k by commits (s) |");
    println!("|---|---|---|---|---|");
    for (l, r) in &rows {
        println!("| {l} | {:.1} | {:.1} | {:.0} | {:.2} |", r.append_us_1k, r.append_us_10k, r.change_bytes, r.build_10k_s);
    }
    println!("\n2. Receiving replica applies {REMOTE_CHANGES} remote raw changes at history 10k (decode + apply_changes, us per change)");
    println!("| automerge | batch 1 | batch 16 | batch 256 |");
    println!("|---|---|---|---|");
    for (l, r) in &rows {
        println!("| {l} | {:.1} | {:.1} | {:.1} |", r.apply_us[0], r.apply_us[1], r.apply_us[2]);
    }
    println!("\n3. Sync protocol, in memory, 10k shared history, one side has {SYNC_CHANGES} new changes (until both generate None)");
    println!("| automerge | sync state | messages | round trips | bytes | generate (ms) | receive (ms) | total (ms) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (l, r) in &rows {
        for (name, s) in [("fresh (reconnect)", r.sync_cold), ("warm (already synced)", r.sync_warm)] {
            println!("| {l} | {name} | {} | {} | {} | {:.1} | {:.1} | {:.1} |", s.msgs, s.round_trips, s.bytes, s.gen_ms, s.recv_ms, s.gen_ms + s.recv_ms);
        }
    }
    println!("\n4. Load of the saved 10k-message document ({LOAD_COPIES} copies in a fresh child process)");
    println!("| automerge | load (ms/doc) | RSS growth per loaded doc (MiB) |");
    println!("|---|---|---|");
    for (l, r) in &rows {
        println!("| {l} | {:.1} | {:.1} |", r.load_ms, r.rss_kib_per_doc / 1024.0);
    }
    println!("\n5. save() of the 10k-message document (mean of {SAVES})");
    println!("| automerge | save (ms) | size (bytes) |");
    println!("|---|---|---|");
    for (l, r) in &rows {
        println!("| {l} | {:.1} | {} |", r.save_ms, r.save_bytes);
    }
    println!("\nCompatibility: 0.6.1 loads 0.12.0's save -> {l06_of_12} messages; 0.12.0 loads 0.6.1's save -> {l12_of_06} messages;");
    println!("cross-version sync (0.6.1 peer <-> 0.12.0 peer, 50 new messages each): {xm} messages, {xb} bytes, converged = {xok}");
    println!("\ntotal run time {:.1} s", t0.elapsed().as_secs_f64());
}
