//! The fan-out, throughput and wire-bytes workloads: each runs its measurement and its
//! same-run baseline, prints a table and returns its JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::chain::Chain;
use crate::plan::Plan;
use crate::relay::{Forwarder, Relay};
use crate::report::{ms, percentiles, us};
use crate::{fanout, throughput, wire_bytes};

pub(crate) fn fanout_workload(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    chain: &Arc<Chain>,
) -> anyhow::Result<Value> {
    eprintln!("fanout: one writer, every other device receives; one change in flight");
    eprintln!(
        "  {:>7} {:>7} | {:>8} {:>8} {:>8} {:>6} | {:>12} {:>12} | {:>8} {:>8} {:>8} {:>12}",
        "devices",
        "changes",
        "p50 ms",
        "p99 ms",
        "max ms",
        "target",
        "relay us/chg",
        "us/delivery",
        "base p50",
        "base p99",
        "base max",
        "base us/chg"
    );
    let mut runs = Vec::new();
    let mut base_runs = Vec::new();
    for &(devices, changes, base_changes, target) in &plan.fanout {
        let (run, base_run) = fanout_size(plan, rt, chain, devices, changes, base_changes, target)?;
        runs.push(run);
        base_runs.push(base_run);
    }
    Ok(json!({
        "workload": "fanout",
        "quick": plan.quick,
        "pinned": plan.pin,
        "setup": "in-process weft-relay (QUIC, hub, engine, redb in a temp dir) on a tokio \
            runtime with 1 worker thread; devices on a 1-worker runtime; loopback; latency from \
            the writer handing a Changes frame to QUIC to a receiver decoding the forwarded \
            frame; relay CPU = CPU time of the relay's threads during the measured changes",
        "runs": runs,
        "baseline": {
            "name": "automerge-sync-round-per-subscriber",
            "description": "Automerge 0.12's own sync protocol in memory on one thread, no \
                network: per change, a sync round writer->server, then a full sync round \
                (messages encoded and decoded) between the server and each subscriber in turn; \
                a subscriber's latency is the end of its round. A lower bound for a server \
                that runs the sync protocol per subscriber.",
            "runs": base_runs,
        },
    }))
}

/// One row of the fan-out table: `devices` devices through a fresh relay, then the baseline;
/// printed, and returned as the run's and the baseline's reports.
fn fanout_size(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    chain: &Arc<Chain>,
    devices: usize,
    changes: usize,
    base_changes: usize,
    target: Option<f64>,
) -> anyhow::Result<(Value, Value)> {
    let relay = Relay::start()?;
    let r = rt.block_on(fanout::run(
        &relay,
        devices,
        plan.fanout_warmup,
        changes,
        chain.clone(),
    ));
    relay.stop();
    let mut r = r.with_context(|| format!("fanout with {devices} devices"))?;
    let (p50, p99, max) = percentiles(&mut r.latencies);
    let cpu_per_change = r.relay_cpu / r.changes.max(1) as u32;
    let cpu_per_delivery = r.relay_cpu / (r.changes * (devices - 1)).max(1) as u32;

    let t = Instant::now();
    let mut base = fanout::baseline(devices, base_changes.min(chain.len()), chain)?;
    let base_cpu = t.elapsed() / base_changes.max(1) as u32;
    let (b50, b99, bmax) = percentiles(&mut base);
    eprintln!(
        "  {:>7} {:>7} | {:>8.3} {:>8.3} {:>8.3} {:>6} | {:>12.1} {:>12.1} | {:>8.3} {:>8.3} {:>8.3} {:>12.1}",
        devices,
        changes,
        ms(p50),
        ms(p99),
        ms(max),
        target.map_or("-".into(), |t| format!("<{t}")),
        us(cpu_per_change),
        us(cpu_per_delivery),
        ms(b50),
        ms(b99),
        ms(bmax),
        us(base_cpu),
    );
    if r.lost > 0 || r.sync_frames > 0 {
        eprintln!(
            "    note: {} receipts missed the 5 s deadline; {} sync frames (fallbacks from the fast path)",
            r.lost, r.sync_frames
        );
    }
    let run = json!({
        "devices": devices,
        "subscribers": devices - 1,
        "changes": r.changes,
        "samples": r.latencies.len(),
        "lost": r.lost,
        "sync_frames": r.sync_frames,
        "p50_ms": ms(p50),
        "p99_ms": ms(p99),
        "max_ms": ms(max),
        "target_p99_ms": target,
        "target_met": target.map(|t| ms(p99) < t),
        "wall_s": (r.wall.as_secs_f64() * 100.0).round() / 100.0,
        "relay_cpu_us_per_change": us(cpu_per_change),
        "relay_cpu_us_per_delivery": us(cpu_per_delivery),
    });
    let base_run = json!({
        "devices": devices,
        "changes": base_changes,
        "p50_ms": ms(b50),
        "p99_ms": ms(b99),
        "max_ms": ms(bmax),
        "cpu_us_per_change": us(base_cpu),
    });
    Ok((run, base_run))
}

pub(crate) fn throughput_workload(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    chain: &Arc<Chain>,
) -> anyhow::Result<Value> {
    eprintln!(
        "throughput: {} documents x {} devices, every device on every document, one writer each",
        plan.docs, plan.devices
    );
    let relay = Relay::start()?;
    let target = throughput::Target {
        addrs: vec![relay.addr],
        cert: &relay.cert,
        token: relay.token()?,
        relay: true,
        cpu: None,
        delivery_window: throughput::DELIVERY_WINDOW,
    };
    let r = run_throughput(plan, rt, chain, target);
    let drops = relay
        .metrics
        .queue_drops
        .load(std::sync::atomic::Ordering::Relaxed);
    relay.stop();
    let r = r.context("throughput through the relay")?;

    let fwd = Forwarder::start()?;
    let target = throughput::Target {
        addrs: vec![fwd.addr],
        cert: &fwd.cert,
        token: String::new(),
        relay: false,
        cpu: None,
        delivery_window: throughput::DELIVERY_WINDOW,
    };
    let b = run_throughput(plan, rt, chain, target);
    fwd.stop();
    let b = b.context("throughput through the baseline forwarder")?;
    let check = print_throughput(&r, &b, drops, chain);
    Ok(throughput_report(plan, &r, &b, drops, &check))
}

/// The throughput run with `plan`'s documents, devices and window against `target`.
pub(crate) fn run_throughput(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    chain: &Arc<Chain>,
    target: throughput::Target<'_>,
) -> anyhow::Result<throughput::Run> {
    rt.block_on(throughput::run(
        target,
        plan.docs,
        plan.devices,
        plan.warmup,
        plan.window,
        chain.clone(),
    ))
}

/// The relay's CPU per accepted change.
fn per_change(run: &throughput::Run) -> Duration {
    if run.accepted == 0 {
        Duration::ZERO
    } else {
        run.relay_cpu / run.accepted as u32
    }
}

/// The relay's CPU time over the window's.
fn util(run: &throughput::Run) -> f64 {
    run.relay_cpu.as_secs_f64() / run.window.as_secs_f64()
}

/// Accepted changes per second of the relay's CPU.
fn per_cpu_s(run: &throughput::Run) -> f64 {
    let cpu = run.relay_cpu.as_secs_f64();
    if cpu == 0.0 {
        0.0
    } else {
        (run.accepted as f64 / cpu).round()
    }
}

/// `d` of the relay's CPU per accepted change of `r`, in us.
fn split_us(r: &throughput::Run, d: Duration) -> f64 {
    if r.accepted == 0 {
        0.0
    } else {
        us(d / r.accepted as u32)
    }
}

/// Prints the relay's (`r`) and the forwarder's (`b`) figures, and measures and prints what
/// checking a change costs.
fn print_throughput(
    r: &throughput::Run,
    b: &throughput::Run,
    drops: u64,
    chain: &Chain,
) -> CheckCost {
    eprintln!(
        "  {:<10} {:>12} {:>14} {:>14} {:>10} {:>16}",
        "", "accepted/s", "deliveries/s", "cpu us/change", "cpu util", "accepted/cpu-s"
    );
    for (name, run) in [("relay", r), ("forwarder", b)] {
        eprintln!(
            "  {:<10} {:>12.0} {:>14.0} {:>14.1} {:>9.0}% {:>16.0}",
            name,
            run.accepted_per_s,
            run.deliveries_per_s,
            us(per_change(run)),
            util(run) * 100.0,
            per_cpu_s(run)
        );
    }
    let split = r.relay_cpu_split;
    eprintln!(
        "  relay cpu us/change by thread: hub+QUIC {:.1}, store writer {:.1}, loads+compaction {:.1}",
        split_us(r, split.worker),
        split_us(r, split.store),
        split_us(r, split.blocking)
    );
    let check = check_cost(chain);
    eprintln!(
        "  checking a change before it is stored: {:.2} us (check_message: chunk headers, parse, \
         limits); Automerge's parse alone, which the engine did before: {:.2} us",
        check.checked_us, check.parse_us
    );
    eprintln!(
        "  checking a change against the write rules (identity, the conversation's rules): {:.2} us",
        check.rules_us
    );
    eprintln!("  targets: >= 20,000 accepted/s, >= 180,000 deliveries/s (relay on one core)");
    if r.sync_frames > 0 || drops > 0 || r.chain_exhausted {
        eprintln!(
            "  note: {} sync frames to receivers, {} queue drops at the relay, chain exhausted: {}",
            r.sync_frames, drops, r.chain_exhausted
        );
    }
    check
}

/// The throughput workload's report.
fn throughput_report(
    plan: &Plan,
    r: &throughput::Run,
    b: &throughput::Run,
    drops: u64,
    check: &CheckCost,
) -> Value {
    let split = r.relay_cpu_split;
    json!({
        "workload": "throughput",
        "quick": plan.quick,
        "documents": plan.docs,
        "devices": plan.devices,
        "setup": "in-process weft-relay (QUIC, hub, engine, redb) on a 1-worker runtime; 10 \
            devices on a 1-worker runtime, each subscribed to every document and writing 1/10 of \
            them; pre-generated chat changes (~170 B); a writer keeps at most 256 changes \
            unacknowledged and 800 undelivered (all devices); receivers count forwarded changes and \
            acknowledge every 500 ms without applying them",
        "window_s": (r.window.as_secs_f64() * 100.0).round() / 100.0,
        "setup_s": (r.setup.as_secs_f64() * 10.0).round() / 10.0,
        "accepted_changes_per_s": r.accepted_per_s.round(),
        "deliveries_per_s": r.deliveries_per_s.round(),
        "target_accepted_changes_per_s": 20000,
        "target_deliveries_per_s": 180000,
        "targets_met": r.accepted_per_s >= 20000.0 && r.deliveries_per_s >= 180000.0,
        "relay_cpu_us_per_change": us(per_change(r)),
        "relay_cpu_utilisation": (util(r) * 100.0).round() / 100.0,
        "relay_cpu_us_per_change_by_thread": {
            "hub_and_quic": split_us(r, split.worker),
            "store_writer": split_us(r, split.store),
            "loads_and_compaction": split_us(r, split.blocking),
        },
        "accepted_changes_per_relay_cpu_second": per_cpu_s(r),
        "check_us_per_change": (check.checked_us * 100.0).round() / 100.0,
        "parse_only_us_per_change": (check.parse_us * 100.0).round() / 100.0,
        "rules_us_per_change": (check.rules_us * 100.0).round() / 100.0,
        "sync_frames": r.sync_frames,
        "queue_drops": drops,
        "chain_exhausted": r.chain_exhausted,
        "baseline": {
            "name": "quic-forwarder",
            "description": "the same devices and traffic through a QUIC server on the same \
                kind of runtime that forwards every Changes frame to every other connection and \
                answers the sender with an Ack: the relay's transport and fan-out without \
                engine, authorization or store",
            "accepted_changes_per_s": b.accepted_per_s.round(),
            "deliveries_per_s": b.deliveries_per_s.round(),
            "cpu_us_per_change": us(per_change(b)),
            "cpu_utilisation": (util(b) * 100.0).round() / 100.0,
            "accepted_changes_per_cpu_second": per_cpu_s(b),
        },
    })
}

/// What checking one of the chain's changes costs (`check_message` on a one-change `Changes`
/// message, as a connection task runs it), beside Automerge's bare parse: the best of three
/// passes over up to 20,000 changes, measured in this run.
struct CheckCost {
    checked_us: f64,
    parse_us: f64,
    /// The write rules' check of one change by the relay's gate (identity and the
    /// conversation's rules), after its parse.
    rules_us: f64,
}

fn check_cost(chain: &Chain) -> CheckCost {
    let limits = weft_core::check::Limits::default();
    let doc = weft_core::DocId::from_bytes([1; 16]);
    let n = chain.raw.len().min(20_000);
    let frames: Vec<bytes::Bytes> = chain.raw[..n]
        .iter()
        .map(|r| bytes::Bytes::from(r.clone()))
        .collect();
    let best = |f: &dyn Fn(&bytes::Bytes)| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                for b in &frames {
                    f(b);
                }
                t.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64
            })
            .fold(f64::INFINITY, f64::min)
    };
    let checked_us = best(&|b| {
        let msg = weft_core::wire::Message::Changes {
            doc,
            changes: vec![b.clone()],
        };
        let r = weft_core::engine::check_message(msg, &limits);
        assert!(r.is_ok(), "the chain's changes pass their check");
    });
    let parse_us = best(&|b| {
        let r = weft_core::automerge::Change::try_from(&b[..]);
        assert!(r.is_ok());
    });
    let changes: Vec<weft_core::check::CheckedChange> = chain.raw[..n]
        .iter()
        .map(|r| {
            let change = weft_core::automerge::Change::try_from(&r[..]).expect("the chain parses");
            weft_core::check::CheckedChange::new(change, r.clone().into()).expect("it expands")
        })
        .collect();
    let empty = weft_core::Document::new();
    let rules_us = (0..3)
        .map(|_| {
            use weft_core::engine::Gate;
            let mut gate = weft_schema::rules::RulesGate::new(std::sync::Arc::new(
                weft_schema::rules::Kinds::builtin(),
            ));
            let conn = weft_core::engine::ConnId(1);
            gate.connect(conn, crate::chain::USER, false, false);
            gate.opened(doc, &empty, &[]);
            let t = Instant::now();
            for c in &changes {
                let r = gate.check(doc, conn, c, &empty);
                assert!(r.is_ok(), "the chain passes the rules: {r:?}");
            }
            t.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64
        })
        .fold(f64::INFINITY, f64::min);
    CheckCost {
        checked_us,
        parse_us,
        rules_us,
    }
}

pub(crate) fn wire_bytes_workload(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    chain: &Arc<Chain>,
) -> anyhow::Result<Value> {
    let relay = Relay::start()?;
    let n = plan.wire_changes.min(chain.len().saturating_sub(10));
    let f = rt.block_on(wire_bytes::run(&relay, n, chain.clone()));
    relay.stop();
    let f = f?;
    eprintln!("wire-bytes: one chat change, per change");
    eprintln!(
        "  raw change                              {:>8.1} B",
        f.raw_change
    );
    eprintln!(
        "  weft live path, frames per link         {:>8.1} B  (Changes + Ack; {:.2}x the change, target 1.5x; protocol 1: {:.1} B)",
        f.live_writer,
        f.live_writer / f.raw_change,
        f.live_named
    );
    eprintln!(
        "  weft live path, UDP writer / subscriber {:>8.1} / {:.1} B  ({:.2}x the change)",
        f.udp_writer,
        f.udp_subscriber,
        f.udp_subscriber / f.raw_change
    );
    eprintln!(
        "  automerge sync protocol per peer pair   {:>8.1} B  ({:.1} messages; {:.1} B framed)",
        f.sync_bytes, f.sync_messages, f.sync_frames
    );
    Ok(f.json())
}
