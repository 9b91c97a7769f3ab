//! Calls that die with their node get an end. A call is recorded as live
//! (`store::live_calls`) in the outbox transaction that queues its
//! `phone_call.started`, and the record goes in the transaction that queues its
//! `phone_call.ended` or `phone_call.failed`. What is left at start-up are the
//! calls the last run never ended: each gets exactly one end, built here by
//! [`orphan_end`] (pure), queued in the transaction that removes its record
//! (`Outbox::recover_live`).
//!
//! The cluster case (another node noticing through Redis that this one died and
//! ending its calls for it) is `crate::cluster`: the claim is one Redis script,
//! and the claimer queues the ends built here in its own outbox (`claims`).

use super::payload::{self, AgentInfo, EventData};
use super::record::{CallRecord, StoredParts};
use super::settings::EventSettings;
use super::{EndedBy, Event, EventType, SipOutcome};
use crate::session::{Session, SessionId};
use crate::store::live_calls::{LiveChange, LiveRow};
use crate::store::outbox::{NewEvent, Outbox, OutboxError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a call lost its node: the word its end event carries (`failure_reason` of
/// `phone_call.failed`, `custom_data.call_status` of `phone_call.ended`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orphaned {
    /// The node that held it restarted on the same store.
    NodeRestarted,
    /// Another node found it dead and ended its calls (the cluster claim).
    NodeLost,
}

impl Orphaned {
    pub fn reason(self) -> &'static str {
        match self {
            Orphaned::NodeRestarted => "node_restarted",
            Orphaned::NodeLost => "node_lost",
        }
    }
}

/// What a live call's row keeps beyond its columns: what its end event needs
/// that only the call knew (the parties, the route's agent, the inbound custom
/// data, the direction). Serialised as JSON in `live_calls.record`, which the
/// Redis mirror carries as it is (`cluster::wire`); so a field added here needs
/// neither a schema change nor a new wire version, only a default for the
/// records written before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveRecord {
    pub agent_id: String,
    pub caller_phone: Option<String>,
    pub caller_name: Option<String>,
    pub called: String,
    pub languages: Option<Vec<String>>,
    pub agent_version: Option<String>,
    #[serde(default)]
    pub custom_data: BTreeMap<String, String>,
    /// The AI agent placed the call (`CallRecord::outbound`): `caller_phone` is
    /// then the callee and `called` the caller ID, and the end says `direction:
    /// "outbound"`, `is_outbound: true`. Absent in a record written before it
    /// existed (or by a node that predates it): inbound, as those nodes ended
    /// every call. A value that is not a boolean makes the record unreadable.
    #[serde(default)]
    pub outbound: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OrphanError {
    #[error("live call {session_id}: unreadable record: {source}")]
    Record {
        session_id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("live call: bad session id {0:?}")]
    SessionId(String),
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A live-call change as a call makes it. A start's record is serialised by
/// the events writer ([`Change::into_store`]), off the call path.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Started {
        /// The row, its `record` still empty.
        row: Box<LiveRow>,
        record: Box<LiveRecord>,
    },
    Other(LiveChange),
}

impl Change {
    /// The change as the store writes it.
    pub fn into_store(self) -> LiveChange {
        match self {
            Change::Started { mut row, record } => {
                // Plain struct, string keys: serialising cannot fail.
                row.record = serde_json::to_vec(&record).unwrap_or_default();
                LiveChange::Started(row)
            }
            Change::Other(c) => c,
        }
    }
}

/// The row a call writes when it starts.
pub fn started(
    call: &CallRecord,
    agent: &AgentInfo,
    custom_data: BTreeMap<String, String>,
    node_id: &str,
) -> Change {
    let rec = LiveRecord {
        agent_id: call.agent_id.clone(),
        caller_phone: call.caller_phone.clone(),
        caller_name: call.caller_display_name.clone(),
        called: call.called.clone(),
        languages: agent.languages.clone(),
        agent_version: agent.agent_version.clone(),
        custom_data,
        outbound: call.outbound,
    };
    Change::Started {
        row: Box::new(LiveRow {
            session_id: call.session_id.as_str().to_owned(),
            org_id: call.org_id.clone(),
            node_id: node_id.to_owned(),
            started_ms: ms(call.started_at),
            answered_ms: call.answered_at.map(ms),
            record: Vec::new(),
        }),
        record: Box::new(rec),
    }
}

pub fn answered(call: &CallRecord, at: SystemTime) -> Change {
    Change::Other(LiveChange::Answered {
        session_id: call.session_id.as_str().to_owned(),
        at_ms: ms(at),
    })
}

pub fn closed(call: &CallRecord) -> Change {
    Change::Other(LiveChange::Closed {
        session_id: call.session_id.as_str().to_owned(),
    })
}

/// The id of a call's orphan end: derived from its session, so that two nodes
/// that both ended it (which the claim exists to prevent) would send the same id,
/// and a subscriber deduplicating on `X-Handoff-Event-Id` would see one.
pub fn orphan_event_id(session_id: &str) -> String {
    let d = Sha256::digest(format!("handoff.orphan_end\0{session_id}").as_bytes());
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("evt_{hex}")
}

/// The end of a call its node left live: `phone_call.ended` when it was answered,
/// else `phone_call.failed`, both `call_ended_by: "system"`, ended `now` (when
/// the loss was noticed; the moment of the crash is not known). An outbound call
/// gets its direction back from the record; one cut before the callee answered
/// is `failed` with `call_ended_by: "system"` too, not the null of an outbound
/// call the agent gave up on: here nobody gave up, the node died.
pub fn orphan_end(row: &LiveRow, why: Orphaned, now: SystemTime) -> Result<Event, OrphanError> {
    let rec: LiveRecord =
        serde_json::from_slice(&row.record).map_err(|source| OrphanError::Record {
            session_id: row.session_id.clone(),
            source,
        })?;
    let sid = SessionId::parse(&row.session_id)
        .ok_or_else(|| OrphanError::SessionId(row.session_id.clone()))?;
    let mut s = Session::new(
        sid,
        row.org_id.clone(),
        rec.agent_id,
        rec.caller_phone,
        rec.caller_name,
        rec.called,
    );
    s.started_at = at_ms(row.started_ms);
    s.answered_at = row.answered_ms.map(at_ms);
    s.custom_data = rec.custom_data;
    let mut call = CallRecord::of(&s);
    call.outbound = rec.outbound;
    let agent = AgentInfo {
        languages: rec.languages,
        agent_version: rec.agent_version,
    };
    // The contact lived in the session store, which did not outlive the node.
    let parts = StoredParts {
        custom_data: Some(&s.custom_data),
        ..Default::default()
    };
    let by = Some(EndedBy::System);
    let (kind, data) = if call.answered_at.is_some() {
        let mut data = payload::ended(&call, parts, &agent, by, now);
        if let EventData::Ended(e) = &mut data {
            // Whether the AI resolved it or a transfer completed is not known.
            e.ai_resolution_status = None;
            e.custom_data
                .insert("call_status".into(), why.reason().into());
        }
        (EventType::PhoneCallEnded, data)
    } else {
        let mut data = payload::failed(&call, parts, &agent, SipOutcome::Local(500), by, now);
        if let EventData::Failed(f) = &mut data {
            // The caller was answered nothing: the node was gone.
            f.failure_reason = why.reason();
            f.sip_status = None;
        }
        (EventType::PhoneCallFailed, data)
    };
    let mut ev = Event::new(kind, &call, data);
    ev.id = orphan_event_id(&row.session_id);
    ev.created_at = now;
    Ok(ev)
}

/// The outbox row for `ev`, to the subscribers that want it; None when none does.
pub fn outbox_row(ev: &Event, settings: &EventSettings) -> Option<NewEvent> {
    let subscribers: Vec<String> = settings
        .subscribers
        .iter()
        .filter(|s| s.wants(ev.kind))
        .map(|s| s.url.as_str().to_owned())
        .collect();
    (!subscribers.is_empty()).then(|| NewEvent {
        id: ev.id.clone(),
        session_id: ev.session_id.clone(),
        kind: ev.kind.as_str().to_owned(),
        created_ms: ms(ev.created_at),
        body: ev.to_json(),
        subscribers,
    })
}

/// The seam for ending a dead node's calls: claim the live calls `node` left
/// (None: every call this store holds, as at a restart) and queue the end
/// `end` builds for each, atomically with the claim, so that however many
/// claimers race, each call is claimed, and ended, once. Returns how many calls
/// were claimed.
///
/// The local SQLite store implements it (a restart on the same file, without
/// Redis). With Redis the cluster task claims instead (`crate::cluster`).
pub trait OrphanClaim {
    type Error;
    fn claim_orphans(
        &mut self,
        node: Option<&str>,
        end: &mut dyn FnMut(&LiveRow) -> Option<NewEvent>,
    ) -> Result<usize, Self::Error>;
}

impl OrphanClaim for Outbox {
    type Error = OutboxError;
    fn claim_orphans(
        &mut self,
        node: Option<&str>,
        end: &mut dyn FnMut(&LiveRow) -> Option<NewEvent>,
    ) -> Result<usize, OutboxError> {
        self.recover_live(node, end)
    }
}

/// What a claim ended: calls, and the ends queued per type.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    pub calls: usize,
    pub ended: usize,
    pub failed: usize,
}

/// Claim through `store` and end every call claimed, as `why`. A record that
/// cannot be read is claimed without an end (logged): it cannot be rebuilt, and
/// leaving it would fail every later start the same way.
pub fn recover<C: OrphanClaim>(
    store: &mut C,
    node: Option<&str>,
    settings: &EventSettings,
    why: Orphaned,
    now: SystemTime,
) -> Result<Recovered, C::Error> {
    let mut out = Recovered::default();
    let calls = store.claim_orphans(node, &mut |row| match orphan_end(row, why, now) {
        Ok(ev) => {
            match ev.kind {
                EventType::PhoneCallEnded => out.ended += 1,
                _ => out.failed += 1,
            }
            outbox_row(&ev, settings)
        }
        Err(e) => {
            tracing::error!(error = %e, "live call left by the last run cannot be ended: record dropped");
            None
        }
    })?;
    out.calls = calls;
    Ok(out)
}

/// This node's name when no configuration names it (`Events::start`, tests): the
/// hostname, else `localhost`. The server passes `[cluster] node_id`.
pub fn hostname() -> String {
    crate::config::cluster::hostname().unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
#[path = "live_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "live_outbound_tests.rs"]
mod outbound_tests;
