//! samod over the WebSocket stack the relay uses (tokio-tungstenite), for the `ws-native`
//! workload's clients and for `weft-samod-server`. samod's own `tungstenite` feature would pull
//! a second tungstenite and native-tls; its `Transport::new` takes any byte stream and sink, so
//! this file adapts a WebSocket to one: binary messages are samod's messages, pings and pongs
//! are skipped, a close or a text message ends the stream.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// A WebSocket connection as a samod transport.
pub(crate) fn transport<S>(ws: WebSocketStream<S>) -> samod::Transport
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let stream = stream
        .take_while(|m| {
            let open = !matches!(m, Ok(Message::Close(_)) | Ok(Message::Text(_)));
            std::future::ready(open)
        })
        .filter_map(|m| {
            std::future::ready(match m {
                Ok(Message::Binary(b)) => Some(Ok(b.to_vec())),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
        })
        .boxed();
    let sink = sink.with(|bytes: Vec<u8>| {
        std::future::ready(Ok::<_, tungstenite::Error>(Message::Binary(bytes.into())))
    });
    samod::Transport::new(stream, Box::pin(sink))
}
