//! The codec against hand-built frames.

use ciborium::Value;
use weft_core::DocId;

use super::error::CodecError;
use super::fields::Fields;
use super::*;

const DOC: DocId = DocId::from_bytes([9; 16]);

fn cbor(fields: Vec<(&str, Value)>) -> Vec<u8> {
    let map = Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Value::Text(k.into()), v))
            .collect(),
    );
    let mut out = Vec::new();
    ciborium::into_writer(&map, &mut out).unwrap();
    out
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

#[test]
fn a_join_is_read_with_or_without_versions() {
    let frame = cbor(vec![
        ("type", text("join")),
        ("senderId", text("alice-tab")),
        ("peerMetadata", Value::Map(vec![])),
        ("supportedProtocolVersions", Value::Array(vec![text("1")])),
    ]);
    assert_eq!(
        decode(&frame),
        Ok(FromClient::Join {
            sender: "alice-tab".into(),
            versions: Some(vec!["1".into()])
        })
    );
    let frame = cbor(vec![("type", text("join")), ("senderId", text("a"))]);
    assert!(matches!(
        decode(&frame),
        Ok(FromClient::Join { versions: None, .. })
    ));
}

#[test]
fn floats_null_and_undefined_are_accepted_where_javascript_puts_them() {
    // cbor-x writes `undefined` as simple value 23 (0xf7).
    let mut frame = cbor(vec![
        ("type", text("ephemeral")),
        ("senderId", text("a")),
        ("targetId", Value::Null),
        ("count", Value::Float(3.0)),
        ("sessionId", text("s")),
        ("documentId", text(&DOC.to_string())),
        ("data", Value::Bytes(vec![1, 2])),
    ]);
    // Append an extra `"x": undefined` entry by hand: bump the map length, add the pair.
    frame[0] += 1;
    frame.extend_from_slice(&[0x61, b'x', 0xf7]);
    assert_eq!(
        decode(&frame),
        Ok(FromClient::Ephemeral {
            sender: "a".into(),
            doc: DOC,
            data: vec![1, 2]
        })
    );
}

#[test]
fn wrong_types_missing_fields_and_garbage_are_errors() {
    let doc = text(&DOC.to_string());
    let cases: Vec<(Vec<u8>, CodecError)> = vec![
        (
            vec![0xff, 0x00],
            CodecError::NotCbor {
                reason: String::new(),
            },
        ),
        (cbor(vec![]), CodecError::Missing { field: "type" }),
        (
            cbor(vec![
                ("type", text("sync")),
                ("senderId", Value::Integer(1.into())),
            ]),
            CodecError::WrongType {
                field: "senderId",
                expected: "a string",
            },
        ),
        (
            cbor(vec![
                ("type", text("sync")),
                ("senderId", text("a")),
                ("documentId", doc.clone()),
                ("data", text("not bytes")),
            ]),
            CodecError::WrongType {
                field: "data",
                expected: "a byte string",
            },
        ),
        (
            cbor(vec![
                ("type", text("sync")),
                ("senderId", text("a")),
                ("documentId", text("nope")),
                ("data", Value::Bytes(vec![1])),
            ]),
            CodecError::BadDocId {
                field: "documentId",
            },
        ),
        (
            cbor(vec![("type", text("teleport")), ("senderId", text("a"))]),
            CodecError::UnknownType {
                kind: "teleport".into(),
            },
        ),
    ];
    for (frame, expected) in cases {
        let got = decode(&frame).unwrap_err();
        match expected {
            CodecError::NotCbor { .. } => assert!(matches!(got, CodecError::NotCbor { .. })),
            e => assert_eq!(got, e),
        }
    }
    let mut trailing = cbor(vec![("type", text("leave")), ("senderId", text("a"))]);
    trailing.push(0);
    assert_eq!(decode(&trailing), Err(CodecError::Trailing));
    assert_eq!(decode(&[0x01]), Err(CodecError::NotAMap));
}

#[test]
fn gossip_and_legacy_messages_are_checked_then_ignored() {
    let heads = Value::Map(vec![(
        text("storage-1"),
        Value::Map(vec![
            (text("heads"), Value::Array(vec![text("abc")])),
            (text("timestamp"), Value::Float(1.7e12)),
        ]),
    )]);
    let frame = cbor(vec![
        ("type", text("remote-heads-changed")),
        ("senderId", text("a")),
        ("documentId", text(&DOC.to_string())),
        ("newHeads", heads),
    ]);
    assert!(matches!(decode(&frame), Ok(FromClient::Ignored { .. })));
    let frame = cbor(vec![
        ("type", text("remote-subscription-change")),
        ("senderId", text("a")),
        ("add", Value::Array(vec![Value::Integer(1.into())])),
    ]);
    assert!(decode(&frame).is_err());
}

#[test]
fn outgoing_messages_round_trip_through_the_field_reader() {
    let frame = encode(
        &ToClient::Sync {
            doc: DOC,
            data: &[1, 2, 3],
        },
        "relay",
        "alice-tab",
    );
    let value: Value = ciborium::from_reader(frame.as_slice()).unwrap();
    let Value::Map(entries) = value else {
        panic!("not a map")
    };
    let f = Fields(&entries);
    assert_eq!(f.text("type").unwrap(), Some("sync"));
    assert_eq!(f.text("targetId").unwrap(), Some("alice-tab"));
    assert_eq!(f.doc_id().unwrap(), DOC);
    assert_eq!(f.bytes("data").unwrap(), vec![1, 2, 3]);
}
