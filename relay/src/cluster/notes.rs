//! The log's notifications. An append notifies `weft_changes` once per entry, in `seq` order,
//! at its commit; an entry whose body and bindings are small travels in its notification, so a
//! follower whose position is just before it applies it without reading the log. A larger one
//! is announced by its `seq` alone, and the follower reads it. Payloads are text (Postgres
//! limits them to 8,000 bytes): `e SEQ RELAY DOC KIND BODY RECORDS` with the bytes in base64
//! (`-`: no records), or `s SEQ`. Anything else (a relay of an earlier version notified its
//! name) only says the log grew.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client};

use super::{bus, Imported, APPEND_LOCK, READ_BATCH};
use crate::checkpoint::{Chain, PgTarget};
use crate::hub::HubEvent;
use crate::metrics::Metrics;

/// The channel appends notify.
pub(super) const CHANNEL: &str = "weft_changes";

/// Entries whose body and bindings together are at most this many bytes travel in their
/// notification (4/3 of it in base64, with room for the rest under Postgres' 8,000).
const MAX_CARRIED: usize = 5_000;

/// The appender's statement: the batch inserted in order under the append lock, and a
/// notification per entry, in one statement (so one implicit transaction: the lock is held
/// until it commits, and a failure rolls all of it back). Taking the lock in a CTE the insert
/// reads orders it before any `seq` is drawn. Parameters: relay, documents, kinds, bodies,
/// bindings (arrays of the batch).
pub(super) fn append_sql() -> String {
    format!(
        "with lock as (select pg_advisory_xact_lock({APPEND_LOCK})), \
         ins as (\
           insert into weft_changes (relay, doc_id, kind, body, records) \
           select $1, d, k, b, r \
           from lock, unnest($2::text[], $3::int2[], $4::bytea[], $5::bytea[]) with ordinality as t(d, k, b, r, n) \
           order by n \
           returning seq, relay, doc_id, kind, body, records) \
         select pg_notify('{CHANNEL}', \
           case when octet_length(body) + coalesce(octet_length(records), 0) <= {MAX_CARRIED} \
           then 'e ' || seq || ' ' || relay || ' ' || doc_id || ' ' || kind || ' ' \
                || translate(encode(body, 'base64'), E'\\n', '') || ' ' \
                || coalesce(translate(encode(records, 'base64'), E'\\n', ''), '-') \
           else 's ' || seq end) \
         from ins order by seq"
    )
}

/// What one notification says.
#[derive(Debug, PartialEq)]
pub(super) enum Note {
    /// The log grew (read it).
    Grew,
    /// The entry at `seq` exists (read it: too large to carry).
    At(i64),
    /// The entry itself.
    Entry(Box<Carried>),
}

/// An entry carried by its notification.
#[derive(Debug, PartialEq)]
pub(super) struct Carried {
    pub(super) seq: i64,
    pub(super) relay: String,
    pub(super) doc: String,
    pub(super) kind: i16,
    pub(super) body: Vec<u8>,
    pub(super) records: Option<Vec<u8>>,
}

impl Note {
    /// The `seq` the note names, if any.
    pub(super) fn seq(&self) -> Option<i64> {
        match self {
            Note::Grew => None,
            Note::At(seq) => Some(*seq),
            Note::Entry(e) => Some(e.seq),
        }
    }
}

/// Reads a payload; one that does not parse only says the log grew.
pub(super) fn decode(payload: &str) -> Note {
    if let Some(seq) = payload.strip_prefix("s ") {
        return seq.parse().map_or(Note::Grew, Note::At);
    }
    let Some(rest) = payload.strip_prefix("e ") else {
        return Note::Grew;
    };
    carried(rest).map_or(Note::Grew, |c| Note::Entry(Box::new(c)))
}

fn carried(rest: &str) -> Option<Carried> {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let mut it = rest.split(' ');
    let seq = it.next()?.parse().ok()?;
    let relay = it.next()?.to_string();
    let doc = it.next()?.to_string();
    let kind = it.next()?.parse().ok()?;
    let body = b64.decode(it.next()?).ok()?;
    let records = match it.next()? {
        "-" => None,
        r => Some(b64.decode(r).ok()?),
    };
    if it.next().is_some() {
        return None;
    }
    Some(Carried {
        seq,
        relay,
        doc,
        kind,
        body,
        records,
    })
}

// The follower's side: notes as they come, and gathering the entries they carry.

/// Notes queued for the follower at most (past it, the follower reads the log).
const NOTES_QUEUE: usize = 1_024;

/// The log's notifications as they come, and whether one did not fit in the queue.
pub(super) struct Notes {
    pub(super) rx: mpsc::Receiver<Note>,
    missed: Arc<AtomicBool>,
}

/// Who listens: where the log is, where bus messages go, and who this process is on the bus.
pub(super) struct Listener {
    pub(super) target: PgTarget,
    pub(super) hub: mpsc::Sender<HubEvent>,
    /// This process on the bus (its own messages are not heard).
    pub(super) speaker: String,
    pub(super) metrics: Arc<Metrics>,
    pub(super) tickets: Option<Arc<crate::ws::Tickets>>,
}

/// A connection that listens on the log's channel and the bus, the notes' receiver, and its
/// IO task.
pub(super) async fn listen(
    l: &Listener,
) -> Result<(Client, Notes, tokio::task::JoinHandle<()>), String> {
    let target = &l.target;
    let (hub, me, metrics) = (l.hub.clone(), l.speaker.clone(), l.metrics.clone());
    let tickets = l.tickets.clone();
    let mut config = target.config.clone();
    config.connect_timeout(Duration::from_secs(5));
    if config.get_application_name().is_none() {
        config.application_name("weft-relay cluster");
    }
    let (client, mut connection) = config
        .connect(target.tls.clone())
        .await
        .map_err(|e| Chain(&e).to_string())?;
    let (tx, rx) = mpsc::channel(NOTES_QUEUE);
    let missed = Arc::new(AtomicBool::new(false));
    let missed_io = missed.clone();
    let io = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) if n.channel() == bus::CHANNEL => {
                    // Best effort, like the messages themselves: never wait for the hub here.
                    let imported = match bus::decode(n.payload(), &me) {
                        None => continue,
                        Some((from, bus::Heard::Message(msg))) => {
                            bus::received(&metrics);
                            Imported::Ephemeral { from, msg }
                        }
                        Some((from, bus::Heard::Alive)) => Imported::Alive { from },
                        Some((_, bus::Heard::TicketUsed { id, until })) => {
                            if let Some(t) = &tickets {
                                t.used_elsewhere(id, until);
                                Metrics::inc(&metrics.cluster_tickets_heard);
                            }
                            continue;
                        }
                    };
                    let _ = hub.try_send(HubEvent::Cluster(imported));
                }
                Ok(AsyncMessage::Notification(n)) if n.channel() == CHANNEL => {
                    // Never waits: a note that does not fit makes the follower read the log.
                    if tx.try_send(decode(n.payload())).is_err() {
                        missed_io.store(true, Ordering::Relaxed);
                    }
                }
                Ok(AsyncMessage::Notification(_)) => {}
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "the cluster's follower connection ended");
                    break;
                }
            }
        }
    });
    client
        .batch_execute(&format!("listen {}; listen {}", CHANNEL, bus::CHANNEL))
        .await
        .map_err(|e| Chain(&e).to_string())?;
    Ok((client, Notes { rx, missed }, io))
}

/// Takes `first` and the notes queued after it into `carried` while they carry the entries
/// right after `cursor`, one after another. `false` when the log must be read instead (a gap,
/// an entry too large to carry, a note that did not fit the queue): `carried` is then empty.
pub(super) fn take_notes(
    first: Note,
    notes: &mut Notes,
    cursor: i64,
    carried: &mut Vec<Carried>,
) -> bool {
    let mut next = cursor + 1;
    let mut whole = true;
    let mut note = Some(first);
    while let Some(n) = note {
        match n {
            Note::Entry(c) if c.seq == next => {
                next += 1;
                carried.push(*c);
            }
            // Applied already (read from the log after it was committed).
            n if n.seq().is_some_and(|seq| seq < next) => {}
            _ => whole = false,
        }
        if carried.len() as i64 >= READ_BATCH {
            break;
        }
        note = notes.rx.try_recv().ok();
    }
    if notes.missed.swap(false, Ordering::Relaxed) {
        whole = false;
    }
    if !whole {
        carried.clear();
    }
    whole
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_decode_and_anything_else_says_the_log_grew() {
        let note = decode("e 42 relay-a 1gFDmAe 1 AAEC -");
        assert_eq!(
            note,
            Note::Entry(Box::new(Carried {
                seq: 42,
                relay: "relay-a".into(),
                doc: "1gFDmAe".into(),
                kind: 1,
                body: vec![0, 1, 2],
                records: None,
            }))
        );
        assert_eq!(note.seq(), Some(42));
        match decode("e 7 a d 2 AA== AQ==") {
            Note::Entry(c) => assert_eq!(c.records, Some(vec![1])),
            other => panic!("{other:?}"),
        }
        assert_eq!(decode("s 9"), Note::At(9));
        // A relay of an earlier version notified its name; broken payloads likewise.
        for p in [
            "relay-a",
            "",
            "s x",
            "e 1 a d 1 !!! -",
            "e 1 a d 1 AA== - extra",
            "e 1 a",
        ] {
            assert_eq!(decode(p), Note::Grew, "{p:?}");
        }
    }

    fn entry(seq: i64) -> Note {
        Note::Entry(Box::new(Carried {
            seq,
            relay: "a".into(),
            doc: "d".into(),
            kind: 1,
            body: vec![1],
            records: None,
        }))
    }

    fn queue(notes: Vec<Note>) -> Notes {
        let (tx, rx) = mpsc::channel(16);
        for n in notes {
            tx.try_send(n).unwrap();
        }
        Notes {
            rx,
            missed: Arc::new(AtomicBool::new(false)),
        }
    }

    #[test]
    fn carried_entries_are_taken_only_when_they_follow_the_cursor_without_a_gap() {
        let seqs = |c: &[Carried]| c.iter().map(|c| c.seq).collect::<Vec<_>>();
        let mut carried = Vec::new();
        // Right after the cursor, one after another (an entry read already is skipped).
        let mut q = queue(vec![entry(11), entry(12)]);
        assert!(take_notes(entry(10), &mut q, 10, &mut carried));
        assert_eq!(seqs(&carried), [11, 12]);
        carried.clear();
        // A gap, a large entry, a bare wake-up: read the log, nothing kept, the queue drained.
        for (first, rest) in [
            (entry(12), vec![]),
            (entry(11), vec![entry(13)]),
            (Note::At(11), vec![]),
            (entry(11), vec![Note::Grew]),
        ] {
            let mut q = queue(rest);
            assert!(!take_notes(first, &mut q, 10, &mut carried));
            assert!(carried.is_empty());
            assert!(q.rx.try_recv().is_err());
        }
        // A note that did not fit the queue.
        let mut q = queue(vec![]);
        q.missed.store(true, Ordering::Relaxed);
        assert!(!take_notes(entry(11), &mut q, 10, &mut carried));
        assert!(!q.missed.load(Ordering::Relaxed));
    }
}
