//! Devices edit offline and across a faulty network, with stores that fail writes and compact
//! often; once the network heals, every device shows the same document, in memory and in its
//! store.
//!
//! `WEFT_PROPTEST_CASES` raises the number of cases for long runs (default 200); `WEFT_SIM_TRACE`
//! prints every message delivered once the network heals, `WEFT_SIM_TRACE_ALL` from the start.

use proptest::prelude::*;
use weft_core::automerge::Change;
use weft_core::check::CheckedChange;
use weft_core::engine::{Accepted, ConnId, EngineConfig, Gate};
use weft_core::{DocId, Document};
use weft_tests::sim::{Faults, Sim};

#[derive(Clone, Debug)]
enum Op {
    Edit { node: usize, doc: usize },
    Partition { a: usize, b: usize },
    Heal { a: usize, b: usize },
    Disconnect { a: usize, b: usize },
    Connect { a: usize, b: usize },
    Run { ms: u64 },
}

fn op(nodes: usize, docs: usize) -> impl Strategy<Value = Op> {
    let pair = (0..nodes, 0..nodes).prop_filter("distinct nodes", |(a, b)| a != b);
    prop_oneof![
        6 => (0..nodes, 0..docs).prop_map(|(node, doc)| Op::Edit { node, doc }),
        1 => pair.clone().prop_map(|(a, b)| Op::Partition { a, b }),
        1 => pair.clone().prop_map(|(a, b)| Op::Heal { a, b }),
        1 => pair.clone().prop_map(|(a, b)| Op::Disconnect { a, b }),
        1 => pair.prop_map(|(a, b)| Op::Connect { a, b }),
        2 => (1u64..3_000).prop_map(|ms| Op::Run { ms }),
    ]
}

#[derive(Clone, Debug)]
struct Scenario {
    nodes: usize,
    docs: usize,
    /// Node 0 is a relay every device talks through (star), or every pair is linked (mesh).
    star: bool,
    /// Loss, duplication, largest delay, store write failures.
    faults: (f64, f64, u64, f64),
    persist_delay: u64,
    ops: Vec<Op>,
    seed: u64,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (3usize..=7, 1usize..=2, any::<bool>(), 0u64..5, any::<u64>()).prop_flat_map(
        |(nodes, docs, star, pd, seed)| {
            // Store failures in a third of the scenarios.
            let store = prop_oneof![2 => Just(0.0), 1 => 0.0..0.05f64];
            let faults = (0.0..0.3f64, 0.0..0.2f64, 0u64..50, store);
            (faults, proptest::collection::vec(op(nodes, docs), 1..60)).prop_map(
                move |(faults, ops)| Scenario {
                    nodes,
                    docs,
                    star,
                    faults,
                    persist_delay: pd,
                    ops,
                    seed,
                },
            )
        },
    )
}

fn run(s: &Scenario) -> Result<(), TestCaseError> {
    let docs: Vec<DocId> = (0..s.docs)
        .map(|i| DocId::from_bytes([i as u8 + 1; 16]))
        .collect();
    let configs = (0..s.nodes)
        .map(|i| {
            if s.star && i == 0 {
                EngineConfig::relay()
            } else {
                EngineConfig::device()
            }
        })
        .collect();
    let mut sim = Sim::new(configs, docs.clone(), s.seed);
    sim.trace = std::env::var("WEFT_SIM_TRACE_ALL").is_ok();
    sim.persist_delay = s.persist_delay;
    let linked = |a: usize, b: usize| !s.star || a == 0 || b == 0;
    for a in 0..s.nodes {
        for b in a + 1..s.nodes {
            if linked(a, b) {
                sim.connect(a, b);
            }
        }
    }
    sim.faults = Faults {
        loss: s.faults.0,
        duplicate: s.faults.1,
        max_delay: s.faults.2,
        store_failure: s.faults.3,
    };
    let mut n = 0;
    for op in &s.ops {
        match *op {
            Op::Edit { node, doc } => {
                n += 1;
                let value = format!("n{node}-{n}");
                prop_assert!(sim.edit(node, docs[doc], &value), "edit refused");
            }
            Op::Partition { a, b } if linked(a, b) => sim.partition(a, b, true),
            Op::Heal { a, b } if linked(a, b) => sim.partition(a, b, false),
            Op::Disconnect { a, b } if linked(a, b) => sim.disconnect(a, b),
            Op::Connect { a, b } if linked(a, b) => sim.connect(a, b),
            Op::Run { ms } => sim.run_for(ms, 20_000),
            _ => {}
        }
    }
    // The network heals: no faults, every link up.
    sim.faults = Faults::default();
    sim.heal_all();
    sim.trace = std::env::var("WEFT_SIM_TRACE").is_ok();
    prop_assert!(sim.run_until_quiet(50_000), "network never went quiet");
    for &doc in &docs {
        let heads0 = sim.heads(0, doc);
        let json0 = sim.json(0, doc);
        for node in 0..s.nodes {
            prop_assert_eq!(
                &sim.heads(node, doc),
                &heads0,
                "heads differ on node {}",
                node
            );
            prop_assert_eq!(
                &sim.json(node, doc),
                &json0,
                "content differs on node {}",
                node
            );
            prop_assert_eq!(
                &sim.stored_heads(node, doc),
                &heads0,
                "durable state differs on node {}",
                node
            );
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("WEFT_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: shrink_iters(), ..ProptestConfig::default() })]

    #[test]
    fn peers_converge_after_partitions_and_faults(s in scenario()) {
        run(&s)?;
    }
}

#[test]
fn alice_and_bob_edit_offline_then_meet_through_a_relay() {
    let doc = DocId::from_bytes([9; 16]);
    let mut sim = Sim::new(
        vec![
            EngineConfig::relay(),
            EngineConfig::device(),
            EngineConfig::device(),
        ],
        vec![doc],
        1,
    );
    // Both devices write offline.
    for i in 0..50 {
        assert!(sim.edit(1, doc, &format!("alice {i}")));
        assert!(sim.edit(2, doc, &format!("bob {i}")));
    }
    sim.connect(0, 1);
    sim.connect(0, 2);
    assert!(sim.run_until_quiet(100_000));
    let keys = sim.json(1, doc).as_object().map(|o| {
        o.keys()
            .filter(|k| k.starts_with("alice") || k.starts_with("bob"))
            .count()
    });
    assert_eq!(keys, Some(100));
    assert_eq!(sim.heads(1, doc), sim.heads(2, doc));
    assert_eq!(sim.json(1, doc), sim.json(2, doc));

    // Live: a new message travels over the fast path, and both are quiet afterwards.
    let before = sim.delivered;
    sim.trace = std::env::var("WEFT_SIM_TRACE").is_ok();
    assert!(sim.edit(1, doc, "alice live"));
    assert!(sim.run_until_quiet(10_000));
    assert_eq!(sim.heads(1, doc), sim.heads(2, doc));
    // changes to relay, ack, forward to bob, bob's ack: four messages.
    assert_eq!(
        sim.delivered - before,
        4,
        "the fast path should need exactly four messages"
    );
}

/// Node 0 is a relay, every other node a device connected to it. The devices make 40 edits
/// in turn, `step_ms` apart, under the sim's faults; then the faults stop, the network heals,
/// and every node, and its store, must hold the same heads.
fn edit_through_the_relay_then_converge(
    sim: &mut Sim,
    doc: DocId,
    step_ms: u64,
    quiet_steps: usize,
    seed: u64,
) {
    let nodes = sim.nodes.len();
    for d in 1..nodes {
        sim.connect(0, d);
    }
    for i in 0..40 {
        assert!(sim.edit(1 + i % (nodes - 1), doc, &format!("e{i}")));
        sim.run_for(step_ms, 1_000);
    }
    sim.faults = Faults::default();
    sim.heal_all();
    assert!(sim.run_until_quiet(quiet_steps), "seed {seed}: never quiet");
    let heads = sim.heads(0, doc);
    for n in 0..nodes {
        assert_eq!(sim.heads(n, doc), heads, "seed {seed}: node {n} differs");
        assert_eq!(
            sim.stored_heads(n, doc),
            heads,
            "seed {seed}: node {n}'s store differs"
        );
    }
}

#[test]
fn stores_that_fail_writes_and_compact_often_still_converge() {
    let doc = DocId::from_bytes([5; 16]);
    let (mut failed, mut compacted) = (0, 0);
    for seed in 0..10 {
        let mut configs = vec![EngineConfig::relay()];
        configs.extend((0..3).map(|_| EngineConfig::device()));
        let mut sim = Sim::new(configs, vec![doc], seed);
        sim.faults = Faults {
            store_failure: 0.05,
            ..Faults::default()
        };
        edit_through_the_relay_then_converge(&mut sim, doc, 5, 200_000, seed);
        failed += sim.failed_writes;
        // 40 changes, each its own chunk unless compacted.
        compacted += u64::from(sim.stored_chunks(1, doc) < 10);
    }
    assert!(
        failed > 0,
        "no store write failed: the fault is not exercised"
    );
    assert!(
        compacted > 0,
        "no store was compacted: compaction is not exercised"
    );
}

/// WebSocket clients (sync protocol only) through a relay that sends each reader a change
/// before its write (`forward_before_durable`): with lossy, reordering links and a relay
/// whose store writes fail, everyone converges and the relay's store ends up holding it all.
#[test]
fn sync_only_clients_sent_changes_before_the_write_converge() {
    let doc = DocId::from_bytes([8; 16]);
    let mut failed = 0;
    for seed in 0..10 {
        let mut configs = vec![EngineConfig::relay()];
        configs.extend((0..4).map(|_| EngineConfig::device()));
        let mut sim = Sim::new(configs, vec![doc], seed);
        sim.sync_only.extend(1..=4);
        sim.faults = Faults {
            loss: 0.05,
            duplicate: 0.02,
            max_delay: 20,
            store_failure: 0.05,
        };
        sim.persist_delay = 1 + seed % 3;
        edit_through_the_relay_then_converge(&mut sim, doc, 3, 400_000, seed);
        failed += sim.failed_writes;
    }
    assert!(
        failed > 0,
        "no store write failed: the fault is not exercised"
    );
}

/// A gate that takes every change: the relay then checks changes one by one in causal order,
/// as its write rules do, and drops one whose dependency has not arrived.
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
        _change: &CheckedChange,
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

/// Clients standing for stock automerge-repo ones (sync only, no `reset` on their wire, no
/// stall check of their own: only the relay recovers), through a relay that checks every
/// change against its gate and sends readers changes before its write, first on
/// WebSocket-like links (in order, no loss), then on lossy, reordering ones: everyone
/// converges and goes quiet, and no client is closed. On lossy links this needs the relay's
/// resync to reach a stock client (Automerge's sync reset) and to stop at a synced client that
/// has nothing to answer.
#[test]
fn stock_clients_through_a_gated_relay_converge() {
    let doc = DocId::from_bytes([9; 16]);
    let stock = EngineConfig {
        stall_rounds: u32::MAX,
        retry_after: 1 << 40,
        ..EngineConfig::device()
    };
    let lossy = Faults {
        loss: 0.05,
        duplicate: 0.02,
        max_delay: 20,
        store_failure: 0.0,
    };
    for faults in [Faults::default(), lossy] {
        for seed in 0..10 {
            let mut configs = vec![EngineConfig::relay()];
            configs.extend((0..4).map(|_| stock.clone()));
            let mut sim = Sim::new(configs, vec![doc], seed);
            sim.sync_only.extend(1..=4);
            sim.set_gate(0, Box::new(TakeAll));
            sim.faults = faults.clone();
            sim.persist_delay = 1 + seed % 3;
            edit_through_the_relay_then_converge(&mut sim, doc, 3, 400_000, seed);
            assert_eq!(
                sim.withheld_closes, 0,
                "{faults:?}, seed {seed}: a client had to be closed"
            );
        }
    }
}

#[test]
fn a_seed_replays_the_same_run() {
    let replay = |seed: u64| {
        let doc = DocId::from_bytes([6; 16]);
        let mut configs = vec![EngineConfig::relay()];
        configs.extend((0..3).map(|_| EngineConfig::device()));
        let mut sim = Sim::new(configs, vec![doc], seed);
        sim.faults = Faults {
            loss: 0.1,
            duplicate: 0.05,
            max_delay: 20,
            store_failure: 0.03,
        };
        sim.persist_delay = 2;
        for d in 1..=3 {
            sim.connect(0, d);
        }
        for i in 0..30 {
            assert!(sim.edit(1 + i % 3, doc, &format!("e{i}")));
            sim.run_for(7, 1_000);
        }
        sim.faults = Faults::default();
        sim.heal_all();
        assert!(sim.run_until_quiet(200_000));
        (
            sim.heads(0, doc),
            sim.delivered,
            sim.now(),
            sim.failed_writes,
        )
    };
    for seed in [3, 11] {
        assert_eq!(
            replay(seed),
            replay(seed),
            "seed {seed} ran differently twice"
        );
    }
}

fn shrink_iters() -> u32 {
    std::env::var("WEFT_PROPTEST_SHRINK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

/// Cases proptest once found, kept as regressions.
#[test]
fn regression_lossy_mesh_livelock() {
    let s = Scenario {
        nodes: 5,
        docs: 2,
        star: false,
        faults: (0.22009614962150711, 0.0074182757103252225, 23, 0.0),
        persist_delay: 1,
        ops: vec![
            Op::Run { ms: 2548 },
            Op::Edit { node: 4, doc: 1 },
            Op::Edit { node: 3, doc: 0 },
            Op::Run { ms: 442 },
            Op::Edit { node: 2, doc: 0 },
            Op::Partition { a: 2, b: 4 },
            Op::Heal { a: 1, b: 4 },
            Op::Heal { a: 0, b: 3 },
            Op::Edit { node: 4, doc: 0 },
            Op::Run { ms: 2720 },
            Op::Edit { node: 2, doc: 0 },
            Op::Disconnect { a: 4, b: 3 },
            Op::Run { ms: 1012 },
            Op::Disconnect { a: 4, b: 1 },
            Op::Edit { node: 1, doc: 1 },
            Op::Heal { a: 4, b: 0 },
            Op::Partition { a: 3, b: 2 },
            Op::Run { ms: 2197 },
            Op::Connect { a: 1, b: 0 },
            Op::Connect { a: 1, b: 4 },
            Op::Edit { node: 3, doc: 0 },
            Op::Connect { a: 1, b: 2 },
            Op::Heal { a: 2, b: 3 },
            Op::Run { ms: 2668 },
            Op::Disconnect { a: 2, b: 1 },
            Op::Edit { node: 0, doc: 1 },
            Op::Heal { a: 2, b: 0 },
            Op::Edit { node: 1, doc: 1 },
            Op::Edit { node: 1, doc: 0 },
            Op::Edit { node: 3, doc: 1 },
            Op::Run { ms: 144 },
            Op::Connect { a: 1, b: 0 },
            Op::Partition { a: 2, b: 4 },
            Op::Edit { node: 3, doc: 1 },
            Op::Run { ms: 153 },
            Op::Edit { node: 1, doc: 0 },
            Op::Run { ms: 1281 },
            Op::Edit { node: 0, doc: 1 },
            Op::Edit { node: 4, doc: 0 },
            Op::Edit { node: 3, doc: 1 },
            Op::Edit { node: 1, doc: 0 },
        ],
        seed: 2867653353731344741,
    };
    run(&s).unwrap();
}

#[test]
fn ten_devices_meeting_at_a_relay_converge_without_waiting_for_a_retry() {
    for seed in 0..20 {
        let doc = DocId::from_bytes([7; 16]);
        let mut configs = vec![EngineConfig::relay()];
        configs.extend((0..10).map(|_| EngineConfig::device()));
        let mut sim = Sim::new(configs, vec![doc], seed);
        // In-order delivery, as on a QUIC stream; writes take a few ms to become durable.
        sim.faults = Faults::default();
        sim.persist_delay = seed % 4;
        for d in 1..=10 {
            assert!(sim.edit(d, doc, &format!("device-{d}")));
        }
        for d in 1..=10 {
            sim.connect(0, d);
        }
        assert!(sim.run_until_quiet(200_000));
        let heads = sim.heads(0, doc);
        for d in 1..=10 {
            assert_eq!(sim.heads(d, doc), heads, "seed {seed}");
        }
        // Lossless delivery needs no timer: anything near retry_after means a stalled round.
        assert!(
            sim.now() < 1_000,
            "seed {seed}: converged only at t={} ms",
            sim.now()
        );
    }
}

/// Found by CI: after partitions in a seven-node mesh, one node's heads stayed behind.
#[test]
fn regression_mesh_partitions_heads_differ() {
    let s = Scenario {
        nodes: 7,
        docs: 2,
        star: false,
        faults: (
            0.1813630863438397,
            0.024203146876545362,
            41,
            0.04323389789579647,
        ),
        persist_delay: 1,
        ops: vec![
            Op::Edit { node: 0, doc: 0 },
            Op::Connect { a: 2, b: 5 },
            Op::Run { ms: 1059 },
            Op::Edit { node: 3, doc: 1 },
            Op::Edit { node: 2, doc: 0 },
            Op::Edit { node: 4, doc: 1 },
            Op::Edit { node: 1, doc: 1 },
            Op::Heal { a: 1, b: 2 },
            Op::Partition { a: 4, b: 0 },
            Op::Run { ms: 1634 },
            Op::Heal { a: 3, b: 5 },
            Op::Edit { node: 1, doc: 0 },
            Op::Run { ms: 1771 },
            Op::Edit { node: 0, doc: 0 },
            Op::Edit { node: 6, doc: 1 },
            Op::Partition { a: 2, b: 5 },
            Op::Run { ms: 2236 },
            Op::Edit { node: 2, doc: 1 },
            Op::Edit { node: 5, doc: 0 },
            Op::Partition { a: 6, b: 3 },
            Op::Edit { node: 3, doc: 0 },
            Op::Edit { node: 5, doc: 0 },
            Op::Edit { node: 3, doc: 1 },
            Op::Edit { node: 2, doc: 1 },
            Op::Run { ms: 253 },
            Op::Connect { a: 2, b: 3 },
            Op::Edit { node: 3, doc: 1 },
            Op::Edit { node: 0, doc: 0 },
            Op::Connect { a: 5, b: 2 },
            Op::Connect { a: 2, b: 3 },
            Op::Edit { node: 2, doc: 0 },
            Op::Connect { a: 0, b: 4 },
            Op::Edit { node: 5, doc: 1 },
            Op::Edit { node: 4, doc: 0 },
            Op::Edit { node: 5, doc: 0 },
            Op::Edit { node: 0, doc: 0 },
            Op::Edit { node: 3, doc: 0 },
            Op::Partition { a: 6, b: 5 },
            Op::Connect { a: 1, b: 6 },
            Op::Edit { node: 1, doc: 1 },
            Op::Connect { a: 6, b: 2 },
            Op::Edit { node: 4, doc: 0 },
            Op::Disconnect { a: 0, b: 5 },
            Op::Partition { a: 5, b: 4 },
            Op::Partition { a: 6, b: 5 },
            Op::Edit { node: 6, doc: 1 },
            Op::Disconnect { a: 4, b: 2 },
        ],
        seed: 18120230842203310403,
    };
    run(&s).unwrap();
}

/// A write that fails once the network has healed drops the document from memory and closes
/// its connections; they reconnect, and the node catches up instead of staying cut off.
#[test]
fn a_write_failing_after_the_network_healed_does_not_cut_a_node_off() {
    let doc = DocId::from_bytes([5; 16]);
    let configs = (0..3).map(|_| EngineConfig::device()).collect();
    let mut sim = Sim::new(configs, vec![doc], 7);
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        sim.connect(a, b);
    }
    assert!(sim.edit(0, doc, "before"));
    assert!(sim.run_until_quiet(10_000));
    sim.nodes[2].store.fail_next_write();
    assert!(sim.edit(2, doc, "lost on disk"));
    assert!(sim.edit(0, doc, "after"));
    assert!(sim.run_until_quiet(50_000), "network never went quiet");
    assert_eq!(sim.failed_writes, 1, "the armed fault hit one write");
    let heads = sim.heads(0, doc);
    for node in 1..3 {
        assert_eq!(sim.heads(node, doc), heads, "heads differ on node {node}");
        assert_eq!(
            sim.stored_heads(node, doc),
            heads,
            "store differs on node {node}"
        );
    }
}
