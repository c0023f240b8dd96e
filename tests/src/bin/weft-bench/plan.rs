//! What to run: the workloads, `--quick` and `--pin`.

use std::time::Duration;
pub(crate) const IMPLEMENTED: &[&str] = &[
    "fanout",
    "throughput",
    "wire-bytes",
    "reconnect",
    "durable-writes",
    "initial-sync",
    "large-change",
    "memory",
    "checkpoint",
    "presence",
    "huge-conversation",
    "crowd",
    "paused-device",
    "cluster",
    "failover",
    "ws-native",
    "ws-npm",
];
/// Workloads whose baseline server (and, for `ws-native`, clients) is samod: run by default
/// only in a build with the `samod-bench` feature.
pub(crate) const NEEDS_SAMOD: &[&str] = &["ws-native", "ws-npm"];
pub(crate) const USAGE: &str = "usage: weft-bench [--quick] [--pin] [WORKLOAD...]  (workloads: fanout, throughput, wire-bytes, reconnect, durable-writes, initial-sync, large-change, memory, checkpoint, presence, huge-conversation, crowd, paused-device, cluster, failover, ws-native, ws-npm)";
/// The workloads as the usage line and errors name them.
pub(crate) const AVAILABLE: &str =
    "fanout, throughput, wire-bytes, reconnect, durable-writes, initial-sync, large-change, \
     memory, checkpoint, presence, huge-conversation, crowd, paused-device, cluster, failover, \
     ws-native, ws-npm";

pub(crate) struct Plan {
    pub(crate) quick: bool,
    /// Relay on CPU 0, devices on CPU 1 (`--pin`).
    pub(crate) pin: bool,
    /// (devices, measured changes, baseline changes, p99 target in ms)
    pub(crate) fanout: Vec<(usize, usize, usize, Option<f64>)>,
    pub(crate) fanout_warmup: usize,
    pub(crate) docs: usize,
    pub(crate) devices: usize,
    pub(crate) warmup: Duration,
    pub(crate) window: Duration,
    pub(crate) wire_changes: usize,
    pub(crate) chain_len: usize,
}

/// Overrides the throughput window, in seconds, to watch the relay past the standard window
/// (steady state, allocator purges); the chain is long enough for about a minute.
pub(crate) const WINDOW_ENV: &str = "WEFT_BENCH_WINDOW_S";

/// A number from the environment variable `name`; `None` when unset or not a number.
pub(crate) fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

impl Plan {
    pub(crate) fn new(quick: bool) -> Plan {
        let mut plan = Plan::standard(quick);
        if let Some(s) = env_number::<u64>(WINDOW_ENV) {
            plan.window = Duration::from_secs(s.clamp(1, 60));
        }
        plan
    }

    fn standard(quick: bool) -> Plan {
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
