//! `[media]`: the relay's address, port range, timeouts and latching.

use super::{Config, ConfigError};
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// `relay` (anchor RTP on handoff's ports) or `passthrough` (signalling only).
    pub mode: String,
    /// Address the relay binds its RTP/RTCP sockets on.
    pub ip: String,
    /// Address written in SDP instead of `ip` (handoff behind NAT).
    pub public_ip: Option<String>,
    pub port_min: u16,
    pub port_max: u16,
    pub timeout_secs: u64,
    pub hold_timeout_secs: u64,
    pub latching: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            mode: "relay".into(),
            ip: "127.0.0.1".into(),
            public_ip: None,
            // 40,000 ports: 20,000 pairs, two a call, for limits.max_calls = 10000.
            port_min: 20000,
            port_max: 59999,
            timeout_secs: 60,
            hold_timeout_secs: 3600,
            latching: true,
        }
    }
}

/// `[media]` validated. `None` in `Settings` means passthrough.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaSettings {
    pub ip: IpAddr,
    /// What SDP advertises: `public_ip`, else `ip`.
    pub sdp_ip: IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    pub timeout: Duration,
    pub hold_timeout: Duration,
    pub latching: bool,
}

impl Config {
    pub(super) fn validate_media(
        &self,
        bad: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Option<MediaSettings>, ConfigError> {
        let m = &self.media;
        match m.mode.as_str() {
            "relay" => {}
            "passthrough" => return Ok(None),
            other => {
                return Err(bad(
                    "media.mode",
                    format!("`{other}` is not one of \"relay\", \"passthrough\""),
                ))
            }
        }
        let ip = |key: &str, v: &str| {
            v.parse::<IpAddr>()
                .map_err(|_| bad(key, format!("`{v}` is not an IP address")))
        };
        let bind = ip("media.ip", &m.ip)?;
        let sdp_ip = match &m.public_ip {
            Some(p) => {
                let p = ip("media.public_ip", p)?;
                if p.is_unspecified() {
                    return Err(bad("media.public_ip", "must be a routable address".into()));
                }
                p
            }
            None if bind.is_unspecified() => {
                return Err(bad(
                    "media.public_ip",
                    format!("required when media.ip is the wildcard {bind}: SDP needs an address peers can reach"),
                ))
            }
            None => bind,
        };
        if m.port_min == 0 || u32::from(m.port_min) + 3 > u32::from(m.port_max) {
            return Err(bad(
                "media.port_min",
                format!(
                    "the range {}..={} must be non-zero and hold at least two RTP/RTCP pairs",
                    m.port_min, m.port_max
                ),
            ));
        }
        let holds = calls_held(m.port_min, m.port_max);
        if holds < self.limits.max_calls {
            return Err(bad(
                "media.port_min",
                format!(
                    "the range media.port_min..media.port_max = {}..={} holds {} RTP/RTCP pairs, \
                     enough for {holds} calls (two pairs a call), fewer than limits.max_calls = {}: \
                     widen the range to at least {} ports or lower limits.max_calls to {holds}",
                    m.port_min,
                    m.port_max,
                    pairs_in(m.port_min, m.port_max),
                    self.limits.max_calls,
                    self.limits.max_calls.saturating_mul(4),
                ),
            ));
        }
        Ok(Some(MediaSettings {
            ip: bind,
            sdp_ip,
            port_min: m.port_min,
            port_max: m.port_max,
            timeout: Duration::from_secs(m.timeout_secs),
            hold_timeout: Duration::from_secs(m.hold_timeout_secs),
            latching: m.latching,
        }))
    }
}

/// The even/odd RTP/RTCP pairs in `port_min..=port_max` (the pool's count).
pub(super) fn pairs_in(port_min: u16, port_max: u16) -> usize {
    let first = u32::from(port_min) + u32::from(port_min) % 2;
    let max = u32::from(port_max);
    if port_min == 0 || first + 1 > max {
        return 0;
    }
    ((max - first - 1) / 2 + 1) as usize
}

/// How many calls a port range holds: two pairs a call (caller and AI
/// agent). A transfer takes a third pair for a moment; the spare pairs the
/// pool keeps bound come out of the free ones, not out of this count.
pub(super) fn calls_held(port_min: u16, port_max: u16) -> usize {
    pairs_in(port_min, port_max) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_holds_two_pairs_a_call() {
        assert_eq!(pairs_in(30000, 39999), 5000);
        assert_eq!(calls_held(30000, 39999), 2500);
        assert_eq!(calls_held(20000, 59999), 10000);
        // Odd start: 30001 is skipped, 30002/3 is the first pair.
        assert_eq!(pairs_in(30001, 30004), 1);
        assert_eq!(calls_held(30000, 30003), 1);
        assert_eq!(calls_held(30000, 30002), 0);
        assert_eq!(pairs_in(0, 100), 0);
        assert_eq!(pairs_in(65534, 65535), 1);
        assert_eq!(pairs_in(100, 50), 0);
    }

    const ROUTE: &str = "[[route]]\ndefault = true\norg_id = \"o\"\nagent_id = \"a\"\nai_agent_uri = \"sip:ai@127.0.0.1:5080\"\n";

    fn parse(head: &str) -> Result<crate::config::Settings, ConfigError> {
        Config::parse(&format!("{head}\n{ROUTE}"), "config.toml")
    }

    #[test]
    fn the_defaults_hold_max_calls() {
        let s = parse("").expect("defaults are consistent");
        let m = s.media.expect("relay mode");
        assert!(calls_held(m.port_min, m.port_max) >= s.max_calls);
    }

    #[test]
    fn a_range_smaller_than_max_calls_needs_is_refused_naming_the_keys() {
        // The range shipped before issue 12: 2,500 calls against 10,000.
        let e = parse("[limits]\nmax_calls = 10000\n[media]\nport_min = 30000\nport_max = 39999")
            .expect_err("refused")
            .to_string();
        for part in [
            "media.port_min",
            "media.port_max",
            "limits.max_calls = 10000",
            "enough for 2500 calls",
            "40000 ports",
        ] {
            assert!(e.contains(part), "{part:?} in {e}");
        }
        assert!(!e.contains('\n'), "one line: {e}");
        parse("[limits]\nmax_calls = 2500\n[media]\nport_min = 30000\nport_max = 39999")
            .expect("exactly enough");
        // Signalling only: no ports, nothing to check.
        parse("[limits]\nmax_calls = 10000\n[media]\nmode = \"passthrough\"\nport_min = 30000\nport_max = 30003")
            .expect("passthrough");
    }
}
