//! The `handoff` binary as an operator runs it: a config file in a temp directory
//! of its own, `check-config` on it, a running process killed by PID when a test
//! ends early.

use std::path::PathBuf;
use std::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_handoff");

/// The one route most start-up tests need (an AI agent nobody calls).
pub const ROUTE: &str = "[[route]]\ndefault = true\norg_id = \"o\"\nagent_id = \"a\"\nai_agent_uri = \"sip:ai@127.0.0.1:5080\"\n";

/// `text` written as `config.toml` in a temp directory named after `tag` and this
/// process.
pub fn temp_config(tag: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("handoff-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// `handoff check-config` on `text`: its exit code and stderr.
pub fn check_config(tag: &str, text: &str) -> (Option<i32>, String) {
    let path = temp_config(tag, text);
    let out = Command::new(BIN)
        .args(["check-config", path.to_str().expect("utf-8 path")])
        .output()
        .expect("run handoff check-config");
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running handoff, killed by PID when dropped (a test that ends early).
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
