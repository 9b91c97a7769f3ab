//! The session API for the AI agent and operators, behind `Authorization: Bearer
//! <key>`: an org's key (`[[http.api_keys]]`) reads and writes only that org's
//! sessions (another org's session answers 404, as a missing one does), the
//! operator key (`[http] api_key`) every org's. Without any key configured the API
//! does not exist (404).
//!
//! `GET /v1/sessions/{id}`, `GET /v1/sessions?phone=...`, and `PATCH
//! /v1/sessions/{id}` with `{"contact_id": ..., "custom_data": {...}, "summary": ...}`
//! (`summary`: the AI agent's account of the call for the ticket note, at most
//! 2,000 bytes, line breaks allowed, no other control character; null clears it).

use super::api_scope::{self, Scope};
use super::auth;
use super::error::{body_error, require_json, ApiError};
use super::HttpState;
use crate::e164::normalize_e164;
use crate::session::{PatchOutcome, Session, SessionId, StoreError};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

/// Longest contact id, custom_data key and value, and most custom_data entries.
const MAX_CONTACT_ID: usize = 128;
const MAX_KEY: usize = 64;
const MAX_VALUE: usize = 1024;
const MAX_ENTRIES: usize = 64;

/// Why a PATCH body was refused (400); each names its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("body is not a JSON object")]
    NotJson,
    #[error("unknown field {0:?}: only contact_id, custom_data and summary can be set")]
    UnknownField(String),
    #[error("contact_id must be a string of 1-{MAX_CONTACT_ID} token characters (letters, digits, -._!%*+`'~), or null")]
    BadContactId,
    #[error("custom_data must be an object of string values")]
    NotAnObject,
    #[error("custom_data key {0:?} must be 1-{MAX_KEY} token characters")]
    BadKey(String),
    #[error("custom_data value of {0:?} must be a string of at most {MAX_VALUE} characters without control characters")]
    BadValue(String),
    #[error("custom_data would hold more than {MAX_ENTRIES} entries")]
    TooMany,
    #[error(transparent)]
    BadSummary(#[from] crate::zendesk::note::SummaryError),
}

impl PatchError {
    pub fn field(&self) -> &'static str {
        match self {
            PatchError::NotJson | PatchError::UnknownField(_) => "body",
            PatchError::BadContactId => "contact_id",
            PatchError::BadSummary(_) => "summary",
            _ => "custom_data",
        }
    }
}

/// A validated PATCH: `contact_id` `Some(None)` clears it; custom_data merges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionPatch {
    pub contact_id: Option<Option<String>>,
    pub custom_data: BTreeMap<String, String>,
    /// `Some(None)` clears it (null, or blank).
    pub summary: Option<Option<String>>,
}

/// A value that may go into a SIP header: no CR, LF or other control characters.
fn header_safe(v: &str, max: usize) -> bool {
    !v.is_empty() && v.len() <= max && crate::sip::message::check_value(v).is_ok()
}

pub fn parse_patch(body: &[u8]) -> Result<SessionPatch, PatchError> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Err(PatchError::NotJson);
    };
    let mut patch = SessionPatch::default();
    for (name, value) in fields {
        match (name.as_str(), value) {
            ("contact_id", Value::Null) => patch.contact_id = Some(None),
            // Token characters: it goes out as X-OPENCX-CONTACT-ID, which takes
            // nothing else.
            ("contact_id", Value::String(s))
                if (1..=MAX_CONTACT_ID).contains(&s.len())
                    && s.bytes().all(crate::sip::message::is_token_char) =>
            {
                patch.contact_id = Some(Some(s))
            }
            ("contact_id", _) => return Err(PatchError::BadContactId),
            ("custom_data", Value::Object(map)) => patch.custom_data = custom_data(map)?,
            ("custom_data", _) => return Err(PatchError::NotAnObject),
            ("summary", Value::Null) => patch.summary = Some(None),
            ("summary", Value::String(s)) => {
                patch.summary = Some(crate::zendesk::note::check_summary(&s)?)
            }
            ("summary", _) => return Err(crate::zendesk::note::SummaryError::TooLong.into()),
            _ => return Err(PatchError::UnknownField(name)),
        }
    }
    Ok(patch)
}

fn custom_data(map: Map<String, Value>) -> Result<BTreeMap<String, String>, PatchError> {
    if map.len() > MAX_ENTRIES {
        return Err(PatchError::TooMany);
    }
    map.into_iter()
        .map(|(k, v)| {
            let key_ok = (1..=MAX_KEY).contains(&k.len())
                && k.bytes().all(crate::sip::message::is_token_char);
            if !key_ok {
                return Err(PatchError::BadKey(k));
            }
            match v {
                Value::String(s) if s.is_empty() || header_safe(&s, MAX_VALUE) => Ok((k, s)),
                _ => Err(PatchError::BadValue(k)),
            }
        })
        .collect()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The session as the API shows it.
pub fn session_json(s: &Session) -> Value {
    let state = match (s.ended_at, s.answered_at) {
        (Some(_), _) => "ended",
        (None, Some(_)) => "answered",
        (None, None) => "ringing",
    };
    json!({
        "id": s.id.as_str(),
        "org_id": s.org_id,
        "agent_id": s.agent_id,
        "caller_phone": s.caller_phone,
        "caller_display_name": s.caller_display_name,
        "called": s.called,
        "state": state,
        "started_at_ms": unix_ms(s.started_at),
        "answered_at_ms": s.answered_at.map(unix_ms),
        "ended_at_ms": s.ended_at.map(unix_ms),
        "zendesk_ticket_id": s.zendesk_ticket_id,
        "contact_id": s.contact_id,
        "contact": s.contact.as_ref().map(crate::store::contacts::details_json),
        "custom_data": s.custom_data,
        "summary": s.summary,
        // The legs handoff keeps today; a transfer leg comes with REFER support.
        "legs": [
            {"role": "caller", "phone": s.caller_phone, "called": s.called},
            {"role": "ai_agent", "agent_id": s.agent_id},
        ],
    })
}

/// 404 when the API is disabled (no key at all), 401 for a missing or wrong key;
/// else whose sessions the key reaches.
fn authorize(state: &HttpState, headers: &HeaderMap) -> Result<Scope, ApiError> {
    let http = &state.settings().http;
    if http.api_key.is_none() && http.access.api_keys.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "the session API is disabled: no [http] api_key or [[http.api_keys]] is configured",
        ));
    }
    match auth::bearer(headers) {
        Some(presented) => {
            api_scope::resolve(presented, http.api_key.as_ref(), &http.access.api_keys)
                .ok_or_else(|| ApiError::unauthorized("wrong API key").field("authorization"))
        }
        None => Err(
            ApiError::unauthorized("Authorization: Bearer <api_key> is required")
                .field("authorization"),
        ),
    }
}

fn session_id(path: Result<Path<String>, PathRejection>) -> Result<SessionId, ApiError> {
    path.ok()
        .and_then(|Path(id)| SessionId::parse(&id))
        .ok_or_else(|| {
            ApiError::bad_request(
                "id",
                "session id must be 1-64 characters of A-Z a-z 0-9 - _ .",
            )
        })
}

/// The session store failed: 503, the client may retry.
fn store_failed(e: StoreError) -> ApiError {
    static LOG: crate::log_limit::LogLimit = crate::log_limit::per_call();
    if let Some(left_out) = LOG.admit() {
        tracing::warn!(error = %e, left_out, "session API: session store failed");
    }
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the session store is unavailable; retry later",
    )
}

fn not_found(id: &SessionId) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no session {id}")).field("id")
}

/// The session when this caller may see it. Another org's session is answered
/// exactly as a missing one (404, same body): a key never learns that an id
/// exists elsewhere. The refusal is counted and logged.
async fn visible_session(
    state: &HttpState,
    scope: &Scope,
    id: &SessionId,
) -> Result<Session, ApiError> {
    let s = state
        .sessions()
        .get(id)
        .await
        .map_err(store_failed)?
        .ok_or_else(|| not_found(id))?;
    if !scope.reaches(&s.org_id) {
        crate::metrics::Metrics::inc(&state.metrics().session_api_cross_org_refused_total);
        tracing::info!(key = scope.name(), session = %id, "session API: key asked for another org's session; answered 404");
        return Err(not_found(id));
    }
    Ok(s)
}

pub async fn get_session(
    State(state): State<HttpState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let scope = authorize(&state, &headers)?;
    let id = session_id(path)?;
    let s = visible_session(&state, &scope, &id).await?;
    Ok(Json(session_json(&s)).into_response())
}

pub async fn find_sessions(
    State(state): State<HttpState>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let scope = authorize(&state, &headers)?;
    let raw = query
        .ok()
        .and_then(|Query(q)| q.get("phone").cloned())
        .ok_or_else(|| ApiError::bad_request("phone", "query parameter phone is required"))?;
    let phone = normalize_e164(&raw, state.settings().default_country.as_deref())
        .ok_or_else(|| ApiError::bad_request("phone", "phone is not a phone number"))?;
    let sessions: Vec<Value> = state
        .sessions()
        .live_by_phone(&phone)
        .await
        .map_err(store_failed)?
        .iter()
        .filter(|s| scope.reaches(&s.org_id))
        .map(session_json)
        .collect();
    Ok(Json(json!({ "phone": phone, "sessions": sessions })).into_response())
}

pub async fn patch_session(
    State(state): State<HttpState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let scope = authorize(&state, &headers)?;
    let id = session_id(path)?;
    let body = body.map_err(body_error)?;
    require_json(&headers)?;
    let patch = parse_patch(&body).map_err(|e| ApiError::bad_request(e.field(), e.to_string()))?;
    // A session's org never changes, so checking it before the patch is enough.
    visible_session(&state, &scope, &id).await?;
    let change = crate::session::SessionPatch {
        contact_id: patch.contact_id,
        custom_data: patch.custom_data,
        max_custom_data: MAX_ENTRIES,
        summary: patch.summary,
    };
    let updated = match state
        .sessions()
        .patch(&id, change)
        .await
        .map_err(store_failed)?
    {
        PatchOutcome::Patched(s) => s,
        PatchOutcome::NotFound => return Err(not_found(&id)),
        PatchOutcome::TooMany => {
            let e = PatchError::TooMany;
            return Err(ApiError::bad_request(e.field(), e.to_string()));
        }
    };
    Ok(Json(session_json(&updated)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_sets_contact_and_custom_data() {
        let p =
            parse_patch(br#"{"contact_id": "c-42", "custom_data": {"tier": "gold", "note": ""}}"#);
        assert_eq!(
            p,
            Ok(SessionPatch {
                contact_id: Some(Some("c-42".into())),
                custom_data: [("note".into(), "".into()), ("tier".into(), "gold".into())]
                    .into_iter()
                    .collect(),
                summary: None,
            })
        );
        assert_eq!(
            parse_patch(br#"{"contact_id": null}"#).map(|p| p.contact_id),
            Ok(Some(None))
        );
    }

    #[test]
    fn patch_sets_or_clears_the_summary_and_bounds_it() {
        let p = parse_patch(br#"{"summary": "Refund.\r\nOrder 42 <b>x</b>"}"#);
        assert_eq!(
            p.map(|p| p.summary),
            Ok(Some(Some("Refund.\r\nOrder 42 <b>x</b>".into())))
        );
        assert_eq!(
            parse_patch(br#"{"summary": null}"#).map(|p| p.summary),
            Ok(Some(None))
        );
        let long = format!(r#"{{"summary": "{}"}}"#, "x".repeat(2001));
        let e = parse_patch(long.as_bytes()).expect_err("too long");
        assert_eq!(e.field(), "summary");
        let e = parse_patch(br#"{"summary": 5}"#).expect_err("not a string");
        assert_eq!(e.field(), "summary");
    }

    #[test]
    fn patch_refuses_control_characters_and_unknown_fields() {
        let cases: [(&[u8], &str); 10] = [
            (br#"{"contact_id": "c\r\nX-Evil: 1"}"#, "contact_id"),
            (br#"{"contact_id": ""}"#, "contact_id"),
            (br#"{"contact_id": "a b;c"}"#, "contact_id"),
            (br#"{"contact_id": 5}"#, "contact_id"),
            (br#"{"custom_data": {"k": "a\nb"}}"#, "custom_data"),
            (br#"{"custom_data": {"bad key": "v"}}"#, "custom_data"),
            (br#"{"custom_data": {"k": 1}}"#, "custom_data"),
            (br#"{"custom_data": []}"#, "custom_data"),
            (br#"{"zendesk_ticket_id": 5}"#, "body"),
            (br#"{"summary": "bell\u0007"}"#, "summary"),
        ];
        for (body, field) in cases {
            let e = parse_patch(body).expect_err(&String::from_utf8_lossy(body));
            assert_eq!(e.field(), field, "{}", String::from_utf8_lossy(body));
        }
    }
}
