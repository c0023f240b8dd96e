//! `fanout`: one device writes, every other device on the same document receives; latency from
//! the writer handing its `Changes` frame to QUIC to each receiver decoding the forwarded frame.
//! One change in flight at a time, so the figures are latency, not queueing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;
use weft_core::automerge::sync::{self, SyncDoc};
use weft_core::automerge::{Automerge, Change};
use weft_core::wire::Message;
use weft_core::DocId;

use crate::chain::Chain;
use crate::client::{self, Client};
use crate::relay::{relay_cpu, Relay};

/// What one fan-out run measured.
pub struct Run {
    pub changes: usize,
    /// One latency per (change, receiver).
    pub latencies: Vec<Duration>,
    /// Receipts that did not arrive within the per-change deadline.
    pub lost: usize,
    /// Frames other than `Changes` the receivers got for the document (a fallback to sync
    /// mode); zero when every receiver stayed on the fast path.
    pub sync_frames: u64,
    pub relay_cpu: Duration,
    pub wall: Duration,
    /// UDP bytes sent plus received per change, at the writer and summed over receivers.
    pub writer_udp_bytes: u64,
    pub receivers_udp_bytes: u64,
}

/// How long a change's receipts are awaited, and the whole measured loop at most.
const PER_CHANGE_DEADLINE: Duration = Duration::from_secs(2);
const RUN_DEADLINE: Duration = Duration::from_secs(90);

/// Runs `changes` measured changes (after `warmup` unmeasured ones) with `devices` devices.
pub async fn run(
    relay: &Relay,
    devices: usize,
    warmup: usize,
    changes: usize,
    chain: Arc<Chain>,
) -> anyhow::Result<Run> {
    anyhow::ensure!(devices >= 2, "fan-out needs a writer and a receiver");
    anyhow::ensure!(
        chain.len() >= warmup + changes,
        "the change chain is too short"
    );
    let doc = DocId::from_bytes(rand::random());
    let mut clients = connect_synced(relay, devices, doc).await?;
    let writer = clients.remove(0);

    let (tx, mut rx) = mpsc::channel::<(usize, Instant)>(65_536);
    let mut receivers = tokio::task::JoinSet::new();
    let mut conns = Vec::new();
    for c in clients {
        conns.push(c.conn.clone());
        receivers.spawn(receive(c, doc, chain.clone(), tx.clone()));
    }
    drop(tx);
    let Client {
        conn: wconn,
        mut reader,
        writer: mut wstream,
        endpoint: _wendpoint,
    } = writer;
    // The writer reads (and drops) the relay's acks so its stream never backs up.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = reader.recv().await {} });

    let total = warmup + changes;
    let mut receipts = Receipts {
        sent_at: vec![None; total],
        got: vec![0usize; total],
        latencies: Vec::with_capacity(changes * (devices - 1)),
        receivers: devices - 1,
        warmup,
    };
    let mut lost = 0;
    let (mut cpu0, mut wall0) = (relay_cpu(), Instant::now());
    let (mut w_udp0, mut r_udp0) = (0, 0);
    let run_deadline = Instant::now() + RUN_DEADLINE;
    let mut measured = 0;
    for i in 0..total {
        if Instant::now() > run_deadline {
            crate::progress(format_args!(
                "stopped after {measured} changes: run deadline"
            ));
            break;
        }
        if i == warmup {
            cpu0 = relay_cpu();
            wall0 = Instant::now();
            w_udp0 = udp_bytes(&wconn);
            r_udp0 = conns.iter().map(udp_bytes).sum();
        }
        let frame = client::changes_frame(doc, &chain.raw[i])?;
        receipts.sent_at[i] = Some(Instant::now());
        wstream.send_raw(&frame).await?;
        receipts.wait(i, &mut rx).await?;
        if i >= warmup {
            lost += devices - 1 - receipts.got[i];
            measured += 1;
        }
    }
    let wall = wall0.elapsed();
    let relay_cpu = relay_cpu().saturating_sub(cpu0);
    let writer_udp_bytes = udp_bytes(&wconn) - w_udp0;
    let receivers_udp_bytes = conns.iter().map(udp_bytes).sum::<u64>() - r_udp0;
    wconn.close(quinn::VarInt::from_u32(0), b"done");
    for c in &conns {
        c.close(quinn::VarInt::from_u32(0), b"done");
    }
    drain.abort();
    let mut sync_frames = 0;
    while let Some(r) = receivers.join_next().await {
        sync_frames += r.context("a receiver panicked")?;
    }
    Ok(Run {
        changes: measured,
        latencies: receipts.latencies,
        lost,
        sync_frames,
        relay_cpu,
        wall,
        writer_udp_bytes,
        receivers_udp_bytes,
    })
}

/// Connects `devices` devices to `relay` and syncs them all on `doc`.
async fn connect_synced(relay: &Relay, devices: usize, doc: DocId) -> anyhow::Result<Vec<Client>> {
    let token = relay.token()?;
    let t = Instant::now();
    let clients = client::connect_many(devices, relay.addr, &relay.cert, &token).await?;
    crate::progress(format_args!(
        "{devices} devices connected in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let clients = client::sync_all(clients, &[doc], Duration::from_secs(120)).await?;
    crate::progress(format_args!(
        "{devices} devices synced in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(clients)
}

/// When each change was sent, how many receivers got it, and the measured latencies.
struct Receipts {
    sent_at: Vec<Option<Instant>>,
    got: Vec<usize>,
    latencies: Vec<Duration>,
    receivers: usize,
    warmup: usize,
}

impl Receipts {
    /// Records receipts from `rx` until every receiver got change `i` or
    /// [`PER_CHANGE_DEADLINE`] passed; those after the warmup are measured.
    async fn wait(
        &mut self,
        i: usize,
        rx: &mut mpsc::Receiver<(usize, Instant)>,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + PER_CHANGE_DEADLINE;
        while self.got[i] < self.receivers {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((pos, at))) => {
                    self.got[pos] += 1;
                    if pos >= self.warmup {
                        if let Some(t0) = self.sent_at[pos] {
                            self.latencies.push(at.saturating_duration_since(t0));
                        }
                    }
                }
                Ok(None) => anyhow::bail!("every receiver stopped"),
                Err(_) => break,
            }
        }
        Ok(())
    }
}

fn udp_bytes(c: &quinn::Connection) -> u64 {
    let s = c.stats();
    s.udp_tx.bytes + s.udp_rx.bytes
}

/// A light receiver: timestamps each forwarded change, acknowledges it (its heads are the
/// change it just got: one writer, a linear chain) and never applies it. Returns how many
/// non-`Changes` document frames it saw.
pub async fn receive(
    c: Client,
    doc: DocId,
    chain: Arc<Chain>,
    tx: mpsc::Sender<(usize, Instant)>,
) -> u64 {
    let Client {
        mut reader,
        mut writer,
        endpoint: _endpoint,
        ..
    } = c;
    let mut others = 0;
    while let Ok(Some(msg)) = reader.recv().await {
        let at = Instant::now();
        match msg {
            Message::Changes { changes, .. } => {
                let mut last = None;
                for raw in &changes {
                    let Ok(change) = weft_core::parse_change(raw) else {
                        continue;
                    };
                    let hash = change.hash();
                    if let Some(pos) = chain.position(&hash) {
                        let _ = tx.send((pos, at)).await;
                    }
                    last = Some(hash);
                }
                if let Some(h) = last {
                    let ack = Message::Ack {
                        doc,
                        heads: vec![h],
                    };
                    if writer.send(&ack).await.is_err() {
                        break;
                    }
                }
            }
            Message::Sync { doc: d, .. } if d == doc => others += 1,
            _ => {}
        }
    }
    others
}

/// The baseline: Automerge's own sync protocol run per subscriber, in memory on one thread (no
/// network): the writer syncs its change to a server document, which then runs a full sync
/// round with each subscriber in turn; a subscriber's latency is when its round ends.
pub fn baseline(devices: usize, changes: usize, chain: &Chain) -> anyhow::Result<Vec<Duration>> {
    let mut writer = Automerge::new();
    let mut server = Automerge::new();
    let mut w_state = (sync::State::new(), sync::State::new());
    let mut subs: Vec<(Automerge, sync::State, sync::State)> = (0..devices - 1)
        .map(|_| (Automerge::new(), sync::State::new(), sync::State::new()))
        .collect();
    // Everyone starts in sync on the empty document.
    round(&mut writer, &mut server, &mut w_state.0, &mut w_state.1)?;
    for (doc, mine, theirs) in subs.iter_mut() {
        round(&mut server, doc, theirs, mine)?;
    }
    let mut latencies = Vec::with_capacity(changes * (devices - 1));
    for raw in chain.raw.iter().take(changes) {
        // The writer's local change (not timed: weft's writer pays it too).
        let change = Change::from_bytes(raw.clone())?;
        writer.apply_changes([change])?;
        let t0 = Instant::now();
        round(&mut writer, &mut server, &mut w_state.0, &mut w_state.1)?;
        for (doc, mine, theirs) in subs.iter_mut() {
            round(&mut server, doc, theirs, mine)?;
            latencies.push(t0.elapsed());
        }
    }
    Ok(latencies)
}

/// Automerge sync messages between `a` and `b` until neither has anything to say.
fn round(
    a: &mut Automerge,
    b: &mut Automerge,
    sa: &mut sync::State,
    sb: &mut sync::State,
) -> anyhow::Result<(usize, usize)> {
    let (mut msgs, mut bytes) = (0, 0);
    // Messages are encoded and decoded as they would be to cross a network.
    for _ in 0..32 {
        let m1 = a.generate_sync_message(sa).map(|m| m.encode());
        if let Some(m) = &m1 {
            msgs += 1;
            bytes += m.len();
            b.receive_sync_message(sb, sync::Message::decode(m)?)?;
        }
        let m2 = b.generate_sync_message(sb).map(|m| m.encode());
        if let Some(m) = &m2 {
            msgs += 1;
            bytes += m.len();
            a.receive_sync_message(sa, sync::Message::decode(m)?)?;
        }
        if m1.is_none() && m2.is_none() {
            return Ok((msgs, bytes));
        }
    }
    anyhow::bail!("a sync round did not settle within 32 exchanges")
}

/// Sync-protocol messages and bytes to bring a peer that is in sync up to date with each of
/// `changes` changes, one change at a time (the wire-bytes baseline).
pub fn sync_protocol_bytes(changes: usize, chain: &Chain) -> anyhow::Result<(f64, f64)> {
    let (mut a, mut b) = (Automerge::new(), Automerge::new());
    let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
    round(&mut a, &mut b, &mut sa, &mut sb)?;
    let (mut msgs, mut bytes) = (0, 0);
    let n = changes.min(chain.len());
    for raw in chain.raw.iter().take(n) {
        a.apply_changes([Change::from_bytes(raw.clone())?])?;
        let (m, by) = round(&mut a, &mut b, &mut sa, &mut sb)?;
        msgs += m;
        bytes += by;
    }
    Ok((msgs as f64 / n as f64, bytes as f64 / n as f64))
}
