//! `weft-bench [--quick] [WORKLOAD...]`: measures the relay on loopback.
//!
//! Starts what it measures itself: a real relay (QUIC server, hub, engine and redb store in a
//! temporary directory) in this process on a runtime of its own with one worker thread, and
//! light QUIC devices on another runtime. Prints a table on stderr and one JSON object per
//! workload on stdout, each with a `baseline` measured in the same run.
//!
//! `--pin` puts the relay on one core and the devices on another: the process (and so every
//! thread it starts later: the relay's runtime, blocking pool and store writer, the baseline
//! forwarder) is bound to CPU 0, the devices' runtime threads to CPU 1. Without it the kernel
//! spreads every thread over all cores.
//!
//! Workloads: `fanout`, `throughput`, `wire-bytes`, `reconnect`, `durable-writes`,
//! `initial-sync`, `large-change` (all of them when none is named). Exit status 2 for an unknown
//! workload or flag, 1 when a measurement fails. What each measures and its latest figures:
//! BENCHMARKS.md.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

#[path = "weft-bench/chain.rs"]
mod chain;
#[path = "weft-bench/client.rs"]
mod client;
#[path = "weft-bench/device.rs"]
mod device;
#[path = "weft-bench/fanout.rs"]
mod fanout;
#[path = "weft-bench/large_change.rs"]
mod large_change;
#[path = "weft-bench/relay.rs"]
mod relay;
#[path = "weft-bench/throughput.rs"]
mod throughput;
#[path = "weft-bench/wire_bytes.rs"]
mod wire_bytes;

use chain::Chain;

/// The same allocator as the `weft-relay` binary, since the relay runs in this process.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use relay::{Forwarder, Relay};

const IMPLEMENTED: &[&str] = &[
    "fanout",
    "throughput",
    "wire-bytes",
    "reconnect",
    "durable-writes",
    "initial-sync",
    "large-change",
];
const PLANNED: &[&str] = &["memory", "checkpoint"];
const USAGE: &str = "usage: weft-bench [--quick] [--pin] [WORKLOAD...]  (workloads: fanout, throughput, wire-bytes, reconnect, durable-writes, initial-sync, large-change)";
/// The workloads as the usage line and errors name them.
const AVAILABLE: &str =
    "fanout, throughput, wire-bytes, reconnect, durable-writes, initial-sync, large-change";

struct Plan {
    quick: bool,
    /// Relay on CPU 0, devices on CPU 1 (`--pin`).
    pin: bool,
    /// (devices, measured changes, baseline changes, p99 target in ms)
    fanout: Vec<(usize, usize, usize, Option<f64>)>,
    fanout_warmup: usize,
    docs: usize,
    devices: usize,
    warmup: Duration,
    window: Duration,
    wire_changes: usize,
    chain_len: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                pin: false,
                fanout: vec![
                    (2, 200, 200, None),
                    (10, 300, 100, Some(5.0)),
                    (100, 150, 30, Some(20.0)),
                ],
                fanout_warmup: 20,
                docs: 1000,
                devices: 10,
                warmup: Duration::from_secs(2),
                window: Duration::from_secs(5),
                wire_changes: 200,
                chain_len: 400,
            }
        } else {
            Plan {
                quick,
                pin: false,
                fanout: vec![
                    (2, 1000, 1000, None),
                    (10, 1000, 300, Some(5.0)),
                    (100, 500, 100, Some(20.0)),
                ],
                fanout_warmup: 20,
                docs: 1000,
                devices: 10,
                warmup: Duration::from_secs(3),
                window: Duration::from_secs(15),
                wire_changes: 500,
                chain_len: 1500,
            }
        }
    }
}

fn main() -> ExitCode {
    if let Some(dir) = std::env::var_os(large_change::MAKE_ENV) {
        return match large_change::Big::write_for_parent(std::path::Path::new(&dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weft-bench: making the large change: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    weft_relay::tune_allocator();
    let mut quick = false;
    let mut pin = false;
    let mut workloads: Vec<String> = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            "--pin" => pin = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            w if IMPLEMENTED.contains(&w) => {
                if !workloads.iter().any(|x| x == w) {
                    workloads.push(w.to_string());
                }
            }
            w if PLANNED.contains(&w) => {
                eprintln!(
                    "weft-bench: the workload {w} is not implemented yet (available: {AVAILABLE})."
                );
                return ExitCode::from(2);
            }
            w if w.starts_with('-') => {
                eprintln!("weft-bench: unknown flag {w}; {USAGE}.");
                return ExitCode::from(2);
            }
            w => {
                eprintln!("weft-bench: unknown workload {w} (available: {AVAILABLE}).");
                return ExitCode::from(2);
            }
        }
    }
    if workloads.is_empty() {
        workloads = IMPLEMENTED.iter().map(|s| s.to_string()).collect();
    }
    let plan = Plan {
        pin,
        ..Plan::new(quick)
    };
    match run(plan, &workloads) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(plan: Plan, workloads: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    if std::env::var_os("RUST_LOG").is_some() {
        // Diagnostics on demand (e.g. RUST_LOG=weft_core=debug names every resync); off by
        // default, since logging would be measured too.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    if plan.pin {
        // Threads inherit their creator's affinity: everything this process starts from now
        // on is on CPU 0, except the devices' threads, which move themselves to CPU 1.
        pin_current_thread(0).context("--pin: cannot bind to CPU 0")?;
        pin_current_thread(1).context("--pin: this machine needs a CPU 1")?;
        pin_current_thread(0).context("--pin: cannot bind to CPU 0")?;
    }
    let pin = plan.pin;
    // The devices' runtime: one worker, so devices and relay each have one of this machine's
    // cores (the relay's runtime has its own thread).
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("weft-bench-dev")
        .on_thread_start(move || {
            if pin {
                // Checked above that CPU 1 exists and may be used.
                let _ = pin_current_thread(1);
            }
        })
        .enable_all()
        .build()
        .context("cannot start the devices' runtime")?;
    eprintln!(
        "weft-bench: {} mode{}; generating {} chat changes; relay CPU from {}",
        if plan.quick { "quick" } else { "full" },
        if plan.pin {
            ", relay on CPU 0 and devices on CPU 1"
        } else {
            ""
        },
        plan.chain_len,
        relay::cpu_resolution()
    );
    let chain = Arc::new(Chain::generate(plan.chain_len));
    for w in workloads {
        let t = Instant::now();
        let out = match w.as_str() {
            "fanout" => fanout_workload(&plan, &clients, &chain)?,
            "throughput" => throughput_workload(&plan, &clients, &chain)?,
            "wire-bytes" => wire_bytes_workload(&plan, &clients, &chain)?,
            "durable-writes" => clients.block_on(device::durable_writes(plan.quick))?,
            "initial-sync" => {
                let relay = Relay::start()?;
                let out = clients.block_on(device::initial_sync(&relay, plan.quick))?;
                relay.stop();
                out
            }
            "large-change" => large_change_workload(&plan, &clients)?,
            "reconnect" => {
                let relay = Relay::start()?;
                let out = clients.block_on(device::reconnect(&relay, plan.quick))?;
                relay.stop();
                out
            }
            other => anyhow::bail!("no workload {other}"),
        };
        eprintln!("  ({w} took {:.1} s)\n", t.elapsed().as_secs_f64());
        println!("{out}");
    }
    eprintln!(
        "weft-bench: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A progress line on stderr when `WEFT_BENCH_VERBOSE` is set.
/// Binds the calling thread to one CPU.
fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data, initialised by CPU_ZERO before use; CPU_SET checks the
    // index against the set's size; sched_setaffinity reads `size_of::<cpu_set_t>()` bytes of
    // the set we pass and only changes the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn progress(args: std::fmt::Arguments<'_>) {
    if std::env::var_os("WEFT_BENCH_VERBOSE").is_some() {
        eprintln!("    .. {args}");
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn us(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

/// p50, p99 and max of `samples` (sorted here).
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| {
        if samples.is_empty() {
            return Duration::ZERO;
        }
        let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i]
    };
    (
        at(0.50),
        at(0.99),
        samples.last().copied().unwrap_or_default(),
    )
}

fn fanout_workload(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    chain: &Arc<Chain>,
) -> anyhow::Result<Value> {
    eprintln!("fanout: one writer, every other device receives; one change in flight");
    eprintln!(
        "  {:>7} {:>7} | {:>8} {:>8} {:>8} {:>6} | {:>12} {:>12} | {:>8} {:>8} {:>8} {:>12}",
        "devices",
        "changes",
        "p50 ms",
        "p99 ms",
        "max ms",
        "target",
        "relay us/chg",
        "us/delivery",
        "base p50",
        "base p99",
        "base max",
        "base us/chg"
    );
    let mut runs = Vec::new();
    let mut base_runs = Vec::new();
    for &(devices, changes, base_changes, target) in &plan.fanout {
        let relay = Relay::start()?;
        let r = rt.block_on(fanout::run(
            &relay,
            devices,
            plan.fanout_warmup,
            changes,
            chain.clone(),
        ));
        relay.stop();
        let mut r = r.with_context(|| format!("fanout with {devices} devices"))?;
        let (p50, p99, max) = percentiles(&mut r.latencies);
        let cpu_per_change = r.relay_cpu / r.changes.max(1) as u32;
        let cpu_per_delivery = r.relay_cpu / (r.changes * (devices - 1)).max(1) as u32;

        let t = Instant::now();
        let mut base = fanout::baseline(devices, base_changes.min(chain.len()), chain)?;
        let base_cpu = t.elapsed() / base_changes.max(1) as u32;
        let (b50, b99, bmax) = percentiles(&mut base);
        eprintln!(
            "  {:>7} {:>7} | {:>8.3} {:>8.3} {:>8.3} {:>6} | {:>12.1} {:>12.1} | {:>8.3} {:>8.3} {:>8.3} {:>12.1}",
            devices,
            changes,
            ms(p50),
            ms(p99),
            ms(max),
            target.map_or("-".into(), |t| format!("<{t}")),
            us(cpu_per_change),
            us(cpu_per_delivery),
            ms(b50),
            ms(b99),
            ms(bmax),
            us(base_cpu),
        );
        if r.lost > 0 || r.sync_frames > 0 {
            eprintln!(
                "    note: {} receipts missed the 5 s deadline; {} sync frames (fallbacks from the fast path)",
                r.lost, r.sync_frames
            );
        }
        runs.push(json!({
            "devices": devices,
            "subscribers": devices - 1,
            "changes": r.changes,
            "samples": r.latencies.len(),
            "lost": r.lost,
            "sync_frames": r.sync_frames,
            "p50_ms": ms(p50),
            "p99_ms": ms(p99),
            "max_ms": ms(max),
            "target_p99_ms": target,
            "target_met": target.map(|t| ms(p99) < t),
            "wall_s": (r.wall.as_secs_f64() * 100.0).round() / 100.0,
            "relay_cpu_us_per_change": us(cpu_per_change),
            "relay_cpu_us_per_delivery": us(cpu_per_delivery),
        }));
        base_runs.push(json!({
            "devices": devices,
            "changes": base_changes,
            "p50_ms": ms(b50),
            "p99_ms": ms(b99),
            "max_ms": ms(bmax),
            "cpu_us_per_change": us(base_cpu),
        }));
    }
    Ok(json!({
        "workload": "fanout",
        "quick": plan.quick,
        "pinned": plan.pin,
        "setup": "in-process weft-relay (QUIC, hub, engine, redb in a temp dir) on a tokio \
            runtime with 1 worker thread; devices on a 1-worker runtime; loopback; latency from \
            the writer handing a Changes frame to QUIC to a receiver decoding the forwarded \
            frame; relay CPU = CPU time of the relay's threads during the measured changes",
        "runs": runs,
        "baseline": {
            "name": "automerge-sync-round-per-subscriber",
            "description": "Automerge 0.12's own sync protocol in memory on one thread, no \
                network: per change, a sync round writer->server, then a full sync round \
                (messages encoded and decoded) between the server and each subscriber in turn; \
                a subscriber's latency is the end of its round. A lower bound for a server \
                that runs the sync protocol per subscriber.",
            "runs": base_runs,
        },
    }))
}

fn throughput_workload(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    chain: &Arc<Chain>,
) -> anyhow::Result<Value> {
    eprintln!(
        "throughput: {} documents x {} devices, every device on every document, one writer each",
        plan.docs, plan.devices
    );
    let relay = Relay::start()?;
    let target = throughput::Target {
        addr: relay.addr,
        cert: &relay.cert,
        token: relay.token()?,
        relay: true,
    };
    let r = rt.block_on(throughput::run(
        target,
        plan.docs,
        plan.devices,
        plan.warmup,
        plan.window,
        chain.clone(),
    ));
    let drops = relay
        .metrics
        .queue_drops
        .load(std::sync::atomic::Ordering::Relaxed);
    relay.stop();
    let r = r.context("throughput through the relay")?;

    let fwd = Forwarder::start()?;
    let target = throughput::Target {
        addr: fwd.addr,
        cert: &fwd.cert,
        token: String::new(),
        relay: false,
    };
    let b = rt.block_on(throughput::run(
        target,
        plan.docs,
        plan.devices,
        plan.warmup,
        plan.window,
        chain.clone(),
    ));
    fwd.stop();
    let b = b.context("throughput through the baseline forwarder")?;

    let per_change = |run: &throughput::Run| {
        if run.accepted == 0 {
            Duration::ZERO
        } else {
            run.relay_cpu / run.accepted as u32
        }
    };
    let util = |run: &throughput::Run| run.relay_cpu.as_secs_f64() / run.window.as_secs_f64();
    let per_cpu_s = |run: &throughput::Run| {
        let cpu = run.relay_cpu.as_secs_f64();
        if cpu == 0.0 {
            0.0
        } else {
            (run.accepted as f64 / cpu).round()
        }
    };
    eprintln!(
        "  {:<10} {:>12} {:>14} {:>14} {:>10} {:>16}",
        "", "accepted/s", "deliveries/s", "cpu us/change", "cpu util", "accepted/cpu-s"
    );
    for (name, run) in [("relay", &r), ("forwarder", &b)] {
        eprintln!(
            "  {:<10} {:>12.0} {:>14.0} {:>14.1} {:>9.0}% {:>16.0}",
            name,
            run.accepted_per_s,
            run.deliveries_per_s,
            us(per_change(run)),
            util(run) * 100.0,
            per_cpu_s(run)
        );
    }
    let split = r.relay_cpu_split;
    let split_us = |d: Duration| {
        if r.accepted == 0 {
            0.0
        } else {
            us(d / r.accepted as u32)
        }
    };
    eprintln!(
        "  relay cpu us/change by thread: hub+QUIC {:.1}, store writer {:.1}, loads+compaction {:.1}",
        split_us(split.worker),
        split_us(split.store),
        split_us(split.blocking)
    );
    let check = check_cost(chain);
    eprintln!(
        "  checking a change before it is stored: {:.2} us (check_message: chunk headers, parse, \
         limits); Automerge's parse alone, which the engine did before: {:.2} us",
        check.checked_us, check.parse_us
    );
    eprintln!(
        "  checking a change against the write rules (identity, the conversation's rules): {:.2} us",
        check.rules_us
    );
    eprintln!("  targets: >= 20,000 accepted/s, >= 180,000 deliveries/s (relay on one core)");
    if r.sync_frames > 0 || drops > 0 || r.chain_exhausted {
        eprintln!(
            "  note: {} sync frames to receivers, {} queue drops at the relay, chain exhausted: {}",
            r.sync_frames, drops, r.chain_exhausted
        );
    }
    Ok(json!({
        "workload": "throughput",
        "quick": plan.quick,
        "documents": plan.docs,
        "devices": plan.devices,
        "setup": "in-process weft-relay (QUIC, hub, engine, redb) on a 1-worker runtime; 10 \
            devices on a 1-worker runtime, each subscribed to every document and writing 1/10 of \
            them; pre-generated chat changes (~170 B); a writer keeps at most 256 changes \
            unacknowledged and 800 undelivered (all devices); receivers count forwarded changes and \
            acknowledge every 500 ms without applying them",
        "window_s": (r.window.as_secs_f64() * 100.0).round() / 100.0,
        "setup_s": (r.setup.as_secs_f64() * 10.0).round() / 10.0,
        "accepted_changes_per_s": r.accepted_per_s.round(),
        "deliveries_per_s": r.deliveries_per_s.round(),
        "target_accepted_changes_per_s": 20000,
        "target_deliveries_per_s": 180000,
        "targets_met": r.accepted_per_s >= 20000.0 && r.deliveries_per_s >= 180000.0,
        "relay_cpu_us_per_change": us(per_change(&r)),
        "relay_cpu_utilisation": (util(&r) * 100.0).round() / 100.0,
        "relay_cpu_us_per_change_by_thread": {
            "hub_and_quic": split_us(split.worker),
            "store_writer": split_us(split.store),
            "loads_and_compaction": split_us(split.blocking),
        },
        "accepted_changes_per_relay_cpu_second": per_cpu_s(&r),
        "check_us_per_change": (check.checked_us * 100.0).round() / 100.0,
        "parse_only_us_per_change": (check.parse_us * 100.0).round() / 100.0,
        "rules_us_per_change": (check.rules_us * 100.0).round() / 100.0,
        "sync_frames": r.sync_frames,
        "queue_drops": drops,
        "chain_exhausted": r.chain_exhausted,
        "baseline": {
            "name": "quic-forwarder",
            "description": "the same devices and traffic through a QUIC server on the same \
                kind of runtime that forwards every Changes frame to every other connection and \
                answers the sender with an Ack: the relay's transport and fan-out without \
                engine, authorization or store",
            "accepted_changes_per_s": b.accepted_per_s.round(),
            "deliveries_per_s": b.deliveries_per_s.round(),
            "cpu_us_per_change": us(per_change(&b)),
            "cpu_utilisation": (util(&b) * 100.0).round() / 100.0,
            "accepted_changes_per_cpu_second": per_cpu_s(&b),
        },
    }))
}

/// What checking one of the chain's changes costs (`check_message` on a one-change `Changes`
/// message, as a connection task runs it), beside Automerge's bare parse: the best of three
/// passes over up to 20,000 changes, measured in this run.
struct CheckCost {
    checked_us: f64,
    parse_us: f64,
    /// The write rules' check of one change by the relay's gate (identity and the
    /// conversation's rules), after its parse.
    rules_us: f64,
}

fn check_cost(chain: &Chain) -> CheckCost {
    let limits = weft_core::check::Limits::default();
    let doc = weft_core::DocId::from_bytes([1; 16]);
    let n = chain.raw.len().min(20_000);
    let frames: Vec<bytes::Bytes> = chain.raw[..n]
        .iter()
        .map(|r| bytes::Bytes::from(r.clone()))
        .collect();
    let best = |f: &dyn Fn(&bytes::Bytes)| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                for b in &frames {
                    f(b);
                }
                t.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64
            })
            .fold(f64::INFINITY, f64::min)
    };
    let checked_us = best(&|b| {
        let msg = weft_core::wire::Message::Changes {
            doc,
            changes: vec![b.clone()],
        };
        let r = weft_core::engine::check_message(msg, &limits);
        assert!(r.is_ok(), "the chain's changes pass their check");
    });
    let parse_us = best(&|b| {
        let r = weft_core::automerge::Change::try_from(&b[..]);
        assert!(r.is_ok());
    });
    let changes: Vec<weft_core::check::CheckedChange> = chain.raw[..n]
        .iter()
        .map(|r| {
            let change = weft_core::automerge::Change::try_from(&r[..]).expect("the chain parses");
            weft_core::check::CheckedChange::new(change, r.clone().into()).expect("it expands")
        })
        .collect();
    let empty = weft_core::Document::new();
    let rules_us = (0..3)
        .map(|_| {
            use weft_core::engine::Gate;
            let mut gate = weft_schema::rules::RulesGate::new(std::sync::Arc::new(
                weft_schema::rules::Kinds::builtin(),
            ));
            let conn = weft_core::engine::ConnId(1);
            gate.connect(conn, crate::chain::USER, false, false);
            gate.opened(doc, &empty, &[]);
            let t = Instant::now();
            for c in &changes {
                let r = gate.check(doc, conn, c, &empty);
                assert!(r.is_ok(), "the chain passes the rules: {r:?}");
            }
            t.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64
        })
        .fold(f64::INFINITY, f64::min);
    CheckCost {
        checked_us,
        parse_us,
        rules_us,
    }
}

fn wire_bytes_workload(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    chain: &Arc<Chain>,
) -> anyhow::Result<Value> {
    let relay = Relay::start()?;
    let n = plan.wire_changes.min(chain.len().saturating_sub(10));
    let f = rt.block_on(wire_bytes::run(&relay, n, chain.clone()));
    relay.stop();
    let f = f?;
    eprintln!("wire-bytes: one chat change, per change");
    eprintln!(
        "  raw change                              {:>8.1} B",
        f.raw_change
    );
    eprintln!(
        "  weft live path, frames per link         {:>8.1} B  (Changes + Ack)",
        f.live_writer
    );
    eprintln!(
        "  weft live path, UDP writer / subscriber {:>8.1} / {:.1} B",
        f.udp_writer, f.udp_subscriber
    );
    eprintln!(
        "  automerge sync protocol per peer pair   {:>8.1} B  ({:.1} messages; {:.1} B framed)",
        f.sync_bytes, f.sync_messages, f.sync_frames
    );
    Ok(f.json())
}

fn large_change_workload(plan: &Plan, rt: &tokio::runtime::Runtime) -> anyhow::Result<Value> {
    use large_change::{Path, Settings};
    let own_kib = large_change::status_kib("VmRSS").unwrap_or(0);
    let t = Instant::now();
    let mut made = large_change::Big::generate_in_child()?
        .into_iter()
        .map(Arc::new);
    let (Some(big), Some(at_cap)) = (made.next(), made.next()) else {
        anyhow::bail!("the child made fewer changes than asked");
    };
    let generated = t.elapsed();
    let settings = Settings {
        pace: Duration::from_millis(20),
        warmup: 20,
        large: if plan.quick { 1 } else { 5 },
        first_at: Duration::from_millis(500),
        every: Duration::from_secs(2),
        min_window: Duration::from_secs(if plan.quick { 2 } else { 10 }),
        tail: Duration::from_secs(1),
        max_window: Duration::from_secs(if plan.quick { 25 } else { 40 }),
    };
    // Document A's own chain: a window with large changes lasts until they are handled.
    let chain = Arc::new(Chain::generate(settings.chain_len()));
    eprintln!(
        "large-change: document A, 1 writer and 3 receivers, one change in flight, one every {} ms \
         for {:.0} s, or with large changes until each is handled and {:.0} s more; {} large \
         changes {:.0} s apart, each into its own document with a second subscriber",
        settings.pace.as_millis(),
        settings.min_window.as_secs_f64(),
        settings.tail.as_secs_f64(),
        settings.large,
        settings.every.as_secs_f64()
    );
    for b in [&big, &at_cap] {
        eprintln!(
            "  {} characters: {} operations, {:.3} MB; local commit {:.0} ms; check (parse, done \
             on a connection task's blocking thread) {:.0} ms; Change::decode (done by the \
             write rules) {:.0} ms; a sync message carries it as a {} ({:.3} MB)",
            b.chars,
            b.ops,
            b.raw.len() as f64 / 1e6,
            ms(b.commit),
            ms(b.check),
            ms(b.decode),
            b.sync_chunk,
            b.sync_data.len() as f64 / 1e6,
        );
    }
    eprintln!(
        "  (made in a child process in {:.1} s)",
        generated.as_secs_f64()
    );
    let pin = plan.pin;
    // The large side's own runtime, so megabytes sent and received there do not hold up
    // document A's devices.
    let big_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("weft-bench-big")
        .on_thread_start(move || {
            if pin {
                // Checked at the start of the run that CPU 1 exists and may be used.
                let _ = pin_current_thread(1);
            }
        })
        .enable_all()
        .build()
        .context("cannot start the large side's runtime")?;
    let bench_kib = large_change::status_kib("VmRSS").unwrap_or(0);
    eprintln!(
        "  {:<7} {:<16} | {:>6} {:>7} {:>8} {:>6} {:>6} | {:<16} | {:>11} {:>11} | {:>6} {:>6} | {:>5} {:>5}",
        "caps",
        "large via",
        "p50 ms",
        "p99 ms",
        "max ms",
        "xp99",
        "xmax",
        "acc/dlv/refused",
        "accepted ms",
        "deliver ms",
        "RSS0",
        "peak",
        "hub s",
        "blk s",
    );
    // A relay per path with the raised caps, so the work one path leaves behind (a reload,
    // memory) does not land in the other's figures; with the defaults nothing is kept.
    // With the defaults, the 2M change is refused and the largest change they take goes in
    // last.
    type Phases<'a> = Vec<(&'a Arc<large_change::Big>, Path)>;
    let relays: [(&str, Option<weft_core::check::Limits>, Phases<'_>); 3] = [
        (
            "default",
            None,
            vec![
                (&big, Path::Changes),
                (&big, Path::Sync),
                (&at_cap, Path::Changes),
                (&at_cap, Path::Sync),
            ],
        ),
        (
            "raised",
            Some(large_change::raised_limits()),
            vec![(&big, Path::Changes)],
        ),
        (
            "raised",
            Some(large_change::raised_limits()),
            vec![(&big, Path::Sync)],
        ),
    ];
    let mib = |kib: u64| (kib as f64 / 1024.0).round();
    let mut runs = Vec::new();
    for (caps_name, limits, paths) in &relays {
        let relay = Relay::start_with(limits.clone())?;
        let caps_name = *caps_name;
        // Document A's p99 and max in the relay's first phase, without large changes.
        let mut base: Option<(f64, f64)> = None;
        let mut phases = Vec::new();
        for large in std::iter::once(None).chain(paths.iter().map(Some)) {
            let (which, path) = match large {
                Some((b, p)) => ((*b).clone(), Some(*p)),
                None => (big.clone(), None),
            };
            let label = match path {
                Some(p) => format!("{} {}", which.label(), p.name()),
                None => "(baseline)".to_string(),
            };
            let r = rt.block_on(large_change::phase(
                &relay,
                chain.clone(),
                which.clone(),
                path,
                big_rt.handle().clone(),
                &settings,
            ));
            let mut r = r.with_context(|| format!("large-change, {caps_name} caps, {label}"))?;
            let (p50, p99, max) = percentiles(&mut r.latencies);
            let (s50, s99, smax) = percentiles(&mut r.from_schedule);
            let (p50, p99, max) = (ms(p50), ms(p99), ms(max));
            let (b99, bmax) = *base.get_or_insert((p99, max));
            let ratio = |x: f64, b: f64| {
                if b > 0.0 {
                    (x / b * 10.0).round() / 10.0
                } else {
                    0.0
                }
            };
            let accepted = r.large.iter().filter(|o| o.accepted.is_some()).count();
            let delivered = r.large.iter().filter(|o| o.delivered.is_some()).count();
            let refused = r.large.iter().filter(|o| o.refused.is_some()).count();
            let range = |f: &dyn Fn(&large_change::Outcome) -> Option<Duration>| {
                let mut v: Vec<f64> = r.large.iter().filter_map(f).map(ms).collect();
                v.sort_by(f64::total_cmp);
                match (v.first(), v.last()) {
                    (Some(lo), Some(hi)) => format!("{lo:.0}-{hi:.0}"),
                    _ => "-".into(),
                }
            };
            let loaded = |v: String| if path.is_some() { v } else { "-".into() };
            eprintln!(
                "  {:<7} {:<16} | {:>6.2} {:>7.2} {:>8.1} {:>6} {:>6} | {:<16} | {:>11} {:>11} | {:>6.0} {:>6.0} | {:>5.2} {:>5.2}",
                caps_name,
                label,
                p50,
                p99,
                max,
                loaded(format!("{:.1}", ratio(p99, b99))),
                loaded(format!("{:.0}", ratio(max, bmax))),
                loaded(format!("{accepted}/{delivered}/{refused} of {}", r.large.len())),
                range(&|o| o.accepted),
                range(&|o| o.delivered),
                mib(r.rss.start_kib),
                mib(r.rss.peak_kib),
                r.cpu.worker.as_secs_f64(),
                r.cpu.blocking.as_secs_f64(),
            );
            if let Some(why) = r.large.iter().find_map(|o| o.refused.as_deref()) {
                eprintln!("      the sender was told: {why}");
            }
            if r.lost > 0 || r.sync_frames > 0 {
                eprintln!(
                    "      note: {} receipts on document A missed the {} s deadline; {} sync frames on A",
                    r.lost,
                    large_change::RECEIPT_DEADLINE.as_secs(),
                    r.sync_frames
                );
            }
            let large: Vec<Value> = r
                .large
                .iter()
                .map(|o| {
                    json!({
                        "sent_at_s": (o.sent_at.as_secs_f64() * 100.0).round() / 100.0,
                        "accepted_ms": o.accepted.map(ms),
                        "delivered_ms": o.delivered.map(ms),
                        "refused": o.refused,
                    })
                })
                .collect();
            let secs = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
            phases.push(json!({
                "large_change_characters": path.map(|_| which.chars),
                "large_change_via": path.map(|p| match p {
                    Path::Changes => "changes",
                    Path::Sync => "sync",
                }),
                "window_s": (r.span.as_secs_f64() * 10.0).round() / 10.0,
                "a_changes": r.changes,
                "a_samples": r.latencies.len(),
                "a_lost": r.lost,
                "a_sync_frames": r.sync_frames,
                "p50_ms": p50,
                "p99_ms": p99,
                "max_ms": max,
                "from_schedule_p50_ms": ms(s50),
                "from_schedule_p99_ms": ms(s99),
                "from_schedule_max_ms": ms(smax),
                "p99_ratio_to_baseline": ratio(p99, b99),
                "max_ratio_to_baseline": ratio(max, bmax),
                "extra_p99_ms": ((p99 - b99) * 1000.0).round() / 1000.0,
                "extra_max_ms": ((max - bmax) * 1000.0).round() / 1000.0,
                "large_changes": large,
                "large_accepted": accepted,
                "large_delivered": delivered,
                "large_refused": refused,
                "large_sync_frames": r.large_sync_frames,
                "relay_refused_limit": r.refused_limit,
                "relay_queue_drops": r.queue_drops,
                "rss_start_mib": mib(r.rss.start_kib),
                "rss_peak_mib": mib(r.rss.peak_kib),
                "rss_peak_from": if r.rss.hwm_reset {
                    "VmHWM, reset at the window's start"
                } else {
                    "VmRSS sampled every 10 ms"
                },
                "rss_sampled_peak_mib": mib(r.rss.sampled_peak_kib),
                "rss_sampled_peak_at_s": (r.rss.sampled_peak_at.as_secs_f64() * 10.0).round() / 10.0,
                "rss_end_mib": mib(r.rss.end_kib),
                "relay_cpu_s": {
                    "hub_and_quic": secs(r.cpu.worker),
                    "blocking_pool": secs(r.cpu.blocking),
                    "store_writer": secs(r.cpu.store),
                },
            }));
        }
        relay.stop();
        runs.push(json!({
            "caps": caps_name,
            "limits": limits.as_ref().map_or_else(
                || json!("weft-relay's defaults (--max-change-bytes 1MiB --max-change-ops 100000)"),
                |l| json!({
                    "max_change_bytes": l.max_change_bytes,
                    "max_change_ops": l.max_change_ops,
                    "max_inflated_bytes": l.max_inflated_bytes,
                }),
            ),
            "phases": phases,
        }));
    }
    drop(big_rt);
    eprintln!(
        "  xp99, xmax: against the same relay's baseline; RSS0, peak: the process's MiB at the \
         window's start and its peak (VmHWM) in the window; the bench's own share: {:.0} MiB \
         before this workload, {:.0} MiB with the large change in hand; hub s, blk s: the relay's \
         CPU seconds on its runtime's worker (hub and QUIC) and its blocking pool",
        mib(own_kib),
        mib(bench_kib)
    );
    let made_json: Vec<Value> = [&big, &at_cap]
        .iter()
        .map(|b| {
            json!({
                "characters": b.chars,
                "operations": b.ops,
                "bytes": b.raw.len(),
                "local_commit_ms": ms(b.commit),
                "check_ms": ms(b.check),
                "decode_ms": ms(b.decode),
                "sync_message_bytes": b.sync_data.len(),
                "sync_message_carries": b.sync_chunk,
            })
        })
        .collect();
    Ok(json!({
        "workload": "large-change",
        "quick": plan.quick,
        "pinned": plan.pin,
        "setup": "in-process weft-relay (QUIC, hub, engine, redb in a temp dir) on a 1-worker \
            runtime; document A: 1 writer and 3 receivers on a 1-worker runtime, one change in \
            flight, at most one every pace_ms, latency from the writer handing its Changes frame \
            to QUIC to a receiver decoding the forwarded frame; the large side (the sender and a \
            second subscriber of each large document) on a 1-worker runtime of its own; each \
            large change goes into its own document, which holds a 3-change seed; a relay per \
            path with raised caps; RSS is the whole process's (relay and bench)",
        "pace_ms": settings.pace.as_millis() as u64,
        "min_window_s": settings.min_window.as_secs_f64(),
        "large_changes_per_phase": settings.large,
        "large_every_s": settings.every.as_secs_f64(),
        "large_changes": made_json,
        "bench_rss_mib": mib(own_kib),
        "bench_rss_with_large_change_mib": mib(bench_kib),
        "runs": runs,
        "baseline": {
            "name": "same-relay-no-large-changes",
            "description": "the first phase on each relay: document A's fan-out with the same \
                devices and pace for min_window_s with nothing else going on; the other phases' \
                ratios and extra_*_ms are against it",
        },
    }))
}
