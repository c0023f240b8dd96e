//! The follower: every entry other relays appended to the cluster's log, in `seq` order, written
//! into this relay's store and handed to the hub.
//!
//! It `LISTEN`s before it reads, so an append committed after a read is always announced; it
//! also reads once a second in case a notification was missed. The last `seq` applied is kept
//! in `DATA_DIR/cluster-cursor`, written after a durable commit covers what it covers (changes
//! are written lazily, without an fsync of their own): a crash in between applies some entries
//! twice, which changes nothing (chunks are content-addressed, Automerge ignores changes it
//! has).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use weft_core::store::docs as docstore;
use weft_core::store::{GroupCommit, WriteBatch};

use super::apply::{apply, flush, LiveDocs, Pending, Row, Sink};
use super::notes::{self, listen, take_notes, Listener, Notes};
use super::READ_BATCH;
use crate::checkpoint::Chain;
use crate::metrics::Metrics;

/// The cursor's file in the data directory.
pub(super) const CURSOR_FILE: &str = "cluster-cursor";

pub(super) struct Follower {
    /// Its connection's settings, and where bus messages go.
    pub(super) listener: Listener,
    pub(super) relay: String,
    /// Where the follower offers its connection to the appender.
    pub(super) listening: super::Listening,
    /// How long the log keeps what every relay has read (see `trim`).
    pub(super) retention: Duration,
    pub(super) dirty: Arc<crate::checkpoint::DirtyDocs>,
    pub(super) cursor_file: PathBuf,
    pub(super) group: Arc<GroupCommit>,
    pub(super) metrics: Arc<Metrics>,
}

/// Follows the log until told to stop (reconnecting with backoff when Postgres goes away).
pub(super) async fn run(f: Follower, mut stop: Pin<Box<dyn Future<Output = ()> + Send>>) {
    let mut cursor = read_cursor(&f.cursor_file);
    // The last entry appended before this process could append any (read once).
    let mut earlier: Option<i64> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = tokio::select! {
            c = listen(&f.listener) => c,
            () = &mut stop => {
                tracing::info!("the cluster's follower stopped");
                return;
            }
        };
        let (client, mut notes, io) = match connected {
            Ok(c) => c,
            Err(e) => {
                f.metrics.cluster_connected.store(0, Ordering::Relaxed);
                tracing::warn!(error = %e, "the cluster's follower cannot reach Postgres; trying again");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut stop => {
                        tracing::info!("the cluster's follower stopped");
                        return;
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        f.metrics.cluster_connected.store(1, Ordering::Relaxed);
        let client = Arc::new(client);
        f.listening.set(Some(client.clone()));
        let mut resume = cursor;
        let ended = match earlier_processes(&client, &mut earlier).await {
            Ok(earlier) => {
                let pos = (&mut cursor, &mut resume);
                follow(&f, &mut stop, &client, &mut notes, pos, earlier).await
            }
            Err(e) => Err(e),
        };
        f.listening.set(None);
        io.abort();
        f.metrics.cluster_connected.store(0, Ordering::Relaxed);
        match ended {
            Ok(()) => {
                tracing::info!("the cluster's follower stopped");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the cluster's follower lost Postgres; reconnecting");
                // Before the first entry of its own not yet looked at, after every other entry
                // applied: an entry of another relay is never applied twice by one process (a
                // metadata entry applied again, older than what followed it, would take access
                // away from live members until the newer one came again).
                cursor = resume;
            }
        }
    }
}

/// How often the follower saves its position at most.
const CURSOR_SAVE_EVERY: Duration = Duration::from_secs(1);

/// How long the follower leaves an entry this process appended before it looks whether the
/// store holds it: the relay writes it to its store right after the append commits, and
/// looking at once would find it missing (and write it twice) whenever the follower is
/// quicker. Entries of this relay's earlier processes are looked at in order, at once: a
/// process killed between its append and its store write left one missing, and the other
/// relays' entries after it may depend on it (applied first, they would wait in the document
/// for a dependency that comes a second later, and be sent to no one).
const OWN_ENTRY_GRACE: Duration = Duration::from_secs(1);

/// The log's last `seq` when this process first read it: its own entries up to there were
/// appended by earlier processes of this relay. Read on the first connection only. An entry
/// this process appended before that read is taken for an earlier one's, and at worst written
/// to the store twice (harmless).
async fn earlier_processes(client: &Client, earlier: &mut Option<i64>) -> Result<i64, String> {
    if let Some(e) = *earlier {
        return Ok(e);
    }
    let last: i64 = client
        .query_one("select coalesce(max(seq), 0) from weft_changes", &[])
        .await
        .map_err(|e| Chain(&e).to_string())?
        .get(0);
    *earlier = Some(last);
    Ok(last)
}

/// Reads and applies until stopped (`Ok`) or the connection fails. The cursor saved (and
/// `resume`, where a new connection starts) is never past an entry of its own not yet looked
/// at, so a relay killed meanwhile looks at it again. The file is written at most once a
/// second (a rename flushes the file system's journal): after a crash, up to a second of
/// entries is read and applied again, in order.
async fn follow(
    f: &Follower,
    stop: &mut Pin<Box<dyn Future<Output = ()> + Send>>,
    client: &Client,
    notes: &mut Notes,
    (cursor, resume): (&mut i64, &mut i64),
    earlier: i64,
) -> Result<(), String> {
    let mut own: std::collections::VecDeque<(Instant, i64, Row)> = Default::default();
    let mut saved = *cursor;
    let mut saved_at = Instant::now();
    check_gap(f, client, *cursor).await?;
    let trim_every = (f.retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut next_trim = Instant::now();
    let read = client
        .prepare(
            "select seq, relay, doc_id, kind, body, records, \
             (extract(epoch from (clock_timestamp() - at)) * 1000)::int8 \
             from weft_changes where seq > $1 order by seq limit $2",
        )
        .await
        .map_err(|e| Chain(&e).to_string())?;
    // Entries carried by notifications, following the cursor without a gap: applied without
    // reading the log. Otherwise (a gap, a large entry, a note that did not fit, the timer)
    // the log is read.
    let mut carried: Vec<notes::Carried> = Vec::new();
    let mut read_log = true;
    let live = std::sync::Mutex::new(LiveDocs::default());
    loop {
        let mut full = false;
        let entries: Vec<(i64, Row, Option<i64>)> = if read_log {
            let rows = client
                .query(&read, &[&*cursor, &READ_BATCH])
                .await
                .map_err(|e| Chain(&e).to_string())?;
            full = rows.len() as i64 == READ_BATCH;
            rows.iter()
                .map(|row| {
                    let relay: &str = row.get(1);
                    let entry = Row {
                        own: relay == f.relay,
                        relay: relay.into(),
                        doc: row.get(2),
                        kind: row.get(3),
                        body: row.get(4),
                        records: row.get(5),
                    };
                    (row.get(0), entry, row.get(6))
                })
                .collect()
        } else {
            // Just committed: no lag worth the name.
            carried
                .drain(..)
                .map(|c| {
                    let entry = Row {
                        own: c.relay == f.relay,
                        relay: c.relay.into(),
                        doc: c.doc,
                        kind: c.kind,
                        body: c.body,
                        records: c.records,
                    };
                    (c.seq, entry, Some(0))
                })
                .collect()
        };
        let mut pending = Pending::default();
        let sink = Sink {
            group: &f.group,
            hub: &f.listener.hub,
            metrics: &f.metrics,
            live: &live,
        };
        for (seq, entry, lag) in entries {
            if seq <= *cursor {
                continue;
            }
            if entry.own && seq > earlier {
                own.push_back((Instant::now() + OWN_ENTRY_GRACE, seq, entry));
            } else {
                if !apply(&sink, &mut pending, seq, entry).await {
                    return Ok(()); // the hub is gone: the relay is stopping
                }
                f.metrics
                    .cluster_lag_ms
                    .store(lag.unwrap_or(0).max(0) as u64, Ordering::Relaxed);
            }
            *cursor = seq;
        }
        while own.front().is_some_and(|(due, ..)| *due <= Instant::now()) {
            if let Some((_, seq, entry)) = own.pop_front() {
                if !apply(&sink, &mut pending, seq, entry).await {
                    return Ok(());
                }
            }
        }
        if !flush(&sink, &mut pending).await {
            return Ok(());
        }
        let safe = own.front().map_or(*cursor, |(_, seq, _)| seq - 1);
        *resume = safe;
        if safe != saved && saved_at.elapsed() >= CURSOR_SAVE_EVERY {
            // Entries are written lazily (`apply::flush`): the cursor moves past them only
            // once a durable commit covers them.
            match f.group.submit(WriteBatch::sync()).await {
                Ok(()) => {
                    write_cursor(&f.cursor_file, safe);
                    saved = safe;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot make the cluster's entries durable; the cursor stays")
                }
            }
            saved_at = Instant::now();
        }
        f.metrics
            .cluster_cursor
            .store((*cursor).max(0) as u64, Ordering::Relaxed);
        if Instant::now() >= next_trim {
            trim(f, client, saved).await?;
            next_trim = Instant::now() + trim_every;
        }
        if full {
            read_log = true;
            continue;
        }
        let wait = own
            .front()
            .map_or(Duration::from_secs(1), |(due, ..)| {
                due.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_secs(1))
            .min(next_trim.saturating_duration_since(Instant::now()));
        tokio::select! {
            n = notes.rx.recv() => match n {
                None => return Err("the connection ended".into()),
                Some(first) => read_log = !take_notes(first, notes, *cursor, &mut carried),
            },
            () = tokio::time::sleep(wait) => read_log = true,
            () = stop.as_mut() => return Ok(()),
        }
    }
}

/// Says how far this relay has read (`position`: every entry up to it is in its store), then
/// deletes the entries that every relay seen within the retention has read and that are older
/// than the retention (their accepting relays have checkpointed them, or, if one died, the
/// others did). Relays may trim at once: a delete is idempotent.
async fn trim(f: &Follower, client: &Client, position: i64) -> Result<(), String> {
    client
        .execute(
            "insert into weft_cluster_relays (relay, position, seen_at) values ($1, $2, now()) \
             on conflict (relay) do update set position = excluded.position, seen_at = excluded.seen_at",
            &[&f.relay, &position],
        )
        .await
        .map_err(|e| Chain(&e).to_string())?;
    let secs = f.retention.as_secs_f64();
    let trimmed = client
        .execute(
            "delete from weft_changes where at < now() - make_interval(secs => $1) and seq <= \
             (select min(position) from weft_cluster_relays \
              where seen_at > now() - make_interval(secs => $1))",
            &[&secs],
        )
        .await
        .map_err(|e| Chain(&e).to_string())?;
    if trimmed > 0 {
        Metrics::add(&f.metrics.cluster_trimmed, trimmed);
        tracing::debug!(trimmed, "trimmed the cluster's log");
    }
    Ok(())
}

/// A relay whose position is older than the log's first entry missed entries trimmed while it
/// was away (longer than the retention): every document it holds is checkpointed, which merges
/// in what Postgres holds (documents it lacks entirely were restored when it started).
async fn check_gap(f: &Follower, client: &Client, cursor: i64) -> Result<(), String> {
    // The first entry left, or past the last one ever appended when none is left.
    let first: Option<i64> = client
        .query_one(
            "select coalesce((select min(seq) from weft_changes), \
             (select last_value + 1 from weft_changes_seq_seq where is_called))",
            &[],
        )
        .await
        .map_err(|e| Chain(&e).to_string())?
        .get(0);
    let Some(first) = first else { return Ok(()) };
    if cursor == 0 || first <= cursor + 1 {
        return Ok(());
    }
    tracing::warn!(
        cursor,
        first,
        "the cluster's log was trimmed past this relay's position while it was away; \
         checkpointing every document to merge in what Postgres holds"
    );
    Metrics::inc(&f.metrics.cluster_gaps);
    let store = f.group.store().clone();
    let docs = tokio::task::spawn_blocking(move || docstore::list_docs(store.as_ref()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    for doc in docs {
        f.dirty.mark(doc);
    }
    Ok(())
}

fn read_cursor(path: &std::path::Path) -> i64 {
    match std::fs::read_to_string(path) {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| {
            tracing::warn!(path = %path.display(), "the cluster cursor does not parse; reading the log from its start");
            0
        }),
        Err(_) => 0,
    }
}

fn write_cursor(path: &std::path::Path, seq: i64) {
    let tmp = path.with_extension("tmp");
    let written =
        std::fs::write(&tmp, format!("{seq}\n")).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot save the cluster cursor");
    }
}
