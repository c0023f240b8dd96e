//! The `weft-relay` command line's grammar: every command, its arguments and flags (clap), as
//! the contract states them, and the usage error that makes the exit status 2.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::{BoolishValueParser, NonEmptyStringValueParser};
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use weft_relay::{parse_byte_size, parse_duration, DocGrant, MAX_LEEWAY_SECS};

/// The relay that weft devices sync through.
#[derive(Debug, Parser)]
#[command(name = "weft-relay", version, subcommand_required = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the relay (boxed: its arguments are many times the size of `token`'s).
    Serve(Box<ServeArgs>),
    /// Print an HS256 token for the relay (for development and tests).
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// QUIC address to listen on.
    #[arg(
        long,
        env = "WEFT_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:4433"
    )]
    pub(crate) listen: SocketAddr,

    /// Directory for the relay's store, and for --dev's secret and certificate.
    #[arg(
        long,
        env = "WEFT_DATA_DIR",
        value_name = "DIR",
        default_value = "./weft-relay-data"
    )]
    pub(crate) data_dir: PathBuf,

    /// Address for GET /healthz and GET /metrics, or `off`.
    #[arg(
        long,
        env = "WEFT_HTTP",
        value_name = "ADDR|off",
        default_value = "127.0.0.1:9433"
    )]
    pub(crate) http: HttpListen,

    /// WebSocket address for automerge-repo clients (off unless given).
    #[arg(long, env = "WEFT_WS", value_name = "ADDR")]
    pub(crate) ws: Option<SocketAddr>,

    /// Largest WebSocket frame accepted; larger ones close the socket.
    #[arg(
        long,
        env = "WEFT_WS_MAX_FRAME",
        value_name = "SIZE",
        default_value = "16MiB",
        value_parser = parse_byte_size
    )]
    pub(crate) ws_max_frame: u64,

    /// The browser origin (e.g. `https://app.example`, or `*`) allowed to call
    /// `POST /ws-ticket` across origins; none unless given.
    #[arg(long, env = "WEFT_WS_TICKET_ORIGIN", value_name = "ORIGIN")]
    pub(crate) ws_ticket_origin: Option<String>,

    /// How long a ticket from `POST /ws-ticket` is good for (one upgrade within it).
    #[arg(
        long,
        env = "WEFT_WS_TICKET_TTL",
        value_name = "DURATION",
        default_value = "30s",
        value_parser = parse_ticket_ttl
    )]
    pub(crate) ws_ticket_ttl: Duration,

    /// Postgres to checkpoint into (the embedded store alone when absent).
    #[arg(
        long = "postgres",
        env = "WEFT_POSTGRES_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub(crate) postgres: Option<String>,

    /// PEM certificates trusted to sign Postgres' certificate, for `sslmode=verify-ca` or
    /// `verify-full` in the URL (the system's roots without it).
    #[arg(
        long,
        env = "WEFT_POSTGRES_CA",
        value_name = "FILE",
        requires = "postgres"
    )]
    pub(crate) postgres_ca: Option<PathBuf>,

    /// One of several relays sharing `--postgres`: every accepted change is in the cluster's
    /// log (in Postgres) before it is acknowledged, and every relay applies the others'.
    #[arg(
        long,
        env = "WEFT_CLUSTER",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new(),
        requires = "postgres"
    )]
    pub(crate) cluster: bool,

    /// This relay's name in the cluster's log (unique in the cluster). Default: a random name
    /// kept in `DATA_DIR/cluster-name`.
    #[arg(
        long,
        env = "WEFT_CLUSTER_NAME",
        value_name = "NAME",
        requires = "cluster"
    )]
    pub(crate) cluster_name: Option<String>,

    /// How long the cluster's change log keeps an entry that every relay has read (a relay
    /// away for longer catches up from the checkpoints instead).
    #[arg(
        long,
        env = "WEFT_CLUSTER_LOG_RETENTION",
        value_name = "DURATION",
        default_value = "24h",
        value_parser = parse_duration,
        requires = "cluster"
    )]
    pub(crate) cluster_log_retention: Duration,

    /// How often to checkpoint into Postgres.
    #[arg(
        long,
        env = "WEFT_CHECKPOINT_INTERVAL",
        value_name = "DURATION",
        default_value = "5s",
        value_parser = parse_duration
    )]
    pub(crate) checkpoint_interval: Duration,

    /// How long a stopping relay keeps trying to write its final checkpoint when Postgres
    /// fails (the changes stay in its store either way).
    #[arg(
        long,
        env = "WEFT_FINAL_CHECKPOINT_DEADLINE",
        value_name = "DURATION",
        default_value = "60s",
        value_parser = parse_duration,
        requires = "postgres"
    )]
    pub(crate) final_checkpoint_deadline: Duration,

    /// File holding the HS256 secret (at least 32 bytes; one trailing newline is ignored).
    #[arg(long, env = "WEFT_JWT_SECRET_FILE", value_name = "FILE")]
    pub(crate) jwt_secret_file: Option<PathBuf>,

    /// Require tokens to name this audience (`aud`).
    #[arg(long, env = "WEFT_JWT_AUDIENCE", value_name = "AUD")]
    pub(crate) jwt_audience: Option<String>,

    /// Require tokens to be issued by this issuer (`iss`).
    #[arg(long, env = "WEFT_JWT_ISSUER", value_name = "ISS")]
    pub(crate) jwt_issuer: Option<String>,

    /// Clock skew tolerated on `exp` and `nbf`, at most 60s.
    #[arg(
        long,
        env = "WEFT_JWT_LEEWAY",
        value_name = "DURATION",
        default_value = "60s",
        value_parser = parse_leeway
    )]
    pub(crate) jwt_leeway: u64,

    /// TLS certificate chain (PEM).
    #[arg(long, env = "WEFT_CERT", value_name = "FILE", requires = "key")]
    pub(crate) cert: Option<PathBuf>,

    /// TLS private key (PEM).
    #[arg(long, env = "WEFT_KEY", value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,

    /// Create a self-signed certificate and a secret in the data directory if missing, and
    /// reuse them on later starts. --cert/--key and --jwt-secret-file still take precedence.
    #[arg(
        long,
        env = "WEFT_DEV",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub(crate) dev: bool,

    /// Largest change a member may send (uncompressed); larger ones are refused.
    #[arg(
        long,
        env = "WEFT_MAX_CHANGE_BYTES",
        value_name = "SIZE",
        default_value = "1MiB",
        value_parser = parse_byte_size
    )]
    pub(crate) max_change_bytes: u64,

    /// Most operations in one change (a character typed or pasted into a text is one).
    #[arg(
        long,
        env = "WEFT_MAX_CHANGE_OPS",
        value_name = "N",
        default_value = "100000"
    )]
    pub(crate) max_change_ops: u64,

    /// Most bytes one document may take in the relay's store; changes past it are refused.
    #[arg(
        long,
        env = "WEFT_MAX_DOC_BYTES",
        value_name = "SIZE",
        default_value = "64MiB",
        value_parser = parse_byte_size
    )]
    pub(crate) max_doc_bytes: u64,

    /// App-defined document kinds and their write rules (TOML; see the README).
    #[arg(long, env = "WEFT_KINDS", value_name = "FILE")]
    pub(crate) kinds: Option<PathBuf>,

    /// Serve the demo web app on the --http address (its WebSocket endpoint is --ws, or else
    /// an ephemeral port on the --http host).
    #[arg(
        long,
        env = "WEFT_WEB",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub(crate) web: bool,

    /// Most documents one user may own.
    #[arg(
        long,
        env = "WEFT_MAX_DOCS_PER_USER",
        value_name = "N",
        default_value = "10000"
    )]
    pub(crate) max_docs_per_user: usize,

    /// Most bytes the documents one user owns may take in the relay's store.
    #[arg(
        long,
        env = "WEFT_MAX_USER_BYTES",
        value_name = "SIZE",
        default_value = "1GiB",
        value_parser = parse_byte_size
    )]
    pub(crate) max_user_bytes: u64,

    /// Memory budget for loaded documents, counted as their stored bytes: past it idle ones
    /// are evicted, then new loads refused until there is room.
    #[arg(
        long,
        env = "WEFT_MAX_LOADED_BYTES",
        value_name = "SIZE",
        default_value = "1GiB",
        value_parser = parse_byte_size
    )]
    pub(crate) max_loaded_bytes: u64,

    /// Bytes per second one connection may send after a burst of four seconds' worth; the
    /// relay reads a faster sender more slowly.
    #[arg(
        long,
        env = "WEFT_MAX_BYTES_PER_SEC",
        value_name = "SIZE",
        default_value = "8MiB",
        value_parser = parse_byte_size
    )]
    pub(crate) max_bytes_per_sec: u64,

    /// Push hook: POST one signed JSON event per new message to this URL (http:// or https://),
    /// naming the members with no live connection to the document.
    #[arg(
        long,
        env = "WEFT_NOTIFY_URL",
        value_name = "URL",
        requires = "notify_secret_file"
    )]
    pub(crate) notify_url: Option<String>,

    /// File holding the push hook's HMAC-SHA256 secret (at least 32 bytes; one trailing newline
    /// is ignored): each POST carries `X-Weft-Signature: sha256=HEX` of its body.
    #[arg(
        long,
        env = "WEFT_NOTIFY_SECRET_FILE",
        value_name = "FILE",
        requires = "notify_url"
    )]
    pub(crate) notify_secret_file: Option<PathBuf>,

    /// Include each message's body (at most 1 KiB) in the push hook's events.
    #[arg(
        long,
        env = "WEFT_NOTIFY_BODY",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new(),
        requires = "notify_url"
    )]
    pub(crate) notify_body: bool,

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
    pub(crate) evict_after: Duration,

    /// Log format on stderr.
    #[arg(
        long,
        env = "WEFT_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "human"
    )]
    pub(crate) log_format: LogFormat,
}

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// File holding the HS256 secret, read as `serve --jwt-secret-file` reads it.
    #[arg(long, value_name = "FILE")]
    pub(crate) secret_file: PathBuf,

    /// The user the token speaks for.
    #[arg(long, value_name = "USER", value_parser = NonEmptyStringValueParser::new())]
    pub(crate) sub: String,

    /// Grant a document, read-write unless `:ro` follows; repeat for more.
    #[arg(long = "doc", value_name = "DOC[:rw|:ro]")]
    pub(crate) docs: Vec<DocGrant>,

    /// Allow uploading new documents.
    #[arg(long)]
    pub(crate) create: bool,

    /// Allow changing any document's access list.
    #[arg(long)]
    pub(crate) admin: bool,

    /// How long the token is valid, e.g. 30s, 15m, 24h or 7d.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub(crate) ttl: Duration,

    /// Audience claim (`aud`), for relays started with --jwt-audience.
    #[arg(long, value_name = "AUD")]
    pub(crate) audience: Option<String>,

    /// Issuer claim (`iss`), for relays started with --jwt-issuer.
    #[arg(long, value_name = "ISS")]
    pub(crate) issuer: Option<String>,
}

/// `--http ADDR` or `--http off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpListen {
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
pub(crate) enum LogFormat {
    Human,
    Json,
}

/// A failure that is the caller's fault: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// A ticket's life: any duration, zero included (a zero life makes every ticket expired, which
/// the tests use).
fn parse_ticket_ttl(input: &str) -> Result<Duration, String> {
    humantime::parse_duration(input.trim())
        .map_err(|_| format!("{input:?} is not a duration such as 30s"))
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
