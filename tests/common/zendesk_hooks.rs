//! The voice-prefetch webhook as one org's Zendesk account calls it: a token for
//! any org, an optional Zendesk signature with any secret, extra headers (the
//! event-subscription ones), and the event envelope Zendesk sends.

use super::scenarios::transfer::SIGNING_SECRET;
use super::Rig;
use handoff::config::{Secret, SigningKey};
use handoff::http::auth::{format_iso8601, mint_prefetch_token, zendesk_signature};
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The webhook URL of `rig`'s handoff with a valid token for `org` (the transfer
/// rig's signing key).
pub fn org_url(rig: &Rig, org: &str) -> String {
    let key = SigningKey {
        kid: "k1".into(),
        secret: Secret::new(SIGNING_SECRET),
        issuer: "t".into(),
    };
    let token = mint_prefetch_token(&key, org, now(), None).expect("mint");
    format!(
        "http://{}/backend/zendesk-v2/voice-prefetch/{token}",
        rig.server.http_addr()
    )
}

/// POST `body` as `org`, signed with `secret` when given, with `headers` added;
/// returns the status and the JSON answer.
pub async fn post_as(
    rig: &Rig,
    org: &str,
    body: &str,
    secret: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(org_url(rig, org))
        .header("Content-Type", "application/json");
    if let Some(secret) = secret {
        let ts = format_iso8601(now() as i64);
        let sig = zendesk_signature(secret, &ts, body.as_bytes());
        req = req
            .header("x-zendesk-webhook-signature-timestamp", ts)
            .header("x-zendesk-webhook-signature", sig);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body.to_owned()).send().await.expect("webhook");
    let status = resp.status().as_u16();
    let v = resp.json().await.unwrap_or(Value::Null);
    (status, v)
}

/// A `ticket.created` event-subscription envelope as Zendesk sends it.
pub fn ticket_created(account_id: u64, event_id: &str, ticket: u64) -> String {
    serde_json::json!({
        "type": "zen:event-type:ticket.created",
        "account_id": account_id,
        "id": event_id,
        "time": "2026-12-05T12:00:00Z",
        "zendesk_event_version": "2022-11-06",
        "subject": format!("zen:ticket:{ticket}"),
        "detail": {
            "id": ticket.to_string(),
            "status": "NEW",
            "via": {"channel": "voice"},
            "requester_id": "7",
        },
        "event": {},
    })
    .to_string()
}

/// The trigger body the README documents, for the tests' caller.
pub fn trigger(ticket: u64, caller: &str) -> String {
    format!(r#"{{"ticket_id": {ticket}, "caller_phone": "{caller}", "requester_phone": ""}}"#)
}
