//! One-time tickets for the WebSocket upgrade: `POST /ws-ticket` on the relay's HTTP address
//! with `Authorization: Bearer JWT`, then `?ticket=` instead of `?token=` in the URL.

mod common;

use common::ws::{http, now, ticket, Relay};
use common::wsclient::*;
use common::RelayProcess;
use weft_relay::Claims;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_opens_one_socket_once() {
    let relay = Relay::start(&["--http", "127.0.0.1:0"]);
    let token = relay.token(&Claims::new("alice", now(), 3600).with_create(true));
    let (t, expires_in) = ticket(&relay, &token).await;
    assert_eq!(expires_in, 30);

    // The ticket's socket is alice's: it may create a document.
    let mut ws = connect_url(&relay, &relay.ticket_url(&t)).await.unwrap();
    send(&mut ws, join_msg("tab")).await;
    assert_eq!(recv(&mut ws).await.kind(), Some("peer"));
    let answer = upload(&mut ws, "tab", doc(1)).await;
    assert_eq!(answer.kind(), Some("sync"), "{answer:?}");

    // Used up: a second upgrade with it is refused, as is a made-up one; the token still works.
    assert_eq!(
        connect_url(&relay, &relay.ticket_url(&t)).await.err(),
        Some(401)
    );
    assert_eq!(
        connect_url(&relay, &relay.ticket_url("made-up"))
            .await
            .err(),
        Some(401)
    );
    assert!(connect(&relay, &token).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_ticket_is_refused() {
    // A zero life: every ticket is expired when it is presented.
    let relay = Relay::start(&["--http", "127.0.0.1:0", "--ws-ticket-ttl", "0s"]);
    let token = relay.token(&Claims::new("alice", now(), 3600));
    let (t, expires_in) = ticket(&relay, &token).await;
    assert_eq!(expires_in, 0);
    assert_eq!(
        connect_url(&relay, &relay.ticket_url(&t)).await.err(),
        Some(401)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_bearer_gets_401_and_other_methods_405() {
    let relay = Relay::start(&["--http", "127.0.0.1:0"]);
    let addr = relay.http.unwrap();
    let expired = relay.token(&Claims::new("alice", now() - 7200, 3600));
    for auth in [
        "Authorization: Bearer not-a-jwt".to_owned(),
        format!("Authorization: Bearer {expired}"),
        format!(
            "Authorization: Basic {}",
            relay.token(&Claims::new("a", now(), 60))
        ),
    ] {
        let (status, _, body) = http(addr, "POST", "/ws-ticket", &[&auth]).await;
        assert_eq!(status, 401, "{auth}: {body}");
        assert!(!body.contains("ticket\""), "{body}");
    }
    assert_eq!(http(addr, "POST", "/ws-ticket", &[]).await.0, 401);
    assert_eq!(http(addr, "GET", "/ws-ticket", &[]).await.0, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_calls_are_allowed_only_from_the_configured_origin() {
    let relay = Relay::start(&[
        "--http",
        "127.0.0.1:0",
        "--ws-ticket-origin",
        "https://app.example",
    ]);
    let addr = relay.http.unwrap();
    let (status, head, _) = http(
        addr,
        "OPTIONS",
        "/ws-ticket",
        &[
            "Origin: https://app.example",
            "Access-Control-Request-Method: POST",
        ],
    )
    .await;
    assert_eq!(status, 204);
    assert!(
        head.contains("Access-Control-Allow-Origin: https://app.example"),
        "{head}"
    );
    assert!(
        head.contains("Access-Control-Allow-Headers: Authorization"),
        "{head}"
    );
    let token = relay.token(&Claims::new("alice", now(), 3600));
    let auth = format!("Authorization: Bearer {token}");
    let (status, head, _) = http(
        addr,
        "POST",
        "/ws-ticket",
        &[&auth, "Origin: https://evil.example"],
    )
    .await;
    assert_eq!(status, 200);
    assert!(!head.contains("Access-Control-Allow-Origin"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ws_there_is_no_ticket_endpoint() {
    let process = RelayProcess::start(
        tempfile::tempdir().unwrap(),
        &["--http", "127.0.0.1:0"],
        &[],
    );
    let token = process.token(&Claims::new("alice", now(), 3600));
    let auth = format!("Authorization: Bearer {token}");
    let (status, _, _) = http(process.addr("http="), "POST", "/ws-ticket", &[&auth]).await;
    assert_eq!(status, 404);
    assert!(!process
        .dir
        .path()
        .join(weft_relay::STORAGE_ID_FILE)
        .exists());
}
