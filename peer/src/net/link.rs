//! A link's reconnect loop: dial, serve the connection, wait out a jittered backoff, again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::candidates::{self, Next, Rotation};
use super::dial::connect_and_run;
use super::target::{Ended, Target};
use super::{LinkHandle, PeerConfig, RelayConfig, BACKOFF_START};
use crate::device::cmd::{Cmd, DriverHandle};
use crate::status::LinkState;

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
    let mut rotation = Rotation::default();
    loop {
        set_state(&device, link, LinkState::Connecting, None, false).await;
        let mut tried = 1;
        let ended = tokio::select! {
            e = attempt(&device, link, &target, &mut rotation, &mut tried, &cancel, token_rx.clone()) => e,
            _ = cancel.cancelled() => Ended { error: None, refused: false, fatal: true },
        };
        if let Some(e) = &ended.error {
            tracing::info!(link, error = %e, "link down");
        }
        let was_online = ended.error.is_none() && !cancel.is_cancelled();
        let next = if cancel.is_cancelled() || ended.fatal {
            Next::GiveUp
        } else {
            rotation.ended(tried, was_online, target.reconnect())
        };
        if next != Next::Now {
            // Moving straight on to another candidate is not going offline: `sync --once`
            // reads an offline link with an error as the end of its attempts.
            set_state(
                &device,
                link,
                LinkState::Offline,
                ended.error.clone(),
                ended.refused,
            )
            .await;
        }
        if cancel.is_cancelled() {
            // Stopped by its owner: the link leaves the status.
            let _ = device.cmd(Cmd::DropLink(link)).await;
            break;
        }
        if was_online {
            backoff.reset();
        }
        match next {
            Next::GiveUp => break,
            Next::Now => continue,
            Next::BackOff => {}
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

/// One attempt: resolves the target's addresses (`tried` is set to how many there are) and
/// dials the one `rotation` picks.
async fn attempt(
    device: &DriverHandle,
    link: u64,
    target: &Target,
    rotation: &mut Rotation,
    tried: &mut usize,
    cancel: &CancellationToken,
    token_rx: watch::Receiver<Option<String>>,
) -> Ended {
    let resolved = match target {
        Target::Relay(c) => candidates::resolve(&c.addrs()).await,
        Target::Peer(c) => candidates::resolve(std::slice::from_ref(&c.addr)).await,
    };
    let all = match resolved {
        Ok(all) => all,
        Err(error) => {
            return Ended {
                error: Some(error),
                refused: false,
                fatal: false,
            }
        }
    };
    *tried = all.len();
    let candidate = &all[rotation.pick(all.len())];
    let others = all.len() > 1;
    connect_and_run(device, link, target, candidate, others, cancel, token_rx).await
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
}
