//! The `weft-relay` binary over real QUIC for the QUIC tests: the relay with its data directory
//! and a light device that keeps the relay's refusals.

use std::net::SocketAddr;
use std::time::Duration;

use weft_core::wire::{ErrorCode, Message};
use weft_core::DocId;

use super::{open_subscribed, Link, RelayProcess, RELAY};

/// The relay binary on loopback, with `--http off` unless asked for.
pub struct Relay {
    pub process: RelayProcess,
    pub addr: SocketAddr,
}

crate::extends!(Relay, process: RelayProcess);

impl Relay {
    pub fn start() -> Relay {
        Self::start_in(tempfile::tempdir().unwrap())
    }

    pub fn start_in(dir: tempfile::TempDir) -> Relay {
        Self::start_with(dir, &[])
    }

    /// Starts the relay with `extra` flags (`--http off` unless `extra` names `--http`) and
    /// waits for its ready line.
    pub fn start_with(dir: tempfile::TempDir, extra: &[&str]) -> Relay {
        let http_off: &[&str] = if extra.contains(&"--http") {
            &[]
        } else {
            &["--http", "off"]
        };
        let process = RelayProcess::start(dir, &[http_off, extra].concat(), &[]);
        let addr = process.addr("quic=");
        Relay { process, addr }
    }

    pub fn kill(self) -> tempfile::TempDir {
        self.process.kill()
    }
}

pub struct Device {
    pub link: Link,
    pub errors: Vec<(ErrorCode, Option<DocId>)>,
}

crate::extends!(Device, link: Link);

impl Device {
    pub async fn connect(
        relay: &Relay,
        token: String,
    ) -> Result<Device, Vec<(ErrorCode, Option<DocId>)>> {
        let link = Link::connect(relay.addr, relay.cert(), token, "test").await;
        let mut d = Device {
            link,
            errors: Vec::new(),
        };
        match d.next().await {
            Some(Message::Welcome { .. }) => {
                d.engine.add_conn(RELAY);
                Ok(d)
            }
            _ => Err(d.errors),
        }
    }

    /// The next message from the relay. While waiting, the engine's timers run as a real
    /// driver would run them (a stalled sync round is retried).
    pub async fn next(&mut self) -> Option<Message> {
        match self.link.recv(Duration::from_secs(20)).await {
            Ok(Some(Message::Error { code, doc, .. })) => {
                self.errors.push((code, doc));
                Some(Message::Error {
                    code,
                    doc,
                    message: String::new(),
                })
            }
            Ok(Some(m)) => Some(m),
            _ => None,
        }
    }

    /// The next datagram from the relay.
    pub async fn datagram(&self) -> Message {
        self.link.datagram(Duration::from_secs(20)).await
    }

    pub async fn until(&mut self, mut done: impl FnMut(&mut Device) -> bool) -> bool {
        self.flush().await;
        for _ in 0..10_000 {
            if done(self) {
                return true;
            }
            let Some(msg) = self.next().await else {
                return done(self);
            };
            if std::env::var_os("WEFT_TEST_LOG").is_some() {
                eprintln!("device got {msg:?}");
            }
            match msg {
                Message::Subscribed { doc, role } => {
                    open_subscribed(&mut self.engine, doc, role);
                }
                m @ (Message::Sync { .. } | Message::Changes { .. } | Message::Ack { .. }) => {
                    self.engine.handle(RELAY, m).unwrap();
                }
                _ => {}
            }
            self.flush().await;
        }
        false
    }
}
