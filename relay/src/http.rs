//! The operations endpoint: `GET /healthz` and `GET /metrics` over plain HTTP/1.1, and with
//! `--ws` the WebSocket tickets: `POST /ws-ticket` (see `ws/tickets.rs`; 404 without `--ws`),
//! and the web routes (`GET /kinds`, and the demo with `--web`; see `web/`).
//!
//! Two fixed routes on a loopback-by-default port do not justify an HTTP framework: each
//! request is read up to its header end (bounded), answered, and the connection closed.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use weft_core::AcceptBackoff;

use crate::metrics::Metrics;
use crate::web::Web;
use crate::ws::Tickets;

/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;

/// Serves `/healthz` and `/metrics` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    tickets: Option<Arc<Tickets>>,
    web: Option<Arc<Web>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut conns = JoinSet::new();
    let mut backoff = AcceptBackoff::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let mut sock = match accepted {
                    Ok((sock, _)) => {
                        backoff.succeeded();
                        sock
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: the next accept would fail
                        // the same way at once, so wait.
                        let pause = backoff.failed(&e);
                        if pause.log {
                            tracing::warn!(error = %e, wait = ?pause.wait, failures = pause.failures, "accepting an HTTP connection failed");
                        }
                        tokio::select! {
                            _ = &mut shutdown => break,
                            _ = tokio::time::sleep(pause.wait) => continue,
                        }
                    }
                };
                if conns.len() >= MAX_CONNECTIONS {
                    continue;
                }
                let _ = sock.set_nodelay(true);
                let (metrics, tickets, web) = (metrics.clone(), tickets.clone(), web.clone());
                conns.spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), answer(&mut sock, &metrics, tickets.as_deref(), web.as_deref())).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

async fn answer(
    sock: &mut tokio::net::TcpStream,
    metrics: &Metrics,
    tickets: Option<&Tickets>,
    web: Option<&Web>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if let Some(response) = web.and_then(|web| crate::web::answer(web, method, path, &buf)) {
        return response.send(sock).await;
    }
    let mut extra = String::new();
    let ticket_route = match (path, tickets) {
        (b"/ws-ticket", Some(tickets)) => {
            extra = crate::ws::tickets::cors_headers(tickets, &buf);
            Some(match method {
                b"POST" => crate::ws::tickets::answer(tickets, &buf),
                b"OPTIONS" => ("204 No Content", "text/plain", String::new()),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "method not allowed\n".to_string(),
                ),
            })
        }
        _ => None,
    };
    let (status, ctype, body) = match (method, path) {
        _ if ticket_route.is_some() => ticket_route.unwrap_or_default(),
        (b"GET", b"/healthz") if metrics.cluster_unreachable() => (
            "503 Service Unavailable",
            "text/plain",
            "the cluster's log (Postgres) is unreachable\n".to_string(),
        ),
        (b"GET", b"/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        (b"GET", b"/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        (b"GET", _) | (_, b"/ws-ticket") => {
            ("404 Not Found", "text/plain", "not found\n".to_string())
        }
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".to_string(),
        ),
    };
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n", body.len());
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body.as_bytes()).await?;
    sock.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn healthz_and_metrics_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Arc::new(Metrics::default()),
            None,
            None,
            async {
                let _ = rx.await;
            },
        ));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200 OK"));
        let m = get(addr, "/metrics").await;
        assert!(m.contains("weft_connections 0"), "{m}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }
}
