//! The one shape of every error the sidecar answers: JSON `{"error", "field"}`.

use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error response: status, a sentence for a person, and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub field: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            field: None,
        }
    }

    pub fn field(mut self, field: &'static str) -> ApiError {
        self.field = Some(field);
        self
    }

    pub fn unauthorized(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, error)
    }

    pub fn bad_request(field: &'static str, error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error).field(field)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), self.error.into());
        if let Some(f) = self.field {
            body.insert("field".into(), f.into());
        }
        (self.status, Json(serde_json::Value::Object(body))).into_response()
    }
}

/// A body that could not be read: over the limit (413), not sent in time (408,
/// `http.body_timeout_ms`) or broken (400).
pub fn body_error(rejection: BytesRejection) -> ApiError {
    body_error_over(rejection, super::MAX_BODY)
}

/// The same for a route whose bodies may be up to `limit` bytes.
pub fn body_error_over(rejection: BytesRejection, limit: usize) -> ApiError {
    if timed_out(&rejection) {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "body not received in time").field("body")
    } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is over {limit} bytes"),
        )
        .field("body")
    } else {
        ApiError::bad_request("body", "body could not be read")
    }
}

/// The body deadline's error somewhere down the rejection's causes.
fn timed_out(rejection: &BytesRejection) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The request says its body is JSON (`application/json`, parameters allowed).
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        )
        .field("content-type"))
    }
}
