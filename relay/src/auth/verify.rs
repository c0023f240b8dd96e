//! [`Verifier`]: checks a token's header, signature and claims.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use std::str::FromStr;
use weft_core::clock::WallClock;
use weft_core::{DocId, Role};

use super::jwt::{
    bad_claims, check_header, malformed, numeric_date, split_token, OneOrMany, WireClaimsIn,
};
use super::{AuthError, Claims, DEFAULT_LEEWAY_SECS, MAX_LEEWAY_SECS, MAX_TOKEN_LEN, MAX_USER_LEN};
use crate::secret::JwtSecret;

/// Checks tokens against the relay's secret. Cheap to clone; `Debug` never shows the secret.
///
/// It holds the relay's wall clock ([`Verifier::with_clock`], the system clock by default):
/// the QUIC handshake, the hub's refresh and its expiry sweep read the time through it, so a
/// test can move the relay past a token's `exp` without waiting.
#[derive(Clone)]
pub struct Verifier {
    key: hmac::Key,
    /// Seals the relay's own short-lived credentials (WebSocket tickets): derived from the
    /// secret, so every relay given the same secret (a cluster) opens another's, and not the
    /// token key, so a ticket is never a token.
    ticket_key: hmac::Key,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: u64,
    clock: WallClock,
}

impl Verifier {
    /// A verifier for tokens signed with `secret`, with [`DEFAULT_LEEWAY_SECS`] of leeway and
    /// no audience or issuer requirement.
    pub fn new(secret: &JwtSecret) -> Self {
        Verifier {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            ticket_key: hmac::Key::new(
                hmac::HMAC_SHA256,
                &blake3::derive_key("weft-relay websocket ticket", secret.as_bytes()),
            ),
            audience: None,
            issuer: None,
            leeway: DEFAULT_LEEWAY_SECS,
            clock: WallClock::system(),
        }
    }

    /// Reads the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: WallClock) -> Self {
        self.clock = clock;
        self
    }

    /// The wall clock this verifier reads.
    pub fn clock(&self) -> &WallClock {
        &self.clock
    }

    /// Verifies `token` now, on this verifier's clock (see [`Verifier::verify`]).
    pub fn verify_now(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify(token, self.clock.unix_secs())
    }

    /// Sets the clock-skew leeway for `exp` and `nbf`, clamped to [`MAX_LEEWAY_SECS`].
    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway = secs.min(MAX_LEEWAY_SECS);
        self
    }

    /// Requires tokens to name `aud` among their audiences.
    pub fn with_audience(mut self, aud: impl Into<String>) -> Self {
        self.audience = Some(aud.into());
        self
    }

    /// Requires tokens to be issued by `iss`.
    pub fn with_issuer(mut self, iss: impl Into<String>) -> Self {
        self.issuer = Some(iss.into());
        self
    }

    /// The leeway in force, in seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway
    }

    /// Verifies `token` at time `now` (Unix seconds) and returns its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(malformed("longer than 1 MiB"));
        }
        let (header, payload, signature) = split_token(token)?;
        check_header(header)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| malformed("the signature is not base64url"))?;
        // The signed message is the first two parts as they were sent.
        let signed = &token.as_bytes()[..header.len() + 1 + payload.len()];
        hmac::verify(&self.key, signed, &signature).map_err(|_| AuthError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| malformed("the payload is not base64url"))?;
        let payload: serde_json::Value = serde_json::from_slice(&payload)
            .ok()
            .filter(serde_json::Value::is_object)
            .ok_or_else(|| malformed("the payload is not a JSON object"))?;
        let wire: WireClaimsIn =
            serde_json::from_value(payload).map_err(|err| AuthError::BadClaims {
                reason: err.to_string(),
            })?;
        self.check_claims(wire, now)
    }

    /// The tag sealing `body`, one of the relay's own credentials (a WebSocket ticket).
    pub(crate) fn seal(&self, body: &[u8]) -> hmac::Tag {
        hmac::sign(&self.ticket_key, body)
    }

    /// Whether `tag` seals `body` (see [`Verifier::seal`]).
    pub(crate) fn opens(&self, body: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.ticket_key, body, tag).is_ok()
    }

    /// The claims in `json`, a token's payload this relay sealed, checked as a token's are
    /// at `now`.
    pub(crate) fn sealed_claims(&self, json: &[u8], now: u64) -> Result<Claims, AuthError> {
        let wire: WireClaimsIn =
            serde_json::from_slice(json).map_err(|err| AuthError::BadClaims {
                reason: err.to_string(),
            })?;
        self.check_claims(wire, now)
    }

    fn check_claims(&self, wire: WireClaimsIn, now: u64) -> Result<Claims, AuthError> {
        let leeway = self.leeway;
        let sub = match wire.sub {
            Some(sub) if !sub.is_empty() && sub.len() <= MAX_USER_LEN => sub,
            Some(sub) if !sub.is_empty() => return Err(bad_claims("sub is longer than 256 bytes")),
            _ => return Err(bad_claims("sub is missing or empty")),
        };
        let exp = numeric_date(wire.exp, "exp")?.ok_or(AuthError::MissingExp)?;
        if now > exp.saturating_add(leeway) {
            return Err(AuthError::Expired { exp, now, leeway });
        }
        let nbf = numeric_date(wire.nbf, "nbf")?;
        if let Some(nbf) = nbf {
            if nbf > now.saturating_add(leeway) {
                return Err(AuthError::NotYetValid { nbf, now, leeway });
            }
        }
        let iat = numeric_date(wire.iat, "iat")?;
        if let Some(expected) = &self.issuer {
            if wire.iss.as_ref() != Some(expected) {
                return Err(AuthError::BadIssuer {
                    expected: expected.clone(),
                });
            }
        }
        let aud = match wire.aud {
            None => Vec::new(),
            Some(OneOrMany::One(aud)) => vec![aud],
            Some(OneOrMany::Many(aud)) => aud,
        };
        if let Some(expected) = &self.audience {
            if !aud.contains(expected) {
                return Err(AuthError::BadAudience {
                    expected: expected.clone(),
                });
            }
        }
        let mut docs = BTreeMap::new();
        for (id, role) in wire.docs {
            let doc = DocId::from_str(&id).map_err(|source| AuthError::BadDocId { source })?;
            let role =
                Role::from_str(&role).map_err(|source| AuthError::BadRole { doc, source })?;
            // The bare id and the URL of one document would otherwise collide silently.
            if docs.insert(doc, role).is_some() {
                return Err(bad_claims("docs names one document twice"));
            }
        }
        Ok(Claims {
            sub,
            iat,
            exp,
            nbf,
            docs,
            create: wire.create,
            admin: wire.admin,
            aud,
            iss: wire.iss,
        })
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
