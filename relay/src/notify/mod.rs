//! The push hook (`weft-relay serve --notify-url URL --notify-secret-file FILE`): for each new
//! message, one `POST URL` with a small JSON event (document, kind, message, author, and the
//! members without a live connection to the document, never the body unless asked), signed
//! with HMAC-SHA256 (`X-Weft-Signature: sha256=HEX`), so the app's backend can send APNs or FCM
//! notifications to members who are offline.
//!
//! The write rules note each message an accepted change creates (`RulesGate::note_messages`);
//! the hub takes them once the change is durable, adds who is offline, and hands them to
//! [`Notifier::send`], which never waits: events go on a bounded queue (a full queue drops and
//! counts them) that [`WORKERS`] tasks deliver, each over a kept-alive connection. A receiver
//! that fails (connection refused, timeout, 408, 429 or 5xx) is retried with backoff, up to
//! [`MAX_ATTEMPTS`] times; other statuses are its answer and are not retried. Delivery is at
//! least once: a receiver dedupes on the event's `event` field.

mod post;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ring::hmac;
use serde::Serialize;
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinSet;
use weft_core::DocId;

use crate::metrics::Metrics;
pub use post::NotifyUrlError;
use post::{Conn, Target};

/// Events waiting for delivery at most; beyond it new ones are dropped and counted.
pub(crate) const QUEUE: usize = 8192;
/// Deliveries in flight at once (one connection each).
pub(crate) const WORKERS: usize = 4;
/// Attempts per event before it is given up (and counted as failed).
pub(crate) const MAX_ATTEMPTS: u32 = 8;
/// The wait before the first retry; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// What the hook is configured with.
#[derive(Clone)]
pub struct NotifyConfig {
    target: Arc<Target>,
    key: hmac::Key,
    bodies: bool,
}

impl NotifyConfig {
    /// POSTs to `url` (`http://` or `https://`, verified against the system's roots), signed
    /// with `secret`; message bodies included only when `bodies`.
    pub fn new(url: &str, secret: &[u8], bodies: bool) -> Result<NotifyConfig, NotifyUrlError> {
        Ok(NotifyConfig {
            target: Arc::new(Target::parse(url)?),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            bodies,
        })
    }
}

/// One new message, as the hub reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageEvent {
    /// The document.
    pub doc: DocId,
    /// Its kind (`conversation`, `trip`, a declared kind).
    pub kind: Option<String>,
    /// The message's key in the document's `messages`.
    pub message: String,
    /// The user who wrote it.
    pub author: String,
    /// Members (owner and access list) with no live connection to the document, less the
    /// author, sorted.
    pub offline: Vec<String>,
    /// Only with `--notify-body`.
    pub body: Option<String>,
    /// When the relay stored it (ms since the Unix epoch).
    pub at_ms: u64,
}

/// The event's JSON, as POSTed.
#[derive(Serialize)]
struct Wire<'a> {
    /// Unique per message: what a receiver dedupes retries on.
    event: String,
    doc: String,
    kind: Option<&'a str>,
    message: &'a str,
    author: &'a str,
    offline: &'a [String],
    at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
}

/// The JSON body POSTed for `ev`.
pub fn event_json(ev: &MessageEvent) -> Vec<u8> {
    let doc = ev.doc.to_string();
    let wire = Wire {
        event: format!("{doc}/{}", ev.message),
        doc,
        kind: ev.kind.as_deref(),
        message: &ev.message,
        author: &ev.author,
        offline: &ev.offline,
        at_ms: ev.at_ms,
        body: ev.body.as_deref(),
    };
    // Invariant: a struct of strings and numbers always serializes.
    serde_json::to_vec(&wire).expect("the event serializes")
}

/// The `X-Weft-Signature` value for `body`: `sha256=` and the HMAC-SHA256 in lowercase hex.
pub fn signature(key: &hmac::Key, body: &[u8]) -> String {
    let tag = hmac::sign(key, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The hub's handle: hands events to the delivery tasks without waiting.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<MessageEvent>,
    bodies: bool,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// Whether events carry message bodies.
    pub fn bodies(&self) -> bool {
        self.bodies
    }

    /// Queues `ev` for delivery; on a full queue it is dropped and counted.
    pub fn send(&self, ev: MessageEvent) {
        if self.tx.try_send(ev).is_err() {
            Metrics::inc(&self.metrics.notify_dropped);
        }
    }

    /// Counts `n` events never queued (the write rules' own bound was reached).
    pub fn dropped(&self, n: u64) {
        Metrics::add(&self.metrics.notify_dropped, n);
    }
}

/// The delivery tasks, owned by whoever started them.
pub struct NotifyTasks {
    workers: JoinSet<()>,
    stop: watch::Sender<bool>,
}

/// Starts the delivery tasks. They end once every [`Notifier`] is dropped and the queue is
/// empty, or at [`NotifyTasks::shutdown`].
pub fn start(cfg: NotifyConfig, metrics: Arc<Metrics>) -> (Notifier, NotifyTasks) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    let (stop, stop_rx) = watch::channel(false);
    let mut workers = JoinSet::new();
    for _ in 0..WORKERS {
        workers.spawn(deliver(
            rx.clone(),
            cfg.clone(),
            metrics.clone(),
            stop_rx.clone(),
        ));
    }
    let notifier = Notifier {
        tx,
        bodies: cfg.bodies,
        metrics,
    };
    (notifier, NotifyTasks { workers, stop })
}

impl NotifyTasks {
    /// Once the notifiers are gone: lets the tasks deliver what is queued for up to `grace`,
    /// then stops them (events still waiting or being retried are given up).
    pub async fn shutdown(mut self, grace: Duration) {
        let finished = async { while self.workers.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, finished).await.is_err() {
            let _ = self.stop.send(true);
            if tokio::time::timeout(Duration::from_secs(1), async {
                while self.workers.join_next().await.is_some() {}
            })
            .await
            .is_err()
            {
                self.workers.abort_all();
            }
        }
    }
}

/// One delivery task: takes events off the shared queue and POSTs each until it is delivered,
/// refused, or out of attempts.
async fn deliver(
    rx: Arc<Mutex<mpsc::Receiver<MessageEvent>>>,
    cfg: NotifyConfig,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn: Option<Conn> = None;
    loop {
        let Some(ev) = rx.lock().await.recv().await else {
            return;
        };
        let body = Bytes::from(event_json(&ev));
        let sig = signature(&cfg.key, &body);
        let mut delay = FIRST_RETRY_DELAY;
        for attempt in 1..=MAX_ATTEMPTS {
            match post::post(&mut conn, &cfg.target, body.clone(), &sig).await {
                Ok(()) => {
                    Metrics::inc(&metrics.notify_sent);
                    break;
                }
                Err(e) if !e.retryable() || attempt == MAX_ATTEMPTS => {
                    tracing::warn!(doc = %ev.doc, message = %ev.message, error = %e, attempt, "push hook: event given up");
                    Metrics::inc(&metrics.notify_failed);
                    break;
                }
                Err(e) => {
                    tracing::debug!(doc = %ev.doc, error = %e, attempt, "push hook: retrying");
                    Metrics::inc(&metrics.notify_retries);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stop.wait_for(|s| *s) => {
                            Metrics::inc(&metrics.notify_failed);
                            return;
                        }
                    }
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_the_body_in_hex() {
        // RFC 4231, test case 2.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_body_is_left_out_unless_present() {
        let mut ev = MessageEvent {
            doc: DocId::from_bytes([1; 16]),
            kind: Some("conversation".into()),
            message: "k1".into(),
            author: "alice".into(),
            offline: vec!["bob".into()],
            body: None,
            at_ms: 5,
        };
        let v: serde_json::Value = serde_json::from_slice(&event_json(&ev)).unwrap();
        assert_eq!(v["author"], "alice");
        assert_eq!(v["offline"][0], "bob");
        assert_eq!(v["event"], format!("{}/k1", ev.doc));
        assert!(v.get("body").is_none());
        ev.body = Some("hi".into());
        let v: serde_json::Value = serde_json::from_slice(&event_json(&ev)).unwrap();
        assert_eq!(v["body"], "hi");
    }
}
