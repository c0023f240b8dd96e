//! What peers send: checked, refused over a limit, read-only or past the byte limit, and
//! nothing of a refused message stored.

use super::*;

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
                    data: data.clone().into()
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

#[test]
fn imported_changes_wait_unfolded_are_stored_as_this_nodes_and_reach_live_peers() {
    let (mut a, mut b) = pair(true);
    // Changes another relay accepted: a foreign actor's two changes, the second on the first.
    let (mut other, first) = foreign_change(9, "from", "elsewhere");
    let mut tx = other.transaction();
    tx.put(ROOT, "then", "more").unwrap();
    tx.commit();
    let second = other.get_last_local_change().unwrap().raw_bytes().to_vec();
    let check = |raw: &[u8]| {
        let mut out = Vec::new();
        crate::check::check_chunks(raw, &crate::check::Limits::default(), &mut 0, &mut out)
            .unwrap();
        out
    };

    // One whose dependency the document lacks: nothing done, the caller falls back.
    assert_eq!(b.import(DOC, check(&second), second.clone()).unwrap(), None);
    assert!(outputs(&mut b).is_empty());

    // Both: kept in memory unfolded, persisted as this node's own (not logged again), as the
    // chunk the driver wrote already (nothing written twice).
    let both = [first.clone(), second].concat();
    assert_eq!(b.import(DOC, check(&both), both.clone()).unwrap(), Some(2));
    assert!(b.has_pending(DOC), "no Automerge work on import");
    let outs = outputs(&mut b);
    let persists: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Persist {
                id,
                received,
                write,
                ..
            } => {
                assert_eq!(write, &Write::Stored(both.clone()));
                Some((*id, *received))
            }
            _ => None,
        })
        .collect();
    assert_eq!(persists.len(), 1);
    assert!(!persists[0].1, "imports are not received changes");
    // Once durable, the live peer gets them as they came.
    b.persisted(persists[0].0);
    let to_a = drain(&mut b);
    assert!(to_a.iter().any(|(c, m)| *c == ConnId(2)
        && matches!(m, Message::Changes { changes, .. } if changes.len() == 2)));
    for (_, m) in to_a {
        a.handle(ConnId(1), m).unwrap();
    }
    pump(&mut a, &mut b);
    let got = a
        .read(DOC, |d| {
            automerge::ReadDoc::get(d.automerge(), ROOT, "then")
                .unwrap()
                .map(|(v, _)| v.to_string())
        })
        .unwrap();
    assert_eq!(got.as_deref(), Some("\"more\""));

    // Again: nothing new.
    assert_eq!(
        b.import(DOC, check(&first), first.clone()).unwrap(),
        Some(0)
    );
    // A document that is not loaded is an error.
    let other_doc = DocId::from_bytes([8; 16]);
    assert!(b.import(other_doc, check(&first), first.clone()).is_err());
}

/// Acks naming changes we lack make us resync once per `retry_after`, however many arrive: a
/// resync costs a sync message over the whole document, and any peer can send acks.
#[test]
fn acks_naming_unknown_changes_resync_at_most_once_per_retry_after() {
    let (_, mut b) = pair(true);
    let unknown = automerge::ChangeHash([7; 32]);
    let resyncs = |sends: &[(ConnId, Message)]| {
        sends
            .iter()
            .filter(|(c, m)| *c == ConnId(2) && matches!(m, Message::Sync { reset: true, .. }))
            .count()
    };
    let mut sent = 0;
    for i in 0..50 {
        b.set_now(i * 10);
        let ack = Message::Ack {
            doc: DOC,
            heads: vec![unknown],
        };
        b.handle(ConnId(2), ack).unwrap();
        sent += resyncs(&drain(&mut b));
    }
    assert_eq!(sent, 1, "one resync within retry_after");
    b.set_now(EngineConfig::relay().retry_after + 500);
    let ack = Message::Ack {
        doc: DOC,
        heads: vec![unknown],
    };
    b.handle(ConnId(2), ack).unwrap();
    assert_eq!(
        resyncs(&drain(&mut b)),
        1,
        "another once retry_after has passed"
    );
}
