//! Appending to the cluster's log: [`ClusterLog`], the hub's handle, and the task that writes
//! what it queues, a batch per transaction, trying again until Postgres takes it.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{Client, Statement};
use weft_core::store::{GroupCommit, StoreError};

use super::{
    encode_records, follow, log_error, Entry, Listening, LogTicket, KIND_CHANGES, KIND_META,
    MAX_BATCH, MAX_NAME_LEN, MAX_QUEUED,
};
use crate::checkpoint::{Chain, CheckpointError, PgConn, PgTarget};
use crate::hub::HubEvent;
use crate::metrics::Metrics;

/// How a relay joins a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The Postgres every relay of the cluster shares (also `--postgres`).
    pub postgres: String,
    /// `--postgres-ca`.
    pub postgres_ca: Option<PathBuf>,
    /// This relay's name in the log (unique in the cluster; the QUIC address by default).
    pub relay: String,
    /// Where the follower keeps the last `seq` it applied (`cluster-cursor`).
    pub data_dir: PathBuf,
    /// The WebSocket tickets (with `--ws`): redemptions are told to and by the other relays.
    pub tickets: Option<Arc<crate::ws::Tickets>>,
    /// How long the log keeps an entry every relay has read (`--cluster-log-retention`).
    pub retention: Duration,
    /// The checkpointer's dirty set: a relay that missed trimmed entries has every document
    /// checkpointed, which merges in what Postgres holds.
    pub dirty: Arc<crate::checkpoint::DirtyDocs>,
}

/// What the hub appends to (see the module docs of `cluster`).
#[derive(Clone, Debug)]
pub struct ClusterLog {
    tx: mpsc::Sender<Append>,
    bus: super::bus::Bus,
}

#[derive(Debug)]
struct Append {
    entry: Entry,
    done: oneshot::Sender<()>,
}

impl ClusterLog {
    /// Publishes a member's `Presence` or `Ephemeral` message to the other relays (best
    /// effort).
    pub(crate) fn publish(&self, msg: &weft_core::wire::Message) {
        self.bus.publish(msg);
    }

    /// Queues `entry`; the ticket completes once it is committed. Fails at once when
    /// [`MAX_QUEUED`] entries wait (Postgres slow or away) or the log stopped.
    pub(crate) fn append(&self, entry: Entry) -> Result<LogTicket, StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .try_send(Append { entry, done })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    log_error("the cluster's log is behind (Postgres slow or unreachable)")
                }
                mpsc::error::TrySendError::Closed(_) => log_error("the cluster's log stopped"),
            })?;
        Ok(LogTicket(rx))
    }
}

/// The cluster's tasks: the appender (ends once every [`ClusterLog`] is dropped, with the hub,
/// after writing what was queued) and the follower (ends on the stop signal it was given).
pub struct ClusterTasks {
    appender: tokio::task::JoinHandle<()>,
    publisher: tokio::task::JoinHandle<()>,
    follower: tokio::task::JoinHandle<()>,
}

impl ClusterTasks {
    /// Waits for the follower (told to stop already), then for the appender to write what the
    /// hub queued, at most `grace`.
    pub async fn finish(self, grace: Duration) {
        let _ = self.follower.await;
        if tokio::time::timeout(grace, self.appender).await.is_err() {
            tracing::error!("the cluster's log did not take the last changes in time");
        }
        self.publisher.abort();
    }
}

/// Starts a relay's cluster tasks over the store behind `group`; `hub` is where imported
/// entries go. `stop` turning true ends the follower (it holds a sender of `hub`, so the hub
/// ends only after it) and bounds the appender's retries. The table must exist (the
/// checkpointer's migrations run first).
pub fn start(
    cfg: ClusterConfig,
    group: Arc<GroupCommit>,
    hub: mpsc::Sender<HubEvent>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> Result<(ClusterLog, ClusterTasks), CheckpointError> {
    if cfg.relay.is_empty()
        || cfg.relay.len() > MAX_NAME_LEN
        || !cfg.relay.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(CheckpointError::Cluster {
            message: format!(
                "a relay's cluster name must be 1 to {MAX_NAME_LEN} printable ASCII characters without spaces"
            ),
        });
    }
    let target = PgTarget::new(&cfg.postgres, cfg.postgres_ca.as_deref())?;
    metrics.cluster_member.store(true, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(MAX_QUEUED);
    let listening = Listening::default();
    let appender = tokio::spawn(append_loop(
        Appender {
            target: target.clone(),
            relay: cfg.relay.clone(),
            listening: listening.clone(),
            metrics: metrics.clone(),
        },
        rx,
        stop.clone(),
    ));
    // This process on the bus: a restarted relay is a new speaker, so the others forget the
    // members it had before (see `bus.rs`).
    let speaker = format!("{}#{:016x}", cfg.relay, rand::random::<u64>());
    let (bus, publisher) = super::bus::start(target.clone(), &speaker, metrics.clone());
    if let Some(tickets) = &cfg.tickets {
        tickets.share_with(bus.clone());
    }
    let follower = tokio::spawn(follow::run(
        follow::Follower {
            listener: super::notes::Listener {
                target,
                hub,
                speaker,
                relay: cfg.relay.clone(),
                metrics: metrics.clone(),
                tickets: cfg.tickets,
            },
            relay: cfg.relay,
            listening,
            retention: cfg.retention,
            dirty: cfg.dirty,
            cursor_file: cfg.data_dir.join(follow::CURSOR_FILE),
            group,
            metrics,
        },
        Box::pin(stopped(stop)),
    ));
    Ok((
        ClusterLog { tx, bus },
        ClusterTasks {
            appender,
            publisher,
            follower,
        },
    ))
}

/// What the appender needs besides its queue.
struct Appender {
    target: PgTarget,
    relay: String,
    listening: Listening,
    metrics: Arc<Metrics>,
}

/// Writes queued entries until every sender is gone, a batch per transaction. A failed
/// transaction is tried again on a new connection (with backoff) until it commits: the hub
/// acknowledges nothing of it before, and a duplicate entry is harmless to readers. It writes
/// on the follower's connection while there is one (see [`Listening`]), else on its own.
async fn append_loop(a: Appender, mut rx: mpsc::Receiver<Append>, stop: watch::Receiver<bool>) {
    let Appender {
        target,
        relay,
        listening,
        metrics,
    } = a;
    let mut conn: Option<PgConn> = None;
    // Prepared once per connection (a statement sent as text is parsed and planned anew on
    // every append), with the follower's connection it was prepared on (`None`: its own).
    let mut stmts: Option<(Option<Arc<Client>>, Statements)> = None;
    let mut backoff = Duration::from_millis(50);
    // Once the relay is stopping, a batch Postgres does not take within STOP_GRACE is
    // dropped: its writes fail (nothing of them was acknowledged) and the hub can finish.
    let mut stopping_since: Option<Instant> = None;
    'batches: while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        let rows = Rows::of(&batch);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            if attempts > 1 && *stop.borrow() {
                let since = *stopping_since.get_or_insert_with(Instant::now);
                if since.elapsed() > STOP_GRACE {
                    tracing::error!(
                        entries = batch.len(),
                        "the relay is stopping and the cluster's log is unreachable: dropping \
                         writes that were never acknowledged"
                    );
                    continue 'batches;
                }
            }
            let shared = listening.get();
            if shared.is_some() {
                conn = None;
            } else if conn.as_ref().is_none_or(PgConn::is_closed) {
                conn = None;
                // Prepared on the connection that closed.
                stmts = None;
                match PgConn::connect(&target, Duration::from_secs(5)).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %Chain(&e), "cannot reach the cluster's log; trying again");
                        metrics.cluster_connected.store(0, Ordering::Relaxed);
                        Metrics::inc(&metrics.cluster_append_failures);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                }
            }
            let client: &Client = match (&shared, &conn) {
                (Some(s), _) => s,
                (None, Some(c)) => &c.client,
                (None, None) => continue,
            };
            let same = |(on, _): &(Option<Arc<Client>>, Statements)| match (on, &shared) {
                (Some(on), Some(s)) => Arc::ptr_eq(on, s),
                (None, None) => true,
                _ => false,
            };
            if !stmts.as_ref().is_some_and(same) {
                stmts = None;
            }
            let started = Instant::now();
            let written = match &stmts {
                Some((_, st)) => write(client, st, &relay, &rows).await,
                None => match Statements::prepare(client).await {
                    Ok(st) => {
                        let (_, st) = stmts.insert((shared.clone(), st));
                        write(client, st, &relay, &rows).await
                    }
                    Err(e) => Err(e),
                },
            };
            match written {
                Ok(()) => {
                    backoff = Duration::from_millis(50);
                    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    metrics.cluster_append_ms.store(ms, Ordering::Relaxed);
                    metrics.cluster_connected.store(1, Ordering::Relaxed);
                    Metrics::add(&metrics.cluster_appended, batch.len() as u64);
                    if shared.is_some() {
                        Metrics::add(&metrics.cluster_appended_listening, batch.len() as u64);
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), entries = batch.len(), "appending to the cluster's log failed; trying again");
                    Metrics::inc(&metrics.cluster_append_failures);
                    conn = None;
                    stmts = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        for a in batch {
            let _ = a.done.send(());
        }
    }
}

/// How long a stopping relay keeps trying to append to an unreachable log.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A batch as the insert's arrays.
struct Rows {
    docs: Vec<String>,
    kinds: Vec<i16>,
    bodies: Vec<Vec<u8>>,
    records: Vec<Option<Vec<u8>>>,
}

impl Rows {
    fn of(batch: &[Append]) -> Rows {
        let mut rows = Rows {
            docs: Vec::with_capacity(batch.len()),
            kinds: Vec::with_capacity(batch.len()),
            bodies: Vec::with_capacity(batch.len()),
            records: Vec::with_capacity(batch.len()),
        };
        for a in batch {
            match &a.entry {
                Entry::Changes {
                    doc,
                    changes,
                    records,
                } => {
                    rows.docs.push(doc.to_string());
                    rows.kinds.push(KIND_CHANGES);
                    rows.bodies.push(changes.clone());
                    rows.records.push(encode_records(records));
                }
                Entry::Meta { doc, meta } => {
                    // The relay's metadata is strings, integers and maps: it encodes.
                    let Ok(body) = rmp_serde::to_vec_named(meta) else {
                        tracing::error!(%doc, "document metadata did not encode for the cluster's log");
                        continue;
                    };
                    rows.docs.push(doc.to_string());
                    rows.kinds.push(KIND_META);
                    rows.bodies.push(body);
                    rows.records.push(None);
                }
            }
        }
        rows
    }
}

/// The appender's statement, prepared on its connection: the lock, the insert and its
/// notifications (`notes.rs`).
struct Statements {
    append: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
        let append = client.prepare(&super::notes::append_sql()).await?;
        Ok(Statements { append })
    }
}

/// Appends `rows` in one transaction, in one round trip: one statement outside any explicit
/// transaction, which Postgres commits on its own (or rolls back whole when it fails). Four
/// messages (`begin`, the lock, the insert, `commit`) cost Postgres about twice the CPU of
/// this one.
async fn write(
    client: &Client,
    st: &Statements,
    relay: &str,
    rows: &Rows,
) -> Result<(), tokio_postgres::Error> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&relay, &rows.docs, &rows.kinds, &rows.bodies, &rows.records];
    client.execute(&st.append, &params).await?;
    Ok(())
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
