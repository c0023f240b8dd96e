//! Frames over a real loopback connection: a header checked before its body is allocated, the
//! version byte, a stream ending mid-frame, and a `recv` cancelled mid-frame.

use crate::quic::tests::{bounded, connect_device_to_relay, doc, hello};
use crate::quic::TransportError;
use crate::wire::{FrameError, Message, DEFAULT_MAX_FRAME};

#[tokio::test]
async fn an_oversized_frame_header_is_refused_before_its_body_arrives() {
    let mut c = connect_device_to_relay().await;
    // A header announcing 4 GiB, and no body: the stream stays open.
    bounded(c.device_writer.get_mut().write_all(&[
        crate::wire::PROTOCOL_V1,
        0xff,
        0xff,
        0xff,
        0xff,
    ]))
    .await
    .unwrap();
    let err = bounded(c.relay_reader.recv()).await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Frame(FrameError::TooLarge {
                len: 0xffff_ffff,
                max: DEFAULT_MAX_FRAME
            })
        ),
        "{err:?}"
    );
    assert_eq!(c.relay_reader.buffered().1, 0, "nothing was allocated");
    assert!(matches!(
        bounded(c.relay_reader.recv()).await,
        Err(TransportError::Poisoned)
    ));
}

#[tokio::test]
async fn a_frame_of_another_protocol_version_is_refused_at_its_first_byte() {
    let mut c = connect_device_to_relay().await;
    bounded(c.device_writer.get_mut().write_all(&[0x02]))
        .await
        .unwrap();
    let err = bounded(c.relay_reader.recv()).await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Frame(FrameError::UnsupportedVersion { got: 0x02 })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_stream_ending_inside_a_frame_is_truncated_not_finished() {
    let mut c = connect_device_to_relay().await;
    let frame = crate::wire::frame(&hello(c.device.device_id()), DEFAULT_MAX_FRAME).unwrap();
    bounded(
        c.device_writer
            .get_mut()
            .write_all(&frame[..frame.len() - 1]),
    )
    .await
    .unwrap();
    c.device_writer.finish().unwrap();
    let err = bounded(c.relay_reader.recv()).await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Truncated { received, expected }
                if received == frame.len() - 1 && expected == frame.len()
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn recv_cancelled_mid_frame_resumes_without_losing_bytes() {
    let mut c = connect_device_to_relay().await;
    let message = Message::Sync {
        doc: doc(),
        reset: false,
        data: vec![0x5a; 100_000].into(),
    };
    let frame = crate::wire::frame(&message, DEFAULT_MAX_FRAME).unwrap();
    let half = frame.len() / 2;
    bounded(c.device_writer.get_mut().write_all(&frame[..half]))
        .await
        .unwrap();

    // A select! loop whose other branch keeps winning: each round drops a pending `recv`.
    bounded(async {
        loop {
            tokio::select! {
                biased;
                received = c.relay_reader.recv() => panic!("half a frame decoded: {received:?}"),
                () = tokio::task::yield_now() => {}
            }
            if c.relay_reader.buffered().0 == half {
                break;
            }
        }
    })
    .await;

    bounded(c.device_writer.get_mut().write_all(&frame[half..]))
        .await
        .unwrap();
    assert_eq!(bounded(c.relay_reader.recv()).await.unwrap(), Some(message));
}
