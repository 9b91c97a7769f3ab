//! `[cluster]`: this node's identity among several handoff nodes sharing one
//! session store. `node_id` is recorded on every session this node creates.

use super::ConfigError;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name; default: the host name.
    pub node_id: Option<String>,
}

/// Longest node id accepted.
pub const NODE_ID_MAX_LEN: usize = 64;

/// A node id is a token: 1..=64 characters of `[A-Za-z0-9-_.]` (it lands in Redis
/// records, logs and metrics labels).
pub fn is_node_id(s: &str) -> bool {
    (1..=NODE_ID_MAX_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The configured id, else the host name when it is a valid token, else `"handoff"`.
pub fn validate(
    c: &ClusterConfig,
    bad: &dyn Fn(&str, String) -> ConfigError,
) -> Result<String, ConfigError> {
    match &c.node_id {
        Some(id) if is_node_id(id) => Ok(id.clone()),
        Some(id) => Err(bad(
            "cluster.node_id",
            format!(
                "{id:?} is not a node id: 1 to {NODE_ID_MAX_LEN} characters of A-Z a-z 0-9 - _ ."
            ),
        )),
        None => Ok(default_node_id(
            &gethostname::gethostname().to_string_lossy(),
        )),
    }
}

/// The host name when it is a usable node id.
fn default_node_id(host: &str) -> String {
    if is_node_id(host) {
        host.to_owned()
    } else {
        "handoff".to_owned()
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

    #[test]
    fn node_id_is_a_token() {
        for good in ["node-1", "a", "h.example.com", &"x".repeat(64)] {
            let c = ClusterConfig {
                node_id: Some(good.into()),
            };
            assert_eq!(validate(&c, &bad).unwrap(), good);
        }
        for hostile in ["", "a b", "n\r\nX: 1", "a:b", "ü", &"x".repeat(65), "a{b}"] {
            let c = ClusterConfig {
                node_id: Some(hostile.into()),
            };
            let e = validate(&c, &bad).unwrap_err().to_string();
            assert!(e.contains("cluster.node_id"), "{e}");
        }
    }

    #[test]
    fn default_is_the_host_name_or_a_fixed_name() {
        assert_eq!(default_node_id("box-7"), "box-7");
        assert_eq!(default_node_id("bad host"), "handoff");
        assert!(is_node_id(
            &validate(&ClusterConfig::default(), &bad).unwrap()
        ));
    }
}
