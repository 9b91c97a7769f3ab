use super::*;
use crate::events::settings::{EventsConfig, WebhookConfig};
use crate::store::outbox::Outbox;
use crate::store::Store;
use serde_json::Value;

fn call(sid: &str) -> CallRecord {
    let mut s = Session::new(
        SessionId::parse(sid).unwrap(),
        "org-1".into(),
        "agent-1".into(),
        Some("+14155551212".into()),
        Some("Alice".into()),
        "+18005550100".into(),
    );
    s.started_at = UNIX_EPOCH + Duration::from_secs(1_000);
    CallRecord::of(&s)
}

fn agent() -> AgentInfo {
    AgentInfo {
        languages: Some(vec!["es".into(), "en".into()]),
        agent_version: Some("v7".into()),
    }
}

pub(super) fn row_of(change: Change) -> LiveRow {
    match change.into_store() {
        LiveChange::Started(r) => *r,
        other => panic!("not a start: {other:?}"),
    }
}

pub(super) fn settings(events: Option<Vec<String>>) -> EventSettings {
    EventsConfig::default()
        .compile(&[WebhookConfig {
            url: "http://127.0.0.1:9/hook".into(),
            secret: "0123456789abcdef".into(),
            events,
        }])
        .unwrap()
}

fn json(ev: &Event) -> Value {
    serde_json::from_slice(&ev.to_json()).unwrap()
}

const NOW: Duration = Duration::from_secs(1_100);

#[test]
fn an_answered_call_left_live_ends_by_the_system_with_the_reason() {
    let mut c = call("s-answered");
    c.answered_at = Some(UNIX_EPOCH + Duration::from_secs(1_010));
    let mut custom = BTreeMap::new();
    custom.insert("Campaign".into(), "spring".into());
    let row = row_of(started(&c, &agent(), custom, "node-a"));
    assert_eq!(row.node_id, "node-a");
    let ev = orphan_end(&row, Orphaned::NodeRestarted, UNIX_EPOCH + NOW).unwrap();
    assert_eq!(ev.kind, EventType::PhoneCallEnded);
    let v = json(&ev);
    assert_eq!(v["type"], "phone_call.ended");
    assert_eq!(v["session_id"], "s-answered");
    assert_eq!(v["org_id"], "org-1");
    let d = &v["data"];
    assert_eq!(d["call_ended_by"], "system");
    assert_eq!(d["from"], "+14155551212");
    assert_eq!(d["caller_name"], "Alice");
    assert_eq!(d["to"], "+18005550100");
    assert_eq!(d["agent_id"], "agent-1");
    assert_eq!(d["started_at"], "1970-01-01T00:16:40.000Z");
    assert_eq!(d["answered_at"], "1970-01-01T00:16:50.000Z");
    assert_eq!(d["ended_at"], "1970-01-01T00:18:20.000Z");
    assert_eq!(d["ai_resolution_status"], Value::Null);
    assert_eq!(d["language"], serde_json::json!(["es", "en"]));
    assert_eq!(d["custom_data"]["call_status"], "node_restarted");
    assert_eq!(d["custom_data"]["Campaign"], "spring");
    assert_eq!(d["custom_data"]["duration_seconds"], 90);
    assert_eq!(d["custom_data"]["agent_version"], "v7");
    assert_eq!(d["contact_id"], Value::Null);
}

#[test]
fn a_ringing_call_left_live_fails_by_the_system_with_the_reason() {
    let c = call("s-ringing");
    let row = row_of(started(&c, &agent(), BTreeMap::new(), "node-a"));
    let ev = orphan_end(&row, Orphaned::NodeLost, UNIX_EPOCH + NOW).unwrap();
    assert_eq!(ev.kind, EventType::PhoneCallFailed);
    let d = json(&ev)["data"].clone();
    assert_eq!(d["call_ended_by"], "system");
    assert_eq!(d["failure_category"], "failed");
    assert_eq!(d["failure_reason"], "node_lost");
    assert_eq!(d["sip_status"], Value::Null);
    assert_eq!(d["custom_data"]["call_status"], "failed");
    assert_eq!(d["custom_data"]["duration_seconds"], 0);
}

#[test]
fn an_answer_recorded_after_the_start_makes_the_end_an_ended() {
    let c = call("s1");
    let mut row = row_of(started(&c, &agent(), BTreeMap::new(), "n"));
    assert_eq!(row.answered_ms, None);
    let LiveChange::Answered { at_ms, .. } =
        answered(&c, UNIX_EPOCH + Duration::from_secs(5)).into_store()
    else {
        panic!("an answer");
    };
    row.answered_ms = Some(at_ms);
    let ev = orphan_end(&row, Orphaned::NodeRestarted, UNIX_EPOCH + NOW).unwrap();
    assert_eq!(ev.kind, EventType::PhoneCallEnded);
}

#[test]
fn the_orphan_end_id_is_the_same_for_the_same_call_and_shaped_like_any_event_id() {
    let a = orphan_event_id("s1");
    assert_eq!(a, orphan_event_id("s1"));
    assert_ne!(a, orphan_event_id("s2"));
    assert!(a.starts_with("evt_") && a.len() == 36, "{a}");
    let row = row_of(started(&call("s1"), &agent(), BTreeMap::new(), "n"));
    let ev = orphan_end(&row, Orphaned::NodeRestarted, UNIX_EPOCH + NOW).unwrap();
    assert_eq!(ev.id, a);
}

#[test]
fn a_corrupt_record_or_session_id_is_an_error_not_a_panic() {
    let mut row = row_of(started(&call("s1"), &agent(), BTreeMap::new(), "n"));
    row.record = b"{not json".to_vec();
    assert!(matches!(
        orphan_end(&row, Orphaned::NodeRestarted, SystemTime::now()),
        Err(OrphanError::Record { .. })
    ));
    let mut row = row_of(started(&call("s1"), &agent(), BTreeMap::new(), "n"));
    row.session_id = "bad id\r\n".into();
    assert!(matches!(
        orphan_end(&row, Orphaned::NodeRestarted, SystemTime::now()),
        Err(OrphanError::SessionId(_))
    ));
}

#[test]
fn only_subscribers_that_want_the_type_get_the_row() {
    let row = row_of(started(&call("s1"), &agent(), BTreeMap::new(), "n"));
    let ev = orphan_end(&row, Orphaned::NodeRestarted, SystemTime::now()).unwrap();
    assert!(outbox_row(&ev, &settings(None)).is_some());
    assert!(outbox_row(&ev, &settings(Some(vec!["phone_call.ended".into()]))).is_none());
    let r = outbox_row(&ev, &settings(Some(vec!["phone_call.failed".into()]))).unwrap();
    assert_eq!(r.kind, "phone_call.failed");
    assert_eq!(r.subscribers, ["http://127.0.0.1:9/hook"]);
    assert_eq!(r.body, ev.to_json());
}

#[test]
fn recovery_ends_each_live_call_once_and_leaves_no_row() {
    let mut ob = Outbox::new(Store::in_memory().connect().unwrap());
    let mut answered_call = call("s-a");
    answered_call.answered_at = Some(UNIX_EPOCH + Duration::from_secs(1_001));
    let live = [
        started(&answered_call, &agent(), BTreeMap::new(), "n"),
        started(&call("s-r"), &agent(), BTreeMap::new(), "n"),
        started(&call("s-done"), &agent(), BTreeMap::new(), "n"),
        closed(&call("s-done")),
    ]
    .map(Change::into_store);
    ob.commit_with(&[], 0, &[], &live).unwrap();
    let s = settings(None);
    let got = recover(
        &mut ob,
        None,
        &s,
        Orphaned::NodeRestarted,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(
        got,
        Recovered {
            calls: 2,
            ended: 1,
            failed: 1
        }
    );
    let pending = ob.pending().unwrap();
    let kinds: Vec<(&str, &str)> = pending
        .iter()
        .map(|p| (p.session_id.as_str(), p.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [("s-a", "phone_call.ended"), ("s-r", "phone_call.failed")]
    );
    assert!(ob.live_calls().unwrap().is_empty());
    // A second start finds nothing left to end.
    let again = recover(
        &mut ob,
        None,
        &s,
        Orphaned::NodeRestarted,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(again, Recovered::default());
    assert_eq!(ob.pending().unwrap().len(), 2);
}

#[test]
fn a_claim_for_one_node_leaves_the_other_nodes_calls() {
    let mut ob = Outbox::new(Store::in_memory().connect().unwrap());
    let live = [
        started(&call("s-a"), &agent(), BTreeMap::new(), "node-a"),
        started(&call("s-b"), &agent(), BTreeMap::new(), "node-b"),
    ]
    .map(Change::into_store);
    ob.commit_with(&[], 0, &[], &live).unwrap();
    let got = recover(
        &mut ob,
        Some("node-a"),
        &settings(None),
        Orphaned::NodeLost,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(got.calls, 1);
    let left = ob.live_calls().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].session_id, "s-b");
}

#[test]
fn an_unreadable_record_is_claimed_without_an_end() {
    let mut ob = Outbox::new(Store::in_memory().connect().unwrap());
    let mut row = row_of(started(&call("s1"), &agent(), BTreeMap::new(), "n"));
    row.record = b"garbage".to_vec();
    ob.commit_with(&[], 0, &[], &[LiveChange::Started(Box::new(row))])
        .unwrap();
    let got = recover(
        &mut ob,
        None,
        &settings(None),
        Orphaned::NodeRestarted,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(got.calls, 1);
    assert_eq!((got.ended, got.failed), (0, 0));
    assert!(ob.pending().unwrap().is_empty());
    assert!(ob.live_calls().unwrap().is_empty());
}

#[test]
fn the_hostname_is_never_empty() {
    assert!(!hostname().is_empty());
}

// ---- through the events writer ----------------------------------------------

use crate::events::Events;
use crate::metrics::Metrics;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A subscriber nothing listens on, retried a minute later: deliveries stay pending.
fn unreachable(events: Option<Vec<String>>) -> EventSettings {
    EventsConfig {
        retry_base_ms: 60_000,
        retry_max_ms: 60_000,
        ..Default::default()
    }
    .compile(&[WebhookConfig {
        url: "http://127.0.0.1:1/".into(),
        secret: "0123456789abcdef".into(),
        events,
    }])
    .unwrap()
}

fn temp_store() -> (Store, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("handoff-live-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    (Store::open(Some(&dir.join("h.db"))).unwrap(), dir)
}

fn live_now(store: &Store) -> Vec<LiveRow> {
    Outbox::new(store.connect().unwrap()).live_calls().unwrap()
}

fn start_of(c: &CallRecord) -> Event {
    Event::new(EventType::PhoneCallStarted, c, payload::started(c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_record_is_written_with_the_started_event_and_goes_with_the_end() {
    let (store, dir) = temp_store();
    let events = Events::start_on_node(
        &unreachable(None),
        &store,
        Arc::new(Metrics::default()),
        "node-x",
    )
    .unwrap();
    assert!(events.tracks_live());
    assert_eq!(events.node_id(), "node-x");
    let c = call("s1");
    let change = started(&c, &agent(), BTreeMap::new(), events.node_id());
    events.emit_with(start_of(&c), Some(change));
    assert!(events.flush(Duration::from_secs(10)).await);
    let rows = live_now(&store);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].node_id, "node-x");
    let data = payload::failed(
        &c,
        StoredParts::default(),
        &agent(),
        SipOutcome::Cancelled,
        Some(EndedBy::User),
        SystemTime::now(),
    );
    events.emit_with(
        Event::new(EventType::PhoneCallFailed, &c, data),
        Some(closed(&c)),
    );
    assert!(events.flush(Duration::from_secs(10)).await);
    assert!(live_now(&store).is_empty(), "closed with its end");
    drop(events);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_event_nobody_wants_still_records_the_call() {
    let (store, dir) = temp_store();
    let only_failed = unreachable(Some(vec!["phone_call.failed".into()]));
    let events = Events::start(&only_failed, &store, Arc::new(Metrics::default())).unwrap();
    assert!(events.tracks_live());
    let c = call("s1");
    let change = started(&c, &agent(), BTreeMap::new(), events.node_id());
    events.emit_with(start_of(&c), Some(change));
    assert!(events.flush(Duration::from_secs(10)).await);
    assert_eq!(live_now(&store).len(), 1);
    assert!(Outbox::new(store.connect().unwrap())
        .pending()
        .unwrap()
        .is_empty());
    drop(events);
    // Nobody takes an end: nothing is recorded.
    let only_started = unreachable(Some(vec!["phone_call.started".into()]));
    let events = Events::start(&only_started, &store, Arc::new(Metrics::default())).unwrap();
    assert!(!events.tracks_live());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_ends_each_call_the_last_run_left_live_once_and_counts_it() {
    let (store, dir) = temp_store();
    let first = Events::start(&unreachable(None), &store, Arc::new(Metrics::default())).unwrap();
    let (a, r) = (call("s-a"), call("s-r"));
    for c in [&a, &r] {
        let change = started(c, &agent(), BTreeMap::new(), first.node_id());
        first.emit_with(start_of(c), Some(change));
    }
    first.live(answered(&a, SystemTime::now()));
    assert!(first.flush(Duration::from_secs(10)).await);
    drop(first); // as a crash leaves it: nothing more is written

    let metrics = Arc::new(Metrics::default());
    let second = Events::start(&unreachable(None), &store, metrics.clone()).unwrap();
    assert_eq!(metrics.calls_recovered_total.load(Ordering::Relaxed), 2);
    let emitted = |t: EventType| metrics.events.emitted[t as usize].load(Ordering::Relaxed);
    assert_eq!(emitted(EventType::PhoneCallEnded), 1);
    assert_eq!(emitted(EventType::PhoneCallFailed), 1);
    assert!(live_now(&store).is_empty());
    let ends: Vec<(String, String)> = Outbox::new(store.connect().unwrap())
        .pending()
        .unwrap()
        .into_iter()
        .filter(|p| p.kind != "phone_call.started")
        .map(|p| (p.session_id, p.kind))
        .collect();
    assert_eq!(
        ends,
        [
            ("s-a".to_owned(), "phone_call.ended".to_owned()),
            ("s-r".to_owned(), "phone_call.failed".to_owned())
        ]
    );
    drop(second);

    let metrics = Arc::new(Metrics::default());
    let _third = Events::start(&unreachable(None), &store, metrics.clone()).unwrap();
    assert_eq!(
        metrics.calls_recovered_total.load(Ordering::Relaxed),
        0,
        "nothing left to end"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_end_already_queued_under_its_id_is_not_queued_twice_and_does_not_stop_the_start() {
    let mut ob = Outbox::new(Store::in_memory().connect().unwrap());
    let c = call("s1");
    let row = row_of(started(&c, &agent(), BTreeMap::new(), "n"));
    let end = orphan_end(&row, Orphaned::NodeLost, SystemTime::now()).unwrap();
    let s = settings(None);
    ob.commit_with(
        &[],
        0,
        &[outbox_row(&end, &s).unwrap()],
        &[LiveChange::Started(Box::new(row))],
    )
    .unwrap();
    let got = recover(
        &mut ob,
        None,
        &s,
        Orphaned::NodeRestarted,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(got.calls, 1);
    assert_eq!(ob.pending().unwrap().len(), 1, "the end once");
    assert!(ob.live_calls().unwrap().is_empty());
}
