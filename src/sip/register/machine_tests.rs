//! The registration machine on a fake clock, answered by handoff's own digest verifier
//! playing the registrar.

use super::*;
use crate::sip::auth::server::{AuthRequest, DigestVerifier, Offer, Verdict, VerifierConfig};

const URI: &str = "sip:registrar.example.com";

fn params(creds: bool) -> Params {
    Params {
        request_uri: URI.into(),
        expires: 600,
        credentials: creds.then(|| ("alice".into(), "pw-of-alice".into())),
    }
}

fn registrar() -> DigestVerifier {
    DigestVerifier::with_secret(
        &VerifierConfig {
            realm: "carrier".into(),
            username: "alice".into(),
            password: "pw-of-alice".into(),
            offer: Offer::Sha256,
        },
        [3; 32],
    )
}

fn sent(actions: &[Action]) -> Request {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Send(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Send in {actions:?}"))
}

fn resp(status: u16, cseq: u32) -> Response {
    Response {
        status,
        cseq,
        ..Default::default()
    }
}

fn challenge_401(cseq: u32, stale: bool) -> Event {
    Event::Response(Response {
        challenges: registrar().challenges(1_800_000_000, stale),
        ..resp(401, cseq)
    })
}

fn ok(cseq: u32, expires: u32) -> Event {
    Event::Response(Response {
        expires: Some(expires),
        ..resp(200, cseq)
    })
}

#[test]
fn registers_answers_the_challenge_and_refreshes_at_half_with_one_call_id_and_rising_cseq() {
    let t0 = Instant::now();
    let mut m = RegisterMachine::new(params(true), t0, 42);
    assert_eq!(m.next_wakeup(), Some(t0));
    let first = sent(&m.handle(t0, Event::Tick));
    assert_eq!(
        (first.cseq, first.expires, first.authorization.is_none()),
        (1, 600, true)
    );
    let a = m.handle(t0, challenge_401(1, false));
    assert!(a.contains(&Action::Count(Outcome::Challenged)));
    let second = sent(&a);
    assert_eq!(second.cseq, 2);
    let (name, value) = second.authorization.clone().expect("credentials");
    assert_eq!(name, "Authorization");
    // The registrar takes the answer.
    let req = AuthRequest {
        method: "REGISTER",
        request_uri: URI,
        call_id: "c",
        cseq: 2,
    };
    // Same secret: this registrar made the nonce.
    assert_eq!(
        registrar().verify(&req, [value.as_str()], 1_800_000_000),
        Verdict::Authorized
    );

    let a = m.handle(t0, ok(2, 60));
    assert!(a.contains(&Action::Registered { expires: 60 }));
    assert!(a.contains(&Action::Count(Outcome::Ok)));
    assert_eq!(m.next_wakeup(), Some(t0 + Duration::from_secs(30)));
    assert!(m
        .handle(t0 + Duration::from_secs(29), Event::Tick)
        .is_empty());
    let refresh = sent(&m.handle(t0 + Duration::from_secs(30), Event::Tick));
    assert_eq!((refresh.cseq, refresh.authorization), (3, None));
}

#[test]
fn a_second_challenge_after_an_answer_fails_but_a_stale_one_is_answered() {
    let t0 = Instant::now();
    let mut m = RegisterMachine::new(params(true), t0, 7);
    m.handle(t0, Event::Tick);
    m.handle(t0, challenge_401(1, false));
    // stale=true: answered again.
    let a = m.handle(t0, challenge_401(2, true));
    assert_eq!(sent(&a).cseq, 3);
    // Not stale after an answer: the password is wrong.
    let a = m.handle(t0, challenge_401(3, false));
    assert!(a.contains(&Action::Count(Outcome::Failed)), "{a:?}");
    assert!(!a.iter().any(|x| matches!(x, Action::Send(_))));
    let wake = m.next_wakeup().expect("a retry");
    assert!(wake >= t0 + BACKOFF_BASE / 2 && wake <= t0 + BACKOFF_BASE);
}

#[test]
fn a_challenge_without_credentials_is_a_failure() {
    let t0 = Instant::now();
    let mut m = RegisterMachine::new(params(false), t0, 7);
    m.handle(t0, Event::Tick);
    let a = m.handle(t0, challenge_401(1, false));
    assert!(a.contains(&Action::Count(Outcome::Failed)));
}

#[test]
fn a_423_raises_the_expires_to_min_expires_and_sends_again() {
    let t0 = Instant::now();
    let mut m = RegisterMachine::new(params(false), t0, 7);
    m.handle(t0, Event::Tick);
    let a = m.handle(
        t0,
        Event::Response(Response {
            min_expires: Some(1800),
            ..resp(423, 1)
        }),
    );
    assert_eq!(sent(&a).expires, 1800);
    // A Min-Expires that is not higher cannot help: a failure, not a loop.
    let a = m.handle(
        t0,
        Event::Response(Response {
            min_expires: Some(1800),
            ..resp(423, 2)
        }),
    );
    assert!(a.contains(&Action::Count(Outcome::Failed)));
}

#[test]
fn failures_back_off_exponentially_capped_honour_retry_after_and_recover() {
    let t0 = Instant::now();
    let mut m = RegisterMachine::new(params(false), t0, 99);
    let mut now = t0;
    let mut last = Duration::ZERO;
    for n in 1..=12u32 {
        let r = sent(&m.handle(now, Event::Tick));
        m.handle(now, Event::Failed { cseq: r.cseq });
        let wait = m.next_wakeup().expect("retry") - now;
        let full = BACKOFF_BASE.saturating_mul(1 << (n - 1)).min(BACKOFF_CAP);
        assert!(wait >= full / 2 && wait <= full, "failure {n}: {wait:?}");
        assert!(wait <= BACKOFF_CAP);
        last = wait;
        now += wait;
    }
    assert!(last >= BACKOFF_CAP / 2);
    // A 503's Retry-After, bounded.
    let r = sent(&m.handle(now, Event::Tick));
    m.handle(
        now,
        Event::Response(Response {
            retry_after: Some(100_000),
            ..resp(503, r.cseq)
        }),
    );
    assert_eq!(m.next_wakeup(), Some(now + MAX_RETRY_AFTER));
    now += MAX_RETRY_AFTER;
    let r = sent(&m.handle(now, Event::Tick));
    m.handle(now, ok(r.cseq, 600));
    // Recovered: the next failure starts from the base again.
    now += Duration::from_secs(300);
    let r = sent(&m.handle(now, Event::Tick));
    m.handle(now, Event::Failed { cseq: r.cseq });
    assert!(m.next_wakeup().expect("retry") - now <= BACKOFF_BASE);
}

#[test]
fn a_registration_whose_refreshes_fail_goes_down_when_it_expires() {
    let t0 = Instant::now();
    let mut m = RegisterMachine::new(params(false), t0, 5);
    m.handle(t0, Event::Tick);
    m.handle(t0, ok(1, 20));
    let mut now = t0 + Duration::from_secs(10);
    let mut down = None;
    while now < t0 + Duration::from_secs(40) {
        let a = m.handle(now, Event::Tick);
        if a.contains(&Action::Unregistered) {
            down = Some(now);
            break;
        }
        if let Some(Action::Send(r)) = a.iter().find(|x| matches!(x, Action::Send(_))) {
            m.handle(now, Event::Response(resp(503, r.cseq)));
        }
        now = m.next_wakeup().expect("wakes");
    }
    assert_eq!(down, Some(t0 + Duration::from_secs(20)));
}

#[test]
fn shutdown_unregisters_with_expires_zero_then_is_done() {
    let t0 = Instant::now();
    let mut m = RegisterMachine::new(params(true), t0, 5);
    m.handle(t0, Event::Tick);
    m.handle(t0, ok(1, 600));
    let a = m.handle(t0, Event::Shutdown);
    let r = sent(&a);
    assert_eq!((r.cseq, r.expires), (2, 0));
    // Its challenge is answered too.
    let r = sent(&m.handle(t0, challenge_401(2, false)));
    assert_eq!((r.cseq, r.expires, r.authorization.is_some()), (3, 0, true));
    let a = m.handle(t0, ok(3, 0));
    assert!(a.contains(&Action::Unregistered));
    assert!(a.contains(&Action::Done));
    assert!(m.is_done());
    // Not registered: done at once, nothing sent.
    let mut idle = RegisterMachine::new(params(true), t0, 5);
    assert_eq!(idle.handle(t0, Event::Shutdown), vec![Action::Done]);
}

#[test]
fn a_late_answer_to_an_earlier_register_is_ignored() {
    let t0 = Instant::now();
    let mut m = RegisterMachine::new(params(true), t0, 5);
    m.handle(t0, Event::Tick);
    m.handle(t0, challenge_401(1, false));
    assert!(m.handle(t0, ok(1, 600)).is_empty());
    assert!(m.handle(t0, Event::Failed { cseq: 1 }).is_empty());
    assert!(m
        .handle(t0, ok(2, 600))
        .contains(&Action::Registered { expires: 600 }));
}

#[test]
fn refresh_and_backoff_bounds() {
    assert_eq!(refresh_after(600), Duration::from_secs(300));
    assert_eq!(refresh_after(10), Duration::from_secs(5));
    assert_eq!(refresh_after(1), Duration::from_secs(1));
    assert_eq!(backoff(1, 0.0), BACKOFF_BASE / 2);
    assert_eq!(backoff(1, 1.0), BACKOFF_BASE);
    assert_eq!(backoff(u32::MAX, 1.0), BACKOFF_CAP);
}
