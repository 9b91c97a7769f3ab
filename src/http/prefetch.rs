//! `POST /backend/zendesk-v2/voice-prefetch/{token}`: Zendesk's trigger tells us the
//! ticket id of a phone call; we stamp it on the caller's live session so that a
//! transfer to Zendesk SIP-IN can carry it.

use super::auth::{self, SignatureError, TokenError};
use super::error::{body_error, require_json, ApiError};
use super::HttpState;
use crate::e164::normalize_e164;
use crate::metrics::WebhookOutcome;
use crate::session::{SessionId, StampOutcome, StoreError};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

/// The path as logged: the token is a credential and never reaches a log.
pub const REDACTED_PATH: &str = "/backend/zendesk-v2/voice-prefetch/<redacted>";

/// Hands a stamped session to contact enrichment (fetch the ticket and its
/// requester from Zendesk, update the contact). Called on the request's task after
/// a new stamp, and again when Zendesk re-fires the same ticket while the session
/// has no contact details yet (so a re-fire retries an enrichment that failed). An
/// implementation must return at once and do its work elsewhere (spawn it), so
/// Zendesk never waits on it, and not start a second run for a session whose
/// enrichment is under way.
pub trait ContactEnricher: Send + Sync + 'static {
    fn session_stamped(&self, session: &SessionId, ticket_id: u64);
}

/// No enrichment yet (its own issue): does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEnrichment;

impl ContactEnricher for NoEnrichment {
    fn session_stamped(&self, _session: &SessionId, _ticket_id: u64) {}
}

/// A webhook body, validated: the ticket id and the phones to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchRequest {
    pub ticket_id: u64,
    /// E.164; `caller_phone` first, then `requester_phone`, without repeats.
    pub phones: Vec<String>,
}

/// Why a webhook body was refused (400); each names its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefetchBodyError {
    #[error("body is not a JSON object")]
    NotJson,
    #[error("ticket_id is missing")]
    MissingTicketId,
    #[error("ticket_id must be a positive whole number or a string of digits")]
    BadTicketId,
    #[error("{0} must be a string")]
    NotAString(&'static str),
    #[error("{0} is not a phone number")]
    BadPhone(&'static str),
    #[error("caller_phone and requester_phone are both blank: one of them is required")]
    NoPhone,
}

impl PrefetchBodyError {
    pub fn field(&self) -> &'static str {
        match self {
            PrefetchBodyError::NotJson => "body",
            PrefetchBodyError::MissingTicketId | PrefetchBodyError::BadTicketId => "ticket_id",
            PrefetchBodyError::NotAString(f) | PrefetchBodyError::BadPhone(f) => f,
            PrefetchBodyError::NoPhone => "caller_phone",
        }
    }
}

/// Validate a webhook body. Zendesk does not JSON-escape placeholders, so a subject
/// with a quote or a line break makes the body invalid JSON: then the three fields we
/// need are read from the text as long as they themselves are plain.
pub fn parse_prefetch_body(
    body: &[u8],
    default_country: Option<&str>,
) -> Result<PrefetchRequest, PrefetchBodyError> {
    let fields = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(PrefetchBodyError::NotJson),
        Err(_) => salvage(body).ok_or(PrefetchBodyError::NotJson)?,
    };
    let ticket_id = ticket_id(fields.get("ticket_id"))?;
    let mut phones = Vec::new();
    let mut bad = None;
    for field in ["caller_phone", "requester_phone"] {
        let raw = match fields.get(field) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => s.trim(),
            Some(_) => return Err(PrefetchBodyError::NotAString(field)),
        };
        if raw.is_empty() {
            continue;
        }
        match normalize_e164(raw, default_country) {
            Some(p) if !phones.contains(&p) => phones.push(p),
            Some(_) => {}
            // An unusable phone is an error only when the other one cannot stand in.
            None => bad = bad.or(Some(field)),
        }
    }
    match (phones.is_empty(), bad) {
        (false, _) => Ok(PrefetchRequest { ticket_id, phones }),
        (true, Some(field)) => Err(PrefetchBodyError::BadPhone(field)),
        (true, None) => Err(PrefetchBodyError::NoPhone),
    }
}

/// A JSON number or a string of 1-20 ASCII digits, as a positive u64.
fn ticket_id(v: Option<&Value>) -> Result<u64, PrefetchBodyError> {
    let id = match v {
        None | Some(Value::Null) => return Err(PrefetchBodyError::MissingTicketId),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) if (1..=20).contains(&s.len()) => s
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse::<u64>().ok())
            .flatten(),
        Some(_) => None,
    };
    id.filter(|&n| n > 0).ok_or(PrefetchBodyError::BadTicketId)
}

/// The fields we need from a body that is not valid JSON: each `"key": value` where
/// the value is a bare word or a string without escapes.
fn salvage(body: &[u8]) -> Option<Map<String, Value>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut map = Map::new();
    for key in ["ticket_id", "caller_phone", "requester_phone"] {
        if let Some(v) = raw_field(text, key) {
            map.insert(key.into(), v);
        }
    }
    map.contains_key("ticket_id").then_some(map)
}

fn raw_field(text: &str, key: &str) -> Option<Value> {
    let at = text.find(&format!("\"{key}\""))?;
    let rest = text[at + key.len() + 2..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        let end = s.find('"')?;
        let value = &s[..end];
        return (!value.contains('\\')).then(|| Value::String(value.to_owned()));
    }
    let end = rest
        .find(|c: char| c == ',' || c == '}' || c.is_whitespace())
        .unwrap_or(rest.len());
    let word = &rest[..end];
    Some(serde_json::from_str(word).unwrap_or_else(|_| Value::String(word.to_owned())))
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub async fn voice_prefetch(
    State(state): State<HttpState>,
    token: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (outcome, response) = handle(&state, token, &headers, body).await;
    state.metrics().webhook.inc(outcome);
    response
}

async fn handle(
    state: &HttpState,
    token: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> (WebhookOutcome, Response) {
    let http = &state.settings().http;
    if http.signing_keys.is_empty() {
        let e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no signing key is configured ([[http.signing_keys]])",
        );
        return (WebhookOutcome::Unavailable, e.into_response());
    }
    let org = match token
        .map_err(|_| TokenError::Malformed)
        .and_then(|Path(t)| auth::verify_prefetch_token(&t, &http.signing_keys))
    {
        Ok(org) => org,
        Err(e) => {
            tracing::info!(path = REDACTED_PATH, error = %e, "voice-prefetch refused");
            let e = ApiError::unauthorized(e.to_string()).field("token");
            return (WebhookOutcome::Unauthorized, e.into_response());
        }
    };
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            return (
                WebhookOutcome::BadRequest,
                body_error(rejection).into_response(),
            )
        }
    };
    if let Some(secret) = &http.zendesk_signing_secret {
        if let Err(e) = auth::verify_zendesk_signature(
            secret.expose(),
            header(headers, "x-zendesk-webhook-signature-timestamp"),
            header(headers, "x-zendesk-webhook-signature"),
            &body,
            now_unix(),
            http.signature_max_age,
        ) {
            tracing::info!(path = REDACTED_PATH, org, error = %e, "voice-prefetch signature refused");
            let field = match e {
                SignatureError::MissingTimestamp
                | SignatureError::BadTimestamp
                | SignatureError::Stale => "x-zendesk-webhook-signature-timestamp",
                SignatureError::MissingSignature | SignatureError::Mismatch => {
                    "x-zendesk-webhook-signature"
                }
            };
            let e = ApiError::unauthorized(e.to_string()).field(field);
            return (WebhookOutcome::BadSignature, e.into_response());
        }
    }
    if let Err(e) = require_json(headers) {
        return (WebhookOutcome::BadRequest, e.into_response());
    }
    let request = match parse_prefetch_body(&body, state.settings().default_country.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(path = REDACTED_PATH, org, error = %e, "voice-prefetch body refused");
            let e = ApiError::bad_request(e.field(), e.to_string());
            return (WebhookOutcome::BadRequest, e.into_response());
        }
    };
    match stamp(state, &org, &request).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(path = REDACTED_PATH, org, error = %e, "voice-prefetch: session store failed");
            let e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the session store is unavailable; retry later",
            );
            (WebhookOutcome::Unavailable, e.into_response())
        }
    }
}

async fn stamp(
    state: &HttpState,
    org: &str,
    req: &PrefetchRequest,
) -> Result<(WebhookOutcome, Response), StoreError> {
    let ticket = req.ticket_id;
    let mut outcome = StampOutcome::NoSession;
    for phone in &req.phones {
        outcome = state.sessions().stamp_ticket(org, phone, ticket).await?;
        if outcome != StampOutcome::NoSession {
            break;
        }
    }
    let (metric, body) = match outcome {
        StampOutcome::Stamped(id) => {
            tracing::info!(path = REDACTED_PATH, org, session = %id, ticket, "ticket stamped");
            state.enricher().session_stamped(&id, ticket);
            (
                WebhookOutcome::Stamped,
                json!({"success": true, "session_id": id.as_str(), "ticket_id": ticket}),
            )
        }
        StampOutcome::AlreadyStamped(id) => {
            let session = state.sessions().get(&id).await?;
            if session.is_some_and(|s| s.contact.is_none()) {
                state.enricher().session_stamped(&id, ticket);
            }
            (
                WebhookOutcome::AlreadyStamped,
                json!({"success": true, "session_id": id.as_str(), "ticket_id": ticket}),
            )
        }
        StampOutcome::Conflict { session, existing } => {
            tracing::warn!(
                path = REDACTED_PATH,
                org,
                session = %session,
                existing,
                refused = ticket,
                "session already carries another ticket: keeping the first"
            );
            (
                WebhookOutcome::Conflict,
                json!({
                    "success": false,
                    "session_id": session.as_str(),
                    "ticket_id": existing,
                    "message": format!(
                        "session {session} already carries ticket {existing}; ticket {ticket} was not stamped"
                    ),
                }),
            )
        }
        StampOutcome::NoSession => {
            tracing::info!(path = REDACTED_PATH, org, ticket, "no live phone session");
            (
                WebhookOutcome::NoSession,
                json!({
                    "success": false,
                    "message": format!("no live phone session for {}", req.phones.join(" or ")),
                }),
            )
        }
    };
    Ok((metric, (StatusCode::OK, Json(body)).into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<PrefetchRequest, PrefetchBodyError> {
        parse_prefetch_body(body.as_bytes(), Some("US"))
    }

    #[test]
    fn zendesk_body_with_number_or_digit_string_ticket() {
        let r = parse(
            r#"{"ticket_id": 123, "caller_phone": "(415) 555-1212", "requester_phone": "+14155550000", "subject": "Call"}"#,
        );
        assert_eq!(
            r,
            Ok(PrefetchRequest {
                ticket_id: 123,
                phones: vec!["+14155551212".into(), "+14155550000".into()]
            })
        );
        let r =
            parse(r#"{"ticket_id": "456", "caller_phone": "", "requester_phone": "+14155550000"}"#);
        assert_eq!(
            r.map(|r| (r.ticket_id, r.phones)),
            Ok((456, vec!["+14155550000".into()]))
        );
    }

    #[test]
    fn bad_ticket_ids_name_the_field() {
        for t in [
            r#""12\r\n34""#,
            r#""12a""#,
            r#""abc""#,
            "-5",
            "0",
            "1.5",
            r#""-5""#,
            "18446744073709551616",
            r#""18446744073709551616""#,
            r#""""#,
            "true",
            "[1]",
        ] {
            let body = format!(r#"{{"ticket_id": {t}, "caller_phone": "+14155551212"}}"#);
            let e = parse(&body).expect_err(t);
            assert_eq!(e, PrefetchBodyError::BadTicketId, "{t}");
            assert_eq!(e.field(), "ticket_id");
        }
        assert_eq!(
            parse(r#"{"caller_phone": "+14155551212"}"#),
            Err(PrefetchBodyError::MissingTicketId)
        );
    }

    #[test]
    fn phones_blank_bad_or_of_wrong_type() {
        let e =
            parse(r#"{"ticket_id": 1, "caller_phone": " ", "requester_phone": ""}"#).unwrap_err();
        assert_eq!(e, PrefetchBodyError::NoPhone);
        assert!(e.to_string().contains("requester_phone"));
        assert_eq!(
            parse(r#"{"ticket_id": 1}"#),
            Err(PrefetchBodyError::NoPhone)
        );
        assert_eq!(
            parse(r#"{"ticket_id": 1, "caller_phone": "call me\r\n"}"#),
            Err(PrefetchBodyError::BadPhone("caller_phone"))
        );
        assert_eq!(
            parse(r#"{"ticket_id": 1, "caller_phone": 4155551212}"#),
            Err(PrefetchBodyError::NotAString("caller_phone"))
        );
        // A bad caller phone is not fatal when the requester phone stands in.
        assert_eq!(
            parse(r#"{"ticket_id": 1, "caller_phone": "anonymous", "requester_phone": "+14155550000"}"#)
                .map(|r| r.phones),
            Ok(vec!["+14155550000".into()])
        );
        assert_eq!(parse("[1]"), Err(PrefetchBodyError::NotJson));
        assert_eq!(parse("nonsense"), Err(PrefetchBodyError::NotJson));
    }

    #[test]
    fn unescaped_subject_does_not_lose_the_stamp() {
        let body = "{\n  \"ticket_id\": 789,\n  \"caller_phone\": \"+14155551212\",\n  \"requester_phone\": \"\",\n  \"subject\": \"Call from \"Bob\"\r\n\"\n}";
        assert!(serde_json::from_str::<Value>(body).is_err());
        assert_eq!(
            parse(body),
            Ok(PrefetchRequest {
                ticket_id: 789,
                phones: vec!["+14155551212".into()]
            })
        );
        let bad =
            "{\"ticket_id\": 78x9, \"caller_phone\": \"+14155551212\", \"subject\": \"a\"b\"}";
        assert_eq!(parse(bad), Err(PrefetchBodyError::BadTicketId));
    }
}
