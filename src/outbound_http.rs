//! The HTTP client every outbound request of handoff goes through (the Zendesk
//! API, the OAuth token exchange, lifecycle-event deliveries): redirects are never
//! followed. A 3xx would make the client send the request again, with its
//! `Authorization` header or its body (an OAuth client secret, a signed event),
//! to wherever the answer points; here it is an answer like any other, which the
//! callers turn into an error naming the status.

use std::time::Duration;

/// A client builder with no redirect policy, the timeouts and handoff's
/// User-Agent.
pub fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("handoff/", env!("CARGO_PKG_VERSION")))
}

/// Whether an answer is a redirect (RFC 9110 15.4), which handoff never follows.
pub fn is_redirect(status: u16) -> bool {
    (300..400).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_3xx_is_a_redirect() {
        for s in [300, 301, 302, 303, 304, 307, 308, 399] {
            assert!(is_redirect(s), "{s}");
        }
        for s in [200, 204, 299, 400, 401, 500] {
            assert!(!is_redirect(s), "{s}");
        }
    }
}
