//! The `Authorization` header of Zendesk API requests: an API token (Basic), a
//! static OAuth bearer token, or OAuth client credentials exchanged at
//! `/oauth/tokens` for a token that is refreshed before it expires.
//!
//! The refresh is proactive (a token is replaced `margin` before its expiry, so a
//! request never goes out with one about to lapse) and single-flight: the cache's
//! lock is held across the exchange, so however many requests want a token at once,
//! one exchange runs and the others wait for its result.

use super::settings::ApiAuth;
use crate::config::Secret;
use crate::metrics::Metrics;
use base64::Engine as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Why no token could be had from the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token request got no answer in time")]
    Timeout,
    #[error("token request failed: {0}")]
    Connect(String),
    #[error("token endpoint answered {status}: {detail}")]
    Refused { status: u16, detail: String },
    #[error("token endpoint answered {status}, a redirect: not followed (the request carries the client secret)")]
    Redirect { status: u16 },
    #[error("token response is unusable: {0}")]
    BadResponse(&'static str),
}

/// `Basic base64("{email}/token:{token}")`, as Zendesk's API token scheme wants.
pub fn basic_header(email: &str, token: &str) -> String {
    let raw = format!("{email}/token:{token}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// When a token obtained at `now` that lives `expires_in` seconds must be replaced:
/// `margin` before it expires; a token living no longer than the margin is used for
/// half its life. None: it does not expire (Zendesk tokens may not).
pub fn refresh_at(now: Instant, expires_in: Option<u64>, margin: Duration) -> Option<Instant> {
    let life = Duration::from_secs(expires_in?);
    let usable = if life > margin {
        life - margin
    } else {
        life / 2
    };
    Some(now + usable)
}

/// The cached token must be replaced before it is used again.
pub fn needs_refresh(refresh_at: Option<Instant>, now: Instant) -> bool {
    refresh_at.is_some_and(|t| now >= t)
}

/// The access token and its lifetime from a `/oauth/tokens` answer. The token goes
/// into a header, so it must be printable without spaces.
pub fn parse_token_response(body: &[u8]) -> Result<(String, Option<u64>), TokenError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| TokenError::BadResponse("not JSON"))?;
    let token = v["access_token"]
        .as_str()
        .ok_or(TokenError::BadResponse("no access_token"))?;
    if token.is_empty() || token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::BadResponse(
            "access_token is not printable text without spaces",
        ));
    }
    if let Some(t) = v["token_type"].as_str() {
        if !t.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::BadResponse("token_type is not bearer"));
        }
    }
    Ok((token.to_owned(), v["expires_in"].as_u64()))
}

#[derive(Debug)]
struct Cached {
    header: Secret,
    refresh_at: Option<Instant>,
}

struct TokenSource {
    http: reqwest::Client,
    url: String,
    client_id: String,
    client_secret: Secret,
    scope: String,
    margin: Duration,
    cached: Mutex<Option<Cached>>,
}

enum Kind {
    Static(Secret),
    Exchanged(Box<TokenSource>),
}

/// Hands out the `Authorization` header value for each request.
pub struct Authorizer {
    kind: Kind,
    metrics: Arc<Metrics>,
}

impl Authorizer {
    /// `http` is the client used for token exchanges (with its timeouts).
    pub fn new(auth: &ApiAuth, http: reqwest::Client, metrics: Arc<Metrics>) -> Authorizer {
        let kind = match auth {
            ApiAuth::ApiToken { email, token } => {
                Kind::Static(Secret::new(basic_header(email, token.expose())))
            }
            ApiAuth::Bearer(t) => Kind::Static(Secret::new(format!("Bearer {}", t.expose()))),
            ApiAuth::ClientCredentials {
                client_id,
                client_secret,
                token_url,
                scope,
                margin,
            } => Kind::Exchanged(Box::new(TokenSource {
                http,
                url: token_url.clone(),
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                scope: scope.clone(),
                margin: *margin,
                cached: Mutex::new(None),
            })),
        };
        Authorizer { kind, metrics }
    }

    /// The header value for a request now.
    pub async fn header(&self) -> Result<Secret, TokenError> {
        let source = match &self.kind {
            Kind::Static(h) => return Ok(h.clone()),
            Kind::Exchanged(s) => s,
        };
        // Held across the exchange: the waiters get the token it brings.
        let mut cached = source.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if !needs_refresh(c.refresh_at, Instant::now()) {
                return Ok(c.header.clone());
            }
        }
        match source.exchange().await {
            Ok((token, expires_in)) => {
                Metrics::inc(&self.metrics.zendesk_token_refreshes_total);
                let header = Secret::new(format!("Bearer {token}"));
                *cached = Some(Cached {
                    header: header.clone(),
                    refresh_at: refresh_at(Instant::now(), expires_in, source.margin),
                });
                tracing::debug!(expires_in, "Zendesk OAuth token obtained");
                Ok(header)
            }
            Err(e) => {
                if matches!(e, TokenError::Redirect { .. }) {
                    Metrics::inc(&self.metrics.outbound_redirects_refused_total);
                }
                if matches!(
                    e,
                    TokenError::Refused {
                        status: 401 | 403,
                        ..
                    }
                ) {
                    Metrics::inc(&self.metrics.zendesk_auth_failures_total);
                    tracing::error!(url = %source.url, error = %e, "Zendesk refused our OAuth client credentials: contact enrichment cannot work until they are fixed");
                } else {
                    tracing::warn!(url = %source.url, error = %e, "no Zendesk OAuth token");
                }
                Err(e)
            }
        }
    }

    /// Zendesk refused `used` (401): an exchanged token is forgotten so that the next
    /// request gets a new one (it may have been revoked). A static one cannot change.
    pub async fn refused(&self, used: &Secret) {
        if let Kind::Exchanged(source) = &self.kind {
            let mut cached = source.cached.lock().await;
            if cached.as_ref().is_some_and(|c| c.header == *used) {
                *cached = None;
            }
        }
    }
}

impl TokenSource {
    async fn exchange(&self) -> Result<(String, Option<u64>), TokenError> {
        let body = serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret.expose(),
            "scope": self.scope,
        });
        let resp = self
            .http
            .post(&self.url)
            .header("accept", "application/json")
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    TokenError::Timeout
                } else {
                    TokenError::Connect(super::client::describe(&e))
                }
            })?;
        let status = resp.status().as_u16();
        if crate::outbound_http::is_redirect(status) {
            return Err(TokenError::Redirect { status });
        }
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = super::client::read_body(resp).await.map_err(|e| match e {
            super::client::BodyError::Timeout => TokenError::Timeout,
            super::client::BodyError::TooLarge => TokenError::BadResponse("answer too large"),
            super::client::BodyError::Read(m) => TokenError::Connect(m),
        })?;
        if !(200..300).contains(&status) {
            return Err(TokenError::Refused {
                status,
                detail: super::client::error_detail(ctype.as_deref(), &bytes),
            });
        }
        parse_token_response(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_is_email_slash_token() {
        // base64("a@b.c/token:xyz")
        assert_eq!(basic_header("a@b.c", "xyz"), "Basic YUBiLmMvdG9rZW46eHl6");
    }

    #[test]
    fn refresh_comes_a_margin_before_expiry() {
        let now = Instant::now();
        let margin = Duration::from_secs(300);
        assert_eq!(
            refresh_at(now, Some(3600), margin),
            Some(now + Duration::from_secs(3300))
        );
        // A token shorter-lived than the margin is used for half its life, not refreshed
        // on every request.
        assert_eq!(
            refresh_at(now, Some(120), margin),
            Some(now + Duration::from_secs(60))
        );
        assert_eq!(refresh_at(now, None, margin), None);
        let at = refresh_at(now, Some(3600), margin);
        assert!(!needs_refresh(at, now + Duration::from_secs(3299)));
        assert!(needs_refresh(at, now + Duration::from_secs(3300)));
        assert!(!needs_refresh(None, now + Duration::from_secs(1 << 30)));
    }

    #[test]
    fn token_responses_are_checked() {
        assert_eq!(
            parse_token_response(
                br#"{"access_token":"abc","token_type":"bearer","expires_in":3600,"scope":"read"}"#
            ),
            Ok(("abc".into(), Some(3600)))
        );
        assert_eq!(
            parse_token_response(br#"{"access_token":"abc"}"#),
            Ok(("abc".into(), None))
        );
        for bad in [
            &br#"{"access_token":"a\r\nX-Evil: 1"}"#[..],
            br#"{"access_token":""}"#,
            br#"{"token_type":"bearer"}"#,
            br#"{"access_token":"abc","token_type":"mac"}"#,
            b"not json",
        ] {
            assert!(
                parse_token_response(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
