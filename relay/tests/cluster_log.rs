//! The cluster's change log is trimmed: entries every relay has read and older than the
//! retention (`--cluster-log-retention`) are deleted; a relay started on an empty data
//! directory gets what was trimmed from the checkpoints, and one that was away for longer than
//! the retention merges in what Postgres holds.

mod common;

use std::time::{Duration, Instant};

use common::checkpoints::*;
use common::cluster::{caught_up, sibling_dir, start_with, texts};
use common::pg::{self, PgServer};
use weft_core::Role;

const FLAGS: [&str; 4] = [
    "--checkpoint-interval",
    "200ms",
    "--cluster-log-retention",
    "1s",
];

/// Waits until the log holds no entry (another process's progress: polled, within a
/// deadline).
async fn log_emptied(db: &tokio_postgres::Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = db
            .query_one("select count(*) from weft_changes", &[])
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the log was never trimmed ({n} entries)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_trimmed_once_read_and_relays_catch_up_from_the_checkpoints() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.url();
    let a = start_with(tempfile::tempdir().unwrap(), &url, "a", &FLAGS);
    let b = start_with(sibling_dir(&a), &url, "b", &FLAGS);
    let db = pg::client(&pg).await;
    let doc = new_doc();
    let mut alice = Device::connect(&a, "alice").await;
    alice.create_conversation(doc, "Short memory").await;
    alice.share(doc, "bob", Role::ReadWrite).await;
    for i in 0..3 {
        alice.say(doc, &format!("alice {i}"));
    }
    alice.synced(doc).await;
    caught_up(&b, "b", &db).await;

    // Both relays read everything, and a second later it is gone from the log.
    log_emptied(&db).await;
    assert!(a.metric("weft_cluster_trimmed_total") + b.metric("weft_cluster_trimmed_total") > 0.0);

    // A relay on an empty data directory has the document from the checkpoints.
    let c = start_with(sibling_dir(&a), &url, "c", &FLAGS);
    let mut bob = Device::connect(&c, "bob").await;
    assert_eq!(bob.subscribe(doc).await, Ok(Role::ReadWrite));
    bob.until(|d| texts(d, doc).len() == 3).await;

    // b is away for longer than the log keeps entries: what alice wrote meanwhile is trimmed
    // before b comes back, which then merges in what Postgres holds.
    let b_dir = b.process.kill();
    alice.say(doc, "while b was away");
    alice.synced(doc).await;
    checkpointed(&db, doc, &alice.heads(doc)).await;
    log_emptied(&db).await;
    let b = start_with(b_dir, &url, "b", &FLAGS);
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.metric("weft_cluster_gaps_total") < 1.0
        || b.metric("weft_checkpoint_documents_total") < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "b never merged in the checkpoints"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut bob = Device::connect(&b, "bob").await;
    assert_eq!(bob.subscribe(doc).await, Ok(Role::ReadWrite));
    bob.until(|d| texts(d, doc).len() == 4).await;
}
