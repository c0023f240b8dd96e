//! The `weft` commands, as the contract states them.
//!
//! A command runs against a [`Device`] and writes its result to a [`Sink`]: the terminal when
//! the command opened the data directory itself, or the local socket when a long-running
//! command holds the directory and runs it on this command's behalf (see [`crate::ipc`]).
//! Either way the output, the exit status and the effects are the same.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use weft_core::automerge::{Automerge, Patch, PatchAction, Prop, ReadDoc};
use weft_core::{DeviceId, DocId};
use weft_schema as schema;

use weft_peer::{
    ControlOp, Device, DeviceError, Event, EventOrigin, LinkState, LinkStatus, PeerConfig,
    RelayConfig, SyncState, TokenSource,
};

/// Exit statuses (the contract's; success is 0).
pub mod exit {
    /// Any other failure.
    pub const FAILURE: i32 = 1;
    /// Usage error: bad flag, malformed id.
    pub const USAGE: i32 = 2;
    /// Refused: authentication or authorization failed.
    pub const REFUSED: i32 = 3;
    /// Unreachable or timed out.
    pub const UNREACHABLE: i32 = 4;
}

/// The `weft` command line.
#[derive(Debug, Parser)]
#[command(
    name = "weft",
    version,
    about = "weft: local-first documents on this device, synced through a relay or peer to peer"
)]
pub struct Cli {
    /// The data directory (default: the platform's data directory).
    #[arg(long, global = true, env = "WEFT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log as JSON lines instead of human-readable text (stderr).
    #[arg(long, global = true, hide = true)]
    pub log_json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// A command.
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
pub enum Command {
    /// Create this device's key and store (if missing) and print its id.
    Init {
        /// The user this device acts for (the author of its messages). Without it, the
        /// device takes the user of the first token it syncs with.
        #[arg(long, value_name = "USER")]
        name: Option<String>,
    },
    /// Documents.
    #[command(subcommand)]
    Doc(DocCmd),
    /// Documents of the kinds the relay declared, as records.
    #[command(subcommand)]
    Rec(rec::RecCmd),
    /// Chat messages of a conversation or trip.
    #[command(subcommand)]
    Msg(MsgCmd),
    /// Per document: heads, role, changes not yet confirmed, last successful sync.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Print one JSON line per change of a document, local or remote, until killed.
    Watch {
        /// The document.
        doc: DocId,
    },
    /// Sync with a relay or a peer device.
    Sync(SyncArgs),
    /// Peer to peer.
    #[command(subcommand)]
    P2p(P2pCmd),
}

/// `weft doc ...`
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
pub enum DocCmd {
    /// Create a document and print its id.
    New {
        /// Its kind: conversation, trip, or a kind the relay declared.
        #[arg(long)]
        kind: String,
        /// Its title (conversations and trips).
        #[arg(long)]
        title: Option<String>,
        /// A field of a declared kind, FIELD=VALUE (repeatable).
        #[arg(long = "set", value_name = "FIELD=VALUE")]
        set: Vec<String>,
    },
    /// List the documents on this device.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show a document.
    Show {
        /// The document.
        doc: DocId,
        /// The whole document as JSON, every field.
        #[arg(long)]
        json: bool,
    },
    /// Print the document's heads, lowercase hex, sorted, one per line.
    Heads {
        /// The document.
        doc: DocId,
    },
    /// Share the document with a user (owner only; takes effect at the next sync).
    Share {
        /// The document.
        doc: DocId,
        /// The user (their token's `sub`).
        #[arg(long)]
        user: String,
        /// Their role.
        #[arg(long, default_value = "rw")]
        role: weft_core::Role,
    },
    /// Take a user off the document's access list (owner only).
    Unshare {
        /// The document.
        doc: DocId,
        /// The user.
        #[arg(long)]
        user: String,
    },
    /// Delete the document for everyone (owner only). Once the relay has deleted it, every
    /// member's device that syncs, this one included, erases its copy.
    Delete {
        /// The document.
        doc: DocId,
    },
}

/// The built-in kinds `weft doc new` creates.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum DocKind {
    /// A chat.
    Conversation,
    /// A trip: members, itinerary, tasks and a chat.
    Trip,
}

/// `weft msg ...`
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
pub enum MsgCmd {
    /// Send a message and print its id.
    Send {
        /// The document.
        doc: DocId,
        /// The text.
        text: String,
    },
    /// Edit a message's text.
    Edit {
        /// The document.
        doc: DocId,
        /// The message id.
        #[serde(with = "id_str")]
        msg: schema::Id,
        /// The new text.
        text: String,
    },
    /// Delete a message (it keeps its place, with an empty body; the text stays in the
    /// document's history until history redaction exists).
    Delete {
        /// The document.
        doc: DocId,
        /// The message id.
        #[serde(with = "id_str")]
        msg: schema::Id,
    },
    /// List the messages in display order.
    List {
        /// The document.
        doc: DocId,
        /// JSON: an array of {id, author, body, created_at, edited_at, deleted}.
        #[arg(long)]
        json: bool,
    },
}

/// `weft p2p ...`
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
pub enum P2pCmd {
    /// Accept the allowed devices and sync with them until killed. Prints this device's id.
    Listen {
        /// The address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Devices allowed to connect.
        #[arg(long, required = true, num_args = 1..)]
        allow: Vec<DeviceId>,
    },
}

/// `weft sync ...`
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["relay", "peer"]))]
#[command(group = clap::ArgGroup::new("mode").required(true).args(["once", "watch"]))]
pub struct SyncArgs {
    /// The relay, `host:port`.
    #[arg(long)]
    pub relay: Option<String>,
    /// The token for the relay.
    #[arg(
        long,
        env = "WEFT_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// A file holding the token, re-read on every reconnect.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The relay's certificate (PEM) to pin; without it the system's roots apply.
    #[arg(long)]
    pub relay_cert: Option<PathBuf>,
    /// A peer device, `host:port`.
    #[arg(long, requires = "peer_key", conflicts_with_all = ["relay", "token", "token_file", "relay_cert"])]
    pub peer: Option<String>,
    /// The peer's device id.
    #[arg(long)]
    pub peer_key: Option<DeviceId>,
    /// More documents to fetch.
    #[arg(long)]
    pub doc: Vec<DocId>,
    /// With --once: give up after this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    /// The longest wait between reconnection attempts.
    #[arg(long, default_value = "10s", value_parser = parse_duration, hide = true)]
    #[serde(with = "duration_ms")]
    pub max_backoff: Duration,
    /// Sync everything once, then exit.
    #[arg(long)]
    pub once: bool,
    /// Stay connected and keep syncing.
    #[arg(long)]
    pub watch: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

mod rec;

mod id_str {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use weft_schema::Id;

    pub(super) fn serialize<S: Serializer>(id: &Id, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(id.as_ref())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl Command {
    /// Whether the command holds the data directory for long (and so serves other commands
    /// over the local socket while it runs).
    pub fn is_long_running(&self) -> bool {
        matches!(
            self,
            Command::Watch { .. } | Command::Sync(_) | Command::P2p(_)
        )
    }

    /// Makes every path absolute against `cwd`, so another process can run the command.
    pub fn absolutize(&mut self, cwd: &std::path::Path) {
        if let Command::Sync(s) = self {
            for p in [&mut s.token_file, &mut s.relay_cert].into_iter().flatten() {
                if p.is_relative() {
                    *p = cwd.join(&*p);
                }
            }
        }
    }
}

/// A command's failure: the exit status and one sentence for stderr.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    /// The exit status.
    pub code: i32,
    /// What went wrong, in one sentence.
    pub message: String,
}

impl Failure {
    /// A failure with `code`.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<DeviceError> for Failure {
    fn from(e: DeviceError) -> Self {
        let code = match &e {
            DeviceError::ReadOnly(_) | DeviceError::Refused(_) | DeviceError::Deleted(_) => {
                exit::REFUSED
            }
            DeviceError::Unreachable(_) => exit::UNREACHABLE,
            _ => exit::FAILURE,
        };
        Failure::new(code, e.to_string())
    }
}

fn write_failure(e: schema::WriteError) -> Failure {
    let code = match e {
        schema::WriteError::InvalidInput { .. } => exit::USAGE,
        _ => exit::FAILURE,
    };
    Failure::new(code, e.to_string())
}

fn read_failure(e: schema::ReadError) -> Failure {
    Failure::new(exit::FAILURE, e.to_string())
}

/// What a command prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Out {
    /// To stdout.
    Stdout(String),
    /// To stderr.
    Stderr(String),
}

/// Where a command's output goes. Sending fails once the reader is gone (a client that
/// disconnected): long-running commands stop then.
#[derive(Clone, Debug)]
pub struct Sink(mpsc::Sender<Out>);

impl Sink {
    /// A sink and the receiving end.
    pub fn channel() -> (Sink, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel(1024);
        (Sink(tx), rx)
    }

    async fn out(&self, s: impl Into<String>) -> Result<(), Failure> {
        self.0
            .send(Out::Stdout(s.into()))
            .await
            .map_err(|_| Failure::new(exit::FAILURE, "the output was closed"))
    }

    async fn err(&self, s: impl Into<String>) {
        let _ = self.0.send(Out::Stderr(s.into())).await;
    }

    async fn closed(&self) {
        self.0.closed().await
    }
}

/// Runs `cmd` on `device`.
pub async fn execute(device: &Device, cmd: Command, sink: &Sink) -> Result<(), Failure> {
    match cmd {
        Command::Init { .. } => sink.out(format!("{}\n", device.id())).await,
        Command::Doc(c) => doc_cmd(device, c, sink).await,
        Command::Rec(c) => rec::rec_cmd(device, c, sink).await,
        Command::Msg(c) => msg_cmd(device, c, sink).await,
        Command::Status { json } => status(device, json, sink).await,
        Command::Watch { doc } => watch(device, doc, sink).await,
        Command::Sync(args) => sync(device, args, sink).await,
        Command::P2p(P2pCmd::Listen { listen, allow }) => {
            p2p_listen(device, listen, allow, sink).await
        }
    }
}

/// The user this device acts for: the author of its messages.
fn device_user(device: &Device) -> Result<String, Failure> {
    device.dir().name().ok_or_else(|| {
        Failure::new(
            exit::FAILURE,
            "this device does not know which user it acts for yet: run `weft init --name USER`, or sync once with a token",
        )
    })
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn new_id() -> schema::Id {
    schema::Id::from_bytes(rand::random())
}

/// Fails unless `doc` is a typed document with a chat.
async fn check_exists(device: &Device, doc: DocId) -> Result<(), Failure> {
    device.info(doc).await?;
    Ok(())
}

async fn doc_cmd(device: &Device, cmd: DocCmd, sink: &Sink) -> Result<(), Failure> {
    match cmd {
        DocCmd::New { kind, title, set } => {
            let kind = match kind.as_str() {
                "conversation" => DocKind::Conversation,
                "trip" => DocKind::Trip,
                other => return rec::new_record(device, other, &set, sink).await,
            };
            if !set.is_empty() {
                return Err(Failure::new(
                    exit::USAGE,
                    "--set is for kinds the relay declared; conversations and trips take --title",
                ));
            }
            let title = title.unwrap_or_default();
            let now = unix_ms();
            let (kind_name, result) = match kind {
                DocKind::Conversation => {
                    let new = schema::NewConversation {
                        title,
                        participants: Vec::new(),
                    };
                    let (doc, r) = device
                        .create(Some("conversation"), move |am: &mut Automerge| {
                            schema::Conversation::create(am, &new, now)
                        })
                        .await?;
                    ("conversation", r.map(|_| doc))
                }
                DocKind::Trip => {
                    let new = schema::NewTrip {
                        title,
                        start_date: None,
                        end_date: None,
                    };
                    let (doc, r) = device
                        .create(Some("trip"), move |am: &mut Automerge| {
                            schema::Trip::create(am, &new, now)
                        })
                        .await?;
                    ("trip", r.map(|_| doc))
                }
            };
            let doc = result.map_err(write_failure)?;
            tracing::debug!(%doc, kind = kind_name, "created");
            sink.out(format!("{doc}\n")).await
        }
        DocCmd::List { json } => {
            let list = device.list().await?;
            let mut rows = Vec::new();
            for info in list {
                let title = device.read(info.id, title_of).await.ok().flatten();
                rows.push((info, title));
            }
            if json {
                let v: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(i, title)| {
                        serde_json::json!({
                            "id": i.id.to_string(),
                            "kind": i.kind,
                            "title": title,
                            "role": i.role.map(|r| r.as_str()),
                            "shared": !i.revoked,
                            "deleted": i.deleted,
                            "last_sync": i.last_sync_ms.map(rfc3339),
                        })
                    })
                    .collect();
                sink.out(format!("{}\n", serde_json::Value::Array(v))).await
            } else {
                let mut text = String::new();
                for (i, title) in rows {
                    text.push_str(&format!(
                        "{}  {:<12}  {}{}\n",
                        i.id,
                        i.kind.as_deref().unwrap_or("-"),
                        title.unwrap_or_default(),
                        if i.deleted {
                            "  (deleted)"
                        } else if i.revoked {
                            "  (no longer shared)"
                        } else {
                            ""
                        }
                    ));
                }
                sink.out(text).await
            }
        }
        DocCmd::Show { doc, json } => {
            check_exists(device, doc).await?;
            let (value, typed) = device
                .read(doc, |am| {
                    (schema::to_json(am), schema::read_typed(am).map(|r| r.value))
                })
                .await?;
            let value = value.map_err(read_failure)?;
            if json {
                return sink.out(format!("{value}\n")).await;
            }
            let text = match typed {
                Ok(schema::TypedDoc::Conversation(c)) => {
                    let n = device
                        .read(doc, |am| schema::messages(am).map(|m| m.value.len()))
                        .await?;
                    format!(
                        "conversation {doc}\ntitle: {}\nparticipants: {}\nmessages: {}\n",
                        c.title,
                        c.participants.join(", "),
                        n.unwrap_or(0)
                    )
                }
                Ok(schema::TypedDoc::Trip(t)) => format!(
                    "trip {doc}\ntitle: {}\nmembers: {}\ntasks: {}\n",
                    t.title,
                    t.members.keys().cloned().collect::<Vec<_>>().join(", "),
                    t.tasks.len()
                ),
                _ => format!(
                    "{}\n",
                    serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
                ),
            };
            sink.out(text).await
        }
        DocCmd::Share { doc, user, role } => {
            control(device, ControlOp::Share { doc, user, role }, sink).await
        }
        DocCmd::Unshare { doc, user } => {
            control(device, ControlOp::Unshare { doc, user }, sink).await
        }
        DocCmd::Delete { doc } => control(device, ControlOp::Delete { doc }, sink).await,
        DocCmd::Heads { doc } => {
            check_exists(device, doc).await?;
            let heads = device.read(doc, |am| am.get_heads()).await?;
            let mut hex: Vec<String> = heads.iter().map(weft_core::hash_hex).collect();
            hex.sort();
            let text: String = hex.into_iter().map(|h| h + "\n").collect();
            sink.out(text).await
        }
    }
}

/// Queues a sharing or deletion request. When a relay connection is up (a running
/// `sync --watch` holds the directory), waits for the relay's answer; otherwise it goes at the
/// next sync.
async fn control(device: &Device, op: ControlOp, sink: &Sink) -> Result<(), Failure> {
    check_exists(device, op.doc()).await?;
    let online = device
        .status()
        .borrow()
        .links
        .values()
        .any(|l| l.state == LinkState::Online && l.name.starts_with("relay "));
    let answer = device.control(op).await?;
    if !online {
        sink.err("queued: takes effect at the next sync").await;
        return Ok(());
    }
    match tokio::time::timeout(Duration::from_secs(15), answer).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(why))) => Err(Failure::new(
            exit::REFUSED,
            format!("the relay refused: {why}"),
        )),
        Ok(Err(_)) | Err(_) => {
            sink.err("queued: the relay has not answered yet; it takes effect at the next sync")
                .await;
            Ok(())
        }
    }
}

fn title_of(am: &Automerge) -> Option<String> {
    match schema::read_typed(am).ok()?.value {
        schema::TypedDoc::Conversation(c) => Some(c.title),
        schema::TypedDoc::Trip(t) => Some(t.title),
        _ => None,
    }
}

async fn msg_cmd(device: &Device, cmd: MsgCmd, sink: &Sink) -> Result<(), Failure> {
    match cmd {
        MsgCmd::Send { doc, text } => {
            check_exists(device, doc).await?;
            let author = device_user(device)?;
            let id = new_id();
            let now = unix_ms();
            let msg = schema::NewMessage::text(author, text);
            let sent = device
                .change(doc, move |am| schema::send_message(am, &msg, id, now))
                .await?
                .map_err(write_failure)?;
            sink.out(format!("{}\n", sent.id)).await
        }
        MsgCmd::Edit { doc, msg, text } => {
            check_exists(device, doc).await?;
            let now = unix_ms();
            device
                .change(doc, move |am| schema::edit_message(am, &msg, &text, now))
                .await?
                .map_err(write_failure)
        }
        MsgCmd::Delete { doc, msg } => {
            check_exists(device, doc).await?;
            let now = unix_ms();
            device
                .change(doc, move |am| schema::delete_message(am, &msg, now))
                .await?
                .map_err(write_failure)
        }
        MsgCmd::List { doc, json } => {
            check_exists(device, doc).await?;
            if json {
                let read = device
                    .read(doc, schema::messages_json)
                    .await?
                    .map_err(read_failure)?;
                report_skipped(&read.skipped, sink).await;
                return sink.out(read.value + "\n").await;
            }
            let read = device
                .read(doc, schema::messages)
                .await?
                .map_err(read_failure)?;
            report_skipped(&read.skipped, sink).await;
            let msgs = read.value;
            let mut text = String::new();
            for m in msgs {
                let flag = if m.deleted {
                    " (deleted)"
                } else if m.edited_at.is_some() {
                    " (edited)"
                } else {
                    ""
                };
                text.push_str(&format!(
                    "{}  {}  {}: {}{flag}\n",
                    m.created_at, m.id, m.author, m.body
                ));
            }
            sink.out(text).await
        }
    }
}

/// Entries a read left out (another writer's malformed data): one line each on stderr, so
/// the valid rest still prints and the command succeeds.
async fn report_skipped(skipped: &[schema::Skipped], sink: &Sink) {
    for s in skipped {
        sink.err(s.to_string()).await;
    }
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

async fn status(device: &Device, json: bool, sink: &Sink) -> Result<(), Failure> {
    let list = device.list().await?;
    let live = device.status().borrow().clone();
    let mut rows = Vec::new();
    for info in list {
        let confirmed = info.confirmed_heads.clone();
        let (heads, unconfirmed) = device
            .read(info.id, move |am| {
                let mut hex: Vec<String> = am.get_heads().iter().map(weft_core::hash_hex).collect();
                hex.sort();
                let known: Vec<_> = confirmed
                    .iter()
                    .filter_map(|h| h.parse::<weft_core::automerge::ChangeHash>().ok())
                    .filter(|h| am.get_change_by_hash(h).is_some())
                    .collect();
                let unconfirmed = if known.len() == confirmed.len() {
                    am.get_changes(&known).len()
                } else {
                    am.get_changes(&[]).len()
                };
                (hex, unconfirmed)
            })
            .await?;
        let links: Vec<serde_json::Value> = live
            .links
            .values()
            .filter_map(|l| {
                l.docs.get(&info.id).map(|d| {
                    serde_json::json!({"link": l.name, "state": d.state, "role": d.role.map(|r| r.as_str())})
                })
            })
            .collect();
        rows.push((info, heads, unconfirmed, links));
    }
    if json {
        let docs: Vec<serde_json::Value> = rows
            .iter()
            .map(|(i, heads, unconfirmed, links)| {
                serde_json::json!({
                    "doc": i.id.to_string(),
                    "kind": i.kind,
                    "heads": heads,
                    "role": i.role.map(|r| r.as_str()),
                    "shared": !i.revoked,
                    "unconfirmed": unconfirmed,
                    "last_sync": i.last_sync_ms.map(rfc3339),
                    "links": links,
                })
            })
            .collect();
        let conns: Vec<serde_json::Value> = live
            .links
            .values()
            .map(|l| serde_json::json!({"link": l.name, "state": l.state, "user": l.user, "error": l.last_error}))
            .collect();
        let v = serde_json::json!({"device": device.id().to_string(), "docs": docs, "connections": conns});
        return sink.out(format!("{v}\n")).await;
    }
    let mut text = format!("device {}\n", device.id());
    for l in live.links.values() {
        text.push_str(&format!(
            "{}: {}{}\n",
            l.name,
            match l.state {
                LinkState::Online => "online",
                LinkState::Connecting => "connecting",
                LinkState::Offline => "offline",
            },
            l.last_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    for (i, heads, unconfirmed, _) in rows {
        text.push_str(&format!(
            "{}  {:<12}  role {:<2}  unconfirmed {:<5}  last sync {}  heads {}\n",
            i.id,
            i.kind.as_deref().unwrap_or("-"),
            i.role.map_or("-", |r| r.as_str()),
            unconfirmed,
            i.last_sync_ms.map_or_else(|| "never".to_owned(), rfc3339),
            heads
                .iter()
                .map(|h| &h[..8.min(h.len())])
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    sink.out(text).await
}

fn patch_json(p: &Patch) -> serde_json::Value {
    let path: Vec<serde_json::Value> = p
        .path
        .iter()
        .map(|(_, prop)| match prop {
            Prop::Map(k) => serde_json::Value::from(k.as_str()),
            Prop::Seq(i) => serde_json::Value::from(*i),
        })
        .collect();
    let (action, extra) = match &p.action {
        PatchAction::PutMap { key, .. } => ("put", serde_json::json!({"key": key})),
        PatchAction::PutSeq { index, .. } => ("put", serde_json::json!({"index": index})),
        PatchAction::Insert { index, values, .. } => (
            "insert",
            serde_json::json!({"index": index, "count": values.len()}),
        ),
        PatchAction::SpliceText { index, value, .. } => (
            "splice",
            serde_json::json!({"index": index, "text": value.make_string()}),
        ),
        PatchAction::Increment { prop, value } => (
            "increment",
            serde_json::json!({"prop": prop.to_string(), "by": value}),
        ),
        PatchAction::Conflict { prop } => {
            ("conflict", serde_json::json!({"prop": prop.to_string()}))
        }
        PatchAction::DeleteMap { key } => ("delete", serde_json::json!({"key": key})),
        PatchAction::DeleteSeq { index, length } => (
            "delete",
            serde_json::json!({"index": index, "length": length}),
        ),
        PatchAction::Mark { marks } => ("mark", serde_json::json!({"count": marks.len()})),
    };
    let mut v = serde_json::json!({"path": path, "action": action});
    if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

async fn watch(device: &Device, doc: DocId, sink: &Sink) -> Result<(), Failure> {
    check_exists(device, doc).await?;
    let mut events = device.events();
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(Event::Changed { doc: d, heads, origin, patches }) if d == doc => {
                    let mut hex: Vec<String> = heads.iter().map(weft_core::hash_hex).collect();
                    hex.sort();
                    let line = serde_json::json!({
                        "type": "change",
                        "doc": doc.to_string(),
                        "origin": match origin { EventOrigin::Local => "local", EventOrigin::Remote => "remote" },
                        "heads": hex,
                        "patches": patches.iter().map(patch_json).collect::<Vec<_>>(),
                    });
                    sink.out(format!("{line}\n")).await?;
                }
                Ok(Event::Deleted { doc: d }) if d == doc => {
                    return Err(DeviceError::Deleted(doc).into());
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    sink.err(format!("watch fell {n} events behind; some changes were not printed")).await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = sink.closed() => return Ok(()),
        }
    }
}

fn load_certs(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, Failure> {
    use rustls::pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            Failure::new(
                exit::USAGE,
                format!("cannot read the relay certificate {}: {e}", path.display()),
            )
        })?
        .collect();
    let certs = certs.map_err(|e| {
        Failure::new(
            exit::USAGE,
            format!(
                "the relay certificate {} is not valid PEM: {e}",
                path.display()
            ),
        )
    })?;
    if certs.is_empty() {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "the relay certificate file {} holds no certificate",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

async fn sync(device: &Device, args: SyncArgs, sink: &Sink) -> Result<(), Failure> {
    let handle = if let Some(relay) = &args.relay {
        let token = match (&args.token, &args.token_file) {
            (Some(t), _) => TokenSource::Static(t.clone()),
            (None, Some(f)) => TokenSource::File(f.clone()),
            (None, None) => {
                return Err(Failure::new(
                    exit::USAGE,
                    "a token is required: pass --token, --token-file or WEFT_TOKEN",
                ))
            }
        };
        token
            .read()
            .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
        let pinned_cert = args.relay_cert.as_deref().map(load_certs).transpose()?;
        device
            .connect_relay(RelayConfig {
                addr: relay.clone(),
                token,
                pinned_cert,
                docs: args.doc.clone(),
                reconnect: args.watch,
                max_backoff: args.max_backoff,
            })
            .await?
    } else {
        let (Some(peer), Some(key)) = (&args.peer, args.peer_key) else {
            return Err(Failure::new(
                exit::USAGE,
                "--relay or --peer with --peer-key is required",
            ));
        };
        device
            .connect_peer(PeerConfig {
                addr: peer.clone(),
                peer: key,
                docs: args.doc.clone(),
                reconnect: args.watch,
                max_backoff: args.max_backoff,
            })
            .await?
    };
    let link = handle.id();
    let mut status = device.status();
    if args.watch {
        // Print every change of status on stderr until killed (or the client disconnects).
        let mut last = None;
        loop {
            let line = {
                let s = status.borrow_and_update();
                s.links.get(&link).map(describe_link)
            };
            if let Some(line) = line {
                if last.as_ref() != Some(&line) {
                    sink.err(line.clone()).await;
                    last = Some(line);
                }
            }
            tokio::select! {
                r = status.changed() => if r.is_err() { return Ok(()) },
                _ = sink.closed() => return Ok(()),
            }
        }
    }
    // --once: until every document is synced or refused, the link fails, or the timeout.
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut was_online = false;
    let mut progress = Progress::default();
    let outcome = loop {
        let mut line = None;
        let verdict = {
            let s = status.borrow_and_update();
            s.links.get(&link).and_then(|l| {
                was_online |= l.state == LinkState::Online;
                if l.state == LinkState::Online {
                    line = progress.update(l);
                }
                if l.settled() && l.discovered {
                    return Some(Ok(l.clone()));
                }
                if l.state == LinkState::Offline && (l.last_error.is_some() || handle.is_finished())
                {
                    let msg = l
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "the connection ended".into());
                    let code = if l.refused {
                        exit::REFUSED
                    } else {
                        exit::UNREACHABLE
                    };
                    return Some(Err(Failure::new(code, format!("{}: {msg}", l.name))));
                }
                None
            })
        };
        if let Some(line) = line {
            sink.err(line).await;
        }
        if let Some(v) = verdict {
            break v;
        }
        tokio::select! {
            r = status.changed() => if r.is_err() { break Err(Failure::new(exit::FAILURE, "the device shut down")) },
            _ = tokio::time::sleep_until(deadline) => {
                let what = if was_online { "syncing" } else { "connecting" };
                break Err(Failure::new(exit::UNREACHABLE, format!("timed out after {} {what}", humantime::format_duration(args.timeout))));
            }
        }
    };
    handle.stop().await;
    let l = outcome?;
    let mut refused_requested = Vec::new();
    for (doc, d) in &l.docs {
        if d.state == SyncState::Refused {
            if args.doc.contains(doc) {
                refused_requested.push(*doc);
            } else if matches!(device.info(*doc).await, Err(DeviceError::Deleted(_))) {
                sink.err(format!("removed {doc}: its owner deleted it"))
                    .await;
            } else {
                sink.err(format!("skipped {doc}: the relay refused it"))
                    .await;
            }
        }
    }
    if !l.change_refusals.is_empty() {
        return Err(Failure::new(
            exit::REFUSED,
            format!("the relay refused {}", l.change_refusals.join("; ")),
        ));
    }
    if !l.control_errors.is_empty() {
        return Err(Failure::new(
            exit::REFUSED,
            format!("the relay refused: {}", l.control_errors.join("; ")),
        ));
    }
    if !refused_requested.is_empty() {
        let list: Vec<String> = refused_requested.iter().map(|d| d.to_string()).collect();
        return Err(Failure::new(
            exit::REFUSED,
            format!("not permitted: {}", list.join(", ")),
        ));
    }
    let synced = l
        .docs
        .values()
        .filter(|d| d.state == SyncState::Synced)
        .count();
    sink.err(format!("synced {synced} documents with {}", l.name))
        .await;
    Ok(())
}

/// Progress of a large initial sync, on stderr: a line when the count of documents done moves
/// on, at most every half second, and only for transfers of many documents.
#[derive(Default)]
struct Progress {
    last: Option<std::time::Instant>,
    done: usize,
}

impl Progress {
    const MIN_DOCS: usize = 20;

    fn update(&mut self, l: &LinkStatus) -> Option<String> {
        let total = l.docs.len();
        let done = l
            .docs
            .values()
            .filter(|d| matches!(d.state, SyncState::Synced | SyncState::Refused))
            .count();
        if total < Self::MIN_DOCS || done == self.done {
            return None;
        }
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
            && done < total
        {
            return None;
        }
        self.last = Some(std::time::Instant::now());
        self.done = done;
        let width = 30;
        let filled = done * width / total.max(1);
        Some(format!(
            "[{}{}] {done}/{total} documents",
            "#".repeat(filled),
            " ".repeat(width - filled)
        ))
    }
}

fn describe_link(l: &LinkStatus) -> String {
    let synced = l
        .docs
        .values()
        .filter(|d| d.state == SyncState::Synced)
        .count();
    match l.state {
        LinkState::Online => format!(
            "{}: online{}, {synced}/{} documents synced",
            l.name,
            l.user
                .as_ref()
                .map(|u| format!(" as {u}"))
                .unwrap_or_default(),
            l.docs.len()
        ),
        LinkState::Connecting => format!("{}: connecting", l.name),
        LinkState::Offline => format!(
            "{}: offline{}",
            l.name,
            l.last_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ),
    }
}

async fn p2p_listen(
    device: &Device,
    listen: std::net::SocketAddr,
    allow: Vec<DeviceId>,
    sink: &Sink,
) -> Result<(), Failure> {
    let bound = device
        .listen_p2p(listen, allow)
        .await
        .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
    sink.out(format!("{}\n", device.id())).await?;
    sink.err(format!("listening on {bound}")).await;
    let mut status = device.status();
    let mut last = String::new();
    loop {
        let line = {
            let s = status.borrow_and_update();
            s.links
                .values()
                .map(describe_link)
                .collect::<Vec<_>>()
                .join("; ")
        };
        if line != last && !line.is_empty() {
            sink.err(line.clone()).await;
        }
        last = line;
        tokio::select! {
            r = status.changed() => if r.is_err() { return Ok(()) },
            _ = sink.closed() => return Ok(()),
        }
    }
}
