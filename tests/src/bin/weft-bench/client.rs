//! Bench devices: QUIC clients that say hello like a device, sync their documents with a real
//! engine until the relay holds them live, then split into a light reader and writer that move
//! frames without applying them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustls::pki_types::CertificateDer;
use weft_core::engine::{ConnId, Engine, EngineConfig, OpenOptions, Output};
use weft_core::quic::{self, DeviceKey, FrameReader, FrameWriter, ServerTrust};
use weft_core::wire::{self, Message};
use weft_core::DocId;

const RELAY: ConnId = ConnId(0);
const SUBSCRIBE_WINDOW: usize = 32;

/// One connected device.
pub struct Client {
    pub conn: quinn::Connection,
    pub reader: FrameReader,
    pub writer: FrameWriter,
    pub endpoint: quinn::Endpoint,
}

impl Client {
    /// Connects, says hello and waits for the welcome.
    pub async fn connect(
        addr: SocketAddr,
        cert: &[CertificateDer<'static>],
        token: &str,
    ) -> anyhow::Result<Client> {
        let key = DeviceKey::generate()?;
        let mut endpoint = quic::endpoint("127.0.0.1:0".parse()?, None)?;
        endpoint.set_default_client_config(quic::client_config(
            &key,
            ServerTrust::PinnedCert(cert.to_vec()),
        )?);
        let conn = tokio::time::timeout(
            Duration::from_secs(20),
            endpoint.connect(addr, "localhost")?,
        )
        .await
        .context("connecting timed out")??;
        let (send, recv) = conn.open_bi().await?;
        let mut c = Client {
            conn,
            reader: FrameReader::new(recv, wire::DEFAULT_MAX_FRAME),
            writer: FrameWriter::new(send, wire::DEFAULT_MAX_FRAME),
            endpoint,
        };
        greet(&mut c.reader, &mut c.writer, key.device_id(), token).await?;
        Ok(c)
    }

    /// Subscribes to `docs` (pipelined) and runs a device engine until every one is synced
    /// with the relay, so the relay sends this device live `Changes` from now on.
    pub async fn sync(&mut self, docs: &[DocId], limit: Duration) -> anyhow::Result<()> {
        self.sync_engine(&mut Engine::new(EngineConfig::device()), docs, limit)
            .await
    }

    /// [`Client::sync`] with a device engine that may already hold the documents (created
    /// with [`Engine::create`]): their changes go up in the sync rounds, as a device uploads
    /// what it made offline.
    pub async fn sync_engine(
        &mut self,
        engine: &mut Engine,
        docs: &[DocId],
        limit: Duration,
    ) -> anyhow::Result<()> {
        self.flush(engine).await?;
        engine.add_conn(RELAY);
        // Pipelined, at most SUBSCRIBE_WINDOW unanswered: the relay's queue for this
        // connection holds 1,024 frames and a subscription's answer takes two or more.
        let mut queued = docs.iter().copied();
        for doc in queued.by_ref().take(SUBSCRIBE_WINDOW) {
            self.writer.send(&Message::Subscribe { doc }).await?;
        }
        let started = Instant::now();
        let mut waiting: HashSet<DocId> = docs.iter().copied().collect();
        let mut opened = HashSet::new();
        while !waiting.is_empty() {
            if started.elapsed() > limit {
                bail!("{} documents did not sync within {limit:?}", waiting.len());
            }
            let msg =
                match tokio::time::timeout(Duration::from_millis(200), self.reader.recv()).await {
                    Ok(r) => r?.context("the relay closed the stream")?,
                    Err(_) => {
                        engine.tick(started.elapsed().as_millis() as u64);
                        self.flush(engine).await?;
                        continue;
                    }
                };
            let doc = msg.doc();
            match msg {
                Message::Subscribed { doc, role } => {
                    opened.insert(doc);
                    if let Some(next) = queued.next() {
                        self.writer.send(&Message::Subscribe { doc: next }).await?;
                    }
                    let opts = OpenOptions {
                        send_changes: role.can_write(),
                        ..Default::default()
                    };
                    engine.open(RELAY, doc, opts);
                }
                m @ (Message::Sync { .. } | Message::Changes { .. } | Message::Ack { .. }) => {
                    let d = m.doc();
                    if let Err(e) = engine.handle(RELAY, m) {
                        let queued = d.is_some_and(|d| opened.contains(&d));
                        bail!("{e} (opened: {queued}, {} of {} documents answered; the relay may have dropped a Subscribed on a full queue)", opened.len(), docs.len());
                    }
                }
                Message::Error { code, message, .. } => {
                    bail!("the relay refused: {code:?} {message}")
                }
                _ => {}
            }
            self.flush(engine).await?;
            if let Some(doc) = doc {
                if opened.contains(&doc) && engine.is_synced(RELAY, doc) {
                    waiting.remove(&doc);
                }
            }
        }
        // Being synced here does not mean the relay has read our last sync message. The hub
        // handles a connection's frames in order, so once it answers a later subscription it
        // holds us live on every document above.
        let barrier = DocId::from_bytes(rand::random());
        self.writer
            .send(&Message::Subscribe { doc: barrier })
            .await?;
        loop {
            if started.elapsed() > limit {
                bail!("the relay did not answer within {limit:?}");
            }
            let msg =
                match tokio::time::timeout(Duration::from_millis(200), self.reader.recv()).await {
                    Ok(r) => r?.context("the relay closed the stream")?,
                    Err(_) => continue,
                };
            match msg {
                Message::Subscribed { doc, .. } if doc == barrier => break,
                m @ (Message::Sync { .. } | Message::Changes { .. } | Message::Ack { .. }) => {
                    engine.handle(RELAY, m)?;
                    self.flush(engine).await?;
                }
                _ => {}
            }
        }
        self.writer
            .send(&Message::Unsubscribe { doc: barrier })
            .await?;
        Ok(())
    }

    async fn flush(&mut self, engine: &mut Engine) -> anyhow::Result<()> {
        while let Some(o) = engine.poll_output() {
            match o {
                Output::Send { msg, .. } => self.writer.send(&msg).await?,
                Output::Persist { id, .. } => engine.persisted(id),
                Output::Load { doc } => engine.loaded(doc, None),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Connects `n` clients concurrently (at most 16 handshakes at once).
pub async fn connect_many(
    n: usize,
    addr: SocketAddr,
    cert: &[CertificateDer<'static>],
    token: &str,
) -> anyhow::Result<Vec<Client>> {
    let mut out = Vec::with_capacity(n);
    for chunk_start in (0..n).step_by(16) {
        let chunk = (n - chunk_start).min(16);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..chunk {
            let (cert, token) = (cert.to_vec(), token.to_string());
            set.spawn(async move { Client::connect(addr, &cert, &token).await });
        }
        while let Some(c) = set.join_next().await {
            out.push(c??);
        }
    }
    Ok(out)
}

/// Syncs every client on `docs` concurrently.
pub async fn sync_all(
    clients: Vec<Client>,
    docs: &[DocId],
    limit: Duration,
) -> anyhow::Result<Vec<Client>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let docs = docs.to_vec();
        set.spawn(async move { c.sync(&docs, limit).await.map(|()| (i, c)) });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r??);
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, c)| c).collect())
}

/// A frame for `Changes` of one raw change, as a device of this version sends it to the relay
/// (compact body).
pub fn changes_frame(doc: DocId, raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let msg = Message::Changes {
        doc,
        changes: vec![bytes::Bytes::from(raw.to_vec())],
    };
    Ok(wire::frame_as(
        &msg,
        wire::Encoding::Compact,
        wire::DEFAULT_MAX_FRAME,
    )?)
}

/// Says hello as `device` with `token` and waits (20 s at most) for the welcome; the writer then
/// encodes for the protocol version the welcome announced.
pub async fn greet(
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
    device: weft_core::DeviceId,
    token: &str,
) -> anyhow::Result<()> {
    writer
        .send(&Message::Hello {
            protocol: wire::PROTOCOL_VERSION,
            device,
            token: token.to_string(),
            agent: "weft-bench".into(),
        })
        .await?;
    match tokio::time::timeout(Duration::from_secs(20), reader.recv()).await {
        Ok(Ok(Some(Message::Welcome { protocol, .. }))) => {
            writer.set_peer_protocol(protocol);
            Ok(())
        }
        Ok(Ok(other)) => bail!("expected a welcome, got {other:?}"),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => bail!("no welcome within 20 s"),
    }
}
