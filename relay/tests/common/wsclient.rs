//! A raw WebSocket client of the relay's automerge-repo endpoint (tokio-tungstenite,
//! hand-built CBOR): what a hostile or malformed client sends and what it gets back.

use std::time::Duration;

use ciborium::Value;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use weft_core::automerge::sync::{self, SyncDoc};
use weft_core::automerge::Automerge;
use weft_core::DocId;

use super::ws::Relay;

pub type Client = WebSocketStream<TcpStream>;

/// A raw client: connects with `token` in the URL.
pub async fn connect(relay: &Relay, token: &str) -> Result<Client, u16> {
    connect_url(relay, &relay.url(token)).await
}

/// A raw client connected to `url` (the relay's WebSocket address with a query).
pub async fn connect_url(relay: &Relay, url: &str) -> Result<Client, u16> {
    let tcp = TcpStream::connect(relay.ws).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    match tokio_tungstenite::client_async(url, tcp).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

pub fn cbor(fields: Vec<(&str, Value)>) -> Vec<u8> {
    let map = Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Value::Text(k.into()), v))
            .collect(),
    );
    let mut out = Vec::new();
    ciborium::into_writer(&map, &mut out).unwrap();
    out
}

pub fn text(s: &str) -> Value {
    Value::Text(s.into())
}

pub fn join_msg(peer: &str) -> Vec<u8> {
    cbor(vec![
        ("type", text("join")),
        ("senderId", text(peer)),
        ("peerMetadata", Value::Map(vec![])),
        ("supportedProtocolVersions", Value::Array(vec![text("1")])),
    ])
}

/// The first sync message of a peer that has nothing: what automerge-repo sends in `request`.
pub fn empty_sync() -> Vec<u8> {
    Automerge::new()
        .generate_sync_message(&mut sync::State::new())
        .unwrap()
        .encode()
}

pub fn sync_msg(kind: &str, peer: &str, doc: DocId, data: Vec<u8>) -> Vec<u8> {
    cbor(vec![
        ("type", text(kind)),
        ("senderId", text(peer)),
        ("targetId", text("relay")),
        ("documentId", text(&doc.to_string())),
        ("data", Value::Bytes(data)),
    ])
}

/// What the relay sent: a message's fields, or the close frame.
#[derive(Debug)]
pub enum Got {
    Msg(Vec<(String, Value)>),
    Closed(Option<CloseFrame>),
}

impl Got {
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Got::Msg(fields) => fields.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            Got::Closed(_) => None,
        }
    }

    pub fn kind(&self) -> Option<&str> {
        match self.field("type") {
            Some(Value::Text(t)) => Some(t),
            _ => None,
        }
    }

    pub fn doc(&self) -> Option<DocId> {
        match self.field("documentId") {
            Some(Value::Text(t)) => t.parse().ok(),
            _ => None,
        }
    }
}

pub async fn recv(ws: &mut Client) -> Got {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("the relay went silent");
        match next {
            Some(Ok(WsMessage::Binary(b))) => {
                let Value::Map(entries) = ciborium::from_reader(&b[..]).unwrap() else {
                    panic!("not a map")
                };
                let fields = entries
                    .into_iter()
                    .map(|(k, v)| match k {
                        Value::Text(k) => (k, v),
                        other => panic!("non-text key {other:?}"),
                    })
                    .collect();
                return Got::Msg(fields);
            }
            Some(Ok(WsMessage::Close(frame))) => return Got::Closed(frame),
            None | Some(Err(_)) => return Got::Closed(None),
            Some(Ok(_)) => {}
        }
    }
}

/// The next message that is not an `error` announcement (those precede a close).
pub async fn recv_skipping_errors(ws: &mut Client) -> Got {
    loop {
        let got = recv(ws).await;
        if got.kind() != Some("error") {
            return got;
        }
    }
}

pub async fn send(ws: &mut Client, frame: Vec<u8>) {
    ws.send(WsMessage::Binary(frame.into())).await.unwrap();
}

/// Connects and joins as `peer`; returns the socket after the relay's `peer` answer.
pub async fn joined(relay: &Relay, token: &str, peer: &str) -> Client {
    let mut ws = connect(relay, token).await.unwrap();
    send(&mut ws, join_msg(peer)).await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer.kind(), Some("peer"), "{answer:?}");
    assert_eq!(answer.field("selectedProtocolVersion"), Some(&text("1")));
    assert_eq!(answer.field("targetId"), Some(&text(peer)));
    ws
}

/// Requests `doc` (the client lacks it) and returns the relay's first answer about it.
pub async fn request(ws: &mut Client, peer: &str, doc: DocId) -> Got {
    send(ws, sync_msg("request", peer, doc, empty_sync())).await;
    recv(ws).await
}

/// Offers `doc` with a `sync` (the client has it: a new document is created for a token that
/// may create) and returns the relay's first answer about it.
pub async fn upload(ws: &mut Client, peer: &str, doc: DocId) -> Got {
    send(ws, sync_msg("sync", peer, doc, empty_sync())).await;
    recv(ws).await
}

pub fn doc(n: u8) -> DocId {
    DocId::from_bytes([n; 16])
}

pub fn close_code(got: &Got) -> Option<CloseCode> {
    match got {
        Got::Closed(Some(f)) => Some(f.code),
        _ => None,
    }
}
