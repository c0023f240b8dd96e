//! The relay's metrics, rendered in the Prometheus text format at `GET /metrics`.
//!
//! Plain atomics: the hub and the connection tasks bump them without locks, and rendering reads
//! them. Every name starts with `weft_`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod histogram;

use histogram::{Histogram, CHECKPOINT_LAG_BUCKETS, LATENCY_BUCKETS};

/// Counters and gauges of one relay.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open connections.
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Documents loaded in memory.
    pub documents_loaded: AtomicU64,
    /// Document messages received.
    pub messages_in: AtomicU64,
    /// Messages sent.
    pub messages_out: AtomicU64,
    /// Frame bytes received.
    pub bytes_in: AtomicU64,
    /// Frame bytes sent.
    pub bytes_out: AtomicU64,
    /// Messages dropped on a full connection queue.
    pub queue_drops: AtomicU64,
    /// Refused tokens and devices.
    pub auth_failures: AtomicU64,
    /// Connections closed for sending invalid frames or messages.
    pub protocol_errors: AtomicU64,
    /// Changes refused from a read-only connection.
    pub refused_read_only: AtomicU64,
    /// Changes refused for a size limit (per change, per message, per document).
    pub refused_limit: AtomicU64,
    /// Times a connection's reads were slowed for sending more bytes per second than allowed.
    pub throttled: AtomicU64,
    /// Requests refused by a quota (documents per user, bytes per user, memory, creations at
    /// once).
    pub quota_refusals: AtomicU64,
    /// Stored bytes of the documents loaded in memory.
    pub documents_loaded_bytes: AtomicU64,
    /// Times the hub gave back the memory of documents and connections that left.
    pub memory_trims: AtomicU64,
    /// Stored chunks set aside because they do not parse (a store written before changes
    /// were checked may hold some).
    pub chunks_quarantined: AtomicU64,
    /// Push hook events delivered.
    pub notify_sent: AtomicU64,
    /// Push hook deliveries tried again.
    pub notify_retries: AtomicU64,
    /// Push hook events given up (refused by the receiver, or out of attempts).
    pub notify_failed: AtomicU64,
    /// Push hook events dropped on a full queue.
    pub notify_dropped: AtomicU64,
    /// Cluster log entries appended by this relay.
    pub cluster_appended: AtomicU64,
    /// Of those, entries appended on the follower's listening connection.
    pub cluster_appended_listening: AtomicU64,
    /// Cluster log append transactions that failed (each is tried again).
    pub cluster_append_failures: AtomicU64,
    /// Milliseconds the latest cluster log append transaction took.
    pub cluster_append_ms: AtomicU64,
    /// Entries of other relays applied from the cluster log.
    pub cluster_imported: AtomicU64,
    /// Imported changes delivered to this relay's live connections (documents loaded here).
    pub cluster_delivered: AtomicU64,
    /// Milliseconds between the latest imported entry's append and its import here.
    pub cluster_lag_ms: AtomicU64,
    /// Presence and ephemeral messages published to the cluster's other relays.
    pub cluster_ephemeral_out: AtomicU64,
    /// Presence and ephemeral messages received from the cluster's other relays.
    pub cluster_ephemeral_in: AtomicU64,
    /// WebSocket tickets the cluster's other relays said they redeemed.
    pub cluster_tickets_heard: AtomicU64,
    /// Entries this relay deleted from the cluster's log (past the retention, read by all).
    pub cluster_trimmed: AtomicU64,
    /// Times this relay found the log trimmed past its position (it was away too long).
    pub cluster_gaps: AtomicU64,
    /// The last `seq` of the cluster's log this relay applied (or skipped as its own).
    pub cluster_cursor: AtomicU64,
    /// 1 when this relay reaches the cluster's log (0 without `--cluster`, or while it cannot).
    pub cluster_connected: AtomicU64,
    /// The relay is one of a cluster (`/healthz` then also asks that it reach the log).
    pub cluster_member: std::sync::atomic::AtomicBool,
    // Postgres checkpoints (begin)
    /// Age of the oldest change not yet checkpointed, in milliseconds.
    pub checkpoint_lag_ms: AtomicU64,
    /// Documents waiting for a checkpoint.
    pub checkpoint_dirty: AtomicU64,
    /// Failed checkpoint batches and documents.
    pub checkpoint_failures: AtomicU64,
    /// Documents checkpointed since start.
    pub checkpoint_documents: AtomicU64,
    /// Per document written: from its first change not yet checkpointed to the commit that
    /// wrote it.
    checkpoint_commit_lag: Histogram<{ CHECKPOINT_LAG_BUCKETS.len() }>,
    // Postgres checkpoints (end)
    fanout_latency: Histogram<{ LATENCY_BUCKETS.len() }>,
    /// How long each pass of the hub's loop took: every other document and connection waits
    /// meanwhile.
    hub_turn: Histogram<{ LATENCY_BUCKETS.len() }>,
    /// The longest pass since [`Metrics::take_longest_hub_turn`] last took it, microseconds.
    hub_longest_turn_us: AtomicU64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether this relay is one of a cluster and cannot reach the cluster's log now.
    pub fn cluster_unreachable(&self) -> bool {
        self.cluster_member.load(Ordering::Relaxed)
            && self.cluster_connected.load(Ordering::Relaxed) == 0
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records one fan-out latency: from a change's arrival to its frames being queued.
    pub fn observe_fanout(&self, d: Duration) {
        self.fanout_latency.observe(&LATENCY_BUCKETS, d);
    }

    /// Records one pass of the hub's loop.
    pub fn observe_hub_turn(&self, d: Duration) {
        self.hub_turn.observe(&LATENCY_BUCKETS, d);
        self.hub_longest_turn_us
            .fetch_max(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// The longest pass of the hub's loop since the last call (or start), restarting the count:
    /// how long one document's work held up every other (for benchmarks).
    pub fn take_longest_hub_turn(&self) -> Duration {
        Duration::from_micros(self.hub_longest_turn_us.swap(0, Ordering::Relaxed))
    }

    /// Records one document's checkpoint lag: from when it became dirty to the commit that
    /// wrote it.
    pub fn observe_checkpoint_lag(&self, d: Duration) {
        self.checkpoint_commit_lag
            .observe(&CHECKPOINT_LAG_BUCKETS, d);
    }

    /// The upper bound, in seconds, of the checkpoint lag's `q` quantile (a bucket's bound:
    /// 0.25 s to 10 min), or `None` before any checkpoint.
    pub fn checkpoint_lag_quantile(&self, q: f64) -> Option<f64> {
        self.checkpoint_commit_lag
            .quantile(&CHECKPOINT_LAG_BUCKETS, q)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help, value) in self.plain() {
            let v = value.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        self.render_checkpoint_lag_and_refusals(&mut out);
        self.checkpoint_commit_lag.render(
            &CHECKPOINT_LAG_BUCKETS,
            "weft_checkpoint_commit_lag_seconds",
            "Per document checkpointed: from its first change not yet checkpointed to the commit.",
            &mut out,
        );
        self.fanout_latency.render(
            &LATENCY_BUCKETS,
            "weft_fanout_latency_seconds",
            "From a change's arrival to its frames being queued for subscribers.",
            &mut out,
        );
        self.hub_turn.render(
            &LATENCY_BUCKETS,
            "weft_hub_turn_seconds",
            "Each pass of the hub's loop (handling events, then sending and writing what they produced); everything else waits meanwhile.",
            &mut out,
        );
        out
    }

    /// The counters and gauges rendered as they are: name, type, help and value, in order.
    fn plain(&self) -> [(&'static str, &'static str, &'static str, &AtomicU64); 36] {
        [
            (
                "weft_connections",
                "gauge",
                "Open device connections.",
                &self.connections,
            ),
            (
                "weft_connections_total",
                "counter",
                "Connections accepted.",
                &self.connections_total,
            ),
            (
                "weft_documents_loaded",
                "gauge",
                "Documents loaded in memory.",
                &self.documents_loaded,
            ),
            (
                "weft_sync_messages_in_total",
                "counter",
                "Document messages received.",
                &self.messages_in,
            ),
            (
                "weft_sync_messages_out_total",
                "counter",
                "Messages sent.",
                &self.messages_out,
            ),
            (
                "weft_sync_bytes_in_total",
                "counter",
                "Frame bytes received.",
                &self.bytes_in,
            ),
            (
                "weft_sync_bytes_out_total",
                "counter",
                "Frame bytes sent.",
                &self.bytes_out,
            ),
            (
                "weft_queue_drops_total",
                "counter",
                "Messages dropped on a full connection queue.",
                &self.queue_drops,
            ),
            (
                "weft_auth_failures_total",
                "counter",
                "Refused tokens and devices.",
                &self.auth_failures,
            ),
            (
                "weft_throttled_total",
                "counter",
                "Times a connection's reads were slowed for its bytes per second.",
                &self.throttled,
            ),
            (
                "weft_quota_refusals_total",
                "counter",
                "Requests refused by a quota (documents or bytes per user, memory, creation rate).",
                &self.quota_refusals,
            ),
            (
                "weft_documents_loaded_bytes",
                "gauge",
                "Stored bytes of the documents loaded in memory.",
                &self.documents_loaded_bytes,
            ),
            (
                "weft_memory_trims_total",
                "counter",
                "Times the hub gave back the memory of documents and connections that left.",
                &self.memory_trims,
            ),
            (
                "weft_chunks_quarantined_total",
                "counter",
                "Stored chunks set aside on load because they do not parse.",
                &self.chunks_quarantined,
            ),
            (
                "weft_protocol_errors_total",
                "counter",
                "Connections closed for invalid input.",
                &self.protocol_errors,
            ),
            (
                "weft_notify_sent_total",
                "counter",
                "Push hook events delivered.",
                &self.notify_sent,
            ),
            (
                "weft_notify_retries_total",
                "counter",
                "Push hook deliveries tried again.",
                &self.notify_retries,
            ),
            (
                "weft_notify_failed_total",
                "counter",
                "Push hook events given up (refused, or out of attempts).",
                &self.notify_failed,
            ),
            (
                "weft_notify_dropped_total",
                "counter",
                "Push hook events dropped on a full queue.",
                &self.notify_dropped,
            ),
            (
                "weft_cluster_appended_total",
                "counter",
                "Cluster log entries appended by this relay.",
                &self.cluster_appended,
            ),
            (
                "weft_cluster_appended_listening_total",
                "counter",
                "Cluster log entries appended on the follower's listening connection (the rest on the appender's own).",
                &self.cluster_appended_listening,
            ),
            (
                "weft_cluster_append_failures_total",
                "counter",
                "Cluster log append transactions that failed (and were tried again).",
                &self.cluster_append_failures,
            ),
            (
                "weft_cluster_append_milliseconds",
                "gauge",
                "Duration of the latest cluster log append transaction.",
                &self.cluster_append_ms,
            ),
            (
                "weft_cluster_imported_total",
                "counter",
                "Entries of other relays applied from the cluster log.",
                &self.cluster_imported,
            ),
            (
                "weft_cluster_delivered_total",
                "counter",
                "Imported changes applied to documents loaded here (and sent to their subscribers).",
                &self.cluster_delivered,
            ),
            (
                "weft_cluster_lag_milliseconds",
                "gauge",
                "From the latest imported entry's append to its import here (0 for an entry its notification carried: applied as its append committed).",
                &self.cluster_lag_ms,
            ),
            (
                "weft_cluster_ephemeral_sent_total",
                "counter",
                "Presence and ephemeral messages published to the cluster's other relays.",
                &self.cluster_ephemeral_out,
            ),
            (
                "weft_cluster_ephemeral_received_total",
                "counter",
                "Presence and ephemeral messages received from the cluster's other relays.",
                &self.cluster_ephemeral_in,
            ),
            (
                "weft_cluster_tickets_heard_total",
                "counter",
                "WebSocket tickets the cluster's other relays said they redeemed (each opens one socket in the cluster).",
                &self.cluster_tickets_heard,
            ),
            (
                "weft_cluster_trimmed_total",
                "counter",
                "Entries this relay deleted from the cluster's log (older than the retention and read by every relay).",
                &self.cluster_trimmed,
            ),
            (
                "weft_cluster_gaps_total",
                "counter",
                "Times this relay found the cluster's log trimmed past its position (every document then checkpointed).",
                &self.cluster_gaps,
            ),
            (
                "weft_cluster_log_position",
                "gauge",
                "The last entry of the cluster's log this relay has applied (its seq).",
                &self.cluster_cursor,
            ),
            (
                "weft_cluster_connected",
                "gauge",
                "1 when this relay reaches the cluster's log.",
                &self.cluster_connected,
            ),
            (
                "weft_checkpoint_dirty_documents",
                "gauge",
                "Documents waiting for a checkpoint.",
                &self.checkpoint_dirty,
            ),
            (
                "weft_checkpoint_failures_total",
                "counter",
                "Failed checkpoint batches and documents.",
                &self.checkpoint_failures,
            ),
            (
                "weft_checkpoint_documents_total",
                "counter",
                "Documents checkpointed to Postgres.",
                &self.checkpoint_documents,
            ),
        ]
    }

    /// The checkpoint lag in seconds and the refused changes by reason.
    fn render_checkpoint_lag_and_refusals(&self, out: &mut String) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP weft_checkpoint_lag_seconds Age of the oldest change not yet checkpointed.\n\
             # TYPE weft_checkpoint_lag_seconds gauge\nweft_checkpoint_lag_seconds {}",
            get(&self.checkpoint_lag_ms) as f64 / 1e3
        );
        let _ = writeln!(
            out,
            "# HELP weft_changes_refused_total Messages whose changes were refused, by reason.\n\
             # TYPE weft_changes_refused_total counter\n\
             weft_changes_refused_total{{reason=\"read_only\"}} {}\n\
             weft_changes_refused_total{{reason=\"limit\"}} {}",
            get(&self.refused_read_only),
            get(&self.refused_limit),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_hub_turn_is_taken_and_counted_again_from_zero() {
        let m = Metrics::default();
        m.observe_hub_turn(Duration::from_millis(3));
        m.observe_hub_turn(Duration::from_millis(40));
        m.observe_hub_turn(Duration::from_millis(2));
        assert_eq!(m.take_longest_hub_turn(), Duration::from_millis(40));
        assert_eq!(m.take_longest_hub_turn(), Duration::ZERO);
        m.observe_hub_turn(Duration::from_millis(1));
        assert_eq!(m.take_longest_hub_turn(), Duration::from_millis(1));
        assert!(m.render().contains("weft_hub_turn_seconds_count 4"));
    }

    #[test]
    fn every_metric_is_prefixed_and_histograms_are_cumulative() {
        let m = Metrics::default();
        Metrics::inc(&m.connections_total);
        m.observe_fanout(Duration::from_micros(700));
        m.observe_fanout(Duration::from_millis(30));
        let text = m.render();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("weft_"), "{line}");
        }
        assert!(text.contains("weft_connections_total 1"));
        assert!(text.contains("weft_fanout_latency_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("weft_fanout_latency_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("weft_fanout_latency_seconds_count 2"));
        m.observe_checkpoint_lag(Duration::from_millis(5_200));
        assert!(text.contains("weft_checkpoint_commit_lag_seconds_count 0"));
        assert_eq!(m.checkpoint_lag_quantile(0.99), Some(5.5));
        let text = m.render();
        assert!(text.contains("weft_checkpoint_commit_lag_seconds_bucket{le=\"5\"} 0"));
        assert!(text.contains("weft_checkpoint_commit_lag_seconds_bucket{le=\"5.5\"} 1"));
    }
}
