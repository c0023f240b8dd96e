//! Sharing, discovery and the document lifecycle through the real `weft-relay` binary, over
//! real QUIC on loopback with real redb: owners share and unshare, devices discover what they
//! may read without asking, revocation and deletion take effect on live connections, and a
//! restarted relay remembers all of it.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::session::{self, Session};
use common::{now, Link, RelayProcess, RELAY};
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::ROOT;
use weft_core::wire::{ErrorCode, Message};
use weft_core::{DocId, Document, Role};
use weft_relay::Claims;

/// The relay binary on a data directory of its own.
struct Relay {
    process: RelayProcess,
    addr: SocketAddr,
}

impl Relay {
    fn start() -> Relay {
        Self::start_in(tempfile::tempdir().unwrap())
    }

    fn start_in(dir: tempfile::TempDir) -> Relay {
        let process = RelayProcess::start(dir, &["--http", "off"], &[]);
        let addr = process.addr("quic=");
        Relay { process, addr }
    }

    fn token(&self, claims: Claims) -> String {
        self.process.token(&claims)
    }

    /// SIGKILL: nothing is flushed beyond what the relay had acknowledged.
    fn kill(self) -> tempfile::TempDir {
        self.process.kill()
    }
}

fn user(name: &str) -> Claims {
    Claims::new(name, now(), 3600)
}

/// One device: an engine, a connection to the relay, and what the relay told it.
struct Device {
    session: Session,
}

crate::extends!(Device, session: Session);

impl Device {
    async fn connect(relay: &Relay, token: String) -> Device {
        let cert = relay.process.cert();
        let link = Link::connect(relay.addr, cert, token, "sharing-test").await;
        let session = Session::start(link, Duration::from_secs(20), 10_000).await;
        Device { session }
    }

    async fn send(&mut self, msg: Message) {
        self.writer.send(&msg).await.unwrap();
    }

    /// Handles relay messages until `done` holds.
    async fn until(&mut self, done: impl FnMut(&mut Device) -> bool) {
        session::until(self, done).await
    }

    /// Sends a control request and waits for its reply.
    async fn control(&mut self, request: impl FnOnce(u64) -> Message) -> Option<ErrorCode> {
        session::control(self, request).await
    }

    async fn share(&mut self, doc: DocId, user: &str, role: Role) -> Option<ErrorCode> {
        let user = user.to_string();
        self.control(|id| Message::Share {
            id,
            doc,
            user,
            role,
        })
        .await
    }

    async fn unshare(&mut self, doc: DocId, user: &str) -> Option<ErrorCode> {
        let user = user.to_string();
        self.control(|id| Message::Unshare { id, doc, user }).await
    }

    async fn delete(&mut self, doc: DocId) -> Option<ErrorCode> {
        self.control(|id| Message::Delete { id, doc }).await
    }

    /// Creates `doc` with one key and uploads it.
    async fn create(&mut self, doc: DocId, key: &str) {
        self.engine.create(doc, Document::new());
        self.write(doc, key);
        self.send(Message::Subscribe { doc }).await;
        self.until(|d| d.engine.is_synced(RELAY, doc)).await;
    }

    /// Subscribes to a document it does not hold yet and waits for the relay's answer.
    async fn subscribe(&mut self, doc: DocId) {
        self.engine.load(doc);
        self.flush().await;
        self.send(Message::Subscribe { doc }).await;
        self.until(|d| d.roles.contains_key(&doc) || d.refused(doc).is_some())
            .await;
    }

    /// A change made outside this device's own copy, sent as is: what a device that ignores
    /// its read-only role would send.
    async fn send_foreign_change(&mut self, doc: DocId, key: &str) {
        let raw = self
            .engine
            .read(doc, |d| {
                let mut fork = d.automerge().fork();
                let mut tx = fork.transaction();
                tx.put(ROOT, key, true).unwrap();
                tx.commit();
                fork.get_last_local_change().unwrap().raw_bytes().to_vec()
            })
            .unwrap();
        self.send(Message::Changes {
            doc,
            changes: vec![bytes::Bytes::from(raw)],
        })
        .await;
    }

    fn has(&mut self, doc: DocId, key: &str) -> bool {
        self.keys(doc).iter().any(|k| k == key)
    }
}

fn doc(n: u8) -> DocId {
    DocId::from_bytes([n; 16])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alices_other_devices_discover_her_documents_with_only_a_token() {
    let relay = Relay::start();
    let token = relay.token(user("alice").with_create(true));
    let mut laptop = Device::connect(&relay, token.clone()).await;
    let mut phone = Device::connect(&relay, token.clone()).await;
    assert!(laptop.listed.is_empty() && phone.listed.is_empty());

    laptop.create(doc(1), "from the laptop").await;
    // The phone, already connected, hears of it without asking.
    phone
        .until(|d| d.listed.get(&doc(1)) == Some(&Role::ReadWrite))
        .await;

    // A new tablet with nothing but a token gets the list at once, then the content.
    let mut tablet = Device::connect(&relay, token).await;
    assert_eq!(tablet.listed, BTreeMap::from([(doc(1), Role::ReadWrite)]));
    tablet.subscribe(doc(1)).await;
    tablet.until(|d| d.has(doc(1), "from the laptop")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_gets_a_shared_document_reads_it_writes_once_upgraded_and_loses_it_on_unshare() {
    let relay = Relay::start();
    let mut alice = Device::connect(&relay, relay.token(user("alice").with_create(true))).await;
    let mut bob = Device::connect(&relay, relay.token(user("bob"))).await;
    let d = doc(2);
    alice.create(d, "hello bob").await;
    assert!(bob.listed.is_empty());

    // Shared read-only: Bob's connected device learns of it without asking, and reads it.
    assert_eq!(alice.share(d, "bob", Role::ReadOnly).await, None);
    bob.until(|b| b.listed.get(&d) == Some(&Role::ReadOnly))
        .await;
    bob.subscribe(d).await;
    assert_eq!(bob.roles[&d], Role::ReadOnly);
    bob.until(|b| b.has(d, "hello bob")).await;

    // His write is refused and reaches nobody.
    bob.send_foreign_change(d, "sneaky").await;
    bob.until(|b| b.errors.contains(&(ErrorCode::READ_ONLY, Some(d))))
        .await;

    // Upgraded to rw: his live subscription learns its new role, and his change reaches Alice.
    assert_eq!(alice.share(d, "bob", Role::ReadWrite).await, None);
    bob.until(|b| {
        b.listed.get(&d) == Some(&Role::ReadWrite) && b.roles.get(&d) == Some(&Role::ReadWrite)
    })
    .await;
    bob.write(d, "from bob");
    bob.until(|b| b.engine.is_synced(RELAY, d)).await;
    alice.until(|a| a.has(d, "from bob")).await;
    assert!(!alice.has(d, "sneaky"));
    // Sharing again with the same role is already done (a resent request).
    assert_eq!(alice.share(d, "bob", Role::ReadWrite).await, None);

    // Unshared: Bob's subscription ends at once and the document leaves his list.
    assert_eq!(alice.unshare(d, "bob").await, None);
    bob.until(|b| {
        b.errors.contains(&(ErrorCode::FORBIDDEN, Some(d))) && !b.listed.contains_key(&d)
    })
    .await;
    let before = bob.doc_messages.get(&d).copied().unwrap_or(0);
    alice.write(d, "after unshare");
    alice.flush().await;
    alice.until(|a| a.engine.is_synced(RELAY, d)).await;
    // Alice's change was forwarded (if at all) before her ack; Bob's request, answered after
    // it on the same ordered stream, proves nothing of the document came for him.
    assert_eq!(bob.delete(d).await, Some(ErrorCode::FORBIDDEN));
    assert_eq!(bob.doc_messages.get(&d).copied().unwrap_or(0), before);
    assert!(!bob.has(d, "after unshare"));
    // Unsharing again is already done.
    assert_eq!(alice.unshare(d, "bob").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_or_an_admin_changes_access_and_strangers_learn_nothing() {
    let relay = Relay::start();
    let mut alice = Device::connect(&relay, relay.token(user("alice").with_create(true))).await;
    let d = doc(3);
    alice.create(d, "alice's").await;
    assert_eq!(alice.share(d, "bob", Role::ReadWrite).await, None);

    // Bob may write to it, but not change who else may: same answer as for a document that
    // does not exist.
    let mut bob = Device::connect(&relay, relay.token(user("bob").with_create(true))).await;
    assert_eq!(bob.listed.get(&d), Some(&Role::ReadWrite));
    for target in [d, doc(99)] {
        assert_eq!(
            bob.share(target, "mallory", Role::ReadOnly).await,
            Some(ErrorCode::FORBIDDEN)
        );
        assert_eq!(
            bob.unshare(target, "alice").await,
            Some(ErrorCode::FORBIDDEN)
        );
        assert_eq!(bob.delete(target).await, Some(ErrorCode::FORBIDDEN));
    }

    // The app's backend, with an admin token, shares on Alice's behalf.
    let mut carol = Device::connect(&relay, relay.token(user("carol"))).await;
    let mut backend = Device::connect(&relay, relay.token(user("backend").with_admin(true))).await;
    assert_eq!(backend.share(d, "carol", Role::ReadOnly).await, None);
    carol
        .until(|c| c.listed.get(&d) == Some(&Role::ReadOnly))
        .await;
    carol.subscribe(d).await;
    carol.until(|c| c.has(d, "alice's")).await;
    // And a user id the relay cannot hold is a clear error, not a silent success.
    assert_eq!(
        backend.share(d, "", Role::ReadOnly).await,
        Some(ErrorCode::INVALID)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_document_leaves_every_list_stops_being_served_and_never_comes_back() {
    let relay = Relay::start();
    let alice_token = relay.token(user("alice").with_create(true));
    let mut alice = Device::connect(&relay, alice_token.clone()).await;
    let mut alice_phone = Device::connect(&relay, alice_token.clone()).await;
    let d = doc(4);
    alice.create(d, "soon gone").await;
    assert_eq!(alice.share(d, "bob", Role::ReadWrite).await, None);
    let mut bob = Device::connect(&relay, relay.token(user("bob"))).await;
    bob.subscribe(d).await;
    bob.until(|b| b.has(d, "soon gone")).await;
    // A token grant names it too.
    let mut carol = Device::connect(
        &relay,
        relay.token(user("carol").with_doc(d, Role::ReadOnly)),
    )
    .await;
    assert_eq!(carol.listed.get(&d), Some(&Role::ReadOnly));

    assert_eq!(alice.delete(d).await, None);
    // Every live subscription ends with DELETED; the document leaves every list.
    alice
        .until(|a| a.errors.contains(&(ErrorCode::DELETED, Some(d))) && a.listed.is_empty())
        .await;
    bob.until(|b| b.errors.contains(&(ErrorCode::DELETED, Some(d))) && b.listed.is_empty())
        .await;
    alice_phone.until(|p| p.listed.is_empty()).await;
    carol.until(|c| c.listed.is_empty()).await;
    let fresh = Device::connect(&relay, relay.token(user("bob"))).await;
    assert!(fresh.listed.is_empty());

    // Nobody can upload it again: members are told it was deleted, strangers nothing.
    let mut again = Device::connect(&relay, alice_token).await;
    again.create_offline(d, "resurrected");
    again.send(Message::Subscribe { doc: d }).await;
    again.until(|a| a.refused(d).is_some()).await;
    assert_eq!(again.refused(d), Some(ErrorCode::DELETED));
    let mut stranger =
        Device::connect(&relay, relay.token(user("mallory").with_create(true))).await;
    stranger.create_offline(d, "squatting");
    stranger.send(Message::Subscribe { doc: d }).await;
    stranger.until(|s| s.refused(d).is_some()).await;
    assert_eq!(stranger.refused(d), Some(ErrorCode::FORBIDDEN));

    // Deleting again is already done; the access list no longer changes.
    assert_eq!(alice.delete(d).await, None);
    assert_eq!(
        alice.share(d, "carol", Role::ReadOnly).await,
        Some(ErrorCode::DELETED)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_relay_keeps_owners_access_lists_and_deletions() {
    let relay = Relay::start();
    let alice_token = relay.token(user("alice").with_create(true));
    let bob_token = relay.token(user("bob").with_create(true));
    let mut alice = Device::connect(&relay, alice_token.clone()).await;
    let (kept, deleted) = (doc(5), doc(6));
    alice.create(kept, "kept").await;
    alice.create(deleted, "deleted").await;
    assert_eq!(alice.share(kept, "bob", Role::ReadOnly).await, None);
    assert_eq!(alice.delete(deleted).await, None);
    drop(alice);

    // Killed right after acknowledging: what it acknowledged survives.
    let relay = Relay::start_in(relay.kill());
    let mut alice = Device::connect(&relay, alice_token).await;
    assert_eq!(alice.listed, BTreeMap::from([(kept, Role::ReadWrite)]));
    let mut bob = Device::connect(&relay, bob_token).await;
    assert_eq!(bob.listed, BTreeMap::from([(kept, Role::ReadOnly)]));
    // Alice still owns it: Bob (who may create documents) cannot take it over.
    assert_eq!(
        bob.share(kept, "bob", Role::ReadWrite).await,
        Some(ErrorCode::FORBIDDEN)
    );
    bob.subscribe(kept).await;
    assert_eq!(bob.roles.get(&kept), Some(&Role::ReadOnly));
    bob.until(|b| b.has(kept, "kept")).await;
    // Alice can still change its access list, and the deleted one stays deleted.
    assert_eq!(alice.unshare(kept, "bob").await, None);
    bob.until(|b| b.listed.is_empty()).await;
    alice.subscribe(deleted).await;
    assert_eq!(alice.refused(deleted), Some(ErrorCode::DELETED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_token_changes_grants_at_once() {
    let relay = Relay::start();
    let mut alice = Device::connect(&relay, relay.token(user("alice").with_create(true))).await;
    let d = doc(7);
    alice.create(d, "granted").await;

    let mut bob =
        Device::connect(&relay, relay.token(user("bob").with_doc(d, Role::ReadOnly))).await;
    assert_eq!(bob.listed.get(&d), Some(&Role::ReadOnly));
    bob.subscribe(d).await;
    bob.until(|b| b.has(d, "granted")).await;

    // A fresh token granting rw: the role changes on the live subscription and in the list.
    let rw = relay.token(user("bob").with_doc(d, Role::ReadWrite));
    bob.send(Message::Token { token: rw }).await;
    bob.until(|b| {
        b.roles.get(&d) == Some(&Role::ReadWrite) && b.listed.get(&d) == Some(&Role::ReadWrite)
    })
    .await;
    bob.write(d, "bob with rw");
    bob.until(|b| b.engine.is_synced(RELAY, d)).await;
    alice.until(|a| a.has(d, "bob with rw")).await;

    // A fresh token without the grant: the subscription ends and the document leaves the list.
    bob.send(Message::Token {
        token: relay.token(user("bob")),
    })
    .await;
    bob.until(|b| b.errors.contains(&(ErrorCode::FORBIDDEN, Some(d))) && b.listed.is_empty())
        .await;
}

impl Device {
    /// Creates `doc` locally without uploading it.
    fn create_offline(&mut self, doc: DocId, key: &str) {
        self.engine.create(doc, Document::new());
        self.write(doc, key);
    }
}
