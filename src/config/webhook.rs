//! The webhook's trust settings: token lifetime, revoked tokens, and the start-up
//! refusals for a sidecar reachable from elsewhere (a shipped secret in use, an
//! unsigned Zendesk webhook not explicitly allowed).

use super::shipped::is_shipped_secret;
use super::{Config, ConfigError, HttpSettings};
use serde::Deserialize;
use std::time::Duration;

/// Default lifetime of a newly minted webhook-URL token, in days.
pub const DEFAULT_TOKEN_LIFETIME_DAYS: u64 = 365;

/// Longest lifetime accepted for a webhook-URL token, in days (ten years).
const MAX_TOKEN_LIFETIME_DAYS: u64 = 3650;

/// One `[[http.revoked_tokens]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedTokenConfig {
    pub org_id: String,
    /// One token: its `jti` claim.
    pub jti: Option<String>,
    /// Every token of the org whose `iat` is before this RFC 3339 date-time.
    pub issued_before: Option<String>,
}

/// A revocation, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokedToken {
    /// The org's token with this `jti`.
    Jti { org_id: String, jti: String },
    /// The org's tokens issued (`iat`) before this time, seconds since the epoch.
    IssuedBefore { org_id: String, unix: i64 },
}

impl RevokedToken {
    /// Whether a token of `org_id` issued at `iat` with `jti` is revoked by this.
    pub fn revokes(&self, org: &str, iat: u64, jti: Option<&str>) -> bool {
        match self {
            RevokedToken::Jti { org_id, jti: r } => org_id == org && jti == Some(r.as_str()),
            RevokedToken::IssuedBefore { org_id, unix } => {
                org_id == org && i64::try_from(iat).is_ok_and(|iat| iat < *unix)
            }
        }
    }
}

/// What `[http]` adds for the webhook, validated.
pub(super) struct WebhookTrust {
    pub token_ttl: Duration,
    pub revoked_tokens: Vec<RevokedToken>,
}

type Bad<'a> = &'a dyn Fn(&str, String) -> ConfigError;

impl Config {
    /// `http.token_lifetime_days` (or the finer `http.token_ttl_secs`) and
    /// `[[http.revoked_tokens]]`.
    pub(super) fn validate_webhook_trust(&self, bad: Bad) -> Result<WebhookTrust, ConfigError> {
        let h = &self.http;
        if !(1..=MAX_TOKEN_LIFETIME_DAYS).contains(&h.token_lifetime_days) {
            return Err(bad(
                "http.token_lifetime_days",
                format!("must be between 1 and {MAX_TOKEN_LIFETIME_DAYS}"),
            ));
        }
        let token_ttl = match h.token_ttl_secs {
            Some(0) => return Err(bad("http.token_ttl_secs", "must be at least 1".into())),
            Some(n) if n > MAX_TOKEN_LIFETIME_DAYS * 86_400 => {
                return Err(bad(
                    "http.token_ttl_secs",
                    format!(
                        "must be at most {} (ten years)",
                        MAX_TOKEN_LIFETIME_DAYS * 86_400
                    ),
                ))
            }
            Some(n) => Duration::from_secs(n),
            None => Duration::from_secs(h.token_lifetime_days * 86_400),
        };
        let mut revoked_tokens = Vec::new();
        for (i, r) in h.revoked_tokens.iter().enumerate() {
            let key = |f: &str| format!("http.revoked_tokens[{i}].{f}");
            if !crate::http::auth::valid_org_id(&r.org_id) {
                return Err(bad(
                    &key("org_id"),
                    format!("{:?} must be 1-128 token characters", r.org_id),
                ));
            }
            let org_id = r.org_id.clone();
            revoked_tokens.push(match (&r.jti, &r.issued_before) {
                (Some(jti), None) => {
                    if jti.is_empty() || jti.len() > 128 || !jti.bytes().all(|b| b.is_ascii_graphic())
                    {
                        return Err(bad(
                            &key("jti"),
                            "must be 1-128 printable characters".into(),
                        ));
                    }
                    RevokedToken::Jti {
                        org_id,
                        jti: jti.clone(),
                    }
                }
                (None, Some(at)) => {
                    let unix = crate::http::auth::parse_iso8601(at).ok_or_else(|| {
                        bad(
                            &key("issued_before"),
                            format!("{at:?} is not an RFC 3339 date-time, e.g. \"2026-12-01T00:00:00Z\""),
                        )
                    })?;
                    RevokedToken::IssuedBefore { org_id, unix }
                }
                _ => {
                    return Err(bad(
                        &key("jti"),
                        "give exactly one of jti or issued_before".into(),
                    ))
                }
            });
        }
        Ok(WebhookTrust {
            token_ttl,
            revoked_tokens,
        })
    }
}

/// The refusals for a sidecar that listens beyond loopback: no secret that the
/// shipped `config.toml` contains (they are public), and a signed Zendesk webhook
/// unless `zendesk.allow_unsigned_webhooks` says otherwise. On loopback nothing is
/// refused, so the shipped file runs as it is.
pub(super) fn check_exposed(
    http: &HttpSettings,
    allow_unsigned_webhooks: bool,
    bad: Bad,
) -> Result<(), ConfigError> {
    if http.listen.ip().is_loopback() {
        return Ok(());
    }
    let listen = http.listen;
    let mut secrets: Vec<(String, &str)> = Vec::new();
    for (i, k) in http.signing_keys.iter().enumerate() {
        secrets.push((format!("http.signing_keys[{i}].secret"), k.secret.expose()));
    }
    if let Some(s) = &http.api_key {
        secrets.push(("http.api_key".into(), s.expose()));
    }
    for (i, k) in http.access.api_keys.iter().enumerate() {
        secrets.push((format!("http.api_keys[{i}].key"), k.key.expose()));
    }
    if let Some(s) = &http.dashboard_jwt_secret {
        secrets.push(("http.dashboard_jwt_secret".into(), s.expose()));
    }
    if let Some(s) = &http.zendesk_signing_secret {
        secrets.push(("zendesk.webhook_signing_secret".into(), s.expose()));
    }
    if let Some((key, _)) = secrets.iter().find(|(_, v)| is_shipped_secret(v)) {
        return Err(bad(
            key,
            format!("is the public example from the shipped config.toml; http.listen {listen} is not loopback: set a secret of your own"),
        ));
    }
    // Without signing keys the webhook answers 503: nothing to sign.
    if !http.signing_keys.is_empty()
        && http.zendesk_signing_secret.is_none()
        && !allow_unsigned_webhooks
    {
        return Err(bad(
            "zendesk.webhook_signing_secret",
            format!("is required when http.listen ({listen}) is not loopback; set it from the Zendesk webhook page, or set zendesk.allow_unsigned_webhooks = true to accept unsigned webhooks"),
        ));
    }
    Ok(())
}

/// The same refusals for the `[[zendesk.accounts]]` entries: off loopback, no
/// entry may use a secret of the shipped file, and each needs its own signing
/// secret unless `zendesk.allow_unsigned_webhooks` (an entry never borrows the
/// default account's secret: that is another Zendesk account's).
pub(super) fn check_exposed_accounts(
    listen: std::net::SocketAddr,
    accounts: &crate::zendesk::account_config::ZendeskAccountsSettings,
    allow_unsigned_webhooks: bool,
    bad: Bad,
) -> Result<(), ConfigError> {
    if listen.ip().is_loopback() {
        return Ok(());
    }
    for (key, s) in accounts.secrets() {
        if is_shipped_secret(s.expose()) {
            return Err(bad(
                &key,
                format!("is the public example from the shipped config.toml; http.listen {listen} is not loopback: set a secret of your own"),
            ));
        }
    }
    if let Some(key) = accounts.unsigned_entries().first() {
        if !allow_unsigned_webhooks {
            return Err(bad(
                key,
                format!("is required when http.listen ({listen}) is not loopback; set it from that account's Zendesk webhook page, or set zendesk.allow_unsigned_webhooks = true to accept unsigned webhooks"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const ROUTE: &str = "[[route]]\ndefault = true\norg_id = \"o\"\nagent_id = \"a\"\nai_agent_uri = \"sip:ai@127.0.0.1\"\n";
    const OWN: &str = "own-signing-secret-0123456789";

    fn parse(extra: &str) -> Result<crate::config::Settings, String> {
        Config::parse(&format!("{extra}{ROUTE}"), "t.toml").map_err(|e| e.to_string())
    }

    fn keys(listen: &str, secret: &str, zendesk: &str) -> String {
        format!("[http]\nlisten = \"{listen}\"\n[[http.signing_keys]]\nkid = \"k\"\nsecret = \"{secret}\"\nissuer = \"i\"\n[zendesk]\n{zendesk}")
    }

    #[test]
    fn tokens_expire_after_a_year_by_default() {
        let s = parse("").expect("valid");
        assert_eq!(s.http.token_ttl.as_secs(), 365 * 86_400);
        let s = parse("[http]\ntoken_lifetime_days = 30\n").expect("valid");
        assert_eq!(s.http.token_ttl.as_secs(), 30 * 86_400);
        let s = parse("[http]\ntoken_lifetime_days = 30\ntoken_ttl_secs = 60\n").expect("valid");
        assert_eq!(s.http.token_ttl.as_secs(), 60, "the finer key wins");
        for bad in ["token_lifetime_days = 0", "token_lifetime_days = 3651"] {
            let e = parse(&format!("[http]\n{bad}\n")).expect_err(bad);
            assert!(e.contains("http.token_lifetime_days"), "{e}");
        }
    }

    #[test]
    fn revocations_by_jti_or_issued_before() {
        let s = parse("[[http.revoked_tokens]]\norg_id = \"o1\"\njti = \"abc\"\n[[http.revoked_tokens]]\norg_id = \"o2\"\nissued_before = \"2026-12-01T00:00:00Z\"\n").expect("valid");
        let r = &s.http.revoked_tokens;
        assert!(r[0].revokes("o1", 5, Some("abc")));
        assert!(!r[0].revokes("o1", 5, Some("abd")));
        assert!(!r[0].revokes("o2", 5, Some("abc")), "another org's jti");
        let at = 1_796_083_200; // 2026-12-01T00:00:00Z
        assert!(r[1].revokes("o2", at - 1, None));
        assert!(!r[1].revokes("o2", at, None), "issued at the time: kept");
        assert!(!r[1].revokes("o1", 0, None));
        for (text, key) in [
            ("org_id = \"o\"\n", "revoked_tokens[0].jti"),
            (
                "org_id = \"o\"\njti = \"a\"\nissued_before = \"2026-12-01T00:00:00Z\"\n",
                "revoked_tokens[0].jti",
            ),
            (
                "org_id = \"o\"\nissued_before = \"yesterday\"\n",
                "revoked_tokens[0].issued_before",
            ),
            (
                "org_id = \"o o\"\njti = \"a\"\n",
                "revoked_tokens[0].org_id",
            ),
        ] {
            let e = parse(&format!("[[http.revoked_tokens]]\n{text}")).expect_err(text);
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn shipped_secrets_are_refused_off_loopback_only() {
        let dev = "dev-only-signing-key-replace-me-0001";
        let signed = "webhook_signing_secret = \"zendesk-own-0123\"\n";
        assert!(parse(&keys("127.0.0.1:8080", dev, "")).is_ok());
        assert!(parse(&keys("[::1]:8080", dev, "")).is_ok());
        let e = parse(&keys("0.0.0.0:8080", dev, signed)).expect_err("dev key");
        assert!(e.contains("http.signing_keys[0].secret"), "{e}");
        assert!(!e.contains(dev), "the secret is not repeated: {e}");
        let text =
            "[http]\nlisten = \"0.0.0.0:8080\"\napi_key = \"change-me-to-a-long-random-string\"\n";
        let e = parse(text).expect_err("example api key");
        assert!(e.contains("http.api_key"), "{e}");
        let text = "[http]\nlisten = \"0.0.0.0:8080\"\ndashboard_jwt_secret = \"change-me-to-a-long-random-string\"\n";
        let e = parse(text).expect_err("example dashboard secret");
        assert!(e.contains("http.dashboard_jwt_secret"), "{e}");
        let e = parse(&keys(
            "0.0.0.0:8080",
            OWN,
            "webhook_signing_secret = \"from-the-zendesk-webhook-page\"\n",
        ))
        .expect_err("example zendesk secret");
        assert!(e.contains("zendesk.webhook_signing_secret"), "{e}");
        assert!(parse(&keys("0.0.0.0:8080", OWN, signed)).is_ok());
    }

    #[test]
    fn unsigned_webhooks_off_loopback_need_saying_so() {
        let e = parse(&keys("192.0.2.1:8080", OWN, "")).expect_err("unsigned");
        assert!(
            e.contains("zendesk.webhook_signing_secret")
                && e.contains("zendesk.allow_unsigned_webhooks"),
            "{e}"
        );
        assert!(parse(&keys(
            "192.0.2.1:8080",
            OWN,
            "allow_unsigned_webhooks = true\n"
        ))
        .is_ok());
        assert!(parse(&keys("127.0.0.1:8080", OWN, "")).is_ok(), "loopback");
        // No signing key: the webhook is off, nothing to sign.
        assert!(parse("[http]\nlisten = \"0.0.0.0:8080\"\n").is_ok());
    }
}
