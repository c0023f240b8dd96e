//! The rules as a hostile member meets them: changes crafted with the schema's own writes (or
//! raw Automerge), checked by the gate the relay runs.

use std::sync::Arc;

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, Change, ObjType, ReadDoc, ROOT};
use weft_core::check::CheckedChange;
use weft_core::engine::{ConnId, Gate};
use weft_core::{DocId, Document};

use super::{Kinds, RulesGate};
use crate::{Conversation, Id, NewConversation, NewMessage};

const DOC: DocId = DocId::from_bytes([3; 16]);
const ALICE: ConnId = ConnId(1);
const BOB: ConnId = ConnId(2);
const ADMIN: ConnId = ConnId(3);
const T: u64 = 1_700_000_000_000;

const ESCROW: &str = include_str!("../../../tests/fixtures/escrow.toml");

/// The relay's view: its copy of the document, the gate, and each user's device (an actor of
/// their own on a copy of the document).
struct World {
    relay: Automerge,
    gate: RulesGate,
}

impl World {
    fn new(doc: &Automerge) -> World {
        let kinds = Arc::new(Kinds::with_declared(ESCROW).unwrap());
        let mut gate = RulesGate::new(kinds);
        gate.connect(ALICE, "alice", false, false);
        gate.connect(BOB, "bob", false, false);
        gate.connect(ADMIN, "mod", true, false);
        gate.set_owner(DOC, "alice");
        gate.opened(DOC, &Document::from_automerge(Automerge::new()), &[]);
        let mut w = World {
            relay: Automerge::new(),
            gate,
        };
        // Alice created it: her changes bind her actor.
        for c in doc.get_changes(&[]) {
            w.offer(ALICE, &c).unwrap();
        }
        w
    }

    /// `conn` sends `change`: the gate's verdict; accepted, it enters the relay's copy.
    fn offer(&mut self, conn: ConnId, change: &Change) -> Result<(), String> {
        let document = Document::from_automerge(self.relay.clone());
        self.gate
            .check(DOC, conn, &checked(change.clone()), &document)?;
        self.relay.apply_changes([change.clone()]).unwrap();
        Ok(())
    }

    /// A device of a user: a copy of the relay's document with an actor of its own.
    fn device(&self) -> Automerge {
        self.relay.fork().with_actor(ActorId::random())
    }
}

/// `change` as the engine hands it to a gate.
fn checked(change: Change) -> CheckedChange {
    let raw = bytes::Bytes::copy_from_slice(change.raw_bytes());
    CheckedChange::new(change, raw).unwrap()
}

fn last(doc: &Automerge) -> Change {
    doc.get_last_local_change().unwrap().clone()
}

fn conversation() -> (Automerge, Id) {
    let mut alice = Automerge::new().with_actor(ActorId::random());
    Conversation::create(
        &mut alice,
        &NewConversation {
            title: "Lunch".into(),
            participants: vec!["alice".into(), "bob".into()],
        },
        T,
    )
    .unwrap();
    let id = Id::from_bytes([1; 16]);
    crate::send_message(
        &mut alice,
        &NewMessage::text("alice", "noon?"),
        id.clone(),
        T,
    )
    .unwrap();
    (alice, id)
}

fn refused(r: Result<(), String>, says: &str) {
    match r {
        Err(why) => assert!(why.contains(says), "refused for {why:?}, not {says:?}"),
        Ok(()) => panic!("accepted, but should be refused ({says})"),
    }
}

#[test]
fn a_message_is_written_in_its_writers_name_only() {
    let (alice, _) = conversation();
    let mut w = World::new(&alice);
    let mut bob = w.device();
    crate::send_message(
        &mut bob,
        &NewMessage::text("alice", "forged"),
        Id::from_bytes([2; 16]),
        T + 1,
    )
    .unwrap();
    refused(w.offer(BOB, &last(&bob)), "author");
    let mut bob = w.device();
    crate::send_message(
        &mut bob,
        &NewMessage::text("bob", "yes"),
        Id::from_bytes([3; 16]),
        T + 2,
    )
    .unwrap();
    w.offer(BOB, &last(&bob)).unwrap();
}

#[test]
fn only_the_author_edits_and_the_author_owner_or_an_admin_deletes() {
    let (alice, alices) = conversation();
    let mut w = World::new(&alice);
    // Bob edits and deletes Alice's message: refused.
    let mut bob = w.device();
    crate::edit_message(&mut bob, &alices, "hijacked", T + 1).unwrap();
    refused(w.offer(BOB, &last(&bob)), "body");
    let mut bob = w.device();
    crate::delete_message(&mut bob, &alices, T + 1).unwrap();
    refused(w.offer(BOB, &last(&bob)), "deleted");
    // Alice edits her own.
    let mut a = w.device();
    crate::edit_message(&mut a, &alices, "half past noon?", T + 2).unwrap();
    w.offer(ALICE, &last(&a)).unwrap();
    // Bob posts; the owner (Alice) moderates it away; an admin may too.
    let bobs = Id::from_bytes([4; 16]);
    let mut bob = w.device();
    crate::send_message(
        &mut bob,
        &NewMessage::text("bob", "spam"),
        bobs.clone(),
        T + 3,
    )
    .unwrap();
    w.offer(BOB, &last(&bob)).unwrap();
    let mut admin = w.device();
    crate::delete_message(&mut admin, &bobs, T + 4).unwrap();
    let mut a = w.device();
    crate::delete_message(&mut a, &bobs, T + 4).unwrap();
    w.offer(ALICE, &last(&a)).unwrap();
    w.offer(ADMIN, &last(&admin)).unwrap();
    // The owner may clear a body, not write one.
    let mut a = w.device();
    crate::edit_message(&mut a, &bobs, "words in bob's mouth", T + 5).ok();
    if a.get_last_local_change().is_some() && a.get_heads() != w.relay.get_heads() {
        refused(w.offer(ALICE, &last(&a)), "body");
    }
}

#[test]
fn schema_breaking_keys_and_kind_changes_are_refused() {
    let (alice, _) = conversation();
    let mut w = World::new(&alice);
    let mut bob = w.device();
    let messages = bob.get(ROOT, "messages").unwrap().unwrap().1;
    let mut tx = bob.transaction();
    tx.put(&messages, "zzz", 42).unwrap();
    tx.commit();
    refused(w.offer(BOB, &last(&bob)), "not a message key");

    let mut bob = w.device();
    let mut tx = bob.transaction();
    tx.put(ROOT, "kind", "trip").unwrap();
    tx.commit();
    refused(w.offer(BOB, &last(&bob)), "kind");

    let mut bob = w.device();
    let mut tx = bob.transaction();
    tx.put(ROOT, "surprise", true).unwrap();
    tx.commit();
    refused(w.offer(BOB, &last(&bob)), "not a field");

    let mut bob = w.device();
    let mut tx = bob.transaction();
    tx.put_object(ROOT, "messages", ObjType::Map).unwrap();
    tx.commit();
    refused(w.offer(BOB, &last(&bob)), "collection");
}

#[test]
fn reactions_and_read_markers_only_under_the_writers_own_user() {
    let (alice, alices) = conversation();
    let mut w = World::new(&alice);
    let mut bob = w.device();
    crate::react(&mut bob, &alices, "👍", "carol", T + 1).unwrap();
    refused(w.offer(BOB, &last(&bob)), "own");
    let mut bob = w.device();
    crate::react(&mut bob, &alices, "👍", "bob", T + 1).unwrap();
    w.offer(BOB, &last(&bob)).unwrap();
    let key = crate::last_message(&w.relay).unwrap().unwrap().key();
    let mut bob = w.device();
    crate::mark_read(&mut bob, "alice", &key, T + 2).unwrap();
    refused(w.offer(BOB, &last(&bob)), "own");
    let mut bob = w.device();
    crate::mark_read(&mut bob, "bob", &key, T + 2).unwrap();
    w.offer(BOB, &last(&bob)).unwrap();
}

#[test]
fn an_actor_writes_for_one_user() {
    let (alice, _) = conversation();
    let mut w = World::new(&alice);
    // Bob replays a change made with Alice's actor.
    let mut stolen = w.relay.fork().with_actor(alice.get_actor().clone());
    crate::send_message(
        &mut stolen,
        &NewMessage::text("alice", "x"),
        Id::from_bytes([9; 16]),
        T,
    )
    .unwrap();
    refused(w.offer(BOB, &last(&stolen)), "identity");
    // Alice's own device may.
    w.offer(ALICE, &last(&stolen)).unwrap();
}

fn escrow(w_owner: &str) -> Automerge {
    let mut d = Automerge::new().with_actor(ActorId::random());
    let mut tx = d.transaction();
    tx.put(ROOT, "kind", "escrow").unwrap();
    tx.put(ROOT, "buyer", "bob").unwrap();
    tx.put(ROOT, "seller", w_owner).unwrap();
    tx.put(ROOT, "amount", 100).unwrap();
    tx.put(ROOT, "status", "pending").unwrap();
    tx.commit();
    d
}

fn set_status(w: &World, to: &str) -> Change {
    let mut d = w.device();
    let mut tx = d.transaction();
    tx.put(ROOT, "status", to).unwrap();
    tx.commit();
    last(&d)
}

#[test]
fn an_escrow_moves_only_through_its_transitions_by_the_right_party() {
    // Alice (the owner) sells to Bob.
    let mut w = World::new(&escrow("alice"));
    refused(w.offer(BOB, &set_status(&w, "shipped")), "may not go from");
    refused(
        w.offer(ALICE, &set_status(&w, "funded")),
        "only by the buyer",
    );
    w.offer(BOB, &set_status(&w, "funded")).unwrap();
    refused(
        w.offer(ALICE, &set_status(&w, "released")),
        "may not go from",
    );
    w.offer(ALICE, &set_status(&w, "shipped")).unwrap();
    // The seller releasing the funds to herself: refused.
    refused(
        w.offer(ALICE, &set_status(&w, "released")),
        "only by the buyer",
    );
    w.offer(BOB, &set_status(&w, "released")).unwrap();
    // Fixed fields stay.
    let mut d = w.device();
    let mut tx = d.transaction();
    tx.put(ROOT, "amount", 1_000_000).unwrap();
    tx.commit();
    refused(w.offer(ALICE, &last(&d)), "fixed");
    // Anyone with rw writes the note; types are checked.
    let mut d = w.device();
    let mut tx = d.transaction();
    tx.put(ROOT, "note", "thanks").unwrap();
    tx.commit();
    w.offer(BOB, &last(&d)).unwrap();
    let mut d = w.device();
    let mut tx = d.transaction();
    tx.put(ROOT, "note", 7).unwrap();
    tx.commit();
    refused(w.offer(BOB, &last(&d)), "must be a string");
}

#[test]
fn an_escrow_must_start_pending() {
    let mut d = Automerge::new();
    let mut tx = d.transaction();
    tx.put(ROOT, "kind", "escrow").unwrap();
    tx.put(ROOT, "status", "released").unwrap();
    tx.commit();
    let kinds = Arc::new(Kinds::with_declared(ESCROW).unwrap());
    let mut gate = RulesGate::new(kinds);
    gate.connect(ALICE, "alice", false, false);
    gate.opened(DOC, &Document::new(), &[]);
    let r = gate.check(DOC, ALICE, &checked(last(&d)), &Document::new());
    assert!(r.unwrap_err().contains("starts as"));
}

#[test]
fn a_title_written_from_javascript_as_a_string_is_taken() {
    let (alice, _) = conversation();
    let mut w = World::new(&alice);
    let mut bob = w.device();
    let mut tx = bob.transaction();
    let t = tx.put_object(ROOT, "title", ObjType::Text).unwrap();
    tx.splice_text(&t, 0, 0, "Dinner").unwrap();
    tx.commit();
    w.offer(BOB, &last(&bob)).unwrap();
    assert!(
        crate::read_typed(&w.relay).is_ok(),
        "the relay's copy still reads"
    );
}

#[test]
fn a_message_written_from_javascript_with_text_strings_is_taken_when_its_author_is_the_writer() {
    let (alice, _) = conversation();
    let mut w = World::new(&alice);
    let forged = js_message(&w, "alice", T + 5, 7, "from the browser").0;
    let honest = js_message(&w, "bob", T + 5, 7, "from the browser").0;
    refused(w.offer(BOB, &forged), "writer");
    w.offer(BOB, &honest).unwrap();
}

#[test]
fn a_kind_written_as_text_is_a_kind_and_stays_fixed() {
    // Created from JavaScript: the kind is a text object filled in the same change.
    let mut d = Automerge::new().with_actor(ActorId::random());
    let mut tx = d.transaction();
    let k = tx.put_object(ROOT, "kind", ObjType::Text).unwrap();
    tx.splice_text(&k, 0, 0, "escrow").unwrap();
    tx.put(ROOT, "status", "released").unwrap();
    tx.commit();
    let kinds = Arc::new(Kinds::with_declared(ESCROW).unwrap());
    let mut gate = RulesGate::new(kinds);
    gate.connect(ALICE, "alice", false, false);
    gate.connect(BOB, "bob", false, false);
    gate.set_owner(DOC, "alice");
    gate.opened(DOC, &Document::new(), &[]);
    // Judged as the escrow it names.
    refused(
        gate.check(DOC, ALICE, &checked(last(&d)), &Document::new())
            .map(|_| ()),
        "starts as",
    );

    let mut w = World::new(&Automerge::new());
    let mut alice = w.device();
    let mut tx = alice.transaction();
    let k = tx.put_object(ROOT, "kind", ObjType::Text).unwrap();
    tx.splice_text(&k, 0, 0, "escrow").unwrap();
    tx.put(ROOT, "status", "pending").unwrap();
    tx.commit();
    w.offer(ALICE, &last(&alice)).unwrap();

    // Neither replaced by an empty text, nor deleted, nor typed into.
    let mut bob = w.device();
    let mut tx = bob.transaction();
    tx.put_object(ROOT, "kind", ObjType::Text).unwrap();
    tx.commit();
    refused(w.offer(BOB, &last(&bob)), "fixed");
    let mut bob = w.device();
    let mut tx = bob.transaction();
    tx.delete(ROOT, "kind").unwrap();
    tx.commit();
    refused(w.offer(BOB, &last(&bob)), "fixed");
    let mut owner = w.device();
    let k = owner.get(ROOT, "kind").unwrap().unwrap().1;
    let mut tx = owner.transaction();
    tx.splice_text(&k, 0, 6, "conversation").unwrap();
    tx.commit();
    refused(w.offer(ALICE, &last(&owner)), "fixed");
}

#[test]
fn a_kind_is_a_string_or_nothing() {
    let mut w = World::new(&Automerge::new());
    let mut alice = w.device();
    let mut tx = alice.transaction();
    tx.put(ROOT, "kind", 7).unwrap();
    tx.commit();
    refused(w.offer(ALICE, &last(&alice)), "must be a string");
    let mut alice = w.device();
    let mut tx = alice.transaction();
    tx.put_object(ROOT, "kind", ObjType::Map).unwrap();
    tx.commit();
    refused(w.offer(ALICE, &last(&alice)), "must be a string");
}

/// What automerge-js makes of `d.messages[key] = {id, author, created_at, body, deleted}`
/// written on a new device of `w` at `at_ms` with id `[id; 16]`: every string a text object.
/// The change, and the message's key.
fn js_message(w: &World, author: &str, at_ms: u64, id: u8, body: &str) -> (Change, String) {
    let mut device = w.device();
    let messages = device.get(ROOT, "messages").unwrap().unwrap().1;
    let created = crate::Hlc::new(at_ms, 0, 1).unwrap();
    let key = format!("{created}_{}", Id::from_bytes([id; 16]));
    let mut tx = device.transaction();
    let m = tx
        .put_object(&messages, key.as_str(), ObjType::Map)
        .unwrap();
    for (field, value) in [
        ("id", Id::from_bytes([id; 16]).to_string()),
        ("author", author.to_string()),
        ("created_at", created.to_string()),
        ("body", body.to_string()),
    ] {
        let t = tx.put_object(&m, field, ObjType::Text).unwrap();
        tx.splice_text(&t, 0, 0, &value).unwrap();
    }
    tx.put(&m, "deleted", false).unwrap();
    tx.commit();
    (last(&device), key)
}

/// A message from JavaScript whose body is text, then `chars` characters typed into that body
/// by `typist`'s device in one change (expanded ahead when that is over
/// [`weft_core::check::EXPAND_AHEAD_OPS`] operations).
fn typed_into_a_text_body(w: &mut World, typist: ConnId, chars: usize) -> Result<(), String> {
    let mut bob = w.device();
    let messages = bob.get(ROOT, "messages").unwrap().unwrap().1;
    let key = format!(
        "{}_{}",
        crate::Hlc::new(T + 5, 0, 1).unwrap(),
        Id::from_bytes([8; 16])
    );
    let mut tx = bob.transaction();
    let m = tx
        .put_object(&messages, key.as_str(), ObjType::Map)
        .unwrap();
    tx.put(&m, "id", Id::from_bytes([8; 16]).to_string())
        .unwrap();
    tx.put(&m, "author", "bob").unwrap();
    tx.put(
        &m,
        "created_at",
        crate::Hlc::new(T + 5, 0, 1).unwrap().to_string(),
    )
    .unwrap();
    let body = tx.put_object(&m, "body", ObjType::Text).unwrap();
    tx.splice_text(&body, 0, 0, "hi").unwrap();
    tx.put(&m, "deleted", false).unwrap();
    tx.commit();
    w.offer(BOB, &last(&bob)).unwrap();
    let mut dev = w.device();
    let long: String = "x".repeat(chars);
    dev.transact(|tx| {
        tx.splice_text(&body, 2, 0, &long)?;
        tx.splice_text(&body, 0, 1, "")
    })
    .unwrap();
    let change = last(&dev);
    assert!(change.len() > chars, "one operation per character");
    w.offer(typist, &change)
}

#[test]
fn long_runs_of_typing_are_judged_like_short_ones() {
    for chars in [10, weft_core::check::EXPAND_AHEAD_OPS * 3] {
        let (alice, _) = conversation();
        let mut w = World::new(&alice);
        typed_into_a_text_body(&mut w, BOB, chars).unwrap();
        let (alice, _) = conversation();
        let mut w = World::new(&alice);
        refused(typed_into_a_text_body(&mut w, ALICE, chars), "body");
    }
}

mod bindings;
mod notes;
