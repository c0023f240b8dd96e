//! `weft-relay serve`: the startup checks, then the relay until SIGTERM or Ctrl-C.
//!
//! In order: the signal handlers, the kinds file, the store, the listeners (QUIC, HTTP,
//! WebSocket), Postgres (migrations and the restore, before anything is served), the hub and
//! the tasks that feed it, the ready line. At shutdown: stop accepting, close connections, let
//! the hub finish every write in flight, write the final checkpoint, stop the store writer.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_core::store::{erase, GroupCommit, KvStore};
use weft_relay::{
    ensure_dev_cert, ensure_dev_secret, load_cert_and_key, load_secret, Checkpointer, DirtyDocs,
    HubConfig, Metrics, TlsIdentity, Verifier,
};
use weft_schema::rules::Kinds;

use super::args::{HttpListen, ServeArgs, UsageError};
use super::signals::ShutdownSignals;

/// Checks the secret and the TLS identity (creating them with `--dev`), then runs the relay
/// on a runtime of its own until a signal stops it.
pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.web && args.http == HttpListen::Off {
        let why = "--web serves the demo on the --http address, which is off";
        return Err(UsageError(why.into()).into());
    }
    // Created, or tightened if it exists: mode 0700, its secret, key and store 0600.
    weft_relay::prepare_data_dir(&args.data_dir)?;
    let verifier = verifier(&args)?;
    let identity = match (&args.cert, &args.key, args.dev) {
        (Some(cert), Some(key), _) => load_cert_and_key(cert, key)?,
        (None, None, true) => ensure_dev_cert(&args.data_dir)?,
        _ => bail!(
            "no TLS certificate: pass --cert FILE --key FILE, \
             or --dev to generate a self-signed one in the data directory"
        ),
    };
    let notify = notify_config(&args)?;

    tracing::info!(
        listen = %args.listen,
        data_dir = %args.data_dir.display(),
        http = ?args.http,
        ws = ?args.ws,
        ws_max_frame = args.ws_max_frame,
        postgres = args.postgres.is_some(),
        checkpoint_interval = ?args.checkpoint_interval,
        certificates = identity.cert_chain.len(),
        ?verifier,
        dev = args.dev,
        notify = args.notify_url.is_some(),
        "startup checks passed"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_relay(args, verifier, identity, notify))
}

/// The token verifier: the secret (`--jwt-secret-file`, or `--dev`'s), the required audience
/// and issuer, the leeway.
fn verifier(args: &ServeArgs) -> anyhow::Result<Verifier> {
    let secret = match (&args.jwt_secret_file, args.dev) {
        (Some(path), _) => load_secret(path)?,
        (None, true) => ensure_dev_secret(&args.data_dir)?,
        (None, false) => bail!(
            "no JWT secret: pass --jwt-secret-file FILE, \
             or --dev to generate one in the data directory"
        ),
    };
    let mut verifier = Verifier::new(&secret).with_leeway(args.jwt_leeway);
    if let Some(aud) = &args.jwt_audience {
        verifier = verifier.with_audience(aud);
    }
    if let Some(iss) = &args.jwt_issuer {
        verifier = verifier.with_issuer(iss);
    }
    Ok(verifier)
}

/// Runs the relay until SIGTERM or Ctrl-C: stop accepting, close connections, let the hub
/// finish every write in flight, stop the store writer, exit.
async fn run_relay(
    args: ServeArgs,
    verifier: Verifier,
    identity: TlsIdentity,
    notify: Option<weft_relay::NotifyConfig>,
) -> anyhow::Result<()> {
    // Before anything is opened or bound: a SIGINT or SIGTERM from here on is caught (a
    // default SIGINT would kill the relay without draining), and one that arrives while the
    // relay starts is answered once it is ready.
    let mut signals = ShutdownSignals::install()?;
    // The kinds the hub enforces and the checkpoints write as records; a bad file fails
    // before the store is opened.
    let kinds = load_kinds(&args)?;
    let group = open_store(&args).await?;
    let metrics = Arc::new(Metrics::default());
    let endpoint = weft_relay::bind_quic(args.listen, &identity).map_err(anyhow::Error::msg)?;
    let quic_addr = endpoint
        .local_addr()
        .context("cannot read the QUIC address")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut ready = format!("weft-relay ready quic={quic_addr}");
    // With `--ws` (or `--web`), tickets for the upgrade are issued on the HTTP address.
    let tickets = ws_tickets(&args, &verifier);
    // The WebSocket address is bound first (the demo page is told its port) and listed last.
    let mut ws_ready = String::new();
    let ws_listener = bind_ws(&args, &mut ws_ready).await?;
    let web = web_routes(&args, &kinds, &verifier, ws_listener.as_ref())?;
    let http_task = start_http(&args, &mut ready, &metrics, &tickets, web, &stop_rx).await?;
    ready.push_str(&ws_ready);
    let ws_context = match (&ws_listener, &tickets) {
        (Some(_), Some(tickets)) => Some(ws_context(&args, tickets)?),
        _ => None,
    };
    // Migrations and the restore of documents the store lacks run before anything is served.
    let dirty = DirtyDocs::new();
    let checkpointer = match &args.postgres {
        Some(url) => {
            let started = start_checkpoints(url, &args, &kinds, &group, &dirty, &metrics);
            // An empty relay waits for Postgres as long as it takes: a signal ends the wait.
            tokio::select! {
                started = started => Some(started?),
                () = signals.recv() => {
                    tracing::info!("stopped while waiting for Postgres; nothing was served");
                    return Ok(());
                }
            }
        }
        None => None,
    };

    let (hub_tx, hub_rx) = tokio::sync::mpsc::channel(4096);
    let (hub_config, check) = hub_config(&args, &kinds);
    let mut hub =
        weft_relay::Hub::new(hub_config, group.clone(), verifier.clone(), metrics.clone())
            .with_checkpoints(dirty.clone());
    let notify_tasks = match notify {
        Some(cfg) => {
            let (notifier, tasks) = weft_relay::start_notify(cfg, metrics.clone());
            hub = hub.with_notifier(notifier);
            Some(tasks)
        }
        None => None,
    };
    // The follower holds a sender of the hub's events, so it stops first (on `stop_rx`).
    let cluster = match cluster_config(&args, &quic_addr, &tickets, &dirty)? {
        Some(cfg) => {
            let (log, tasks) = weft_relay::start_cluster(
                cfg,
                group.clone(),
                hub_tx.clone(),
                metrics.clone(),
                stop_rx.clone(),
            )
            .context("cannot join the cluster")?;
            hub = hub.with_cluster(log);
            Some(tasks)
        }
        None => None,
    };
    let hub_task = tokio::spawn(hub.run(hub_rx));
    let (checkpoint_stop, checkpoint_stop_rx) = watch::channel(false);
    let checkpoint_task = checkpointer.map(|c| tokio::spawn(c.run(stopped(checkpoint_stop_rx))));
    let ws_task = ws_listener.zip(ws_context).map(|(listener, ws_context)| {
        let limits = weft_relay::WsLimits {
            max_frame: usize::try_from(args.ws_max_frame).unwrap_or(usize::MAX),
            check: check.clone(),
            bytes_per_sec: args.max_bytes_per_sec,
            ..Default::default()
        };
        tokio::spawn(weft_relay::ws_accept_loop(
            listener,
            verifier.clone(),
            limits,
            ws_context,
            hub_tx.clone(),
            metrics.clone(),
            stopped(stop_rx.clone()),
        ))
    });
    let accept_task = tokio::spawn(weft_relay::accept_loop(
        endpoint.clone(),
        verifier,
        weft_relay::ServerLimits {
            check,
            bytes_per_sec: args.max_bytes_per_sec,
            ..Default::default()
        },
        hub_tx,
        metrics,
        stopped(stop_rx),
    ));
    println!("{ready}");
    let _ = std::io::stdout().flush();

    signals.recv().await;
    tracing::info!("shutting down: closing connections and flushing writes");
    let _ = stop_tx.send(true);
    let running = Running {
        accept: accept_task,
        ws: ws_task,
        hub: hub_task,
        checkpoint: checkpoint_task.map(|t| (checkpoint_stop, t)),
        cluster,
        notify: notify_tasks,
        http: http_task,
    };
    running.drain().await;
    endpoint.wait_idle().await;
    drop(group);
    Ok(())
}

/// With `--ws`, tickets for the upgrade, issued on the HTTP address.
fn ws_tickets(args: &ServeArgs, verifier: &Verifier) -> Option<Arc<weft_relay::Tickets>> {
    ws_addr(args).map(|_| {
        Arc::new(weft_relay::Tickets::with_limits(
            verifier.clone(),
            args.ws_ticket_origin.clone(),
            args.ws_ticket_ttl,
            weft_relay::MAX_TICKETS,
        ))
    })
}

/// What the WebSocket endpoint needs besides its listener. Only a relay that serves
/// WebSocket clients has (and keeps) a storage id.
fn ws_context(
    args: &ServeArgs,
    tickets: &Arc<weft_relay::Tickets>,
) -> anyhow::Result<weft_relay::WsContext> {
    Ok(weft_relay::WsContext {
        storage_id: weft_relay::load_or_create_storage_id(&args.data_dir)?,
        tickets: tickets.clone(),
    })
}

/// The relay's tasks, once told to stop accepting.
struct Running {
    accept: tokio::task::JoinHandle<()>,
    ws: Option<tokio::task::JoinHandle<()>>,
    hub: tokio::task::JoinHandle<()>,
    /// The checkpointer and the order to make its final round.
    checkpoint: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    /// The cluster's appender and follower, with `--cluster`.
    cluster: Option<weft_relay::ClusterTasks>,
    /// The push hook's deliveries.
    notify: Option<weft_relay::NotifyTasks>,
    http: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Waits for the connections to close, the hub to finish its writes, the final
    /// checkpoint, the push hook's queue (a few seconds at most) and the HTTP server, in that
    /// order.
    async fn drain(self) {
        let _ = self.accept.await;
        if let Some(t) = self.ws {
            let _ = t.await;
        }
        // Every connection task (and the cluster's follower) has ended and dropped its hub
        // sender: the hub drains and returns, its last changes in the cluster's log.
        let _ = self.hub.await;
        tracing::info!("every write in flight finished");
        if let Some(c) = self.cluster {
            c.finish(CLUSTER_GRACE).await;
            tracing::info!("left the cluster");
        }
        // Every write is durable now; the final checkpoint takes them all.
        if let Some((stop, t)) = self.checkpoint {
            let _ = stop.send(true);
            let _ = t.await;
        }
        if let Some(n) = self.notify {
            n.shutdown(NOTIFY_GRACE).await;
        }
        if let Some(t) = self.http {
            let _ = t.await;
        }
    }
}

/// How long a stopping relay waits for the cluster's log to take its last entries.
const CLUSTER_GRACE: Duration = Duration::from_secs(10);

/// With `--cluster`: how this relay joins it.
fn cluster_config(
    args: &ServeArgs,
    quic_addr: &std::net::SocketAddr,
    tickets: &Option<Arc<weft_relay::Tickets>>,
    dirty: &Arc<DirtyDocs>,
) -> anyhow::Result<Option<weft_relay::ClusterConfig>> {
    let (true, Some(url)) = (args.cluster, &args.postgres) else {
        return Ok(None);
    };
    let relay = match &args.cluster_name {
        Some(name) => name.clone(),
        None => weft_relay::load_or_create_cluster_name(&args.data_dir)
            .context("cannot keep this relay's cluster name in the data directory")?,
    };
    tracing::info!(relay, %quic_addr, "joining the cluster");
    Ok(Some(weft_relay::ClusterConfig {
        postgres: url.clone(),
        postgres_ca: args.postgres_ca.clone(),
        relay,
        data_dir: args.data_dir.clone(),
        tickets: tickets.clone(),
        retention: args.cluster_log_retention,
        dirty: dirty.clone(),
    }))
}

/// How long a stopping relay keeps delivering the push hook's queued events.
const NOTIFY_GRACE: Duration = Duration::from_secs(5);

/// The push hook, with `--notify-url`.
fn notify_config(args: &ServeArgs) -> anyhow::Result<Option<weft_relay::NotifyConfig>> {
    let (Some(url), Some(secret_file)) = (&args.notify_url, &args.notify_secret_file) else {
        return Ok(None);
    };
    let secret = weft_relay::load_named_secret(secret_file, "push hook secret")
        .context("cannot use --notify-secret-file")?;
    let cfg = weft_relay::NotifyConfig::new(url, secret.as_bytes(), args.notify_body)?;
    Ok(Some(cfg))
}

/// Resolves once `rx` says stop (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The built-in kinds, and those `--kinds` declares.
fn load_kinds(args: &ServeArgs) -> anyhow::Result<Arc<Kinds>> {
    let Some(path) = &args.kinds else {
        return Ok(Arc::new(Kinds::builtin()));
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the kinds file {}", path.display()))?;
    let kinds = Kinds::with_declared(&text)
        .with_context(|| format!("the kinds file {} is not valid", path.display()))?;
    Ok(Arc::new(kinds))
}

/// Opens the store in the data directory and starts its writer.
async fn open_store(args: &ServeArgs) -> anyhow::Result<Arc<GroupCommit>> {
    let store_path = args.data_dir.join(weft_relay::STORE_FILE);
    let (staging, writer) = weft_relay::store_limits();
    // Deleted documents' content is erased, and the file rewritten without it, before
    // anything is served (see `weft_core::store::erase`).
    let store_path_for_open = store_path.clone();
    let store = tokio::task::spawn_blocking(move || {
        erase::open_redb(&store_path_for_open, &weft_relay::TABLES, staging)
    })
    .await
    .context("the store open task failed")?
    .with_context(|| format!("cannot open the store {}", store_path.display()))?;
    let kv: Arc<dyn KvStore> = Arc::new(store);
    // The store creates its file with the default mode.
    weft_relay::make_file_private(&store_path)?;
    let group =
        Arc::new(GroupCommit::with_limits(kv, writer).context("cannot start the store writer")?);
    Ok(group)
}

/// Binds `--http` and serves it, adding its address to the ready line.
async fn start_http(
    args: &ServeArgs,
    ready: &mut String,
    metrics: &Arc<Metrics>,
    tickets: &Option<Arc<weft_relay::Tickets>>,
    web: Arc<weft_relay::Web>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let HttpListen::On(addr) = args.http else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for HTTP"))?;
    ready.push_str(&format!(" http={}", listener.local_addr()?));
    Ok(Some(tokio::spawn(weft_relay::serve_http(
        listener,
        metrics.clone(),
        tickets.clone(),
        Some(web),
        stopped(stop.clone()),
    ))))
}

/// The web routes: `/kinds` with a WebSocket endpoint, the demo with `--web`.
fn web_routes(
    args: &ServeArgs,
    kinds: &Arc<Kinds>,
    verifier: &Verifier,
    ws: Option<&TcpListener>,
) -> anyhow::Result<Arc<weft_relay::Web>> {
    let ws_addr = ws.map(TcpListener::local_addr).transpose()?;
    Ok(Arc::new(weft_relay::Web {
        kinds: kinds.clone(),
        verifier: ws_addr.map(|_| verifier.clone()),
        demo_ws: ws_addr.filter(|_| args.web),
    }))
}

/// The WebSocket address: `--ws`, or with `--web` alone an ephemeral port on the `--http`
/// address's host (the demo page needs a socket; `/config.json` tells it the port).
fn ws_addr(args: &ServeArgs) -> Option<std::net::SocketAddr> {
    match (args.ws, args.web, args.http) {
        (Some(addr), _, _) => Some(addr),
        (None, true, HttpListen::On(http)) => Some(std::net::SocketAddr::new(http.ip(), 0)),
        _ => None,
    }
}

/// Binds the WebSocket address, adding it to the ready line; it is served once the hub runs.
async fn bind_ws(args: &ServeArgs, ready: &mut String) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = ws_addr(args) else {
        return Ok(None);
    };
    let listener = weft_relay::bind_ws(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for WebSocket clients"))?;
    ready.push_str(&format!(" ws={}", listener.local_addr()?));
    Ok(Some(listener))
}

/// Connects to Postgres, migrates, and restores what the store lacks; the checkpointer is
/// ready to run.
async fn start_checkpoints(
    url: &str,
    args: &ServeArgs,
    kinds: &Arc<Kinds>,
    group: &Arc<GroupCommit>,
    dirty: &Arc<DirtyDocs>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Checkpointer> {
    let mut cfg = weft_relay::CheckpointConfig::new(url.to_string(), args.checkpoint_interval);
    cfg.postgres_ca = args.postgres_ca.clone();
    cfg.kinds = kinds.clone();
    cfg.shutdown_deadline = args.final_checkpoint_deadline;
    let (checkpointer, restored) =
        Checkpointer::start(cfg, group.clone(), dirty.clone(), metrics.clone())
            .await
            .context("cannot start Postgres checkpoints")?;
    tracing::info!(
        checkpointed = restored.checkpointed,
        restored = restored.restored,
        "Postgres ready"
    );
    Ok(checkpointer)
}

/// The hub's configuration from the flags, and the limits every connection task checks a
/// client's changes against.
fn hub_config(args: &ServeArgs, kinds: &Arc<Kinds>) -> (HubConfig, weft_core::check::Limits) {
    let mut hub_config = HubConfig::default();
    hub_config.engine.evict_after = u64::try_from(args.evict_after.as_millis()).unwrap_or(u64::MAX);
    let check = weft_core::check::Limits {
        max_change_bytes: usize::try_from(args.max_change_bytes).unwrap_or(usize::MAX),
        max_change_ops: usize::try_from(args.max_change_ops).unwrap_or(usize::MAX),
        // A document chunk inflates to about its own size in the store: no message may
        // inflate past what a document may hold.
        max_inflated_bytes: usize::try_from(args.max_doc_bytes).unwrap_or(usize::MAX),
        whole_documents: false,
    };
    hub_config.engine.limits = check.clone();
    hub_config.engine.max_doc_bytes = args.max_doc_bytes;
    hub_config.kinds = kinds.clone();
    hub_config.quotas = weft_relay::Quotas {
        max_docs_per_user: args.max_docs_per_user,
        max_user_bytes: args.max_user_bytes,
        max_loaded_bytes: args.max_loaded_bytes,
    };
    (hub_config, check)
}
