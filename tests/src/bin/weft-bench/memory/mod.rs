//! `memory`: what the relay keeps resident per loaded document, per idle (evicted) document and
//! per idle QUIC connection.
//!
//! The relay runs in this process, so its resident set is this process's, measured after
//! mimalloc returned what was freed (`release_freed_memory`). What else would count is kept out:
//! the device that uploads the documents is closed before the first reading, and the idle
//! connections come from a child process (this binary again, [`CLIENTS_ENV`]), so their client
//! side is not in the figure.
//!
//! Baselines in the same run: the same documents held as loaded Automerge documents in memory
//! (what a server that keeps every document it serves loaded pays), and the same idle
//! connections held by a bare QUIC server that only answers the hello (the transport's own
//! floor, `relay::Forwarder`).

mod clients;
mod counting;

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use weft_core::automerge::Automerge;
use weft_peer::{DataDir, Device, RelayConfig, TokenSource};

use crate::large_change::{release_freed_memory, status_kib};
use crate::plan::Plan;
use crate::relay::{Forwarder, Relay};

pub use clients::{child_main, CLIENTS_ENV};
pub use counting::Counting;

/// How long a document stays loaded after its last use in this workload (the relay's default
/// is a minute).
const EVICT_AFTER_MS: u64 = 1_000;
/// Targets from the issue that asked for this workload.
const TARGET_IDLE_DOC_KIB: f64 = 2.0;
const TARGET_IDLE_CONN_KIB: f64 = 64.0;

pub(crate) fn memory_workload(plan: &Plan, rt: &tokio::runtime::Runtime) -> anyhow::Result<Value> {
    let (docs, conns) = if plan.quick {
        (300, 1_000)
    } else {
        (2_000, 10_000)
    };
    let docs_fig = rt_documents(rt, docs)?;
    let conns_fig = connections(conns)?;
    eprintln!("memory: relay resident memory (KiB), measured after freed memory is returned");
    eprintln!(
        "  per loaded document     {:>7.1}   (Automerge document in memory, baseline: {:.1})",
        docs_fig.loaded_kib, docs_fig.automerge_kib
    );
    eprintln!(
        "  per idle document       {:>7.1}   (target < {TARGET_IDLE_DOC_KIB}; {docs} documents, evicted after {EVICT_AFTER_MS} ms)",
        docs_fig.idle_kib
    );
    eprintln!(
        "  held by the program (allocated, not freed) per loaded / idle document: {:.1} / {:.1}",
        docs_fig.heap_loaded_kib, docs_fig.heap_idle_kib
    );
    eprintln!(
        "  per idle QUIC connection{:>7.1}   (bare QUIC server, baseline: {:.1}; target < {TARGET_IDLE_CONN_KIB}; {conns} connections)",
        conns_fig.relay_kib, conns_fig.baseline_kib
    );
    Ok(json!({
        "workload": "memory",
        "documents": docs,
        "connections": conns,
        "relay_start_kib": docs_fig.start_kib,
        "kib_per_loaded_document": round1(docs_fig.loaded_kib),
        "kib_per_idle_document": round1(docs_fig.idle_kib),
        "heap_kib_per_loaded_document": round1(docs_fig.heap_loaded_kib),
        "heap_kib_per_idle_document": round1(docs_fig.heap_idle_kib),
        "documents_loaded_after_eviction": docs_fig.left_loaded,
        "kib_per_idle_quic_connection": round1(conns_fig.relay_kib),
        "targets": {
            "kib_per_idle_document": TARGET_IDLE_DOC_KIB,
            "kib_per_idle_connection": TARGET_IDLE_CONN_KIB,
        },
        "targets_met": docs_fig.idle_kib < TARGET_IDLE_DOC_KIB
            && conns_fig.relay_kib < TARGET_IDLE_CONN_KIB,
        "baseline": {
            "kib_per_automerge_document": round1(docs_fig.automerge_kib),
            "kib_per_idle_connection_bare_quic_server": round1(conns_fig.baseline_kib),
            "what": "the same documents loaded as Automerge documents in this process; the same \
                idle connections held by a bare QUIC server that answers the hello",
        },
    }))
}

struct DocFigures {
    /// Bytes the program holds (allocated, not freed), per document.
    heap_loaded_kib: f64,
    heap_idle_kib: f64,
    start_kib: u64,
    loaded_kib: f64,
    idle_kib: f64,
    automerge_kib: f64,
    left_loaded: u64,
}

fn rt_documents(rt: &tokio::runtime::Runtime, docs: usize) -> anyhow::Result<DocFigures> {
    let relay = Relay::start_configured(|hub, _| {
        hub.engine.evict_after = EVICT_AFTER_MS;
        // One device uploads them all at once: past the per-connection creation burst the
        // relay refuses new documents, which is not what this workload measures.
        hub.create_burst = hub.create_burst.max(docs as u32 + 100);
    })?;
    let figures = documents(rt, &relay, docs);
    relay.stop();
    figures
}

fn documents(
    rt: &tokio::runtime::Runtime,
    relay: &Relay,
    docs: usize,
) -> anyhow::Result<DocFigures> {
    Counting::start();
    release_freed_memory();
    let start = rss_kib()?;
    let heap_start = Counting::live();
    let saved = rt.block_on(upload(relay, docs))?;
    release_freed_memory();
    let loaded = rss_kib()?;
    let heap_loaded = Counting::live();
    // Eviction gives no event outside the relay: its gauge is polled, bounded.
    let gauge = &relay.metrics.documents_loaded;
    let deadline = Instant::now() + Duration::from_secs(60);
    while gauge.load(std::sync::atomic::Ordering::Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left_loaded = gauge.load(std::sync::atomic::Ordering::Relaxed);
    release_freed_memory();
    let idle = rss_kib()?;
    let heap_idle = Counting::live();

    // Baseline: the same documents loaded as Automerge documents.
    release_freed_memory();
    let before = rss_kib()?;
    let held: Vec<Automerge> = saved
        .iter()
        .map(|b| Automerge::load(b))
        .collect::<Result<_, _>>()?;
    release_freed_memory();
    let after = rss_kib()?;
    drop(held);
    let per = |from: u64, to: u64| to.saturating_sub(from) as f64 / docs as f64;
    let heap_per = |to: i64| (to - heap_start) as f64 / 1024.0 / docs as f64;
    Ok(DocFigures {
        heap_loaded_kib: heap_per(heap_loaded),
        heap_idle_kib: heap_per(heap_idle),
        start_kib: start,
        loaded_kib: per(start, loaded),
        idle_kib: per(start, idle),
        automerge_kib: per(before, after),
        left_loaded,
    })
}

/// A device creates `docs` conversations of ten messages, uploads them and closes; the saved
/// documents are returned for the baseline.
async fn upload(relay: &Relay, docs: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let dir = tempfile::tempdir()?;
    let device = Device::open(DataDir::new(dir.path())).await?;
    let mut ids = Vec::with_capacity(docs);
    for d in 0..docs {
        let doc = crate::device::new_conversation(&device).await?;
        for m in 0..10 {
            crate::device::send(&device, doc, format!("doc {d} message {m}")).await?;
        }
        ids.push(doc);
    }
    let link = device
        .connect_relay(RelayConfig {
            addr: relay.addr.to_string(),
            token: TokenSource::Static(relay.token()?),
            pinned_cert: Some(relay.cert.clone()),
            docs: vec![],
            reconnect: true,
            max_backoff: Duration::from_secs(10),
        })
        .await?;
    crate::device::all_synced(&device, docs, Duration::from_secs(300)).await?;
    link.stop().await;
    let mut saved = Vec::with_capacity(docs);
    for doc in ids {
        saved.push(device.read(doc, |am| am.save()).await?);
    }
    device.close().await;
    Ok(saved)
}

struct ConnFigures {
    relay_kib: f64,
    baseline_kib: f64,
}

fn connections(conns: usize) -> anyhow::Result<ConnFigures> {
    let relay = Relay::start_configured(|_, server| {
        server.max_connections = server.max_connections.max(conns + 100);
    })?;
    let token = relay.token()?;
    let relay_kib = clients::held_by(relay.addr, &relay.cert, &token, conns);
    relay.stop();
    let fwd = Forwarder::start()?;
    let baseline_kib = clients::held_by(fwd.addr, &fwd.cert, "", conns);
    fwd.stop();
    Ok(ConnFigures {
        relay_kib: relay_kib.context("idle connections to the relay")?,
        baseline_kib: baseline_kib.context("idle connections to the bare QUIC server")?,
    })
}

pub(crate) fn rss_kib() -> anyhow::Result<u64> {
    status_kib("VmRSS").context("cannot read VmRSS from /proc/self/status")
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
