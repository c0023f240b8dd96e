//! One established connection: its reader (frames and datagrams into the driver), its writer
//! task (the driver's frames out) and the token refresh.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use weft_core::engine::ConnId;
use weft_core::quic::{self, FrameReader, FrameWriter};
use weft_core::wire::{ErrorCode, Message};
use weft_core::DocId;

use super::target::{classify, Ended};
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
    token: Option<(TokenSource, String)>,
    token_rx: watch::Receiver<Option<String>>,
    cancel: &CancellationToken,
) -> Ended {
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let writer_task = tokio::spawn(write_loop(conn.clone(), writer, out_rx));
    let reg = Registration {
        link,
        kind,
        out: out_tx.clone(),
        peer_key,
        user,
        extra_docs,
    };
    let conn_id = match register(device, reg).await {
        Ok(id) => id,
        Err(ended) => return ended,
    };
    let max_frame = reader.max_frame();
    let mut refresh = Refresh {
        refresh_at: tokio::time::Instant::now()
            + refresh_delay(token.as_ref().and_then(|(_, t)| token_exp(t))),
        token,
        token_rx,
        handed_open: true,
    };
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
            r = refresh.token_rx.changed(), if refresh.token.is_some() && refresh.handed_open => {
                refresh.handed(r.is_ok(), &out_tx).await;
            }
            _ = tokio::time::sleep_until(refresh.refresh_at), if refresh.token.is_some() => {
                refresh.due(&out_tx).await;
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

/// Registers the connection with the driver; its id there, or the end of the connection when
/// the device is shut down.
async fn register(device: &DriverHandle, reg: Registration) -> Result<ConnId, Ended> {
    let shut_down = || Ended {
        error: Some("the device is shut down".into()),
        refused: false,
        fatal: true,
    };
    let (tx, rx) = oneshot::channel();
    if device.cmd(Cmd::AddConn(reg, tx)).await.is_err() {
        return Err(shut_down());
    }
    rx.await.map_err(|_| shut_down())
}

/// A connection's token refresh: the token in use and where fresh ones come from (the link's
/// handle, else the configured source), and when to look again.
struct Refresh {
    token: Option<(TokenSource, String)>,
    token_rx: watch::Receiver<Option<String>>,
    /// The handle still exists (else only the configured source is read).
    handed_open: bool,
    refresh_at: tokio::time::Instant,
}

impl Refresh {
    /// The handle's token changed (`open` false: the handle is gone): a new one is sent at once.
    async fn handed(&mut self, open: bool, out_tx: &mpsc::Sender<Outgoing>) {
        let handed = self.token_rx.borrow_and_update().clone();
        if !open {
            // The handle is gone; keep the configured source.
            self.handed_open = false;
        } else if let (Some(fresh), Some((_, current))) = (handed, &mut self.token) {
            if fresh != *current && !fresh.is_empty() {
                *current = fresh.clone();
                let _ = out_tx
                    .send(Outgoing::Msg(Message::Token { token: fresh }))
                    .await;
                self.refresh_at = tokio::time::Instant::now() + refresh_delay(token_exp(current));
            }
        }
    }

    /// Time to look for a fresh token: the handle's, else the source's; sent if new.
    async fn due(&mut self, out_tx: &mpsc::Sender<Outgoing>) {
        let handed = self.token_rx.borrow().clone();
        if let Some((source, current)) = &mut self.token {
            if let Ok(fresh) = handed.map_or_else(|| source.read(), Ok) {
                if fresh != *current && !fresh.is_empty() {
                    *current = fresh.clone();
                    let _ = out_tx
                        .send(Outgoing::Msg(Message::Token { token: fresh }))
                        .await;
                }
            }
            let exp = token_exp(current);
            // An unchanged token near its end is looked at again every few seconds.
            let delay = refresh_delay(exp).min(Duration::from_secs(10));
            self.refresh_at = tokio::time::Instant::now() + delay;
        }
    }
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
