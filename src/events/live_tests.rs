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

fn row_of(change: LiveChange) -> LiveRow {
    match change {
        LiveChange::Started(r) => *r,
        other => panic!("not a start: {other:?}"),
    }
}

fn settings(events: Option<Vec<String>>) -> EventSettings {
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
    let LiveChange::Answered { at_ms, .. } = answered(&c, UNIX_EPOCH + Duration::from_secs(5))
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
    ];
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
    ];
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
