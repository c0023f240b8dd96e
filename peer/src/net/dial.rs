//! Dialing a relay or a peer device: resolve, open QUIC, exchange hello and welcome, then hand
//! the connection to [`serve_connection`].

use std::net::SocketAddr;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use weft_core::quic::{self, FrameReader, FrameWriter, ServerTrust, TransportError};
use weft_core::wire::{self, ErrorCode, Message, PROTOCOL_VERSION};

use super::connection::serve_connection;
use super::link::{Ended, Target};
use super::CONNECT_TIMEOUT;
use crate::device::cmd::{ConnKind, DriverHandle};

fn unspecified_for(addr: &SocketAddr) -> SocketAddr {
    if addr.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0u8; 4], 0))
    }
}

pub(super) fn classify(e: &TransportError) -> Ended {
    Ended {
        error: Some(describe(e)),
        refused: e.is_refused(),
        fatal: false,
    }
}

fn describe(e: &TransportError) -> String {
    if e.is_refused() {
        return match e.connection_error() {
            Some(quinn::ConnectionError::TransportError(t)) => {
                format!("refused: the other side's certificate is not the one expected ({t})")
            }
            _ => "refused: the other side does not accept this device's key".to_owned(),
        };
    }
    match e.connection_error() {
        Some(quinn::ConnectionError::TimedOut) => "timed out".to_owned(),
        _ => e.to_string(),
    }
}

pub(super) async fn connect_and_run(
    device: &DriverHandle,
    link: u64,
    target: &Target,
    cancel: &CancellationToken,
    token_rx: watch::Receiver<Option<String>>,
) -> Ended {
    let handed = token_rx.borrow().clone();
    let (addr_text, token, trust, server_name, kind, extra) = match target {
        Target::Relay(c) => {
            let token = match handed.map_or_else(|| c.token.read(), Ok) {
                Ok(t) => t,
                Err(e) => {
                    return Ended {
                        error: Some(e.to_string()),
                        refused: false,
                        fatal: false,
                    }
                }
            };
            let trust = match &c.pinned_cert {
                Some(certs) => ServerTrust::PinnedCert(certs.clone()),
                None => ServerTrust::SystemRoots,
            };
            let host = c
                .addr
                .rsplit_once(':')
                .map_or(c.addr.as_str(), |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            (
                c.addr.clone(),
                token,
                trust,
                host,
                ConnKind::Relay,
                c.docs.clone(),
            )
        }
        Target::Peer(c) => (
            c.addr.clone(),
            String::new(),
            ServerTrust::PinnedDevice(c.peer),
            quic::DEVICE_SERVER_NAME.to_owned(),
            ConnKind::Dialer,
            c.docs.clone(),
        ),
    };
    let addr = match tokio::net::lookup_host(&addr_text)
        .await
        .map(|mut a| a.next())
    {
        Ok(Some(a)) => a,
        Ok(None) | Err(_) => {
            return Ended {
                error: Some(format!("cannot resolve {addr_text}")),
                refused: false,
                fatal: false,
            }
        }
    };
    let client_cfg = match quic::client_config(device.key(), trust) {
        Ok(c) => c,
        Err(e) => {
            return Ended {
                error: Some(format!("TLS configuration: {e}")),
                refused: false,
                fatal: true,
            }
        }
    };
    let endpoint = match quic::endpoint(unspecified_for(&addr), None) {
        Ok(e) => e,
        Err(e) => {
            return Ended {
                error: Some(format!("cannot open a UDP socket: {e}")),
                refused: false,
                fatal: false,
            }
        }
    };
    let handshake = async {
        let connecting = endpoint
            .connect_with(client_cfg, addr, &server_name)
            .map_err(TransportError::from)?;
        let conn = connecting.await.map_err(TransportError::from)?;
        let (send, recv) = conn.open_bi().await.map_err(TransportError::from)?;
        let mut writer = FrameWriter::new(send, wire::DEFAULT_MAX_FRAME);
        let mut reader = FrameReader::new(recv, wire::DEFAULT_MAX_FRAME);
        writer
            .send(&Message::Hello {
                protocol: PROTOCOL_VERSION,
                device: device.id(),
                token: token.clone(),
                agent: concat!("weft/", env!("CARGO_PKG_VERSION")).to_owned(),
            })
            .await?;
        let first = reader.recv().await?;
        Ok::<_, TransportError>((conn, writer, reader, first))
    };
    let (conn, mut writer, reader, first) =
        match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Err(_) => {
                return Ended {
                    error: Some(format!("timed out connecting to {addr_text}")),
                    refused: false,
                    fatal: false,
                }
            }
            Ok(Err(e)) => return classify(&e),
            Ok(Ok(x)) => x,
        };
    let user = match first {
        Some(Message::Welcome {
            user,
            max_frame,
            device: other,
            ..
        }) => {
            if let Target::Peer(c) = target {
                if other != c.peer {
                    conn.close(
                        quinn::VarInt::from_u32(u32::from(ErrorCode::DEVICE_NOT_ALLOWED.0)),
                        b"wrong device",
                    );
                    return Ended {
                        error: Some(format!("the peer is not device {}", c.peer)),
                        refused: true,
                        fatal: false,
                    };
                }
            }
            writer.set_max_frame((max_frame as usize).min(wire::DEFAULT_MAX_FRAME));
            if let Target::Relay(_) = target {
                // A device acts for one user: the first token's, unless `init --name` chose.
                if let Err(e) = device.dir().claim_user(&user) {
                    conn.close(
                        quinn::VarInt::from_u32(u32::from(ErrorCode::UNAUTHENTICATED.0)),
                        b"token for another user",
                    );
                    return Ended {
                        error: Some(format!("{e}; the token is for {user}")),
                        refused: true,
                        fatal: true,
                    };
                }
            }
            user
        }
        Some(Message::Error { code, message, .. }) => {
            let refused = matches!(
                code,
                ErrorCode::UNAUTHENTICATED | ErrorCode::FORBIDDEN | ErrorCode::DEVICE_NOT_ALLOWED
            );
            return Ended {
                error: Some(if message.is_empty() {
                    format!("refused with code {}", code.0)
                } else {
                    message
                }),
                refused,
                fatal: false,
            };
        }
        Some(other) => {
            return Ended {
                error: Some(format!("unexpected first message {other:?}")),
                refused: false,
                fatal: false,
            }
        }
        None => {
            return Ended {
                error: Some("the connection closed during the handshake".into()),
                refused: false,
                fatal: false,
            }
        }
    };
    let peer_key = match target {
        Target::Relay(c) => format!("relay:{}", c.addr).into_bytes(),
        Target::Peer(c) => c.peer.as_bytes().to_vec(),
    };
    let token_source = match target {
        Target::Relay(c) => Some(c.token.clone()),
        Target::Peer(_) => None,
    };
    let ended = serve_connection(
        device,
        link,
        kind,
        conn.clone(),
        writer,
        reader,
        Some(user).filter(|u| !u.is_empty()),
        peer_key,
        extra,
        token_source.map(|s| (s, token)),
        token_rx,
        cancel,
    )
    .await;
    endpoint.close(quinn::VarInt::from_u32(0), b"bye");
    ended
}
