//! A relay cluster (`--cluster`): three real `weft-relay` processes sharing a throwaway
//! Postgres, light QUIC devices spread over them. Devices on different relays see each other's
//! changes live and the access list of the relay that took a share; a relay SIGKILLed right
//! after acknowledging changes loses none of them (the others have them), and when it comes
//! back it catches up on what it missed; presence and typing cross relays (and a dead relay's
//! members go offline); while every relay lives, only relays that accepted a document's
//! changes checkpoint it.

mod common;

use std::time::Duration;

use common::checkpoints::*;
use common::cluster::{caught_up, sibling_dir, start, start_with, texts};
use common::pg::{self, PgServer};
use weft_core::wire::ErrorCode;
use weft_core::wire::Message;
use weft_core::Role;

/// Reads `d`'s datagrams until one matches (at most 100, each within 10 s).
async fn datagram_until(d: &Device, matches: impl Fn(&Message) -> bool) {
    for _ in 0..100 {
        if matches(&d.datagram(Duration::from_secs(10)).await) {
            return;
        }
    }
    panic!("no such datagram");
}

/// Alice creates a conversation on relay `a` and shares it with Bob, who subscribes on `b`
/// once `b` has read the share from the log: the log's client, the document, both devices.
async fn alice_on_a_shares_with_bob_on_b(
    pg: &PgServer,
    a: &Relay,
    b: &Relay,
    title: &str,
) -> (tokio_postgres::Client, weft_core::DocId, Device, Device) {
    let db = pg::client(pg).await;
    let doc = new_doc();
    let mut alice = Device::connect(a, "alice").await;
    alice.create_conversation(doc, title).await;
    alice.share(doc, "bob", Role::ReadWrite).await;
    alice.synced(doc).await;
    caught_up(b, "b", &db).await;
    let mut bob = Device::connect(b, "bob").await;
    assert_eq!(bob.subscribe(doc).await, Ok(Role::ReadWrite));
    (db, doc, alice, bob)
}

/// `n` characters (a multiple of 32) of random hex: text that does not compress.
fn random_text(n: usize) -> String {
    (0..n / 32)
        .map(|_| format!("{:032x}", u128::from_le_bytes(rand_bytes())))
        .collect()
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
    // Presence crosses relays: Carol, joining on c, learns Alice is online on a, and Alice
    // sees Carol arrive; Bob's typing on b reaches both (presence comes as datagrams).
    let online = |who: &'static str| move |m: &Message| matches!(m, Message::Presence { doc: d, user, online: true, .. } if *d == doc && user == who);
    datagram_until(&carol, online("alice")).await;
    datagram_until(&alice, online("carol")).await;
    bob.writer
        .send(&Message::Ephemeral {
            doc,
            user: None,
            device: None,
            data: b"typing".to_vec(),
        })
        .await
        .unwrap();
    let typing = |m: &Message| {
        matches!(m, Message::Ephemeral { doc: d, user: Some(u), data, .. }
            if *d == doc && u == "bob" && data.as_slice() == b"typing")
    };
    datagram_until(&alice, typing).await;
    datagram_until(&carol, typing).await;
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
    // b appended all of it on its follower's connection (decision 40), none on one of its own.
    let appended = b.metric("weft_cluster_appended_total");
    assert!(appended >= 1.0);
    assert_eq!(b.metric("weft_cluster_appended_listening_total"), appended);
    // c accepted no change of the document: it wrote no checkpoint of it (once b has died,
    // a and c checkpoint what b accepted lately, so this is looked at before).
    assert_eq!(c.metric("weft_checkpoint_documents_total"), 0.0);
    let b_dir = b.process.kill();
    // Every change b acknowledged reaches alice and carol through the log.
    alice.until(|d| texts(d, doc).len() == 22).await;
    carol.until(|d| texts(d, doc).len() == 22).await;
    let a_texts = texts(&mut alice, doc);
    assert!((0..20).all(|i| a_texts.contains(&format!("bob {i}"))));
    // b announced no one's leaving; once it has been silent a while, a tells alice that bob
    // went offline.
    datagram_until(&alice, |m| matches!(m, Message::Presence { doc: d, user, online: false, .. } if *d == doc && user == "bob")).await;

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

    // The checkpoint holds everything.
    alice.synced(doc).await;
    let heads = alice.heads(doc);
    checkpointed(&db, doc, &heads).await;
    assert!(c.metric("weft_cluster_delivered_total") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_relay_that_dies_for_good_accepted_is_checkpointed_by_another() {
    let Some(pg) = PgServer::start() else { return };
    let a = start(tempfile::tempdir().unwrap(), &pg, "a");
    // b checkpoints once an hour: what it accepts is in no checkpoint when it dies.
    let b = start_with(
        sibling_dir(&a),
        &pg.url(),
        "b",
        &["--checkpoint-interval", "1h"],
    );
    let db = pg::client(&pg).await;
    let doc = new_doc();
    let mut alice = Device::connect(&a, "alice").await;
    alice.create_conversation(doc, "Last words").await;
    alice.share(doc, "bob", Role::ReadWrite).await;
    alice.synced(doc).await;
    checkpointed(&db, doc, &alice.heads(doc)).await;
    caught_up(&b, "b", &db).await;

    // Bob writes through b, which acknowledges; a imports it; b dies and never comes back.
    let mut bob = Device::connect(&b, "bob").await;
    assert_eq!(bob.subscribe(doc).await, Ok(Role::ReadWrite));
    for i in 0..5 {
        bob.say(doc, &format!("bob {i}"));
    }
    bob.synced(doc).await;
    let heads = bob.heads(doc);
    caught_up(&a, "a", &db).await;
    let _gone = b.process.kill();

    // Once b has been silent a while, a checkpoints what b accepted lately.
    checkpointed(&db, doc, &heads).await;
    assert_eq!(message_rows(&db, doc).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_document_quota_counts_the_whole_cluster() {
    let Some(pg) = PgServer::start() else { return };
    let quota = ["--checkpoint-interval", "200ms", "--max-docs-per-user", "2"];
    let a = start_with(tempfile::tempdir().unwrap(), &pg.url(), "a", &quota);
    let b = start_with(sibling_dir(&a), &pg.url(), "b", &quota);
    let db = pg::client(&pg).await;

    // Alice creates one document on each relay (b has counted hers already: it read the
    // count before a's creation arrived).
    let mut on_b = Device::connect(&b, "alice").await;
    on_b.create_conversation(new_doc(), "first, on b").await;
    let mut on_a = Device::connect(&a, "alice").await;
    on_a.create_conversation(new_doc(), "second, on a").await;
    caught_up(&b, "b", &db).await;

    // A third is over the quota on b as well as on a.
    let third = new_doc();
    on_b.engine.create(third, weft_core::Document::new());
    on_b.writer
        .send(&Message::Subscribe { doc: third })
        .await
        .unwrap();
    on_b.until(|d| d.refused(third).is_some()).await;
    assert_eq!(on_b.refused(third), Some(ErrorCode::LIMIT_REACHED));
}

/// Entries read before the ones they depend on (a relay that came back after a crash, a log
/// read out of order) still reach the devices: the later change is held until its dependency
/// arrives, then both are forwarded. Written here straight into the log, as a relay "x".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_imported_before_their_dependencies_reach_the_devices() {
    let Some(pg) = PgServer::start() else { return };
    let a = start(tempfile::tempdir().unwrap(), &pg, "a");
    let b = start(sibling_dir(&a), &pg, "b");
    let (db, doc, mut alice, mut bob) =
        alice_on_a_shares_with_bob_on_b(&pg, &a, &b, "Out of order").await;

    // Two changes of Alice's, the second depending on the first, never sent by her device.
    let before: Vec<_> = alice.engine.read(doc, |d| d.heads()).unwrap();
    alice.say(doc, "first");
    alice.say(doc, "second");
    let (first, second) = alice
        .engine
        .read(doc, |d| {
            let changes = d.automerge().get_changes(&before);
            assert_eq!(changes.len(), 2);
            (
                changes[0].raw_bytes().to_vec(),
                changes[1].raw_bytes().to_vec(),
            )
        })
        .unwrap();
    drop(alice);
    for body in [&second, &first] {
        db.execute(
            "insert into weft_changes (relay, doc_id, kind, body) values ('x', $1, 1, $2)",
            &[&doc.to_string(), body],
        )
        .await
        .unwrap();
    }
    db.execute("select pg_notify('weft_changes', 'x')", &[])
        .await
        .unwrap();
    bob.until(|d| {
        let t = texts(d, doc);
        t.contains(&"first".to_string()) && t.contains(&"second".to_string())
    })
    .await;
}

/// A user's storage quota counts what the cluster's other relays wrote into their documents:
/// a relay that never had the document loaded judges the first change against its size in the
/// store, not against what it had recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_storage_quota_counts_what_other_relays_stored() {
    four_more_kilobytes_on_a(Written::IntoTheHeavyDocument).await;
}

/// A relay counts what the others stored into a document it never loads: alice's writes
/// into one document through b take her over her quota on a, for another document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_storage_quota_counts_documents_this_relay_never_loaded() {
    four_more_kilobytes_on_a(Written::IntoAnotherDocument).await;
}

/// Where the quota tests write on relay a.
enum Written {
    IntoTheHeavyDocument,
    IntoAnotherDocument,
}

/// Two relays with a 10,000-byte storage quota; about 8 KB of Alice's document written
/// through b; then, through a (which never loaded that document), 4 KB more, into that document
/// or another of hers (`written`): refused.
async fn four_more_kilobytes_on_a(written: Written) {
    let Some(pg) = PgServer::start() else { return };
    let quota = [
        "--checkpoint-interval",
        "200ms",
        "--max-user-bytes",
        "10000",
    ];
    let a = start_with(tempfile::tempdir().unwrap(), &pg.url(), "a", &quota);
    let b = start_with(sibling_dir(&a), &pg.url(), "b", &quota);
    let db = pg::client(&pg).await;

    // About 8 KB of Alice's document written through b, within her 10,000 bytes.
    let heavy = new_doc();
    let mut on_b = Device::connect(&b, "alice").await;
    on_b.create_conversation(heavy, "Heavy").await;
    let target = match written {
        Written::IntoTheHeavyDocument => heavy,
        Written::IntoAnotherDocument => {
            let light = new_doc();
            on_b.create_conversation(light, "Light").await;
            light
        }
    };
    for _ in 0..6 {
        on_b.say(heavy, &random_text(1_000));
        on_b.synced(heavy).await;
    }
    assert_eq!(on_b.refused(heavy), None);
    caught_up(&a, "a", &db).await;

    // Through a: 4 KB more is over the quota.
    let mut on_a = Device::connect(&a, "alice").await;
    assert_eq!(on_a.subscribe(target).await, Ok(Role::ReadWrite));
    on_a.say(target, &random_text(4_000));
    on_a.until(|d| d.refused(target).is_some()).await;
    assert_eq!(on_a.refused(target), Some(ErrorCode::REFUSED));
}

/// An entry too large to travel in its notification (over 5,000 bytes) is announced by its
/// `seq` and read from the log; small ones around it still arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_too_large_for_its_notification_is_read_from_the_log() {
    let Some(pg) = PgServer::start() else { return };
    let a = start(tempfile::tempdir().unwrap(), &pg, "a");
    let b = start(sibling_dir(&a), &pg, "b");
    let (db, doc, mut alice, mut bob) =
        alice_on_a_shares_with_bob_on_b(&pg, &a, &b, "Long read").await;

    let long = random_text(12_800);
    alice.say(doc, "before");
    alice.synced(doc).await;
    alice.say(doc, &long);
    alice.synced(doc).await;
    alice.say(doc, "after");
    alice.synced(doc).await;
    let sizes: Vec<i32> = db
        .query(
            "select octet_length(body) from weft_changes where kind = 1 order by seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(sizes.iter().any(|s| *s > 5_000), "{sizes:?}");
    bob.until(|d| {
        let t = texts(d, doc);
        ["before", long.as_str(), "after"]
            .iter()
            .all(|m| t.iter().any(|x| x == m))
    })
    .await;
}
