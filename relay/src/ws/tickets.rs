//! One-time tickets for the WebSocket upgrade, so a browser need not put its long-lived token in
//! a URL (where proxies and history keep it): `POST /ws-ticket` on the relay's HTTP address
//! with `Authorization: Bearer JWT` returns `{"ticket": "...", "expires_in": 30}`, and the
//! upgrade URL carries `?ticket=` instead of `?token=`. A ticket is good for one upgrade, within
//! [`TICKET_TTL`]; at most [`MAX_TICKETS`] are outstanding (more are refused with 503 until
//! some are used or expire). The ticket stands for the token's verified claims: the socket is
//! served exactly as if it had come with the token (and ends when the token expires).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Claims, Verifier};

/// How long a ticket is good for.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Tickets outstanding at most.
pub const MAX_TICKETS: usize = 10_000;

/// The relay's outstanding tickets and the verifier that checks the tokens they are issued for.
pub struct Tickets {
    verifier: Verifier,
    outstanding: Mutex<HashMap<String, (Claims, Instant)>>,
    ttl: Duration,
    max: usize,
    /// The `Access-Control-Allow-Origin` of `/ws-ticket`'s answers, if any.
    allow_origin: Option<String>,
}

/// Why no ticket was issued.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TicketError {
    /// No bearer token, or one the verifier refuses.
    #[error("the token was refused")]
    Unauthorized,
    /// [`MAX_TICKETS`] are outstanding.
    #[error("too many tickets outstanding; try again shortly")]
    Full,
}

impl Tickets {
    /// Tickets checked by `verifier`, with the default life and bound; `allow_origin` is the
    /// origin a browser page calling `/ws-ticket` from another origin may have.
    pub fn new(verifier: Verifier, allow_origin: Option<String>) -> Tickets {
        Tickets::with_limits(verifier, allow_origin, TICKET_TTL, MAX_TICKETS)
    }

    /// Tickets with another life and bound (tests).
    pub fn with_limits(
        verifier: Verifier,
        allow_origin: Option<String>,
        ttl: Duration,
        max: usize,
    ) -> Tickets {
        Tickets {
            verifier,
            outstanding: Mutex::new(HashMap::new()),
            ttl,
            max,
            allow_origin,
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

    /// A ticket for `token`, if the verifier accepts it and there is room.
    pub fn issue(&self, token: &str) -> Result<String, TicketError> {
        let claims = self
            .verifier
            .verify(token, weft_core::clock::unix_secs())
            .map_err(|_| TicketError::Unauthorized)?;
        let now = Instant::now();
        let mut outstanding = self.lock();
        if outstanding.len() >= self.max {
            outstanding.retain(|_, (_, issued)| now.duration_since(*issued) < self.ttl);
            if outstanding.len() >= self.max {
                return Err(TicketError::Full);
            }
        }
        let bytes: [u8; 32] = rand::random();
        let ticket = bs58::encode(bytes).into_string();
        outstanding.insert(ticket.clone(), (claims, now));
        Ok(ticket)
    }

    /// The claims `ticket` stands for, once: it is used up whether or not it was still good.
    pub fn redeem(&self, ticket: &str) -> Option<Claims> {
        let (claims, issued) = self.lock().remove(ticket)?;
        (issued.elapsed() < self.ttl).then_some(claims)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Claims, Instant)>> {
        // A panic while holding the lock leaves the map consistent (each operation is one
        // insert, remove or retain), so a poisoned lock is used as it is.
        self.outstanding
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
        Err(TicketError::Full) => (
            "503 Service Unavailable",
            "application/json",
            serde_json::json!({"error": TicketError::Full.to_string()}).to_string(),
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
    fn tickets_are_bounded_single_use_and_short_lived() {
        let (tickets, token) = issuer(Duration::from_secs(30), 2);
        let a = tickets.issue(&token).unwrap();
        let _b = tickets.issue(&token).unwrap();
        // Full: refused until one is used.
        assert_eq!(tickets.issue(&token), Err(TicketError::Full));
        assert_eq!(tickets.redeem(&a).unwrap().sub, "alice");
        assert!(tickets.redeem(&a).is_none());
        assert!(tickets.issue(&token).is_ok());
        assert_eq!(tickets.issue("not-a-jwt"), Err(TicketError::Unauthorized));

        // Expired ones make room and are refused.
        let (tickets, token) = issuer(Duration::ZERO, 1);
        let old = tickets.issue(&token).unwrap();
        let new = tickets.issue(&token).unwrap();
        assert!(tickets.redeem(&old).is_none());
        assert!(tickets.redeem(&new).is_none());
    }

    #[test]
    fn headers_are_found_whatever_their_case() {
        let head = b"POST /ws-ticket HTTP/1.1\r\nHost: x\r\nAUTHORIZATION:  Bearer a.b.c \r\n\r\n";
        assert_eq!(header(head, "authorization"), Some("Bearer a.b.c"));
        assert_eq!(header(head, "origin"), None);
    }
}
