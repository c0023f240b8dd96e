//! QUIC links: a relay or a peer device, dialed and redialed with backoff, and the peer-to-peer
//! listener.
//!
//! A link is a task that owns its reconnect loop. Each connection it makes has a writer task
//! (fed by the driver over a bounded channel, so the driver never awaits the network) and is
//! read by the link task itself, which hands every frame to the driver. Ephemeral messages go
//! as datagrams when they fit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;
use weft_core::quic::{self, ClientAuth, FrameReader, FrameWriter, ServerTrust, TransportError};
use weft_core::wire::{self, ErrorCode, Message, PROTOCOL_VERSION};
use weft_core::{DeviceId, DocId};

use crate::device::cmd::{Cmd, ConnKind, DriverHandle, Outgoing, Registration};
use crate::status::LinkState;
use crate::DeviceError;

/// Frames queued to one connection's writer at most.
const OUT_QUEUE: usize = 4096;
/// How long dialing and the hello exchange may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry delay.
const BACKOFF_START: Duration = Duration::from_millis(200);

/// Where the token for a relay comes from.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// A fixed token.
    Static(String),
    /// A file, re-read on every reconnect and before the token expires.
    File(PathBuf),
}

impl TokenSource {
    /// The current token.
    pub fn read(&self) -> Result<String, DeviceError> {
        match self {
            TokenSource::Static(t) => Ok(t.trim().to_owned()),
            TokenSource::File(p) => std::fs::read_to_string(p)
                .map(|t| t.trim().to_owned())
                .map_err(|e| {
                    DeviceError::Connection(format!(
                        "cannot read the token file {}: {e}",
                        p.display()
                    ))
                }),
        }
    }
}

/// How to reach a relay.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// `host:port`.
    pub addr: String,
    /// The token.
    pub token: TokenSource,
    /// The relay's certificate to pin; `None` trusts the system's roots.
    pub pinned_cert: Option<Vec<CertificateDer<'static>>>,
    /// Documents to ask for besides the local ones and those the relay lists.
    pub docs: Vec<DocId>,
    /// Reconnect after a failure or a lost connection (else the link ends).
    pub reconnect: bool,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

/// How to reach a peer device.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// `host:port`.
    pub addr: String,
    /// The device expected to answer (its key is pinned).
    pub peer: DeviceId,
    /// Documents to ask for besides the local ones and those the peer lists.
    pub docs: Vec<DocId>,
    /// Reconnect after a failure or a lost connection.
    pub reconnect: bool,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

/// A running link. Dropping the handle leaves the link running until the device closes;
/// [`LinkHandle::stop`] ends it.
#[derive(Debug)]
pub struct LinkHandle {
    id: u64,
    cancel: CancellationToken,
    retry: Arc<Notify>,
    token: watch::Sender<Option<String>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl LinkHandle {
    /// The link's id in [`crate::Status::links`].
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Retry at once instead of waiting out the backoff (the network came back).
    pub fn retry_now(&self) {
        self.retry.notify_one();
    }

    /// Hands the relay a fresh token: sent at once on the live connection (before the old one
    /// expires, the connection stays open; grants it takes away end at once), and used instead
    /// of the configured source for every later reconnection.
    pub fn set_token(&self, token: String) {
        self.token.send_replace(Some(token));
    }

    /// Whether the link has ended (it does not reconnect, and its connection is gone).
    pub fn is_finished(&self) -> bool {
        self.done.as_ref().is_none_or(|d| d.is_finished())
    }

    /// Ends the link and waits for it.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(d) = self.done.take() {
            let _ = d.await;
        }
    }
}

impl Drop for LinkHandle {
    fn drop(&mut self) {
        // A dropped handle stops its link: a CLI command or a handed-off request that ends
        // takes its connection with it.
        self.cancel.cancel();
    }
}

/// Exponential backoff with full jitter, capped.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Backoff {
            next: BACKOFF_START,
            max,
        }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_START;
    }

    fn delay(&mut self) -> Duration {
        let cap = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        let ms = cap.as_millis().max(1) as u64;
        // Half fixed, half random: spreads reconnecting devices without ever retrying at once.
        Duration::from_millis(ms / 2 + rand::random_range(0..=ms / 2))
    }
}

/// How one connection ended.
struct Ended {
    error: Option<String>,
    refused: bool,
    /// The link should not retry (the token was refused and cannot change, ...).
    fatal: bool,
}

enum Target {
    Relay(RelayConfig),
    Peer(PeerConfig),
}

impl Target {
    fn reconnect(&self) -> bool {
        match self {
            Target::Relay(c) => c.reconnect,
            Target::Peer(c) => c.reconnect,
        }
    }
    fn max_backoff(&self) -> Duration {
        match self {
            Target::Relay(c) => c.max_backoff,
            Target::Peer(c) => c.max_backoff,
        }
    }
}

pub(crate) fn spawn_relay_link(device: DriverHandle, link: u64, cfg: RelayConfig) -> LinkHandle {
    spawn_link(device, link, Target::Relay(cfg))
}

pub(crate) fn spawn_peer_link(device: DriverHandle, link: u64, cfg: PeerConfig) -> LinkHandle {
    spawn_link(device, link, Target::Peer(cfg))
}

fn spawn_link(device: DriverHandle, link: u64, target: Target) -> LinkHandle {
    let cancel = device.cancel_token().child_token();
    let retry = Arc::new(Notify::new());
    let (token, token_rx) = watch::channel(None);
    let task = tokio::spawn(run_link(
        device.clone(),
        link,
        target,
        cancel.clone(),
        retry.clone(),
        token_rx,
    ));
    LinkHandle {
        id: link,
        cancel,
        token,
        retry,
        done: Some(task),
    }
}

async fn set_state(
    device: &DriverHandle,
    link: u64,
    state: LinkState,
    error: Option<String>,
    refused: bool,
) {
    let _ = device
        .cmd(Cmd::LinkState {
            link,
            state,
            error,
            refused,
        })
        .await;
}

async fn run_link(
    device: DriverHandle,
    link: u64,
    target: Target,
    cancel: CancellationToken,
    retry: Arc<Notify>,
    token_rx: watch::Receiver<Option<String>>,
) {
    let mut backoff = Backoff::new(target.max_backoff());
    loop {
        set_state(&device, link, LinkState::Connecting, None, false).await;
        let ended = tokio::select! {
            e = connect_and_run(&device, link, &target, &cancel, token_rx.clone()) => e,
            _ = cancel.cancelled() => Ended { error: None, refused: false, fatal: true },
        };
        if let Some(e) = &ended.error {
            tracing::info!(link, error = %e, "link down");
        }
        let was_online = ended.error.is_none() && !cancel.is_cancelled();
        set_state(
            &device,
            link,
            LinkState::Offline,
            ended.error.clone(),
            ended.refused,
        )
        .await;
        if cancel.is_cancelled() {
            // Stopped by its owner: the link leaves the status.
            let _ = device.cmd(Cmd::DropLink(link)).await;
            break;
        }
        if ended.fatal || !target.reconnect() {
            break;
        }
        if was_online {
            backoff.reset();
        }
        let delay = backoff.delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = retry.notified() => backoff.reset(),
            _ = cancel.cancelled() => {
                let _ = device.cmd(Cmd::DropLink(link)).await;
                break;
            }
        }
    }
}

fn unspecified_for(addr: &SocketAddr) -> SocketAddr {
    if addr.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0u8; 4], 0))
    }
}

fn classify(e: &TransportError) -> Ended {
    Ended {
        error: Some(describe(e)),
        refused: e.is_refused(),
        fatal: false,
    }
}

fn describe(e: &TransportError) -> String {
    if e.is_refused() {
        return match e.connection_error() {
            Some(quinn::ConnectionError::TransportError(t)) => {
                format!("refused: the other side's certificate is not the one expected ({t})")
            }
            _ => "refused: the other side does not accept this device's key".to_owned(),
        };
    }
    match e.connection_error() {
        Some(quinn::ConnectionError::TimedOut) => "timed out".to_owned(),
        _ => e.to_string(),
    }
}

/// The JWT's `exp`, read without verifying it (the relay verifies).
fn token_exp(token: &str) -> Option<u64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("exp")?.as_u64()
}

fn unix_secs() -> u64 {
    crate::unix_ms() / 1000
}

/// The longest wait before looking at the token again: a token may say `exp` is u64::MAX
/// seconds away, and an `Instant` that far ahead overflows.
const MAX_REFRESH_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

/// When to look for a fresh token: a minute before `exp`, or halfway there for short tokens,
/// and at most [`MAX_REFRESH_DELAY`] from now.
fn refresh_delay(exp: Option<u64>) -> Duration {
    let Some(exp) = exp else {
        return Duration::from_secs(3600);
    };
    let now = unix_secs();
    let left = exp.saturating_sub(now);
    let early = if left > 120 { left - 60 } else { left / 2 };
    Duration::from_secs(early.max(1)).min(MAX_REFRESH_DELAY)
}

async fn connect_and_run(
    device: &DriverHandle,
    link: u64,
    target: &Target,
    cancel: &CancellationToken,
    token_rx: watch::Receiver<Option<String>>,
) -> Ended {
    let handed = token_rx.borrow().clone();
    let (addr_text, token, trust, server_name, kind, extra) = match target {
        Target::Relay(c) => {
            let token = match handed.map_or_else(|| c.token.read(), Ok) {
                Ok(t) => t,
                Err(e) => {
                    return Ended {
                        error: Some(e.to_string()),
                        refused: false,
                        fatal: false,
                    }
                }
            };
            let trust = match &c.pinned_cert {
                Some(certs) => ServerTrust::PinnedCert(certs.clone()),
                None => ServerTrust::SystemRoots,
            };
            let host = c
                .addr
                .rsplit_once(':')
                .map_or(c.addr.as_str(), |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            (
                c.addr.clone(),
                token,
                trust,
                host,
                ConnKind::Relay,
                c.docs.clone(),
            )
        }
        Target::Peer(c) => (
            c.addr.clone(),
            String::new(),
            ServerTrust::PinnedDevice(c.peer),
            quic::DEVICE_SERVER_NAME.to_owned(),
            ConnKind::Dialer,
            c.docs.clone(),
        ),
    };
    let addr = match tokio::net::lookup_host(&addr_text)
        .await
        .map(|mut a| a.next())
    {
        Ok(Some(a)) => a,
        Ok(None) | Err(_) => {
            return Ended {
                error: Some(format!("cannot resolve {addr_text}")),
                refused: false,
                fatal: false,
            }
        }
    };
    let client_cfg = match quic::client_config(device.key(), trust) {
        Ok(c) => c,
        Err(e) => {
            return Ended {
                error: Some(format!("TLS configuration: {e}")),
                refused: false,
                fatal: true,
            }
        }
    };
    let endpoint = match quic::endpoint(unspecified_for(&addr), None) {
        Ok(e) => e,
        Err(e) => {
            return Ended {
                error: Some(format!("cannot open a UDP socket: {e}")),
                refused: false,
                fatal: false,
            }
        }
    };
    let handshake = async {
        let connecting = endpoint
            .connect_with(client_cfg, addr, &server_name)
            .map_err(TransportError::from)?;
        let conn = connecting.await.map_err(TransportError::from)?;
        let (send, recv) = conn.open_bi().await.map_err(TransportError::from)?;
        let mut writer = FrameWriter::new(send, wire::DEFAULT_MAX_FRAME);
        let mut reader = FrameReader::new(recv, wire::DEFAULT_MAX_FRAME);
        writer
            .send(&Message::Hello {
                protocol: PROTOCOL_VERSION,
                device: device.id(),
                token: token.clone(),
                agent: concat!("weft/", env!("CARGO_PKG_VERSION")).to_owned(),
            })
            .await?;
        let first = reader.recv().await?;
        Ok::<_, TransportError>((conn, writer, reader, first))
    };
    let (conn, mut writer, reader, first) =
        match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Err(_) => {
                return Ended {
                    error: Some(format!("timed out connecting to {addr_text}")),
                    refused: false,
                    fatal: false,
                }
            }
            Ok(Err(e)) => return classify(&e),
            Ok(Ok(x)) => x,
        };
    let user = match first {
        Some(Message::Welcome {
            user,
            max_frame,
            device: other,
            ..
        }) => {
            if let Target::Peer(c) = target {
                if other != c.peer {
                    conn.close(
                        quinn::VarInt::from_u32(u32::from(ErrorCode::DEVICE_NOT_ALLOWED.0)),
                        b"wrong device",
                    );
                    return Ended {
                        error: Some(format!("the peer is not device {}", c.peer)),
                        refused: true,
                        fatal: false,
                    };
                }
            }
            writer.set_max_frame((max_frame as usize).min(wire::DEFAULT_MAX_FRAME));
            if let Target::Relay(_) = target {
                // A device acts for one user: the first token's, unless `init --name` chose.
                if let Err(e) = device.dir().claim_user(&user) {
                    conn.close(
                        quinn::VarInt::from_u32(u32::from(ErrorCode::UNAUTHENTICATED.0)),
                        b"token for another user",
                    );
                    return Ended {
                        error: Some(format!("{e}; the token is for {user}")),
                        refused: true,
                        fatal: true,
                    };
                }
            }
            user
        }
        Some(Message::Error { code, message, .. }) => {
            let refused = matches!(
                code,
                ErrorCode::UNAUTHENTICATED | ErrorCode::FORBIDDEN | ErrorCode::DEVICE_NOT_ALLOWED
            );
            return Ended {
                error: Some(if message.is_empty() {
                    format!("refused with code {}", code.0)
                } else {
                    message
                }),
                refused,
                fatal: false,
            };
        }
        Some(other) => {
            return Ended {
                error: Some(format!("unexpected first message {other:?}")),
                refused: false,
                fatal: false,
            }
        }
        None => {
            return Ended {
                error: Some("the connection closed during the handshake".into()),
                refused: false,
                fatal: false,
            }
        }
    };
    let peer_key = match target {
        Target::Relay(c) => format!("relay:{}", c.addr).into_bytes(),
        Target::Peer(c) => c.peer.as_bytes().to_vec(),
    };
    let token_source = match target {
        Target::Relay(c) => Some(c.token.clone()),
        Target::Peer(_) => None,
    };
    let ended = serve_connection(
        device,
        link,
        kind,
        conn.clone(),
        writer,
        reader,
        Some(user).filter(|u| !u.is_empty()),
        peer_key,
        extra,
        token_source.map(|s| (s, token)),
        token_rx,
        cancel,
    )
    .await;
    endpoint.close(quinn::VarInt::from_u32(0), b"bye");
    ended
}

/// Runs one established connection until it ends: registers it with the driver, starts its
/// writer, reads frames and datagrams into the driver, and refreshes the token.
#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    device: &DriverHandle,
    link: u64,
    kind: ConnKind,
    conn: quinn::Connection,
    writer: FrameWriter,
    mut reader: FrameReader,
    user: Option<String>,
    peer_key: Vec<u8>,
    extra_docs: Vec<DocId>,
    mut token: Option<(TokenSource, String)>,
    mut token_rx: watch::Receiver<Option<String>>,
    cancel: &CancellationToken,
) -> Ended {
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let writer_task = tokio::spawn(write_loop(conn.clone(), writer, out_rx));
    let (tx, rx) = oneshot::channel();
    let reg = Registration {
        link,
        kind,
        out: out_tx.clone(),
        peer_key,
        user,
        extra_docs,
    };
    if device.cmd(Cmd::AddConn(reg, tx)).await.is_err() {
        return Ended {
            error: Some("the device is shut down".into()),
            refused: false,
            fatal: true,
        };
    }
    let Ok(conn_id) = rx.await else {
        return Ended {
            error: Some("the device is shut down".into()),
            refused: false,
            fatal: true,
        };
    };
    let max_frame = reader.max_frame();
    let mut refresh_at =
        tokio::time::Instant::now() + refresh_delay(token.as_ref().and_then(|(_, t)| token_exp(t)));
    let mut handed_open = true;
    let ended = loop {
        tokio::select! {
            r = reader.recv() => match r {
                Ok(Some(msg)) => {
                    if let Message::Error { code, doc: None, message } = &msg {
                        let refused = *code == ErrorCode::UNAUTHENTICATED;
                        break Ended { error: Some(message.clone()), refused, fatal: false };
                    }
                    if device.cmd(Cmd::Inbound(conn_id, msg)).await.is_err() {
                        break Ended { error: None, refused: false, fatal: true };
                    }
                }
                Ok(None) => break Ended { error: Some("the other side closed the connection".into()), refused: false, fatal: false },
                Err(e) => break classify(&e),
            },
            d = quic::recv_datagram(&conn, max_frame) => match d {
                Ok(msg @ (Message::Ephemeral { .. } | Message::Presence { .. })) => {
                    if device.cmd(Cmd::Inbound(conn_id, msg)).await.is_err() {
                        break Ended { error: None, refused: false, fatal: true };
                    }
                }
                Ok(_) => {}
                Err(e) if e.connection_error().is_some() => break classify(&e),
                Err(_) => {}
            },
            r = token_rx.changed(), if token.is_some() && handed_open => {
                let handed = token_rx.borrow_and_update().clone();
                if r.is_err() {
                    // The handle is gone; keep the configured source.
                    handed_open = false;
                } else if let (Some(fresh), Some((_, current))) = (handed, &mut token) {
                    if fresh != *current && !fresh.is_empty() {
                        *current = fresh.clone();
                        let _ = out_tx.send(Outgoing::Msg(Message::Token { token: fresh })).await;
                        refresh_at = tokio::time::Instant::now() + refresh_delay(token_exp(current));
                    }
                }
            }
            _ = tokio::time::sleep_until(refresh_at), if token.is_some() => {
                let handed = token_rx.borrow().clone();
                if let Some((source, current)) = &mut token {
                    if let Ok(fresh) = handed.map_or_else(|| source.read(), Ok) {
                        if fresh != *current && !fresh.is_empty() {
                            *current = fresh.clone();
                            let _ = out_tx.send(Outgoing::Msg(Message::Token { token: fresh })).await;
                        }
                    }
                    let exp = token_exp(current);
                    // An unchanged token near its end is looked at again every few seconds.
                    let delay = refresh_delay(exp).min(Duration::from_secs(10));
                    refresh_at = tokio::time::Instant::now() + delay;
                }
            }
            _ = cancel.cancelled() => break Ended { error: None, refused: false, fatal: true },
        }
    };
    let _ = device.cmd(Cmd::Closed(conn_id)).await;
    let _ = out_tx.try_send(Outgoing::Close);
    drop(out_tx);
    let _ = writer_task.await;
    conn.close(quinn::VarInt::from_u32(0), b"bye");
    ended
}

async fn write_loop(
    conn: quinn::Connection,
    mut writer: FrameWriter,
    mut rx: mpsc::Receiver<Outgoing>,
) {
    while let Some(out) = rx.recv().await {
        match out {
            Outgoing::Msg(msg) => {
                if matches!(msg, Message::Ephemeral { .. } | Message::Presence { .. })
                    && quic::send_datagram(&conn, &msg).is_ok()
                {
                    continue;
                }
                if let Err(e) = writer.send(&msg).await {
                    tracing::debug!(error = %e, "write failed");
                    break;
                }
            }
            Outgoing::Close => {
                let _ = writer.finish();
                break;
            }
        }
    }
}

/// Binds a peer-to-peer listener and starts accepting `allow`ed devices.
pub(crate) fn listen(
    device: DriverHandle,
    addr: SocketAddr,
    allow: Vec<DeviceId>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), DeviceError> {
    let key = device.key();
    let cfg = quic::server_config(
        key.cert_chain(),
        key.private_key(),
        ClientAuth::Allow(allow),
    )
    .map_err(|e| DeviceError::Connection(format!("TLS configuration: {e}")))?;
    let endpoint = quic::endpoint(addr, Some(cfg))
        .map_err(|e| DeviceError::Connection(format!("cannot listen on {addr}: {e}")))?;
    let bound = endpoint
        .local_addr()
        .map_err(|e| DeviceError::Connection(format!("cannot listen on {addr}: {e}")))?;
    let cancel = device.cancel_token().clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let device = device.clone();
                    let cancel = cancel.clone();
                    conns.spawn(async move {
                        if let Err(e) = accept_peer(&device, incoming, &cancel).await {
                            tracing::info!(error = %e, "peer connection refused or failed");
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = cancel.cancelled() => break,
            }
        }
        endpoint.close(quinn::VarInt::from_u32(0), b"bye");
        while conns.join_next().await.is_some() {}
    });
    Ok((bound, task))
}

async fn accept_peer(
    device: &DriverHandle,
    incoming: quinn::Incoming,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let setup = async {
        let conn = incoming.await.map_err(|e| e.to_string())?;
        let greeted = quic::accept_hello(&conn, wire::DEFAULT_MAX_FRAME, CONNECT_TIMEOUT)
            .await
            .map_err(|e| format!("a peer's hello was refused: {e}"))?;
        let (peer, reader, mut writer) = (greeted.device, greeted.reader, greeted.writer);
        writer
            .send(&Message::Welcome {
                protocol: PROTOCOL_VERSION,
                user: String::new(),
                device: device.id(),
                max_frame: wire::DEFAULT_MAX_FRAME as u32,
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((conn, peer, writer, reader))
    };
    let (conn, peer, writer, reader) = tokio::time::timeout(CONNECT_TIMEOUT, setup)
        .await
        .map_err(|_| "a peer's handshake timed out".to_owned())??;
    let link = device
        .new_link(format!("peer {peer}"))
        .await
        .map_err(|e| e.to_string())?;
    let ended = serve_connection(
        device,
        link,
        ConnKind::Listener,
        conn,
        writer,
        reader,
        None,
        peer.as_bytes().to_vec(),
        Vec::new(),
        None,
        watch::channel(None).1,
        cancel,
    )
    .await;
    let _ = device.cmd(Cmd::DropLink(link)).await;
    match ended.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_stays_under_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(10));
        let mut last_cap = Duration::ZERO;
        for _ in 0..20 {
            let d = b.delay();
            assert!(d <= Duration::from_secs(10));
            last_cap = last_cap.max(d);
        }
        assert!(last_cap >= Duration::from_secs(5));
        b.reset();
        assert!(b.delay() <= BACKOFF_START);
    }

    #[test]
    fn token_expiry_is_read_without_verifying() {
        use base64::Engine as _;
        let body =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"a","exp":1234}"#);
        assert_eq!(token_exp(&format!("x.{body}.y")), Some(1234));
        assert_eq!(token_exp("garbage"), None);
        assert!(refresh_delay(Some(unix_secs() + 3600)) >= Duration::from_secs(3000));
        assert!(refresh_delay(Some(unix_secs() + 10)) <= Duration::from_secs(5));
    }

    #[test]
    fn a_token_that_never_expires_is_looked_at_again_within_the_cap() {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!(r#"{{"sub":"a","exp":{}}}"#, u64::MAX));
        let exp = token_exp(&format!("x.{body}.y"));
        assert_eq!(exp, Some(u64::MAX));
        let delay = refresh_delay(exp);
        assert_eq!(delay, MAX_REFRESH_DELAY);
        // What the link does with it: an instant that far ahead must not overflow.
        let _ = tokio::time::Instant::now() + delay;
        let _ = tokio::time::Instant::now() + refresh_delay(exp).min(Duration::from_secs(10));
    }
}
