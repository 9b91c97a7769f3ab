//! The files in `deploy/` cannot drift from handoff: the Prometheus rules pass
//! `promtool check rules` and their unit tests, every metric the rules and the
//! Grafana dashboard name is one a running handoff exports on `/metrics`, the
//! Kamailio configuration passes `kamailio -c`, and the systemd unit keeps its
//! hardening.
//!
//! Needs `promtool` (Debian package `prometheus`) and `kamailio`:
//! `scripts/install-test-deps.sh` installs both. Missing, the tests fail.

mod common;

use common::{bounded, start_handoff, Transport};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

fn deploy(rel: &str) -> PathBuf {
    Path::new(DEPLOY).join(rel)
}

fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found: run scripts/install-test-deps.sh (Debian package {package})")
        })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// Every `handoff_*` name in `text` (a PromQL expression, a rules file).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("handoff_") {
        let start = i + at;
        let before_ok = start == 0 || {
            let b = bytes[start - 1];
            !(b.is_ascii_alphanumeric() || b == b'_')
        };
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |n| start + n);
        if before_ok {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// The metric names a `/metrics` text declares (`# TYPE`), with a histogram's
/// `_bucket`, `_sum` and `_count` series.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.insert(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// What a running handoff exports on `/metrics`.
async fn running_metrics() -> BTreeSet<String> {
    let server = start_handoff(Transport::Udp, 5080, "").await;
    let text = reqwest::get(format!("http://{}/metrics", server.http_addr()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    exported_names(&text)
}

fn assert_all_exported(what: &str, used: &BTreeSet<String>, exported: &BTreeSet<String>) {
    assert!(!used.is_empty(), "{what} names no handoff metric");
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "{what} names metrics handoff does not export: {missing:?}"
    );
}

#[test]
fn metric_names_are_found_whole() {
    let got = metric_names("rate(handoff_a_total[5m]) / x_handoff_b + handoff_c{l=\"handoff_d\"}");
    let want: BTreeSet<String> = ["handoff_a_total", "handoff_c", "handoff_d"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn prometheus_rules_pass_promtool_check_and_unit_tests() {
    let promtool = tool("promtool", "prometheus");
    let out = run(Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(deploy("prometheus/handoff-alerts.yml")));
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run(Command::new(&promtool)
        .arg("test")
        .arg("rules")
        .arg(deploy("prometheus/handoff-alerts.test.yml")));
    assert!(out.contains("SUCCESS"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_and_dashboard_name_only_exported_metrics() {
    bounded(Duration::from_secs(20), async {
        let exported = running_metrics().await;
        assert!(exported.contains("handoff_draining"), "{exported:?}");

        let rules =
            std::fs::read_to_string(deploy("prometheus/handoff-alerts.yml")).expect("read rules");
        assert_all_exported("handoff-alerts.yml", &metric_names(&rules), &exported);

        let text = std::fs::read_to_string(deploy("grafana/handoff-dashboard.json"))
            .expect("read dashboard");
        let dash: serde_json::Value =
            serde_json::from_str(&text).expect("the dashboard is valid JSON");
        let panels = dash["panels"].as_array().expect("panels");
        let mut exprs = Vec::new();
        for p in panels.iter().filter(|p| p["type"] != "row") {
            let targets = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("panel {} has no targets", p["title"]));
            assert!(!targets.is_empty(), "panel {} has no targets", p["title"]);
            for t in targets {
                let e = t["expr"].as_str().expect("a target has an expr");
                assert!(!e.trim().is_empty(), "empty expr in {}", p["title"]);
                exprs.push(e.to_owned());
            }
        }
        let used = metric_names(&exprs.join("\n"));
        assert_all_exported("handoff-dashboard.json", &used, &exported);
        // What the issue asks the dashboard to show.
        for m in [
            "handoff_calls_started_total",
            "handoff_calls_failed_total",
            "handoff_sip_responses_total",
            "handoff_transfers_failed_total",
            "handoff_webhook_requests_total",
            "handoff_rtp_packets_lost_total",
            "handoff_session_store_up",
        ] {
            assert!(used.contains(m), "the dashboard does not show {m}");
        }
    })
    .await;
}

#[test]
fn kamailio_config_passes_its_own_check() {
    let kamailio = tool("kamailio", "kamailio");
    let dir = std::env::temp_dir().join(format!("handoff-kamcheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let list = dir.join("dispatcher.list");
    std::fs::write(
        &list,
        "1 sip:127.0.0.1:5070 0 0\n1 sip:127.0.0.2:5070 0 0\n",
    )
    .expect("list");
    let out = run(Command::new(kamailio)
        .arg("-c")
        .arg("-f")
        .arg(deploy("kamailio/kamailio.cfg"))
        .arg("-A")
        .arg(format!("DS_LIST=\"{}\"", list.display())));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.contains("config file ok"), "{out}");
}

/// `Key=value` lines of the `[Service]` section.
fn service_keys(unit: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut keys = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                keys.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    keys
}

#[test]
fn systemd_unit_keeps_its_hardening_and_outlasts_the_drain() {
    let unit = std::fs::read_to_string(deploy("systemd/handoff.service")).expect("read the unit");
    let keys = service_keys(&unit);
    let get = |k: &str| {
        keys.iter()
            .rev()
            .find(|(have, _)| have == k)
            .map(|(_, v)| v.as_str())
    };
    for (k, v) in [
        ("User", "handoff"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("StateDirectory", "handoff"),
        ("KillSignal", "SIGTERM"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(get(k), Some(v), "[Service] {k}");
    }
    assert!(get("LimitNOFILE").is_some(), "LimitNOFILE is set");
    // Empty, or only what binding 5060 as non-root needs.
    let caps = get("CapabilityBoundingSet").expect("CapabilityBoundingSet is set");
    assert!(
        caps.is_empty() || caps == "CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet={caps}"
    );
    // systemd's stop timeout must outlast limits.drain_timeout_secs (default 30)
    // plus the BYEs and the outbox flush after it, or SIGKILL cuts the drain.
    let stop: u64 = get("TimeoutStopSec")
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec in seconds");
    let drain = handoff::config::Config::parse(
        "[[route]]\ndefault = true\norg_id = \"o\"\nagent_id = \"a\"\nai_agent_uri = \"sip:ai@127.0.0.1:5080\"\n",
        "t",
    )
    .expect("minimal config")
    .drain_timeout
    .as_secs();
    assert!(
        stop >= drain + 15,
        "TimeoutStopSec={stop} leaves no room after drain_timeout_secs={drain}"
    );
}
