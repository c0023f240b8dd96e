//! Dialing a relay or a peer device: resolve, open QUIC, exchange hello and welcome, then hand
//! the connection to [`serve_connection`].

use std::net::SocketAddr;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use weft_core::quic::{self, FrameReader, FrameWriter, ServerTrust, TransportError};
use weft_core::wire::{self, ErrorCode, Message, PROTOCOL_VERSION};
use weft_core::DocId;

use super::candidates::Candidate;
use super::connection::serve_connection;
use super::target::{classify, Ended, Target};
use super::CONNECT_TIMEOUT;
use crate::device::cmd::{ConnKind, DriverHandle};

fn unspecified_for(addr: &SocketAddr) -> SocketAddr {
    if addr.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0u8; 4], 0))
    }
}

/// With several relays to move between, a lost relay is noticed sooner: keep-alives every
/// second, and a connection that hears nothing for 4 s is lost (the smaller of both sides'
/// idle timeouts applies). A single relay keeps the transport's defaults (3 s and 9 s), which
/// cost a device's battery and radio less.
const FAILOVER_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(1);
const FAILOVER_IDLE_MS: u32 = 4_000;

/// What dialing a target needs.
struct Dial {
    addr: SocketAddr,
    /// There are other candidates to move to: notice a lost connection sooner.
    fast_failover: bool,
    /// The address as configured, for messages.
    addr_text: String,
    token: String,
    trust: ServerTrust,
    server_name: String,
    kind: ConnKind,
    extra: Vec<DocId>,
}

/// Dials `target` at `candidate` (one of its addresses) and serves the connection until it
/// ends.
pub(super) async fn connect_and_run(
    device: &DriverHandle,
    link: u64,
    target: &Target,
    candidate: &Candidate,
    others: bool,
    cancel: &CancellationToken,
    token_rx: watch::Receiver<Option<String>>,
) -> Ended {
    let handed = token_rx.borrow().clone();
    let dial = match dial_params(target, candidate, others, handed) {
        Ok(d) => d,
        Err(ended) => return ended,
    };
    let (endpoint, conn, mut writer, reader, first) = match open_connection(device, &dial).await {
        Ok(x) => x,
        Err(ended) => return ended,
    };
    let user = match check_welcome(device, target, &conn, &mut writer, first) {
        Ok(u) => u,
        Err(ended) => return ended,
    };
    let Dial {
        token, kind, extra, ..
    } = dial;
    // Sync states are kept per relay as configured (its first address), whichever of its
    // addresses served: relays of one cluster hold the same documents, so a device moving
    // between them resumes instead of starting over.
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

/// Where and how to dial `target` at `candidate` (`others`: it is not the only one): the
/// token (`handed` by the app, else its source), the trust, the server name, and the kind of
/// connection.
fn dial_params(
    target: &Target,
    candidate: &Candidate,
    others: bool,
    handed: Option<String>,
) -> Result<Dial, Ended> {
    Ok(match target {
        Target::Relay(c) => {
            let token = match handed.map_or_else(|| c.token.read(), Ok) {
                Ok(t) => t,
                Err(e) => {
                    return Err(Ended {
                        error: Some(e.to_string()),
                        refused: false,
                        fatal: false,
                    })
                }
            };
            let trust = match &c.pinned_cert {
                Some(certs) => ServerTrust::PinnedCert(certs.clone()),
                None => ServerTrust::SystemRoots,
            };
            Dial {
                addr: candidate.addr,
                fast_failover: others,
                addr_text: candidate.entry.clone(),
                token,
                trust,
                server_name: candidate.host.clone(),
                kind: ConnKind::Relay,
                extra: c.docs.clone(),
            }
        }
        Target::Peer(c) => Dial {
            addr: candidate.addr,
            fast_failover: false,
            addr_text: c.addr.clone(),
            token: String::new(),
            trust: ServerTrust::PinnedDevice(c.peer),
            server_name: quic::DEVICE_SERVER_NAME.to_owned(),
            kind: ConnKind::Dialer,
            extra: c.docs.clone(),
        },
    })
}

/// Opens QUIC and exchanges `Hello` for the other side's first message, within
/// [`CONNECT_TIMEOUT`].
async fn open_connection(
    device: &DriverHandle,
    dial: &Dial,
) -> Result<
    (
        quinn::Endpoint,
        quinn::Connection,
        FrameWriter,
        FrameReader,
        Option<Message>,
    ),
    Ended,
> {
    let addr = dial.addr;
    let mut client_cfg = match quic::client_config(device.key(), dial.trust.clone()) {
        Ok(c) => c,
        Err(e) => {
            return Err(Ended {
                error: Some(format!("TLS configuration: {e}")),
                refused: false,
                fatal: true,
            })
        }
    };
    if dial.fast_failover {
        let mut transport = quic::transport_config();
        transport
            .keep_alive_interval(Some(FAILOVER_KEEP_ALIVE))
            .max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
                FAILOVER_IDLE_MS,
            ))));
        client_cfg.transport_config(std::sync::Arc::new(transport));
    }
    let endpoint = match quic::endpoint(unspecified_for(&addr), None) {
        Ok(e) => e,
        Err(e) => {
            return Err(Ended {
                error: Some(format!("cannot open a UDP socket: {e}")),
                refused: false,
                fatal: false,
            })
        }
    };
    let handshake = async {
        let connecting = endpoint
            .connect_with(client_cfg, addr, &dial.server_name)
            .map_err(TransportError::from)?;
        let conn = connecting.await.map_err(TransportError::from)?;
        let (send, recv) = conn.open_bi().await.map_err(TransportError::from)?;
        let mut writer = FrameWriter::new(send, wire::DEFAULT_MAX_FRAME);
        let mut reader = FrameReader::new(recv, wire::DEFAULT_MAX_FRAME);
        writer
            .send(&Message::Hello {
                protocol: PROTOCOL_VERSION,
                device: device.id(),
                token: dial.token.clone(),
                agent: concat!("weft/", env!("CARGO_PKG_VERSION")).to_owned(),
            })
            .await?;
        let first = reader.recv().await?;
        Ok::<_, TransportError>((conn, writer, reader, first))
    };
    let (conn, writer, reader, first) = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await
    {
        Err(_) => {
            return Err(Ended {
                error: Some(format!("timed out connecting to {}", dial.addr_text)),
                refused: false,
                fatal: false,
            })
        }
        Ok(Err(e)) => return Err(classify(&e)),
        Ok(Ok(x)) => x,
    };
    Ok((endpoint, conn, writer, reader, first))
}

/// Checks the other side's first message: a `Welcome` from the expected device (and, from a
/// relay, for this device's user) gives the user; anything else ends the connection.
fn check_welcome(
    device: &DriverHandle,
    target: &Target,
    conn: &quinn::Connection,
    writer: &mut FrameWriter,
    first: Option<Message>,
) -> Result<String, Ended> {
    Ok(match first {
        Some(Message::Welcome {
            user,
            max_frame,
            device: other,
            protocol,
        }) => {
            if let Target::Peer(c) = target {
                if other != c.peer {
                    conn.close(
                        quinn::VarInt::from_u32(u32::from(ErrorCode::DEVICE_NOT_ALLOWED.0)),
                        b"wrong device",
                    );
                    return Err(Ended {
                        error: Some(format!("the peer is not device {}", c.peer)),
                        refused: true,
                        fatal: false,
                    });
                }
            }
            writer.set_max_frame((max_frame as usize).min(wire::DEFAULT_MAX_FRAME));
            // The answer announces the lower version of the two; never encode past ours.
            writer.set_peer_protocol(protocol.min(PROTOCOL_VERSION));
            if let Target::Relay(_) = target {
                // A device acts for one user: the first token's, unless `init --name` chose.
                if let Err(e) = device.dir().claim_user(&user) {
                    conn.close(
                        quinn::VarInt::from_u32(u32::from(ErrorCode::UNAUTHENTICATED.0)),
                        b"token for another user",
                    );
                    return Err(Ended {
                        error: Some(format!("{e}; the token is for {user}")),
                        refused: true,
                        fatal: true,
                    });
                }
            }
            user
        }
        Some(Message::Error { code, message, .. }) => {
            let refused = matches!(
                code,
                ErrorCode::UNAUTHENTICATED | ErrorCode::FORBIDDEN | ErrorCode::DEVICE_NOT_ALLOWED
            );
            return Err(Ended {
                error: Some(if message.is_empty() {
                    format!("refused with code {}", code.0)
                } else {
                    message
                }),
                refused,
                fatal: false,
            });
        }
        Some(other) => {
            return Err(Ended {
                error: Some(format!("unexpected first message {other:?}")),
                refused: false,
                fatal: false,
            })
        }
        None => {
            return Err(Ended {
                error: Some("the connection closed during the handshake".into()),
                refused: false,
                fatal: false,
            })
        }
    })
}
