//! The simulated network: links between nodes, partitions and disconnects, and packets sent
//! with the current faults (loss, duplication, delay).

use rand::Rng;
use weft_core::engine::{ConnId, Gate, OpenOptions};
use weft_core::host::{self};
use weft_core::store::docs::{self as docstore};
use weft_core::store::{KvStore, WriteBatch};
use weft_core::wire::Message;
use weft_core::DocId;

use super::{Link, Packet, Sim};

impl Sim {
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
        if self.sync_only.contains(&a) || self.sync_only.contains(&b) {
            let now = self.now;
            self.nodes[a].host.set_sync_only(now, conn_a);
            self.nodes[b].host.set_sync_only(now, conn_b);
        }
        for doc in self.docs.clone() {
            self.open_side(a, b, conn_a, doc);
            self.open_side(b, a, conn_b, doc);
        }
    }

    /// A node whose engine runs a `RulesGate` learns who is behind a new connection: the
    /// peer's user, as a relay authenticates it.
    pub(super) fn tell_gate(&mut self, me: usize, peer: usize, conn: ConnId) {
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

    /// What a relay's driver and a device do when the relay refuses the device's changes: the
    /// relay ends the subscription, the device drops its copy (kept aside by a real device) and
    /// takes the relay's version again.
    pub(super) fn reset_peer(&mut self, node: usize, conn: ConnId, doc: DocId) {
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

    pub(super) fn open_side(&mut self, me: usize, peer: usize, conn: ConnId, doc: DocId) {
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

    pub(super) fn link_index(&self, a: usize, b: usize) -> Option<usize> {
        self.links
            .iter()
            .position(|l| (l.a == a && l.b == b) || (l.a == b && l.b == a))
    }

    pub(super) fn send(&mut self, from: usize, conn: ConnId, mut msg: Message) {
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
        // automerge-repo's wire carries no `reset`: only Automerge's own flag in the data.
        if let Message::Sync { reset, .. } = &mut msg {
            if self.sync_only.contains(&l.a) || self.sync_only.contains(&l.b) {
                *reset = false;
            }
        }
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

    pub(super) fn disconnect_conn(&mut self, conn: ConnId) {
        if let Some(l) = self
            .links
            .iter()
            .find(|l| l.conn_a == conn || l.conn_b == conn)
            .copied()
        {
            self.disconnect(l.a, l.b);
        }
    }

    /// Closes the link that `conn` belongs to, then opens it again (every document reopened,
    /// a partition kept).
    pub(super) fn reconnect_conn(&mut self, conn: ConnId) {
        if let Some(l) = self
            .links
            .iter()
            .find(|l| l.conn_a == conn || l.conn_b == conn)
            .copied()
        {
            self.disconnect(l.a, l.b);
            self.connect(l.a, l.b);
            // A partition outlasts the connections made across it.
            if let Some(i) = self.link_index(l.a, l.b) {
                self.links[i].partitioned = l.partitioned;
            }
        }
    }
}
