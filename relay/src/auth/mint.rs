//! [`Minter`]: signs tokens for `weft-relay token` and tests; [`DocGrant`], its `--doc` argument.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use weft_core::{DocId, ParseIdError, Role};

use super::jwt::{OneOrMany, WireClaimsOut};
use super::{Claims, MintError};
use crate::secret::JwtSecret;

/// The header of every minted token, as the `jsonwebtoken` crate wrote it for HS256 (so a
/// token minted now is byte for byte the one an earlier relay minted).
const MINTED_HEADER: &str = r#"{"typ":"JWT","alg":"HS256"}"#;

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
        let claims = claims_json(claims)?;
        let mut token = URL_SAFE_NO_PAD.encode(MINTED_HEADER);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let tag = hmac::sign(&self.key, token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut token);
        Ok(token)
    }
}

/// `claims` as a token's JSON payload (what [`crate::Verifier`] reads back).
pub(crate) fn claims_json(claims: &Claims) -> Result<Vec<u8>, MintError> {
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
    serde_json::to_vec(&wire).map_err(|err| MintError::Encode {
        source: Box::new(err),
    })
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
