//! The documents phase of the `memory` workload: a device uploads N small conversations,
//! disconnects, and the relay evicts them; again for each round, on the same relay. Anonymous
//! resident memory at start, with each round's documents loaded, and once they are idle.
//!
//! Twice: on a relay as configured, whose store page cache (redb's, `StagingLimits::
//! cache_bytes`, 64 MiB on the relay) keeps the pages of the documents it wrote until it is
//! full, ~5 KiB per small conversation, so it fills at ~13,000 of them; then on a relay whose
//! cache is full from the start ([`SMALL_CACHE`]), which shows what each further idle document
//! costs once the cache has reached its bound. The target is about the second: memory that
//! grows with idle documents without bound; the cache is a fixed cost, printed beside it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};

use super::clients::{write_cert, ADDR_ENV, CERT_ENV, DOCS_ENV, MESSAGES_ENV, TOKEN_ENV};
use super::{anon_kib, kib_per, rss_kib, settled_kib, verdict, Devices, TARGET_IDLE_DOC_KIB};
use crate::plan::{env_number, Plan};
use crate::relay::{Options, Relay};

/// Chat messages per conversation (each ~200 bytes as a raw change).
const MESSAGES: usize = 10;
/// How long a document without subscribers stays loaded in this phase's relay.
const EVICT_AFTER: Duration = Duration::from_secs(5);
/// The documents must be evicted within this much past `EVICT_AFTER`.
const EVICT_SLACK: Duration = Duration::from_secs(60);
/// How long the full run waits after the last eviction before its last reading: mimalloc's
/// purge delay on the relay (`weft_relay::ALLOCATOR_PURGE_DELAY_MS`) and one round of the
/// hub's housekeeping that lets it purge (every 10 s).
const LATER: Duration = Duration::from_secs(75);

/// Overrides the conversations uploaded per round (300 quick, 2,000 full).
const DOCS_PER_ROUND_ENV: &str = "WEFT_BENCH_MEMORY_DOCS";
/// Overrides the rounds (2 quick, 3 full).
const ROUNDS_ENV: &str = "WEFT_BENCH_MEMORY_ROUNDS";

/// The store page cache of the second relay: full after the first few hundred documents.
const SMALL_CACHE: usize = 1024 * 1024;

/// One round's readings, anonymous KiB.
struct Round {
    upload: Duration,
    loaded_kib: u64,
    evicted_after: Duration,
    /// Right after eviction, as the relay leaves it (freed memory not yet purged).
    unpurged_kib: u64,
    /// Once freed memory went back to the system.
    idle_kib: u64,
}

pub(super) fn measure(plan: &Plan) -> anyhow::Result<Value> {
    let cache = weft_relay::store_limits().0.cache_bytes;
    eprintln!(
        "  documents, on a relay as configured (a store page cache of {} MiB, filling):",
        cache / (1024 * 1024)
    );
    let configured = phase(plan, None)?;
    eprintln!(
        "  documents, on a relay whose store page cache ({} KiB) is full from the start: what \
         each idle document costs beyond the cache's bound",
        SMALL_CACHE / 1024
    );
    let beyond = phase(plan, Some(SMALL_CACHE))?;
    let per_idle = beyond["kib_per_idle_doc"].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "  KiB per idle document beyond the page cache: {per_idle:.2} (target \
         {TARGET_IDLE_DOC_KIB}: {}); the cache itself: a fixed cost of at most {} MiB",
        verdict(per_idle, TARGET_IDLE_DOC_KIB),
        cache / (1024 * 1024)
    );
    Ok(json!({
        "configured": configured,
        "beyond_cache": beyond,
        "store_cache_bytes": cache,
        "small_cache_bytes": SMALL_CACHE,
        "kib_per_idle_doc": per_idle,
        "target_met": per_idle <= TARGET_IDLE_DOC_KIB,
    }))
}

/// One relay's rounds; `cache` overrides its store page cache.
fn phase(plan: &Plan, cache: Option<usize>) -> anyhow::Result<Value> {
    let docs =
        env_number::<usize>(DOCS_PER_ROUND_ENV).unwrap_or(match (plan.quick, cache.is_some()) {
            // Beyond the cache the per-document figure is small: enough documents that the
            // relay's fixed costs (maps and arenas growing) do not hide it.
            (true, true) => 1_000,
            (true, false) => 300,
            (false, _) => 2_000,
        });
    // Rounds on one relay: a first round's figure carries one-time costs (caches and maps
    // growing to their working size); the later rounds' increments are what each further idle
    // document costs.
    let rounds = env_number::<usize>(ROUNDS_ENV)
        .unwrap_or(if plan.quick { 2 } else { 3 })
        .max(1);
    let relay = Relay::start_opts(Options {
        evict_after: Some(EVICT_AFTER),
        store_cache: cache,
        // One user uploads every round: rounds may add up past what one user may own.
        max_docs_per_user: Some(usize::MAX),
        ..Options::default()
    })?;
    let dir = tempfile::tempdir()?;
    let cert = write_cert(dir.path(), &relay.cert)?;
    let start_kib = settled_kib(|| relay.collect());
    let start_rss_kib = rss_kib();
    eprintln!(
        "  documents: {docs} conversations of {MESSAGES} messages per round, uploaded through \
         the sync rounds by one device; evicted {} s after it leaves. Anonymous memory (MiB \
         and KiB per document):",
        EVICT_AFTER.as_secs()
    );
    eprintln!(
        "  {:<6} {:>8} {:>8} {:>11} {:>9} {:>12} {:>13} {:>10}",
        "round",
        "upload s",
        "loaded",
        "KiB/loaded",
        "idle",
        "KiB/idle doc",
        "KiB/idle, all",
        "unpurged"
    );
    let mut out = Vec::new();
    let mut before_kib = start_kib;
    for round in 1..=rounds {
        let r = upload_round(&relay, &cert, docs)?;
        let loaded_per = kib_per(r.loaded_kib as i64 - before_kib as i64, docs);
        // This round's documents: what they added once idle.
        let idle_per = kib_per(r.idle_kib as i64 - before_kib as i64, docs);
        let total_docs = docs * round;
        let all_per = kib_per(r.idle_kib as i64 - start_kib as i64, total_docs);
        let mib = |k: u64| k as f64 / 1024.0;
        eprintln!(
            "  {:<6} {:>8.1} {:>8.1} {:>11.1} {:>9.1} {:>12.2} {:>13.2} {:>10.1}",
            round,
            r.upload.as_secs_f64(),
            mib(r.loaded_kib),
            loaded_per,
            mib(r.idle_kib),
            idle_per,
            all_per,
            mib(r.unpurged_kib),
        );
        out.push(json!({
            "round": round,
            "docs": docs,
            "upload_s": r.upload.as_secs_f64(),
            "loaded_anon_kib": r.loaded_kib,
            "kib_per_loaded_doc": loaded_per,
            "evicted_after_s": r.evicted_after.as_secs_f64(),
            "idle_anon_kib": r.idle_kib,
            "kib_per_idle_doc": idle_per,
            "idle_docs_in_all": total_docs,
            "kib_per_idle_doc_all": all_per,
            "unpurged_anon_kib": r.unpurged_kib,
        }));
        before_kib = r.idle_kib;
    }
    // An operator's view: nothing forced, a purge delay after the last eviction.
    let later = (!plan.quick && cache.is_none()).then(|| {
        std::thread::sleep(LATER);
        (anon_kib(), rss_kib())
    });
    relay.stop();
    // Every round after the first (the first alone in a single-round run).
    let marginal: Vec<f64> = out
        .iter()
        .skip(usize::from(out.len() > 1))
        .filter_map(|r| r["kib_per_idle_doc"].as_f64())
        .collect();
    let per_idle = marginal.iter().copied().fold(f64::NAN, f64::max);
    let all_per = out
        .last()
        .and_then(|r| r["kib_per_idle_doc_all"].as_f64())
        .unwrap_or(f64::NAN);
    eprintln!(
        "  start {:.1} MiB anonymous ({:.1} MiB resident); KiB per idle document, each round \
         after the first: {marginal:?}; over every round against the start: {all_per:.2}; \
         unpurged: right after eviction, before freed memory went back",
        start_kib as f64 / 1024.0,
        start_rss_kib as f64 / 1024.0,
    );
    if let Some((anon, rss)) = later {
        eprintln!(
            "  {} s after the last eviction, nothing forced: {:.1} MiB anonymous, {:.1} MiB \
             resident",
            LATER.as_secs(),
            anon as f64 / 1024.0,
            rss as f64 / 1024.0
        );
    }
    Ok(json!({
        "messages_per_doc": MESSAGES,
        "evict_after_s": EVICT_AFTER.as_secs(),
        "memory": "anonymous resident (RssAnon), after mi_collect on the relay's worker",
        "start_anon_kib": start_kib,
        "start_rss_kib": start_rss_kib,
        "rounds": out,
        "kib_per_idle_doc": per_idle,
        "kib_per_idle_doc_all": all_per,
        "later": later.map(|(anon, rss)| json!({
            "after_s": LATER.as_secs(),
            "anon_kib": anon,
            "rss_kib": rss,
        })),
    }))
}

/// Uploads `docs` conversations from a child process, then waits for the relay to evict them.
fn upload_round(relay: &Relay, cert: &str, docs: usize) -> anyhow::Result<Round> {
    let t = Instant::now();
    let mut devices = Devices::start(
        "upload",
        &[
            (ADDR_ENV, relay.addr.to_string()),
            (CERT_ENV, cert.to_string()),
            (TOKEN_ENV, relay.token()?),
            (DOCS_ENV, docs.to_string()),
            (MESSAGES_ENV, MESSAGES.to_string()),
        ],
    )?;
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
        let loaded = relay.metrics.documents_loaded.load(Ordering::Relaxed);
        if loaded == 0 && left.elapsed() > Duration::from_secs(1) {
            break;
        }
        if left.elapsed() > EVICT_AFTER + EVICT_SLACK {
            bail!(
                "{loaded} documents still loaded {} s after the device left",
                left.elapsed().as_secs()
            );
        }
    }
    let evicted_after = left.elapsed();
    let unpurged_kib = anon_kib();
    let idle_kib = settled_kib(|| relay.collect());
    Ok(Round {
        upload,
        loaded_kib,
        evicted_after,
        unpurged_kib,
        idle_kib,
    })
}
