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

mod workload;

pub(crate) use workload::large_change_workload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use tokio::sync::mpsc;
use weft_core::automerge::sync::{self, SyncDoc};
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{ActorId, Automerge, ChangeHash, ObjType, ReadDoc, ROOT};
use weft_core::check::Limits;
use weft_core::wire::{self, Message};
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

/// The large change and what it takes to send it both ways, made before anything is timed.
pub struct Big {
    /// Characters it inserts.
    pub chars: usize,
    /// The change's bytes.
    pub raw: Bytes,
    pub hash: ChangeHash,
    pub ops: usize,
    /// The document the large change goes into: a title and a short text, in three small
    /// changes, which every large-change document holds before its large change.
    pub seed: Automerge,
    /// `Automerge::generate_sync_message` of the document with the large change, for a peer
    /// holding the seed (what a device in sync mode sends right after making it).
    pub sync_data: Vec<u8>,
    /// What the sync message carries the change as ("change chunk", "document chunk").
    pub sync_chunk: String,
    /// Local commit of the large change.
    pub commit: Duration,
    /// `check_change` of it under the raised limits: what a relay's connection task does
    /// (on a blocking thread) before the hub sees it.
    pub check: Duration,
    /// Automerge's `Change::decode` of it: what the relay's write rules run on every change
    /// they check (the hub's thread).
    pub decode: Duration,
}

impl Big {
    /// Makes the seed and the large change, and the sync message that carries it.
    pub fn generate(chars: usize) -> anyhow::Result<Big> {
        let mut am = Automerge::new().with_actor(ActorId::random());
        let mut tx = am.transaction();
        tx.put(ROOT, "title", "notes")?;
        let text = tx.put_object(ROOT, "text", ObjType::Text)?;
        tx.commit();
        for line in ["first line\n", "second line\n"] {
            let mut tx = am.transaction();
            let at = tx.length(&text);
            tx.splice_text(&text, at, 0, line)?;
            tx.commit();
        }
        let seed = am.clone();
        let words = "on my way, see you at the station in ten minutes. ";
        let body: String = words.chars().cycle().take(chars).collect();
        let t = Instant::now();
        let mut tx = am.transaction();
        let at = tx.length(&text);
        tx.splice_text(&text, at, 0, &body)?;
        tx.commit();
        let commit = t.elapsed();
        let change = am
            .get_last_local_change()
            .context("the large change was just committed")?;
        let raw = Bytes::copy_from_slice(change.raw_bytes());
        let hash = change.hash();
        let ops = change.len();

        // The sync state a device holds once it and the relay both hold the seed (the
        // protocol is Automerge's on both sides, so settling against an empty document in
        // memory reaches the state the live exchange does).
        let mut device_state = sync::State::new();
        let mut relay_side = Automerge::new();
        let mut relay_state = sync::State::new();
        let mut seed_copy = seed.clone();
        settle(
            &mut seed_copy,
            &mut relay_side,
            &mut device_state,
            &mut relay_state,
        )?;
        let msg = am
            .generate_sync_message(&mut device_state)
            .context("a sync message after a local change")?;
        let sync_chunk = match msg.changes.iter().next().and_then(|c| c.get(8)) {
            Some(0) => "document chunk",
            Some(1) => "change chunk",
            Some(2) => "compressed change chunk",
            _ => "no changes",
        }
        .to_string();
        let sync_data = msg.encode();
        drop(am);

        let limits = raised_limits();
        let t = Instant::now();
        weft_core::check::check_change(raw.clone(), &limits)
            .map_err(|e| anyhow::anyhow!("the large change fails its check: {e}"))?;
        let check = t.elapsed();
        let t = Instant::now();
        let decoded = change.decode();
        let decode = t.elapsed();
        anyhow::ensure!(decoded.operations.len() == ops, "decode lost operations");
        drop(decoded);
        Ok(Big {
            chars,
            raw,
            hash,
            ops,
            seed,
            sync_data,
            sync_chunk,
            commit,
            check,
            decode,
        })
    }
}

/// The environment variable that makes this binary a child that writes the large change into
/// the directory it names, then exits.
pub const MAKE_ENV: &str = "WEFT_BENCH_MAKE_LARGE_CHANGE";

impl Big {
    /// Makes the large changes ([`CHARS`], [`AT_CAP_CHARS`]) in a child process (this binary
    /// again, with [`MAKE_ENV`] set) and reads them back. Making the large one takes Automerge
    /// 0.12 about a gigabyte, which this process's allocator would keep for a while and the
    /// relay's RSS would then seem to include.
    pub fn generate_in_child() -> anyhow::Result<Vec<Big>> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let exe = std::env::current_exe().context("cannot find this binary")?;
        let mut child = std::process::Command::new(exe)
            .env(MAKE_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("cannot start the child that makes the large change")?;
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > Duration::from_secs(300) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("making the large change took over 300 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        anyhow::ensure!(
            status.success(),
            "the child making the large change failed: {status}"
        );
        SIZES
            .iter()
            .map(|chars| Big::read(&dir.path().join(chars.to_string())))
            .collect()
    }

    /// A change [`Big::write`] wrote into `dir`.
    fn read(dir: &std::path::Path) -> anyhow::Result<Big> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).with_context(|| format!("reading the child's {name}"))
        };
        let meta: serde_json::Value = serde_json::from_slice(&read("meta.json")?)?;
        let field = |k: &str| {
            meta[k]
                .as_u64()
                .with_context(|| format!("no {k} in meta.json"))
        };
        let hash = meta["hash"]
            .as_str()
            .context("no hash in meta.json")?
            .parse()
            .map_err(|e| anyhow::anyhow!("a bad hash in meta.json: {e:?}"))?;
        Ok(Big {
            chars: usize::try_from(field("chars")?)?,
            raw: Bytes::from(read("raw")?),
            hash,
            ops: usize::try_from(field("ops")?)?,
            seed: Automerge::load(&read("seed")?)?,
            sync_data: read("sync")?,
            sync_chunk: meta["sync_chunk"].as_str().unwrap_or("?").to_string(),
            commit: Duration::from_micros(field("commit_us")?),
            check: Duration::from_micros(field("check_us")?),
            decode: Duration::from_micros(field("decode_us")?),
        })
    }

    /// The child's side of [`Big::generate_in_child`]: makes each change and writes it into a
    /// directory of `dir` named by its number of characters.
    pub fn write_for_parent(dir: &std::path::Path) -> anyhow::Result<()> {
        for chars in SIZES {
            let sub = dir.join(chars.to_string());
            std::fs::create_dir(&sub)?;
            Big::generate(chars)?.write(&sub)?;
        }
        Ok(())
    }

    fn write(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        std::fs::write(dir.join("raw"), &self.raw)?;
        std::fs::write(dir.join("seed"), self.seed.save())?;
        std::fs::write(dir.join("sync"), &self.sync_data)?;
        let us = |d: Duration| d.as_micros() as u64;
        let meta = serde_json::json!({
            "chars": self.chars,
            "hash": self.hash.to_string(),
            "ops": self.ops,
            "sync_chunk": self.sync_chunk,
            "commit_us": us(self.commit),
            "check_us": us(self.check),
            "decode_us": us(self.decode),
        });
        std::fs::write(dir.join("meta.json"), serde_json::to_vec(&meta)?)?;
        Ok(())
    }

    /// A short name: "2M", "99k".
    pub fn label(&self) -> String {
        if self.chars >= 1_000_000 && self.chars.is_multiple_of(1_000_000) {
            format!("{}M", self.chars / 1_000_000)
        } else if self.chars >= 1_000 {
            format!("{}k", self.chars / 1_000)
        } else {
            self.chars.to_string()
        }
    }
}

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
        Some(path) => {
            let n = settings.large;
            let (addr, cert, token, big) =
                (relay.addr, relay.cert.clone(), token.clone(), big.clone());
            let side =
                big_rt.spawn(async move { LargeSide::prepare(addr, &cert, &token, &big, n).await });
            let side = tokio::time::timeout(SETUP_DEADLINE, side)
                .await
                .context("setting up the large side timed out")?
                .context("the large side's setup panicked")??;
            Some((side, path))
        }
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

    let mut sent_at: Vec<Option<Instant>> = vec![None; total];
    let mut due_at: Vec<Option<Instant>> = vec![None; total];
    let mut got = vec![0usize; total];
    let mut latencies = Vec::new();
    let mut from_schedule = Vec::new();
    let mut lost = 0;
    let mut measured = 0;
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
                let due = w.t0 + settings.pace * (i - settings.warmup) as u32;
                let elapsed = due.saturating_duration_since(w.t0);
                if elapsed >= settings.max_window {
                    break;
                }
                if elapsed >= settings.min_window {
                    match (&w.large, large_done) {
                        (None, _) => break,
                        (Some(_), Some(done)) if due >= done + settings.tail => break,
                        (Some(task), None) if task.is_finished() => {
                            large_done = Some(Instant::now());
                        }
                        _ => {}
                    }
                }
                tokio::time::sleep_until(due.into()).await;
                Some(due)
            }
            None => None,
        };
        let frame = client::changes_frame(doc, &chain.raw[i])?;
        sent_at[i] = Some(Instant::now());
        due_at[i] = due;
        wstream.send_raw(&frame).await?;
        let deadline = tokio::time::Instant::now() + RECEIPT_DEADLINE;
        while got[i] < RECEIVERS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((pos, at))) => {
                    got[pos] += 1;
                    if pos >= settings.warmup {
                        if let Some(t0) = sent_at[pos] {
                            latencies.push(at.saturating_duration_since(t0));
                        }
                        if let Some(d) = due_at[pos] {
                            from_schedule.push(at.saturating_duration_since(d));
                        }
                    }
                }
                Ok(None) => bail!("every receiver of document A stopped"),
                Err(_) => break,
            }
        }
        if i >= settings.warmup {
            lost += RECEIVERS - got[i];
            measured += 1;
        }
    }
    let mut window = window.context("the window never started")?;
    let (large, large_sync_frames) = match window.large.take() {
        Some(task) => tokio::time::timeout(settings.max_window + Duration::from_secs(10), task)
            .await
            .context("the large side did not finish")?
            .context("the large side panicked")??,
        None => (Vec::new(), 0),
    };
    let cpu = relay_cpu_split().since(&window.cpu0);
    let span = window.t0.elapsed();
    let rss = window.sampler.finish();
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
        latencies,
        from_schedule,
        changes: measured,
        lost,
        sync_frames,
        large,
        large_sync_frames,
        rss,
        cpu,
        span,
        refused_limit: relay.metrics.refused_limit.load(Ordering::Relaxed) - refused0,
        queue_drops: relay.metrics.queue_drops.load(Ordering::Relaxed) - drops0,
    })
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
}

/// The large change's sender and a second subscriber of its documents, on their own runtime.
struct LargeSide {
    sender: Client,
    receiver: Client,
    docs: Vec<DocId>,
}

impl LargeSide {
    /// Connects both devices, has the sender create `n` documents holding the seed (over the
    /// sync protocol, as a device does), then syncs the second subscriber on all of them.
    async fn prepare(
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
    async fn run(
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
                        data: big.sync_data.clone(),
                    },
                };
                wire::frame(&msg, wire::DEFAULT_MAX_FRAME)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (ev_tx, mut events) = mpsc::channel::<(DocId, Event, Instant)>(1024);
        let Client {
            conn: sconn,
            reader: mut sreader,
            writer: mut swriter,
            endpoint: _sendpoint,
        } = sender;
        let hash = big.hash;
        let tx = ev_tx.clone();
        let sender_reader = tokio::spawn(async move {
            while let Ok(Some(msg)) = sreader.recv().await {
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
        });
        let Client {
            conn: rconn,
            reader: mut rreader,
            writer: mut rwriter,
            endpoint: _rendpoint,
        } = receiver;
        let tx = ev_tx;
        let receiver_task = tokio::spawn(async move {
            let mut sync_frames = 0;
            while let Ok(Some(msg)) = rreader.recv().await {
                let at = Instant::now();
                match msg {
                    // Not parsed: the change is known, and parsing two million operations
                    // here would take this runtime's thread for most of a second.
                    Message::Changes { doc, changes }
                        if changes.iter().any(|c| c.len() > LARGE_BYTES) =>
                    {
                        let _ = tx.send((doc, Event::Delivered, at)).await;
                        let ack = Message::Ack {
                            doc,
                            heads: vec![hash],
                        };
                        if rwriter.send(&ack).await.is_err() {
                            break;
                        }
                    }
                    Message::Sync { .. } => sync_frames += 1,
                    _ => {}
                }
            }
            sync_frames
        });

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
        let done =
            |o: &Outcome| o.refused.is_some() || (o.delivered.is_some() && o.accepted.is_some());
        while !outcomes.iter().all(done) {
            let Ok(Some((doc, ev, at))) = tokio::time::timeout_at(deadline, events.recv()).await
            else {
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

/// What the large side heard about a document.
enum Event {
    Accepted,
    Delivered,
    Refused(String),
}

/// Subscribes `doc` (creating it) and runs Automerge's sync protocol with the relay from a
/// copy of `seed` until the relay holds the seed's heads.
async fn sync_seed(c: &mut Client, doc: DocId, seed: &Automerge) -> anyhow::Result<()> {
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
                    data: m.encode(),
                })
                .await?;
        } else if state.their_heads.as_ref() == Some(&heads) {
            return Ok(());
        }
    }
}

/// Samples the process's `VmRSS` every 10 ms on a thread of its own, after resetting the
/// kernel's high-water mark.
struct Sampler {
    start_kib: u64,
    hwm_reset: bool,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, Duration)>>,
}

impl Sampler {
    fn start() -> Sampler {
        release_freed_memory();
        // "5" resets the peak resident set size (proc(5), /proc/pid/clear_refs).
        let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let start_kib = status_kib("VmRSS").unwrap_or(0);
        let stop = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weft-bench-rss".into())
            .spawn(move || {
                let (mut peak, mut peak_at) = (0, Duration::ZERO);
                // Bounded: ten minutes of samples at most.
                for _ in 0..60_000 {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let rss = statm_rss_kib().unwrap_or(0);
                    if rss > peak {
                        (peak, peak_at) = (rss, t0.elapsed());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                (peak, peak_at)
            })
            .ok();
        Sampler {
            start_kib,
            hwm_reset,
            stop,
            thread,
        }
    }

    fn finish(mut self) -> Rss {
        self.stop.store(true, Ordering::Relaxed);
        let (sampled_peak_kib, sampled_peak_at) = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let hwm = status_kib("VmHWM").unwrap_or(0);
        Rss {
            start_kib: self.start_kib,
            peak_kib: if self.hwm_reset {
                hwm
            } else {
                sampled_peak_kib
            },
            hwm_reset: self.hwm_reset,
            sampled_peak_kib,
            sampled_peak_at,
            end_kib: status_kib("VmRSS").unwrap_or(0),
        }
    }
}

extern "C" {
    /// mimalloc's own collection (the global allocator's C library is linked into this
    /// binary): `force` returns freed memory to the system at once rather than after the purge
    /// delay (10 s in the relay, `weft_relay::tune_allocator`).
    fn mi_collect(force: bool);
}

/// Returns the memory freed so far to the system, so one phase's freed memory does not count
/// in the next one's resident set.
pub fn release_freed_memory() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time.
    unsafe { mi_collect(true) };
}

/// A `kB` field of `/proc/self/status`.
pub fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.split(':').next() == Some(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resident set size from `/proc/self/statm` (cheaper to read than `status`).
fn statm_rss_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096) / 1024)
}
