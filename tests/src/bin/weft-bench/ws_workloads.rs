//! `ws-native` and `ws-npm`: the relay's WebSocket endpoint against samod 0.16's server, with
//! the same automerge-repo clients: native Rust ones (samod repos in this process, see
//! `ws_native.rs`) or the npm package's (one node process running `relay/tests/js/
//! bench-clients.mjs`). Each (size, repetition) starts a fresh server process; runs alternate
//! weft/samod, the first of each pair swapping every repetition, since the machine is shared.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::plan::Plan;
use crate::report::{ms, percentiles};
use crate::ws_server::{status_kib, Kind, Server};

/// Unmeasured changes before each run's measured ones.
const WARMUP: usize = 10;

/// What one run of one server measured.
struct Sample {
    latencies: Vec<Duration>,
    lost: usize,
    /// KiB: right after the ready line, at the end of the run, and the peak.
    idle_rss: u64,
    rss: u64,
    peak_rss: u64,
    /// KiB of anonymous memory (heap, stacks): right after the ready line, and the peak
    /// sampled every 10 ms during the run.
    idle_anon: u64,
    peak_anon: u64,
    cpu: Duration,
    changes: usize,
}

/// Which clients drive the servers.
#[derive(Clone, Copy)]
enum Clients {
    Native,
    Npm,
}

pub(crate) fn ws_native_workload(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Value> {
    let sizes: &[(usize, usize)] = if plan.quick {
        &[(10, 100), (100, 30)]
    } else {
        &[(10, 300), (100, 100)]
    };
    workload(plan, rt, Clients::Native, sizes)
}

pub(crate) fn ws_npm_workload(plan: &Plan, rt: &tokio::runtime::Runtime) -> anyhow::Result<Value> {
    let sizes: &[(usize, usize)] = if plan.quick {
        &[(10, 20), (50, 10)]
    } else {
        &[(10, 60), (50, 40)]
    };
    workload(plan, rt, Clients::Npm, sizes)
}

fn workload(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    clients: Clients,
    sizes: &[(usize, usize)],
) -> anyhow::Result<Value> {
    let (name, who) = match clients {
        Clients::Native => (
            "ws-native",
            "native Rust automerge-repo clients (samod 0.16, TCP_NODELAY)",
        ),
        Clients::Npm => (
            "ws-npm",
            "npm automerge-repo 2.5.6 clients in one node process",
        ),
    };
    let reps = if plan.quick { 1 } else { 3 };
    eprintln!("{name}: {who}; one writer, every other client sees the change; weft-relay --ws vs samod's server");
    eprintln!(
        "  {:>7} {:>10} | {:>6} {:>15} {:>6} {:>15} | {:>9} {:>9} {:>9} {:>9} | {:>7}",
        "clients",
        "server",
        "p50 ms",
        "(range)",
        "p99 ms",
        "(range)",
        "idle MiB",
        "end MiB",
        "peak MiB",
        "peak anon",
        "cpu ms/c"
    );
    let mut runs = Vec::new();
    let mut base_runs = Vec::new();
    for &(n, changes) in sizes {
        let mut weft = Vec::new();
        let mut samod = Vec::new();
        for rep in 0..reps {
            let order = if rep % 2 == 0 {
                [Kind::Weft, Kind::Samod]
            } else {
                [Kind::Samod, Kind::Weft]
            };
            for kind in order {
                let s = measure(rt, kind, clients, n, changes)
                    .with_context(|| format!("{name}: {} with {n} clients", kind.name()))?;
                crate::progress(format_args!(
                    "{} {n} clients rep {rep}: {} samples",
                    kind.name(),
                    s.latencies.len()
                ));
                match kind {
                    Kind::Weft => weft.push(s),
                    Kind::Samod => samod.push(s),
                }
            }
        }
        let w = summary(Kind::Weft, n, &mut weft);
        let b = summary(Kind::Samod, n, &mut samod);
        let met = |k: &str| {
            let (x, y) = (w[k].as_f64(), b[k].as_f64());
            matches!((x, y), (Some(x), Some(y)) if x <= y)
        };
        let mut w = w.clone();
        w["at_or_below_samod"] = json!({
            "p50": met("p50_ms"),
            "p99": met("p99_ms"),
            "peak_rss": met("peak_rss_mib"),
            "peak_anon": met("peak_anon_mib"),
        });
        runs.push(w);
        base_runs.push(b);
    }
    Ok(json!({
        "workload": name,
        "quick": plan.quick,
        "setup": format!("{who}; each server a process of its own on loopback, a fresh one per \
            run: weft-relay serve --dev --ws (redb in a temp dir) and weft-samod-server (samod \
            0.16 on a default multi-thread tokio runtime, filesystem storage in a temp dir); \
            {reps} repetition(s) per size alternating weft/samod; p50/p99 over the pooled \
            samples of the repetitions, ranges over the repetitions' own; RSS from /proc \
            (VmRSS after the ready line and at the end, VmHWM peak; RssAnon, the heap and stacks \
            without the mapped binary, sampled every 10 ms for its peak), in MiB; cpu = server \
            user+system time during the measured changes (after connecting, the initial sync and \
            the warm-up), per change"),
        "latency": "from just before the writer's change (set n = i) to a reader's change \
            notification after which it reads n = i; per reader, one change in flight",
        "runs": runs,
        "baseline": {
            "name": "samod-0.16-server",
            "description": "samod 0.16 (the Rust automerge-repo) as a WebSocket sync server, \
                the same clients, alternating runs in the same weft-bench run",
            "runs": base_runs,
        }
    }))
}

/// One run: a fresh server, the clients, the server's figures.
fn measure(
    rt: &tokio::runtime::Runtime,
    kind: Kind,
    clients: Clients,
    n: usize,
    changes: usize,
) -> anyhow::Result<Sample> {
    let server = Server::start(kind)?;
    let (idle_rss, _, idle_anon) = server.rss_kib()?;
    let sampler = AnonSampler::start(server.pid());
    // The server's CPU time when the measured changes start (after connections, the initial
    // sync and the warm-up).
    let mut cpu0 = None;
    let measuring = || cpu0 = Some(server.cpu());
    let result = match clients {
        Clients::Native => native(rt, &server.url, (n, changes), measuring),
        Clients::Npm => npm(&server.url, (n, changes), measuring),
    };
    let peak_anon = sampler.stop();
    let (latencies, lost) = result?;
    let cpu = server.cpu().saturating_sub(cpu0.unwrap_or_default());
    let (rss, peak_rss, anon) = server.rss_kib()?;
    drop(server);
    Ok(Sample {
        latencies,
        lost,
        idle_rss,
        rss,
        peak_rss,
        idle_anon,
        peak_anon: peak_anon.max(anon),
        cpu,
        changes,
    })
}

/// Samples a process's `RssAnon` every 10 ms on a thread of its own: the kernel keeps a peak
/// of the whole resident set only.
struct AnonSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl AnonSampler {
    fn start(pid: u32) -> AnonSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Ok((_, _, anon)) = status_kib(pid) {
                    peak = peak.max(anon);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        AnonSampler { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

#[cfg(feature = "samod-bench")]
fn native(
    rt: &tokio::runtime::Runtime,
    url: &str,
    (n, changes): (usize, usize),
    measuring: impl FnMut(),
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let run = rt.block_on(crate::ws_native::run(url, n, (WARMUP, changes), measuring))?;
    Ok((run.latencies, run.lost))
}

#[cfg(not(feature = "samod-bench"))]
fn native(
    _rt: &tokio::runtime::Runtime,
    _url: &str,
    _sizes: (usize, usize),
    _measuring: impl FnMut(),
) -> anyhow::Result<(Vec<Duration>, usize)> {
    bail!(
        "weft-bench was built without the samod-bench feature; {}",
        crate::ws_server::BUILD_HINT
    )
}

/// The npm clients' package (`relay/tests/js`), installed from its lock file when needed.
fn js_dir() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../relay/tests/js");
    let marker = dir.join("node_modules/@automerge/automerge-repo-network-websocket/package.json");
    if !marker.exists() {
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--no-save"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .status()
            .context("npm install in relay/tests/js (is npm installed?)")?;
        if !status.success() {
            bail!("npm install in {} failed", dir.display());
        }
    }
    Ok(dir)
}

/// Runs `bench-clients.mjs`: it prints `measuring` once the warm-up rounds are done, then its
/// result as one JSON line.
fn npm(
    url: &str,
    (n, changes): (usize, usize),
    mut measuring: impl FnMut(),
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let dir = js_dir()?;
    let mut child = Command::new("node")
        .arg(dir.join("bench-clients.mjs"))
        .args([
            url,
            &n.to_string(),
            &changes.to_string(),
            &WARMUP.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("running node bench-clients.mjs (is node installed?)")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut result = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading bench-clients.mjs")?;
        if line == "measuring" {
            measuring();
        } else if line.starts_with('{') {
            result = Some(line);
        }
    }
    let status = child.wait().context("waiting for node")?;
    if !status.success() {
        bail!("bench-clients.mjs failed ({status})");
    }
    let line = result.context("bench-clients.mjs printed no result")?;
    let v: Value = serde_json::from_str(&line).context("bench-clients.mjs output")?;
    let samples = v["samples"]
        .as_array()
        .context("no samples")?
        .iter()
        .filter_map(Value::as_f64)
        .map(|ms| Duration::from_secs_f64(ms / 1e3))
        .collect();
    let lost = v["lost"].as_u64().unwrap_or(0) as usize;
    Ok((samples, lost))
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// The JSON of one server at one size, and its table line.
fn summary(kind: Kind, n: usize, samples: &mut [Sample]) -> Value {
    let mut pooled: Vec<Duration> = samples.iter().flat_map(|s| s.latencies.clone()).collect();
    let (p50, p99, max) = percentiles(&mut pooled);
    let mut reps = Vec::new();
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for s in samples.iter_mut() {
        let (a, b, c) = percentiles(&mut s.latencies);
        p50s.push(ms(a));
        p99s.push(ms(b));
        reps.push(json!({
            "p50_ms": ms(a), "p99_ms": ms(b), "max_ms": ms(c),
            "samples": s.latencies.len(), "lost": s.lost,
            "idle_rss_mib": mib(s.idle_rss), "end_rss_mib": mib(s.rss),
            "peak_rss_mib": mib(s.peak_rss),
            "idle_anon_mib": mib(s.idle_anon), "peak_anon_mib": mib(s.peak_anon),
            "cpu_ms_per_change": ms(s.cpu / s.changes.max(1) as u32),
        }));
    }
    let range = |v: &[f64]| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(0.0, f64::max);
        [lo, hi]
    };
    let peak = samples.iter().map(|s| s.peak_rss).max().unwrap_or(0);
    let idle = samples.iter().map(|s| s.idle_rss).max().unwrap_or(0);
    let end = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    let peak_anon = samples.iter().map(|s| s.peak_anon).max().unwrap_or(0);
    let cpu: Duration = samples.iter().map(|s| s.cpu).sum();
    let changes: usize = samples.iter().map(|s| s.changes).sum();
    let lost: usize = samples.iter().map(|s| s.lost).sum();
    let (r50, r99) = (range(&p50s), range(&p99s));
    eprintln!(
        "  {:>7} {:>10} | {:>6.2} {:>15} {:>6.2} {:>15} | {:>9.1} {:>9.1} {:>9.1} {:>9.1} | {:>7.3}{}",
        n,
        kind.name(),
        ms(p50),
        format!("({:.2}-{:.2})", r50[0], r50[1]),
        ms(p99),
        format!("({:.2}-{:.2})", r99[0], r99[1]),
        mib(idle),
        mib(end),
        mib(peak),
        mib(peak_anon),
        ms(cpu / changes.max(1) as u32),
        if lost > 0 { format!("  ({lost} receipts lost)") } else { String::new() }
    );
    json!({
        "server": kind.name(),
        "clients": n,
        "p50_ms": ms(p50),
        "p99_ms": ms(p99),
        "max_ms": ms(max),
        "p50_range_ms": r50,
        "p99_range_ms": r99,
        "samples": pooled.len(),
        "lost": lost,
        "idle_rss_mib": mib(idle),
        "end_rss_mib": mib(end),
        "peak_rss_mib": mib(peak),
        "peak_anon_mib": mib(peak_anon),
        "cpu_ms_per_change": ms(cpu / changes.max(1) as u32),
        "repetitions": reps,
    })
}
