//! Pumps left due: generated one per poll and run before any new input; and a change sent
//! to WebSocket readers ahead of its write.

use super::*;

/// A relay with `readers + 1` sync-only peers (WebSocket clients) on `DOC`, each a device
/// engine, all synced. Client `i` is connection `ConnId(10 + i)` on the relay.
fn crowd(readers: usize, cfg: EngineConfig) -> (Engine, Vec<Engine>) {
    let mut relay = Engine::new(cfg);
    relay.create(DOC, doc_with_actor(200));
    let mut clients = Vec::new();
    for i in 0..=readers {
        let conn = ConnId(10 + i as u64);
        relay.set_sync_only(conn);
        relay.open(conn, DOC, OpenOptions::default());
        let mut c = Engine::new(EngineConfig::device());
        c.create(DOC, doc_with_actor(i as u8 + 1));
        // Speaks the sync protocol only, like automerge-repo.
        c.set_sync_only(ConnId(1));
        c.open(ConnId(1), DOC, OpenOptions::default());
        clients.push(c);
    }
    settle_star(&mut relay, &mut clients, 10);
    (relay, clients)
}

/// Client `i` writes `key`; the relay takes its messages. Returns the relay's outputs then,
/// its writes not reported durable.
fn client_writes(relay: &mut Engine, clients: &mut [Engine], i: usize, key: &str) -> Vec<Output> {
    write(&mut clients[i], key);
    for (_, m) in drain(&mut clients[i]) {
        relay.handle(ConnId(10 + i as u64), m).unwrap();
    }
    outputs(relay)
}

fn persist_ids(outs: &[Output]) -> Vec<PersistId> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Persist { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

/// Readers (by client index) sent a `Sync` among `outs`.
fn synced_readers(outs: &[Output]) -> Vec<usize> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send {
                conn,
                msg: Message::Sync { .. },
            } => Some((conn.0 - 10) as usize),
            _ => None,
        })
        .collect()
}

/// Without forwarding ahead: the relay takes client 0's new change and reports its write
/// durable.
fn write_from_first(relay: &mut Engine, clients: &mut [Engine]) {
    let outs = client_writes(relay, clients, 0, "news");
    let persisted = persist_ids(&outs);
    assert!(!persisted.is_empty(), "the change was not written");
    for id in persisted {
        relay.persisted(id);
    }
}

fn not_ahead() -> EngineConfig {
    EngineConfig {
        forward_before_durable: false,
        ..EngineConfig::relay()
    }
}

#[test]
fn each_readers_sync_message_is_generated_as_the_driver_polls() {
    let (mut relay, mut clients) = crowd(4, not_ahead());
    write_from_first(&mut relay, &mut clients);
    // The writer's acknowledgement may be queued; no reader's message is.
    assert!(
        relay
            .out
            .iter()
            .all(|o| !matches!(o, Output::Send { conn, .. } if *conn != ConnId(10))),
        "readers' messages were generated before the driver polled"
    );
    assert!(relay.due_pumps.len() >= 4, "{:?}", relay.due_pumps);
    let first = loop {
        match relay.poll_output().expect("a reader's message") {
            Output::Send { conn, msg } if conn != ConnId(10) => break (conn, msg),
            _ => continue,
        }
    };
    assert!(
        relay.due_pumps.len() >= 3,
        "the first message came after the others were generated"
    );
    // Everyone converges, the first message included.
    clients[(first.0 .0 - 10) as usize]
        .handle(ConnId(1), first.1)
        .unwrap();
    settle_star(&mut relay, &mut clients, 10);
    let heads = relay.heads(DOC).unwrap();
    for c in &clients {
        assert_eq!(c.heads(DOC).unwrap(), heads);
    }
}

#[test]
fn an_input_runs_the_pumps_left_due_first() {
    let (mut relay, mut clients) = crowd(3, not_ahead());
    write_from_first(&mut relay, &mut clients);
    assert!(!relay.due_pumps.is_empty());
    // A reader leaves before the driver polled: what it was due is generated first (as it
    // was when every pump ran inside `persisted`), then the removal.
    relay.remove_conn(ConnId(13));
    assert!(relay.due_pumps.is_empty());
    let sent: Vec<ConnId> = outputs(&mut relay)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { conn, .. } => Some(conn),
            _ => None,
        })
        .collect();
    for reader in [ConnId(11), ConnId(12), ConnId(13)] {
        assert!(
            sent.contains(&reader),
            "{reader:?} was sent nothing: {sent:?}"
        );
    }
}

#[test]
fn websocket_readers_get_a_change_before_its_write_and_its_sender_after() {
    let (mut relay, mut clients) = crowd(3, EngineConfig::relay());
    let outs = client_writes(&mut relay, &mut clients, 0, "news");
    let writes = persist_ids(&outs);
    assert!(!writes.is_empty(), "the change was not written");
    let mut early = synced_readers(&outs);
    early.sort_unstable();
    assert_eq!(
        early,
        vec![1, 2, 3],
        "readers sent nothing before the write"
    );
    // The readers take it from those messages alone.
    for o in outs {
        if let Output::Send { conn, msg } = o {
            clients[(conn.0 - 10) as usize]
                .handle(ConnId(1), msg)
                .unwrap();
        }
    }
    let heads = clients[0].heads(DOC).unwrap();
    for c in &clients[1..] {
        assert_eq!(c.heads(DOC).unwrap(), heads);
    }
    // The sender hears back only once the write is durable.
    for id in writes {
        relay.persisted(id);
    }
    let after = outputs(&mut relay);
    assert!(
        synced_readers(&after).contains(&0),
        "the sender was not answered"
    );
    assert!(after.iter().any(|o| matches!(o, Output::Changed { .. })));
    for (i, c) in clients.iter_mut().enumerate() {
        drain(c);
        let _ = i;
    }
}

#[test]
fn a_peer_whose_own_write_is_in_flight_is_sent_nothing_ahead() {
    let (mut relay, mut clients) = crowd(2, EngineConfig::relay());
    // Client 1's change: its write stays in flight, the others get it ahead.
    let outs = client_writes(&mut relay, &mut clients, 1, "mine");
    let writes = persist_ids(&outs);
    assert!(!writes.is_empty());
    let mut early = synced_readers(&outs);
    early.sort_unstable();
    assert_eq!(early, vec![0, 2]);
    // Pumped ahead, client 1 would hear the relay's heads, its change among them, before the
    // relay holds it: it would take the change for saved.
    relay.pump_ahead(DOC, ConnId(11));
    assert!(synced_readers(&outputs(&mut relay)).is_empty());
    for id in writes {
        relay.persisted(id);
    }
    assert!(synced_readers(&outputs(&mut relay)).contains(&1));
}

#[test]
fn a_device_sends_nothing_ahead_of_its_writes() {
    assert!(!EngineConfig::device().forward_before_durable);
    let cfg = EngineConfig {
        forward_before_durable: false,
        ..EngineConfig::relay()
    };
    let (mut relay, mut clients) = crowd(2, cfg);
    let outs = client_writes(&mut relay, &mut clients, 0, "news");
    assert!(synced_readers(&outs).is_empty(), "sent before the write");
}
