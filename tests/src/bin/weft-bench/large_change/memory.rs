//! The process's resident memory: sampling it over a phase, and returning freed memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Rss;

/// Samples the process's `VmRSS` every 10 ms on a thread of its own, after resetting the
/// kernel's high-water mark.
pub(crate) struct Sampler {
    start_kib: u64,
    hwm_reset: bool,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, Duration)>>,
}

impl Sampler {
    pub(crate) fn start() -> Sampler {
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

    pub(crate) fn finish(mut self) -> Rss {
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
    pub(super) fn mi_collect(force: bool);
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
pub(crate) fn statm_rss_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096) / 1024)
}
