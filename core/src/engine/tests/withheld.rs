//! A peer whose heads name changes it never sends: resynced (a weft peer), closed once its heads
//! have named them for `retry_after` and a resync cannot help (a sync-only peer, any peer still
//! withholding after a resync), never closed for offering changes we refuse (read-only).

use super::*;

const CONN: ConnId = ConnId(2);

/// A client speaking Automerge's sync protocol with its own copy of `DOC`.
struct Client {
    am: automerge::Automerge,
    state: sync::State,
    /// Its change, and its bytes.
    raw: Vec<u8>,
    own: automerge::ChangeHash,
    /// Puts its change in its first message, whatever the relay said (a client ignoring
    /// that the relay takes no changes from it).
    offers_first: bool,
    /// Takes the changes out of every message it sends (a hostile or broken client).
    withholds: bool,
    /// Drops its first message that carries changes (as if it were lost on the way).
    loses_first: bool,
    /// Sends its last change alone in its first message that carries changes, before the
    /// change it depends on (what a Bloom filter's false positive leads to).
    out_of_order: bool,
    /// Starts a fresh sync session when told to (weft's `reset`; the WebSocket wire has none).
    honours_reset: bool,
}

impl Client {
    /// A client holding one change the relay lacks.
    fn new(withholds: bool, loses_first: bool, honours_reset: bool) -> Self {
        let (am, raw) = foreign_change(1, "title", "from the client");
        Client {
            own: am.get_heads()[0],
            offers_first: false,
            raw,
            am,
            state: sync::State::new(),
            withholds,
            loses_first,
            out_of_order: false,
            honours_reset,
        }
    }

    /// Its next message, if any, as sent on the wire.
    fn next(&mut self) -> Option<Message> {
        let mut msg = self.am.generate_sync_message(&mut self.state)?;
        if !msg.changes.is_empty() && std::mem::take(&mut self.loses_first) {
            return None;
        }
        if !msg.changes.is_empty() && std::mem::take(&mut self.out_of_order) {
            let last = self.am.get_last_local_change().unwrap();
            // Recorded as sent, both of them.
            msg.changes = vec![last.raw_bytes().to_vec()].into();
        }
        if std::mem::take(&mut self.offers_first) {
            msg.changes = vec![self.raw.clone()].into();
        } else if self.withholds {
            msg.changes = Vec::<Vec<u8>>::new().into();
        }
        Some(Message::Sync {
            doc: DOC,
            reset: false,
            data: msg.encode().into(),
        })
    }

    fn receive(&mut self, reset: bool, data: &[u8]) {
        if reset && self.honours_reset {
            self.state = sync::State::new();
        }
        let msg = sync::Message::decode(data).unwrap();
        self.am.receive_sync_message(&mut self.state, msg).unwrap();
    }
}

/// What the relay did with the client, round by round (250 ms each), and when both are quiet
/// with time passing beyond `retry_after` (at most `rounds` steps): its outputs other than sends, and how many
/// of its sync messages asked for a reset.
fn drive(relay: &mut Engine, client: &mut Client, rounds: usize) -> (Vec<Output>, usize) {
    let mut others = Vec::new();
    let mut resets = 0;
    let mut now = 0;
    let mut to_relay: Vec<Message> = client.next().into_iter().collect();
    for _ in 0..rounds {
        if to_relay.is_empty() {
            now += relay.cfg.retry_after + 1;
            relay.tick(now);
        } else {
            // A round trip takes a while.
            now += 250;
            relay.set_now(now);
        }
        for m in to_relay.drain(..) {
            relay.handle(CONN, m).unwrap();
        }
        let mut persisted = true;
        while std::mem::take(&mut persisted) {
            while let Some(o) = relay.poll_output() {
                match o {
                    Output::Persist { id, .. } => {
                        relay.persisted(id);
                        persisted = true;
                    }
                    Output::Send {
                        msg: Message::Sync { reset, data, .. },
                        ..
                    } => {
                        resets += usize::from(reset);
                        client.receive(reset, &data);
                        to_relay.extend(client.next());
                    }
                    Output::ProtocolError { .. } => {
                        others.push(o);
                        return (others, resets);
                    }
                    o => others.push(o),
                }
            }
        }
    }
    (others, resets)
}

fn relay_with(sync_only: bool, accept_changes: bool) -> Engine {
    let mut relay = Engine::new(EngineConfig::relay());
    relay.create(DOC, doc_with_actor(9));
    // A relay holding nothing makes Automerge forget what it sent (the peer "lost its data").
    write(&mut relay, "base");
    drain(&mut relay);
    relay.add_conn(CONN);
    if sync_only {
        relay.set_sync_only(CONN);
    }
    relay.open(
        CONN,
        DOC,
        OpenOptions {
            accept_changes,
            ..Default::default()
        },
    );
    relay
}

fn withheld(outs: &[Output]) -> bool {
    outs.iter().any(|o| {
        matches!(
            o,
            Output::ProtocolError {
                conn: CONN,
                error: EngineError::Withheld { doc: DOC },
                ..
            }
        )
    })
}

#[test]
fn a_sync_only_peer_withholding_its_changes_is_closed() {
    let mut relay = relay_with(true, true);
    let mut client = Client::new(true, false, false);
    let (outs, _) = drive(&mut relay, &mut client, 50);
    assert!(withheld(&outs), "{outs:?}");
    assert!(!knows_client(&relay, &client), "nothing was taken");
}

#[test]
fn a_weft_peer_still_withholding_after_a_resync_is_closed() {
    let mut relay = relay_with(false, true);
    let mut client = Client::new(true, false, true);
    let (outs, resets) = drive(&mut relay, &mut client, 50);
    assert!(withheld(&outs), "{outs:?}");
    assert!(resets >= 1, "resynced first");
}

#[test]
fn a_weft_peer_whose_change_was_lost_is_resynced_and_converges() {
    let mut relay = relay_with(false, true);
    let mut client = Client::new(false, true, true);
    let (outs, resets) = drive(&mut relay, &mut client, 50);
    assert!(!withheld(&outs), "{outs:?}");
    assert_eq!(resets, 1);
    assert!(knows_client(&relay, &client));
}

#[test]
fn a_read_only_peer_offering_changes_is_never_closed() {
    let mut relay = relay_with(true, false);
    let mut client = Client::new(true, false, false);
    client.offers_first = true;
    let (outs, _) = drive(&mut relay, &mut client, 50);
    assert!(!withheld(&outs), "{outs:?}");
    assert!(
        outs.iter().any(|o| matches!(
            o,
            Output::Rejected {
                reason: Rejection::ReadOnly,
                ..
            }
        )),
        "{outs:?}"
    );
    assert!(!knows_client(&relay, &client));
}

/// Whether the relay holds the client's change.
fn knows_client(relay: &Engine, client: &Client) -> bool {
    relay.heads(DOC).unwrap().contains(&client.own)
}

/// A gate that takes every change, so that the engine checks changes one by one in causal
/// order (as the relay's write rules do).
struct TakeAll;

impl Gate for TakeAll {
    fn checks(&self, _conn: ConnId) -> bool {
        true
    }
    fn opened(&mut self, _doc: DocId, _document: &Document, _records: &[(Vec<u8>, Vec<u8>)]) {}
    fn check(
        &mut self,
        _doc: DocId,
        _conn: ConnId,
        _change: &crate::check::CheckedChange,
        _document: &Document,
    ) -> Result<Accepted, String> {
        Ok(Accepted::default())
    }
    fn observe(&mut self, _doc: DocId, _change: &Change, _from: Option<ConnId>) {}
    fn closed(&mut self, _doc: DocId) {}
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// A change whose dependency had not arrived is dropped by the gate, but its sender counts
/// it as sent: the relay asks it (Automerge's sync reset, which a stock automerge-repo client
/// honours) to send again, and they converge at once, with no stall, resync or close.
#[test]
fn a_change_sent_before_its_dependency_is_asked_for_again() {
    for sync_only in [true, false] {
        let mut relay = relay_with(sync_only, true);
        relay.set_gate(Box::new(TakeAll));
        let mut client = Client::new(false, false, false);
        client
            .am
            .transact::<_, _, automerge::AutomergeError>(|tx| {
                tx.put(ROOT, "second", "depends on the first")?;
                Ok(())
            })
            .unwrap();
        client.out_of_order = true;
        let (outs, resets) = drive(&mut relay, &mut client, 20);
        assert!(!withheld(&outs), "{outs:?}");
        assert_eq!(resets, 0, "no resync was needed");
        assert_eq!(
            relay.heads(DOC).unwrap(),
            {
                let mut h = client.am.get_heads();
                h.sort();
                h
            },
            "sync-only {sync_only}"
        );
    }
}
