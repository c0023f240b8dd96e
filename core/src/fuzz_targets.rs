//! The logic of the fuzz targets, as plain functions (`ws_decode`, which needs the relay's
//! private modules, is in `weft_relay::fuzz_targets`).
//!
//! `fuzz/` (cargo-fuzz, nightly) calls these from its targets; a stable test in `tests/` replays
//! every committed corpus file and every crash ever found through the same functions, so CI
//! compiles and exercises them. Each function must never panic on any input.

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ObjType, ROOT};

use crate::check::{self, CheckedChange, Limits};
use crate::engine::{check_message, ConnId, Engine, EngineConfig, Inbound, OpenOptions, Output};
use crate::wire::{self, Message};
use crate::{DocId, Document};

/// Target `frame_decode`: decode a stream of frames; whatever decodes must re-encode to a frame
/// that decodes to the same message.
pub fn frame_decode(data: &[u8]) {
    let max = 1 << 16;
    let mut at = 0;
    while at < data.len() {
        match wire::decode_frame(&data[at..], max) {
            Ok(Some((msg, used))) => {
                let again = wire::frame(&msg, usize::MAX).expect("a decoded message re-encodes");
                let (back, _) = wire::decode_frame(&again, usize::MAX)
                    .expect("a re-encoded frame decodes")
                    .expect("a re-encoded frame is whole");
                assert_eq!(back, msg, "re-encoding changed the message");
                at += used;
            }
            Ok(None) | Err(_) => break,
        }
    }
}

fn sample_doc() -> Document {
    let mut am = Automerge::new().with_actor(ActorId::from(vec![1u8; 16]));
    let mut tx = am.transaction();
    let list = tx
        .put_object(ROOT, "messages", ObjType::List)
        .expect("fresh transaction");
    for i in 0..3 {
        let m = tx
            .insert_object(&list, i, ObjType::Map)
            .expect("insert into own list");
        tx.put(&m, "body", format!("hello {i}"))
            .expect("put into own map");
    }
    tx.commit();
    Document::from_automerge(am)
}

/// Target `sync_message`: hand arbitrary bytes to the engine as a `Sync` and as a `Changes`
/// message from a peer, then keep syncing: errors are fine, panics are not, and the document
/// must still save and load afterwards.
pub fn sync_message(data: &[u8]) {
    let doc = DocId::from_bytes([1; 16]);
    let mut engine = Engine::new(EngineConfig::device());
    engine.create(doc, sample_doc());
    let conn = ConnId(1);
    engine.open(conn, doc, OpenOptions::default());
    let (reset, body) = match data.split_first() {
        Some((flag, rest)) => (flag & 1 == 1, rest),
        None => (false, data),
    };
    let _ = engine.handle(
        conn,
        Message::Sync {
            doc,
            reset,
            data: bytes::Bytes::copy_from_slice(body),
        },
    );
    let _ = engine.handle(
        conn,
        Message::Changes {
            doc,
            changes: vec![bytes::Bytes::from(body.to_vec())],
        },
    );
    let mut ids = Vec::new();
    while let Some(out) = engine.poll_output() {
        if let Output::Persist { id, .. } = out {
            ids.push(id);
        }
    }
    for id in ids {
        engine.persisted(id);
    }
    while engine.poll_output().is_some() {}
    engine.tick(60_000);
    let saved = engine.read(doc, |d| d.save());
    if let Ok(saved) = saved {
        Document::load(&saved).expect("a document the engine holds saves and reloads");
    }
}

/// Target `load_document`: arbitrary bytes as a stored document: loading either fails with an
/// error or yields a document that saves and reloads with the same heads.
pub fn load_document(data: &[u8]) {
    if let Ok(d) = Document::load(data) {
        let again = Document::load(&d.save()).expect("a loaded document's save reloads");
        assert_eq!(again.heads(), d.heads(), "save/load changed the heads");
    }
}

/// The limits `check_changes` checks against: small, so that inputs reach every limit.
fn fuzz_limits() -> Limits {
    Limits {
        max_change_bytes: 64 << 10,
        max_change_ops: 1_000,
        max_inflated_bytes: 1 << 20,
        whole_documents: false,
    }
}

/// Target `check_changes`: arbitrary bytes through what a peer's changes must pass before
/// anything is stored (`check::check_chunks`, `check::check_change`, and `check_message` on a
/// `Sync` and a `Changes` message). Refusals must be limits, never anything else
/// (garbage is an error); whatever passes re-parses into the same change, its bytes are the
/// change's canonical (uncompressed) bytes, within the limits, and pass the check again
/// unchanged.
pub fn check_changes(data: &[u8]) {
    let limits = fuzz_limits();
    let mut inflated = 0;
    let mut out = Vec::new();
    if check::check_chunks(data, &limits, &mut inflated, &mut out).is_ok() {
        assert!(
            inflated <= limits.max_inflated_bytes,
            "inflated past the cap"
        );
        out.iter().for_each(|c| assert_canonical(c, &limits));
    }
    if let Ok(c) = check::check_change(bytes::Bytes::copy_from_slice(data), &limits) {
        assert_canonical(&c, &limits);
    }

    let doc = DocId::from_bytes([1; 16]);
    let sync = Message::Sync {
        doc,
        reset: false,
        data: bytes::Bytes::copy_from_slice(data),
    };
    match check_message(sync, &limits) {
        Ok(Inbound::Sync { changes, msg, .. }) => {
            assert!(
                msg.changes.is_empty(),
                "checked changes left in the message"
            );
            changes.iter().for_each(|c| assert_canonical(c, &limits));
        }
        Ok(Inbound::Refused { error, .. }) => assert!(error.is_limit(), "{error}"),
        Ok(other) => panic!("a Sync message was checked into {other:?}"),
        Err(_) => {}
    }
    let changes = Message::Changes {
        doc,
        changes: vec![bytes::Bytes::copy_from_slice(data)],
    };
    match check_message(changes, &limits) {
        Ok(Inbound::Changes { changes, .. }) => {
            assert_eq!(changes.len(), 1, "one entry, one change");
            assert_canonical(&changes[0], &limits);
        }
        Ok(Inbound::Refused { error, .. }) => assert!(error.is_limit(), "{error}"),
        Ok(other) => panic!("a Changes message was checked into {other:?}"),
        Err(_) => {}
    }
}

fn assert_canonical(c: &CheckedChange, limits: &Limits) {
    assert_eq!(
        &c.raw[..],
        c.change.raw_bytes(),
        "stored bytes are not the change's"
    );
    assert!(
        c.raw.len() <= limits.max_change_bytes,
        "a change past the byte limit"
    );
    assert!(
        c.ops() <= limits.max_change_ops,
        "a change past the ops limit"
    );
    let again = automerge::Change::try_from(&c.raw[..]).expect("checked bytes re-parse");
    assert_eq!(again.hash(), c.change.hash(), "re-parsing changed the hash");
    let rechecked = check::check_change(c.raw.clone(), limits).expect("checked bytes pass again");
    assert_eq!(
        rechecked.raw, c.raw,
        "checking canonical bytes changed them"
    );
}
