//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use weft_schema::automerge::{ActorId, Automerge, ChangeHash};
use weft_schema::{Conversation, Id, NewConversation, NewTrip, Trip};

/// 2023-11-14T22:13:20.000Z: an arbitrary "now" for the scripts.
pub const T0: u64 = 1_700_000_000_000;

/// Proptest cases: `default`, or `WEFT_PROPTEST_CASES`.
pub fn cases(default: u32) -> u32 {
    std::env::var("WEFT_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A device: a document with a fixed actor, so runs are reproducible.
pub fn device(n: u8) -> ActorId {
    ActorId::from(vec![n; 16])
}

/// A deterministic id.
pub fn id(n: u32) -> Id {
    let mut b = [0u8; 16];
    b[12..].copy_from_slice(&n.to_be_bytes());
    Id::from_bytes(b)
}

pub fn conversation(title: &str) -> Automerge {
    let mut doc = Automerge::new().with_actor(device(0));
    Conversation::create(
        &mut doc,
        &NewConversation {
            title: title.into(),
            participants: vec!["alice".into(), "bob".into()],
        },
        T0,
    )
    .unwrap();
    doc
}

pub fn trip(title: &str) -> Automerge {
    let mut doc = Automerge::new().with_actor(device(0));
    Trip::create(
        &mut doc,
        &NewTrip {
            title: title.into(),
            start_date: Some("2024-06-01".into()),
            end_date: Some("2024-06-09".into()),
        },
        T0,
    )
    .unwrap();
    doc
}

/// A copy of `doc` on another device.
pub fn fork(doc: &Automerge, n: u8) -> Automerge {
    doc.fork().with_actor(device(n))
}

/// Syncs every pair (by merging), so all replicas hold every change.
pub fn merge_all(docs: &mut [Automerge]) {
    for i in 1..docs.len() {
        let (a, b) = docs.split_at_mut(i);
        a[0].merge(&mut b[0]).unwrap();
    }
    for i in 1..docs.len() {
        let (a, b) = docs.split_at_mut(i);
        b[0].merge(&mut a[0]).unwrap();
    }
}

pub fn heads(doc: &Automerge) -> Vec<ChangeHash> {
    let mut h = doc.get_heads();
    h.sort();
    h
}

/// The value of a read that must have skipped nothing.
pub fn complete<T>(r: Result<weft_schema::Partial<T>, weft_schema::ReadError>) -> T {
    let r = r.expect("the read fails");
    assert!(r.skipped.is_empty(), "skipped: {:?}", r.skipped);
    r.value
}
