//! A joined socket's message loop: the client's frames, the hub's queue, keep-alive pings and
//! the relay's stop, and the translation both ways between automerge-repo's messages and the
//! hub's (see the module docs of `ws`).

use std::collections::{HashMap, VecDeque};

use futures_util::SinkExt;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use weft_core::engine::{ConnId, Inbound};
use weft_core::wire::{self, ErrorCode, Message};
use weft_core::{DeviceId, DocId};

use super::codec::{self, FromClient, ToClient};
use super::frames::{bad, next_binary, SocketEnd, Ws};
use super::heads::{now_ms, RemoteHeads};
use super::weft::{Here, WeftOut, WeftState};
use super::Shared;
use crate::hub::{HubEvent, Outbound};
use crate::metrics::Metrics;
use crate::rate::{ByteRate, RateLimit};

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

/// A joined socket: its documents, its limits, and the translation both ways.
pub(super) struct Socket<'a> {
    pub(super) ws: Ws,
    conn: ConnId,
    /// The peer id bound at `join`.
    pub(super) peer: String,
    /// The user of the token the socket opened with.
    pub(super) user: String,
    /// The device id the hub knows the socket by.
    pub(super) device: DeviceId,
    pub(super) shared: &'a Shared,
    hub: mpsc::Sender<HubEvent>,
    docs: HashMap<DocId, DocState>,
    /// Bytes held in `DocState::Pending` queues.
    pending_bytes: usize,
    /// Increases with every ephemeral message sent to the client (it drops repeats).
    ephemeral_count: u64,
    rate: RateLimit,
    bytes: ByteRate,
    remote_heads: RemoteHeads,
    pub(super) weft: WeftState,
}

impl<'a> Socket<'a> {
    /// The socket of connection `conn`, joined as `peer` (`device` of `user`), with nothing
    /// subscribed.
    pub(super) fn new(
        ws: Ws,
        conn: ConnId,
        (peer, user, device): (String, String, DeviceId),
        shared: &'a Shared,
        hub: mpsc::Sender<HubEvent>,
    ) -> Self {
        let limits = &shared.limits;
        Socket {
            ws,
            conn,
            peer,
            user,
            device,
            shared,
            hub,
            docs: HashMap::new(),
            pending_bytes: 0,
            ephemeral_count: 0,
            rate: RateLimit::new(limits.burst, limits.rate),
            bytes: ByteRate::new(limits.bytes_per_sec.saturating_mul(4), limits.bytes_per_sec),
            remote_heads: RemoteHeads::default(),
            weft: WeftState::default(),
        }
    }

    /// Serves the client and the hub's queue `out_rx` until one of them, the keep-alive or
    /// `stop` ends the socket: why.
    pub(super) async fn run(
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

    /// Runs one `weft-…` exchange on this socket's [`WeftState`]: its result and what to send.
    fn with_weft<R>(
        &mut self,
        exchange: impl FnOnce(&mut WeftState, &Here<'_>, &mut Vec<WeftOut>) -> R,
    ) -> (R, Vec<WeftOut>) {
        let docs = &self.docs;
        let subscription = |d: DocId| docs.get(&d).map(|s| matches!(s, DocState::Open));
        let here = Here {
            user: &self.user,
            device: self.device,
            storage_id: &self.shared.storage_id,
            verifier: &self.shared.verifier,
            subscription: &subscription,
        };
        let mut out = Vec::new();
        let result = exchange(&mut self.weft, &here, &mut out);
        (result, out)
    }

    /// Sends, in order, what a `weft-…` exchange produced.
    async fn send_weft(&mut self, out: Vec<WeftOut>) -> Result<(), SocketEnd> {
        for item in out {
            match item {
                WeftOut::Client { kind, fields } => {
                    self.send_client(ToClient::Weft { kind, fields }).await?
                }
                WeftOut::Hub(msg) => self.tell_hub(msg).await?,
            }
        }
        Ok(())
    }

    /// Sends the hub a message that needs no subscription held back (control, ephemeral).
    pub(super) async fn tell_hub(&mut self, msg: Message) -> Result<(), SocketEnd> {
        self.send_hub(msg).await
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

    pub(super) async fn send_client(&mut self, msg: ToClient<'_>) -> Result<(), SocketEnd> {
        let frame = codec::encode(&msg, &self.shared.relay_peer, &self.peer);
        Metrics::add(&self.shared.metrics.bytes_out, frame.len() as u64);
        self.ws
            .send(WsMessage::Binary(frame.into()))
            .await
            .map_err(SocketEnd::Lost)
    }

    async fn send_remote_heads(
        &mut self,
        doc: DocId,
        heads: &[String],
        timestamp: u64,
    ) -> Result<(), SocketEnd> {
        let storage_id = &self.shared.storage_id;
        let frame = codec::encode(
            &ToClient::RemoteHeads {
                doc,
                storage_id,
                heads,
                timestamp,
            },
            &self.shared.relay_peer,
            &self.peer,
        );
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
            FromClient::RemoteSubscription { add, remove, .. } => {
                let storage_id = &self.shared.storage_id;
                if !self
                    .remote_heads
                    .change_subscription(storage_id, &add, &remove)
                {
                    return Ok(());
                }
                let timestamp = now_ms();
                for (doc, heads) in self.remote_heads.known() {
                    self.send_remote_heads(doc, &heads, timestamp).await?;
                }
                Ok(())
            }
            FromClient::Weft { request, .. } => {
                let ((), out) = self.with_weft(|w, here, out| w.on_request(request, here, out));
                self.send_weft(out).await
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
            data: data.into(),
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
            Outbound::EphemeralBatch { frames, except } => {
                std::sync::Arc::new([&frames[..except.start], &frames[except.end..]].concat())
            }
            // A shared snapshot is translated (copied into CBOR) for this client anyway.
            Outbound::Chunks(chunks) => std::sync::Arc::new(chunks.concat()),
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
        let (handled, out) = self.with_weft(|w, here, out| w.on_hub(&msg, here, out));
        if handled {
            return self.send_weft(out).await;
        }
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
                if !matches!(self.docs.get(&doc), Some(DocState::Open)) {
                    return Ok(());
                }
                self.send_client(ToClient::Sync { doc, data: &data })
                    .await?;
                // After the sync message, so the client knows the document when told its heads.
                match self.remote_heads.observe(doc, &data) {
                    Some(heads) => self.send_remote_heads(doc, &heads, now_ms()).await,
                    None => Ok(()),
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
                self.remote_heads.forget(doc);
                self.send_client(ToClient::DocUnavailable { doc }).await
            }
            // Welcome and the like: automerge-repo has no equivalent (discovery, presence and
            // replies are `weft.rs`'s). `Changes` and `Ack` never come (the hub keeps this
            // connection in sync mode).
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
