//! What the WebSocket tests share: the real `weft-relay` binary started with `--ws`, tokens,
//! and a light QUIC device (an engine driven over one stream, as in `quic.rs`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{ObjType, ReadDoc, ScalarValue, Value, ROOT};
use weft_core::engine::{ConnId, Engine, EngineConfig, OpenOptions, Output};
use weft_core::quic::{self, DeviceKey, FrameReader, FrameWriter, ServerTrust};
use weft_core::wire::{self, Message};
use weft_core::DocId;
use weft_relay::{load_secret, Claims, Minter};

pub const RELAY: ConnId = ConnId(0);

pub struct Relay {
    child: Child,
    pub quic: SocketAddr,
    pub ws: SocketAddr,
    pub dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl Relay {
    /// A relay with a WebSocket endpoint on a free port and `extra` flags.
    pub fn start(extra: &[&str]) -> Relay {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::start_in(tempfile::tempdir().unwrap(), "127.0.0.1:0", extra)
    }

    fn start_in(dir: tempfile::TempDir, ws: &str, extra: Vec<String>) -> Relay {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weft-relay"))
            .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--http", "off"])
            .args(["--ws", ws, "--data-dir"])
            .arg(dir.path())
            .args(&extra)
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("WEFT_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap();
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert!(ready.starts_with("weft-relay ready"), "{ready:?}");
        Relay {
            child,
            quic: ready_addr(&ready, "quic="),
            ws: ready_addr(&ready, "ws="),
            dir,
            extra,
        }
    }

    /// Kills the relay (no graceful shutdown) and starts it again on the same data directory
    /// and WebSocket address, so clients reconnect to the URL they know.
    pub fn restart(mut self) -> Relay {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let ws = self.ws.to_string();
        let extra = std::mem::take(&mut self.extra);
        Self::start_in(dir, &ws, extra)
    }

    /// Sends SIGTERM; returns a handle to the process to wait on.
    pub fn terminate(mut self) -> Child {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let placeholder = Command::new("true").spawn().unwrap();
        std::mem::replace(&mut self.child, placeholder)
    }

    pub fn token(&self, claims: &Claims) -> String {
        let secret = load_secret(&self.dir.path().join("jwt.secret")).unwrap();
        Minter::new(&secret).mint(claims).unwrap()
    }

    pub fn url(&self, token: &str) -> String {
        format!("ws://{}/?token={token}", self.ws)
    }

    fn cert(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        let tls = self.dir.path().join("tls");
        weft_relay::load_cert_and_key(&tls.join("cert.pem"), &tls.join("key.pem"))
            .unwrap()
            .cert_chain
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready_addr(ready: &str, prefix: &str) -> SocketAddr {
    ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {ready:?}"))
        .parse()
        .unwrap()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A QUIC device: its engine, driven over the relay stream.
pub struct Device {
    pub engine: Engine,
    reader: FrameReader,
    pub writer: FrameWriter,
    started: std::time::Instant,
    pub id: weft_core::DeviceId,
    pub conn: quinn::Connection,
    _endpoint: quinn::Endpoint,
    /// Ids of the control requests answered successfully.
    pub done: Vec<u64>,
}

impl Device {
    pub async fn connect(relay: &Relay, token: String) -> Device {
        let key = DeviceKey::generate().unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(
            quic::client_config(&key, ServerTrust::PinnedCert(relay.cert())).unwrap(),
        );
        let conn = endpoint
            .connect(relay.quic, "localhost")
            .unwrap()
            .await
            .unwrap();
        let (send, recv) = conn.open_bi().await.unwrap();
        let mut d = Device {
            engine: Engine::new(EngineConfig::device()),
            reader: FrameReader::new(recv, wire::DEFAULT_MAX_FRAME),
            writer: FrameWriter::new(send, wire::DEFAULT_MAX_FRAME),
            started: std::time::Instant::now(),
            id: key.device_id(),
            conn,
            _endpoint: endpoint,
            done: Vec::new(),
        };
        let hello = Message::Hello {
            protocol: wire::PROTOCOL_VERSION,
            device: key.device_id(),
            token,
            agent: "ws test".into(),
        };
        d.writer.send(&hello).await.unwrap();
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
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout(Duration::from_millis(500), self.reader.recv()).await {
                Ok(r) => return r.ok().flatten(),
                Err(_) => {
                    assert!(tokio::time::Instant::now() < deadline, "relay went silent");
                    let now = self.started.elapsed().as_millis() as u64;
                    self.engine.tick(now);
                    self.flush().await;
                }
            }
        }
    }

    /// The next ephemeral message (presence datagrams are skipped).
    pub async fn ephemeral(&self) -> (DocId, Vec<u8>) {
        loop {
            let msg = tokio::time::timeout(
                Duration::from_secs(30),
                quic::recv_datagram(&self.conn, wire::DEFAULT_MAX_FRAME),
            )
            .await
            .expect("no ephemeral message from the relay")
            .unwrap();
            if let Message::Ephemeral { doc, data, .. } = msg {
                return (doc, data);
            }
        }
    }

    pub async fn flush(&mut self) {
        while let Some(o) = self.engine.poll_output() {
            match o {
                Output::Send { msg, .. } => self.writer.send(&msg).await.unwrap(),
                Output::Persist { id, .. } => self.engine.persisted(id),
                Output::Load { doc } => self.engine.loaded(doc, None),
                _ => {}
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
                    let opts = OpenOptions {
                        send_changes: role.can_write(),
                        ..Default::default()
                    };
                    self.engine.open(RELAY, doc, opts);
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
        self.engine
            .change(doc, |am| {
                let mut tx = am.transaction();
                tx.put(ROOT, key, value).unwrap();
                tx.commit();
            })
            .unwrap();
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
