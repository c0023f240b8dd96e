//! The WebSocket side of the relay: unmodified `@automerge/automerge-repo` 2.x clients
//! (`@automerge/automerge-repo-network-websocket`) sync the same documents as QUIC devices.
//!
//! Each socket is one hub connection, like a QUIC connection: the socket's task translates
//! automerge-repo's CBOR messages to weft's [`Message`](weft_core::wire::Message)s and back, so
//! the hub's authorization, fan-out, limits and metrics apply unchanged.
//!
//! # Message flow
//!
//! ```text
//! browser (automerge-repo)                  relay (socket task)              hub
//!   GET /?token=JWT  (upgrade) ----------->  verify token; 401 if refused
//!   join{senderId, versions ["1"]} ------->  bind peer id ------------------> Open + SyncOnly
//!   <-------- peer{selected "1", storageId}
//!   request|sync{documentId, data} ------->  first time: Subscribe --------> authorize
//!                                            (queued until the answer)  <--- Subscribed | Error
//!                                            Sync{doc, data} ---------------> engine
//!   <---------------------- sync{data}      <------------------------------- Sync{doc, data}
//!   <------------ doc-unavailable{documentId} <----- Error{FORBIDDEN|DELETED, doc}
//!   ephemeral{data} <----------------------> Ephemeral{doc, data} <---------> other subscribers
//!   remote-subscription-change{add: [storageId]}  (heads read from the relay's sync messages)
//!   <---- remote-heads-changed{documentId, newHeads: {storageId: {heads, timestamp}}}
//!   remote-heads-changed, doc-unavailable, leave: checked, ignored
//! ```
//!
//! The hub keeps WebSocket peers in sync mode (`Engine::set_sync_only`): automerge-repo speaks
//! only Automerge's sync protocol, so new changes reach it as sync messages, never as weft's
//! `Changes`/`Ack` fast path. QUIC devices' fast path is unaffected.
//!
//! # Identity
//!
//! The token comes as `?token=` in the URL (what a browser can send, kept for stock clients), or
//! as a one-time `?ticket=` exchanged for it over HTTP (`tickets.rs`), and is checked before the
//! upgrade; neither is ever logged. A socket's peer id is bound at `join`: every later message must
//! name it as `senderId`. The hub needs a [`DeviceId`](weft_core::DeviceId) per connection (it
//! keys presence and saved sync states by it); a WebSocket peer's is
//! `blake3::derive_key("weft-relay websocket device v1", len(user) ‖ user ‖ peer id)`: stable
//! across reconnects of one client, and different for the same peer id under another user,
//! so a second `join` with the same peer id from another user shares nothing with the first.
//!
//! # Bad input
//!
//! Anything before `join`, a text frame, a frame that is not CBOR or not a valid message, wrong
//! field types, sync data that is not an Automerge sync message, and a frame larger than the
//! maximum close that socket (with a close frame saying why); nothing else is affected.

pub(crate) mod codec; // also read by `crate::fuzz_targets`
mod frames;
mod handshake;
mod heads;
mod session;
mod storage_id;
pub(crate) mod tickets; // also answered by `crate::http`
mod translate;
mod weft;

pub use storage_id::{load_or_create_storage_id, StorageIdError, STORAGE_ID_FILE};
pub(crate) use tickets::TICKET_ID_LEN;
pub use tickets::{TicketError, Tickets, MAX_TICKETS, TICKET_TTL};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use weft_core::engine::ConnId;
use weft_core::AcceptBackoff;

use crate::hub::HubEvent;
use crate::metrics::Metrics;
use crate::Verifier;

/// The automerge-repo WebSocket protocol version the relay speaks.
const PROTOCOL_VERSION: &str = "1";

/// WebSocket connection ids start here, far above the QUIC acceptor's (which count up from 1),
/// so both kinds share the hub's id space without coordination.
const FIRST_CONN_ID: u64 = 1 << 62;

/// What every socket task shares.
struct Shared {
    verifier: Verifier,
    limits: WsLimits,
    metrics: Arc<Metrics>,
    /// The relay's automerge-repo peer id.
    relay_peer: Arc<str>,
    /// The relay's automerge-repo storage id (stable across restarts).
    storage_id: String,
    /// One-time tickets, issued over HTTP and redeemed at the upgrade.
    tickets: Arc<Tickets>,
}

/// What the WebSocket endpoint is besides its limits.
#[derive(Clone)]
pub struct WsContext {
    /// The relay's automerge-repo storage id ([`load_or_create_storage_id`]).
    pub storage_id: String,
    /// The tickets `POST /ws-ticket` issues (shared with [`crate::serve_http`]).
    pub tickets: Arc<Tickets>,
}

/// Limits of the WebSocket endpoint.
#[derive(Clone, Debug)]
pub struct WsLimits {
    /// Sockets served at once; more are refused at accept.
    pub max_connections: usize,
    /// Largest WebSocket frame (and message) accepted; a larger one closes the socket.
    pub max_frame: usize,
    /// Frames queued per socket before fan-out drops (and later resyncs).
    pub queue_len: usize,
    /// Time a new socket has to finish the upgrade and send `join`.
    pub join_timeout: Duration,
    /// A socket silent this long is pinged; silent for twice as long, it is closed (a client
    /// gone without a FIN would otherwise hold its socket and subscriptions).
    pub keep_alive: Duration,
    /// Sync messages held per document while its subscription is being authorized.
    pub max_pending_per_doc: usize,
    /// Bytes of sync messages held per socket while subscriptions are being authorized.
    pub max_pending_bytes: usize,
    /// Documents one socket may have open or pending.
    pub max_docs: usize,
    /// Messages a socket may send in a burst.
    pub burst: u32,
    /// Messages per second a socket may send once its burst is spent.
    pub rate: u32,
    /// What a client's changes must fit; the socket's task checks them (keep equal to the
    /// hub's `HubConfig::engine.limits`).
    pub check: weft_core::check::Limits,
    /// Bytes per second a socket may send once its burst (four seconds' worth) is spent;
    /// past it the relay reads more slowly.
    pub bytes_per_sec: u64,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            max_connections: 10_000,
            max_frame: weft_core::wire::DEFAULT_MAX_FRAME,
            queue_len: 1024,
            join_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(15),
            max_pending_per_doc: 256,
            max_pending_bytes: 64 << 20,
            max_docs: 10_000,
            burst: 50_000,
            rate: 10_000,
            check: weft_core::check::Limits::default(),
            bytes_per_sec: 8 << 20,
        }
    }
}

/// Binds the WebSocket listener (plain TCP; terminate TLS in front of the relay for `wss://`).
pub async fn bind_ws(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepts WebSocket clients on `listener` until `shutdown` resolves, then closes every socket
/// and waits for their tasks (each reports `Closed` to the hub). Cancel safety: dropping the
/// future drops (aborts) the socket tasks.
pub async fn ws_accept_loop(
    listener: TcpListener,
    verifier: Verifier,
    limits: WsLimits,
    context: WsContext,
    hub: mpsc::Sender<HubEvent>,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let relay_peer: Arc<str> = Arc::from(relay_peer_id());
    let shared = Arc::new(Shared {
        verifier,
        limits,
        metrics,
        relay_peer,
        storage_id: context.storage_id,
        tickets: context.tickets,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut sockets = JoinSet::new();
    let mut next_conn = FIRST_CONN_ID;
    let mut backoff = AcceptBackoff::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(a) => {
                        backoff.succeeded();
                        a
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving the others, and
                        // wait before the next accept, which would fail the same way at once.
                        let pause = backoff.failed(&e);
                        if pause.log {
                            tracing::warn!(error = %e, wait = ?pause.wait, failures = pause.failures, "accepting a WebSocket connection failed");
                        }
                        tokio::select! {
                            _ = &mut shutdown => break,
                            _ = tokio::time::sleep(pause.wait) => continue,
                        }
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::info!(%remote, "refusing a WebSocket connection: too many open");
                    continue;
                };
                // Nagle's algorithm would add ~40 ms per hop to small sync messages.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::info!(%remote, error = %e, "cannot set TCP_NODELAY; dropping the socket");
                    continue;
                }
                let conn = ConnId(next_conn);
                next_conn += 1;
                let (shared, hub, stop) = (shared.clone(), hub.clone(), stop_rx.clone());
                sockets.spawn(async move {
                    if let Err(reason) = session::serve_socket(stream, conn, &shared, hub, stop).await {
                        tracing::info!(conn = conn.0, %remote, %reason, "WebSocket connection ended");
                    }
                    drop(permit);
                });
            }
            Some(_) = sockets.join_next(), if !sockets.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    while sockets.join_next().await.is_some() {}
}

/// The relay's automerge-repo peer id: fresh per process, so two relays never look like one
/// peer to a client connected to both.
fn relay_peer_id() -> String {
    let bytes: [u8; 8] = rand::random();
    format!("weft-relay-{}", bs58::encode(bytes).into_string())
}
