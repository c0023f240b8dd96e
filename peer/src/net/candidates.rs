//! The addresses a link may dial, and which one it dials next.
//!
//! A relay may be given as several `host:port` entries (relays of one cluster), and each name
//! may resolve to several addresses (a DNS name with a record per relay): every address is a
//! candidate. A link dials one at a time. When an attempt fails it moves straight on to the
//! next candidate, and backs off only once a whole round failed; when a connection that was up
//! is lost, the next attempt goes to another candidate (the lost relay is likely gone).

use std::net::SocketAddr;

/// One address to dial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Candidate {
    pub(super) addr: SocketAddr,
    /// The host part of the entry it came from (the TLS server name for a relay).
    pub(super) host: String,
    /// The entry as configured (`host:port`), for messages.
    pub(super) entry: String,
}

/// The host of a `host:port` entry, without an IPv6 address's brackets.
pub(super) fn host_of(entry: &str) -> String {
    entry
        .rsplit_once(':')
        .map_or(entry, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// Every address of every entry, in order (entries as given, each one's records as the
/// resolver lists them), without repeats. Entries that do not resolve are left out; `Err`
/// names them when none resolves.
pub(super) async fn resolve(entries: &[String]) -> Result<Vec<Candidate>, String> {
    let mut out: Vec<Candidate> = Vec::new();
    let mut unresolved = Vec::new();
    for entry in entries {
        match tokio::net::lookup_host(entry.as_str()).await {
            Ok(addrs) => {
                let host = host_of(entry);
                for addr in addrs {
                    if !out.iter().any(|c| c.addr == addr) {
                        out.push(Candidate {
                            addr,
                            host: host.clone(),
                            entry: entry.clone(),
                        });
                    }
                }
            }
            Err(_) => unresolved.push(entry.as_str()),
        }
    }
    if out.is_empty() {
        return Err(format!("cannot resolve {}", unresolved.join(", ")));
    }
    Ok(out)
}

/// Which candidate comes next, and when to back off.
#[derive(Debug, Default)]
pub(super) struct Rotation {
    cursor: usize,
    /// Attempts that failed since a connection was last up.
    failed: usize,
}

/// What the link does after an attempt.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Dial the next candidate at once.
    Now,
    /// Wait out the backoff first.
    BackOff,
    /// Every candidate failed and the link does not reconnect: stop.
    GiveUp,
}

impl Rotation {
    /// The index of the candidate to dial among `n`.
    pub(super) fn pick(&self, n: usize) -> usize {
        self.cursor % n.max(1)
    }

    /// The attempt on one of `n` candidates ended: it never came up (`was_up` false), or it was
    /// up and was lost. `reconnect`: whether the link keeps trying once every candidate failed
    /// (a lost connection ends a link that does not reconnect elsewhere).
    pub(super) fn ended(&mut self, n: usize, was_up: bool, reconnect: bool) -> Next {
        let n = n.max(1);
        self.cursor = (self.cursor + 1) % n;
        if was_up {
            self.failed = 0;
            return if !reconnect {
                Next::GiveUp
            } else if n > 1 {
                Next::Now
            } else {
                Next::BackOff
            };
        }
        self.failed += 1;
        if !self.failed.is_multiple_of(n) {
            Next::Now
        } else if reconnect {
            Next::BackOff
        } else {
            Next::GiveUp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_attempt_moves_on_and_backs_off_only_after_a_whole_round() {
        let mut r = Rotation::default();
        assert_eq!(r.pick(3), 0);
        assert_eq!(r.ended(3, false, true), Next::Now);
        assert_eq!(r.pick(3), 1);
        assert_eq!(r.ended(3, false, true), Next::Now);
        assert_eq!(r.pick(3), 2);
        assert_eq!(r.ended(3, false, true), Next::BackOff);
        assert_eq!(r.pick(3), 0);
        // A link that does not reconnect tries each once.
        let mut once = Rotation::default();
        assert_eq!(once.ended(2, false, false), Next::Now);
        assert_eq!(once.ended(2, false, false), Next::GiveUp);
    }

    #[test]
    fn a_lost_connection_goes_to_another_candidate_at_once() {
        let mut r = Rotation::default();
        assert_eq!(r.ended(2, false, true), Next::Now);
        assert_eq!(r.pick(2), 1);
        // Up on the second, then lost: the first next, without waiting.
        assert_eq!(r.ended(2, true, true), Next::Now);
        assert_eq!(r.pick(2), 0);
        // A single relay: back off as before.
        let mut one = Rotation::default();
        assert_eq!(one.ended(1, true, true), Next::BackOff);
        assert_eq!(one.ended(1, false, true), Next::BackOff);
        assert_eq!(one.pick(1), 0);
    }

    #[tokio::test]
    async fn every_address_of_every_entry_is_a_candidate_once() {
        let entries = vec![
            "127.0.0.1:4000".to_string(),
            "[::1]:4001".to_string(),
            "127.0.0.1:4000".to_string(),
            // Fails without asking DNS (no port): tests stay off the network.
            "no-port-given".to_string(),
        ];
        let c = resolve(&entries).await.unwrap();
        let addrs: Vec<String> = c.iter().map(|c| c.addr.to_string()).collect();
        assert_eq!(addrs, ["127.0.0.1:4000", "[::1]:4001"]);
        assert_eq!(c[1].host, "::1");
        let err = resolve(&["no-port-given".to_string()]).await.unwrap_err();
        assert!(err.contains("no-port-given"), "{err}");
    }
}
