//! `presence`: one document with many members (light QUIC devices), members changing their
//! status (an `Ephemeral` frame each) at a steady total rate. Measured: the relay's CPU per
//! status change, how many of the changes reached each other member, whether every member
//! ends with every other member's last status, and the delay from a status being sent to one
//! member seeing it. Run twice in the same process: the relay as configured (batched from
//! `HubConfig::presence_batch_from` subscribers) and the baseline, the same relay relaying
//! each status at once (one frame per member per change, what it did before batching).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use weft_core::quic::FrameReader;
use weft_core::wire::Message;
use weft_core::DocId;

use crate::client::{self, Client};
use crate::plan::{env_number, Plan};
use crate::relay::{relay_cpu, Relay};
use crate::report::{ms, percentiles, us};

/// The target: relay CPU per status change in a 1,000-member document.
const TARGET: Duration = Duration::from_millis(1);
/// Overrides the status changes per second, all members together (100 and 500 quick, also
/// 1,000 full).
const RATE_ENV: &str = "WEFT_BENCH_PRESENCE_RATE";

/// A fixed tick in milliseconds, instead of the relay's (`HubConfig::presence_batch_every`
/// growing by `presence_batch_per_member` up to `presence_batch_max`).
const TICK_ENV: &str = "WEFT_BENCH_PRESENCE_TICK_MS";
/// Overrides the members (1,000).
const MEMBERS_ENV: &str = "WEFT_BENCH_PRESENCE_MEMBERS";

/// What one run measured.
struct Run {
    members: usize,
    changes: u64,
    cpu: Duration,
    /// Statuses received, over `changes * (members - 1)`.
    delivered: f64,
    /// (receiver, sender) pairs whose receiver ends with the sender's last status, over all.
    last_state: f64,
    /// Member 0's delay from a status being sent to it arriving.
    latency: (Duration, Duration, Duration),
    setup: Duration,
}

pub(crate) fn presence_workload(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Value> {
    let members = env_number::<usize>(MEMBERS_ENV).unwrap_or(1_000);
    let window = if plan.quick {
        Duration::from_secs(4)
    } else {
        Duration::from_secs(10)
    };
    let rates: Vec<u64> = match env_number::<u64>(RATE_ENV) {
        Some(r) => vec![r.max(1)],
        None if plan.quick => vec![100, 500],
        None => vec![100, 500, 1_000],
    };
    let every = env_number::<u64>(TICK_ENV).map(Duration::from_millis);
    let defaults = weft_relay::HubConfig::default();
    let tick = every.unwrap_or_else(|| defaults.presence_tick(members));
    eprintln!(
        "presence: {members} members of one document, status changes at a steady rate for {:.0} s; \
         batched every {} ms, baseline each at once",
        window.as_secs_f64(),
        tick.as_millis()
    );
    eprintln!(
        "  {:>6} {:<24} {:>12} {:>10} {:>11} {:>9} {:>9} {:>8}",
        "/s", "", "relay us/chg", "delivered", "last state", "p50 ms", "p99 ms", "setup s"
    );
    let mut runs = Vec::new();
    let mut base_runs = Vec::new();
    for &rate in &rates {
        let from = defaults.presence_batch_from;
        let batched = run_on(
            rt,
            Relay::start_presence(from, every)?,
            members,
            rate,
            window,
        )
        .context("batched")?;
        print(rate, "batched", &batched);
        let each = run_on(
            rt,
            Relay::start_presence(usize::MAX, None)?,
            members,
            rate,
            window,
        )
        .context("baseline: each status relayed at once")?;
        print(rate, "baseline: each at once", &each);
        runs.push(report(rate, &batched));
        base_runs.push(report(rate, &each));
    }
    eprintln!("  target: relay CPU < {} us per change", us(TARGET));
    Ok(json!({
        "workload": "presence",
        "quick": plan.quick,
        "pinned": plan.pin,
        "members": members,
        "batch_every_ms": tick.as_millis() as u64,
        "window_s": window.as_secs_f64(),
        "target_us_per_change": us(TARGET),
        "runs": runs,
        "baseline": {
            "what": "the same relay relaying each status at once (presence_batch_from off): \
                one frame per member per change, a QUIC datagram each",
            "runs": base_runs,
        },
    }))
}

fn print(rate: u64, name: &str, r: &Run) {
    eprintln!(
        "  {:>6} {:<24} {:>12.1} {:>9.1}% {:>10.1}% {:>9.2} {:>9.2} {:>8.1}",
        rate,
        name,
        us(per_change(r)),
        r.delivered * 100.0,
        r.last_state * 100.0,
        ms(r.latency.0),
        ms(r.latency.1),
        r.setup.as_secs_f64()
    );
}

fn report(rate: u64, r: &Run) -> Value {
    json!({
        "rate_per_s": rate,
        "members": r.members,
        "changes": r.changes,
        "relay_cpu_us_per_change": us(per_change(r)),
        "met": per_change(r) < TARGET && r.last_state >= 0.999,
        "delivered_fraction": r.delivered,
        "last_state_fraction": r.last_state,
        "member_latency_ms": {"p50": ms(r.latency.0), "p99": ms(r.latency.1), "max": ms(r.latency.2)},
    })
}

fn per_change(r: &Run) -> Duration {
    r.cpu / r.changes.max(1) as u32
}

fn run_on(
    rt: &tokio::runtime::Runtime,
    relay: Relay,
    members: usize,
    rate: u64,
    window: Duration,
) -> anyhow::Result<Run> {
    let r = rt.block_on(run(&relay, members, rate, window));
    relay.stop();
    r
}

/// One member's view: the sequence number of the last status received from each sender
/// (0: none).
struct View {
    last: Vec<AtomicU64>,
}

async fn run(relay: &Relay, members: usize, rate: u64, window: Duration) -> anyhow::Result<Run> {
    let started = Instant::now();
    let doc = DocId::from_bytes(rand::random());
    let token = relay.token()?;
    let clients = client::connect_many(members, relay.addr, &relay.cert, &token).await?;
    let clients = client::sync_all(clients, &[doc], Duration::from_secs(300)).await?;
    let setup = started.elapsed();

    let epoch = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let views: Vec<Arc<View>> = (0..members)
        .map(|_| {
            Arc::new(View {
                last: (0..members).map(|_| AtomicU64::new(0)).collect(),
            })
        })
        .collect();
    let mut readers = tokio::task::JoinSet::new();
    let mut writers = Vec::new();
    let mut conns = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let Client {
            conn,
            reader,
            writer,
            endpoint,
        } = c;
        readers.spawn(read(
            conn.clone(),
            reader,
            views[i].clone(),
            received.clone(),
            (i == 0).then(|| latencies.clone()),
            epoch,
            stop.clone(),
        ));
        conns.push(conn);
        writers.push((writer, endpoint));
    }
    // Joining sent every member a burst of presence frames: let it drain before measuring.
    settle(&received).await;

    crate::report::progress(format_args!("presence: window starts"));
    let (r0, cpu0) = (received.load(Relaxed), relay_cpu());
    let mut sent_last = vec![0u64; members];
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut changes = 0u64;
    let t = Instant::now();
    while t.elapsed() < window {
        tick.tick().await;
        let who = rand::random_range(0..members);
        sent_last[who] += 1;
        let data = status(who as u64, sent_last[who], epoch.elapsed());
        let msg = Message::Ephemeral {
            doc,
            user: None,
            device: None,
            data,
        };
        writers[who].0.send(&msg).await?;
        changes += 1;
    }
    settle(&received).await;
    let cpu = relay_cpu().saturating_sub(cpu0);
    let got = received.load(Relaxed) - r0;
    stop.store(true, Relaxed);
    for c in &conns {
        c.close(quinn::VarInt::from_u32(0), b"done");
    }
    readers.shutdown().await;

    let (mut pairs, mut right) = (0u64, 0u64);
    for (r, view) in views.iter().enumerate() {
        for (s, last) in sent_last.iter().enumerate() {
            if s != r && *last > 0 {
                pairs += 1;
                right += u64::from(view.last[s].load(Relaxed) == *last);
            }
        }
    }
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    Ok(Run {
        members,
        changes,
        cpu,
        delivered: got as f64 / (changes * (members as u64 - 1)).max(1) as f64,
        last_state: right as f64 / pairs.max(1) as f64,
        latency: percentiles(&mut lat),
        setup,
    })
}

/// Waits until no status arrived for 500 ms (at most 10 s).
async fn settle(received: &AtomicU64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = received.load(Relaxed);
    while Instant::now() < deadline {
        // Polling a counter: what arrives gives no event to await "nothing more comes".
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = received.load(Relaxed);
        if now == seen {
            return;
        }
        seen = now;
    }
}

/// A status payload: sender, sequence number, and when it was sent (us since `epoch`).
fn status(sender: u64, seq: u64, at: Duration) -> Vec<u8> {
    let mut data = Vec::with_capacity(24);
    data.extend_from_slice(&sender.to_be_bytes());
    data.extend_from_slice(&seq.to_be_bytes());
    data.extend_from_slice(&(at.as_micros() as u64).to_be_bytes());
    data
}

/// Reads a member's stream and datagrams, recording the statuses it receives.
async fn read(
    conn: quinn::Connection,
    mut reader: FrameReader,
    view: Arc<View>,
    received: Arc<AtomicU64>,
    latencies: Option<Arc<Mutex<Vec<Duration>>>>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) {
    let max = weft_core::wire::DEFAULT_MAX_FRAME;
    while !stop.load(Relaxed) {
        let msg = tokio::select! {
            m = reader.recv() => match m {
                Ok(Some(m)) => m,
                _ => return,
            },
            d = weft_core::quic::recv_datagram(&conn, max) => match d {
                Ok(m) => m,
                Err(e) if e.connection_error().is_some() => return,
                Err(_) => continue,
            },
        };
        let Message::Ephemeral { data, .. } = msg else {
            continue;
        };
        if data.len() != 24 {
            continue;
        }
        let field = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[i * 8..i * 8 + 8]);
            u64::from_be_bytes(b)
        };
        let (sender, seq, at) = (field(0) as usize, field(1), field(2));
        received.fetch_add(1, Relaxed);
        if let Some(last) = view.last.get(sender) {
            last.store(seq, Relaxed);
        }
        if let Some(l) = &latencies {
            let delay = epoch.elapsed().saturating_sub(Duration::from_micros(at));
            if let Ok(mut l) = l.lock() {
                l.push(delay);
            }
        }
    }
}
