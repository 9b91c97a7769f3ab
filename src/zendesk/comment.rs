//! A private comment added to a ticket (`PUT /api/v2/tickets/{id}.json` with
//! `{"ticket": {"comment": {"body": ..., "public": false}}}`), retried with the
//! client's rules (`429` after its `Retry-After`, `5xx`, timeouts and connection
//! errors with backoff), and never twice: Zendesk's `Idempotency-Key` covers ticket
//! creation only, so an attempt whose answer was lost (a timeout, a broken
//! connection, a `5xx`: Zendesk may have added the comment) is followed by a look
//! at the ticket's newest comments for the note's marker line before the next one.

use super::client::{classify, retry_delay, Attempt, FetchError, Verdict, ZendeskClient, MAX_BODY};
use super::note::has_marker;
use crate::metrics::Metrics;
use rand::Rng;
use serde::Deserialize;
use serde_json::json;

/// What became of the comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommentOutcome {
    Added,
    /// A retry found it on the ticket already (an earlier answer was lost).
    AlreadyThere,
}

/// Whether a write may have been carried out although it did not succeed: no
/// answer (`None`: timeout, broken connection) or a `5xx`. A `429` was refused
/// before anything happened; any other status is an answer about the write.
pub fn may_have_landed(status: Option<u16>) -> bool {
    status.is_none_or(|s| (500..=599).contains(&s))
}

impl ZendeskClient {
    /// The bodies of the ticket's newest comments (one page, newest first).
    pub async fn recent_comment_bodies(&self, ticket: u64) -> Result<Vec<String>, FetchError> {
        #[derive(Deserialize)]
        struct Comment {
            #[serde(default)]
            body: Option<String>,
            #[serde(default)]
            plain_body: Option<String>,
        }
        #[derive(Deserialize)]
        struct Page {
            comments: Vec<Comment>,
        }
        let page: Page = self
            .get(&format!(
                "/api/v2/tickets/{ticket}/comments.json?sort_order=desc"
            ))
            .await?;
        Ok(page
            .comments
            .into_iter()
            .flat_map(|c| [c.body, c.plain_body])
            .flatten()
            .collect())
    }

    /// Adds `body` as a private comment to `ticket`, once: `marker` is a line of
    /// `body` a retry looks for first.
    pub async fn add_private_comment(
        &self,
        ticket: u64,
        body: &str,
        marker: &str,
    ) -> Result<CommentOutcome, FetchError> {
        let path = format!("/api/v2/tickets/{ticket}.json");
        let url = format!("{}{path}", self.settings.base_url);
        let payload = json!({"ticket": {"comment": {"body": body, "public": false}}});
        let mut attempts = 0u32;
        let mut landed = false;
        loop {
            if landed {
                let bodies = self.recent_comment_bodies(ticket).await?;
                if has_marker(bodies.iter().map(String::as_str), marker) {
                    return Ok(CommentOutcome::AlreadyThere);
                }
            }
            attempts += 1;
            let header = self.auth.header().await?;
            let outcome = self
                .attempt(reqwest::Method::PUT, &url, &header, Some(&payload))
                .await;
            let m = &self.metrics;
            let (verdict, retry_after, failure, status) = match outcome {
                Attempt::Answer {
                    status,
                    retry_after,
                    detail,
                    body: _,
                } => match classify(status) {
                    Verdict::Ok => {
                        Metrics::inc(&m.zendesk_requests_ok_total);
                        return Ok(CommentOutcome::Added);
                    }
                    Verdict::NotFound => {
                        Metrics::inc(&m.zendesk_not_found_total);
                        return Err(FetchError::NotFound);
                    }
                    Verdict::AuthFailed => {
                        Metrics::inc(&m.zendesk_auth_failures_total);
                        tracing::error!(path, status, detail, "Zendesk refused handoff's API credentials: ticket notes fail until they are fixed");
                        if status == 401 {
                            self.auth.refused(&header).await;
                        }
                        return Err(FetchError::Unauthorized { status, detail });
                    }
                    Verdict::RateLimited => {
                        Metrics::inc(&m.zendesk_rate_limited_total);
                        let f = FetchError::RateLimited { attempts };
                        (Verdict::RateLimited, retry_after, f, Some(status))
                    }
                    Verdict::Transient => {
                        let f = FetchError::Server {
                            status,
                            attempts,
                            detail,
                        };
                        (Verdict::Transient, None, f, Some(status))
                    }
                    Verdict::Redirect => {
                        Metrics::inc(&m.outbound_redirects_refused_total);
                        Metrics::inc(&m.zendesk_request_failures_total);
                        tracing::error!(path, status, "Zendesk API answered a redirect; not followed (check zendesk.subdomain / zendesk.base_url)");
                        return Err(FetchError::Redirect { status });
                    }
                    Verdict::Failed => {
                        // 422 (a closed ticket, the 5,000-comment cap) and the like.
                        Metrics::inc(&m.zendesk_request_failures_total);
                        tracing::warn!(path, status, detail, "Zendesk refused the ticket note");
                        return Err(FetchError::Status { status, detail });
                    }
                },
                // An answer too big to read says nothing sure: as a lost one, the
                // next attempt looks for the note first.
                Attempt::TooLarge => (
                    Verdict::Transient,
                    None,
                    FetchError::BadBody(format!("answer over {MAX_BODY} bytes")),
                    None,
                ),
                Attempt::Timeout => (
                    Verdict::Transient,
                    None,
                    FetchError::Timeout {
                        timeout: self.settings.request_timeout,
                        attempts,
                    },
                    None,
                ),
                Attempt::Connect(error) => (
                    Verdict::Transient,
                    None,
                    FetchError::Connect { error, attempts },
                    None,
                ),
            };
            landed = landed || may_have_landed(status);
            let jitter = rand::thread_rng().gen::<f64>();
            match retry_delay(verdict, attempts, retry_after, &self.settings, jitter) {
                Some(pause) => {
                    Metrics::inc(&m.zendesk_retries_total);
                    tracing::info!(path, attempts, pause_ms = pause.as_millis() as u64, error = %failure, "ticket note will be retried");
                    tokio::time::sleep(pause).await;
                }
                None => {
                    Metrics::inc(&m.zendesk_request_failures_total);
                    tracing::warn!(path, error = %failure, "ticket note given up");
                    return Err(failure);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lost_answer_or_a_server_error_may_have_added_the_comment() {
        assert!(may_have_landed(None), "timeout or broken connection");
        assert!(may_have_landed(Some(500)));
        assert!(may_have_landed(Some(503)));
        assert!(
            !may_have_landed(Some(429)),
            "refused before anything happened"
        );
        assert!(!may_have_landed(Some(422)));
        assert!(!may_have_landed(Some(401)));
    }
}
