//! Crash safety with a real process: a writer killed with SIGKILL at random moments never loses
//! a change it acknowledged, and its store always opens and loads.
//!
//! The writer is `src/bin/crash-writer.rs`. It prints `ack <hash>` only once a change is
//! durable; this test kills it after a random number of acks plus a random delay (so kills land
//! mid-commit and mid-compaction), reopens the store and looks for every acked change. It runs
//! 25 rounds on one file (`WEFT_CRASH_ITERATIONS` to change), from a printed seed
//! (`WEFT_CRASH_SEED` to replay).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft_core::automerge::{ChangeHash, ReadDoc, ROOT};
use weft_core::store::docs;
use weft_core::{DocId, RedbStore};

/// The writer's one document (see `crash-writer.rs`).
const DOC: DocId = DocId::from_bytes(*b"crash-test-doc!!");
/// How long one round may take before the test gives up.
const ROUND_TIMEOUT: Duration = Duration::from_secs(120);

/// A writer process, killed when dropped so a failing test leaves no process behind.
struct Writer {
    child: Child,
    lines: Receiver<String>,
}

impl Writer {
    fn spawn(store: &Path) -> Writer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .arg(store)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning crash-writer");
        let stdout = child.stdout.take().expect("stdout is piped");
        Writer {
            child,
            lines: read_lines(stdout),
        }
    }

    /// The next complete line, or `None` once the writer's stdout has closed.
    fn next_line(&self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!("crash-writer said nothing for too long"),
        }
    }

    fn kill(&mut self) {
        // SIGKILL on Unix: no destructor, no flush, no clean database close.
        self.child.kill().expect("killing crash-writer");
        self.child.wait().expect("reaping crash-writer");
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Forwards complete lines of `stdout`; a line cut short by the kill is dropped, since the
/// writer had not finished acknowledging it.
fn read_lines(stdout: ChildStdout) -> Receiver<String> {
    let (send, receive) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if !line.ends_with('\n') => break,
                Ok(_) => {
                    line.pop();
                    if send.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    receive
}

#[derive(Default)]
struct Round {
    acked: Vec<ChangeHash>,
    compactions: usize,
}

impl Round {
    /// Record one line of the writer; returns whether it was an ack.
    fn record(&mut self, line: &str) -> bool {
        if let Some(hash) = line.strip_prefix("ack ") {
            let hash = hash
                .parse()
                .unwrap_or_else(|e| panic!("bad ack line {line:?}: {e}"));
            self.acked.push(hash);
            true
        } else if line == "compacted" {
            self.compactions += 1;
            false
        } else {
            panic!("unexpected line from crash-writer: {line:?}");
        }
    }
}

#[test]
fn acknowledged_changes_survive_sigkill() {
    let seed: u64 = std::env::var("WEFT_CRASH_SEED")
        .ok()
        .map(|s| s.parse().expect("WEFT_CRASH_SEED is a u64"))
        .unwrap_or_else(rand::random);
    let rounds: usize = std::env::var("WEFT_CRASH_ITERATIONS")
        .ok()
        .map(|s| s.parse().expect("WEFT_CRASH_ITERATIONS is a count"))
        .unwrap_or(25);
    println!("crash test: {rounds} rounds, seed {seed} (replay with WEFT_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let path = dir.path().join("crash.redb");

    let mut acked: BTreeSet<ChangeHash> = BTreeSet::new();
    let mut compactions = 0;
    for round in 0..rounds {
        let kill_after = rng.random_range(1..=120usize);
        let delay = Duration::from_micros(rng.random_range(0..3000));
        let deadline = Instant::now() + ROUND_TIMEOUT;

        let mut writer = Writer::spawn(&path);
        let ready = writer
            .next_line(deadline)
            .expect("crash-writer exited before ready");
        let loaded: usize = ready
            .strip_prefix("ready ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("expected a ready line, got {ready:?}"));
        assert!(
            loaded >= acked.len(),
            "round {round}: loaded {loaded} changes, {} acked",
            acked.len()
        );

        let mut this_round = Round::default();
        while this_round.acked.len() < kill_after {
            let line = writer
                .next_line(deadline)
                .unwrap_or_else(|| panic!("round {round}: crash-writer exited on its own"));
            this_round.record(&line);
        }
        // Not waiting for anything: a random pause so the kill lands anywhere in the next
        // commit or compaction.
        thread::sleep(delay);
        writer.kill();
        // Lines written before the kill count too: each ack was durable before it was printed.
        while let Some(line) = writer.next_line(deadline) {
            this_round.record(&line);
        }
        drop(writer);
        compactions += this_round.compactions;
        acked.extend(this_round.acked.iter().copied());

        let store = RedbStore::open(&path)
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): store does not open: {e}"));
        let (doc, chunks) = docs::load_document(&store, DOC)
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): document does not load: {e}"))
            .expect("the document has acknowledged changes, so it exists");
        for hash in &acked {
            assert!(
                doc.get_change_by_hash(hash).is_some(),
                "round {round} (seed {seed}): acknowledged change {hash} was lost"
            );
        }
        assert!(
            doc.get_missing_deps(&[]).is_empty(),
            "round {round}: missing dependencies"
        );
        let log = doc.get(ROOT, "log").unwrap().expect("the log exists").1;
        assert!(doc.length(&log) >= acked.len());
        println!(
            "round {round}: killed after {} acks (+{delay:?}); {} acked in all, {} chunks",
            this_round.acked.len(),
            acked.len(),
            chunks.len()
        );
    }
    println!(
        "{rounds} kills, {} changes acknowledged, {compactions} compactions",
        acked.len()
    );
}
