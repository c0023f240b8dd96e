//! CPU time of other processes (the relays and Postgres the cluster workloads start).

use std::time::Duration;

/// The CPU time (user + system) of process `pid`, from `/proc` (zero when it is gone).
pub(crate) fn proc_cpu(pid: u32) -> Duration {
    process_clock(pid).unwrap_or_else(|| proc_ticks(pid))
}

/// The process's CPU clock (every thread, exited ones included) in nanoseconds, where the
/// kernel lets this process read it: `/proc`'s times are in clock ticks (10 ms), too coarse for
/// a few hundred changes summed over several processes.
fn process_clock(pid: u32) -> Option<Duration> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid place for the id; the call only writes it.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid place for the time; the call only writes it.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

/// The process's user and system time from `/proc` (clock ticks; zero when it is gone).
fn proc_ticks(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    let hz = clock_ticks();
    Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / hz)
}

/// The CPU time of `root` and every process whose parent it is (Postgres' backends).
pub(crate) fn tree_cpu(root: u32) -> Duration {
    let mut total = proc_cpu(root);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return total;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok())
            });
        if parent == Some(root) {
            total += proc_cpu(pid);
        }
    }
    total
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}
