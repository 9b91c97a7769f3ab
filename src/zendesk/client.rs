//! The Zendesk REST client: the three GETs contact enrichment needs, each with a
//! timeout, `429` honoured with its `Retry-After` (bounded), `5xx`, timeouts and
//! connection errors retried with backoff and jitter a bounded number of times,
//! `401`/`403` logged loudly and never retried, `404` reported as such. Error bodies
//! are read as JSON when they are, as text when not (Zendesk sometimes answers
//! `text/plain`). A `3xx` is never followed (the credentials would go with it):
//! it is an error naming the status, counted.

use super::auth::{Authorizer, TokenError};
use super::settings::ZendeskApiSettings;
use crate::metrics::Metrics;
use rand::Rng;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Largest answer body read; more is refused (an answer of ours is a few KiB).
pub const MAX_BODY: usize = 1 << 20;

/// Why a GET did not bring back what was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("not found (404)")]
    NotFound,
    #[error("Zendesk refused our credentials ({status}): {detail}")]
    Unauthorized { status: u16, detail: String },
    #[error("still rate limited (429) after {attempts} attempts")]
    RateLimited { attempts: u32 },
    #[error("Zendesk answered {status} after {attempts} attempts: {detail}")]
    Server {
        status: u16,
        attempts: u32,
        detail: String,
    },
    #[error("Zendesk answered {status}: {detail}")]
    Status { status: u16, detail: String },
    #[error(
        "Zendesk answered {status}, a redirect: not followed (the request carries credentials)"
    )]
    Redirect { status: u16 },
    #[error("no answer within {timeout:?}, {attempts} attempts")]
    Timeout { timeout: Duration, attempts: u32 },
    #[error("cannot reach Zendesk after {attempts} attempts: {error}")]
    Connect { error: String, attempts: u32 },
    #[error("answer is not what Zendesk documents: {0}")]
    BadBody(String),
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// What an answer's status means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    NotFound,
    /// 401, 403: never retried.
    AuthFailed,
    /// 429: retried after its Retry-After.
    RateLimited,
    /// 5xx: retried with backoff.
    Transient,
    /// 3xx: never followed, never retried.
    Redirect,
    /// Any other status: not retried.
    Failed,
}

pub fn classify(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Ok,
        404 => Verdict::NotFound,
        401 | 403 => Verdict::AuthFailed,
        429 => Verdict::RateLimited,
        s if crate::outbound_http::is_redirect(s) => Verdict::Redirect,
        500..=599 => Verdict::Transient,
        _ => Verdict::Failed,
    }
}

/// `Retry-After` as delta-seconds (RFC 9110 10.2.3). An HTTP-date is not used: the
/// backoff applies instead.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    (!v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()))
        .then(|| v.parse::<u64>().ok())
        .flatten()
        .map(Duration::from_secs)
}

/// The pause before retry number `retry` (1 for the first): `base * 2^(retry-1)`
/// capped at `max`, then scaled by `0.5 + jitter / 2` ("equal jitter", `jitter` in
/// 0..1) so that many clients do not retry in step.
pub fn backoff(retry: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << retry.saturating_sub(1).min(20));
    exp.min(max).mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

/// Whether and how long to wait before trying again, after `attempts` attempts.
/// None: give up.
pub fn retry_delay(
    verdict: Verdict,
    attempts: u32,
    retry_after: Option<Duration>,
    s: &ZendeskApiSettings,
    jitter: f64,
) -> Option<Duration> {
    if attempts > s.max_retries {
        return None;
    }
    let backoff = backoff(attempts, s.retry_base, s.retry_max, jitter);
    match verdict {
        Verdict::RateLimited => Some(retry_after.map_or(backoff, |d| d.min(s.max_retry_after))),
        Verdict::Transient => Some(backoff),
        _ => None,
    }
}

/// An error body in one line for the log: Zendesk's JSON `{error, description}` when
/// it is JSON, else the start of the text with control characters blanked.
pub fn error_detail(content_type: Option<&str>, body: &[u8]) -> String {
    let looks_json = content_type.is_none_or(|c| c.contains("json"));
    if looks_json {
        if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
            let text = |v: Option<&Value>| match v {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Object(o)) => o
                    .get("title")
                    .or_else(|| o.get("message"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                _ => None,
            };
            let parts: Vec<String> = [text(m.get("error")), text(m.get("description"))]
                .into_iter()
                .flatten()
                .collect();
            if !parts.is_empty() {
                return one_line(&parts.join(": "));
            }
        }
    }
    one_line(&String::from_utf8_lossy(body))
}

fn one_line(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    match s.trim() {
        "" => "(empty body)".into(),
        t => t.to_owned(),
    }
}

/// A reqwest error in a line, without the URL's query.
pub(super) fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

#[derive(Debug)]
pub(super) enum BodyError {
    Timeout,
    TooLarge,
    Read(String),
}

/// The body, at most [`MAX_BODY`] bytes.
pub(super) async fn read_body(mut resp: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if out.len() + c.len() > MAX_BODY {
                    return Err(BodyError::TooLarge);
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(e) if e.is_timeout() => return Err(BodyError::Timeout),
            Err(e) => return Err(BodyError::Read(describe(&e))),
        }
    }
}

/// `GET /api/v2/tickets/{id}.json`, the parts we use.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Ticket {
    pub id: u64,
    pub requester_id: Option<u64>,
    pub organization_id: Option<u64>,
    #[serde(default)]
    pub via: Option<Value>,
}

/// `GET /api/v2/users/{id}.json`, the parts we use.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct User {
    pub id: u64,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// A string in Zendesk's documentation; kept as a value to be lenient.
    #[serde(default)]
    pub external_id: Option<Value>,
    #[serde(default)]
    pub user_fields: Option<Map<String, Value>>,
    pub organization_id: Option<u64>,
}

/// `GET /api/v2/organizations/{id}.json`, the parts we use.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Organization {
    pub id: u64,
    pub name: Option<String>,
    #[serde(default)]
    pub organization_fields: Option<Map<String, Value>>,
}

/// The Zendesk REST client of one handoff.
pub struct ZendeskClient {
    http: reqwest::Client,
    pub(super) settings: ZendeskApiSettings,
    pub(super) auth: Authorizer,
    pub(super) metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the Zendesk HTTP client: {0}")]
pub struct ClientBuildError(String);

/// What one attempt means for the request loop ([`ZendeskClient::judge`]).
pub(super) enum Judged {
    /// A 2xx, with its body.
    Ok(Vec<u8>),
    /// Final: no retry.
    Fail(FetchError),
    /// Failed; the retry rules decide (`status` when the server answered).
    Again {
        verdict: Verdict,
        retry_after: Option<Duration>,
        failure: FetchError,
        status: Option<u16>,
    },
}

/// One attempt's outcome, before the retry decision.
pub(super) enum Attempt {
    Answer {
        status: u16,
        retry_after: Option<Duration>,
        detail: String,
        body: Vec<u8>,
    },
    Timeout,
    Connect(String),
    /// The body was over [`MAX_BODY`]: not worth another try.
    TooLarge,
}

impl ZendeskClient {
    pub fn new(
        settings: ZendeskApiSettings,
        metrics: Arc<Metrics>,
    ) -> Result<ZendeskClient, ClientBuildError> {
        let http = crate::outbound_http::client_builder(settings.request_timeout)
            .build()
            .map_err(|e| ClientBuildError(describe(&e)))?;
        let auth = Authorizer::new(&settings.auth, http.clone(), metrics.clone());
        Ok(ZendeskClient {
            http,
            settings,
            auth,
            metrics,
        })
    }

    pub async fn ticket(&self, id: u64) -> Result<Ticket, FetchError> {
        #[derive(Deserialize)]
        struct Envelope {
            ticket: Ticket,
        }
        let e: Envelope = self.get(&format!("/api/v2/tickets/{id}.json")).await?;
        Ok(e.ticket)
    }

    pub async fn user(&self, id: u64) -> Result<User, FetchError> {
        #[derive(Deserialize)]
        struct Envelope {
            user: User,
        }
        let e: Envelope = self.get(&format!("/api/v2/users/{id}.json")).await?;
        Ok(e.user)
    }

    pub async fn organization(&self, id: u64) -> Result<Organization, FetchError> {
        #[derive(Deserialize)]
        struct Envelope {
            organization: Organization,
        }
        let e: Envelope = self
            .get(&format!("/api/v2/organizations/{id}.json"))
            .await?;
        Ok(e.organization)
    }

    /// GET `path` with retries; the body parsed as `T`.
    pub(super) async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, FetchError> {
        let url = format!("{}{path}", self.settings.base_url);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let header = self.auth.header().await?;
            let outcome = self
                .attempt(reqwest::Method::GET, &url, &header, None)
                .await;
            if matches!(outcome, Attempt::TooLarge) {
                Metrics::inc(&self.metrics.zendesk_request_failures_total);
                tracing::warn!(path, "Zendesk answer too large");
                return Err(FetchError::BadBody(format!("answer over {MAX_BODY} bytes")));
            }
            match self
                .judge(path, "contact enrichment fails", outcome, attempts, &header)
                .await
            {
                Judged::Ok(body) => {
                    return serde_json::from_slice(&body)
                        .map_err(|e| FetchError::BadBody(e.to_string()))
                }
                Judged::Fail(e) => return Err(e),
                Judged::Again {
                    verdict,
                    retry_after,
                    failure,
                    ..
                } => {
                    self.pause_or_fail(
                        path,
                        "Zendesk request",
                        verdict,
                        attempts,
                        retry_after,
                        failure,
                    )
                    .await?
                }
            }
        }
    }

    /// One attempt's outcome judged, counted and logged: a 2xx's body, a final
    /// failure, or a failure that the retry rules may try again. `failing` says
    /// what stops working while the credentials are refused.
    pub(super) async fn judge(
        &self,
        path: &str,
        failing: &str,
        outcome: Attempt,
        attempts: u32,
        header: &crate::config::Secret,
    ) -> Judged {
        let m = &self.metrics;
        let again = |verdict, retry_after, failure, status| Judged::Again {
            verdict,
            retry_after,
            failure,
            status,
        };
        match outcome {
            Attempt::Answer {
                status,
                retry_after,
                detail,
                body,
            } => {
                match classify(status) {
                    Verdict::Ok => {
                        Metrics::inc(&m.zendesk_requests_ok_total);
                        Judged::Ok(body)
                    }
                    Verdict::NotFound => {
                        Metrics::inc(&m.zendesk_not_found_total);
                        Judged::Fail(FetchError::NotFound)
                    }
                    Verdict::AuthFailed => {
                        Metrics::inc(&m.zendesk_auth_failures_total);
                        tracing::error!(path, status, detail, "Zendesk refused handoff's API credentials: {failing} until they are fixed");
                        if status == 401 {
                            self.auth.refused(header).await;
                        }
                        Judged::Fail(FetchError::Unauthorized { status, detail })
                    }
                    Verdict::RateLimited => {
                        Metrics::inc(&m.zendesk_rate_limited_total);
                        let failure = FetchError::RateLimited { attempts };
                        again(Verdict::RateLimited, retry_after, failure, Some(status))
                    }
                    Verdict::Transient => {
                        let failure = FetchError::Server {
                            status,
                            attempts,
                            detail,
                        };
                        again(Verdict::Transient, None, failure, Some(status))
                    }
                    Verdict::Redirect => {
                        Metrics::inc(&m.outbound_redirects_refused_total);
                        Metrics::inc(&m.zendesk_request_failures_total);
                        tracing::error!(path, status, "Zendesk API answered a redirect; not followed (check zendesk.subdomain / zendesk.base_url)");
                        Judged::Fail(FetchError::Redirect { status })
                    }
                    Verdict::Failed => {
                        // 422 (a closed ticket, the 5,000-comment cap) and the like.
                        Metrics::inc(&m.zendesk_request_failures_total);
                        tracing::warn!(path, status, detail, "Zendesk request failed");
                        Judged::Fail(FetchError::Status { status, detail })
                    }
                }
            }
            // Says nothing sure about a write: treated as a lost answer.
            Attempt::TooLarge => again(
                Verdict::Transient,
                None,
                FetchError::BadBody(format!("answer over {MAX_BODY} bytes")),
                None,
            ),
            Attempt::Timeout => again(
                Verdict::Transient,
                None,
                FetchError::Timeout {
                    timeout: self.settings.request_timeout,
                    attempts,
                },
                None,
            ),
            Attempt::Connect(error) => again(
                Verdict::Transient,
                None,
                FetchError::Connect { error, attempts },
                None,
            ),
        }
    }

    /// The retry rules after a failed attempt: sleep until the next one, or
    /// the failure when there is none. `what` names the request in the logs.
    pub(super) async fn pause_or_fail(
        &self,
        path: &str,
        what: &str,
        verdict: Verdict,
        attempts: u32,
        retry_after: Option<Duration>,
        failure: FetchError,
    ) -> Result<(), FetchError> {
        let m = &self.metrics;
        let jitter = rand::thread_rng().gen::<f64>();
        match retry_delay(verdict, attempts, retry_after, &self.settings, jitter) {
            Some(pause) => {
                Metrics::inc(&m.zendesk_retries_total);
                tracing::info!(path, attempts, pause_ms = pause.as_millis() as u64, error = %failure, "{what} will be retried");
                tokio::time::sleep(pause).await;
                Ok(())
            }
            None => {
                Metrics::inc(&m.zendesk_request_failures_total);
                tracing::warn!(path, error = %failure, "{what} given up");
                Err(failure)
            }
        }
    }

    /// One request: GET, or a write with a JSON `body` (the ticket note).
    pub(super) async fn attempt(
        &self,
        method: reqwest::Method,
        url: &str,
        header: &crate::config::Secret,
        body: Option<&Value>,
    ) -> Attempt {
        Metrics::inc(&self.metrics.zendesk_requests_total);
        let mut req = self
            .http
            .request(method, url)
            .header("authorization", header.expose())
            .header("accept", "application/json");
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let sent = req.send().await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Attempt::Timeout,
            Err(e) => return Attempt::Connect(describe(&e)),
        };
        let status = resp.status().as_u16();
        let h = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = h("retry-after").as_deref().and_then(parse_retry_after);
        let ctype = h("content-type");
        let body = match read_body(resp).await {
            Ok(b) => b,
            Err(BodyError::Timeout) => return Attempt::Timeout,
            Err(BodyError::TooLarge) => return Attempt::TooLarge,
            Err(BodyError::Read(e)) => return Attempt::Connect(e),
        };
        let detail = if (200..300).contains(&status) {
            String::new()
        } else {
            error_detail(ctype.as_deref(), &body)
        };
        Attempt::Answer {
            status,
            retry_after,
            detail,
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::zendesk::settings::ApiAuth;

    fn settings() -> ZendeskApiSettings {
        ZendeskApiSettings {
            base_url: "http://127.0.0.1:1".into(),
            auth: ApiAuth::Bearer(Secret::new("t")),
            request_timeout: Duration::from_secs(1),
            max_retries: 3,
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn statuses_classified() {
        assert_eq!(classify(200), Verdict::Ok);
        assert_eq!(classify(404), Verdict::NotFound);
        assert_eq!(classify(401), Verdict::AuthFailed);
        assert_eq!(classify(403), Verdict::AuthFailed);
        assert_eq!(classify(429), Verdict::RateLimited);
        assert_eq!(classify(503), Verdict::Transient);
        assert_eq!(classify(400), Verdict::Failed);
        assert_eq!(classify(302), Verdict::Redirect);
        assert_eq!(classify(307), Verdict::Redirect);
        assert_eq!(classify(301), Verdict::Redirect);
    }

    #[test]
    fn retry_after_is_delta_seconds_only() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 30 "), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after(""), None);
        assert_eq!(parse_retry_after("99999999999999999999"), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let (b, m) = (Duration::from_millis(100), Duration::from_millis(1000));
        assert_eq!(backoff(1, b, m, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(2, b, m, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(3, b, m, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(5, b, m, 1.0), Duration::from_millis(1000));
        assert_eq!(backoff(40, b, m, 1.0), Duration::from_millis(1000));
        assert_eq!(backoff(2, b, m, 0.0), Duration::from_millis(100));
    }

    #[test]
    fn what_is_retried_and_for_how_long() {
        let s = settings();
        // 429 waits its Retry-After, cut to the bound; without one, the backoff.
        assert_eq!(
            retry_delay(
                Verdict::RateLimited,
                1,
                Some(Duration::from_secs(1)),
                &s,
                0.5
            ),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            retry_delay(
                Verdict::RateLimited,
                1,
                Some(Duration::from_secs(3600)),
                &s,
                0.5
            ),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_delay(Verdict::RateLimited, 1, None, &s, 1.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            retry_delay(Verdict::Transient, 3, None, &s, 1.0),
            Some(Duration::from_millis(400))
        );
        // Three retries after the first attempt, then no more.
        assert_eq!(retry_delay(Verdict::Transient, 4, None, &s, 1.0), None);
        for v in [
            Verdict::AuthFailed,
            Verdict::Redirect,
            Verdict::NotFound,
            Verdict::Failed,
            Verdict::Ok,
        ] {
            assert_eq!(retry_delay(v, 1, None, &s, 0.5), None, "{v:?}");
        }
    }

    #[test]
    fn error_bodies_json_or_text() {
        assert_eq!(
            error_detail(
                Some("application/json"),
                br#"{"error":"RecordNotFound","description":"Not found"}"#
            ),
            "RecordNotFound: Not found"
        );
        assert_eq!(
            error_detail(
                None,
                br#"{"error":{"title":"Forbidden","message":"You do not have access"}}"#
            ),
            "Forbidden"
        );
        assert_eq!(
            error_detail(Some("text/plain"), b"Rate limit\r\nexceeded"),
            "Rate limit  exceeded"
        );
        assert_eq!(error_detail(Some("application/json"), b"<html>"), "<html>");
        assert_eq!(error_detail(Some("text/plain"), b""), "(empty body)");
        assert_eq!(error_detail(None, &[b'x'; 1000]).len(), 200);
    }

    #[test]
    fn zendesk_shapes_parse() {
        let t: Ticket = serde_json::from_str(
            r#"{"id": 35436, "requester_id": 20978392, "organization_id": 509974, "via": {"channel": "voice", "source": {"from": {"phone": "+14155551212"}}}, "subject": "x"}"#,
        )
        .expect("ticket");
        assert_eq!(
            (t.requester_id, t.organization_id),
            (Some(20978392), Some(509974))
        );
        let u: User = serde_json::from_str(
            r#"{"id": 1, "name": "A", "email": null, "phone": null, "external_id": null, "user_fields": {}, "organization_id": null, "role": "end-user"}"#,
        )
        .expect("user");
        assert_eq!(u.email, None);
        let o: Organization = serde_json::from_str(
            r#"{"id": 2, "name": "O", "organization_fields": {"tier": "gold"}}"#,
        )
        .expect("org");
        assert_eq!(o.organization_fields.map(|f| f.len()), Some(1));
    }
}
