//! Issue 15: `[trunk.register]`, handoff registering with a carrier's registrar,
//! through the real binary with SIPp as the registrar (`sipp-scenarios/registrar_uas.xml`,
//! `registrar_503_uas.xml`): digest answered, refreshed (a short `expires_secs`: the
//! registrar grants 10 s, refreshed after 5), one Call-ID and a rising CSeq, back-off
//! after a 503 and recovery, `handoff_trunk_registered` 1 then 0 once the registrar
//! is gone and the registration has expired, and the unregister (`Expires: 0`) on
//! SIGTERM. Needs `sipp` on PATH (Debian package `sip-tester`).

#[path = "common/sipp.rs"]
mod sipp;

use sipp::{base_config, path_str, require_sipp, scenarios_dir, spawn_bound, Handoff, Sipp};
use sipp::{TestDir, Transport};
use std::fs;
use std::time::Duration;

/// What the registrar scenarios' `<verifyauth>` checks.
const USER: &str = "handoff-reg";
const PASSWORD: &str = "registrar-pass-1";
/// What the registrar grants and handoff asks for (the lowest it takes).
const EXPIRES: u32 = 10;

fn registrar(dir: &TestDir, scenario: &str) -> (Sipp, u16) {
    let port = sipp::free_port();
    let sipp = spawn_bound(
        "registrar UAS",
        dir,
        "registrar",
        &[
            "-sf",
            path_str(&scenarios_dir().join(scenario)),
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            Transport::Udp.sipp_mode(),
            "-m",
            "1",
            "-set",
            "expires",
            &EXPIRES.to_string(),
            "-timeout",
            "60s",
        ],
        port,
        Transport::Udp,
    );
    (sipp, port)
}

fn handoff(dir: &TestDir, registrar_port: u16) -> Handoff {
    let config = format!(
        r#"{}
[[trunk]]
name = "carrier"
sources = ["127.0.0.1"]
[trunk.register]
registrar = "sip:127.0.0.1:{registrar_port}"
aor = "sip:+14155550100@carrier.example.com"
username = "{USER}"
password = "{PASSWORD}"
expires_secs = {EXPIRES}

[[route]]
prefix = ""
org_id = "org-test"
agent_id = "agent-test"
ai_agent_uri = "sip:ai@127.0.0.1:9"
"#,
        base_config("info"),
    );
    Handoff::start(&config, dir)
}

fn metric(name: &str) -> String {
    format!("{name}{{trunk=\"carrier\"}}")
}

fn ok_total() -> String {
    "trunk_registrations_total{trunk=\"carrier\",result=\"ok\"}".into()
}

/// The REGISTERs the registrar received, in order: (Call-ID, CSeq number, Expires).
fn registers_received(dir: &TestDir) -> Vec<(String, u32, String)> {
    let log = fs::read_to_string(dir.file("registrar_messages.log")).unwrap_or_default();
    log.split("message received")
        .filter(|chunk| chunk.contains("REGISTER sip:"))
        .map(|chunk| {
            let header = |name: &str| {
                chunk
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default()
            };
            let cseq = header("CSeq:")
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            (header("Call-ID:"), cseq, header("Expires:"))
        })
        .collect()
}

#[test]
fn registers_with_digest_refreshes_and_unregisters_on_sigterm() {
    require_sipp();
    let dir = TestDir::new();
    let (mut reg, port) = registrar(&dir, "registrar_uas.xml");
    let mut handoff = handoff(&dir, port);
    // The first registration and one refresh (after half of the 10 s granted).
    let m = handoff
        .metrics_when(Duration::from_secs(15), |m| {
            m.get(&ok_total()).unwrap_or(0.0) >= 2.0
        })
        .expect("metrics");
    if m.get(&ok_total()).unwrap_or(0.0) < 2.0 {
        panic!(
            "no refresh within 15 s: {}\n{}\nfiles kept in {}",
            m.nonzero(),
            handoff.report(),
            dir.keep().display()
        );
    }
    assert_eq!(m.value(&metric("trunk_registered")), 1.0);
    assert_eq!(
        m.value(&metric("trunk_registration_expires_seconds")),
        f64::from(EXPIRES)
    );
    assert!(m.value("trunk_registrations_total{trunk=\"carrier\",result=\"challenged\"}") >= 2.0);

    // SIGTERM: the drain unregisters, and the registrar's run ends with it.
    let status = handoff.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{}", handoff.report());
    let reg_status = reg.wait(Duration::from_secs(5));
    let stats = reg.final_stats();
    if !Sipp::all_succeeded(reg_status, &stats, "IncomingCall(C)", 1) {
        panic!(
            "the registrar did not see the flow through to the unregister\n{}\n{}\nfiles kept in {}",
            reg.report(reg_status, &stats),
            handoff.report(),
            dir.keep().display()
        );
    }
    let registers = registers_received(&dir);
    assert!(registers.len() >= 6, "{registers:?}");
    let call_id = &registers[0].0;
    assert!(!call_id.is_empty());
    assert!(
        registers.iter().all(|(c, _, _)| c == call_id),
        "one Call-ID: {registers:?}"
    );
    assert!(
        registers.windows(2).all(|w| w[1].1 == w[0].1 + 1),
        "CSeq rises by one: {registers:?}"
    );
    assert_eq!(registers.last().map(|r| r.2.as_str()), Some("0"));
    assert!(
        !handoff.log_text().contains(PASSWORD),
        "the password is never logged"
    );
}

#[test]
fn backs_off_after_503_recovers_and_goes_down_when_the_registrar_is_gone() {
    require_sipp();
    let dir = TestDir::new();
    let (mut reg, port) = registrar(&dir, "registrar_503_uas.xml");
    let mut handoff = handoff(&dir, port);
    let up = |m: &sipp::Metrics| m.get(&metric("trunk_registered")) == Some(1.0);
    let m = handoff
        .metrics_when(Duration::from_secs(10), up)
        .expect("metrics");
    if !up(&m) {
        panic!(
            "not registered after the 503: {}\n{}\nfiles kept in {}",
            m.nonzero(),
            handoff.report(),
            dir.keep().display()
        );
    }
    assert!(
        m.value("trunk_registrations_total{trunk=\"carrier\",result=\"failed\"}") >= 1.0,
        "{}",
        m.nonzero()
    );
    // The registrar dies: refreshes go unanswered, the registration runs out.
    let _ = reg.wait(Duration::ZERO);
    let down = |m: &sipp::Metrics| m.get(&metric("trunk_registered")) == Some(0.0);
    let m = handoff
        .metrics_when(Duration::from_secs(u64::from(EXPIRES) + 5), down)
        .expect("metrics");
    assert!(
        down(&m),
        "still registered: {}\n{}",
        m.nonzero(),
        handoff.report()
    );
    assert_eq!(m.value(&metric("trunk_registration_expires_seconds")), 0.0);
}
