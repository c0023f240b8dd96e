//! The connections phase of the `memory` workload: idle connections (joined, no document) on
//! the relay, QUIC and WebSocket, each against a bare server of the same transport.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::clients::{cbor_text, write_cert, ADDR_ENV, CERT_ENV, TOKEN_ENV};
use super::{kib_per, settled_kib, verdict, Devices, TARGET_IDLE_CONN_KIB};
use crate::plan::Plan;
use crate::relay::{collect_on, relay_runtime, Forwarder, Options, Relay};

/// The relay's WebSocket read buffer (`relay/src/ws/handshake.rs`), so the bare server's
/// sockets are set up as the relay's are.
const WS_READ_BUFFER: usize = 8 * 1024;

/// One server holding the child's connections.
enum Server {
    Relay(Relay),
    Quinn(Forwarder),
    Tungstenite(BareWs),
}

impl Server {
    fn collect(&self) {
        match self {
            Server::Relay(r) => r.collect(),
            Server::Quinn(f) => f.collect(),
            Server::Tungstenite(b) => collect_on(&b.runtime),
        }
    }

    /// Connections the server has taken in (the relay's hub has opened).
    fn wait_for(&self, n: usize) -> anyhow::Result<()> {
        let Server::Relay(r) = self else {
            return Ok(());
        };
        let t = Instant::now();
        while r.metrics.connections.load(Ordering::Relaxed) < n as u64 {
            if t.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the relay counts {} of {n} connections",
                    r.metrics.connections.load(Ordering::Relaxed)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The hub handles `Open` after the counter moved; let its queue drain.
        std::thread::sleep(Duration::from_millis(200));
        Ok(())
    }

    fn stop(self) {
        match self {
            Server::Relay(r) => r.stop(),
            Server::Quinn(f) => f.stop(),
            Server::Tungstenite(b) => drop(b),
        }
    }
}

pub(super) fn measure(plan: &Plan, _rt: &tokio::runtime::Runtime) -> anyhow::Result<Value> {
    let steps: &[usize] = if plan.quick {
        &[200, 1_000]
    } else {
        &[1_000, 5_000, 10_000]
    };
    eprintln!("  idle connections (joined, no document), held by a child process: {steps:?}");
    eprintln!(
        "  {:<24} {:>8} {:>10} {:>12} {:>14} {:>8}",
        "server", "conns", "RSS MiB", "KiB/conn", "floor KiB/conn", "target"
    );
    let mut out = Vec::new();
    for transport in ["quic", "ws"] {
        let floor = run(transport, false, steps)?;
        let relay = run(transport, true, steps)?;
        let per = relay.last().map_or(f64::NAN, |s| s.1);
        let floor_per = floor.last().map_or(f64::NAN, |s| s.1);
        for (n, per_conn, rss) in &relay {
            eprintln!(
                "  {:<24} {:>8} {:>10.1} {:>12.1} {:>14} {:>8}",
                format!("weft-relay {transport}"),
                n,
                *rss as f64 / 1024.0,
                per_conn,
                "",
                ""
            );
        }
        eprintln!(
            "  {:<24} {:>8} {:>10} {:>12.1} {:>14.1} {:>8}",
            format!(
                "  bare {}",
                if transport == "quic" {
                    "quinn"
                } else {
                    "tungstenite"
                }
            ),
            steps.last().copied().unwrap_or(0),
            "",
            per,
            floor_per,
            verdict(per, TARGET_IDLE_CONN_KIB)
        );
        out.push(json!({
            "transport": transport,
            "relay": steps_json(&relay),
            "baseline": steps_json(&floor),
            "kib_per_conn": per,
            "baseline_kib_per_conn": floor_per,
            "target_met": per <= TARGET_IDLE_CONN_KIB,
        }));
    }
    Ok(Value::Array(out))
}

fn steps_json(steps: &[(usize, f64, u64)]) -> Value {
    steps
        .iter()
        .map(|(n, per, rss)| json!({"conns": n, "kib_per_conn": per, "rss_kib": rss}))
        .collect()
}

/// Starts the relay (or the bare server) for `transport`, has the child hold each step's
/// connections, and returns per step: connections, KiB per connection against the empty
/// server, and the resident set.
fn run(transport: &str, relay: bool, steps: &[usize]) -> anyhow::Result<Vec<(usize, f64, u64)>> {
    let dir = tempfile::tempdir()?;
    let (server, env) = match (transport, relay) {
        ("quic", true) => {
            let r = Relay::start_opts(Options::default())?;
            let env = vec![
                (ADDR_ENV, r.addr.to_string()),
                (CERT_ENV, write_cert(dir.path(), &r.cert)?),
                (TOKEN_ENV, r.token()?),
            ];
            (Server::Relay(r), env)
        }
        ("quic", false) => {
            let f = Forwarder::start()?;
            let env = vec![
                (ADDR_ENV, f.addr.to_string()),
                (CERT_ENV, write_cert(dir.path(), &f.cert)?),
                (TOKEN_ENV, String::new()),
            ];
            (Server::Quinn(f), env)
        }
        ("ws", true) => {
            let r = Relay::start_opts(Options {
                ws: true,
                ..Options::default()
            })?;
            let addr = r.ws.context("the relay has no WebSocket endpoint")?;
            let env = vec![(ADDR_ENV, format!("ws://{addr}/?token={}", r.token()?))];
            (Server::Relay(r), env)
        }
        _ => {
            let b = BareWs::start()?;
            let env = vec![(ADDR_ENV, format!("ws://{}/", b.addr))];
            (Server::Tungstenite(b), env)
        }
    };
    let empty = settled_kib(|| server.collect());
    let mut devices = Devices::start(transport, &env)?;
    let mut out = Vec::new();
    for &n in steps {
        devices.hold(n)?;
        server.wait_for(n)?;
        let rss = settled_kib(|| server.collect());
        out.push((n, kib_per(rss as i64 - empty as i64, n), rss));
    }
    devices.finish()?;
    server.stop();
    Ok(out)
}

/// A bare tokio-tungstenite server: each socket is upgraded with the relay's settings, its
/// `join` answered with a `peer` message, then read until it ends (pings answered), on a
/// runtime like the relay's.
struct BareWs {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    runtime: tokio::runtime::Runtime,
}

impl BareWs {
    fn start() -> anyhow::Result<BareWs> {
        let runtime = relay_runtime()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, mut stop_rx) = watch::channel(false);
        runtime.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let mut sockets = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = stop_rx.wait_for(|s| *s) => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        sockets.spawn(bare_socket(stream));
                    }
                    Some(_) = sockets.join_next(), if !sockets.is_empty() => {}
                }
            }
            sockets.shutdown().await;
        });
        Ok(BareWs {
            addr,
            stop,
            runtime,
        })
    }
}

impl Drop for BareWs {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn bare_socket(stream: tokio::net::TcpStream) {
    let config = WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    if !matches!(ws.next().await, Some(Ok(WsMessage::Binary(_)))) {
        return;
    }
    let mut peer = vec![0xa2];
    cbor_text(&mut peer, "type");
    cbor_text(&mut peer, "peer");
    cbor_text(&mut peer, "senderId");
    cbor_text(&mut peer, "bare");
    if ws.send(WsMessage::Binary(peer.into())).await.is_err() {
        return;
    }
    while let Some(Ok(_)) = ws.next().await {}
}
