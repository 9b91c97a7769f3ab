//! `POST /backend/zendesk-v2/voice-prefetch/{token}`: Zendesk's trigger tells us the
//! ticket id of a phone call; we stamp it on the caller's live session so that a
//! transfer to Zendesk SIP-IN can carry it. The same endpoint takes Zendesk's
//! event-subscription envelope (`ticket.created`, `prefetch/event.rs` and
//! `prefetch/subscription.rs`). The token's org picks the Zendesk account whose
//! signing secret, account id and API are used.

use super::auth::{self, SignatureError, TokenError};
use super::confirm::ConfirmError;
use super::error::{body_error_over, require_json, ApiError};
use super::replay::ReplayError;
use super::HttpState;
use crate::metrics::{Metrics, WebhookOutcome};
use crate::redact::Phone;
use crate::session::{SessionId, StampOutcome, StoreError};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// The store-failure line, at most 10 per 10 s (a Redis outage under Zendesk's retries).
static STORE_LOG: crate::log_limit::LogLimit = crate::log_limit::per_call();

/// Longest a stamp waits for Zendesk to confirm the ticket. Zendesk gives up on a
/// webhook after 10 s; a 503 before that makes it retry, and that retry is not
/// taken for a replay.
const CONFIRM_DEADLINE: std::time::Duration = std::time::Duration::from_secs(8);

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
    /// `org` is the session's: its Zendesk account is the one asked.
    fn session_stamped(&self, org: &str, session: &SessionId, ticket_id: u64);
}

/// No enrichment yet (its own issue): does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEnrichment;

impl ContactEnricher for NoEnrichment {
    fn session_stamped(&self, _org: &str, _session: &SessionId, _ticket_id: u64) {}
}

mod body;
pub mod event;
mod subscription;
pub use body::{parse_prefetch_body, PrefetchBodyError, PrefetchRequest};

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

/// A request refused or answered: its outcome for the metrics, and the answer.
type Answer = (WebhookOutcome, Response);

fn unavailable(message: impl Into<String>) -> Answer {
    let e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message);
    (WebhookOutcome::Unavailable, e.into_response())
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
        .and_then(|Path(t)| {
            auth::verify_unrevoked_prefetch_token(&t, &http.signing_keys, &http.revoked_tokens)
        }) {
        Ok(t) => t.org_id,
        Err(e) => {
            let m = state.metrics();
            match e {
                TokenError::Expired => Metrics::inc(&m.webhook_tokens_expired_total),
                TokenError::Revoked => Metrics::inc(&m.webhook_tokens_revoked_total),
                _ => {}
            }
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
                body_error_over(rejection, super::PREFETCH_MAX_BODY).into_response(),
            )
        }
    };
    let mut replay_key = None;
    // The org's own Zendesk account signs its webhooks: an org with an account
    // entry is checked against that entry's secret only, never the default's.
    let account = state.settings().zendesk_accounts.for_org(&org);
    if let Some(secret) = &account.signing_secret {
        let now = now_unix();
        let signature = header(headers, "x-zendesk-webhook-signature");
        if let Err(e) = auth::verify_zendesk_signature(
            secret.expose(),
            header(headers, "x-zendesk-webhook-signature-timestamp"),
            signature,
            &body,
            now,
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
        // It verified, so it is the 32 bytes of an HMAC-SHA256.
        let Some(key) = signature.and_then(auth::signature_bytes) else {
            return unavailable("signature could not be recorded; retry later");
        };
        let seen = state
            .replays()
            .check(key, now, http.signature_max_age.as_secs());
        match seen {
            Ok(()) => replay_key = Some(key),
            Err(e @ ReplayError::Replayed) => {
                Metrics::inc(&state.metrics().webhook_replays_refused_total);
                tracing::warn!(
                    path = REDACTED_PATH,
                    org,
                    "voice-prefetch refused: signature replayed"
                );
                let e = ApiError::unauthorized(e.to_string()).field("x-zendesk-webhook-signature");
                return (WebhookOutcome::BadSignature, e.into_response());
            }
            Err(e @ ReplayError::Full) => {
                Metrics::inc(&state.metrics().webhook_replay_table_full_total);
                tracing::warn!(
                    path = REDACTED_PATH,
                    org,
                    "voice-prefetch refused: replay table full"
                );
                return unavailable(e.to_string());
            }
        }
    }
    let answer = handle_signed(state, &org, headers, &body).await;
    // Nothing was done: Zendesk's retry of this very request is not a replay.
    if let (WebhookOutcome::Unavailable, Some(key)) = (answer.0, replay_key) {
        state.replays().forget(&key);
    }
    answer
}

/// The rest, once the token (and the signature when required) passed.
async fn handle_signed(state: &HttpState, org: &str, headers: &HeaderMap, body: &[u8]) -> Answer {
    if let Err(e) = require_json(headers) {
        return (WebhookOutcome::BadRequest, e.into_response());
    }
    match event::parse_event(body) {
        Ok(None) => {}
        Ok(Some(envelope)) => {
            return subscription::handle_event(state, org, headers, envelope).await
        }
        Err(e) => {
            if matches!(e, event::EventBodyError::DuplicateKey(_)) {
                Metrics::inc(&state.metrics().webhook_duplicate_keys_total);
            }
            tracing::info!(path = REDACTED_PATH, org, error = %e, "voice-prefetch event body refused");
            let e = ApiError::bad_request(e.field(), e.to_string());
            return (WebhookOutcome::BadRequest, e.into_response());
        }
    }
    let request = match parse_prefetch_body(body, state.settings().default_country.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            if matches!(e, PrefetchBodyError::DuplicateKey(_)) {
                Metrics::inc(&state.metrics().webhook_duplicate_keys_total);
            }
            tracing::info!(path = REDACTED_PATH, org, error = %e, "voice-prefetch body refused");
            let e = ApiError::bad_request(e.field(), e.to_string());
            return (WebhookOutcome::BadRequest, e.into_response());
        }
    };
    let phones = match confirm(state, org, &request).await {
        Ok(phones) => phones,
        Err(answer) => return answer,
    };
    match stamp(state, org, request.ticket_id, &phones).await {
        Ok(answer) => answer,
        Err(e) => {
            if let Some(left_out) = STORE_LOG.admit() {
                tracing::warn!(path = REDACTED_PATH, org, error = %e, left_out, "voice-prefetch: session store failed");
            }
            unavailable("the session store is unavailable; retry later")
        }
    }
}

/// `200 {"success": false}`: no live session of the org for these phones (Zendesk
/// is not to retry; the trigger is re-fired once the call is up).
fn no_session(org: &str, ticket: u64, phones: &[String]) -> Answer {
    tracing::info!(path = REDACTED_PATH, org, ticket, "no live phone session");
    let body = json!({
        "success": false,
        "message": format!("no live phone session for {}", phones.join(" or ")),
    });
    (
        WebhookOutcome::NoSession,
        (StatusCode::OK, Json(body)).into_response(),
    )
}

/// The phones whose session may carry the ticket: with Zendesk API credentials,
/// those the ticket itself names; without, those of the body (as documented).
/// Zendesk is asked only when one of the phones has a live session of the org
/// (the webhook often comes before the call: no API request is spent on it).
async fn confirm(
    state: &HttpState,
    org: &str,
    req: &PrefetchRequest,
) -> Result<Vec<String>, Answer> {
    let Some(confirmer) = state.confirmer().filter(|c| c.confirms(org)) else {
        return Ok(req.phones.clone());
    };
    let ticket = req.ticket_id;
    let mut live = Vec::new();
    for phone in &req.phones {
        let sessions = state.sessions().live_by_phone(phone).await.map_err(|e| {
            if let Some(left_out) = STORE_LOG.admit() {
                tracing::warn!(path = REDACTED_PATH, org, error = %e, left_out, "voice-prefetch: session store failed");
            }
            unavailable("the session store is unavailable; retry later")
        })?;
        if sessions.iter().any(|s| s.org_id == org) {
            live.push(phone.clone());
        }
    }
    if live.is_empty() {
        return Err(no_session(org, ticket, &req.phones));
    }
    let refused = |why: String| {
        Metrics::inc(&state.metrics().webhook_stamps_unconfirmed_total);
        let body = json!({
            "success": false,
            "ticket_id": ticket,
            "message": format!("ticket {ticket} was not stamped: {why}"),
        });
        (
            WebhookOutcome::Unconfirmed,
            (StatusCode::OK, Json(body)).into_response(),
        )
    };
    let asked = tokio::time::timeout(CONFIRM_DEADLINE, confirmer.confirm(org, ticket, &live)).await;
    let asked = asked.unwrap_or_else(|_| {
        Err(ConfirmError::Unavailable(format!(
            "no answer within {CONFIRM_DEADLINE:?}"
        )))
    });
    match asked {
        Ok(phones) if !phones.is_empty() => Ok(phones),
        Ok(_) => {
            let claimed: Vec<String> = live.iter().map(|p| Phone(p).to_string()).collect();
            tracing::warn!(
                path = REDACTED_PATH,
                org,
                ticket,
                claimed = claimed.join(" or "),
                "stamp refused: the ticket's caller and requester phones are not the phone named"
            );
            Err(refused(format!(
                "neither its caller (via.source.from.phone) nor its requester's phone is {}",
                live.join(" or ")
            )))
        }
        Err(ConfirmError::TicketNotFound) => {
            tracing::warn!(
                path = REDACTED_PATH,
                org,
                ticket,
                "stamp refused: no such ticket in Zendesk"
            );
            Err(refused("Zendesk has no such ticket".into()))
        }
        Err(e) => {
            tracing::warn!(path = REDACTED_PATH, org, ticket, error = %e, "stamp not confirmed: Zendesk could not be asked");
            Err(unavailable(format!(
                "ticket {ticket} could not be confirmed with Zendesk; retry later"
            )))
        }
    }
}

async fn stamp(
    state: &HttpState,
    org: &str,
    ticket: u64,
    phones: &[String],
) -> Result<Answer, StoreError> {
    let mut outcome = StampOutcome::NoSession;
    for phone in phones {
        outcome = state.sessions().stamp_ticket(org, phone, ticket).await?;
        if outcome != StampOutcome::NoSession {
            break;
        }
    }
    let (metric, body) = match outcome {
        StampOutcome::Stamped(id) => {
            tracing::info!(path = REDACTED_PATH, org, session = %id, ticket, "ticket stamped");
            state.enricher().session_stamped(org, &id, ticket);
            (
                WebhookOutcome::Stamped,
                json!({"success": true, "session_id": id.as_str(), "ticket_id": ticket}),
            )
        }
        StampOutcome::AlreadyStamped(id) => {
            let session = state.sessions().get(&id).await?;
            if session.is_some_and(|s| s.contact.is_none()) {
                state.enricher().session_stamped(org, &id, ticket);
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
        StampOutcome::NoSession => return Ok(no_session(org, ticket, phones)),
    };
    Ok((metric, (StatusCode::OK, Json(body)).into_response()))
}
