//! The `weft-relay` binary over real QUIC on loopback, with real redb: devices connect with
//! their own keys and tokens, sync, and misbehave. Datagrams, metrics and eviction are in
//! `quic_datagrams.rs`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::quic::{Device, Relay};
use common::{now, RELAY};
use weft_core::wire::{ErrorCode, Message};
use weft_core::{DocId, Document, Role};
use weft_relay::{Claims, Minter};

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
