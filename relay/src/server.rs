//! The QUIC side of the relay: accepting connections, authenticating them, and shuttling
//! frames between each connection and the [`Hub`](crate::Hub).
//!
//! One connection per device; the device opens one bidirectional stream that carries every
//! message for every document, in order, pipelined: a device subscribes to all its documents at
//! once and never waits for one document's answer before the next, so 10,000 documents cost no
//! round trips beyond the first. The engine's fast path relies on in-order delivery per
//! document, which one stream gives. The price is head-of-line blocking between documents: a
//! lost packet delays every document's frames behind it for one retransmission, and a large
//! catch-up of one document delays the live changes of the others queued after it. On the
//! links devices use that is milliseconds; per-document streams would remove it at the cost of
//! stream bookkeeping per (connection, document).
//!
//! Per connection, a reader task decodes frames and forwards them to the hub, and a writer task
//! drains the connection's bounded outbound queue, taking everything queued at once and
//! writing it as one buffer. A connection that sends garbage is closed
//! with an error code and one log line; nothing else is affected.
//!
//! Ephemeral traffic (`Ephemeral`, `Presence`) goes to a device as one QUIC datagram per frame
//! when the frame fits the path's datagram size, else on the stream. Devices may send
//! `Ephemeral` and `Presence` as datagrams too; those pass the same rate limit and the hub's
//! authorization as stream frames, and a datagram holding anything else, or not exactly one
//! valid frame, closes the connection like garbage on the stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use weft_core::engine::ConnId;
use weft_core::quic::{self, close_code, FrameReader, FrameWriter, HelloRefused};
use weft_core::wire::{self, ErrorCode, Message};
use weft_core::DeviceId;

use crate::hub::{HubEvent, Outbound};
use crate::metrics::Metrics;
use crate::rate::{ByteRate, RateLimit};
use crate::{Claims, Verifier};

/// Connection limits.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Connections served at once; more are refused.
    pub max_connections: usize,
    /// Frames queued per connection before fan-out drops (and later resyncs).
    pub queue_len: usize,
    /// Largest frame body accepted.
    pub max_frame: usize,
    /// Time a new connection has to open its stream and say hello.
    pub hello_timeout: Duration,
    /// Messages a connection may send in a burst (a first sync of thousands of documents).
    pub burst: u32,
    /// Messages per second a connection may send once its burst is spent.
    pub rate: u32,
    /// What a peer's changes must fit; the connection's task checks them (keep equal to the
    /// hub's `HubConfig::engine.limits`).
    pub check: weft_core::check::Limits,
    /// Bytes per second a connection may send once its burst (four seconds' worth) is spent;
    /// past it the relay reads more slowly.
    pub bytes_per_sec: u64,
}

/// Bytes a message takes on the wire, about (its payload; headers are small).
pub(crate) fn payload_len(msg: &Message) -> usize {
    match msg {
        Message::Sync { data, .. } => data.len(),
        Message::Changes { changes, .. } => changes.iter().map(|c| c.len()).sum(),
        Message::Ephemeral { data, .. } => data.len(),
        _ => 64,
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 10_000,
            queue_len: 1024,
            max_frame: wire::DEFAULT_MAX_FRAME,
            hello_timeout: Duration::from_secs(10),
            burst: 50_000,
            rate: 10_000,
            check: weft_core::check::Limits::default(),
            bytes_per_sec: 8 << 20,
        }
    }
}

/// Most frames a connection's writer takes from its queue for one stream write.
const WRITE_BATCH_FRAMES: usize = 256;
/// A writer's buffer is written out once it holds this many bytes.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// Accepts connections on `endpoint` until `shutdown` resolves, then closes every connection
/// and waits for their tasks. Cancel safety: dropping the future drops the tasks.
pub async fn accept_loop(
    endpoint: quinn::Endpoint,
    verifier: Verifier,
    limits: ServerLimits,
    hub: mpsc::Sender<HubEvent>,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let verifier = Arc::new(verifier);
    let mut conns = JoinSet::new();
    let mut next_conn = 1u64;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    incoming.refuse();
                    continue;
                };
                let conn = ConnId(next_conn);
                next_conn += 1;
                let (verifier, limits, hub, metrics) = (verifier.clone(), limits.clone(), hub.clone(), metrics.clone());
                conns.spawn(async move {
                    let remote = incoming.remote_address();
                    if let Err(reason) = serve_connection(incoming, conn, &verifier, &limits, hub, &metrics).await {
                        tracing::info!(conn = conn.0, %remote, %reason, "connection ended");
                    }
                    drop(permit);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Stop accepting; tell every device we are going away; let the tasks report `Closed`.
    endpoint.close(quinn::VarInt::from_u32(0), b"relay shutting down");
    while conns.join_next().await.is_some() {}
}

/// Serves one connection from its QUIC handshake to its end: the handshake and hello, then a
/// reader (frames and datagrams to the hub) and a writer (the hub's queue to the peer) until
/// either ends. `Err` says why it ended.
async fn serve_connection(
    incoming: quinn::Incoming,
    conn: ConnId,
    verifier: &Verifier,
    limits: &ServerLimits,
    hub: mpsc::Sender<HubEvent>,
    metrics: &Metrics,
) -> Result<(), String> {
    let Greeted {
        connection,
        device,
        claims,
        reader,
        writer,
        counted,
        protocol,
    } = handshake(incoming, verifier, limits, metrics).await?;
    tracing::info!(conn = conn.0, %device, user = %claims.sub, "device connected");
    Metrics::inc(&metrics.connections_total);
    metrics
        .connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    let (out_tx, out_rx) = mpsc::channel(limits.queue_len);
    if hub
        .send(HubEvent::Open {
            conn,
            device,
            claims,
            protocol,
            out: out_tx,
        })
        .await
        .is_err()
    {
        connection.close(close_code(ErrorCode::INTERNAL), b"relay shutting down");
        metrics
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        return Err("hub gone".into());
    }
    let reason = tokio::select! {
        r = read_frames(conn, &connection, reader, counted, limits, &hub, metrics) => r,
        _ = write_frames(connection.clone(), writer, out_rx, metrics) => "closed by the relay".to_string(),
    };
    let _ = hub.send(HubEvent::Closed { conn }).await;
    metrics
        .connections
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    Err(reason)
}

/// A connection that completed its handshake and said hello with a valid token.
struct Greeted {
    connection: quinn::Connection,
    /// The device, from its TLS certificate (the hello named the same one).
    device: DeviceId,
    claims: Claims,
    reader: FrameReader,
    writer: FrameWriter,
    /// Bytes of the stream already counted in `bytes_in`.
    counted: u64,
    /// The protocol version to answer in and encode for.
    protocol: u16,
}

/// The QUIC handshake, the stream, and the hello (`weft_core::quic::accept_hello`: a device
/// certificate, the protocol version, the hello's device the TLS device), then the token
/// verified. A refused connection is told why and closed.
async fn handshake(
    incoming: quinn::Incoming,
    verifier: &Verifier,
    limits: &ServerLimits,
    metrics: &Metrics,
) -> Result<Greeted, String> {
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            Metrics::inc(&metrics.auth_failures);
            return Err(format!("handshake failed: {e}"));
        }
    };
    let hello = quic::accept_hello(&connection, limits.max_frame, limits.hello_timeout).await;
    let mut greeted = match hello {
        Ok(g) => g,
        Err(refused) => {
            match refused {
                HelloRefused::NotHello => Metrics::inc(&metrics.protocol_errors),
                HelloRefused::NoCertificate
                | HelloRefused::Version(_)
                | HelloRefused::WrongDevice => Metrics::inc(&metrics.auth_failures),
                _ => {}
            }
            return Err(refused.to_string());
        }
    };
    // Received bytes are counted as they are read: stream frames from the reader's running
    // total, datagrams by their length (as the WebSocket side counts its frames).
    let counted = greeted.reader.frame_bytes();
    Metrics::add(&metrics.bytes_in, counted);
    let claims = match verifier.verify_now(&greeted.token) {
        Ok(c) => c,
        Err(e) => {
            Metrics::inc(&metrics.auth_failures);
            let why = "the token was refused";
            quic::refuse(
                &connection,
                &mut greeted.writer,
                ErrorCode::UNAUTHENTICATED,
                why,
            )
            .await;
            return Err(format!("token refused: {e}"));
        }
    };
    Ok(Greeted {
        connection,
        device: greeted.device,
        claims,
        reader: greeted.reader,
        writer: greeted.writer,
        counted,
        protocol: greeted.protocol,
    })
}

/// The connection's writer: takes every frame already queued at once and writes them as one
/// buffer, a wake-up and a stream write per batch instead of per frame, which is what lets one
/// core keep up with fan-out to many connections. Ephemeral frames go as datagrams when they
/// fit. Returns when the queue closes, the hub orders a close, or the stream fails.
async fn write_frames(
    connection: quinn::Connection,
    mut writer: FrameWriter,
    mut out_rx: mpsc::Receiver<Outbound>,
    metrics: &Metrics,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH_FRAMES);
    let mut buf: Vec<u8> = Vec::new();
    while out_rx.recv_many(&mut batch, WRITE_BATCH_FRAMES).await > 0 {
        for out in batch.drain(..) {
            match out {
                Outbound::Frame(frame) => {
                    Metrics::add(&metrics.bytes_out, frame.len() as u64);
                    // The hub's batches are this connection's alone: the first one in
                    // becomes the buffer rather than being copied into it.
                    if buf.is_empty() {
                        buf = Arc::try_unwrap(frame).unwrap_or_else(|shared| shared.to_vec());
                    } else {
                        buf.extend_from_slice(&frame);
                    }
                }
                Outbound::Ephemeral(frame) => {
                    Metrics::add(&metrics.bytes_out, frame.len() as u64);
                    match send_ephemeral(&connection, &frame) {
                        Ok(true) => {}
                        Ok(false) => buf.extend_from_slice(&frame),
                        Err(()) => return,
                    }
                }
                Outbound::EphemeralBatch { frames, except } => {
                    let (before, after) = (&frames[..except.start], &frames[except.end..]);
                    Metrics::add(&metrics.bytes_out, (before.len() + after.len()) as u64);
                    buf.extend_from_slice(before);
                    buf.extend_from_slice(after);
                }
                Outbound::Chunks(mut chunks) => {
                    let len: usize = chunks.iter().map(|c| c.len()).sum();
                    Metrics::add(&metrics.bytes_out, len as u64);
                    // Written as they are (a shared snapshot is not copied), after what this
                    // connection queued before them.
                    if !buf.is_empty()
                        && writer.send_frames(std::mem::take(&mut buf)).await.is_err()
                    {
                        return;
                    }
                    if writer.send_chunks(&mut chunks).await.is_err() {
                        return;
                    }
                }
                Outbound::Close { code, reason } => {
                    if !buf.is_empty() {
                        let _ = writer.send_frames(std::mem::take(&mut buf)).await;
                    }
                    quic::refuse(&connection, &mut writer, code, &reason).await;
                    return;
                }
            }
            if buf.len() >= WRITE_BATCH_BYTES
                && writer.send_frames(std::mem::take(&mut buf)).await.is_err()
            {
                return;
            }
        }
        if !buf.is_empty() && writer.send_frames(std::mem::take(&mut buf)).await.is_err() {
            return;
        }
    }
}

/// The connection's reader: one loop reads the stream and the datagrams, so both share the
/// rate limit, and forwards each message to the hub (document messages checked first). Both
/// reads are cancel-safe, so losing the `select!` race loses nothing. Returns why it stopped.
async fn read_frames(
    conn: ConnId,
    connection: &quinn::Connection,
    mut reader: FrameReader,
    mut counted: u64,
    limits: &ServerLimits,
    hub: &mpsc::Sender<HubEvent>,
    metrics: &Metrics,
) -> String {
    let mut rate = RateLimit::new(limits.burst, limits.rate);
    let mut bytes = ByteRate::new(limits.bytes_per_sec.saturating_mul(4), limits.bytes_per_sec);
    loop {
        let (msg, via) = tokio::select! {
            r = reader.recv() => match r {
                Ok(Some(msg)) => {
                    let total = reader.frame_bytes();
                    Metrics::add(&metrics.bytes_in, total - counted);
                    counted = total;
                    (msg, "stream")
                }
                Ok(None) => return "stream finished".to_string(),
                Err(e) if e.connection_error().is_some() => return format!("connection lost: {e}"),
                Err(e) => {
                    Metrics::inc(&metrics.protocol_errors);
                    tracing::info!(conn = conn.0, error = %e, "closing a connection that sent an invalid frame");
                    connection.close(close_code(ErrorCode::MALFORMED), b"invalid frame");
                    return format!("invalid frame: {e}");
                }
            },
            d = connection.read_datagram() => match d {
                Ok(datagram) => {
                    Metrics::add(&metrics.bytes_in, datagram.len() as u64);
                    match decode_datagram(&datagram, limits.max_frame) {
                        Ok(msg) => (msg, "datagram"),
                        Err(e) => {
                            Metrics::inc(&metrics.protocol_errors);
                            tracing::info!(conn = conn.0, error = %e, "closing a connection that sent an invalid datagram");
                            connection.close(close_code(ErrorCode::MALFORMED), b"invalid datagram");
                            return format!("invalid datagram: {e}");
                        }
                    }
                }
                Err(e) => return format!("connection lost: {e}"),
            },
        };
        if !rate.allow(std::time::Instant::now()) {
            Metrics::inc(&metrics.protocol_errors);
            tracing::info!(
                conn = conn.0,
                via,
                "closing a connection over its message rate"
            );
            connection.close(close_code(ErrorCode::RATE_LIMITED), b"too many messages");
            return "over its message rate".to_string();
        }
        if let Some(wait) = bytes.take(std::time::Instant::now(), payload_len(&msg)) {
            Metrics::inc(&metrics.throttled);
            tokio::time::sleep(wait).await;
        }
        let doc = msg.doc();
        let event = match crate::inbound::to_hub(conn, msg, &limits.check).await {
            Ok(event) => event,
            Err(e) => {
                Metrics::inc(&metrics.protocol_errors);
                tracing::info!(conn = conn.0, ?doc, error = %e, "closing a connection that sent an invalid message");
                connection.close(close_code(ErrorCode::MALFORMED), b"invalid message");
                return format!("invalid message: {e}");
            }
        };
        if hub.send(event).await.is_err() {
            return "hub gone".to_string();
        }
    }
}

/// Sends an ephemeral frame as one datagram. `Ok(false)`: it does not fit (or the peer takes
/// no datagrams), send it on the stream instead; `Err`: the connection is gone.
fn send_ephemeral(connection: &quinn::Connection, frame: &[u8]) -> Result<bool, ()> {
    if connection
        .max_datagram_size()
        .is_none_or(|max| frame.len() > max)
    {
        return Ok(false);
    }
    match connection.send_datagram(frame.to_vec().into()) {
        Ok(()) => Ok(true),
        Err(quinn::SendDatagramError::ConnectionLost(_)) => Err(()),
        // Too large after a path change, or datagrams switched off: the stream still works.
        Err(_) => Ok(false),
    }
}

/// Why a datagram from a device was refused.
#[derive(Debug, thiserror::Error)]
enum DatagramError {
    #[error(transparent)]
    Frame(#[from] wire::FrameError),
    #[error("a datagram must hold exactly one whole frame")]
    NotOneFrame,
    #[error("only ephemeral and presence messages may travel as datagrams")]
    NotEphemeral,
}

/// Decodes a device's datagram: exactly one frame holding an `Ephemeral` or `Presence`.
fn decode_datagram(datagram: &[u8], max_frame: usize) -> Result<Message, DatagramError> {
    match wire::decode_frame(datagram, max_frame)? {
        Some((msg, used)) if used == datagram.len() => match msg {
            Message::Ephemeral { .. } | Message::Presence { .. } => Ok(msg),
            _ => Err(DatagramError::NotEphemeral),
        },
        _ => Err(DatagramError::NotOneFrame),
    }
}

/// Binds a QUIC endpoint for the relay on `addr` with its certificate, requiring device
/// certificates from clients.
pub fn bind(addr: SocketAddr, identity: &crate::TlsIdentity) -> Result<quinn::Endpoint, String> {
    let config = quic::server_config(
        identity.cert_chain.clone(),
        identity.key.clone_key(),
        quic::ClientAuth::RequireDeviceCert,
    )
    .map_err(|e| format!("TLS configuration: {e}"))?;
    let socket = quic::bind_udp(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    if let Some(granted) = quic::recv_buffer(&socket).filter(|&g| g < quic::UDP_BUFFER) {
        tracing::warn!(
            granted,
            wanted = quic::UDP_BUFFER,
            "the kernel capped the UDP receive buffer: a busy relay may drop packets; \
             raise net.core.rmem_max (and wmem_max)"
        );
    }
    quic::endpoint_on(socket, Some(config)).map_err(|e| format!("cannot listen on {addr}: {e}"))
}
