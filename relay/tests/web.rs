//! The web routes of the real binary: `--web` alone serves the demo (its WebSocket endpoint on
//! an ephemeral port of the HTTP host, which `/config.json` names), and `GET /kinds` answers a
//! bearer the relay accepts, and no one else.

mod common;

use std::net::SocketAddr;

use common::{now, RelayProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_relay::Claims;

/// `GET path` with `headers`: the status code, the head and the body.
async fn get(addr: SocketAddr, path: &str, headers: &[&str]) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: relay\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(out[..end].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, out[end + 4..].to_vec())
}

#[tokio::test]
async fn web_alone_serves_the_demo_and_its_socket() {
    let relay = RelayProcess::start(
        tempfile::tempdir().unwrap(),
        &["--http", "127.0.0.1:0", "--web"],
        &[],
    );
    let http = relay.addr("http=");
    let ws = relay.addr("ws=");
    assert_eq!(ws.ip(), http.ip());

    let (status, head, page) = get(http, "/", &[]).await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Security-Policy: default-src 'self'"),
        "{head}"
    );
    assert!(String::from_utf8_lossy(&page).contains("/app.js"));
    let (_, _, config) = get(http, "/config.json", &[]).await;
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["ws_port"], ws.port());
    for (path, ctype) in [
        ("/app.js", "text/javascript"),
        ("/sw.js", "text/javascript"),
        ("/style.css", "text/css"),
        ("/automerge.wasm", "application/wasm"),
    ] {
        let (status, head, body) = get(http, path, &[]).await;
        assert_eq!(status, 200, "{path}: {head}");
        assert!(head.contains(&format!("Content-Type: {ctype}")), "{head}");
        assert!(!body.is_empty(), "{path}");
    }
    assert_eq!(get(http, "/../Cargo.toml", &[]).await.0, 404);
    assert_eq!(get(http, "/healthz", &[]).await.0, 200);
}

#[tokio::test]
async fn kinds_answer_a_good_bearer_only() {
    let relay = RelayProcess::start(
        tempfile::tempdir().unwrap(),
        &["--http", "127.0.0.1:0", "--ws", "127.0.0.1:0"],
        &[],
    );
    let http = relay.addr("http=");
    let token = relay.token(&Claims::new("alice", now(), 3600));
    let (status, _, body) = get(http, "/kinds", &[&format!("Authorization: Bearer {token}")]).await;
    assert_eq!(status, 200);
    let kinds: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(kinds["kinds"]["trip"]["collections"]["tasks"]["key"], "id");
    let expired = relay.token(&Claims::new("alice", now() - 7200, 3600));
    for auth in [
        "",
        "Authorization: Bearer nope",
        &format!("Authorization: Bearer {expired}"),
    ] {
        let headers: Vec<&str> = [auth].into_iter().filter(|h| !h.is_empty()).collect();
        assert_eq!(get(http, "/kinds", &headers).await.0, 401, "{auth}");
    }
    // Without --web there is no demo.
    assert_eq!(get(http, "/", &[]).await.0, 404);
}
