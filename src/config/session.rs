//! `[session]` keys of the Redis store (`store = "redis"`): where Redis is, the key
//! prefix, the per-command timeout and the record TTL. Validated into
//! [`RedisSettings`], whose `Debug` never shows the URL's password.

use super::ConfigError;
use std::fmt;
use std::time::Duration;

/// Defaults of the `[session]` Redis keys.
pub const DEFAULT_KEY_PREFIX: &str = "handoff:";
pub const DEFAULT_TIMEOUT_MS: u64 = 200;
pub const DEFAULT_RECORD_TTL_SECS: u64 = 120;

/// The Redis store's settings, validated.
#[derive(Clone)]
pub struct RedisSettings {
    /// Holds the password when the URL has one: never log it, use [`redact_url`].
    pub url: String,
    pub key_prefix: String,
    /// Every command's bound (connect included).
    pub timeout: Duration,
    /// A live session's record lives this long unless its node refreshes it (every
    /// third of it): a dead node's sessions expire.
    pub record_ttl: Duration,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("record_ttl", &self.record_ttl)
            .finish()
    }
}

/// The raw keys, as `[session]` holds them.
pub struct RedisKeys<'a> {
    pub redis_url: Option<&'a str>,
    pub key_prefix: &'a str,
    pub timeout_ms: u64,
    pub record_ttl_secs: u64,
}

/// `Some` with `store = "redis"` (then `redis_url` is required), `None` otherwise
/// (the keys are still checked, so a typo does not wait for the day Redis is on).
pub fn validate(
    is_redis: bool,
    k: &RedisKeys<'_>,
    bad: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Option<RedisSettings>, ConfigError> {
    let prefix_ok = (1..=64).contains(&k.key_prefix.len())
        && k.key_prefix.bytes().all(|b| b.is_ascii_graphic());
    if !prefix_ok {
        return Err(bad(
            "session.key_prefix",
            "must be 1 to 64 printable ASCII characters without spaces".into(),
        ));
    }
    if !(1..=60_000).contains(&k.timeout_ms) {
        return Err(bad(
            "session.timeout_ms",
            "must be between 1 and 60000".into(),
        ));
    }
    if !(3..=86_400).contains(&k.record_ttl_secs) {
        return Err(bad(
            "session.record_ttl_secs",
            "must be between 3 and 86400".into(),
        ));
    }
    if let Some(url) = k.redis_url {
        check_url(url).map_err(|p| bad("session.redis_url", p))?;
    }
    if !is_redis {
        return Ok(None);
    }
    let Some(url) = k.redis_url else {
        return Err(bad(
            "session.redis_url",
            "is required with store = \"redis\" (e.g. \"redis://127.0.0.1:6379/0\")".into(),
        ));
    };
    Ok(Some(RedisSettings {
        url: url.to_owned(),
        key_prefix: k.key_prefix.to_owned(),
        timeout: Duration::from_millis(k.timeout_ms),
        record_ttl: Duration::from_secs(k.record_ttl_secs),
    }))
}

/// `redis://` or `unix://` (this build has no TLS to Redis), parsed by the client
/// itself. The problem never repeats the URL (it may hold a password).
fn check_url(url: &str) -> Result<(), String> {
    let scheme_ok = ["redis://", "unix://", "redis+unix://"]
        .iter()
        .any(|s| url.starts_with(s));
    if !scheme_ok {
        return Err("must start with redis:// or unix:// (rediss:// is not supported)".into());
    }
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(|_| ())
        .map_err(|e| format!("is not a Redis URL ({:?})", e.kind()))
}

/// The URL with any password replaced by `***`, for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    // userinfo ends at the last '@' before the path.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let shown = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".into()
            };
            format!("{scheme}://{shown}@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(key: &str, problem: String) -> ConfigError {
        ConfigError::Invalid {
            path: "c".into(),
            key: key.into(),
            problem,
        }
    }

    fn keys(url: Option<&str>) -> RedisKeys<'_> {
        RedisKeys {
            redis_url: url,
            key_prefix: DEFAULT_KEY_PREFIX,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            record_ttl_secs: DEFAULT_RECORD_TTL_SECS,
        }
    }

    #[test]
    fn redis_needs_a_url_and_memory_does_not() {
        assert!(validate(false, &keys(None), &bad).unwrap().is_none());
        let e = validate(true, &keys(None), &bad).unwrap_err().to_string();
        assert!(e.contains("session.redis_url"), "{e}");
        let s = validate(true, &keys(Some("redis://127.0.0.1:6379/0")), &bad)
            .unwrap()
            .unwrap();
        assert_eq!(s.timeout, Duration::from_millis(200));
        assert_eq!(s.record_ttl, Duration::from_secs(120));
        assert_eq!(s.key_prefix, "handoff:");
    }

    #[test]
    fn bad_values_name_their_key_and_never_echo_the_password() {
        for url in [
            "http://h",
            "rediss://u:hunter2@h",
            "redis://u:hunter2@[::1",
            "",
        ] {
            let e = validate(true, &keys(Some(url)), &bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("session.redis_url"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        for prefix in ["", "a b", "a\nb", &"p".repeat(65)] {
            let mut k = keys(Some("redis://h"));
            k.key_prefix = prefix;
            let e = validate(true, &k, &bad).unwrap_err().to_string();
            assert!(e.contains("session.key_prefix"), "{e}");
        }
        let mut k = keys(Some("redis://h"));
        k.timeout_ms = 0;
        assert!(validate(true, &k, &bad)
            .unwrap_err()
            .to_string()
            .contains("session.timeout_ms"));
        let mut k = keys(Some("redis://h"));
        k.record_ttl_secs = 1;
        assert!(validate(true, &k, &bad)
            .unwrap_err()
            .to_string()
            .contains("session.record_ttl_secs"));
    }

    #[test]
    fn password_is_redacted() {
        assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact_url("redis://u:p@ss@h/0"), "redis://u:***@h/0");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("redis://tok@h"), "redis://***@h");
        assert_eq!(redact_url("garbage"), "***");
        let s = validate(true, &keys(Some("redis://u:hunter2@h/0")), &bad)
            .unwrap()
            .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
