//! A relay cluster (`--cluster`): three real `weft-relay` processes sharing a throwaway
//! Postgres, light QUIC devices spread over them. Devices on different relays see each other's
//! changes live and the access list of the relay that took a share; a relay SIGKILLed right
//! after acknowledging changes loses none of them (the others have them), and when it comes
//! back it catches up on what it missed; only relays that accepted a document's changes
//! checkpoint it.

mod common;

use std::time::{Duration, Instant};

use common::checkpoints::*;
use common::pg::{self, PgServer};
use common::RelayProcess;
use weft_core::wire::ErrorCode;
use weft_core::{DocId, Role};

/// Starts relay `name` of the cluster in `dir` (which holds the cluster's secret and
/// certificate).
fn start(dir: tempfile::TempDir, pg: &PgServer, name: &str) -> Relay {
    let process = RelayProcess::start(
        dir,
        &[
            "--http",
            "127.0.0.1:0",
            "--checkpoint-interval",
            "200ms",
            "--cluster",
            "--cluster-name",
            name,
        ],
        &[("WEFT_POSTGRES_URL", &pg.url())],
    );
    Relay {
        addr: process.addr("quic="),
        http: process.addr("http="),
        process,
    }
}

/// A data directory holding the same dev secret and certificate as `first`'s.
fn sibling_dir(first: &Relay) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let from = first.process.dir.path();
    std::fs::copy(from.join("jwt.secret"), dir.path().join("jwt.secret")).unwrap();
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(from.join("tls").join(f), dir.path().join("tls").join(f)).unwrap();
    }
    dir
}

/// Waits until relay `name` has imported every entry the other relays appended so far (a
/// remote process's progress: polled, within a deadline).
async fn caught_up(relay: &Relay, name: &str, db: &tokio_postgres::Client) {
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

fn texts(d: &mut Device, doc: DocId) -> Vec<String> {
    let mut t: Vec<String> = d.messages(doc).into_iter().map(|m| m.body).collect();
    t.sort();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_share_documents_and_a_killed_one_loses_nothing() {
    let Some(pg) = PgServer::start() else { return };
    let a = start(tempfile::tempdir().unwrap(), &pg, "a");
    let b = start(sibling_dir(&a), &pg, "b");
    let c = start(sibling_dir(&a), &pg, "c");
    let db = pg::client(&pg).await;
    assert_eq!(a.metric("weft_cluster_connected"), 1.0);
    let doc = new_doc();

    // Alice creates a conversation on relay a and shares it: relay b learns both.
    let mut alice = Device::connect(&a, "alice").await;
    alice.create_conversation(doc, "Cluster lunch").await;
    alice.share(doc, "bob", Role::ReadWrite).await;
    alice.share(doc, "carol", Role::ReadOnly).await;
    caught_up(&b, "b", &db).await;
    caught_up(&c, "c", &db).await;
    let mut bob = Device::connect(&b, "bob").await;
    assert_eq!(bob.subscribe(doc).await, Ok(Role::ReadWrite));
    let mut carol = Device::connect(&c, "carol").await;
    assert_eq!(carol.subscribe(doc).await, Ok(Role::ReadOnly));
    // Someone without access is refused on every relay, as on one.
    let mut mallory = Device::connect(&c, "mallory").await;
    assert_eq!(mallory.subscribe(doc).await, Err(ErrorCode::FORBIDDEN));

    // Live across relays: a on b, b on a and c.
    alice.say(doc, "noon?");
    alice.synced(doc).await;
    bob.until(|d| texts(d, doc) == ["noon?"]).await;
    bob.say(doc, "noon works");
    bob.synced(doc).await;
    alice.until(|d| texts(d, doc).len() == 2).await;
    carol.until(|d| texts(d, doc).len() == 2).await;

    // Bob writes a burst through relay b; once b acknowledged it (bob is synced), b dies.
    for i in 0..20 {
        bob.say(doc, &format!("bob {i}"));
    }
    bob.synced(doc).await;
    let b_dir = b.process.kill();
    // Every change b acknowledged reaches alice and carol through the log.
    alice.until(|d| texts(d, doc).len() == 22).await;
    carol.until(|d| texts(d, doc).len() == 22).await;
    let a_texts = texts(&mut alice, doc);
    assert!((0..20).all(|i| a_texts.contains(&format!("bob {i}"))));

    // While b is down, alice keeps writing on a.
    alice.say(doc, "b is down");
    alice.synced(doc).await;
    carol.until(|d| texts(d, doc).len() == 23).await;

    // b comes back on its data directory and catches up from its cursor; bob reconnects to it.
    let b = start(b_dir, &pg, "b");
    caught_up(&b, "b", &db).await;
    drop(bob);
    let mut bob = Device::connect(&b, "bob").await;
    assert_eq!(bob.subscribe(doc).await, Ok(Role::ReadWrite));
    assert_eq!(texts(&mut bob, doc), texts(&mut alice, doc));
    bob.say(doc, "back");
    bob.synced(doc).await;
    alice.until(|d| texts(d, doc).len() == 24).await;

    // The checkpoint holds everything, and c, which accepted no change of the document,
    // wrote no checkpoint of it.
    alice.synced(doc).await;
    let heads = alice.heads(doc);
    checkpointed(&db, doc, &heads).await;
    assert_eq!(c.metric("weft_checkpoint_documents_total"), 0.0);
    assert!(c.metric("weft_cluster_delivered_total") >= 1.0);
}
