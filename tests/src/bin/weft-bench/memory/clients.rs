//! The device side of the `memory` workload, in a child process of its own so that none of its
//! memory lands in the relay's resident set (the relay runs in the parent, as in every
//! workload). The parent starts `weft-bench` again with [`CHILD_ENV`] naming what to do:
//!
//! - `upload`: one device creates [`DOCS_ENV`] conversations of [`MESSAGES_ENV`] messages
//!   each offline, connects, uploads them all through the sync rounds (as a device does
//!   with what it made offline), prints `done` and exits, which closes its connection.
//! - `quic` / `ws`: idle connections, each a device of its own that says hello (QUIC) or
//!   `join` (WebSocket) and then only answers keep-alives. For each line `N` read on stdin the
//!   child opens connections until it holds `N`, then prints `ready N`; it closes them all
//!   and exits at the end of stdin.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::CertificateDer;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use weft_core::automerge::Automerge;
use weft_core::engine::{Engine, EngineConfig};
use weft_core::quic::{self, DeviceKey, FrameReader, FrameWriter, ServerTrust};
use weft_core::wire;
use weft_core::{DocId, Document};

use crate::chain::Chain;
use crate::client::Client;

/// Set to the child's mode (`upload`, `quic`, `ws`).
pub const CHILD_ENV: &str = "WEFT_BENCH_MEMORY_CHILD";
/// The relay's QUIC address (`upload`, `quic`) or WebSocket URL with its token (`ws`).
pub const ADDR_ENV: &str = "WEFT_BENCH_MEMORY_ADDR";
/// A file holding the relay's certificate (DER).
pub const CERT_ENV: &str = "WEFT_BENCH_MEMORY_CERT";
/// The token the QUIC devices say hello with.
pub const TOKEN_ENV: &str = "WEFT_BENCH_MEMORY_TOKEN";
/// Conversations to upload.
pub const DOCS_ENV: &str = "WEFT_BENCH_MEMORY_DOCS";
/// Messages per uploaded conversation.
pub const MESSAGES_ENV: &str = "WEFT_BENCH_MEMORY_MESSAGES";

/// Connection handshakes in flight at once.
const CONNECTING: usize = 64;
/// Documents one connection uploads (the relay's default `create_burst`).
const CREATE_BURST: usize = 1_000;
/// The upload's deadline.
const UPLOAD_LIMIT: Duration = Duration::from_secs(600);

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

/// The child's `main`: runs `mode` on a runtime of its own.
pub fn run_child(mode: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    match mode {
        "upload" => runtime.block_on(upload()),
        "quic" | "ws" => runtime.block_on(idle(mode)),
        other => bail!("no memory child mode {other}"),
    }
}

fn relay_cert() -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let der = std::fs::read(env(CERT_ENV)?).context("reading the relay's certificate")?;
    Ok(vec![CertificateDer::from(der)])
}

/// Creates the conversations offline, then uploads them through one connection.
async fn upload() -> anyhow::Result<()> {
    let addr: SocketAddr = env(ADDR_ENV)?.parse()?;
    let docs: usize = env(DOCS_ENV)?.parse()?;
    let messages: usize = env(MESSAGES_ENV)?.parse()?;
    let cert = relay_cert()?;
    let token = env(TOKEN_ENV)?;
    let mut left = docs;
    while left > 0 {
        // The relay lets one connection create a burst of 1,000 documents (then 100 a second).
        let n = left.min(CREATE_BURST);
        left -= n;
        let mut engine = Engine::new(EngineConfig::device());
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            // A conversation header and `messages` messages, by an actor of its own.
            let chain = Chain::generate(messages + 1);
            let am = Automerge::load(&chain.raw.concat()).context("loading a generated chat")?;
            let doc = DocId::from_bytes(rand::random());
            engine.create(doc, Document::from_automerge(am));
            ids.push(doc);
        }
        let mut client = Client::connect(addr, &cert, &token).await?;
        client.sync_engine(&mut engine, &ids, UPLOAD_LIMIT).await?;
        client.conn.close(0u32.into(), b"uploaded");
        client.endpoint.wait_idle().await;
    }
    println!("done {docs}");
    Ok(())
}

/// A held connection: a future that reads it until it ends.
type Held = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Holds idle connections, as many as the parent asks for.
async fn idle(mode: &str) -> anyhow::Result<()> {
    let target = env(ADDR_ENV)?;
    let (cert, token) = if mode == "quic" {
        (relay_cert()?, env(TOKEN_ENV)?)
    } else {
        (Vec::new(), String::new())
    };
    let endpoint = quic::endpoint("127.0.0.1:0".parse()?, None)?;
    let mut held: JoinSet<()> = JoinSet::new();
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<usize>(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(Ok(n)) = line.map(|l| l.trim().parse::<usize>()) else {
                break;
            };
            if lines_tx.blocking_send(n).is_err() {
                break;
            }
        }
    });
    let cert = Arc::new(cert);
    while let Some(want) = lines.recv().await {
        while held.len() < want {
            let batch = (want - held.len()).min(CONNECTING);
            let mut connecting = JoinSet::new();
            for _ in 0..batch {
                let (target, cert, token, endpoint) = (
                    target.clone(),
                    cert.clone(),
                    token.clone(),
                    endpoint.clone(),
                );
                let mode = mode.to_string();
                connecting.spawn(async move {
                    if mode == "quic" {
                        quic_idle(&endpoint, &target, &cert, &token).await
                    } else {
                        ws_idle(&target).await
                    }
                });
            }
            while let Some(r) = connecting.join_next().await {
                held.spawn(r??);
            }
        }
        println!("ready {}", held.len());
        std::io::stdout().flush()?;
    }
    held.shutdown().await;
    endpoint.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    Ok(())
}

/// One QUIC device: hello and welcome, then a future that reads until the connection ends
/// (the listing and keep-alives).
async fn quic_idle(
    endpoint: &quinn::Endpoint,
    addr: &str,
    cert: &[CertificateDer<'static>],
    token: &str,
) -> anyhow::Result<Held> {
    let key = DeviceKey::generate()?;
    let config = quic::client_config(&key, ServerTrust::PinnedCert(cert.to_vec()))?;
    let conn = tokio::time::timeout(
        Duration::from_secs(30),
        endpoint.connect_with(config, addr.parse()?, "localhost")?,
    )
    .await
    .context("connecting timed out")??;
    let (send, recv) = conn.open_bi().await?;
    let mut writer = FrameWriter::new(send, wire::DEFAULT_MAX_FRAME);
    let mut reader = FrameReader::new(recv, wire::DEFAULT_MAX_FRAME);
    crate::client::greet(&mut reader, &mut writer, key.device_id(), token).await?;
    Ok(Box::pin(async move {
        let _keep = (conn, writer);
        while let Ok(Some(_)) = reader.recv().await {}
    }))
}

/// One automerge-repo peer: the upgrade, `join` and the relay's `peer`, then a future that
/// reads until the socket ends (answering pings).
async fn ws_idle(url: &str) -> anyhow::Result<Held> {
    let host = url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .context("a ws:// URL")?;
    let tcp = tokio::net::TcpStream::connect(host).await?;
    tcp.set_nodelay(true)?;
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await?;
    let peer: [u8; 8] = rand::random();
    let peer = format!("bench-{}", u64::from_le_bytes(peer));
    ws.send(WsMessage::Binary(join_msg(&peer).into())).await?;
    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        Ok(Some(Ok(WsMessage::Binary(_)))) => {}
        other => bail!("expected the relay's peer message, got {other:?}"),
    }
    Ok(Box::pin(async move {
        while let Some(Ok(_)) = ws.next().await {}
    }))
}

/// automerge-repo's `join`: `{type, senderId, peerMetadata: {}, supportedProtocolVersions:
/// ["1"]}` in CBOR.
pub fn join_msg(peer: &str) -> Vec<u8> {
    let mut out = vec![0xa4];
    cbor_text(&mut out, "type");
    cbor_text(&mut out, "join");
    cbor_text(&mut out, "senderId");
    cbor_text(&mut out, peer);
    cbor_text(&mut out, "peerMetadata");
    out.push(0xa0);
    cbor_text(&mut out, "supportedProtocolVersions");
    out.push(0x81);
    cbor_text(&mut out, "1");
    out
}

/// A CBOR text string (major type 3), for strings under 64 KiB.
pub fn cbor_text(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 24 {
        out.push(0x60 | n as u8);
    } else if n < 256 {
        out.extend([0x78, n as u8]);
    } else {
        out.push(0x79);
        out.extend((n as u16).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

/// Writes the relay's certificate where [`CERT_ENV`] will point.
pub fn write_cert(dir: &Path, cert: &[CertificateDer<'static>]) -> anyhow::Result<String> {
    let first = cert.first().context("the relay has no certificate")?;
    let path = dir.join("relay.der");
    std::fs::write(&path, first.as_ref())?;
    Ok(path.display().to_string())
}
