//! The in-memory table through the `SessionStore` trait, as the calls and the
//! sidecar see it.

use super::*;
use crate::session::store::{PatchOutcome, SessionPatch, SessionStore, StoreError};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::thread;

const LINGER: Duration = Duration::from_millis(20);
const PHONE: &str = "+14155551212";

/// The memory store's futures are ready when returned: one poll gives the answer
/// (what keeps the call's REFER-to-INVITE path free of waiting).
fn done<T>(mut f: super::StoreFuture<'_, T>) -> Result<T, StoreError> {
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a memory store future was not ready at once"),
    }
}

fn id(s: &str) -> SessionId {
    SessionId::parse(s).expect("valid test id")
}

fn live(sid: &str, org: &str) -> Session {
    Session::new(
        id(sid),
        org.into(),
        "agent-1".into(),
        Some(PHONE.into()),
        None,
        "+15550001111".into(),
    )
}

fn store(capacity: usize) -> Arc<dyn SessionStore> {
    Arc::new(SessionTable::new(capacity, LINGER))
}

fn ticket(s: &dyn SessionStore, sid: &str) -> Option<u64> {
    done(s.get(&id(sid)))
        .expect("read")
        .and_then(|s| s.zendesk_ticket_id)
}

/// `threads` threads stamp at once (released together); their outcomes.
fn stamp_at_once(s: &Arc<dyn SessionStore>, tickets: Vec<u64>) -> Vec<StampOutcome> {
    let go = Arc::new(Barrier::new(tickets.len()));
    let handles: Vec<_> = tickets
        .into_iter()
        .map(|t| {
            let (s, go) = (s.clone(), go.clone());
            thread::spawn(move || {
                go.wait();
                done(s.stamp_ticket("org-1", PHONE, t)).expect("stamp")
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("stamping thread"))
        .collect()
}

#[test]
fn concurrent_stamps_of_different_tickets_first_wins_and_the_rest_conflict() {
    for _ in 0..20 {
        let s = store(10);
        done(s.create(live("a", "org-1"))).unwrap();
        let outcomes = stamp_at_once(&s, (1..=8).collect());
        let winner = ticket(s.as_ref(), "a").expect("one ticket stamped");
        let stamped = outcomes
            .iter()
            .filter(|o| **o == StampOutcome::Stamped(id("a")))
            .count();
        assert_eq!(stamped, 1, "{outcomes:?}");
        for o in &outcomes {
            match o {
                StampOutcome::Stamped(_) => {}
                StampOutcome::Conflict { session, existing } => {
                    assert_eq!((session, *existing), (&id("a"), winner));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[test]
fn concurrent_stamps_of_one_ticket_stamp_one_session_once() {
    for _ in 0..20 {
        let s = store(10);
        for sid in ["a", "b", "c"] {
            done(s.create(live(sid, "org-1"))).unwrap();
        }
        let outcomes = stamp_at_once(&s, vec![42; 8]);
        let stamped: Vec<_> = outcomes
            .iter()
            .filter(|o| matches!(o, StampOutcome::Stamped(_)))
            .collect();
        assert_eq!(stamped.len(), 1, "{outcomes:?}");
        let StampOutcome::Stamped(winner) = stamped[0] else {
            unreachable!()
        };
        assert!(outcomes
            .iter()
            .all(|o| o == stamped[0] || *o == StampOutcome::AlreadyStamped(winner.clone())));
        let with_ticket = ["a", "b", "c"]
            .iter()
            .filter(|sid| ticket(s.as_ref(), sid) == Some(42))
            .count();
        assert_eq!(with_ticket, 1);
    }
}

#[test]
fn stamp_is_idempotent_first_wins_and_stays_in_its_org() {
    let s = store(10);
    done(s.create(live("a", "org-1"))).unwrap();
    let stamp = |t| done(s.stamp_ticket("org-1", PHONE, t)).unwrap();
    assert_eq!(stamp(7), StampOutcome::Stamped(id("a")));
    assert_eq!(stamp(7), StampOutcome::AlreadyStamped(id("a")));
    assert_eq!(
        stamp(8),
        StampOutcome::Conflict {
            session: id("a"),
            existing: 7
        }
    );
    assert_eq!(ticket(s.as_ref(), "a"), Some(7));
    assert_eq!(
        done(s.stamp_ticket("org-2", PHONE, 9)).unwrap(),
        StampOutcome::NoSession
    );
}

#[test]
fn ended_sessions_are_not_stamped_but_stay_readable() {
    let s = store(10);
    done(s.create(live("a", "org-1"))).unwrap();
    let end = SystemTime::now();
    done(s.mark_ended(&id("a"), end)).unwrap();
    assert_eq!(
        done(s.stamp_ticket("org-1", PHONE, 7)).unwrap(),
        StampOutcome::NoSession
    );
    let got = done(s.get(&id("a"))).unwrap().expect("lingering");
    assert_eq!(got.ended_at, Some(end));
    assert_eq!(got.zendesk_ticket_id, None);
    assert!(done(s.live_by_phone(PHONE)).unwrap().is_empty());
}

#[test]
fn answer_and_end_times_are_the_callers_and_the_first_stays() {
    let s = store(10);
    done(s.create(live("a", "org-1"))).unwrap();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let t1 = t0 + Duration::from_secs(5);
    done(s.mark_answered(&id("a"), t0)).unwrap();
    done(s.mark_answered(&id("a"), t1)).unwrap();
    done(s.mark_ended(&id("a"), t1)).unwrap();
    done(s.mark_ended(&id("a"), t1 + Duration::from_secs(1))).unwrap();
    let got = done(s.get(&id("a"))).unwrap().expect("present");
    assert_eq!((got.answered_at, got.ended_at), (Some(t0), Some(t1)));
}

#[test]
fn capacity_refuses_when_live_and_evicts_the_oldest_lingering() {
    let s = store(2);
    done(s.create(live("a", "org-1"))).unwrap();
    match done(s.create(live("a", "org-1"))) {
        Err(StoreError::Insert(InsertError::Duplicate(d))) => assert_eq!(d, "a"),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    done(s.create(live("b", "org-1"))).unwrap();
    match done(s.create(live("c", "org-1"))) {
        Err(StoreError::Insert(InsertError::Full(2))) => {}
        other => panic!("expected Full(2), got {other:?}"),
    }
    done(s.mark_ended(&id("a"), SystemTime::now())).unwrap();
    done(s.create(live("c", "org-1"))).expect("room made from the lingering one");
    assert!(done(s.get(&id("a"))).unwrap().is_none());
    let counts = done(s.counts()).unwrap();
    assert_eq!((counts.held, counts.live), (2, 2));
}

#[test]
fn ended_sessions_linger_then_are_swept() {
    let s = store(10);
    done(s.create(live("a", "org-1"))).unwrap();
    done(s.create(live("b", "org-1"))).unwrap();
    done(s.mark_ended(&id("a"), SystemTime::now())).unwrap();
    assert_eq!(done(s.sweep()).unwrap(), 0, "still lingering");
    thread::sleep(LINGER + Duration::from_millis(10));
    assert_eq!(done(s.sweep()).unwrap(), 1);
    assert!(done(s.get(&id("a"))).unwrap().is_none());
    assert!(done(s.get(&id("b"))).unwrap().is_some(), "live stays");
}

#[test]
fn attach_contact_keeps_an_api_contact_id_and_merges_details() {
    let s = store(10);
    done(s.create(live("a", "org-1"))).unwrap();
    let first = ContactDetails {
        name: Some("Alice".into()),
        email: Some("a@example.com".into()),
        ..Default::default()
    };
    let attached = done(s.attach_contact(&id("a"), "c-1".into(), first)).unwrap();
    assert_eq!(attached.as_deref(), Some("c-1"));
    let second = ContactDetails {
        name: Some("Alice Doe".into()),
        ..Default::default()
    };
    let attached = done(s.attach_contact(&id("a"), "c-2".into(), second)).unwrap();
    assert_eq!(attached.as_deref(), Some("c-1"), "the first id stays");
    let got = done(s.get(&id("a"))).unwrap().expect("present");
    let c = got.contact.expect("details");
    assert_eq!(c.name.as_deref(), Some("Alice Doe"));
    assert_eq!(c.email.as_deref(), Some("a@example.com"));
    let gone = done(s.attach_contact(&id("zz"), "c".into(), ContactDetails::default()));
    assert_eq!(gone.unwrap(), None);
}

#[test]
fn patch_merges_custom_data_within_the_limit() {
    let s = store(10);
    done(s.create(live("a", "org-1"))).unwrap();
    let patch = |k: &str, contact: Option<Option<String>>| SessionPatch {
        contact_id: contact,
        custom_data: [(k.to_owned(), "v".to_owned())].into(),
        max_custom_data: 1,
        summary: None,
    };
    match done(s.patch(&id("a"), patch("k1", Some(Some("c-9".into()))))).unwrap() {
        PatchOutcome::Patched(got) => {
            assert_eq!(got.contact_id.as_deref(), Some("c-9"));
            assert_eq!(got.custom_data.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        done(s.patch(&id("a"), patch("k2", Some(None)))).unwrap(),
        PatchOutcome::TooMany
    ));
    let got = done(s.get(&id("a"))).unwrap().expect("present");
    assert_eq!(
        got.contact_id.as_deref(),
        Some("c-9"),
        "a refused patch changes nothing"
    );
    assert!(matches!(
        done(s.patch(&id("zz"), patch("k", None))).unwrap(),
        PatchOutcome::NotFound
    ));
}
