//! The URLs handoff sends credentials or signed data to (the Zendesk API, the OAuth
//! token endpoint, the `[[webhooks]]` subscribers): a plain `http://` URL off
//! loopback is a start-up warning, or an error with `http.require_https_outbound`.
//! Also the start-up warnings of the whole configuration, in one list.

use super::Settings;
use crate::events::settings::EventSettings;
use crate::zendesk::settings::{ApiAuth, ZendeskApiSettings};
use reqwest::Url;

/// Whether `url` is `http://` to a host other than loopback (`127.0.0.0/8`, `::1`,
/// `localhost`): its bytes, credentials included, cross a network in clear.
/// A URL that does not parse counts as plain (validation refuses it elsewhere).
pub fn plain_http_off_loopback(url: &str) -> bool {
    let Ok(u) = Url::parse(url) else {
        return true;
    };
    if u.scheme() != "http" {
        return false;
    }
    let Some(host) = u.host_str() else {
        return true;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback(),
        Err(_) => !bare.eq_ignore_ascii_case("localhost"),
    }
}

/// Every outbound URL with the key it comes from.
pub fn outbound_urls(
    zendesk: Option<&ZendeskApiSettings>,
    events: &EventSettings,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(z) = zendesk {
        out.push(("zendesk.base_url".to_owned(), z.base_url.clone()));
        if let ApiAuth::ClientCredentials { token_url, .. } = &z.auth {
            out.push(("zendesk.oauth_token_url".to_owned(), token_url.clone()));
        }
    }
    for (i, s) in events.subscribers.iter().enumerate() {
        out.push((format!("webhooks[{i}].url"), s.url.to_string()));
    }
    out
}

/// The outbound URLs that are plain `http://` off loopback, as (key, message).
pub fn plain_outbound(
    zendesk: Option<&ZendeskApiSettings>,
    events: &EventSettings,
) -> Vec<(String, String)> {
    outbound_urls(zendesk, events)
        .into_iter()
        .filter(|(_, url)| plain_http_off_loopback(url))
        .map(|(key, url)| {
            let host = Url::parse(&url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            let msg = format!(
                "http:// to {host}, off loopback: credentials and signed data would cross the network in clear; use https://"
            );
            (key, msg)
        })
        .collect()
}

/// The `[[zendesk.accounts]]` entries' API and token URLs with their keys.
pub fn account_urls(
    accounts: &crate::zendesk::account_config::ZendeskAccountsSettings,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, a) in accounts.accounts.iter().enumerate() {
        if let Some(z) = &a.api {
            out.push((
                format!("zendesk.accounts[{i}].base_url"),
                z.base_url.clone(),
            ));
            if let ApiAuth::ClientCredentials { token_url, .. } = &z.auth {
                out.push((
                    format!("zendesk.accounts[{i}].oauth_token_url"),
                    token_url.clone(),
                ));
            }
        }
    }
    out
}

/// With `http.require_https_outbound`, the first plain URL of an account entry is
/// an error naming its key.
pub fn require_https_accounts(
    required: bool,
    accounts: &crate::zendesk::account_config::ZendeskAccountsSettings,
) -> Result<(), (String, String)> {
    if !required {
        return Ok(());
    }
    match account_urls(accounts)
        .into_iter()
        .find(|(_, url)| plain_http_off_loopback(url))
    {
        Some((key, _)) => Err((
            key,
            "is http:// off loopback and http.require_https_outbound is set; use https://".into(),
        )),
        None => Ok(()),
    }
}

/// With `http.require_https_outbound`, the first plain outbound URL is an error
/// naming its key.
pub fn require_https(
    required: bool,
    zendesk: Option<&ZendeskApiSettings>,
    events: &EventSettings,
) -> Result<(), (String, String)> {
    if !required {
        return Ok(());
    }
    match plain_outbound(zendesk, events).into_iter().next() {
        Some((key, msg)) => Err((key, format!("{msg} (http.require_https_outbound = true)"))),
        None => Ok(()),
    }
}

impl Settings {
    /// What start-up (and `check-config`) warns about: nothing here stops
    /// handoff, each says what to change.
    pub fn startup_warnings(&self) -> Vec<String> {
        let mut w =
            super::http_access::access_warnings(self.http.listen, self.http.api_key.is_some());
        for (key, msg) in plain_outbound(self.zendesk.as_ref(), &self.events) {
            w.push(format!(
                "{key}: {msg} (http.require_https_outbound = true makes this an error)"
            ));
        }
        for (key, url) in account_urls(&self.zendesk_accounts) {
            if plain_http_off_loopback(&url) {
                w.push(format!(
                    "{key}: http:// off loopback: credentials would cross the network in clear; use https:// (http.require_https_outbound = true makes this an error)"
                ));
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn plain_http_is_judged_by_host() {
        for url in [
            "http://example.com/x",
            "http://10.0.0.1:8080/",
            "http://[2001:db8::1]/",
            "http://localhost.example.com/",
            "not a url",
        ] {
            assert!(plain_http_off_loopback(url), "{url}");
        }
        for url in [
            "https://example.com/x",
            "http://127.0.0.1:9/",
            "http://127.1.2.3/",
            "http://[::1]:80/",
            "http://localhost:8080/hooks",
            "http://LOCALHOST/",
        ] {
            assert!(!plain_http_off_loopback(url), "{url}");
        }
    }

    const ROUTE: &str = "[[route]]\ndefault = true\norg_id = \"org1\"\nagent_id = \"a\"\nai_agent_uri = \"sip:ai@127.0.0.1:5080\"\n";

    fn text(require: bool, hook: &str, zendesk_base: &str) -> String {
        format!(
            "[http]\nrequire_https_outbound = {require}\n[zendesk]\nbase_url = \"{zendesk_base}\"\noauth_client_id = \"c\"\noauth_client_secret = \"s\"\n[[webhooks]]\nurl = \"{hook}\"\nsecret = \"0123456789abcdef0123\"\n{ROUTE}"
        )
    }

    #[test]
    fn plain_urls_warn_by_default() {
        let s = Config::parse(
            &text(false, "http://hooks.example.com/h", "http://zd.example.com"),
            "c",
        )
        .unwrap();
        let w = s.startup_warnings();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].starts_with("zendesk.base_url: "), "{w:?}");
        assert!(w[1].starts_with("zendesk.oauth_token_url: "), "{w:?}");
        assert!(w[2].starts_with("webhooks[0].url: "), "{w:?}");
        let s = Config::parse(
            &text(false, "http://127.0.0.1:9/h", "http://127.0.0.1:1"),
            "c",
        )
        .unwrap();
        assert!(s.startup_warnings().is_empty());
    }

    #[test]
    fn require_https_outbound_makes_them_errors() {
        let e = Config::parse(
            &text(true, "https://hooks.example.com/h", "http://zd.example.com"),
            "c",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("zendesk.base_url"), "{e}");
        let e = Config::parse(
            &text(true, "http://hooks.example.com/h", "https://zd.example.com"),
            "c",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("webhooks[0].url"), "{e}");
        Config::parse(
            &text(
                true,
                "https://hooks.example.com/h",
                "https://zd.example.com",
            ),
            "c",
        )
        .unwrap();
        // Loopback stays allowed: the shipped config and the tests use it.
        Config::parse(
            &text(true, "http://127.0.0.1:9/h", "http://localhost:1"),
            "c",
        )
        .unwrap();
    }

    #[test]
    fn account_entries_urls_are_checked_too() {
        let entry = |require: bool, base: &str| {
            format!("[http]\nrequire_https_outbound = {require}\n[[zendesk.accounts]]\norg_id = \"o\"\naccount_id = 1\nbase_url = \"{base}\"\noauth_client_id = \"c\"\noauth_client_secret = \"s\"\n{ROUTE}")
        };
        let s = Config::parse(&entry(false, "http://zd.example.com"), "c").unwrap();
        let w = s.startup_warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("zendesk.accounts[0].base_url: "), "{w:?}");
        assert!(
            w[1].starts_with("zendesk.accounts[0].oauth_token_url: "),
            "{w:?}"
        );
        let e = Config::parse(&entry(true, "http://zd.example.com"), "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("zendesk.accounts[0].base_url"), "{e}");
        Config::parse(&entry(true, "https://zd.example.com"), "c").unwrap();
        Config::parse(&entry(true, "http://127.0.0.1:1"), "c").unwrap();
    }
}
