//! Syncing: a relay link (tokens from the app), peer links, and what a mobile app does when it
//! goes to the background and comes back (`pause`, `resume`, `network_changed`).
//!
//! Pausing stops every link (their connections close; every write was already durable, and
//! the sync state with each relay or peer is saved as it advances), and keeps their settings.
//! Resuming starts them again: each document's saved sync state makes the first exchange send
//! only what changed meanwhile, not the whole document.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use weft_peer::{DeviceId, LinkHandle};

use crate::links::{stop_all, Links, PeerTarget, RelayTarget, TokenProvider};

use crate::device::WeftDevice;
use crate::runtime::on_runtime;
use crate::types::SyncStatus;
use crate::WeftError;

/// `addr` as a relay address: `host:port`, the port a number.
fn check_relay_addr(field: &str, addr: &str) -> Result<(), WeftError> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(WeftError::invalid(
            field,
            format!("{addr:?} is not host:port"),
        ));
    };
    if host.is_empty() {
        return Err(WeftError::invalid(field, format!("{addr:?} has no host")));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(WeftError::invalid(
            field,
            format!("{addr:?} has no valid port"),
        )),
    }
}

fn parse_cert(pem: &str) -> Result<Vec<CertificateDer<'static>>, WeftError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err(WeftError::invalid(
            "certificate",
            "no PEM certificate in it",
        )),
        Err(e) => Err(WeftError::invalid("certificate", e)),
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl WeftDevice {
    /// Syncs every document with the relay at `addr` (`host:port`), reconnecting with backoff
    /// until stopped, asking `tokens` for a token at every connection. `cert_pem` pins the
    /// relay's certificate (PEM); without it the system's roots are trusted. `alternates` are
    /// the other relays of the same cluster (`host:port` each): the link moves to the next
    /// when it cannot reach one, and resumes there without a full resync. Replaces a relay
    /// link started before. While paused, it starts at `resume`.
    #[uniffi::method(default(alternates = []))]
    pub async fn start_relay_sync(
        &self,
        addr: String,
        cert_pem: Option<String>,
        tokens: Box<dyn TokenProvider>,
        alternates: Vec<String>,
    ) -> Result<(), WeftError> {
        check_relay_addr("addr", &addr)?;
        for a in &alternates {
            check_relay_addr("alternates", a)?;
        }
        let cert = cert_pem.as_deref().map(parse_cert).transpose()?;
        let target = Arc::new(RelayTarget {
            addr,
            alternates,
            cert,
            tokens: Arc::from(tokens),
        });
        let (old, paused) = {
            let mut links = self.lock_links();
            let old = links.relay.take().and_then(|(_, h)| h);
            links.relay = Some((target.clone(), None));
            (old, links.paused)
        };
        let device = self.device.clone();
        let handle = on_runtime(async move {
            stop_all(old.into_iter().collect()).await;
            if paused {
                return Ok(None);
            }
            Ok(Some(device.connect_relay(target.config()).await?))
        })
        .await?;
        self.store_relay_handle(handle);
        Ok(())
    }

    /// Stops syncing with the relay (and forgets its settings).
    pub async fn stop_relay_sync(&self) -> Result<(), WeftError> {
        let old = self.lock_links().relay.take().and_then(|(_, h)| h);
        on_runtime(async move {
            stop_all(old.into_iter().collect()).await;
            Ok(())
        })
        .await
    }

    /// Syncs every document directly with the device `peer_device_id` at `addr`, reconnecting
    /// until stopped. The other device must allow this one (`listen_for_peers`).
    pub async fn start_peer_sync(
        &self,
        addr: String,
        peer_device_id: String,
    ) -> Result<(), WeftError> {
        let peer: DeviceId = peer_device_id
            .parse()
            .map_err(|_| WeftError::InvalidDeviceId {
                id: peer_device_id.clone(),
            })?;
        let target = Arc::new(PeerTarget { addr, peer });
        let paused = {
            let mut links = self.lock_links();
            links.peers.push((target.clone(), None));
            links.paused
        };
        if paused {
            return Ok(());
        }
        let device = self.device.clone();
        let t = target.clone();
        let handle = on_runtime(async move { Ok(device.connect_peer(t.config()).await?) }).await?;
        let mut links = self.lock_links();
        match links
            .peers
            .iter_mut()
            .find(|(p, _)| Arc::ptr_eq(p, &target))
        {
            Some((_, h)) => *h = Some(handle),
            None => drop(handle),
        }
        Ok(())
    }

    /// Stops syncing with the peer at `addr`.
    pub async fn stop_peer_sync(&self, addr: String) -> Result<(), WeftError> {
        let old: Vec<LinkHandle> = {
            let mut links = self.lock_links();
            let (gone, kept) = std::mem::take(&mut links.peers)
                .into_iter()
                .partition(|(p, _)| p.addr == addr);
            links.peers = kept;
            gone.into_iter().filter_map(|(_, h)| h).collect()
        };
        on_runtime(async move {
            stop_all(old).await;
            Ok(())
        })
        .await
    }

    /// Accepts the devices `allow` (device ids) on `addr` (`ip:port`, port 0 for any) for
    /// direct sync; returns the bound address. Runs until the device closes (not paused).
    pub async fn listen_for_peers(
        &self,
        addr: String,
        allow: Vec<String>,
    ) -> Result<String, WeftError> {
        let sock: std::net::SocketAddr = addr.parse().map_err(|e| WeftError::invalid("addr", e))?;
        let allow = allow
            .iter()
            .map(|d| {
                d.parse()
                    .map_err(|_| WeftError::InvalidDeviceId { id: d.clone() })
            })
            .collect::<Result<Vec<DeviceId>, _>>()?;
        let device = self.device.clone();
        on_runtime(async move { Ok(device.listen_p2p(sock, allow).await?.to_string()) }).await
    }

    /// The app went to the background: every relay and peer link stops and its connection
    /// closes, and every document leaves memory (the footprint of a paused device is bounded
    /// by the store's page cache). Every write was already durable; the links' settings are
    /// kept for `resume`. Reads and writes keep working (offline; a document read loads
    /// again). Peers this device accepts (`listen_for_peers`) are not stopped.
    pub async fn pause(&self) -> Result<(), WeftError> {
        let handles = {
            let mut links = self.lock_links();
            links.paused = true;
            self.paused.store(true, Ordering::Relaxed);
            links.take_handles()
        };
        let device = self.device.clone();
        on_runtime(async move {
            stop_all(handles).await;
            // With no connection left, every document can leave memory (each stays in the
            // store; a chat's tail is cached so it opens without a load).
            let evicted = device.trim_memory().await?;
            tracing::debug!(evicted, "paused: documents left memory");
            Ok(())
        })
        .await
    }

    /// The app came back: the links stopped by `pause` start again. Each document resumes
    /// from the sync state saved with each relay or peer, so only what changed meanwhile is
    /// exchanged.
    pub async fn resume(&self) -> Result<(), WeftError> {
        let (relay, peers) = {
            let mut links = self.lock_links();
            if !links.paused {
                return Ok(());
            }
            links.paused = false;
            self.paused.store(false, Ordering::Relaxed);
            let relay = links.relay.as_ref().map(|(t, _)| t.clone());
            let peers: Vec<_> = links.peers.iter().map(|(t, _)| t.clone()).collect();
            (relay, peers)
        };
        let device = self.device.clone();
        let (relay_handle, peer_handles) = on_runtime(async move {
            let r = match relay {
                Some(t) => Some(device.connect_relay(t.config()).await?),
                None => None,
            };
            let mut p = Vec::new();
            for t in peers {
                p.push((t.clone(), device.connect_peer(t.config()).await?));
            }
            Ok((r, p))
        })
        .await?;
        self.store_relay_handle(relay_handle);
        let mut links = self.lock_links();
        for (t, h) in peer_handles {
            if let Some((_, slot)) = links.peers.iter_mut().find(|(p, _)| Arc::ptr_eq(p, &t)) {
                *slot = Some(h);
            }
        }
        Ok(())
    }

    /// The network changed (came back, or moved to another interface): every link waiting
    /// out its backoff tries again now.
    pub fn network_changed(&self) {
        for h in self.lock_links().handles() {
            h.retry_now();
        }
    }

    /// The sync status now (the listener is told each change).
    pub fn status(&self) -> SyncStatus {
        let paused = self.paused.load(Ordering::Relaxed);
        let status = self.device.status().borrow().clone();
        SyncStatus::from_status(&status, paused)
    }

    /// Stops every link and the listener, writes what is pending and closes the store. Every
    /// later call fails with [`WeftError::Closed`].
    pub async fn shutdown(&self) -> Result<(), WeftError> {
        let handles = self.lock_links().take_handles();
        let listener = self.take_listener();
        let device = self.device.clone();
        on_runtime(async move {
            stop_all(handles).await;
            drop(listener);
            device.close().await;
            Ok(())
        })
        .await
    }
}

impl WeftDevice {
    pub(crate) fn lock_links(&self) -> std::sync::MutexGuard<'_, Links> {
        // A panic while holding the lock left plain data behind; it is still usable.
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn store_relay_handle(&self, handle: Option<LinkHandle>) {
        let Some(handle) = handle else { return };
        let mut links = self.lock_links();
        let paused = links.paused;
        match links.relay.as_mut() {
            Some((_, slot)) if slot.is_none() && !paused => *slot = Some(handle),
            // Replaced, stopped or paused meanwhile: this link goes (dropping stops it).
            _ => drop(handle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_addresses_are_host_and_port() {
        for ok in ["127.0.0.1:4433", "relay.example.com:443", "[::1]:4433"] {
            assert!(check_relay_addr("alternates", ok).is_ok(), "{ok}");
        }
        for bad in [
            "relay.example.com",
            ":443",
            "relay:",
            "relay:http",
            "relay:0",
            "",
        ] {
            assert!(
                matches!(
                    check_relay_addr("alternates", bad),
                    Err(WeftError::InvalidArgument { ref field, .. }) if field == "alternates"
                ),
                "{bad}"
            );
        }
    }
}
