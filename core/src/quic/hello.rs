//! The first exchange on a connection, as the accepting side sees it (the relay's server and a
//! device's p2p listener alike): the dialer's device certificate, its stream, and its `Hello`
//! in a protocol version this side speaks, naming that same device. What is wrong is refused: the dialer is
//! told why in an `Error` frame and the connection is closed with the same code.

use std::time::Duration;

use super::framed::{FrameReader, FrameWriter};
use super::tls::peer_device_id;
use crate::wire::{ErrorCode, Message, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::DeviceId;

/// A connection whose dialer said a valid hello.
#[derive(Debug)]
pub struct Greeted {
    /// The dialer's device, from its certificate (the hello named the same one).
    pub device: DeviceId,
    /// The token the hello carried (empty when there was none).
    pub token: String,
    /// The protocol version to announce in the answer: the lower of the dialer's and ours.
    /// The writer already encodes for it.
    pub protocol: u16,
    /// The connection's stream, after the hello.
    pub reader: FrameReader,
    /// The connection's stream, to answer on.
    pub writer: FrameWriter,
}

/// Why a hello was refused. The dialer was told (when it had a stream) and the connection
/// closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HelloRefused {
    /// The dialer showed no device certificate.
    #[error("no device certificate")]
    NoCertificate,
    /// No stream was opened in time, or opening it failed.
    #[error("no stream: {0}")]
    NoStream(String),
    /// The stream opened, but no hello came in time.
    #[error("no hello in time")]
    Timeout,
    /// The first frame was not a hello (or did not decode).
    #[error("did not start with hello")]
    NotHello,
    /// A hello in another protocol version.
    #[error("protocol version {0}")]
    Version(u16),
    /// A hello naming another device than the certificate's.
    #[error("device mismatch")]
    WrongDevice,
}

/// The QUIC close code of `code`.
pub fn close_code(code: ErrorCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(u32::from(code.0))
}

/// Accepts `connection`'s stream and its hello, each within `deadline`, with frames of at most
/// `max_frame` bytes.
pub async fn accept_hello(
    connection: &quinn::Connection,
    max_frame: usize,
    deadline: Duration,
) -> Result<Greeted, HelloRefused> {
    let Some(device) = peer_device_id(connection) else {
        connection.close(
            close_code(ErrorCode::DEVICE_NOT_ALLOWED),
            b"no device certificate",
        );
        return Err(HelloRefused::NoCertificate);
    };
    let (send, recv) = tokio::time::timeout(deadline, connection.accept_bi())
        .await
        .map_err(|_| HelloRefused::NoStream("none opened in time".into()))?
        .map_err(|e| HelloRefused::NoStream(e.to_string()))?;
    let mut reader = FrameReader::new(recv, max_frame);
    let mut writer = FrameWriter::new(send, max_frame);
    let hello = tokio::time::timeout(deadline, reader.recv())
        .await
        .map_err(|_| HelloRefused::Timeout)?;
    let (token, protocol) = match hello {
        Ok(Some(Message::Hello {
            protocol,
            device: claimed,
            token,
            ..
        })) => {
            if !(MIN_PROTOCOL_VERSION..).contains(&protocol) {
                let why = "unsupported protocol version";
                refuse(connection, &mut writer, ErrorCode::UNSUPPORTED_VERSION, why).await;
                return Err(HelloRefused::Version(protocol));
            }
            if claimed != device {
                let why = "the hello's device is not the TLS device";
                refuse(connection, &mut writer, ErrorCode::DEVICE_NOT_ALLOWED, why).await;
                return Err(HelloRefused::WrongDevice);
            }
            (token, protocol.min(PROTOCOL_VERSION))
        }
        Ok(_) | Err(_) => {
            refuse(
                connection,
                &mut writer,
                ErrorCode::MALFORMED,
                "expected hello",
            )
            .await;
            return Err(HelloRefused::NotHello);
        }
    };
    writer.set_peer_protocol(protocol);
    Ok(Greeted {
        device,
        token,
        protocol,
        reader,
        writer,
    })
}

/// Tells the dialer why in an `Error` frame, then closes the connection with the same code.
pub async fn refuse(
    connection: &quinn::Connection,
    writer: &mut FrameWriter,
    code: ErrorCode,
    reason: &str,
) {
    let _ = writer
        .send(&Message::Error {
            code,
            doc: None,
            message: reason.to_string(),
        })
        .await;
    let _ = writer.finish();
    // Give the error frame a moment to leave before the close overtakes it.
    let _ = tokio::time::timeout(Duration::from_millis(500), writer.get_mut().stopped()).await;
    connection.close(close_code(code), reason.as_bytes());
}
