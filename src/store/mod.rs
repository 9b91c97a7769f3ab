//! The embedded store: one SQLite file (`[store] path`) that outlives calls and
//! restarts. It holds the contact store (Zendesk users resolved to handoff's own
//! contact ids), the lifecycle-event outbox and the calls live now (`live_calls`),
//! each in tables of its own.
//!
//! Each subsystem opens its own connection with [`Store::connect`] and owns its
//! tables; SQLite's WAL mode lets them write without blocking each other's
//! readers, and `synchronous = FULL` makes a committed transaction survive a
//! crash or power loss. SQLite calls block: callers run them off the async
//! workers (a dedicated thread or `spawn_blocking`).
//!
//! Without a path the store is in memory: nothing survives a restart, and
//! start-up says so in a warning.

pub mod contacts;
pub mod file_mode;
pub mod live_calls;
pub mod outbox;

use rusqlite::Connection;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a connection waits for another one's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `[store]` as written in `config.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The SQLite file; created when missing. None: in memory.
    pub path: Option<String>,
}

impl StoreConfig {
    /// Checks what can be checked without touching the disk.
    pub fn compile(&self) -> Result<Option<PathBuf>, (String, String)> {
        match &self.path {
            None => Ok(None),
            Some(p) if p.trim().is_empty() => Err((
                "store.path".into(),
                "must be a file path (leave the key out to keep the store in memory)".into(),
            )),
            Some(p) if p.bytes().any(|b| b.is_ascii_control()) => Err((
                "store.path".into(),
                "must not contain control characters".into(),
            )),
            Some(p) => Ok(Some(PathBuf::from(p))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store {path}: cannot make it readable by handoff's user only (0600): {source}")]
    Permissions {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where the store lives; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    path: Option<PathBuf>,
}

impl Store {
    /// Opens (creating when missing) the store and its tables, so that a bad path or
    /// a corrupt file stops start-up with a message naming the file. The file is
    /// created 0600; one found readable by others is tightened, with a warning.
    pub fn open(path: Option<&Path>) -> Result<Store, StoreError> {
        if let Some(p) = path {
            let tightened =
                file_mode::secure_store_files(p).map_err(|source| StoreError::Permissions {
                    path: p.display().to_string(),
                    source,
                })?;
            for t in tightened {
                tracing::warn!(
                    file = %t.path.display(),
                    was = format!("{:o}", t.was),
                    "store file was readable by other users; its mode is now 0600"
                );
            }
        }
        let store = Store {
            path: path.map(Path::to_path_buf),
        };
        store.connect()?;
        Ok(store)
    }

    /// An in-memory store, for tests and for running without `[store] path`.
    pub fn in_memory() -> Store {
        Store { path: None }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn is_durable(&self) -> bool {
        self.path.is_some()
    }

    /// A new connection with the schema in place. In memory, each connection is its
    /// own database: subsystems keep to their own tables, so that is all they need.
    pub fn connect(&self) -> Result<Connection, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: self.describe(),
            source,
        };
        let conn = match &self.path {
            Some(p) => Connection::open(p),
            None => Connection::open_in_memory(),
        }
        .map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        if self.path.is_some() {
            // WAL: readers never wait for the writer; FULL: a commit is on disk
            // before it returns, so an acknowledged write survives a crash.
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(err)?;
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(&format!(
            "BEGIN;\n{}\n{}\n{}\nCOMMIT;",
            contacts::SCHEMA,
            outbox::SCHEMA,
            live_calls::SCHEMA
        ))
        .map_err(err)?;
        Ok(conn)
    }

    /// The path for messages, or `:memory:`.
    pub fn describe(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => ":memory:".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_a_new_file_and_reopens_it() {
        let dir = std::env::temp_dir().join(format!("handoff-store-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.db");
        let store = Store::open(Some(&path)).unwrap();
        assert!(store.is_durable());
        store.connect().unwrap();
        assert!(path.exists());
        Store::open(Some(&path)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_path_in_a_missing_directory_names_the_file() {
        let path = Path::new("/nonexistent-handoff-dir/x/h.db");
        let e = Store::open(Some(path)).unwrap_err().to_string();
        assert!(e.contains("/nonexistent-handoff-dir/x/h.db"), "{e}");
    }

    #[test]
    fn config_rejects_blank_and_control_characters() {
        let c = |p: &str| {
            StoreConfig {
                path: Some(p.into()),
            }
            .compile()
        };
        assert_eq!(c(" ").unwrap_err().0, "store.path");
        assert_eq!(c("a\nb").unwrap_err().0, "store.path");
        assert_eq!(c("handoff.db").unwrap(), Some(PathBuf::from("handoff.db")));
        assert_eq!(StoreConfig::default().compile().unwrap(), None);
    }
}
