//! The `weft-relay` binary over real QUIC: its HTTP health and metrics, presence and ephemeral
//! messages as datagrams (never stored), a datagram that is not ephemeral, and idle eviction.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::quic::{Device, Relay};
use common::{now, ready_addr, RELAY};
use weft_core::quic;
use weft_core::wire::{ErrorCode, Message};
use weft_core::{DocId, Document, Role};
use weft_relay::Claims;

#[test]
fn the_ready_line_names_the_http_endpoint_which_serves_health_and_metrics() {
    use std::io::{Read, Write};
    let relay = Relay::start_with(tempfile::tempdir().unwrap(), &["--http", "127.0.0.1:0"]);
    let http = ready_addr(&relay.ready, "http=");
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    let metrics = get("/metrics");
    assert!(metrics.contains("weft_connections 0"), "{metrics}");
    assert!(
        metrics.contains("weft_fanout_latency_seconds_bucket"),
        "{metrics}"
    );
    drop(relay);
}

/// The value of an unlabelled metric at the relay's `/metrics`.
fn metric(http: SocketAddr, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

/// Polls `/metrics` until `name` has `value` (there is no event to await), within a deadline.
async fn metric_becomes(http: SocketAddr, name: &str, value: u64) -> bool {
    metric_reaches(http, name, |v| v == value).await
}

async fn metric_becomes_at_least(http: SocketAddr, name: &str, value: u64) -> bool {
    metric_reaches(http, name, |v| v >= value).await
}

/// Polls the relay's metric `name` until `ok` holds for it (true) or 30 s pass (false).
async fn metric_reaches(http: SocketAddr, name: &str, ok: impl Fn(u64) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let name = name.to_string();
        let v = tokio::task::spawn_blocking(move || metric(http, &name))
            .await
            .unwrap();
        if ok(v) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_ephemeral_messages_travel_as_datagrams_and_are_never_stored() {
    let relay = Relay::start();
    let doc = DocId::from_bytes([12; 16]);
    let mut alice = Device::connect(
        &relay,
        relay.token(&Claims::new("alice", now(), 3600).with_create(true)),
    )
    .await
    .unwrap();
    alice.engine.create(doc, Document::new());
    alice.write(doc, "a-stored-key");
    alice
        .writer
        .send(&Message::Subscribe { doc })
        .await
        .unwrap();
    assert!(alice.until(|d| d.engine.is_synced(RELAY, doc)).await);

    // Bob joins: Alice sees him arrive, and he learns that Alice is here.
    let bob_token = relay.token(&Claims::new("bob", now(), 3600).with_doc(doc, Role::ReadWrite));
    let mut bob = Device::connect(&relay, bob_token).await.unwrap();
    bob.writer.send(&Message::Subscribe { doc }).await.unwrap();
    let online = |user: &str, device, online| Message::Presence {
        doc,
        user: user.to_string(),
        device,
        online,
    };
    assert_eq!(alice.datagram().await, online("bob", bob.id, true));
    assert_eq!(bob.datagram().await, online("alice", alice.id, true));

    // Alice's cursor, sent as a datagram, reaches Bob as one, stamped with who sent it.
    quic::send_datagram(
        &alice.conn,
        &Message::Ephemeral {
            doc,
            user: None,
            device: None,
            data: b"alice-cursor-at-42".to_vec(),
        },
    )
    .unwrap();
    assert_eq!(
        bob.datagram().await,
        Message::Ephemeral {
            doc,
            user: Some("alice".into()),
            device: Some(alice.id),
            data: b"alice-cursor-at-42".to_vec(),
        }
    );
    // Bob types on the stream; Alice still gets it as a datagram.
    bob.writer
        .send(&Message::Ephemeral {
            doc,
            user: Some("mallory".into()),
            device: None,
            data: b"bob-is-typing".to_vec(),
        })
        .await
        .unwrap();
    assert_eq!(
        alice.datagram().await,
        Message::Ephemeral {
            doc,
            user: Some("bob".into()),
            device: Some(bob.id),
            data: b"bob-is-typing".to_vec(),
        }
    );

    // Bob leaves: Alice sees him go.
    let bob_id = bob.id;
    drop(bob);
    assert_eq!(alice.datagram().await, online("bob", bob_id, false));

    // Nothing ephemeral reached the relay's disk; the document did.
    drop(alice);
    let dir = relay.kill();
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            stored.extend(std::fs::read(path).unwrap());
        }
    }
    let contains = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"a-stored-key"));
    assert!(!contains(b"alice-cursor-at-42"));
    assert!(!contains(b"bob-is-typing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datagram_that_is_not_ephemeral_cuts_off_its_sender() {
    let relay = Relay::start();
    let token = relay.token(&Claims::new("alice", now(), 3600).with_create(true));
    let mut bad = Device::connect(&relay, token).await.unwrap();
    let doc = DocId::from_bytes([13; 16]);
    quic::send_datagram(&bad.conn, &Message::Subscribe { doc }).unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        while bad.reader.recv().await.is_ok_and(|m| m.is_some()) {}
    })
    .await;
    assert!(closed.is_ok(), "the connection stayed open");
    let reason = bad.conn.closed().await;
    assert!(
        matches!(&reason, quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == quinn::VarInt::from_u32(u32::from(ErrorCode::MALFORMED.0))),
        "{reason:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_nobody_subscribes_to_is_evicted_from_memory_after_the_idle_period() {
    let relay = Relay::start_with(
        tempfile::tempdir().unwrap(),
        &["--http", "127.0.0.1:0", "--evict-after", "1s"],
    );
    let http = ready_addr(&relay.ready, "http=");
    let doc = DocId::from_bytes([14; 16]);
    let mut alice = Device::connect(
        &relay,
        relay.token(&Claims::new("alice", now(), 3600).with_create(true)),
    )
    .await
    .unwrap();
    alice.engine.create(doc, Document::new());
    alice.write(doc, "kept on disk");
    alice
        .writer
        .send(&Message::Subscribe { doc })
        .await
        .unwrap();
    assert!(alice.until(|d| d.engine.is_synced(RELAY, doc)).await);
    assert!(metric_becomes(http, "weft_documents_loaded", 1).await);

    drop(alice);
    assert!(
        metric_becomes(http, "weft_documents_loaded", 0).await,
        "the idle document stayed in memory"
    );

    // It is still served from disk.
    let mut bob = Device::connect(
        &relay,
        relay.token(&Claims::new("bob", now(), 3600).with_doc(doc, Role::ReadOnly)),
    )
    .await
    .unwrap();
    bob.writer.send(&Message::Subscribe { doc }).await.unwrap();
    assert!(bob.until(|d| d.keys(doc) == ["kept on disk"]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_documents_evicted_and_reopened_keep_every_acknowledged_change() {
    // Enough documents that the hub's, engine's and gate's maps grow past the size they give
    // back once the documents leave, so reopening runs on the shrunk maps.
    const DOCS: u8 = 200;
    let relay = Relay::start_with(
        tempfile::tempdir().unwrap(),
        &["--http", "127.0.0.1:0", "--evict-after", "1s"],
    );
    let http = ready_addr(&relay.ready, "http=");
    let alice_token = relay.token(&Claims::new("alice", now(), 3600).with_create(true));
    let docs: Vec<DocId> = (0..DOCS)
        .flat_map(|i| {
            [
                DocId::from_bytes([i; 16]),
                DocId::from_bytes([i ^ 0x80; 16]),
            ]
        })
        .collect();

    // Alice writes in each document and waits until the relay holds it.
    let mut alice = Device::connect(&relay, alice_token.clone()).await.unwrap();
    for &doc in &docs {
        alice.engine.create(doc, Document::new());
        alice.write(doc, "first");
        alice
            .writer
            .send(&Message::Subscribe { doc })
            .await
            .unwrap();
    }
    assert!(
        alice
            .until(|d| docs.iter().all(|&doc| d.engine.is_synced(RELAY, doc)))
            .await
    );
    let trims = tokio::task::spawn_blocking(move || metric(http, "weft_memory_trims_total"))
        .await
        .unwrap();
    drop(alice);
    assert!(metric_becomes(http, "weft_documents_loaded", 0).await);
    // Every document left: the hub gives back its maps' memory at its next pass.
    assert!(metric_becomes_at_least(http, "weft_memory_trims_total", trims + 1).await);

    // Her second device reopens every document, as their owner, and writes again.
    let mut again = Device::connect(&relay, alice_token).await.unwrap();
    for &doc in &docs {
        again
            .writer
            .send(&Message::Subscribe { doc })
            .await
            .unwrap();
    }
    assert!(
        again
            .until(|d| docs.iter().all(|&doc| d.keys(doc) == ["first"]))
            .await,
        "a change was lost with its document's eviction"
    );
    for &doc in &docs {
        again.write(doc, "second");
    }
    assert!(
        again
            .until(|d| docs.iter().all(|&doc| d.engine.is_synced(RELAY, doc)))
            .await,
        "the owner's writes after a reopen were not taken"
    );
    drop(again);
    assert!(metric_becomes(http, "weft_documents_loaded", 0).await);

    // A reader finds both writes in every document.
    let mut claims = Claims::new("bob", now(), 3600);
    for &doc in &docs {
        claims = claims.with_doc(doc, Role::ReadOnly);
    }
    let mut bob = Device::connect(&relay, relay.token(&claims)).await.unwrap();
    for &doc in &docs {
        bob.writer.send(&Message::Subscribe { doc }).await.unwrap();
    }
    assert!(
        bob.until(|d| docs.iter().all(|&doc| d.keys(doc) == ["first", "second"]))
            .await
    );
}
