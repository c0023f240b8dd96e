//! `failover`: two `weft-relay serve --cluster` processes on one throwaway Postgres and real
//! devices (`weft_peer::Device`, in this process) given both addresses, each with a
//! conversation of its own. Each round SIGKILLs the relay the devices are on; every device
//! writes a message right after, and the figure is, per device, the time from the kill to that
//! message confirmed in sync through the other relay (its link online again and the document
//! synced at or after the write). The killed relay is started again on its address and data
//! directory, and the next round kills the other one. Target (issue 21): p99 under 5 s. No
//! baseline: nothing else here fails over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use weft_core::clock::unix_ms;
use weft_peer::schema::{self, NewConversation, NewMessage};
use weft_peer::{
    DataDir, Device, DocId, LinkHandle, LinkState, RelayConfig, SyncState, TokenSource,
};

use crate::checkpoint::pg;
use crate::cluster::{cluster_args, relay_and_postgres, RelayProc};
use crate::plan::Plan;
use crate::report::{ms, percentiles};

/// The target: p99 from a relay's SIGKILL to its devices' writes confirmed through another.
const TARGET: Duration = Duration::from_secs(5);
/// The relays' names in the cluster.
const NAMES: [&str; 2] = ["a", "b"];
/// How long one device may take to fail over before the round is given up.
const DEADLINE: Duration = Duration::from_secs(60);

/// One device: its data directory, the device, its conversation and its link.
struct Member {
    _dir: tempfile::TempDir,
    device: Device,
    doc: DocId,
    _link: LinkHandle,
}

pub(crate) fn failover_workload(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Value> {
    let bin = relay_and_postgres("failover")?;
    let (devices, rounds) = if plan.quick { (10, 3) } else { (20, 5) };
    eprintln!(
        "failover: {devices} devices on two --cluster relays, {rounds} rounds of SIGKILL to the \
         relay they are on; per device, from the kill to a message written right after it \
         confirmed through the other relay"
    );
    let server = pg::PgServer::start().context("cannot start Postgres")?;
    let url = server.url();
    let first = RelayProc::start(&bin, tempfile::tempdir()?, &cluster_args(&url, NAMES[0]))?;
    let second = RelayProc::start(&bin, first.sibling_dir()?, &cluster_args(&url, NAMES[1]))?;
    let addrs = [first.addr, second.addr];
    let cert = first.cert()?;
    let token = first.token()?;
    let mut relays = [Some(first), Some(second)];

    let members = rt.block_on(join(devices, &addrs, cert, token))?;
    let mut took: Vec<Duration> = Vec::new();
    let mut per_round = Vec::new();
    for round in 0..rounds {
        let on = round % 2;
        let killed = relays[on]
            .take()
            .context("the relay to kill is not running")?;
        let killed_at = Instant::now();
        let dir = killed.kill()?;
        let mut times = rt.block_on(write_through_another(&members, killed_at))?;
        let (p50, p99, max) = percentiles(&mut times);
        let name = NAMES[on];
        eprintln!(
            "  round {}: relay {name} killed; p50 {:.2} s, p99 {:.2} s, slowest {:.2} s",
            round + 1,
            p50.as_secs_f64(),
            p99.as_secs_f64(),
            max.as_secs_f64()
        );
        per_round.push(json!({ "killed": name, "p50_ms": ms(p50), "p99_ms": ms(p99) }));
        took.extend(times);
        // Back on its address and data directory, for the next round's devices to move to.
        let listen = addrs[on].to_string();
        relays[on] = Some(RelayProc::start_on(
            &bin,
            dir,
            &listen,
            &cluster_args(&url, NAMES[on]),
        )?);
    }
    rt.block_on(async {
        for m in members {
            m.device.close().await;
        }
    });
    let (p50, p99, max) = percentiles(&mut took);
    let met = p99 < TARGET;
    eprintln!(
        "  all {} failovers: p50 {:.2} s, p99 {:.2} s, slowest {:.2} s (target p99 < {} s: {})",
        took.len(),
        p50.as_secs_f64(),
        p99.as_secs_f64(),
        max.as_secs_f64(),
        TARGET.as_secs(),
        if met { "met" } else { "MISSED" }
    );
    Ok(json!({
        "workload": "failover",
        "quick": plan.quick,
        "devices": devices,
        "rounds": per_round,
        "p50_ms": ms(p50),
        "p99_ms": ms(p99),
        "max_ms": ms(max),
        "target_p99_ms": ms(TARGET),
        "met": met,
    }))
}

/// Opens the devices, each with a conversation of its own, linked to the first relay with the
/// second as its alternate, and waits until every one is synced.
async fn join(
    n: usize,
    addrs: &[std::net::SocketAddr; 2],
    cert: Vec<rustls::pki_types::CertificateDer<'static>>,
    token: String,
) -> anyhow::Result<Vec<Member>> {
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let dir = tempfile::tempdir()?;
        let device = Device::open(DataDir::new(dir.path())).await?;
        let new = NewConversation {
            title: format!("failover {i}"),
            participants: vec![crate::chain::USER.into()],
        };
        let (doc, created) = device
            .create(Some("conversation"), move |am| {
                schema::Conversation::create(am, &new, unix_ms())
            })
            .await?;
        created?;
        let link = device
            .connect_relay(RelayConfig {
                addr: addrs[0].to_string(),
                alternates: vec![addrs[1].to_string()],
                token: TokenSource::Static(token.clone()),
                pinned_cert: Some(cert.clone()),
                docs: Vec::new(),
                reconnect: true,
                max_backoff: Duration::from_secs(2),
            })
            .await?;
        members.push(Member {
            _dir: dir,
            device,
            doc,
            _link: link,
        });
    }
    for m in &members {
        synced_since(m, 0, Instant::now() + DEADLINE).await?;
    }
    Ok(members)
}

/// Every member writes a message, then each one's time from `killed_at` to that message
/// confirmed in sync.
async fn write_through_another(
    members: &[Member],
    killed_at: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let mut written = Vec::with_capacity(members.len());
    for m in members {
        let msg = NewMessage::text(crate::chain::USER, "after the kill");
        let id = schema::Id::from_bytes(rand::random());
        m.device
            .change(m.doc, move |am| {
                schema::send_message(am, &msg, id, unix_ms())
            })
            .await??;
        written.push(unix_ms());
    }
    let waits = members.iter().zip(written).map(|(m, at)| async move {
        synced_since(m, at, killed_at + DEADLINE).await?;
        Ok::<_, anyhow::Error>(killed_at.elapsed())
    });
    futures_util::future::try_join_all(waits).await
}

/// Waits until `m`'s conversation is synced on an online link, confirmed at or after
/// `since_ms`.
async fn synced_since(m: &Member, since_ms: u64, deadline: Instant) -> anyhow::Result<()> {
    let mut status = m.device.status();
    loop {
        let done = {
            let s: Arc<weft_peer::Status> = status.borrow_and_update().clone();
            s.links.values().any(|l| {
                l.state == LinkState::Online
                    && l.docs.get(&m.doc).is_some_and(|d| {
                        d.state == SyncState::Synced
                            && d.last_sync_ms.is_some_and(|t| t >= since_ms)
                    })
            })
        };
        if done {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline.into(), status.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => bail!("the device closed"),
            Err(_) => bail!("a device did not sync through the other relay within {DEADLINE:?}"),
        }
    }
}
