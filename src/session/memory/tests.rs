use super::*;
use std::sync::Arc;
use std::thread;

const LINGER: Duration = Duration::from_millis(20);

fn id(s: &str) -> SessionId {
    SessionId::parse(s).expect("valid test id")
}

fn session(sid: &str, phone: Option<&str>) -> Session {
    Session::new(
        id(sid),
        "org-1".into(),
        "agent-1".into(),
        phone.map(str::to_owned),
        Some("Alice".into()),
        "+15550001111".into(),
    )
}

fn ids(sessions: &[Session]) -> Vec<&str> {
    sessions.iter().map(|s| s.id.as_str()).collect()
}

#[test]
fn random_session_id_is_32_lowercase_hex_and_unique() {
    let a = SessionId::new_random();
    let b = SessionId::new_random();
    assert_eq!(a.as_str().len(), 32);
    assert!(a
        .as_str()
        .bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    assert_ne!(a, b);
    assert_eq!(SessionId::parse(a.as_str()), Some(a.clone()));
    assert_eq!(a.to_string(), a.as_str());
}

#[test]
fn session_id_parse_accepts_only_safe_characters() {
    for good in ["a", "A-b_c.9", &"x".repeat(64)] {
        assert_eq!(
            SessionId::parse(good).map(|i| i.to_string()).as_deref(),
            Some(good)
        );
    }
    for bad in [
        "",
        &"x".repeat(65),
        "a b",
        "a\r\nX-Evil: 1",
        "a/b",
        "a;b",
        "ü",
        "a:b",
        "a%20",
    ] {
        assert_eq!(SessionId::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn new_session_is_live_and_unstamped() {
    let s = session("s1", Some("+14155551212"));
    assert!(s.is_live());
    assert_eq!(s.answered_at, None);
    assert_eq!(s.zendesk_ticket_id, None);
    assert_eq!(s.contact_id, None);
}

#[test]
fn insert_then_get_returns_a_copy() {
    let t = SessionTable::new(10, LINGER);
    assert!(t.is_empty());
    t.insert(session("s1", Some("+14155551212"))).unwrap();
    let got = t.get(&id("s1")).expect("present");
    assert_eq!(got.caller_phone.as_deref(), Some("+14155551212"));
    assert_eq!(got.caller_display_name.as_deref(), Some("Alice"));
    assert_eq!(t.len(), 1);
    assert_eq!(t.live_count(), 1);
    assert!(!t.is_empty());
    assert!(t.get(&id("nope")).is_none());
    t.assert_consistent();
}

#[test]
fn duplicate_id_is_refused_and_frees_its_slot() {
    let t = SessionTable::new(2, LINGER);
    t.insert(session("s1", Some("+14155551212"))).unwrap();
    assert_eq!(
        t.insert(session("s1", Some("+14155550000"))),
        Err(InsertError::Duplicate("s1".into()))
    );
    // The first one is untouched and the refused insert left no trace.
    assert_eq!(
        t.get(&id("s1")).unwrap().caller_phone.as_deref(),
        Some("+14155551212")
    );
    assert!(t.live_by_phone("+14155550000").is_empty());
    t.insert(session("s2", None)).unwrap();
    t.assert_consistent();
}

#[test]
fn insert_is_refused_when_full() {
    let t = SessionTable::new(2, LINGER);
    t.insert(session("s1", None)).unwrap();
    t.insert(session("s2", None)).unwrap();
    assert_eq!(t.insert(session("s3", None)), Err(InsertError::Full(2)));
    assert_eq!(t.len(), 2);
    t.assert_consistent();
}

#[test]
fn zero_capacity_refuses_everything() {
    let t = SessionTable::new(0, LINGER);
    assert_eq!(t.insert(session("s1", None)), Err(InsertError::Full(0)));
    assert!(t.is_empty());
}

#[test]
fn full_table_evicts_the_oldest_lingering_session_first() {
    let t = SessionTable::new(2, Duration::from_secs(300));
    t.insert(session("s1", None)).unwrap();
    t.insert(session("s2", None)).unwrap();
    t.mark_ended(&id("s2"));
    t.mark_ended(&id("s1"));
    // Full of lingering sessions: the one that ended first makes room.
    t.insert(session("s3", None)).unwrap();
    assert!(t.get(&id("s2")).is_none());
    assert!(t.get(&id("s1")).is_some());
    t.insert(session("s4", None)).unwrap();
    assert!(t.get(&id("s1")).is_none());
    assert_eq!(t.len(), 2);
    t.assert_consistent();
}

#[test]
fn live_sessions_are_never_evicted() {
    let t = SessionTable::new(2, Duration::from_secs(300));
    t.insert(session("s1", Some("+14155551212"))).unwrap();
    t.insert(session("s2", None)).unwrap();
    assert_eq!(t.insert(session("s3", None)), Err(InsertError::Full(2)));
    assert_eq!(t.live_count(), 2);
    assert_eq!(t.live_by_phone("+14155551212").len(), 1);
    t.assert_consistent();
}

#[test]
fn many_live_calls_from_one_number_are_indexed_and_unindexed() {
    let t = SessionTable::new(10_000, Duration::from_secs(300));
    for i in 0..2000 {
        t.insert(session(&format!("s{i}"), Some("+14155551212")))
            .unwrap();
    }
    assert_eq!(t.live_by_phone("+14155551212").len(), 2000);
    for i in 0..2000 {
        t.mark_ended(&id(&format!("s{i}")));
    }
    assert!(t.live_by_phone("+14155551212").is_empty());
    assert_eq!(t.index_len(), 0);
    assert_eq!(t.len(), 2000);
    t.assert_consistent();
}
#[test]
fn ended_session_leaves_live_by_phone_but_stays_readable_until_swept() {
    let t = SessionTable::new(10, LINGER);
    t.insert(session("s1", Some("+14155551212"))).unwrap();
    assert_eq!(ids(&t.live_by_phone("+14155551212")), ["s1"]);
    t.mark_ended(&id("s1"));
    assert!(t.live_by_phone("+14155551212").is_empty());
    assert_eq!(t.live_count(), 0);
    assert_eq!(t.len(), 1);
    // Late webhooks still see it.
    let s = t.get(&id("s1")).expect("lingering");
    assert!(!s.is_live());
    assert_eq!(t.sweep(), 0, "not yet past linger");
    assert!(t.get(&id("s1")).is_some());

    thread::sleep(LINGER * 2);
    assert!(t.get(&id("s1")).is_some(), "readable until the sweep");
    assert_eq!(t.sweep(), 1);
    assert!(t.get(&id("s1")).is_none());
    assert!(t.is_empty());
    t.assert_consistent();
}

#[test]
fn sweep_removes_index_entries_and_keeps_others() {
    let t = SessionTable::new(10, Duration::from_secs(60));
    t.insert(session("a", Some("+14155551212"))).unwrap();
    t.insert(session("b", Some("+14155551212"))).unwrap();
    t.insert(session("c", Some("+442079460018"))).unwrap();
    t.insert(session("d", None)).unwrap();
    assert_eq!(t.index_len(), 2);
    t.mark_ended(&id("a"));
    t.mark_ended(&id("c"));
    t.mark_ended(&id("d"));
    let later = Instant::now() + Duration::from_secs(61);
    assert_eq!(t.sweep_at(later), 3);
    // "+44..." had only c: its list is gone, not left empty.
    assert_eq!(t.index_len(), 1);
    assert_eq!(ids(&t.live_by_phone("+14155551212")), ["b"]);
    assert_eq!(t.len(), 1);
    t.assert_consistent();
    t.mark_ended(&id("b"));
    assert_eq!(t.sweep_at(later), 1);
    assert_eq!(t.index_len(), 0);
    t.assert_consistent();
}

#[test]
fn mark_ended_keeps_the_first_end_time() {
    let t = SessionTable::new(10, Duration::from_secs(60));
    t.insert(session("s1", None)).unwrap();
    t.mark_ended(&id("s1"));
    let first = t.get(&id("s1")).unwrap().ended_at;
    thread::sleep(Duration::from_millis(5));
    t.mark_ended(&id("s1"));
    assert_eq!(t.get(&id("s1")).unwrap().ended_at, first);
    t.mark_ended(&id("missing")); // no-op, no panic
}

#[test]
fn mark_answered_keeps_the_first_answer_time() {
    let t = SessionTable::new(10, LINGER);
    t.insert(session("s1", None)).unwrap();
    assert_eq!(t.get(&id("s1")).unwrap().answered_at, None);
    t.mark_answered(&id("s1"));
    let first = t.get(&id("s1")).unwrap().answered_at;
    assert!(first.is_some());
    thread::sleep(Duration::from_millis(5));
    t.mark_answered(&id("s1"));
    assert_eq!(t.get(&id("s1")).unwrap().answered_at, first);
    assert!(t.get(&id("s1")).unwrap().is_live());
    t.mark_answered(&id("missing"));
}

#[test]
fn live_by_phone_is_newest_first() {
    let t = SessionTable::new(10, LINGER);
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for (sid, offset) in [("mid", 10), ("old", 0), ("new", 20)] {
        let mut s = session(sid, Some("+14155551212"));
        s.started_at = base + Duration::from_secs(offset);
        t.insert(s).unwrap();
    }
    t.insert(session("other", Some("+14155550000"))).unwrap();
    assert_eq!(ids(&t.live_by_phone("+14155551212")), ["new", "mid", "old"]);
    assert!(t.live_by_phone("+19999999999").is_empty());
    assert!(t.live_by_phone("").is_empty());
}

#[test]
fn live_by_phone_breaks_start_time_ties_by_insertion_order() {
    let t = SessionTable::new(10, LINGER);
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for sid in ["first", "second", "third"] {
        let mut s = session(sid, Some("+14155551212"));
        s.started_at = at;
        t.insert(s).unwrap();
    }
    assert_eq!(
        ids(&t.live_by_phone("+14155551212")),
        ["third", "second", "first"]
    );
}

#[test]
fn update_changing_phone_reindexes() {
    let t = SessionTable::new(10, LINGER);
    t.insert(session("s1", Some("+14155551212"))).unwrap();
    let r = t.update(&id("s1"), |s| {
        s.caller_phone = Some("+442079460018".into());
        s.zendesk_ticket_id = Some(42);
        "done"
    });
    assert_eq!(r, Some("done"));
    assert!(t.live_by_phone("+14155551212").is_empty());
    let found = t.live_by_phone("+442079460018");
    assert_eq!(ids(&found), ["s1"]);
    assert_eq!(found[0].zendesk_ticket_id, Some(42));
    assert_eq!(t.index_len(), 1);
    t.assert_consistent();

    t.update(&id("s1"), |s| s.caller_phone = None);
    assert_eq!(t.index_len(), 0);
    t.update(&id("s1"), |s| s.caller_phone = Some("+15555551234".into()));
    assert_eq!(ids(&t.live_by_phone("+15555551234")), ["s1"]);
    t.assert_consistent();
}

#[test]
fn update_of_missing_session_returns_none() {
    let t = SessionTable::new(10, LINGER);
    let mut called = false;
    assert_eq!(t.update(&id("missing"), |_| called = true), None);
    assert!(!called);
}

#[test]
fn update_cannot_change_the_id() {
    let t = SessionTable::new(10, LINGER);
    t.insert(session("s1", None)).unwrap();
    t.update(&id("s1"), |s| s.id = id("s2"));
    assert_eq!(t.get(&id("s1")).unwrap().id, id("s1"));
    assert!(t.get(&id("s2")).is_none());
}

#[test]
fn ending_through_update_lingers_and_is_swept() {
    let t = SessionTable::new(10, Duration::from_secs(60));
    t.insert(session("s1", Some("+14155551212"))).unwrap();
    t.update(&id("s1"), |s| s.ended_at = Some(SystemTime::now()));
    assert!(t.live_by_phone("+14155551212").is_empty());
    assert_eq!(t.sweep(), 0);
    assert_eq!(t.sweep_at(Instant::now() + Duration::from_secs(61)), 1);
    assert_eq!(t.index_len(), 0);
    t.assert_consistent();
}

#[test]
fn reviving_through_update_cancels_expiry() {
    let t = SessionTable::new(10, Duration::ZERO);
    t.insert(session("s1", None)).unwrap();
    t.mark_ended(&id("s1"));
    t.update(&id("s1"), |s| s.ended_at = None);
    assert_eq!(t.sweep(), 0);
    assert_eq!(t.live_count(), 1);
}

#[test]
fn inserting_an_already_ended_session_lingers() {
    let t = SessionTable::new(10, Duration::from_secs(60));
    let mut s = session("s1", Some("+14155551212"));
    s.ended_at = Some(SystemTime::now());
    t.insert(s).unwrap();
    assert_eq!(t.live_count(), 0);
    assert!(t.live_by_phone("+14155551212").is_empty());
    assert_eq!(t.sweep_at(Instant::now() + Duration::from_secs(61)), 1);
    t.assert_consistent();
}

#[test]
fn counts_follow_the_lifecycle() {
    let t = SessionTable::new(10, Duration::from_secs(60));
    for sid in ["a", "b", "c"] {
        t.insert(session(sid, None)).unwrap();
    }
    t.mark_ended(&id("b"));
    assert_eq!((t.len(), t.live_count()), (3, 2));
    t.sweep_at(Instant::now() + Duration::from_secs(61));
    assert_eq!((t.len(), t.live_count()), (2, 2));
}

#[test]
fn insert_error_messages() {
    assert_eq!(
        InsertError::Full(5).to_string(),
        "session table full (5 entries)"
    );
    assert_eq!(
        InsertError::Duplicate("abc".into()).to_string(),
        "session abc already exists"
    );
}

#[test]
fn concurrent_insert_end_update_sweep_stays_consistent() {
    const THREADS: usize = 6;
    const PER_THREAD: usize = 300;
    const CAPACITY: usize = 500;
    let t = Arc::new(SessionTable::new(CAPACITY, Duration::ZERO));
    let phones = [
        "+14155551212",
        "+14155550000",
        "+442079460018",
        "+49301234567",
    ];

    let workers: Vec<_> = (0..THREADS)
        .map(|w| {
            let t = Arc::clone(&t);
            thread::spawn(move || {
                let mut full = 0;
                for i in 0..PER_THREAD {
                    let sid = id(&format!("w{w}-{i}"));
                    let phone = phones[(w + i) % phones.len()];
                    let mut s = session(sid.as_str(), Some(phone));
                    if i % 7 == 0 {
                        s.caller_phone = None;
                    }
                    match t.insert(s) {
                        Ok(()) => {}
                        Err(InsertError::Full(_)) => full += 1,
                        Err(e) => panic!("unexpected {e}"),
                    }
                    // DashMap's len() sums its shards one by one, so while other
                    // threads evict in one shard and insert in another it can count
                    // one entry twice per thread; the exact bound is checked below,
                    // once they have stopped.
                    assert!(t.len() <= CAPACITY + THREADS);
                    let _ = t.live_by_phone(phone);
                    if i % 3 == 0 {
                        t.update(&sid, |s| {
                            s.caller_phone = Some(phones[(w + i + 1) % phones.len()].into())
                        });
                    }
                    if i % 2 == 0 {
                        t.mark_answered(&sid);
                        t.mark_ended(&sid);
                    }
                    if i % 25 == 0 {
                        t.sweep();
                        let _ = t.live_count();
                    }
                }
                full
            })
        })
        .collect();
    let mut full = 0;
    for w in workers {
        full += w.join().expect("worker did not panic");
    }

    t.assert_consistent();
    assert!(t.len() <= CAPACITY);
    t.sweep();
    t.assert_consistent();
    // Everything left is live: the odd-numbered sessions that got in.
    assert_eq!(t.len(), t.live_count());
    let live_indexed: usize = phones.iter().map(|p| t.live_by_phone(p).len()).sum();
    let live_with_phone = (0..THREADS)
        .flat_map(|w| (0..PER_THREAD).map(move |i| (w, i)))
        .filter_map(|(w, i)| t.get(&id(&format!("w{w}-{i}"))))
        .filter(|s| s.caller_phone.is_some())
        .count();
    assert_eq!(live_indexed, live_with_phone);
    assert!(full < THREADS * PER_THREAD);
}

fn in_org(sid: &str, org: &str, phone: &str) -> Session {
    let mut s = session(sid, Some(phone));
    s.org_id = org.into();
    s
}

#[test]
fn stamp_ticket_marks_the_newest_unstamped_live_session_of_the_org() {
    let t = SessionTable::new(10, LINGER);
    t.insert(in_org("old", "org-1", "+14155551212")).unwrap();
    t.insert(in_org("new", "org-1", "+14155551212")).unwrap();
    t.insert(in_org("other-org", "org-2", "+14155551212"))
        .unwrap();
    assert_eq!(
        t.stamp_ticket("org-1", "+14155551212", 7),
        StampOutcome::Stamped(id("new"))
    );
    assert_eq!(t.get(&id("new")).unwrap().zendesk_ticket_id, Some(7));
    assert_eq!(t.get(&id("other-org")).unwrap().zendesk_ticket_id, None);
    // A second ticket for the same phone goes to the older call, still unstamped.
    assert_eq!(
        t.stamp_ticket("org-1", "+14155551212", 8),
        StampOutcome::Stamped(id("old"))
    );
    // Now every call of the phone has a ticket: a third keeps the first ones.
    assert_eq!(
        t.stamp_ticket("org-1", "+14155551212", 9),
        StampOutcome::Conflict {
            session: id("new"),
            existing: 7
        }
    );
    t.assert_consistent();
}

#[test]
fn stamp_ticket_repeat_is_idempotent_and_ended_calls_do_not_match() {
    let t = SessionTable::new(10, LINGER);
    t.insert(in_org("a", "org-1", "+14155551212")).unwrap();
    assert_eq!(
        t.stamp_ticket("org-1", "+14155551212", 7),
        StampOutcome::Stamped(id("a"))
    );
    assert_eq!(
        t.stamp_ticket("org-1", "+14155551212", 7),
        StampOutcome::AlreadyStamped(id("a"))
    );
    assert_eq!(
        t.stamp_ticket("org-2", "+14155551212", 7),
        StampOutcome::NoSession
    );
    t.insert(in_org("b", "org-1", "+14155550000")).unwrap();
    t.mark_ended(&id("b"));
    assert_eq!(
        t.stamp_ticket("org-1", "+14155550000", 3),
        StampOutcome::NoSession
    );
    assert_eq!(t.get(&id("b")).unwrap().zendesk_ticket_id, None);
    t.assert_consistent();
}

#[test]
fn concurrent_stamps_of_one_ticket_stamp_one_session() {
    let t = Arc::new(SessionTable::new(10, LINGER));
    t.insert(in_org("a", "org-1", "+14155551212")).unwrap();
    t.insert(in_org("b", "org-1", "+14155551212")).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let t = t.clone();
            thread::spawn(move || t.stamp_ticket("org-1", "+14155551212", 42))
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stamped = ["a", "b"]
        .iter()
        .filter(|s| t.get(&id(s)).unwrap().zendesk_ticket_id == Some(42))
        .count();
    assert_eq!(stamped, 1);
    t.assert_consistent();
}
