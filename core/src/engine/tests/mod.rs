//! Engine unit tests: two engines wired by hand. The helpers they share are here, the tests
//! by topic in the files beside.

mod documents;
mod due_pumps;
mod folding;
mod gate;
mod peers;
mod receive;
mod timers;
mod whole;
mod withheld;

use super::*;
use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use automerge::{ActorId, ROOT};

const DOC: DocId = DocId::from_bytes([4; 16]);

fn doc_with_actor(a: u8) -> Document {
    Document::from_automerge(automerge::Automerge::new().with_actor(ActorId::from(vec![a; 16])))
}

fn write(e: &mut Engine, key: &str) -> PersistId {
    let (_, id) = e
        .change(DOC, |am| {
            let mut tx = am.transaction();
            tx.put(ROOT, key, 1).unwrap();
            tx.commit();
        })
        .unwrap();
    id.unwrap()
}

/// Drains `e`'s outputs: persists complete at once, sends are returned.
fn drain(e: &mut Engine) -> Vec<(ConnId, Message)> {
    let mut sends = Vec::new();
    loop {
        let mut persisted = Vec::new();
        while let Some(o) = e.poll_output() {
            match o {
                Output::Send { conn, msg } => sends.push((conn, msg)),
                Output::Persist { id, .. } => persisted.push(id),
                Output::MakeWhole(job) => e.whole_made(job.run()),
                _ => {}
            }
        }
        if persisted.is_empty() {
            return sends;
        }
        for id in persisted {
            e.persisted(id);
        }
    }
}

/// Two engines with `DOC` open on each other; `b_accepts_from_a` as given.
fn pair(a_may_write: bool) -> (Engine, Engine) {
    let mut a = Engine::new(EngineConfig::device());
    let mut b = Engine::new(EngineConfig::relay());
    a.create(DOC, doc_with_actor(1));
    b.create(DOC, doc_with_actor(2));
    a.open(
        ConnId(1),
        DOC,
        OpenOptions {
            send_changes: a_may_write,
            ..Default::default()
        },
    );
    b.open(
        ConnId(2),
        DOC,
        OpenOptions {
            accept_changes: a_may_write,
            ..Default::default()
        },
    );
    pump(&mut a, &mut b);
    (a, b)
}

/// A relay and its devices: device `i` is the relay's connection `first_conn + i` and reaches
/// the relay on its own connection 1. Delivers messages until all are quiet.
fn settle_star(relay: &mut Engine, devs: &mut [Engine], first_conn: u64) {
    for _ in 0..100 {
        let mut quiet = true;
        for (i, d) in devs.iter_mut().enumerate() {
            for (_, m) in drain(d) {
                quiet = false;
                relay.handle(ConnId(first_conn + i as u64), m).unwrap();
            }
        }
        for (c, m) in drain(relay) {
            quiet = false;
            devs[(c.0 - first_conn) as usize]
                .handle(ConnId(1), m)
                .unwrap();
        }
        if quiet {
            return;
        }
    }
    panic!("never quiet");
}

/// Delivers messages both ways until both are quiet.
fn pump(a: &mut Engine, b: &mut Engine) {
    for _ in 0..100 {
        let to_b = drain(a);
        let to_a = drain(b);
        if to_a.is_empty() && to_b.is_empty() {
            return;
        }
        for (_, m) in to_b {
            b.handle(ConnId(2), m).unwrap();
        }
        for (_, m) in to_a {
            a.handle(ConnId(1), m).unwrap();
        }
    }
    panic!("engines never went quiet");
}

/// A sync message from `from` (its first one to a fresh peer), with its changes replaced by
/// `chunks`.
fn sync_with_chunks(from: &automerge::Automerge, chunks: Vec<Vec<u8>>) -> Message {
    let mut state = sync::State::new();
    let mut msg = from.generate_sync_message(&mut state).unwrap();
    msg.changes = chunks.into();
    Message::Sync {
        doc: DOC,
        reset: false,
        data: msg.encode().into(),
    }
}

/// A change of `actor` putting `key` in a document of its own, as raw bytes.
fn foreign_change(actor: u8, key: &str, value: &str) -> (automerge::Automerge, Vec<u8>) {
    let mut am = automerge::Automerge::new().with_actor(ActorId::from(vec![actor; 16]));
    let mut tx = am.transaction();
    tx.put(ROOT, key, value).unwrap();
    tx.commit();
    let raw = am.get_last_local_change().unwrap().raw_bytes().to_vec();
    (am, raw)
}

fn outputs(e: &mut Engine) -> Vec<Output> {
    let mut outs = Vec::new();
    while let Some(o) = e.poll_output() {
        outs.push(o);
    }
    outs
}

fn stored_changes(outs: &[Output]) -> usize {
    outs.iter()
        .filter(|o| matches!(o, Output::Persist { write: Write::Changes(c), .. } if !c.is_empty()))
        .count()
}
