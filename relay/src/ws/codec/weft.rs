//! weft's own messages on the automerge-repo socket, all typed `weft-…` (see
//! `docs/decisions/0014-weft-messages-on-the-websocket.md`). Stock automerge-repo clients never
//! send them; a client that does gets discovery, presence with a status, sharing and token
//! refresh. Their envelope is automerge-repo's (`type`, `senderId`, `targetId`).

use ciborium::Value;
use weft_core::{DocId, Role};

use super::error::CodecError;
use super::fields::Fields;

/// Longest presence status, in bytes (an app-defined word such as "typing" or "viewing").
pub(crate) const MAX_STATUS_LEN: usize = 64;
/// Longest user name in a share request.
const MAX_USER_LEN: usize = 256;
/// Longest token in a refresh.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A `weft-…` request from a client.
#[derive(Debug, PartialEq)]
pub(crate) enum WeftRequest {
    /// `weft-hello`: start discovery and presence (answered by `weft-welcome`, the listing).
    Hello,
    /// `weft-presence`: this client's status on a document it syncs.
    Presence { doc: DocId, status: String },
    /// `weft-share`: give `user` `role` on `doc` (answered by `weft-reply`).
    Share {
        id: u64,
        doc: DocId,
        user: String,
        role: Role,
    },
    /// `weft-unshare`: take `user` off `doc`.
    Unshare { id: u64, doc: DocId, user: String },
    /// `weft-delete`: delete `doc` for everyone.
    Delete { id: u64, doc: DocId },
    /// `weft-token`: a fresh token for this connection.
    Token { id: u64, token: String },
}

/// The `weft-…` request of type `kind`, or `None` when `kind` is not one.
pub(super) fn decode_weft(kind: &str, map: &Fields<'_>) -> Option<Result<WeftRequest, CodecError>> {
    let request = match kind {
        "weft-hello" => Ok(WeftRequest::Hello),
        "weft-presence" => (|| {
            let status = map.text("status")?.unwrap_or_default();
            if status.len() > MAX_STATUS_LEN {
                return Err(CodecError::WrongType {
                    field: "status",
                    expected: "a string of at most 64 bytes",
                });
            }
            Ok(WeftRequest::Presence {
                doc: map.doc_id()?,
                status: status.to_owned(),
            })
        })(),
        "weft-share" => (|| {
            let role = required_text(map, "role", 2)?;
            let role = role.parse().map_err(|_| CodecError::WrongType {
                field: "role",
                expected: "\"rw\" or \"ro\"",
            })?;
            Ok(WeftRequest::Share {
                id: id(map)?,
                doc: map.doc_id()?,
                user: required_text(map, "user", MAX_USER_LEN)?,
                role,
            })
        })(),
        "weft-unshare" => (|| {
            Ok(WeftRequest::Unshare {
                id: id(map)?,
                doc: map.doc_id()?,
                user: required_text(map, "user", MAX_USER_LEN)?,
            })
        })(),
        "weft-delete" => (|| {
            Ok(WeftRequest::Delete {
                id: id(map)?,
                doc: map.doc_id()?,
            })
        })(),
        "weft-token" => (|| {
            Ok(WeftRequest::Token {
                id: id(map)?,
                token: required_text(map, "token", MAX_TOKEN_LEN)?,
            })
        })(),
        _ => return None,
    };
    Some(request)
}

/// The request id: a non-negative integer the reply carries back.
fn id(map: &Fields<'_>) -> Result<u64, CodecError> {
    match map.get("id") {
        None => Err(CodecError::Missing { field: "id" }),
        Some(Value::Integer(i)) => u64::try_from(*i).map_err(|_| CodecError::WrongType {
            field: "id",
            expected: "a non-negative integer",
        }),
        Some(_) => Err(CodecError::WrongType {
            field: "id",
            expected: "a non-negative integer",
        }),
    }
}

fn required_text(map: &Fields<'_>, field: &'static str, max: usize) -> Result<String, CodecError> {
    let text = map.text(field)?.ok_or(CodecError::Missing { field })?;
    if text.is_empty() || text.len() > max {
        return Err(CodecError::WrongType {
            field,
            expected: "a non-empty string of bounded length",
        });
    }
    Ok(text.to_owned())
}
