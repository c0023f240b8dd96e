//! `cluster`: three `weft-relay serve --cluster` processes on one throwaway Postgres against one
//! relay process alone, in the same run, in rounds (each ratio against the relay measured just
//! before; the median is the figure). Ten light devices on one document: the writer on the
//! first relay, the receivers spread over the relays. One change in flight at a time; latency
//! from the writer's send to each receiver's receipt, split by whether the receiver is on the
//! writer's relay; CPU per accepted change summed over every relay process and Postgres
//! (`/proc`), beside the single relay's. Needs the `weft-relay` binary built next to this one
//! (`cargo build --release -p weft-relay`) and the Postgres server binaries.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use weft_core::DocId;
use weft_relay::{Claims, Minter};

use crate::chain::Chain;
use crate::checkpoint::pg;
use crate::client::{self, Client};
use crate::fanout::receive;
use crate::plan::Plan;
use crate::proc_cpu::{proc_cpu, tree_cpu};
use crate::report::{ms, percentiles, us};

const DEVICES: usize = 10;
/// How long a change's receipts are awaited.
const PER_CHANGE_DEADLINE: Duration = Duration::from_secs(2);

pub(crate) fn cluster_workload(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    chain: &Arc<Chain>,
) -> anyhow::Result<Value> {
    let bin = relay_and_postgres("cluster")?;
    let (warmup, changes) = if plan.quick { (50, 300) } else { (100, 1_300) };
    // Rounds of one relay then three, each ratio against the relay measured just before it:
    // on a shared machine the load drifts between runs more than these differ.
    let rounds = if plan.quick { 2 } else { 3 };
    anyhow::ensure!(
        chain.len() >= warmup + changes,
        "the change chain is too short"
    );
    eprintln!(
        "cluster: {DEVICES} devices, one writer, {changes} changes one at a time; {rounds} rounds of one relay, then three"
    );
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    let mut baseline_pg = Value::Null;
    for round in 0..rounds {
        let single = {
            let relay = RelayProc::start(&bin, tempfile::tempdir()?, &[])?;
            let r = rt.block_on(measure(&[&relay], warmup, changes, chain.clone(), None))?;
            drop(relay);
            r
        };
        // A fresh Postgres each round: relays started on an old log would read it first.
        let server = pg::PgServer::start().context("cannot start Postgres")?;
        let url = server.url();
        let postmaster = postmaster_pid(&server.data())?;
        if round == 0 {
            // One relay as it is deployed with Postgres: checkpointing as the cluster's relays do.
            let args: Vec<String> = ["--postgres", &url, "--checkpoint-interval", "5s"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let relay = RelayProc::start(&bin, tempfile::tempdir()?, &args)?;
            let r = rt.block_on(measure(
                &[&relay],
                warmup,
                changes,
                chain.clone(),
                Some(postmaster),
            ))?;
            drop(relay);
            baseline_pg = row("one relay, --postgres", &r);
        }
        let first = RelayProc::start(&bin, tempfile::tempdir()?, &cluster_args(&url, "a"))?;
        let second = RelayProc::start(&bin, first.sibling_dir()?, &cluster_args(&url, "b"))?;
        let third = RelayProc::start(&bin, first.sibling_dir()?, &cluster_args(&url, "c"))?;
        let three = rt.block_on(measure(
            &[&first, &second, &third],
            warmup,
            changes,
            chain.clone(),
            Some(postmaster),
        ))?;
        drop((first, second, third));
        drop(server);
        let (baseline, cluster) = (
            row("one relay (baseline)", &single),
            row("three relays, --cluster", &three),
        );
        let ratio = us(three.cpu_per_change()) / us(single.cpu_per_change()).max(0.001);
        eprintln!(
            "  round {}: CPU per change, cluster / one relay: {ratio:.2}x",
            round + 1
        );
        rows.push(json!({
            "baseline": baseline,
            "cluster": cluster,
            "cpu_ratio": (ratio * 100.0).round() / 100.0,
        }));
        ratios.push(ratio);
    }
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    };
    let (low, high) = (sorted[0], sorted[sorted.len() - 1]);
    eprintln!(
        "  CPU per change, cluster / one relay: median {median:.2}x of {rounds} rounds ({low:.2}-{high:.2}x; target 2x); fan-out p99 target across relays 10 ms"
    );
    let load = crate::cluster_load::aggregate(plan, rt, chain, &bin)?;
    let round2 = |r: f64| (r * 100.0).round() / 100.0;
    Ok(json!({
        "workload": "cluster",
        "devices": DEVICES,
        "rounds": rows,
        "baseline_postgres": baseline_pg,
        "cpu_ratio": round2(median),
        "cpu_ratio_range": [round2(low), round2(high)],
        "load": load,
    }))
}

/// One measured run's line on stderr, and its figures.
fn row(name: &str, r: &Run) -> Value {
    let (p50, p99, _) = percentiles(&mut r.same.clone());
    let (r50, r99, _) = percentiles(&mut r.other.clone());
    let n = r.changes.max(1) as u32;
    let each: Vec<f64> = r.per_relay.iter().map(|c| us(*c / n)).collect();
    eprintln!(
        "  {name:<28} same relay p50 {:>6.2} p99 {:>6.2} ms | other relays p50 {:>6.2} p99 {:>6.2} ms | CPU {:>6.1} us/change (relays {:.1} [{}], Postgres {:.1}) | lost {}",
        ms(p50), ms(p99), ms(r50), ms(r99),
        us(r.cpu_per_change()), us(r.relays_cpu / n),
        each.iter().map(|c| format!("{c:.0}")).collect::<Vec<_>>().join(" / "),
        us(r.pg_cpu / n), r.lost
    );
    json!({
        "same_relay_p50_ms": ms(p50), "same_relay_p99_ms": ms(p99),
        "other_relays_p50_ms": ms(r50), "other_relays_p99_ms": ms(r99),
        "cpu_us_per_change": us(r.cpu_per_change()),
        "relays_cpu_us_per_change": us(r.relays_cpu / n),
        "each_relay_cpu_us_per_change": each,
        "postgres_cpu_us_per_change": us(r.pg_cpu / n),
        "changes": r.changes, "lost": r.lost,
    })
}

/// The `weft-relay` binary next to this one, once it and the Postgres server binaries are
/// known to be there (the cluster workloads run both); `workload` names the one asking.
pub(crate) fn relay_and_postgres(workload: &str) -> anyhow::Result<std::path::PathBuf> {
    let bin = std::env::current_exe()?.with_file_name("weft-relay");
    anyhow::ensure!(
        bin.is_file(),
        "the {workload} workload runs the relay binary: build it first (cargo build --release -p weft-relay)"
    );
    anyhow::ensure!(
        pg::installed(),
        "the {workload} workload needs the Postgres server binaries (initdb, pg_ctl)"
    );
    Ok(bin)
}

pub(crate) fn cluster_args(url: &str, name: &str) -> Vec<String> {
    [
        "--postgres",
        url,
        "--cluster",
        "--cluster-name",
        name,
        "--checkpoint-interval",
        "5s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A `weft-relay serve --dev` process on loopback; killed on drop.
pub(crate) struct RelayProc {
    pub(crate) child: Child,
    dir: tempfile::TempDir,
    pub(crate) addr: SocketAddr,
}

impl RelayProc {
    pub(crate) fn start(
        bin: &Path,
        dir: tempfile::TempDir,
        extra: &[String],
    ) -> anyhow::Result<RelayProc> {
        Self::start_on(bin, dir, "127.0.0.1:0", extra)
    }

    /// As [`RelayProc::start`], listening on `listen`.
    pub(crate) fn start_on(
        bin: &Path,
        dir: tempfile::TempDir,
        listen: &str,
        extra: &[String],
    ) -> anyhow::Result<RelayProc> {
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--dev",
                "--listen",
                listen,
                "--http",
                "off",
                "--data-dir",
            ])
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::piped())
            // `WEFT_BENCH_RELAY_LOG=1` shows the relays' logs.
            .stderr(if std::env::var_os("WEFT_BENCH_RELAY_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .context("cannot start weft-relay")?;
        let mut ready = String::new();
        let stdout = child.stdout.take().context("no stdout")?;
        BufReader::new(stdout).read_line(&mut ready)?;
        let addr = ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix("quic="))
            .with_context(|| format!("no QUIC address in {ready:?}"))?
            .parse()?;
        Ok(RelayProc { child, dir, addr })
    }

    /// SIGKILL; the data directory, to start the relay again on it.
    pub(crate) fn kill(mut self) -> anyhow::Result<tempfile::TempDir> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(std::mem::replace(&mut self.dir, tempfile::tempdir()?))
    }

    /// A data directory with this relay's dev secret and certificate (a cluster shares them).
    pub(crate) fn sibling_dir(&self) -> anyhow::Result<tempfile::TempDir> {
        let dir = tempfile::tempdir()?;
        let from = self.dir.path();
        std::fs::copy(from.join("jwt.secret"), dir.path().join("jwt.secret"))?;
        std::fs::create_dir(dir.path().join("tls"))?;
        for f in ["cert.pem", "key.pem"] {
            std::fs::copy(from.join("tls").join(f), dir.path().join("tls").join(f))?;
        }
        Ok(dir)
    }

    pub(crate) fn cert(&self) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
        let tls = self.dir.path().join("tls");
        Ok(weft_relay::load_cert_and_key(&tls.join("cert.pem"), &tls.join("key.pem"))?.cert_chain)
    }

    pub(crate) fn token(&self) -> anyhow::Result<String> {
        let secret = weft_relay::load_secret(&self.dir.path().join("jwt.secret"))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims::new(crate::chain::USER, now, 3600).with_create(true);
        Ok(Minter::new(&secret).mint(&claims)?)
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Run {
    changes: usize,
    same: Vec<Duration>,
    other: Vec<Duration>,
    lost: usize,
    relays_cpu: Duration,
    /// Each relay's share of `relays_cpu`, the writer's relay first.
    per_relay: Vec<Duration>,
    pg_cpu: Duration,
}

impl Run {
    fn cpu_per_change(&self) -> Duration {
        (self.relays_cpu + self.pg_cpu) / self.changes.max(1) as u32
    }
}

async fn measure(
    relays: &[&RelayProc],
    warmup: usize,
    changes: usize,
    chain: Arc<Chain>,
    postmaster: Option<u32>,
) -> anyhow::Result<Run> {
    let doc = DocId::from_bytes(rand::random());
    let token = relays[0].token()?;
    // The writer (device 0) creates the document on the first relay; the others join once
    // their relays have read the creation from the log.
    let mut on: Vec<(usize, Client)> = Vec::new();
    for i in 0..DEVICES {
        let r = i % relays.len();
        let c = Client::connect(relays[r].addr, &relays[r].cert()?, &token).await?;
        on.push((r, c));
    }
    let (first, rest): (Vec<_>, Vec<_>) = on.into_iter().partition(|(r, _)| *r == 0);
    let (first_r, first_c): (Vec<usize>, Vec<Client>) = first.into_iter().unzip();
    let mut synced: Vec<(usize, Client)> = first_r
        .into_iter()
        .zip(client::sync_all(first_c, &[doc], Duration::from_secs(60)).await?)
        .collect();
    if !rest.is_empty() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rest_r, rest_c): (Vec<usize>, Vec<Client>) = rest.into_iter().unzip();
        synced.extend(
            rest_r
                .into_iter()
                .zip(client::sync_all(rest_c, &[doc], Duration::from_secs(60)).await?),
        );
    }
    let (_, writer) = synced.remove(0);
    let (tx, mut rx) = mpsc::channel::<(usize, usize, Instant)>(65_536);
    let mut tasks = tokio::task::JoinSet::new();
    for (r, c) in synced {
        let (one_tx, mut one_rx) = mpsc::channel(1_024);
        tasks.spawn(receive(c, doc, chain.clone(), one_tx));
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some((pos, at)) = one_rx.recv().await {
                if tx.send((r, pos, at)).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let receivers = DEVICES - 1;
    let Client {
        mut reader,
        writer: mut wstream,
        conn: wconn,
        endpoint: _endpoint,
    } = writer;
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = reader.recv().await {} });
    let pids: Vec<u32> = relays.iter().map(|r| r.child.id()).collect();
    let mut run = Run {
        changes: 0,
        same: Vec::new(),
        other: Vec::new(),
        lost: 0,
        relays_cpu: Duration::ZERO,
        per_relay: Vec::new(),
        pg_cpu: Duration::ZERO,
    };
    let (mut relays0, mut pg0) = (Vec::new(), Duration::ZERO);
    for i in 0..warmup + changes {
        if i == warmup {
            relays0 = pids.iter().map(|p| proc_cpu(*p)).collect();
            pg0 = postmaster.map_or(Duration::ZERO, tree_cpu);
        }
        let frame = client::changes_frame(doc, &chain.raw[i])?;
        let sent = Instant::now();
        wstream.send_raw(&frame).await?;
        let deadline = tokio::time::Instant::now() + PER_CHANGE_DEADLINE;
        let mut got = 0;
        while got < receivers {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((r, pos, at))) if pos == i => {
                    got += 1;
                    if i >= warmup {
                        let d = at.saturating_duration_since(sent);
                        if r == 0 {
                            run.same.push(d)
                        } else {
                            run.other.push(d)
                        }
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => anyhow::bail!("every receiver stopped"),
                Err(_) => break,
            }
        }
        if i >= warmup {
            run.lost += receivers - got;
            run.changes += 1;
        }
    }
    run.per_relay = pids
        .iter()
        .zip(&relays0)
        .map(|(p, before)| proc_cpu(*p).saturating_sub(*before))
        .collect();
    run.relays_cpu = run.per_relay.iter().sum();
    run.pg_cpu = postmaster
        .map_or(Duration::ZERO, tree_cpu)
        .saturating_sub(pg0);
    wconn.close(quinn::VarInt::from_u32(0), b"done");
    drain.abort();
    tasks.abort_all();
    Ok(run)
}

/// The postmaster's pid, from its data directory.
pub(crate) fn postmaster_pid(data: &Path) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid"))
        .context("cannot read postmaster.pid")?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .context("postmaster.pid does not start with a pid")
}
