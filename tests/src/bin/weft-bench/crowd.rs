//! `crowd`: 200 devices join one 20 MB document within one second (50 devices and 5 MB in
//! quick mode).
//!
//! The document (chat messages of 10,000 random characters each: 20 MB of text, which deflate
//! leaves at about three quarters) is made before anything is timed and given to the relay by
//! a real upload. The joiners run in a child process (this binary again, with [`CHILD_ENV`]), so
//! this process's resident memory is the relay's: its peak above the start while the crowd
//! joins is the figure, against the document's loaded size (the RSS delta of
//! `Automerge::load` of its saved bytes) measured in the same run. Baseline in the same run:
//! one joiner alone.
//!
//! A joiner is a light device: it connects (all of them before the clock starts), subscribes
//! (spread evenly over one second), sends Automerge's first sync message of an empty document
//! and reads the relay's answer: the document's chunks, whose heads it checks against the
//! document's (joiner 0 and the baseline load the chunks with Automerge and compare its heads;
//! the others read the heads from the document chunk's header). It then tells the relay it
//! holds those heads, and is synced once the relay has handled that (a later subscription's
//! answer: the hub handles a connection's frames in order).

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::Rng;
use serde_json::{json, Value};
use weft_core::automerge::sync::{self, SyncDoc};
use weft_core::automerge::{Automerge, ChangeHash};
use weft_core::wire::Message;
use weft_core::DocId;

use crate::chain::Chain;
use crate::client::Client;
use crate::large_change::{release_freed_memory, statm_rss_kib, Sampler};
use crate::plan::Plan;
use crate::relay::Relay;
use crate::report::ms;

/// Set in the child process that runs the joiners: the path of its configuration.
pub const CHILD_ENV: &str = "WEFT_BENCH_CROWD_JOINERS";

/// Characters of each message's body.
const BODY: usize = 10_000;

pub fn crowd_workload(plan: &Plan, clients: &tokio::runtime::Runtime) -> anyhow::Result<Value> {
    let (joiners, megabytes) = if plan.quick { (50, 5) } else { (200, 20) };
    let messages = megabytes * 1_000_000 / BODY;
    let (_chain, am) = Chain::generate_with(messages + 1, |_| random_text(BODY));
    // What a relay's first joiner at these heads waits for: the relay makes the whole-document
    // message with this same `save()`, on its hub's thread (every other document waits too).
    let t = std::time::Instant::now();
    let saved = am.save();
    let save_took = t.elapsed();
    let mut heads = am.get_heads();
    heads.sort_unstable();
    drop(am);
    anyhow::ensure!(
        saved.len() < weft_core::wire::DEFAULT_MAX_FRAME - 4096,
        "the document's snapshot ({} bytes) does not fit one frame",
        saved.len()
    );

    release_freed_memory();
    let before = statm_rss_kib().unwrap_or(0);
    let loaded = Automerge::load(&saved)?;
    let loaded_kib = statm_rss_kib().unwrap_or(0).saturating_sub(before);
    drop(loaded);

    let relay = Relay::start()?;
    let doc = DocId::from_bytes(rand::random());
    clients.block_on(crate::huge::upload(&relay, doc, &saved))?;

    // The first joiner at these heads has the relay make the whole-document message (a save of
    // the document); the crowd after it gets the same message.
    relay.metrics.take_longest_hub_turn();
    let alone = run_joiners(&relay, doc, &heads, 1)?;
    let first_turn = relay.metrics.take_longest_hub_turn();
    let crowd = run_joiners(&relay, doc, &heads, joiners)?;
    let crowd_turn = relay.metrics.take_longest_hub_turn();
    let again = run_joiners(&relay, doc, &heads, 1)?;
    relay.stop();
    // Baseline: the same first joiner on a relay that saves on its hub's thread.
    let in_place = Relay::start_opts(crate::relay::Options {
        saves_in_place: true,
        ..Default::default()
    })?;
    let doc = DocId::from_bytes(rand::random());
    clients.block_on(crate::huge::upload(&in_place, doc, &saved))?;
    in_place.metrics.take_longest_hub_turn();
    let alone_in_place = run_joiners(&in_place, doc, &heads, 1)?;
    let in_place_turn = in_place.metrics.take_longest_hub_turn();
    in_place.stop();

    let peak_mib = crowd.relay_peak_kib as f64 / 1024.0;
    let loaded_mib = loaded_kib as f64 / 1024.0;
    let last = crowd.times.iter().max().copied().unwrap_or_default();
    let mut sorted = crowd.times.clone();
    sorted.sort_unstable();
    let p50 = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    eprintln!(
        "crowd: {joiners} devices join one document of {messages} messages ({:.1} MB saved) within one second",
        saved.len() as f64 / 1e6
    );
    eprintln!(
        "  last device synced {:.0} ms after the first subscribed (target < 10 s); median joiner {:.0} ms; {:.0} MB sent by the relay",
        ms(crowd.elapsed),
        ms(p50),
        crowd.wire_bytes as f64 / 1e6
    );
    eprintln!(
        "  relay peak memory +{peak_mib:.0} MiB = {:.1}x the loaded document ({loaded_mib:.1} MiB; target < 3x)",
        peak_mib / loaded_mib
    );
    eprintln!(
        "  baseline: one device alone {:.0} ms (relay peak +{:.0} MiB); again after the crowd {:.0} ms",
        ms(alone.elapsed),
        alone.relay_peak_kib as f64 / 1024.0,
        ms(again.elapsed)
    );
    eprintln!(
        "  the hub's longest pass (every other document waits): first joiner {:.0} ms, crowd {:.0} ms; \
         a relay saving on its hub's thread: first joiner {:.0} ms (joined in {:.0} ms); a save() of the document here {:.0} ms",
        ms(first_turn),
        ms(crowd_turn),
        ms(in_place_turn),
        ms(alone_in_place.elapsed),
        ms(save_took)
    );
    Ok(json!({
        "save_ms": ms(save_took),
        "hub_longest_pass_ms": {
            "first_joiner": ms(first_turn),
            "crowd": ms(crowd_turn),
            "first_joiner_saving_in_place": ms(in_place_turn),
            "first_joiner_saving_in_place_joined_ms": ms(alone_in_place.elapsed),
        },
        "workload": "crowd",
        "joiners": joiners,
        "messages": messages,
        "saved_bytes": saved.len(),
        "last_synced_ms": ms(crowd.elapsed),
        "slowest_joiner_ms": ms(last),
        "median_joiner_ms": ms(p50),
        "target_last_synced_ms": 10_000,
        "relay_peak_kib": crowd.relay_peak_kib,
        "relay_peak_vs_loaded": ((peak_mib / loaded_mib) * 100.0).round() / 100.0,
        "target_peak_vs_loaded": 3.0,
        "wire_bytes_from_relay": crowd.wire_bytes,
        "loaded_document_kib": loaded_kib,
        "baseline": {
            "what": "one device joining alone, same relay and document; the loaded size is the RSS delta of Automerge::load of the saved bytes",
            "alone_ms": ms(alone.elapsed),
            "alone_relay_peak_kib": alone.relay_peak_kib,
            "alone_after_crowd_ms": ms(again.elapsed),
        },
    }))
}

/// Random text that deflate compresses about as little as real media would.
fn random_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

struct Joined {
    /// From the go signal to the last joiner synced.
    elapsed: Duration,
    /// Each joiner's, from its subscription.
    times: Vec<Duration>,
    relay_peak_kib: u64,
    wire_bytes: u64,
}

/// Runs `n` joiners in a child process against `relay`, sampling this process's RSS.
fn run_joiners(
    relay: &Relay,
    doc: DocId,
    heads: &[ChangeHash],
    n: usize,
) -> anyhow::Result<Joined> {
    let dir = tempfile::tempdir()?;
    let config = json!({
        "addr": relay.addr.to_string(),
        "cert": relay.cert.iter().map(|c| hex(c.as_ref())).collect::<Vec<_>>(),
        "token": relay.token()?,
        "doc": doc.to_string(),
        "heads": heads.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        "joiners": n,
    });
    let path = dir.path().join("crowd.json");
    std::fs::write(&path, config.to_string())?;
    let mut child = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the joiners' process")?;
    let mut stdin = child.stdin.take().context("the child's stdin")?;
    let mut lines =
        std::io::BufReader::new(child.stdout.take().context("the child's stdout")?).lines();
    let ready = lines.next().context("the joiners' process ended")??;
    anyhow::ensure!(ready == "ready", "the joiners' process said {ready}");
    let out0 = relay
        .metrics
        .bytes_out
        .load(std::sync::atomic::Ordering::Relaxed);
    let sampler = Sampler::start();
    let t = Instant::now();
    writeln!(stdin, "go")?;
    let result = lines.next().context("the joiners' process ended")??;
    let elapsed = t.elapsed();
    let rss = sampler.finish();
    let wire_bytes = relay
        .metrics
        .bytes_out
        .load(std::sync::atomic::Ordering::Relaxed)
        - out0;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "the joiners' process failed: {status}");
    let v: Value = serde_json::from_str(&result)?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("a joiner failed: {e}");
    }
    let times = v["times_us"]
        .as_array()
        .context("times")?
        .iter()
        .filter_map(Value::as_u64)
        .map(Duration::from_micros)
        .collect();
    Ok(Joined {
        elapsed,
        times,
        relay_peak_kib: rss.peak_kib.saturating_sub(rss.start_kib),
        wire_bytes,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> anyhow::Result<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2).context("odd hex")?, 16).map_err(Into::into))
        .collect()
}

/// The child process: connects the joiners, says `ready`, waits for `go`, joins them spread
/// over one second and prints one JSON line with each joiner's time.
pub fn joiners_main(config: &std::path::Path) -> anyhow::Result<()> {
    let v: Value = serde_json::from_slice(&std::fs::read(config)?)?;
    let addr: std::net::SocketAddr = v["addr"].as_str().context("addr")?.parse()?;
    let cert: Vec<rustls::pki_types::CertificateDer<'static>> = v["cert"]
        .as_array()
        .context("cert")?
        .iter()
        .map(|c| Ok(unhex(c.as_str().context("cert")?)?.into()))
        .collect::<anyhow::Result<_>>()?;
    let token = v["token"].as_str().context("token")?.to_string();
    let doc: DocId = v["doc"].as_str().context("doc")?.parse()?;
    let mut heads: Vec<ChangeHash> = v["heads"]
        .as_array()
        .context("heads")?
        .iter()
        .map(|h| Ok(h.as_str().context("head")?.parse()?))
        .collect::<anyhow::Result<_>>()?;
    heads.sort_unstable();
    let n = v["joiners"].as_u64().context("joiners")? as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let clients = crate::client::connect_many(n, addr, &cert, &token).await?;
        println!("ready");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let spread = Duration::from_secs(1) / u32::try_from(n).unwrap_or(1);
        let mut set = tokio::task::JoinSet::new();
        for (i, c) in clients.into_iter().enumerate() {
            let heads = heads.clone();
            set.spawn(async move {
                tokio::time::sleep(spread * u32::try_from(i).unwrap_or(0)).await;
                join(c, doc, &heads, i == 0).await
            });
        }
        let mut times = Vec::new();
        while let Some(r) = set.join_next().await {
            times.push(r??);
        }
        anyhow::Ok(times)
    });
    let out = match result {
        Ok(times) => json!({
            "times_us": times.iter().map(|t| t.as_micros() as u64).collect::<Vec<_>>(),
        }),
        Err(e) => json!({ "error": format!("{e:#}") }),
    };
    println!("{out}");
    Ok(())
}

/// One light device joining `doc`; its time from subscribing to synced.
async fn join(
    mut c: Client,
    doc: DocId,
    heads: &[ChangeHash],
    load: bool,
) -> anyhow::Result<Duration> {
    let limit = Duration::from_secs(120);
    let t = Instant::now();
    c.writer.send(&Message::Subscribe { doc }).await?;
    let mut state = sync::State::new();
    let empty = Automerge::new();
    loop {
        let msg = tokio::time::timeout(limit, c.reader.recv())
            .await
            .context("no answer from the relay")??
            .context("the relay closed the stream")?;
        match msg {
            Message::Subscribed { doc: d, .. } if d == doc => {
                if let Some(m) = empty.generate_sync_message(&mut state) {
                    c.writer
                        .send(&Message::Sync {
                            doc,
                            reset: false,
                            data: m.encode().into(),
                        })
                        .await?;
                }
            }
            Message::Sync { data, .. } => {
                let m = sync::Message::decode(&data)?;
                if m.changes.is_empty() {
                    continue;
                }
                verify(&m, heads, load)?;
                // What a device that loaded the document says next: its heads.
                let mut flags = sync::MessageFlags::new();
                flags.set(sync::MessageFlags::SUPPORTS_SYNC_RESET);
                let reply = sync::Message {
                    heads: heads.to_vec(),
                    need: Vec::new(),
                    have: vec![sync::Have {
                        last_sync: heads.to_vec(),
                        bloom: sync::BloomFilter::from_hashes(std::iter::empty::<ChangeHash>()),
                    }],
                    changes: sync::ChunkList::empty(),
                    flags: Some(flags),
                    version: sync::MessageVersion::V2,
                };
                c.writer
                    .send(&Message::Sync {
                        doc,
                        reset: false,
                        data: reply.encode().into(),
                    })
                    .await?;
                let barrier = DocId::from_bytes(rand::random());
                c.writer.send(&Message::Subscribe { doc: barrier }).await?;
                loop {
                    let msg = tokio::time::timeout(limit, c.reader.recv())
                        .await
                        .context("no answer from the relay")??
                        .context("the relay closed the stream")?;
                    if matches!(msg, Message::Subscribed { doc: d, .. } if d == barrier) {
                        c.conn.close(0u32.into(), b"done");
                        return Ok(t.elapsed());
                    }
                }
            }
            Message::Error { code, message, .. } => bail!("the relay refused: {code:?} {message}"),
            _ => {}
        }
    }
}

/// The relay's answer holds the document at `heads`: loaded with Automerge (`load`), or read
/// from the document chunk's header.
fn verify(m: &sync::Message, heads: &[ChangeHash], load: bool) -> anyhow::Result<()> {
    let mut theirs = m.heads.clone();
    theirs.sort_unstable();
    anyhow::ensure!(
        theirs == heads,
        "the relay's heads differ from the document's"
    );
    let chunks: Vec<u8> = m.changes.iter().flatten().copied().collect();
    let mut got = if load {
        Automerge::load(&chunks)?.get_heads()
    } else {
        let spans = weft_core::check::split_chunks(&chunks)?;
        let [span] = spans.as_slice() else {
            bail!("expected one document chunk, got {} chunks", spans.len());
        };
        anyhow::ensure!(span.kind == 0, "expected a document chunk");
        chunk_heads(&chunks[span.data..span.end]).context("a document chunk's header")?
    };
    got.sort_unstable();
    anyhow::ensure!(got == heads, "the document sent lacks changes");
    Ok(())
}

/// The heads a document chunk's data names (after its actors).
fn chunk_heads(data: &[u8]) -> Option<Vec<ChangeHash>> {
    let mut at = 0;
    let uleb = |at: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *data.get(*at)?;
            *at += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    for _ in 0..uleb(&mut at)? {
        at += usize::try_from(uleb(&mut at)?).ok()?;
    }
    let n = usize::try_from(uleb(&mut at)?).ok()?;
    (0..n)
        .map(|i| {
            let h: [u8; 32] = data.get(at + 32 * i..at + 32 * (i + 1))?.try_into().ok()?;
            Some(ChangeHash(h))
        })
        .collect()
}
