//! The sidecar's own accept loop on hyper: connection caps checked at accept (over
//! one, the connection is closed at once), a header read timeout on every connection
//! (a slowloris client is cut off), and the tower stack around the router: a global
//! concurrency limit that answers `503` at once instead of queueing, and a deadline
//! on each piece of a request body. The whole-request `408` is in [`super::router`].

use super::{ApiError, HttpState};
use crate::config::HttpLimits;
use crate::metrics::Metrics;
use crate::net::{Admission, ConnCaps, ConnCounter};
use axum::error_handling::HandleErrorLayer;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::{BoxError, ServiceBuilder};
use tower_http::timeout::RequestBodyTimeoutLayer;

/// Largest header block and read buffer per connection (hyper's default is ~400 KiB):
/// 1024 connections cannot hold 400 MiB between them.
const MAX_BUF: usize = 64 * 1024;

/// How long a failed accept (out of descriptors, say) waits before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serve `app` on `listener` under `limits` until `stopped` turns true, then let
/// requests in flight finish (bounded by the request timeout).
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    state: HttpState,
    limits: HttpLimits,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let metrics = state.metrics_arc();
    let counter = ConnCounter::new(ConnCaps {
        total: limits.max_connections,
        per_source: limits.max_connections_per_ip,
    });
    let service = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(on_overload(state.clone())))
        .load_shed()
        .concurrency_limit(limits.max_concurrent_requests)
        .layer(RequestBodyTimeoutLayer::new(limits.body_timeout))
        .service(app);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUF)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stopped.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let permit = match counter.try_acquire(peer.ip()) {
            Ok(p) => p,
            Err(why) => {
                Metrics::inc(&metrics.http_connections_refused_total);
                let cap = match why {
                    Admission::OverPerSource => "http.max_connections_per_ip",
                    _ => "http.max_connections",
                };
                tracing::debug!(source = %peer.ip(), cap, "HTTP connection over its cap, closed");
                drop(stream);
                continue;
            }
        };
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
        let conn = graceful.watch(conn);
        let metrics = metrics.clone();
        metrics.http_connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // Header timeouts, resets, malformed requests: the peer's problem.
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            metrics.http_connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    let bound = limits.request_timeout + limits.header_timeout;
    if tokio::time::timeout(bound, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still in flight at stop were cut off");
    }
}

/// The error handler, named so its argument type is not inferred per call.
fn on_overload(
    state: HttpState,
) -> impl FnOnce(BoxError) -> std::future::Ready<Response> + Clone + Send + 'static {
    move |e| std::future::ready(overloaded(&state, e))
}

/// The answer when `http.max_concurrent_requests` are in progress (or the stack
/// failed otherwise, which it cannot today): `503` with a JSON body, at once.
fn overloaded(state: &HttpState, e: BoxError) -> Response {
    if e.is::<tower::load_shed::error::Overloaded>() {
        Metrics::inc(&state.metrics().http_requests_shed_total);
    } else {
        tracing::warn!(error = %e, "HTTP service error");
    }
    let mut r = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many requests in progress; retry shortly",
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}
