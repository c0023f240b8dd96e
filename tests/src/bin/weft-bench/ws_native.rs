//! `ws-native`'s clients: native Rust automerge-repo clients (samod 0.16 repos, in-memory
//! storage) dialing a WebSocket server over loopback with TCP_NODELAY, in this process.
//!
//! Latency, the same for either server: the writer repo sets `n = i` on the document (one
//! Automerge transaction in `with_document`); a reader sees change `i` when, on one of its
//! document's change notifications, it reads `n == i` (or later). The latency of change `i` at a
//! reader is from just before the writer's transaction to that notification; one change in
//! flight at a time, so the figures are latency, not queueing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{Automerge, ReadDoc, ScalarValue, Value, ROOT};

use crate::samod_ws;

/// What one run measured.
pub(crate) struct Run {
    /// One latency per (measured change, reader).
    pub(crate) latencies: Vec<Duration>,
    /// Receipts that missed the per-change deadline.
    pub(crate) lost: usize,
}

const PER_CHANGE_DEADLINE: Duration = Duration::from_secs(5);
const CONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// Dials `url` over TCP with TCP_NODELAY, then the WebSocket handshake.
struct WsDialer {
    url: samod::Url,
}

impl samod::Dialer for WsDialer {
    type Error = std::io::Error;

    fn url(&self) -> samod::Url {
        self.url.clone()
    }

    fn connect(
        &self,
    ) -> BoxFuture<'static, Result<samod::Transport, samod::DialError<Self::Error>>> {
        let url = self.url.clone();
        Box::pin(async move {
            let transient = |e: String| samod::DialError::transient(std::io::Error::other(e));
            let host = url.host_str().unwrap_or("127.0.0.1").to_string();
            let port = url.port().unwrap_or(80);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| transient(e.to_string()))?;
            tcp.set_nodelay(true)
                .map_err(|e| transient(e.to_string()))?;
            let (ws, _) = tokio_tungstenite::client_async(url.as_str(), tcp)
                .await
                .map_err(|e| transient(e.to_string()))?;
            Ok(samod_ws::transport(ws))
        })
    }
}

/// A connected client repo.
async fn client(url: &samod::Url) -> anyhow::Result<samod::Repo> {
    let repo = samod::Repo::build_tokio().load().await;
    let dialer = Arc::new(WsDialer { url: url.clone() });
    let handle = repo
        .dial(samod::BackoffConfig::default(), dialer)
        .map_err(|_| anyhow::anyhow!("the client repo stopped"))?;
    tokio::time::timeout(CONNECT_DEADLINE, handle.established())
        .await
        .context("connecting timed out")?
        .map_err(|e| anyhow::anyhow!("cannot connect: {e:?}"))?;
    Ok(repo)
}

/// `n` at the document's root, when it is an integer.
fn read_n(doc: &Automerge) -> Option<i64> {
    match doc.get(ROOT, "n").ok()?? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Int(n) => Some(*n),
            _ => None,
        },
        _ => None,
    }
}

fn set_n(doc: &mut Automerge, n: i64) -> anyhow::Result<()> {
    let mut tx = doc.transaction();
    tx.put(ROOT, "n", n)?;
    tx.commit();
    Ok(())
}

/// Reports every new `n` this reader's document reaches, with when it saw it.
async fn watch(
    handle: samod::DocHandle,
    reader: usize,
    tx: mpsc::UnboundedSender<(usize, i64, Instant)>,
) {
    let mut changes = handle.changes();
    let mut last = handle.with_document(|d| read_n(d)).unwrap_or(-1);
    while changes.next().await.is_some() {
        let at = Instant::now();
        let n = handle.with_document(|d| read_n(d)).unwrap_or(-1);
        if n > last {
            last = n;
            if tx.send((reader, n, at)).is_err() {
                return;
            }
        }
    }
}

/// Connects `clients` repos to `url`, has the first create the document and the others find
/// it, then runs `warmup` unmeasured and `changes` measured changes.
/// `measuring` is called once the warm-up changes are done, right before the measured ones.
pub(crate) async fn run(
    url: &str,
    clients: usize,
    (warmup, changes): (usize, usize),
    mut measuring: impl FnMut(),
) -> anyhow::Result<Run> {
    anyhow::ensure!(clients >= 2, "a writer and at least one reader");
    let url = samod::Url::parse(url).context("server url")?;
    let mut repos = Vec::with_capacity(clients);
    for _ in 0..clients {
        repos.push(client(&url).await?);
    }
    let mut doc = Automerge::new();
    set_n(&mut doc, -1)?;
    let writer = repos[0]
        .create(doc)
        .await
        .map_err(|_| anyhow::anyhow!("the writer repo stopped"))?;
    let id = writer.document_id().clone();
    // The server has the document once one reader finds it (until then it is unavailable).
    // A repo told "unavailable" may keep that answer, so each try is a new repo: a find that
    // reached a server still storing the writer's creation (weft-relay serves a document once
    // its owner is durable) failed for good otherwise.
    let deadline = Instant::now() + CONNECT_DEADLINE;
    let first = loop {
        if let Some(h) = repos[1]
            .find(id.clone())
            .await
            .map_err(|_| anyhow::anyhow!("stopped"))?
        {
            break h;
        }
        if Instant::now() > deadline {
            bail!("the server never had the writer's document");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let old = std::mem::replace(&mut repos[1], client(&url).await?);
        old.stop().await;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watchers = tokio::task::JoinSet::new();
    watchers.spawn(watch(first, 1, tx.clone()));
    for (i, repo) in repos.iter().enumerate().skip(2) {
        let h = repo
            .find(id.clone())
            .await
            .map_err(|_| anyhow::anyhow!("stopped"))?
            .with_context(|| format!("reader {i} cannot find the document"))?;
        watchers.spawn(watch(h, i, tx.clone()));
    }
    drop(tx);
    let readers = clients - 1;
    let mut latencies = Vec::with_capacity(changes * readers);
    let mut lost = 0;
    // Per reader, the highest `n` it has reported.
    let mut seen = vec![-1i64; clients];
    for i in 0..(warmup + changes) as i64 {
        if i == warmup as i64 {
            measuring();
        }
        let t0 = Instant::now();
        writer.with_document(|d| set_n(d, i))?;
        let until = tokio::time::Instant::now() + PER_CHANGE_DEADLINE;
        let mut got = 0;
        while got < readers {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some((r, n, at))) => {
                    if seen[r] < i && n >= i {
                        got += 1;
                        if i >= warmup as i64 {
                            latencies.push(at.saturating_duration_since(t0));
                        }
                    }
                    seen[r] = seen[r].max(n);
                }
                Ok(None) => bail!("every reader stopped"),
                Err(_) => break,
            }
        }
        if i >= warmup as i64 {
            lost += readers - got;
        }
    }
    watchers.abort_all();
    for repo in &repos {
        repo.stop().await;
    }
    Ok(Run { latencies, lost })
}
