//! `/healthz` (the process answers), `/readyz` (SIP listeners bound, not draining)
//! and `/metrics` (Prometheus text).

use super::HttpState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::fmt::Write as _;

/// Where a node stands, as `/readyz` reports it to a load balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NodeState {
    /// The listeners are not all up yet.
    Starting = 0,
    /// Taking new calls.
    Ready = 1,
    /// Stopping: new calls get 503, live calls finish.
    Draining = 2,
}

impl NodeState {
    pub(super) fn from_u8(v: u8) -> NodeState {
        match v {
            1 => NodeState::Ready,
            2 => NodeState::Draining,
            _ => NodeState::Starting,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Starting => "starting",
            NodeState::Ready => "ready",
            NodeState::Draining => "draining",
        }
    }
}

/// `/readyz`'s answer for a state: 200 only when ready. The node's id is left
/// out: the sidecar faces the internet and the default id is the hostname.
pub fn readiness(state: NodeState) -> (StatusCode, serde_json::Value) {
    let ready = state == NodeState::Ready;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, json!({"ready": ready, "state": state.as_str()}))
}

pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

pub async fn readyz(State(state): State<HttpState>) -> Response {
    let (status, body) = readiness(state.node_state());
    (status, Json(body)).into_response()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_is_200_only_when_ready_and_names_the_state() {
        let (s, b) = readiness(NodeState::Ready);
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, json!({"ready": true, "state": "ready"}));
        let (s, b) = readiness(NodeState::Draining);
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(b["state"], "draining");
        assert_eq!(b["ready"], false);
        let (s, b) = readiness(NodeState::Starting);
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(b["state"], "starting");
    }

    #[test]
    fn node_state_round_trips_through_u8() {
        for st in [NodeState::Starting, NodeState::Ready, NodeState::Draining] {
            assert_eq!(NodeState::from_u8(st as u8), st);
        }
        assert_eq!(NodeState::from_u8(200), NodeState::Starting);
    }
}
