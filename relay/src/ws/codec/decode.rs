//! Reading a client's frame: one CBOR map, checked field by field.

use std::io::Cursor;

use ciborium::Value;

use super::error::{CodecError, MAX_PEER_ID_LEN};
use super::fields::Fields;
use super::messages::FromClient;
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
        "join" => Ok(FromClient::Join {
            sender,
            versions: join_versions(&map)?,
        }),
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
            check_new_heads(&map)?;
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

/// A `join`'s protocol versions (absent is `None`), its metadata checked to be a map.
fn join_versions(map: &Fields<'_>) -> Result<Option<Vec<String>>, CodecError> {
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
    Ok(versions)
}

/// A `remote-heads-changed`'s `newHeads`, checked: a map of `{heads, timestamp}` per storage.
fn check_new_heads(map: &Fields<'_>) -> Result<(), CodecError> {
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
    Ok(())
}
