//! automerge-repo's WebSocket messages: CBOR maps with a `type` field, as encoded by
//! `@automerge/automerge-repo`'s `cbor-x` encoder (`useRecords: false`, plain byte strings).
//!
//! Decoding is strict about what weft uses and lenient where the JavaScript encoder varies:
//! optional fields may be absent, `null` or `undefined`; `count` and `timestamp` may be integers
//! or floats; unknown extra fields are ignored. A field of the wrong type, a missing required
//! field, an unknown `type`, trailing bytes or a document id that is not a bs58check id is an
//! error, and the socket that sent it is closed.

use std::io::Cursor;

use ciborium::Value;
use weft_core::DocId;

/// Longest peer id accepted (automerge-repo's are UUIDs or short names).
pub(crate) const MAX_PEER_ID_LEN: usize = 256;

/// A message from an automerge-repo client.
#[derive(Debug, PartialEq)]
pub(crate) enum FromClient {
    /// `join`: the first message; binds the socket to `sender`.
    Join {
        sender: String,
        /// `supportedProtocolVersions`; absent means "1" (as the reference server reads it).
        versions: Option<Vec<String>>,
    },
    /// `request` (the first sync message from a peer that lacks the document) or `sync`.
    Sync {
        sender: String,
        doc: DocId,
        data: Vec<u8>,
        request: bool,
    },
    /// `ephemeral`: opaque application data for the document's other peers.
    Ephemeral {
        sender: String,
        doc: DocId,
        data: Vec<u8>,
    },
    /// `doc-unavailable`, `remote-subscription-change`, `remote-heads-changed`, `leave`:
    /// checked, then ignored.
    Ignored { sender: String, kind: &'static str },
}

impl FromClient {
    /// The peer id the message names as its sender.
    pub(crate) fn sender(&self) -> &str {
        match self {
            FromClient::Join { sender, .. }
            | FromClient::Sync { sender, .. }
            | FromClient::Ephemeral { sender, .. }
            | FromClient::Ignored { sender, .. } => sender,
        }
    }
}

/// Why a client's frame is not a valid message.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum CodecError {
    #[error("not CBOR: {reason}")]
    NotCbor { reason: String },
    #[error("trailing bytes after the message")]
    Trailing,
    #[error("a message must be a CBOR map")]
    NotAMap,
    #[error("unknown message type {kind:?}")]
    UnknownType { kind: String },
    #[error("field {field:?} is missing")]
    Missing { field: &'static str },
    #[error("field {field:?} must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("field {field:?} is not a document id")]
    BadDocId { field: &'static str },
    #[error("the peer id is empty or longer than {MAX_PEER_ID_LEN} bytes")]
    BadPeerId,
}

/// Decodes one binary frame from a client.
pub(crate) fn decode(frame: &[u8]) -> Result<FromClient, CodecError> {
    let mut cursor = Cursor::new(frame);
    let value: Value = ciborium::from_reader(&mut cursor).map_err(|e| CodecError::NotCbor {
        reason: e.to_string(),
    })?;
    if usize::try_from(cursor.position()).ok() != Some(frame.len()) {
        return Err(CodecError::Trailing);
    }
    let Value::Map(entries) = value else {
        return Err(CodecError::NotAMap);
    };
    let map = Fields(&entries);
    let kind = map
        .text("type")?
        .ok_or(CodecError::Missing { field: "type" })?;
    let sender = map
        .text("senderId")?
        .ok_or(CodecError::Missing { field: "senderId" })?;
    if sender.is_empty() || sender.len() > MAX_PEER_ID_LEN {
        return Err(CodecError::BadPeerId);
    }
    let sender = sender.to_owned();
    // Every message but `join` names a target; weft checks only its type.
    let _ = map.text("targetId")?;
    match kind {
        "join" => {
            let versions = match map.get("supportedProtocolVersions") {
                None => None,
                Some(Value::Array(items)) => Some(
                    items
                        .iter()
                        .map(|v| match v {
                            Value::Text(t) => Ok(t.clone()),
                            _ => Err(CodecError::WrongType {
                                field: "supportedProtocolVersions",
                                expected: "an array of strings",
                            }),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                Some(_) => {
                    return Err(CodecError::WrongType {
                        field: "supportedProtocolVersions",
                        expected: "an array of strings",
                    })
                }
            };
            match map.get("peerMetadata") {
                None | Some(Value::Map(_)) => {}
                Some(_) => {
                    return Err(CodecError::WrongType {
                        field: "peerMetadata",
                        expected: "a map",
                    })
                }
            }
            Ok(FromClient::Join { sender, versions })
        }
        "request" | "sync" => Ok(FromClient::Sync {
            sender,
            doc: map.doc_id()?,
            data: map.bytes("data")?,
            request: kind == "request",
        }),
        "ephemeral" => {
            map.number("count")?;
            let _ = map.text("sessionId")?;
            Ok(FromClient::Ephemeral {
                sender,
                doc: map.doc_id()?,
                data: map.bytes("data")?,
            })
        }
        "doc-unavailable" => {
            map.doc_id()?;
            Ok(FromClient::Ignored {
                sender,
                kind: "doc-unavailable",
            })
        }
        "remote-subscription-change" => {
            map.text_array("add")?;
            map.text_array("remove")?;
            Ok(FromClient::Ignored {
                sender,
                kind: "remote-subscription-change",
            })
        }
        "remote-heads-changed" => {
            map.doc_id()?;
            match map.get("newHeads") {
                None => {}
                Some(Value::Map(per_storage)) => {
                    for (_, entry) in per_storage {
                        let Value::Map(entry) = entry else {
                            return Err(CodecError::WrongType {
                                field: "newHeads",
                                expected: "a map of {heads, timestamp}",
                            });
                        };
                        let entry = Fields(entry);
                        entry.text_array("heads")?;
                        entry.number("timestamp")?;
                    }
                }
                Some(_) => {
                    return Err(CodecError::WrongType {
                        field: "newHeads",
                        expected: "a map",
                    })
                }
            }
            Ok(FromClient::Ignored {
                sender,
                kind: "remote-heads-changed",
            })
        }
        "leave" => Ok(FromClient::Ignored {
            sender,
            kind: "leave",
        }),
        other => Err(CodecError::UnknownType {
            kind: other.chars().take(64).collect(),
        }),
    }
}

/// A message's fields; `null` and `undefined` (both decoded as `Null`) count as absent.
struct Fields<'a>(&'a [(Value, Value)]);

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.0
            .iter()
            .find(|(k, _)| matches!(k, Value::Text(t) if t == name))
            .map(|(_, v)| v)
            .filter(|v| !matches!(v, Value::Null))
    }

    fn text(&self, field: &'static str) -> Result<Option<&'a str>, CodecError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Text(t)) => Ok(Some(t)),
            Some(_) => Err(CodecError::WrongType {
                field,
                expected: "a string",
            }),
        }
    }

    fn bytes(&self, field: &'static str) -> Result<Vec<u8>, CodecError> {
        match self.get(field) {
            None => Err(CodecError::Missing { field }),
            Some(Value::Bytes(b)) => Ok(b.clone()),
            Some(_) => Err(CodecError::WrongType {
                field,
                expected: "a byte string",
            }),
        }
    }

    /// An optional number, integer or float.
    fn number(&self, field: &'static str) -> Result<(), CodecError> {
        match self.get(field) {
            None | Some(Value::Integer(_)) | Some(Value::Float(_)) => Ok(()),
            Some(_) => Err(CodecError::WrongType {
                field,
                expected: "a number",
            }),
        }
    }

    /// An optional array of strings.
    fn text_array(&self, field: &'static str) -> Result<(), CodecError> {
        match self.get(field) {
            None => Ok(()),
            Some(Value::Array(items)) if items.iter().all(|v| matches!(v, Value::Text(_))) => {
                Ok(())
            }
            Some(_) => Err(CodecError::WrongType {
                field,
                expected: "an array of strings",
            }),
        }
    }

    fn doc_id(&self) -> Result<DocId, CodecError> {
        const FIELD: &str = "documentId";
        let text = self
            .text(FIELD)?
            .ok_or(CodecError::Missing { field: FIELD })?;
        text.parse()
            .map_err(|_| CodecError::BadDocId { field: FIELD })
    }
}

/// A message for a client. `sender` is the relay's peer id, `target` the client's.
#[derive(Debug)]
pub(crate) enum ToClient<'a> {
    /// The answer to `join`.
    Peer,
    /// An Automerge sync message.
    Sync { doc: DocId, data: &'a [u8] },
    /// The relay will not serve the document (refused, whether or not it exists).
    DocUnavailable { doc: DocId },
    /// Another peer's ephemeral data. `session` names the originating device (the client
    /// drops messages whose `count` does not increase per sender and session).
    Ephemeral {
        doc: DocId,
        data: &'a [u8],
        session: &'a str,
        count: u64,
    },
    /// Sent just before the relay closes the socket.
    Error { message: &'a str },
}

/// Encodes a message for the client with peer id `target`.
pub(crate) fn encode(msg: &ToClient<'_>, sender: &str, target: &str) -> Vec<u8> {
    let text = |s: &str| Value::Text(s.to_owned());
    let mut fields = vec![
        (text("senderId"), text(sender)),
        (text("targetId"), text(target)),
    ];
    let kind = match msg {
        ToClient::Peer => {
            fields.push((text("peerMetadata"), Value::Map(Vec::new())));
            fields.push((
                text("selectedProtocolVersion"),
                text(super::PROTOCOL_VERSION),
            ));
            "peer"
        }
        ToClient::Sync { doc, data } => {
            fields.push((text("documentId"), text(&doc.to_string())));
            fields.push((text("data"), Value::Bytes(data.to_vec())));
            "sync"
        }
        ToClient::DocUnavailable { doc } => {
            fields.push((text("documentId"), text(&doc.to_string())));
            "doc-unavailable"
        }
        ToClient::Ephemeral {
            doc,
            data,
            session,
            count,
        } => {
            fields.push((text("documentId"), text(&doc.to_string())));
            fields.push((text("data"), Value::Bytes(data.to_vec())));
            fields.push((text("sessionId"), text(session)));
            fields.push((text("count"), Value::Integer((*count).into())));
            "ephemeral"
        }
        ToClient::Error { message } => {
            fields.push((text("message"), text(message)));
            "error"
        }
    };
    fields.insert(0, (text("type"), text(kind)));
    let mut out = Vec::new();
    // Invariant: writing a `Value` into a `Vec` cannot fail (no IO error, no unsupported type).
    ciborium::into_writer(&Value::Map(fields), &mut out).expect("CBOR encoding into a Vec");
    out
}

#[cfg(test)]
mod tests {
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
}
