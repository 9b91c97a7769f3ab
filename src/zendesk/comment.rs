//! A private comment added to a ticket (`PUT /api/v2/tickets/{id}.json` with
//! `{"ticket": {"comment": {"body": ..., "public": false}}}`), retried with the
//! client's rules (`429` after its `Retry-After`, `5xx`, timeouts and connection
//! errors with backoff), and never twice: Zendesk's `Idempotency-Key` covers ticket
//! creation only, so an attempt whose answer was lost (a timeout, a broken
//! connection, a `5xx`: Zendesk may have added the comment) is followed by a look
//! at the ticket's newest comments for the note's marker line before the next one.

use super::client::{FetchError, Judged, ZendeskClient};
use super::note::has_marker;
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
            let (verdict, retry_after, failure, status) = match self
                .judge(&path, "ticket notes fail", outcome, attempts, &header)
                .await
            {
                Judged::Ok(_) => return Ok(CommentOutcome::Added),
                Judged::Fail(e) => return Err(e),
                Judged::Again {
                    verdict,
                    retry_after,
                    failure,
                    status,
                } => (verdict, retry_after, failure, status),
            };
            landed = landed || may_have_landed(status);
            self.pause_or_fail(
                &path,
                "ticket note",
                verdict,
                attempts,
                retry_after,
                failure,
            )
            .await?;
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
