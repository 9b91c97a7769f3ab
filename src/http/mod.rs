//! The embedded HTTP sidecar on the SIP stack's tokio runtime: Zendesk's
//! voice-prefetch webhook, the webhook-URL endpoint, the session API, health and
//! metrics. It shares only the session store and the metrics with the SIP side, and
//! its handlers never wait on a call: a stamp is one store operation.

pub mod api_scope;
pub mod auth;
pub mod confirm;
pub mod dashboard_jwt;
mod error;
pub mod health;
pub mod prefetch;
pub mod replay;
mod serve;
pub mod sessions;
#[cfg(test)]
mod store_down_tests;
mod webhook_url;

pub use confirm::StampConfirmer;
pub use error::ApiError;
pub use prefetch::{ContactEnricher, NoEnrichment};
pub use webhook_url::{webhook_url, WebhookUrlError};

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::session::SessionStore;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// Largest request body accepted, in bytes.
pub const MAX_BODY: usize = 16 * 1024;

/// Largest voice-prefetch body: a Zendesk event envelope carries the whole ticket
/// (its description among it), and a 413 counts against the webhook in Zendesk's
/// circuit breaker. 256 requests at once hold 32 MiB at most.
pub const PREFETCH_MAX_BODY: usize = 128 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState(Arc<Inner>);

struct Inner {
    settings: Arc<Settings>,
    sessions: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
    /// A `health::NodeState` as its `u8`.
    state: AtomicU8,
    enricher: Arc<dyn ContactEnricher>,
    /// Set when Zendesk API credentials are configured: stamps are confirmed.
    confirmer: std::sync::OnceLock<Arc<dyn StampConfirmer>>,
    /// Zendesk signatures seen within their window.
    replays: std::sync::Mutex<replay::ReplayGuard>,
    /// Event-subscription invocation and event ids seen (about an hour).
    events_seen: std::sync::Mutex<replay::ReplayGuard>,
}

impl HttpState {
    pub fn new(
        settings: Arc<Settings>,
        sessions: Arc<dyn SessionStore>,
        metrics: Arc<Metrics>,
        enricher: Arc<dyn ContactEnricher>,
    ) -> HttpState {
        HttpState(Arc::new(Inner {
            settings,
            sessions,
            metrics,
            state: AtomicU8::new(health::NodeState::Starting as u8),
            enricher,
            confirmer: std::sync::OnceLock::new(),
            replays: std::sync::Mutex::new(replay::ReplayGuard::default()),
            events_seen: std::sync::Mutex::new(replay::ReplayGuard::default()),
        }))
    }

    /// Confirm every stamp with `confirmer` from now on (set once; later calls
    /// change nothing).
    pub fn set_confirmer(&self, confirmer: Arc<dyn StampConfirmer>) {
        let _ = self.0.confirmer.set(confirmer);
    }

    pub fn confirmer(&self) -> Option<&dyn StampConfirmer> {
        self.0.confirmer.get().map(|c| c.as_ref())
    }

    /// The replay guard; a panic elsewhere while it was held leaves it usable.
    pub fn replays(&self) -> std::sync::MutexGuard<'_, replay::ReplayGuard> {
        self.0
            .replays
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The event ids seen; a panic elsewhere while it was held leaves it usable.
    pub fn events_seen(&self) -> std::sync::MutexGuard<'_, replay::ReplayGuard> {
        self.0
            .events_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub fn sessions(&self) -> &dyn SessionStore {
        self.0.sessions.as_ref()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    fn metrics_arc(&self) -> Arc<Metrics> {
        self.0.metrics.clone()
    }

    pub fn enricher(&self) -> &dyn ContactEnricher {
        self.0.enricher.as_ref()
    }

    /// `/readyz` answers 200 while this is set (`false`: starting). Draining is
    /// for good: once set, this changes nothing.
    pub fn set_ready(&self, ready: bool) {
        let to = if ready {
            health::NodeState::Ready
        } else {
            health::NodeState::Starting
        };
        let _ = self
            .0
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s != health::NodeState::Draining as u8).then_some(to as u8)
            });
    }

    /// The node drains: `/readyz` answers 503 naming it from now on.
    pub fn set_draining(&self) {
        self.0
            .state
            .store(health::NodeState::Draining as u8, Ordering::Release);
    }

    pub fn node_state(&self) -> health::NodeState {
        health::NodeState::from_u8(self.0.state.load(Ordering::Acquire))
    }

    pub fn is_ready(&self) -> bool {
        self.node_state() == health::NodeState::Ready
    }
}

/// Every endpoint of the sidecar. A request that takes longer than
/// `http.request_timeout_ms` (body and handler) gets `408`.
pub fn router(state: HttpState) -> Router {
    let request_timeout = state.settings().conns.http.request_timeout;
    Router::new()
        .route(
            "/backend/zendesk-v2/voice-prefetch/:token",
            post(prefetch::voice_prefetch).layer(DefaultBodyLimit::max(PREFETCH_MAX_BODY)),
        )
        .route(
            "/backend/zendesk-v2/voice-prefetch-url",
            get(webhook_url::voice_prefetch_url),
        )
        .route("/v1/sessions", get(sessions::find_sessions))
        .route(
            "/v1/sessions/:id",
            get(sessions::get_session).patch(sessions::patch_session),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(axum::middleware::map_response(json_for_bare_errors))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// axum answers a wrong method (405), and the request timeout a slow request (408),
/// with an empty body; every error here is JSON.
async fn json_for_bare_errors(response: Response) -> Response {
    let status = response.status();
    let bare = !response.headers().contains_key(header::CONTENT_TYPE);
    if status == StatusCode::REQUEST_TIMEOUT && bare {
        return ApiError::new(status, "request not completed in time").into_response();
    }
    if status == StatusCode::METHOD_NOT_ALLOWED && bare {
        let allow = response.headers().get(header::ALLOW).cloned();
        let mut r = ApiError::new(status, "method not allowed for this endpoint").into_response();
        if let Some(a) = allow {
            r.headers_mut().insert(header::ALLOW, a);
        }
        return r;
    }
    response
}

/// The sidecar's listener and serving task.
pub struct HttpServer {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for HTTP on {addr}: {source}")]
pub struct HttpBindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

impl HttpServer {
    /// Bind `addr` and serve the router on the current runtime under `limits` (the
    /// configured ones, their connection caps fitted to the descriptor budget).
    pub async fn start(
        addr: SocketAddr,
        state: HttpState,
        limits: crate::config::HttpLimits,
    ) -> Result<HttpServer, HttpBindError> {
        let bind_error = |source| HttpBindError { addr, source };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let app = router(state.clone());
        let task = tokio::spawn(serve::serve(listener, app, state, limits, stopped));
        Ok(HttpServer { addr, stop, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting; requests in flight finish.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
