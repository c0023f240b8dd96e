//! The lag phase: the throughput workload's traffic through a relay that checkpoints to
//! Postgres every `interval`, against the same traffic through a relay without checkpoints
//! (what checkpointing costs the relay's throughput). The lag is per document checkpointed:
//! from its first change not yet checkpointed to the commit that wrote it (the relay's
//! `weft_checkpoint_commit_lag_seconds` histogram).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::pg::PgServer;
use crate::chain::Chain;
use crate::plan::Plan;
use crate::relay::Relay;
use crate::throughput::{self, Run};

/// What the lag phase measured.
pub(crate) struct Lag {
    /// Upper bounds of the histogram buckets holding the 50th and 99th percentile.
    pub(crate) p50: Option<f64>,
    pub(crate) p99: Option<f64>,
    pub(crate) documents_written: u64,
    pub(crate) failures: u64,
    pub(crate) with: Run,
    pub(crate) without: Run,
}

pub(crate) fn run(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    chain: &Arc<Chain>,
    server: &PgServer,
    interval: Duration,
) -> anyhow::Result<Lag> {
    let cfg = super::config(server.url(), interval);
    let relay = Relay::start_checkpointing(cfg)?;
    let with = traffic(plan, rt, chain, &relay).context("throughput with checkpoints")?;
    let m = relay.metrics.clone();
    let (p50, p99) = (
        m.checkpoint_lag_quantile(0.5),
        m.checkpoint_lag_quantile(0.99),
    );
    let documents_written = m.checkpoint_documents.load(Relaxed);
    let failures = m.checkpoint_failures.load(Relaxed);
    relay.stop();

    let relay = Relay::start()?;
    let without = traffic(plan, rt, chain, &relay).context("throughput without checkpoints")?;
    relay.stop();
    Ok(Lag {
        p50,
        p99,
        documents_written,
        failures,
        with,
        without,
    })
}

fn traffic(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    chain: &Arc<Chain>,
    relay: &Relay,
) -> anyhow::Result<Run> {
    let target = throughput::Target {
        addrs: vec![relay.addr],
        cert: &relay.cert,
        token: relay.token()?,
        relay: true,
        cpu: None,
        delivery_window: throughput::DELIVERY_WINDOW,
    };
    rt.block_on(throughput::run(
        target,
        plan.docs,
        plan.devices,
        plan.warmup,
        plan.window,
        chain.clone(),
    ))
}
