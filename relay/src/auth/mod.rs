//! Tokens: the HS256 JWTs that every connection presents, and `weft-relay token`'s minting.
//!
//! A token's claims are `sub` (the user), `iat`, `exp`, `docs` (an object from document id to
//! `"rw"` or `"ro"`), `create` and `admin` (both default `false`), and optionally `nbf`, `aud`
//! and `iss`. [`Verifier::verify`] accepts a token only when all of these hold:
//!
//! 1. It is at most [`MAX_TOKEN_LEN`] bytes of three dot-separated base64url parts.
//! 2. Its header names `alg: "HS256"` exactly; `none` and every other algorithm is refused
//!    before any cryptography runs, as is a header with `crit` extensions.
//! 3. Its signature is the HMAC-SHA256 of the first two parts under the relay's secret.
//! 4. Only then are the claims read: `sub` is a non-empty string, `exp` is present and
//!    `now <= exp + leeway`, `nbf` (when present) is `<= now + leeway`, `iss` and `aud` match
//!    when the verifier is configured with them (and are ignored otherwise).
//! 5. Every key of `docs` is a document id (bare or `automerge:` URL) and every value `rw` or
//!    `ro`. **One malformed entry refuses the whole token**: a token that grants something the
//!    relay cannot understand is a broken issuer, and honouring the rest would hide that.
//!
//! The clock is an argument (`now`, Unix seconds), so verification is deterministic. Errors
//! describe what was wrong with a token and never contain the token itself.
//!
//! The HMAC is ring's (`ring::hmac`, verified in constant time), the crypto library rustls and
//! quinn already build; the JWT framing (three base64url parts, JSON header and claims) is
//! done here. Minted tokens carry the header `{"typ":"JWT","alg":"HS256"}` and compact JSON
//! claims, byte for byte what earlier relays minted with the `jsonwebtoken` crate.

mod jwt;
mod mint;
mod verify;

use std::collections::BTreeMap;

use weft_core::{DocId, ParseIdError, ParseRoleError, Role};

pub(crate) use mint::claims_json;
pub use mint::{DocGrant, Minter, ParseDocGrantError};
pub use verify::Verifier;

/// The most clock skew a [`Verifier`] tolerates, in seconds; larger settings are clamped.
pub const MAX_LEEWAY_SECS: u64 = 60;

/// The leeway a new [`Verifier`] starts with, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;

/// The longest token examined, in bytes. Longer input is refused unread.
pub const MAX_TOKEN_LEN: usize = 1024 * 1024;
/// The longest user id (`sub`, or a user named in a share), in bytes: user ids key the relay's
/// access lists and per-user index.
pub const MAX_USER_LEN: usize = 256;

/// What a verified token says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The user the token speaks for.
    pub sub: String,
    /// When the token was issued (Unix seconds), if it says.
    pub iat: Option<u64>,
    /// When the token expires (Unix seconds).
    pub exp: u64,
    /// When the token becomes valid (Unix seconds), if it says.
    pub nbf: Option<u64>,
    /// Documents the token grants, with the role on each.
    pub docs: BTreeMap<DocId, Role>,
    /// Whether the holder may upload new documents (and so become their owner).
    pub create: bool,
    /// Whether the holder may change any document's access list.
    pub admin: bool,
    /// The audiences the token is meant for (empty when it names none).
    pub aud: Vec<String>,
    /// Who issued the token, if it says.
    pub iss: Option<String>,
}

impl Claims {
    /// Claims for `sub`, issued at `now` and expiring `ttl_secs` later, granting nothing else.
    pub fn new(sub: impl Into<String>, now: u64, ttl_secs: u64) -> Self {
        Claims {
            sub: sub.into(),
            iat: Some(now),
            exp: now.saturating_add(ttl_secs),
            nbf: None,
            docs: BTreeMap::new(),
            create: false,
            admin: false,
            aud: Vec::new(),
            iss: None,
        }
    }

    /// Adds (or replaces) a grant of `role` on `doc`.
    pub fn with_doc(mut self, doc: DocId, role: Role) -> Self {
        self.docs.insert(doc, role);
        self
    }

    /// Sets whether the holder may create documents.
    pub fn with_create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Sets whether the holder is an administrator.
    pub fn with_admin(mut self, admin: bool) -> Self {
        self.admin = admin;
        self
    }

    /// Adds an audience.
    pub fn with_audience(mut self, aud: impl Into<String>) -> Self {
        self.aud.push(aud.into());
        self
    }

    /// Sets the issuer.
    pub fn with_issuer(mut self, iss: impl Into<String>) -> Self {
        self.iss = Some(iss.into());
        self
    }

    /// The role this token grants on `doc`, if any.
    pub fn role_for(&self, doc: &DocId) -> Option<Role> {
        self.docs.get(doc).copied()
    }
}

/// Why a token was refused. The message never contains the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Not a JWT at all: wrong shape, bad base64url, not JSON, or too long.
    #[error("the token is malformed: {reason}")]
    Malformed {
        /// What was wrong, in a few words.
        reason: &'static str,
    },
    /// The header names an algorithm other than HS256 (including `none`).
    #[error("the token is signed with {alg}; only HS256 is accepted")]
    WrongAlgorithm {
        /// The algorithm the header names, shortened and made printable.
        alg: String,
    },
    /// The signature does not match the relay's secret: forged, tampered or another secret.
    #[error("the token's signature does not match")]
    BadSignature,
    /// The token has no `exp` claim.
    #[error("the token has no expiry (exp)")]
    MissingExp,
    /// The token expired more than the leeway ago.
    #[error("the token expired at {exp} (now {now}, leeway {leeway} s)")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The time of the check.
        now: u64,
        /// The leeway applied.
        leeway: u64,
    },
    /// The token's `nbf` is more than the leeway in the future.
    #[error("the token is not valid before {nbf} (now {now}, leeway {leeway} s)")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// The time of the check.
        now: u64,
        /// The leeway applied.
        leeway: u64,
    },
    /// The verifier requires an audience that the token does not name.
    #[error("the token is not meant for audience {expected:?}")]
    BadAudience {
        /// The audience the verifier requires.
        expected: String,
    },
    /// The verifier requires an issuer and the token names another or none.
    #[error("the token was not issued by {expected:?}")]
    BadIssuer {
        /// The issuer the verifier requires.
        expected: String,
    },
    /// A key of the `docs` claim is not a document id; the whole token is refused.
    #[error("the token's docs claim names a malformed document id")]
    BadDocId {
        /// Why the id did not parse.
        source: ParseIdError,
    },
    /// A value of the `docs` claim is neither `rw` nor `ro`; the whole token is refused.
    #[error("the token's docs claim gives document {doc} an unknown role")]
    BadRole {
        /// The document whose role is malformed.
        doc: DocId,
        /// Why the role did not parse.
        source: ParseRoleError,
    },
    /// The claims are correctly signed but not of the expected shape.
    #[error("the token's claims are invalid: {reason}")]
    BadClaims {
        /// What was wrong.
        reason: String,
    },
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// `sub` is empty.
    #[error("a token needs a non-empty subject (sub)")]
    EmptySubject,
    /// The claims could not be written as JSON.
    #[error("cannot encode the token")]
    Encode {
        /// The JSON encoder's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

#[cfg(test)]
mod tests;
