//! One-time tickets for the WebSocket upgrade, so a browser need not put its long-lived token in
//! a URL (where proxies and history keep it): `POST /ws-ticket` on the relay's HTTP address
//! with `Authorization: Bearer JWT` returns `{"ticket": "...", "expires_in": 30}`, and the
//! upgrade URL carries `?ticket=` instead of `?token=`. A ticket is good for one upgrade, within
//! [`TICKET_TTL`]. The ticket stands for the token's verified claims: the socket is served
//! exactly as if it had come with the token (and ends when the token expires).
//!
//! A ticket carries what it stands for, sealed with a key derived from the relay's secret
//! ([`Verifier::seal`]): `BASE64URL(id · until · claims) "." BASE64URL(tag)`. Issuing keeps
//! nothing, and any relay given the same secret redeems it, so a browser behind a load balancer
//! may get its ticket from one relay of a cluster and upgrade on another. Redeemed ids are kept
//! until their tickets' life ends (at most [`MAX_TICKETS`]); in a cluster each redemption is
//! also told to the other relays (`cluster/bus.rs`), so a ticket opens one socket in the whole
//! cluster (a second use on another relay within the few milliseconds the news takes would be
//! let in).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::{Claims, Verifier};

/// How long a ticket is good for.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Redeemed tickets remembered at most (each until its life ends); past it, redemptions are
/// refused until some are forgotten.
pub const MAX_TICKETS: usize = 100_000;

/// A ticket's random id.
pub(crate) const TICKET_ID_LEN: usize = 16;
/// The longest ticket looked at (a token's claims, sealed, with room for many documents).
const MAX_TICKET_LEN: usize = 64 * 1024;

/// The relay's redeemed tickets and the verifier that checks and seals what they carry.
pub struct Tickets {
    verifier: Verifier,
    /// Redeemed ids (here, or told by another relay), with the end of their life (Unix ms).
    used: Mutex<HashMap<[u8; TICKET_ID_LEN], u64>>,
    ttl: Duration,
    max: usize,
    /// The `Access-Control-Allow-Origin` of `/ws-ticket`'s answers, if any.
    allow_origin: Option<String>,
    /// In a cluster: where this relay's redemptions are told to the others.
    cluster: OnceLock<crate::cluster::Bus>,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets")
            .field("ttl", &self.ttl)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

/// Why no ticket was issued.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TicketError {
    /// No bearer token, or one the verifier refuses.
    #[error("the token was refused")]
    Unauthorized,
    /// The token's claims could not be written into a ticket.
    #[error("the ticket could not be made")]
    Internal,
}

impl Tickets {
    /// Tickets checked by `verifier`, with the default life and bound; `allow_origin` is the
    /// origin a browser page calling `/ws-ticket` from another origin may have.
    pub fn new(verifier: Verifier, allow_origin: Option<String>) -> Tickets {
        Tickets::with_limits(verifier, allow_origin, TICKET_TTL, MAX_TICKETS)
    }

    /// Tickets with another life and bound on remembered redemptions (tests).
    pub fn with_limits(
        verifier: Verifier,
        allow_origin: Option<String>,
        ttl: Duration,
        max: usize,
    ) -> Tickets {
        Tickets {
            verifier,
            used: Mutex::new(HashMap::new()),
            ttl,
            max,
            allow_origin,
            cluster: OnceLock::new(),
        }
    }

    /// How long a ticket is good for.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The origin allowed to call `/ws-ticket` from a browser, if configured.
    pub fn allow_origin(&self) -> Option<&str> {
        self.allow_origin.as_deref()
    }

    /// Tells every later redemption to the cluster's other relays through `bus`.
    pub(crate) fn share_with(&self, bus: crate::cluster::Bus) {
        let _ = self.cluster.set(bus);
    }

    /// A ticket for `token`, if the verifier accepts it.
    pub fn issue(&self, token: &str) -> Result<String, TicketError> {
        let claims = self
            .verifier
            .verify_now(token)
            .map_err(|_| TicketError::Unauthorized)?;
        let json = crate::auth::claims_json(&claims).map_err(|e| {
            tracing::warn!(error = %e, "cannot write a token's claims into a ticket");
            TicketError::Internal
        })?;
        let until = self
            .verifier
            .clock()
            .unix_ms()
            .saturating_add(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX));
        let id: [u8; TICKET_ID_LEN] = rand::random();
        let mut body = Vec::with_capacity(TICKET_ID_LEN + 8 + json.len());
        body.extend_from_slice(&id);
        body.extend_from_slice(&until.to_be_bytes());
        body.extend_from_slice(&json);
        let tag = self.verifier.seal(&body);
        let mut ticket = URL_SAFE_NO_PAD.encode(&body);
        ticket.push('.');
        URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut ticket);
        Ok(ticket)
    }

    /// The claims `ticket` stands for, once in its life (anywhere in the cluster): `None` when
    /// it is not a ticket sealed with this relay's secret, its life ended, it was used, or
    /// [`MAX_TICKETS`] redemptions are remembered.
    pub fn redeem(&self, ticket: &str) -> Option<Claims> {
        if ticket.len() > MAX_TICKET_LEN {
            return None;
        }
        let (body, tag) = ticket.split_once('.')?;
        let body = URL_SAFE_NO_PAD.decode(body).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if !self.verifier.opens(&body, &tag) {
            return None;
        }
        let (id, rest) = body.split_first_chunk::<TICKET_ID_LEN>()?;
        let (until, json) = rest.split_first_chunk::<8>()?;
        let until = u64::from_be_bytes(*until);
        let now = self.verifier.clock().unix_ms();
        if now >= until {
            return None;
        }
        if !self.remember(*id, until, now) {
            return None;
        }
        if let Some(bus) = self.cluster.get() {
            bus.ticket_used(id, until);
        }
        self.verifier.sealed_claims(json, now / 1000).ok()
    }

    /// Another relay of the cluster redeemed ticket `id`, good until `until` (Unix ms).
    pub(crate) fn used_elsewhere(&self, id: [u8; TICKET_ID_LEN], until: u64) {
        let now = self.verifier.clock().unix_ms();
        if now < until {
            self.remember(id, until, now);
        }
    }

    /// Records `id` as used: false if it was already, or there is no room.
    fn remember(&self, id: [u8; TICKET_ID_LEN], until: u64, now: u64) -> bool {
        let mut used = self.lock();
        if used.contains_key(&id) {
            return false;
        }
        if used.len() >= self.max {
            used.retain(|_, until| *until > now);
            if used.len() >= self.max {
                tracing::warn!(
                    max = self.max,
                    "too many WebSocket tickets redeemed within their life; refusing"
                );
                return false;
            }
        }
        used.insert(id, until);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; TICKET_ID_LEN], u64>> {
        // A panic while holding the lock leaves the map consistent (each operation is one
        // insert, lookup or retain), so a poisoned lock is used as it is.
        self.used
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The answer to `POST /ws-ticket` whose request head is `head`: status, content type, body.
pub(crate) fn answer(tickets: &Tickets, head: &[u8]) -> (&'static str, &'static str, String) {
    let token = header(head, "authorization").and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
    });
    let issued = match token {
        Some(token) => tickets.issue(&token),
        None => Err(TicketError::Unauthorized),
    };
    match issued {
        Ok(ticket) => (
            "200 OK",
            "application/json",
            serde_json::json!({"ticket": ticket, "expires_in": tickets.ttl().as_secs()})
                .to_string(),
        ),
        Err(TicketError::Unauthorized) => (
            "401 Unauthorized",
            "application/json",
            serde_json::json!({"error": "the token was refused"}).to_string(),
        ),
        Err(TicketError::Internal) => (
            "500 Internal Server Error",
            "application/json",
            serde_json::json!({"error": TicketError::Internal.to_string()}).to_string(),
        ),
    }
}

/// The CORS headers (each ending in CRLF) for a `/ws-ticket` request with head `head`: none
/// unless an allowed origin is configured and the request's `Origin` is it (or it is `*`).
pub(crate) fn cors_headers(tickets: &Tickets, head: &[u8]) -> String {
    let (Some(allowed), Some(origin)) = (tickets.allow_origin(), header(head, "origin")) else {
        return String::new();
    };
    if allowed != "*" && allowed != origin {
        return String::new();
    }
    format!(
        "Access-Control-Allow-Origin: {origin}\r\nAccess-Control-Allow-Methods: POST\r\n\
         Access-Control-Allow-Headers: Authorization\r\nAccess-Control-Max-Age: 600\r\n\
         Vary: Origin\r\n"
    )
}

/// The value of header `name` (lower case) in a request head, trimmed.
fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(ttl: Duration, max: usize) -> (Tickets, String) {
        let secret = crate::JwtSecret::new(vec![7; 32]).unwrap();
        let claims = Claims::new("alice", weft_core::clock::unix_secs(), 600);
        let token = crate::Minter::new(&secret).mint(&claims).unwrap();
        let tickets = Tickets::with_limits(Verifier::new(&secret), None, ttl, max);
        (tickets, token)
    }

    #[test]
    fn tickets_are_single_use_short_lived_and_sealed() {
        let (tickets, token) = issuer(Duration::from_secs(30), 2);
        let a = tickets.issue(&token).unwrap();
        let b = tickets.issue(&token).unwrap();
        assert_eq!(tickets.redeem(&a).unwrap().sub, "alice");
        assert!(tickets.redeem(&a).is_none(), "used once");
        assert_eq!(tickets.issue("not-a-jwt"), Err(TicketError::Unauthorized));

        // Another relay with the same secret redeems it; one with another secret does not.
        let (other, _) = issuer(Duration::from_secs(30), 2);
        assert_eq!(other.redeem(&b).unwrap().sub, "alice");
        let stranger = crate::JwtSecret::new(vec![8; 32]).unwrap();
        let stranger = Tickets::new(Verifier::new(&stranger), None);
        assert!(stranger.redeem(&tickets.issue(&token).unwrap()).is_none());

        // A ticket is never a token, and a token is never a ticket.
        assert!(tickets.verifier.verify_now(&b).is_err());
        assert!(tickets.redeem(&token).is_none());

        // Tampered: a bit of the claims flipped, or garbage.
        let c = tickets.issue(&token).unwrap();
        let (body, tag) = c.split_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(body).unwrap();
        let last = raw.len() - 2;
        raw[last] ^= 1;
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(raw));
        assert!(tickets.redeem(&forged).is_none());
        assert!(tickets.redeem("").is_none());
        assert!(tickets.redeem("a.b").is_none());
        assert!(tickets.redeem(&"x".repeat(MAX_TICKET_LEN + 1)).is_none());
        assert_eq!(
            tickets.redeem(&c).unwrap().sub,
            "alice",
            "the original still opens"
        );

        // Redemptions remembered are bounded: past the bound, refused (and not let in twice).
        let d = tickets.issue(&token).unwrap();
        assert!(tickets.redeem(&d).is_none(), "two remembered already");

        // Told by another relay: refused here.
        let (tickets, token) = issuer(Duration::from_secs(30), 8);
        let e = tickets.issue(&token).unwrap();
        let raw = URL_SAFE_NO_PAD
            .decode(e.split_once('.').unwrap().0)
            .unwrap();
        let id: [u8; TICKET_ID_LEN] = raw[..TICKET_ID_LEN].try_into().unwrap();
        tickets.used_elsewhere(id, u64::MAX);
        assert!(tickets.redeem(&e).is_none());

        // Expired ones are refused.
        let (tickets, token) = issuer(Duration::ZERO, 1);
        let old = tickets.issue(&token).unwrap();
        assert!(tickets.redeem(&old).is_none());
    }

    #[test]
    fn headers_are_found_whatever_their_case() {
        let head = b"POST /ws-ticket HTTP/1.1\r\nHost: x\r\nAUTHORIZATION:  Bearer a.b.c \r\n\r\n";
        assert_eq!(header(head, "authorization"), Some("Bearer a.b.c"));
        assert_eq!(header(head, "origin"), None);
    }
}
