//! What an event says: the envelope every event shares and the `data` of each
//! type, built by pure functions from the call's [`CallRecord`] and, where an event
//! carries them, the stored session's [`StoredParts`].
//! Field names follow the seed (`call_ended_by`, `ai_resolution_status`, ...).

use super::category::{failure_category, FailureCategory, SipOutcome};
use super::record::{CallRecord, StoredParts, TransferRecord};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// The event types handoff emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    PhoneCallStarted,
    ConversationStarted,
    PhoneCallAnswered,
    PhoneCallTransferred,
    PhoneCallEnded,
    PhoneCallFailed,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::PhoneCallStarted,
        EventType::ConversationStarted,
        EventType::PhoneCallAnswered,
        EventType::PhoneCallTransferred,
        EventType::PhoneCallEnded,
        EventType::PhoneCallFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PhoneCallStarted => "phone_call.started",
            EventType::ConversationStarted => "conversation.started",
            EventType::PhoneCallAnswered => "phone_call.answered",
            EventType::PhoneCallTransferred => "phone_call.transferred",
            EventType::PhoneCallEnded => "phone_call.ended",
            EventType::PhoneCallFailed => "phone_call.failed",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Who hung up (`call_ended_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// The caller (the contact).
    User,
    /// The AI agent, or the human a transfer reached.
    Agent,
    /// handoff: media timeout, shutdown, a dialog that broke.
    System,
}

/// One event on its way out: everything but the serialisation, which the outbox
/// writer does off the call path.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub kind: EventType,
    pub created_at: SystemTime,
    pub org_id: String,
    pub session_id: String,
    pub data: EventData,
}

impl Event {
    /// A new event with a fresh id, created now.
    pub fn new(kind: EventType, call: &CallRecord, data: EventData) -> Event {
        let bits: u128 = rand::random();
        Event {
            id: format!("evt_{bits:032x}"),
            kind,
            created_at: SystemTime::now(),
            org_id: call.org_id.clone(),
            session_id: call.session_id.as_str().to_owned(),
            data,
        }
    }

    /// The JSON body sent to subscribers (and stored in the outbox as is).
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            id: &'a str,
            #[serde(rename = "type")]
            kind: &'static str,
            created_at: String,
            org_id: &'a str,
            session_id: &'a str,
            data: &'a EventData,
        }
        let env = Envelope {
            id: &self.id,
            kind: self.kind.as_str(),
            created_at: rfc3339(self.created_at),
            org_id: &self.org_id,
            session_id: &self.session_id,
            data: &self.data,
        };
        // Plain structs, string keys: serialising cannot fail.
        serde_json::to_vec(&env).unwrap_or_default()
    }
}

/// The `data` of each event type.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum EventData {
    Started(CallStarted),
    Conversation(ConversationStarted),
    Answered(CallAnswered),
    Transferred(CallTransferred),
    Ended(Box<CallEnded>),
    Failed(Box<CallFailed>),
}

/// Who the call is between; in every `phone_call.*` event but `transferred`'s target.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallParties {
    /// `inbound`, or `outbound` for a call the AI agent placed.
    pub direction: &'static str,
    /// The caller's number in E.164, null when withheld (outbound: the caller ID).
    pub from: Option<String>,
    pub caller_name: Option<String>,
    /// The called number as dialled.
    pub to: String,
    pub agent_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallStarted {
    #[serde(flatten)]
    pub call: CallParties,
    pub started_at: Time,
    /// The call metadata known at the start: `is_outbound`. The call's own
    /// custom data (its X- headers) comes with the final event.
    pub custom_data: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConversationStarted {
    pub channel: &'static str,
    pub contact_id: Option<String>,
    pub started_at: Time,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallAnswered {
    #[serde(flatten)]
    pub call: CallParties,
    pub started_at: Time,
    pub answered_at: Time,
}

/// Where a transfer went.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TransferTarget {
    /// `phone_number` (a tel: target) or `sip_uri`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub phone_number: Option<String>,
    pub sip_uri: Option<String>,
    /// The `[[transfer.destination]]` name, when it was one.
    pub destination: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallTransferred {
    #[serde(flatten)]
    pub call: CallParties,
    pub target: TransferTarget,
    /// `completed` (the target answered), `failed`, or `cancelled` (the call
    /// ended while the target rang).
    pub outcome: &'static str,
    pub sip_status: Option<u16>,
    pub failure_category: Option<FailureCategory>,
    /// 1 for the call's first transfer, 2 for a retry after a failure, ...
    pub attempt: usize,
    pub requested_at: Time,
    pub completed_at: Option<Time>,
}

/// The contact as `phone_call.ended` carries it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ContactPayload {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub custom_data: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallEnded {
    #[serde(flatten)]
    pub call: CallParties,
    pub started_at: Time,
    pub answered_at: Option<Time>,
    pub ended_at: Time,
    pub call_ended_by: Option<EndedBy>,
    /// `resolved`, or `handed_off` after a completed transfer.
    pub ai_resolution_status: Option<&'static str>,
    /// Always null: a call has no human-resolve path.
    pub human_resolution_status: Option<&'static str>,
    pub contact_id: Option<String>,
    pub contact: Option<ContactPayload>,
    pub language: Option<Vec<String>>,
    pub custom_data: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallFailed {
    #[serde(flatten)]
    pub call: CallParties,
    pub started_at: Time,
    pub ended_at: Time,
    pub failure_category: FailureCategory,
    /// `sip_status`, `timeout`, `transport_failure`, `cancelled` or `local`.
    pub failure_reason: &'static str,
    pub sip_status: Option<u16>,
    pub call_ended_by: Option<EndedBy>,
    pub contact_id: Option<String>,
    pub custom_data: Map<String, Value>,
}

/// What the route says about the agent (`[[route]] languages`, `agent_version`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentInfo {
    pub languages: Option<Vec<String>>,
    pub agent_version: Option<String>,
}

/// The metadata keys handoff writes into `custom_data`; inbound keys of the same
/// name are overwritten.
pub const METADATA_KEYS: [&str; 6] = [
    "duration_seconds",
    "participant_count",
    "is_outbound",
    "recording_available",
    "agent_version",
    "call_status",
];

pub fn parties(s: &CallRecord) -> CallParties {
    if s.outbound {
        // The record keeps the customer as its caller_phone (the transfer's From
        // and the webhook's match); on the wire the AI agent's side called them.
        return CallParties {
            direction: "outbound",
            from: Some(s.called.clone()),
            caller_name: None,
            to: s.caller_phone.clone().unwrap_or_default(),
            agent_id: s.agent_id.clone(),
        };
    }
    CallParties {
        direction: "inbound",
        from: s.caller_phone.clone(),
        caller_name: s.caller_display_name.clone(),
        to: s.called.clone(),
        agent_id: s.agent_id.clone(),
    }
}

pub fn started(s: &CallRecord) -> EventData {
    let mut custom_data = Map::new();
    custom_data.insert("is_outbound".into(), s.outbound.into());
    EventData::Started(CallStarted {
        call: parties(s),
        started_at: Time(s.started_at),
        custom_data,
    })
}

pub fn conversation_started(s: &CallRecord, contact_id: Option<&str>) -> EventData {
    EventData::Conversation(ConversationStarted {
        channel: "phone",
        contact_id: contact_id.map(str::to_owned),
        started_at: Time(s.started_at),
    })
}

pub fn answered(s: &CallRecord, now: SystemTime) -> EventData {
    EventData::Answered(CallAnswered {
        call: parties(s),
        started_at: Time(s.started_at),
        answered_at: Time(s.answered_at.unwrap_or(now)),
    })
}

/// A transfer attempt's outcome: `index` is its place in `s.transfers`. A record
/// still without a status was cut short by the call's end (`cancelled`).
pub fn transferred(s: &CallRecord, index: usize) -> Option<EventData> {
    let r = s.transfers.get(index)?;
    let (outcome, category) = match r.status {
        Some(200..=299) => ("completed", None),
        Some(st) => ("failed", Some(failure_category(SipOutcome::Status(st)))),
        None => ("cancelled", None),
    };
    Some(EventData::Transferred(CallTransferred {
        call: parties(s),
        target: transfer_target(r),
        outcome,
        sip_status: r.status,
        failure_category: category,
        attempt: index + 1,
        requested_at: Time(r.requested_at),
        completed_at: r.completed_at.map(Time),
    }))
}

pub fn transfer_target(r: &TransferRecord) -> TransferTarget {
    match r.target.strip_prefix("tel:") {
        Some(number) => TransferTarget {
            kind: "phone_number",
            phone_number: Some(number.split(';').next().unwrap_or(number).to_owned()),
            sip_uri: None,
            destination: r.destination.clone(),
        },
        None => TransferTarget {
            kind: "sip_uri",
            phone_number: None,
            sip_uri: Some(r.target.clone()),
            destination: r.destination.clone(),
        },
    }
}

/// `phone_call.ended` for an answered call that ended at `ended_at`.
pub fn ended(
    s: &CallRecord,
    stored: StoredParts<'_>,
    agent: &AgentInfo,
    ended_by: Option<EndedBy>,
    ended_at: SystemTime,
) -> EventData {
    let handed_off = s.handed_off();
    let status = if handed_off {
        "transferred"
    } else {
        "completed"
    };
    let contact = stored.contact_id.map(|id| {
        let d = stored.contact.cloned().unwrap_or_default();
        ContactPayload {
            id: id.to_owned(),
            name: d.name,
            email: d.email,
            phone: d.phone,
            custom_data: d.custom_data,
        }
    });
    EventData::Ended(Box::new(CallEnded {
        call: parties(s),
        started_at: Time(s.started_at),
        answered_at: s.answered_at.map(Time),
        ended_at: Time(ended_at),
        call_ended_by: ended_by,
        ai_resolution_status: Some(if handed_off { "handed_off" } else { "resolved" }),
        human_resolution_status: None,
        contact_id: stored.contact_id.map(str::to_owned),
        contact,
        language: agent.languages.clone(),
        custom_data: custom_data(s, stored, agent, status, ended_at),
    }))
}

/// `phone_call.failed` for a call that never connected.
pub fn failed(
    s: &CallRecord,
    stored: StoredParts<'_>,
    agent: &AgentInfo,
    outcome: SipOutcome,
    ended_by: Option<EndedBy>,
    ended_at: SystemTime,
) -> EventData {
    EventData::Failed(Box::new(CallFailed {
        call: parties(s),
        started_at: Time(s.started_at),
        ended_at: Time(ended_at),
        failure_category: failure_category(outcome),
        failure_reason: outcome.reason(),
        sip_status: outcome.status(),
        call_ended_by: ended_by,
        contact_id: stored.contact_id.map(str::to_owned),
        custom_data: custom_data(s, stored, agent, "failed", ended_at),
    }))
}

/// The session's custom data (inbound `X-` headers, the custom-data header, the
/// session API's values) plus the call metadata, which wins on a clash.
pub fn custom_data(
    s: &CallRecord,
    stored: StoredParts<'_>,
    agent: &AgentInfo,
    call_status: &str,
    ended_at: SystemTime,
) -> Map<String, Value> {
    let mut m: Map<String, Value> = stored
        .custom_data
        .into_iter()
        .flatten()
        .filter(|(k, _)| !METADATA_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    // Talk time: from the answer to the end (0 for a call never answered).
    let duration = s
        .answered_at
        .and_then(|a| ended_at.duration_since(a).ok())
        .map_or(0, |d| d.as_secs());
    let participants = if s.answered_at.is_some() { 2 } else { 1 } + s.completed_transfers();
    m.insert("duration_seconds".into(), duration.into());
    m.insert("participant_count".into(), participants.into());
    m.insert("is_outbound".into(), s.outbound.into());
    m.insert("recording_available".into(), false.into());
    m.insert(
        "agent_version".into(),
        agent
            .agent_version
            .clone()
            .map_or(Value::Null, Value::String),
    );
    m.insert("call_status".into(), call_status.into());
    m
}

/// A point in time, serialised as [`rfc3339`] when the event is written (off
/// the call path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time(pub SystemTime);

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&rfc3339(self.0))
    }
}

/// RFC 3339 in UTC with milliseconds: `2026-12-01T19:12:06.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, mo, da) = civil_from_days(days as i64);
    format!(
        "{y:04}-{mo:02}-{da:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (era arithmetic: 400-year
/// eras of 146097 days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests;
