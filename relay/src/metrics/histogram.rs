//! A Prometheus histogram of plain atomics, and the bucket bounds the relay's histograms use.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the fan-out latency histogram's buckets.
pub(super) const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// Upper bounds (seconds) of the checkpoint lag histogram's buckets: fine around the default
/// interval (5 s), so "under interval + 1 s" can be read off it.
pub(super) const CHECKPOINT_LAG_BUCKETS: [f64; 20] = [
    0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 5.5, 6.0, 7.0, 8.0, 10.0, 15.0, 20.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// A histogram with `N` cumulative buckets (their bounds kept by its user), a sum and a count.
#[derive(Debug)]
pub(super) struct Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Histogram<N> {
    pub(super) fn observe(&self, bounds: &[f64; N], d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, bucket) in bounds.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// The bound of the first bucket holding at least `q` of the observations (`None` when
    /// there are none, infinity when they lie past the last bound).
    pub(super) fn quantile(&self, bounds: &[f64; N], q: f64) -> Option<f64> {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            return None;
        }
        let want = (q * count as f64).ceil() as u64;
        let found = bounds
            .iter()
            .zip(&self.buckets)
            .find(|(_, b)| b.load(Ordering::Relaxed) >= want)
            .map(|(bound, _)| *bound);
        Some(found.unwrap_or(f64::INFINITY))
    }

    pub(super) fn render(&self, bounds: &[f64; N], name: &str, help: &str, out: &mut String) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, bucket) in bounds.iter().zip(&self.buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", get(bucket));
        }
        let count = get(&self.count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", get(&self.sum_us) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}
