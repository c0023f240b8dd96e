//! The host against a real (in-memory) store.

use super::*;
use crate::engine::{ConnId, Engine, EngineConfig, OpenOptions};
use crate::store::MemStore;
use crate::Document;
use automerge::transaction::Transactable;
use automerge::ROOT;

/// Runs every action synchronously.
fn settle(host: &mut Host) -> Vec<Action> {
    let mut other = Vec::new();
    while let Some(a) = host.poll_action() {
        match a {
            Action::Wait { what, ticket } => host.committed(0, what, ticket.wait()),
            Action::Load { doc } => {
                let r = load(host.store().as_ref(), doc);
                host.loaded(0, doc, r).unwrap();
            }
            Action::Save(job) => host.saved(0, job.run()),
            a => other.push(a),
        }
    }
    other
}

#[test]
fn a_document_with_a_garbage_chunk_loads_and_the_garbage_is_set_aside() {
    let kv = Arc::new(MemStore::new());
    let group = Arc::new(GroupCommit::new(kv.clone()).unwrap());
    let doc = DocId::from_bytes([6; 16]);
    let mut host = Host::new(
        Engine::new(EngineConfig::relay()),
        group.clone(),
        HostConfig::default(),
    );
    host.load(0, doc);
    settle(&mut host);
    host.change(0, doc, |am| {
        let mut tx = am.transaction();
        tx.put(ROOT, "title", "kept").unwrap();
        tx.commit();
    })
    .unwrap();
    settle(&mut host);
    let heads = host.heads(doc).unwrap();
    // What an older relay stored from a member's sync message.
    let garbage: Vec<u8> = (0..37u8)
        .map(|i| i.wrapping_mul(29).wrapping_add(3))
        .collect();
    let mut batch = WriteBatch::new();
    docs::put_chunk(&mut batch, doc, ChunkKind::Incremental, garbage);
    kv.write(&batch).unwrap();

    let mut fresh = Host::new(
        Engine::new(EngineConfig::relay()),
        group.clone(),
        HostConfig::default(),
    );
    fresh.load(0, doc);
    settle(&mut fresh);
    assert_eq!(fresh.heads(doc).unwrap(), heads);
    assert_eq!(fresh.quarantined(), 1);
    // Set aside for good: the next load finds nothing to heal.
    let again = load(kv.as_ref(), doc).unwrap().unwrap();
    assert!(again.quarantine.is_empty());
    assert_eq!(again.doc.heads(), heads);
}

#[test]
fn writes_are_durable_and_compacted_without_losing_anything() {
    let kv = Arc::new(MemStore::new());
    let group = Arc::new(GroupCommit::new(kv.clone()).unwrap());
    let doc = DocId::from_bytes([5; 16]);
    let mut host = Host::new(
        Engine::new(EngineConfig::device()),
        group.clone(),
        HostConfig {
            compact_after_chunks: 10,
            compact_growth: 0,
            ..HostConfig::default()
        },
    );
    host.load(0, doc);
    settle(&mut host);
    for i in 0..35 {
        host.change(0, doc, |am| {
            let mut tx = am.transaction();
            tx.put(ROOT, format!("k{i}"), i).unwrap();
            tx.commit();
        })
        .unwrap();
        settle(&mut host);
    }
    assert!(
        host.chunk_count(doc) < 10,
        "compaction never ran: {} chunks",
        host.chunk_count(doc)
    );
    let heads = host.heads(doc).unwrap();
    // A fresh host on the same store sees every write.
    let reloaded = load(kv.as_ref(), doc).unwrap().unwrap();
    assert_eq!(reloaded.doc.heads(), heads);
    assert_eq!(reloaded.chunks.len(), host.chunk_count(doc));
    let _ = OpenOptions::default();
}

/// Runs the relay's actions; its sends are returned. With `hold`, writes are left in
/// flight in `held` instead of completing.
fn drive(
    relay: &mut Host,
    held: &mut Vec<(Waiting, CommitTicket)>,
    hold: bool,
    snapshots_from_loads: &mut usize,
) -> Vec<Message> {
    let mut sends = Vec::new();
    while let Some(a) = relay.poll_action() {
        match a {
            Action::Wait {
                what: what @ Waiting::Persist(_),
                ticket,
            } if hold => held.push((what, ticket)),
            Action::Wait { what, ticket } => relay.committed(0, what, ticket.wait()),
            Action::Load { doc } => {
                let r = if relay.wants_snapshot(doc) {
                    *snapshots_from_loads += 1;
                    load_for_compaction(relay.store().as_ref(), doc)
                } else {
                    load(relay.store().as_ref(), doc)
                };
                relay.loaded(0, doc, r).unwrap();
            }
            Action::Save(job) => relay.saved(0, job.run()),
            Action::Send { msg, .. } => sends.push(msg),
            _ => {}
        }
    }
    sends
}

/// A device writes 300 changes to a relay (lazy folding) over the fast path, one at a
/// time. With `no_pause`, the relay's writes complete only once the device's next change
/// has arrived, so a received change is always pending when a write completes: a
/// document written to without pause. Returns the relay, the device, the relay's store, how
/// many loads asked for a snapshot and the most chunks the document had after a change.
fn stale_relay_run(cfg: HostConfig, no_pause: bool) -> (Host, Engine, Arc<MemStore>, usize, usize) {
    let kv = Arc::new(MemStore::new());
    let group = Arc::new(GroupCommit::new(kv.clone()).unwrap());
    let doc = DocId::from_bytes([6; 16]);
    let mut relay = Host::new(
        Engine::new(EngineConfig {
            fold_batch: 4,
            ..EngineConfig::relay()
        }),
        group.clone(),
        cfg,
    );
    let mut snapshots = 0;
    let mut most_chunks = 0;
    let mut held = Vec::new();
    relay.load(0, doc);
    drive(&mut relay, &mut held, false, &mut snapshots);
    let mut device = Engine::new(EngineConfig::device());
    device.create(doc, Document::new());
    device.open(ConnId(1), doc, OpenOptions::default());
    relay.open(0, ConnId(1), doc, OpenOptions::default());
    for i in 0..300 {
        device
            .change(doc, |am| {
                let mut tx = am.transaction();
                tx.put(ROOT, format!("k{i}"), i).unwrap();
                tx.commit();
            })
            .unwrap();
        // The first changes bring the peer live and the document stale (the fast path).
        let hold = no_pause && i >= 20;
        // Exchange until both are quiet.
        for _ in 0..20 {
            let mut to_relay = Vec::new();
            while let Some(o) = device.poll_output() {
                match o {
                    Output::Send { msg, .. } => to_relay.push(msg),
                    Output::Persist { id, .. } => device.persisted(id),
                    _ => {}
                }
            }
            let changes = to_relay
                .iter()
                .any(|m| matches!(m, Message::Changes { .. }));
            for m in to_relay.drain(..) {
                relay.handle(0, ConnId(1), m).unwrap();
            }
            // Writes submitted before a change that is now pending complete only now.
            let older = if changes || !hold {
                std::mem::take(&mut held)
            } else {
                Vec::new()
            };
            let mut to_device = drive(&mut relay, &mut held, hold, &mut snapshots);
            for (what, ticket) in older {
                relay.committed(0, what, ticket.wait());
            }
            to_device.extend(drive(&mut relay, &mut held, hold, &mut snapshots));
            if to_device.is_empty() && device.poll_output().is_none() {
                break;
            }
            for m in to_device {
                device.handle(ConnId(1), m).unwrap();
            }
        }
        most_chunks = most_chunks.max(relay.chunk_count(doc));
    }
    // The last writes complete.
    while !held.is_empty() {
        for (what, ticket) in std::mem::take(&mut held) {
            relay.committed(0, what, ticket.wait());
        }
        drive(&mut relay, &mut held, false, &mut snapshots);
    }
    (relay, device, kv, snapshots, most_chunks)
}

/// A relay (lazy folding) compacts a stale document from the reload itself: the load
/// brings the snapshot ([`load_for_compaction`]), and nothing is lost.
#[test]
fn a_stale_document_is_compacted_from_its_reload() {
    let doc = DocId::from_bytes([6; 16]);
    let (relay, device, kv, snapshots_from_loads, _) = stale_relay_run(
        HostConfig {
            compact_after_chunks: 16,
            ..HostConfig::default()
        },
        false,
    );
    assert!(relay.is_stale(doc), "the fast path left it stale");
    assert!(
        snapshots_from_loads > 0,
        "no reload was asked for a snapshot"
    );
    assert!(
        relay.compacted_from_loads() > 0,
        "no compaction used a reload's snapshot"
    );
    assert!(
        relay.chunk_count(doc) < 64,
        "{} chunks: compaction is not keeping up",
        relay.chunk_count(doc)
    );
    // Everything the device wrote is in the store.
    let stored = load(kv.as_ref(), doc).unwrap().unwrap();
    assert_eq!(stored.doc.heads(), device.heads(doc).unwrap());
    assert_eq!(stored.chunks.len(), relay.chunk_count(doc));
}

/// A stale document whose received changes never stop being pending (a write always in
/// flight) waits for no quiet moment once it reaches `compact_max_chunks`, and loses
/// nothing.
#[test]
fn a_stale_document_written_without_pause_is_compacted_at_its_bound() {
    let doc = DocId::from_bytes([6; 16]);
    let (relay, device, kv, _, most_chunks) = stale_relay_run(
        HostConfig {
            compact_after_chunks: 16,
            compact_max_chunks: 48,
            ..HostConfig::default()
        },
        true,
    );
    // Without the exception for the bound, the document reached 286 chunks here.
    assert!(
        most_chunks <= 48,
        "{most_chunks} chunks: past the bound of 48"
    );
    assert!(
        relay.compacted_from_loads() > 2,
        "compaction did not keep up"
    );
    let stored = load(kv.as_ref(), doc).unwrap().unwrap();
    assert_eq!(stored.doc.heads(), device.heads(doc).unwrap());
    assert_eq!(stored.chunks.len(), relay.chunk_count(doc));
}

/// After a restart the compaction policy starts from the stored sizes: a document with a
/// snapshot is not compacted again after the first `compact_after_chunks` new chunks
/// unless they outgrow the snapshot.
#[test]
fn a_reopened_document_keeps_its_compaction_policy() {
    let kv = Arc::new(MemStore::new());
    let doc = DocId::from_bytes([7; 16]);
    let cfg = HostConfig {
        compact_after_chunks: 10,
        compact_growth: 4,
        ..HostConfig::default()
    };
    let write = |host: &mut Host, i: usize| {
        host.change(0, doc, |am| {
            let mut tx = am.transaction();
            // A long value that does not compress, so that the snapshot outweighs
            // a few small changes.
            let mut x: u32 = 1;
            let value: String = (0..if i == 0 { 4000 } else { 1 })
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    char::from(b'a' + (x >> 16) as u8 % 26)
                })
                .collect();
            tx.put(ROOT, format!("k{i}"), value).unwrap();
            tx.commit();
        })
        .unwrap();
        settle(host);
    };
    {
        let group = Arc::new(GroupCommit::new(kv.clone()).unwrap());
        let mut host = Host::new(Engine::new(EngineConfig::device()), group, cfg.clone());
        host.load(0, doc);
        settle(&mut host);
        for i in 0..12 {
            write(&mut host, i);
        }
        assert_eq!(host.chunk_count(doc), 3, "compacted once, two chunks after");
    }
    // A new host on the same store: 12 more small chunks are far less than 4x the snapshot.
    let group = Arc::new(GroupCommit::new(kv.clone()).unwrap());
    let mut host = Host::new(Engine::new(EngineConfig::device()), group, cfg);
    host.load(0, doc);
    settle(&mut host);
    for i in 12..24 {
        write(&mut host, i);
    }
    assert_eq!(
        host.chunk_count(doc),
        15,
        "no compaction: the snapshot is large"
    );
    let stored = load(kv.as_ref(), doc).unwrap().unwrap();
    assert_eq!(stored.doc.heads(), host.heads(doc).unwrap());
}

/// With `log_received`, every write of a peer's changes comes as `LogThenWrite` carrying exactly
/// the stored bytes, and the node's own changes as plain `Wait`.
#[test]
fn received_changes_are_handed_over_for_the_log_and_local_ones_are_not() {
    let kv = Arc::new(MemStore::new());
    let group = Arc::new(GroupCommit::new(kv.clone()).unwrap());
    let doc = DocId::from_bytes([8; 16]);
    let mut relay = Host::new(
        Engine::new(EngineConfig::relay()),
        group,
        HostConfig {
            log_received: true,
            ..HostConfig::default()
        },
    );
    relay.load(0, doc);
    settle(&mut relay);
    let mut device = Engine::new(EngineConfig::device());
    device.create(doc, Document::new());
    device.open(ConnId(1), doc, OpenOptions::default());
    relay.open(0, ConnId(1), doc, OpenOptions::default());
    let mut logged: Vec<LogWrite> = Vec::new();
    let mut plain = 0;
    for i in 0..5 {
        device
            .change(doc, |am| {
                let mut tx = am.transaction();
                tx.put(ROOT, format!("k{i}"), i).unwrap();
                tx.commit();
            })
            .unwrap();
        for _ in 0..10 {
            let mut quiet = true;
            while let Some(o) = device.poll_output() {
                match o {
                    Output::Send { msg, .. } => {
                        quiet = false;
                        relay.handle(0, ConnId(1), msg).unwrap();
                    }
                    Output::Persist { id, .. } => device.persisted(id),
                    _ => {}
                }
            }
            while let Some(a) = relay.poll_action() {
                match a {
                    Action::LogThenWrite { what, batch, log } => {
                        logged.push(log);
                        let ticket = relay.submit(batch);
                        relay.committed(0, what, ticket.wait());
                    }
                    Action::Wait { what, ticket } => {
                        plain += 1;
                        relay.committed(0, what, ticket.wait());
                    }
                    Action::Send { msg, .. } => {
                        quiet = false;
                        device.handle(ConnId(1), msg).unwrap();
                    }
                    _ => {}
                }
            }
            if quiet {
                break;
            }
        }
    }
    assert_eq!(relay.heads(doc), device.heads(doc));
    let mut am = automerge::Automerge::new();
    for l in &logged {
        assert_eq!(l.doc, doc);
        am.load_incremental(&l.changes).unwrap();
    }
    assert_eq!(
        am.get_heads(),
        device.heads(doc).unwrap(),
        "the log holds every change"
    );
    let before = plain;
    relay
        .change(0, doc, |am| {
            let mut tx = am.transaction();
            tx.put(ROOT, "local", 1).unwrap();
            tx.commit();
        })
        .unwrap();
    let n = logged.len();
    while let Some(a) = relay.poll_action() {
        match a {
            Action::LogThenWrite { log, .. } => logged.push(log),
            Action::Wait { what, ticket } => {
                plain += 1;
                relay.committed(0, what, ticket.wait());
            }
            _ => {}
        }
    }
    assert_eq!(logged.len(), n, "a local change is not logged");
    assert!(plain > before);
}

/// A host compacting every few chunks off the driver's thread, on a device engine.
fn host_compacting_elsewhere(kv: &Arc<MemStore>) -> Host {
    let group = Arc::new(GroupCommit::new(kv.clone()).unwrap());
    Host::new(
        Engine::new(EngineConfig::device()),
        group,
        HostConfig {
            compact_after_chunks: 4,
            compact_growth: 0,
            compact_max_chunks: 16,
            log_received: false,
            compact_off_thread_from: 0,
        },
    )
}

/// Writes `key` in `doc` and settles every action but saves, which are returned.
fn write_keeping_saves(host: &mut Host, doc: DocId, key: &str) -> Vec<SaveJob> {
    host.change(0, doc, |am| {
        let mut tx = am.transaction();
        tx.put(ROOT, key, 1).unwrap();
        tx.commit();
    })
    .unwrap();
    let mut jobs = Vec::new();
    while let Some(a) = host.poll_action() {
        match a {
            Action::Wait { what, ticket } => host.committed(0, what, ticket.wait()),
            Action::Save(job) => jobs.push(job),
            _ => {}
        }
    }
    jobs
}

fn keys_of(doc: &Document) -> usize {
    use automerge::ReadDoc;
    doc.automerge().keys(ROOT).count()
}

/// A compaction saved elsewhere replaces only the chunks its copy held: what was written
/// while the save ran stays, and nothing is lost.
#[test]
fn a_compaction_saved_elsewhere_keeps_what_was_written_meanwhile() {
    let kv = Arc::new(MemStore::new());
    let doc = DocId::from_bytes([9; 16]);
    let mut host = host_compacting_elsewhere(&kv);
    host.load(0, doc);
    settle(&mut host);
    let mut jobs = Vec::new();
    for i in 0..4 {
        jobs.extend(write_keeping_saves(&mut host, doc, &format!("k{i}")));
    }
    assert_eq!(jobs.len(), 1, "the fourth chunk hands out one save");
    for i in 4..6 {
        let more = write_keeping_saves(&mut host, doc, &format!("k{i}"));
        assert!(
            more.is_empty(),
            "a second compaction started during the save"
        );
    }
    assert_eq!(load_chunks_of(&kv, doc), 6);
    let job = jobs.pop().unwrap();
    host.saved(0, job.run());
    settle(&mut host);
    // The snapshot of the first four, and the two written meanwhile.
    assert_eq!(load_chunks_of(&kv, doc), 3);
    assert_eq!(host.chunk_count(doc), 3);
    let stored = load(kv.as_ref(), doc).unwrap().unwrap();
    assert_eq!(keys_of(&stored.doc), 6, "a change was lost");
}

/// A compaction whose document left memory before its save came back is not written.
#[test]
fn a_compaction_saved_after_its_document_left_is_dropped() {
    let kv = Arc::new(MemStore::new());
    let doc = DocId::from_bytes([9; 16]);
    let mut host = host_compacting_elsewhere(&kv);
    host.load(0, doc);
    settle(&mut host);
    let mut jobs = Vec::new();
    for i in 0..4 {
        jobs.extend(write_keeping_saves(&mut host, doc, &format!("k{i}")));
    }
    let job = jobs.pop().unwrap();
    host.forget(doc);
    host.saved(0, job.run());
    assert!(settle(&mut host).is_empty());
    assert_eq!(
        load_chunks_of(&kv, doc),
        4,
        "the dropped save changed the store"
    );
}

fn load_chunks_of(kv: &Arc<MemStore>, doc: DocId) -> usize {
    crate::store::docs::load_chunks(kv.as_ref(), doc)
        .unwrap()
        .len()
}
