//! Attacks over the WebSocket endpoint, by a member who runs their own client.
//!
//! Every member holding a valid token may run any client, for instance a few lines of
//! JavaScript speaking automerge-repo's wire protocol: `tests/js/hostile.mjs` sends what a
//! stock client never would (changes a read-only member may not make, garbage, decompression
//! bombs, oversized changes, floods of new documents) to the real `weft-relay` binary.
//!
//! Each test checks three things: the attacker is refused (an automerge-repo `error` message and
//! a closed socket, or for a read-only member, a relay that does not take the change); nothing
//! of the attack is stored (after a restart a fresh device of the owner fetches the document as
//! the honest devices hold it); and the other connections carry on (an honest device writes
//! after the attack and another one receives it).
//!
//! Node and the npm packages of `tests/js` are needed (see `common/js.rs`).

mod common;

use std::time::Duration;

use common::js::{npm_ready, Node};
use common::ws::{now, Device, Relay, RELAY};
use serde_json::{json, Value};
use weft_core::wire::Message;
use weft_core::{DocId, Document, Role};
use weft_relay::Claims;

/// The title Alice gives her trip before any attack.
const TITLE: &str = "Lisbon, in May";

fn new_doc() -> DocId {
    DocId::from_bytes(rand::random())
}

fn hex(heads: &[weft_core::automerge::ChangeHash]) -> Vec<String> {
    let mut out: Vec<String> = heads.iter().map(ToString::to_string).collect();
    out.sort();
    out
}

/// Alice's trip: created on her phone and synced to the relay; Bob, a member with `rw`, has it
/// open on his laptop.
struct Trip {
    relay: Relay,
    doc: DocId,
    phone: Device,
    laptop: Device,
}

impl Trip {
    async fn start(flags: &[&str]) -> Trip {
        let relay = Relay::start(flags);
        let doc = new_doc();
        let mut phone = Device::connect(&relay, alice(&relay)).await;
        phone.engine.create(doc, Document::new());
        phone.set(doc, "title", TITLE);
        phone.subscribe(doc).await;
        assert!(phone.until(|d| d.engine.is_synced(RELAY, doc)).await);

        let bob = relay.token(&Claims::new("bob", now(), 3600).with_doc(doc, Role::ReadWrite));
        let mut laptop = Device::connect(&relay, bob).await;
        laptop.subscribe(doc).await;
        assert!(
            laptop
                .until(|d| d.get(doc, "title").as_deref() == Some(TITLE))
                .await
        );
        Trip {
            relay,
            doc,
            phone,
            laptop,
        }
    }

    /// Mallory's token: a member of the trip with `role`.
    fn mallory(&self, role: Role) -> String {
        self.relay
            .token(&Claims::new("mallory", now(), 3600).with_doc(self.doc, role))
    }

    /// Mallory's hostile client, connected and joined, with the trip fetched.
    async fn attacker(&self, role: Role) -> Node {
        let mut js = hostile(&self.relay, &self.mallory(role)).await;
        let fetched = js
            .call(json!({"cmd": "fetch", "doc": self.doc.to_string()}))
            .await;
        assert_eq!(fetched["value"]["title"], json!(TITLE), "{fetched}");
        js
    }

    /// The honest devices carry on: Bob writes after the attack and Alice's phone receives it.
    async fn honest_devices_keep_syncing(&mut self, key: &str) {
        let doc = self.doc;
        self.laptop.set(doc, key, "still syncing");
        self.laptop.flush().await;
        assert!(
            self.phone
                .until(|d| d.get(doc, key).as_deref() == Some("still syncing"))
                .await,
            "Alice's phone no longer receives Bob's changes"
        );
    }

    /// Nothing of the attack was stored: after a restart, a fresh device of Alice's fetches the
    /// trip exactly as her phone holds it (the same heads, the title untouched).
    async fn relay_holds_only_honest_changes(self) {
        let doc = self.doc;
        let expected = self.phone.engine.heads(doc).unwrap();
        let relay = self.relay.restart();
        let mut fresh = Device::connect(&relay, alice(&relay)).await;
        fresh.subscribe(doc).await;
        assert!(fresh.until(|d| d.engine.is_synced(RELAY, doc)).await);
        assert_eq!(fresh.get(doc, "title").as_deref(), Some(TITLE));
        assert_eq!(hex(&fresh.engine.heads(doc).unwrap()), hex(&expected));
    }
}

fn alice(relay: &Relay) -> String {
    relay.token(&Claims::new("alice", now(), 3600).with_create(true))
}

/// A hostile client (`tests/js/hostile.mjs`) with `token`, once it has joined.
async fn hostile(relay: &Relay, token: &str) -> Node {
    let mut js = Node::start("hostile.mjs", &[&relay.url(token)]);
    let joined = js.event().await;
    assert_eq!(joined["event"], json!("joined"), "{joined}");
    js
}

/// The relay's refusal as the attacker saw it: its `error` message and the close code.
fn refusal(outcome: &Value) -> (String, u64) {
    let closed = &outcome["closed"];
    assert!(
        closed.is_object(),
        "the relay did not close the socket: {outcome}"
    );
    let error = closed["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message before the close: {outcome}"))
        .to_string();
    (error, closed["code"].as_u64().unwrap())
}

/// WebSocket close codes (RFC 6455).
const CLOSE_INVALID: u64 = 1007;
const CLOSE_POLICY: u64 = 1008;

/// The documents the relay lists for the user of `token` (its discovery listing).
async fn listed(relay: &Relay, token: String) -> Vec<DocId> {
    let mut device = Device::connect(relay, token).await;
    let mut docs = Vec::new();
    loop {
        match device.recv(Duration::from_secs(30)).await {
            Ok(Some(Message::Docs { added, .. })) => docs.extend(added.iter().map(|e| e.doc)),
            Ok(Some(Message::DocsEnd { .. })) => break,
            Ok(Some(_)) => {}
            other => panic!("the relay ended the listing: {other:?}"),
        }
    }
    docs.sort_by_key(ToString::to_string);
    docs
}

/// Peak resident memory of a process (`VmHWM` in `/proc/PID/status`), in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_members_change_is_neither_stored_nor_forwarded() {
    if !npm_ready() {
        return;
    }
    let mut trip = Trip::start(&[]).await;
    let mut mallory = trip.attacker(Role::ReadOnly).await;
    // Carol reads the trip from a browser too: the relay sends WebSocket readers a change
    // before its write of it, never one it does not take.
    let carol = trip
        .relay
        .token(&Claims::new("carol", now(), 3600).with_doc(trip.doc, Role::ReadOnly));
    let mut carol = hostile(&trip.relay, &carol).await;
    let fetched = carol
        .call(json!({"cmd": "fetch", "doc": trip.doc.to_string()}))
        .await;
    assert_eq!(fetched["value"]["title"], json!(TITLE), "{fetched}");

    // Mallory, who may only read the trip, offers a change of its title anyway. The relay does
    // not take it, and does not close her socket either: a stock client offers its changes
    // again at every answer, and a member who may read goes on reading.
    let sent = mallory
        .call(json!({"cmd": "change", "doc": trip.doc.to_string(), "key": "title", "value": "hijacked"}))
        .await;
    let hash = sent["hash"].as_str().unwrap();
    let relay_heads = sent["outcome"]["synced"]
        .as_array()
        .unwrap_or_else(|| panic!("the relay stopped answering Mallory: {sent}"));
    assert!(
        !relay_heads.contains(&json!(hash)),
        "the relay took the read-only member's change: {sent}"
    );

    trip.honest_devices_keep_syncing("after_read_only_attempt")
        .await;
    assert_eq!(trip.phone.get(trip.doc, "title").as_deref(), Some(TITLE));
    assert_eq!(trip.laptop.get(trip.doc, "title").as_deref(), Some(TITLE));
    // Mallory still reads: Bob's change reaches her too.
    let seen = mallory
        .call(json!({"cmd": "wait", "doc": trip.doc.to_string(), "key": "after_read_only_attempt"}))
        .await;
    assert_eq!(
        seen["value"]["after_read_only_attempt"],
        json!("still syncing"),
        "{seen}"
    );
    let seen = carol
        .call(json!({"cmd": "wait", "doc": trip.doc.to_string(), "key": "after_read_only_attempt"}))
        .await;
    assert_eq!(seen["value"]["title"], json!(TITLE), "{seen}");
    trip.relay_holds_only_honest_changes().await;
}

/// A client whose heads name a change it never sends (its sync state records the change as
/// sent, so a stock client never offers it again in that session) would keep the relay
/// answering without end; the relay closes it instead (a stock client reconnects with a fresh
/// session, which offers the change again), and the member's next connection works as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_withholding_a_change_its_heads_name_is_closed() {
    if !npm_ready() {
        return;
    }
    let mut trip = Trip::start(&[]).await;
    let mut mallory = trip.attacker(Role::ReadWrite).await;
    let sent = mallory
        .call(json!({"cmd": "withhold", "doc": trip.doc.to_string(), "key": "title", "value": "never sent"}))
        .await;
    let (error, code) = refusal(&sent["outcome"]);
    assert!(error.contains("sync stalled"), "{error}");
    assert_eq!(code, CLOSE_INVALID, "{sent}");

    // The same member, reconnected with a fresh session, writes as usual.
    let mut again = trip.attacker(Role::ReadWrite).await;
    let sent = again
        .call(json!({"cmd": "change", "doc": trip.doc.to_string(), "key": "note", "value": "back"}))
        .await;
    let hash = sent["hash"].as_str().unwrap();
    assert!(
        trip.phone
            .until(|d| d.get(trip.doc, "note").as_deref() == Some("back"))
            .await,
        "the reconnected client's change {hash} never arrived"
    );
    trip.honest_devices_keep_syncing("after_withholding").await;
    assert_eq!(trip.phone.get(trip.doc, "title").as_deref(), Some(TITLE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_a_sync_message_closes_the_socket_and_stores_nothing() {
    if !npm_ready() {
        return;
    }
    let mut trip = Trip::start(&[]).await;

    // 37 random bytes where a change belongs; then a valid change followed by 37 random bytes.
    for payload in ["garbage", "valid-then-garbage"] {
        let mut mallory = trip.attacker(Role::ReadWrite).await;
        let sent = mallory
            .call(json!({"cmd": "send", "doc": trip.doc.to_string(), "payload": payload}))
            .await;
        let (error, code) = refusal(&sent["outcome"]);
        assert!(
            error.starts_with("invalid sync message"),
            "{payload}: {error}"
        );
        assert_eq!(code, CLOSE_INVALID, "{payload}: {sent}");
    }

    trip.honest_devices_keep_syncing("after_garbage").await;
    trip.relay_holds_only_honest_changes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_for_a_new_document_creates_nothing() {
    if !npm_ready() {
        return;
    }
    let relay = Relay::start(&[]);
    let token = relay.token(&Claims::new("mallory", now(), 3600).with_create(true));
    let mut mallory = hostile(&relay, &token).await;

    // The first message for a document id nobody has used carries garbage.
    let doc = new_doc();
    let sent = mallory
        .call(json!({"cmd": "send", "doc": doc.to_string(), "payload": "garbage"}))
        .await;
    let (error, code) = refusal(&sent["outcome"]);
    assert!(error.starts_with("invalid sync message"), "{error}");
    assert_eq!(code, CLOSE_INVALID);

    // No document was created for Mallory: none is listed, even after a restart.
    let relay = relay.restart();
    assert_eq!(listed(&relay, token).await, Vec::<DocId>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_are_refused_without_inflating_them() {
    if !npm_ready() {
        return;
    }
    let mut trip = Trip::start(&[]).await;

    // A compressed change whose deflate stream inflates to 1 GiB of zeros: refused once it
    // passes the largest change a member may send (1 MiB by default).
    let mut mallory = trip.attacker(Role::ReadWrite).await;
    let sent = mallory
        .call(json!({"cmd": "send", "doc": trip.doc.to_string(), "payload": "compressed-bomb"}))
        .await;
    let (error, code) = refusal(&sent["outcome"]);
    assert!(
        error.contains("changes refused: a change is over the limit of 1048576 bytes"),
        "{error}"
    );
    assert_eq!(code, CLOSE_POLICY);

    // A document chunk whose one deflated column inflates to 1 GiB: refused once the message's
    // inflated data passes the largest document (64 MiB by default).
    let mut mallory = trip.attacker(Role::ReadWrite).await;
    let sent = mallory
        .call(json!({"cmd": "send", "doc": trip.doc.to_string(), "payload": "document-bomb"}))
        .await;
    let (error, code) = refusal(&sent["outcome"]);
    assert!(
        error.contains("is over the limit of 67108864 bytes"),
        "{error}"
    );
    assert_eq!(code, CLOSE_POLICY);

    // Neither bomb went off inside the relay.
    let peak = peak_memory(trip.relay.pid());
    assert!(
        peak < 256 << 20,
        "the relay's peak memory reached {} MiB",
        peak >> 20
    );

    trip.honest_devices_keep_syncing("after_bombs").await;
    trip.relay_holds_only_honest_changes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_over_the_size_limit_is_refused_and_not_stored() {
    if !npm_ready() {
        return;
    }
    let mut trip = Trip::start(&["--max-change-bytes", "64KiB"]).await;
    let mut mallory = trip.attacker(Role::ReadWrite).await;

    // A valid change of 100,000 characters, over the relay's 64 KiB.
    let sent = mallory
        .call(json!({"cmd": "send", "doc": trip.doc.to_string(), "payload": "big-change", "bytes": 100_000}))
        .await;
    let (error, code) = refusal(&sent["outcome"]);
    assert!(
        error.contains("a change is over the limit of 65536 bytes"),
        "{error}"
    );
    assert_eq!(code, CLOSE_POLICY);

    trip.honest_devices_keep_syncing("after_big_change").await;
    trip.relay_holds_only_honest_changes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_new_documents_stops_at_the_users_quota() {
    if !npm_ready() {
        return;
    }
    let mut trip = Trip::start(&["--max-docs-per-user", "5"]).await;
    let token = trip
        .relay
        .token(&Claims::new("mallory", now(), 3600).with_create(true));
    let mut mallory = hostile(&trip.relay, &token).await;

    // Mallory sends the first change of 20 new documents.
    let sent = mallory.call(json!({"cmd": "create", "count": 20})).await;
    let mut stored = Vec::new();
    for entry in sent["docs"].as_array().unwrap() {
        let outcome = &entry["outcome"];
        if outcome["synced"].is_array() {
            stored.push(entry["doc"].as_str().unwrap().parse::<DocId>().unwrap());
        } else {
            assert_eq!(outcome["unavailable"], json!(true), "{entry}");
        }
    }
    assert_eq!(stored.len(), 5, "{sent}");

    // Alice is not affected: her devices sync, and she may still create a document.
    trip.honest_devices_keep_syncing("after_flood").await;
    let mine = new_doc();
    trip.phone.engine.create(mine, Document::new());
    trip.phone.set(mine, "title", "Porto");
    trip.phone.subscribe(mine).await;
    assert!(trip.phone.until(|d| d.engine.is_synced(RELAY, mine)).await);

    // After a restart the relay holds exactly Mallory's five documents.
    let relay = trip.relay.restart();
    stored.sort_by_key(ToString::to_string);
    assert_eq!(listed(&relay, token).await, stored);
}
