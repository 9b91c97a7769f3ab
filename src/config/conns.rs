//! Connection limits: the HTTP sidecar's timeouts, concurrency and connection caps
//! (`[http]`), and SIP/TCP's connection caps and message deadline (`[sip]`). The keys
//! live in those two sections; their structs are flattened in from here.

use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

/// These structs are flattened into `[http]` and `[sip]`, where serde no longer knows
/// the key of a value of the wrong type: each field's reader names its key itself.
macro_rules! named_readers {
    ($($fn:ident: $ty:ty = $key:literal),* $(,)?) => {$(
        fn $fn<'de, D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
            <$ty>::deserialize(d)
                .map_err(|e| serde::de::Error::custom(format!("key `{}`: {e}", $key)))
        }
    )*};
}

named_readers! {
    header_timeout_ms: u64 = "http.header_timeout_ms",
    request_timeout_ms: u64 = "http.request_timeout_ms",
    body_timeout_ms: u64 = "http.body_timeout_ms",
    max_concurrent_requests: usize = "http.max_concurrent_requests",
    max_connections: usize = "http.max_connections",
    max_connections_per_ip: usize = "http.max_connections_per_ip",
    tcp_max_connections: usize = "sip.tcp_max_connections",
    tcp_max_connections_per_ip: usize = "sip.tcp_max_connections_per_ip",
    tcp_message_timeout_ms: u64 = "sip.tcp_message_timeout_ms",
}

/// The `[http]` keys of this area.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpConnsConfig {
    /// A request's header block must arrive within this, from the connection's
    /// accept or the end of its previous request (slowloris).
    #[serde(deserialize_with = "header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// A whole request, body and handler included; over it: `408`.
    #[serde(deserialize_with = "request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// The longest wait for the next piece of a request body.
    #[serde(deserialize_with = "body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// Requests in progress at once; more get `503` at once, never a queue.
    #[serde(deserialize_with = "max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Open connections in total; one more is closed at once.
    #[serde(deserialize_with = "max_connections")]
    pub max_connections: usize,
    /// Open connections from one source IP; one more is closed at once.
    #[serde(deserialize_with = "max_connections_per_ip")]
    pub max_connections_per_ip: usize,
}

impl Default for HttpConnsConfig {
    fn default() -> Self {
        HttpConnsConfig {
            header_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            body_timeout_ms: 10_000,
            max_concurrent_requests: 256,
            max_connections: 1024,
            max_connections_per_ip: 64,
        }
    }
}

/// The `[sip]` keys of this area.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SipConnsConfig {
    /// Open SIP/TCP connections in total (accepted and our own).
    #[serde(deserialize_with = "tcp_max_connections")]
    pub tcp_max_connections: usize,
    /// Open SIP/TCP connections from one source IP.
    #[serde(deserialize_with = "tcp_max_connections_per_ip")]
    pub tcp_max_connections_per_ip: usize,
    /// A message must be complete this long after its first byte; later bytes do not
    /// extend it.
    #[serde(deserialize_with = "tcp_message_timeout_ms")]
    pub tcp_message_timeout_ms: u64,
}

impl Default for SipConnsConfig {
    fn default() -> Self {
        SipConnsConfig {
            tcp_max_connections: 4096,
            tcp_max_connections_per_ip: 256,
            tcp_message_timeout_ms: 10_000,
        }
    }
}

/// The HTTP sidecar's limits, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub body_timeout: Duration,
    pub max_concurrent_requests: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

/// SIP/TCP's limits, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipTcpLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub message_timeout: Duration,
}

impl Default for SipTcpLimits {
    fn default() -> Self {
        let c = SipConnsConfig::default();
        SipTcpLimits {
            max_connections: c.tcp_max_connections,
            max_connections_per_ip: c.tcp_max_connections_per_ip,
            message_timeout: Duration::from_millis(c.tcp_message_timeout_ms),
        }
    }
}

/// Both, as configured (before the descriptor budget clamps the caps at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnSettings {
    pub http: HttpLimits,
    pub sip_tcp: SipTcpLimits,
}

/// The longest any of these timeouts may be: an hour.
const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// The most connections a cap may name; the descriptor budget lowers it further.
const MAX_CAP: usize = 1 << 20;

fn timeout(
    bad: &dyn Fn(&str, String) -> ConfigError,
    key: &str,
    ms: u64,
) -> Result<Duration, ConfigError> {
    if !(1..=MAX_TIMEOUT_MS).contains(&ms) {
        return Err(bad(
            key,
            format!("must be between 1 and {MAX_TIMEOUT_MS} milliseconds"),
        ));
    }
    Ok(Duration::from_millis(ms))
}

fn cap(
    bad: &dyn Fn(&str, String) -> ConfigError,
    key: &str,
    n: usize,
) -> Result<usize, ConfigError> {
    if !(1..=MAX_CAP).contains(&n) {
        return Err(bad(key, format!("must be between 1 and {MAX_CAP}")));
    }
    Ok(n)
}

/// Checks both sections' keys; every error names its key.
pub(super) fn validate(
    http: &HttpConnsConfig,
    sip: &SipConnsConfig,
    bad: &dyn Fn(&str, String) -> ConfigError,
) -> Result<ConnSettings, ConfigError> {
    let http = HttpLimits {
        header_timeout: timeout(bad, "http.header_timeout_ms", http.header_timeout_ms)?,
        request_timeout: timeout(bad, "http.request_timeout_ms", http.request_timeout_ms)?,
        body_timeout: timeout(bad, "http.body_timeout_ms", http.body_timeout_ms)?,
        max_concurrent_requests: cap(
            bad,
            "http.max_concurrent_requests",
            http.max_concurrent_requests,
        )?,
        max_connections: cap(bad, "http.max_connections", http.max_connections)?,
        max_connections_per_ip: cap(
            bad,
            "http.max_connections_per_ip",
            http.max_connections_per_ip,
        )?,
    };
    if http.max_connections_per_ip > http.max_connections {
        return Err(bad(
            "http.max_connections_per_ip",
            format!(
                "must not exceed http.max_connections ({})",
                http.max_connections
            ),
        ));
    }
    let sip_tcp = SipTcpLimits {
        max_connections: cap(bad, "sip.tcp_max_connections", sip.tcp_max_connections)?,
        max_connections_per_ip: cap(
            bad,
            "sip.tcp_max_connections_per_ip",
            sip.tcp_max_connections_per_ip,
        )?,
        message_timeout: timeout(
            bad,
            "sip.tcp_message_timeout_ms",
            sip.tcp_message_timeout_ms,
        )?,
    };
    if sip_tcp.max_connections_per_ip > sip_tcp.max_connections {
        return Err(bad(
            "sip.tcp_max_connections_per_ip",
            format!(
                "must not exceed sip.tcp_max_connections ({})",
                sip_tcp.max_connections
            ),
        ));
    }
    Ok(ConnSettings { http, sip_tcp })
}

/// The line of the key an error names (`unknown field `k`` or `key `t.k``) inside
/// `span`: serde reports errors of a table with flattened fields at the table's start.
pub(super) fn line_of_key(text: &str, span: std::ops::Range<usize>, msg: &str) -> Option<usize> {
    let named = |marker: &str| {
        let rest = &msg[msg.find(marker)? + marker.len()..];
        Some(&rest[..rest.find('`')?])
    };
    let key = named("unknown field `")
        .or_else(|| named("key `").map(|k| k.rsplit_once('.').map_or(k, |(_, last)| last)))?;
    let region = text.get(span.start..span.end.min(text.len()))?;
    let mut offset = span.start;
    for line in region.split_inclusive('\n') {
        let name = line.split('=').next().unwrap_or("").trim();
        if line.contains('=') && (name == key || name.trim_matches('"') == key) {
            return Some(text[..offset].matches('\n').count() + 1);
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    const ROUTE: &str = "[[route]]\ndefault = true\norg_id = \"o\"\nagent_id = \"a\"\nai_agent_uri = \"sip:ai@127.0.0.1\"\n";

    fn parse(sections: &str) -> Result<crate::config::Settings, ConfigError> {
        Config::parse(&format!("{sections}\n{ROUTE}"), "t")
    }

    fn key_of(e: ConfigError) -> String {
        match e {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("expected an invalid key, got {other}"),
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = parse("").expect("defaults");
        let h = s.conns.http;
        assert_eq!(h.header_timeout.as_millis(), 10_000);
        assert_eq!(h.request_timeout.as_millis(), 30_000);
        assert_eq!(h.body_timeout.as_millis(), 10_000);
        assert_eq!(h.max_concurrent_requests, 256);
        assert_eq!(h.max_connections, 1024);
        assert_eq!(h.max_connections_per_ip, 64);
        let t = s.conns.sip_tcp;
        assert_eq!(t.max_connections, 4096);
        assert_eq!(t.max_connections_per_ip, 256);
        assert_eq!(t.message_timeout.as_millis(), 10_000);
    }

    #[test]
    fn keys_are_read_from_their_sections() {
        let s = parse(
            "[http]\nheader_timeout_ms = 500\nmax_connections = 10\nmax_connections_per_ip = 3\n\
             [sip]\ntcp_max_connections = 7\ntcp_max_connections_per_ip = 2\ntcp_message_timeout_ms = 900\n",
        )
        .expect("parses");
        assert_eq!(s.conns.http.header_timeout.as_millis(), 500);
        assert_eq!(s.conns.http.max_connections, 10);
        assert_eq!(s.conns.http.max_connections_per_ip, 3);
        assert_eq!(s.conns.sip_tcp.max_connections, 7);
        assert_eq!(s.conns.sip_tcp.max_connections_per_ip, 2);
        assert_eq!(s.conns.sip_tcp.message_timeout.as_millis(), 900);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("[http]\nheader_timeout_ms = 0", "http.header_timeout_ms"),
            (
                "[http]\nrequest_timeout_ms = 99999999",
                "http.request_timeout_ms",
            ),
            ("[http]\nbody_timeout_ms = 0", "http.body_timeout_ms"),
            (
                "[http]\nmax_concurrent_requests = 0",
                "http.max_concurrent_requests",
            ),
            ("[http]\nmax_connections = 0", "http.max_connections"),
            (
                "[http]\nmax_connections = 10\nmax_connections_per_ip = 11",
                "http.max_connections_per_ip",
            ),
            ("[sip]\ntcp_max_connections = 0", "sip.tcp_max_connections"),
            (
                "[sip]\ntcp_max_connections = 5\ntcp_max_connections_per_ip = 6",
                "sip.tcp_max_connections_per_ip",
            ),
            (
                "[sip]\ntcp_message_timeout_ms = 0",
                "sip.tcp_message_timeout_ms",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert_eq!(key_of(e), key, "{text}");
        }
    }

    #[test]
    fn unknown_keys_in_either_section_are_still_errors() {
        for text in ["[http]\nmax_conections = 5", "[sip]\ntcp_max_conns = 5"] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains("unknown field"), "{text}: {e}");
        }
    }

    #[test]
    fn a_wrong_type_is_an_error() {
        let e = parse("[limits]\nmax_calls = 5\n[http]\nmax_connections = \"many\"")
            .expect_err("string")
            .to_string();
        assert!(e.contains("key `http.max_connections`"), "{e}");
        assert!(e.contains("line 4"), "the key's line: {e}");
    }
}
