//! What the WebSocket tests share: the real `weft-relay` binary started with `--ws`, and a
//! light QUIC device (an engine driven over one stream, as in `quic.rs`).

use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

use weft_core::automerge::{ObjType, ReadDoc, ScalarValue, Value, ROOT};
use weft_core::wire::Message;
use weft_core::DocId;
use weft_relay::Claims;

#[allow(unused_imports)]
pub use super::{now, RELAY};
use super::{open_subscribed, Link, RelayProcess};

pub struct Relay {
    process: RelayProcess,
    pub quic: SocketAddr,
    pub ws: SocketAddr,
    /// The HTTP address, when `extra` asked for one (`--http ADDR`).
    pub http: Option<SocketAddr>,
    extra: Vec<String>,
}

impl Relay {
    /// A relay with a WebSocket endpoint on a free port and `extra` flags.
    pub fn start(extra: &[&str]) -> Relay {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::start_in(tempfile::tempdir().unwrap(), "127.0.0.1:0", extra)
    }

    /// A relay in `dir` with a WebSocket endpoint on a free port, `extra` flags and `env`.
    pub fn start_with(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Relay {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::start_env(dir, "127.0.0.1:0", extra, env)
    }

    fn start_in(dir: tempfile::TempDir, ws: &str, extra: Vec<String>) -> Relay {
        Self::start_env(dir, ws, extra, &[])
    }

    fn start_env(
        dir: tempfile::TempDir,
        ws: &str,
        extra: Vec<String>,
        env: &[(&str, &str)],
    ) -> Relay {
        let mut args = vec!["--ws", ws];
        if !extra.iter().any(|a| a == "--http") {
            args.extend(["--http", "off"]);
        }
        args.extend(extra.iter().map(String::as_str));
        let process = RelayProcess::start(dir, &args, env);
        Relay {
            quic: process.addr("quic="),
            ws: process.addr("ws="),
            http: process
                .ready
                .contains(" http=")
                .then(|| process.addr("http=")),
            process,
            extra,
        }
    }

    /// Kills the relay (no graceful shutdown) and starts it again on the same data directory
    /// and WebSocket address, so clients reconnect to the URL they know.
    pub fn restart(self) -> Relay {
        let ws = self.ws.to_string();
        let extra = self.extra;
        let dir = self.process.kill();
        Self::start_in(dir, &ws, extra)
    }

    /// Kills the relay, runs `tamper` on its data directory (the relay is not running), and
    /// starts it again as [`Relay::restart`] does.
    pub fn restart_after(self, tamper: impl FnOnce(&std::path::Path)) -> Relay {
        let ws = self.ws.to_string();
        let extra = self.extra;
        let dir = self.process.kill();
        tamper(dir.path());
        Self::start_in(dir, &ws, extra)
    }

    /// The relay process (for the `weft` CLI helpers).
    pub fn process(&self) -> &RelayProcess {
        &self.process
    }

    /// The relay's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self.process.dir.path()
    }

    /// The relay process's id.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Sends SIGTERM; returns a handle to the process to wait on.
    pub fn terminate(self) -> Child {
        self.process.terminate()
    }

    pub fn token(&self, claims: &Claims) -> String {
        self.process.token(claims)
    }

    /// The value of metric `name` (the relay needs `--http`).
    pub fn metric(&self, name: &str) -> f64 {
        super::relay::metric(self.http.expect("a relay with --http"), name)
    }

    /// Kills the relay (no graceful shutdown); its data directory.
    pub fn kill(self) -> tempfile::TempDir {
        self.process.kill()
    }

    pub fn url(&self, token: &str) -> String {
        format!("ws://{}/?token={token}", self.ws)
    }

    /// The upgrade URL with a one-time ticket instead of a token.
    pub fn ticket_url(&self, ticket: &str) -> String {
        format!("ws://{}/?ticket={ticket}", self.ws)
    }
}

/// A QUIC device: its engine, driven over the relay stream.
pub struct Device {
    link: Link,
    /// Ids of the control requests answered successfully.
    pub done: Vec<u64>,
}

crate::extends!(Device, link: Link);

impl Device {
    pub async fn connect(relay: &Relay, token: String) -> Device {
        let link = Link::connect(relay.quic, relay.process.cert(), token, "ws test").await;
        let mut d = Device {
            link,
            done: Vec::new(),
        };
        let welcome = d.next().await;
        assert!(
            matches!(welcome, Some(Message::Welcome { .. })),
            "{welcome:?}"
        );
        d.engine.add_conn(RELAY);
        d
    }

    /// Subscribes to `doc` (loading it into the engine first if it is not there).
    pub async fn subscribe(&mut self, doc: DocId) {
        if self.engine.heads(doc).is_none() {
            self.engine.load(doc);
        }
        self.flush().await;
        self.writer.send(&Message::Subscribe { doc }).await.unwrap();
    }

    /// The next message from the relay; the engine's timers run while waiting.
    async fn next(&mut self) -> Option<Message> {
        self.link.recv(Duration::from_secs(30)).await.ok().flatten()
    }

    /// The next ephemeral message (presence datagrams are skipped).
    pub async fn ephemeral(&self) -> (DocId, Vec<u8>) {
        loop {
            let msg = self.link.datagram(Duration::from_secs(30)).await;
            if let Message::Ephemeral { doc, data, .. } = msg {
                return (doc, data);
            }
        }
    }

    /// Runs the device until `done` holds (or the relay closes the stream).
    pub async fn until(&mut self, mut done: impl FnMut(&mut Device) -> bool) -> bool {
        self.flush().await;
        loop {
            if done(self) {
                return true;
            }
            let Some(msg) = self.next().await else {
                return done(self);
            };
            match msg {
                Message::Subscribed { doc, role } => {
                    open_subscribed(&mut self.engine, doc, role);
                }
                m @ (Message::Sync { .. } | Message::Changes { .. } | Message::Ack { .. }) => {
                    self.engine.handle(RELAY, m).unwrap();
                }
                Message::Reply { id, code: None, .. } => self.done.push(id),
                _ => {}
            }
            self.flush().await;
        }
    }

    pub fn set(&mut self, doc: DocId, key: &str, value: &str) {
        self.put(doc, key, value);
    }

    /// The string at `key` in the document's root, if any: a plain string, or a text object
    /// (what automerge-js makes of a JavaScript string).
    pub fn get(&mut self, doc: DocId, key: &str) -> Option<String> {
        self.engine
            .read(doc, |d| match d.automerge().get(ROOT, key) {
                Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                    ScalarValue::Str(s) => Some(s.to_string()),
                    _ => None,
                },
                Ok(Some((Value::Object(ObjType::Text), id))) => d.automerge().text(&id).ok(),
                _ => None,
            })
            .ok()
            .flatten()
    }
}

/// An HTTP request to the relay: the status code, the head and the body of the answer.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: relay\r\nContent-Length: 0\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

/// A ticket for `token`, and its announced life in seconds.
pub async fn ticket(relay: &Relay, token: &str) -> (String, u64) {
    let auth = format!("Authorization: Bearer {token}");
    let (status, _, body) = http(relay.http.unwrap(), "POST", "/ws-ticket", &[&auth]).await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    (
        json["ticket"].as_str().unwrap().to_owned(),
        json["expires_in"].as_u64().unwrap(),
    )
}
