//! Who wrote a change, as a device that received the document from the relay sees it.

mod common;

use std::time::Duration;

use common::events::{next_event, now_ms};
use common::in_process::InProcessRelay;
use weft_core::clock::ManualClock;
use weft_peer::schema::{self, NewConversation, NewMessage};
use weft_peer::{DataDir, Device, Event, EventOrigin, RelayConfig, TokenSource};

/// How many chats Cat shares with Dan: whether Dan learns Cat's binding before his copy of a
/// new chat opens depends on timing, so a few rounds make a miss show.
const ROUNDS: usize = 5;

/// Cat writes `body` in `doc`; returns her heads once it is durable.
async fn cat_sends(
    cat: &Device,
    doc: weft_peer::DocId,
    body: &str,
) -> Vec<weft_peer::automerge::ChangeHash> {
    let msg = NewMessage::text("cat", body);
    let id = schema::Id::from_bytes(rand::random());
    cat.change(doc, move |am| schema::send_message(am, &msg, id, now_ms()))
        .await
        .unwrap()
        .unwrap();
    cat.read(doc, |am| am.get_heads()).await.unwrap()
}

/// Cat creates chats and shares each with Dan, whose device first hears of them from the
/// relay's listing; once Dan has a chat, each further message of Cat's is named as hers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_chat_names_its_author_on_the_receiving_device() {
    let clock = ManualClock::at(now_ms());
    let relay = InProcessRelay::start(clock.wall(), 60);
    let cfg = |user: &str| RelayConfig {
        addr: relay.addr.to_string(),
        alternates: Vec::new(),
        token: TokenSource::Static(relay.token(user, 3600)),
        pinned_cert: Some(relay.cert.clone()),
        docs: Vec::new(),
        reconnect: true,
        max_backoff: Duration::from_secs(10),
    };
    let (tc, td) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cat = Device::open(DataDir::new(tc.path())).await.unwrap();
    let dan = Device::open(DataDir::new(td.path())).await.unwrap();
    let mut ed = dan.events();
    let lc = cat.connect_relay(cfg("cat")).await.unwrap();
    let ld = dan.connect_relay(cfg("dan")).await.unwrap();

    for round in 0..ROUNDS {
        let new = NewConversation {
            title: format!("Chat {round}"),
            participants: vec!["cat".into(), "dan".into()],
        };
        let (doc, r) = cat
            .create(Some("conversation"), move |am| {
                schema::Conversation::create(am, &new, now_ms())
            })
            .await
            .unwrap();
        r.unwrap();
        let shared = cat
            .control(weft_peer::ControlOp::Share {
                doc,
                user: "dan".into(),
                role: weft_peer::Role::ReadWrite,
            })
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), shared)
            .await
            .expect("the relay never answered the share")
            .unwrap()
            .unwrap();

        // Dan's device gets the chat with Cat's first message.
        let heads = cat_sends(&cat, doc, "hi").await;
        next_event(&mut ed, |e| match e {
            Event::Changed {
                doc: d, heads: h, ..
            } if d == doc && h == heads => Some(()),
            _ => None,
        })
        .await;

        // Her next one is named as hers.
        let heads = cat_sends(&cat, doc, "hello").await;
        let authors = next_event(&mut ed, |e| match e {
            Event::Changed {
                doc: d,
                heads: h,
                origin: EventOrigin::Remote,
                authors,
                ..
            } if d == doc && h == heads => Some(authors),
            _ => None,
        })
        .await;
        assert_eq!(authors, ["cat"], "round {round}");
    }
    ld.stop().await;
    dan.close().await;
    lc.stop().await;
    cat.close().await;
}
