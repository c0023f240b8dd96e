//! A light QUIC device that keeps what the relay tells it: the discovery list, roles,
//! replies to control requests and errors, with the documents it subscribes to synced by its
//! engine. Test files wrap it in a `Device` of their own (`extends!`).

use std::collections::{BTreeMap, HashMap};
use std::ops::DerefMut;
use std::time::Duration;

use weft_core::wire::{ErrorCode, Message};
use weft_core::{DocId, Role};

use super::{open_subscribed, Link, RELAY};

pub struct Session {
    pub link: Link,
    /// The discovery list as the relay keeps telling it.
    pub listed: BTreeMap<DocId, Role>,
    /// A full listing arrived completely (`DocsEnd`).
    pub listing_done: bool,
    /// Roles from `Subscribed`, the latest per document.
    pub roles: HashMap<DocId, Role>,
    pub replies: HashMap<u64, Option<ErrorCode>>,
    pub errors: Vec<(ErrorCode, Option<DocId>)>,
    /// Document messages (`Sync`, `Changes`, `Ack`) received per document.
    pub doc_messages: HashMap<DocId, usize>,
    pub next_id: u64,
    /// How long the relay may stay silent while a test waits.
    silence: Duration,
    /// How many messages `until` handles before giving up.
    rounds: usize,
}

crate::extends!(Session, link: Link);

impl Session {
    /// Takes over a link whose `Hello` was sent: waits for `Welcome` and the first full
    /// listing.
    pub async fn start(link: Link, silence: Duration, rounds: usize) -> Session {
        let mut s = Session {
            link,
            listed: BTreeMap::new(),
            listing_done: false,
            roles: HashMap::new(),
            replies: HashMap::new(),
            errors: Vec::new(),
            doc_messages: HashMap::new(),
            next_id: 1,
            silence,
            rounds,
        };
        match s.next().await {
            Some(Message::Welcome { .. }) => s.engine.add_conn(RELAY),
            other => panic!("expected welcome, got {other:?}"),
        }
        s.flush().await;
        while !s.listing_done {
            s.step().await;
        }
        s
    }

    /// Waits for the next message and handles it.
    pub async fn step(&mut self) {
        let msg = self.next().await.expect("the relay closed the connection");
        if std::env::var_os("WEFT_TEST_LOG").is_some() {
            eprintln!("device got {msg:?}");
        }
        self.handle(msg);
        self.flush().await;
    }

    /// The next message, running the engine's timers while waiting as a real driver does.
    pub async fn next(&mut self) -> Option<Message> {
        let silence = self.silence;
        self.link.recv(silence).await.ok().flatten()
    }

    /// Notes what `msg` tells and hands document messages to the engine.
    pub fn handle(&mut self, msg: Message) {
        match msg {
            Message::Docs {
                full,
                added,
                removed,
            } => {
                if full {
                    self.listed.clear();
                    self.listing_done = false;
                }
                for e in added {
                    self.listed.insert(e.doc, e.role);
                }
                for doc in removed {
                    self.listed.remove(&doc);
                }
            }
            Message::DocsEnd { .. } => self.listing_done = true,
            Message::Reply { id, code, .. } => {
                self.replies.insert(id, code);
            }
            Message::Error { code, doc, .. } => self.errors.push((code, doc)),
            Message::Subscribed { doc, role } => {
                // A real device: it sends its changes only where it may write.
                self.roles.insert(doc, role);
                open_subscribed(&mut self.engine, doc, role);
            }
            m @ (Message::Sync { .. } | Message::Changes { .. } | Message::Ack { .. }) => {
                let doc = m.doc().unwrap();
                *self.doc_messages.entry(doc).or_default() += 1;
                self.engine.handle(RELAY, m).unwrap();
            }
            _ => {}
        }
    }

    /// The error the relay gave for `doc`, if any.
    pub fn refused(&self, doc: DocId) -> Option<ErrorCode> {
        self.errors
            .iter()
            .find(|(_, d)| *d == Some(doc))
            .map(|(c, _)| *c)
    }
}

/// Handles relay messages until `done` holds; the relay closing the connection, or `done`
/// never holding, fails the test. `D` is a test's device that extends `Session`.
pub async fn until<D: DerefMut<Target = Session>>(d: &mut D, mut done: impl FnMut(&mut D) -> bool) {
    d.flush().await;
    for _ in 0..d.rounds {
        if done(d) {
            return;
        }
        d.step().await;
    }
    panic!("condition never held");
}

/// Sends a control request and waits for its reply.
pub async fn control<D: DerefMut<Target = Session>>(
    d: &mut D,
    request: impl FnOnce(u64) -> Message,
) -> Option<ErrorCode> {
    let id = d.next_id;
    d.next_id += 1;
    d.writer.send(&request(id)).await.unwrap();
    until(d, |d| d.replies.contains_key(&id)).await;
    d.replies[&id]
}
