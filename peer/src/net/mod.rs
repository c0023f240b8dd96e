//! QUIC links: a relay or a peer device, dialed and redialed with backoff, and the peer-to-peer
//! listener.
//!
//! A link is a task that owns its reconnect loop. Each connection it makes has a writer task
//! (fed by the driver over a bounded channel, so the driver never awaits the network) and is
//! read by the link task itself, which hands every frame to the driver. Ephemeral messages go
//! as datagrams when they fit.

mod candidates;
mod connection;
mod dial;
mod link;
mod listen;
mod target;
mod token;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use weft_core::{DeviceId, DocId};

use crate::{Device, DeviceError};

use link::{spawn_peer_link, spawn_relay_link};
use listen::listen;

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
    /// The app, asked on every reconnect and before the token expires (mobile bindings).
    Callback(TokenCallback),
}

/// A function that returns a current token, or why there is none. Called on the link's task:
/// it should answer quickly (from a cached token the app refreshes on its own).
#[derive(Clone)]
pub struct TokenCallback(Arc<dyn Fn() -> Result<String, String> + Send + Sync>);

impl TokenCallback {
    /// Wraps `f`.
    pub fn new(f: impl Fn() -> Result<String, String> + Send + Sync + 'static) -> Self {
        TokenCallback(Arc::new(f))
    }
}

impl std::fmt::Debug for TokenCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCallback")
    }
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
            TokenSource::Callback(f) => (f.0)()
                .map(|t| t.trim().to_owned())
                .map_err(|e| DeviceError::Connection(format!("no token from the app: {e}"))),
        }
    }
}

/// How to reach a relay.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// `host:port` (a name may resolve to several addresses: each is tried in turn).
    pub addr: String,
    /// More `host:port` entries of the same relay cluster: the device uses one address at a
    /// time, moves to the next when it cannot connect or loses its relay, and keeps its sync
    /// states under `addr` so it resumes on another relay without a full resync.
    pub alternates: Vec<String>,
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

impl RelayConfig {
    /// `addr` and the alternates, in order.
    pub fn addrs(&self) -> Vec<String> {
        std::iter::once(self.addr.clone())
            .chain(self.alternates.iter().cloned())
            .collect()
    }
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

/// Starting links: the device's side of `net`.
impl Device {
    /// Keeps a connection to a relay, reconnecting with backoff until the handle is dropped or
    /// stopped.
    pub async fn connect_relay(&self, cfg: RelayConfig) -> Result<LinkHandle, DeviceError> {
        let handle = self.driver_handle();
        let label = match cfg.alternates.len() {
            0 => format!("relay {}", cfg.addr),
            n => format!("relay {} (+{n} more)", cfg.addr),
        };
        let link = handle.new_link(label).await?;
        Ok(spawn_relay_link(handle.clone(), link, cfg))
    }

    /// Keeps a direct connection to a peer device, reconnecting until stopped.
    pub async fn connect_peer(&self, cfg: PeerConfig) -> Result<LinkHandle, DeviceError> {
        let handle = self.driver_handle();
        let link = handle.new_link(format!("peer {}", cfg.addr)).await?;
        Ok(spawn_peer_link(handle.clone(), link, cfg))
    }

    /// Accepts peer devices in `allow` on `addr`; returns the bound address. Runs until the
    /// device closes.
    pub async fn listen_p2p(
        &self,
        addr: std::net::SocketAddr,
        allow: Vec<DeviceId>,
    ) -> Result<std::net::SocketAddr, DeviceError> {
        let (bound, task) = listen(self.driver_handle().clone(), addr, allow)?;
        self.track(task);
        Ok(bound)
    }
}
