//! What verification refuses, and that no refusal repeats the token: other algorithms, other
//! secrets, tampering, malformed tokens, expiry and leeway, audience and issuer, bad grants,
//! subjects.

use super::super::tests::*;
use super::super::*;

#[test]
fn alg_none_is_refused() {
    let signed_none = craft(r#"{"alg":"none","typ":"JWT"}"#, &alice_payload(), None);
    assert!(matches!(
        refused(&signed_none),
        AuthError::WrongAlgorithm { alg } if alg == "none"
    ));
    // Also with a (meaningless) HS256 signature attached, and in other spellings.
    for header in [
        r#"{"alg":"none"}"#,
        r#"{"alg":"None"}"#,
        r#"{"alg":"NONE"}"#,
    ] {
        let token = craft(header, &alice_payload(), Some(Algorithm::HS256));
        assert!(matches!(refused(&token), AuthError::WrongAlgorithm { .. }));
    }
    // And with no alg at all.
    let token = craft(r#"{"typ":"JWT"}"#, &alice_payload(), Some(Algorithm::HS256));
    assert!(matches!(refused(&token), AuthError::WrongAlgorithm { .. }));
}

#[test]
fn other_hmac_algorithms_are_refused_even_with_the_right_secret() {
    for (name, alg) in [("HS384", Algorithm::HS384), ("HS512", Algorithm::HS512)] {
        let token = craft(
            &format!(r#"{{"alg":"{name}"}}"#),
            &alice_payload(),
            Some(alg),
        );
        assert!(matches!(
            refused(&token),
            AuthError::WrongAlgorithm { alg } if alg == name
        ));
    }
}

#[test]
fn public_key_algorithms_are_refused_before_any_key_confusion() {
    // The classic confusion: an RS256 header over an HMAC made with the "public key".
    for name in ["RS256", "ES256", "PS256", "EdDSA", "hs256", "HS256 "] {
        let token = craft(
            &format!(r#"{{"alg":"{name}"}}"#),
            &alice_payload(),
            Some(Algorithm::HS256),
        );
        assert!(
            matches!(refused(&token), AuthError::WrongAlgorithm { .. }),
            "{name}"
        );
    }
    // A peer-written algorithm name is shortened before it reaches a log line.
    let token = craft(
        &format!(r#"{{"alg":"{}"}}"#, "X".repeat(500)),
        &alice_payload(),
        None,
    );
    let err = refused(&token);
    assert!(err.to_string().len() < 100, "{err}");
}

#[test]
fn a_header_with_critical_extensions_is_refused() {
    let token = craft(
        r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
        &alice_payload(),
        Some(Algorithm::HS256),
    );
    assert!(matches!(refused(&token), AuthError::Malformed { .. }));
}

#[test]
fn a_token_signed_with_another_secret_is_refused() {
    let token = Minter::new(&other_secret())
        .mint(&Claims::new("mallory", NOW, 3600).with_admin(true))
        .unwrap();
    assert!(matches!(refused(&token), AuthError::BadSignature));
}

#[test]
fn a_tampered_payload_is_refused() {
    let token = mint(&Claims::new("alice", NOW, 3600).with_doc(doc(1), Role::ReadOnly));
    let parts: Vec<&str> = token.split('.').collect();
    let forged_payload = b64(&format!(
        r#"{{"sub":"alice","iat":{NOW},"exp":{},"docs":{{"{}":"rw"}},"create":true,"admin":true}}"#,
        NOW + 3600,
        doc(1)
    ));
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert!(matches!(refused(&forged), AuthError::BadSignature));

    // Flipping one character of the signature is caught too.
    let mut sig = parts[2].to_owned();
    let last = if sig.ends_with('A') { "B" } else { "A" };
    sig.replace_range(sig.len() - 1.., last);
    let flipped = format!("{}.{}.{}", parts[0], parts[1], sig);
    assert!(matches!(
        refused(&flipped),
        AuthError::BadSignature | AuthError::Malformed { .. }
    ));
}

#[test]
fn malformed_tokens_are_refused_as_malformed() {
    let good = mint(&Claims::new("alice", NOW, 3600));
    let parts: Vec<&str> = good.split('.').collect();
    let cases = [
        String::new(),
        "garbage".to_owned(),
        "a.b".to_owned(),
        format!("{good}.extra"),
        format!("!!!.{}.{}", parts[1], parts[2]),
        format!("{}.{}.***", parts[0], parts[1]),
        signed(&format!("{}.%%%", parts[0])),
        format!("{}.{}.{}", b64("not json"), parts[1], parts[2]),
        format!("{}.{}.{}", b64("[1,2]"), parts[1], parts[2]),
        format!("{}.{}.{}", b64(r#"{"alg":7}"#), parts[1], parts[2]),
        "x".repeat(MAX_TOKEN_LEN + 1),
    ];
    for token in &cases {
        let err = refused(token);
        assert!(
            matches!(err, AuthError::Malformed { .. }),
            "{token:.40}: {err:?}"
        );
    }
}

#[test]
fn a_payload_that_is_not_json_is_malformed() {
    let token = craft(r#"{"alg":"HS256"}"#, "not json", Some(Algorithm::HS256));
    assert!(matches!(refused(&token), AuthError::Malformed { .. }));
}

#[test]
fn a_token_without_exp_is_refused() {
    let token = craft(
        r#"{"alg":"HS256"}"#,
        r#"{"sub":"alice","docs":{}}"#,
        Some(Algorithm::HS256),
    );
    assert!(matches!(refused(&token), AuthError::MissingExp));
    let token = craft(
        r#"{"alg":"HS256"}"#,
        r#"{"sub":"alice","exp":null}"#,
        Some(Algorithm::HS256),
    );
    assert!(matches!(refused(&token), AuthError::MissingExp));
}

#[test]
fn an_exp_that_is_not_a_number_is_refused() {
    for exp in [r#""tomorrow""#, "-5", "true"] {
        let token = craft(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"sub":"alice","exp":{exp}}}"#),
            Some(Algorithm::HS256),
        );
        assert!(
            matches!(refused(&token), AuthError::BadClaims { .. }),
            "{exp}"
        );
    }
    // A fractional NumericDate is allowed and truncated.
    let token = craft(
        r#"{"alg":"HS256"}"#,
        &format!(r#"{{"sub":"alice","exp":{}.75}}"#, NOW + 10),
        Some(Algorithm::HS256),
    );
    assert_eq!(verify(&token).unwrap().exp, NOW + 10);
}

#[test]
fn expiry_allows_the_leeway_and_not_a_second_more() {
    let token = mint(&Claims::new("alice", NOW - 7200, 3600)); // exp = NOW - 3600
    let exp = NOW - 3600;
    let verifier = Verifier::new(&secret());
    assert!(verifier.verify(&token, exp).is_ok());
    assert!(verifier.verify(&token, exp + 60).is_ok());
    let err = verifier.verify(&token, exp + 61).unwrap_err();
    assert!(matches!(
        err,
        AuthError::Expired { exp: e, now, leeway: 60 } if e == exp && now == exp + 61
    ));
    assert_no_leak(&err, &token);
    assert!(matches!(
        verifier.verify(&token, NOW),
        Err(AuthError::Expired { .. })
    ));

    let strict = Verifier::new(&secret()).with_leeway(0);
    assert!(strict.verify(&token, exp).is_ok());
    assert!(matches!(
        strict.verify(&token, exp + 1),
        Err(AuthError::Expired { .. })
    ));
}

#[test]
fn leeway_is_clamped_to_sixty_seconds() {
    assert_eq!(Verifier::new(&secret()).leeway_secs(), DEFAULT_LEEWAY_SECS);
    let lax = Verifier::new(&secret()).with_leeway(3600);
    assert_eq!(lax.leeway_secs(), MAX_LEEWAY_SECS);
    let token = mint(&Claims::new("alice", NOW - 100, 10)); // exp = NOW - 90
    assert!(matches!(
        lax.verify(&token, NOW),
        Err(AuthError::Expired { leeway: 60, .. })
    ));
}

#[test]
fn a_token_not_yet_valid_is_refused_beyond_the_leeway() {
    let payload = |nbf: u64| format!(r#"{{"sub":"alice","exp":{},"nbf":{nbf}}}"#, NOW + 3600);
    let within = craft(
        r#"{"alg":"HS256"}"#,
        &payload(NOW + 60),
        Some(Algorithm::HS256),
    );
    assert_eq!(verify(&within).unwrap().nbf, Some(NOW + 60));
    let beyond = craft(
        r#"{"alg":"HS256"}"#,
        &payload(NOW + 61),
        Some(Algorithm::HS256),
    );
    assert!(matches!(refused(&beyond), AuthError::NotYetValid { .. }));
}

#[test]
fn audience_and_issuer_are_checked_only_when_configured() {
    let plain = mint(&Claims::new("alice", NOW, 3600));
    let tagged = mint(
        &Claims::new("alice", NOW, 3600)
            .with_audience("weft-relay")
            .with_issuer("https://auth.example"),
    );
    let open = Verifier::new(&secret());
    assert!(open.verify(&plain, NOW).is_ok());
    assert!(open.verify(&tagged, NOW).is_ok());

    let strict = Verifier::new(&secret())
        .with_audience("weft-relay")
        .with_issuer("https://auth.example");
    let claims = strict.verify(&tagged, NOW).unwrap();
    assert_eq!(claims.aud, vec!["weft-relay".to_owned()]);
    assert_eq!(claims.iss.as_deref(), Some("https://auth.example"));

    // Missing aud/iss when required.
    assert!(matches!(
        Verifier::new(&secret())
            .with_audience("weft-relay")
            .verify(&plain, NOW),
        Err(AuthError::BadAudience { .. })
    ));
    assert!(matches!(
        Verifier::new(&secret())
            .with_issuer("https://auth.example")
            .verify(&plain, NOW),
        Err(AuthError::BadIssuer { .. })
    ));

    // Mismatched aud/iss.
    let elsewhere = mint(
        &Claims::new("alice", NOW, 3600)
            .with_audience("billing")
            .with_audience("search")
            .with_issuer("https://evil.example"),
    );
    let err = Verifier::new(&secret())
        .with_audience("weft-relay")
        .verify(&elsewhere, NOW)
        .unwrap_err();
    assert!(matches!(err, AuthError::BadAudience { .. }));
    assert_no_leak(&err, &elsewhere);
    let err = Verifier::new(&secret())
        .with_issuer("https://auth.example")
        .verify(&elsewhere, NOW)
        .unwrap_err();
    assert!(matches!(err, AuthError::BadIssuer { .. }));
    assert_no_leak(&err, &elsewhere);

    // One of several audiences is enough.
    let many = mint(
        &Claims::new("alice", NOW, 3600)
            .with_audience("billing")
            .with_audience("weft-relay"),
    );
    assert!(Verifier::new(&secret())
        .with_audience("weft-relay")
        .verify(&many, NOW)
        .is_ok());
}

#[test]
fn one_malformed_doc_id_refuses_the_whole_token() {
    let payload = format!(
        r#"{{"sub":"alice","exp":{},"docs":{{"{}":"rw","not-a-doc-id":"ro"}}}}"#,
        NOW + 60,
        doc(1)
    );
    let token = craft(r#"{"alg":"HS256"}"#, &payload, Some(Algorithm::HS256));
    assert!(matches!(refused(&token), AuthError::BadDocId { .. }));
}

#[test]
fn an_unknown_role_refuses_the_whole_token() {
    for role in [r#""admin""#, r#""RW""#, "true"] {
        let payload = format!(
            r#"{{"sub":"alice","exp":{},"docs":{{"{}":{role}}}}}"#,
            NOW + 60,
            doc(1)
        );
        let token = craft(r#"{"alg":"HS256"}"#, &payload, Some(Algorithm::HS256));
        assert!(
            matches!(
                refused(&token),
                AuthError::BadRole { .. } | AuthError::BadClaims { .. }
            ),
            "{role}"
        );
    }
}

#[test]
fn one_document_named_twice_refuses_the_token() {
    let payload = format!(
        r#"{{"sub":"alice","exp":{},"docs":{{"{}":"ro","{}":"rw"}}}}"#,
        NOW + 60,
        doc(1),
        doc(1).url()
    );
    let token = craft(r#"{"alg":"HS256"}"#, &payload, Some(Algorithm::HS256));
    assert!(matches!(refused(&token), AuthError::BadClaims { .. }));
}

#[test]
fn a_token_without_a_subject_is_refused() {
    for sub in [r#""sub":"","#, ""] {
        let token = craft(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{{sub}"exp":{}}}"#, NOW + 60),
            Some(Algorithm::HS256),
        );
        assert!(matches!(refused(&token), AuthError::BadClaims { .. }));
    }
    assert!(matches!(
        Minter::new(&secret()).mint(&Claims::new("", NOW, 60)),
        Err(MintError::EmptySubject)
    ));
}

#[test]
fn a_subject_longer_than_a_user_id_may_be_is_refused() {
    let longest = "u".repeat(MAX_USER_LEN);
    assert_eq!(
        verify(&mint(&Claims::new(longest.clone(), NOW, 60)))
            .unwrap()
            .sub,
        longest
    );
    let token = mint(&Claims::new(format!("{longest}u"), NOW, 60));
    assert!(matches!(refused(&token), AuthError::BadClaims { .. }));
}

#[test]
fn debug_output_never_shows_the_secret() {
    let text = format!(
        "{:?} {:?}",
        Verifier::new(&secret()),
        Minter::new(&secret())
    );
    assert!(!text.contains("relay's secret"), "{text}");
}
