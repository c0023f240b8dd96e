//! Loopback tests: real quinn endpoints on 127.0.0.1, every wait bounded.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::tls::{client_tls, quic_client_config};
use super::*;
use crate::wire::{FrameError, Message, DEFAULT_MAX_FRAME, PROTOCOL_VERSION};
use crate::{DeviceId, DocId};

const LIMIT: Duration = Duration::from_secs(10);

/// Fails the test instead of hanging when `fut` takes longer than [`LIMIT`].
pub(super) async fn bounded<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("the test step finished within its time limit")
}

/// A relay's `--dev` identity: a self-signed certificate for localhost.
pub(super) struct RelayCert {
    pub(super) cert: CertificateDer<'static>,
    pub(super) key: PrivateKeyDer<'static>,
}

pub(super) fn relay_cert() -> RelayCert {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    RelayCert {
        cert: generated.cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()).into(),
    }
}

pub(super) fn relay(cert: &RelayCert) -> (quinn::Endpoint, SocketAddr) {
    let config = server_config(
        vec![cert.cert.clone()],
        cert.key.clone_key(),
        ClientAuth::RequireDeviceCert,
    )
    .unwrap();
    listen(config)
}

pub(super) fn peer_listener(
    device: &DeviceKey,
    allow: Vec<DeviceId>,
) -> (quinn::Endpoint, SocketAddr) {
    let config = server_config(
        device.cert_chain(),
        device.private_key(),
        ClientAuth::Allow(allow),
    )
    .unwrap();
    listen(config)
}

pub(super) fn listen(config: quinn::ServerConfig) -> (quinn::Endpoint, SocketAddr) {
    let endpoint = endpoint("127.0.0.1:0".parse().unwrap(), Some(config)).unwrap();
    let addr = endpoint.local_addr().unwrap();
    (endpoint, addr)
}

/// Dials `addr` with `config`; the error, if the handshake fails on either side.
///
/// A TLS 1.3 client finishes its handshake before the server has checked the client's
/// certificate, so a refusal by the server may only show once the connection is used: the
/// dialer then waits for the connection to close (a refused one closes at once).
pub(super) async fn dial(
    config: quinn::ClientConfig,
    addr: SocketAddr,
    server_name: &str,
    expect_refusal: bool,
) -> Result<quinn::Connection, TransportError> {
    let client = endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let connection = client.connect_with(config, addr, server_name)?.await?;
    if expect_refusal {
        return Err(connection.closed().await.into());
    }
    Ok(connection)
}

/// The server's side of the next handshake.
pub(super) async fn accept(server: &quinn::Endpoint) -> Result<quinn::Connection, TransportError> {
    let incoming = server.accept().await.expect("the endpoint is open");
    Ok(incoming.await?)
}

/// `bind_udp` gets the buffers it asks for, up to the kernel's caps (Linux reports twice the
/// size set, for its bookkeeping).
#[cfg(target_os = "linux")]
#[test]
fn udp_sockets_get_large_buffers() {
    let cap = |name: &str| -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let socket = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    assert_eq!(recv_buffer(&socket), Some(UDP_BUFFER.min(cap("rmem_max"))));
    let socket = socket2::SockRef::from(&socket);
    assert_eq!(
        socket.recv_buffer_size().unwrap(),
        2 * UDP_BUFFER.min(cap("rmem_max"))
    );
    assert_eq!(
        socket.send_buffer_size().unwrap(),
        2 * UDP_BUFFER.min(cap("wmem_max"))
    );
}

pub(super) fn doc() -> DocId {
    DocId::from_bytes([7; 16])
}

pub(super) fn hello(device: DeviceId) -> Message {
    Message::Hello {
        protocol: PROTOCOL_VERSION,
        device,
        token: "t.o.k".to_owned(),
        agent: "weft-test".to_owned(),
    }
}

/// A device and a relay connected, with the dialer's control stream opened and announced.
pub(super) struct Connected {
    pub(super) device: DeviceKey,
    pub(super) device_conn: quinn::Connection,
    pub(super) relay_conn: quinn::Connection,
    pub(super) device_writer: FrameWriter,
    pub(super) device_reader: FrameReader,
    pub(super) relay_writer: FrameWriter,
    pub(super) relay_reader: FrameReader,
    pub(super) _endpoint: quinn::Endpoint,
}

pub(super) async fn connect_device_to_relay() -> Connected {
    let cert = relay_cert();
    let (server, addr) = relay(&cert);
    let device = DeviceKey::generate().unwrap();
    let config = client_config(&device, ServerTrust::PinnedCert(vec![cert.cert.clone()])).unwrap();
    let (relay_conn, device_conn) =
        bounded(async { tokio::join!(accept(&server), dial(config, addr, "localhost", false)) })
            .await;
    let (relay_conn, device_conn) = (relay_conn.unwrap(), device_conn.unwrap());

    let (send, recv) = bounded(device_conn.open_bi()).await.unwrap();
    let mut device_writer = FrameWriter::new(send, DEFAULT_MAX_FRAME);
    bounded(device_writer.send(&hello(device.device_id())))
        .await
        .unwrap();
    let (send, recv_relay) = bounded(relay_conn.accept_bi()).await.unwrap();
    let mut relay_reader = FrameReader::new(recv_relay, DEFAULT_MAX_FRAME);
    assert_eq!(
        bounded(relay_reader.recv()).await.unwrap(),
        Some(hello(device.device_id()))
    );
    Connected {
        device,
        device_conn,
        relay_conn,
        device_writer,
        device_reader: FrameReader::new(recv, DEFAULT_MAX_FRAME),
        relay_writer: FrameWriter::new(send, DEFAULT_MAX_FRAME),
        relay_reader,
        _endpoint: server,
    }
}

#[tokio::test]
async fn a_device_syncs_with_a_relay_that_learns_its_id_from_the_handshake() {
    let mut c = connect_device_to_relay().await;
    assert_eq!(peer_device_id(&c.relay_conn), Some(c.device.device_id()));
    let handshake = c.relay_conn.handshake_data().unwrap();
    let handshake = handshake
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .unwrap();
    assert_eq!(handshake.protocol, Some(ALPN.to_vec()));

    // A 1 MiB sync message each way, then a small one behind it.
    let big = Message::Sync {
        doc: doc(),
        reset: true,
        data: (0..1024 * 1024)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into(),
    };
    let ack = Message::Ack {
        doc: doc(),
        heads: vec![],
    };
    let (sent, received) = bounded(async {
        tokio::join!(
            async {
                c.device_writer.send(&big).await?;
                c.device_writer.send(&ack).await
            },
            async {
                let first = c.relay_reader.recv().await?;
                let second = c.relay_reader.recv().await?;
                Ok::<_, TransportError>((first, second))
            }
        )
    })
    .await;
    sent.unwrap();
    assert_eq!(received.unwrap(), (Some(big.clone()), Some(ack.clone())));

    let (sent, received) =
        bounded(async { tokio::join!(c.relay_writer.send(&big), c.device_reader.recv()) }).await;
    sent.unwrap();
    assert_eq!(received.unwrap(), Some(big));

    // The device finishes its side: the relay sees a clean end, after which reading stays done.
    c.device_writer.finish().unwrap();
    assert_eq!(bounded(c.relay_reader.recv()).await.unwrap(), None);
    assert_eq!(bounded(c.relay_reader.recv()).await.unwrap(), None);
    drop(c.device_conn);
}

#[tokio::test]
async fn the_relay_fans_out_one_encoding_to_every_subscriber() {
    let mut a = connect_device_to_relay().await;
    let mut b = connect_device_to_relay().await;
    let changes = Message::Changes {
        doc: doc(),
        changes: vec![bytes::Bytes::from(vec![1, 2, 3])],
    };
    let frame = bytes::Bytes::from(crate::wire::frame(&changes, DEFAULT_MAX_FRAME).unwrap());
    bounded(a.relay_writer.send_shared(frame.clone()))
        .await
        .unwrap();
    bounded(b.relay_writer.send_raw(&frame)).await.unwrap();
    assert_eq!(
        bounded(a.device_reader.recv()).await.unwrap(),
        Some(changes.clone())
    );
    assert_eq!(
        bounded(b.device_reader.recv()).await.unwrap(),
        Some(changes)
    );

    // A frame larger than a subscriber accepts is refused before anything is written.
    a.relay_writer.set_max_frame(2);
    let err = bounded(a.relay_writer.send_shared(frame))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TransportError::Frame(FrameError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn ephemeral_messages_travel_as_datagrams() {
    let c = connect_device_to_relay().await;
    let typing = Message::Ephemeral {
        doc: doc(),
        user: None,
        device: None,
        data: b"typing".to_vec(),
    };
    send_datagram(&c.device_conn, &typing).unwrap();
    assert_eq!(
        bounded(recv_datagram(&c.relay_conn, DEFAULT_MAX_FRAME))
            .await
            .unwrap(),
        typing
    );
    let stamped = Message::Ephemeral {
        doc: doc(),
        user: Some("alice".to_owned()),
        device: Some(c.device.device_id()),
        data: b"typing".to_vec(),
    };
    send_datagram(&c.relay_conn, &stamped).unwrap();
    assert_eq!(
        bounded(recv_datagram(&c.device_conn, DEFAULT_MAX_FRAME))
            .await
            .unwrap(),
        stamped
    );

    // Too large for one packet: the caller sends it on a stream instead.
    let large = Message::Ephemeral {
        doc: doc(),
        user: None,
        device: None,
        data: vec![0; 64 * 1024],
    };
    let err = send_datagram(&c.device_conn, &large).unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Datagram(quinn::SendDatagramError::TooLarge)
        ),
        "{err:?}"
    );
    assert!(!err.is_refused());
}

#[tokio::test]
async fn a_closed_connection_is_not_a_refusal() {
    let mut c = connect_device_to_relay().await;
    c.relay_conn.close(quinn::VarInt::from_u32(0), b"bye");
    let err = bounded(c.device_reader.recv()).await.unwrap_err();
    assert!(
        matches!(
            err.connection_error(),
            Some(quinn::ConnectionError::ApplicationClosed(_))
        ),
        "{err:?}"
    );
    assert!(!err.is_refused());
}

#[test]
fn configs_need_no_runtime_and_share_one_provider() {
    let device = DeviceKey::generate().unwrap();
    assert!(Arc::ptr_eq(&super::provider(), &super::provider()));
    client_config(&device, ServerTrust::PinnedDevice(device.device_id())).unwrap();
    server_config(
        device.cert_chain(),
        device.private_key(),
        ClientAuth::RequireDeviceCert,
    )
    .unwrap();
    let other = DeviceKey::generate().unwrap();
    let err = server_config(
        device.cert_chain(),
        other.private_key(),
        ClientAuth::RequireDeviceCert,
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::Tls { .. }), "{err:?}");
}

/// Presents one device's certificate but signs with another device's key.
#[derive(Debug)]
struct Impersonator(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Impersonator {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_device_certificate_without_its_private_key_is_refused() {
    let laptop = DeviceKey::generate().unwrap();
    let phone = DeviceKey::generate().unwrap();
    let thief = DeviceKey::generate().unwrap();
    let (listener, addr) = peer_listener(&laptop, vec![phone.device_id()]);

    // The thief copied the phone's certificate (it is public) but holds only its own key.
    let signing_key = super::provider()
        .key_provider
        .load_private_key(thief.private_key())
        .unwrap();
    let stolen = rustls::sign::CertifiedKey::new(phone.cert_chain(), signing_key);
    let mut tls = client_tls(&phone, ServerTrust::PinnedDevice(laptop.device_id())).unwrap();
    tls.client_auth_cert_resolver = Arc::new(Impersonator(Arc::new(stolen)));
    let config = quic_client_config(tls).unwrap();

    let (accepted, dialed) = bounded(async {
        tokio::join!(
            accept(&listener),
            dial(config, addr, DEVICE_SERVER_NAME, true)
        )
    })
    .await;
    let err = dialed.unwrap_err();
    assert!(err.is_refused(), "{err:?}");
    assert!(accepted.is_err());
}

/// A peer may have [`MAX_BIDI_STREAMS`] streams open: past them, opening one waits for a
/// credit the relay never gives (it reads one stream per connection), so a raw client cannot
/// make it hold state for many.
#[tokio::test]
async fn a_peer_cannot_open_more_streams_than_the_limit() {
    use std::task::{Context, Poll, Waker};
    let c = connect_device_to_relay().await;
    let mut cx = Context::from_waker(Waker::noop());
    // The hello stream is open; the rest of the credit opens at once.
    let mut extra = Vec::new();
    for _ in 1..MAX_BIDI_STREAMS {
        let mut open = std::pin::pin!(c.device_conn.open_bi());
        match open.as_mut().poll(&mut cx) {
            Poll::Ready(r) => extra.push(r.unwrap()),
            Poll::Pending => panic!("a stream within the limit did not open"),
        }
    }
    let mut over = std::pin::pin!(c.device_conn.open_bi());
    assert!(over.as_mut().poll(&mut cx).is_pending());
    assert_eq!(c.device_conn.close_reason(), None);
}
