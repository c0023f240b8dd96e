//! The signals that stop `weft-relay serve`.

use anyhow::Context;

/// The SIGTERM and SIGINT (Ctrl-C) handlers. Both are installed when this is built, unlike
/// `tokio::signal::ctrl_c()`, which installs its handler only when first polled.
pub(crate) struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers (inside the runtime).
    pub(crate) fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(ShutdownSignals {
                term: signal(SignalKind::terminate())
                    .context("cannot install the SIGTERM handler")?,
                int: signal(SignalKind::interrupt())
                    .context("cannot install the SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    /// Resolves on the first SIGTERM or SIGINT since installation (one that arrived earlier
    /// resolves it at once). Cancel-safe: dropping the future loses no signal.
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
