//! `weft` through a real `weft-relay` over QUIC, spawned as a user would run them.

mod common;

use std::time::Duration;

use common::{free_port, wait_for, Dev, Relay};

/// Two devices edit one conversation offline, 50 messages each, then sync through the relay:
/// both show all 100 in the same order, byte for byte, with equal heads.
#[test]
fn two_devices_converge_through_a_relay_after_editing_offline() {
    let relay = Relay::start();
    let (addr, cert) = (relay.addr(), relay.cert());
    let alice = relay.token("alice", &["--create"]);
    let (a, b) = (Dev::user("alice"), Dev::user("alice"));
    let doc = a.new_conversation("Lunch");
    a.ok(&relay.sync_args(&addr, &cert, &alice));
    // Alice's second device has only a token: discovery brings the conversation.
    b.ok(&relay.sync_args(&addr, &cert, &alice));
    assert_eq!(b.msg_count(&doc), 0);
    assert_eq!(a.heads(&doc), b.heads(&doc));

    for i in 0..50 {
        a.ok(&["msg", "send", &doc, &format!("a{i}")]);
        b.ok(&["msg", "send", &doc, &format!("b{i}")]);
    }
    a.ok(&relay.sync_args(&addr, &cert, &alice));
    b.ok(&relay.sync_args(&addr, &cert, &alice));
    a.ok(&relay.sync_args(&addr, &cert, &alice));

    let (ja, jb) = (a.msgs_json(&doc), b.msgs_json(&doc));
    assert_eq!(ja, jb, "msg list --json differs");
    assert_eq!(a.msg_count(&doc), 100);
    assert_eq!(a.heads(&doc), b.heads(&doc));
    // Both devices report everything confirmed by the relay.
    let status: serde_json::Value = serde_json::from_str(&a.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["docs"][0]["unconfirmed"], 0, "{status}");
    assert_eq!(status["docs"][0]["role"], "rw", "{status}");

    // A third device with only a token gets the whole conversation (one snapshot), and shows
    // its tail: the last three messages, as the full list ends.
    let c = Dev::user("alice");
    c.ok(&relay.sync_args(&addr, &cert, &alice));
    assert_eq!(c.heads(&doc), a.heads(&doc));
    assert_eq!(c.msgs_json(&doc), ja);
    let all: Vec<serde_json::Value> = serde_json::from_str(&ja).unwrap();
    let last: Vec<serde_json::Value> =
        serde_json::from_str(&c.ok(&["msg", "list", &doc, "--last", "3", "--json"])).unwrap();
    assert_eq!(last, all[all.len() - 3..]);
    let text = c.ok(&["msg", "list", &doc, "--last", "3"]);
    assert_eq!(text.lines().count(), 3);
    assert!(text.ends_with("b49\n"), "{text}");
}

/// A relay that is down when the device starts is reached once it comes up; a relay killed
/// and restarted on the same address is found again, and writes made while `sync --watch`
/// runs reach the other device without another command.
#[test]
fn a_watching_device_finds_the_relay_when_it_comes_up_and_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    // Mint tokens from a relay started once to create the dev secret and certificate.
    let first = Relay::start_at(data.path(), &listen);
    let (cert, alice) = (first.cert(), first.token("alice", &["--create"]));
    drop(first);

    let (a, b) = (Dev::user("alice"), Dev::user("alice"));
    let doc = a.new_conversation("Trip");
    a.ok(&["msg", "send", &doc, "before the relay was up"]);
    let watch = |d: &Dev| d.spawn(&common::watch_args(&listen, &cert, &alice));
    let _wa = watch(&a);
    let _wb = watch(&b);

    let relay = Relay::start_at(data.path(), &listen);
    // B discovers the document through the relay and receives its message.
    let took = wait_for(Duration::from_secs(30), "B to receive A's message", || {
        b.msg_count(&doc) == 1
    });
    eprintln!("reached a relay that came up late in {took:?}");

    // A write on A while both watch (handed to A's running sync) reaches B.
    a.ok(&["msg", "send", &doc, "live"]);
    wait_for(Duration::from_secs(15), "a live message", || {
        b.msg_count(&doc) == 2
    });

    // The relay dies and comes back on the same address with its data.
    let mut relay = relay;
    relay.bg.kill();
    a.ok(&["msg", "send", &doc, "while the relay was down"]);
    let _relay = Relay::start_at(data.path(), &listen);
    let took = wait_for(
        Duration::from_secs(30),
        "B to get the message written while the relay was down",
        || b.msg_count(&doc) == 3,
    );
    eprintln!("found the restarted relay again and converged in {took:?}");
    assert_eq!(a.msgs_json(&doc), b.msgs_json(&doc));
}

/// Killing a device in the middle of a sync loses nothing it had committed, and a later sync
/// completes.
#[test]
fn a_device_killed_mid_sync_loses_nothing() {
    let relay = Relay::start();
    let (addr, cert) = (relay.addr(), relay.cert());
    let alice = relay.token("alice", &["--create"]);
    let (a, b) = (Dev::user("alice"), Dev::user("alice"));
    let doc = a.new_conversation("Big");
    for i in 0..150 {
        a.ok(&["msg", "send", &doc, &format!("message {i}")]);
    }
    // A is killed as it starts syncing; it still has every message it committed.
    let mut sync = a.spawn(&common::watch_args(&addr, &cert, &alice));
    // Not waiting for anything: a pause so the kill lands early in the other process's sync.
    std::thread::sleep(Duration::from_millis(30));
    sync.kill();
    assert_eq!(a.msg_count(&doc), 150);
    a.ok(&relay.sync_args(&addr, &cert, &alice));

    // B is killed while receiving; its store still opens and a later sync completes it.
    let mut recv = b.spawn(&common::watch_args(&addr, &cert, &alice));
    // As above: a pause so the kill lands while the other process receives.
    std::thread::sleep(Duration::from_millis(100));
    recv.kill();
    let partial = b.msg_count(&doc);
    eprintln!("B had {partial} of 150 messages when it was killed");
    b.ok(&relay.sync_args(&addr, &cert, &alice));
    assert_eq!(b.msg_count(&doc), 150);
    assert_eq!(a.msgs_json(&doc), b.msgs_json(&doc));
}

/// Every error case of `sync` and of writing, with the contract's exit statuses.
#[test]
fn refusals_and_failures_have_the_contract_exit_statuses() {
    let relay = Relay::start();
    let (addr, cert) = (relay.addr(), relay.cert());
    let alice = relay.token("alice", &["--create"]);
    let a = Dev::user("alice");
    let doc = a.new_conversation("Private");
    a.ok(&["msg", "send", &doc, "hi"]);
    a.ok(&relay.sync_args(&addr, &cert, &alice));

    // A refused token: 3.
    let forged = format!("{}x", &alice[..alice.len() - 1]);
    a.fails(&relay.sync_args(&addr, &cert, &forged), 3);
    a.fails(&relay.sync_args(&addr, &cert, "not-a-jwt"), 3);
    // A relay nobody listens on: 4.
    let nowhere = format!("127.0.0.1:{}", free_port());
    a.fails(
        &[
            "sync",
            "--relay",
            &nowhere,
            "--relay-cert",
            &cert,
            "--token",
            &alice,
            "--once",
            "--timeout",
            "2s",
        ],
        4,
    );
    // Bob may not read Alice's document: asking for it by id is refused with 3, and he gets
    // nothing.
    let bob = Dev::new();
    let bob_token = relay.token("bob", &[]);
    let mut args = relay.sync_args(&addr, &cert, &bob_token);
    args.extend(["--doc", &doc]);
    bob.fails(&args, 3);
    bob.fails(&["msg", "list", &doc], 1);

    // Carol has a read-only grant: she reads, and her write fails with 3 and changes nothing.
    let carol = Dev::new();
    let grant = format!("{doc}:ro");
    let carol_token = relay.token("carol", &["--doc", &grant]);
    carol.ok(&relay.sync_args(&addr, &cert, &carol_token));
    assert_eq!(carol.msg_count(&doc), 1);
    let heads = carol.heads(&doc);
    carol.fails(&["msg", "send", &doc, "let me in"], 3);
    assert_eq!(carol.heads(&doc), heads);

    // Usage errors: 2. A malformed id, a missing token, conflicting flags.
    a.fails(&["msg", "list", "not-an-id"], 2);
    a.fails(&["sync", "--relay", &addr, "--once"], 2);
    a.fails(&["sync", "--relay", &addr, "--token", &alice], 2);
    a.fails(&["doc", "new", "--kind", "spreadsheet"], 2);
    // An unknown (well-formed) document: 1.
    let unknown = weft_peer::DocId::from_bytes([9; 16]).to_string();
    a.fails(&["doc", "show", &unknown], 1);
    a.fails(&["doc", "heads", &format!("automerge:{unknown}")], 1);
    let other = Dev::new().new_conversation("elsewhere");
    a.fails(&["doc", "show", &other], 1);
    a.fails(&["msg", "send", &other, "x"], 1);
}

/// A device acts for one user: the user of the first token it syncs with (or `init --name`);
/// a token for another user is refused, and its messages are that user's.
#[test]
fn a_device_acts_for_one_user() {
    let relay = Relay::start();
    let (addr, cert) = (relay.addr(), relay.cert());
    let alice = relay.token("alice", &["--create"]);
    let bob = relay.token("bob", &["--create"]);
    let d = Dev::new();
    d.init();
    let doc = d.new_conversation("Mine");
    // Not knowing its user yet, it cannot post.
    d.fails(&["msg", "send", &doc, "hello"], 1);
    d.ok(&relay.sync_args(&addr, &cert, &alice));
    let id = d.ok(&["msg", "send", &doc, "hello"]).trim().to_owned();
    let list = d.msgs_json(&doc);
    assert!(
        list.contains(&id) && list.contains("\"author\":\"alice\""),
        "{list}"
    );
    d.fails(&relay.sync_args(&addr, &cert, &bob), 3);
    d.fails(&["init", "--name", "bob"], 3);
    // `init --name` chooses up front.
    let e = Dev::user("erin");
    e.fails(&relay.sync_args(&addr, &cert, &alice), 3);
}
