//! What the binding costs per call: the same calls through the Rust API of `weft-ffi` and
//! through the generated Kotlin bindings on the JVM (`peer/ffi/kotlin/WeftBench.kt`), in the
//! same run, each on an offline device of its own. `send_message` is a durable write;
//! `document_info` a cheap async call (a round trip to the device's driver); `status` and
//! `user` cheap sync calls, so what Kotlin adds to them is the call itself.
//!
//! A no-op unless `WEFT_BENCH=1` (so `cargo test` stays fast); measure a release build:
//!
//! ```sh
//! WEFT_BENCH=1 cargo test --release -p weft-ffi --test bench -- --nocapture
//! ```
//!
//! `WEFT_BENCH_SENDS` (default 1000) and `WEFT_BENCH_CHEAP_CALLS` (default 200000) set the
//! counts. The Rust calls are measured before and after the Kotlin ones, and both rounds are
//! printed. No thresholds: it prints figures, it does not judge them.

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use support::kotlin::Kotlin;

/// One call's figures, microseconds per call.
#[derive(Clone, Copy, Debug)]
struct Figure {
    median: f64,
    mean: f64,
}

type Figures = BTreeMap<String, Figure>;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Times `calls` calls one by one, after `warmup` untimed ones.
async fn each<F: Future<Output = ()>>(
    warmup: usize,
    calls: usize,
    mut call: impl FnMut() -> F,
) -> Figure {
    for _ in 0..warmup {
        call().await;
    }
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t0 = Instant::now();
        call().await;
        times.push(t0.elapsed());
    }
    times.sort();
    let total: Duration = times.iter().sum();
    Figure {
        median: times[calls / 2].as_secs_f64() * 1e6,
        mean: total.as_secs_f64() * 1e6 / calls as f64,
    }
}

/// Times `calls` calls as one batch (for calls close to the clock's own cost).
async fn batch<F: Future<Output = ()>>(
    warmup: usize,
    calls: usize,
    mut call: impl FnMut() -> F,
) -> Figure {
    for _ in 0..warmup {
        call().await;
    }
    let t0 = Instant::now();
    for _ in 0..calls {
        call().await;
    }
    let mean = t0.elapsed().as_secs_f64() * 1e6 / calls as f64;
    Figure { median: mean, mean }
}

/// The calls WeftBench.kt makes, in the same order and counts, through the Rust API.
async fn rust_round(dir: &Path, sends: usize, cheap: usize) -> Figures {
    let device = weft_ffi::open_device(dir.display().to_string(), "alice".into())
        .await
        .expect("open the device");
    let chat = device
        .create_conversation("Bench".into(), vec!["alice".into()])
        .await
        .expect("a conversation");
    let mut out = Figures::new();
    let send = each(sends / 10, sends, || async {
        device
            .send_message(chat.clone(), "noon at the usual place?".into())
            .await
            .expect("send");
    })
    .await;
    out.insert("send_message".into(), send);
    let info = batch(cheap / 10, cheap / 10, || async {
        device.document_info(chat.clone()).await.expect("info");
    })
    .await;
    out.insert("document_info".into(), info);
    let status = batch(cheap / 10, cheap, || async {
        std::hint::black_box(device.status());
    })
    .await;
    out.insert("status".into(), status);
    let user = batch(cheap / 10, cheap, || async {
        std::hint::black_box(device.user());
    })
    .await;
    out.insert("user".into(), user);
    device.shutdown().await.expect("shut down");
    out
}

/// The `BENCH name median mean calls` lines WeftBench.kt prints.
fn parse_kotlin(stdout: &str) -> Figures {
    stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("BENCH ")?.split_whitespace();
            let name = w.next()?.to_owned();
            let median = w.next()?.parse().ok()?;
            let mean = w.next()?.parse().ok()?;
            Some((name, Figure { median, mean }))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_cost_per_call() {
    if std::env::var("WEFT_BENCH").as_deref() != Ok("1") {
        eprintln!("the binding benchmark runs with WEFT_BENCH=1 (see peer/ffi/tests/bench.rs)");
        return;
    }
    let kotlin = Kotlin::find();
    if !support::require("Kotlin benchmark", kotlin.as_ref().err().cloned()) {
        return;
    }
    let kotlin = kotlin.expect("checked above");
    let sends = env_count("WEFT_BENCH_SENDS", 1000).max(10);
    let cheap = env_count("WEFT_BENCH_CHEAP_CALLS", 200_000).max(10);
    let work = tempfile::tempdir().expect("temporary directory");
    let program = kotlin.compile("WeftBench.kt", work.path());

    let before = rust_round(&work.path().join("rust-before"), sends, cheap).await;
    let mut cmd = kotlin.java(&program, "WeftBenchKt");
    cmd.env("WEFT_WORK_DIR", work.path())
        .env("WEFT_BENCH_SENDS", sends.to_string())
        .env("WEFT_BENCH_CHEAP_CALLS", cheap.to_string());
    let out = tokio::time::timeout(Duration::from_secs(600), cmd.output())
        .await
        .expect("the Kotlin benchmark finishes within 10 minutes")
        .expect("java runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Kotlin benchmark failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let kt = parse_kotlin(&stdout);
    let after = rust_round(&work.path().join("rust-after"), sends, cheap).await;

    println!(
        "binding cost per call, µs (median; mean), {sends} sends, {cheap} status/user calls, {} document_info calls",
        cheap / 10
    );
    println!(
        "{:<14} {:>18} {:>18} {:>18} {:>8} {:>10}",
        "call", "Rust before", "Kotlin", "Rust after", "ratio", "added"
    );
    for (name, r1) in &before {
        let r2 = after
            .get(name)
            .expect("both Rust rounds make the same calls");
        let k = kt
            .get(name)
            .unwrap_or_else(|| panic!("WeftBench.kt printed no {name}:\n{stdout}"));
        let rust = (r1.median + r2.median) / 2.0;
        let cell = |f: &Figure| format!("{:.2}; {:.2}", f.median, f.mean);
        println!(
            "{name:<14} {:>18} {:>18} {:>18} {:>7.1}x {:>10.2}",
            cell(r1),
            cell(k),
            cell(r2),
            k.median / rust,
            k.median - rust
        );
    }
    println!("Kotlin only (where a call's time goes), µs (median; mean):");
    for (name, k) in kt.iter().filter(|(n, _)| !before.contains_key(*n)) {
        println!("{name:<24} {:.2}; {:.2}", k.median, k.mean);
    }
}
