//! Syncing with peers: a change leaves only once durable, reconnect state, sync-only peers,
//! and the stall check.

use super::*;

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
    write(&mut devs[0], "first");
    // Sync both devices with the relay until everyone is quiet (and live).
    settle_star(&mut relay, &mut devs, 2);
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

#[test]
fn a_reconnect_after_writes_on_both_sides_sends_changes_not_the_whole_document() {
    // Both sides share one change, then each writes more offline than a third of the document:
    // Automerge on its own would send each side the whole document.
    let (mut a, mut b) = pair(true);
    write(&mut a, "shared");
    pump(&mut a, &mut b);
    a.remove_conn(ConnId(1));
    b.remove_conn(ConnId(2));
    drain(&mut a);
    drain(&mut b);
    for i in 0..10 {
        write(&mut a, &format!("a{i}"));
        write(&mut b, &format!("b{i}"));
    }
    drain(&mut a);
    drain(&mut b);
    a.open(ConnId(1), DOC, OpenOptions::default());
    b.open(ConnId(2), DOC, OpenOptions::default());
    let mut chunks = 0;
    for _ in 0..100 {
        let to_b = drain(&mut a);
        let to_a = drain(&mut b);
        if to_a.is_empty() && to_b.is_empty() {
            break;
        }
        for (_, m) in to_b.iter().chain(&to_a) {
            if let Message::Sync { data, .. } = m {
                for c in sync::Message::decode(data).unwrap().changes.iter() {
                    // A chunk's type follows its magic bytes and checksum: 1 is a change.
                    assert_eq!(
                        c.get(8),
                        Some(&1),
                        "a sync message carried a document chunk"
                    );
                    chunks += 1;
                }
            }
        }
        for (_, m) in to_b {
            b.handle(ConnId(2), m).unwrap();
        }
        for (_, m) in to_a {
            a.handle(ConnId(1), m).unwrap();
        }
    }
    assert_eq!(chunks, 20, "each side's ten changes, sent once");
    assert_eq!(a.heads(DOC), b.heads(DOC));
    assert!(b.is_synced(ConnId(2), DOC) && a.is_synced(ConnId(1), DOC));
}

/// A peer's change arrives in a sync message, and before it is durable the peer sends another
/// message (no changes, its heads now equal ours). Automerge takes that for proof the peer has
/// heard our heads; it has not (our answer waited for the store), and must still hear them.
#[test]
fn a_sync_answer_held_for_durability_is_sent_after_an_echo_of_our_heads() {
    let mut relay = Engine::new(EngineConfig::relay());
    relay.create(DOC, doc_with_actor(2));
    relay.open(ConnId(2), DOC, OpenOptions::default());
    let opening = drain(&mut relay);
    assert!(!opening.is_empty(), "the relay opens with a sync message");
    let (peer, raw) = foreign_change(9, "k", "v");
    let head = peer.get_heads();
    relay
        .handle(ConnId(2), sync_with_chunks(&peer, vec![raw]))
        .unwrap();
    let held: Vec<PersistId> = outputs(&mut relay)
        .into_iter()
        .filter_map(|o| match o {
            Output::Persist { id, .. } => Some(id),
            Output::Send { msg, .. } => panic!("answered before durable: {msg:?}"),
            _ => None,
        })
        .collect();
    assert!(!held.is_empty());
    relay
        .handle(ConnId(2), sync_with_chunks(&peer, Vec::new()))
        .unwrap();
    let mut sends = drain(&mut relay);
    for id in held {
        relay.persisted(id);
    }
    sends.extend(drain(&mut relay));
    let told = sends.iter().any(|(_, m)| match m {
        Message::Sync { data, .. } => sync::Message::decode(data).unwrap().heads == head,
        _ => false,
    });
    assert!(
        told,
        "the peer never hears the relay has its change: {sends:?}"
    );
}

/// A peer holding nothing gets the whole document; its answers to our first message (it still
/// holds nothing) and to the document (it holds our heads) ask for nothing more: the relay
/// stays quiet, as Automerge would.
#[test]
fn a_peer_that_took_the_whole_document_is_not_sent_our_heads_again() {
    let mut relay = Engine::new(EngineConfig::relay());
    relay.create(DOC, doc_with_actor(2));
    write(&mut relay, "title");
    drain(&mut relay);
    relay.open(ConnId(2), DOC, OpenOptions::default());
    let opening = drain(&mut relay);
    let mut peer = automerge::Automerge::new();
    let mut state = sync::State::new();
    let request = peer.generate_sync_message(&mut state).unwrap();
    let as_sync = |m: sync::Message| Message::Sync {
        doc: DOC,
        reset: false,
        data: m.encode().into(),
    };
    relay.handle(ConnId(2), as_sync(request)).unwrap();
    let whole = drain(&mut relay);
    let mut answers = Vec::new();
    for (_, m) in opening.into_iter().chain(whole) {
        let Message::Sync { data, .. } = m else {
            continue;
        };
        peer.receive_sync_message(&mut state, sync::Message::decode(&data).unwrap())
            .unwrap();
        if let Some(a) = peer.generate_sync_message(&mut state) {
            answers.push(a);
        }
    }
    assert_eq!(peer.get_heads(), relay.heads(DOC).unwrap());
    for a in answers {
        relay.handle(ConnId(2), as_sync(a)).unwrap();
    }
    let more = drain(&mut relay);
    assert!(more.is_empty(), "sent again: {more:?}");
}

/// A peer that syncs every change (a WebSocket client: sync mode only) has its reconnect
/// state written at most once per `sync_state_every`, and the latest when it leaves.
#[test]
fn a_peer_syncing_every_change_has_its_state_written_at_most_once_per_interval() {
    let mut relay = Engine::new(EngineConfig::relay());
    relay.create(DOC, doc_with_actor(2));
    let mut client = Engine::new(EngineConfig::device());
    client.create(DOC, doc_with_actor(1));
    relay.set_sync_only(ConnId(2));
    relay.open(
        ConnId(2),
        DOC,
        OpenOptions {
            stable_peer: Some(b"browser".to_vec()),
            ..Default::default()
        },
    );
    client.open(ConnId(1), DOC, OpenOptions::default());
    let mut states = 0;
    let exchange = |relay: &mut Engine, client: &mut Engine, states: &mut usize| {
        for _ in 0..20 {
            let to_relay = drain(client);
            let mut to_client = Vec::new();
            loop {
                let mut persisted = Vec::new();
                while let Some(o) = relay.poll_output() {
                    match o {
                        Output::Persist { id, write, .. } => {
                            *states += usize::from(matches!(write, Write::SyncState { .. }));
                            persisted.push(id);
                        }
                        Output::Send { msg, .. } => to_client.push(msg),
                        _ => {}
                    }
                }
                if persisted.is_empty() {
                    break;
                }
                for id in persisted {
                    relay.persisted(id);
                }
            }
            if to_relay.is_empty() && to_client.is_empty() {
                return;
            }
            for (_, m) in to_relay {
                relay.handle(ConnId(2), m).unwrap();
            }
            for m in to_client {
                client.handle(ConnId(1), m).unwrap();
            }
        }
        panic!("never quiet");
    };
    exchange(&mut relay, &mut client, &mut states);
    assert_eq!(states, 1, "the first exchange writes the state");
    for i in 0..5 {
        write(&mut client, &format!("k{i}"));
        exchange(&mut relay, &mut client, &mut states);
        assert!(relay.is_synced(ConnId(2), DOC));
    }
    // Without the interval, these five exchanges wrote it twice more (a write each time the
    // relay saw the peer fall behind and catch up).
    assert_eq!(
        states, 1,
        "exchanges within the interval wrote the state again"
    );
    relay.set_now(relay.now + EngineConfig::relay().sync_state_every);
    for i in 0..5 {
        write(&mut client, &format!("later {i}"));
        exchange(&mut relay, &mut client, &mut states);
    }
    assert_eq!(states, 2, "exchanges after the interval write it once");
    relay.close(ConnId(2), DOC);
    let left: usize = outputs(&mut relay)
        .iter()
        .filter(|o| {
            matches!(
                o,
                Output::Persist {
                    write: Write::SyncState { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(left, 1, "leaving writes the latest state");
}
