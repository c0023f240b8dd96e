//! A relay cluster (`--cluster`): relays sharing one Postgres, which holds the cluster's change
//! log (`weft_changes`; `docs/decisions/0031-cluster-log-on-postgres.md`).
//!
//! - `append.rs`: the [`ClusterLog`] the hub appends to. Every write of changes a connection
//!   sent (with the actor bindings written before them) and every change of a document's
//!   metadata (creation, sharing, deletion) is appended, in batches of one transaction, and the
//!   hub acknowledges or applies it only once both the local store and the log hold it: no
//!   acknowledged change is lost when a relay dies.
//! - `follow.rs`: the follower, which `LISTEN`s for appends, reads every entry of the other
//!   relays in `seq` order, writes it into this relay's store (so every relay holds every
//!   document) and tells the hub, which applies it to loaded documents and live connections.
//!
//! - `bus.rs`: presence and ephemeral messages between the relays, by `NOTIFY`, never stored;
//!   with them each relay's heartbeat (the presence of a dead relay's members is forgotten) and
//!   the WebSocket tickets redeemed (a ticket opens one socket in the whole cluster).
//!
//! Checkpoints stay with the relay that accepted a change: imported changes are not marked
//! dirty (a checkpoint merges what Postgres holds, so relays checkpointing one document in turn
//! never lose each other's changes).

mod append;
mod apply;
mod bus;
mod follow;
mod notes;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tokio_postgres::Client;
use weft_core::store::StoreError;
use weft_core::DocId;

pub use append::ClusterLog;
pub use append::{start as start_cluster, ClusterConfig, ClusterTasks};
pub(crate) use bus::{Bus, SILENT_AFTER};

/// `weft_changes.kind` of an entry of changes.
const KIND_CHANGES: i16 = 1;
/// `weft_changes.kind` of an entry of metadata.
const KIND_META: i16 = 2;

/// Entries appended in one transaction at most.
const MAX_BATCH: usize = 512;

/// Entries waiting to be appended at most; past it the hub's write fails (and the connection
/// sends again later) rather than memory growing while Postgres is away.
const MAX_QUEUED: usize = 16_384;

/// Longest cluster name of a relay.
const MAX_NAME_LEN: usize = 64;

/// Entries the follower reads per query.
const READ_BATCH: i64 = 1_000;

/// The advisory lock every append transaction takes, so `seq` commits in order.
const APPEND_LOCK: i64 = 0x7765_6674_636c_7573; // "weftclus"

/// The file in the data directory that keeps a relay's default name in the cluster.
pub const CLUSTER_NAME_FILE: &str = "cluster-name";

/// This relay's name in the cluster: the one kept in `DATA_DIR/cluster-name`, created (random)
/// on the first start.
pub fn load_or_create_cluster_name(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join(CLUSTER_NAME_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let bytes: [u8; 8] = rand::random();
    let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, format!("{name}\n"))?;
    Ok(name)
}

/// What the hub appends.
#[derive(Debug)]
pub(crate) enum Entry {
    /// Changes a connection sent, as stored.
    Changes {
        doc: DocId,
        changes: Vec<u8>,
        /// Actor bindings (actor bytes, user) written before them.
        records: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// A document's new metadata.
    Meta {
        doc: DocId,
        meta: crate::meta::DocMeta,
    },
}

/// What the follower hands the hub: an entry of another relay, already in this relay's store.
#[derive(Debug)]
pub enum Imported {
    /// Changes to apply to the document if it is loaded.
    Changes {
        /// The document.
        doc: DocId,
        /// The changes, concatenated.
        changes: Vec<u8>,
        /// Actor bindings (actor bytes, user).
        bindings: Vec<(Vec<u8>, String)>,
        /// The relay that accepted them (its cluster name).
        relay: std::sync::Arc<str>,
        /// This relay accepted them and died before storing them: it checkpoints them.
        own: bool,
    },
    /// A member's presence or ephemeral message on another relay (never stored).
    Ephemeral {
        /// The relay's process that sent it (see `bus.rs`).
        from: std::sync::Arc<str>,
        /// The message.
        msg: weft_core::wire::Message,
    },
    /// Another relay's process said it is alive.
    Alive {
        /// The relay's process.
        from: std::sync::Arc<str>,
    },
    /// A document's new metadata: for the hub's cache and live connections.
    Meta {
        /// The document.
        doc: DocId,
        /// The metadata now stored.
        meta: Box<crate::meta::DocMeta>,
        /// Users whose access changed (the old and the new access list's).
        users: Vec<String>,
        /// The document is new to this relay: its owner owns one more.
        created: bool,
    },
}

/// The follower's connection while it listens, which the appender uses when it can: Postgres
/// then hands the relay's own entries back to the appending backend itself, without waking a
/// second one for each (every listening backend of the database is woken for every
/// notification), and the relay keeps one connection to the log instead of two.
#[derive(Clone, Default)]
struct Listening(Arc<Mutex<Option<Arc<Client>>>>);

impl Listening {
    /// Offers `client` (listening now), or withdraws it (`None`).
    fn set(&self, client: Option<Arc<Client>>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = client;
    }

    fn get(&self) -> Option<Arc<Client>> {
        let client = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        client.filter(|c| !c.is_closed())
    }
}

/// Completes when an appended entry is committed in Postgres; an error when the log dropped it
/// (the relay is stopping).
pub(crate) struct LogTicket(oneshot::Receiver<()>);

impl Future for LogTicket {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.map_err(|_| log_error("the cluster's log stopped")))
    }
}

/// A failed append as the store error the engine is told of.
pub(crate) fn log_error(message: &str) -> StoreError {
    StoreError::Backend {
        path: "weft_changes".into(),
        message: message.to_string(),
    }
}

/// Encodes actor bindings for `weft_changes.records`.
fn encode_records(records: &[(Vec<u8>, Vec<u8>)]) -> Option<Vec<u8>> {
    if records.is_empty() {
        return None;
    }
    let pairs: Vec<(&serde_bytes::Bytes, &serde_bytes::Bytes)> = records
        .iter()
        .map(|(k, v)| (serde_bytes::Bytes::new(k), serde_bytes::Bytes::new(v)))
        .collect();
    rmp_serde::to_vec(&pairs).ok()
}

/// Decodes `weft_changes.records`: actor bytes and user. `None` when it does not decode.
fn decode_records(bytes: &[u8]) -> Option<Vec<(Vec<u8>, String)>> {
    let pairs: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)> =
        rmp_serde::from_slice(bytes).ok()?;
    pairs
        .into_iter()
        .map(|(k, v)| Some((k.into_vec(), String::from_utf8(v.into_vec()).ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_round_trip_and_garbage_is_refused() {
        let records = vec![
            (vec![1u8, 2, 3], b"alice".to_vec()),
            (vec![9u8; 16], b"bob".to_vec()),
        ];
        let bytes = encode_records(&records).expect("encodes");
        assert_eq!(
            decode_records(&bytes),
            Some(vec![
                (vec![1, 2, 3], "alice".to_string()),
                (vec![9; 16], "bob".to_string())
            ])
        );
        assert_eq!(encode_records(&[]), None);
        assert_eq!(decode_records(b"\xc1garbage"), None);
        let not_utf8 = encode_records(&[(vec![1], vec![0xff, 0xfe])]).expect("encodes");
        assert_eq!(decode_records(&not_utf8), None);
    }
}
