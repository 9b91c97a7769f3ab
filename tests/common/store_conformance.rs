//! What every `SessionStore` must do, as the calls and the sidecar rely on it:
//! the same checks run against the in-memory table and the Redis store
//! (`tests/session_redis.rs`). `fresh` makes an empty store each time.

use handoff::session::{
    ContactDetails, InsertError, PatchOutcome, Session, SessionId, SessionPatch, SessionStore,
    StampOutcome, StoreError,
};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const PHONE: &str = "+14155551212";

pub fn id(s: &str) -> SessionId {
    SessionId::parse(s).expect("valid test id")
}

pub fn live(sid: &str, org: &str) -> Session {
    Session::new(
        id(sid),
        org.into(),
        "agent-1".into(),
        Some(PHONE.into()),
        None,
        "+15550001111".into(),
    )
}

async fn ticket(s: &dyn SessionStore, sid: &str) -> Option<u64> {
    s.get(&id(sid))
        .await
        .expect("read")
        .and_then(|s| s.zendesk_ticket_id)
}

/// Runs every check, each on a fresh store.
pub async fn run_all(fresh: &dyn Fn() -> Arc<dyn SessionStore>) {
    stamp_is_idempotent_first_wins_and_stays_in_its_org(fresh()).await;
    ended_sessions_are_not_stamped_but_stay_readable(fresh()).await;
    answer_and_end_times_are_the_callers_and_the_first_stays(fresh()).await;
    attach_contact_keeps_an_api_contact_id_and_merges_details(fresh()).await;
    patch_merges_custom_data_within_the_limit(fresh()).await;
    patch_sets_keeps_and_clears_the_summary(fresh()).await;
    duplicate_id_is_refused(fresh()).await;
    live_by_phone_is_newest_first_and_stamp_takes_the_newest(fresh()).await;
    for _ in 0..10 {
        concurrent_stamps_of_one_ticket_stamp_one_session_once(fresh()).await;
    }
}

async fn stamp_is_idempotent_first_wins_and_stays_in_its_org(s: Arc<dyn SessionStore>) {
    s.create(live("a", "org-1")).await.unwrap();
    assert_eq!(
        s.stamp_ticket("org-1", PHONE, 7).await.unwrap(),
        StampOutcome::Stamped(id("a"))
    );
    assert_eq!(
        s.stamp_ticket("org-1", PHONE, 7).await.unwrap(),
        StampOutcome::AlreadyStamped(id("a"))
    );
    assert_eq!(
        s.stamp_ticket("org-1", PHONE, 8).await.unwrap(),
        StampOutcome::Conflict {
            session: id("a"),
            existing: 7
        }
    );
    assert_eq!(ticket(s.as_ref(), "a").await, Some(7));
    assert_eq!(
        s.stamp_ticket("org-2", PHONE, 9).await.unwrap(),
        StampOutcome::NoSession
    );
    // The largest ticket id survives the trip (no double in between).
    s.create(live("big", "org-9")).await.unwrap();
    assert_eq!(
        s.stamp_ticket("org-9", PHONE, u64::MAX).await.unwrap(),
        StampOutcome::Stamped(id("big"))
    );
    assert_eq!(ticket(s.as_ref(), "big").await, Some(u64::MAX));
}

async fn ended_sessions_are_not_stamped_but_stay_readable(s: Arc<dyn SessionStore>) {
    s.create(live("a", "org-1")).await.unwrap();
    let end = UNIX_EPOCH + Duration::from_micros(1_800_000_000_000_001);
    s.mark_ended(&id("a"), end).await.unwrap();
    assert_eq!(
        s.stamp_ticket("org-1", PHONE, 7).await.unwrap(),
        StampOutcome::NoSession
    );
    let got = s.get(&id("a")).await.unwrap().expect("lingering");
    assert_eq!(got.ended_at, Some(end));
    assert_eq!(got.zendesk_ticket_id, None);
    assert!(s.live_by_phone(PHONE).await.unwrap().is_empty());
    assert!(s.get(&id("nope")).await.unwrap().is_none());
}

async fn answer_and_end_times_are_the_callers_and_the_first_stays(s: Arc<dyn SessionStore>) {
    s.create(live("a", "org-1")).await.unwrap();
    let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let t1 = t0 + Duration::from_secs(5);
    s.mark_answered(&id("a"), t0).await.unwrap();
    s.mark_answered(&id("a"), t1).await.unwrap();
    s.mark_ended(&id("a"), t1).await.unwrap();
    s.mark_ended(&id("a"), t1 + Duration::from_secs(1))
        .await
        .unwrap();
    let got = s.get(&id("a")).await.unwrap().expect("present");
    assert_eq!((got.answered_at, got.ended_at), (Some(t0), Some(t1)));
    // Marking a session that does not exist creates nothing.
    s.mark_answered(&id("ghost"), t0).await.unwrap();
    s.mark_ended(&id("ghost"), t0).await.unwrap();
    assert!(s.get(&id("ghost")).await.unwrap().is_none());
}

async fn attach_contact_keeps_an_api_contact_id_and_merges_details(s: Arc<dyn SessionStore>) {
    s.create(live("a", "org-1")).await.unwrap();
    let first = ContactDetails {
        name: Some("Alice".into()),
        email: Some("a@example.com".into()),
        zendesk_user_id: Some(9_007_199_254_740_993),
        custom_data: [("tier".to_owned(), serde_json::json!({"x": [1, "y"]}))].into(),
        ..Default::default()
    };
    let attached = s.attach_contact(&id("a"), "c-1".into(), first).await;
    assert_eq!(attached.unwrap().as_deref(), Some("c-1"));
    let second = ContactDetails {
        name: Some("Alice \"Doe\"\r\n".into()),
        ..Default::default()
    };
    let attached = s.attach_contact(&id("a"), "c-2".into(), second).await;
    assert_eq!(
        attached.unwrap().as_deref(),
        Some("c-1"),
        "the first id stays"
    );
    let got = s.get(&id("a")).await.unwrap().expect("present");
    let c = got.contact.expect("details");
    assert_eq!(c.name.as_deref(), Some("Alice \"Doe\"\r\n"));
    assert_eq!(c.email.as_deref(), Some("a@example.com"));
    assert_eq!(c.zendesk_user_id, Some(9_007_199_254_740_993));
    assert_eq!(c.custom_data["tier"], serde_json::json!({"x": [1, "y"]}));
    let gone = s
        .attach_contact(&id("zz"), "c".into(), ContactDetails::default())
        .await;
    assert_eq!(gone.unwrap(), None);
}

/// The ticket note's summary (issue 16): set as given (line breaks and markup are
/// the note's business, not the store's), kept by a patch that leaves it, cleared.
async fn patch_sets_keeps_and_clears_the_summary(s: Arc<dyn SessionStore>) {
    s.create(live("a", "org-1")).await.unwrap();
    let text = "Wants a refund.\nOrder 42 <b>now</b> 'x'); --";
    let set = SessionPatch {
        summary: Some(Some(text.into())),
        max_custom_data: 8,
        ..SessionPatch::default()
    };
    assert!(matches!(
        s.patch(&id("a"), set).await.unwrap(),
        PatchOutcome::Patched(got) if got.summary.as_deref() == Some(text)
    ));
    let other = SessionPatch {
        contact_id: Some(Some("c-1".into())),
        max_custom_data: 8,
        ..SessionPatch::default()
    };
    s.patch(&id("a"), other).await.unwrap();
    let got = s.get(&id("a")).await.unwrap().expect("present");
    assert_eq!(got.summary.as_deref(), Some(text), "kept by another patch");
    let clear = SessionPatch {
        summary: Some(None),
        max_custom_data: 8,
        ..SessionPatch::default()
    };
    s.patch(&id("a"), clear).await.unwrap();
    let got = s.get(&id("a")).await.unwrap().expect("present");
    assert_eq!(got.summary, None);
}

async fn patch_merges_custom_data_within_the_limit(s: Arc<dyn SessionStore>) {
    s.create(live("a", "org-1")).await.unwrap();
    let patch = |k: &str, contact: Option<Option<String>>| SessionPatch {
        contact_id: contact,
        custom_data: [(k.to_owned(), "v'); --".to_owned())].into(),
        max_custom_data: 1,
        summary: None,
    };
    match s
        .patch(&id("a"), patch("k1", Some(Some("c-9".into()))))
        .await
        .unwrap()
    {
        PatchOutcome::Patched(got) => {
            assert_eq!(got.contact_id.as_deref(), Some("c-9"));
            assert_eq!(got.custom_data.len(), 1);
            assert_eq!(got.custom_data["k1"], "v'); --");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.patch(&id("a"), patch("k2", Some(None))).await.unwrap(),
        PatchOutcome::TooMany
    ));
    let got = s.get(&id("a")).await.unwrap().expect("present");
    assert_eq!(
        got.contact_id.as_deref(),
        Some("c-9"),
        "a refused patch changes nothing"
    );
    // The same key again is a replacement, not a new entry; clearing the contact id.
    match s.patch(&id("a"), patch("k1", Some(None))).await.unwrap() {
        PatchOutcome::Patched(got) => assert_eq!(got.contact_id, None),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.patch(&id("zz"), patch("k", None)).await.unwrap(),
        PatchOutcome::NotFound
    ));
}

async fn duplicate_id_is_refused(s: Arc<dyn SessionStore>) {
    s.create(live("a", "org-1")).await.unwrap();
    match s.create(live("a", "org-1")).await {
        Err(StoreError::Insert(InsertError::Duplicate(d))) => assert_eq!(d, "a"),
        other => panic!("expected Duplicate, got {other:?}"),
    }
}

async fn live_by_phone_is_newest_first_and_stamp_takes_the_newest(s: Arc<dyn SessionStore>) {
    let now = SystemTime::now();
    for (sid, ago) in [("old", 30), ("new", 1), ("mid", 10)] {
        let mut x = live(sid, "org-1");
        x.started_at = now - Duration::from_secs(ago);
        s.create(x).await.unwrap();
    }
    let got: Vec<String> = s
        .live_by_phone(PHONE)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.id.to_string())
        .collect();
    assert_eq!(got, ["new", "mid", "old"]);
    assert_eq!(
        s.stamp_ticket("org-1", PHONE, 5).await.unwrap(),
        StampOutcome::Stamped(id("new"))
    );
    assert_eq!(
        s.stamp_ticket("org-1", PHONE, 6).await.unwrap(),
        StampOutcome::Stamped(id("mid"))
    );
}

async fn concurrent_stamps_of_one_ticket_stamp_one_session_once(s: Arc<dyn SessionStore>) {
    for sid in ["a", "b", "c"] {
        s.create(live(sid, "org-1")).await.unwrap();
    }
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.stamp_ticket("org-1", PHONE, 42).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let stamped: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, StampOutcome::Stamped(_)))
        .collect();
    assert_eq!(stamped.len(), 1, "{outcomes:?}");
    let mut with_ticket = 0;
    for sid in ["a", "b", "c"] {
        if ticket(s.as_ref(), sid).await == Some(42) {
            with_ticket += 1;
        }
    }
    assert_eq!(with_ticket, 1);
}
