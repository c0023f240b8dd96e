//! How a server's accept loop waits after `accept` fails.
//!
//! An accept that fails for lack of a resource (out of file descriptors: `EMFILE`, `ENFILE`;
//! out of memory or buffers: `ENOMEM`, `ENOBUFS`) fails again at once while the condition
//! lasts, because the pending connection stays queued: a loop that retries immediately spins
//! on a core and floods the log. [`AcceptBackoff`] makes such a loop wait, as hyper's
//! listener does: 1 ms after the first failure, doubling up to 1 s, back to nothing after an
//! accept succeeds. A failure that concerns only the connection being accepted (reset or
//! aborted before it was taken, an interrupted call) needs no wait. Logging is throttled too:
//! once per step of the backoff, then about once a minute at its cap.
//!
//! Pure policy: the caller sleeps and logs.

use std::io;
use std::time::Duration;

/// The wait after the first resource failure.
pub const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(1);
/// The longest wait between failing accepts.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At the cap, one failure in this many is logged (about once a minute).
const LOG_EVERY_AT_MAX: u64 = 60;

/// The backoff state of one accept loop. See the module docs.
#[derive(Debug, Default, Clone)]
pub struct AcceptBackoff {
    wait: Duration,
    failures: u64,
}

/// What an accept loop does after a failed accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptPause {
    /// How long to wait before accepting again (zero: at once).
    pub wait: Duration,
    /// Whether to log this failure (the others are counted in `failures`).
    pub log: bool,
    /// Failures in a row, this one included.
    pub failures: u64,
}

impl AcceptBackoff {
    /// No failure yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// An accept succeeded: the next failure starts again from the first wait.
    pub fn succeeded(&mut self) {
        self.wait = Duration::ZERO;
        self.failures = 0;
    }

    /// An accept failed with `err`: how long to wait and whether to log it.
    pub fn failed(&mut self, err: &io::Error) -> AcceptPause {
        if is_connection_error(err) {
            return AcceptPause {
                wait: Duration::ZERO,
                log: false,
                failures: self.failures,
            };
        }
        self.failures = self.failures.saturating_add(1);
        let next = if self.wait.is_zero() {
            ACCEPT_BACKOFF_FIRST
        } else {
            self.wait.saturating_mul(2).min(ACCEPT_BACKOFF_MAX)
        };
        let log = next != self.wait || self.failures.is_multiple_of(LOG_EVERY_AT_MAX);
        self.wait = next;
        AcceptPause {
            wait: next,
            log,
            failures: self.failures,
        }
    }
}

/// Errors about the one connection being accepted, after which the listener is fine.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `EMFILE`: too many open files in this process.
    fn out_of_descriptors() -> io::Error {
        io::Error::from_raw_os_error(24)
    }

    #[test]
    fn resource_failures_wait_from_1ms_doubling_to_1s_and_success_resets() {
        let mut b = AcceptBackoff::new();
        let waits: Vec<u64> = (0..12)
            .map(|_| b.failed(&out_of_descriptors()).wait.as_millis() as u64)
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(&out_of_descriptors()).wait, ACCEPT_BACKOFF_FIRST);
    }

    #[test]
    fn each_step_is_logged_once_then_about_once_a_minute_at_the_cap() {
        let mut b = AcceptBackoff::new();
        let logged: Vec<u64> = (0..200)
            .map(|_| b.failed(&out_of_descriptors()))
            .filter(|p| p.log)
            .map(|p| p.failures)
            .collect();
        // Eleven steps (1 ms .. 1 s), then every 60th failure while at 1 s.
        assert_eq!(logged, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 60, 120, 180]);
    }

    #[test]
    fn a_connection_reset_before_accept_needs_no_wait_and_keeps_the_backoff() {
        let mut b = AcceptBackoff::new();
        b.failed(&out_of_descriptors());
        b.failed(&out_of_descriptors());
        for kind in [
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::Interrupted,
        ] {
            let pause = b.failed(&io::Error::from(kind));
            assert_eq!((pause.wait, pause.log), (Duration::ZERO, false), "{kind:?}");
        }
        assert_eq!(
            b.failed(&out_of_descriptors()).wait,
            Duration::from_millis(4)
        );
        // ENFILE, ENOMEM and ENOBUFS back off the same way.
        for errno in [23, 12, 105] {
            let mut b = AcceptBackoff::new();
            assert_eq!(
                b.failed(&io::Error::from_raw_os_error(errno)).wait,
                ACCEPT_BACKOFF_FIRST
            );
        }
    }
}
