//! The links an app started (a relay, peers) with their settings, kept while paused, and the
//! app's token provider the relay link asks.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use weft_peer::{DeviceId, LinkHandle, PeerConfig, RelayConfig, TokenCallback, TokenSource};

/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why the app has no token to give.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum TokenError {
    /// No token now (signed out, no network to refresh it); the link retries later.
    #[error("no token: {reason}")]
    Unavailable {
        /// Why, for the logs and the link's last error.
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for TokenError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        TokenError::Unavailable {
            reason: format!("the token provider failed: {}", e.reason),
        }
    }
}

/// Gives the relay link a current token: asked at every (re)connection and before the token
/// in use expires. Called on a background thread; answer from a cached token (refresh it on
/// the app's side), do not block on the network.
#[uniffi::export(callback_interface)]
pub trait TokenProvider: Send + Sync {
    /// The current token (a JWT the relay accepts).
    fn token(&self) -> Result<String, TokenError>;
}

pub(crate) struct RelayTarget {
    pub(crate) addr: String,
    pub(crate) alternates: Vec<String>,
    pub(crate) cert: Option<Vec<CertificateDer<'static>>>,
    pub(crate) tokens: Arc<dyn TokenProvider>,
}

impl RelayTarget {
    pub(crate) fn config(&self) -> RelayConfig {
        let tokens = self.tokens.clone();
        RelayConfig {
            addr: self.addr.clone(),
            alternates: self.alternates.clone(),
            token: TokenSource::Callback(TokenCallback::new(move || {
                tokens.token().map_err(|e| e.to_string())
            })),
            pinned_cert: self.cert.clone(),
            docs: Vec::new(),
            reconnect: true,
            max_backoff: MAX_BACKOFF,
        }
    }
}

pub(crate) struct PeerTarget {
    pub(crate) addr: String,
    pub(crate) peer: DeviceId,
}

impl PeerTarget {
    pub(crate) fn config(&self) -> PeerConfig {
        PeerConfig {
            addr: self.addr.clone(),
            peer: self.peer,
            docs: Vec::new(),
            reconnect: true,
            max_backoff: MAX_BACKOFF,
        }
    }
}

/// The links an app started, with their settings (kept while paused).
#[derive(Default)]
pub(crate) struct Links {
    pub(crate) relay: Option<(Arc<RelayTarget>, Option<LinkHandle>)>,
    pub(crate) peers: Vec<(Arc<PeerTarget>, Option<LinkHandle>)>,
    pub(crate) paused: bool,
}

impl Links {
    /// Every running link's handle, taken out (to stop them).
    pub(crate) fn take_handles(&mut self) -> Vec<LinkHandle> {
        let relay = self.relay.iter_mut().filter_map(|(_, h)| h.take());
        let peers = self.peers.iter_mut().filter_map(|(_, h)| h.take());
        relay.chain(peers).collect()
    }

    pub(crate) fn handles(&self) -> impl Iterator<Item = &LinkHandle> {
        let relay = self.relay.iter().filter_map(|(_, h)| h.as_ref());
        relay.chain(self.peers.iter().filter_map(|(_, h)| h.as_ref()))
    }
}

pub(crate) async fn stop_all(handles: Vec<LinkHandle>) {
    for h in handles {
        h.stop().await;
    }
}
