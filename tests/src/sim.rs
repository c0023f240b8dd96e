//! An in-memory network that drives several `weft_core` engines deterministically.
//!
//! Every node is an [`Engine`] with a trivial driver: persist requests are written to an
//! in-memory per-document chunk list (optionally after a delay, always in order), loads come
//! from that list, and sent messages become packets on the network. The network can lose,
//! duplicate, delay and reorder packets, partition links (packets silently dropped) and
//! disconnect them (both ends see the connection close, like a QUIC connection ending). Time is
//! virtual: the simulator jumps to the next packet or engine wake-up.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft_core::automerge::{ActorId, Automerge, ChangeHash};
use weft_core::engine::{
    ConnId, Engine, EngineConfig, Millis, OpenOptions, Output, PersistId, Write,
};
use weft_core::wire::Message;
use weft_core::{DocId, Document};

/// What the network does to packets.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Probability a packet is dropped.
    pub loss: f64,
    /// Probability a packet is delivered twice.
    pub duplicate: f64,
    /// Largest extra delay of a packet in ms (delays differ, so packets reorder).
    pub max_delay: Millis,
}

struct Packet {
    at: Millis,
    seq: u64,
    to: usize,
    conn: ConnId,
    msg: Message,
}

/// One simulated node: an engine and its durable store.
pub struct Node {
    /// The engine.
    pub engine: Engine,
    /// Durable chunks per document, in write order.
    pub store: BTreeMap<DocId, Vec<Vec<u8>>>,
    /// Persisted sync states per (document, peer).
    pub sync_states: BTreeMap<(DocId, Vec<u8>), Vec<u8>>,
    /// Records the node's gate keeps, per document.
    pub gate_records: BTreeMap<DocId, Vec<(Vec<u8>, Vec<u8>)>>,
    pending_persists: Vec<(Millis, PersistId, DocId, Write)>,
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
            .map(|(i, cfg)| Node {
                engine: Engine::new(cfg),
                store: BTreeMap::new(),
                sync_states: BTreeMap::new(),
                gate_records: BTreeMap::new(),
                pending_persists: Vec::new(),
                actor_seed: seed.wrapping_mul(1000).wrapping_add(i as u64),
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
        let gate = self.nodes[me].engine.gate_mut().and_then(|g| {
            g.as_any_mut()
                .downcast_mut::<weft_schema::rules::RulesGate>()
        });
        if let Some(gate) = gate {
            gate.connect(conn, &user, false, false);
        }
    }

    /// Makes a change on `node` with `f` (loading the document first); whether it changed it.
    pub fn change(&mut self, node: usize, doc: DocId, f: impl FnOnce(&mut Automerge)) -> bool {
        self.ensure_loaded(node, doc);
        let engine = &mut self.nodes[node].engine;
        engine.set_now(self.now);
        matches!(engine.change(doc, f), Ok((_, Some(_))))
    }

    /// Reads `doc` on `node`.
    pub fn read<R>(&mut self, node: usize, doc: DocId, f: impl FnOnce(&Automerge) -> R) -> R {
        self.ensure_loaded(node, doc);
        self.nodes[node]
            .engine
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
        self.nodes[node].engine.close(conn, doc);
        let p = &mut self.nodes[peer];
        p.engine.forget(doc);
        p.store.remove(&doc);
        p.sync_states.retain(|(d, _), _| *d != doc);
        p.pending_persists.retain(|(_, _, d, _)| *d != doc);
        self.packets
            .retain(|pk| !(pk.msg.doc() == Some(doc) && (pk.conn == conn || pk.conn == peer_conn)));
        self.open_side(peer, node, peer_conn, doc);
        self.open_side(node, peer, conn, doc);
    }

    fn open_side(&mut self, me: usize, peer: usize, conn: ConnId, doc: DocId) {
        let key = format!("node-{peer}").into_bytes();
        let saved = self.nodes[me].sync_states.get(&(doc, key.clone())).cloned();
        let opts = OpenOptions {
            stable_peer: Some(key),
            saved_sync_state: saved,
            ..Default::default()
        };
        self.nodes[me].engine.set_now(self.now);
        self.nodes[me].engine.open(conn, doc, opts);
    }

    /// Closes the connection between `a` and `b` (both ends notice).
    pub fn disconnect(&mut self, a: usize, b: usize) {
        if let Some(i) = self.link_index(a, b) {
            let l = self.links[i];
            if l.connected {
                self.links[i].connected = false;
                self.nodes[l.a].engine.remove_conn(l.conn_a);
                self.nodes[l.b].engine.remove_conn(l.conn_b);
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
        use weft_core::automerge::transaction::Transactable;
        use weft_core::automerge::ROOT;
        self.ensure_loaded(node, doc);
        let value = value.to_string();
        let engine = &mut self.nodes[node].engine;
        engine.set_now(self.now);
        let r = engine.change(doc, |am: &mut Automerge| {
            // Every edit writes its own root key (so concurrent edits are all kept) and the
            // shared key "last" (so concurrent edits also conflict).
            let mut tx = am.transaction();
            tx.put(ROOT, value.as_str(), true)
                .expect("put a scalar at the root");
            tx.put(ROOT, "last", value.as_str())
                .expect("put a scalar at the root");
            tx.commit();
        });
        r.is_ok()
    }

    fn ensure_loaded(&mut self, node: usize, doc: DocId) {
        if !self.nodes[node].engine.is_loaded(doc) {
            self.nodes[node].engine.load(doc);
            self.drain(node);
        }
        // A relay's document may be stale (lazy folding): reading it reloads it first.
        if self.nodes[node].engine.is_stale(doc) {
            self.nodes[node].engine.materialize(doc);
            self.drain(node);
        }
    }

    fn fresh_doc(&mut self, node: usize, doc: DocId) -> Document {
        let n = &mut self.nodes[node];
        n.actor_seed = n.actor_seed.wrapping_add(7919);
        let mut actor = [0u8; 16];
        actor[..8].copy_from_slice(&n.actor_seed.to_be_bytes());
        actor[8..].copy_from_slice(&doc.as_bytes()[..8]);
        let bytes: Vec<u8> = n.store.get(&doc).map(|c| c.concat()).unwrap_or_default();
        let am = if bytes.is_empty() {
            Automerge::new()
        } else {
            Document::load(&bytes)
                .expect("the simulator's store holds only valid chunks")
                .automerge()
                .clone()
        };
        Document::from_automerge(am.with_actor(ActorId::from(actor.to_vec())))
    }

    /// Processes every output node `node` has queued.
    fn drain(&mut self, node: usize) {
        while let Some(out) = self.nodes[node].engine.poll_output() {
            match out {
                Output::Send { conn, msg } => self.send(node, conn, msg),
                Output::Persist { id, doc, write } => {
                    let at = self.now + self.persist_delay;
                    self.nodes[node].pending_persists.push((at, id, doc, write));
                }
                Output::Load { doc } => {
                    let d = self.fresh_doc(node, doc);
                    let records = self.nodes[node]
                        .gate_records
                        .get(&doc)
                        .cloned()
                        .unwrap_or_default();
                    self.nodes[node].engine.loaded_with(doc, Some(d), &records);
                }
                Output::Rejected { conn, doc, reason }
                    if reason != weft_core::engine::Rejection::ReadOnly =>
                {
                    self.reset_peer(node, conn, doc);
                }
                Output::ProtocolError { conn, .. } => {
                    if let Some(l) = self
                        .links
                        .iter()
                        .find(|l| l.conn_a == conn || l.conn_b == conn)
                        .copied()
                    {
                        self.disconnect(l.a, l.b);
                    }
                }
                Output::Failed { .. }
                | Output::Changed { .. }
                | Output::Synced { .. }
                | Output::Rejected { .. }
                | Output::Evicted { .. } => {}
                _ => {}
            }
        }
    }

    fn complete_persists(&mut self, node: usize) -> bool {
        let now = self.now;
        let n = &mut self.nodes[node];
        // In order: a persist completes only after every earlier one.
        let ready = n
            .pending_persists
            .iter()
            .take_while(|(at, ..)| *at <= now)
            .count();
        if ready == 0 {
            return false;
        }
        let done: Vec<_> = n.pending_persists.drain(..ready).collect();
        for (_, id, doc, write) in done {
            match write {
                Write::Changes(bytes) => n.store.entry(doc).or_default().push(bytes),
                Write::SyncState { peer, state } => {
                    n.sync_states.insert((doc, peer), state);
                }
                Write::GateRecord { key, value } => {
                    n.gate_records.entry(doc).or_default().push((key, value));
                }
            }
            n.engine.set_now(now);
            n.engine.persisted(id);
        }
        true
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
            .filter_map(|n| n.pending_persists.first().map(|p| p.0))
            .min();
        let next_wake = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.engine.next_wakeup())
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
                .filter_map(|n| n.engine.next_wakeup())
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
                let engine = &mut self.nodes[p.to].engine;
                engine.set_now(self.now);
                if engine.handle(p.conn, p.msg).is_err() {
                    // A misbehaving or stale message closes the link, as a real driver would.
                    if let Some(l) = self
                        .links
                        .iter()
                        .find(|l| l.conn_a == p.conn || l.conn_b == p.conn)
                        .copied()
                    {
                        self.disconnect(l.a, l.b);
                    }
                }
                self.drain(p.to);
            } else if next_wake.is_some_and(|w| w <= self.now) {
                for i in 0..self.nodes.len() {
                    if self.nodes[i]
                        .engine
                        .next_wakeup()
                        .is_some_and(|w| w <= self.now)
                    {
                        self.nodes[i].engine.tick(self.now);
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
        (self.delivered, self.now) != before
            || self.nodes.iter().any(|n| !n.pending_persists.is_empty())
    }

    /// The heads of `doc` on `node` (loading it if needed).
    pub fn heads(&mut self, node: usize, doc: DocId) -> Vec<ChangeHash> {
        self.ensure_loaded(node, doc);
        self.nodes[node].engine.heads(doc).unwrap_or_default()
    }

    /// The whole document as JSON on `node`.
    pub fn json(&mut self, node: usize, doc: DocId) -> serde_json::Value {
        self.ensure_loaded(node, doc);
        self.nodes[node]
            .engine
            .read(doc, |d| {
                serde_json::to_value(weft_core::automerge::AutoSerde::from(d.automerge()))
            })
            .expect("loaded above")
            .expect("a document always serializes")
    }

    /// The document as reloaded from `node`'s durable store alone.
    pub fn stored_heads(&self, node: usize, doc: DocId) -> Vec<ChangeHash> {
        let bytes: Vec<u8> = self.nodes[node]
            .store
            .get(&doc)
            .map(|c| c.concat())
            .unwrap_or_default();
        let mut h = Document::load(&bytes).expect("stored chunks load").heads();
        h.sort_unstable();
        h
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
            .map(|(i, n)| (i, n.pending_persists.len()))
            .collect()
    }
}
