//! Clocks for drivers (the device runtime and the relay), in one place.
//!
//! The engine never reads a clock: a driver reads these and passes the time in with each input
//! to [`crate::host::Host`] (`now`, milliseconds on the driver's [`Monotonic`] clock). Wall
//! clock time is for what leaves the process (token expiry, timestamps users see).

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
}
