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
