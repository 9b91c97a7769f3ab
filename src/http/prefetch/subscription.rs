//! The event-subscription path of the voice-prefetch webhook (an async shell over
//! `event.rs`): the event's account must be the org's Zendesk account, a
//! `ticket.created` seen before changes nothing, the ticket is fetched from that
//! account for its caller's phone, and the live session of that caller is stamped
//! exactly as the trigger path stamps it.

use super::event::{self, EventEnvelope, TICKET_CREATED};
use super::{
    header, now_unix, stamp, unavailable, Answer, CONFIRM_DEADLINE, REDACTED_PATH, STORE_LOG,
};
use crate::http::confirm::ConfirmError;
use crate::http::error::ApiError;
use crate::http::replay::ReplayError;
use crate::http::HttpState;
use crate::metrics::{Metrics, WebhookOutcome};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

/// `200` with `body`, counted as `outcome`.
fn ok(outcome: WebhookOutcome, body: Value) -> Answer {
    (outcome, (StatusCode::OK, Json(body)).into_response())
}

/// `200 {"success": false, "ignored": true, "reason"}`: nothing to do, and nothing
/// Zendesk should retry.
fn ignored(outcome: WebhookOutcome, reason: String) -> Answer {
    ok(
        outcome,
        json!({"success": false, "ignored": true, "reason": reason}),
    )
}

/// The key naming the org's account id in `config.toml`.
fn account_id_key(state: &HttpState, org: &str) -> String {
    let z = &state.settings().zendesk_accounts;
    match z
        .accounts
        .iter()
        .position(|a| a.org_id.as_deref() == Some(org))
    {
        Some(i) => format!("zendesk.accounts[{i}].account_id"),
        None => "zendesk.account_id".into(),
    }
}

pub(super) async fn handle_event(
    state: &HttpState,
    org: &str,
    headers: &HeaderMap,
    envelope: EventEnvelope,
) -> Answer {
    let m = state.metrics();
    Metrics::inc(&m.webhook_events_total);
    let configured = state.settings().zendesk_accounts.for_org(org).account_id;
    // The token says which org; the account id says which Zendesk account sent it.
    // A token leaked to (or an event replayed from) another account is refused.
    let header_account = header(headers, "x-zendesk-account-id");
    if let Some(want) = configured {
        let wrong = if envelope.account_id != want {
            Some("account_id")
        } else if header_account.is_some_and(|h| h.trim() != want.to_string()) {
            Some("x-zendesk-account-id")
        } else {
            None
        };
        if let Some(field) = wrong {
            Metrics::inc(&m.webhook_events_wrong_account_total);
            tracing::warn!(
                path = REDACTED_PATH,
                org,
                account_id = envelope.account_id,
                field,
                "voice-prefetch event refused: another Zendesk account than the org's"
            );
            let e = ApiError::new(
                StatusCode::FORBIDDEN,
                format!("{field} is not the Zendesk account of this org"),
            )
            .field(field);
            return (WebhookOutcome::WrongAccount, e.into_response());
        }
    }
    if envelope.event_type != TICKET_CREATED {
        tracing::debug!(path = REDACTED_PATH, org, event_type = %envelope.event_type, "voice-prefetch event ignored");
        return ignored(
            WebhookOutcome::Ignored,
            format!(
                "event type {} is not acted on (only {TICKET_CREATED})",
                envelope.event_type
            ),
        );
    }
    let Some(ticket) = envelope.ticket_id else {
        // parse_event gives ticket.created its ticket; never reached.
        return ignored(WebhookOutcome::Ignored, "no ticket in the event".into());
    };
    if configured.is_none() {
        let key = account_id_key(state, org);
        tracing::warn!(
            path = REDACTED_PATH,
            org,
            ticket,
            "voice-prefetch event not acted on: {key} is not configured"
        );
        return ignored(
            WebhookOutcome::Ignored,
            format!("{key} is not configured: the event's account cannot be checked, so it is not acted on"),
        );
    }
    let invocation = match event::invocation_id(
        headers
            .get("x-zendesk-webhook-invocation-id")
            .map(|v| v.as_bytes()),
    ) {
        Ok(i) => i,
        Err(e) => {
            let e = ApiError::bad_request(e.field(), e.to_string());
            return (WebhookOutcome::BadRequest, e.into_response());
        }
    };
    let keys = event::dedup_keys(envelope.account_id, invocation.as_deref(), &envelope.id);
    let seen = event::remember(&mut state.events_seen(), &keys, now_unix());
    match seen {
        Ok(()) => {}
        Err(ReplayError::Replayed) => {
            Metrics::inc(&m.webhook_events_duplicate_total);
            tracing::info!(
                path = REDACTED_PATH,
                org,
                ticket,
                "voice-prefetch event already received: nothing changed"
            );
            return ok(
                WebhookOutcome::Duplicate,
                json!({
                    "success": false,
                    "ignored": true,
                    "duplicate": true,
                    "reason": "this invocation or event was already received; nothing changed",
                }),
            );
        }
        Err(e @ ReplayError::Full) => {
            Metrics::inc(&m.webhook_events_table_full_total);
            tracing::warn!(
                path = REDACTED_PATH,
                org,
                "voice-prefetch event refused: table of seen events full"
            );
            return unavailable(e.to_string());
        }
    }
    let answer = stamp_from_ticket(state, org, ticket).await;
    // Nothing was done: Zendesk's retry of this very event must be carried out.
    if answer.0 == WebhookOutcome::Unavailable {
        let mut seen = state.events_seen();
        keys.iter().for_each(|k| seen.forget(k));
    }
    answer
}

/// Fetch the ticket from the org's account, then stamp its caller's live session.
async fn stamp_from_ticket(state: &HttpState, org: &str, ticket: u64) -> Answer {
    let Some(confirmer) = state.confirmer().filter(|c| c.confirms(org)) else {
        tracing::warn!(
            path = REDACTED_PATH,
            org,
            ticket,
            "voice-prefetch event not acted on: no Zendesk API credentials for the org's account"
        );
        return ok(
            WebhookOutcome::Ignored,
            json!({
                "success": false,
                "ticket_id": ticket,
                "message": format!("ticket {ticket} was not stamped: this org's Zendesk account has no API credentials, so the ticket's caller cannot be looked up (use the trigger webhook, or configure API credentials)"),
            }),
        );
    };
    let asked = tokio::time::timeout(CONFIRM_DEADLINE, confirmer.ticket_callers(org, ticket)).await;
    let asked = asked.unwrap_or_else(|_| {
        Err(ConfirmError::Unavailable(format!(
            "no answer within {CONFIRM_DEADLINE:?}"
        )))
    });
    let not_stamped = |why: &str| {
        Metrics::inc(&state.metrics().webhook_stamps_unconfirmed_total);
        ok(
            WebhookOutcome::Unconfirmed,
            json!({
                "success": false,
                "ticket_id": ticket,
                "message": format!("ticket {ticket} was not stamped: {why}"),
            }),
        )
    };
    let phones = match asked {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => {
            tracing::info!(
                path = REDACTED_PATH,
                org,
                ticket,
                "event: the ticket names no caller phone"
            );
            return not_stamped("it names no caller (no via.source.from.phone, and no requester phone on a phone-call ticket)");
        }
        Err(ConfirmError::TicketNotFound) => {
            tracing::warn!(
                path = REDACTED_PATH,
                org,
                ticket,
                "event: no such ticket in the org's Zendesk account"
            );
            return not_stamped("Zendesk has no such ticket in this org's account");
        }
        Err(e) => {
            tracing::warn!(path = REDACTED_PATH, org, ticket, error = %e, "event: Zendesk could not be asked");
            return unavailable(format!(
                "ticket {ticket} could not be fetched from Zendesk; retry later"
            ));
        }
    };
    match stamp(state, org, ticket, &phones).await {
        Ok(answer) => answer,
        Err(e) => {
            if let Some(left_out) = STORE_LOG.admit() {
                tracing::warn!(path = REDACTED_PATH, org, error = %e, left_out, "voice-prefetch: session store failed");
            }
            unavailable("the session store is unavailable; retry later")
        }
    }
}
