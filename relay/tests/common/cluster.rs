//! What the cluster tests share: relays of one cluster on a throwaway Postgres, and waiting
//! for one to catch up on the log.

use std::time::{Duration, Instant};

use weft_core::DocId;

use super::checkpoints::{Device, Relay};
use super::pg::PgServer;
use super::RelayProcess;

/// Starts relay `name` of the cluster in `dir` (which holds the cluster's secret and
/// certificate), on the Postgres at `url`.
pub fn start_on(dir: tempfile::TempDir, url: &str, name: &str) -> Relay {
    start_with(dir, url, name, &["--checkpoint-interval", "200ms"])
}

/// As [`start_on`], with `extra` flags (at least `--checkpoint-interval`).
pub fn start_with(dir: tempfile::TempDir, url: &str, name: &str, extra: &[&str]) -> Relay {
    let mut args = vec![
        "--http",
        "127.0.0.1:0",
        "--final-checkpoint-deadline",
        "2s",
        "--cluster",
        "--cluster-name",
        name,
    ];
    args.extend_from_slice(extra);
    let process = RelayProcess::start(dir, &args, &[("WEFT_POSTGRES_URL", url)]);
    Relay {
        addr: process.addr("quic="),
        http: process.addr("http="),
        process,
    }
}

/// Starts relay `name` of the cluster in `dir` on `pg`.
pub fn start(dir: tempfile::TempDir, pg: &PgServer, name: &str) -> Relay {
    start_on(dir, &pg.url(), name)
}

/// A data directory holding the same dev secret and certificate as `first`'s.
pub fn sibling_dir(first: &Relay) -> tempfile::TempDir {
    sibling_of(first.process.dir.path())
}

/// A data directory holding the same dev secret and certificate as the one at `from`.
pub fn sibling_of(from: &std::path::Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(from.join("jwt.secret"), dir.path().join("jwt.secret")).unwrap();
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(from.join("tls").join(f), dir.path().join("tls").join(f)).unwrap();
    }
    dir
}

/// Waits until relay `name` has imported every entry the other relays appended so far (a
/// remote process's progress: polled, within a deadline).
pub async fn caught_up(relay: &Relay, name: &str, db: &tokio_postgres::Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = db
            .query_one("select coalesce(max(seq), 0) from weft_changes", &[])
            .await
            .unwrap();
        let last: i64 = row.get(0);
        if relay.metric("weft_cluster_log_position") >= last as f64 {
            return;
        }
        assert!(Instant::now() < deadline, "relay {name} did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn texts(d: &mut Device, doc: DocId) -> Vec<String> {
    let mut t: Vec<String> = d.messages(doc).into_iter().map(|m| m.body).collect();
    t.sort();
    t
}
