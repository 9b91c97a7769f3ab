//! The `[zendesk]` table: the webhook signature keys (read by the HTTP sidecar) and
//! the REST API keys of contact enrichment, validated with errors naming the key.
//! Enrichment is on exactly when API credentials are configured.

use crate::config::Secret;
use serde::Deserialize;
use std::time::Duration;

/// `[zendesk]` as written in `config.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZendeskConfig {
    pub webhook_signing_secret: Option<String>,
    /// Off loopback, webhooks without a Zendesk signature are accepted only when
    /// this says so.
    pub allow_unsigned_webhooks: bool,
    pub signature_max_age_secs: u64,
    /// `https://{subdomain}.zendesk.com` is the API's base URL.
    pub subdomain: Option<String>,
    /// Replaces the URL made from `subdomain` (tests, proxies).
    pub base_url: Option<String>,
    /// API token authentication: the agent's email and the token.
    pub email: Option<String>,
    pub api_token: Option<String>,
    /// A static OAuth access token.
    pub oauth_token: Option<String>,
    /// OAuth client credentials, exchanged for tokens at `oauth_token_url`.
    pub oauth_client_id: Option<String>,
    pub oauth_client_secret: Option<String>,
    /// Default: `{base}/oauth/tokens`.
    pub oauth_token_url: Option<String>,
    pub oauth_scope: String,
    /// A token is refreshed this long before it expires.
    pub oauth_refresh_margin_secs: u64,
    pub request_timeout_ms: u64,
    pub max_retries: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub max_retry_after_secs: u64,
    /// Add a private note to the session's ticket when a transfer to a destination
    /// with `ticket_note` completes (needs API credentials). Default true.
    pub ticket_notes: bool,
    /// Zendesk's numeric account id of the default account: event-subscription
    /// webhooks for orgs without an account entry must carry it.
    pub account_id: Option<u64>,
    /// `[[zendesk.accounts]]`: one Zendesk account per listed org
    /// (`src/zendesk/account_config.rs`).
    pub accounts: Vec<super::account_config::ZendeskAccountConfig>,
}

impl Default for ZendeskConfig {
    fn default() -> Self {
        ZendeskConfig {
            webhook_signing_secret: None,
            allow_unsigned_webhooks: false,
            signature_max_age_secs: 300,
            subdomain: None,
            base_url: None,
            email: None,
            api_token: None,
            oauth_token: None,
            oauth_client_id: None,
            oauth_client_secret: None,
            oauth_token_url: None,
            oauth_scope: "read".into(),
            oauth_refresh_margin_secs: 300,
            request_timeout_ms: 5000,
            max_retries: 3,
            retry_base_ms: 250,
            retry_max_ms: 5000,
            max_retry_after_secs: 30,
            ticket_notes: true,
            account_id: None,
            accounts: Vec::new(),
        }
    }
}

/// How handoff authenticates to the Zendesk API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAuth {
    /// `Authorization: Basic base64("{email}/token:{token}")`.
    ApiToken { email: String, token: Secret },
    /// `Authorization: Bearer <token>`, never refreshed.
    Bearer(Secret),
    /// Client credentials exchanged at `token_url` for tokens that are refreshed
    /// `margin` before they expire.
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
        token_url: String,
        scope: String,
        margin: Duration,
    },
}

/// `[zendesk]`'s API part, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZendeskApiSettings {
    /// Without a trailing slash.
    pub base_url: String,
    pub auth: ApiAuth,
    /// For each request, connecting included.
    pub request_timeout: Duration,
    /// Retries after the first attempt (429, 5xx, connection errors, timeouts).
    pub max_retries: u32,
    /// Backoff before retry n is `retry_base * 2^(n-1)`, at most `retry_max`, with
    /// jitter.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// A longer `Retry-After` is cut to this.
    pub max_retry_after: Duration,
}

/// A `[zendesk]` key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ZendeskConfigError {
    pub key: String,
    pub problem: String,
}

/// Where the API keys being validated sit: `zendesk` or `zendesk.accounts[i]`.
#[derive(Debug, Clone, Copy)]
struct At<'a>(&'a str);

impl At<'_> {
    fn bad(&self, key: &str, problem: impl Into<String>) -> ZendeskConfigError {
        ZendeskConfigError {
            key: format!("{}.{key}", self.0),
            problem: problem.into(),
        }
    }
}

/// The keys the API settings are made of, borrowed from `[zendesk]` or from one
/// `[[zendesk.accounts]]` entry (which takes the timing keys from `[zendesk]`), so
/// both go through [`compile_api_keys`].
#[derive(Debug, Clone, Copy)]
pub struct ApiKeys<'a> {
    pub subdomain: Option<&'a str>,
    pub base_url: Option<&'a str>,
    pub email: Option<&'a str>,
    pub api_token: Option<&'a str>,
    pub oauth_token: Option<&'a str>,
    pub oauth_client_id: Option<&'a str>,
    pub oauth_client_secret: Option<&'a str>,
    pub oauth_token_url: Option<&'a str>,
    pub oauth_scope: &'a str,
    pub oauth_refresh_margin_secs: u64,
    pub request_timeout_ms: u64,
    pub max_retries: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub max_retry_after_secs: u64,
}

fn url(at: At, key: &str, v: &str) -> Result<String, ZendeskConfigError> {
    url_checked(v).map_err(|p| at.bad(key, p))
}

/// An `http://` or `https://` URL without spaces or control characters; returned
/// without a trailing slash.
fn url_checked(v: &str) -> Result<String, String> {
    let v = v.trim_end_matches('/');
    let scheme_ok = v.starts_with("http://") || v.starts_with("https://");
    if !scheme_ok || v.len() <= "https://".len() || v.len() > 512 || !printable(v) {
        return Err(format!(
            "{v:?} is not an http:// or https:// URL without spaces"
        ));
    }
    Ok(v.to_owned())
}

fn printable(v: &str) -> bool {
    v.bytes().all(|b| b.is_ascii_graphic())
}

fn secret(at: At, key: &str, v: &str) -> Result<Secret, ZendeskConfigError> {
    if v.is_empty() || v.len() > 4096 || !printable(v) {
        return Err(at.bad(key, "must be 1 to 4096 printable characters without spaces"));
    }
    Ok(Secret::new(v))
}

impl ZendeskConfig {
    /// The API settings, or None when no API credentials are configured (enrichment
    /// off).
    pub fn compile_api(&self) -> Result<Option<ZendeskApiSettings>, ZendeskConfigError> {
        compile_api_keys("zendesk", &self.api_keys())
    }

    /// `[zendesk]`'s own API keys.
    pub fn api_keys(&self) -> ApiKeys<'_> {
        ApiKeys {
            subdomain: self.subdomain.as_deref(),
            base_url: self.base_url.as_deref(),
            email: self.email.as_deref(),
            api_token: self.api_token.as_deref(),
            oauth_token: self.oauth_token.as_deref(),
            oauth_client_id: self.oauth_client_id.as_deref(),
            oauth_client_secret: self.oauth_client_secret.as_deref(),
            oauth_token_url: self.oauth_token_url.as_deref(),
            oauth_scope: &self.oauth_scope,
            oauth_refresh_margin_secs: self.oauth_refresh_margin_secs,
            request_timeout_ms: self.request_timeout_ms,
            max_retries: self.max_retries,
            retry_base_ms: self.retry_base_ms,
            retry_max_ms: self.retry_max_ms,
            max_retry_after_secs: self.max_retry_after_secs,
        }
    }
}

/// The API settings of the keys at `prefix` (`zendesk`, `zendesk.accounts[1]`), or
/// None when they hold no API credentials. Errors name the key under `prefix`.
pub fn compile_api_keys(
    prefix: &str,
    k: &ApiKeys,
) -> Result<Option<ZendeskApiSettings>, ZendeskConfigError> {
    let at = At(prefix);
    let bad = |key: &str, problem: &str| at.bad(key, problem);
    let kinds = [
        k.email.is_some() || k.api_token.is_some(),
        k.oauth_token.is_some(),
        k.oauth_client_id.is_some()
            || k.oauth_client_secret.is_some()
            || k.oauth_token_url.is_some(),
    ];
    match kinds.iter().filter(|k| **k).count() {
            0 => return Ok(None),
            1 => {}
            _ => {
                return Err(bad(
                    "api_token",
                    "give one way to authenticate: email + api_token, oauth_token, or oauth_client_id + oauth_client_secret",
                ))
            }
        }
    let base_url = match (&k.base_url, k.subdomain) {
        (Some(b), _) => url(at, "base_url", b)?,
        (None, Some(s)) => {
            let ok = (1..=63).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-');
            if !ok {
                return Err(at.bad(
                    "subdomain",
                    format!("{s:?} is not a Zendesk subdomain (lowercase letters, digits, -)"),
                ));
            }
            format!("https://{s}.zendesk.com")
        }
        (None, None) => {
            return Err(bad(
                "subdomain",
                "required with API credentials (or give base_url)",
            ))
        }
    };
    let auth = if kinds[0] {
        let email = match k.email {
            Some(e) if e.contains('@') && e.len() <= 254 && printable(e) => e.to_owned(),
            Some(e) => return Err(at.bad("email", format!("{e:?} is not an email address"))),
            None => return Err(bad("email", "required with api_token")),
        };
        let token = match k.api_token {
            Some(t) => secret(at, "api_token", t)?,
            None => return Err(bad("api_token", "required with email")),
        };
        ApiAuth::ApiToken { email, token }
    } else if let Some(t) = k.oauth_token {
        ApiAuth::Bearer(secret(at, "oauth_token", t)?)
    } else {
        let client_id = match k.oauth_client_id {
            Some(c) if !c.is_empty() && c.len() <= 256 && printable(c) => c.to_owned(),
            Some(_) => {
                return Err(bad(
                    "oauth_client_id",
                    "must be 1 to 256 printable characters without spaces",
                ))
            }
            None => return Err(bad("oauth_client_id", "required with oauth_client_secret")),
        };
        let client_secret = match k.oauth_client_secret {
            Some(s) => secret(at, "oauth_client_secret", s)?,
            None => return Err(bad("oauth_client_secret", "required with oauth_client_id")),
        };
        let token_url = match k.oauth_token_url {
            Some(u) => url(at, "oauth_token_url", u)?,
            None => format!("{base_url}/oauth/tokens"),
        };
        let scope = k.oauth_scope.trim();
        if scope.is_empty() || scope.len() > 512 || scope.bytes().any(|b| b.is_ascii_control()) {
            return Err(bad(
                "oauth_scope",
                "must be 1 to 512 characters of space-separated scopes",
            ));
        }
        if !(1..=86_400).contains(&k.oauth_refresh_margin_secs) {
            return Err(bad(
                "oauth_refresh_margin_secs",
                "must be between 1 and 86400",
            ));
        }
        ApiAuth::ClientCredentials {
            client_id,
            client_secret,
            token_url,
            scope: scope.to_owned(),
            margin: Duration::from_secs(k.oauth_refresh_margin_secs),
        }
    };
    if !(1..=120_000).contains(&k.request_timeout_ms) {
        return Err(bad("request_timeout_ms", "must be between 1 and 120000"));
    }
    if k.max_retries > 10 {
        return Err(bad("max_retries", "must be between 0 and 10"));
    }
    if k.retry_base_ms == 0 || k.retry_max_ms < k.retry_base_ms {
        return Err(bad(
            "retry_base_ms",
            "must be at least 1 and at most retry_max_ms",
        ));
    }
    if k.retry_max_ms > 600_000 {
        return Err(bad("retry_max_ms", "must be at most 600000"));
    }
    if k.max_retry_after_secs > 3600 {
        return Err(bad("max_retry_after_secs", "must be at most 3600"));
    }
    Ok(Some(ZendeskApiSettings {
        base_url,
        auth,
        request_timeout: Duration::from_millis(k.request_timeout_ms),
        max_retries: k.max_retries,
        retry_base: Duration::from_millis(k.retry_base_ms),
        retry_max: Duration::from_millis(k.retry_max_ms),
        max_retry_after: Duration::from_secs(k.max_retry_after_secs),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_body: &str) -> ZendeskConfig {
        toml::from_str(toml_body).expect("toml")
    }

    fn err_key(toml_body: &str) -> String {
        cfg(toml_body).compile_api().expect_err(toml_body).key
    }

    #[test]
    fn no_credentials_means_no_enrichment() {
        assert_eq!(cfg("").compile_api(), Ok(None));
        assert_eq!(cfg("subdomain = \"acme\"").compile_api(), Ok(None));
    }

    #[test]
    fn api_token_on_the_subdomain() {
        let s = cfg("subdomain = \"acme\"\nemail = \"a@b.c\"\napi_token = \"t0k\"")
            .compile_api()
            .expect("valid")
            .expect("on");
        assert_eq!(s.base_url, "https://acme.zendesk.com");
        assert_eq!(
            s.auth,
            ApiAuth::ApiToken {
                email: "a@b.c".into(),
                token: Secret::new("t0k")
            }
        );
        assert_eq!(s.request_timeout, Duration::from_secs(5));
    }

    #[test]
    fn client_credentials_default_to_the_base_urls_oauth_tokens() {
        let s = cfg("base_url = \"http://127.0.0.1:9/\"\noauth_client_id = \"id\"\noauth_client_secret = \"s\"")
            .compile_api()
            .expect("valid")
            .expect("on");
        assert_eq!(s.base_url, "http://127.0.0.1:9");
        match s.auth {
            ApiAuth::ClientCredentials {
                token_url, margin, ..
            } => {
                assert_eq!(token_url, "http://127.0.0.1:9/oauth/tokens");
                assert_eq!(margin, Duration::from_secs(300));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_whole_config_names_the_zendesk_key() {
        let text = "[zendesk]\nemail = \"a@b.c\"\napi_token = \"t\"\n[[route]]\ndefault = true\norg_id = \"o\"\nagent_id = \"a\"\nai_agent_uri = \"sip:ai@127.0.0.1\"\n";
        let e = crate::config::Config::parse(text, "t.toml")
            .expect_err("no subdomain")
            .to_string();
        assert!(e.contains("zendesk.subdomain"), "{e}");
        let ok = text.replace("[zendesk]\n", "[zendesk]\nsubdomain = \"acme\"\n");
        let s = crate::config::Config::parse(&ok, "t.toml").expect("valid");
        assert_eq!(
            s.zendesk.map(|z| z.base_url).as_deref(),
            Some("https://acme.zendesk.com")
        );
    }

    #[test]
    fn errors_name_the_key() {
        let base = "subdomain = \"acme\"\n";
        assert_eq!(
            err_key("email = \"a@b.c\"\napi_token = \"t\""),
            "zendesk.subdomain"
        );
        assert_eq!(
            err_key(&format!("{base}email = \"a@b.c\"")),
            "zendesk.api_token"
        );
        assert_eq!(
            err_key(&format!("{base}api_token = \"t\"")),
            "zendesk.email"
        );
        assert_eq!(
            err_key(&format!("{base}email = \"nope\"\napi_token = \"t\"")),
            "zendesk.email"
        );
        assert_eq!(
            err_key(&format!("{base}oauth_token = \"t\"\napi_token = \"t\"")),
            "zendesk.api_token"
        );
        assert_eq!(
            err_key("subdomain = \"Acme Corp\"\noauth_token = \"t\""),
            "zendesk.subdomain"
        );
        assert_eq!(
            err_key("base_url = \"ftp://x\"\noauth_token = \"t\""),
            "zendesk.base_url"
        );
        assert_eq!(
            err_key(&format!("{base}oauth_client_id = \"i\"")),
            "zendesk.oauth_client_secret"
        );
        assert_eq!(
            err_key(&format!("{base}oauth_token = \"a b\"")),
            "zendesk.oauth_token"
        );
        assert_eq!(
            err_key(&format!(
                "{base}oauth_token = \"t\"\nrequest_timeout_ms = 0"
            )),
            "zendesk.request_timeout_ms"
        );
        assert_eq!(
            err_key(&format!("{base}oauth_token = \"t\"\nmax_retries = 11")),
            "zendesk.max_retries"
        );
        assert_eq!(
            err_key(&format!(
                "{base}oauth_token = \"t\"\nretry_base_ms = 10\nretry_max_ms = 5"
            )),
            "zendesk.retry_base_ms"
        );
    }
}
