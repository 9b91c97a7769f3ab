//! `[cluster]`: this node's identity among several handoff nodes.
//!
//! `node_id` names the node in the sessions it owns (the shared store) and in
//! logs; it defaults to the hostname. It is checked as a SIP token (RFC 3261
//! 25.1), 1-64 characters, so it is safe in a store key, a header or a label.
//!
//! With the Redis store, `heartbeat_ms` is how often the node tells Redis it is
//! alive (and mirrors its live calls there), and `node_timeout_secs` how long a
//! node may stay silent before another node ends its calls for it
//! (`crate::cluster`).

use super::{Config, ConfigError};
use serde::Deserialize;

/// Longest `node_id` accepted.
pub const MAX_NODE_ID_LEN: usize = 64;

/// Bounds of `cluster.heartbeat_ms`.
pub const HEARTBEAT_MS: std::ops::RangeInclusive<u64> = 100..=10_000;
/// Bounds of `cluster.node_timeout_secs`.
pub const NODE_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 2..=3600;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name; `None`: the hostname.
    pub node_id: Option<String>,
    /// How often this node's heartbeat (and live-call mirror) reaches Redis.
    pub heartbeat_ms: u64,
    /// Silence after which a node counts as dead and its calls are ended by another.
    pub node_timeout_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: None,
            heartbeat_ms: 1000,
            node_timeout_secs: 15,
        }
    }
}

/// The checked `[cluster]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub node_id: String,
    pub heartbeat: std::time::Duration,
    pub node_timeout: std::time::Duration,
}

/// The liveness timings, checked: each within its bounds, and a node given at
/// least three heartbeats before it is declared dead.
pub fn check_timing(
    heartbeat_ms: u64,
    node_timeout_secs: u64,
) -> Result<(), (&'static str, String)> {
    if !HEARTBEAT_MS.contains(&heartbeat_ms) {
        return Err((
            "cluster.heartbeat_ms",
            format!(
                "is {heartbeat_ms}; must be between {} and {}",
                HEARTBEAT_MS.start(),
                HEARTBEAT_MS.end()
            ),
        ));
    }
    if !NODE_TIMEOUT_SECS.contains(&node_timeout_secs) {
        return Err((
            "cluster.node_timeout_secs",
            format!(
                "is {node_timeout_secs}; must be between {} and {}",
                NODE_TIMEOUT_SECS.start(),
                NODE_TIMEOUT_SECS.end()
            ),
        ));
    }
    if node_timeout_secs * 1000 < 3 * heartbeat_ms {
        return Err((
            "cluster.node_timeout_secs",
            format!(
                "is {node_timeout_secs} s, under three heartbeats (cluster.heartbeat_ms = {heartbeat_ms}): a live node would be taken for dead"
            ),
        ));
    }
    Ok(())
}

/// Why a node id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    #[error("is empty")]
    Empty,
    #[error("is {0} characters long; at most {MAX_NODE_ID_LEN}")]
    TooLong(usize),
    #[error("{0:?} has a character outside a SIP token (letters, digits, -.!%*_+`'~)")]
    NotToken(String),
}

/// RFC 3261 25.1: `token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")`.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

/// A node id as given, checked: 1-64 token characters.
pub fn check_node_id(id: &str) -> Result<(), NodeIdError> {
    if id.is_empty() {
        return Err(NodeIdError::Empty);
    }
    let n = id.chars().count();
    if n > MAX_NODE_ID_LEN {
        return Err(NodeIdError::TooLong(n));
    }
    if !id.chars().all(is_token_char) {
        // Only the printable part in the message: the value may be hostile.
        let shown: String = id.chars().filter(|c| !c.is_control()).take(80).collect();
        return Err(NodeIdError::NotToken(shown));
    }
    Ok(())
}

/// The machine's hostname (Linux: the kernel's), if it can be read.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// The node id to use: the configured one, else `default` (the hostname).
pub fn resolve_node_id(
    configured: Option<&str>,
    default: Option<String>,
) -> Result<String, String> {
    match configured {
        Some(id) => check_node_id(id)
            .map(|()| id.to_owned())
            .map_err(|e| e.to_string()),
        None => {
            let h = default
                .ok_or_else(|| "not set and the hostname cannot be read; set it".to_owned())?;
            check_node_id(&h)
                .map(|()| h)
                .map_err(|e| format!("not set, and the hostname {e}; set it"))
        }
    }
}

impl Config {
    pub(super) fn validate_cluster(
        &self,
        bad: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<ClusterSettings, ConfigError> {
        let c = &self.cluster;
        let node_id = resolve_node_id(c.node_id.as_deref(), hostname())
            .map_err(|p| bad("cluster.node_id", p))?;
        check_timing(c.heartbeat_ms, c.node_timeout_secs).map_err(|(k, p)| bad(k, p))?;
        Ok(ClusterSettings {
            node_id,
            heartbeat: std::time::Duration::from_millis(c.heartbeat_ms),
            node_timeout: std::time::Duration::from_secs(c.node_timeout_secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_accepts_hostnames_and_tokens() {
        for id in ["a", "node-1", "handoff-2.eu-west.example", "n_1+x~'`!%*"] {
            assert_eq!(check_node_id(id), Ok(()), "{id}");
        }
        assert_eq!(check_node_id(&"a".repeat(64)), Ok(()));
    }

    #[test]
    fn node_id_refuses_empty_long_and_non_token() {
        assert_eq!(check_node_id(""), Err(NodeIdError::Empty));
        assert_eq!(
            check_node_id(&"a".repeat(65)),
            Err(NodeIdError::TooLong(65))
        );
        for id in ["a b", "a:b", "a/b", "a\r\nX-Evil: 1", "nœud", "a\"b", "{a}"] {
            assert!(
                matches!(check_node_id(id), Err(NodeIdError::NotToken(_))),
                "{id:?}"
            );
        }
    }

    #[test]
    fn node_id_error_never_echoes_control_characters() {
        let e = check_node_id("a\r\nb").unwrap_err().to_string();
        assert!(!e.contains('\r') && !e.contains('\n'), "{e}");
    }

    #[test]
    fn node_id_defaults_to_the_hostname() {
        assert_eq!(
            resolve_node_id(None, Some("box-7".into())),
            Ok("box-7".into())
        );
        assert_eq!(
            resolve_node_id(Some("n1"), Some("box-7".into())),
            Ok("n1".into())
        );
        assert!(resolve_node_id(None, None).unwrap_err().contains("set it"));
        assert!(resolve_node_id(None, Some("bad host".into()))
            .unwrap_err()
            .contains("hostname"));
    }

    const ROUTE: &str = "[[route]]\ndefault = true\norg_id = \"o\"\nagent_id = \"a\"\nai_agent_uri = \"sip:ai@127.0.0.1:5080\"\n";

    #[test]
    fn node_id_in_config_names_the_key() {
        let e =
            crate::config::Config::parse(&format!("[cluster]\nnode_id = \"a b\"\n{ROUTE}"), "t")
                .map(|_| ())
                .unwrap_err()
                .to_string();
        assert!(e.contains("cluster.node_id"), "{e}");
        let s =
            crate::config::Config::parse(&format!("[cluster]\nnode_id = \"n-1\"\n{ROUTE}"), "t")
                .expect("valid");
        assert_eq!(s.node_id, "n-1");
        assert_eq!(s.cluster.heartbeat, std::time::Duration::from_secs(1));
        assert_eq!(s.cluster.node_timeout, std::time::Duration::from_secs(15));
    }

    #[test]
    fn timings_are_bounded_and_leave_three_heartbeats() {
        assert_eq!(check_timing(1000, 15), Ok(()));
        assert_eq!(check_timing(100, 2), Ok(()));
        assert_eq!(check_timing(99, 15).unwrap_err().0, "cluster.heartbeat_ms");
        assert_eq!(
            check_timing(10_001, 3600).unwrap_err().0,
            "cluster.heartbeat_ms"
        );
        assert_eq!(
            check_timing(1000, 1).unwrap_err().0,
            "cluster.node_timeout_secs"
        );
        assert_eq!(
            check_timing(1000, 3601).unwrap_err().0,
            "cluster.node_timeout_secs"
        );
        let (k, why) = check_timing(1000, 2).unwrap_err();
        assert_eq!(k, "cluster.node_timeout_secs");
        assert!(why.contains("three heartbeats"), "{why}");
        let e = crate::config::Config::parse(
            &format!("[cluster]\nheartbeat_ms = 5000\nnode_timeout_secs = 10\n{ROUTE}"),
            "t",
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(e.contains("cluster.node_timeout_secs"), "{e}");
    }
}
