//! Lazy folding: a stale document reloaded for a peer in sync mode, a large change applied by
//! the reload.

use super::*;

/// Runs the relay's outputs: persists land in `store` at once, loads read it.
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

/// A relay engine with lazy folding: while its only peer is live, received changes leave
/// memory once durable (the document goes stale); a new peer in sync mode makes it reload the
/// document from the store, and that peer receives every change.
#[test]
fn a_stale_relay_document_reloads_for_a_peer_in_sync_mode() {
    let mut dev = Engine::new(EngineConfig::device());
    let mut relay = Engine::new(EngineConfig::relay());
    dev.create(DOC, doc_with_actor(1));
    let mut store: Vec<u8> = Vec::new();
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

/// A gate that accepts everything, counts what it follows since the document was last
/// materialized, and wants a materialization past 100.
#[derive(Default)]
struct CountingGate {
    followed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    most: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    materialized: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingGate {
    fn follow(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.followed.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(n, SeqCst);
    }
}

impl Gate for CountingGate {
    fn checks(&self, conn: ConnId) -> bool {
        conn == ConnId(2)
    }
    fn opened(&mut self, _: DocId, _: &Document, _: &[(Vec<u8>, Vec<u8>)]) {}
    fn check(
        &mut self,
        _: DocId,
        _: ConnId,
        _: &crate::check::CheckedChange,
        _: &Document,
    ) -> Result<Accepted, String> {
        self.follow();
        Ok(Accepted::default())
    }
    fn materialized(&mut self, _: DocId, _: &Document) {
        use std::sync::atomic::Ordering::SeqCst;
        self.followed.store(0, SeqCst);
        self.materialized.fetch_add(1, SeqCst);
    }
    fn observe(&mut self, _: DocId, _: &Change, _: Option<ConnId>) {
        self.follow();
    }
    fn closed(&mut self, _: DocId) {}
    fn wants_materialized(&self, _: DocId) -> bool {
        self.followed.load(std::sync::atomic::Ordering::SeqCst) > 100
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// A document every peer follows live stays stale while it is written; once its gate has
/// followed too much since the last materialization, the relay reloads it so the gate can let
/// go, and what the gate keeps stays bounded.
#[test]
fn a_gate_that_followed_too_much_gets_a_reload_of_a_stale_document() {
    use std::sync::atomic::Ordering::SeqCst;
    let mut dev = Engine::new(EngineConfig::device());
    let mut relay = Engine::new(EngineConfig::relay());
    let gate = CountingGate::default();
    let (most, reloads) = (gate.most.clone(), gate.materialized.clone());
    relay.set_gate(Box::new(gate));
    dev.create(DOC, doc_with_actor(1));
    let mut store: Vec<u8> = Vec::new();
    relay.load(DOC);
    run_relay(&mut relay, &mut store);
    dev.open(ConnId(1), DOC, OpenOptions::default());
    relay.open(ConnId(2), DOC, OpenOptions::default());
    let exchange = |dev: &mut Engine, relay: &mut Engine, store: &mut Vec<u8>| {
        for _ in 0..10 {
            let to_relay = drain(dev);
            for (_, m) in to_relay {
                relay.handle(ConnId(2), m).unwrap();
            }
            let to_dev = run_relay(relay, store);
            if to_dev.is_empty() {
                break;
            }
            for (_, m) in to_dev {
                dev.handle(ConnId(1), m).unwrap();
            }
        }
    };
    exchange(&mut dev, &mut relay, &mut store);
    let before = reloads.load(SeqCst);
    for i in 0..1000 {
        write(&mut dev, &format!("k{i}"));
        exchange(&mut dev, &mut relay, &mut store);
    }
    assert!(relay.is_stale(DOC) || reloads.load(SeqCst) > before);
    assert!(
        reloads.load(SeqCst) >= before + 5,
        "reloads for the gate: {}, most followed {}",
        reloads.load(SeqCst) - before,
        most.load(SeqCst)
    );
    assert!(
        most.load(SeqCst) <= 200,
        "the gate followed {}",
        most.load(SeqCst)
    );
    assert_eq!(relay.heads(DOC), dev.heads(DOC));
}

/// Delivers messages between a device (its peer `ConnId(1)`) and the relay (its peer
/// `ConnId(2)`) until both are quiet.
fn settle(dev: &mut Engine, relay: &mut Engine, store: &mut Vec<u8>) {
    for _ in 0..20 {
        let to_relay = drain(dev);
        let to_dev = run_relay(relay, store);
        if to_relay.is_empty() && to_dev.is_empty() {
            return;
        }
        for (_, m) in to_relay {
            relay.handle(ConnId(2), m).unwrap();
        }
        for (_, m) in to_dev {
            dev.handle(ConnId(1), m).unwrap();
        }
    }
    panic!("device and relay never went quiet");
}

/// A change another node wrote into the store before the engine imports it (a cluster's
/// follower writes the log's entries, then hands them over) is in a stale document's reload
/// if the reload reads the store in between. The import then finds it known; the reload
/// announces it to the live peers instead, so they still receive it.
#[test]
fn a_change_a_reload_finds_in_the_store_reaches_the_live_peers() {
    let mut dev = Engine::new(EngineConfig::device());
    let mut relay = Engine::new(EngineConfig::relay());
    // Received changes leave memory at once (the document goes stale after each).
    relay.cfg.fold_delay = 0;
    dev.create(DOC, doc_with_actor(1));
    let mut store: Vec<u8> = Vec::new();
    relay.load(DOC);
    run_relay(&mut relay, &mut store);
    dev.open(ConnId(1), DOC, OpenOptions::default());
    relay.open(ConnId(2), DOC, OpenOptions::default());
    settle(&mut dev, &mut relay, &mut store);
    write(&mut dev, "first");
    settle(&mut dev, &mut relay, &mut store);
    write(&mut dev, "second");
    settle(&mut dev, &mut relay, &mut store);
    assert!(relay.is_stale(DOC), "live peer, fast path: stale");
    assert_eq!(relay.heads(DOC), dev.heads(DOC));

    // Written by the driver, not yet imported; the reload reads it.
    let (_, raw) = foreign_change(9, "from", "elsewhere");
    store.extend_from_slice(&raw);
    assert!(!relay.materialize(DOC));
    settle(&mut dev, &mut relay, &mut store);
    let checked = {
        let mut out = Vec::new();
        crate::check::check_chunks(&raw, &crate::check::Limits::default(), &mut 0, &mut out)
            .unwrap();
        out
    };
    assert_eq!(relay.import(DOC, checked, raw.clone()).unwrap(), Some(0));
    settle(&mut dev, &mut relay, &mut store);

    let got = dev
        .read(DOC, |d| {
            automerge::ReadDoc::get(d.automerge(), ROOT, "from")
                .unwrap()
                .map(|(v, _)| v.to_string())
        })
        .unwrap();
    assert_eq!(got.as_deref(), Some("\"elsewhere\""));
    assert_eq!(relay.heads(DOC), dev.heads(DOC));
}
