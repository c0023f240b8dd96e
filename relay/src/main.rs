//! `weft-relay`: the relay's command line.
//!
//! - `weft-relay serve [...]`: checks its secret and TLS identity (creating them with `--dev`),
//!   serves QUIC, WebSocket and HTTP until SIGTERM or Ctrl-C, and prints the ready line once
//!   it listens.
//! - `weft-relay token --secret-file FILE --sub USER [--doc DOC[:rw|:ro]]... [--create]
//!   [--admin] [--ttl 24h]`: prints an HS256 JWT on stdout. `--doc DOC` without a role grants
//!   `rw`.
//!
//! Exit status: 0 success, 2 usage error (bad flag, malformed id, bad duration), 1 anything
//! else; a failure prints one line on stderr. Logs go to stderr.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::builder::{BoolishValueParser, NonEmptyStringValueParser};
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
/// mimalloc rather than glibc malloc: the hub allocates and frees a frame or buffer per
/// message, and under load glibc's allocator took a large share of the relay's CPU
/// (docs/decisions/0007-mimalloc-for-the-relay.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use weft_relay::{
    ensure_dev_cert, ensure_dev_secret, load_cert_and_key, load_secret, parse_byte_size,
    parse_duration, Claims, DocGrant, Minter, Verifier, MAX_LEEWAY_SECS,
};

/// The relay that weft devices sync through.
#[derive(Debug, Parser)]
#[command(name = "weft-relay", version, subcommand_required = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay.
    Serve(ServeArgs),
    /// Print an HS256 token for the relay (for development and tests).
    Token(TokenArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// QUIC address to listen on.
    #[arg(
        long,
        env = "WEFT_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:4433"
    )]
    listen: SocketAddr,

    /// Directory for the relay's store, and for --dev's secret and certificate.
    #[arg(
        long,
        env = "WEFT_DATA_DIR",
        value_name = "DIR",
        default_value = "./weft-relay-data"
    )]
    data_dir: PathBuf,

    /// Address for GET /healthz and GET /metrics, or `off`.
    #[arg(
        long,
        env = "WEFT_HTTP",
        value_name = "ADDR|off",
        default_value = "127.0.0.1:9433"
    )]
    http: HttpListen,

    /// WebSocket address for automerge-repo clients (off unless given).
    #[arg(long, env = "WEFT_WS", value_name = "ADDR")]
    ws: Option<SocketAddr>,

    /// Largest WebSocket frame accepted; larger ones close the socket.
    #[arg(
        long,
        env = "WEFT_WS_MAX_FRAME",
        value_name = "SIZE",
        default_value = "16MiB",
        value_parser = parse_byte_size
    )]
    ws_max_frame: u64,

    /// Postgres to checkpoint into (the embedded store alone when absent).
    #[arg(
        long = "postgres",
        env = "WEFT_POSTGRES_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    postgres: Option<String>,

    /// PEM certificates trusted to sign Postgres' certificate, for `sslmode=verify-ca` or
    /// `verify-full` in the URL (the system's roots without it).
    #[arg(
        long,
        env = "WEFT_POSTGRES_CA",
        value_name = "FILE",
        requires = "postgres"
    )]
    postgres_ca: Option<PathBuf>,

    /// How often to checkpoint into Postgres.
    #[arg(
        long,
        env = "WEFT_CHECKPOINT_INTERVAL",
        value_name = "DURATION",
        default_value = "5s",
        value_parser = parse_duration
    )]
    checkpoint_interval: Duration,

    /// File holding the HS256 secret (at least 32 bytes; one trailing newline is ignored).
    #[arg(long, env = "WEFT_JWT_SECRET_FILE", value_name = "FILE")]
    jwt_secret_file: Option<PathBuf>,

    /// Require tokens to name this audience (`aud`).
    #[arg(long, env = "WEFT_JWT_AUDIENCE", value_name = "AUD")]
    jwt_audience: Option<String>,

    /// Require tokens to be issued by this issuer (`iss`).
    #[arg(long, env = "WEFT_JWT_ISSUER", value_name = "ISS")]
    jwt_issuer: Option<String>,

    /// Clock skew tolerated on `exp` and `nbf`, at most 60s.
    #[arg(
        long,
        env = "WEFT_JWT_LEEWAY",
        value_name = "DURATION",
        default_value = "60s",
        value_parser = parse_leeway
    )]
    jwt_leeway: u64,

    /// TLS certificate chain (PEM).
    #[arg(long, env = "WEFT_CERT", value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,

    /// TLS private key (PEM).
    #[arg(long, env = "WEFT_KEY", value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,

    /// Create a self-signed certificate and a secret in the data directory if missing, and
    /// reuse them on later starts. --cert/--key and --jwt-secret-file still take precedence.
    #[arg(
        long,
        env = "WEFT_DEV",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    dev: bool,

    /// Largest change a member may send (uncompressed); larger ones are refused.
    #[arg(
        long,
        env = "WEFT_MAX_CHANGE_BYTES",
        value_name = "SIZE",
        default_value = "1MiB",
        value_parser = parse_byte_size
    )]
    max_change_bytes: u64,

    /// Most operations in one change (a character typed or pasted into a text is one).
    #[arg(
        long,
        env = "WEFT_MAX_CHANGE_OPS",
        value_name = "N",
        default_value = "100000"
    )]
    max_change_ops: u64,

    /// Most bytes one document may take in the relay's store; changes past it are refused.
    #[arg(
        long,
        env = "WEFT_MAX_DOC_BYTES",
        value_name = "SIZE",
        default_value = "64MiB",
        value_parser = parse_byte_size
    )]
    max_doc_bytes: u64,

    /// App-defined document kinds and their write rules (TOML; see the README).
    #[arg(long, env = "WEFT_KINDS", value_name = "FILE")]
    kinds: Option<PathBuf>,

    /// Most documents one user may own.
    #[arg(
        long,
        env = "WEFT_MAX_DOCS_PER_USER",
        value_name = "N",
        default_value = "10000"
    )]
    max_docs_per_user: usize,

    /// Most bytes the documents one user owns may take in the relay's store.
    #[arg(
        long,
        env = "WEFT_MAX_USER_BYTES",
        value_name = "SIZE",
        default_value = "1GiB",
        value_parser = parse_byte_size
    )]
    max_user_bytes: u64,

    /// Memory budget for loaded documents, counted as their stored bytes: past it idle ones
    /// are evicted, then new loads refused until there is room.
    #[arg(
        long,
        env = "WEFT_MAX_LOADED_BYTES",
        value_name = "SIZE",
        default_value = "1GiB",
        value_parser = parse_byte_size
    )]
    max_loaded_bytes: u64,

    /// Bytes per second one connection may send after a burst of four seconds' worth; the
    /// relay reads a faster sender more slowly.
    #[arg(
        long,
        env = "WEFT_MAX_BYTES_PER_SEC",
        value_name = "SIZE",
        default_value = "8MiB",
        value_parser = parse_byte_size
    )]
    max_bytes_per_sec: u64,

    /// Evict a document with no subscribers from memory after this long unused (hidden: for
    /// tests and tuning).
    #[arg(
        long,
        env = "WEFT_EVICT_AFTER",
        value_name = "DURATION",
        default_value = "60s",
        value_parser = parse_duration,
        hide = true
    )]
    evict_after: Duration,

    /// Log format on stderr.
    #[arg(
        long,
        env = "WEFT_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "human"
    )]
    log_format: LogFormat,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// File holding the HS256 secret, read as `serve --jwt-secret-file` reads it.
    #[arg(long, value_name = "FILE")]
    secret_file: PathBuf,

    /// The user the token speaks for.
    #[arg(long, value_name = "USER", value_parser = NonEmptyStringValueParser::new())]
    sub: String,

    /// Grant a document, read-write unless `:ro` follows; repeat for more.
    #[arg(long = "doc", value_name = "DOC[:rw|:ro]")]
    docs: Vec<DocGrant>,

    /// Allow uploading new documents.
    #[arg(long)]
    create: bool,

    /// Allow changing any document's access list.
    #[arg(long)]
    admin: bool,

    /// How long the token is valid, e.g. 30s, 15m, 24h or 7d.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    ttl: Duration,

    /// Audience claim (`aud`), for relays started with --jwt-audience.
    #[arg(long, value_name = "AUD")]
    audience: Option<String>,

    /// Issuer claim (`iss`), for relays started with --jwt-issuer.
    #[arg(long, value_name = "ISS")]
    issuer: Option<String>,
}

/// `--http ADDR` or `--http off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpListen {
    Off,
    On(SocketAddr),
}

impl FromStr for HttpListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            return Ok(HttpListen::Off);
        }
        s.parse()
            .map(HttpListen::On)
            .map_err(|_| format!("{s:?} is neither an address such as 127.0.0.1:9433 nor off"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// A failure that is the caller's fault: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn main() -> ExitCode {
    weft_relay::tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return clap_exit(&err),
    };
    let result = match cli.command {
        Command::Serve(args) => {
            init_tracing(args.log_format, "info");
            serve(args)
        }
        Command::Token(args) => {
            init_tracing(LogFormat::Human, "warn");
            token(args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weft-relay: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Help and version go to stdout with status 0; usage errors become one line on stderr with
/// status 2.
fn clap_exit(err: &clap::Error) -> ExitCode {
    if err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        eprintln!("weft-relay: a subcommand is required: serve or token (see --help)");
        return ExitCode::from(2);
    }
    if !err.use_stderr() {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    let rendered = err.render().to_string();
    let message: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty() && !line.starts_with("Usage:"))
        .collect();
    let message = message.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    eprintln!("weft-relay: {message}");
    ExitCode::from(2)
}

fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Created, or tightened if it exists: mode 0700, its secret, key and store 0600.
    weft_relay::prepare_data_dir(&args.data_dir)?;

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

    let identity = match (&args.cert, &args.key, args.dev) {
        (Some(cert), Some(key), _) => load_cert_and_key(cert, key)?,
        (None, None, true) => ensure_dev_cert(&args.data_dir)?,
        _ => bail!(
            "no TLS certificate: pass --cert FILE --key FILE, \
             or --dev to generate a self-signed one in the data directory"
        ),
    };

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
        "startup checks passed"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_relay(args, verifier, identity))
}

/// Runs the relay until SIGTERM or Ctrl-C: stop accepting, close connections, let the hub
/// finish every write in flight, stop the store writer, exit.
async fn run_relay(
    args: ServeArgs,
    verifier: Verifier,
    identity: weft_relay::TlsIdentity,
) -> anyhow::Result<()> {
    use std::sync::Arc;
    use weft_core::store::{erase, GroupCommit, KvStore};

    // Before anything is opened or bound: a SIGINT or SIGTERM from here on is caught (a
    // default SIGINT would kill the relay without draining), and one that arrives while the
    // relay starts is answered once it is ready.
    let mut signals = ShutdownSignals::install()?;
    // The kinds the hub enforces and the checkpoints write as records; a bad file fails
    // before the store is opened.
    let kinds = match &args.kinds {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the kinds file {}", path.display()))?;
            let kinds = weft_schema::rules::Kinds::with_declared(&text)
                .with_context(|| format!("the kinds file {} is not valid", path.display()))?;
            Arc::new(kinds)
        }
        None => Arc::new(weft_schema::rules::Kinds::builtin()),
    };
    let store_path = args.data_dir.join(weft_relay::STORE_FILE);
    let (staging, writer) = weft_relay::store_limits();
    // Deleted documents' content is erased, and the file rewritten without it, before
    // anything is served (see `weft_core::store::erase`).
    let store_path_for_open = store_path.clone();
    let store =
        tokio::task::spawn_blocking(move || erase::open_redb(&store_path_for_open, staging))
            .await
            .context("the store open task failed")?
            .with_context(|| format!("cannot open the store {}", store_path.display()))?;
    let kv: Arc<dyn KvStore> = Arc::new(store);
    // The store creates its file with the default mode.
    weft_relay::make_file_private(&store_path)?;
    let group =
        Arc::new(GroupCommit::with_limits(kv, writer).context("cannot start the store writer")?);
    let metrics = Arc::new(weft_relay::Metrics::default());
    let endpoint = weft_relay::bind_quic(args.listen, &identity).map_err(anyhow::Error::msg)?;
    let quic_addr = endpoint
        .local_addr()
        .context("cannot read the QUIC address")?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut ready = format!("weft-relay ready quic={quic_addr}");
    let http_task = match args.http {
        HttpListen::On(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for HTTP"))?;
            ready.push_str(&format!(" http={}", listener.local_addr()?));
            Some(tokio::spawn(weft_relay::serve_http(
                listener,
                metrics.clone(),
                stopped(stop_rx.clone()),
            )))
        }
        HttpListen::Off => None,
    };
    // WebSocket endpoint (begin)
    let ws_listener = match args.ws {
        Some(addr) => {
            let listener = weft_relay::bind_ws(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for WebSocket clients"))?;
            ready.push_str(&format!(" ws={}", listener.local_addr()?));
            Some(listener)
        }
        None => None,
    };
    // WebSocket endpoint (end)
    // Postgres checkpoints (begin)
    // Migrations and the restore of documents the store lacks run before anything is served.
    let dirty = weft_relay::DirtyDocs::new();
    let checkpointer = match &args.postgres {
        Some(url) => {
            let mut cfg = weft_relay::CheckpointConfig::new(url.clone(), args.checkpoint_interval);
            cfg.postgres_ca = args.postgres_ca.clone();
            cfg.kinds = kinds.clone();
            let start =
                weft_relay::Checkpointer::start(cfg, group.clone(), dirty.clone(), metrics.clone());
            // An empty relay waits for Postgres as long as it takes: a signal ends the wait.
            let (checkpointer, restored) = tokio::select! {
                started = start => started.context("cannot start Postgres checkpoints")?,
                () = signals.recv() => {
                    tracing::info!("stopped while waiting for Postgres; nothing was served");
                    return Ok(());
                }
            };
            tracing::info!(
                checkpointed = restored.checkpointed,
                restored = restored.restored,
                "Postgres ready"
            );
            Some(checkpointer)
        }
        None => None,
    };
    // Postgres checkpoints (end)

    let (hub_tx, hub_rx) = tokio::sync::mpsc::channel(4096);
    let mut hub_config = weft_relay::HubConfig::default();
    hub_config.engine.evict_after = u64::try_from(args.evict_after.as_millis()).unwrap_or(u64::MAX);
    let check = weft_core::check::Limits {
        max_change_bytes: usize::try_from(args.max_change_bytes).unwrap_or(usize::MAX),
        max_change_ops: usize::try_from(args.max_change_ops).unwrap_or(usize::MAX),
        // A document chunk inflates to about its own size in the store: no message may
        // inflate past what a document may hold.
        max_inflated_bytes: usize::try_from(args.max_doc_bytes).unwrap_or(usize::MAX),
    };
    hub_config.engine.limits = check.clone();
    hub_config.engine.max_doc_bytes = args.max_doc_bytes;
    hub_config.kinds = kinds.clone();
    hub_config.quotas = weft_relay::Quotas {
        max_docs_per_user: args.max_docs_per_user,
        max_user_bytes: args.max_user_bytes,
        max_loaded_bytes: args.max_loaded_bytes,
    };
    let hub = weft_relay::Hub::new(hub_config, group.clone(), verifier.clone(), metrics.clone())
        .with_checkpoints(dirty.clone()); // Postgres checkpoints
    let hub_task = tokio::spawn(hub.run(hub_rx));
    // Postgres checkpoints (begin)
    let (checkpoint_stop, checkpoint_stop_rx) = tokio::sync::watch::channel(false);
    let checkpoint_task =
        checkpointer.map(|c| tokio::spawn(c.run(stopped(checkpoint_stop_rx.clone()))));
    // Postgres checkpoints (end)
    // WebSocket endpoint (begin)
    let ws_task = ws_listener.map(|listener| {
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
            hub_tx.clone(),
            metrics.clone(),
            stopped(stop_rx.clone()),
        ))
    });
    // WebSocket endpoint (end)
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
        stopped(stop_rx.clone()),
    ));
    println!("{ready}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    signals.recv().await;
    tracing::info!("shutting down: closing connections and flushing writes");
    let _ = stop_tx.send(true);
    let _ = accept_task.await;
    if let Some(t) = ws_task {
        let _ = t.await;
    }
    // Every connection task has ended and dropped its hub sender: the hub drains and returns.
    let _ = hub_task.await;
    // Postgres checkpoints: every write is durable now; the final checkpoint takes them all.
    if let Some(t) = checkpoint_task {
        let _ = checkpoint_stop.send(true);
        let _ = t.await;
    }
    if let Some(t) = http_task {
        let _ = t.await;
    }
    endpoint.wait_idle().await;
    drop(group);
    Ok(())
}

/// The SIGTERM and SIGINT (Ctrl-C) handlers. Both are installed when this is built, unlike
/// `tokio::signal::ctrl_c()`, which installs its handler only when first polled.
struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers (inside the runtime).
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(ShutdownSignals {
                term: signal(SignalKind::terminate())
                    .context("cannot install the SIGTERM handler")?,
                int: signal(SignalKind::interrupt())
                    .context("cannot install the SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    /// Resolves on the first SIGTERM or SIGINT since installation (one that arrived earlier
    /// resolves it at once). Cancel-safe: dropping the future loses no signal.
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let mut docs = BTreeMap::new();
    for grant in &args.docs {
        if let Some(previous) = docs.insert(grant.doc, grant.role) {
            if previous != grant.role {
                return Err(UsageError(format!(
                    "--doc names {} twice with different roles",
                    grant.doc
                ))
                .into());
            }
        }
    }
    let secret = load_secret(&args.secret_file)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();

    let mut claims = Claims::new(args.sub, now, args.ttl.as_secs().max(1))
        .with_create(args.create)
        .with_admin(args.admin);
    claims.docs = docs;
    if let Some(aud) = args.audience {
        claims = claims.with_audience(aud);
    }
    if let Some(iss) = args.issuer {
        claims = claims.with_issuer(iss);
    }
    let token = Minter::new(&secret).mint(&claims)?;
    println!("{token}");
    Ok(())
}

/// A leeway of 0s to 60s, in whole seconds.
fn parse_leeway(input: &str) -> Result<u64, String> {
    let secs = humantime::parse_duration(input.trim())
        .map_err(|_| format!("{input:?} is not a duration such as 30s"))?
        .as_secs();
    if secs > MAX_LEEWAY_SECS {
        return Err(format!(
            "{input:?} is more than the {MAX_LEEWAY_SECS}s allowed"
        ));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn http_accepts_an_address_or_off() {
        assert_eq!("off".parse(), Ok(HttpListen::Off));
        assert_eq!(
            "127.0.0.1:9433".parse(),
            Ok(HttpListen::On("127.0.0.1:9433".parse().unwrap()))
        );
        assert!("on".parse::<HttpListen>().is_err());
    }

    #[test]
    fn serve_defaults_follow_the_contract() {
        let cli = Cli::try_parse_from(["weft-relay", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.listen, "127.0.0.1:4433".parse().unwrap());
        assert_eq!(args.data_dir, PathBuf::from("./weft-relay-data"));
        assert_eq!(args.http, HttpListen::On("127.0.0.1:9433".parse().unwrap()));
        assert_eq!(args.ws_max_frame, 16 << 20);
        assert_eq!(args.checkpoint_interval, Duration::from_secs(5));
        assert_eq!(args.jwt_leeway, 60);
        assert!(!args.dev);
    }

    #[test]
    fn leeway_beyond_sixty_seconds_is_a_usage_error() {
        assert_eq!(parse_leeway("0s"), Ok(0));
        assert_eq!(parse_leeway("1m"), Ok(60));
        assert!(parse_leeway("61s").is_err());
        assert!(parse_leeway("soon").is_err());
    }

    #[test]
    fn cert_without_key_is_a_usage_error() {
        let err = Cli::try_parse_from(["weft-relay", "serve", "--cert", "c.pem"]).unwrap_err();
        assert!(err.use_stderr());
    }
}
