//! The large change's side: its sender and a second subscriber of its documents.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::mpsc;
use weft_core::automerge::sync::{self, SyncDoc};
use weft_core::automerge::{Automerge, ChangeHash};
use weft_core::quic::{FrameReader, FrameWriter};
use weft_core::wire::{self, Message};
use weft_core::DocId;

use crate::client::Client;

use super::{Big, LargeResult, Outcome, Path, Settings, LARGE_BYTES, SETUP_DEADLINE};

/// The large change's sender and a second subscriber of its documents, on their own runtime.
pub(super) struct LargeSide {
    sender: Client,
    receiver: Client,
    docs: Vec<DocId>,
}

impl LargeSide {
    /// Connects both devices, has the sender create `n` documents holding the seed (over the
    /// sync protocol, as a device does), then syncs the second subscriber on all of them.
    pub(super) async fn prepare(
        addr: std::net::SocketAddr,
        cert: &[rustls::pki_types::CertificateDer<'static>],
        token: &str,
        big: &Big,
        n: usize,
    ) -> anyhow::Result<LargeSide> {
        let mut sender = Client::connect(addr, cert, token).await?;
        let docs: Vec<DocId> = (0..n).map(|_| DocId::from_bytes(rand::random())).collect();
        for &doc in &docs {
            sync_seed(&mut sender, doc, &big.seed).await?;
        }
        let mut receiver = Client::connect(addr, cert, token).await?;
        receiver.sync(&docs, SETUP_DEADLINE).await?;
        Ok(LargeSide {
            sender,
            receiver,
            docs,
        })
    }

    /// Sends the large change into each document on schedule and waits for each outcome.
    /// Returns the outcomes and the sync frames the second subscriber got.
    pub(super) async fn run(
        self,
        big: Arc<Big>,
        path: Path,
        t0: Instant,
        settings: Settings,
    ) -> anyhow::Result<LargeResult> {
        let LargeSide {
            sender,
            receiver,
            docs,
        } = self;
        let frames = frames(&docs, &big, path)?;
        let (ev_tx, mut events) = mpsc::channel::<(DocId, Event, Instant)>(1024);
        let Client {
            conn: sconn,
            reader: sreader,
            writer: mut swriter,
            endpoint: _sendpoint,
        } = sender;
        let sender_reader = tokio::spawn(hear_sender(sreader, big.hash, ev_tx.clone()));
        let Client {
            conn: rconn,
            reader: rreader,
            writer: rwriter,
            endpoint: _rendpoint,
        } = receiver;
        let receiver_task = tokio::spawn(receive(rreader, rwriter, big.hash, ev_tx));

        let mut outcomes = vec![Outcome::default(); docs.len()];
        let mut sent = vec![None; docs.len()];
        for (k, frame) in frames.iter().enumerate() {
            let at = t0 + settings.first_at + settings.every * k as u32;
            tokio::time::sleep_until(at.into()).await;
            let now = Instant::now();
            sent[k] = Some(now);
            outcomes[k].sent_at = now - t0;
            crate::progress(format_args!("large change {k} sent as a {}", path.name()));
            swriter
                .send_raw(frame)
                .await
                .with_context(|| format!("sending large change {k}"))?;
        }
        // Outcomes are awaited until document A's window ends at the latest.
        let deadline = tokio::time::Instant::from_std(t0 + settings.max_window);
        await_outcomes(&docs, &sent, &mut outcomes, &mut events, deadline).await;
        sconn.close(quinn::VarInt::from_u32(0), b"done");
        rconn.close(quinn::VarInt::from_u32(0), b"done");
        sender_reader.abort();
        let sync_frames = tokio::time::timeout(Duration::from_secs(5), receiver_task)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        Ok((outcomes, sync_frames))
    }
}

/// The frame that carries the large change into each of `docs` on `path`.
fn frames(docs: &[DocId], big: &Big, path: Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let frames = docs
        .iter()
        .map(|&doc| {
            let msg = match path {
                Path::Changes => Message::Changes {
                    doc,
                    changes: vec![big.raw.clone()],
                },
                Path::Sync => Message::Sync {
                    doc,
                    reset: false,
                    data: big.sync_data.clone().into(),
                },
            };
            wire::frame(&msg, wire::DEFAULT_MAX_FRAME)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(frames)
}

/// The sender's reader: the relay's `Ack` (or sync reply) naming the change `hash`, or its
/// refusal, as events.
async fn hear_sender(
    mut reader: FrameReader,
    hash: ChangeHash,
    tx: mpsc::Sender<(DocId, Event, Instant)>,
) {
    while let Ok(Some(msg)) = reader.recv().await {
        let at = Instant::now();
        let ev = match msg {
            Message::Ack { doc, heads } if heads.contains(&hash) => (doc, Event::Accepted),
            Message::Sync { doc, data, .. } => match sync::Message::decode(&data) {
                Ok(m) if m.heads.contains(&hash) => (doc, Event::Accepted),
                _ => continue,
            },
            Message::Error {
                code,
                doc: Some(doc),
                message,
            } => (doc, Event::Refused(format!("{code:?}: {message}"))),
            _ => continue,
        };
        if tx.send((ev.0, ev.1, at)).await.is_err() {
            break;
        }
    }
}

/// The second subscriber: each large change it receives is an event, and acknowledged.
/// Returns the sync frames it got.
async fn receive(
    mut reader: FrameReader,
    mut writer: FrameWriter,
    hash: ChangeHash,
    tx: mpsc::Sender<(DocId, Event, Instant)>,
) -> u64 {
    let mut sync_frames = 0;
    while let Ok(Some(msg)) = reader.recv().await {
        let at = Instant::now();
        match msg {
            // Not parsed: the change is known, and parsing two million operations
            // here would take this runtime's thread for most of a second.
            Message::Changes { doc, changes } if changes.iter().any(|c| c.len() > LARGE_BYTES) => {
                let _ = tx.send((doc, Event::Delivered, at)).await;
                let ack = Message::Ack {
                    doc,
                    heads: vec![hash],
                };
                if writer.send(&ack).await.is_err() {
                    break;
                }
            }
            Message::Sync { .. } => sync_frames += 1,
            _ => {}
        }
    }
    sync_frames
}

/// Records each event in its document's outcome until every outcome is known or `deadline`.
async fn await_outcomes(
    docs: &[DocId],
    sent: &[Option<Instant>],
    outcomes: &mut [Outcome],
    events: &mut mpsc::Receiver<(DocId, Event, Instant)>,
    deadline: tokio::time::Instant,
) {
    let done = |o: &Outcome| o.refused.is_some() || (o.delivered.is_some() && o.accepted.is_some());
    while !outcomes.iter().all(done) {
        let Ok(Some((doc, ev, at))) = tokio::time::timeout_at(deadline, events.recv()).await else {
            break;
        };
        let Some(k) = docs.iter().position(|d| *d == doc) else {
            continue;
        };
        let Some(since) = sent[k].map(|s| at.saturating_duration_since(s)) else {
            continue;
        };
        let o = &mut outcomes[k];
        let what = match ev {
            Event::Accepted => {
                o.accepted = o.accepted.or(Some(since));
                "accepted".to_string()
            }
            Event::Delivered => {
                o.delivered = o.delivered.or(Some(since));
                "delivered".to_string()
            }
            Event::Refused(why) => {
                let what = format!("refused ({why})");
                o.refused = o.refused.clone().or(Some(why));
                what
            }
        };
        crate::progress(format_args!(
            "large change {k} {what} after {:.0} ms",
            crate::ms(since)
        ));
    }
}

/// What the large side heard about a document.
pub(super) enum Event {
    Accepted,
    Delivered,
    Refused(String),
}

/// Subscribes `doc` (creating it) and runs Automerge's sync protocol with the relay from a
/// copy of `seed` until the relay holds the seed's heads.
pub(super) async fn sync_seed(c: &mut Client, doc: DocId, seed: &Automerge) -> anyhow::Result<()> {
    let mut am = seed.clone();
    let mut state = sync::State::new();
    let heads = am.get_heads();
    c.writer.send(&Message::Subscribe { doc }).await?;
    let started = Instant::now();
    let mut subscribed = false;
    loop {
        if started.elapsed() > SETUP_DEADLINE {
            bail!("the seed of {doc} did not sync within {SETUP_DEADLINE:?}");
        }
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(200), c.reader.recv()).await {
            match r?.context("the relay closed the stream")? {
                Message::Subscribed { doc: d, .. } if d == doc => subscribed = true,
                Message::Sync { doc: d, data, .. } if d == doc => {
                    am.receive_sync_message(&mut state, sync::Message::decode(&data)?)?;
                }
                Message::Error { code, message, .. } => {
                    bail!("the relay refused the seed: {code:?} {message}")
                }
                _ => {}
            }
        }
        if !subscribed {
            continue;
        }
        if let Some(m) = am.generate_sync_message(&mut state) {
            c.writer
                .send(&Message::Sync {
                    doc,
                    reset: false,
                    data: m.encode().into(),
                })
                .await?;
        } else if state.their_heads.as_ref() == Some(&heads) {
            return Ok(());
        }
    }
}
