//! Protocol v1 frames over QUIC streams and datagrams.

use bytes::Bytes;

use crate::wire::{self, FrameError, Message, FRAME_HEADER_LEN};

/// Why sending or receiving over a QUIC connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer sent a frame this side refuses (wrong version, too large, malformed); or a
    /// message to send does not fit the peer's maximum. The peer broke the protocol: close the
    /// connection.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream ended in the middle of a frame.
    #[error("the stream ended {received} bytes into a frame of {expected}")]
    Truncated {
        /// Bytes of the frame (header included) that arrived.
        received: usize,
        /// The frame's length (header included), or the header length if it was incomplete.
        expected: usize,
    },
    /// The connection failed or closed, or the handshake was refused.
    #[error(transparent)]
    Connection(#[from] quinn::ConnectionError),
    /// The connection could not be started (bad address, endpoint closed, ...).
    #[error(transparent)]
    Connect(#[from] quinn::ConnectError),
    /// Reading a stream failed.
    #[error(transparent)]
    Read(#[from] quinn::ReadError),
    /// Writing a stream failed.
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
    /// The stream was already finished or reset.
    #[error(transparent)]
    ClosedStream(#[from] quinn::ClosedStream),
    /// A datagram could not be sent (too large, unsupported by the peer, connection lost).
    #[error(transparent)]
    Datagram(#[from] quinn::SendDatagramError),
    /// [`FrameReader::recv`] was called again after it failed; the stream's framing is lost.
    #[error("the stream's framing was lost by an earlier error")]
    Poisoned,
}

impl TransportError {
    /// The connection-level error inside this one, if any.
    pub fn connection_error(&self) -> Option<&quinn::ConnectionError> {
        match self {
            TransportError::Connection(e)
            | TransportError::Read(quinn::ReadError::ConnectionLost(e))
            | TransportError::Write(quinn::WriteError::ConnectionLost(e))
            | TransportError::Datagram(quinn::SendDatagramError::ConnectionLost(e)) => Some(e),
            _ => None,
        }
    }

    /// Whether the TLS handshake was refused by either side: an unknown or wrong certificate,
    /// a device that is not allowed or not the pinned one, no common ALPN. Callers map this to
    /// the "refused" exit status; timeouts and unreachable hosts are not refusals.
    pub fn is_refused(&self) -> bool {
        let code = match self.connection_error() {
            Some(quinn::ConnectionError::TransportError(e)) => e.code,
            Some(quinn::ConnectionError::ConnectionClosed(close)) => close.error_code,
            _ => return false,
        };
        // QUIC carries TLS alerts as transport error codes 0x100..=0x1ff (RFC 9001 §4.8).
        (0x100..=0x1ff).contains(&u64::from(code))
    }
}

/// Reads protocol v1 frames from a QUIC receive stream.
///
/// Memory is bounded by what the peer actually sent, never by what it announced: the header
/// is checked against `max_frame` before anything is allocated, and the body buffer grows with
/// the data that arrives.
#[derive(Debug)]
pub struct FrameReader {
    stream: quinn::RecvStream,
    max_frame: usize,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    /// The announced body length once the header is complete.
    body_len: Option<usize>,
    body: Vec<u8>,
    state: ReaderState,
    /// Bytes (headers and bodies) of the whole frames read so far.
    frame_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReaderState {
    Open,
    Finished,
    Failed,
}

/// A body buffer larger than this is released after its frame instead of being reused.
const RETAINED_BODY_CAPACITY: usize = 64 * 1024;

impl FrameReader {
    /// Reads frames from `stream`, refusing bodies longer than `max_frame` bytes
    /// ([`wire::DEFAULT_MAX_FRAME`] unless configured otherwise).
    pub fn new(stream: quinn::RecvStream, max_frame: usize) -> Self {
        FrameReader {
            stream,
            max_frame,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            body_len: None,
            body: Vec::new(),
            state: ReaderState::Open,
            frame_bytes: 0,
        }
    }

    /// The next message, or `Ok(None)` when the peer finished the stream between frames.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel-safe: a partly received frame is kept in the reader, so calling
    /// `recv` again (for example in the next iteration of a `tokio::select!` loop) resumes
    /// where the dropped call stopped and no byte is lost or read twice.
    ///
    /// # Errors
    ///
    /// Any error ends the stream's framing: later calls return [`TransportError::Poisoned`].
    /// [`TransportError::Frame`] means the peer broke the protocol; the caller should close the
    /// connection (after an `Error` message with `TOO_LARGE`, `MALFORMED` or
    /// `UNSUPPORTED_VERSION` if it likes).
    pub async fn recv(&mut self) -> Result<Option<Message>, TransportError> {
        match self.state {
            ReaderState::Open => {}
            ReaderState::Finished => return Ok(None),
            ReaderState::Failed => return Err(TransportError::Poisoned),
        }
        let result = self.recv_inner().await;
        match &result {
            Ok(Some(_)) => {}
            Ok(None) => self.state = ReaderState::Finished,
            Err(_) => self.state = ReaderState::Failed,
        }
        result
    }

    // Cancel safety: every `.await` below is a cancel-safe quinn read, and whatever a completed
    // read returned is stored in `self` before the next `.await`.
    async fn recv_inner(&mut self) -> Result<Option<Message>, TransportError> {
        loop {
            let Some(len) = self.body_len else {
                let read = self
                    .stream
                    .read(&mut self.header[self.header_len..])
                    .await?;
                let Some(n) = read else {
                    if self.header_len == 0 {
                        return Ok(None);
                    }
                    return Err(TransportError::Truncated {
                        received: self.header_len,
                        expected: FRAME_HEADER_LEN,
                    });
                };
                self.header_len += n;
                // Checks the version byte as soon as it arrives, and the length before any
                // allocation.
                self.body_len =
                    wire::decode_header(&self.header[..self.header_len], self.max_frame)?;
                continue;
            };

            if self.body.len() == len {
                return self.take_message(None).map(Some);
            }
            let wanted = len - self.body.len();
            let Some(chunk) = self.stream.read_chunk(wanted, true).await? else {
                return Err(TransportError::Truncated {
                    received: FRAME_HEADER_LEN + self.body.len(),
                    expected: FRAME_HEADER_LEN + len,
                });
            };
            if self.body.is_empty() && chunk.bytes.len() == len {
                // The whole body in one chunk: decode it in place.
                return self.take_message(Some(&chunk.bytes)).map(Some);
            }
            // Grow with what arrived (at most doubling, never past the announced length), so a
            // peer that announces a large frame and sends little costs little.
            let needed = self.body.len() + chunk.bytes.len();
            if needed > self.body.capacity() {
                let target = needed.max(self.body.capacity() * 2).min(len);
                self.body.reserve_exact(target - self.body.len());
            }
            self.body.extend_from_slice(&chunk.bytes);
        }
    }

    /// Decodes the completed frame (from `whole` or the buffer) and resets for the next one.
    fn take_message(&mut self, whole: Option<&[u8]>) -> Result<Message, TransportError> {
        let message = wire::decode_body(whole.unwrap_or(&self.body));
        let body_len = self.body_len.unwrap_or(0);
        self.frame_bytes += (FRAME_HEADER_LEN + body_len) as u64;
        self.header_len = 0;
        self.body_len = None;
        if self.body.capacity() > RETAINED_BODY_CAPACITY {
            self.body = Vec::new();
        } else {
            self.body.clear();
        }
        Ok(message?)
    }

    /// The largest body accepted.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Bytes (headers included) of every whole frame read so far, valid or not: what a
    /// metric of received bytes counts.
    pub fn frame_bytes(&self) -> u64 {
        self.frame_bytes
    }

    /// The underlying stream (to `stop` it, read its id, ...). Reading from it directly breaks
    /// the framing.
    pub fn get_mut(&mut self) -> &mut quinn::RecvStream {
        &mut self.stream
    }

    /// The underlying stream; bytes of a partly received frame are lost.
    pub fn into_inner(self) -> quinn::RecvStream {
        self.stream
    }

    /// Bytes of a partly received frame held in the reader, and the body buffer's capacity.
    #[cfg(test)]
    pub(super) fn buffered(&self) -> (usize, usize) {
        (self.header_len + self.body.len(), self.body.capacity())
    }
}

/// Writes protocol v1 frames to a QUIC send stream.
///
/// # Cancel safety
///
/// The send methods are **not** cancel-safe: a dropped call may have written part of a frame,
/// after which the stream is unusable (reset it or close the connection). Await them to
/// completion: in a writer task fed by a bounded channel, or in the body of a `select!` branch,
/// never as one of its futures.
#[derive(Debug)]
pub struct FrameWriter {
    stream: quinn::SendStream,
    max_frame: usize,
    encoding: wire::Encoding,
}

impl FrameWriter {
    /// Writes frames to `stream`, refusing to encode bodies longer than `max_frame` bytes (the
    /// peer's limit: [`wire::DEFAULT_MAX_FRAME`] until its `Welcome` says otherwise).
    pub fn new(stream: quinn::SendStream, max_frame: usize) -> Self {
        FrameWriter {
            stream,
            max_frame,
            encoding: wire::Encoding::Named,
        }
    }

    /// Encodes `message` and writes its frame. A message too large for the peer fails with
    /// [`TransportError::Frame`] before anything is written; the stream stays usable.
    pub async fn send(&mut self, message: &Message) -> Result<(), TransportError> {
        let frame = wire::frame_as(message, self.encoding, self.max_frame)?;
        // `write_chunk` hands the buffer to quinn without copying it.
        self.stream.write_chunk(Bytes::from(frame)).await?;
        Ok(())
    }

    /// Writes one frame encoded earlier (with [`wire::frame`] or [`wire::encode_frame`]).
    /// Copies `frame` into quinn's send buffer; [`FrameWriter::send_shared`] does not.
    pub async fn send_raw(&mut self, frame: &[u8]) -> Result<(), TransportError> {
        self.check_raw(frame)?;
        self.stream.write_all(frame).await?;
        Ok(())
    }

    /// Writes one frame encoded earlier, sharing its buffer: the relay encodes a message once
    /// into [`Bytes`] and hands clones to every subscriber's writer without copying.
    pub async fn send_shared(&mut self, frame: Bytes) -> Result<(), TransportError> {
        self.check_raw(&frame)?;
        self.stream.write_chunk(frame).await?;
        Ok(())
    }

    /// Writes whole frames encoded earlier, concatenated in `frames`, as one stream write:
    /// many small frames cost one write and quinn packs them into as few packets as fit.
    pub async fn send_frames(&mut self, frames: Vec<u8>) -> Result<(), TransportError> {
        let mut rest = &frames[..];
        while !rest.is_empty() {
            let len = wire::decode_header(rest, self.max_frame)?;
            let end = len.map(|len| len + FRAME_HEADER_LEN);
            debug_assert!(
                end.is_some_and(|end| end <= rest.len()),
                "send_frames takes whole frames"
            );
            rest = &rest[end.unwrap_or(rest.len()).min(rest.len())..];
        }
        self.stream.write_chunk(Bytes::from(frames)).await?;
        Ok(())
    }

    /// Writes whole frames encoded earlier, one after another, given in parts that may be
    /// shared with other writers (a snapshot sent to many peers): quinn keeps the parts, not
    /// copies, until the peer acknowledges them. A frame may span parts, so only the first
    /// frame's header is checked against the peer's maximum.
    pub async fn send_chunks(&mut self, chunks: &mut [Bytes]) -> Result<(), TransportError> {
        if let Some(first) = chunks.iter().find(|c| !c.is_empty()) {
            if first.len() >= FRAME_HEADER_LEN {
                wire::decode_header(first, self.max_frame)?;
            }
        }
        self.stream.write_all_chunks(chunks).await?;
        Ok(())
    }

    /// Refuses a pre-encoded frame the peer would refuse. A buffer that is not exactly one
    /// frame is a bug in the caller, not input from a peer.
    fn check_raw(&self, frame: &[u8]) -> Result<(), TransportError> {
        let len = wire::decode_header(frame, self.max_frame)?;
        debug_assert_eq!(
            len.map(|len| len + FRAME_HEADER_LEN),
            Some(frame.len()),
            "send_raw takes exactly one whole frame"
        );
        Ok(())
    }

    /// Encodes for a peer that announced `protocol` (in its `Hello` or `Welcome`): compact
    /// `Changes` and `Ack` bodies from protocol 2 on. Until then, every body is named
    /// MessagePack, which any version decodes.
    pub fn set_peer_protocol(&mut self, protocol: u16) {
        self.encoding = wire::Encoding::for_protocol(protocol);
    }

    /// Changes the largest body this writer encodes (after the peer's `Welcome{max_frame}`).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// The largest body this writer encodes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Ends the stream after the frames written so far; the peer's reader then returns
    /// `Ok(None)`.
    pub fn finish(&mut self) -> Result<(), TransportError> {
        self.stream.finish()?;
        Ok(())
    }

    /// The underlying stream. Writing to it directly breaks the framing.
    pub fn get_mut(&mut self) -> &mut quinn::SendStream {
        &mut self.stream
    }

    /// The underlying stream.
    pub fn into_inner(self) -> quinn::SendStream {
        self.stream
    }
}

/// Sends `message` as one unreliable datagram holding one frame (for `Ephemeral`). Fails with
/// [`TransportError::Datagram`] (`TooLarge`) when the frame exceeds the path's datagram size:
/// send such messages on a stream instead.
pub fn send_datagram(
    connection: &quinn::Connection,
    message: &Message,
) -> Result<(), TransportError> {
    let frame = wire::frame(message, wire::DEFAULT_MAX_FRAME)?;
    connection.send_datagram(Bytes::from(frame))?;
    Ok(())
}

/// Receives the next datagram and decodes its frame. Bytes after the frame are ignored.
///
/// # Cancel safety
///
/// This method is cancel-safe: a datagram is taken from the connection's queue only when this
/// future completes.
pub async fn recv_datagram(
    connection: &quinn::Connection,
    max_frame: usize,
) -> Result<Message, TransportError> {
    let datagram = connection.read_datagram().await?;
    match wire::decode_frame(&datagram, max_frame)? {
        Some((message, _used)) => Ok(message),
        None => Err(TransportError::Truncated {
            received: datagram.len(),
            expected: match wire::decode_header(&datagram, max_frame)? {
                Some(len) => FRAME_HEADER_LEN + len,
                None => FRAME_HEADER_LEN,
            },
        }),
    }
}

#[cfg(test)]
mod tests;
