//! The event loop: virtual time jumps to the next packet, durable write or engine wake-up.

use weft_core::engine::Millis;

use super::{describe, Sim};

impl Sim {
    /// When the next event is due: a packet, a persist completion or an engine wake-up.
    pub(super) fn next_event(&mut self) -> Option<Millis> {
        let next_packet = self.packets.iter().map(|p| p.at).min();
        let next_persist = self
            .nodes
            .iter()
            .flat_map(|n| [n.durable.front().map(|p| p.0), n.saves.front().map(|s| s.0)])
            .flatten()
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

    pub(super) fn step_once(&mut self) -> bool {
        // One bounded slice of `run_until_quiet`.
        let before = (self.delivered, self.now);
        self.run_until_quiet(1);
        (self.delivered, self.now) != before
            || self
                .nodes
                .iter()
                .any(|n| !n.durable.is_empty() || !n.saves.is_empty())
    }
}
