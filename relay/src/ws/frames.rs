//! A socket's frames beneath automerge-repo's messages: reading the next binary frame, closing
//! with a reason, and how a socket ends ([`SocketEnd`]).

use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, error::CapacityError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

/// One client's WebSocket.
pub(super) type Ws = WebSocketStream<TcpStream>;

/// How a socket ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum SocketEnd {
    #[error("WebSocket handshake failed: {0}")]
    Handshake(#[source] tungstenite::Error),
    #[error("the token was refused")]
    Unauthenticated,
    #[error("no join in time")]
    JoinTimeout,
    #[error("closed for bad input: {reason}")]
    BadInput { code: CloseCode, reason: String },
    #[error("the client closed the socket")]
    ClientClosed,
    #[error("connection lost: {0}")]
    Lost(#[source] tungstenite::Error),
    #[error("closed by the relay: {reason}")]
    ClosedByRelay { code: CloseCode, reason: String },
    #[error("the relay is shutting down")]
    Shutdown,
    #[error("the client went silent (no answer to pings)")]
    Silent,
}

/// The end of a socket that sent bad input: closed with `code` and `reason`.
pub(super) fn bad(code: CloseCode, reason: impl Into<String>) -> SocketEnd {
    SocketEnd::BadInput {
        code,
        reason: reason.into(),
    }
}

/// The next binary frame (`None` for pings and pongs), or why the socket must end.
pub(super) async fn next_binary(ws: &mut Ws) -> Result<Option<Vec<u8>>, SocketEnd> {
    match ws.next().await {
        None | Some(Ok(WsMessage::Close(_))) => Err(SocketEnd::ClientClosed),
        Some(Ok(WsMessage::Binary(b))) => Ok(Some(b.to_vec())),
        Some(Ok(WsMessage::Text(_))) => Err(bad(
            CloseCode::Unsupported,
            "text frames are not accepted: send CBOR in binary frames",
        )),
        Some(Ok(_)) => Ok(None),
        Some(Err(tungstenite::Error::Capacity(e))) => Err(bad(
            CloseCode::Size,
            match e {
                CapacityError::MessageTooLong { size, max_size } => {
                    format!("a frame of {size} bytes exceeds the maximum of {max_size}")
                }
                other => other.to_string(),
            },
        )),
        Some(Err(tungstenite::Error::Protocol(e))) => Err(bad(CloseCode::Protocol, e.to_string())),
        Some(Err(e)) => Err(SocketEnd::Lost(e)),
    }
}

/// Sends a close frame, then waits (bounded) for the client's close or its end of the stream,
/// so the close frame is not lost to a reset of a socket with unread data.
pub(super) async fn close(ws: &mut Ws, code: CloseCode, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: truncate(reason, 120).into(),
    };
    if ws.close(Some(frame)).await.is_err() {
        return;
    }
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// At most `max` bytes of `s`, cut at a character boundary (close reasons fit in 123 bytes).
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let long = "é".repeat(100);
        let cut = truncate(&long, 120);
        assert!(cut.len() <= 120 && long.starts_with(cut));
    }
}
