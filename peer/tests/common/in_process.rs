//! The relay in this process, on the test's runtime: its real QUIC server, hub and redb store
//! in a temporary directory, reading the time from a wall clock the test holds, and telling
//! the test each token refresh it hands its hub.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};
use weft_core::clock::WallClock;
use weft_core::store::{GroupCommit, KvStore, RedbStore};
use weft_core::wire::Message;
use weft_relay::{Claims, HubEvent, JwtSecret, Minter};

/// A running in-process relay; dropping it stops its tasks.
pub struct InProcessRelay {
    pub addr: SocketAddr,
    pub cert: Vec<CertificateDer<'static>>,
    /// One entry per `Token` message a connection handed the hub, in the order handed.
    pub refreshes: mpsc::UnboundedReceiver<()>,
    clock: WallClock,
    secret: JwtSecret,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl InProcessRelay {
    /// Starts a relay on loopback that reads `clock` and allows `leeway_secs` past `exp`.
    pub fn start(clock: WallClock, leeway_secs: u64) -> InProcessRelay {
        InProcessRelay::start_with(clock, leeway_secs, weft_relay::HubConfig::default())
    }

    /// [`InProcessRelay::start`] with the hub set up as `config` says.
    pub fn start_with(
        clock: WallClock,
        leeway_secs: u64,
        config: weft_relay::HubConfig,
    ) -> InProcessRelay {
        let dir = tempfile::tempdir().unwrap();
        let secret = weft_relay::ensure_dev_secret(dir.path()).unwrap();
        let identity = weft_relay::ensure_dev_cert(dir.path()).unwrap();
        let kv: Arc<dyn KvStore> = Arc::new(
            RedbStore::open_with_tables(
                dir.path().join("relay.redb"),
                &weft_relay::TABLES,
                Default::default(),
            )
            .unwrap(),
        );
        let group = Arc::new(GroupCommit::new(kv).unwrap());
        let metrics = Arc::new(weft_relay::Metrics::default());
        let verifier = weft_relay::Verifier::new(&secret)
            .with_leeway(leeway_secs)
            .with_clock(clock.clone());
        let endpoint = weft_relay::bind_quic("127.0.0.1:0".parse().unwrap(), &identity).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let hub = weft_relay::Hub::new(config, group, verifier.clone(), metrics.clone());
        let (hub_tx, hub_rx) = mpsc::channel(1024);
        let (server_tx, server_rx) = mpsc::channel(1024);
        let (refreshed, refreshes) = mpsc::unbounded_channel();
        let (stop, mut stop_rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(hub.run(hub_rx)),
            tokio::spawn(tap_refreshes(server_rx, hub_tx, refreshed)),
            tokio::spawn(weft_relay::accept_loop(
                endpoint,
                verifier,
                weft_relay::ServerLimits::default(),
                server_tx,
                metrics,
                async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                },
            )),
        ];
        InProcessRelay {
            addr,
            cert: identity.cert_chain.clone(),
            refreshes,
            clock,
            secret,
            stop,
            tasks,
            _dir: dir,
        }
    }

    /// A token for `sub` that may create documents, valid for `ttl_secs` from the relay's now.
    pub fn token(&self, sub: &str, ttl_secs: u64) -> String {
        let claims = Claims::new(sub, self.clock.unix_secs(), ttl_secs).with_create(true);
        Minter::new(&self.secret).mint(&claims).unwrap()
    }
}

impl Drop for InProcessRelay {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Forwards the server's events to the hub, reporting each `Token` once it is in the hub's
/// queue: the hub handles a connection's events in order, so anything that connection sends
/// afterwards is handled after the refresh.
async fn tap_refreshes(
    mut from_server: mpsc::Receiver<HubEvent>,
    to_hub: mpsc::Sender<HubEvent>,
    refreshed: mpsc::UnboundedSender<()>,
) {
    while let Some(event) = from_server.recv().await {
        let is_refresh = matches!(
            &event,
            HubEvent::Frame {
                msg: Message::Token { .. },
                ..
            }
        );
        if to_hub.send(event).await.is_err() {
            return;
        }
        if is_refresh {
            let _ = refreshed.send(());
        }
    }
}
