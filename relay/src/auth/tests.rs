//! Tokens minted and verified: round trips, the contract's claims, grants, and a token minted
//! by the crate the relay used before. The refusals are in `verify/tests.rs`.

use super::*;
use crate::secret::JwtSecret;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The HMAC algorithms a crafted token may be signed with.
#[derive(Clone, Copy)]
#[allow(clippy::upper_case_acronyms)]
pub(super) enum Algorithm {
    HS256,
    HS384,
    HS512,
}

/// The base64url HMAC of `message` under the relay's secret with `alg`.
pub(super) fn sign(message: &str, alg: Algorithm) -> String {
    let alg = match alg {
        Algorithm::HS256 => ring::hmac::HMAC_SHA256,
        Algorithm::HS384 => ring::hmac::HMAC_SHA384,
        Algorithm::HS512 => ring::hmac::HMAC_SHA512,
    };
    let key = ring::hmac::Key::new(alg, secret().as_bytes());
    URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, message.as_bytes()))
}

pub(super) const NOW: u64 = 1_700_000_000;

pub(super) fn secret() -> JwtSecret {
    JwtSecret::new(b"the relay's secret, at least 32 bytes long".to_vec()).unwrap()
}

pub(super) fn other_secret() -> JwtSecret {
    JwtSecret::new(b"somebody else's secret, also 32+ bytes".to_vec()).unwrap()
}

pub(super) fn doc(n: u8) -> DocId {
    DocId::from_bytes([n; 16])
}

pub(super) fn mint(claims: &Claims) -> String {
    Minter::new(&secret()).mint(claims).unwrap()
}

pub(super) fn verify(token: &str) -> Result<Claims, AuthError> {
    Verifier::new(&secret()).verify(token, NOW)
}

pub(super) fn b64(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

/// A token with exactly this header and payload, signed with the relay's secret under `alg`
/// (or with an empty signature when `alg` is `None`).
pub(super) fn craft(header: &str, payload: &str, alg: Option<Algorithm>) -> String {
    let message = format!("{}.{}", b64(header), b64(payload));
    let signature = match alg {
        Some(alg) => sign(&message, alg),
        None => String::new(),
    };
    format!("{message}.{signature}")
}

/// `message` with a valid HS256 signature under the relay's secret appended.
pub(super) fn signed(message: &str) -> String {
    let signature = sign(message, Algorithm::HS256);
    format!("{message}.{signature}")
}

pub(super) fn alice_payload() -> String {
    format!(
        r#"{{"sub":"alice","iat":{NOW},"exp":{},"docs":{{}}}}"#,
        NOW + 3600
    )
}

/// Asserts the refusal and that its message does not leak the token.
#[track_caller]
pub(super) fn refused(token: &str) -> AuthError {
    let err = verify(token).expect_err("the token should be refused");
    assert_no_leak(&err, token);
    err
}

#[track_caller]
pub(super) fn assert_no_leak(err: &AuthError, token: &str) {
    let text = format!("{err} / {err:?} / {:?}", std::error::Error::source(err));
    // (An empty or one-letter "token" is trivially contained in any text.)
    assert!(token.len() < 3 || !text.contains(token), "{text}");
    for part in token.split('.').filter(|p| p.len() >= 8) {
        assert!(!text.contains(part), "{text} contains {part}");
    }
}

#[test]
fn a_minted_token_round_trips_with_every_claim() {
    let claims = Claims::new("alice", NOW, 86_400)
        .with_doc(doc(1), Role::ReadWrite)
        .with_doc(doc(2), Role::ReadOnly)
        .with_create(true)
        .with_admin(true);
    let verified = verify(&mint(&claims)).unwrap();
    assert_eq!(verified, claims);
    assert_eq!(verified.role_for(&doc(1)), Some(Role::ReadWrite));
    assert_eq!(verified.role_for(&doc(2)), Some(Role::ReadOnly));
    assert_eq!(verified.role_for(&doc(3)), None);
}

#[test]
fn a_minted_token_has_the_contract_claims_with_bare_ids() {
    let token = mint(&Claims::new("bob", NOW, 60).with_doc(doc(1), Role::ReadOnly));
    let payload = token.split('.').nth(1).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "sub": "bob", "iat": NOW, "exp": NOW + 60,
            "docs": { doc(1).to_string(): "ro" },
            "create": false, "admin": false,
        })
    );
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "HS256");
}

#[test]
fn create_and_admin_default_to_false_and_docs_to_empty() {
    let token = craft(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &format!(r#"{{"sub":"carol","exp":{}}}"#, NOW + 5),
        Some(Algorithm::HS256),
    );
    let claims = verify(&token).unwrap();
    assert_eq!(claims.sub, "carol");
    assert!(!claims.create && !claims.admin);
    assert!(claims.docs.is_empty());
    assert_eq!(claims.iat, None);
}

#[test]
fn docs_accept_bare_ids_and_automerge_urls() {
    let payload = format!(
        r#"{{"sub":"alice","exp":{},"docs":{{"{}":"rw","{}":"ro"}}}}"#,
        NOW + 60,
        doc(1),
        doc(2).url()
    );
    let claims = verify(&craft(
        r#"{"alg":"HS256"}"#,
        &payload,
        Some(Algorithm::HS256),
    ))
    .unwrap();
    assert_eq!(claims.role_for(&doc(1)), Some(Role::ReadWrite));
    assert_eq!(claims.role_for(&doc(2)), Some(Role::ReadOnly));
}

#[test]
fn doc_grants_default_to_rw_and_accept_urls() {
    let id = doc(9);
    let grant = |s: String| s.parse::<DocGrant>();
    assert_eq!(
        grant(id.to_string()),
        Ok(DocGrant {
            doc: id,
            role: Role::ReadWrite
        })
    );
    assert_eq!(grant(format!("{id}:ro")).unwrap().role, Role::ReadOnly);
    assert_eq!(grant(format!("{id}:rw")).unwrap().role, Role::ReadWrite);
    assert_eq!(
        grant(id.url()),
        Ok(DocGrant {
            doc: id,
            role: Role::ReadWrite
        })
    );
    assert_eq!(
        grant(format!("{}:ro", id.url())).unwrap().role,
        Role::ReadOnly
    );
    assert!(grant(format!("{id}:admin")).is_err());
    assert!(grant("nope:ro".to_owned()).is_err());
    assert!(grant(String::new()).is_err());
}

/// A token minted by the relay before its HMAC moved to ring (with the `jsonwebtoken` crate,
/// under `secret()`): alice, iat `NOW`, a day long, `docs` {doc(1): rw, doc(2): ro}, `create`,
/// `aud` weft-relay, `iss` https://auth.example.
const MINTED_BY_JSONWEBTOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDg2NDAwLCJkb2NzIjp7IjJkNm85blBqSnRoa2VqWFF0TFdKSkdzZnRvNCI6InJvIiwicDN1NVBoTjl3ck5wc0dDd2ZrZWVmMkx6RjkiOiJydyJ9LCJjcmVhdGUiOnRydWUsImFkbWluIjpmYWxzZSwiYXVkIjoid2VmdC1yZWxheSIsImlzcyI6Imh0dHBzOi8vYXV0aC5leGFtcGxlIn0.YhPpwLcqftfIjX-tXf7fu4nx14Z1oISNMyCJ2EZurgY";

#[test]
fn a_token_minted_before_verifies_and_is_minted_the_same_today() {
    let claims = Claims::new("alice", NOW, 86_400)
        .with_doc(doc(1), Role::ReadWrite)
        .with_doc(doc(2), Role::ReadOnly)
        .with_create(true)
        .with_audience("weft-relay")
        .with_issuer("https://auth.example");
    let strict = Verifier::new(&secret())
        .with_audience("weft-relay")
        .with_issuer("https://auth.example");
    assert_eq!(strict.verify(MINTED_BY_JSONWEBTOKEN, NOW).unwrap(), claims);
    // Same header, same claims JSON, same signature: byte for byte.
    assert_eq!(mint(&claims), MINTED_BY_JSONWEBTOKEN);
}
