//! The push hook against a test HTTP receiver: one signed event per new message, naming the
//! members with no live connection to the document; a receiver that fails is retried; bodies
//! only with `--notify-body`. The messages are written by raw QUIC devices (no CLI).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::ws::{now, Device, Relay, RELAY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use weft_core::automerge::{ActorId, Automerge};
use weft_core::wire::Message;
use weft_core::{DocId, Document, Role};
use weft_relay::Claims;
use weft_schema::{Conversation, Id, NewConversation, NewMessage};

const T: u64 = 1_700_000_000_000;
const SECRET: &str = "a push hook secret of at least thirty-two bytes";

/// One POST the receiver got: whether its signature verified, its status, its JSON.
#[derive(Debug)]
struct Post {
    signed: bool,
    status: u16,
    event: serde_json::Value,
}

/// A test HTTP/1.1 receiver on loopback: answers 503 to the next `fail` requests, then 200.
struct Receiver {
    url: String,
    posts: mpsc::UnboundedReceiver<Post>,
    fail: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/weft?app=1", listener.local_addr().unwrap());
        let (tx, posts) = mpsc::unbounded_channel();
        let fail = Arc::new(AtomicUsize::new(0));
        let failing = fail.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(stream, tx.clone(), failing.clone()));
            }
        });
        Receiver { url, posts, fail }
    }

    /// The next POST (within 30 s).
    async fn next(&mut self) -> Post {
        tokio::time::timeout(Duration::from_secs(30), self.posts.recv())
            .await
            .expect("no POST within 30 s")
            .unwrap()
    }

    /// Nothing more arrives within a short while (nothing is expected: no event is pending).
    async fn quiet(&mut self) {
        let got = tokio::time::timeout(Duration::from_millis(300), self.posts.recv()).await;
        assert!(got.is_err(), "unexpected POST: {got:?}");
    }
}

/// Serves one kept-alive connection: each request's head and body read, checked and answered.
async fn serve(mut stream: TcpStream, tx: mpsc::UnboundedSender<Post>, fail: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        assert!(
            head.starts_with("POST /hooks/weft?app=1 HTTP/1.1\r\n"),
            "{head}"
        );
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        let len: usize = header("content-length").unwrap().parse().unwrap();
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        let signed = header("x-weft-signature")
            .and_then(|s| s.strip_prefix("sha256=").map(str::to_string))
            .and_then(|hex| decode_hex(&hex))
            .is_some_and(|tag| ring::hmac::verify(&key, &body, &tag).is_ok());
        let failing = fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let status = if failing { 503 } else { 200 };
        let event = serde_json::from_slice(&body).unwrap();
        let _ = tx.send(Post {
            signed,
            status,
            event,
        });
        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok");
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn msg_id(n: u8) -> Id {
    Id::from_bytes([n; 16])
}

/// A relay whose push hook POSTs to `receiver`, with `extra` flags.
fn relay(receiver: &Receiver, extra: &[&str]) -> (Relay, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("notify.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let mut args = vec![
        "--notify-url",
        receiver.url.as_str(),
        "--notify-secret-file",
        secret.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (Relay::start(&args), dir)
}

/// Alice's device with a new conversation (its first message "noon?"), shared with Bob.
async fn alice_with_lunch(relay: &Relay) -> (Device, DocId) {
    let claims = Claims::new("alice", now(), 3600).with_create(true);
    let mut alice = Device::connect(relay, relay.token(&claims)).await;
    let doc = DocId::random(&mut rand::rng());
    let mut am = Automerge::new().with_actor(ActorId::random());
    Conversation::create(
        &mut am,
        &NewConversation {
            title: "Lunch".into(),
            participants: vec!["alice".into(), "bob".into()],
        },
        T,
    )
    .unwrap();
    weft_schema::send_message(&mut am, &NewMessage::text("alice", "noon?"), msg_id(1), T).unwrap();
    alice.engine.create(doc, Document::from_automerge(am));
    alice.subscribe(doc).await;
    assert!(alice.until(|d| d.engine.is_synced(RELAY, doc)).await);
    alice
        .writer
        .send(&Message::Share {
            id: 7,
            doc,
            user: "bob".into(),
            role: Role::ReadWrite,
        })
        .await
        .unwrap();
    assert!(alice.until(|d| d.done.contains(&7)).await);
    (alice, doc)
}

/// `d`, writing for `user`, posts message `n` and the relay holds it.
async fn post(d: &mut Device, user: &str, doc: DocId, n: u8, body: &str) {
    d.engine
        .change(doc, |am| {
            weft_schema::send_message(am, &NewMessage::text(user, body), msg_id(n), T + n as u64)
        })
        .unwrap()
        .0
        .unwrap();
    assert!(d.until(|d| d.engine.is_synced(RELAY, doc)).await);
}

/// The event of message `n`, checked for what every event holds.
fn event_of(p: &Post, doc: DocId, n: u8, author: &str) -> serde_json::Value {
    assert!(p.signed, "bad signature: {p:?}");
    let e = &p.event;
    assert_eq!(e["doc"], doc.to_string(), "{e}");
    assert_eq!(e["kind"], "conversation");
    assert_eq!(e["author"], author);
    let message = e["message"].as_str().unwrap();
    assert!(message.ends_with(&msg_id(n).to_string()), "{e}");
    assert_eq!(e["event"], format!("{doc}/{message}"));
    e.clone()
}

fn offline(e: &serde_json::Value) -> Vec<&str> {
    e["offline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_new_message_is_posted_once_signed_naming_the_members_offline() {
    let mut receiver = Receiver::start().await;
    let (relay, _dir) = relay(&receiver, &[]);
    let (mut alice, doc) = alice_with_lunch(&relay).await;
    // The first message, written when nobody else was a member.
    let p = receiver.next().await;
    let e = event_of(&p, doc, 1, "alice");
    assert_eq!(offline(&e), Vec::<&str>::new());
    assert!(
        e.get("body").is_none(),
        "no body without --notify-body: {e}"
    );

    // Bob is a member without a connection: he is offline.
    post(&mut alice, "alice", doc, 2, "still on?").await;
    let e = event_of(&receiver.next().await, doc, 2, "alice");
    assert_eq!(offline(&e), ["bob"]);

    // Bob connects: no longer offline, for his messages or Alice's.
    let claims = Claims::new("bob", now(), 3600);
    let mut bob = Device::connect(&relay, relay.token(&claims)).await;
    bob.subscribe(doc).await;
    assert!(bob.until(|d| d.engine.is_synced(RELAY, doc)).await);
    post(&mut alice, "alice", doc, 3, "see you there").await;
    let e = event_of(&receiver.next().await, doc, 3, "alice");
    assert_eq!(offline(&e), Vec::<&str>::new());
    post(&mut bob, "bob", doc, 4, "on my way").await;
    let e = event_of(&receiver.next().await, doc, 4, "bob");
    assert_eq!(offline(&e), Vec::<&str>::new());

    // Alice leaves; Bob's next message names her.
    drop(alice);
    let mut gone = false;
    for n in 5..60 {
        post(&mut bob, "bob", doc, n, "where are you?").await;
        let e = event_of(&receiver.next().await, doc, n, "bob");
        if offline(&e) == ["alice"] {
            gone = true;
            break;
        }
        // The relay has not noticed the closed connection yet.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "alice never counted as offline");

    // A receiver that fails is retried until it takes the event: the same event each time.
    receiver.fail.store(2, Ordering::SeqCst);
    post(&mut bob, "bob", doc, 70, "hello?").await;
    let mut statuses = Vec::new();
    let mut ids = Vec::new();
    while statuses.last() != Some(&200) {
        let p = receiver.next().await;
        let e = event_of(&p, doc, 70, "bob");
        statuses.push(p.status);
        ids.push(e["event"].clone());
    }
    assert_eq!(statuses, [503, 503, 200]);
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    // An edit is not a new message: nothing is posted.
    bob.engine
        .change(doc, |am| {
            weft_schema::edit_message(am, &msg_id(4), "running late", T + 99)
        })
        .unwrap()
        .0
        .unwrap();
    assert!(bob.until(|d| d.engine.is_synced(RELAY, doc)).await);
    receiver.quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_is_posted_only_with_notify_body() {
    let mut receiver = Receiver::start().await;
    let (relay, _dir) = relay(&receiver, &["--notify-body"]);
    let (mut alice, doc) = alice_with_lunch(&relay).await;
    let e = event_of(&receiver.next().await, doc, 1, "alice");
    assert_eq!(e["body"], "noon?");
    post(&mut alice, "alice", doc, 2, "still on?").await;
    let e = event_of(&receiver.next().await, doc, 2, "alice");
    assert_eq!(e["body"], "still on?");
    assert_eq!(offline(&e), ["bob"]);
}
