use super::*;

fn key(kid: &str, secret: &str) -> SigningKey {
    SigningKey {
        kid: kid.into(),
        secret: Secret::new(secret),
        issuer: "handoff-test".into(),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A token signed with `secret`, any header and claims (for forged tokens).
fn raw_token(header: serde_json::Value, claims: serde_json::Value, secret: &str) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{h}.{c}").as_bytes());
    let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{h}.{c}.{s}")
}

const SECRET: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn zendesk_published_test_vector() {
    let sig = zendesk_signature(
        "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==",
        "2021-03-25T05:09:27Z",
        br#"{"event":"ticket.updated","id":123}"#,
    );
    assert_eq!(sig, "S/RDdU2ERmj7LHDDoWJ2onPYH+t7/f2+LTM4dL7UiLM=");
}

#[test]
fn zendesk_signature_good_bad_stale_missing() {
    let secret = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==";
    let ts = "2021-03-25T05:09:27Z";
    let body = br#"{"event":"ticket.updated","id":123}"#;
    let at = 1_616_648_967;
    let sig = "S/RDdU2ERmj7LHDDoWJ2onPYH+t7/f2+LTM4dL7UiLM=";
    let five_min = Duration::from_secs(300);
    let check =
        |ts, sig, body: &[u8], now| verify_zendesk_signature(secret, ts, sig, body, now, five_min);
    assert_eq!(check(Some(ts), Some(sig), body, at + 10), Ok(()));
    assert_eq!(
        check(Some(ts), Some(sig), b"{\"id\":124}", at),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        check(Some(ts), Some("not base64!"), body, at),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        check(Some(ts), Some(sig), body, at + 301),
        Err(SignatureError::Stale)
    );
    assert_eq!(
        check(Some(ts), Some(sig), body, at - 301),
        Err(SignatureError::Stale)
    );
    assert_eq!(
        check(None, Some(sig), body, at),
        Err(SignatureError::MissingTimestamp)
    );
    assert_eq!(
        check(Some(ts), None, body, at),
        Err(SignatureError::MissingSignature)
    );
    assert_eq!(
        check(Some("yesterday"), Some(sig), body, at),
        Err(SignatureError::BadTimestamp)
    );
}

#[test]
fn iso8601_parses_zulu_offsets_and_fractions_and_round_trips() {
    assert_eq!(parse_iso8601("2021-03-25T05:09:27Z"), Some(1_616_648_967));
    assert_eq!(
        parse_iso8601("2021-03-25T05:09:27.123Z"),
        Some(1_616_648_967)
    );
    assert_eq!(
        parse_iso8601("2021-03-25T07:09:27+02:00"),
        Some(1_616_648_967)
    );
    assert_eq!(
        parse_iso8601("2021-03-25T00:09:27-0500"),
        Some(1_616_648_967)
    );
    assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0));
    for bad in [
        "",
        "2021-03-25",
        "2021-13-25T05:09:27Z",
        "2021-03-25T05:09:27",
        "2021-03-25T05:09:27Q",
        "2021-03-25T05:09:27.Z",
        "2021-03-25T05:09:27+2",
        "２021-03-25T05:09:27Z",
    ] {
        assert_eq!(parse_iso8601(bad), None, "{bad:?}");
    }
    for t in [0, 951_782_400, 1_616_648_967, 4_102_444_800] {
        assert_eq!(parse_iso8601(&format_iso8601(t)), Some(t));
    }
    assert_eq!(format_iso8601(1_616_648_967), "2021-03-25T05:09:27Z");
}

#[test]
fn minted_token_verifies_and_names_the_org() {
    let k = key("k1", SECRET);
    let t = mint_prefetch_token(&k, "org-a", now(), None).unwrap();
    assert_eq!(
        verify_prefetch_token(&t, std::slice::from_ref(&k)),
        Ok("org-a".into())
    );
    let t = mint_prefetch_token(&k, "org-a", now(), Some(Duration::from_secs(60))).unwrap();
    assert_eq!(verify_prefetch_token(&t, &[k]), Ok("org-a".into()));
}

#[test]
fn mint_refuses_an_org_id_that_is_not_a_token() {
    let k = key("k1", SECRET);
    assert_eq!(
        mint_prefetch_token(&k, "org a\r\n", now(), None),
        Err(TokenError::OrgId)
    );
}

#[test]
fn rotated_keys_old_kid_valid_while_configured_unknown_kid_refused() {
    let old = key("old", SECRET);
    let new = key("new", "fedcba9876543210fedcba9876543210");
    let t_old = mint_prefetch_token(&old, "org-a", now(), None).unwrap();
    assert_eq!(
        verify_prefetch_token(&t_old, &[old.clone(), new.clone()]),
        Ok("org-a".into())
    );
    assert_eq!(
        verify_prefetch_token(&t_old, &[new]),
        Err(TokenError::UnknownKeyId)
    );
}

#[test]
fn tampered_expired_wrong_audience_and_issuer_are_refused() {
    let k = key("k1", SECRET);
    let keys = [k.clone()];
    let t = mint_prefetch_token(&k, "org-a", now(), None).unwrap();
    // Claims swapped for another org, signature kept.
    let parts: Vec<&str> = t.split('.').collect();
    let forged_claims = URL_SAFE_NO_PAD.encode(
        serde_json::json!({"iss": "handoff-test", "aud": PREFETCH_AUDIENCE, "org_id": "org-b", "iat": now()})
            .to_string(),
    );
    let tampered = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
    assert_eq!(
        verify_prefetch_token(&tampered, &keys),
        Err(TokenError::Signature)
    );
    let header = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": "k1"});
    let expired = raw_token(
        header.clone(),
        serde_json::json!({"iss": "handoff-test", "aud": PREFETCH_AUDIENCE, "org_id": "org-a", "iat": now() - 7200, "exp": now() - 3600}),
        SECRET,
    );
    assert_eq!(
        verify_prefetch_token(&expired, &keys),
        Err(TokenError::Expired)
    );
    let wrong_aud = raw_token(
        header.clone(),
        serde_json::json!({"iss": "handoff-test", "aud": "dashboard", "org_id": "org-a", "iat": now()}),
        SECRET,
    );
    assert_eq!(
        verify_prefetch_token(&wrong_aud, &keys),
        Err(TokenError::Audience)
    );
    let no_aud = raw_token(
        header.clone(),
        serde_json::json!({"iss": "handoff-test", "org_id": "org-a", "iat": now()}),
        SECRET,
    );
    assert_eq!(
        verify_prefetch_token(&no_aud, &keys),
        Err(TokenError::Audience)
    );
    let wrong_iss = raw_token(
        header,
        serde_json::json!({"iss": "someone", "aud": PREFETCH_AUDIENCE, "org_id": "org-a", "iat": now()}),
        SECRET,
    );
    assert_eq!(
        verify_prefetch_token(&wrong_iss, &keys),
        Err(TokenError::Issuer)
    );
}

#[test]
fn alg_none_and_other_algorithms_are_refused() {
    let keys = [key("k1", SECRET)];
    let claims = serde_json::json!({"iss": "handoff-test", "aud": PREFETCH_AUDIENCE, "org_id": "org-a", "iat": now()});
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    assert_eq!(
        verify_prefetch_token(&none, &keys),
        Err(TokenError::Algorithm)
    );
    for alg in ["HS512", "hs256", "RS256"] {
        let t = raw_token(
            serde_json::json!({"alg": alg, "kid": "k1"}),
            claims.clone(),
            SECRET,
        );
        assert_eq!(
            verify_prefetch_token(&t, &keys),
            Err(TokenError::Algorithm),
            "{alg}"
        );
    }
    let no_kid = raw_token(serde_json::json!({"alg": "HS256"}), claims, SECRET);
    assert_eq!(
        verify_prefetch_token(&no_kid, &keys),
        Err(TokenError::NoKeyId)
    );
    for junk in ["", "a.b", "a.b.c", "....", "%%%.x.y"] {
        assert_eq!(
            verify_prefetch_token(junk, &keys),
            Err(TokenError::Malformed),
            "{junk:?}"
        );
    }
}

#[test]
fn api_key_comparison() {
    let k = Secret::new("the-api-key-0123456789");
    assert!(api_key_matches("the-api-key-0123456789", &k));
    assert!(!api_key_matches("the-api-key-012345678", &k));
    assert!(!api_key_matches("", &k));
}

/// The claims of a token, unverified (to look at what was minted).
fn claims_of(token: &str) -> serde_json::Value {
    let part = token.split('.').nth(1).expect("claims part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
}

#[test]
fn minted_tokens_carry_iat_exp_and_a_unique_jti() {
    let k = key("k1", SECRET);
    let at = now();
    let year = Duration::from_secs(365 * 86_400);
    let a = mint_prefetch_token(&k, "org-a", at, Some(year)).unwrap();
    let b = mint_prefetch_token(&k, "org-a", at, Some(year)).unwrap();
    let (ca, cb) = (claims_of(&a), claims_of(&b));
    assert_eq!(ca["iat"], at);
    assert_eq!(ca["exp"], at + 365 * 86_400);
    let jti = ca["jti"].as_str().expect("jti");
    assert_eq!(jti.len(), 32);
    assert_eq!(
        minted_id_and_expiry(&a),
        Some((jti.to_owned(), at + 365 * 86_400))
    );
    assert_eq!(
        minted_id_and_expiry(&mint_prefetch_token(&k, "org-a", at, None).unwrap()).map(|x| x.1),
        None,
        "no exp"
    );
    assert_ne!(ca["jti"], cb["jti"], "each token its own id");
    assert_eq!(
        verify_prefetch_claims(&a, std::slice::from_ref(&k)),
        Ok(PrefetchToken {
            org_id: "org-a".into(),
            iat: at,
            jti: Some(jti.to_owned())
        })
    );
}

#[test]
fn revoked_by_jti_or_issued_before_is_refused() {
    let k = key("k1", SECRET);
    let keys = std::slice::from_ref(&k);
    let at = now();
    let t = mint_prefetch_token(&k, "org-a", at, Some(Duration::from_secs(600))).unwrap();
    let jti = claims_of(&t)["jti"].as_str().expect("jti").to_owned();
    let by_jti = RevokedToken::Jti {
        org_id: "org-a".into(),
        jti: jti.clone(),
    };
    let other_org = RevokedToken::Jti {
        org_id: "org-b".into(),
        jti,
    };
    let before = |unix: u64| RevokedToken::IssuedBefore {
        org_id: "org-a".into(),
        unix: unix as i64,
    };
    let check = |revoked: &[RevokedToken]| {
        verify_unrevoked_prefetch_token(&t, keys, revoked).map(|t| t.org_id)
    };
    assert_eq!(check(&[]), Ok("org-a".into()));
    assert_eq!(check(&[by_jti]), Err(TokenError::Revoked));
    assert_eq!(check(std::slice::from_ref(&other_org)), Ok("org-a".into()));
    assert_eq!(check(&[before(at + 1)]), Err(TokenError::Revoked));
    assert_eq!(check(&[before(at)]), Ok("org-a".into()));
    // A token minted without a jti (older handoff) is revoked by time.
    let old = raw_token(
        serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}),
        serde_json::json!({"iss": "handoff-test", "aud": PREFETCH_AUDIENCE, "org_id": "org-a", "iat": at - 100}),
        SECRET,
    );
    assert_eq!(
        verify_unrevoked_prefetch_token(&old, keys, &[other_org]).map(|t| t.jti),
        Ok(None)
    );
    assert_eq!(
        verify_unrevoked_prefetch_token(&old, keys, &[before(at)]),
        Err(TokenError::Revoked)
    );
    // A jti that is not a string is malformed.
    let bad = raw_token(
        serde_json::json!({"alg": "HS256", "kid": "k1"}),
        serde_json::json!({"iss": "handoff-test", "aud": PREFETCH_AUDIENCE, "org_id": "org-a", "iat": at, "jti": 5}),
        SECRET,
    );
    assert_eq!(
        verify_prefetch_token(&bad, keys),
        Err(TokenError::Malformed)
    );
}

#[test]
fn presented_signature_bytes() {
    let sig = "S/RDdU2ERmj7LHDDoWJ2onPYH+t7/f2+LTM4dL7UiLM=";
    assert_eq!(signature_bytes(sig).map(|b| b.len()), Some(32));
    assert_eq!(signature_bytes(&format!(" {sig} ")), signature_bytes(sig));
    assert_eq!(signature_bytes("AAAA"), None);
    assert_eq!(signature_bytes("not base64!"), None);
}
