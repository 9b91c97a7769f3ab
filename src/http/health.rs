//! `/healthz` (the process answers), `/readyz` (SIP listeners bound, not draining)
//! and `/metrics` (Prometheus text).

use super::HttpState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::fmt::Write as _;

pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

pub async fn readyz(State(state): State<HttpState>) -> Response {
    if state.is_ready() {
        Json(json!({"ready": true})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "error": "SIP listeners not bound or draining"})),
        )
            .into_response()
    }
}

pub async fn metrics(State(state): State<HttpState>) -> Response {
    let mut text = state.metrics().render_prometheus();
    // A store that cannot count right now shows no sessions rather than no metrics.
    let counts = state.sessions().counts().await.unwrap_or_default();
    let (held, live) = (counts.held, counts.live);
    let _ = writeln!(
        text,
        "# HELP handoff_sessions Sessions in the table, live or lingering after the call ended."
    );
    let _ = writeln!(text, "# TYPE handoff_sessions gauge");
    let _ = writeln!(text, "handoff_sessions{{state=\"live\"}} {live}");
    let _ = writeln!(
        text,
        "handoff_sessions{{state=\"lingering\"}} {}",
        held.saturating_sub(live)
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
