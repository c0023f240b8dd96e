//! A document sent whole to a peer that holds none of it: made once, sent once per peer,
//! taken whole by a device, and followed by what the sender accepted meanwhile.

use super::*;
use automerge::ReadDoc;

/// A chunk's type byte (after magic and checksum): 0 is a document, 1 a change.
fn chunk_kinds(bytes: &[u8]) -> Vec<u8> {
    crate::check::split_chunks(bytes)
        .unwrap()
        .iter()
        .map(|s| s.kind)
        .collect()
}

/// Whether a sync message carries a document chunk.
fn carries_document(msg: &Message) -> bool {
    let Message::Sync { data, .. } = msg else {
        return false;
    };
    let m = sync::Message::decode(data).unwrap();
    let found = m.changes.iter().any(|c| chunk_kinds(c).contains(&0));
    found
}

/// Drains `e`, completing its writes at once; returns its sends and the kinds of the chunks
/// it stored.
fn drain_writes(e: &mut Engine, stored: &mut Vec<u8>) -> Vec<Message> {
    let mut sends = Vec::new();
    loop {
        let mut persisted = Vec::new();
        while let Some(o) = e.poll_output() {
            match o {
                Output::Send { msg, .. } => sends.push(msg),
                Output::Persist { id, write, .. } => {
                    if let Write::Changes(bytes) = &write {
                        if !bytes.is_empty() {
                            stored.extend(chunk_kinds(bytes));
                        }
                    }
                    persisted.push(id);
                }
                Output::MakeWhole(job) => e.whole_made(job.run()),
                _ => {}
            }
        }
        if persisted.is_empty() {
            return sends;
        }
        for id in persisted {
            e.persisted(id);
        }
    }
}

#[test]
fn a_new_device_gets_the_document_as_one_snapshot_then_what_arrived_meanwhile() {
    let mut relay = Engine::new(EngineConfig::relay());
    relay.create(DOC, doc_with_actor(2));
    for i in 0..200 {
        write(&mut relay, &format!("message {i}"));
    }
    drain(&mut relay);

    // A new device, holding nothing, opens the document with the relay.
    let mut device = Engine::new(EngineConfig::device());
    device.open(ConnId(1), DOC, OpenOptions::default());
    assert!(matches!(
        device.poll_output(),
        Some(Output::Load { doc: DOC })
    ));
    device.loaded(DOC, None);
    relay.open(ConnId(2), DOC, OpenOptions::default());

    let (mut device_stored, mut relay_stored) = (Vec::new(), Vec::new());
    let mut documents_sent = 0;
    let mut late_written = false;
    for _ in 0..100 {
        let to_relay = drain_writes(&mut device, &mut device_stored);
        let to_device = drain_writes(&mut relay, &mut relay_stored);
        if to_relay.is_empty() && to_device.is_empty() {
            break;
        }
        for m in to_relay {
            relay.handle(ConnId(2), m).unwrap();
        }
        for m in to_device {
            if carries_document(&m) {
                documents_sent += 1;
                if !late_written {
                    // A change the relay takes while the snapshot is on its way.
                    write(&mut relay, "late");
                    late_written = true;
                }
            }
            device.handle(ConnId(1), m).unwrap();
        }
    }
    assert!(late_written, "the relay never sent the document whole");
    assert_eq!(
        documents_sent, 1,
        "the document was sent whole more than once"
    );
    assert_eq!(device.heads(DOC), relay.heads(DOC));
    assert!(device.is_synced(ConnId(1), DOC) && relay.is_synced(ConnId(2), DOC));
    let late = device
        .read(DOC, |d| d.automerge().get(ROOT, "late").unwrap().is_some())
        .unwrap();
    assert!(late, "the change made meanwhile did not reach the device");
    // The device stored the snapshot as it came, then the one change made meanwhile.
    assert_eq!(device_stored, vec![0, 1]);
}

#[test]
fn a_device_holding_changes_takes_a_snapshot_change_by_change() {
    let mut relay = Engine::new(EngineConfig::relay());
    relay.create(DOC, doc_with_actor(2));
    for i in 0..50 {
        write(&mut relay, &format!("message {i}"));
    }
    drain(&mut relay);
    let mut whole = relay.read(DOC, |d| d.save()).unwrap();
    // The device holds a change of its own: the snapshot cannot become its document.
    let mut device = Engine::new(EngineConfig::device());
    device.create(DOC, doc_with_actor(1));
    write(&mut device, "mine");
    drain(&mut device);
    device.open(ConnId(1), DOC, OpenOptions::default());
    drain(&mut device);
    let from = automerge::Automerge::load(&whole).unwrap();
    device
        .handle(
            ConnId(1),
            sync_with_chunks(&from, vec![std::mem::take(&mut whole)]),
        )
        .unwrap();
    drain(&mut device);
    let (mine, theirs) = device
        .read(DOC, |d| {
            let am = d.automerge();
            (
                am.get(ROOT, "mine").unwrap().is_some(),
                am.get(ROOT, "message 49").unwrap().is_some(),
            )
        })
        .unwrap();
    assert!(mine && theirs, "both sides' changes are in the document");
}

#[test]
fn devices_joining_at_the_same_heads_share_one_snapshot_buffer() {
    let mut relay = Engine::new(EngineConfig::relay());
    relay.create(DOC, doc_with_actor(2));
    for i in 0..100 {
        write(&mut relay, &format!("message {i}"));
    }
    drain(&mut relay);
    let mut devices = Vec::new();
    for conn in 1..=3 {
        let mut device = Engine::new(EngineConfig::device());
        device.open(ConnId(1), DOC, OpenOptions::default());
        assert!(matches!(
            device.poll_output(),
            Some(Output::Load { doc: DOC })
        ));
        device.loaded(DOC, None);
        relay.open(ConnId(conn), DOC, OpenOptions::default());
        devices.push((ConnId(conn), device));
    }
    drain(&mut relay);
    // Each device's first message says it holds nothing: the relay answers with the document.
    for (conn, device) in &mut devices {
        for m in drain(device) {
            relay.handle(*conn, m.1).unwrap();
        }
    }
    let snapshots: Vec<(ConnId, Message)> = drain(&mut relay)
        .into_iter()
        .filter(|(_, m)| carries_document(m))
        .collect();
    let conns: Vec<ConnId> = snapshots.iter().map(|(c, _)| *c).collect();
    assert_eq!(conns, vec![ConnId(1), ConnId(2), ConnId(3)]);
    let buffers: Vec<(*const u8, usize)> = snapshots
        .iter()
        .filter_map(|(_, m)| match m {
            Message::Sync { data, .. } => Some((data.as_ptr(), data.len())),
            _ => None,
        })
        .collect();
    assert!(
        buffers.windows(2).all(|w| w[0] == w[1]),
        "each device got its own copy of the snapshot: {buffers:?}"
    );
    // And each takes it: all synced at the relay's heads.
    for (conn, mut device) in devices {
        let sent: Vec<Message> = snapshots
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, m)| m.clone())
            .collect();
        for m in sent {
            device.handle(ConnId(1), m).unwrap();
        }
        drain(&mut device);
        assert_eq!(device.heads(DOC), relay.heads(DOC));
    }
}

/// Text that does not compress: a snapshot of it is about as large as the text.
fn noise(len: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// A device holding nothing joins `DOC` on `relay` and syncs until both are quiet.
fn join_empty(relay: &mut Engine, conn: u64) {
    let mut device = Engine::new(EngineConfig::device());
    device.open(ConnId(1), DOC, OpenOptions::default());
    while device.poll_output().is_some() {}
    device.loaded(DOC, None);
    relay.open(ConnId(conn), DOC, OpenOptions::default());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        let to_relay = drain_writes(&mut device, &mut a);
        let to_device = drain_writes(relay, &mut b);
        if to_relay.is_empty() && to_device.is_empty() {
            return;
        }
        for m in to_relay {
            relay.handle(ConnId(conn), m).unwrap();
        }
        for m in to_device {
            device.handle(ConnId(1), m).unwrap();
        }
    }
    panic!("device and relay never went quiet");
}

fn keeps_whole(relay: &Engine) -> bool {
    matches!(relay.docs.get(&DOC), Some(Slot::Ready(ds)) if ds.whole.is_some())
}

/// Once every peer is live the whole-document message is dropped, unless it is large: then the
/// next newcomer at the same heads is sent it without another `save()`.
#[test]
fn a_large_documents_whole_message_outlives_its_joiners() {
    let mut small = Engine::new(EngineConfig::relay());
    small.create(DOC, doc_with_actor(2));
    write(&mut small, "hello");
    drain(&mut small);
    join_empty(&mut small, 2);
    assert!(
        !keeps_whole(&small),
        "a small document's message is dropped"
    );

    let mut large = Engine::new(EngineConfig::relay());
    large.create(DOC, doc_with_actor(2));
    large
        .change(DOC, |am| {
            let mut tx = am.transaction();
            tx.put(ROOT, "body", noise(600 * 1024)).unwrap();
            tx.commit();
        })
        .unwrap();
    drain(&mut large);
    join_empty(&mut large, 2);
    assert!(keeps_whole(&large), "a large document's message is kept");
    join_empty(&mut large, 3);
    assert!(keeps_whole(&large));
}

/// A relay engine that makes every whole-document message off its thread.
fn relay_off_thread() -> Engine {
    Engine::new(EngineConfig {
        whole_off_thread_from: 0,
        ..EngineConfig::relay()
    })
}

/// Outputs of `e`, writes completed at once; `MakeWhole` jobs kept, not run.
fn drain_keeping_jobs(e: &mut Engine) -> (Vec<(ConnId, Message)>, Vec<WholeJob>) {
    let (mut sends, mut jobs) = (Vec::new(), Vec::new());
    loop {
        let mut persisted = Vec::new();
        while let Some(o) = e.poll_output() {
            match o {
                Output::Send { conn, msg } => sends.push((conn, msg)),
                Output::Persist { id, .. } => persisted.push(id),
                Output::MakeWhole(job) => jobs.push(job),
                _ => {}
            }
        }
        if persisted.is_empty() {
            return (sends, jobs);
        }
        for id in persisted {
            e.persisted(id);
        }
    }
}

/// Devices holding nothing open `DOC` with `relay` on connections `conns`; their first
/// messages (saying they hold nothing) are delivered. Returns the devices.
fn newcomers(relay: &mut Engine, conns: &[u64]) -> Vec<(ConnId, Engine)> {
    let mut devices = Vec::new();
    for &conn in conns {
        let mut device = Engine::new(EngineConfig::device());
        device.open(ConnId(1), DOC, OpenOptions::default());
        while device.poll_output().is_some() {}
        device.loaded(DOC, None);
        relay.open(ConnId(conn), DOC, OpenOptions::default());
        for (_, m) in drain(&mut device) {
            relay.handle(ConnId(conn), m).unwrap();
        }
        devices.push((ConnId(conn), device));
    }
    devices
}

/// Delivers messages between `relay` and `devices` until all are quiet (jobs run at once).
fn settle_all(relay: &mut Engine, devices: &mut [(ConnId, Engine)]) {
    for _ in 0..100 {
        let mut quiet = true;
        for (conn, device) in devices.iter_mut() {
            for (_, m) in drain(device) {
                quiet = false;
                relay.handle(*conn, m).unwrap();
            }
        }
        for (conn, m) in drain(relay) {
            quiet = false;
            if let Some((_, device)) = devices.iter_mut().find(|(c, _)| *c == conn) {
                device.handle(ConnId(1), m).unwrap();
            }
        }
        if quiet {
            return;
        }
    }
    panic!("relay and devices never went quiet");
}

/// Newcomers to a large document wait for one save made off the relay's thread; each gets
/// it once, though the document moved on meanwhile, and then what it lacks.
#[test]
fn newcomers_share_one_whole_document_saved_off_the_thread() {
    let mut relay = relay_off_thread();
    relay.create(DOC, doc_with_actor(2));
    for i in 0..100 {
        write(&mut relay, &format!("message {i}"));
    }
    drain(&mut relay);
    let mut devices = newcomers(&mut relay, &[1, 2]);
    let (sends, mut jobs) = drain_keeping_jobs(&mut relay);
    assert!(
        !sends.iter().any(|(_, m)| carries_document(m)),
        "the document was sent before its save came back"
    );
    assert_eq!(jobs.len(), 1, "one save for every newcomer");
    // Another newcomer arrives, and the document moves on, while the save runs.
    devices.extend(newcomers(&mut relay, &[3]));
    write(&mut relay, "late");
    let (sends, more) = drain_keeping_jobs(&mut relay);
    assert!(more.is_empty(), "a second save started while one ran");
    assert!(!sends.iter().any(|(_, m)| carries_document(m)));

    relay.whole_made(jobs.pop().unwrap().run());
    let (sends, more) = drain_keeping_jobs(&mut relay);
    assert!(more.is_empty());
    let mut got: Vec<ConnId> = sends
        .iter()
        .filter(|(_, m)| carries_document(m))
        .map(|(c, _)| *c)
        .collect();
    got.sort();
    assert_eq!(got, vec![ConnId(1), ConnId(2), ConnId(3)]);
    for (conn, m) in sends {
        if let Some((_, device)) = devices.iter_mut().find(|(c, _)| *c == conn) {
            device.handle(ConnId(1), m).unwrap();
        }
    }
    settle_all(&mut relay, &mut devices);
    for (conn, device) in &mut devices {
        assert_eq!(device.heads(DOC), relay.heads(DOC), "device on {conn:?}");
        let late = device
            .read(DOC, |d| d.automerge().get(ROOT, "late").unwrap().is_some())
            .unwrap();
        assert!(late, "the change made during the save did not follow");
    }
}

/// A save that failed on the driver's side leaves no newcomer waiting: the message is made in
/// place.
#[test]
fn newcomers_of_a_failed_save_get_the_document_made_in_place() {
    let mut relay = relay_off_thread();
    relay.create(DOC, doc_with_actor(2));
    for i in 0..20 {
        write(&mut relay, &format!("message {i}"));
    }
    drain(&mut relay);
    let mut devices = newcomers(&mut relay, &[1, 2]);
    let (_, mut jobs) = drain_keeping_jobs(&mut relay);
    let job = jobs.pop().unwrap();
    relay.whole_made(WholeMade {
        doc: job.doc,
        heads: job.heads,
        read_only: job.read_only,
        data: None,
    });
    let (sends, more) = drain_keeping_jobs(&mut relay);
    assert!(more.is_empty(), "the failed save was tried again");
    assert_eq!(sends.iter().filter(|(_, m)| carries_document(m)).count(), 2);
    for (conn, m) in sends {
        if let Some((_, device)) = devices.iter_mut().find(|(c, _)| *c == conn) {
            device.handle(ConnId(1), m).unwrap();
        }
    }
    settle_all(&mut relay, &mut devices);
    for (_, device) in &devices {
        assert_eq!(device.heads(DOC), relay.heads(DOC));
    }
}
