//! The `weft-relay` binary over real QUIC on loopback, with real redb: devices connect with
//! their own keys and tokens, sync, and misbehave.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::{now, open_subscribed, ready_addr, Link, RelayProcess, RELAY};
use weft_core::quic;
use weft_core::wire::{ErrorCode, Message};
use weft_core::{DocId, Document, Role};
use weft_relay::{Claims, Minter};

struct Relay {
    process: RelayProcess,
    addr: SocketAddr,
}

crate::extends!(Relay, process: RelayProcess);

impl Relay {
    fn start() -> Relay {
        Self::start_in(tempfile::tempdir().unwrap())
    }

    fn start_in(dir: tempfile::TempDir) -> Relay {
        Self::start_with(dir, &[])
    }

    /// Starts the relay with `extra` flags (`--http off` unless `extra` names `--http`) and
    /// waits for its ready line.
    fn start_with(dir: tempfile::TempDir, extra: &[&str]) -> Relay {
        let http_off: &[&str] = if extra.contains(&"--http") {
            &[]
        } else {
            &["--http", "off"]
        };
        let process = RelayProcess::start(dir, &[http_off, extra].concat(), &[]);
        let addr = process.addr("quic=");
        Relay { process, addr }
    }

    fn kill(self) -> tempfile::TempDir {
        self.process.kill()
    }
}

struct Device {
    link: Link,
    errors: Vec<(ErrorCode, Option<DocId>)>,
}

crate::extends!(Device, link: Link);

impl Device {
    async fn connect(
        relay: &Relay,
        token: String,
    ) -> Result<Device, Vec<(ErrorCode, Option<DocId>)>> {
        let link = Link::connect(relay.addr, relay.cert(), token, "test").await;
        let mut d = Device {
            link,
            errors: Vec::new(),
        };
        match d.next().await {
            Some(Message::Welcome { .. }) => {
                d.engine.add_conn(RELAY);
                Ok(d)
            }
            _ => Err(d.errors),
        }
    }

    /// The next message from the relay. While waiting, the engine's timers run as a real
    /// driver would run them (a stalled sync round is retried).
    async fn next(&mut self) -> Option<Message> {
        match self.link.recv(Duration::from_secs(20)).await {
            Ok(Some(Message::Error { code, doc, .. })) => {
                self.errors.push((code, doc));
                Some(Message::Error {
                    code,
                    doc,
                    message: String::new(),
                })
            }
            Ok(Some(m)) => Some(m),
            _ => None,
        }
    }

    /// The next datagram from the relay.
    async fn datagram(&self) -> Message {
        self.link.datagram(Duration::from_secs(20)).await
    }

    async fn until(&mut self, mut done: impl FnMut(&mut Device) -> bool) -> bool {
        self.flush().await;
        for _ in 0..10_000 {
            if done(self) {
                return true;
            }
            let Some(msg) = self.next().await else {
                return done(self);
            };
            if std::env::var_os("WEFT_TEST_LOG").is_some() {
                eprintln!("device got {msg:?}");
            }
            match msg {
                Message::Subscribed { doc, role } => {
                    open_subscribed(&mut self.engine, doc, role);
                }
                m @ (Message::Sync { .. } | Message::Changes { .. } | Message::Ack { .. }) => {
                    self.engine.handle(RELAY, m).unwrap();
                }
                _ => {}
            }
            self.flush().await;
        }
        false
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_converge_and_a_later_device_gets_everything_even_after_a_relay_crash() {
    let relay = Relay::start();
    let doc = DocId::from_bytes([7; 16]);
    let mut alice = Device::connect(
        &relay,
        relay.token(&Claims::new("alice", now(), 3600).with_create(true)),
    )
    .await
    .unwrap();
    alice.engine.create(doc, Document::new());
    for i in 0..20 {
        alice.write(doc, &format!("m{i}"));
    }
    alice
        .writer
        .send(&Message::Subscribe { doc })
        .await
        .unwrap();
    assert!(alice.until(|d| d.engine.is_synced(RELAY, doc)).await);

    let bob_token = relay.token(&Claims::new("bob", now(), 3600).with_doc(doc, Role::ReadWrite));
    let mut bob = Device::connect(&relay, bob_token.clone()).await.unwrap();
    bob.engine.load(doc);
    bob.flush().await;
    bob.writer.send(&Message::Subscribe { doc }).await.unwrap();
    assert!(bob.until(|d| d.keys(doc).len() == 20).await);
    bob.write(doc, "from bob");
    bob.flush().await;
    assert!(
        alice
            .until(|d| d.keys(doc).contains(&"from bob".to_string()))
            .await
    );
    assert!(bob.until(|d| d.engine.is_synced(RELAY, doc)).await);

    // The relay dies right after acknowledging; a new device that never met the writers still
    // gets every acknowledged change from the restarted relay.
    drop(alice);
    drop(bob);
    let dir = relay.kill();
    let relay = Relay::start_in(dir);
    let mut carol = Device::connect(&relay, bob_token).await.unwrap();
    carol.engine.load(doc);
    carol.flush().await;
    carol
        .writer
        .send(&Message::Subscribe { doc })
        .await
        .unwrap();
    assert!(carol.until(|d| d.keys(doc).len() == 21).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_and_garbage_cuts_off_only_its_sender() {
    let relay = Relay::start();
    let doc = DocId::from_bytes([8; 16]);
    // Expired and wrongly signed tokens.
    let mut expired = Claims::new("alice", now() - 7200, 60);
    expired.exp = now() - 3600;
    let refused = Device::connect(&relay, relay.token(&expired))
        .await
        .err()
        .unwrap();
    assert_eq!(refused, vec![(ErrorCode::UNAUTHENTICATED, None)]);
    let other = weft_relay::JwtSecret::new(vec![1; 32]).unwrap();
    let forged = Minter::new(&other)
        .mint(&Claims::new("alice", now(), 60))
        .unwrap();
    let refused = Device::connect(&relay, forged).await.err().unwrap();
    assert_eq!(refused, vec![(ErrorCode::UNAUTHENTICATED, None)]);

    let token = relay.token(&Claims::new("alice", now(), 3600).with_create(true));
    let mut good = Device::connect(&relay, token.clone()).await.unwrap();
    let mut bad = Device::connect(&relay, token).await.unwrap();
    bad.writer
        .get_mut()
        .write_all(&[0x07, 0, 0, 0, 1, 0])
        .await
        .unwrap();
    // Whatever the relay had queued (the discovery listing) arrives, then the connection ends.
    let mut after_garbage = 0;
    while bad.next().await.is_some() {
        after_garbage += 1;
        assert!(
            after_garbage < 10,
            "the relay kept talking to a garbage sender"
        );
    }

    good.engine.create(doc, Document::new());
    good.write(doc, "still here");
    good.writer.send(&Message::Subscribe { doc }).await.unwrap();
    assert!(good.until(|d| d.engine.is_synced(RELAY, doc)).await);
}

#[test]
fn sigterm_stops_the_relay_cleanly() {
    let mut relay = Relay::start();
    let pid = relay.child.id();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = std::mem::replace(&mut relay.child, Command::new("true").spawn().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait()));
    let status = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("relay did not stop")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_devices_converge_on_one_conversation() {
    let relay = Relay::start();
    let doc = DocId::from_bytes([9; 16]);
    let token = relay.token(&Claims::new("team", now(), 3600).with_create(true));
    let mut devices = Vec::new();
    for i in 0..10 {
        let mut d = Device::connect(&relay, token.clone()).await.unwrap();
        d.engine.create(doc, Document::new());
        d.write(doc, &format!("device-{i}"));
        d.writer.send(&Message::Subscribe { doc }).await.unwrap();
        devices.push(d);
    }
    // Each device keeps syncing until it holds every device's write.
    let mut tasks = tokio::task::JoinSet::new();
    for mut d in devices {
        tasks.spawn(async move {
            assert!(
                d.until(|d| d.keys(doc).len() == 10 && d.engine.is_synced(RELAY, doc))
                    .await
            );
            d
        });
    }
    let mut devices = Vec::new();
    while let Some(d) = tasks.join_next().await {
        devices.push(d.expect("a device failed to converge"));
    }
    let heads = devices[0].engine.heads(doc);
    for d in devices.iter_mut() {
        assert_eq!(d.keys(doc).len(), 10);
        assert_eq!(d.engine.heads(doc), heads);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_device_never_delays_the_others() {
    let relay = Relay::start();
    let doc = DocId::from_bytes([10; 16]);
    let token = relay.token(&Claims::new("team", now(), 3600).with_create(true));
    let mut alice = Device::connect(&relay, token.clone()).await.unwrap();
    alice.engine.create(doc, Document::new());
    alice.write(doc, "first");
    alice
        .writer
        .send(&Message::Subscribe { doc })
        .await
        .unwrap();
    assert!(alice.until(|d| d.engine.is_synced(RELAY, doc)).await);
    // The stalled device subscribes and then never reads another byte.
    let stalled = Device::connect(&relay, token.clone()).await.unwrap();
    let mut stalled = stalled;
    stalled
        .writer
        .send(&Message::Subscribe { doc })
        .await
        .unwrap();
    let mut bob = Device::connect(&relay, token).await.unwrap();
    bob.engine.load(doc);
    bob.flush().await;
    bob.writer.send(&Message::Subscribe { doc }).await.unwrap();
    assert!(bob.until(|d| d.keys(doc).len() == 1).await);
    // Enough traffic to fill the stalled device's queue and flow-control window many times.
    for i in 0..3_000 {
        alice.write(doc, &format!("{i:04}-{}", "x".repeat(200)));
        if i % 100 == 0 {
            alice.flush().await;
        }
    }
    alice.flush().await;
    assert!(
        bob.until(|d| d.keys(doc).len() == 3_001).await,
        "bob fell behind"
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_on_a_live_connection_closes_it_unless_refreshed() {
    let relay = Relay::start_with(tempfile::tempdir().unwrap(), &["--jwt-leeway", "0s"]);
    let short =
        |relay: &Relay, ttl| relay.token(&Claims::new("alice", now(), ttl).with_create(true));
    let mut refreshed = Device::connect(&relay, short(&relay, 2)).await.unwrap();
    let mut lapsed = Device::connect(&relay, short(&relay, 2)).await.unwrap();
    refreshed
        .writer
        .send(&Message::Token {
            token: short(&relay, 3600),
        })
        .await
        .unwrap();
    // The lapsed connection is closed with UNAUTHENTICATED once its token expires.
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while lapsed.next().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "an expired connection stayed open");
    assert!(
        lapsed.errors.contains(&(ErrorCode::UNAUTHENTICATED, None)),
        "{:?}",
        lapsed.errors
    );
    // The refreshed one still works.
    let doc = DocId::from_bytes([11; 16]);
    refreshed.engine.create(doc, Document::new());
    refreshed.write(doc, "after expiry");
    refreshed
        .writer
        .send(&Message::Subscribe { doc })
        .await
        .unwrap();
    assert!(refreshed.until(|d| d.engine.is_synced(RELAY, doc)).await);
}

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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let name = name.to_string();
        if tokio::task::spawn_blocking(move || metric(http, &name))
            .await
            .unwrap()
            == value
        {
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
