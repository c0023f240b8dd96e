//! One WebSocket client: upgrade with a token, `join`, then translation both ways between
//! automerge-repo's messages and the hub's (see the module docs of `ws`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, error::CapacityError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;
use weft_core::engine::{ConnId, Inbound};
use weft_core::wire::{self, ErrorCode, Message};
use weft_core::{DeviceId, DocId};

use super::codec::{self, FromClient, ToClient};
use super::{WsLimits, PROTOCOL_VERSION};
use crate::hub::{HubEvent, Outbound};
use crate::metrics::Metrics;
use crate::rate::{ByteRate, RateLimit};
use crate::Verifier;

/// What every socket task shares.
pub(super) struct Shared {
    pub(super) verifier: Verifier,
    pub(super) limits: WsLimits,
    pub(super) metrics: Arc<Metrics>,
    /// The relay's automerge-repo peer id.
    pub(super) relay_peer: Arc<str>,
}

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

fn bad(code: CloseCode, reason: impl Into<String>) -> SocketEnd {
    SocketEnd::BadInput {
        code,
        reason: reason.into(),
    }
}

/// A document as this socket sees it.
enum DocState {
    /// `Subscribe` was sent; sync messages, already checked, wait (bounded) for the hub's
    /// answer.
    Pending(VecDeque<Held>),
    /// Subscribed: sync messages and ephemeral data flow.
    Open,
}

/// A checked sync message held until its document's subscription is answered.
struct Held {
    event: HubEvent,
    /// Its size as received, counted in `Socket::pending_bytes`.
    bytes: usize,
}

fn held_bytes(queue: &VecDeque<Held>) -> usize {
    queue.iter().map(|h| h.bytes).sum()
}

type Ws = WebSocketStream<TcpStream>;

/// Serves one accepted TCP connection until it ends; reports `Open`/`Closed` to the hub.
pub(super) async fn serve_socket(
    stream: TcpStream,
    conn: ConnId,
    shared: &Shared,
    hub: mpsc::Sender<HubEvent>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SocketEnd> {
    let limits = &shared.limits;
    let deadline = tokio::time::Instant::now() + limits.join_timeout;
    let config = WebSocketConfig::default()
        .max_frame_size(Some(limits.max_frame))
        .max_message_size(Some(limits.max_frame));
    let mut claims = None;
    let mut refused = false;
    // The callback's signature is tungstenite's (its error type is an HTTP response).
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let verified = token_from_query(req.uri().query()).and_then(|t| {
            shared
                .verifier
                .verify(&t, weft_core::clock::unix_secs())
                .ok()
        });
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
    let mut ws = match tokio::time::timeout_at(deadline, upgrade).await {
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

    let peer = match tokio::time::timeout_at(deadline, wait_for_join(&mut ws)).await {
        Err(_) => {
            close(&mut ws, CloseCode::Policy, "no join in time").await;
            return Err(SocketEnd::JoinTimeout);
        }
        Ok(Err(end)) => {
            if let SocketEnd::BadInput { code, reason } = &end {
                Metrics::inc(&shared.metrics.protocol_errors);
                close(&mut ws, *code, reason).await;
            }
            return Err(end);
        }
        Ok(Ok(peer)) => peer,
    };
    let device = device_for(&claims.sub, &peer);
    tracing::info!(conn = conn.0, %device, user = %claims.sub, "WebSocket client joined");
    let peer_msg = codec::encode(&ToClient::Peer, &shared.relay_peer, &peer);
    if let Err(e) = ws.send(WsMessage::Binary(peer_msg.into())).await {
        return Err(SocketEnd::Lost(e));
    }

    let (out_tx, out_rx) = mpsc::channel(limits.queue_len);
    let opened = hub
        .send(HubEvent::Open {
            conn,
            device,
            claims,
            out: out_tx,
        })
        .await;
    // Sent right after `Open` on the same channel, so it lands before any subscription.
    let marked = hub.send(HubEvent::SyncOnly { conn }).await;
    if opened.is_err() || marked.is_err() {
        close(&mut ws, CloseCode::Away, "relay shutting down").await;
        return Err(SocketEnd::Shutdown);
    }
    Metrics::inc(&shared.metrics.connections_total);
    shared.metrics.connections.fetch_add(1, Ordering::Relaxed);

    let mut socket = Socket {
        ws,
        conn,
        peer,
        shared,
        hub: hub.clone(),
        docs: HashMap::new(),
        pending_bytes: 0,
        ephemeral_count: 0,
        rate: RateLimit::new(limits.burst, limits.rate),
        bytes: ByteRate::new(limits.bytes_per_sec.saturating_mul(4), limits.bytes_per_sec),
    };
    let end = socket.run(out_rx, &mut stop).await;
    match &end {
        SocketEnd::BadInput { code, reason } | SocketEnd::ClosedByRelay { code, reason } => {
            if matches!(end, SocketEnd::BadInput { .. }) {
                Metrics::inc(&shared.metrics.protocol_errors);
            }
            let error = codec::encode(
                &ToClient::Error { message: reason },
                &shared.relay_peer,
                &socket.peer,
            );
            let _ = socket.ws.send(WsMessage::Binary(error.into())).await;
            close(&mut socket.ws, *code, reason).await;
        }
        SocketEnd::Shutdown => close(&mut socket.ws, CloseCode::Away, "relay shutting down").await,
        _ => {}
    }
    let _ = hub.send(HubEvent::Closed { conn }).await;
    shared.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    Err(end)
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

/// The next binary frame (`None` for pings and pongs), or why the socket must end.
async fn next_binary(ws: &mut Ws) -> Result<Option<Vec<u8>>, SocketEnd> {
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
async fn close(ws: &mut Ws, code: CloseCode, reason: &str) {
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

struct Socket<'a> {
    ws: Ws,
    conn: ConnId,
    /// The peer id bound at `join`.
    peer: String,
    shared: &'a Shared,
    hub: mpsc::Sender<HubEvent>,
    docs: HashMap<DocId, DocState>,
    /// Bytes held in `DocState::Pending` queues.
    pending_bytes: usize,
    /// Increases with every ephemeral message sent to the client (it drops repeats).
    ephemeral_count: u64,
    rate: RateLimit,
    bytes: ByteRate,
}

impl Socket<'_> {
    async fn run(
        &mut self,
        mut out_rx: mpsc::Receiver<Outbound>,
        stop: &mut watch::Receiver<bool>,
    ) -> SocketEnd {
        let keep_alive = self.shared.limits.keep_alive;
        let mut ping = tokio::time::interval(keep_alive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard = tokio::time::Instant::now();
        loop {
            // All are cancel-safe: losing the race loses nothing.
            let result = tokio::select! {
                () = stopped(stop) => return SocketEnd::Shutdown,
                _ = ping.tick() => {
                    if heard.elapsed() >= keep_alive * 2 {
                        return SocketEnd::Silent;
                    }
                    if heard.elapsed() >= keep_alive {
                        self.ws.send(WsMessage::Ping(Default::default())).await.map_err(SocketEnd::Lost)
                    } else {
                        Ok(())
                    }
                }
                out = out_rx.recv() => match out {
                    Some(out) => self.on_outbound(out).await,
                    None => return SocketEnd::Shutdown,
                },
                frame = next_binary(&mut self.ws) => {
                    heard = tokio::time::Instant::now();
                    match frame {
                    Ok(Some(frame)) => self.on_frame(&frame).await,
                    Ok(None) => Ok(()),
                    Err(end) => Err(end),
                    }
                },
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    async fn send_hub(&mut self, msg: Message) -> Result<(), SocketEnd> {
        let event = self.check(msg).await?;
        self.hub.send(event).await.map_err(|_| SocketEnd::Shutdown)
    }

    /// The hub event for `msg`: sync messages are checked here, off the hub (see
    /// `inbound.rs`); a malformed one ends the socket.
    async fn check(&self, msg: Message) -> Result<HubEvent, SocketEnd> {
        crate::inbound::to_hub(self.conn, msg, &self.shared.limits.check)
            .await
            .map_err(|e| bad(CloseCode::Invalid, format!("invalid sync message: {e}")))
    }

    async fn send_client(&mut self, msg: ToClient<'_>) -> Result<(), SocketEnd> {
        let frame = codec::encode(&msg, &self.shared.relay_peer, &self.peer);
        Metrics::add(&self.shared.metrics.bytes_out, frame.len() as u64);
        self.ws
            .send(WsMessage::Binary(frame.into()))
            .await
            .map_err(SocketEnd::Lost)
    }

    async fn on_frame(&mut self, frame: &[u8]) -> Result<(), SocketEnd> {
        Metrics::add(&self.shared.metrics.bytes_in, frame.len() as u64);
        let now = std::time::Instant::now();
        if !self.rate.allow(now) {
            return Err(bad(CloseCode::Again, "too many messages"));
        }
        if let Some(wait) = self.bytes.take(now, frame.len()) {
            Metrics::inc(&self.shared.metrics.throttled);
            tokio::time::sleep(wait).await;
        }
        let msg = codec::decode(frame).map_err(|e| bad(CloseCode::Invalid, e.to_string()))?;
        tracing::trace!(conn = self.conn.0, ?msg, "from the client");
        if msg.sender() != self.peer {
            return Err(bad(
                CloseCode::Policy,
                "senderId is not the peer id this socket joined with",
            ));
        }
        match msg {
            FromClient::Join { .. } => Err(bad(CloseCode::Policy, "join sent twice")),
            FromClient::Sync {
                doc, data, request, ..
            } => {
                if weft_core::automerge::sync::Message::decode(&data).is_err() {
                    return Err(bad(
                        CloseCode::Invalid,
                        format!("the sync data for {doc} is not an Automerge sync message"),
                    ));
                }
                self.on_sync(doc, data, request).await
            }
            FromClient::Ephemeral { doc, data, .. } => {
                if matches!(self.docs.get(&doc), Some(DocState::Open)) {
                    self.send_hub(Message::Ephemeral {
                        doc,
                        user: None,
                        device: None,
                        data,
                    })
                    .await
                } else {
                    // Not subscribed (yet): ephemeral data is best-effort.
                    Ok(())
                }
            }
            FromClient::Ignored { kind, .. } => {
                tracing::trace!(conn = self.conn.0, kind, "ignored a client message");
                Ok(())
            }
        }
    }

    /// A `sync` (or, with `request`, a `request`: the client lacks the document, so the relay
    /// must not create it) for `doc`.
    ///
    /// A message for a document not yet subscribed is checked before the subscription is
    /// asked for, not when it is handed over: a malformed message or a change over a limit
    /// must not first create the document (an owner record and a place in the user's quota).
    async fn on_sync(&mut self, doc: DocId, data: Vec<u8>, request: bool) -> Result<(), SocketEnd> {
        let limits = &self.shared.limits;
        let bytes = data.len();
        let msg = Message::Sync {
            doc,
            reset: false,
            data,
        };
        match self.docs.get(&doc) {
            Some(DocState::Open) => return self.send_hub(msg).await,
            Some(DocState::Pending(queue)) => {
                if queue.len() >= limits.max_pending_per_doc
                    || self.pending_bytes + bytes > limits.max_pending_bytes
                {
                    return Err(bad(
                        CloseCode::Policy,
                        format!("too many sync messages for {doc} before its subscription"),
                    ));
                }
            }
            None => {
                if self.docs.len() >= limits.max_docs {
                    return self.send_client(ToClient::DocUnavailable { doc }).await;
                }
                if self.pending_bytes + bytes > limits.max_pending_bytes {
                    return Err(bad(
                        CloseCode::Policy,
                        "too many sync bytes waiting for subscriptions",
                    ));
                }
            }
        }
        let event = self.check(msg).await?;
        if let HubEvent::Inbound {
            inbound: Inbound::Refused { error, .. },
            ..
        } = &event
        {
            // What the hub would answer once subscribed (`REFUSED`), without subscribing.
            return Err(SocketEnd::ClosedByRelay {
                code: CloseCode::Policy,
                reason: format!("{doc}: changes refused: {error}"),
            });
        }
        self.pending_bytes += bytes;
        let held = Held { event, bytes };
        if let Some(DocState::Pending(queue)) = self.docs.get_mut(&doc) {
            queue.push_back(held);
            return Ok(());
        }
        self.docs
            .insert(doc, DocState::Pending(VecDeque::from([held])));
        if request {
            let conn = self.conn;
            self.hub
                .send(HubEvent::SubscribeExisting { conn, doc })
                .await
                .map_err(|_| SocketEnd::Shutdown)
        } else {
            self.send_hub(Message::Subscribe { doc }).await
        }
    }

    async fn on_outbound(&mut self, out: Outbound) -> Result<(), SocketEnd> {
        let frame = match out {
            Outbound::Frame(f) | Outbound::Ephemeral(f) => f,
            Outbound::Close { code, reason } => {
                return Err(SocketEnd::ClosedByRelay {
                    code: close_code(code),
                    reason,
                })
            }
        };
        // The hub queues a batch of whole frames as one entry.
        let mut rest = &frame[..];
        while !rest.is_empty() {
            let msg = match wire::decode_frame(rest, usize::MAX) {
                Ok(Some((msg, used))) => {
                    rest = &rest[used..];
                    tracing::trace!(conn = self.conn.0, ?msg, "from the hub");
                    msg
                }
                // Invariant: the hub sends whole frames it encoded itself.
                Ok(None) | Err(_) => {
                    tracing::error!(conn = self.conn.0, "the hub sent an undecodable frame");
                    return Ok(());
                }
            };
            self.on_hub_message(msg).await?;
        }
        Ok(())
    }

    async fn on_hub_message(&mut self, msg: Message) -> Result<(), SocketEnd> {
        match msg {
            Message::Subscribed { doc, .. } => {
                if let Some(DocState::Pending(queue)) = self.docs.get_mut(&doc) {
                    let queue = std::mem::take(queue);
                    self.pending_bytes -= held_bytes(&queue);
                    self.docs.insert(doc, DocState::Open);
                    for held in queue {
                        self.hub
                            .send(held.event)
                            .await
                            .map_err(|_| SocketEnd::Shutdown)?;
                    }
                }
                Ok(())
            }
            Message::Sync { doc, data, .. } => {
                if matches!(self.docs.get(&doc), Some(DocState::Open)) {
                    self.send_client(ToClient::Sync { doc, data: &data }).await
                } else {
                    Ok(())
                }
            }
            Message::Ephemeral {
                doc, device, data, ..
            } => {
                if !matches!(self.docs.get(&doc), Some(DocState::Open)) {
                    return Ok(());
                }
                self.ephemeral_count += 1;
                let session = device.map_or_else(|| "weft-relay".to_string(), |d| d.to_string());
                let count = self.ephemeral_count;
                self.send_client(ToClient::Ephemeral {
                    doc,
                    data: &data,
                    session: &session,
                    count,
                })
                .await
            }
            Message::Error {
                code,
                doc: Some(doc),
                message,
            } => {
                if code == ErrorCode::READ_ONLY {
                    // The client's changes were not applied; the sync protocol keeps offering
                    // them, and the relay keeps ignoring them.
                    tracing::debug!(conn = self.conn.0, %doc, "read-only client sent changes");
                    return Ok(());
                }
                if code == ErrorCode::REFUSED {
                    // Changes were refused (a limit or a write rule); nothing was stored. A
                    // stock client would offer them again forever: tell it why and close.
                    // (`close` cuts the reason to fit a close frame; the `error` message
                    // carries it whole.)
                    return Err(SocketEnd::ClosedByRelay {
                        code: CloseCode::Policy,
                        reason: format!("{doc}: {message}"),
                    });
                }
                tracing::debug!(conn = self.conn.0, %doc, code = code.0, %message, "document refused");
                // Refused (whether or not it exists), revoked, deleted or failed: the client
                // may ask again later and is authorized afresh.
                if let Some(DocState::Pending(queue)) = self.docs.remove(&doc) {
                    self.pending_bytes -= held_bytes(&queue);
                }
                self.send_client(ToClient::DocUnavailable { doc }).await
            }
            // Discovery, presence, welcome: automerge-repo has no equivalent. `Changes` and
            // `Ack` never come (the hub keeps this connection in sync mode).
            _ => Ok(()),
        }
    }
}

/// Resolves once the relay is stopping (or the stop signal is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Maps the hub's close codes to WebSocket close codes.
fn close_code(code: ErrorCode) -> CloseCode {
    match code {
        ErrorCode::UNAUTHENTICATED | ErrorCode::FORBIDDEN | ErrorCode::DEVICE_NOT_ALLOWED => {
            CloseCode::Policy
        }
        ErrorCode::MALFORMED => CloseCode::Invalid,
        ErrorCode::TOO_LARGE => CloseCode::Size,
        ErrorCode::RATE_LIMITED => CloseCode::Again,
        ErrorCode::UNSUPPORTED_VERSION => CloseCode::Protocol,
        _ => CloseCode::Error,
    }
}

/// The `token` query parameter, percent-decoded.
fn token_from_query(query: Option<&str>) -> Option<String> {
    let raw = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
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

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let long = "é".repeat(100);
        let cut = truncate(&long, 120);
        assert!(cut.len() <= 120 && long.starts_with(cut));
    }
}
