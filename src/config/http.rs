//! `[http]`: the sidecar's listener, its keys and tokens, as read and as validated.
//! The access keys, tokens and connection limits have their own files beside it.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: String,
    pub public_base_url: String,
    pub dashboard_jwt_secret: Option<String>,
    pub api_key: Option<String>,
    pub signing_keys: Vec<SigningKeyConfig>,
    pub token_ttl_secs: Option<u64>,
    /// `[[http.api_keys]]`, `dashboard_jwt_*` and the outbound flag: see
    /// `config/http_access.rs` and `config/outbound.rs`.
    pub api_keys: Vec<ApiKeyConfig>,
    pub dashboard_jwt_issuer: Option<String>,
    pub dashboard_jwt_audience: Option<String>,
    pub require_https_outbound: bool,
    pub token_lifetime_days: u64,
    pub revoked_tokens: Vec<RevokedTokenConfig>,
    /// Timeouts, concurrency and connection caps (`src/config/conns.rs`).
    #[serde(flatten)]
    pub conns: HttpConnsConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            public_base_url: "http://127.0.0.1:8080".into(),
            dashboard_jwt_secret: None,
            api_key: None,
            signing_keys: Vec::new(),
            token_ttl_secs: None,
            api_keys: Vec::new(),
            dashboard_jwt_issuer: None,
            dashboard_jwt_audience: None,
            require_https_outbound: false,
            token_lifetime_days: DEFAULT_TOKEN_LIFETIME_DAYS,
            revoked_tokens: Vec::new(),
            conns: HttpConnsConfig::default(),
        }
    }
}

/// One `[[http.signing_keys]]`: an HS256 key for the webhook URL tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyConfig {
    pub kid: String,
    pub secret: String,
    pub issuer: String,
}

/// The HTTP sidecar's validated settings (`[http]` and `[zendesk]`).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// Without a trailing slash.
    pub public_base_url: String,
    pub dashboard_jwt_secret: Option<Secret>,
    pub api_key: Option<Secret>,
    /// In configuration order; the last one signs new tokens.
    pub signing_keys: Vec<SigningKey>,
    /// Lifetime (`exp` - `iat`) of newly minted webhook-URL tokens.
    pub token_ttl: Duration,
    /// `[[http.revoked_tokens]]`: refused even when their signature verifies.
    pub revoked_tokens: Vec<RevokedToken>,
    pub zendesk_signing_secret: Option<Secret>,
    pub signature_max_age: Duration,
    /// Per-org session-API keys and the dashboard JWT's issuer and audience.
    pub access: HttpAccess,
}

#[derive(Debug, Clone)]
pub struct SigningKey {
    pub kid: String,
    pub secret: Secret,
    pub issuer: String,
}

impl Config {
    pub(super) fn validate_http(
        &self,
        bad: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<HttpSettings, ConfigError> {
        let h = &self.http;
        let listen = h.listen.parse::<SocketAddr>().map_err(|_| {
            bad(
                "http.listen",
                format!(
                    "{:?} is not an IP address with a port, e.g. \"127.0.0.1:8080\"",
                    h.listen
                ),
            )
        })?;
        let base = h.public_base_url.trim_end_matches('/');
        let printable = |v: &str| v.bytes().all(|b| b.is_ascii_graphic());
        if !(base.starts_with("http://") || base.starts_with("https://"))
            || base.len() <= "https://".len()
            || base.len() > 512
            || !printable(base)
        {
            return Err(bad(
                "http.public_base_url",
                format!(
                    "{:?} is not an http:// or https:// URL without spaces",
                    h.public_base_url
                ),
            ));
        }
        let secret = |key: &str, v: &str| -> Result<Secret, ConfigError> {
            if v.len() < 16 || v.len() > 1024 || !printable(v) {
                return Err(bad(
                    key,
                    "must be 16 to 1024 printable characters without spaces".into(),
                ));
            }
            Ok(Secret(v.to_owned()))
        };
        let dashboard_jwt_secret = h
            .dashboard_jwt_secret
            .as_deref()
            .map(|v| secret("http.dashboard_jwt_secret", v))
            .transpose()?;
        let api_key = h
            .api_key
            .as_deref()
            .map(|v| secret("http.api_key", v))
            .transpose()?;
        let mut signing_keys: Vec<SigningKey> = Vec::new();
        for (i, k) in h.signing_keys.iter().enumerate() {
            let key = |f: &str| format!("http.signing_keys[{i}].{f}");
            if k.kid.is_empty()
                || k.kid.len() > 64
                || !k.kid.bytes().all(crate::sip::message::is_token_char)
            {
                return Err(bad(
                    &key("kid"),
                    format!("{:?} must be 1-64 token characters", k.kid),
                ));
            }
            if signing_keys.iter().any(|s| s.kid == k.kid) {
                return Err(bad(&key("kid"), format!("{:?} is used twice", k.kid)));
            }
            if k.issuer.is_empty() || k.issuer.len() > 256 || !printable(&k.issuer) {
                return Err(bad(
                    &key("issuer"),
                    "must be 1-256 printable characters without spaces".into(),
                ));
            }
            signing_keys.push(SigningKey {
                kid: k.kid.clone(),
                secret: secret(&key("secret"), &k.secret)?,
                issuer: k.issuer.clone(),
            });
        }
        let trust = self.validate_webhook_trust(bad)?;
        let z = &self.zendesk;
        let zendesk_signing_secret = z
            .webhook_signing_secret
            .as_deref()
            .map(|v| {
                crate::zendesk::account_config::signing_secret("zendesk.webhook_signing_secret", v)
                    .map_err(|e| bad(&e.key, e.problem))
            })
            .transpose()?;
        if !(1..=86_400).contains(&z.signature_max_age_secs) {
            return Err(bad(
                "zendesk.signature_max_age_secs",
                "must be between 1 and 86400".into(),
            ));
        }
        let access =
            self.validate_http_access(bad, api_key.as_ref(), dashboard_jwt_secret.is_some())?;
        let settings = HttpSettings {
            access,
            listen,
            public_base_url: base.to_owned(),
            dashboard_jwt_secret,
            api_key,
            signing_keys,
            token_ttl: trust.token_ttl,
            revoked_tokens: trust.revoked_tokens,
            zendesk_signing_secret,
            signature_max_age: Duration::from_secs(z.signature_max_age_secs),
        };
        webhook::check_exposed(&settings, z.allow_unsigned_webhooks, bad)?;
        Ok(settings)
    }
}
