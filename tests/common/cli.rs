//! The `handoff` binary as an operator runs it: a config file in a temp directory
//! of its own, `check-config` on it, a running process killed by PID when a test
//! ends early.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

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

/// `handoff run --config <config>`, its stderr to the file `stderr`; returns it
/// (killed by PID when dropped) with its UDP and HTTP addresses, once it listens.
pub async fn spawn_run(config: PathBuf, stderr: PathBuf) -> (Running, SocketAddr, SocketAddr) {
    tokio::task::spawn_blocking(move || {
        let err = std::fs::File::create(&stderr).expect("stderr file");
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("start handoff");
        let out = child.stdout.take().expect("stdout");
        let running = Running(child);
        let (mut udp, mut http) = (None, None);
        for line in BufReader::new(out).lines() {
            let line = line.expect("utf-8");
            if let Some(a) = line.strip_prefix("listening udp ") {
                udp = a.parse().ok();
            }
            if let Some(a) = line.strip_prefix("listening http ") {
                http = a.parse().ok();
                break;
            }
        }
        let (Some(udp), Some(http)) = (udp, http) else {
            panic!(
                "handoff did not start: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        };
        (running, udp, http)
    })
    .await
    .expect("spawn")
}

/// A metric of a running handoff read from its `/metrics` (an unlabelled sample).
pub async fn metric(http: std::net::SocketAddr, name: &str) -> Option<i64> {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
}

/// Waits (at most 10 s) for a metric of a running handoff to read `want`.
pub async fn wait_metric(http: std::net::SocketAddr, name: &str, want: i64) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = metric(http, name).await;
        if got == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "{name} is {got:?}, not {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `handoff check-config` and `handoff run` both refuse `text` with exit 2 and a
/// single stderr line containing `needle`.
pub fn assert_refused(tag: &str, text: &str, needle: &str) {
    let path = temp_config(tag, text);
    for args in [
        vec!["check-config", path.to_str().expect("utf-8 path")],
        vec!["run", "--config", path.to_str().expect("utf-8 path")],
    ] {
        let out = Command::new(BIN).args(&args).output().expect("run handoff");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {stderr:?} should name {needle:?}"
        );
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
