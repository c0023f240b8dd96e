//! The timer index.

use super::*;

/// `next_wakeup` asserts in test builds that the timer index agrees with a scan of every
/// document; this drives two engines through opens, closes, writes, deliveries, delayed
/// persists and ticks in a seeded random order and asks after every step.
#[test]
fn the_timer_index_agrees_with_a_scan_of_every_document() {
    let mut dev = Engine::new(EngineConfig::device());
    let mut relay = Engine::new(EngineConfig::relay());
    let docs: Vec<DocId> = (0..6u8).map(|i| DocId::from_bytes([i + 10; 16])).collect();
    for d in &docs {
        dev.create(*d, doc_with_actor(1));
    }
    let (to_relay, to_dev) = (ConnId(1), ConnId(2));
    let mut in_flight: Vec<(bool, PersistId)> = Vec::new();
    let mut wires: (Vec<Message>, Vec<Message>) = (Vec::new(), Vec::new());
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut now = 0;
    for step in 0..600u32 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let d = docs[(seed >> 33) as usize % docs.len()];
        match (seed >> 40) % 7 {
            0 => {
                dev.open(to_relay, d, OpenOptions::default());
                relay.open(to_dev, d, OpenOptions::default());
            }
            1 => {
                let _ = dev.change(d, |am| {
                    let mut tx = am.transaction();
                    tx.put(ROOT, format!("k{step}"), i64::from(step)).unwrap();
                    tx.commit();
                });
            }
            2 => {
                for m in std::mem::take(&mut wires.0) {
                    let _ = relay.handle(to_dev, m);
                }
                for m in std::mem::take(&mut wires.1) {
                    let _ = dev.handle(to_relay, m);
                }
            }
            3 => relay.close(to_dev, d),
            4 => {
                now += (seed >> 20) % 4_000;
                dev.tick(now);
                relay.tick(now);
            }
            5 => {
                // Complete the oldest half of the writes in flight.
                let n = in_flight.len().div_ceil(2);
                for (on_relay, id) in in_flight.drain(..n) {
                    if on_relay {
                        relay.persisted(id);
                    } else {
                        dev.persisted(id);
                    }
                }
            }
            _ => {
                now += 70_000;
                relay.tick(now);
            }
        }
        for (on_relay, e) in [(false, &mut dev), (true, &mut relay)] {
            while let Some(o) = e.poll_output() {
                match o {
                    Output::Send { msg, .. } if on_relay => wires.1.push(msg),
                    Output::Send { msg, .. } => wires.0.push(msg),
                    Output::Persist { id, .. } => in_flight.push((on_relay, id)),
                    Output::Load { doc } => e.loaded(doc, None),
                    _ => {}
                }
            }
            // Asserts the index against a scan.
            let _ = e.next_wakeup();
        }
    }
}

/// A document whose large change waits for its reload asks its driver for no tick it has
/// nothing to do at, during the reload or after it: a fold deadline in the past would wake the
/// driver again and again until the document changed otherwise.
#[test]
fn a_document_reloading_for_a_large_change_does_not_keep_waking_its_driver() {
    let mut dev = Engine::new(EngineConfig::device());
    let mut relay = Engine::new(EngineConfig::relay());
    relay.cfg.inline_apply_ops = 50;
    dev.create(DOC, doc_with_actor(1));
    relay.create(DOC, doc_with_actor(2));
    dev.set_sync_only(ConnId(1));
    relay.set_sync_only(ConnId(2));
    dev.open(ConnId(1), DOC, OpenOptions::default());
    relay.open(ConnId(2), DOC, OpenOptions::default());
    for _ in 0..5 {
        for (_, m) in drain(&mut dev) {
            relay.handle(ConnId(2), m).unwrap();
        }
        for (_, m) in drain(&mut relay) {
            dev.handle(ConnId(1), m).unwrap();
        }
    }
    let (_, id) = dev
        .change(DOC, |am| {
            let mut tx = am.transaction();
            let t = tx
                .put_object(ROOT, "essay", automerge::ObjType::Text)
                .unwrap();
            tx.splice_text(&t, 0, 0, &"x".repeat(200)).unwrap();
            tx.commit();
        })
        .unwrap();
    dev.persisted(id.unwrap());
    for (_, m) in drain(&mut dev) {
        relay.handle(ConnId(2), m).unwrap();
    }
    let mut store: Vec<u8> = Vec::new();
    let mut loads = Vec::new();
    // Durable, so the reload starts; it is not answered yet.
    for _ in 0..3 {
        while let Some(o) = relay.poll_output() {
            match o {
                Output::Persist { id, write, .. } => {
                    if let Write::Changes(bytes) = write {
                        store.extend_from_slice(&bytes);
                    }
                    relay.persisted(id);
                }
                Output::Load { doc } => loads.push(doc),
                _ => {}
            }
        }
    }
    assert_eq!(loads, vec![DOC]);
    let later = relay.cfg.fold_delay + 1;
    relay.tick(later);
    assert!(
        relay.next_wakeup().is_none_or(|t| t > later),
        "nothing to do while the reload runs"
    );
    relay.loaded(DOC, Some(Document::load(&store).unwrap()));
    outputs(&mut relay);
    let after = later + 1;
    relay.tick(after);
    assert!(
        relay.next_wakeup().is_none_or(|t| t > after),
        "nothing to fold once the reload folded it"
    );
}
