//! The verifier against the client of `digest.rs` and against what an attacker sends.

use super::*;
use crate::sip::auth::{DigestChallenge, DigestCredentials};

const T0: u64 = 1_800_000_000;
const URI: &str = "sip:+14155550100@handoff.example";

fn cfg(both: bool) -> VerifierConfig {
    VerifierConfig {
        realm: "handoff".into(),
        username: "agent".into(),
        password: "s3cret".into(),
        offer: if both { Offer::Both } else { Offer::Sha256 },
    }
}

/// SHA-256 only, or (`true`) SHA-256 then MD5.
fn verifier(both: bool) -> DigestVerifier {
    DigestVerifier::with_secret(&cfg(both), [7; 32])
}

fn req<'a>(call_id: &'a str, cseq: u32) -> AuthRequest<'a> {
    AuthRequest {
        method: "INVITE",
        request_uri: URI,
        call_id,
        cseq,
    }
}

/// The client's answer to challenge `i` of a 407 made at `at`.
fn answer(v: &DigestVerifier, at: u64, i: usize, password: &str, uri: &str, nc: u32) -> String {
    answer_to(&v.challenges(at, false)[i], password, uri, nc)
}

/// The client's answer to one challenge value.
fn answer_to(challenge: &str, password: &str, uri: &str, nc: u32) -> String {
    DigestChallenge::parse(challenge)
        .unwrap()
        .answer(
            "INVITE",
            uri,
            &DigestCredentials {
                username: "agent",
                password,
            },
            "c0ffee",
            nc,
        )
        .unwrap()
}

#[test]
fn no_credentials_get_a_sha256_challenge_then_md5_when_allowed() {
    let ch = verifier(false).challenges(T0, false);
    assert_eq!(ch.len(), 1);
    assert!(ch[0].contains("algorithm=SHA-256"), "{}", ch[0]);
    assert!(ch[0].contains("qop=\"auth\""));
    assert!(!ch[0].contains("stale"));
    let ch = verifier(true).challenges(T0, true);
    assert_eq!(ch.len(), 2);
    assert!(ch[0].contains("algorithm=SHA-256"));
    assert!(ch[1].contains("algorithm=MD5"));
    assert!(ch[1].contains("stale=true"));
    let v = verifier(false);
    assert_eq!(
        v.verify(&req("a", 1), [], T0),
        Verdict::Challenge { stale: false }
    );
}

#[test]
fn md5_only_offers_and_takes_md5_alone() {
    let mut c = cfg(false);
    c.offer = Offer::Md5;
    let v = DigestVerifier::with_secret(&c, [7; 32]);
    let ch = v.challenges(T0, false);
    assert_eq!(ch.len(), 1);
    assert!(ch[0].contains("algorithm=MD5"));
    let md5 = answer(&v, T0, 0, "s3cret", URI, 1);
    assert_eq!(
        v.verify(&req("a", 1), [md5.as_str()], T0 + 1),
        Verdict::Authorized
    );
    let sha = answer(&verifier(false), T0, 0, "s3cret", URI, 1);
    assert_eq!(
        v.verify(&req("b", 1), [sha.as_str()], T0 + 1),
        Verdict::Refused(Refusal::Unsupported)
    );
}

#[test]
fn the_right_answer_is_authorized_with_either_offered_algorithm() {
    let v = verifier(true);
    let sha = answer(&v, T0, 0, "s3cret", URI, 1);
    assert_eq!(
        v.verify(&req("a", 1), [sha.as_str()], T0 + 1),
        Verdict::Authorized
    );
    // Another 407 (in the same second): its own nonce.
    let md5 = answer(&v, T0, 1, "s3cret", URI, 1);
    assert_eq!(
        v.verify(&req("b", 1), [md5.as_str()], T0 + 2),
        Verdict::Authorized
    );
}

#[test]
fn two_challenges_in_one_second_have_different_nonces() {
    let v = verifier(false);
    assert_ne!(v.challenges(T0, false), v.challenges(T0, false));
    // So two callers' first answers (nc=1 each) are both taken.
    let a = answer(&v, T0, 0, "s3cret", URI, 1);
    let b = answer(&v, T0, 0, "s3cret", URI, 1);
    assert_eq!(
        v.verify(&req("a", 1), [a.as_str()], T0),
        Verdict::Authorized
    );
    assert_eq!(
        v.verify(&req("b", 1), [b.as_str()], T0),
        Verdict::Authorized
    );
}

#[test]
fn a_wrong_password_is_refused() {
    let v = verifier(false);
    let a = answer(&v, T0, 0, "guess", URI, 1);
    assert_eq!(
        v.verify(&req("a", 1), [a.as_str()], T0 + 1),
        Verdict::Refused(Refusal::BadResponse)
    );
}

#[test]
fn another_user_name_is_refused() {
    let v = verifier(false);
    let a = answer(&v, T0, 0, "s3cret", URI, 1).replace("\"agent\"", "\"admin\"");
    assert_eq!(
        v.verify(&req("a", 1), [a.as_str()], T0 + 1),
        Verdict::Refused(Refusal::UnknownUser)
    );
}

#[test]
fn credentials_for_another_realm_are_not_ours_and_get_a_challenge() {
    let v = verifier(false);
    let a = answer(&v, T0, 0, "s3cret", URI, 1).replace("realm=\"handoff\"", "realm=\"other\"");
    assert_eq!(
        v.verify(&req("a", 1), [a.as_str()], T0 + 1),
        Verdict::Challenge { stale: false }
    );
    // A Basic header is not ours either.
    assert_eq!(
        v.verify(&req("a", 1), ["Basic YWdlbnQ6czNjcmV0"], T0),
        Verdict::Challenge { stale: false }
    );
    // Ours found among others.
    let good = answer(&v, T0, 0, "s3cret", URI, 1);
    assert_eq!(
        v.verify(&req("a", 1), [a.as_str(), good.as_str()], T0 + 1),
        Verdict::Authorized
    );
}

#[test]
fn an_answer_for_another_uri_is_refused() {
    let v = verifier(false);
    let a = answer(&v, T0, 0, "s3cret", "sip:+19005550100@handoff.example", 1);
    assert_eq!(
        v.verify(&req("a", 1), [a.as_str()], T0 + 1),
        Verdict::Refused(Refusal::UriMismatch)
    );
}

#[test]
fn a_replayed_nonce_count_is_refused_but_a_retransmission_is_taken() {
    let v = verifier(false);
    let challenge = v.challenges(T0, false).remove(0);
    let a = answer_to(&challenge, "s3cret", URI, 1);
    assert_eq!(
        v.verify(&req("a", 1), [a.as_str()], T0 + 1),
        Verdict::Authorized
    );
    // The same INVITE again (a UDP retransmission): same Call-ID and CSeq.
    assert_eq!(
        v.verify(&req("a", 1), [a.as_str()], T0 + 2),
        Verdict::Authorized
    );
    // The same header on another request: a replay.
    assert_eq!(
        v.verify(&req("b", 1), [a.as_str()], T0 + 2),
        Verdict::Refused(Refusal::Replay)
    );
    // The retransmission window is bounded.
    assert_eq!(
        v.verify(&req("a", 1), [a.as_str()], T0 + 1 + RETRANSMIT_SECS + 1),
        Verdict::Refused(Refusal::Replay)
    );
    // A higher count with the same nonce is a new request.
    let a2 = answer_to(&challenge, "s3cret", URI, 2);
    assert_eq!(
        v.verify(&req("c", 1), [a2.as_str()], T0 + 3),
        Verdict::Authorized
    );
    let a1 = answer_to(&challenge, "s3cret", URI, 1);
    assert_eq!(
        v.verify(&req("d", 1), [a1.as_str()], T0 + 3),
        Verdict::Refused(Refusal::Replay)
    );
}

#[test]
fn an_old_nonce_is_stale_with_the_right_password_and_refused_with_a_wrong_one() {
    let v = verifier(false);
    let late = T0 + NONCE_TTL_SECS + 1;
    let a = answer(&v, T0, 0, "s3cret", URI, 1);
    assert_eq!(
        v.verify(&req("a", 1), [a.as_str()], late),
        Verdict::Challenge { stale: true }
    );
    let bad = answer(&v, T0, 0, "guess", URI, 1);
    assert_eq!(
        v.verify(&req("a", 1), [bad.as_str()], late),
        Verdict::Refused(Refusal::BadResponse)
    );
    // A nonce "from the future" (a forged time cannot pass the MAC; a clock step can).
    let a = answer(&v, T0 + 60, 0, "s3cret", URI, 1);
    assert_eq!(
        v.verify(&req("a", 1), [a.as_str()], T0),
        Verdict::Challenge { stale: true }
    );
}

#[test]
fn a_nonce_this_process_did_not_make_is_refused() {
    let v = verifier(false);
    let other = DigestVerifier::with_secret(&cfg(false), [8; 32]);
    let a = answer(&other, T0, 0, "s3cret", URI, 1);
    assert_eq!(
        v.verify(&req("a", 1), [a.as_str()], T0 + 1),
        Verdict::Refused(Refusal::BadNonce)
    );
    // A nonce edited to look younger.
    let good = answer(&v, T0, 0, "s3cret", URI, 1);
    let edited = good.replace(&format!("{T0:x}-"), &format!("{:x}-", T0 + 1000));
    assert_eq!(
        v.verify(&req("a", 1), [edited.as_str()], T0 + 1000),
        Verdict::Refused(Refusal::BadNonce)
    );
}

#[test]
fn algorithms_and_qops_not_offered_are_refused() {
    let v = verifier(false);
    let md5 = answer(&verifier(true), T0, 1, "s3cret", URI, 1);
    assert_eq!(
        v.verify(&req("a", 1), [md5.as_str()], T0 + 1),
        Verdict::Refused(Refusal::Unsupported)
    );
    let sha = answer(&v, T0, 0, "s3cret", URI, 1);
    for (from, to) in [
        ("algorithm=SHA-256", "algorithm=SHA-512-256"),
        ("algorithm=SHA-256", "algorithm=SHA-256-sess"),
        ("algorithm=SHA-256", "algorithm=ROT13"),
        ("qop=auth", "qop=auth-int"),
        (", qop=auth", ""),
        ("nc=", "userhash=true, nc="),
    ] {
        let a = sha.replace(from, to);
        assert_eq!(
            v.verify(&req("a", 1), [a.as_str()], T0 + 1),
            Verdict::Refused(Refusal::Unsupported),
            "{to}"
        );
    }
    // No algorithm means MD5, which this trunk does not take.
    let a = sha.replace(", algorithm=SHA-256", "");
    assert_eq!(
        v.verify(&req("a", 1), [a.as_str()], T0 + 1),
        Verdict::Refused(Refusal::Unsupported)
    );
}

#[test]
fn garbage_truncation_and_huge_values_never_panic_and_never_pass() {
    let v = verifier(true);
    let good = answer(&v, T0, 0, "s3cret", URI, 1);
    // Every truncation of a good header (on char boundaries).
    for end in 0..good.len() {
        if !good.is_char_boundary(end) {
            continue;
        }
        let cut = &good[..end];
        assert_ne!(
            v.verify(&req("t", 1), [cut], T0 + 1),
            Verdict::Authorized,
            "{cut}"
        );
    }
    let huge = format!("Digest realm=\"handoff\", nonce=\"{}\"", "x".repeat(10_000));
    assert_eq!(
        v.verify(&req("a", 1), [huge.as_str()], T0),
        Verdict::Refused(Refusal::Malformed)
    );
    for junk in [
        "Digest",
        "Digest ",
        "Digest realm=\"handoff\"",
        "Digest realm=\"handoff\", realm=\"handoff\"",
        "Digest realm=\"handoff\", nonce=\"\u{1F600}\", username=\"agent\", uri=\"x\", response=\"00\", cnonce=\"a\", nc=00000001, qop=auth",
        "Digest realm=\"handoff\", nonce=\"-\", username=\"agent\", uri=\"x\", response=\"00\", cnonce=\"a\", nc=00000001, qop=auth, algorithm=SHA-256",
        "Digest realm=\"handoff\", nonce=\"ffffffffffffffffff-00\", username=\"agent\", uri=\"x\", response=\"00\", cnonce=\"a\", nc=00000001, qop=auth, algorithm=SHA-256",
        "Digest realm=\"handoff\", nc=zzzzzzzz",
        "Digest realm=\"han",
        "\u{0}\u{1}\u{2}",
    ] {
        assert_ne!(v.verify(&req("a", 1), [junk], T0), Verdict::Authorized, "{junk}");
    }
    // nc of zero, or not eight hex digits.
    for (from, to) in [("nc=00000001", "nc=00000000"), ("nc=00000001", "nc=1")] {
        let a = good.replace(from, to);
        assert_eq!(
            v.verify(&req("a", 1), [a.as_str()], T0 + 1),
            Verdict::Refused(Refusal::Malformed)
        );
    }
}

#[test]
fn the_nonce_table_is_bounded_and_an_evicted_nonce_is_stale_not_replayable() {
    let mut t = NonceTable::new(3);
    for i in 0..3u64 {
        assert_eq!(
            t.record(&format!("n{i}"), T0 + i, 1, 1, T0 + i),
            NcCheck::Fresh
        );
    }
    // A fourth evicts the oldest.
    assert_eq!(t.record("n3", T0 + 3, 1, 1, T0 + 3), NcCheck::Fresh);
    assert_eq!(t.len(), 3);
    // The evicted nonce, replayed: not taken.
    assert_eq!(t.record("n0", T0, 1, 9, T0 + 4), NcCheck::Forgotten);
    // Expired nonces leave the table on their own.
    assert_eq!(t.record("late", T0 + 1000, 1, 1, T0 + 1000), NcCheck::Fresh);
    assert_eq!(t.len(), 1);
}
