//! `checkpoint`: the relay's Postgres checkpoints against a throwaway Postgres server (the
//! tests' `initdb` helper; the workload fails with a clear message when Postgres is not
//! installed). Two phases:
//! - **bulk** (`bulk.rs`): N dirty conversations (10,000 full, 1,000 quick) written by the
//!   relay's checkpointer in one round, first checkpoint then one new message each, against
//!   the same rows by binary `COPY`. Target: 10,000 in under 5 s.
//! - **lag** (`lag.rs`): the throughput workload's traffic through a checkpointing relay; the
//!   lag from a document's first unwritten change to its commit, p50/p99, against interval +
//!   1 s; and the relay's throughput with and without checkpoints.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use crate::chain::Chain;
use crate::plan::Plan;
use crate::report::ms;

mod bulk;
mod lag;

#[allow(dead_code)] // the bench uses part of the tests' helper
#[path = "../../../../../relay/tests/common/pg.rs"]
pub(crate) mod pg;

/// The bulk phase's target for 10,000 documents.
const BULK_TARGET: Duration = Duration::from_secs(5);
/// Messages in each conversation of the bulk phase.
const MESSAGES: usize = 100;

pub(crate) fn checkpoint_workload(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    chain: &Arc<Chain>,
) -> anyhow::Result<Value> {
    anyhow::ensure!(
        pg::installed(),
        "the checkpoint workload needs the Postgres server binaries (initdb, pg_ctl): install \
         postgresql, or set WEFT_PG_BIN to the directory holding them"
    );
    let server = pg::PgServer::start().context("cannot start Postgres")?;
    let docs = if plan.quick { 1_000 } else { 10_000 };
    eprintln!("checkpoint: {docs} dirty conversations of {MESSAGES} messages, one round");
    let b = rt.block_on(bulk::run(&server, docs, MESSAGES))?;
    let target = BULK_TARGET.mul_f64(docs as f64 / 10_000.0);
    eprintln!(
        "  {:<44} {:>10} {:>10} {:>10}",
        "", "weft", "COPY", "target"
    );
    eprintln!(
        "  {:<44} {:>8.2} s {:>8.2} s {:>8.2} s",
        "first checkpoint (every row new)",
        b.first.as_secs_f64(),
        b.baseline_first.as_secs_f64(),
        target.as_secs_f64()
    );
    eprintln!(
        "  {:<44} {:>8.2} s {:>8.2} s {:>8.2} s",
        "again, one new message in each",
        b.incremental.as_secs_f64(),
        b.baseline_incremental.as_secs_f64(),
        target.as_secs_f64()
    );
    drop(server);

    let server = pg::PgServer::start().context("cannot start Postgres")?;
    let interval = if plan.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    let lag_plan = Plan {
        window: plan.window.max(interval * 4),
        ..Plan::new(plan.quick)
    };
    eprintln!(
        "checkpoint lag: throughput traffic ({} documents x {} devices, {:.0} s window), \
         checkpoint every {:.0} s",
        lag_plan.docs,
        lag_plan.devices,
        lag_plan.window.as_secs_f64(),
        interval.as_secs_f64()
    );
    let l = lag::run(&lag_plan, rt, chain, &server, interval)?;
    let limit = (interval + Duration::from_secs(1)).as_secs_f64();
    let show = |q: Option<f64>| q.map_or("-".to_string(), |s| format!("<= {s} s"));
    eprintln!(
        "  lag p50 {}, p99 {} (target < {limit} s); {} documents written, {} failures",
        show(l.p50),
        show(l.p99),
        l.documents_written,
        l.failures
    );
    eprintln!(
        "  relay throughput with checkpoints {:.0} changes/s, without {:.0}",
        l.with.accepted_per_s, l.without.accepted_per_s
    );
    let cpu_per_change =
        |r: &crate::throughput::Run| crate::report::us(r.relay_cpu / r.accepted.max(1) as u32);
    Ok(json!({
        "workload": "checkpoint",
        "quick": plan.quick,
        "setup": "a throwaway Postgres (fsync off) on loopback; bulk: conversations in a relay \
            redb store, the relay's checkpointer, one round; lag: the in-process relay with its \
            checkpointer under the throughput workload's traffic",
        "bulk": {
            "documents": b.docs,
            "messages_per_document": b.messages,
            "content_bytes_per_document": b.content_bytes,
            "first_ms": ms(b.first),
            "incremental_ms": ms(b.incremental),
            "target_ms": ms(target),
            "first_met": b.first <= target,
            "incremental_met": b.incremental <= target,
        },
        "lag": {
            "interval_s": interval.as_secs_f64(),
            "p50_s_at_most": l.p50,
            "p99_s_at_most": l.p99,
            "target_s": limit,
            "met": l.p99.is_some_and(|p| p <= limit),
            "documents_written": l.documents_written,
            "failures": l.failures,
            "accepted_per_s": l.with.accepted_per_s.round(),
            "relay_cpu_us_per_change": cpu_per_change(&l.with),
        },
        "baseline": {
            "bulk": {
                "what": "the same rows (documents, messages, access) by binary COPY into \
                    tables like the checkpoint's, indexes included, one transaction",
                "first_ms": ms(b.baseline_first),
                "incremental_ms": ms(b.baseline_incremental),
            },
            "lag": {
                "what": "the same traffic through a relay without checkpoints",
                "accepted_per_s": l.without.accepted_per_s.round(),
                "relay_cpu_us_per_change": cpu_per_change(&l.without),
            },
        },
    }))
}

/// Overrides the checkpointer's connections (`CheckpointConfig::connections`), to compare.
const CONNECTIONS_ENV: &str = "WEFT_BENCH_PG_CONNECTIONS";

/// The relay's checkpoint settings for `url` every `interval`, with [`CONNECTIONS_ENV`].
fn config(url: String, interval: Duration) -> weft_relay::CheckpointConfig {
    let mut cfg = weft_relay::CheckpointConfig::new(url, interval);
    if let Some(n) = std::env::var(CONNECTIONS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.connections = n;
    }
    cfg
}

/// A client of `server` whose connection runs on the current runtime.
async fn client(server: &pg::PgServer) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .context("connecting to the bench's Postgres")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}
