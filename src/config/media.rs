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
            port_min: 30000,
            port_max: 39999,
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
