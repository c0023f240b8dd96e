//! WebSocket clients of a relay cluster (`--cluster` with `--ws`): stock automerge-repo clients
//! on two relays share a document live, and one behind a TCP load balancer moves to the other
//! relay when its own dies, losing nothing; a ticket from one relay opens a socket on another,
//! once in the whole cluster; a raw client meets the storage quota other relays filled.

mod common;

use std::time::{Duration, Instant};

use common::cluster::sibling_of;
use common::js::{npm_ready, Node};
use common::pg::{self, PgServer};
use common::proxy::Proxy;
use common::ws::{now, ticket, Device, Relay, RELAY};
use common::wsclient::*;
use serde_json::json;
use weft_core::automerge::sync::{self, SyncDoc};
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{ActorId, Automerge, ROOT};
use weft_core::{DocId, Document};
use weft_relay::Claims;

/// Relay `name` of the cluster, with WebSocket and HTTP endpoints, in `dir`.
fn start(dir: tempfile::TempDir, pg: &PgServer, name: &str) -> Relay {
    start_flags(dir, pg, name, &[])
}

/// [`start`] with `extra` flags.
fn start_flags(dir: tempfile::TempDir, pg: &PgServer, name: &str, extra: &[&str]) -> Relay {
    let mut args = vec![
        "--http",
        "127.0.0.1:0",
        "--checkpoint-interval",
        "200ms",
        "--cluster",
        "--cluster-name",
        name,
    ];
    args.extend_from_slice(extra);
    Relay::start_with(dir, &args, &[("WEFT_POSTGRES_URL", &pg.url())])
}

/// The scripted automerge-repo client (`tests/js/driver.mjs`) at `url`, reconnecting every
/// 200 ms.
fn driver(url: &str) -> Node {
    Node::start("driver.mjs", &[url, "200"])
}

/// Waits until `relay` has imported the cluster's latest entry of `doc` (another process's
/// progress: polled, within a deadline).
async fn imported(relay: &Relay, db: &tokio_postgres::Client, doc: DocId) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = db
            .query_one(
                "select coalesce(max(seq), 0) from weft_changes where doc_id = $1",
                &[&doc.to_string()],
            )
            .await
            .unwrap();
        let last: i64 = row.get(0);
        if last > 0 && relay.metric("weft_cluster_log_position") >= last as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the document never reached the other relay"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_clients_share_a_document_across_relays_and_move_when_theirs_dies() {
    if !npm_ready() {
        return;
    }
    let Some(pg) = PgServer::start() else { return };
    let a = start(tempfile::tempdir().unwrap(), &pg, "a");
    let b = start(sibling_of(a.data_dir()), &pg, "b");
    let db = pg::client(&pg).await;
    let token = a.token(&Claims::new("alice", now(), 3600).with_create(true));

    // Alice's laptop reaches the cluster through a load balancer, which sends it to a; her
    // tablet talks to b.
    let balancer = Proxy::start(a.ws.port()).await;
    let mut laptop = driver(&format!("ws://127.0.0.1:{}/?token={token}", balancer.port));
    let created = laptop
        .call(json!({"cmd": "create", "value": {"title": "Offsite"}}))
        .await;
    let doc: DocId = created["doc"].as_str().unwrap().parse().unwrap();
    let id = doc.to_string();
    laptop
        .call(json!({"cmd": "set", "doc": id, "key": "one", "value": "from the laptop"}))
        .await;
    imported(&b, &db, doc).await;
    let mut tablet = driver(&b.url(&token));
    let found = tablet.call(json!({"cmd": "find", "doc": id})).await;
    assert_eq!(found["value"]["title"], json!("Offsite"), "{found}");

    // Live across relays, both ways.
    let seen = tablet
        .call(json!({"cmd": "wait", "doc": id, "key": "one"}))
        .await;
    assert_eq!(seen["value"]["one"], json!("from the laptop"));
    tablet
        .call(json!({"cmd": "set", "doc": id, "key": "two", "value": "from the tablet"}))
        .await;
    let seen = laptop
        .call(json!({"cmd": "wait", "doc": id, "key": "two"}))
        .await;
    assert_eq!(seen["value"]["two"], json!("from the tablet"));

    // a dies; the balancer sends new connections to b. The laptop reconnects to the same URL,
    // lands on b and goes on: its next change reaches the tablet, and the tablet's reaches it.
    balancer.point_to(b.ws.port());
    let _a_dir = a.kill();
    laptop
        .call(json!({"cmd": "set", "doc": id, "key": "three", "value": "after the failover"}))
        .await;
    let seen = tablet
        .call(json!({"cmd": "wait", "doc": id, "key": "three"}))
        .await;
    assert_eq!(seen["value"]["one"], json!("from the laptop"));
    tablet
        .call(json!({"cmd": "set", "doc": id, "key": "four", "value": "welcome back"}))
        .await;
    let seen = laptop
        .call(json!({"cmd": "wait", "doc": id, "key": "four"}))
        .await;
    assert_eq!(seen["value"]["three"], json!("after the failover"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_from_one_relay_opens_one_socket_in_the_cluster() {
    let Some(pg) = PgServer::start() else { return };
    let a = start(tempfile::tempdir().unwrap(), &pg, "a");
    let b = start(sibling_of(a.data_dir()), &pg, "b");
    let token = a.token(&Claims::new("alice", now(), 3600).with_create(true));

    // Issued by a, redeemed at b (a load balancer may send the upgrade anywhere): the socket
    // is alice's.
    let (t, _) = ticket(&a, &token).await;
    let mut ws = connect_url(&b, &b.ticket_url(&t)).await.unwrap();
    send(&mut ws, join_msg("tab")).await;
    assert_eq!(recv(&mut ws).await.kind(), Some("peer"));
    let answer = upload(&mut ws, "tab", doc(1)).await;
    assert_eq!(answer.kind(), Some("sync"), "{answer:?}");

    // Once a has heard that b let it in, a refuses it too (and b of course).
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.metric("weft_cluster_tickets_heard_total") < 1.0 {
        assert!(Instant::now() < deadline, "a never heard of the ticket");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(connect_url(&a, &a.ticket_url(&t)).await.err(), Some(401));
    assert_eq!(connect_url(&b, &b.ticket_url(&t)).await.err(), Some(401));
    // A fresh one from b opens a socket on a.
    let (t, _) = ticket(&b, &token).await;
    assert!(connect_url(&a, &a.ticket_url(&t)).await.is_ok());
}

/// `n` random letters and digits (they do not compress).
fn random_text(n: usize) -> String {
    use rand::{distr::Alphanumeric, Rng};
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// The storage quota of a cluster holds for a raw automerge-repo client: what Alice wrote
/// through b into a document that a never loads counts on a when her WebSocket client writes
/// into another document there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_writer_meets_the_quota_other_relays_filled() {
    let Some(pg) = PgServer::start() else { return };
    let quota = ["--max-user-bytes", "10000"];
    let a = start_flags(tempfile::tempdir().unwrap(), &pg, "a", &quota);
    let b = start_flags(sibling_of(a.data_dir()), &pg, "b", &quota);
    let db = pg::client(&pg).await;
    let alice = Claims::new("alice", now(), 3600).with_create(true);

    // Through b (a QUIC device): a light document, then one of about 8 KB.
    let mut on_b = Device::connect(&b, b.token(&alice)).await;
    let (light, heavy) = (
        DocId::random(&mut rand::rng()),
        DocId::random(&mut rand::rng()),
    );
    for (doc, size) in [(light, 10), (heavy, 8_000)] {
        let mut am = Automerge::new().with_actor(ActorId::random());
        let mut tx = am.transaction();
        tx.put(ROOT, "body", random_text(size)).unwrap();
        tx.commit();
        on_b.engine.create(doc, Document::from_automerge(am));
        on_b.subscribe(doc).await;
        assert!(on_b.until(|d| d.engine.is_synced(RELAY, doc)).await);
    }
    imported(&a, &db, heavy).await;

    // On a, Alice's raw WebSocket client adds 4 KB to the light document: over her quota.
    let saved = on_b.engine.read(light, |d| d.save()).unwrap();
    let mut am = Automerge::load(&saved)
        .unwrap()
        .with_actor(ActorId::random());
    let mut tx = am.transaction();
    tx.put(ROOT, "more", random_text(4_000)).unwrap();
    tx.commit();
    let mut msg = Automerge::new()
        .generate_sync_message(&mut sync::State::new())
        .unwrap();
    msg.heads = am.get_heads();
    msg.changes = vec![am.get_last_local_change().unwrap().raw_bytes().to_vec()].into();
    let mut ws = joined(&a, &a.token(&alice), "alice-browser").await;
    send(
        &mut ws,
        sync_msg("sync", "alice-browser", light, msg.encode()),
    )
    .await;
    let got = loop {
        let got = recv(&mut ws).await;
        if got.kind() != Some("sync") {
            break got;
        }
    };
    assert_eq!(got.kind(), Some("error"), "{got:?}");
    let why = format!("{:?}", got.field("message"));
    assert!(why.contains("quota"), "{why}");
}
