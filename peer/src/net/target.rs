//! What a link dials ([`Target`]) and how one connection to it ended ([`Ended`]), shared by
//! the link's loop, dialing and the established connection.

use std::time::Duration;

use weft_core::quic::TransportError;

use super::{PeerConfig, RelayConfig};

/// How one connection ended.
pub(super) struct Ended {
    pub(super) error: Option<String>,
    pub(super) refused: bool,
    /// The link should not retry (the token was refused and cannot change, ...).
    pub(super) fatal: bool,
}

/// What a link dials: a relay or a peer device, with its settings.
pub(super) enum Target {
    Relay(RelayConfig),
    Peer(PeerConfig),
}

impl Target {
    pub(super) fn reconnect(&self) -> bool {
        match self {
            Target::Relay(c) => c.reconnect,
            Target::Peer(c) => c.reconnect,
        }
    }
    pub(super) fn max_backoff(&self) -> Duration {
        match self {
            Target::Relay(c) => c.max_backoff,
            Target::Peer(c) => c.max_backoff,
        }
    }
}

/// How a transport error ended a connection.
pub(super) fn classify(e: &TransportError) -> Ended {
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
