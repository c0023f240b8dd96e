//! `huge-conversation`: one conversation of 100,000 messages (10,000 in quick mode).
//!
//! The conversation is made before anything is timed (the chain's changes, in the schema's
//! shape) and given to the relay by a real upload: a light device holding it syncs it to the
//! relay. Then, alternating with the baseline (`Automerge::load` of the same saved bytes):
//! a fresh `weft_peer::Device` with only a token syncs it through the relay (time, bytes the
//! relay sent, the process's peak RSS above its start), and a device that holds it is closed
//! and opened again and shows the last 50 messages as `weft msg list --last 50` does
//! (`Device::last_messages`, served from the tail cached beside the document), the time a
//! user waits to see them; then opened again and reads them by loading the document
//! (`weft_schema::last_messages` in `Device::read`, the path before the cache and any miss's). Memory: what loading the
//! saved bytes costs (the baseline's RSS delta), and the RSS the relay (after the upload) and
//! the device (after its sync) hold above what they held before.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use weft_core::automerge::Automerge;
use weft_core::engine::{Engine, EngineConfig};
use weft_core::{DocId, Document};
use weft_peer::{schema, DataDir, Device, RelayConfig, TokenSource};

use crate::chain::Chain;
use crate::client::Client;
use crate::device::synced;
use crate::large_change::{release_freed_memory, statm_rss_kib, Sampler};
use crate::plan::Plan;
use crate::relay::Relay;
use crate::report::ms;

/// Messages a user sees when opening the conversation.
const LAST: usize = 50;

/// One device's initial sync and reopen, beside one baseline load.
struct Round {
    sync: Duration,
    wire_bytes: u64,
    sync_peak_kib: u64,
    device_held_kib: u64,
    open_last: Duration,
    open_cached: Duration,
    cached_read: Duration,
    warm_last: Duration,
    all_messages: Duration,
    base_load: Duration,
}

pub fn huge_conversation_workload(
    plan: &Plan,
    clients: &tokio::runtime::Runtime,
) -> anyhow::Result<Value> {
    let messages = if plan.quick { 10_000 } else { 100_000 };
    let rounds = if plan.quick { 2 } else { 3 };
    let t = Instant::now();
    let (_chain, am) = Chain::generate_with(messages, |i| {
        format!("message {i}: on my way, see you at the station in ten minutes")
    });
    let made = t.elapsed();
    // What the relay's first newcomer at these heads waits for (its whole-document message is
    // this `save()`, made on a blocking thread), and what the copy the hub hands that thread
    // costs the hub (decision 0036).
    let t = Instant::now();
    let saved = am.save();
    let save_took = t.elapsed();
    let t = Instant::now();
    let copy = am.clone();
    let clone_took = t.elapsed();
    drop(copy);
    let mut heads = am.get_heads();
    heads.sort_unstable();
    drop(am);

    // The document's loaded size: the RSS a loaded copy holds.
    release_freed_memory();
    let before = statm_rss_kib().unwrap_or(0);
    let loaded = Automerge::load(&saved)?;
    let loaded_kib = statm_rss_kib().unwrap_or(0).saturating_sub(before);
    drop(loaded);

    let relay = Relay::start()?;
    release_freed_memory();
    let relay_before = statm_rss_kib().unwrap_or(0);
    let doc = DocId::from_bytes(rand::random());
    let t = Instant::now();
    clients.block_on(upload(&relay, doc, &saved))?;
    let uploaded = t.elapsed();
    release_freed_memory();
    let relay_held_kib = statm_rss_kib().unwrap_or(0).saturating_sub(relay_before);

    let mut all = Vec::new();
    for _ in 0..rounds {
        let base_load = {
            let t = Instant::now();
            let am = Automerge::load(&saved)?;
            let took = t.elapsed();
            anyhow::ensure!(am.get_heads().len() == heads.len(), "the baseline load");
            took
        };
        let r = clients.block_on(device_round(&relay, doc, &heads, messages - 1, base_load))?;
        all.push(r);
    }
    relay.stop();

    let med = |f: &dyn Fn(&Round) -> Duration| {
        let mut v: Vec<Duration> = all.iter().map(f).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    let range = |f: &dyn Fn(&Round) -> Duration| {
        let v: Vec<f64> = all.iter().map(|r| ms(f(r))).collect();
        v
    };
    let sync = med(&|r| r.sync);
    let base = med(&|r| r.base_load);
    let open = med(&|r| r.open_last);
    let open_cached = med(&|r| r.open_cached);
    let ratio = sync.as_secs_f64() / base.as_secs_f64();
    let wire = all.iter().map(|r| r.wire_bytes).max().unwrap_or(0);
    let peak = all.iter().map(|r| r.sync_peak_kib).max().unwrap_or(0);
    let held = all.iter().map(|r| r.device_held_kib).max().unwrap_or(0);
    eprintln!(
        "huge-conversation: {messages} messages, saved {:.2} MB (made in {:.1} s, uploaded in {:.1} s)",
        saved.len() as f64 / 1e6,
        made.as_secs_f64(),
        uploaded.as_secs_f64()
    );
    eprintln!(
        "  initial sync of a new device: median {:.0} ms {:?}, {:.2} MB from the relay ({:.2}x the saved bytes)",
        ms(sync),
        range(&|r| r.sync),
        wire as f64 / 1e6,
        wire as f64 / saved.len() as f64
    );
    eprintln!(
        "  Automerge::load of the saved bytes (baseline): median {:.0} ms {:?}; ratio {ratio:.2} (target <= 1.5)",
        ms(base),
        range(&|r| r.base_load)
    );
    eprintln!(
        "  open on a device and show the last {LAST} (Device::last_messages, cached tail): median {:.1} ms {:?} (target < 100 ms), of which the cached read {:.2} ms",
        ms(open_cached),
        range(&|r| r.open_cached),
        ms(med(&|r| r.cached_read))
    );
    eprintln!(
        "  open on a device and read the last {LAST} by loading the document: median {:.0} ms {:?}; already open {:.2} ms; every message (msg list) {:.0} ms",
        ms(open),
        range(&|r| r.open_last),
        ms(med(&|r| r.warm_last)),
        ms(med(&|r| r.all_messages))
    );
    eprintln!(
        "  memory: loaded copy {:.1} MiB; relay after the upload +{:.1} MiB; during a device's sync peak +{:.1} MiB, device after +{:.1} MiB (relay and device in this process)",
        loaded_kib as f64 / 1024.0,
        relay_held_kib as f64 / 1024.0,
        peak as f64 / 1024.0,
        held as f64 / 1024.0
    );
    eprintln!(
        "  the relay's whole-document message: a save() of {:.0} ms (on a blocking thread); the copy the hub makes for it {:.0} ms",
        ms(save_took),
        ms(clone_took)
    );
    Ok(json!({
        "workload": "huge-conversation",
        "save_ms": ms(save_took),
        "clone_ms": ms(clone_took),
        "messages": messages,
        "saved_bytes": saved.len(),
        "rounds": rounds,
        "initial_sync_ms_median": ms(sync),
        "initial_sync_ms_all": range(&|r| r.sync),
        "initial_sync_vs_baseline": (ratio * 100.0).round() / 100.0,
        "initial_sync_target_vs_baseline": 1.5,
        "wire_bytes_from_relay": wire,
        "open_last_50_cached_ms_median": ms(open_cached),
        "open_last_50_cached_ms_all": range(&|r| r.open_cached),
        "cached_read_ms_median": ms(med(&|r| r.cached_read)),
        "open_last_50_loading_ms_median": ms(open),
        "open_last_50_loading_ms_all": range(&|r| r.open_last),
        "open_target_ms": 100,
        "read_last_50_open_doc_ms": ms(med(&|r| r.warm_last)),
        "read_all_messages_ms": ms(med(&|r| r.all_messages)),
        "loaded_copy_kib": loaded_kib,
        "relay_after_upload_kib": relay_held_kib,
        "sync_peak_above_start_kib": peak,
        "device_after_sync_kib": held,
        "baseline": {
            "what": "Automerge::load of the same saved bytes, in memory, alternating with the syncs",
            "load_ms_median": ms(base),
            "load_ms_all": range(&|r| r.base_load),
        },
    }))
}

/// A light device that holds the document syncs it to the relay (a new document there).
pub(crate) async fn upload(relay: &Relay, doc: DocId, saved: &[u8]) -> anyhow::Result<()> {
    let mut c = Client::connect(relay.addr, &relay.cert, &relay.token()?).await?;
    let document = Document::load(saved)?;
    let mut engine = Engine::new(EngineConfig::device());
    engine.create(doc, document);
    c.sync_engine(&mut engine, &[doc], Duration::from_secs(600))
        .await
        .context("uploading the document")?;
    c.conn.close(0u32.into(), b"done");
    Ok(())
}

async fn device_round(
    relay: &Relay,
    doc: DocId,
    heads: &[weft_core::automerge::ChangeHash],
    messages: usize,
    base_load: Duration,
) -> anyhow::Result<Round> {
    let dir = tempfile::tempdir()?;
    let cfg = RelayConfig {
        addr: relay.addr.to_string(),
        alternates: Vec::new(),
        token: TokenSource::Static(relay.token()?),
        pinned_cert: Some(relay.cert.clone()),
        docs: vec![doc],
        reconnect: true,
        max_backoff: Duration::from_secs(10),
    };
    let device = Device::open(DataDir::new(dir.path())).await?;
    let out0 = relay
        .metrics
        .bytes_out
        .load(std::sync::atomic::Ordering::Relaxed);
    let sampler = Sampler::start();
    let t = Instant::now();
    let link = device.connect_relay(cfg).await?;
    synced(&device, doc, Duration::from_secs(600)).await?;
    let sync = t.elapsed();
    let rss = sampler.finish();
    let wire_bytes = relay
        .metrics
        .bytes_out
        .load(std::sync::atomic::Ordering::Relaxed)
        - out0;
    let mut got = device.read(doc, |am| am.get_heads()).await?;
    got.sort_unstable();
    anyhow::ensure!(
        got == heads,
        "the new device's heads differ from the document's"
    );
    link.stop().await;
    release_freed_memory();
    let device_held_kib = statm_rss_kib().unwrap_or(0).saturating_sub(rss.start_kib);
    device.close().await;

    // Opening it again: a device process starting and showing the conversation's tail, from
    // the tail cached at close (`Device::last_messages`).
    let t = Instant::now();
    let device = Device::open(DataDir::new(dir.path())).await?;
    let opened = t.elapsed();
    let cached = device.last_messages(doc, LAST).await??;
    let open_cached = t.elapsed();
    let cached_read = open_cached - opened;
    anyhow::ensure!(
        cached.value.len() == LAST,
        "read {} messages from the cache",
        cached.value.len()
    );
    device.close().await;

    // The same, loading the document (the path before the cache, and any miss's).
    let t = Instant::now();
    let device = Device::open(DataDir::new(dir.path())).await?;
    let last = device
        .read(doc, |am| schema::last_messages(am, LAST))
        .await??;
    let open_last = t.elapsed();
    anyhow::ensure!(
        last.value.len() == LAST,
        "read {} messages",
        last.value.len()
    );
    anyhow::ensure!(
        last.value == cached.value,
        "the cached tail differs from the document's"
    );
    let t = Instant::now();
    let again = device
        .read(doc, |am| schema::last_messages(am, LAST))
        .await??;
    let warm_last = t.elapsed();
    anyhow::ensure!(
        again.value.len() == LAST,
        "read {} messages",
        again.value.len()
    );
    let t = Instant::now();
    let every = device.read(doc, schema::messages).await??;
    let all_messages = t.elapsed();
    anyhow::ensure!(
        every.value.len() == messages,
        "read {} of {messages} messages",
        every.value.len()
    );
    device.close().await;
    Ok(Round {
        sync,
        wire_bytes,
        sync_peak_kib: rss.peak_kib.saturating_sub(rss.start_kib),
        device_held_kib,
        open_last,
        open_cached,
        cached_read,
        warm_last,
        all_messages,
        base_load,
    })
}
