//! The documents phase of the `memory` workload: a device uploads N small conversations,
//! disconnects, and the relay evicts them. Resident set at start, loaded, and idle.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};

use super::clients::{write_cert, ADDR_ENV, CERT_ENV, DOCS_ENV, MESSAGES_ENV, TOKEN_ENV};
use super::{kib_per, rss_kib, settled_kib, verdict, Devices, TARGET_IDLE_DOC_KIB};
use crate::plan::Plan;
use crate::relay::{Options, Relay};

/// Chat messages per conversation (each ~200 bytes as a raw change).
const MESSAGES: usize = 10;
/// How long a document without subscribers stays loaded in this phase's relay.
const EVICT_AFTER: Duration = Duration::from_secs(5);
/// The documents must be evicted within this much past `EVICT_AFTER`.
const EVICT_SLACK: Duration = Duration::from_secs(60);

/// One round's readings.
struct Round {
    docs: usize,
    upload: Duration,
    loaded_kib: u64,
    evicted_after: Duration,
    unpurged_kib: u64,
    idle_kib: u64,
}

pub(super) fn measure(plan: &Plan) -> anyhow::Result<Value> {
    let docs = if plan.quick { 300 } else { 2_000 };
    // Two rounds on one relay: the second shows whether idle documents keep costing as
    // their number grows, or the first round's figure was the store's warm-up.
    let rounds = 2;
    let relay = Relay::start_opts(Options {
        evict_after: Some(EVICT_AFTER),
        ..Options::default()
    })?;
    let dir = tempfile::tempdir()?;
    let cert = write_cert(dir.path(), &relay.cert)?;
    let start_kib = settled_kib(|| relay.collect());
    eprintln!(
        "  documents: {docs} conversations of {MESSAGES} messages per round, uploaded through \
         the sync rounds by one device; evicted {} s after it leaves",
        EVICT_AFTER.as_secs()
    );
    eprintln!(
        "  {:<7} {:>9} {:>11} {:>13} {:>11} {:>13} {:>12}",
        "round", "upload s", "loaded MiB", "KiB/loaded", "idle MiB", "KiB/idle doc", "unpurged MiB"
    );
    let mut out = Vec::new();
    let mut before_kib = start_kib;
    for round in 1..=rounds {
        let r = upload_round(&relay, &cert, docs)?;
        let held = relay.metrics.documents_loaded.load(Ordering::Relaxed);
        let loaded_per = kib_per(r.loaded_kib as i64 - before_kib as i64, docs);
        let total_docs = docs * round;
        let idle_per = kib_per(r.idle_kib as i64 - start_kib as i64, total_docs);
        eprintln!(
            "  {:<7} {:>9.1} {:>11.1} {:>13.1} {:>11.1} {:>13.2} {:>12.1}",
            round,
            r.upload.as_secs_f64(),
            r.loaded_kib as f64 / 1024.0,
            loaded_per,
            r.idle_kib as f64 / 1024.0,
            idle_per,
            r.unpurged_kib as f64 / 1024.0,
        );
        out.push(json!({
            "round": round,
            "docs": r.docs,
            "idle_docs_in_all": total_docs,
            "upload_s": r.upload.as_secs_f64(),
            "loaded_kib": r.loaded_kib,
            "kib_per_loaded_doc": loaded_per,
            "evicted_after_s": r.evicted_after.as_secs_f64(),
            "idle_kib": r.idle_kib,
            "kib_per_idle_doc": idle_per,
            "unpurged_kib": r.unpurged_kib,
            "kib_per_idle_doc_unpurged": kib_per(r.unpurged_kib as i64 - start_kib as i64, total_docs),
            "documents_loaded_after": held,
        }));
        before_kib = r.idle_kib;
    }
    relay.stop();
    let last_idle = out
        .last()
        .and_then(|r| r["kib_per_idle_doc"].as_f64())
        .unwrap_or(f64::NAN);
    eprintln!(
        "  start {:.1} MiB; KiB per idle document (every round's documents, against the start): \
         {last_idle:.2} (target {TARGET_IDLE_DOC_KIB}: {}); unpurged: the resident set as the relay \
         leaves it, before freed memory is given back",
        start_kib as f64 / 1024.0,
        verdict(last_idle, TARGET_IDLE_DOC_KIB)
    );
    Ok(json!({
        "messages_per_doc": MESSAGES,
        "evict_after_s": EVICT_AFTER.as_secs(),
        "start_kib": start_kib,
        "rounds": out,
        "kib_per_idle_doc": last_idle,
        "target_met": last_idle <= TARGET_IDLE_DOC_KIB,
    }))
}

/// Uploads `docs` conversations from a child process, then waits for the relay to evict them.
fn upload_round(relay: &Relay, cert: &str, docs: usize) -> anyhow::Result<Round> {
    let t = Instant::now();
    let devices = Devices::start(
        "upload",
        &[
            (ADDR_ENV, relay.addr.to_string()),
            (CERT_ENV, cert.to_string()),
            (TOKEN_ENV, relay.token()?),
            (DOCS_ENV, docs.to_string()),
            (MESSAGES_ENV, MESSAGES.to_string()),
        ],
    )?;
    let mut devices = devices;
    let line = devices.line()?;
    if line != format!("done {docs}") {
        bail!("the uploading device said {line:?}");
    }
    devices.finish()?;
    let upload = t.elapsed();
    let loaded_kib = settled_kib(|| relay.collect());
    let left = Instant::now();
    // The hub publishes the count every half second; wait for it to show none loaded.
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if relay.metrics.documents_loaded.load(Ordering::Relaxed) == 0
            && left.elapsed() > Duration::from_secs(1)
        {
            break;
        }
        if left.elapsed() > EVICT_AFTER + EVICT_SLACK {
            bail!(
                "{} documents still loaded {} s after the device left",
                relay.metrics.documents_loaded.load(Ordering::Relaxed),
                left.elapsed().as_secs()
            );
        }
    }
    let evicted_after = left.elapsed();
    let unpurged_kib = rss_kib();
    let idle_kib = settled_kib(|| relay.collect());
    Ok(Round {
        docs,
        upload,
        loaded_kib,
        evicted_after,
        unpurged_kib,
        idle_kib,
    })
}
