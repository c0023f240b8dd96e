//! One WebSocket client's life: the upgrade with a token and `join` (`handshake.rs`), the hub
//! told of the connection, the message loop (`translate.rs`), and the close that says why.

use std::sync::atomic::Ordering;

use futures_util::SinkExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use weft_core::engine::ConnId;

use super::codec::{self, ToClient};
use super::frames::{close, SocketEnd};
use super::handshake::{self, device_for};
use super::translate::Socket;
use super::Shared;
use crate::hub::HubEvent;
use crate::metrics::Metrics;

/// Serves one accepted TCP connection until it ends; reports `Open`/`Closed` to the hub.
pub(super) async fn serve_socket(
    stream: TcpStream,
    conn: ConnId,
    shared: &Shared,
    hub: mpsc::Sender<HubEvent>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SocketEnd> {
    let limits = &shared.limits;
    let deadline = tokio::time::Instant::now() + limits.join_timeout;
    let (mut ws, claims) = handshake::upgrade(stream, shared, deadline).await?;
    let peer = handshake::join(&mut ws, shared, deadline).await?;
    let device = device_for(&claims.sub, &peer);
    tracing::info!(conn = conn.0, %device, user = %claims.sub, "WebSocket client joined");
    let peer_msg = codec::encode(
        &ToClient::Peer {
            storage_id: &shared.storage_id,
        },
        &shared.relay_peer,
        &peer,
    );
    if let Err(e) = ws.send(WsMessage::Binary(peer_msg.into())).await {
        return Err(SocketEnd::Lost(e));
    }

    let user = claims.sub.clone();
    let (out_tx, out_rx) = mpsc::channel(limits.queue_len);
    let opened = hub
        .send(HubEvent::Open {
            conn,
            device,
            claims,
            protocol: weft_core::wire::MIN_PROTOCOL_VERSION,
            out: out_tx,
        })
        .await;
    // Sent right after `Open` on the same channel, so it lands before any subscription.
    let marked = hub.send(HubEvent::SyncOnly { conn }).await;
    if opened.is_err() || marked.is_err() {
        close(&mut ws, CloseCode::Away, "relay shutting down").await;
        return Err(SocketEnd::Shutdown);
    }
    Metrics::inc(&shared.metrics.connections_total);
    shared.metrics.connections.fetch_add(1, Ordering::Relaxed);

    let mut socket = Socket::new(ws, conn, (peer, user, device), shared, hub.clone());
    let end = socket.run(out_rx, &mut stop).await;
    say_why(&mut socket, shared, &end).await;
    let _ = hub.send(HubEvent::Closed { conn }).await;
    shared.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    Err(end)
}

/// Tells the client why its socket ends, where it is the client's input or the relay's
/// decision: an automerge-repo `error` message, then a close frame.
async fn say_why(socket: &mut Socket<'_>, shared: &Shared, end: &SocketEnd) {
    match end {
        SocketEnd::BadInput { code, reason } | SocketEnd::ClosedByRelay { code, reason } => {
            if matches!(end, SocketEnd::BadInput { .. }) {
                Metrics::inc(&shared.metrics.protocol_errors);
            }
            let error = codec::encode(
                &ToClient::Error { message: reason },
                &shared.relay_peer,
                &socket.peer,
            );
            let _ = socket.ws.send(WsMessage::Binary(error.into())).await;
            close(&mut socket.ws, *code, reason).await;
        }
        SocketEnd::Shutdown => close(&mut socket.ws, CloseCode::Away, "relay shutting down").await,
        _ => {}
    }
}
