//! Idle QUIC connections held by a child process (this binary again), so that their client
//! side stays out of the resident set measured here.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::pki_types::CertificateDer;
use weft_core::quic::{self, DeviceKey, FrameReader, FrameWriter, ServerTrust};
use weft_core::wire::{self, Message};

use crate::large_change::release_freed_memory;

/// Set in the child: `ADDR COUNT CERT_FILE`; the token comes in [`TOKEN_ENV`].
pub const CLIENTS_ENV: &str = "WEFT_BENCH_IDLE_CLIENTS";
const TOKEN_ENV: &str = "WEFT_BENCH_IDLE_TOKEN";
/// Handshakes in flight at once in the child.
const PARALLEL: usize = 64;

/// KiB of this process's resident set per connection while a child holds `n` idle connections
/// (each said hello and got its welcome) to the server at `addr`.
pub fn held_by(
    addr: SocketAddr,
    cert: &[CertificateDer<'static>],
    token: &str,
    n: usize,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let cert_file = dir.path().join("cert.der");
    let first = cert.first().context("the server has no certificate")?;
    std::fs::write(&cert_file, first.as_ref())?;
    release_freed_memory();
    let before = super::rss_kib()?;
    let mut child = Command::new(std::env::current_exe()?)
        .env(CLIENTS_ENV, format!("{addr} {n} {}", cert_file.display()))
        .env(TOKEN_ENV, token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the clients' process")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    // The child prints one line once every connection is up (or fails and exits).
    let read = BufReader::new(stdout).read_line(&mut line);
    let result = match read {
        Ok(_) if line.trim() == format!("ready {n}") => {
            // Let the server finish what each welcome started (discovery, kinds).
            std::thread::sleep(Duration::from_millis(500));
            release_freed_memory();
            let after = super::rss_kib()?;
            Ok(after.saturating_sub(before) as f64 / n as f64)
        }
        _ => Err(anyhow::anyhow!(
            "the clients' process did not get its connections up: {}",
            line.trim()
        )),
    };
    // Closing its stdin ends the child.
    drop(child.stdin.take());
    let _ = child.wait();
    result
}

/// The child: opens the connections, says `ready N`, holds them until stdin closes.
pub fn child_main(spec: &str) -> anyhow::Result<()> {
    let mut parts = spec.split(' ');
    let (Some(addr), Some(n), Some(cert)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("{CLIENTS_ENV} must be `ADDR COUNT CERT_FILE`");
    };
    let addr: SocketAddr = addr.parse()?;
    let n: usize = n.parse()?;
    let cert = CertificateDer::from(std::fs::read(cert)?);
    let token = std::env::var(TOKEN_ENV).unwrap_or_default();
    crate::raise_file_limit(n as u64 + 256)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let held = rt.block_on(connect_all(addr, cert, token, n))?;
    println!("ready {}", held.len());
    std::io::stdout().flush()?;
    // Held until the parent closes our stdin; the runtime keeps QUIC answering meanwhile.
    rt.block_on(async {
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|r| r > 0) {}
        })
        .await;
    });
    drop(held);
    Ok(())
}

type Held = (quinn::Connection, FrameReader, FrameWriter);

async fn connect_all(
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    token: String,
    n: usize,
) -> anyhow::Result<Vec<Held>> {
    let key = DeviceKey::generate()?;
    let mut endpoint = quic::endpoint("127.0.0.1:0".parse()?, None)?;
    endpoint.set_default_client_config(quic::client_config(
        &key,
        ServerTrust::PinnedCert(vec![cert]),
    )?);
    let mut held = Vec::with_capacity(n);
    let mut set = tokio::task::JoinSet::new();
    let mut started = 0;
    while held.len() < n {
        while started < n && set.len() < PARALLEL {
            let (endpoint, token, device) = (endpoint.clone(), token.clone(), key.device_id());
            set.spawn(async move { connect_one(&endpoint, addr, token, device).await });
            started += 1;
        }
        match set.join_next().await {
            Some(r) => held.push(r??),
            None => break,
        }
    }
    Ok(held)
}

async fn connect_one(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    token: String,
    device: weft_core::DeviceId,
) -> anyhow::Result<Held> {
    let conn = tokio::time::timeout(
        Duration::from_secs(60),
        endpoint.connect(addr, "localhost")?,
    )
    .await
    .context("connecting timed out")??;
    let (send, recv) = conn.open_bi().await?;
    let mut reader = FrameReader::new(recv, wire::DEFAULT_MAX_FRAME);
    let mut writer = FrameWriter::new(send, wire::DEFAULT_MAX_FRAME);
    writer
        .send(&Message::Hello {
            protocol: wire::PROTOCOL_VERSION,
            device,
            token,
            agent: "weft-bench idle".into(),
        })
        .await?;
    match tokio::time::timeout(Duration::from_secs(60), reader.recv()).await {
        Ok(Ok(Some(Message::Welcome { .. }))) => Ok((conn, reader, writer)),
        other => bail!("no welcome: {other:?}"),
    }
}
