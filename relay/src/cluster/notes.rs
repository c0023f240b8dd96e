//! The log's notifications. An append notifies `weft_changes` once per entry, in `seq` order,
//! at its commit; an entry whose body and bindings are small travels in its notification, so a
//! follower whose position is just before it applies it without reading the log. A larger one
//! is announced by its `seq` alone, and the follower reads it. Payloads are text (Postgres
//! limits them to 8,000 bytes): `e SEQ RELAY DOC KIND BODY RECORDS` with the bytes in base64
//! (`-`: no records), or `s SEQ`. Anything else (a relay of an earlier version notified its
//! name) only says the log grew. A relay's own entries coming back are set aside without
//! waking the follower (see `OWN_WAKE`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Entries this relay appended wait in [`Notes::own`] (a wake-up, sent once enough have
    /// gathered; see `OWN_WAKE`).
    Own,
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
            Note::Grew | Note::Own => None,
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

/// This relay's own entries kept for the follower at most (past it, the follower reads the
/// log).
const OWN_MAX: usize = 4_096;

/// Own entries gathered before the follower is woken for them. The follower only checks, a
/// second later, that the store holds them (`follow.rs`), so there is no hurry: waking it for
/// each cost the accepting relay about 12 us per change. Notes of other relays wake it anyway,
/// and it takes every own entry waiting then, so the log's order is kept.
const OWN_WAKE: usize = 256;

/// The log's notifications as they come, and whether one did not fit in the queue.
pub(super) struct Notes {
    pub(super) rx: mpsc::Receiver<Note>,
    missed: Arc<AtomicBool>,
    /// Entries this relay appended, in `seq` order, set aside without waking the follower.
    own: Arc<Mutex<Vec<Carried>>>,
}

/// Who listens: where the log is, where bus messages go, and who this process is on the bus.
pub(super) struct Listener {
    pub(super) target: PgTarget,
    pub(super) hub: mpsc::Sender<HubEvent>,
    /// This process on the bus (its own messages are not heard).
    pub(super) speaker: String,
    /// This relay's name in the log (its own entries are set aside, see [`Notes::own`]).
    pub(super) relay: String,
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
    let relay = l.relay.clone();
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
    let own = Arc::new(Mutex::new(Vec::new()));
    let own_io = own.clone();
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
                    let note = match decode(n.payload()) {
                        Note::Entry(c) if c.relay == relay => match set_aside(&own_io, *c) {
                            Aside::Kept => continue,
                            Aside::Wake => Note::Own,
                            Aside::Full => {
                                missed_io.store(true, Ordering::Relaxed);
                                continue;
                            }
                        },
                        note => note,
                    };
                    if tx.try_send(note).is_err() {
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
    Ok((client, Notes { rx, missed, own }, io))
}

/// What became of an own entry set aside.
enum Aside {
    Kept,
    /// Kept, and enough wait now: wake the follower.
    Wake,
    /// Not kept (the follower reads the log).
    Full,
}

fn set_aside(own: &Mutex<Vec<Carried>>, entry: Carried) -> Aside {
    // Held only to push or to take the whole vector: never across an await.
    let mut own = own.lock().unwrap_or_else(|e| e.into_inner());
    if own.len() >= OWN_MAX {
        return Aside::Full;
    }
    own.push(entry);
    if own.len() == OWN_WAKE {
        Aside::Wake
    } else {
        Aside::Kept
    }
}

/// Takes `first` and the notes queued after it, with the own entries set aside, into
/// `carried` while they carry the entries right after `cursor`, one after another. `false`
/// when the log must be read instead (a gap, an entry too large to carry, a note that did not
/// fit the queue): `carried` is then empty.
pub(super) fn take_notes(
    first: Note,
    notes: &mut Notes,
    cursor: i64,
    carried: &mut Vec<Carried>,
) -> bool {
    let mut next = cursor + 1;
    let mut whole = true;
    // Own entries were set aside before any later note was queued: those a note below needs
    // are here (one set aside after this is taken at the next wake-up, or read from the log).
    let own = std::mem::take(&mut *notes.own.lock().unwrap_or_else(|e| e.into_inner()));
    let mut own = own.into_iter().peekable();
    let mut note = Some(first);
    loop {
        while let Some(o) = own.next_if(|o| o.seq <= next) {
            if o.seq == next {
                next += 1;
                carried.push(o);
            }
        }
        let Some(n) = note else { break };
        match n {
            Note::Entry(c) if c.seq == next => {
                next += 1;
                carried.push(*c);
            }
            Note::Own => {}
            // Applied already (read from the log after it was committed).
            n if n.seq().is_some_and(|seq| seq < next) => {}
            _ => whole = false,
        }
        if carried.len() as i64 >= READ_BATCH {
            break;
        }
        note = notes.rx.try_recv().ok();
    }
    let rest: Vec<Carried> = own.collect();
    if !rest.is_empty() {
        if carried.len() as i64 >= READ_BATCH {
            // Taken at the next pass, before any set aside since.
            let mut kept = notes.own.lock().unwrap_or_else(|e| e.into_inner());
            kept.splice(0..0, rest);
        } else {
            // An own entry after a gap: the entry between is read from the log.
            whole = false;
        }
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
            own: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn own(seq: i64) -> Carried {
        Carried {
            seq,
            relay: "me".into(),
            doc: "d".into(),
            kind: 1,
            body: vec![2],
            records: None,
        }
    }

    #[test]
    fn own_entries_set_aside_are_taken_in_seq_order_with_the_others() {
        let seqs = |c: &[Carried]| c.iter().map(|c| c.seq).collect::<Vec<_>>();
        let mut carried = Vec::new();
        // Others' 12 and 14 around own 11, 13 and 15: one run, in order.
        let mut q = queue(vec![entry(14)]);
        for seq in [11, 13, 15] {
            assert!(matches!(set_aside(&q.own, own(seq)), Aside::Kept));
        }
        assert!(take_notes(entry(12), &mut q, 10, &mut carried));
        assert_eq!(seqs(&carried), [11, 12, 13, 14, 15]);
        assert!(q.own.lock().unwrap().is_empty());
        carried.clear();
        // Woken for own entries alone; one applied already is skipped.
        let mut q = queue(vec![]);
        for seq in [10, 11, 12] {
            set_aside(&q.own, own(seq));
        }
        assert!(take_notes(Note::Own, &mut q, 10, &mut carried));
        assert_eq!(seqs(&carried), [11, 12]);
        carried.clear();
        // An own entry after a gap (13 missing): read the log.
        let mut q = queue(vec![]);
        for seq in [11, 12, 14] {
            set_aside(&q.own, own(seq));
        }
        assert!(!take_notes(Note::Own, &mut q, 10, &mut carried));
        assert!(carried.is_empty());
        // Set aside up to a bound, waking the follower once enough wait.
        let q = queue(vec![]);
        let wakes = (0..OWN_MAX as i64 + 5)
            .map(|seq| set_aside(&q.own, own(seq)))
            .fold((0, 0), |(w, f), a| match a {
                Aside::Kept => (w, f),
                Aside::Wake => (w + 1, f),
                Aside::Full => (w, f + 1),
            });
        assert_eq!(wakes, (1, 5));
        assert_eq!(q.own.lock().unwrap().len(), OWN_MAX);
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
