//! `throughput`: many documents, every device subscribed to all of them; each document has one
//! writing device and the others receive. Writers send pre-generated changes as fast as the
//! relay acknowledges them (bounded windows); light receivers count forwarded changes and
//! acknowledge them in batches, never applying them.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, Notify};
use weft_core::wire::Message;
use weft_core::DocId;

use crate::chain::Chain;
use crate::client::{self, Client};
use crate::relay::{relay_cpu_split, RelayCpu};

/// Changes a device may have sent and not yet had acknowledged.
const ACK_WINDOW: u64 = 1024;
/// Changes sent but not yet delivered, per receiver on average, across all devices: with the
/// in-process relay, whose devices keep up, each receiver's backlog stays under the relay's
/// 1,024-frame queue.
pub const DELIVERY_WINDOW: u64 = 3000;
/// How often a receiver acknowledges what it received.
const ACK_EVERY: Duration = Duration::from_millis(500);

/// Where the devices connect.
pub struct Target<'a> {
    /// The relays (of one cluster): devices are spread over them in turn.
    pub addrs: Vec<SocketAddr>,
    pub cert: &'a [CertificateDer<'static>],
    pub token: String,
    /// A real relay: subscribe and sync first. The forwarder needs neither.
    pub relay: bool,
    /// The CPU time of relays in other processes (with their Postgres), read before and after
    /// the window; without it, the in-process relay's threads are read.
    pub cpu: Option<&'a (dyn Fn() -> Duration + Sync)>,
    /// Changes undelivered per receiver at most ([`DELIVERY_WINDOW`] unless a workload's
    /// devices cannot keep up with that and the relay drops them as too slow).
    pub delivery_window: u64,
}

/// What one run measured.
pub struct Run {
    pub accepted_per_s: f64,
    pub deliveries_per_s: f64,
    pub relay_cpu: Duration,
    /// `relay_cpu` by kind of thread.
    pub relay_cpu_split: RelayCpu,
    pub accepted: u64,
    pub window: Duration,
    pub setup: Duration,
    pub sync_frames: u64,
    pub chain_exhausted: bool,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    delivered: AtomicU64,
    sync_frames: AtomicU64,
    exhausted: AtomicBool,
    stop: AtomicBool,
    progress: Notify,
}

pub async fn run(
    target: Target<'_>,
    docs: usize,
    devices: usize,
    warmup: Duration,
    window: Duration,
    chain: Arc<Chain>,
) -> anyhow::Result<Run> {
    let setup_started = Instant::now();
    let ids: Vec<DocId> = (0..docs)
        .map(|_| DocId::from_bytes(rand::random()))
        .collect();
    let clients = connect_spread(&target, &ids, devices).await?;
    let setup = setup_started.elapsed();

    let doc_set: Arc<HashSet<DocId>> = Arc::new(ids.iter().copied().collect());
    let counters = Arc::new(Counters::default());
    let receivers = (devices - 1) as u64;
    let delivery_window = target.delivery_window;
    let mut tasks = tokio::task::JoinSet::new();
    let mut conns = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let mine: Vec<DocId> = ids.iter().skip(i).step_by(devices).copied().collect();
        conns.push(c.conn.clone());
        let Client {
            reader,
            writer,
            endpoint,
            ..
        } = c;
        let (ack_tx, ack_rx) = mpsc::channel(docs + 16);
        let device_acked = Arc::new(AtomicU64::new(0));
        tasks.spawn(read(
            reader,
            doc_set.clone(),
            chain.clone(),
            counters.clone(),
            device_acked.clone(),
            ack_tx,
        ));
        tasks.spawn(write(
            writer,
            endpoint,
            mine,
            chain.clone(),
            counters.clone(),
            device_acked,
            (receivers, delivery_window),
            ack_rx,
        ));
    }

    tokio::time::sleep(warmup).await;
    let external = || target.cpu.map_or(Duration::ZERO, |f| f());
    let (a0, d0, cpu0, ext0, t0) = (
        counters.accepted.load(Relaxed),
        counters.delivered.load(Relaxed),
        relay_cpu_split(),
        external(),
        Instant::now(),
    );
    let sync0 = counters.sync_frames.load(Relaxed);
    tokio::time::sleep(window).await;
    let (a1, d1, cpu1, ext1, elapsed) = (
        counters.accepted.load(Relaxed),
        counters.delivered.load(Relaxed),
        relay_cpu_split(),
        external(),
        t0.elapsed(),
    );
    let sync_frames = counters.sync_frames.load(Relaxed) - sync0;
    counters.stop.store(true, Relaxed);
    counters.progress.notify_waiters();
    for c in &conns {
        c.close(quinn::VarInt::from_u32(0), b"done");
    }
    tasks.shutdown().await;
    let secs = elapsed.as_secs_f64();
    Ok(Run {
        accepted_per_s: (a1 - a0) as f64 / secs,
        deliveries_per_s: (d1 - d0) as f64 / secs,
        relay_cpu: if target.cpu.is_some() {
            ext1.saturating_sub(ext0)
        } else {
            cpu1.since(&cpu0).total()
        },
        relay_cpu_split: cpu1.since(&cpu0),
        accepted: a1 - a0,
        window: elapsed,
        setup,
        sync_frames,
        chain_exhausted: counters.exhausted.load(Relaxed),
    })
}

/// `devices` clients spread over the target's relays, synced on `ids` when it is a relay.
/// Those of the first relay sync first and create the documents there; the others join once
/// the other relays have had a moment to read the creations from the cluster's log.
async fn connect_spread(
    target: &Target<'_>,
    ids: &[DocId],
    devices: usize,
) -> anyhow::Result<Vec<Client>> {
    let n = target.addrs.len().max(1);
    let mut groups = Vec::with_capacity(n);
    for (r, addr) in target.addrs.iter().enumerate() {
        let here = (devices + n - 1 - r) / n;
        groups.push(client::connect_many(here, *addr, target.cert, &target.token).await?);
    }
    if !target.relay {
        return Ok(groups.into_iter().flatten().collect());
    }
    let mut out = Vec::with_capacity(devices);
    for (r, group) in groups.into_iter().enumerate() {
        if r == 1 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        out.extend(client::sync_all(group, ids, Duration::from_secs(300)).await?);
    }
    Ok(out)
}

async fn read(
    mut reader: weft_core::quic::FrameReader,
    docs: Arc<HashSet<DocId>>,
    chain: Arc<Chain>,
    counters: Arc<Counters>,
    device_acked: Arc<AtomicU64>,
    acks: mpsc::Sender<(DocId, usize)>,
) {
    let mut received: HashMap<DocId, usize> = HashMap::new();
    let mut dirty: HashMap<DocId, usize> = HashMap::new();
    let mut tick = tokio::time::interval(ACK_EVERY);
    loop {
        tokio::select! {
            msg = reader.recv() => {
                let Ok(Some(msg)) = msg else { return };
                match msg {
                    Message::Changes { doc, changes } => {
                        let n = received.entry(doc).or_default();
                        *n += changes.len();
                        dirty.insert(doc, *n);
                        counters.delivered.fetch_add(changes.len() as u64, Relaxed);
                        counters.progress.notify_waiters();
                    }
                    Message::Ack { .. } => {
                        device_acked.fetch_add(1, Relaxed);
                        counters.accepted.fetch_add(1, Relaxed);
                        counters.progress.notify_waiters();
                    }
                    Message::Sync { doc, .. } if docs.contains(&doc) => {
                        counters.sync_frames.fetch_add(1, Relaxed);
                    }
                    _ => {}
                }
            }
            _ = tick.tick() => {
                // Acks the writer has no room for yet wait for the next tick (dropping them
                // would leave the relay waiting for an ack that never comes).
                let mut due = std::mem::take(&mut dirty).into_iter();
                for (doc, n) in due.by_ref() {
                    if n > chain.len() {
                        continue;
                    }
                    if let Err(e) = acks.try_send((doc, n)) {
                        let (doc, n) = e.into_inner();
                        dirty.insert(doc, n);
                        break;
                    }
                }
                dirty.extend(due);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn write(
    mut writer: weft_core::quic::FrameWriter,
    _endpoint: quinn::Endpoint,
    mine: Vec<DocId>,
    chain: Arc<Chain>,
    counters: Arc<Counters>,
    device_acked: Arc<AtomicU64>,
    (receivers, delivery_window): (u64, u64),
    mut acks: mpsc::Receiver<(DocId, usize)>,
) {
    let mut next = vec![0usize; mine.len()];
    let mut device_sent = 0u64;
    let mut turn = 0usize;
    let mut exhausted = 0usize;
    while !counters.stop.load(Relaxed) {
        while let Ok((doc, n)) = acks.try_recv() {
            let ack = Message::Ack {
                doc,
                heads: vec![chain.hashes[n - 1]],
            };
            if writer.send(&ack).await.is_err() {
                return;
            }
        }
        let notified = counters.progress.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let sent = counters.sent.load(Relaxed);
        let undelivered = (sent * receivers).saturating_sub(counters.delivered.load(Relaxed));
        let blocked = device_sent - device_acked.load(Relaxed) >= ACK_WINDOW
            || undelivered >= delivery_window * receivers
            || exhausted == mine.len();
        if blocked {
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(ACK_EVERY) => {}
            }
            continue;
        }
        let k = turn % mine.len();
        turn += 1;
        if next[k] >= chain.len() {
            continue;
        }
        let Ok(frame) = client::changes_frame(mine[k], &chain.raw[next[k]]) else {
            return;
        };
        next[k] += 1;
        if next[k] == chain.len() {
            exhausted += 1;
            if exhausted == mine.len() {
                counters.exhausted.store(true, Relaxed);
            }
        }
        if writer.send_raw(&frame).await.is_err() {
            return;
        }
        device_sent += 1;
        counters.sent.fetch_add(1, Relaxed);
    }
}
