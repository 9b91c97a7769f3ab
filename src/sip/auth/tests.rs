//! Digest authentication against the RFC examples.

use super::digest::*;
use super::DigestCredentials;

fn creds<'a>(user: &'a str, pass: &'a str) -> DigestCredentials<'a> {
    DigestCredentials {
        username: user,
        password: pass,
    }
}

/// The value of one `name=` parameter of an Authorization value.
fn param<'a>(auth: &'a str, name: &str) -> Option<&'a str> {
    auth.strip_prefix("Digest ")?.split(", ").find_map(|p| {
        let (n, v) = p.split_once('=')?;
        (n == name).then(|| v.trim_matches('"'))
    })
}

/// RFC 7616 3.9.1.
const RFC7616_REALM: &str = "http-auth@example.org";
const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
const RFC7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";
const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

fn rfc7616_challenge(algorithm: &str) -> String {
    format!(
        r#"Digest realm="{RFC7616_REALM}", qop="auth, auth-int", algorithm={algorithm}, nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}""#
    )
}

#[test]
fn rfc7616_md5_example() {
    let a = digest_authorization(
        &rfc7616_challenge("MD5"),
        "GET",
        "/dir/index.html",
        &creds("Mufasa", "Circle of Life"),
        RFC7616_CNONCE,
        1,
    )
    .unwrap();
    assert_eq!(
        param(&a, "response"),
        Some("8ca523f5e9506fed4657c9700eebdbec")
    );
    assert_eq!(
        a,
        format!(
            r#"Digest username="Mufasa", realm="{RFC7616_REALM}", nonce="{RFC7616_NONCE}", uri="/dir/index.html", response="8ca523f5e9506fed4657c9700eebdbec", algorithm=MD5, cnonce="{RFC7616_CNONCE}", qop=auth, nc=00000001, opaque="{RFC7616_OPAQUE}""#
        )
    );
}

#[test]
fn rfc7616_sha256_example() {
    let a = digest_authorization(
        &rfc7616_challenge("SHA-256"),
        "GET",
        "/dir/index.html",
        &creds("Mufasa", "Circle of Life"),
        RFC7616_CNONCE,
        1,
    )
    .unwrap();
    assert_eq!(
        param(&a, "response"),
        Some("753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")
    );
    assert_eq!(param(&a, "algorithm"), Some("SHA-256"));
    assert_eq!(param(&a, "qop"), Some("auth"));
    assert_eq!(param(&a, "nc"), Some("00000001"));
}

#[test]
fn rfc2617_example() {
    let challenge = r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
    let a = digest_authorization(
        challenge,
        "GET",
        "/dir/index.html",
        &creds("Mufasa", "Circle Of Life"),
        "0a4f113b",
        1,
    )
    .unwrap();
    assert_eq!(
        param(&a, "response"),
        Some("6629fae49393a05397450978507c4ef1")
    );
    assert_eq!(
        param(&a, "opaque"),
        Some("5ccc069c403ebaf9f0171e9517f40e41")
    );
}

#[test]
fn legacy_md5_without_qop_rfc2069_example() {
    let challenge =
        r#"Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093""#;
    let a = digest_authorization(
        challenge,
        "GET",
        "/dir/index.html",
        &creds("Mufasa", "CircleOfLife"),
        "ignored",
        1,
    )
    .unwrap();
    assert_eq!(
        param(&a, "response"),
        Some("1949323746fe6a43ef61f9606e7febea")
    );
    assert_eq!(param(&a, "qop"), None);
    assert_eq!(param(&a, "cnonce"), None);
    assert_eq!(param(&a, "nc"), None);
}

/// Values cross-checked with Python's hashlib (no RFC example exists for these).
#[test]
fn sip_invite_sha512_256_and_md5_sess() {
    let uri = "sip:line@sub.zendesk.sip.twilio.com";
    let c = creds("alice", "s3cret");
    let a = digest_authorization(
        r#"Digest realm="sip.example.com", nonce="abc123", qop="auth", algorithm=SHA-512-256"#,
        "INVITE",
        uri,
        &c,
        "c0ffee",
        2,
    )
    .unwrap();
    assert_eq!(
        param(&a, "response"),
        Some("9e9471cb14a1854a638513ceda2887d15a9909794292d8b0ed650a0d50717065")
    );
    assert_eq!(param(&a, "nc"), Some("00000002"));
    let a = digest_authorization(
        r#"Digest realm="sip.example.com", nonce="abc123", qop=auth, algorithm=md5-sess"#,
        "INVITE",
        uri,
        &c,
        "c0ffee",
        1,
    )
    .unwrap();
    assert_eq!(
        param(&a, "response"),
        Some("3610975ac6374b8f9f676e1cfed65f7a")
    );
    assert_eq!(param(&a, "algorithm"), Some("MD5-sess"));
}

#[test]
fn scheme_and_algorithm_names_are_case_insensitive() {
    let c = DigestChallenge::parse(r#"digest realm="r", nonce="n", qop="auth", algorithm=sha-256"#)
        .unwrap();
    assert_eq!(c.algorithm, DigestAlgorithm::Sha256);
    assert!(c.qop_auth);
    assert!(!c.stale);
}

#[test]
fn stale_and_whitespace_around_equals() {
    let c = DigestChallenge::parse("Digest realm = \"r\" , nonce=\"n\",stale=TRUE,qop=\"auth\"")
        .unwrap();
    assert!(c.stale);
    assert_eq!(c.realm, "r");
}

#[test]
fn unsupported_algorithm_is_an_error() {
    assert_eq!(
        DigestChallenge::parse(r#"Digest realm="r", nonce="n", qop="auth", algorithm=SHA-1"#),
        Err(DigestError::UnsupportedAlgorithm("SHA-1".into()))
    );
}

#[test]
fn auth_int_only_is_an_error() {
    assert_eq!(
        DigestChallenge::parse(r#"Digest realm="r", nonce="n", qop="auth-int""#),
        Err(DigestError::UnsupportedQop)
    );
    assert!(DigestChallenge::parse(r#"Digest realm="r", nonce="n", qop="auth-int,auth""#).is_ok());
}

#[test]
fn sha256_without_qop_is_an_error() {
    assert_eq!(
        DigestChallenge::parse(r#"Digest realm="r", nonce="n", algorithm=SHA-256"#),
        Err(DigestError::QopRequired("SHA-256"))
    );
}

#[test]
fn malformed_challenges_are_errors() {
    assert_eq!(
        DigestChallenge::parse(r#"Basic realm="r""#),
        Err(DigestError::NotDigest)
    );
    assert_eq!(
        DigestChallenge::parse(r#"Digest nonce="n""#),
        Err(DigestError::Missing("realm"))
    );
    assert_eq!(
        DigestChallenge::parse(r#"Digest realm="r""#),
        Err(DigestError::Missing("nonce"))
    );
    for bad in [
        "Digest",
        "Digest ",
        r#"Digest realm="r, nonce="n""#,
        r#"Digest realm="r" nonce="n""#,
        r#"Digest realm="r", realm="s", nonce="n""#,
        r#"Digest realm=, nonce="n""#,
        r#"Digest =x, nonce="n""#,
        r#"Digest realm="r\"#,
    ] {
        assert!(
            matches!(DigestChallenge::parse(bad), Err(DigestError::Malformed(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        DigestChallenge::parse("Digest realm=\"r\u{1}\", nonce=\"n\""),
        Err(DigestError::Malformed("realm"))
    ));
}

#[test]
fn hostile_challenges_never_panic() {
    for v in [
        "€ x=1",
        "Digest € x=1",
        "Digest realm=\"€\\",
        "Digest realm=\"a\\€\", nonce=é",
        "Digest ,,,",
        "Digest a=\"",
        "\u{0}",
        "Digest realm=\"x\", nonce=\"y\", qop=\"\"",
    ] {
        let _ = DigestChallenge::parse(v);
    }
    let c = DigestChallenge::parse("Digest realm=\"a\\€\", nonce=\"n\"").unwrap();
    assert_eq!(c.realm, "a€");
}

#[test]
fn echoed_values_are_quoted_safely() {
    let c = DigestChallenge::parse(r#"Digest realm="a\"b", nonce="n\\", qop="auth""#).unwrap();
    assert_eq!(c.realm, "a\"b");
    let a = c
        .answer("INVITE", "sip:x@y.example", &creds("u\"ser", "p"), "cn", 1)
        .unwrap();
    assert!(a.contains(r#"username="u\"ser""#), "{a}");
    assert!(a.contains(r#"realm="a\"b""#), "{a}");
    assert!(a.contains(r#"nonce="n\\""#), "{a}");
}

#[test]
fn bad_request_inputs_are_refused() {
    let c = DigestChallenge::parse(r#"Digest realm="r", nonce="n", qop="auth""#).unwrap();
    let ok = creds("u", "p");
    assert_eq!(
        c.answer("INVITE", "sip:x@y", &ok, "", 1),
        Err(DigestError::BadInput("cnonce"))
    );
    assert_eq!(
        c.answer("INVITE", "sip:x@y", &ok, "cn", 0),
        Err(DigestError::BadInput("nc"))
    );
    assert_eq!(
        c.answer("INV ITE", "sip:x@y", &ok, "cn", 1),
        Err(DigestError::BadInput("method"))
    );
    assert_eq!(
        c.answer("INVITE", "sip:x@y\r\n", &ok, "cn", 1),
        Err(DigestError::BadInput("uri"))
    );
    assert_eq!(
        c.answer("INVITE", "sip:x@y", &creds("u\n", "p"), "cn", 1),
        Err(DigestError::BadInput("username"))
    );
}

#[test]
fn over_long_answer_is_refused() {
    let c = DigestChallenge::parse(&format!(
        r#"Digest realm="r", nonce="{}", qop="auth""#,
        "n".repeat(1000)
    ))
    .unwrap();
    assert!(matches!(
        c.answer("INVITE", "sip:x@y", &creds("u", "p"), "cn", 1),
        Err(DigestError::TooLong(_))
    ));
}

#[test]
fn first_supported_challenge_is_answered() {
    let c = DigestChallenge::first_supported([
        r#"Digest realm="r", nonce="n1", qop="auth", algorithm=SHA-1"#,
        r#"Digest realm="r", nonce="n2", qop="auth", algorithm=SHA-256"#,
        r#"Digest realm="r", nonce="n3", qop="auth", algorithm=MD5"#,
    ])
    .unwrap();
    assert_eq!(c.nonce, "n2");
    assert_eq!(
        DigestChallenge::first_supported([r#"Basic realm="r""#]),
        Err(DigestError::NotDigest)
    );
    assert_eq!(
        DigestChallenge::first_supported([]),
        Err(DigestError::NoneSupported)
    );
}

#[test]
fn challenge_kind_headers() {
    let www = ChallengeKind::from_status(401).unwrap();
    assert_eq!(www.challenge_header(), "WWW-Authenticate");
    assert_eq!(www.authorization_header(), "Authorization");
    let proxy = ChallengeKind::from_status(407).unwrap();
    assert_eq!(proxy.challenge_header(), "Proxy-Authenticate");
    assert_eq!(proxy.authorization_header(), "Proxy-Authorization");
    assert_eq!(ChallengeKind::from_status(403), None);
}

/// RFC 7616 3.4.4; values cross-checked with Python's hashlib.
#[test]
fn userhash_sends_the_hashed_username_but_signs_with_the_plain_one() {
    let a = digest_authorization(
        r#"Digest realm="sip.example.com", nonce="abc123", qop="auth", algorithm=SHA-256, userhash=true"#,
        "INVITE",
        "sip:line@sub.zendesk.sip.twilio.com",
        &creds("alice", "s3cret"),
        "c0ffee",
        1,
    )
    .unwrap();
    assert_eq!(
        param(&a, "username"),
        Some("3ef6cae3778f461af4a4c6187df649a11a4dbf1e61a07ecf0dba06ceab83c9a1")
    );
    assert_eq!(
        param(&a, "response"),
        Some("03ab4a3af062ff1895f25fcfd47ab723bd85681033ecc954b8f2f1b91e9445be")
    );
    assert_eq!(param(&a, "userhash"), Some("true"));
}
