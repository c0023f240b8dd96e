//! `large-change`: whether one large change stalls everyone else on the relay.
//!
//! Fan-out latency of small chat changes on document A (one writer, three receivers, one change
//! in flight, paced), first with nothing else going on (the baseline), then while another
//! device sends, every two seconds, one Automerge change that inserts a 2,000,000-character
//! text, each into a document of its own (the same change every time: a change does not name
//! its document). The large change travels as a real device would send it: a `Changes` frame
//! (the fast path), or inside an Automerge sync message (the path of peers catching up and of
//! automerge-repo clients); the relay checks and applies the two differently.
//!
//! The relay's default caps refuse that change, so it runs three times: with the defaults (the
//! 2M change both ways, then the largest change the defaults take, 99,000 characters, both
//! ways), and with the caps raised as an operator would (`--max-change-bytes 16MiB
//! --max-change-ops 4000000`) on a fresh relay per path, so one path's leftovers (a reload,
//! memory) do not land in the other's figures. Each relay's first phase is its baseline.
//!
//! Also measured per large change: whether the relay accepted it (its `Ack` on the fast path, a
//! sync reply naming it on the sync path, or a refusal) and when a second subscriber of its
//! document got it; per phase, the process's peak RSS (the relay runs in this process) and the
//! relay's CPU by thread.
//!
//! The large side (its sender and the second subscriber) runs on a runtime of its own, so
//! sending and receiving megabytes does not delay document A's devices in this process.

mod big;
mod memory;
mod side;
mod workload;

pub use big::{Big, MAKE_ENV};
pub use memory::status_kib;
pub(crate) use memory::Sampler;
pub(crate) use memory::{release_freed_memory, statm_rss_kib};
use side::LargeSide;

pub(crate) use workload::large_change_workload;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::mpsc;
use weft_core::automerge::sync::{self, SyncDoc};
use weft_core::automerge::Automerge;
use weft_core::check::Limits;
use weft_core::DocId;

use crate::chain::Chain;
use crate::client::{self, Client};
use crate::relay::{relay_cpu_split, Relay, RelayCpu};

/// Characters the large change inserts.
pub const CHARS: usize = 2_000_000;
/// Characters of the largest such change the relay's default caps take (100,000 operations,
/// one per character; the seed's operations are in changes of their own).
pub const AT_CAP_CHARS: usize = 99_000;
/// The changes made for the workload.
const SIZES: [usize; 2] = [CHARS, AT_CAP_CHARS];

/// Receivers of document A's changes (the writer is a fourth device).
const RECEIVERS: usize = 3;
/// A receipt later than this counts as lost; long enough that a stall of seconds shows as
/// latency rather than loss.
pub const RECEIPT_DEADLINE: Duration = Duration::from_secs(20);
/// Setting up a phase's devices and documents at most.
const SETUP_DEADLINE: Duration = Duration::from_secs(60);
/// Bytes above which a `Changes` entry is taken for the large change (a chat change is ~200).
const LARGE_BYTES: usize = 64 * 1024;

/// Limits that take the large change, as an operator would raise them:
/// `weft-relay --max-change-bytes 16MiB --max-change-ops 4000000`.
pub fn raised_limits() -> Limits {
    Limits {
        max_change_bytes: 16 << 20,
        max_change_ops: 4_000_000,
        ..Limits::default()
    }
}

/// Sync messages between `a` and `b` until neither has anything to say.
fn settle(
    a: &mut Automerge,
    b: &mut Automerge,
    sa: &mut sync::State,
    sb: &mut sync::State,
) -> anyhow::Result<()> {
    for _ in 0..32 {
        let m1 = a.generate_sync_message(sa);
        if let Some(m) = m1.clone() {
            b.receive_sync_message(sb, m)?;
        }
        let m2 = b.generate_sync_message(sb);
        if let Some(m) = m2.clone() {
            a.receive_sync_message(sa, m)?;
        }
        if m1.is_none() && m2.is_none() {
            return Ok(());
        }
    }
    bail!("the seed's sync did not settle within 32 exchanges")
}

/// How the large change travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// A `Changes` frame (the fast path).
    Changes,
    /// Inside an Automerge sync message.
    Sync,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Changes => "Changes frame",
            Path::Sync => "sync message",
        }
    }
}

/// Timing of a phase.
#[derive(Clone, Debug)]
pub struct Settings {
    /// A new change on document A at most this often (one in flight).
    pub pace: Duration,
    /// Unmeasured changes on document A before the window.
    pub warmup: usize,
    /// Large changes in a phase that has them: the first this far into the window, the next
    /// ones `every` apart.
    pub large: usize,
    pub first_at: Duration,
    pub every: Duration,
    /// Document A's window lasts at least this long, and with large changes until every one's
    /// outcome is known and `tail` more, `max_window` at most.
    pub min_window: Duration,
    pub tail: Duration,
    pub max_window: Duration,
}

impl Settings {
    /// Changes document A needs at most: the chain's length.
    pub fn chain_len(&self) -> usize {
        self.warmup + (self.max_window.as_secs_f64() / self.pace.as_secs_f64()).ceil() as usize + 1
    }
}

/// What became of one large change.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// When it was handed to QUIC, from the window's start.
    pub sent_at: Duration,
    /// From sending to the relay's `Ack` (or, on the sync path, a sync reply) naming it.
    pub accepted: Option<Duration>,
    /// From sending to the second subscriber receiving it.
    pub delivered: Option<Duration>,
    /// The relay's refusal (code and sentence), as the sender got it.
    pub refused: Option<String>,
}

/// The process's resident memory over a phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rss {
    /// At the window's start.
    pub start_kib: u64,
    /// The kernel's high-water mark (`VmHWM`), reset at the window's start.
    pub peak_kib: u64,
    /// Whether resetting the high-water mark worked (else `peak_kib` is the sampled peak).
    pub hwm_reset: bool,
    /// The largest of `VmRSS` samples every 10 ms.
    pub sampled_peak_kib: u64,
    /// When the sampled peak was, from the window's start.
    pub sampled_peak_at: Duration,
    /// After the phase.
    pub end_kib: u64,
}

/// What one phase measured.
pub struct Phase {
    /// Document A: one latency per (change, receiver), from the writer's send.
    pub latencies: Vec<Duration>,
    /// The same receipts timed from when the change was due by the pace: what a device writing
    /// at that pace sees when a stall holds its writes back.
    pub from_schedule: Vec<Duration>,
    pub changes: usize,
    /// Document A receipts that missed [`RECEIPT_DEADLINE`].
    pub lost: usize,
    /// Sync frames document A's receivers got (fallbacks from the fast path).
    pub sync_frames: u64,
    pub large: Vec<Outcome>,
    /// Sync frames the second subscriber got on the large documents.
    pub large_sync_frames: u64,
    pub rss: Rss,
    /// The relay's CPU during the window and until every large change's outcome was known.
    pub cpu: RelayCpu,
    /// Seconds from the window's start to the end of the phase.
    pub span: Duration,
    pub refused_limit: u64,
    pub queue_drops: u64,
}

/// One phase: document A's fan-out, with large changes on `path` when given (see
/// [`Settings`] for how long). Document A's devices run on the caller's runtime, the large side on `big_rt`.
pub async fn phase(
    relay: &Relay,
    chain: Arc<Chain>,
    big: Arc<Big>,
    path: Option<Path>,
    big_rt: tokio::runtime::Handle,
    settings: &Settings,
) -> anyhow::Result<Phase> {
    let token = relay.token()?;
    let doc = DocId::from_bytes(rand::random());
    let total = settings.chain_len().min(chain.len());
    anyhow::ensure!(total > settings.warmup, "the change chain is too short");

    let clients = client::connect_many(RECEIVERS + 1, relay.addr, &relay.cert, &token).await?;
    let mut clients = client::sync_all(clients, &[doc], SETUP_DEADLINE).await?;
    let mut large_side = match path {
        Some(path) => Some((
            prepare_large_side(relay, &token, &big, settings.large, &big_rt).await?,
            path,
        )),
        None => None,
    };
    crate::progress(format_args!("phase set up"));

    let writer = clients.remove(0);
    let (tx, mut rx) = mpsc::channel::<(usize, Instant)>(65_536);
    let mut receivers = tokio::task::JoinSet::new();
    let mut conns = Vec::new();
    for c in clients {
        conns.push(c.conn.clone());
        receivers.spawn(crate::fanout::receive(c, doc, chain.clone(), tx.clone()));
    }
    drop(tx);
    let Client {
        conn: wconn,
        mut reader,
        writer: mut wstream,
        endpoint: _wendpoint,
    } = writer;
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = reader.recv().await {} });

    let mut receipts = Receipts::new(total);
    let mut window: Option<Window> = None;
    // When the large side had every outcome (seen once the minimum window is over).
    let mut large_done: Option<Instant> = None;
    let drops0 = relay.metrics.queue_drops.load(Ordering::Relaxed);
    let refused0 = relay.metrics.refused_limit.load(Ordering::Relaxed);
    for i in 0..total {
        if i == settings.warmup {
            window = Some(Window::start(large_side.take(), &big, settings, &big_rt));
        }
        let due = match &window {
            Some(w) => {
                let Some(due) = w.due(i, settings, &mut large_done) else {
                    break;
                };
                tokio::time::sleep_until(due.into()).await;
                Some(due)
            }
            None => None,
        };
        let frame = client::changes_frame(doc, &chain.raw[i])?;
        receipts.sent_at[i] = Some(Instant::now());
        receipts.due_at[i] = due;
        wstream.send_raw(&frame).await?;
        receipts.wait(i, &mut rx, settings.warmup).await?;
    }
    let window = window.context("the window never started")?;
    let ended = window.finish(settings).await?;
    wconn.close(quinn::VarInt::from_u32(0), b"done");
    for c in &conns {
        c.close(quinn::VarInt::from_u32(0), b"done");
    }
    drain.abort();
    let mut sync_frames = 0;
    while let Some(r) = receivers.join_next().await {
        sync_frames += r.context("a receiver panicked")?;
    }
    Ok(Phase {
        latencies: receipts.latencies,
        from_schedule: receipts.from_schedule,
        changes: receipts.measured,
        lost: receipts.lost,
        sync_frames,
        large: ended.large,
        large_sync_frames: ended.large_sync_frames,
        rss: ended.rss,
        cpu: ended.cpu,
        span: ended.span,
        refused_limit: relay.metrics.refused_limit.load(Ordering::Relaxed) - refused0,
        queue_drops: relay.metrics.queue_drops.load(Ordering::Relaxed) - drops0,
    })
}

/// Sets up the large side (its `n` documents and two devices) on `big_rt`.
async fn prepare_large_side(
    relay: &Relay,
    token: &str,
    big: &Arc<Big>,
    n: usize,
    big_rt: &tokio::runtime::Handle,
) -> anyhow::Result<LargeSide> {
    let (addr, cert, token, big) = (
        relay.addr,
        relay.cert.clone(),
        token.to_string(),
        big.clone(),
    );
    let side = big_rt.spawn(async move { LargeSide::prepare(addr, &cert, &token, &big, n).await });
    tokio::time::timeout(SETUP_DEADLINE, side)
        .await
        .context("setting up the large side timed out")?
        .context("the large side's setup panicked")?
}

/// Document A's receipts: when each change was sent and due, how many receivers got it, and
/// the measured latencies.
struct Receipts {
    sent_at: Vec<Option<Instant>>,
    due_at: Vec<Option<Instant>>,
    got: Vec<usize>,
    latencies: Vec<Duration>,
    from_schedule: Vec<Duration>,
    lost: usize,
    measured: usize,
}

impl Receipts {
    fn new(total: usize) -> Receipts {
        Receipts {
            sent_at: vec![None; total],
            due_at: vec![None; total],
            got: vec![0usize; total],
            latencies: Vec::new(),
            from_schedule: Vec::new(),
            lost: 0,
            measured: 0,
        }
    }

    /// Records receipts from `rx` until every receiver got change `i` or
    /// [`RECEIPT_DEADLINE`] passed; those after the warmup are measured.
    async fn wait(
        &mut self,
        i: usize,
        rx: &mut mpsc::Receiver<(usize, Instant)>,
        warmup: usize,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + RECEIPT_DEADLINE;
        while self.got[i] < RECEIVERS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((pos, at))) => {
                    self.got[pos] += 1;
                    if pos >= warmup {
                        if let Some(t0) = self.sent_at[pos] {
                            self.latencies.push(at.saturating_duration_since(t0));
                        }
                        if let Some(d) = self.due_at[pos] {
                            self.from_schedule.push(at.saturating_duration_since(d));
                        }
                    }
                }
                Ok(None) => bail!("every receiver of document A stopped"),
                Err(_) => break,
            }
        }
        if i >= warmup {
            self.lost += RECEIVERS - self.got[i];
            self.measured += 1;
        }
        Ok(())
    }
}

/// The large side's outcomes, and the sync frames its second subscriber got.
type LargeResult = (Vec<Outcome>, u64);

/// The measured window's start: its clock, the relay's CPU then, the memory sampler and the
/// large side's task.
struct Window {
    t0: Instant,
    cpu0: RelayCpu,
    sampler: Sampler,
    large: Option<tokio::task::JoinHandle<anyhow::Result<LargeResult>>>,
}

/// What a window measured once it ended.
struct WindowEnd {
    large: Vec<Outcome>,
    large_sync_frames: u64,
    cpu: RelayCpu,
    span: Duration,
    rss: Rss,
}

impl Window {
    fn start(
        side: Option<(LargeSide, Path)>,
        big: &Arc<Big>,
        settings: &Settings,
        big_rt: &tokio::runtime::Handle,
    ) -> Window {
        let sampler = Sampler::start();
        let t0 = Instant::now();
        let cpu0 = relay_cpu_split();
        let large = side.map(|(side, path)| {
            let (big, settings) = (big.clone(), settings.clone());
            big_rt.spawn(side.run(big, path, t0, settings))
        });
        Window {
            t0,
            cpu0,
            sampler,
            large,
        }
    }

    /// When change `i` (after the warmup) is due, or `None` when the window is over: at
    /// `max_window`, or past `min_window` without large changes, or `tail` after the large
    /// side had every outcome (noted in `large_done` when first seen).
    fn due(
        &self,
        i: usize,
        settings: &Settings,
        large_done: &mut Option<Instant>,
    ) -> Option<Instant> {
        let due = self.t0 + settings.pace * (i - settings.warmup) as u32;
        let elapsed = due.saturating_duration_since(self.t0);
        if elapsed >= settings.max_window {
            return None;
        }
        if elapsed >= settings.min_window {
            match (&self.large, *large_done) {
                (None, _) => return None,
                (Some(_), Some(done)) if due >= done + settings.tail => return None,
                (Some(task), None) if task.is_finished() => {
                    *large_done = Some(Instant::now());
                }
                _ => {}
            }
        }
        Some(due)
    }

    /// Waits for the large side's outcomes, then reads the relay's CPU, the span and memory.
    async fn finish(mut self, settings: &Settings) -> anyhow::Result<WindowEnd> {
        let (large, large_sync_frames) = match self.large.take() {
            Some(task) => tokio::time::timeout(settings.max_window + Duration::from_secs(10), task)
                .await
                .context("the large side did not finish")?
                .context("the large side panicked")??,
            None => (Vec::new(), 0),
        };
        let cpu = relay_cpu_split().since(&self.cpu0);
        let span = self.t0.elapsed();
        let rss = self.sampler.finish();
        Ok(WindowEnd {
            large,
            large_sync_frames,
            cpu,
            span,
            rss,
        })
    }
}
