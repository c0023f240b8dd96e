//! Sharing, discovery, revocation and deletion, driven through the `weft` CLI against a real
//! relay.

mod common;

use std::time::Duration;

use common::{wait_for, Dev, Relay};

fn watch<'a>(d: &Dev, addr: &'a str, cert: &'a str, token: &'a str) -> common::Bg {
    d.spawn(&common::watch_args(addr, cert, token))
}

fn listed(d: &Dev, doc: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["doc", "list", "--json"])).ok()?;
    v.as_array()?.iter().find(|e| e["id"] == doc).cloned()
}

#[test]
fn sharing_reaches_a_connected_device_and_revocation_takes_effect_at_once() {
    let relay = Relay::start();
    let (addr, cert) = (relay.addr(), relay.cert());
    let alice_t = relay.token("alice", &["--create"]);
    let bob_t = relay.token("bob", &["--create"]);
    let (alice, bob) = (Dev::user("alice"), Dev::user("bob"));
    let doc = alice.new_conversation("Plans");
    alice.ok(&["msg", "send", &doc, "hello bob"]);
    // Sharing is queued offline and goes with the next sync, after the document itself.
    alice.ok(&["doc", "share", &doc, "--user", "bob", "--role", "ro"]);

    let _bob_watch = watch(&bob, &addr, &cert, &bob_t);
    alice.ok(&relay.sync_args(&addr, &cert, &alice_t));
    // Bob's running device gets the conversation without asking for it.
    wait_for(
        Duration::from_secs(20),
        "Bob to discover the shared conversation",
        || bob.msg_count(&doc) == 1,
    );
    assert_eq!(listed(&bob, &doc).unwrap()["role"], "ro");
    // Read-only: his write fails with 3 and changes nothing.
    let heads = bob.heads(&doc);
    bob.fails(&["msg", "send", &doc, "can I?"], 3);
    assert_eq!(bob.heads(&doc), heads);
    // Bob is not the owner: he cannot share, unshare or delete (his relay connection is live,
    // so the relay's answer comes back at once).
    bob.fails(&["doc", "share", &doc, "--user", "mallory"], 3);
    bob.fails(&["doc", "unshare", &doc, "--user", "bob"], 3);
    bob.fails(&["doc", "delete", &doc], 3);

    // Upgraded to rw, Bob's message reaches Alice.
    let _alice_watch = watch(&alice, &addr, &cert, &alice_t);
    alice.ok(&["doc", "share", &doc, "--user", "bob", "--role", "rw"]);
    wait_for(Duration::from_secs(20), "Bob's role to become rw", || {
        listed(&bob, &doc).is_some_and(|e| e["role"] == "rw")
    });
    bob.ok(&["msg", "send", &doc, "thanks"]);
    wait_for(
        Duration::from_secs(20),
        "Bob's message to reach Alice",
        || alice.msg_count(&doc) == 2,
    );

    // Unshared: Bob's device is told at once and nothing more reaches it.
    alice.ok(&["doc", "unshare", &doc, "--user", "bob"]);
    wait_for(
        Duration::from_secs(20),
        "Bob's copy to be marked no longer shared",
        || listed(&bob, &doc).is_some_and(|e| e["shared"] == false),
    );
    alice.ok(&["msg", "send", &doc, "secret"]);
    bob.fails(&["msg", "send", &doc, "still here?"], 3);
    // A round trip through the relay later, Bob still has only the first two messages.
    alice.ok(&["msg", "send", &doc, "another secret"]);
    let bob_only = Dev::user("bob");
    bob_only.ok(&relay.sync_args(&addr, &cert, &bob_t));
    assert!(
        listed(&bob_only, &doc).is_none(),
        "a new device of Bob's still discovers it"
    );
    assert_eq!(bob.msg_count(&doc), 2);
}

#[test]
fn an_admin_shares_for_the_owner_and_a_deleted_document_is_gone_for_good() {
    let relay = Relay::start();
    let (addr, cert) = (relay.addr(), relay.cert());
    let alice_t = relay.token("alice", &["--create"]);
    let admin_t = relay.token("backend", &["--admin"]);
    let carol_t = relay.token("carol", &["--create"]);
    let (alice, admin, carol) = (Dev::user("alice"), Dev::user("backend"), Dev::user("carol"));
    let doc = alice.new_conversation("Support");
    alice.ok(&relay.sync_args(&addr, &cert, &alice_t));

    // The backend fetches the document by id and shares it with Carol.
    let mut fetch = relay.sync_args(&addr, &cert, &admin_t);
    fetch.extend(["--doc", &doc]);
    admin.ok(&fetch);
    admin.ok(&["doc", "share", &doc, "--user", "carol", "--role", "rw"]);
    admin.ok(&fetch);
    carol.ok(&relay.sync_args(&addr, &cert, &carol_t));
    assert!(
        listed(&carol, &doc).is_some(),
        "Carol discovers the shared document"
    );

    // Alice deletes it: her device erases its copy once the relay has deleted it, it leaves
    // Carol's discovery list and it cannot be uploaded again.
    alice.ok(&["doc", "delete", &doc]);
    alice.ok(&relay.sync_args(&addr, &cert, &alice_t));
    assert!(listed(&alice, &doc).is_none());
    let carol2 = Dev::user("carol");
    carol2.ok(&relay.sync_args(&addr, &cert, &carol_t));
    assert!(listed(&carol2, &doc).is_none());
    // Carol's device held a copy; syncing again tells it the document was deleted, and it
    // erases the copy.
    let out = carol.run(&relay.sync_args(&addr, &cert, &carol_t));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("its owner deleted it"));
    assert!(listed(&carol, &doc).is_none());
    // Asking for it by id is refused.
    let mut by_id = relay.sync_args(&addr, &cert, &carol_t);
    by_id.extend(["--doc", &doc]);
    Dev::new().fails(&by_id, 3);
}

/// Whether `text` occurs anywhere in the raw bytes of a device's store.
fn store_holds(d: &Dev, text: &str) -> bool {
    let bytes = std::fs::read(d.dir.path().join("weft.redb")).unwrap();
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

/// The sync state of `doc` on the first link of `d`'s running sync, as `weft status` shows it.
fn link_state(d: &Dev, doc: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["status", "--json"])).ok()?;
    let entry = v["docs"].as_array()?.iter().find(|e| e["doc"] == doc)?;
    Some(entry["links"][0]["state"].as_str()?.to_owned())
}

/// Alice deletes a conversation she shares with Bob. Bob's laptop, syncing at that moment,
/// erases its copy at once; his phone, offline then, erases it at its next sync; Alice's own
/// devices erase theirs, and a share her tablet had queued is dropped with it. Each then
/// refuses commands on it, lists it no more, and holds none of its text in `weft.redb`; Bob's
/// own conversation is untouched.
#[test]
fn members_devices_erase_a_deleted_conversation_and_keep_the_rest() {
    const SECRET: &str = "the surprise party is at Marguerite's on the 14th";
    const BOBS: &str = "remember to water the ferns";
    let relay = Relay::start();
    let (addr, cert) = (relay.addr(), relay.cert());
    let alice_t = relay.token("alice", &["--create"]);
    let bob_t = relay.token("bob", &["--create"]);
    let (alice, tablet, laptop, phone) = (
        Dev::user("alice"),
        Dev::user("alice"),
        Dev::user("bob"),
        Dev::user("bob"),
    );
    let doc = alice.new_conversation("Party");
    alice.ok(&["msg", "send", &doc, SECRET]);
    alice.ok(&["doc", "share", &doc, "--user", "bob", "--role", "rw"]);
    alice.ok(&relay.sync_args(&addr, &cert, &alice_t));
    let notes = laptop.new_conversation("Notes");
    laptop.ok(&["msg", "send", &notes, BOBS]);
    for (d, t) in [(&laptop, &bob_t), (&phone, &bob_t), (&tablet, &alice_t)] {
        d.ok(&relay.sync_args(&addr, &cert, t));
        assert_eq!(d.msg_count(&doc), 1);
    }
    assert_eq!(phone.msg_count(&notes), 1);
    tablet.ok(&["doc", "share", &doc, "--user", "carol"]);

    let _laptop_watch = watch(&laptop, &addr, &cert, &bob_t);
    wait_for(Duration::from_secs(20), "Bob's laptop to sync", || {
        link_state(&laptop, &doc).as_deref() == Some("synced")
    });
    alice.ok(&["doc", "delete", &doc]);
    let out = alice.run(&relay.sync_args(&addr, &cert, &alice_t));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(listed(&alice, &doc).is_none());
    let err = alice.fails(&["msg", "list", &doc], 3);
    assert!(err.contains("was deleted"), "{err}");

    // Bob's laptop is told at once.
    wait_for(
        Duration::from_secs(20),
        "Bob's laptop to erase its copy",
        || listed(&laptop, &doc).is_none(),
    );
    let err = laptop.fails(&["msg", "send", &doc, "too late"], 3);
    assert!(err.contains("was deleted"), "{err}");
    assert_eq!(laptop.msg_count(&notes), 1);

    // His phone still has it until its next sync.
    assert_eq!(phone.msg_count(&doc), 1);
    phone.ok(&relay.sync_args(&addr, &cert, &bob_t));
    assert!(listed(&phone, &doc).is_none());
    phone.fails(&["doc", "show", &doc], 3);
    assert_eq!(phone.msg_count(&notes), 1);

    // Alice's tablet erases it too, with the share it had queued: the sync has nothing to
    // report as refused.
    tablet.ok(&relay.sync_args(&addr, &cert, &alice_t));
    assert!(listed(&tablet, &doc).is_none());
    let outbox = std::fs::read_to_string(tablet.dir.path().join("outbox.json")).unwrap();
    assert!(!outbox.contains(&doc), "{outbox}");

    // Each store was rewritten when it was next opened: no copy of the text is left.
    drop(_laptop_watch);
    for d in [&alice, &tablet, &laptop, &phone] {
        d.ok(&["doc", "list"]);
        assert!(
            !store_holds(d, SECRET),
            "{:?} still holds the text",
            d.dir.path()
        );
    }
    assert!(
        store_holds(&laptop, BOBS),
        "a live message is not found in the file either"
    );
}

/// Changes made offline to a document that turned read-only are refused by the relay, kept
/// aside in the data directory, and the device returns to the relay's version.
#[test]
fn offline_changes_to_a_document_that_became_read_only_are_kept_aside() {
    let relay = Relay::start();
    let (addr, cert) = (relay.addr(), relay.cert());
    let alice_t = relay.token("alice", &["--create"]);
    let bob_t = relay.token("bob", &[]);
    let (alice, bob) = (Dev::user("alice"), Dev::user("bob"));
    let doc = alice.new_conversation("Board");
    alice.ok(&["doc", "share", &doc, "--user", "bob", "--role", "rw"]);
    alice.ok(&relay.sync_args(&addr, &cert, &alice_t));
    bob.ok(&relay.sync_args(&addr, &cert, &bob_t));
    assert_eq!(listed(&bob, &doc).unwrap()["role"], "rw");

    // Bob writes offline while Alice makes him read-only.
    bob.ok(&["msg", "send", &doc, "offline draft"]);
    alice.ok(&["doc", "share", &doc, "--user", "bob", "--role", "ro"]);
    alice.ok(&["msg", "send", &doc, "from alice"]);
    alice.ok(&relay.sync_args(&addr, &cert, &alice_t));

    bob.ok(&relay.sync_args(&addr, &cert, &bob_t));
    assert_eq!(
        bob.msgs_json(&doc),
        alice.msgs_json(&doc),
        "Bob is back on the relay's version"
    );
    assert_eq!(bob.heads(&doc), alice.heads(&doc));
    let kept: Vec<_> = std::fs::read_dir(bob.dir.path().join("rejected"))
        .expect("the rejected version was kept aside")
        .collect();
    assert_eq!(kept.len(), 1);
    // Alice never got the draft.
    assert!(!alice.msgs_json(&doc).contains("offline draft"));
}
