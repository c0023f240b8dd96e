//! Clocks for drivers (the device runtime and the relay), in one place.
//!
//! The engine never reads a clock: a driver reads these and passes the time in with each input
//! to [`crate::host::Host`] (`now`, milliseconds on the driver's [`Monotonic`] clock). Wall
//! clock time is for what leaves the process (token expiry, timestamps users see); a driver
//! that must be tested across a token's expiry takes it as a [`WallClock`], which a test
//! replaces with a [`ManualClock`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::engine::Millis;

/// Milliseconds since the Unix epoch (0 if the system clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the Unix epoch (0 if the system clock is before it), as JWTs count.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A wall clock: Unix milliseconds from the system clock ([`WallClock::system`], the default)
/// or from a [`ManualClock`]. Cheap to clone.
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl WallClock {
    /// The system clock ([`unix_ms`]).
    pub fn system() -> WallClock {
        WallClock(Arc::new(unix_ms))
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> u64 {
        (self.0)()
    }

    /// Seconds since the Unix epoch, as JWTs count.
    pub fn unix_secs(&self) -> u64 {
        self.unix_ms() / 1000
    }
}

impl Default for WallClock {
    fn default() -> WallClock {
        WallClock::system()
    }
}

impl fmt::Debug for WallClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WallClock").field(&self.unix_ms()).finish()
    }
}

/// A wall clock that moves only when told to, for tests: [`ManualClock::wall`] is the
/// [`WallClock`] to hand a driver, [`ManualClock::advance`] moves it for every holder.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock that reads `unix_ms` until moved.
    pub fn at(unix_ms: u64) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(unix_ms)))
    }

    /// Moves the clock forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(by))
            });
    }

    /// The wall clock that reads this one.
    pub fn wall(&self) -> WallClock {
        let at = self.0.clone();
        WallClock(Arc::new(move || at.load(Ordering::SeqCst)))
    }
}

/// A driver's monotonic clock: milliseconds since it started, the engine's time.
#[derive(Clone, Copy, Debug)]
pub struct Monotonic(Instant);

impl Monotonic {
    /// A clock that starts now.
    pub fn start() -> Monotonic {
        Monotonic(Instant::now())
    }

    /// Milliseconds since the clock started.
    pub fn now(&self) -> Millis {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant `ms` milliseconds after the clock started (for timers).
    pub fn instant(&self, ms: Millis) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_moves_forward_from_zero() {
        let c = Monotonic::start();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
        assert!(c.instant(a) <= Instant::now());
        assert!(unix_ms() / 1000 >= unix_secs().saturating_sub(1));
    }

    #[test]
    fn a_manual_clock_moves_only_when_told_and_for_every_holder() {
        let manual = ManualClock::at(1_700_000_000_500);
        let (a, b) = (manual.wall(), manual.wall().clone());
        assert_eq!(a.unix_secs(), 1_700_000_000);
        manual.advance(Duration::from_secs(3));
        assert_eq!(a.unix_ms(), 1_700_000_003_500);
        assert_eq!(b.unix_secs(), 1_700_000_003);
        manual.advance(Duration::MAX);
        assert_eq!(a.unix_ms(), u64::MAX);
        assert!(WallClock::default().unix_secs() + 1 >= unix_secs());
    }
}
