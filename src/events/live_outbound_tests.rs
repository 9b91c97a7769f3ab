//! An outbound call's live record: the direction survives the store (SQLite and
//! the Redis wire), records written before the field read as inbound, and a
//! record whose flag is not a boolean is refused.

use super::tests::{row_of, settings};
use super::*;
use crate::store::outbox::Outbox;
use crate::store::Store;
use serde_json::Value;

/// An outbound call as `call::setup` records it: the callee is the session's
/// `caller_phone`, the caller ID handoff presented its `called`, no name.
fn outbound_call(sid: &str) -> CallRecord {
    let mut s = Session::new(
        SessionId::parse(sid).unwrap(),
        "org-1".into(),
        "agent-1".into(),
        Some("+14155551212".into()),
        None,
        "+18005550100".into(),
    );
    s.started_at = UNIX_EPOCH + Duration::from_secs(1_000);
    let mut c = CallRecord::of(&s);
    c.outbound = true;
    c
}

fn agent() -> AgentInfo {
    AgentInfo {
        languages: None,
        agent_version: Some("v7".into()),
    }
}

fn data(ev: &Event) -> Value {
    let v: Value = serde_json::from_slice(&ev.to_json()).unwrap();
    v["data"].clone()
}

const NOW: Duration = Duration::from_secs(1_100);

/// A record exactly as the build before `outbound` wrote it.
const OLD_RECORD: &str = r#"{"agent_id":"agent-1","caller_phone":"+14155551212","caller_name":"Alice","called":"+18005550100","languages":null,"agent_version":"v7","custom_data":{"Campaign":"spring"}}"#;

fn old_row(sid: &str) -> LiveRow {
    LiveRow {
        session_id: sid.into(),
        org_id: "org-1".into(),
        node_id: "node-a".into(),
        started_ms: 1_000_000,
        answered_ms: None,
        record: OLD_RECORD.as_bytes().to_vec(),
    }
}

#[test]
fn the_record_of_an_outbound_call_says_so() {
    let row = row_of(started(
        &outbound_call("s1"),
        &agent(),
        BTreeMap::new(),
        "n",
    ));
    let rec: Value = serde_json::from_slice(&row.record).unwrap();
    assert_eq!(rec["outbound"], true);
    let mut inbound = outbound_call("s2");
    inbound.outbound = false;
    let row = row_of(started(&inbound, &agent(), BTreeMap::new(), "n"));
    let rec: Value = serde_json::from_slice(&row.record).unwrap();
    assert_eq!(rec["outbound"], false);
}

#[test]
fn an_answered_outbound_call_left_live_ends_outbound_by_the_system() {
    let mut c = outbound_call("s-out");
    c.answered_at = Some(UNIX_EPOCH + Duration::from_secs(1_010));
    let row = row_of(started(&c, &agent(), BTreeMap::new(), "node-a"));
    let ev = orphan_end(&row, Orphaned::NodeRestarted, UNIX_EPOCH + NOW).unwrap();
    assert_eq!(ev.kind, EventType::PhoneCallEnded);
    let d = data(&ev);
    assert_eq!(d["direction"], "outbound");
    assert_eq!(d["custom_data"]["is_outbound"], true);
    // As the live call's own end says it: the caller ID called the callee.
    assert_eq!(d["from"], "+18005550100");
    assert_eq!(d["to"], "+14155551212");
    assert_eq!(d["caller_name"], Value::Null);
    assert_eq!(d["call_ended_by"], "system");
    assert_eq!(d["custom_data"]["call_status"], "node_restarted");
}

#[test]
fn an_outbound_call_cut_while_ringing_fails_outbound_by_the_system() {
    let row = row_of(started(
        &outbound_call("s-ring"),
        &agent(),
        BTreeMap::new(),
        "node-a",
    ));
    let ev = orphan_end(&row, Orphaned::NodeLost, UNIX_EPOCH + NOW).unwrap();
    assert_eq!(ev.kind, EventType::PhoneCallFailed);
    let d = data(&ev);
    assert_eq!(d["direction"], "outbound");
    assert_eq!(d["custom_data"]["is_outbound"], true);
    // Not the null of an outbound call the agent gave up on: the node died.
    assert_eq!(d["call_ended_by"], "system");
    assert_eq!(d["failure_reason"], "node_lost");
    assert_eq!(d["sip_status"], Value::Null);
    assert_eq!(d["to"], "+14155551212");
}

#[test]
fn a_record_written_before_the_flag_ends_inbound() {
    let ev = orphan_end(&old_row("s-old"), Orphaned::NodeRestarted, UNIX_EPOCH + NOW).unwrap();
    let d = data(&ev);
    assert_eq!(d["direction"], "inbound");
    assert_eq!(d["custom_data"]["is_outbound"], false);
    assert_eq!(d["from"], "+14155551212");
    assert_eq!(d["caller_name"], "Alice");
    assert_eq!(d["custom_data"]["Campaign"], "spring");
}

#[test]
fn a_flag_that_is_not_a_boolean_makes_the_record_unreadable() {
    for bad in [r#""true""#, "1", "null", "[]", r#"{"a":1}"#] {
        let mut row = old_row("s-bad");
        let rec = OLD_RECORD.replace(r#""agent_id""#, &format!(r#""outbound":{bad},"agent_id""#));
        row.record = rec.into_bytes();
        assert!(
            matches!(
                orphan_end(&row, Orphaned::NodeLost, SystemTime::now()),
                Err(OrphanError::Record { .. })
            ),
            "{bad}"
        );
    }
    // A key repeated: serde refuses the record rather than picking one.
    let mut row = old_row("s-dup");
    row.record = OLD_RECORD
        .replace(
            r#""agent_id""#,
            r#""outbound":true,"outbound":false,"agent_id""#,
        )
        .into_bytes();
    assert!(orphan_end(&row, Orphaned::NodeLost, SystemTime::now()).is_err());
}

#[test]
fn the_flag_survives_the_sqlite_store_and_old_rows_beside_it_stay_inbound() {
    let mut ob = Outbox::new(Store::in_memory().connect().unwrap());
    let live = [
        started(&outbound_call("s-new"), &agent(), BTreeMap::new(), "n").into_store(),
        LiveChange::Started(Box::new(old_row("s-old"))),
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
    assert_eq!(got.calls, 2);
    let dirs: Vec<(String, Value, Value)> = ob
        .pending()
        .unwrap()
        .into_iter()
        .map(|p| {
            let v: Value = serde_json::from_slice(&p.body).unwrap();
            let d = &v["data"];
            (
                p.session_id,
                d["direction"].clone(),
                d["custom_data"]["is_outbound"].clone(),
            )
        })
        .collect();
    let want =
        |sid: &str, dir: &str, out: bool| (sid.to_owned(), Value::from(dir), Value::from(out));
    assert!(dirs.contains(&want("s-new", "outbound", true)), "{dirs:?}");
    assert!(dirs.contains(&want("s-old", "inbound", false)), "{dirs:?}");
}
