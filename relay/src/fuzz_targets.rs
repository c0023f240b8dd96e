//! The logic of the relay's fuzz targets, as plain functions (like `weft_core::fuzz_targets`).
//!
//! `fuzz/` (cargo-fuzz, nightly) calls these from its targets; the stable test
//! `tests/tests/fuzz_replay.rs` replays the committed corpus through them. Each function must
//! never panic on any input. Not part of the relay's API.

use ciborium::Value;
use weft_core::DocId;

use crate::ws::codec::{self, FromClient, ToClient};

/// Target `ws_decode`: a WebSocket frame from an automerge-repo client, through the relay's
/// CBOR decoder. Whatever decodes must decode the same once its CBOR is re-encoded, and a
/// `sync` or `ephemeral` message must survive the relay's own encoding of it.
pub fn ws_decode(frame: &[u8]) {
    let Ok(msg) = codec::decode(frame) else {
        return;
    };
    let sender = msg.sender();
    assert!(!sender.is_empty() && sender.len() <= codec::MAX_PEER_ID_LEN);

    // One message, however its CBOR was written (sizes, key order of extra fields aside).
    let value: Value = ciborium::from_reader(frame).expect("a decoded frame is CBOR");
    let mut again = Vec::new();
    ciborium::into_writer(&value, &mut again).expect("CBOR encoding into a Vec");
    assert_eq!(
        codec::decode(&again).as_ref(),
        Ok(&msg),
        "re-encoding the CBOR changed the message"
    );

    // What the relay sends a client reads back as the same document and data.
    let echo = match &msg {
        FromClient::Sync { doc, data, .. } => ToClient::Sync { doc: *doc, data },
        FromClient::Ephemeral { doc, data, .. } => ToClient::Ephemeral {
            doc: *doc,
            data,
            session: "session",
            count: 1,
        },
        _ => return,
    };
    let encoded = codec::encode(&echo, sender, "target");
    match (codec::decode(&encoded), &msg) {
        (
            Ok(FromClient::Sync {
                sender: s,
                doc: d,
                data: b,
                request: false,
            }),
            FromClient::Sync {
                sender, doc, data, ..
            },
        ) => assert!(s == *sender && d == *doc && b == *data),
        (
            Ok(FromClient::Ephemeral {
                sender: s,
                doc: d,
                data: b,
            }),
            FromClient::Ephemeral { sender, doc, data },
        ) => assert!(s == *sender && d == *doc && b == *data),
        (other, _) => panic!("the relay's own encoding of {msg:?} decodes as {other:?}"),
    }
}

/// Seed inputs for `ws_decode`: every message type an automerge-repo client sends, as its
/// `cbor-x` encoder writes them (text keys, byte strings, `undefined` absent), by name.
pub fn ws_decode_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let doc = Value::Text(DocId::from_bytes([1; 16]).to_string());
    let sync_data = seed_sync_data();
    vec![
        (
            "seed-join",
            cbor(vec![
                ("type", text("join")),
                ("senderId", text("client-peer")),
                ("peerMetadata", Value::Map(vec![])),
                ("supportedProtocolVersions", Value::Array(vec![text("1")])),
            ]),
        ),
        (
            "seed-request",
            with(
                "request",
                vec![
                    ("documentId", doc.clone()),
                    ("data", Value::Bytes(sync_data.clone())),
                ],
            ),
        ),
        (
            "seed-sync",
            with(
                "sync",
                vec![
                    ("documentId", doc.clone()),
                    ("data", Value::Bytes(sync_data)),
                ],
            ),
        ),
        (
            "seed-ephemeral",
            with(
                "ephemeral",
                vec![
                    ("documentId", doc.clone()),
                    ("sessionId", text("session")),
                    ("count", Value::Integer(3.into())),
                    ("data", Value::Bytes(vec![0xa1, 0x61, b'x', 0x01])),
                ],
            ),
        ),
        (
            "seed-doc-unavailable",
            with("doc-unavailable", vec![("documentId", doc.clone())]),
        ),
        (
            "seed-remote-subscription-change",
            with(
                "remote-subscription-change",
                vec![
                    ("add", Value::Array(vec![text("storage-1")])),
                    ("remove", Value::Array(vec![])),
                ],
            ),
        ),
        (
            "seed-remote-heads-changed",
            with(
                "remote-heads-changed",
                vec![
                    ("documentId", doc),
                    (
                        "newHeads",
                        Value::Map(vec![(
                            text("storage-1"),
                            Value::Map(vec![
                                (text("heads"), Value::Array(vec![text("abc")])),
                                (text("timestamp"), Value::Float(1.7e12)),
                            ]),
                        )]),
                    ),
                ],
            ),
        ),
        ("seed-leave", with("leave", vec![])),
    ]
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// A client's message of type `kind` with the envelope's fields and `more`.
fn with(kind: &str, more: Vec<(&'static str, Value)>) -> Vec<u8> {
    let mut fields = vec![
        ("type", text(kind)),
        ("senderId", text("client-peer")),
        ("targetId", text("weft-relay")),
    ];
    fields.extend(more);
    cbor(fields)
}

/// A real Automerge sync message: the first one of a peer holding one change.
fn seed_sync_data() -> Vec<u8> {
    use weft_core::automerge::sync::SyncDoc;
    use weft_core::automerge::transaction::Transactable;
    let mut am = weft_core::automerge::Automerge::new().with_actor(vec![5; 16].into());
    let mut tx = am.transaction();
    tx.put(weft_core::automerge::ROOT, "title", "seed")
        .expect("a fresh transaction takes a put");
    tx.commit();
    let mut state = weft_core::automerge::sync::State::new();
    am.generate_sync_message(&mut state)
        .expect("a fresh sync state has something to say")
        .encode()
}

fn cbor(fields: Vec<(&str, Value)>) -> Vec<u8> {
    let map = Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Value::Text(k.into()), v))
            .collect(),
    );
    let mut out = Vec::new();
    ciborium::into_writer(&map, &mut out).expect("CBOR encoding into a Vec");
    out
}
