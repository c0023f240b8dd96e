//! Actor bindings a device learns from its relay: held for a document still loading, the
//! relay's word over a peer's, and bounded.

use std::sync::Arc;

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ROOT};
use weft_core::engine::{ConnId, Gate};
use weft_core::{DocId, Document};

use super::{checked, last, DOC};
use crate::rules::gate::{MAX_LEARNED_BINDINGS, MAX_PENDING_BINDINGS};
use crate::rules::{Kinds, RulesGate};

/// A peer device of the user "dan" (its forwarded changes keep the bindings they have).
const PEER: ConnId = ConnId(7);

fn gate() -> RulesGate {
    let mut gate = RulesGate::new(Arc::new(Kinds::builtin()));
    gate.set_local_user("dan");
    gate.connect(PEER, "dan", false, true);
    gate
}

/// A change written by `actor`.
fn change_by(actor: &ActorId) -> automerge::Change {
    let mut d = Automerge::new().with_actor(actor.clone());
    let mut tx = d.transaction();
    tx.put(ROOT, "note", "hi").unwrap();
    tx.commit();
    last(&d)
}

#[test]
fn a_binding_the_relay_sends_while_the_document_loads_is_known_once_it_opens() {
    let mut gate = gate();
    let cat = ActorId::random();
    assert!(gate.learn_binding(DOC, cat.clone(), "cat"));
    assert!(!gate.learn_binding(DOC, cat.clone(), "cat"), "already held");
    assert_eq!(gate.binding(DOC, &cat), None, "not loaded yet");

    gate.opened(DOC, &Document::new(), &[]);
    assert_eq!(gate.binding(DOC, &cat), Some("cat"));
    let all: Vec<(ActorId, String)> = gate
        .bindings(DOC)
        .map(|(a, u)| (a.clone(), u.to_string()))
        .collect();
    assert_eq!(all, [(cat.clone(), "cat".to_string())]);

    // Held no longer: a document opened again knows what its records say.
    gate.closed(DOC);
    gate.opened(DOC, &Document::new(), &[]);
    assert_eq!(gate.binding(DOC, &cat), None);
}

#[test]
fn the_relays_word_replaces_a_stored_binding_and_a_peer_cannot_replace_it() {
    let mut gate = gate();
    let actor = ActorId::random();
    // A record says "mallory"; the relay, while the document loads, says "cat".
    gate.learn_binding(DOC, actor.clone(), "cat");
    let record = (actor.to_bytes().to_vec(), b"mallory".to_vec());
    gate.opened(DOC, &Document::new(), &[record]);
    assert_eq!(gate.binding(DOC, &actor), Some("cat"));

    // A peer forwarding the actor's change does not rebind it.
    let accepted = gate
        .check(DOC, PEER, &checked(change_by(&actor)), &Document::new())
        .unwrap();
    assert!(accepted.records.is_empty());
    assert_eq!(gate.binding(DOC, &actor), Some("cat"));

    // A loaded document takes the relay's word too.
    assert!(gate.learn_binding(DOC, actor.clone(), "sam"));
    assert_eq!(gate.binding(DOC, &actor), Some("sam"));
}

#[test]
fn bindings_learned_are_bounded_per_document_and_while_held() {
    let mut gate = gate();
    let other = DocId::from_bytes([9; 16]);
    for _ in 0..MAX_PENDING_BINDINGS {
        assert!(gate.learn_binding(other, ActorId::random(), "x"));
    }
    assert!(
        !gate.learn_binding(DOC, ActorId::random(), "x"),
        "none held past the bound"
    );
    gate.opened(other, &Document::new(), &[]);
    // Opening the document released what it held.
    assert!(gate.learn_binding(DOC, ActorId::random(), "x"));

    let extra = MAX_LEARNED_BINDINGS - MAX_PENDING_BINDINGS;
    for _ in 0..extra {
        assert!(gate.learn_binding(other, ActorId::random(), "x"));
    }
    assert!(!gate.learn_binding(other, ActorId::random(), "x"));
    assert_eq!(gate.bindings(other).count(), MAX_LEARNED_BINDINGS);
}
