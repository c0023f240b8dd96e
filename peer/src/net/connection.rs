//! One established connection: its reader (frames and datagrams into the driver), its writer
//! task (the driver's frames out) and the token refresh.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use weft_core::quic::{self, FrameReader, FrameWriter};
use weft_core::wire::{ErrorCode, Message};
use weft_core::DocId;

use super::dial::classify;
use super::link::Ended;
use super::token::{refresh_delay, token_exp};
use super::{TokenSource, OUT_QUEUE};
use crate::device::cmd::{Cmd, ConnKind, DriverHandle, Outgoing, Registration};

/// Runs one established connection until it ends: registers it with the driver, starts its
/// writer, reads frames and datagrams into the driver, and refreshes the token.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve_connection(
    device: &DriverHandle,
    link: u64,
    kind: ConnKind,
    conn: quinn::Connection,
    writer: FrameWriter,
    mut reader: FrameReader,
    user: Option<String>,
    peer_key: Vec<u8>,
    extra_docs: Vec<DocId>,
    mut token: Option<(TokenSource, String)>,
    mut token_rx: watch::Receiver<Option<String>>,
    cancel: &CancellationToken,
) -> Ended {
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let writer_task = tokio::spawn(write_loop(conn.clone(), writer, out_rx));
    let (tx, rx) = oneshot::channel();
    let reg = Registration {
        link,
        kind,
        out: out_tx.clone(),
        peer_key,
        user,
        extra_docs,
    };
    if device.cmd(Cmd::AddConn(reg, tx)).await.is_err() {
        return Ended {
            error: Some("the device is shut down".into()),
            refused: false,
            fatal: true,
        };
    }
    let Ok(conn_id) = rx.await else {
        return Ended {
            error: Some("the device is shut down".into()),
            refused: false,
            fatal: true,
        };
    };
    let max_frame = reader.max_frame();
    let mut refresh_at =
        tokio::time::Instant::now() + refresh_delay(token.as_ref().and_then(|(_, t)| token_exp(t)));
    let mut handed_open = true;
    let ended = loop {
        tokio::select! {
            r = reader.recv() => match r {
                Ok(Some(msg)) => {
                    if let Message::Error { code, doc: None, message } = &msg {
                        let refused = *code == ErrorCode::UNAUTHENTICATED;
                        break Ended { error: Some(message.clone()), refused, fatal: false };
                    }
                    if device.cmd(Cmd::Inbound(conn_id, msg)).await.is_err() {
                        break Ended { error: None, refused: false, fatal: true };
                    }
                }
                Ok(None) => break Ended { error: Some("the other side closed the connection".into()), refused: false, fatal: false },
                Err(e) => break classify(&e),
            },
            d = quic::recv_datagram(&conn, max_frame) => match d {
                Ok(msg @ (Message::Ephemeral { .. } | Message::Presence { .. })) => {
                    if device.cmd(Cmd::Inbound(conn_id, msg)).await.is_err() {
                        break Ended { error: None, refused: false, fatal: true };
                    }
                }
                Ok(_) => {}
                Err(e) if e.connection_error().is_some() => break classify(&e),
                Err(_) => {}
            },
            r = token_rx.changed(), if token.is_some() && handed_open => {
                let handed = token_rx.borrow_and_update().clone();
                if r.is_err() {
                    // The handle is gone; keep the configured source.
                    handed_open = false;
                } else if let (Some(fresh), Some((_, current))) = (handed, &mut token) {
                    if fresh != *current && !fresh.is_empty() {
                        *current = fresh.clone();
                        let _ = out_tx.send(Outgoing::Msg(Message::Token { token: fresh })).await;
                        refresh_at = tokio::time::Instant::now() + refresh_delay(token_exp(current));
                    }
                }
            }
            _ = tokio::time::sleep_until(refresh_at), if token.is_some() => {
                let handed = token_rx.borrow().clone();
                if let Some((source, current)) = &mut token {
                    if let Ok(fresh) = handed.map_or_else(|| source.read(), Ok) {
                        if fresh != *current && !fresh.is_empty() {
                            *current = fresh.clone();
                            let _ = out_tx.send(Outgoing::Msg(Message::Token { token: fresh })).await;
                        }
                    }
                    let exp = token_exp(current);
                    // An unchanged token near its end is looked at again every few seconds.
                    let delay = refresh_delay(exp).min(Duration::from_secs(10));
                    refresh_at = tokio::time::Instant::now() + delay;
                }
            }
            _ = cancel.cancelled() => break Ended { error: None, refused: false, fatal: true },
        }
    };
    let _ = device.cmd(Cmd::Closed(conn_id)).await;
    let _ = out_tx.try_send(Outgoing::Close);
    drop(out_tx);
    let _ = writer_task.await;
    conn.close(quinn::VarInt::from_u32(0), b"bye");
    ended
}

async fn write_loop(
    conn: quinn::Connection,
    mut writer: FrameWriter,
    mut rx: mpsc::Receiver<Outgoing>,
) {
    while let Some(out) = rx.recv().await {
        match out {
            Outgoing::Msg(msg) => {
                if matches!(msg, Message::Ephemeral { .. } | Message::Presence { .. })
                    && quic::send_datagram(&conn, &msg).is_ok()
                {
                    continue;
                }
                if let Err(e) = writer.send(&msg).await {
                    tracing::debug!(error = %e, "write failed");
                    break;
                }
            }
            Outgoing::Close => {
                let _ = writer.finish();
                break;
            }
        }
    }
}
