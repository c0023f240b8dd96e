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

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};
use weft_core::{DocId, ParseIdError, ParseRoleError, Role};

use crate::secret::JwtSecret;

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

/// The header of every minted token, as the `jsonwebtoken` crate wrote it for HS256 (so a
/// token minted now is byte for byte the one an earlier relay minted).
const MINTED_HEADER: &str = r#"{"typ":"JWT","alg":"HS256"}"#;

/// Checks tokens against the relay's secret. Cheap to clone; `Debug` never shows the secret.
#[derive(Clone)]
pub struct Verifier {
    key: hmac::Key,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: u64,
}

impl Verifier {
    /// A verifier for tokens signed with `secret`, with [`DEFAULT_LEEWAY_SECS`] of leeway and
    /// no audience or issuer requirement.
    pub fn new(secret: &JwtSecret) -> Self {
        Verifier {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            audience: None,
            issuer: None,
            leeway: DEFAULT_LEEWAY_SECS,
        }
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

/// Signs tokens with the relay's secret, for `weft-relay token` and tests.
#[derive(Clone)]
pub struct Minter {
    key: hmac::Key,
}

impl Minter {
    /// A minter signing with `secret`.
    pub fn new(secret: &JwtSecret) -> Self {
        Minter {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        }
    }

    /// The HS256 JWT carrying `claims`. Documents are written as bare ids.
    pub fn mint(&self, claims: &Claims) -> Result<String, MintError> {
        if claims.sub.is_empty() {
            return Err(MintError::EmptySubject);
        }
        let aud = match claims.aud.as_slice() {
            [] => None,
            [one] => Some(OneOrMany::One(one.clone())),
            many => Some(OneOrMany::Many(many.to_vec())),
        };
        let wire = WireClaimsOut {
            sub: &claims.sub,
            iat: claims.iat,
            exp: claims.exp,
            nbf: claims.nbf,
            docs: claims
                .docs
                .iter()
                .map(|(doc, role)| (doc.to_string(), role.as_str()))
                .collect(),
            create: claims.create,
            admin: claims.admin,
            aud,
            iss: claims.iss.as_deref(),
        };
        let claims = serde_json::to_vec(&wire).map_err(|err| MintError::Encode {
            source: Box::new(err),
        })?;
        let mut token = URL_SAFE_NO_PAD.encode(MINTED_HEADER);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let tag = hmac::sign(&self.key, token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut token);
        Ok(token)
    }
}

impl fmt::Debug for Minter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minter").finish_non_exhaustive()
    }
}

/// A `--doc` argument: a document and the role granted on it, written `DOC`, `DOC:rw` or
/// `DOC:ro`. Without a role the grant is `rw`. `DOC` may be a bare id or an `automerge:` URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DocGrant {
    /// The document.
    pub doc: DocId,
    /// The role granted on it.
    pub role: Role,
}

/// Why a `--doc` argument did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(transparent)]
pub struct ParseDocGrantError(#[from] ParseIdError);

impl FromStr for DocGrant {
    type Err = ParseDocGrantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // `automerge:ID` contains a colon too, so only a trailing `:rw` or `:ro` is a role.
        let (doc, role) = match s.rsplit_once(':') {
            Some((doc, "rw")) => (doc, Role::ReadWrite),
            Some((doc, "ro")) => (doc, Role::ReadOnly),
            _ => (s, Role::ReadWrite),
        };
        Ok(DocGrant {
            doc: doc.parse()?,
            role,
        })
    }
}

impl fmt::Display for DocGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.doc, self.role)
    }
}

#[derive(Serialize)]
struct WireClaimsOut<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    docs: BTreeMap<String, &'static str>,
    create: bool,
    admin: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<OneOrMany>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
}

#[derive(Deserialize)]
struct WireClaimsIn {
    sub: Option<String>,
    iat: Option<serde_json::Number>,
    exp: Option<serde_json::Number>,
    nbf: Option<serde_json::Number>,
    #[serde(default)]
    docs: BTreeMap<String, String>,
    #[serde(default)]
    create: bool,
    #[serde(default)]
    admin: bool,
    aud: Option<OneOrMany>,
    iss: Option<String>,
}

/// RFC 7519 lets `aud` be one string or an array of them.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<serde_json::Value>,
    crit: Option<serde_json::Value>,
}

/// The token's header, payload and signature parts (still base64url).
fn split_token(token: &str) -> Result<(&str, &str, &str), AuthError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(payload), Some(signature), None) => Ok((header, payload, signature)),
        _ => Err(malformed("not three dot-separated parts")),
    }
}

/// Refuses any header that doesn't name HS256, before any cryptography sees the token.
fn check_header(header: &str) -> Result<(), AuthError> {
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed("the header is not base64url"))?;
    let header: RawHeader = serde_json::from_slice(&header)
        .map_err(|_| malformed("the header is not a JSON object"))?;
    match header.alg {
        Some(serde_json::Value::String(alg)) if alg == "HS256" => {}
        Some(serde_json::Value::String(alg)) => {
            return Err(AuthError::WrongAlgorithm {
                alg: printable_alg(&alg),
            })
        }
        None | Some(serde_json::Value::Null) => {
            return Err(AuthError::WrongAlgorithm {
                alg: "no algorithm".into(),
            })
        }
        Some(_) => return Err(malformed("the header's alg is not a string")),
    }
    if header.crit.is_some() {
        return Err(malformed("critical header extensions are not supported"));
    }
    Ok(())
}

/// The header's algorithm for an error message: short and printable, since a peer wrote it.
fn printable_alg(alg: &str) -> String {
    if !alg.is_empty() && alg.len() <= 16 && alg.bytes().all(|b| b.is_ascii_graphic()) {
        alg.to_owned()
    } else {
        "an unrecognised algorithm".into()
    }
}

/// A JWT NumericDate: a non-negative number of seconds, fractions truncated.
fn numeric_date(
    value: Option<serde_json::Number>,
    claim: &'static str,
) -> Result<Option<u64>, AuthError> {
    let Some(value) = value else {
        return Ok(None);
    };
    if let Some(secs) = value.as_u64() {
        return Ok(Some(secs));
    }
    match value.as_f64() {
        // `as` saturates; only finite, non-negative values reach it.
        Some(secs) if secs.is_finite() && secs >= 0.0 => Ok(Some(secs as u64)),
        _ => Err(AuthError::BadClaims {
            reason: format!("{claim} is not a non-negative number of seconds"),
        }),
    }
}

fn malformed(reason: &'static str) -> AuthError {
    AuthError::Malformed { reason }
}

fn bad_claims(reason: &str) -> AuthError {
    AuthError::BadClaims {
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests;
