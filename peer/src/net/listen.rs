//! The peer-to-peer listener: accepts `allow`ed devices and serves each connection.

use std::net::SocketAddr;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use weft_core::quic::{self, ClientAuth};
use weft_core::wire::{self, Message};
use weft_core::DeviceId;

use super::connection::serve_connection;
use super::CONNECT_TIMEOUT;
use crate::device::cmd::{Cmd, ConnKind, DriverHandle};
use crate::DeviceError;

/// Binds a peer-to-peer listener and starts accepting `allow`ed devices.
pub(crate) fn listen(
    device: DriverHandle,
    addr: SocketAddr,
    allow: Vec<DeviceId>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), DeviceError> {
    let key = device.key();
    let cfg = quic::server_config(
        key.cert_chain(),
        key.private_key(),
        ClientAuth::Allow(allow),
    )
    .map_err(|e| DeviceError::Connection(format!("TLS configuration: {e}")))?;
    let endpoint = quic::endpoint(addr, Some(cfg))
        .map_err(|e| DeviceError::Connection(format!("cannot listen on {addr}: {e}")))?;
    let bound = endpoint
        .local_addr()
        .map_err(|e| DeviceError::Connection(format!("cannot listen on {addr}: {e}")))?;
    let cancel = device.cancel_token().clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let device = device.clone();
                    let cancel = cancel.clone();
                    conns.spawn(async move {
                        if let Err(e) = accept_peer(&device, incoming, &cancel).await {
                            tracing::info!(error = %e, "peer connection refused or failed");
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = cancel.cancelled() => break,
            }
        }
        endpoint.close(quinn::VarInt::from_u32(0), b"bye");
        while conns.join_next().await.is_some() {}
    });
    Ok((bound, task))
}

async fn accept_peer(
    device: &DriverHandle,
    incoming: quinn::Incoming,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let setup = async {
        let conn = incoming.await.map_err(|e| e.to_string())?;
        let greeted = quic::accept_hello(&conn, wire::DEFAULT_MAX_FRAME, CONNECT_TIMEOUT)
            .await
            .map_err(|e| format!("a peer's hello was refused: {e}"))?;
        let protocol = greeted.protocol;
        let (peer, reader, mut writer) = (greeted.device, greeted.reader, greeted.writer);
        writer
            .send(&Message::Welcome {
                protocol,
                user: String::new(),
                device: device.id(),
                max_frame: wire::DEFAULT_MAX_FRAME as u32,
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((conn, peer, writer, reader))
    };
    let (conn, peer, writer, reader) = tokio::time::timeout(CONNECT_TIMEOUT, setup)
        .await
        .map_err(|_| "a peer's handshake timed out".to_owned())??;
    let link = device
        .new_link(format!("peer {peer}"))
        .await
        .map_err(|e| e.to_string())?;
    let ended = serve_connection(
        device,
        link,
        ConnKind::Listener,
        conn,
        writer,
        reader,
        None,
        peer.as_bytes().to_vec(),
        Vec::new(),
        None,
        watch::channel(None).1,
        cancel,
    )
    .await;
    let _ = device.cmd(Cmd::DropLink(link)).await;
    match ended.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
