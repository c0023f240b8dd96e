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
use rand::{Rng, SeedableRng};
use weft_core::automerge::{ActorId, Automerge, ChangeHash};
use weft_core::engine::{ConnId, Engine, EngineConfig, Gate, Millis, OpenOptions, Output};
use weft_core::host::{self, Action, Host, HostConfig, Loaded, Waiting};
use weft_core::store::docs::{self as docstore, DocStoreError};
use weft_core::store::{GroupCommit, KvStore, MemStore, StoreError, WriteBatch};
use weft_core::wire::Message;
use weft_core::{DocId, Document};

/// Compaction as often as it can come: every few chunks, whatever their size.
const SIM_HOST: HostConfig = HostConfig {
    compact_after_chunks: 4,
    compact_growth: 0,
    compact_max_chunks: 16,
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
    /// Print every delivered message on stderr.
    pub trace: bool,
    /// The user each node's device acts for: a node whose engine has a `RulesGate` checks
    /// what its peers send as their users' (see [`Sim::connect`]).
    pub users: HashMap<usize, String>,
}

fn describe(msg: &Message) -> String {
    match msg {
        Message::Sync { reset, data, .. } => format!("Sync(reset={reset}, {} bytes)", data.len()),
        Message::Changes { changes, .. } => format!("Changes({})", changes.len()),
        Message::Ack { heads, .. } => format!("Ack({} heads)", heads.len()),
        other => format!("{other:?}"),
    }
}

impl Sim {
    /// `n` nodes with the given configs (index = node), sharing documents `docs`.
    pub fn new(configs: Vec<EngineConfig>, docs: Vec<DocId>, seed: u64) -> Self {
        let nodes = configs
            .into_iter()
            .enumerate()
            .map(|(i, cfg)| {
                let store = Arc::new(MemStore::new());
                let kv: Arc<dyn KvStore> = store.clone();
                let group = GroupCommit::new(kv).expect("the group-commit writer starts");
                Node {
                    host: Host::new(Engine::new(cfg), Arc::new(group), SIM_HOST),
                    store,
                    durable: VecDeque::new(),
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
            trace: false,
            users: HashMap::new(),
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Connects nodes `a` and `b` and opens every shared document on the link.
    pub fn connect(&mut self, a: usize, b: usize) {
        if let Some(i) = self.link_index(a, b) {
            if self.links[i].connected {
                return;
            }
            self.links.remove(i);
        }
        let conn_a = ConnId(self.next_conn);
        let conn_b = ConnId(self.next_conn + 1);
        self.next_conn += 2;
        self.links.push(Link {
            a,
            b,
            conn_a,
            conn_b,
            connected: true,
            partitioned: false,
        });
        self.tell_gate(a, b, conn_a);
        self.tell_gate(b, a, conn_b);
        for doc in self.docs.clone() {
            self.open_side(a, b, conn_a, doc);
            self.open_side(b, a, conn_b, doc);
        }
    }

    /// A node whose engine runs a `RulesGate` learns who is behind a new connection: the
    /// peer's user, as a relay authenticates it.
    fn tell_gate(&mut self, me: usize, peer: usize, conn: ConnId) {
        let Some(user) = self.users.get(&peer).cloned() else {
            return;
        };
        let gate = self.nodes[me].host.gate_mut().and_then(|g| {
            g.as_any_mut()
                .downcast_mut::<weft_schema::rules::RulesGate>()
        });
        if let Some(gate) = gate {
            gate.connect(conn, &user, false, false);
        }
    }

    /// Installs `gate` in `node`'s engine.
    pub fn set_gate(&mut self, node: usize, gate: Box<dyn Gate>) {
        self.nodes[node].host.set_gate(gate);
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

    /// What a relay's driver and a device do when the relay refuses the device's changes: the
    /// relay ends the subscription, the device drops its copy (kept aside by a real device) and
    /// takes the relay's version again.
    fn reset_peer(&mut self, node: usize, conn: ConnId, doc: DocId) {
        let Some(l) = self
            .links
            .iter()
            .find(|l| l.conn_a == conn || l.conn_b == conn)
            .copied()
        else {
            return;
        };
        let (peer, peer_conn) = if l.conn_a == conn {
            (l.b, l.conn_b)
        } else {
            (l.a, l.conn_a)
        };
        let now = self.now;
        self.nodes[node].host.close(now, conn, doc);
        let p = &mut self.nodes[peer];
        p.host.forget(doc);
        let mut batch = WriteBatch::new();
        docstore::delete_doc(&mut batch, doc);
        p.store
            .write(&batch)
            .expect("the simulator empties a document it took back");
        self.packets
            .retain(|pk| !(pk.msg.doc() == Some(doc) && (pk.conn == conn || pk.conn == peer_conn)));
        self.open_side(peer, node, peer_conn, doc);
        self.open_side(node, peer, conn, doc);
    }

    fn open_side(&mut self, me: usize, peer: usize, conn: ConnId, doc: DocId) {
        let key = format!("node-{peer}").into_bytes();
        let saved = host::saved_sync_state(self.nodes[me].store.as_ref(), doc, &key)
            .ok()
            .flatten();
        let opts = OpenOptions {
            stable_peer: Some(key),
            saved_sync_state: saved,
            ..Default::default()
        };
        let now = self.now;
        self.nodes[me].host.open(now, conn, doc, opts);
    }

    /// Closes the connection between `a` and `b` (both ends notice).
    pub fn disconnect(&mut self, a: usize, b: usize) {
        if let Some(i) = self.link_index(a, b) {
            let l = self.links[i];
            if l.connected {
                self.links[i].connected = false;
                let now = self.now;
                self.nodes[l.a].host.remove_conn(now, l.conn_a);
                self.nodes[l.b].host.remove_conn(now, l.conn_b);
                self.packets
                    .retain(|p| p.conn != l.conn_a && p.conn != l.conn_b);
            }
        }
    }

    /// Silently drops every packet between `a` and `b` until healed.
    pub fn partition(&mut self, a: usize, b: usize, on: bool) {
        if let Some(i) = self.link_index(a, b) {
            self.links[i].partitioned = on;
        }
    }

    /// Heals every partition and reconnects every link that was ever made.
    pub fn heal_all(&mut self) {
        let pairs: Vec<(usize, usize)> = self.links.iter().map(|l| (l.a, l.b)).collect();
        for l in &mut self.links {
            l.partitioned = false;
        }
        for (a, b) in pairs {
            self.connect(a, b);
        }
    }

    fn link_index(&self, a: usize, b: usize) -> Option<usize> {
        self.links
            .iter()
            .position(|l| (l.a == a && l.b == b) || (l.a == b && l.b == a))
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

    fn ensure_loaded(&mut self, node: usize, doc: DocId) {
        let now = self.now;
        if !self.nodes[node].host.is_loaded(doc) {
            self.nodes[node].host.load(now, doc);
            self.drain(node);
        }
        // A relay's document may be stale (lazy folding): reading it reloads it first.
        if self.nodes[node].host.is_stale(doc) {
            self.nodes[node].host.materialize(now, doc);
            self.drain(node);
        }
    }

    /// A load as the drivers do it, with an actor of the simulator's choosing (a reloaded
    /// document writes with a new actor, and the run stays reproducible).
    fn load(&mut self, node: usize, doc: DocId) -> Result<Option<Loaded>, DocStoreError> {
        let n = &mut self.nodes[node];
        n.actor_seed = n.actor_seed.wrapping_add(7919);
        let mut actor = [0u8; 16];
        actor[..8].copy_from_slice(&n.actor_seed.to_be_bytes());
        actor[8..].copy_from_slice(&doc.as_bytes()[..8]);
        let store = n.store.as_ref();
        let loaded = if n.host.wants_snapshot(doc) {
            host::load_for_compaction(store, doc)
        } else {
            host::load(store, doc)
        }?;
        let actor = ActorId::from(actor.to_vec());
        Ok(Some(match loaded {
            Some(mut l) => {
                let am = l.doc.automerge().clone();
                l.doc = Document::from_automerge(am.with_actor(actor));
                l
            }
            // A document new to this node starts empty, with the simulator's actor too.
            None => Loaded {
                doc: Document::from_automerge(Automerge::new().with_actor(actor)),
                chunks: Vec::new(),
                snapshot: None,
                sizes: Default::default(),
                quarantine: Vec::new(),
                gate_records: Vec::new(),
            },
        }))
    }

    /// Carries out every action node `node`'s host has queued.
    fn drain(&mut self, node: usize) {
        loop {
            // A store fault is armed for the one write a step of the host may submit, and
            // disarmed once that write is done.
            let fail =
                self.faults.store_failure > 0.0 && self.rng.random_bool(self.faults.store_failure);
            if fail {
                self.nodes[node].store.fail_next_write();
            }
            let Some(action) = self.nodes[node].host.poll_action() else {
                self.nodes[node].store.clear_faults();
                break;
            };
            match action {
                Action::Wait { what, ticket } => {
                    let result = ticket.wait();
                    self.failed_writes += u64::from(result.is_err());
                    let at = self.now + self.persist_delay;
                    let n = &mut self.nodes[node];
                    n.store.clear_faults();
                    n.durable.push_back((at, what, result));
                }
                Action::Send { conn, msg } => {
                    self.nodes[node].store.clear_faults();
                    self.send(node, conn, msg);
                }
                Action::Load { doc } => {
                    self.nodes[node].store.clear_faults();
                    let result = self.load(node, doc);
                    // A load that fails is reported to the document's waiters by the host.
                    let _ = self.nodes[node].host.loaded(self.now, doc, result);
                }
                Action::Event(out) => {
                    self.nodes[node].store.clear_faults();
                    self.on_event(node, out);
                }
                _ => self.nodes[node].store.clear_faults(),
            }
        }
    }

    fn on_event(&mut self, node: usize, out: Output) {
        match out {
            Output::Rejected { conn, doc, reason }
                if reason != weft_core::engine::Rejection::ReadOnly =>
            {
                self.reset_peer(node, conn, doc);
            }
            Output::ProtocolError { conn, .. } => self.disconnect_conn(conn),
            // A document whose write failed left memory; its peers reconnect and sync again.
            Output::Failed { conns, .. } => {
                for conn in conns {
                    self.disconnect_conn(conn);
                }
            }
            _ => {}
        }
    }

    fn disconnect_conn(&mut self, conn: ConnId) {
        if let Some(l) = self
            .links
            .iter()
            .find(|l| l.conn_a == conn || l.conn_b == conn)
            .copied()
        {
            self.disconnect(l.a, l.b);
        }
    }

    fn complete_persists(&mut self, node: usize) -> bool {
        let now = self.now;
        let n = &mut self.nodes[node];
        let mut any = false;
        // In order: a write is reported only after every earlier one.
        while n.durable.front().is_some_and(|(at, ..)| *at <= now) {
            let Some((_, what, result)) = n.durable.pop_front() else {
                break;
            };
            n.host.committed(now, what, result);
            any = true;
        }
        any
    }

    fn send(&mut self, from: usize, conn: ConnId, msg: Message) {
        let Some(l) = self
            .links
            .iter()
            .find(|l| l.conn_a == conn || l.conn_b == conn)
            .copied()
        else {
            return;
        };
        debug_assert!(l.a == from || l.b == from);
        if !l.connected || l.partitioned {
            return;
        }
        let (to, to_conn) = if l.conn_a == conn {
            (l.b, l.conn_b)
        } else {
            (l.a, l.conn_a)
        };
        if self.rng.random_bool(self.faults.loss) {
            return;
        }
        let copies = if self.rng.random_bool(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = 1 + if self.faults.max_delay > 0 {
                self.rng.random_range(0..=self.faults.max_delay)
            } else {
                0
            };
            self.next_seq += 1;
            self.packets.push(Packet {
                at: self.now + delay,
                seq: self.next_seq,
                to,
                conn: to_conn,
                msg: msg.clone(),
            });
        }
    }

    /// When the next event is due: a packet, a persist completion or an engine wake-up.
    fn next_event(&mut self) -> Option<Millis> {
        let next_packet = self.packets.iter().map(|p| p.at).min();
        let next_persist = self
            .nodes
            .iter()
            .filter_map(|n| n.durable.front().map(|p| p.0))
            .min();
        let next_wake = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.host.next_wakeup())
            .min();
        [next_packet, next_persist, next_wake]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs until nothing is in flight and no engine waits on a timer, or `max_steps` events.
    /// Returns whether it became quiescent.
    pub fn run_until_quiet(&mut self, max_steps: usize) -> bool {
        for _ in 0..max_steps {
            for i in 0..self.nodes.len() {
                self.drain(i);
            }
            let mut progressed = false;
            for i in 0..self.nodes.len() {
                progressed |= self.complete_persists(i);
                self.drain(i);
            }
            if progressed {
                continue;
            }
            let next_packet = self.packets.iter().map(|p| (p.at, p.seq)).min();
            let next_wake = self
                .nodes
                .iter_mut()
                .filter_map(|n| n.host.next_wakeup())
                .min();
            let next = self.next_event();
            let Some(t) = next else { return true };
            self.now = self.now.max(t);
            if next_packet.is_some_and(|p| p.0 <= self.now) {
                let (at, seq) = next_packet.expect("checked above");
                let idx = self
                    .packets
                    .iter()
                    .position(|p| p.at == at && p.seq == seq)
                    .expect("packet exists");
                let p = self.packets.swap_remove(idx);
                if self.trace {
                    eprintln!(
                        "t={} -> node {} {:?}: {}",
                        self.now,
                        p.to,
                        p.conn,
                        describe(&p.msg)
                    );
                }
                self.delivered += 1;
                self.delivered_bytes +=
                    weft_core::wire::frame(&p.msg, usize::MAX).map_or(0, |f| f.len() as u64);
                let now = self.now;
                if self.nodes[p.to].host.handle(now, p.conn, p.msg).is_err() {
                    // A misbehaving or stale message closes the link, as a real driver would.
                    self.disconnect_conn(p.conn);
                }
                self.drain(p.to);
            } else if next_wake.is_some_and(|w| w <= self.now) {
                for i in 0..self.nodes.len() {
                    if self.nodes[i]
                        .host
                        .next_wakeup()
                        .is_some_and(|w| w <= self.now)
                    {
                        let now = self.now;
                        self.nodes[i].host.tick(now);
                        self.drain(i);
                    }
                }
            }
        }
        false
    }

    /// Runs for `ms` of virtual time (events due in that window are processed).
    pub fn run_for(&mut self, ms: Millis, max_steps: usize) {
        let until = self.now + ms;
        for _ in 0..max_steps {
            let next = self.next_event();
            match next {
                Some(t) if t <= until => {
                    if !self.step_once() {
                        break;
                    }
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    fn step_once(&mut self) -> bool {
        // One bounded slice of `run_until_quiet`.
        let before = (self.delivered, self.now);
        self.run_until_quiet(1);
        (self.delivered, self.now) != before || self.nodes.iter().any(|n| !n.durable.is_empty())
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
