//! An in-memory network that drives several nodes of the real stack deterministically.
//!
//! Every node is what a device or relay runs: core's [`Host`] (the engine behind its one
//! facade) over a real document store ([`MemStore`] behind a [`GroupCommit`] writer), with
//! compaction tuned to happen often. The simulator is the driver: it carries out the host's
//! actions, waits on every store write at once (so the store is the same whatever the writer
//! thread's timing) and reports it durable to the host after a virtual delay, always in order;
//! loads read the store; sent messages become packets on the network. The network can lose,
//! duplicate, delay and reorder packets, partition links (packets silently dropped) and
//! disconnect them (both ends see the connection close, like a QUIC connection ending); the
//! store can fail writes. Time is virtual: the simulator jumps to the next packet, durable
//! write or engine wake-up.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::SeedableRng;
use weft_core::automerge::{Automerge, ChangeHash};
use weft_core::engine::{ConnId, Engine, EngineConfig, Millis};
use weft_core::host::{self, Host, HostConfig, Waiting};
use weft_core::store::{GroupCommit, KvStore, MemStore, StoreError};
use weft_core::wire::Message;
use weft_core::DocId;

/// Compaction as often as it can come: every few chunks, whatever their size, each saved as a
/// large document's is.
const SIM_HOST: HostConfig = HostConfig {
    compact_after_chunks: 4,
    compact_growth: 0,
    compact_max_chunks: 16,
    log_received: false,
    // Every compaction saved off the "driver's thread", the path a large document takes.
    compact_off_thread_from: 0,
};

/// What the network does to packets.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Probability a packet is dropped.
    pub loss: f64,
    /// Probability a packet is delivered twice.
    pub duplicate: f64,
    /// Largest extra delay of a packet in ms (delays differ, so packets reorder).
    pub max_delay: Millis,
    /// Probability a store write fails (the disk refused it: nothing of it is stored).
    pub store_failure: f64,
}

struct Packet {
    at: Millis,
    seq: u64,
    to: usize,
    conn: ConnId,
    msg: Message,
}

/// One simulated node: the host (engine and store) a device or relay runs.
pub struct Node {
    /// The engine behind its facade.
    pub host: Host,
    /// The store under the host's group-commit writer.
    pub store: Arc<MemStore>,
    /// Writes done, reported durable to the host at their time, in order.
    durable: VecDeque<(Millis, Waiting, Result<(), StoreError>)>,
    /// Saves handed out by the host, finished at their time (as by the driver's blocking
    /// threads), in order.
    saves: VecDeque<(Millis, host::SaveJob)>,
    actor_seed: u64,
}

#[derive(Clone, Copy)]
struct Link {
    a: usize,
    b: usize,
    conn_a: ConnId,
    conn_b: ConnId,
    connected: bool,
    partitioned: bool,
}

/// The simulated network.
pub struct Sim {
    /// The nodes.
    pub nodes: Vec<Node>,
    links: Vec<Link>,
    docs: Vec<DocId>,
    packets: Vec<Packet>,
    /// Current faults.
    pub faults: Faults,
    /// Delay of persist completions in ms.
    pub persist_delay: Millis,
    rng: StdRng,
    now: Millis,
    next_conn: u64,
    next_seq: u64,
    /// Messages delivered so far.
    pub delivered: u64,
    /// Bytes of message frames delivered so far.
    pub delivered_bytes: u64,
    /// Store writes that failed (injected by [`Faults::store_failure`]).
    pub failed_writes: u64,
    /// Connections closed because a peer's heads named changes it would not send
    /// (`EngineError::Withheld`; the link reconnects).
    pub withheld_closes: u64,
    /// Print every delivered message on stderr.
    pub trace: bool,
    /// The user each node's device acts for: a node whose engine has a `RulesGate` checks
    /// what its peers send as their users' (see [`Sim::connect`]).
    pub users: HashMap<usize, String>,
    /// Nodes that speak only Automerge's sync protocol, as an automerge-repo client on the
    /// relay's WebSocket endpoint: both ends of their links are sync-only, and their sync
    /// messages lose weft's `reset` on the way, as on that wire.
    pub sync_only: std::collections::HashSet<usize>,
}

fn describe(msg: &Message) -> String {
    match msg {
        Message::Sync { reset, data, .. } => format!("Sync(reset={reset}, {} bytes)", data.len()),
        Message::Changes { changes, .. } => format!("Changes({})", changes.len()),
        Message::Ack { heads, .. } => format!("Ack({} heads)", heads.len()),
        other => format!("{other:?}"),
    }
}

/// An engine output, cut short for a trace line.
pub(crate) fn short(out: &weft_core::engine::Output) -> String {
    let s = format!("{out:?}");
    s.chars().take(200).collect()
}

mod network;
mod node;
mod run;

impl Sim {
    /// `n` nodes with the given configs (index = node), sharing documents `docs`.
    pub fn new(configs: Vec<EngineConfig>, docs: Vec<DocId>, seed: u64) -> Self {
        // The engines' maps iterate alike in every run, so a seed replays the same run.
        weft_core::hash::deterministic_on_this_thread();
        let nodes = configs
            .into_iter()
            .enumerate()
            .map(|(i, cfg)| {
                let store = Arc::new(MemStore::new());
                let kv: Arc<dyn KvStore> = store.clone();
                let group = GroupCommit::new(kv).expect("the group-commit writer starts");
                // Every whole document for a newcomer is made off the "driver's thread", the
                // path a large document takes, so that delays and losses meet it.
                let mut cfg = cfg;
                cfg.whole_off_thread_from = 0;
                Node {
                    host: Host::new(Engine::new(cfg), Arc::new(group), SIM_HOST),
                    store,
                    durable: VecDeque::new(),
                    saves: VecDeque::new(),
                    actor_seed: seed.wrapping_mul(1000).wrapping_add(i as u64),
                }
            })
            .collect();
        Sim {
            nodes,
            links: Vec::new(),
            docs,
            packets: Vec::new(),
            faults: Faults::default(),
            persist_delay: 0,
            rng: StdRng::seed_from_u64(seed),
            now: 0,
            next_conn: 1,
            next_seq: 0,
            delivered: 0,
            delivered_bytes: 0,
            failed_writes: 0,
            withheld_closes: 0,
            trace: false,
            users: HashMap::new(),
            sync_only: Default::default(),
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Makes a change on `node` with `f` (loading the document first); whether it changed it.
    pub fn change(&mut self, node: usize, doc: DocId, f: impl FnOnce(&mut Automerge)) -> bool {
        self.ensure_loaded(node, doc);
        let now = self.now;
        matches!(self.nodes[node].host.change(now, doc, f), Ok((_, Some(_))))
    }

    /// Reads `doc` on `node`.
    pub fn read<R>(&mut self, node: usize, doc: DocId, f: impl FnOnce(&Automerge) -> R) -> R {
        self.ensure_loaded(node, doc);
        self.nodes[node]
            .host
            .read(doc, |d| f(d.automerge()))
            .expect("a loaded document reads")
    }

    /// Writes key `value` (and `last = value`) at the root of `doc` on `node`; returns whether
    /// it was written.
    pub fn edit(&mut self, node: usize, doc: DocId, value: &str) -> bool {
        use weft_core::automerge::transaction::{CommitOptions, Transactable};
        use weft_core::automerge::ROOT;
        self.ensure_loaded(node, doc);
        let value = value.to_string();
        let now = self.now;
        let r = self.nodes[node]
            .host
            .change(now, doc, |am: &mut Automerge| {
                // Every edit writes its own root key (so concurrent edits are all kept) and the
                // shared key "last" (so concurrent edits also conflict).
                let mut tx = am.transaction();
                tx.put(ROOT, value.as_str(), true)
                    .expect("put a scalar at the root");
                tx.put(ROOT, "last", value.as_str())
                    .expect("put a scalar at the root");
                // No wall-clock time in the change: a seed replays the same hashes.
                tx.commit_with(CommitOptions::default().with_time(0));
            });
        r.is_ok()
    }

    /// The heads of `doc` on `node` (loading it if needed).
    pub fn heads(&mut self, node: usize, doc: DocId) -> Vec<ChangeHash> {
        self.ensure_loaded(node, doc);
        self.nodes[node].host.heads(doc).unwrap_or_default()
    }

    /// The whole document as JSON on `node`.
    pub fn json(&mut self, node: usize, doc: DocId) -> serde_json::Value {
        self.ensure_loaded(node, doc);
        self.nodes[node]
            .host
            .read(doc, |d| {
                serde_json::to_value(weft_core::automerge::AutoSerde::from(d.automerge()))
            })
            .expect("loaded above")
            .expect("a document always serializes")
    }

    /// The document as reloaded from `node`'s durable store alone.
    pub fn stored_heads(&self, node: usize, doc: DocId) -> Vec<ChangeHash> {
        let mut h = host::load(self.nodes[node].store.as_ref(), doc)
            .expect("stored chunks load")
            .map(|l| l.doc.heads())
            .unwrap_or_default();
        h.sort_unstable();
        h
    }

    /// Chunks `doc` takes in `node`'s store (compaction keeps it small).
    pub fn stored_chunks(&self, node: usize, doc: DocId) -> usize {
        self.nodes[node]
            .store
            .scan_keys(weft_core::store::Table::CHUNKS, doc.as_bytes())
            .map_or(0, |k| k.len())
    }

    /// Packets waiting in the network.
    pub fn in_flight(&self) -> usize {
        self.packets.len()
    }

    /// Whether the nodes are linked.
    pub fn has_link(&self, a: usize, b: usize) -> bool {
        self.link_index(a, b).is_some()
    }

    /// All links' endpoints.
    pub fn links(&self) -> Vec<(usize, usize)> {
        self.links.iter().map(|l| (l.a, l.b)).collect()
    }

    /// Number of documents every node shares.
    pub fn docs(&self) -> &[DocId] {
        &self.docs
    }

    /// Internal map of pending persists per node (for assertions).
    pub fn pending_persists(&self) -> HashMap<usize, usize> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (i, n.durable.len()))
            .collect()
    }
}
