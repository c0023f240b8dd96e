//! The relay's `/metrics` as an operator reads them, over the real binary and real QUIC.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{now, Link, RelayProcess};
use weft_core::quic;
use weft_core::wire::{self, Message};
use weft_core::DocId;
use weft_relay::Claims;

/// The value of an unlabelled metric at the relay's `/metrics`.
fn metric(http: SocketAddr, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

fn frame_len(msg: &Message) -> u64 {
    wire::frame(msg, wire::DEFAULT_MAX_FRAME).unwrap().len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_bytes_count_quic_stream_frames_and_datagrams() {
    let relay = RelayProcess::start(
        tempfile::tempdir().unwrap(),
        &["--http", "127.0.0.1:0"],
        &[],
    );
    let http = relay.addr("http=");
    let token = relay.token(&Claims::new("alice", now(), 3600).with_create(true));
    let hello_len = |id| {
        frame_len(&Message::Hello {
            protocol: wire::PROTOCOL_VERSION,
            device: id,
            token: token.clone(),
            agent: "metrics-test".into(),
        })
    };

    // Alice's hello is the only frame she sent; the relay's welcome shows it was read.
    let mut alice = Link::connect(
        relay.addr("quic="),
        relay.cert(),
        token.clone(),
        "metrics-test",
    )
    .await;
    assert!(matches!(
        alice.recv(Duration::from_secs(20)).await,
        Ok(Some(Message::Welcome { .. }))
    ));
    let hello = hello_len(alice.id);
    let read = tokio::task::spawn_blocking(move || metric(http, "weft_sync_bytes_in_total"));
    assert_eq!(read.await.unwrap(), hello);

    // Then one datagram, which the relay reads and refuses (only ephemeral messages may come
    // as datagrams) by closing the connection: it is counted too.
    let datagram = Message::Subscribe {
        doc: DocId::from_bytes([21; 16]),
    };
    quic::send_datagram(&alice.conn, &datagram).unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(20), alice.conn.closed()).await;
    assert!(closed.is_ok(), "the relay kept the connection open");
    let read = tokio::task::spawn_blocking(move || metric(http, "weft_sync_bytes_in_total"));
    assert_eq!(read.await.unwrap(), hello + frame_len(&datagram));

    // Every pass of the hub's loop is timed: the hello, the subscription refused, the close.
    let read = tokio::task::spawn_blocking(move || metric(http, "weft_hub_turn_seconds_count"));
    assert!(
        read.await.unwrap() > 0,
        "no pass of the hub's loop was timed"
    );
}
