//! Engine unit tests: two engines wired by hand.

use super::*;
use automerge::transaction::Transactable;
use automerge::{ActorId, ROOT};

const DOC: DocId = DocId::from_bytes([4; 16]);

fn doc_with_actor(a: u8) -> Document {
    Document::from_automerge(automerge::Automerge::new().with_actor(ActorId::from(vec![a; 16])))
}

fn write(e: &mut Engine, key: &str) -> PersistId {
    let (_, id) = e
        .change(DOC, |am| {
            let mut tx = am.transaction();
            tx.put(ROOT, key, 1).unwrap();
            tx.commit();
        })
        .unwrap();
    id.unwrap()
}

/// Drains `e`'s outputs: persists complete at once, sends are returned.
fn drain(e: &mut Engine) -> Vec<(ConnId, Message)> {
    let mut sends = Vec::new();
    loop {
        let mut persisted = Vec::new();
        while let Some(o) = e.poll_output() {
            match o {
                Output::Send { conn, msg } => sends.push((conn, msg)),
                Output::Persist { id, .. } => persisted.push(id),
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

/// Two engines with `DOC` open on each other; `b_accepts_from_a` as given.
fn pair(a_may_write: bool) -> (Engine, Engine) {
    let mut a = Engine::new(EngineConfig::device());
    let mut b = Engine::new(EngineConfig::relay());
    a.create(DOC, doc_with_actor(1));
    b.create(DOC, doc_with_actor(2));
    a.open(
        ConnId(1),
        DOC,
        OpenOptions {
            send_changes: a_may_write,
            ..Default::default()
        },
    );
    b.open(
        ConnId(2),
        DOC,
        OpenOptions {
            accept_changes: a_may_write,
            ..Default::default()
        },
    );
    pump(&mut a, &mut b);
    (a, b)
}

/// Delivers messages both ways until both are quiet.
fn pump(a: &mut Engine, b: &mut Engine) {
    for _ in 0..100 {
        let to_b = drain(a);
        let to_a = drain(b);
        if to_a.is_empty() && to_b.is_empty() {
            return;
        }
        for (_, m) in to_b {
            b.handle(ConnId(2), m).unwrap();
        }
        for (_, m) in to_a {
            a.handle(ConnId(1), m).unwrap();
        }
    }
    panic!("engines never went quiet");
}

#[test]
fn a_change_leaves_only_after_it_is_durable() {
    let (mut a, mut b) = pair(true);
    assert!(a.is_synced(ConnId(1), DOC) && b.is_synced(ConnId(2), DOC));
    let id = write(&mut a, "typing");
    let mut outs = Vec::new();
    while let Some(o) = a.poll_output() {
        outs.push(o);
    }
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Send { .. })),
        "sent before durable: {outs:?}"
    );
    a.persisted(id);
    let sends = drain(&mut a);
    assert!(
        matches!(sends.as_slice(), [(_, Message::Changes { .. })]),
        "{sends:?}"
    );
    for (_, m) in sends {
        b.handle(ConnId(2), m).unwrap();
    }
    // The relay side persists before acking.
    let mut b_out = Vec::new();
    while let Some(o) = b.poll_output() {
        b_out.push(o);
    }
    let [Output::Persist { id, .. }] = b_out.as_slice() else {
        panic!("expected one persist: {b_out:?}")
    };
    b.persisted(*id);
    pump(&mut a, &mut b);
    assert_eq!(a.heads(DOC), b.heads(DOC));
    assert!(a.is_synced(ConnId(1), DOC));
}

#[test]
fn a_read_only_peer_changes_are_rejected_and_never_applied() {
    let (mut a, mut b) = pair(false);
    let before = b.heads(DOC);
    let id = write(&mut a, "not allowed");
    a.persisted(id);
    let sends = drain(&mut a);
    assert!(
        sends
            .iter()
            .all(|(_, m)| !matches!(m, Message::Changes { .. })),
        "read-only device pushed changes"
    );
    // A misbehaving client pushes its change anyway.
    let raw = a
        .read(DOC, |d| {
            d.automerge()
                .get_last_local_change()
                .unwrap()
                .raw_bytes()
                .to_vec()
        })
        .unwrap();
    b.handle(
        ConnId(2),
        Message::Changes {
            doc: DOC,
            changes: vec![bytes::Bytes::from(raw)],
        },
    )
    .unwrap();
    let mut outs = Vec::new();
    while let Some(o) = b.poll_output() {
        outs.push(o);
    }
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Rejected {
            reason: Rejection::ReadOnly,
            ..
        }
    )));
    assert!(!outs.iter().any(|o| matches!(
        o,
        Output::Persist {
            write: Write::Changes(_),
            ..
        }
    )));
    assert_eq!(b.heads(DOC), before);
}

#[test]
fn garbage_from_a_peer_is_an_error_not_a_panic() {
    let (_, mut b) = pair(true);
    for data in [vec![], vec![0x42], vec![0x43, 0xff, 0xff], vec![7; 64]] {
        assert!(b
            .handle(
                ConnId(2),
                Message::Sync {
                    doc: DOC,
                    reset: false,
                    data: data.clone()
                }
            )
            .is_err());
        let bad = Message::Changes {
            doc: DOC,
            changes: vec![bytes::Bytes::from(data)],
        };
        assert!(b.handle(ConnId(2), bad).is_err());
    }
    let other = DocId::from_bytes([9; 16]);
    assert!(matches!(
        b.handle(
            ConnId(2),
            Message::Ack {
                doc: other,
                heads: vec![]
            }
        ),
        Err(EngineError::NotOpen { .. })
    ));
    assert!(matches!(
        b.handle(
            ConnId(77),
            Message::Ack {
                doc: DOC,
                heads: vec![]
            }
        ),
        Err(EngineError::UnknownConn(_))
    ));
}

#[test]
fn idle_documents_are_evicted_and_reloaded_on_demand() {
    let (mut a, mut b) = pair(true);
    b.remove_conn(ConnId(2));
    drain(&mut b);
    let wake = b
        .next_wakeup()
        .expect("an idle document waits for eviction");
    b.tick(wake);
    assert!(matches!(
        b.poll_output(),
        Some(Output::Evicted { doc: DOC })
    ));
    assert_eq!(b.loaded_docs(), 0);
    // Reopening asks the driver to load it again.
    b.open(ConnId(3), DOC, OpenOptions::default());
    assert!(matches!(b.poll_output(), Some(Output::Load { doc: DOC })));
    let _ = &mut a;
}

#[test]
fn a_failed_write_drops_the_document_and_closes_its_peers() {
    let (mut a, _b) = pair(true);
    let id = write(&mut a, "doomed");
    while a.poll_output().is_some() {}
    a.persist_failed(id);
    match a.poll_output() {
        Some(Output::Failed { doc, conns }) => {
            assert_eq!(doc, DOC);
            assert_eq!(conns, vec![ConnId(1)]);
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(!a.is_loaded(DOC));
}

#[test]
fn synced_stable_peers_persist_their_reconnect_state() {
    let mut a = Engine::new(EngineConfig::device());
    let mut b = Engine::new(EngineConfig::relay());
    a.create(DOC, doc_with_actor(1));
    b.create(DOC, doc_with_actor(2));
    write(&mut a, "x");
    drain(&mut a);
    let opts = OpenOptions {
        stable_peer: Some(b"relay".to_vec()),
        ..Default::default()
    };
    a.open(ConnId(1), DOC, opts);
    b.open(ConnId(2), DOC, OpenOptions::default());
    let mut saved = None;
    for _ in 0..20 {
        let mut persisted = Vec::new();
        let mut to_b = Vec::new();
        while let Some(o) = a.poll_output() {
            match o {
                Output::Persist {
                    id,
                    write: Write::SyncState { state, .. },
                    ..
                } => {
                    saved = Some(state);
                    persisted.push(id);
                }
                Output::Persist { id, .. } => persisted.push(id),
                Output::Send { msg, .. } => to_b.push(msg),
                _ => {}
            }
        }
        for id in persisted {
            a.persisted(id);
        }
        for m in to_b {
            b.handle(ConnId(2), m).unwrap();
        }
        for (_, m) in drain(&mut b) {
            a.handle(ConnId(1), m).unwrap();
        }
    }
    let state = sync::State::decode(&saved.expect("sync state persisted once synced")).unwrap();
    assert_eq!(Some(state.shared_heads), a.heads(DOC));
}

#[test]
fn a_forgotten_document_is_reloaded_fresh_and_resyncs_from_scratch() {
    let (mut a, mut b) = pair(true);
    write(&mut a, "mine");
    pump(&mut a, &mut b);
    // A write still in flight when the document is forgotten completes without effect.
    let id = write(&mut a, "lost");
    a.forget(DOC);
    assert!(!a.is_loaded(DOC));
    a.persisted(id);
    assert!(a
        .handle(
            ConnId(1),
            Message::Ack {
                doc: DOC,
                heads: vec![]
            }
        )
        .is_err());
    // Reopened over an empty store, it syncs the other side's version again.
    a.open(ConnId(1), DOC, OpenOptions::default());
    let loads: Vec<_> = std::iter::from_fn(|| a.poll_output()).collect();
    assert!(
        loads
            .iter()
            .any(|o| matches!(o, Output::Load { doc } if *doc == DOC)),
        "{loads:?}"
    );
    a.loaded(DOC, None);
    b.resync(DOC, ConnId(2));
    pump(&mut a, &mut b);
    assert_eq!(a.heads(DOC), b.heads(DOC));
    assert!(a
        .read(DOC, |d| automerge::ReadDoc::get(
            d.automerge(),
            ROOT,
            "mine"
        )
        .unwrap()
        .is_some())
        .unwrap());
}

#[test]
fn a_sync_only_peer_gets_new_changes_as_sync_messages_never_the_fast_path() {
    // The relay (b) keeps its WebSocket client (a) in sync mode: the client speaks only
    // Automerge's sync protocol and never acknowledges `Changes`.
    let mut a = Engine::new(EngineConfig::device());
    let mut b = Engine::new(EngineConfig::relay());
    a.create(DOC, doc_with_actor(1));
    b.create(DOC, doc_with_actor(2));
    b.add_conn(ConnId(2));
    b.set_sync_only(ConnId(2));
    a.set_sync_only(ConnId(1));
    a.open(ConnId(1), DOC, OpenOptions::default());
    b.open(ConnId(2), DOC, OpenOptions::default());
    pump(&mut a, &mut b);
    assert!(b.is_synced(ConnId(2), DOC));
    let id = write(&mut b, "from the relay side");
    b.persisted(id);
    let sends = drain(&mut b);
    assert!(
        !sends.is_empty() && sends.iter().all(|(_, m)| matches!(m, Message::Sync { .. })),
        "{sends:?}"
    );
    for (_, m) in sends {
        a.handle(ConnId(1), m).unwrap();
    }
    pump(&mut a, &mut b);
    assert_eq!(a.heads(DOC), b.heads(DOC));
}

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

/// A relay engine with lazy folding: while its only peer is live, received changes leave
/// memory once durable (the document goes stale); a new peer in sync mode makes it reload the
/// document from the store, and that peer receives every change.
#[test]
fn a_stale_relay_document_reloads_for_a_peer_in_sync_mode() {
    let mut dev = Engine::new(EngineConfig::device());
    let mut relay = Engine::new(EngineConfig::relay());
    dev.create(DOC, doc_with_actor(1));
    let mut store: Vec<u8> = Vec::new();
    // Runs the relay's outputs: persists land in `store` at once, loads read it.
    fn run_relay(relay: &mut Engine, store: &mut Vec<u8>) -> Vec<(ConnId, Message)> {
        let mut sends = Vec::new();
        loop {
            let mut progressed = false;
            while let Some(o) = relay.poll_output() {
                progressed = true;
                match o {
                    Output::Send { conn, msg } => sends.push((conn, msg)),
                    Output::Persist { id, write, .. } => {
                        if let Write::Changes(bytes) = write {
                            store.extend_from_slice(&bytes);
                        }
                        relay.persisted(id);
                    }
                    Output::Load { doc } => {
                        let d = (!store.is_empty()).then(|| Document::load(store).unwrap());
                        relay.loaded(doc, d);
                    }
                    _ => {}
                }
            }
            if !progressed {
                return sends;
            }
        }
    }
    relay.load(DOC);
    run_relay(&mut relay, &mut store);
    dev.open(ConnId(1), DOC, OpenOptions::default());
    relay.open(ConnId(2), DOC, OpenOptions::default());
    for i in 0..700 {
        if i % 50 == 0 || i < 3 {
            // Let the two sync (and go live).
            for _ in 0..10 {
                let to_relay = drain(&mut dev);
                for (_, m) in to_relay {
                    relay.handle(ConnId(2), m).unwrap();
                }
                let to_dev = run_relay(&mut relay, &mut store);
                if to_dev.is_empty() {
                    break;
                }
                for (_, m) in to_dev {
                    dev.handle(ConnId(1), m).unwrap();
                }
            }
        }
        write(&mut dev, &format!("k{i}"));
    }
    for _ in 0..10 {
        for (_, m) in drain(&mut dev) {
            relay.handle(ConnId(2), m).unwrap();
        }
        for (_, m) in run_relay(&mut relay, &mut store) {
            dev.handle(ConnId(1), m).unwrap();
        }
    }
    assert!(
        relay.is_stale(DOC),
        "700 fast-path changes with a live peer leave the document stale"
    );
    assert_eq!(relay.heads(DOC), dev.heads(DOC));
    // A second device arrives empty: a sync round needs the materialized document.
    let mut late = Engine::new(EngineConfig::device());
    late.create(DOC, doc_with_actor(3));
    late.open(ConnId(1), DOC, OpenOptions::default());
    relay.open(ConnId(3), DOC, OpenOptions::default());
    for _ in 0..50 {
        let mut quiet = true;
        for (_, m) in drain(&mut late) {
            quiet = false;
            relay.handle(ConnId(3), m).unwrap();
        }
        for (c, m) in run_relay(&mut relay, &mut store) {
            quiet = false;
            if c == ConnId(3) {
                late.handle(ConnId(1), m).unwrap();
            }
        }
        if quiet {
            break;
        }
    }
    assert!(!relay.is_stale(DOC), "the sync round reloaded the document");
    assert_eq!(late.heads(DOC), dev.heads(DOC));
}

/// A live peer is sent a received change only once it is durable, and owes an ack only from
/// then: a document idle for longer than `retry_after` whose next change is still being
/// written when a tick runs must not look stalled to its other peers.
#[test]
fn an_idle_live_peer_is_not_resynced_while_a_new_change_is_being_written() {
    let mut relay = Engine::new(EngineConfig::relay());
    relay.create(DOC, doc_with_actor(9));
    let mut devs = [
        Engine::new(EngineConfig::device()),
        Engine::new(EngineConfig::device()),
    ];
    for (i, d) in devs.iter_mut().enumerate() {
        d.create(DOC, doc_with_actor(1 + i as u8));
        d.open(ConnId(1), DOC, OpenOptions::default());
        relay.open(ConnId(2 + i as u64), DOC, OpenOptions::default());
    }
    // Sync both devices with the relay until everyone is quiet (and live).
    let exchange = |relay: &mut Engine, devs: &mut [Engine; 2]| {
        for _ in 0..50 {
            let mut quiet = true;
            for (i, d) in devs.iter_mut().enumerate() {
                for (_, m) in drain(d) {
                    quiet = false;
                    relay.handle(ConnId(2 + i as u64), m).unwrap();
                }
            }
            for (c, m) in drain(relay) {
                quiet = false;
                devs[(c.0 - 2) as usize].handle(ConnId(1), m).unwrap();
            }
            if quiet {
                return;
            }
        }
        panic!("never quiet");
    };
    write(&mut devs[0], "first");
    exchange(&mut relay, &mut devs);
    assert_eq!(relay.heads(DOC), devs[1].heads(DOC));

    // Idle for longer than retry_after; then device 0 writes and the relay receives it.
    let later = relay.cfg.retry_after * 3;
    relay.set_now(later);
    write(&mut devs[0], "second");
    for (_, m) in drain(&mut devs[0]) {
        relay.handle(ConnId(2), m).unwrap();
    }
    // The relay's write is in flight (not reported durable) when its timers run.
    let mut writes = Vec::new();
    let mut sent = Vec::new();
    let drive = |relay: &mut Engine, writes: &mut Vec<PersistId>, sent: &mut Vec<_>| {
        while let Some(o) = relay.poll_output() {
            match o {
                Output::Persist { id, .. } => writes.push(id),
                Output::Send { conn, msg } => sent.push((conn, msg)),
                _ => {}
            }
        }
    };
    drive(&mut relay, &mut writes, &mut sent);
    assert!(!writes.is_empty(), "the change is being written");
    relay.tick(later + 1);
    drive(&mut relay, &mut writes, &mut sent);
    assert!(
        !sent
            .iter()
            .any(|(c, m)| *c == ConnId(3) && matches!(m, Message::Sync { .. })),
        "the idle peer was resynced while the change was still being written: {sent:?}"
    );
    // Once durable, the idle peer gets the change over the fast path.
    for id in writes {
        relay.persisted(id);
    }
    drive(&mut relay, &mut Vec::new(), &mut sent);
    assert!(
        sent.iter()
            .any(|(c, m)| *c == ConnId(3) && matches!(m, Message::Changes { .. })),
        "{sent:?}"
    );
}

/// A sync message from `from` (its first one to a fresh peer), with its changes replaced by
/// `chunks`.
fn sync_with_chunks(from: &automerge::Automerge, chunks: Vec<Vec<u8>>) -> Message {
    let mut state = sync::State::new();
    let mut msg = from.generate_sync_message(&mut state).unwrap();
    msg.changes = chunks.into();
    Message::Sync {
        doc: DOC,
        reset: false,
        data: msg.encode(),
    }
}

/// A change of `actor` putting `key` in a document of its own, as raw bytes.
fn foreign_change(actor: u8, key: &str, value: &str) -> (automerge::Automerge, Vec<u8>) {
    let mut am = automerge::Automerge::new().with_actor(ActorId::from(vec![actor; 16]));
    let mut tx = am.transaction();
    tx.put(ROOT, key, value).unwrap();
    tx.commit();
    let raw = am.get_last_local_change().unwrap().raw_bytes().to_vec();
    (am, raw)
}

fn outputs(e: &mut Engine) -> Vec<Output> {
    let mut outs = Vec::new();
    while let Some(o) = e.poll_output() {
        outs.push(o);
    }
    outs
}

fn stored_changes(outs: &[Output]) -> usize {
    outs.iter()
        .filter(|o| matches!(o, Output::Persist { write: Write::Changes(c), .. } if !c.is_empty()))
        .count()
}

#[test]
fn a_read_only_peer_sync_message_stores_nothing() {
    let (_, mut b) = pair(false);
    let before = b.heads(DOC);
    let (am, raw) = foreign_change(7, "title", "forged");
    b.handle(ConnId(2), sync_with_chunks(&am, vec![raw]))
        .unwrap();
    let outs = outputs(&mut b);
    assert_eq!(stored_changes(&outs), 0, "{outs:?}");
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Rejected {
            reason: Rejection::ReadOnly,
            ..
        }
    )));
    assert_eq!(b.heads(DOC), before);
}

#[test]
fn garbage_inside_a_sync_message_is_refused_and_nothing_of_the_message_is_stored() {
    let (_, mut b) = pair(true);
    let before = b.heads(DOC);
    let (am, raw) = foreign_change(7, "title", "ok");
    let garbage: Vec<u8> = (0..37u8).map(|i| i.wrapping_mul(31)).collect();
    for chunks in [
        vec![garbage.clone()],
        vec![raw.clone(), garbage.clone()],
        vec![[raw.clone(), garbage].concat()],
    ] {
        let err = b
            .handle(ConnId(2), sync_with_chunks(&am, chunks))
            .unwrap_err();
        assert!(matches!(err, EngineError::Check(_)), "{err}");
        assert_eq!(stored_changes(&outputs(&mut b)), 0);
        assert_eq!(b.heads(DOC), before);
    }
}

#[test]
fn a_change_over_a_limit_is_refused_on_both_paths() {
    let (_, mut b) = pair(true);
    b.cfg.limits.max_change_bytes = 64;
    let before = b.heads(DOC);
    let (am, raw) = foreign_change(7, "title", &"long ".repeat(40));
    b.handle(ConnId(2), sync_with_chunks(&am, vec![raw.clone()]))
        .unwrap();
    let outs = outputs(&mut b);
    assert_eq!(stored_changes(&outs), 0);
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Rejected {
            reason: Rejection::Limit(_),
            ..
        }
    )));
    b.handle(
        ConnId(2),
        Message::Changes {
            doc: DOC,
            changes: vec![bytes::Bytes::from(raw)],
        },
    )
    .unwrap();
    let outs = outputs(&mut b);
    assert_eq!(stored_changes(&outs), 0);
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Rejected {
            reason: Rejection::Limit(_),
            ..
        }
    )));
    assert_eq!(b.heads(DOC), before);
}

#[test]
fn a_document_is_not_grown_past_its_byte_limit() {
    let (mut a, mut b) = pair(true);
    b.cfg.max_doc_bytes = 300;
    write(&mut a, "first");
    pump(&mut a, &mut b);
    assert_eq!(a.heads(DOC), b.heads(DOC));
    let at_limit = b.stored_bytes(DOC).unwrap();
    assert!(at_limit > 0 && at_limit <= 300, "{at_limit}");
    let before = b.heads(DOC);
    let (_, raw) = foreign_change(7, "big", &"x".repeat(400));
    b.handle(
        ConnId(2),
        Message::Changes {
            doc: DOC,
            changes: vec![bytes::Bytes::from(raw)],
        },
    )
    .unwrap();
    let outs = outputs(&mut b);
    assert_eq!(stored_changes(&outs), 0);
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Rejected {
            reason: Rejection::DocumentFull { limit: 300 },
            ..
        }
    )));
    assert_eq!(b.heads(DOC), before);
}

/// A change with more operations than the relay applies on its own thread is stored and
/// forwarded, then applied by the reload (which drivers run elsewhere), never folded in place;
/// the sender still hears that the relay has it.
#[test]
fn a_large_change_is_applied_by_a_reload_not_in_place() {
    // An automerge-repo client: sync messages only.
    large_change_in_a_sync_message(true);
}

/// The same from a device the relay holds live once synced (as it does a QUIC device that
/// catches up by sync messages): the reload's round finds it synced, and it must still be
/// answered rather than left waiting for its retry.
#[test]
fn a_device_that_sent_a_large_change_by_sync_message_hears_back() {
    large_change_in_a_sync_message(false);
}

fn large_change_in_a_sync_message(sync_only_on_the_relay: bool) {
    let mut dev = Engine::new(EngineConfig::device());
    let mut relay = Engine::new(EngineConfig::relay());
    relay.cfg.inline_apply_ops = 50;
    dev.create(DOC, doc_with_actor(1));
    relay.create(DOC, doc_with_actor(2));
    if sync_only_on_the_relay {
        relay.set_sync_only(ConnId(2));
    }
    dev.set_sync_only(ConnId(1));
    dev.open(ConnId(1), DOC, OpenOptions::default());
    relay.open(ConnId(2), DOC, OpenOptions::default());
    let mut store: Vec<u8> = Vec::new();
    // Let the two meet over the empty document.
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
    let big = dev.heads(DOC).unwrap();
    let mut persisted = Vec::new();
    for (_, m) in drain(&mut dev) {
        relay.handle(ConnId(2), m).unwrap();
    }
    assert!(relay.is_stale(DOC), "the large change waits for a reload");
    assert_eq!(relay.heads(DOC).unwrap(), big);
    while let Some(o) = relay.poll_output() {
        match o {
            Output::Persist { id, write, .. } => {
                if let Write::Changes(bytes) = write {
                    store.extend_from_slice(&bytes);
                }
                persisted.push(id);
            }
            Output::Load { .. } => panic!("reloaded before the large change was durable"),
            _ => {}
        }
    }
    assert!(!persisted.is_empty());
    for id in persisted {
        relay.persisted(id);
    }
    let mut loads = 0;
    let mut to_dev = Vec::new();
    while let Some(o) = relay.poll_output() {
        match o {
            Output::Load { doc } => {
                loads += 1;
                relay.loaded(doc, Some(Document::load(&store).unwrap()));
            }
            Output::Send { msg, .. } => to_dev.push(msg),
            Output::Persist { id, .. } => relay.persisted(id),
            _ => {}
        }
    }
    assert_eq!(loads, 1);
    assert!(!relay.is_stale(DOC));
    assert!(
        !to_dev.is_empty(),
        "the relay answers the sync message once the reload applied its change"
    );
    for m in to_dev {
        dev.handle(ConnId(1), m).unwrap();
    }
    for _ in 0..5 {
        for (_, m) in drain(&mut dev) {
            relay.handle(ConnId(2), m).unwrap();
        }
        for (_, m) in drain(&mut relay) {
            dev.handle(ConnId(1), m).unwrap();
        }
    }
    assert!(dev.is_synced(ConnId(1), DOC));
    assert!(relay.is_synced(ConnId(2), DOC));
}

/// A gate that refuses changes setting the root key `forbidden`, keeps a record per accepted
/// change's actor, and logs what it was told.
#[derive(Default)]
struct ToyGate {
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Gate for ToyGate {
    fn checks(&self, conn: ConnId) -> bool {
        conn == ConnId(2)
    }
    fn opened(&mut self, _doc: DocId, _document: &Document, records: &[(Vec<u8>, Vec<u8>)]) {
        self.log
            .lock()
            .unwrap()
            .push(format!("opened with {} records", records.len()));
    }
    fn check(
        &mut self,
        _doc: DocId,
        _conn: ConnId,
        change: &Change,
        _document: &Document,
    ) -> Result<Accepted, String> {
        let sets_forbidden = change.decode().operations.iter().any(
            |op| matches!(&op.key, automerge::legacy::Key::Map(k) if k.as_str() == "forbidden"),
        );
        if sets_forbidden {
            return Err("the key forbidden may not be written".into());
        }
        self.log.lock().unwrap().push("accepted".into());
        Ok(Accepted {
            records: vec![(change.actor_id().to_bytes().to_vec(), b"writer".to_vec())],
        })
    }
    fn observe(&mut self, _doc: DocId, _change: &Change, _from: Option<ConnId>) {
        self.log.lock().unwrap().push("observed".into());
    }
    fn closed(&mut self, _doc: DocId) {
        self.log.lock().unwrap().push("closed".into());
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[test]
fn a_gate_refuses_a_change_with_those_that_depend_on_it_and_keeps_the_rest() {
    let (mut a, mut b) = pair(true);
    let gate = ToyGate::default();
    let log = gate.log.clone();
    b.set_gate(Box::new(gate));
    // b gets its gate after loading: it learns of the document when it next loads it.
    assert!(log.lock().unwrap().is_empty());
    let before = b.heads(DOC).unwrap();
    // a writes: one fine change, one forbidden, one on top of the forbidden one.
    let fine = write(&mut a, "fine");
    let forbidden = write(&mut a, "forbidden");
    let after = write(&mut a, "after");
    for id in [fine, forbidden, after] {
        a.persisted(id);
    }
    let raws: Vec<bytes::Bytes> = a
        .read(DOC, |d| {
            d.automerge()
                .get_changes(&before)
                .iter()
                .map(|c| bytes::Bytes::copy_from_slice(c.raw_bytes()))
                .collect()
        })
        .unwrap();
    assert_eq!(raws.len(), 3);
    b.handle(
        ConnId(2),
        Message::Changes {
            doc: DOC,
            changes: raws,
        },
    )
    .unwrap();
    let outs = outputs(&mut b);
    let mut order = Vec::new();
    for o in &outs {
        match o {
            Output::Persist {
                write: Write::GateRecord { .. },
                ..
            } => order.push("record"),
            Output::Persist {
                write: Write::Changes(c),
                ..
            } => {
                let stored = crate::check::split_chunks(c).unwrap();
                assert_eq!(stored.len(), 1, "only the fine change is stored");
                order.push("changes")
            }
            Output::Rejected {
                reason: Rejection::Rule(r),
                ..
            } => {
                assert!(r.contains("forbidden"), "{r}");
                order.push("rejected")
            }
            _ => {}
        }
    }
    assert_eq!(order.first(), Some(&"record"), "{order:?}");
    assert!(
        order.contains(&"changes") && order.contains(&"rejected"),
        "{order:?}"
    );
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .filter(|l| *l == "accepted")
            .count(),
        1
    );
    // Local changes are observed, not checked.
    write(&mut b, "local");
    assert!(log.lock().unwrap().iter().any(|l| l == "observed"));
    b.forget(DOC);
    assert!(log.lock().unwrap().iter().any(|l| l == "closed"));
}
