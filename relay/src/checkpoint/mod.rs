//! Postgres checkpoints: the relay writes every changed document to Postgres so backend jobs
//! read current state with SQL and a relay can be rebuilt from Postgres alone.
//!
//! Flow:
//! 1. The hub marks a document dirty ([`DirtyDocs::mark`]: a mutex held for one map insert,
//!    never across an await) when a change becomes durable, when its access list or deletion
//!    changes, and when it is created.
//! 2. Every interval the [`Checkpointer`] takes the dirty set and, per batch of documents, opens
//!    one transaction: it takes each document's advisory lock (sorted, so two relays never
//!    deadlock), reads the heads Postgres holds, prepares the rows from the relay's redb store
//!    in `spawn_blocking` (Automerge `save()`, sorted hex heads, blake3, the JSON view, the
//!    message rows that changed since the stored heads, the access list, and for a document
//!    of a kind declared with `--kinds` its record: the declared fields as JSON), and writes
//!    `weft_documents`, `weft_messages`, `weft_access` and `weft_records` for every document
//!    in that one transaction. A record row is rewritten only when its kind or fields
//!    changed (so `updated_at` is when the record last changed), and removed when its
//!    document is no longer of a declared kind.
//! 3. Never newer replaced by older: if Postgres holds heads the relay lacks (another relay
//!    wrote them, or a restore), the stored content is fetched under the lock, merged with the
//!    relay's, and the union is written; the stored bytes are also added to the relay's store
//!    as a chunk, so the relay's copy holds the union once the document is next loaded.
//!    Writing heads equal to the stored ones touches only metadata: retries are idempotent.
//! 4. Postgres down or slow: the batch fails (or times out), its documents go back to the dirty
//!    set with their original dirty time, the connection is dropped, and the next attempt
//!    waits with exponential backoff; devices keep syncing through redb meanwhile.
//! 5. Shutdown: after the hub drained, a final round writes every dirty document (bounded by a
//!    deadline).
//! 6. Start: migrations run in one transaction, then every checkpointed document the store
//!    lacks is restored (content, owner, access list, deletion, index rows).
//! 7. Deletion: a deleted document's checkpoint writes its row without content (`content`,
//!    `content_blake3`, `doc` null, `heads` empty; `doc_id`, `owner`, `kind`, `deleted_at`
//!    kept) and deletes its message rows and its record row, in the batch's one transaction;
//!    its access rows stay, so a relay restored from Postgres still tells former members it
//!    was deleted. A row that another relay marked deleted is never given content again.
//!    After a round that erased documents, a plain `VACUUM` of `weft_documents`,
//!    `weft_messages` and `weft_records` removes the dead row versions holding the old
//!    content (best-effort).
//!
//! Connections use TLS as the URL's `sslmode` says (`disable`, `prefer`, `require`,
//! `verify-ca`, `verify-full`; see `tls.rs`), trusting `--postgres-ca` or the system's roots.
//! Every failure is logged once with its whole cause chain.
//!
//! Limits, for now: merged-in changes reach the relay's devices when the document is next
//! loaded (after its eviction), not at once; a restore fills in documents the store lacks and
//! leaves the ones it has alone.
//!
//! Cost bound for hot, large documents: a document is checkpointed at most once per interval,
//! and one whose preparation took `t` waits at least `HOT_FACTOR * t` before its next
//! checkpoint, so checkpointing spends at most about 1/`HOT_FACTOR` of a core on any one
//! document however often it changes.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_core::store::GroupCommit;
use weft_core::DocId;
use weft_schema::rules::Kinds;

use crate::metrics::Metrics;

mod dirty;
mod error;
mod migrate;
mod pg;
mod prepare;
mod restore;
mod round;
mod statements;
mod tls;

pub use dirty::DirtyDocs;
pub(crate) use error::Chain;
pub use error::CheckpointError;
pub(crate) use pg::PgConn;
pub use restore::RestoreStats;
pub(crate) use tls::PgTarget;

/// A document is not checkpointed again before this many times its last preparation time.
const HOT_FACTOR: u32 = 10;

/// Checkpoint settings.
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    /// The Postgres URL (`postgres://user@host:port/db` or key=value form), `sslmode` included.
    pub url: String,
    /// PEM file of the roots trusted to sign Postgres' certificate (`sslmode=verify-ca` or
    /// `verify-full`); the system's roots when `None`.
    pub postgres_ca: Option<PathBuf>,
    /// How often dirty documents are written.
    pub interval: Duration,
    /// Documents per transaction.
    pub batch_docs: usize,
    /// Batches written at once, each in its own transaction on its own connection (so one
    /// batch's preparation overlaps another's writes).
    pub connections: usize,
    /// Connecting gives up after this long.
    pub connect_timeout: Duration,
    /// One batch (its transaction) gives up after this long.
    pub batch_timeout: Duration,
    /// The longest wait between retries while Postgres is failing.
    pub max_backoff: Duration,
    /// How long shutdown keeps trying to write the final checkpoint.
    pub shutdown_deadline: Duration,
    /// The kinds whose documents get a `weft_records` row: the declared ones (the same
    /// `Kinds` the hub enforces).
    pub kinds: Arc<Kinds>,
}

impl CheckpointConfig {
    /// Defaults for `url` every `interval`.
    pub fn new(url: impl Into<String>, interval: Duration) -> Self {
        CheckpointConfig {
            url: url.into(),
            postgres_ca: None,
            interval,
            batch_docs: 64,
            connections: 2,
            connect_timeout: Duration::from_secs(10),
            batch_timeout: Duration::from_secs(120),
            max_backoff: Duration::from_secs(30),
            shutdown_deadline: Duration::from_secs(60),
            kinds: Arc::new(Kinds::builtin()),
        }
    }
}

/// What one round wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundStats {
    /// Documents written.
    pub documents: u64,
    /// Content bytes written.
    pub bytes: u64,
    /// Documents whose stored version had changes the relay lacked (merged).
    pub merged: u64,
    /// Documents written as deleted: their content and message rows removed.
    pub deleted: u64,
}

/// The checkpointer task. Build it with [`Checkpointer::start`] before the hub runs (it
/// migrates and restores), then [`Checkpointer::run`] it.
pub struct Checkpointer {
    cfg: CheckpointConfig,
    /// The parsed URL and its TLS connector.
    target: PgTarget,
    group: Arc<GroupCommit>,
    dirty: Arc<DirtyDocs>,
    metrics: Arc<Metrics>,
    /// Open connections (at most `CheckpointConfig::connections`); the first one also
    /// vacuums.
    conns: Vec<PgConn>,
    /// Whether this relay applied (or found) the current migrations.
    migrated: bool,
    /// Hot documents' earliest next checkpoint.
    not_before: HashMap<DocId, Instant>,
    failures: u32,
}

impl Checkpointer {
    /// Connects, applies missing migrations and restores every checkpointed document the
    /// relay's store lacks.
    ///
    /// If Postgres is unreachable: a relay whose store holds documents starts anyway (it keeps
    /// serving them; migrations and checkpoints follow when Postgres returns, and documents
    /// only Postgres has are not restored). A relay whose store is empty waits, retrying with
    /// backoff, since serving before the restore would make every checkpointed document
    /// claimable. A bad URL, `sslmode` or CA file, or a newer schema, fails at once.
    pub async fn start(
        cfg: CheckpointConfig,
        group: Arc<GroupCommit>,
        dirty: Arc<DirtyDocs>,
        metrics: Arc<Metrics>,
    ) -> Result<(Checkpointer, RestoreStats), CheckpointError> {
        let target = PgTarget::new(&cfg.url, cfg.postgres_ca.as_deref())?;
        tracing::info!(sslmode = ?target.mode, "connecting to Postgres");
        let mut cp = Checkpointer {
            cfg,
            target,
            group,
            dirty,
            metrics,
            conns: Vec::new(),
            migrated: false,
            not_before: HashMap::new(),
            failures: 0,
        };
        loop {
            match cp.setup().await {
                Ok(stats) => {
                    cp.failures = 0;
                    return Ok((cp, stats));
                }
                Err(e @ (CheckpointError::Postgres { .. } | CheckpointError::Timeout)) => {
                    cp.conns.clear();
                    let store = cp.group.store().clone();
                    let empty = blocking(move || {
                        store
                            .scan_keys(weft_core::store::Table::DOC_META, &[])
                            .map(|k| k.is_empty())
                    })
                    .await?
                    .map_err(|source| CheckpointError::StoreWrite { source })?;
                    if !empty {
                        tracing::warn!(error = %Chain(&e), "Postgres is unreachable: serving from the relay's store; migrations and checkpoints follow when it returns");
                        Metrics::inc(&cp.metrics.checkpoint_failures);
                        return Ok((cp, RestoreStats::default()));
                    }
                    cp.failures = cp.failures.saturating_add(1);
                    tracing::warn!(error = %Chain(&e), retry_in = ?cp.backoff(), "Postgres is unreachable and the relay's store is empty: waiting for it, to restore from it");
                    tokio::time::sleep(cp.backoff()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn setup(&mut self) -> Result<RestoreStats, CheckpointError> {
        let mut conn = PgConn::connect(&self.target, self.cfg.connect_timeout).await?;
        self.migrate(&mut conn).await?;
        let stats = restore::restore(&mut conn, &self.group).await?;
        self.conns = vec![conn];
        Ok(stats)
    }

    async fn migrate(&mut self, conn: &mut PgConn) -> Result<(), CheckpointError> {
        let applied = conn.migrate().await?;
        if !applied.is_empty() {
            tracing::info!(?applied, "applied Postgres migrations");
        }
        self.migrated = true;
        Ok(())
    }

    /// Checkpoints every interval until `stop` resolves, then writes a final checkpoint of
    /// every dirty document (retrying until `shutdown_deadline`). Cancel safety: dropping the
    /// future loses no change (it stays in redb and is re-marked only by later changes), but
    /// an interrupted round's documents are not checkpointed until they change again.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut gauges = tokio::time::interval(Duration::from_secs(1));
        gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next = tokio::time::Instant::now() + self.cfg.interval;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = gauges.tick() => self.update_gauges(),
                _ = tokio::time::sleep_until(next) => {
                    let wait = match self.round(false).await {
                        Ok(_) => self.cfg.interval,
                        Err(_) => self.backoff(),
                    };
                    next = tokio::time::Instant::now() + wait;
                }
            }
        }
        let deadline = Instant::now() + self.cfg.shutdown_deadline;
        loop {
            match self.round(true).await {
                Ok(stats) => {
                    tracing::info!(documents = stats.documents, "final checkpoint written");
                    // Done, or only documents that cannot be read are left (they were
                    // logged): retrying them now would not help.
                    if self.dirty.is_empty() || stats.documents == 0 {
                        break;
                    }
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(self.backoff().min(deadline - Instant::now())).await;
                }
                Err(e) => {
                    tracing::error!(
                        error = %Chain(&e),
                        dirty = self.dirty.len(),
                        "giving up on the final checkpoint; the changes stay in the relay's store"
                    );
                    break;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        self.update_gauges();
    }

    fn backoff(&self) -> Duration {
        let base = Duration::from_millis(250);
        let exp = base.saturating_mul(1u32 << self.failures.min(16));
        exp.min(self.cfg.max_backoff)
    }

    fn update_gauges(&self) {
        let lag = self
            .dirty
            .oldest()
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        self.metrics
            .checkpoint_lag_ms
            .store((lag * 1000.0) as u64, Ordering::Relaxed);
        self.metrics
            .checkpoint_dirty
            .store(self.dirty.len() as u64, Ordering::Relaxed);
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CheckpointError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| CheckpointError::TaskFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let metrics = Arc::new(Metrics::default());
        let kv: Arc<dyn weft_core::store::KvStore> = Arc::new(weft_core::store::MemStore::new());
        let group = Arc::new(GroupCommit::new(kv).unwrap());
        let cfg = CheckpointConfig::new("postgres://localhost", Duration::from_secs(5));
        let mut cp = Checkpointer {
            target: PgTarget::new(&cfg.url, None).unwrap(),
            cfg,
            group,
            dirty: DirtyDocs::new(),
            metrics,
            conns: Vec::new(),
            migrated: false,
            not_before: HashMap::new(),
            failures: 0,
        };
        assert_eq!(cp.backoff(), Duration::from_millis(250));
        cp.failures = 3;
        assert_eq!(cp.backoff(), Duration::from_secs(2));
        cp.failures = 40;
        assert_eq!(cp.backoff(), Duration::from_secs(30));
    }
}
