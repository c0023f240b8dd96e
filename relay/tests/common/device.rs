//! A light QUIC device's link to the relay: its own key and engine, one QUIC connection with
//! one stream, the `Hello` sent; the engine's output flushed to the stream and its timers run
//! while waiting, as a real driver would.

use std::net::SocketAddr;
use std::time::Duration;

use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{ReadDoc, ScalarValue, ROOT};
use weft_core::engine::{ConnId, Engine, EngineConfig, OpenOptions, Output};
use weft_core::quic::{self, DeviceKey, FrameReader, FrameWriter, ServerTrust};
use weft_core::wire::{self, Message};
use weft_core::{DeviceId, DocId, Role};

/// The connection id the device's engine gives the relay.
pub const RELAY: ConnId = ConnId(0);

/// Opens `doc` on the relay connection as a real device does once the relay confirms a
/// subscription: it sends its changes only where `role` may write.
pub fn open_subscribed(engine: &mut Engine, doc: DocId, role: Role) {
    let opts = OpenOptions {
        send_changes: role.can_write(),
        ..Default::default()
    };
    engine.open(RELAY, doc, opts);
}

pub struct Link {
    pub engine: Engine,
    pub reader: FrameReader,
    pub writer: FrameWriter,
    pub started: std::time::Instant,
    pub id: DeviceId,
    pub conn: quinn::Connection,
    pub endpoint: quinn::Endpoint,
}

impl Link {
    /// Connects to the relay at `addr` (pinning `cert`) with a fresh key and sends `Hello`
    /// with `token` as `agent`. The relay's answer is left to read.
    pub async fn connect(
        addr: SocketAddr,
        cert: Vec<rustls::pki_types::CertificateDer<'static>>,
        token: String,
        agent: &str,
    ) -> Link {
        let key = DeviceKey::generate().unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(
            quic::client_config(&key, ServerTrust::PinnedCert(cert)).unwrap(),
        );
        let conn = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
        let (send, recv) = conn.open_bi().await.unwrap();
        let mut link = Link {
            engine: Engine::new(EngineConfig::device()),
            reader: FrameReader::new(recv, wire::DEFAULT_MAX_FRAME),
            writer: FrameWriter::new(send, wire::DEFAULT_MAX_FRAME),
            started: std::time::Instant::now(),
            id: key.device_id(),
            conn,
            endpoint,
        };
        let hello = Message::Hello {
            protocol: wire::PROTOCOL_VERSION,
            device: key.device_id(),
            token,
            agent: agent.into(),
        };
        link.writer.send(&hello).await.unwrap();
        link
    }

    /// The next frame from the relay (`Ok(None)` when the stream ends). While waiting, the
    /// engine's timers run (a stalled sync round is retried); the relay staying silent for
    /// `silence` fails the test.
    pub async fn recv(
        &mut self,
        silence: Duration,
    ) -> Result<Option<Message>, quic::TransportError> {
        let deadline = tokio::time::Instant::now() + silence;
        loop {
            match tokio::time::timeout(Duration::from_millis(500), self.reader.recv()).await {
                Ok(r) => return r,
                Err(_) => {
                    assert!(tokio::time::Instant::now() < deadline, "relay went silent");
                    let now = self.started.elapsed().as_millis() as u64;
                    self.engine.tick(now);
                    self.flush().await;
                }
            }
        }
    }

    /// Hands the engine's output to the stream (and acknowledges its storage requests).
    pub async fn flush(&mut self) {
        while let Some(o) = self.engine.poll_output() {
            match o {
                Output::Send { msg, .. } => self.writer.send(&msg).await.unwrap(),
                Output::Persist { id, .. } => self.engine.persisted(id),
                Output::Load { doc } => self.engine.loaded(doc, None),
                _ => {}
            }
        }
    }

    /// Sets `key` to `value` in the document's root.
    pub fn put(&mut self, doc: DocId, key: &str, value: impl Into<ScalarValue>) {
        self.engine
            .change(doc, |am| {
                let mut tx = am.transaction();
                tx.put(ROOT, key, value).unwrap();
                tx.commit();
            })
            .unwrap();
    }

    /// Sets `key` to `true` in the document's root.
    pub fn write(&mut self, doc: DocId, key: &str) {
        self.put(doc, key, true);
    }

    /// The keys of the document's root (none when the engine does not hold it).
    pub fn keys(&mut self, doc: DocId) -> Vec<String> {
        self.engine
            .read(doc, |d| d.automerge().keys(ROOT).collect())
            .unwrap_or_default()
    }

    /// The next datagram from the relay, within `wait`.
    pub async fn datagram(&self, wait: Duration) -> Message {
        tokio::time::timeout(
            wait,
            quic::recv_datagram(&self.conn, wire::DEFAULT_MAX_FRAME),
        )
        .await
        .expect("no datagram from the relay")
        .unwrap()
    }
}
