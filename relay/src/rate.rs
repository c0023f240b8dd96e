//! Token buckets bounding what one connection may cost: messages per second (control requests,
//! document creation) and bytes per second (reading and parsing).

use std::time::Duration;

/// A token bucket: `burst` messages at once, refilled at `rate` per second.
#[derive(Debug)]
pub(crate) struct RateLimit {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: std::time::Instant,
}

impl RateLimit {
    pub(crate) fn new(burst: u32, rate: u32) -> Self {
        RateLimit {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            rate: f64::from(rate),
            last: std::time::Instant::now(),
        }
    }

    /// Takes one message's token at `now`; `false` when the connection is over its rate.
    pub(crate) fn allow(&mut self, now: std::time::Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A token bucket of bytes: `burst` bytes at once, refilled at `rate` per second. A reader
/// that overdraws it waits (backpressure: QUIC's and TCP's flow control slow the sender), so
/// one connection cannot take more than its share of the relay's reading and parsing.
#[derive(Debug)]
pub(crate) struct ByteRate {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: std::time::Instant,
}

impl ByteRate {
    pub(crate) fn new(burst: u64, rate: u64) -> Self {
        ByteRate {
            tokens: burst as f64,
            burst: burst as f64,
            rate: (rate as f64).max(1.0),
            last: std::time::Instant::now(),
        }
    }

    /// Takes `n` bytes at `now`; how long the reader must wait before reading more, if at all.
    pub(crate) fn take(&mut self, now: std::time::Instant, n: usize) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - n as f64;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_rate_lets_a_burst_through_then_asks_the_reader_to_wait() {
        let start = std::time::Instant::now();
        let mut b = ByteRate::new(1000, 100);
        assert_eq!(b.take(start, 600), None);
        assert_eq!(b.take(start, 400), None);
        let wait = b.take(start, 50).expect("over the burst");
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // Half a second later the debt is paid.
        assert_eq!(b.take(start + Duration::from_millis(500), 0), None);
        // A refill never exceeds the burst.
        assert_eq!(b.take(start + Duration::from_secs(100), 1000), None);
        assert!(b.take(start + Duration::from_secs(100), 1).is_some());
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_the_rate() {
        let t0 = std::time::Instant::now();
        let mut r = RateLimit::new(3, 10);
        assert!((0..3).all(|_| r.allow(t0)));
        assert!(!r.allow(t0));
        // 100 ms later one more token has arrived.
        assert!(r.allow(t0 + Duration::from_millis(100)));
        assert!(!r.allow(t0 + Duration::from_millis(100)));
        // Refill never exceeds the burst.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| r.allow(later)));
        assert!(!r.allow(later));
    }
}
