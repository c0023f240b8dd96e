//! A socket's opening: the upgrade, allowed only with a valid token in the URL (`?token=`) or
//! a one-time ticket issued for one (`?ticket=`; never logged), then `join` within the same deadline, which binds the client's peer id and so
//! its device id (see the module docs of `ws`).

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use weft_core::DeviceId;

use super::codec::{self, FromClient};
use super::frames::{bad, close, next_binary, SocketEnd, Ws};
use super::{Shared, PROTOCOL_VERSION};
use crate::metrics::Metrics;
use crate::Claims;

/// A socket's read buffer. tungstenite's default, 128 KiB, is zero-filled by the first read, so
/// every socket held it: 12.5 MiB of an idle-ish relay's RSS at 100 sockets. automerge-repo's
/// messages are mostly far smaller; a larger one still grows the buffer to its size (read in
/// chunks of this size).
const READ_BUFFER: usize = 8 * 1024;

/// Upgrades `stream` to a WebSocket if its URL carries a token the verifier accepts, by
/// `deadline`: the socket and the token's claims.
pub(super) async fn upgrade(
    stream: TcpStream,
    shared: &Shared,
    deadline: Instant,
) -> Result<(Ws, Claims), SocketEnd> {
    let limits = &shared.limits;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_frame_size(Some(limits.max_frame))
        .max_message_size(Some(limits.max_frame));
    let mut claims = None;
    let mut refused = false;
    // The callback's signature is tungstenite's (its error type is an HTTP response).
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let query = req.uri().query();
        // A ticket, when present, is the only credential looked at (and is used up).
        let verified = match query_param(query, "ticket") {
            Some(ticket) => shared.tickets.redeem(&ticket),
            None => token_from_query(query).and_then(|t| {
                shared
                    .verifier
                    .verify(&t, weft_core::clock::unix_secs())
                    .ok()
            }),
        };
        match verified {
            Some(c) => {
                claims = Some(c);
                Ok(resp)
            }
            None => {
                refused = true;
                let mut refusal = ErrorResponse::new(Some("the token was refused".into()));
                *refusal.status_mut() = StatusCode::UNAUTHORIZED;
                Err(refusal)
            }
        }
    };
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
    let ws = match tokio::time::timeout_at(deadline, upgrade).await {
        Err(_) => return Err(SocketEnd::JoinTimeout),
        Ok(Err(e)) => {
            if refused {
                Metrics::inc(&shared.metrics.auth_failures);
                return Err(SocketEnd::Unauthenticated);
            }
            return Err(SocketEnd::Handshake(e));
        }
        Ok(Ok(ws)) => ws,
    };
    let Some(claims) = claims else {
        // Invariant: the callback accepted the upgrade only after storing verified claims.
        return Err(SocketEnd::Unauthenticated);
    };
    Ok((ws, claims))
}

/// Waits, until `deadline`, for the client's `join`: its peer id. A socket that sends anything
/// else first, or nothing in time, is closed saying why.
pub(super) async fn join(
    ws: &mut Ws,
    shared: &Shared,
    deadline: Instant,
) -> Result<String, SocketEnd> {
    match tokio::time::timeout_at(deadline, wait_for_join(ws)).await {
        Err(_) => {
            close(ws, CloseCode::Policy, "no join in time").await;
            Err(SocketEnd::JoinTimeout)
        }
        Ok(Err(end)) => {
            if let SocketEnd::BadInput { code, reason } = &end {
                Metrics::inc(&shared.metrics.protocol_errors);
                close(ws, *code, reason).await;
            }
            Err(end)
        }
        Ok(Ok(peer)) => Ok(peer),
    }
}

/// Reads until a valid `join`: its peer id.
async fn wait_for_join(ws: &mut Ws) -> Result<String, SocketEnd> {
    loop {
        let frame = match next_binary(ws).await? {
            Some(frame) => frame,
            None => continue,
        };
        let msg = codec::decode(&frame).map_err(|e| bad(CloseCode::Invalid, e.to_string()))?;
        let FromClient::Join { sender, versions } = msg else {
            return Err(bad(CloseCode::Policy, "the first message must be join"));
        };
        if versions.is_some_and(|v| !v.iter().any(|v| v == PROTOCOL_VERSION)) {
            return Err(bad(CloseCode::Protocol, "unsupported protocol version"));
        }
        return Ok(sender);
    }
}

/// The `token` query parameter, percent-decoded.
fn token_from_query(query: Option<&str>) -> Option<String> {
    query_param(query, "token")
}

/// The query parameter `name`, percent-decoded and not empty.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let raw = query?.split('&').find_map(|pair| {
        pair.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
    })?;
    percent_decode(raw).filter(|t| !t.is_empty())
}

/// Decodes a form-encoded query value (`+` is a space, `%XX` a byte), or `None` when an escape
/// is not `%` and two hex digits or the bytes are not UTF-8. The `percent-encoding` crate does
/// the decoding; it passes a malformed escape through unchanged, so escapes are checked first.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let escapes_valid = bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_valid {
        return None;
    }
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

/// The device id the hub knows a WebSocket peer by (see the module docs of `ws`).
pub(super) fn device_for(user: &str, peer: &str) -> DeviceId {
    let mut h = blake3::Hasher::new_derive_key("weft-relay websocket device v1");
    h.update(&(user.len() as u64).to_be_bytes());
    h.update(user.as_bytes());
    h.update(peer.as_bytes());
    DeviceId::from_bytes(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_query_string() {
        assert_eq!(token_from_query(Some("token=a.b.c")), Some("a.b.c".into()));
        assert_eq!(
            token_from_query(Some("x=1&token=a%2Eb.c&y")),
            Some("a.b.c".into())
        );
        assert_eq!(token_from_query(Some("token=")), None);
        assert_eq!(token_from_query(Some("token=%zz")), None);
        assert_eq!(token_from_query(None), None);
    }

    #[test]
    fn a_malformed_escape_or_invalid_utf8_refuses_the_token() {
        // A sign is not a hex digit: `%+5` is not the byte 0x05.
        assert_eq!(token_from_query(Some("token=a%+5b")), None);
        assert_eq!(token_from_query(Some("token=a%-5b")), None);
        // Cut short, at the end or before the next parameter.
        assert_eq!(token_from_query(Some("token=abc%4")), None);
        assert_eq!(token_from_query(Some("token=abc%")), None);
        assert_eq!(token_from_query(Some("token=abc%4&x=1")), None);
        // Bytes that are not UTF-8.
        assert_eq!(token_from_query(Some("token=a%FFb")), None);
        assert_eq!(token_from_query(Some("token=%C3%28")), None);
        // Well-formed escapes of either case, UTF-8 and `+` decode.
        assert_eq!(
            token_from_query(Some("token=a%2eb%2Ec")),
            Some("a.b.c".into())
        );
        assert_eq!(token_from_query(Some("token=%C3%A9")), Some("é".into()));
        assert_eq!(token_from_query(Some("token=a+b%2B")), Some("a b+".into()));
    }

    #[test]
    fn one_peer_id_under_two_users_is_two_devices() {
        assert_eq!(device_for("alice", "tab-1"), device_for("alice", "tab-1"));
        assert_ne!(device_for("alice", "tab-1"), device_for("mallory", "tab-1"));
        // The user's length is part of the input: ("ab", "c") is not ("a", "bc").
        assert_ne!(device_for("ab", "c"), device_for("a", "bc"));
    }
}
