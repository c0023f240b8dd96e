//! The `weft` command line's grammar: every command, its arguments and flags (clap), as the
//! contract states them. A parsed [`Command`] is also what a command hands over the local
//! socket (serde), so it carries no relative paths once [`Command::absolutize`] ran.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use weft_core::{DeviceId, DocId};
use weft_schema as schema;

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
    Rec(RecCmd),
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

/// `weft rec ...`
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
pub enum RecCmd {
    /// Show the fields of a document of a declared kind.
    Show {
        /// The document.
        doc: DocId,
        /// JSON output: {"kind": ..., "fields": {...}}.
        #[arg(long)]
        json: bool,
    },
    /// Set a field of a document of a declared kind (exit 3 when a write rule forbids it;
    /// nothing changes).
    Set {
        /// The document.
        doc: DocId,
        /// The field.
        field: String,
        /// Its new value (an integer, true/false, or a string, as the field's type says).
        value: String,
    },
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
        /// Only the last N messages (read without reading the others).
        #[arg(long, value_name = "N")]
        #[serde(default)]
        last: Option<usize>,
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
    /// The relay, `host:port`; repeat it for the relays of one cluster (the device uses one
    /// at a time and moves to another when its relay is lost). A name with several address
    /// records counts as several relays.
    #[arg(long)]
    pub relay: Vec<String>,
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
