//! The JWT wire form: the claims as JSON, the header check and the helpers that read them.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::AuthError;

#[derive(Serialize)]
pub(super) struct WireClaimsOut<'a> {
    pub(super) sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) iat: Option<u64>,
    pub(super) exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) nbf: Option<u64>,
    pub(super) docs: BTreeMap<String, &'static str>,
    pub(super) create: bool,
    pub(super) admin: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) aud: Option<OneOrMany>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) iss: Option<&'a str>,
}

#[derive(Deserialize)]
pub(super) struct WireClaimsIn {
    pub(super) sub: Option<String>,
    pub(super) iat: Option<serde_json::Number>,
    pub(super) exp: Option<serde_json::Number>,
    pub(super) nbf: Option<serde_json::Number>,
    #[serde(default)]
    pub(super) docs: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) create: bool,
    #[serde(default)]
    pub(super) admin: bool,
    pub(super) aud: Option<OneOrMany>,
    pub(super) iss: Option<String>,
}

/// RFC 7519 lets `aud` be one string or an array of them.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<serde_json::Value>,
    crit: Option<serde_json::Value>,
}

/// The token's header, payload and signature parts (still base64url).
pub(super) fn split_token(token: &str) -> Result<(&str, &str, &str), AuthError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(payload), Some(signature), None) => Ok((header, payload, signature)),
        _ => Err(malformed("not three dot-separated parts")),
    }
}

/// Refuses any header that doesn't name HS256, before any cryptography sees the token.
pub(super) fn check_header(header: &str) -> Result<(), AuthError> {
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
pub(super) fn numeric_date(
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

pub(super) fn malformed(reason: &'static str) -> AuthError {
    AuthError::Malformed { reason }
}

pub(super) fn bad_claims(reason: &str) -> AuthError {
    AuthError::BadClaims {
        reason: reason.to_owned(),
    }
}
