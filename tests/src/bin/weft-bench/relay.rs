//! The relay under test, in this process on a runtime of its own (one worker thread: "the relay
//! on one core"), with its real QUIC server and redb store in a temporary directory; and the
//! baseline forwarder, the same transport with neither engine nor store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};
use weft_core::quic::{FrameReader, FrameWriter};
use weft_core::store::{GroupCommit, KvStore, RedbStore};
use weft_core::wire::{self, Message};
use weft_relay::{Claims, Metrics, Minter};

/// Threads whose CPU time counts as the relay's (names are cut to 15 bytes by the kernel).
const RELAY_THREAD: &str = "weft-relay-rt";
const STORE_THREAD: &str = "weft-store-writ";

/// Overrides the relay's store page cache (`StagingLimits::cache_bytes`), in bytes, to compare
/// cache sizes on one build.
pub const STORE_CACHE_ENV: &str = "WEFT_BENCH_STORE_CACHE";

/// The thread id of the latest relay runtime's one worker (the hub and QUIC): its other threads
/// are the blocking pool (document loads and compaction saves). Set by every start, since a
/// run starts a relay per workload (or per phase) and each has a worker of its own.
static WORKER_TID: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// What [`Relay::start_opts`] sets up besides the defaults.
#[derive(Default)]
pub struct Options {
    /// What a member's changes must fit (the connection tasks' check and the engine's alike).
    pub check: Option<weft_core::check::Limits>,
    /// How long a document without subscribers stays loaded (`weft-relay --evict-after`).
    pub evict_after: Option<Duration>,
    /// Serve the WebSocket endpoint too (`weft-relay --ws`), on the same runtime.
    pub ws: bool,
    /// Checkpoint to Postgres (`weft-relay --postgres`).
    pub checkpoints: Option<weft_relay::CheckpointConfig>,
    /// Batch a document's ephemeral traffic from this many subscribers (`usize::MAX`: never).
    pub presence_batch_from: Option<usize>,
    /// How long batched ephemeral frames wait.
    pub presence_batch_every: Option<Duration>,
    /// The store's page cache in bytes (`StagingLimits::cache_bytes`), instead of the relay's.
    pub store_cache: Option<usize>,
    /// The documents one user may own (`Quotas::max_docs_per_user`), instead of the relay's.
    pub max_docs_per_user: Option<usize>,
    /// Save every document on the hub's thread (a newcomer's whole document, a compaction's
    /// snapshot), however large, as the relay did before it handed large ones to a blocking
    /// thread: a baseline.
    pub saves_in_place: bool,
}

/// A running relay.
pub struct Relay {
    pub addr: SocketAddr,
    /// The WebSocket endpoint, when started with [`Options::ws`].
    pub ws: Option<SocketAddr>,
    pub cert: Vec<CertificateDer<'static>>,
    pub metrics: Arc<Metrics>,
    minter_secret: weft_relay::JwtSecret,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    group: Option<Arc<GroupCommit>>,
    _dir: tempfile::TempDir,
}

impl Relay {
    /// Starts a relay on loopback with a fresh data directory.
    pub fn start() -> anyhow::Result<Relay> {
        Relay::start_with(None)
    }

    /// Like [`Relay::start`], with what a member's changes must fit set as the `weft-relay`
    /// binary sets it from `--max-change-bytes` and `--max-change-ops` (the connection tasks'
    /// check and the engine's alike); `None` keeps the defaults.
    pub fn start_with(check: Option<weft_core::check::Limits>) -> anyhow::Result<Relay> {
        Relay::start_opts(Options {
            check,
            ..Options::default()
        })
    }

    /// Like [`Relay::start`], batching a document's ephemeral traffic from `batch_from`
    /// subscribers (`usize::MAX`: never, each frame relayed at once).
    /// `every`, when given, replaces how long batched frames wait.
    pub fn start_presence(batch_from: usize, every: Option<Duration>) -> anyhow::Result<Relay> {
        Relay::start_opts(Options {
            presence_batch_from: Some(batch_from),
            presence_batch_every: every,
            ..Options::default()
        })
    }

    /// Like [`Relay::start`], checkpointing to Postgres as `weft-relay serve --postgres` does:
    /// the hub marks changed documents and the checkpointer runs on the relay's runtime (its
    /// CPU counts as the relay's; its preparation runs on the blocking pool).
    pub fn start_checkpointing(cfg: weft_relay::CheckpointConfig) -> anyhow::Result<Relay> {
        Relay::start_opts(Options {
            checkpoints: Some(cfg),
            ..Options::default()
        })
    }

    /// A relay set up as `opts` says.
    pub fn start_opts(opts: Options) -> anyhow::Result<Relay> {
        let Options {
            check,
            evict_after,
            ws,
            checkpoints,
            presence_batch_from,
            presence_batch_every,
            store_cache,
            max_docs_per_user,
            saves_in_place,
        } = opts;
        let dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
        let secret = weft_relay::ensure_dev_secret(dir.path())?;
        let identity = weft_relay::ensure_dev_cert(dir.path())?;
        let cert = identity.cert_chain.clone();
        let runtime = relay_runtime()?;
        if let Ok(mut w) = WORKER_TID.lock() {
            *w = None;
        }
        // With one worker every spawned task runs on it: ask the kernel which thread that is.
        if let Ok(Ok(Ok(path))) = runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(5),
                tokio::spawn(async { std::fs::read_link("/proc/thread-self") }),
            )
            .await
        }) {
            if let Some(tid) = path.file_name().and_then(|t| t.to_str()) {
                if let Ok(mut w) = WORKER_TID.lock() {
                    *w = Some(tid.to_string());
                }
            }
        }
        let store_path = dir.path().join("relay.redb");
        // The relay binary's store settings, so the benchmark measures what operators run.
        let (mut staging, writer) = weft_relay::store_limits();
        if let Some(bytes) = store_cache.or_else(|| {
            std::env::var(STORE_CACHE_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
        }) {
            staging.cache_bytes = bytes;
        }
        let kv: Arc<dyn KvStore> = Arc::new(RedbStore::open_with_tables(
            &store_path,
            &weft_relay::TABLES,
            staging,
        )?);
        let group = Arc::new(GroupCommit::with_limits(kv, writer)?);
        let metrics = Arc::new(Metrics::default());
        let verifier = weft_relay::Verifier::new(&secret);
        let (stop, stop_rx) = watch::channel(false);
        let dirty = checkpoints.as_ref().map(|_| weft_relay::DirtyDocs::new());
        let mut checkpointer = None;
        if let (Some(cfg), Some(dirty)) = (checkpoints, &dirty) {
            let (cp, _) = runtime
                .block_on(weft_relay::Checkpointer::start(
                    cfg,
                    group.clone(),
                    dirty.clone(),
                    metrics.clone(),
                ))
                .context("the checkpointer did not start")?;
            let mut rx = stop_rx.clone();
            checkpointer = Some(runtime.spawn(cp.run(async move {
                let _ = rx.wait_for(|s| *s).await;
            })));
        }
        let (endpoint, hub_task, accept_task, ws_task) = {
            let _guard = runtime.enter();
            let endpoint = weft_relay::bind_quic("127.0.0.1:0".parse()?, &identity)
                .map_err(anyhow::Error::msg)?;
            let (hub_tx, hub_rx) = mpsc::channel(4096);
            let mut hub_config = weft_relay::HubConfig::default();
            if let Some(from) = presence_batch_from {
                hub_config.presence_batch_from = from;
            }
            if let Some(max) = max_docs_per_user {
                hub_config.quotas.max_docs_per_user = max;
            }
            if saves_in_place {
                hub_config.engine.whole_off_thread_from = u64::MAX;
                hub_config.host.compact_off_thread_from = usize::MAX;
            }
            if let Some(every) = presence_batch_every {
                // A fixed tick, whatever the crowd.
                hub_config.presence_batch_every = every;
                hub_config.presence_batch_max = every;
            }
            let mut server_limits = weft_relay::ServerLimits::default();
            if let Some(check) = check {
                hub_config.engine.limits = check.clone();
                server_limits.check = check;
            }
            if let Some(after) = evict_after {
                hub_config.engine.evict_after = u64::try_from(after.as_millis())?;
            }
            let mut hub =
                weft_relay::Hub::new(hub_config, group.clone(), verifier.clone(), metrics.clone());
            if let Some(dirty) = dirty {
                hub = hub.with_checkpoints(dirty);
            }
            let hub_task = runtime.spawn(hub.run(hub_rx));
            let ws_task = if ws {
                let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
                std_listener.set_nonblocking(true)?;
                let listener = tokio::net::TcpListener::from_std(std_listener)?;
                let addr = listener.local_addr()?;
                let context = weft_relay::WsContext {
                    storage_id: weft_relay::load_or_create_storage_id(dir.path())?,
                    tickets: Arc::new(weft_relay::Tickets::new(verifier.clone(), None)),
                };
                let mut rx = stop_rx.clone();
                let task = runtime.spawn(weft_relay::ws_accept_loop(
                    listener,
                    verifier.clone(),
                    weft_relay::WsLimits::default(),
                    context,
                    hub_tx.clone(),
                    metrics.clone(),
                    async move {
                        let _ = rx.wait_for(|s| *s).await;
                    },
                ));
                Some((addr, task))
            } else {
                None
            };
            let mut rx = stop_rx.clone();
            let accept_task = runtime.spawn(weft_relay::accept_loop(
                endpoint.clone(),
                verifier,
                server_limits,
                hub_tx,
                metrics.clone(),
                async move {
                    let _ = rx.wait_for(|s| *s).await;
                },
            ));
            (endpoint, hub_task, accept_task, ws_task)
        };
        let addr = endpoint.local_addr()?;
        let (ws, mut tasks) = match ws_task {
            Some((addr, task)) => (Some(addr), vec![task]),
            None => (None, Vec::new()),
        };
        // Stopped in this order: the acceptors end their connections, then the hub drains,
        // then the checkpointer (like the relay binary's final checkpoint).
        tasks.extend([accept_task, hub_task]);
        tasks.extend(checkpointer);
        Ok(Relay {
            addr,
            ws,
            cert,
            metrics,
            minter_secret: secret,
            stop,
            tasks,
            runtime: Some(runtime),
            group: Some(group),
            _dir: dir,
        })
    }

    /// A token for user `bench` that may create documents.
    pub fn token(&self) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims::new(crate::chain::USER, now, 3600).with_create(true);
        Ok(Minter::new(&self.minter_secret).mint(&claims)?)
    }

    /// Gives the memory freed on the relay's worker back to the system (see [`collect_on`]).
    pub fn collect(&self) {
        if let Some(rt) = &self.runtime {
            collect_on(rt);
        }
    }

    /// Stops accepting, closes connections and waits for the hub's writes (as SIGTERM does).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(rt) = self.runtime.take() {
            for task in self.tasks.drain(..) {
                let _ = rt
                    .block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await });
            }
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        self.group.take();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs mimalloc's forced collection on `rt`'s worker (one worker: every task runs there),
/// whose heap holds most of what a server frees: mimalloc returns a thread's freed pages to
/// the system only from that thread, after its purge delay.
pub fn collect_on(rt: &tokio::runtime::Runtime) {
    let _ = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio::spawn(async { crate::large_change::release_freed_memory() }),
        )
        .await
    });
}

/// CPU time of the relay runtime's threads that have exited, in nanoseconds: tokio ends a
/// blocking-pool thread after 10 s idle, and its time would otherwise leave the sums with it.
static EXITED_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) fn relay_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(RELAY_THREAD)
        .on_thread_stop(|| {
            let used = thread_cpu(std::path::Path::new("/proc/thread-self")).unwrap_or_default();
            let ns = u64::try_from(used.as_nanos()).unwrap_or(u64::MAX);
            EXITED_NS.fetch_add(ns, std::sync::atomic::Ordering::Relaxed);
        })
        .enable_all()
        .build()
        .context("cannot start the relay's runtime")
}

/// CPU time used so far by the relay's threads, by kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct RelayCpu {
    /// The runtime's worker: the hub (engine, fan-out) and QUIC.
    pub worker: Duration,
    /// The group-commit store writer.
    pub store: Duration,
    /// The runtime's blocking pool: document loads, and the saves of compactions.
    pub blocking: Duration,
}

impl RelayCpu {
    pub fn total(&self) -> Duration {
        self.worker + self.store + self.blocking
    }

    pub fn since(&self, earlier: &RelayCpu) -> RelayCpu {
        RelayCpu {
            worker: self.worker.saturating_sub(earlier.worker),
            store: self.store.saturating_sub(earlier.store),
            blocking: self.blocking.saturating_sub(earlier.blocking),
        }
    }
}

/// CPU time used so far by the relay's threads (runtime workers, blocking pool, store writer).
pub fn relay_cpu() -> Duration {
    relay_cpu_split().total()
}

/// [`relay_cpu`] by kind of thread. Without a known worker thread, all runtime threads count
/// as the worker.
pub fn relay_cpu_split() -> RelayCpu {
    let mut cpu = RelayCpu {
        // The worker lives as long as its runtime: exited threads were the blocking pool's.
        blocking: Duration::from_nanos(EXITED_NS.load(std::sync::atomic::Ordering::Relaxed)),
        ..RelayCpu::default()
    };
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return cpu;
    };
    let worker = WORKER_TID.lock().ok().and_then(|w| w.clone());
    for task in tasks.flatten() {
        let dir = task.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        let used = || thread_cpu(&dir).unwrap_or_default();
        match comm.trim_end() {
            STORE_THREAD => cpu.store += used(),
            RELAY_THREAD => {
                let tid = task.file_name();
                if worker.as_deref().is_none_or(|w| tid.to_str() == Some(w)) {
                    cpu.worker += used();
                } else {
                    cpu.blocking += used();
                }
            }
            _ => {}
        }
    }
    cpu
}

/// A thread's CPU time: nanoseconds from `schedstat`, else clock ticks from `stat`.
fn thread_cpu(dir: &std::path::Path) -> Option<Duration> {
    if let Ok(s) = std::fs::read_to_string(dir.join("schedstat")) {
        if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok()) {
            return Some(Duration::from_nanos(ns));
        }
    }
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // Fields after the parenthesised name; utime and stime are the 14th and 15th overall.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Whether this system reports CPU time per thread with nanosecond resolution.
pub fn cpu_resolution() -> &'static str {
    if std::path::Path::new("/proc/thread-self/schedstat").exists() {
        "schedstat (ns)"
    } else {
        "stat (10 ms ticks)"
    }
}

/// The throughput baseline: a QUIC server on the same kind of runtime that forwards every frame
/// it receives to every other connection and answers the sender with a small `Ack` frame — the
/// relay's transport and fan-out with no engine, no authorization and no store.
pub struct Forwarder {
    pub addr: SocketAddr,
    pub cert: Vec<CertificateDer<'static>>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

enum FwdEvent {
    Open(u64, mpsc::Sender<Arc<Vec<u8>>>),
    Frame(u64, Message),
    Closed(u64),
}

impl Forwarder {
    pub fn start() -> anyhow::Result<Forwarder> {
        let dir = tempfile::tempdir()?;
        let identity = weft_relay::ensure_dev_cert(dir.path())?;
        let cert = identity.cert_chain.clone();
        let runtime = relay_runtime()?;
        let (stop, mut stop_rx) = watch::channel(false);
        let _guard = runtime.enter();
        let endpoint =
            weft_relay::bind_quic("127.0.0.1:0".parse()?, &identity).map_err(anyhow::Error::msg)?;
        let addr = endpoint.local_addr()?;
        let task = runtime.spawn(async move {
            let (ev_tx, ev_rx) = mpsc::channel(4096);
            let hub = tokio::spawn(forward_hub(ev_rx));
            let mut conns = tokio::task::JoinSet::new();
            let mut next = 0u64;
            loop {
                tokio::select! {
                    _ = stop_rx.wait_for(|s| *s) => break,
                    incoming = endpoint.accept() => {
                        let Some(incoming) = incoming else { break };
                        next += 1;
                        conns.spawn(forward_conn(incoming, next, ev_tx.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
            endpoint.close(quinn::VarInt::from_u32(0), b"done");
            conns.shutdown().await;
            drop(ev_tx);
            let _ = hub.await;
        });
        drop(_guard);
        Ok(Forwarder {
            addr,
            cert,
            stop,
            task: Some(task),
            runtime: Some(runtime),
        })
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Gives the memory freed on the forwarder's worker back to the system.
    pub fn collect(&self) {
        if let Some(rt) = &self.runtime {
            collect_on(rt);
        }
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let (Some(rt), Some(task)) = (self.runtime.take(), self.task.take()) {
            let _ =
                rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await });
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Like the relay's hub: one task owns the routing table and `try_send`s shared frames.
async fn forward_hub(mut events: mpsc::Receiver<FwdEvent>) {
    let mut outs: HashMap<u64, mpsc::Sender<Arc<Vec<u8>>>> = HashMap::new();
    while let Some(ev) = events.recv().await {
        match ev {
            FwdEvent::Open(id, out) => {
                outs.insert(id, out);
            }
            FwdEvent::Closed(id) => {
                outs.remove(&id);
            }
            FwdEvent::Frame(from, msg) => {
                let Message::Changes { doc, .. } = &msg else {
                    continue;
                };
                let doc = *doc;
                // The relay's encoding for devices of this version.
                let Ok(frame) =
                    wire::frame_as(&msg, wire::Encoding::Compact, wire::DEFAULT_MAX_FRAME)
                else {
                    continue;
                };
                let frame = Arc::new(frame);
                for (id, out) in &outs {
                    if *id != from {
                        let _ = out.try_send(frame.clone());
                    }
                }
                let ack = Message::Ack {
                    doc,
                    heads: Vec::new(),
                };
                if let (Some(out), Ok(f)) = (
                    outs.get(&from),
                    wire::frame_as(&ack, wire::Encoding::Compact, wire::DEFAULT_MAX_FRAME),
                ) {
                    let _ = out.try_send(Arc::new(f));
                }
            }
        }
    }
}

async fn forward_conn(incoming: quinn::Incoming, id: u64, events: mpsc::Sender<FwdEvent>) {
    let Ok(connection) = incoming.await else {
        return;
    };
    let Ok((send, recv)) = connection.accept_bi().await else {
        return;
    };
    let mut reader = FrameReader::new(recv, wire::DEFAULT_MAX_FRAME);
    let mut writer = FrameWriter::new(send, wire::DEFAULT_MAX_FRAME);
    let Ok(Some(Message::Hello { device, .. })) = reader.recv().await else {
        return;
    };
    let welcome = Message::Welcome {
        protocol: wire::PROTOCOL_VERSION,
        user: "bench".into(),
        device,
        max_frame: wire::DEFAULT_MAX_FRAME as u32,
    };
    if writer.send(&welcome).await.is_err() {
        return;
    }
    let (out_tx, mut out_rx) = mpsc::channel::<Arc<Vec<u8>>>(1024);
    if events.send(FwdEvent::Open(id, out_tx)).await.is_err() {
        return;
    }
    let write = async move {
        while let Some(frame) = out_rx.recv().await {
            if writer.send_raw(&frame).await.is_err() {
                break;
            }
        }
    };
    let read = async {
        while let Ok(Some(msg)) = reader.recv().await {
            if events.send(FwdEvent::Frame(id, msg)).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = write => {}
        _ = read => {}
    }
    let _ = events.send(FwdEvent::Closed(id)).await;
}
