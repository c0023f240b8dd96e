//! Write rules as CLI users meet them: a declared kind created and moved through its
//! transitions with `weft rec`, and a device that wrote a forbidden change while offline.

mod common;

use common::{Dev, Relay};

const ESCROW: &str = include_str!("../../schema/tests/fixtures/escrow.toml");

fn status(d: &Dev, doc: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["rec", "show", doc, "--json"])).unwrap();
    assert_eq!(v["kind"], "escrow");
    v["fields"]["status"].as_str().unwrap().to_owned()
}

/// Alice sells a bike to Bob through an escrow: each party makes only its own moves, in order;
/// a forbidden move exits 3 and changes nothing, on the device and at the relay.
#[test]
fn an_escrow_between_two_cli_users() {
    let data = tempfile::tempdir().unwrap();
    let kinds = data.path().join("kinds.toml");
    std::fs::write(&kinds, ESCROW).unwrap();
    let relay_dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_at_with(
        relay_dir.path(),
        "127.0.0.1:0",
        &["--kinds", kinds.to_str().unwrap()],
    );
    let (addr, cert) = (relay.addr(), relay.cert());
    let alice_t = relay.token("alice", &["--create"]);
    let bob_t = relay.token("bob", &[]);
    let (alice, bob) = (Dev::user("alice"), Dev::user("bob"));
    // A device learns the declared kinds from its relay.
    alice.fails(&["doc", "new", "--kind", "escrow"], 2);
    alice.ok(&relay.sync_args(&addr, &cert, &alice_t));
    alice.fails(
        &["doc", "new", "--kind", "escrow", "--set", "amount=lots"],
        2,
    );
    let doc = alice
        .ok(&[
            "doc",
            "new",
            "--kind",
            "escrow",
            "--set",
            "buyer=bob",
            "--set",
            "seller=alice",
            "--set",
            "amount=250",
        ])
        .trim()
        .to_owned();
    assert_eq!(status(&alice, &doc), "pending");
    alice.ok(&["doc", "share", &doc, "--user", "bob", "--role", "rw"]);
    alice.ok(&relay.sync_args(&addr, &cert, &alice_t));

    bob.ok(&relay.sync_args(&addr, &cert, &bob_t));
    assert_eq!(status(&bob, &doc), "pending");
    // Skipping a step, or the seller's move: refused on the device, nothing changes.
    bob.fails(&["rec", "set", &doc, "status", "shipped"], 3);
    bob.fails(&["rec", "set", &doc, "amount", "1"], 3);
    assert_eq!(status(&bob, &doc), "pending");
    bob.ok(&["rec", "set", &doc, "status", "funded"]);
    bob.ok(&["rec", "set", &doc, "note", "paid by card"]);
    bob.ok(&relay.sync_args(&addr, &cert, &bob_t));

    alice.ok(&relay.sync_args(&addr, &cert, &alice_t));
    assert_eq!(status(&alice, &doc), "funded");
    alice.fails(&["rec", "set", &doc, "status", "released"], 3);
    alice.ok(&["rec", "set", &doc, "status", "shipped"]);
    alice.ok(&relay.sync_args(&addr, &cert, &alice_t));
    bob.ok(&relay.sync_args(&addr, &cert, &bob_t));
    assert_eq!(status(&bob, &doc), "shipped");
    let shown = bob.ok(&["rec", "show", &doc]);
    assert!(shown.contains("note: paid by card"), "{shown}");
    assert!(shown.contains("amount: 250"), "{shown}");
}

/// Bob, offline, posts a message of his own, then edits Alice's and posts again. On
/// reconnect the relay takes his first message, refuses the edit with the one after it (which
/// depends on it), and his device exits 3, keeps its version aside and returns to the relay's.
#[test]
fn a_forbidden_change_made_offline_is_refused_on_reconnect_and_the_rest_lands() {
    let relay = Relay::start();
    let (addr, cert) = (relay.addr(), relay.cert());
    let alice_t = relay.token("alice", &["--create"]);
    let bob_t = relay.token("bob", &[]);
    let (alice, bob) = (Dev::user("alice"), Dev::user("bob"));
    let doc = alice.new_conversation("Weekend");
    let hers = alice
        .ok(&["msg", "send", &doc, "hike on saturday?"])
        .trim()
        .to_owned();
    alice.ok(&["doc", "share", &doc, "--user", "bob", "--role", "rw"]);
    alice.ok(&relay.sync_args(&addr, &cert, &alice_t));
    bob.ok(&relay.sync_args(&addr, &cert, &bob_t));

    // Offline.
    bob.ok(&["msg", "send", &doc, "count me in"]);
    bob.ok(&["msg", "edit", &doc, &hers, "hike on sunday!"]);
    bob.ok(&["msg", "send", &doc, "see you sunday"]);
    let out = bob.run(&relay.sync_args(&addr, &cert, &bob_t));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("author"), "{err}");
    assert!(
        std::fs::read_dir(bob.dir.path().join("rejected"))
            .unwrap()
            .next()
            .is_some(),
        "the refused version is kept aside"
    );
    // Back on the relay's version: his first message, Alice's original.
    bob.ok(&relay.sync_args(&addr, &cert, &bob_t));
    alice.ok(&relay.sync_args(&addr, &cert, &alice_t));
    for d in [&alice, &bob] {
        let msgs: Vec<serde_json::Value> = serde_json::from_str(&d.msgs_json(&doc)).unwrap();
        let bodies: Vec<&str> = msgs.iter().map(|m| m["body"].as_str().unwrap()).collect();
        assert_eq!(bodies, ["hike on saturday?", "count me in"]);
    }
    assert_eq!(alice.heads(&doc), bob.heads(&doc));
    // Bob carries on, with a new actor.
    bob.ok(&["msg", "send", &doc, "which trail?"]);
    bob.ok(&relay.sync_args(&addr, &cert, &bob_t));
    alice.ok(&relay.sync_args(&addr, &cert, &alice_t));
    assert_eq!(alice.msg_count(&doc), 3);
}
