//! Device workloads: `durable-writes` (local writes per second, one task and eight) and
//! `reconnect` (two devices with 1,000 offline changes each converging through the relay).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use weft_core::automerge::sync::SyncDoc;
use weft_core::automerge::{self, Automerge};
use weft_peer::schema::{self, NewConversation, NewMessage};
use weft_peer::{DataDir, Device, DocId, RelayConfig, SyncState, TokenSource};

use crate::relay::Relay;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) async fn new_conversation(device: &Device) -> anyhow::Result<DocId> {
    let new = NewConversation {
        title: "bench".into(),
        participants: vec![],
    };
    let (doc, r) = device
        .create(Some("conversation"), move |am| {
            schema::Conversation::create(am, &new, now_ms())
        })
        .await?;
    r?;
    Ok(doc)
}

pub(crate) async fn send(device: &Device, doc: DocId, body: String) -> anyhow::Result<()> {
    let msg = NewMessage::text("bench", body);
    let id = schema::Id::from_bytes(rand::random());
    device
        .change(doc, move |am| schema::send_message(am, &msg, id, now_ms()))
        .await??;
    Ok(())
}

/// Durable local writes per second: one app task writing one message at a time, eight tasks
/// writing concurrently (group commit shares fsyncs), against raw redb with one durable
/// transaction per write in the same run.
pub async fn durable_writes(quick: bool) -> anyhow::Result<Value> {
    let per_task = if quick { 300 } else { 1500 };
    let dir = tempfile::tempdir()?;
    let device = Device::open(DataDir::new(dir.path())).await?;
    let doc = new_conversation(&device).await?;
    let t = Instant::now();
    for i in 0..per_task {
        send(&device, doc, format!("message {i}")).await?;
    }
    let one = per_task as f64 / t.elapsed().as_secs_f64();

    let tasks = 8;
    let mut docs = Vec::new();
    for _ in 0..tasks {
        docs.push(new_conversation(&device).await?);
    }
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for doc in docs {
        let device = device.clone();
        set.spawn(async move {
            for i in 0..per_task {
                send(&device, doc, format!("message {i}")).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let eight = (per_task * tasks) as f64 / t.elapsed().as_secs_f64();
    device.close().await;

    // Baseline: raw redb, one durable transaction per write of the same size.
    let raw = tokio::task::spawn_blocking(move || raw_redb_writes(per_task)).await??;
    eprintln!("durable-writes: one message per durable write (fsync), {per_task} per task");
    eprintln!("  {:>22} {:>12} {:>14}", "", "writes/s", "vs raw redb");
    eprintln!("  {:>22} {:>12.0} {:>14.2}", "weft, 1 task", one, one / raw);
    eprintln!(
        "  {:>22} {:>12.0} {:>14.2}",
        "weft, 8 tasks",
        eight,
        eight / raw
    );
    eprintln!(
        "  {:>22} {:>12.0} {:>14}",
        "raw redb (baseline)", raw, "1.00"
    );
    Ok(json!({
        "workload": "durable-writes",
        "writes_per_task": per_task,
        "one_task_writes_per_s": one.round(),
        "eight_tasks_writes_per_s": eight.round(),
        "one_task_vs_baseline": (one / raw * 100.0).round() / 100.0,
        "eight_tasks_vs_baseline": (eight / raw * 100.0).round() / 100.0,
        "baseline": {
            "what": "raw redb, one durable transaction per 300-byte write, one thread",
            "writes_per_s": raw.round(),
        },
    }))
}

fn raw_redb_writes(n: usize) -> anyhow::Result<f64> {
    const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("bench");
    let dir = tempfile::tempdir()?;
    let db = redb::Database::create(dir.path().join("raw.redb"))?;
    let value = vec![7u8; 300];
    let t = Instant::now();
    for i in 0..n as u64 {
        let tx = db.begin_write()?;
        {
            let mut table = tx.open_table(TABLE)?;
            table.insert(i, value.as_slice())?;
        }
        tx.commit()?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Waits until every link of `device` has `doc` synced.
pub(crate) async fn synced(device: &Device, doc: DocId, limit: Duration) -> anyhow::Result<()> {
    let mut status = device.status();
    tokio::time::timeout(limit, async {
        loop {
            let done = {
                let s = status.borrow_and_update();
                !s.links.is_empty()
                    && s.links.values().all(|l| {
                        l.docs
                            .get(&doc)
                            .is_some_and(|d| d.state == SyncState::Synced)
                    })
            };
            if done {
                return Ok(());
            }
            status.changed().await.context("device closed")?;
        }
    })
    .await
    .context("timed out waiting for a sync")?
}

/// Two devices of one user hold a conversation, go offline, write `changes` messages each,
/// then reconnect to the relay: the time until both hold the same heads and the relay has
/// confirmed them. Baseline: Automerge's own sync protocol between the same two documents in
/// memory (no network, no store), measured in the same run.
/// Two devices with [`RECONNECT_CHANGES`] offline changes each reconnect through the relay,
/// in rounds of [`reconnect_round`], each on a relay of its own: devices sync every document
/// their user may read, so on a shared relay each round would also download the earlier
/// rounds' documents (which made later rounds slower and slower).
pub fn reconnect(rt: &tokio::runtime::Runtime, quick: bool) -> anyhow::Result<Value> {
    let changes = RECONNECT_CHANGES;
    let rounds = if quick { 2 } else { 5 };
    let mut times = Vec::new();
    let mut base_times = Vec::new();
    for _ in 0..rounds {
        let relay = Relay::start()?;
        let round = rt.block_on(reconnect_round(&relay));
        relay.stop();
        let (took, base) = round?;
        times.push(took);
        base_times.push(base);
    }
    times.sort_unstable();
    base_times.sort_unstable();
    let median = |v: &[Duration]| v[v.len() / 2];
    let (w, base) = (median(&times), median(&base_times));
    eprintln!("reconnect: two devices, {changes} offline messages each, through the relay");
    eprintln!("  weft median {:.1} ms (target < 200 ms); Automerge sync in memory (baseline) {:.1} ms; ratio {:.2}",
        w.as_secs_f64() * 1e3, base.as_secs_f64() * 1e3, w.as_secs_f64() / base.as_secs_f64());
    Ok(json!({
        "workload": "reconnect",
        "changes_per_device": changes,
        "rounds": rounds,
        "converged_ms_median": (w.as_secs_f64() * 1e4).round() / 10.0,
        "converged_ms_all": times.iter().map(|d| (d.as_secs_f64() * 1e4).round() / 10.0).collect::<Vec<_>>(),
        "target_ms": 200,
        "vs_baseline": (w.as_secs_f64() / base.as_secs_f64() * 100.0).round() / 100.0,
        "baseline": {
            "what": "automerge generate/receive_sync_message between the two diverged documents in memory",
            "converged_ms_median": (base.as_secs_f64() * 1e4).round() / 10.0,
        },
    }))
}

const RECONNECT_CHANGES: usize = 1000;

/// One reconnect, timed, and its baseline: Automerge's sync of the same two documents.
async fn reconnect_round(relay: &Relay) -> anyhow::Result<(Duration, Duration)> {
    let changes = RECONNECT_CHANGES;
    let (ta, tb) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = Device::open(DataDir::new(ta.path())).await?;
    let b = Device::open(DataDir::new(tb.path())).await?;
    let doc = new_conversation(&a).await?;
    let cfg = |docs: Vec<DocId>| -> anyhow::Result<RelayConfig> {
        Ok(RelayConfig {
            addr: relay.addr.to_string(),
            alternates: Vec::new(),
            token: TokenSource::Static(relay.token()?),
            pinned_cert: Some(relay.cert.clone()),
            docs,
            reconnect: true,
            max_backoff: Duration::from_secs(10),
        })
    };
    let la = a.connect_relay(cfg(vec![])?).await?;
    synced(&a, doc, Duration::from_secs(30)).await?;
    let lb = b.connect_relay(cfg(vec![doc])?).await?;
    synced(&b, doc, Duration::from_secs(30)).await?;
    la.stop().await;
    lb.stop().await;
    for i in 0..changes {
        send(&a, doc, format!("a {i}")).await?;
        send(&b, doc, format!("b {i}")).await?;
    }
    // The baseline diverges the same way: both documents as they are now.
    let mut am_a = a
        .read(doc, |am| am.save())
        .await
        .map(|b| Automerge::load(&b))??;
    let mut am_b = b
        .read(doc, |am| am.save())
        .await
        .map(|b| Automerge::load(&b))??;
    let base = automerge_sync(&mut am_a, &mut am_b)?;

    crate::report::perf_control("enable");
    let t = Instant::now();
    let _la = a.connect_relay(cfg(vec![])?).await?;
    let _lb = b.connect_relay(cfg(vec![doc])?).await?;
    synced(&a, doc, Duration::from_secs(60)).await?;
    synced(&b, doc, Duration::from_secs(60)).await?;
    loop {
        let (ha, hb) = (
            a.read(doc, |am| am.get_heads()).await?,
            b.read(doc, |am| am.get_heads()).await?,
        );
        if ha == hb {
            break;
        }
        synced(&a, doc, Duration::from_secs(60)).await?;
    }
    let took = t.elapsed();
    crate::report::perf_control("disable");
    a.close().await;
    b.close().await;
    Ok((took, base))
}

/// Automerge's sync protocol between two documents until neither has anything to send.
fn automerge_sync(a: &mut Automerge, b: &mut Automerge) -> anyhow::Result<Duration> {
    let (mut sa, mut sb) = (automerge::sync::State::new(), automerge::sync::State::new());
    let t = Instant::now();
    for _ in 0..100 {
        let m1 = a.generate_sync_message(&mut sa);
        let m2 = b.generate_sync_message(&mut sb);
        if m1.is_none() && m2.is_none() {
            break;
        }
        if let Some(m) = m1 {
            b.receive_sync_message(&mut sb, m)?;
        }
        if let Some(m) = m2 {
            a.receive_sync_message(&mut sa, m)?;
        }
    }
    anyhow::ensure!(
        a.get_heads() == b.get_heads(),
        "the baseline did not converge"
    );
    Ok(t.elapsed())
}

#[allow(dead_code)]
fn _assert_send(_: Arc<Device>) {}

/// A new device with only a token gets every document of its user: `docs` conversations of
/// `msgs` messages each, written by another device. Time until all are synced, against
/// Automerge's own sync protocol run in memory for the same documents, one after another.
pub async fn initial_sync(relay: &Relay, quick: bool) -> anyhow::Result<Value> {
    let (docs, msgs) = if quick { (200, 10) } else { (1000, 20) };
    let (ta, tb) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = Device::open(DataDir::new(ta.path())).await?;
    let mut ids = Vec::with_capacity(docs);
    for d in 0..docs {
        let doc = new_conversation(&a).await?;
        for m in 0..msgs {
            send(&a, doc, format!("doc {d} message {m}")).await?;
        }
        ids.push(doc);
    }
    let cfg = RelayConfig {
        addr: relay.addr.to_string(),
        alternates: Vec::new(),
        token: TokenSource::Static(relay.token()?),
        pinned_cert: Some(relay.cert.clone()),
        docs: vec![],
        reconnect: true,
        max_backoff: Duration::from_secs(10),
    };
    let la = a.connect_relay(cfg.clone()).await?;
    all_synced(&a, docs, Duration::from_secs(300)).await?;
    la.stop().await;

    // Baseline: the same documents through Automerge's sync protocol in memory.
    let mut base = Duration::ZERO;
    let mut bytes = 0usize;
    for doc in &ids {
        let saved = a.read(*doc, |am| am.save()).await?;
        bytes += saved.len();
        let mut full = Automerge::load(&saved)?;
        let mut empty = Automerge::new();
        base += automerge_sync(&mut full, &mut empty)?;
    }
    a.close().await;

    let b = Device::open(DataDir::new(tb.path())).await?;
    let t = Instant::now();
    let _lb = b.connect_relay(cfg).await?;
    all_synced(&b, docs, Duration::from_secs(300)).await?;
    let took = t.elapsed();
    let have = b.list().await?.len();
    anyhow::ensure!(
        have == docs,
        "the new device has {have} of {docs} documents"
    );
    b.close().await;
    eprintln!("initial-sync: a new device with only a token, {docs} conversations x {msgs} messages ({:.1} MB saved)", bytes as f64 / 1e6);
    eprintln!(
        "  weft {:.0} ms ({:.0} docs/s); Automerge sync in memory, one document after another (baseline) {:.0} ms; ratio {:.2}",
        took.as_secs_f64() * 1e3,
        docs as f64 / took.as_secs_f64(),
        base.as_secs_f64() * 1e3,
        took.as_secs_f64() / base.as_secs_f64()
    );
    Ok(json!({
        "workload": "initial-sync",
        "documents": docs,
        "messages_per_document": msgs,
        "saved_bytes": bytes,
        "ms": (took.as_secs_f64() * 1e4).round() / 10.0,
        "docs_per_s": (docs as f64 / took.as_secs_f64()).round(),
        "vs_baseline": (took.as_secs_f64() / base.as_secs_f64() * 100.0).round() / 100.0,
        "baseline": {
            "what": "automerge generate/receive_sync_message for each document in memory, sequentially (no network, no store)",
            "ms": (base.as_secs_f64() * 1e4).round() / 10.0,
        },
    }))
}

/// Waits until `device`'s one link lists `docs` documents, all synced.
pub(crate) async fn all_synced(
    device: &Device,
    docs: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let mut status = device.status();
    tokio::time::timeout(limit, async {
        loop {
            let done = status.borrow_and_update().links.values().any(|l| {
                l.discovered
                    && l.docs.len() >= docs
                    && l.docs.values().all(|d| d.state == SyncState::Synced)
            });
            if done {
                return Ok(());
            }
            status.changed().await.context("device closed")?;
        }
    })
    .await
    .context("timed out waiting for the initial sync")?
}
