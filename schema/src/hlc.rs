//! [`Hlc`]: the hybrid logical clock that timestamps messages, tasks and broadcasts.
//!
//! A timestamp is (physical milliseconds, logical counter, node). [`Hlc::now`] takes the wall
//! clock *as an argument* (the library never reads a clock) and the largest timestamp the
//! writer has seen, and returns one strictly greater than that, close to the wall clock. So a
//! reply written after reading a message sorts after it even when the replier's clock is
//! behind: the reply borrows the message's physical time and bumps the counter.
//!
//! A device whose clock runs ahead drags the timestamps written after its messages forward
//! with it: order stays causal, and the times shown follow the fastest clock seen.
//!
//! The stored form is a 47-character string whose byte order is the timestamp order:
//! `2025-06-01T12:00:00.000Z-00000-7f3a9c0e12ab45cd` (RFC 3339 UTC milliseconds, the counter
//! as five decimal digits, the node as 16 lowercase hex digits). Fixed widths make string
//! order and numeric order agree, which is what lets the messages map keep display order.

use std::fmt;
use std::str::FromStr;

use automerge::ActorId;

use crate::time::{format_rfc3339_ms, parse_rfc3339_ms, MAX_RFC3339_MS};

/// The latest physical time an [`Hlc`] can hold: 9999-12-31T23:59:59.999Z.
pub const MAX_HLC_MS: u64 = MAX_RFC3339_MS as u64;

/// Length of the canonical string form.
pub(crate) const HLC_STR_LEN: usize = 47;

/// A hybrid logical clock timestamp. Ordered by (physical ms, counter, node).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc {
    ms: u64,
    counter: u16,
    node: u64,
}

/// A string that is not the canonical form of an [`Hlc`], or a time past year 9999.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a weft timestamp (expected e.g. 2025-06-01T12:00:00.000Z-00000-7f3a9c0e12ab45cd)")]
pub struct ParseHlcError;

impl Hlc {
    /// A timestamp from its parts, or `None` when `ms` is past [`MAX_HLC_MS`].
    pub fn new(ms: u64, counter: u16, node: u64) -> Option<Hlc> {
        (ms <= MAX_HLC_MS).then_some(Hlc { ms, counter, node })
    }

    /// The next timestamp for a writer on `node` whose wall clock reads `wall_ms` (Unix
    /// milliseconds) and who has seen timestamps up to `last_seen`.
    ///
    /// The result is strictly greater than `last_seen` (unless `last_seen` is already at the
    /// end of time, year 9999, where it saturates) and its physical part is
    /// `max(wall_ms, last_seen.ms)`. A wall clock past year 9999 is clamped.
    pub fn now(wall_ms: u64, node: u64, last_seen: Option<Hlc>) -> Hlc {
        let wall = wall_ms.min(MAX_HLC_MS);
        match last_seen {
            Some(last) if wall <= last.ms => {
                if last.counter < u16::MAX {
                    Hlc {
                        ms: last.ms,
                        counter: last.counter + 1,
                        node,
                    }
                } else if last.ms < MAX_HLC_MS {
                    // Counter exhausted within one millisecond: borrow the next millisecond.
                    Hlc {
                        ms: last.ms + 1,
                        counter: 0,
                        node,
                    }
                } else {
                    Hlc {
                        ms: MAX_HLC_MS,
                        counter: u16::MAX,
                        node,
                    }
                }
            }
            _ => Hlc {
                ms: wall,
                counter: 0,
                node,
            },
        }
    }

    /// The node id weft uses for a writer: the first 8 bytes of the blake3 hash of its
    /// Automerge actor id, so every change from one actor carries one node.
    pub fn node_for_actor(actor: &ActorId) -> u64 {
        let h = blake3::hash(actor.to_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        u64::from_be_bytes(b)
    }

    /// Physical time, Unix milliseconds.
    pub fn physical_ms(&self) -> u64 {
        self.ms
    }

    /// Logical counter within the millisecond.
    pub fn counter(&self) -> u16 {
        self.counter
    }

    /// The writer's node id.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// The physical part as RFC 3339 UTC with millisecond precision,
    /// `2025-06-01T12:00:00.000Z`: the form the JSON message list uses.
    pub fn to_rfc3339(&self) -> String {
        // ms <= MAX_HLC_MS by construction, so this always formats.
        format_rfc3339_ms(self.ms as i64).unwrap_or_default()
    }

    /// The shortest string that sorts at or before every timestamp with this (ms, counter):
    /// the first 30 characters of the canonical form.
    pub(crate) fn prefix(ms: u64, counter: u16) -> String {
        let ms = ms.min(MAX_HLC_MS);
        format!(
            "{}-{counter:05}",
            format_rfc3339_ms(ms as i64).unwrap_or_default()
        )
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{:05}-{:016x}",
            self.to_rfc3339(),
            self.counter,
            self.node
        )
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({self})")
    }
}

impl FromStr for Hlc {
    type Err = ParseHlcError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != HLC_STR_LEN || b[24] != b'-' || b[30] != b'-' {
            return Err(ParseHlcError);
        }
        // Byte 24 is ASCII, so these slices fall on char boundaries.
        let ms = parse_rfc3339_ms(&s[..24]).ok_or(ParseHlcError)?;
        let ms = u64::try_from(ms).map_err(|_| ParseHlcError)?;
        let counter = &b[25..30];
        if !counter.iter().all(u8::is_ascii_digit) {
            return Err(ParseHlcError);
        }
        let counter: u16 = s[25..30].parse().map_err(|_| ParseHlcError)?;
        let node = &b[31..];
        if !node
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        {
            return Err(ParseHlcError);
        }
        let node = u64::from_str_radix(&s[31..], 16).map_err(|_| ParseHlcError)?;
        Hlc::new(ms, counter, node).ok_or(ParseHlcError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_hlc() -> impl Strategy<Value = Hlc> {
        (0..=MAX_HLC_MS, any::<u16>(), any::<u64>())
            .prop_map(|(m, c, n)| Hlc::new(m, c, n).unwrap())
    }

    #[test]
    fn canonical_form() {
        let h = Hlc::new(1_700_000_000_123, 7, 0xab).unwrap();
        assert_eq!(
            h.to_string(),
            "2023-11-14T22:13:20.123Z-00007-00000000000000ab"
        );
        assert_eq!(h.to_string().len(), HLC_STR_LEN);
        assert_eq!(h.to_string().parse::<Hlc>().unwrap(), h);
        assert_eq!(h.to_rfc3339(), "2023-11-14T22:13:20.123Z");
        assert!(h.to_string().starts_with(&Hlc::prefix(h.physical_ms(), 7)));
        // Uppercase hex and out-of-range counters are not canonical.
        assert!("2023-11-14T22:13:20.123Z-00007-00000000000000AB"
            .parse::<Hlc>()
            .is_err());
        assert!("2023-11-14T22:13:20.123Z-99999-00000000000000ab"
            .parse::<Hlc>()
            .is_err());
    }

    #[test]
    fn a_reply_sorts_after_what_was_seen_even_with_a_slow_clock() {
        // Alice's clock is an hour ahead of Bob's.
        let alice = Hlc::now(10_000_000 + 3_600_000, 1, None);
        let bob_reply = Hlc::now(10_000_000, 2, Some(alice));
        assert!(bob_reply > alice);
        assert_eq!(bob_reply.physical_ms(), alice.physical_ms());
        // Once Bob's wall clock passes it, time is physical again.
        let later = Hlc::now(20_000_000, 2, Some(bob_reply));
        assert_eq!((later.physical_ms(), later.counter()), (20_000_000, 0));
    }

    #[test]
    fn counter_overflow_borrows_the_next_millisecond() {
        let last = Hlc::new(5, u16::MAX, 9).unwrap();
        let next = Hlc::now(0, 1, Some(last));
        assert!(next > last);
        assert_eq!((next.physical_ms(), next.counter()), (6, 0));
        let end = Hlc::new(MAX_HLC_MS, u16::MAX, 0).unwrap();
        assert_eq!(Hlc::now(0, 1, Some(end)).physical_ms(), MAX_HLC_MS);
        assert_eq!(Hlc::now(u64::MAX, 1, None).physical_ms(), MAX_HLC_MS);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::proptest_cases()))]
        #[test]
        fn string_order_is_timestamp_order(a in arb_hlc(), b in arb_hlc()) {
            prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
            prop_assert_eq!(a.to_string().parse::<Hlc>().unwrap(), a);
        }

        #[test]
        fn now_is_after_last_seen(wall in 0..=MAX_HLC_MS, node in any::<u64>(), last in arb_hlc()) {
            let next = Hlc::now(wall, node, Some(last));
            prop_assume!(last.physical_ms() < MAX_HLC_MS || last.counter() < u16::MAX);
            prop_assert!(next > last);
            prop_assert!(next.physical_ms() >= wall);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,60}") {
            let _ = s.parse::<Hlc>();
        }
    }
}
