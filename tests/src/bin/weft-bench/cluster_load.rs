//! The `cluster` workload's load part: aggregate changes/s with every process on this
//! machine's cores: one relay without `--cluster` (checkpointing to Postgres, as a single relay
//! is deployed), then clusters of 1, 2 and 3 relays on one Postgres. Writers send as fast as
//! they are acknowledged (the `throughput` workload's devices, spread over the relays; every
//! device on every document); CPU per accepted change is summed over the relay processes and
//! Postgres.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use crate::chain::Chain;
use crate::checkpoint::pg;
use crate::cluster::{cluster_args, postmaster_pid, RelayProc};
use crate::plan::Plan;
use crate::proc_cpu::{proc_cpu, tree_cpu};
use crate::report::us;
use crate::throughput::{self, Target};

/// Documents, each with one writer; every device is on every document.
const DOCS: usize = 60;
/// Devices, spread over the relays.
const DEVICES: usize = 6;
/// Changes per document per second the chain is sized for: a single relay without the log
/// accepts ~6,000/s here, some writers faster than others, more than the shared chain of quick mode
/// holds over the warm-up and the window.
const MAX_RATE_PER_DOC: u64 = 400;

/// One configuration's figures.
struct Load {
    name: String,
    relays: usize,
    /// Some writer used up the chain: the figures cover less than the window.
    exhausted: bool,
    accepted_per_s: f64,
    deliveries_per_s: f64,
    cpu_per_change: Duration,
    /// The part of `cpu_per_change` spent by Postgres.
    pg_per_change: Duration,
}

pub(crate) fn aggregate(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    chain: &Arc<Chain>,
    bin: &Path,
) -> anyhow::Result<Value> {
    eprintln!(
        "cluster load: {DOCS} documents x {DEVICES} devices spread over the relays, writers as fast as acknowledged, {} s window",
        plan.window.as_secs()
    );
    // Every document's writer follows the chain; one long enough for the fastest
    // configuration, so none runs dry inside the window.
    let needed = ((plan.warmup + plan.window).as_secs() * MAX_RATE_PER_DOC) as usize;
    let long;
    let chain = if chain.len() >= needed {
        chain
    } else {
        long = Arc::new(Chain::generate(needed));
        &long
    };
    let mut runs = vec![run(plan, rt, chain, bin, 1, false)?];
    for n in 1..=3 {
        runs.push(run(plan, rt, chain, bin, n, true)?);
    }
    // A run that accepted nothing, or whose writers ran out of changes, is no baseline.
    let base =
        (runs[0].accepted_per_s > 0.0 && !runs[0].exhausted).then_some(runs[0].cpu_per_change);
    let mut rows = Vec::new();
    for r in &runs {
        let ratio = base.map_or(f64::NAN, |b| {
            r.cpu_per_change.as_secs_f64() / b.as_secs_f64().max(1e-9)
        });
        let note = if r.exhausted {
            " (a writer ran out of pre-generated changes: figures cover less than the window)"
                .to_owned()
        } else if r.accepted_per_s == 0.0 {
            " (stalled: nothing accepted in the window)".to_owned()
        } else if base.is_none() {
            String::new()
        } else {
            format!(" ({ratio:.2}x one relay)")
        };
        eprintln!(
            "  {:<30} {:>8.0} changes/s {:>9.0} deliveries/s | CPU {:>6.1} us/change (Postgres {:>5.1}){note}",
            r.name,
            r.accepted_per_s,
            r.deliveries_per_s,
            us(r.cpu_per_change),
            us(r.pg_per_change)
        );
        let ratio = if ratio.is_finite() {
            Some((ratio * 100.0).round() / 100.0)
        } else {
            None
        };
        rows.push(json!({
            "name": r.name,
            "relays": r.relays,
            "changes_per_s": r.accepted_per_s.round(),
            "deliveries_per_s": r.deliveries_per_s.round(),
            "cpu_us_per_change": us(r.cpu_per_change),
            "postgres_cpu_us_per_change": us(r.pg_per_change),
            "cpu_ratio": ratio,
            "chain_exhausted": r.exhausted,
        }));
    }
    Ok(json!({ "docs": DOCS, "devices": DEVICES, "runs": rows }))
}

/// `n` relays (in a cluster or not) on a fresh Postgres, under the load for `plan`'s window.
fn run(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    chain: &Arc<Chain>,
    bin: &Path,
    n: usize,
    cluster: bool,
) -> anyhow::Result<Load> {
    let server = pg::PgServer::start().context("cannot start Postgres")?;
    let url = server.url();
    let names = ["a", "b", "c"];
    let args = |i: usize| {
        if cluster {
            cluster_args(&url, names[i])
        } else {
            ["--postgres", &url, "--checkpoint-interval", "5s"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        }
    };
    let mut relays = vec![RelayProc::start(bin, tempfile::tempdir()?, &args(0))?];
    for i in 1..n {
        let dir = relays[0].sibling_dir()?;
        relays.push(RelayProc::start(bin, dir, &args(i))?);
    }
    let postmaster = postmaster_pid(&server.data())?;
    let pids: Vec<u32> = relays.iter().map(|r| r.child.id()).collect();
    // Each reading is kept split (relays, Postgres); the run reads at the window's start and end.
    let readings = std::sync::Mutex::new(Vec::new());
    let cpu = || {
        let (relays, pg) = (
            pids.iter().map(|p| proc_cpu(*p)).sum::<Duration>(),
            tree_cpu(postmaster),
        );
        if let Ok(mut r) = readings.lock() {
            r.push((relays, pg));
        }
        relays + pg
    };
    let cert = relays[0].cert()?;
    let target = Target {
        addrs: relays.iter().map(|r| r.addr).collect(),
        cert: &cert,
        token: relays[0].token()?,
        relay: true,
        cpu: Some(&cpu),
        // The relays run in their own processes at full speed while the devices share the
        // cores: a receiver that falls 1,024 frames behind is dropped as too slow.
        delivery_window: 16,
    };
    let r = rt
        .block_on(throughput::run(
            target,
            DOCS,
            DEVICES,
            plan.warmup,
            plan.window,
            chain.clone(),
        ))
        .with_context(|| format!("the load on {n} relays"))?;
    drop(relays);
    drop(server);
    let pg_cpu = match readings.lock().map(|r| r.clone()).unwrap_or_default()[..] {
        [(_, pg0), (_, pg1), ..] => pg1.saturating_sub(pg0),
        _ => Duration::ZERO,
    };
    let name = if cluster {
        format!("{n} relay(s), --cluster")
    } else {
        "one relay (baseline)".to_owned()
    };
    Ok(Load {
        name,
        relays: n,
        exhausted: r.chain_exhausted,
        accepted_per_s: r.accepted_per_s,
        deliveries_per_s: r.deliveries_per_s,
        cpu_per_change: if r.accepted == 0 {
            Duration::ZERO
        } else {
            r.relay_cpu / r.accepted as u32
        },
        pg_per_change: if r.accepted == 0 {
            Duration::ZERO
        } else {
            pg_cpu / r.accepted as u32
        },
    })
}
