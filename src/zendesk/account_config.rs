//! `[[zendesk.accounts]]`: one Zendesk account per listed org (where its API is,
//! its credentials, its webhook signing secret and its numeric account id), beside
//! the global `[zendesk]` that stays the account of every org not listed.
//!
//! An entry's credentials go through the same validation as `[zendesk]`'s
//! ([`compile_api_keys`]); the client's timing keys (timeouts, retries, the OAuth
//! refresh margin) are `[zendesk]`'s for every account.

use super::settings::{compile_api_keys, ApiKeys, ZendeskConfig, ZendeskConfigError};
use super::ZendeskApiSettings;
use crate::config::Secret;
use serde::Deserialize;

/// Account entries accepted at most.
pub const MAX_ACCOUNTS: usize = 256;

/// One `[[zendesk.accounts]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZendeskAccountConfig {
    pub org_id: String,
    /// Zendesk's numeric account id (required: see [`compile_accounts`]).
    pub account_id: Option<u64>,
    pub subdomain: Option<String>,
    pub base_url: Option<String>,
    pub email: Option<String>,
    pub api_token: Option<String>,
    pub oauth_token: Option<String>,
    pub oauth_client_id: Option<String>,
    pub oauth_client_secret: Option<String>,
    pub oauth_token_url: Option<String>,
    pub oauth_scope: Option<String>,
    pub webhook_signing_secret: Option<String>,
}

/// One Zendesk account, validated: the default one (`org_id` None) or an entry's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ZendeskAccountSettings {
    /// The org this account serves; None: the default (`[zendesk]`).
    pub org_id: Option<String>,
    /// Zendesk's numeric account id; event webhooks must carry it.
    pub account_id: Option<u64>,
    /// None: no API credentials (no confirmation, enrichment or event webhooks).
    pub api: Option<ZendeskApiSettings>,
    /// None: this account's webhooks are not signed (refused off loopback unless
    /// `zendesk.allow_unsigned_webhooks`).
    pub signing_secret: Option<Secret>,
}

/// Every configured Zendesk account.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ZendeskAccountsSettings {
    pub default: ZendeskAccountSettings,
    pub accounts: Vec<ZendeskAccountSettings>,
}

impl ZendeskAccountsSettings {
    /// The account of `org`: its entry, else the default. A listed org never
    /// falls back to the default's credentials or secret: that is another
    /// Zendesk account.
    pub fn for_org(&self, org: &str) -> &ZendeskAccountSettings {
        self.listed(org).unwrap_or(&self.default)
    }

    /// `org`'s own entry, when it has one.
    pub fn listed(&self, org: &str) -> Option<&ZendeskAccountSettings> {
        self.accounts
            .iter()
            .find(|a| a.org_id.as_deref() == Some(org))
    }

    /// Every account's signing secret with the key it comes from.
    pub fn secrets(&self) -> Vec<(String, &Secret)> {
        let mut out = Vec::new();
        if let Some(s) = &self.default.signing_secret {
            out.push(("zendesk.webhook_signing_secret".to_owned(), s));
        }
        for (i, a) in self.accounts.iter().enumerate() {
            if let Some(s) = &a.signing_secret {
                out.push((format!("zendesk.accounts[{i}].webhook_signing_secret"), s));
            }
        }
        out
    }

    /// The entries without a signing secret, by key.
    pub fn unsigned_entries(&self) -> Vec<String> {
        self.accounts
            .iter()
            .enumerate()
            .filter(|(_, a)| a.signing_secret.is_none())
            .map(|(i, _)| format!("zendesk.accounts[{i}].webhook_signing_secret"))
            .collect()
    }
}

/// A webhook signing secret as `[zendesk]` takes it: 1 to 1024 printable
/// characters without spaces.
pub fn signing_secret(key: &str, v: &str) -> Result<Secret, ZendeskConfigError> {
    if v.is_empty() || v.len() > 1024 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ZendeskConfigError {
            key: key.to_owned(),
            problem: "must be 1 to 1024 printable characters without spaces".into(),
        });
    }
    Ok(Secret::new(v))
}

/// `[zendesk]` and its `[[zendesk.accounts]]`, validated; `default_api` is
/// `[zendesk]`'s own API settings (compiled once, by the caller).
///
/// `account_id` is required on an entry and optional on `[zendesk]`: an entry
/// exists to keep one Zendesk account apart from another, and the id is what an
/// event webhook names its account by; `[zendesk]` without it keeps running the
/// trigger webhook as before, and refuses event webhooks (naming the key).
pub fn compile_accounts(
    z: &ZendeskConfig,
    default_api: Option<ZendeskApiSettings>,
) -> Result<ZendeskAccountsSettings, ZendeskConfigError> {
    let bad = |key: String, problem: String| ZendeskConfigError { key, problem };
    if z.account_id == Some(0) {
        return Err(bad("zendesk.account_id".into(), "must be positive".into()));
    }
    let default = ZendeskAccountSettings {
        org_id: None,
        account_id: z.account_id,
        api: default_api,
        signing_secret: z
            .webhook_signing_secret
            .as_deref()
            .map(|v| signing_secret("zendesk.webhook_signing_secret", v))
            .transpose()?,
    };
    if z.accounts.len() > MAX_ACCOUNTS {
        return Err(bad(
            "zendesk.accounts".into(),
            format!("at most {MAX_ACCOUNTS} accounts"),
        ));
    }
    let mut accounts: Vec<ZendeskAccountSettings> = Vec::new();
    for (i, a) in z.accounts.iter().enumerate() {
        let prefix = format!("zendesk.accounts[{i}]");
        let key = |f: &str| format!("{prefix}.{f}");
        if !crate::http::auth::valid_org_id(&a.org_id) {
            return Err(bad(
                key("org_id"),
                format!("{:?} must be 1-128 token characters", a.org_id),
            ));
        }
        if accounts
            .iter()
            .any(|o| o.org_id.as_deref() == Some(a.org_id.as_str()))
        {
            return Err(bad(
                key("org_id"),
                format!("{:?} has an account already", a.org_id),
            ));
        }
        let account_id = match a.account_id {
            Some(n) if n > 0 => n,
            Some(_) => return Err(bad(key("account_id"), "must be positive".into())),
            None => {
                return Err(bad(
                    key("account_id"),
                    "required: Zendesk's numeric account id (Admin Center, Account, or the x-zendesk-account-id header of its webhooks)".into(),
                ))
            }
        };
        let keys = ApiKeys {
            subdomain: a.subdomain.as_deref(),
            base_url: a.base_url.as_deref(),
            email: a.email.as_deref(),
            api_token: a.api_token.as_deref(),
            oauth_token: a.oauth_token.as_deref(),
            oauth_client_id: a.oauth_client_id.as_deref(),
            oauth_client_secret: a.oauth_client_secret.as_deref(),
            oauth_token_url: a.oauth_token_url.as_deref(),
            oauth_scope: a.oauth_scope.as_deref().unwrap_or(&z.oauth_scope),
            ..z.api_keys()
        };
        let api = compile_api_keys(&prefix, &keys)?;
        let signing_secret = a
            .webhook_signing_secret
            .as_deref()
            .map(|v| signing_secret(&key("webhook_signing_secret"), v))
            .transpose()?;
        accounts.push(ZendeskAccountSettings {
            org_id: Some(a.org_id.clone()),
            account_id: Some(account_id),
            api,
            signing_secret,
        });
    }
    Ok(ZendeskAccountsSettings { default, accounts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const ROUTE: &str = "[[route]]\ndefault = true\norg_id = \"o\"\nagent_id = \"a\"\nai_agent_uri = \"sip:ai@127.0.0.1\"\n";

    fn parse(zendesk: &str) -> Result<crate::config::Settings, String> {
        Config::parse(&format!("{zendesk}\n{ROUTE}"), "t.toml").map_err(|e| e.to_string())
    }

    const TWO: &str = "[zendesk]\nsubdomain = \"global\"\noauth_token = \"g-token\"\n\
        [[zendesk.accounts]]\norg_id = \"org-a\"\naccount_id = 111\nsubdomain = \"acme\"\nemail = \"a@acme.example\"\napi_token = \"a-token\"\nwebhook_signing_secret = \"a-secret\"\n\
        [[zendesk.accounts]]\norg_id = \"org-b\"\naccount_id = 222\nbase_url = \"http://127.0.0.1:9\"\noauth_client_id = \"cid\"\noauth_client_secret = \"cs\"\n";

    #[test]
    fn each_org_gets_its_own_account_and_the_rest_the_default() {
        let s = parse(TWO).expect("valid");
        let z = &s.zendesk_accounts;
        let a = z.for_org("org-a");
        assert_eq!(a.account_id, Some(111));
        assert_eq!(
            a.api.as_ref().map(|x| x.base_url.as_str()),
            Some("https://acme.zendesk.com")
        );
        assert_eq!(
            a.signing_secret.as_ref().map(Secret::expose),
            Some("a-secret")
        );
        let b = z.for_org("org-b");
        assert_eq!(b.account_id, Some(222));
        assert!(matches!(
            b.api.as_ref().map(|x| &x.auth),
            Some(crate::zendesk::ApiAuth::ClientCredentials { .. })
        ));
        assert_eq!(b.signing_secret, None, "never the default's");
        let other = z.for_org("org-c");
        assert_eq!(other.org_id, None);
        assert_eq!(
            other.api.as_ref().map(|x| x.base_url.as_str()),
            Some("https://global.zendesk.com")
        );
        assert_eq!(
            s.zendesk.map(|x| x.base_url).as_deref(),
            Some("https://global.zendesk.com")
        );
        // Timing keys come from [zendesk].
        assert_eq!(
            a.api.as_ref().map(|x| x.request_timeout),
            Some(std::time::Duration::from_secs(5))
        );
    }

    #[test]
    fn an_entry_without_credentials_has_no_api() {
        let s = parse("[[zendesk.accounts]]\norg_id = \"o\"\naccount_id = 5\n").expect("valid");
        assert_eq!(s.zendesk_accounts.for_org("o").api, None);
        assert_eq!(s.zendesk_accounts.for_org("o").account_id, Some(5));
    }

    #[test]
    fn errors_name_the_entry_and_key() {
        let entry = |body: &str| {
            format!("[[zendesk.accounts]]\norg_id = \"x\"\naccount_id = 1\n[[zendesk.accounts]]\n{body}")
        };
        for (body, key) in [
            ("org_id = \"o\"\n", "zendesk.accounts[1].account_id"),
            ("org_id = \"o\"\naccount_id = 0\n", "zendesk.accounts[1].account_id"),
            ("org_id = \"x\"\naccount_id = 2\n", "zendesk.accounts[1].org_id"),
            ("org_id = \"o o\"\naccount_id = 2\n", "zendesk.accounts[1].org_id"),
            (
                "org_id = \"o\"\naccount_id = 2\nemail = \"a@b.c\"\napi_token = \"t\"\n",
                "zendesk.accounts[1].subdomain",
            ),
            (
                "org_id = \"o\"\naccount_id = 2\nsubdomain = \"s\"\noauth_token = \"t\"\napi_token = \"u\"\n",
                "zendesk.accounts[1].api_token",
            ),
            (
                "org_id = \"o\"\naccount_id = 2\nbase_url = \"ftp://x\"\noauth_token = \"t\"\n",
                "zendesk.accounts[1].base_url",
            ),
            (
                "org_id = \"o\"\naccount_id = 2\nwebhook_signing_secret = \"a b\"\n",
                "zendesk.accounts[1].webhook_signing_secret",
            ),
        ] {
            let e = parse(&entry(body)).expect_err(body);
            assert!(e.contains(key), "{key}: {e}");
        }
        let e = parse("[[zendesk.accounts]]\norg_id = \"o\"\naccount_id = 1\nsecret = \"x\"\n")
            .expect_err("unknown key");
        assert!(e.contains("secret"), "{e}");
        let e = parse("[zendesk]\naccount_id = 0\n").expect_err("zero");
        assert!(e.contains("zendesk.account_id"), "{e}");
    }

    #[test]
    fn at_most_256_accounts() {
        let many: String = (0..=MAX_ACCOUNTS)
            .map(|i| {
                format!(
                    "[[zendesk.accounts]]\norg_id = \"o{i}\"\naccount_id = {}\n",
                    i + 1
                )
            })
            .collect();
        let e = parse(&many).expect_err("too many");
        assert!(e.contains("zendesk.accounts"), "{e}");
    }

    #[test]
    fn off_loopback_each_account_needs_its_own_secret() {
        let http = "[http]\nlisten = \"0.0.0.0:8080\"\n[[http.signing_keys]]\nkid = \"k\"\nsecret = \"own-signing-secret-0123456789\"\nissuer = \"i\"\n";
        let text = format!("{http}[zendesk]\nwebhook_signing_secret = \"own-global-0123\"\n[[zendesk.accounts]]\norg_id = \"o\"\naccount_id = 1\n");
        let e = parse(&text).expect_err("unsigned entry");
        assert!(
            e.contains("zendesk.accounts[0].webhook_signing_secret"),
            "{e}"
        );
        let shipped = format!("{http}[zendesk]\nwebhook_signing_secret = \"own-global-0123\"\n[[zendesk.accounts]]\norg_id = \"o\"\naccount_id = 1\nwebhook_signing_secret = \"from-the-zendesk-webhook-page\"\n");
        let e = parse(&shipped).expect_err("shipped secret");
        assert!(
            e.contains("zendesk.accounts[0].webhook_signing_secret"),
            "{e}"
        );
        assert!(e.contains("shipped"), "{e}");
        let own = shipped.replace("from-the-zendesk-webhook-page", "own-account-0123");
        assert!(parse(&own).is_ok());
        let allowed = text.replace("[zendesk]\n", "[zendesk]\nallow_unsigned_webhooks = true\n");
        assert!(parse(&allowed).is_ok());
    }
}
