//! `GET /backend/zendesk-v2/voice-prefetch-url`: the per-org webhook URL for the
//! dashboard, the same one `handoff webhook-url --org ORG` prints.

use super::auth::{self, TokenError};
use super::dashboard_jwt::{verify_dashboard_token, DashboardJwt, DashboardTokenError};
use super::error::ApiError;
use super::HttpState;
use crate::config::HttpSettings;
use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Why no webhook URL could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookUrlError {
    #[error("no signing key is configured ([[http.signing_keys]])")]
    NoSigningKey,
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// `<public_base_url>/backend/zendesk-v2/voice-prefetch/<token>`, the token minted
/// with the newest (last configured) signing key.
pub fn webhook_url(
    http: &HttpSettings,
    org_id: &str,
    now_unix: u64,
) -> Result<String, WebhookUrlError> {
    let key = http
        .signing_keys
        .last()
        .ok_or(WebhookUrlError::NoSigningKey)?;
    let token = auth::mint_prefetch_token(key, org_id, now_unix, Some(http.token_ttl))?;
    Ok(format!(
        "{}/backend/zendesk-v2/voice-prefetch/{token}",
        http.public_base_url
    ))
}

pub async fn voice_prefetch_url(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let http = &state.settings().http;
    let a = &http.access;
    let (Some(secret), Some(issuer), Some(audience)) = (
        &http.dashboard_jwt_secret,
        &a.dashboard_jwt_issuer,
        &a.dashboard_jwt_audience,
    ) else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no dashboard_jwt_secret is configured ([http])",
        )
        .into_response();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let expect = DashboardJwt {
        secret,
        issuer,
        audience,
    };
    let verified = match auth::bearer(&headers) {
        Some(t) => verify_dashboard_token(t, &expect, now),
        None => Err(DashboardTokenError::Malformed),
    };
    let org = match verified {
        Ok(org) => org,
        Err(e) => {
            Metrics::inc(&state.metrics().dashboard_tokens_refused_total);
            tracing::debug!(error = %e, "dashboard JWT refused");
            return ApiError::unauthorized(format!("dashboard {e}"))
                .field("authorization")
                .into_response();
        }
    };
    match webhook_url(http, &org, now) {
        Ok(url) => Json(serde_json::json!({ "webhookUrl": url })).into_response(),
        Err(e @ WebhookUrlError::NoSigningKey) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
