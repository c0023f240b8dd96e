//! The relay token's lifetime: when to look for a fresh one.

use std::time::Duration;

/// The JWT's `exp`, read without verifying it (the relay verifies).
pub(super) fn token_exp(token: &str) -> Option<u64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("exp")?.as_u64()
}

fn unix_secs() -> u64 {
    crate::unix_ms() / 1000
}

/// The longest wait before looking at the token again: a token may say `exp` is u64::MAX
/// seconds away, and an `Instant` that far ahead overflows.
const MAX_REFRESH_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

/// When to look for a fresh token: a minute before `exp`, or halfway there for short tokens,
/// and at most [`MAX_REFRESH_DELAY`] from now.
pub(super) fn refresh_delay(exp: Option<u64>) -> Duration {
    let Some(exp) = exp else {
        return Duration::from_secs(3600);
    };
    let now = unix_secs();
    let left = exp.saturating_sub(now);
    let early = if left > 120 { left - 60 } else { left / 2 };
    Duration::from_secs(early.max(1)).min(MAX_REFRESH_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_expiry_is_read_without_verifying() {
        use base64::Engine as _;
        let body =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"a","exp":1234}"#);
        assert_eq!(token_exp(&format!("x.{body}.y")), Some(1234));
        assert_eq!(token_exp("garbage"), None);
        assert!(refresh_delay(Some(unix_secs() + 3600)) >= Duration::from_secs(3000));
        assert!(refresh_delay(Some(unix_secs() + 10)) <= Duration::from_secs(5));
    }

    #[test]
    fn a_token_that_never_expires_is_looked_at_again_within_the_cap() {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!(r#"{{"sub":"a","exp":{}}}"#, u64::MAX));
        let exp = token_exp(&format!("x.{body}.y"));
        assert_eq!(exp, Some(u64::MAX));
        let delay = refresh_delay(exp);
        assert_eq!(delay, MAX_REFRESH_DELAY);
        // What the link does with it: an instant that far ahead must not overflow.
        let _ = tokio::time::Instant::now() + delay;
        let _ = tokio::time::Instant::now() + refresh_delay(exp).min(Duration::from_secs(10));
    }
}
