//! Helpers for the printed and JSON reports.

use std::time::Duration;

pub(crate) fn progress(args: std::fmt::Arguments<'_>) {
    if std::env::var_os("WEFT_BENCH_VERBOSE").is_some() {
        eprintln!("    .. {args}");
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub(crate) fn us(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

/// p50, p99 and max of `samples` (sorted here).
pub(crate) fn percentiles(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
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

/// Profiles only a measured phase: with `WEFT_PERF_CTL` naming the control FIFO of
/// `perf record -D -1 --control=fifo:PATH`, writes `enable` or `disable` to it (BENCHMARKS.md,
/// "Profiling a phase"). Without it, does nothing.
pub(crate) fn perf_control(cmd: &str) {
    if let Some(path) = std::env::var_os("WEFT_PERF_CTL") {
        // Best effort: a profile is diagnostics, never a reason to fail the measurement.
        let _ = std::fs::write(path, format!("{cmd}\n"));
    }
}
