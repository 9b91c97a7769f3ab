//! The secrets the shipped `config.toml` contains, set or in commented examples:
//! they are public, so a handoff reachable from elsewhere must not use any of them.
//! Read from the file itself at compile time, so the list cannot drift from it.

use std::sync::OnceLock;

/// The shipped configuration, as compiled in.
const SHIPPED: &str = include_str!("../../config.toml");

/// Keys whose values are secrets, wherever they sit in the file.
const SECRET_KEYS: [&str; 9] = [
    "secret",
    "dashboard_jwt_secret",
    "api_key",
    "webhook_signing_secret",
    "api_token",
    "oauth_token",
    "oauth_client_secret",
    "password",
    "key",
];

/// Whether `value` is a secret written in the shipped `config.toml` (set, or in a
/// commented example a person may uncomment).
pub fn is_shipped_secret(value: &str) -> bool {
    shipped_secrets().iter().any(|s| s == value)
}

fn shipped_secrets() -> &'static [String] {
    static SECRETS: OnceLock<Vec<String>> = OnceLock::new();
    SECRETS.get_or_init(|| secrets_in(SHIPPED))
}

/// Every string under a secret-named key in `text`: the TOML document itself, then
/// each commented line that parses as `key = "value"` once its `#` is taken off.
fn secrets_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(doc) = toml::from_str::<toml::Table>(text) {
        collect(&toml::Value::Table(doc), None, &mut out);
    }
    for line in text.lines() {
        let Some(commented) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        if let Ok(t) = toml::from_str::<toml::Table>(commented.trim()) {
            collect(&toml::Value::Table(t), None, &mut out);
        }
    }
    out.sort();
    out.dedup();
    out
}

fn collect(v: &toml::Value, key: Option<&str>, out: &mut Vec<String>) {
    match v {
        toml::Value::String(s) if key.is_some_and(|k| SECRET_KEYS.contains(&k)) => {
            out.push(s.clone())
        }
        toml::Value::Table(t) => t.iter().for_each(|(k, v)| collect(v, Some(k), out)),
        toml::Value::Array(a) => a.iter().for_each(|v| collect(v, key, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_signing_key_and_the_commented_examples_are_known() {
        assert!(is_shipped_secret("dev-only-signing-key-replace-me-0001"));
        // Commented examples: dashboard secret, API key, webhook secrets.
        assert!(is_shipped_secret("change-me-to-a-long-random-string"));
        assert!(is_shipped_secret("from-the-zendesk-webhook-page"));
        assert!(is_shipped_secret("from-admin-center-apis"));
        assert!(!is_shipped_secret("a-real-secret-nobody-has-seen-0123"));
        assert!(!is_shipped_secret("dev-1"), "a kid is not a secret");
    }

    #[test]
    fn nested_arrays_and_comments_are_read() {
        let text = "[[a]]\nsecret = \"s1\"\nkid = \"k\"\n# [[b]]\n# password = \"p1\"\n#api_key=\"k1\"\n# not toml at all\n";
        assert_eq!(secrets_in(text), ["k1", "p1", "s1"]);
    }
}
