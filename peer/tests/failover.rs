//! Several `--relay` addresses (the relays of one cluster): a device uses one at a time, moves
//! to another when its relay dies, and `sync --once` tries the next when the first cannot be
//! reached. Real `weft` and `weft-relay` processes on loopback.

mod common;

use std::time::Duration;

use common::{free_port, wait_for, Dev, Relay};

/// Two relays sharing the first one's certificate and token secret, as a cluster's do.
fn two_relays() -> (Relay, Relay, tempfile::TempDir) {
    let a = Relay::start();
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| a.dir.join(p).display().to_string();
    let (cert, key, secret) = (
        path("tls/cert.pem"),
        path("tls/key.pem"),
        path("jwt.secret"),
    );
    let b = Relay::start_at_with(
        dir.path(),
        "127.0.0.1:0",
        &["--cert", &cert, "--key", &key, "--jwt-secret-file", &secret],
    );
    (a, b, dir)
}

/// `sync --once` of `doc` on `dev` with the relay at `addr` alone (its result ignored: the
/// relay may not hold the document yet).
fn fetch(dev: &Dev, addr: &str, cert: &str, token: &str, doc: &str) {
    let mut args = common::watch_args(addr, cert, token);
    args.pop();
    args.extend(["--once", "--doc", doc, "--timeout", "10s"]);
    let _ = dev.run(&args);
}

#[test]
fn a_device_whose_relay_dies_moves_to_another_and_its_writes_reach_it() {
    let (mut a, b, _dir) = two_relays();
    let (addr_a, addr_b, cert) = (a.addr(), b.addr(), a.cert());
    let token = a.token("alice", &["--create"]);
    let alice = Dev::user("alice");
    let doc = alice.new_conversation("Trip");
    alice.ok(&["msg", "send", &doc, "first"]);
    let _watch = alice.spawn(&[
        "sync",
        "--relay",
        &addr_a,
        "--relay",
        &addr_b,
        "--relay-cert",
        &cert,
        "--token",
        &token,
        "--watch",
    ]);
    // The first relay serves it.
    let other = Dev::user("alice");
    wait_for(Duration::from_secs(30), "the message on relay A", || {
        fetch(&other, &addr_a, &cert, &token, &doc);
        other.msg_count(&doc) == 1
    });

    a.bg.kill();
    alice.ok(&["msg", "send", &doc, "after A died"]);
    let took = wait_for(Duration::from_secs(60), "both messages on relay B", || {
        fetch(&other, &addr_b, &cert, &token, &doc);
        other.msg_count(&doc) == 2
    });
    eprintln!("the write reached the second relay {took:?} after the first died");
}

#[test]
fn sync_once_tries_the_next_relay_when_the_first_cannot_be_reached() {
    let relay = Relay::start();
    let (addr, cert) = (relay.addr(), relay.cert());
    let token = relay.token("alice", &["--create"]);
    let dead = format!("127.0.0.1:{}", free_port());
    let alice = Dev::user("alice");
    let doc = alice.new_conversation("Trip");
    alice.ok(&["msg", "send", &doc, "hello"]);
    alice.ok(&[
        "sync",
        "--relay",
        &dead,
        "--relay",
        &addr,
        "--relay-cert",
        &cert,
        "--token",
        &token,
        "--once",
    ]);
    let other = Dev::user("alice");
    fetch(&other, &addr, &cert, &token, &doc);
    assert_eq!(other.msg_count(&doc), 1);
    // Every relay unreachable: a network failure, after trying each.
    let out = alice.run(&[
        "sync",
        "--relay",
        &dead,
        "--relay",
        &dead,
        "--relay-cert",
        &cert,
        "--token",
        &token,
        "--once",
        "--timeout",
        "30s",
    ]);
    assert!(!out.status.success());
}
