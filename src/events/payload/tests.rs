use super::*;
use crate::session::{ContactDetails, Session, SessionId};
use std::time::Duration;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn session() -> Session {
    let mut s = Session::new(
        SessionId::parse("abc123").unwrap(),
        "org-1".into(),
        "agent-1".into(),
        Some("+14155551212".into()),
        Some("Alice".into()),
        "+18005550100".into(),
    );
    s.started_at = at(1_700_000_000);
    s
}

/// The call's record of `s` (its org, parties, times).
fn call(s: &Session) -> CallRecord {
    CallRecord::of(s)
}

fn json(d: &EventData) -> Value {
    serde_json::to_value(d).unwrap()
}

#[test]
fn rfc3339_in_utc_with_milliseconds() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(at(1_700_000_000)), "2023-11-14T22:13:20.000Z");
    assert_eq!(
        rfc3339(at(951_782_400) + Duration::from_millis(7)),
        "2000-02-29T00:00:00.007Z"
    );
    assert_eq!(rfc3339(at(4_102_444_799)), "2099-12-31T23:59:59.000Z");
}

#[test]
fn envelope_has_id_type_time_org_session_and_data() {
    let s = call(&session());
    let e = Event::new(EventType::PhoneCallStarted, &s, started(&s));
    let v: Value = serde_json::from_slice(&e.to_json()).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(v["id"].as_str().unwrap().len(), 36);
    assert_eq!(v["type"], "phone_call.started");
    assert_eq!(v["org_id"], "org-1");
    assert_eq!(v["session_id"], "abc123");
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["data"]["direction"], "inbound");
    assert_eq!(v["data"]["from"], "+14155551212");
    assert_eq!(v["data"]["to"], "+18005550100");
    assert_eq!(v["data"]["caller_name"], "Alice");
    assert_eq!(v["data"]["agent_id"], "agent-1");
    assert_eq!(v["data"]["started_at"], "2023-11-14T22:13:20.000Z");
    let other = Event::new(EventType::PhoneCallStarted, &s, started(&s));
    assert_ne!(e.id, other.id, "ids are unique");
}

#[test]
fn started_says_whether_the_call_is_outbound() {
    let mut c = call(&session());
    assert_eq!(json(&started(&c))["custom_data"]["is_outbound"], false);
    c.outbound = true;
    let v = json(&started(&c));
    assert_eq!(v["direction"], "outbound");
    assert_eq!(v["custom_data"]["is_outbound"], true);
    // The agent's side placed it: the customer is `to`.
    assert_eq!(v["to"], "+14155551212");
}

#[test]
fn conversation_started_is_the_phone_channel() {
    let mut s = session();
    s.contact_id = Some("c-1".into());
    let v = json(&conversation_started(&call(&s), s.contact_id.as_deref()));
    assert_eq!(v["channel"], "phone");
    assert_eq!(v["contact_id"], "c-1");
}

#[test]
fn ended_carries_the_end_of_call_context() {
    let mut s = session();
    s.answered_at = Some(at(1_700_000_002));
    s.custom_data.insert("Campaign".into(), "spring".into());
    s.custom_data.insert("call_status".into(), "spoofed".into());
    let agent = AgentInfo {
        languages: Some(vec!["es".into(), "en".into()]),
        agent_version: Some("v7".into()),
    };
    let v = json(&ended(
        &call(&s),
        StoredParts::of(&s),
        &agent,
        Some(EndedBy::User),
        at(1_700_000_062),
    ));
    assert_eq!(v["call_ended_by"], "user");
    assert_eq!(v["ai_resolution_status"], "resolved");
    assert_eq!(v["human_resolution_status"], Value::Null);
    assert_eq!(v["contact_id"], Value::Null);
    assert_eq!(v["contact"], Value::Null);
    assert_eq!(v["language"], serde_json::json!(["es", "en"]));
    assert_eq!(v["answered_at"], "2023-11-14T22:13:22.000Z");
    let cd = &v["custom_data"];
    assert_eq!(cd["Campaign"], "spring");
    assert_eq!(cd["duration_seconds"], 60);
    assert_eq!(cd["participant_count"], 2);
    assert_eq!(cd["is_outbound"], false);
    assert_eq!(cd["recording_available"], false);
    assert_eq!(cd["agent_version"], "v7");
    assert_eq!(
        cd["call_status"], "completed",
        "metadata wins over inbound keys"
    );
}

#[test]
fn ended_after_a_transfer_is_handed_off_with_the_contact() {
    let mut s = session();
    s.answered_at = Some(at(1_700_000_001));
    s.contact_id = Some("c-9".into());
    s.contact = Some(ContactDetails {
        name: Some("Alice Doe".into()),
        email: Some("alice@example.com".into()),
        phone: Some("+14155551212".into()),
        custom_data: [("tier".to_string(), Value::from("gold"))].into(),
        ..Default::default()
    });
    let mut c = call(&s);
    c.transfers.push(TransferRecord {
        target: "sip:support@acme.zendesk.sip.twilio.com".into(),
        destination: None,
        status: Some(200),
        requested_at: at(1_700_000_010),
        invite_sent_at: None,
        completed_at: Some(at(1_700_000_012)),
    });
    let v = json(&ended(
        &c,
        StoredParts::of(&s),
        &AgentInfo::default(),
        Some(EndedBy::Agent),
        at(1_700_000_100),
    ));
    assert_eq!(v["ai_resolution_status"], "handed_off");
    assert_eq!(v["call_ended_by"], "agent");
    assert_eq!(v["language"], Value::Null);
    assert_eq!(v["contact"]["id"], "c-9");
    assert_eq!(v["contact"]["name"], "Alice Doe");
    assert_eq!(v["contact"]["email"], "alice@example.com");
    assert_eq!(v["contact"]["phone"], "+14155551212");
    assert_eq!(v["contact"]["custom_data"]["tier"], "gold");
    assert_eq!(v["custom_data"]["participant_count"], 3);
    assert_eq!(v["custom_data"]["call_status"], "transferred");
    assert_eq!(v["custom_data"]["agent_version"], Value::Null);
}

#[test]
fn transferred_names_the_target_and_outcome() {
    let mut s = call(&session());
    let rec = |target: &str, status| TransferRecord {
        target: target.into(),
        destination: Some("zendesk".into()),
        status,
        requested_at: at(1_700_000_010),
        invite_sent_at: None,
        completed_at: status.map(|_| at(1_700_000_011)),
    };
    s.transfers
        .push(rec("tel:+442071234567;phone-context=x", Some(486)));
    s.transfers
        .push(rec("sip:support@acme.zendesk.sip.twilio.com", Some(200)));
    s.transfers.push(rec("sip:x@y.example.com", None));
    let v = json(&transferred(&s, 0).unwrap());
    assert_eq!(v["target"]["type"], "phone_number");
    assert_eq!(v["target"]["phone_number"], "+442071234567");
    assert_eq!(v["target"]["sip_uri"], Value::Null);
    assert_eq!(v["target"]["destination"], "zendesk");
    assert_eq!(v["outcome"], "failed");
    assert_eq!(v["sip_status"], 486);
    assert_eq!(v["failure_category"], "busy");
    assert_eq!(v["attempt"], 1);
    let v = json(&transferred(&s, 1).unwrap());
    assert_eq!(v["target"]["type"], "sip_uri");
    assert_eq!(
        v["target"]["sip_uri"],
        "sip:support@acme.zendesk.sip.twilio.com"
    );
    assert_eq!(v["outcome"], "completed");
    assert_eq!(v["failure_category"], Value::Null);
    assert_eq!(v["completed_at"], "2023-11-14T22:13:31.000Z");
    let v = json(&transferred(&s, 2).unwrap());
    assert_eq!(v["outcome"], "cancelled");
    assert!(transferred(&s, 3).is_none());
}

#[test]
fn failed_carries_the_category_and_sip_status() {
    let s = session();
    let v = json(&failed(
        &call(&s),
        StoredParts::of(&s),
        &AgentInfo::default(),
        SipOutcome::Status(486),
        None,
        at(1_700_000_005),
    ));
    assert_eq!(v["failure_category"], "busy");
    assert_eq!(v["sip_status"], 486);
    assert_eq!(v["failure_reason"], "sip_status");
    assert_eq!(v["call_ended_by"], Value::Null);
    assert_eq!(v["custom_data"]["call_status"], "failed");
    assert_eq!(v["custom_data"]["participant_count"], 1);
    let v = json(&failed(
        &call(&s),
        StoredParts::of(&s),
        &AgentInfo::default(),
        SipOutcome::Cancelled,
        Some(EndedBy::User),
        at(1_700_000_005),
    ));
    assert_eq!(v["failure_category"], "failed");
    assert_eq!(v["failure_reason"], "cancelled");
    assert_eq!(v["sip_status"], 487);
    assert_eq!(v["call_ended_by"], "user");
}

#[test]
fn event_types_round_trip() {
    for t in EventType::ALL {
        assert_eq!(EventType::parse(t.as_str()), Some(t));
    }
    assert_eq!(EventType::parse("phone_call.bogus"), None);
}

#[test]
fn event_type_indexes_match_the_metric_labels() {
    for (i, t) in EventType::ALL.iter().enumerate() {
        assert_eq!(*t as usize, i);
        assert_eq!(crate::metrics::EVENT_TYPES[i], t.as_str());
    }
}
