//! Who may use the HTTP sidecar's APIs: the per-org session-API keys
//! (`[[http.api_keys]]`), the operator key (`http.api_key`, every org) and what a
//! dashboard JWT must claim (`http.dashboard_jwt_issuer`, `_audience`). Validated
//! here with errors naming the key; the checks themselves are in `crate::http`.

use super::{Config, ConfigError, Secret};
use serde::Deserialize;
use std::net::SocketAddr;

/// Shortest per-org API key accepted: a bearer credential, so long and random
/// (`openssl rand -hex 32` gives 64 characters).
pub const MIN_ORG_KEY_LEN: usize = 32;

/// One `[[http.api_keys]]` as written. `Debug` never shows the key.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub org_id: String,
    pub key: String,
    /// Who holds the key, for logs (never the key itself).
    pub name: String,
}

impl std::fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("org_id", &self.org_id)
            .field("key", &"..")
            .field("name", &self.name)
            .finish()
    }
}

/// A session-API key that reads and writes only `org_id`'s sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgApiKey {
    pub org_id: String,
    pub key: Secret,
    pub name: String,
}

/// The `[http]` access keys, validated.
#[derive(Debug, Clone, Default)]
pub struct HttpAccess {
    pub api_keys: Vec<OrgApiKey>,
    /// `iss` a dashboard JWT must carry; Some exactly when the dashboard secret is.
    pub dashboard_jwt_issuer: Option<String>,
    /// `aud` a dashboard JWT must carry; Some exactly when the dashboard secret is.
    pub dashboard_jwt_audience: Option<String>,
}

fn printable(v: &str) -> bool {
    v.bytes().all(|b| b.is_ascii_graphic())
}

fn token(v: &str, max: usize) -> bool {
    (1..=max).contains(&v.len()) && v.bytes().all(crate::sip::message::is_token_char)
}

impl Config {
    /// `[[http.api_keys]]` and the dashboard claims. `operator` is the validated
    /// `http.api_key`, which no org key may equal; `dashboard_secret` whether
    /// `http.dashboard_jwt_secret` is set.
    pub(super) fn validate_http_access(
        &self,
        bad: &dyn Fn(&str, String) -> ConfigError,
        operator: Option<&Secret>,
        dashboard_secret: bool,
    ) -> Result<HttpAccess, ConfigError> {
        let h = &self.http;
        let mut api_keys: Vec<OrgApiKey> = Vec::new();
        for (i, k) in h.api_keys.iter().enumerate() {
            let key = |f: &str| format!("http.api_keys[{i}].{f}");
            if !token(&k.org_id, 128) {
                return Err(bad(
                    &key("org_id"),
                    format!("{:?} must be 1-128 token characters", k.org_id),
                ));
            }
            if !token(&k.name, 64) {
                return Err(bad(
                    &key("name"),
                    format!("{:?} must be 1-64 token characters", k.name),
                ));
            }
            if api_keys.iter().any(|o| o.name == k.name) {
                return Err(bad(&key("name"), format!("{:?} is used twice", k.name)));
            }
            if k.key.len() < MIN_ORG_KEY_LEN || k.key.len() > 1024 || !printable(&k.key) {
                return Err(bad(
                    &key("key"),
                    format!(
                        "must be {MIN_ORG_KEY_LEN} to 1024 printable characters without spaces"
                    ),
                ));
            }
            // The key decides the org: two equal keys would make one of them ambiguous.
            if api_keys.iter().any(|o| o.key.expose() == k.key) {
                return Err(bad(
                    &key("key"),
                    "is the same as another [[http.api_keys]] key; each key must be unique".into(),
                ));
            }
            if operator.is_some_and(|o| o.expose() == k.key) {
                return Err(bad(
                    &key("key"),
                    "is the same as http.api_key (the operator key, every org)".into(),
                ));
            }
            api_keys.push(OrgApiKey {
                org_id: k.org_id.clone(),
                key: Secret::new(k.key.clone()),
                name: k.name.clone(),
            });
        }
        let claim = |name: &str, v: &Option<String>| -> Result<Option<String>, ConfigError> {
            let key = format!("http.dashboard_jwt_{name}");
            match (v, dashboard_secret) {
                (None, true) => Err(bad(
                    &key,
                    format!("required with http.dashboard_jwt_secret: the `{}` claim every dashboard JWT must carry", &name[..3])
                )),
                (Some(_), false) => Err(bad(
                    &key,
                    "needs http.dashboard_jwt_secret (without it the endpoint is off)".into(),
                )),
                (Some(s), true) if s.is_empty() || s.len() > 256 || !printable(s) => Err(bad(
                    &key,
                    "must be 1-256 printable characters without spaces".into(),
                )),
                (v, _) => Ok(v.clone()),
            }
        };
        Ok(HttpAccess {
            api_keys,
            dashboard_jwt_issuer: claim("issuer", &h.dashboard_jwt_issuer)?,
            dashboard_jwt_audience: claim("audience", &h.dashboard_jwt_audience)?,
        })
    }
}

/// Start-up warnings about access: the operator key (every org's sessions) on a
/// listener others can reach.
pub fn access_warnings(listen: SocketAddr, operator_key: bool) -> Vec<String> {
    if operator_key && !listen.ip().is_loopback() {
        vec![format!(
            "http.api_key is an operator key that reads and writes every org's sessions, and the HTTP sidecar listens on {listen}: give each org its own [[http.api_keys]] key and keep http.api_key for operators"
        )]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const ROUTE: &str = "[[route]]\ndefault = true\norg_id = \"org1\"\nagent_id = \"a\"\nai_agent_uri = \"sip:ai@127.0.0.1:5080\"\n";
    const KEY_A: &str = "org-a-key-0123456789abcdef0123456789";
    const KEY_B: &str = "org-b-key-0123456789abcdef0123456789";

    fn parse(http: &str) -> Result<crate::config::Settings, String> {
        Config::parse(&format!("[http]\n{http}\n{ROUTE}"), "c.toml").map_err(|e| e.to_string())
    }

    fn keys(entries: &[(&str, &str, &str)]) -> String {
        let list: Vec<String> = entries
            .iter()
            .map(|(org, key, name)| {
                format!("{{ org_id = \"{org}\", key = \"{key}\", name = \"{name}\" }}")
            })
            .collect();
        format!("api_keys = [{}]", list.join(", "))
    }

    #[test]
    fn org_keys_are_read() {
        let s = parse(&keys(&[("org-a", KEY_A, "a"), ("org-b", KEY_B, "b")])).unwrap();
        let k = &s.http.access.api_keys;
        assert_eq!(k.len(), 2);
        assert_eq!((k[0].org_id.as_str(), k[0].key.expose()), ("org-a", KEY_A));
        assert_eq!(k[1].name, "b");
    }

    #[test]
    fn bad_org_keys_name_the_key() {
        for (http, needle) in [
            (keys(&[("org a", KEY_A, "a")]), "http.api_keys[0].org_id"),
            (
                keys(&[("org-a", "too-short-0123", "a")]),
                "http.api_keys[0].key",
            ),
            (keys(&[("org-a", KEY_A, "")]), "http.api_keys[0].name"),
            (
                keys(&[("org-a", KEY_A, "a"), ("org-b", KEY_A, "b")]),
                "http.api_keys[1].key",
            ),
            (
                keys(&[("org-a", KEY_A, "a"), ("org-b", KEY_B, "a")]),
                "http.api_keys[1].name",
            ),
            (
                format!("api_key = \"{KEY_A}\"\n{}", keys(&[("org-a", KEY_A, "a")])),
                "http.api_keys[0].key",
            ),
            (
                "api_keys = [{ org_id = \"o\", key = \"x\", name = \"n\", role = \"admin\" }]"
                    .into(),
                "role",
            ),
        ] {
            let e = parse(&http).expect_err(&http);
            assert!(e.contains(needle), "{http}: {e}");
            assert!(
                !e.contains(KEY_A) && !e.contains(KEY_B),
                "key in error: {e}"
            );
        }
    }

    #[test]
    fn debug_never_shows_a_key() {
        let s = parse(&format!(
            "api_key = \"operator-key-0123456789\"\n{}",
            keys(&[("org-a", KEY_A, "a")])
        ))
        .unwrap();
        let shown = format!("{:?}", s.http);
        assert!(
            !shown.contains(KEY_A) && !shown.contains("operator-key"),
            "{shown}"
        );
        let raw: super::ApiKeyConfig =
            toml::from_str(&format!("org_id = \"o\"\nkey = \"{KEY_A}\"\nname = \"n\"")).unwrap();
        assert!(!format!("{raw:?}").contains(KEY_A));
    }

    #[test]
    fn dashboard_secret_needs_issuer_and_audience() {
        let secret = "dashboard_jwt_secret = \"dashboard-secret-0123456789\"";
        let e = parse(&format!("{secret}\ndashboard_jwt_audience = \"handoff\"")).unwrap_err();
        assert!(e.contains("http.dashboard_jwt_issuer"), "{e}");
        let e = parse(&format!("{secret}\ndashboard_jwt_issuer = \"dash\"")).unwrap_err();
        assert!(e.contains("http.dashboard_jwt_audience"), "{e}");
        let e = parse("dashboard_jwt_issuer = \"dash\"").unwrap_err();
        assert!(e.contains("http.dashboard_jwt_issuer"), "{e}");
        let e = parse(&format!(
            "{secret}\ndashboard_jwt_issuer = \"a b\"\ndashboard_jwt_audience = \"h\""
        ))
        .unwrap_err();
        assert!(e.contains("http.dashboard_jwt_issuer"), "{e}");
        let s = parse(&format!(
            "{secret}\ndashboard_jwt_issuer = \"dash\"\ndashboard_jwt_audience = \"handoff\""
        ))
        .unwrap();
        assert_eq!(s.http.access.dashboard_jwt_issuer.as_deref(), Some("dash"));
        assert_eq!(
            s.http.access.dashboard_jwt_audience.as_deref(),
            Some("handoff")
        );
    }

    #[test]
    fn operator_key_off_loopback_is_a_warning() {
        let lo = "127.0.0.1:8080".parse().unwrap();
        let public = "0.0.0.0:8080".parse().unwrap();
        assert!(super::access_warnings(lo, true).is_empty());
        assert!(super::access_warnings(public, false).is_empty());
        let w = super::access_warnings(public, true);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("http.api_key"), "{w:?}");
    }
}
