//! QUIC transport shared by the device runtime and the relay (cargo feature `quic`).
//!
//! The engine stays sans-IO; this module only carries [`wire`](crate::wire) frames between
//! endpoints. Without the `quic` feature none of it, nor quinn, tokio or rustls, is built.
//!
//! # Identity and trust
//!
//! Every device owns a [`DeviceKey`] (ECDSA P-256, self-signed certificate); its
//! [`DeviceId`](crate::DeviceId) is the blake3 fingerprint of the certificate's public key. A
//! client always presents its device certificate, and the server learns the id from the
//! handshake with [`peer_device_id`]:
//!
//! | connection      | server ([`server_config`])            | client ([`client_config`])                       |
//! |-----------------|---------------------------------------|--------------------------------------------------|
//! | device -> relay | relay cert, [`ClientAuth::RequireDeviceCert`] | [`ServerTrust::PinnedCert`] (`--relay-cert`) or [`ServerTrust::SystemRoots`] |
//! | device -> peer  | device key, [`ClientAuth::Allow`] (`--allow`) | [`ServerTrust::PinnedDevice`] (`--peer-key`)   |
//!
//! Both sides speak TLS 1.3 with ALPN [`ALPN`] only (a client offering anything else is
//! refused) and ring as the only crypto provider. A refused handshake surfaces as an error for
//! which [`TransportError::is_refused`] is true.
//!
//! # Connection layout
//!
//! The dialer opens one bidirectional **control stream** first and sends `Hello`; the other
//! side answers `Welcome` (or `Error` and closes). Connection-level messages (`Hello`,
//! `Welcome`, `Docs`, `Token`, `Error` without a document) travel on it. Document messages may
//! travel on the control stream too, or on further streams: each frame names its document, so
//! a receiver feeds frames from all its streams into the engine alike. Ephemeral messages go
//! as datagrams ([`send_datagram`]) when they fit, else on a stream.
//!
//! Timing: keep-alives every 3 s and a 9 s idle timeout, so a vanished peer is noticed within
//! 10 s even when nothing is being synced.
//!
//! # Example
//!
//! A relay-like server and a device exchanging `Hello` over loopback:
//!
//! ```
//! use weft_core::quic::{self, ClientAuth, DeviceKey, FrameReader, FrameWriter, ServerTrust};
//! use weft_core::wire::{Message, DEFAULT_MAX_FRAME, PROTOCOL_VERSION};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The relay's certificate (a `--dev` one here) and a device's key.
//! let relay_cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
//! let device = DeviceKey::generate()?;
//!
//! let server_config = quic::server_config(
//!     vec![relay_cert.cert.der().clone()],
//!     rustls::pki_types::PrivatePkcs8KeyDer::from(relay_cert.signing_key.serialize_der()).into(),
//!     ClientAuth::RequireDeviceCert,
//! )?;
//! let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse()?)?;
//! let server_addr = server.local_addr()?;
//!
//! let trust = ServerTrust::PinnedCert(vec![relay_cert.cert.der().clone()]);
//! let client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
//! let connecting = client.connect_with(quic::client_config(&device, trust)?, server_addr, "localhost")?;
//!
//! let (accepted, dialed) = tokio::join!(async { server.accept().await.unwrap().await }, connecting);
//! let (accepted, dialed) = (accepted?, dialed?);
//! assert_eq!(quic::peer_device_id(&accepted), Some(device.device_id()));
//!
//! // The dialer opens the control stream; it exists for the peer once data is sent on it.
//! let (send, _recv) = dialed.open_bi().await?;
//! let mut writer = FrameWriter::new(send, DEFAULT_MAX_FRAME);
//! writer.send(&Message::Hello {
//!     protocol: PROTOCOL_VERSION,
//!     device: device.device_id(),
//!     token: String::new(),
//!     agent: "example".to_owned(),
//! }).await?;
//!
//! let (_send, recv) = accepted.accept_bi().await?;
//! let mut reader = FrameReader::new(recv, DEFAULT_MAX_FRAME);
//! let hello = reader.recv().await?;
//! assert!(matches!(hello, Some(Message::Hello { device: d, .. }) if d == device.device_id()));
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

mod framed;
mod hello;
mod key;
mod tls;

pub use framed::{recv_datagram, send_datagram, FrameReader, FrameWriter, TransportError};
pub use hello::{accept_hello, close_code, refuse, Greeted, HelloRefused};
pub use key::{DeviceKey, KeyError};
pub use tls::{client_config, peer_device_id, server_config, ClientAuth, ConfigError, ServerTrust};

/// The only application protocol weft's QUIC endpoints speak (protocol v1).
pub const ALPN: &[u8] = b"weft/1";

/// The name in every device certificate. Dial a peer device with it as the server name: a
/// device is identified by its key, not by a name, so any name would do.
pub const DEVICE_SERVER_NAME: &str = "weft-device";

/// How often an idle connection sends a keep-alive.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(3);

/// How long a connection may hear nothing before it is considered lost (the smaller of both
/// sides' values applies).
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(9);

/// How many bidirectional streams a peer may have open at once. A weft connection uses one
/// (the dialer's, for every frame; datagrams carry the ephemeral traffic) and no unidirectional
/// stream. Quinn keeps state for every stream a peer may open: at 1,024 of each direction an
/// idle connection cost the relay ~180 KiB, at 2 and none ~40 KiB (`weft-bench memory`), and a
/// peer cannot make us hold streams we never read.
pub const MAX_BIDI_STREAMS: u32 = 2;

/// The transport settings of [`server_config`] and [`client_config`], for drivers that
/// adjust them: keep-alive [`KEEP_ALIVE_INTERVAL`], idle timeout [`MAX_IDLE_TIMEOUT`],
/// [`MAX_BIDI_STREAMS`] bidirectional streams and no unidirectional one, datagrams enabled.
pub fn transport_config() -> quinn::TransportConfig {
    let mut config = quinn::TransportConfig::default();
    config
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            MAX_IDLE_TIMEOUT.as_millis() as u32,
        ))))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_BIDI_STREAMS))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER);
    config
}

/// The UDP buffer sizes [`bind_udp`] asks for. The Linux default (208 KiB) holds a few
/// milliseconds of a busy relay's traffic: a burst from many devices arriving while the relay's
/// thread is busy overflowed it and lost packets, and every loss holds up that connection's
/// acknowledged data until the retransmission arrives. The kernel caps the request at
/// `net.core.rmem_max` / `wmem_max`; raise those for more.
pub const UDP_BUFFER: usize = 4 * 1024 * 1024;

/// A UDP socket for a QUIC endpoint bound to `addr`, with [`UDP_BUFFER`]-sized receive and send
/// buffers where the OS allows (a refusal is logged at debug and the default kept), dual-stack
/// when `addr` is an IPv6 wildcard.
pub fn bind_udp(addr: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        if let Err(e) = socket.set_only_v6(false) {
            tracing::debug!(error = %e, "UDP socket stays IPv6-only");
        }
    }
    if let Err(e) = socket.set_recv_buffer_size(UDP_BUFFER) {
        tracing::debug!(error = %e, "UDP receive buffer left at the OS default");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_BUFFER) {
        tracing::debug!(error = %e, "UDP send buffer left at the OS default");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The receive buffer `socket` was granted, in the bytes the caller asked for (Linux reports
/// twice the size set, for its own bookkeeping); `None` if the OS does not say.
pub fn recv_buffer(socket: &std::net::UdpSocket) -> Option<usize> {
    let reported = socket2::SockRef::from(socket).recv_buffer_size().ok()?;
    if cfg!(target_os = "linux") {
        Some(reported / 2)
    } else {
        Some(reported)
    }
}

/// A QUIC endpoint on [`bind_udp`]'s socket: a server when `server` is given, else a client
/// only. Call within a tokio runtime.
pub fn endpoint(
    addr: std::net::SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    endpoint_on(bind_udp(addr)?, server)
}

/// [`endpoint`] on a socket the caller bound (with [`bind_udp`], to inspect it first).
pub fn endpoint_on(
    socket: std::net::UdpSocket,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        std::sync::Arc::new(quinn::TokioRuntime),
    )
}

/// Unread datagrams beyond this are dropped (oldest first): ephemeral data is best-effort.
/// ring, the one crypto provider weft uses (quinn 0.11's default; no aws-lc-rs).
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    use std::sync::{Arc, OnceLock};
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

const DATAGRAM_RECEIVE_BUFFER: usize = 1024 * 1024;
const DATAGRAM_SEND_BUFFER: usize = 1024 * 1024;

#[cfg(test)]
mod tests;
