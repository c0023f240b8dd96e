//! The large-change workload: the plan of its phases and its report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use super::{Path, Settings};
use crate::chain::Chain;
use crate::pin_current_thread;
use crate::plan::Plan;
use crate::relay::Relay;
use crate::report::{ms, percentiles};

pub(crate) fn large_change_workload(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Value> {
    let own_kib = super::status_kib("VmRSS").unwrap_or(0);
    let t = Instant::now();
    let mut made = super::Big::generate_in_child()?.into_iter().map(Arc::new);
    let (Some(big), Some(at_cap)) = (made.next(), made.next()) else {
        anyhow::bail!("the child made fewer changes than asked");
    };
    let generated = t.elapsed();
    let settings = settings(plan);
    // Document A's own chain: a window with large changes lasts until they are handled.
    let chain = Arc::new(Chain::generate(settings.chain_len()));
    print_setup(&settings, [&big, &at_cap], generated);
    let big_rt = big_runtime(plan.pin)?;
    let bench_kib = super::status_kib("VmRSS").unwrap_or(0);
    print_table_header();
    let mut runs = Vec::new();
    for (caps_name, limits, paths) in &relays(&big, &at_cap) {
        let relay = Relay::start_with(limits.clone())?;
        let run = RelayRun {
            relay: &relay,
            caps_name,
            rt,
            big_rt: &big_rt,
            chain: &chain,
            settings: &settings,
        };
        let phases = run.phases(&big, paths)?;
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
    Ok(report(
        plan,
        &settings,
        [&big, &at_cap],
        (own_kib, bench_kib),
        runs,
    ))
}

/// The phases' timing: shorter windows and one large change per phase in a quick run.
fn settings(plan: &Plan) -> Settings {
    Settings {
        pace: Duration::from_millis(20),
        warmup: 20,
        large: if plan.quick { 1 } else { 5 },
        first_at: Duration::from_millis(500),
        every: Duration::from_secs(2),
        min_window: Duration::from_secs(if plan.quick { 2 } else { 10 }),
        tail: Duration::from_secs(1),
        max_window: Duration::from_secs(if plan.quick { 25 } else { 40 }),
    }
}

/// What the workload does and the large changes it sends.
fn print_setup(settings: &Settings, made: [&Arc<super::Big>; 2], generated: Duration) {
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
    for b in made {
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
}

/// The large side's own runtime, so megabytes sent and received there do not hold up
/// document A's devices.
fn big_runtime(pin: bool) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
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
        .context("cannot start the large side's runtime")
}

fn print_table_header() {
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
}

/// The large changes of a relay's phases after its baseline, and how each travels.
type Phases<'a> = Vec<(&'a Arc<super::Big>, Path)>;

/// A relay per path with the raised caps, so the work one path leaves behind (a reload,
/// memory) does not land in the other's figures; with the defaults nothing is kept.
/// With the defaults, the 2M change is refused and the largest change they take goes in
/// last.
fn relays<'a>(
    big: &'a Arc<super::Big>,
    at_cap: &'a Arc<super::Big>,
) -> [(&'static str, Option<weft_core::check::Limits>, Phases<'a>); 3] {
    [
        (
            "default",
            None,
            vec![
                (big, Path::Changes),
                (big, Path::Sync),
                (at_cap, Path::Changes),
                (at_cap, Path::Sync),
            ],
        ),
        (
            "raised",
            Some(super::raised_limits()),
            vec![(big, Path::Changes)],
        ),
        (
            "raised",
            Some(super::raised_limits()),
            vec![(big, Path::Sync)],
        ),
    ]
}

/// One relay's phases: what they share.
struct RelayRun<'a> {
    relay: &'a Relay,
    caps_name: &'a str,
    rt: &'a tokio::runtime::Runtime,
    big_rt: &'a tokio::runtime::Runtime,
    chain: &'a Arc<Chain>,
    settings: &'a Settings,
}

impl RelayRun<'_> {
    /// The baseline phase (no large change), then one phase per entry of `paths`; each
    /// printed as a row of the table, and its report.
    fn phases(&self, big: &Arc<super::Big>, paths: &Phases<'_>) -> anyhow::Result<Vec<Value>> {
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
            let r = self.rt.block_on(super::phase(
                self.relay,
                self.chain.clone(),
                which.clone(),
                path,
                self.big_rt.handle().clone(),
                self.settings,
            ));
            let caps_name = self.caps_name;
            let mut r = r.with_context(|| format!("large-change, {caps_name} caps, {label}"))?;
            let figures = Figures::of(&mut r, &mut base);
            figures.print_row(caps_name, &label, path.is_some(), &r);
            phases.push(figures.report(&which, path, &r));
        }
        Ok(phases)
    }
}

/// A phase's figures, in ms, and its large changes' outcomes counted.
struct Figures {
    p50: f64,
    p99: f64,
    max: f64,
    /// From the schedule.
    s50: Duration,
    s99: Duration,
    smax: Duration,
    /// The relay's baseline p99 and max.
    b99: f64,
    bmax: f64,
    accepted: usize,
    delivered: usize,
    refused: usize,
}

impl Figures {
    /// `r`'s figures; the first phase's p99 and max become the relay's baseline in `base`.
    fn of(r: &mut super::Phase, base: &mut Option<(f64, f64)>) -> Figures {
        let (p50, p99, max) = percentiles(&mut r.latencies);
        let (s50, s99, smax) = percentiles(&mut r.from_schedule);
        let (p50, p99, max) = (ms(p50), ms(p99), ms(max));
        let (b99, bmax) = *base.get_or_insert((p99, max));
        Figures {
            p50,
            p99,
            max,
            s50,
            s99,
            smax,
            b99,
            bmax,
            accepted: r.large.iter().filter(|o| o.accepted.is_some()).count(),
            delivered: r.large.iter().filter(|o| o.delivered.is_some()).count(),
            refused: r.large.iter().filter(|o| o.refused.is_some()).count(),
        }
    }

    /// The phase's row of the table, and notes under it when something went astray.
    fn print_row(&self, caps_name: &str, label: &str, loaded: bool, r: &super::Phase) {
        let range = |f: &dyn Fn(&super::Outcome) -> Option<Duration>| {
            let mut v: Vec<f64> = r.large.iter().filter_map(f).map(ms).collect();
            v.sort_by(f64::total_cmp);
            match (v.first(), v.last()) {
                (Some(lo), Some(hi)) => format!("{lo:.0}-{hi:.0}"),
                _ => "-".into(),
            }
        };
        let loaded = |v: String| if loaded { v } else { "-".into() };
        let (accepted, delivered, refused) = (self.accepted, self.delivered, self.refused);
        eprintln!(
            "  {:<7} {:<16} | {:>6.2} {:>7.2} {:>8.1} {:>6} {:>6} | {:<16} | {:>11} {:>11} | {:>6.0} {:>6.0} | {:>5.2} {:>5.2}",
            caps_name,
            label,
            self.p50,
            self.p99,
            self.max,
            loaded(format!("{:.1}", ratio(self.p99, self.b99))),
            loaded(format!("{:.0}", ratio(self.max, self.bmax))),
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
                super::RECEIPT_DEADLINE.as_secs(),
                r.sync_frames
            );
        }
    }

    /// The phase's report.
    fn report(&self, which: &super::Big, path: Option<Path>, r: &super::Phase) -> Value {
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
        let (p99, b99, max, bmax) = (self.p99, self.b99, self.max, self.bmax);
        json!({
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
            "p50_ms": self.p50,
            "p99_ms": p99,
            "max_ms": max,
            "from_schedule_p50_ms": ms(self.s50),
            "from_schedule_p99_ms": ms(self.s99),
            "from_schedule_max_ms": ms(self.smax),
            "p99_ratio_to_baseline": ratio(p99, b99),
            "max_ratio_to_baseline": ratio(max, bmax),
            "extra_p99_ms": ((p99 - b99) * 1000.0).round() / 1000.0,
            "extra_max_ms": ((max - bmax) * 1000.0).round() / 1000.0,
            "large_changes": large,
            "large_accepted": self.accepted,
            "large_delivered": self.delivered,
            "large_refused": self.refused,
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
        })
    }
}

/// `x` against the baseline `b`, to one decimal (0 without a baseline).
fn ratio(x: f64, b: f64) -> f64 {
    if b > 0.0 {
        (x / b * 10.0).round() / 10.0
    } else {
        0.0
    }
}

/// KiB in MiB, rounded.
fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0).round()
}

/// Seconds to the millisecond.
fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// The workload's report: its setup, the changes it made, and each relay's phases.
fn report(
    plan: &Plan,
    settings: &Settings,
    made: [&Arc<super::Big>; 2],
    (own_kib, bench_kib): (u64, u64),
    runs: Vec<Value>,
) -> Value {
    let made_json: Vec<Value> = made
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
    json!({
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
    })
}
