//! Reading a client's frame: one CBOR map, checked field by field.

use std::io::Cursor;

use ciborium::Value;
use weft_core::DocId;

use super::messages::{CodecError, FromClient, MAX_PEER_ID_LEN};
use super::weft::decode_weft;

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
            let add = map.text_array("add")?;
            let remove = map.text_array("remove")?;
            Ok(FromClient::RemoteSubscription {
                sender,
                add,
                remove,
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
        other if other.starts_with("weft-") => match decode_weft(other, &map) {
            Some(request) => Ok(FromClient::Weft {
                sender,
                request: request?,
            }),
            None => Err(CodecError::UnknownType {
                kind: other.chars().take(64).collect(),
            }),
        },
        other => Err(CodecError::UnknownType {
            kind: other.chars().take(64).collect(),
        }),
    }
}

/// A message's fields; `null` and `undefined` (both decoded as `Null`) count as absent.
pub(super) struct Fields<'a>(pub(super) &'a [(Value, Value)]);

impl<'a> Fields<'a> {
    pub(super) fn get(&self, name: &str) -> Option<&'a Value> {
        self.0
            .iter()
            .find(|(k, _)| matches!(k, Value::Text(t) if t == name))
            .map(|(_, v)| v)
            .filter(|v| !matches!(v, Value::Null))
    }

    pub(super) fn text(&self, field: &'static str) -> Result<Option<&'a str>, CodecError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Text(t)) => Ok(Some(t)),
            Some(_) => Err(CodecError::WrongType {
                field,
                expected: "a string",
            }),
        }
    }

    pub(super) fn bytes(&self, field: &'static str) -> Result<Vec<u8>, CodecError> {
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
    pub(super) fn number(&self, field: &'static str) -> Result<(), CodecError> {
        match self.get(field) {
            None | Some(Value::Integer(_)) | Some(Value::Float(_)) => Ok(()),
            Some(_) => Err(CodecError::WrongType {
                field,
                expected: "a number",
            }),
        }
    }

    /// An optional array of strings (absent is empty).
    pub(super) fn text_array(&self, field: &'static str) -> Result<Vec<String>, CodecError> {
        let wrong = CodecError::WrongType {
            field,
            expected: "an array of strings",
        };
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Text(t) => Ok(t.clone()),
                    _ => Err(wrong.clone()),
                })
                .collect(),
            Some(_) => Err(wrong),
        }
    }

    pub(super) fn doc_id(&self) -> Result<DocId, CodecError> {
        const FIELD: &str = "documentId";
        let text = self
            .text(FIELD)?
            .ok_or(CodecError::Missing { field: FIELD })?;
        text.parse()
            .map_err(|_| CodecError::BadDocId { field: FIELD })
    }
}
