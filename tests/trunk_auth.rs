//! Issue 15: `[trunk.auth]`, handoff digest-authenticating a trunk's INVITEs, through
//! the real binary with SIPp as the trunk (`-au`/`-ap` answering the 407):
//!
//! - the right password: 407, then the retried INVITE becomes a call to the AI agent
//!   (`sipp-scenarios/trunk_auth_uac.xml`, the AI agent `ai_agent_uas.xml`);
//! - a wrong password: 407, then 403 and nothing dialled
//!   (`trunk_auth_wrong_uac.xml`), counted in `handoff_trunk_auth_failures_total`.
//!
//! SIPp 3.6.1 answers MD5 only, and only the first challenge of a 407 (offered
//! SHA-256 then MD5 it gives up: "authentication must use MD5"), so the trunk is
//! configured `algorithm = "md5"`. SHA-256 is checked against handoff's own digest
//! client in the unit tests (`src/sip/auth/server_tests.rs`). Needs `sipp` on PATH
//! (Debian package `sip-tester`).

#[path = "common/sipp.rs"]
mod sipp;

use sipp::{
    base_config, path_str, require_sipp, scenarios_dir, spawn_bound, Handoff, Sipp, TestDir,
    Transport, CALLED,
};
use std::time::Duration;

const USER: &str = "agent-trunk";
const PASSWORD: &str = "correct-horse-battery";
const CALLS: u32 = 3;

fn config(ai_port: u16) -> String {
    format!(
        r#"{}
[[trunk]]
name = "agent"
sources = ["127.0.0.1"]
[trunk.auth]
realm = "handoff-test"
username = "{USER}"
password = "{PASSWORD}"
algorithm = "md5"

[[route]]
prefix = ""
org_id = "org-test"
agent_id = "agent-test"
ai_agent_uri = "sip:ai@127.0.0.1:{ai_port}"
"#,
        base_config("info"),
    )
}

/// The trunk's UAC: `calls` calls with `scenario` and `password`, to its end.
fn run_uac(dir: &TestDir, handoff: &Handoff, scenario: &str, password: &str) -> Sipp {
    let target = handoff.sip_addr(Transport::Udp);
    Sipp::spawn(
        "trunk UAC",
        dir,
        "uac",
        &[
            &target.to_string(),
            "-sf",
            path_str(&scenarios_dir().join(scenario)),
            "-i",
            "127.0.0.1",
            "-p",
            &sipp::free_port().to_string(),
            "-t",
            Transport::Udp.sipp_mode(),
            "-s",
            CALLED,
            // SIPp's digest `uri` is `sip:host:port` unless told; handoff checks it
            // against the Request-URI (RFC 7616 3.4.6).
            "-auth_uri",
            &format!("{CALLED}@{target}"),
            "-au",
            USER,
            "-ap",
            password,
            "-r",
            "5",
            "-m",
            &CALLS.to_string(),
            "-recv_timeout",
            "5000",
            "-timeout",
            "20s",
            "-timeout_error",
        ],
    )
}

#[test]
fn a_trunk_answering_the_407_with_the_right_password_places_its_calls() {
    require_sipp();
    let dir = TestDir::new();
    let ai_port = sipp::free_port();
    let mut ai = spawn_bound(
        "ai-agent UAS",
        &dir,
        "ai",
        &[
            "-sf",
            path_str(&scenarios_dir().join("ai_agent_uas.xml")),
            "-i",
            "127.0.0.1",
            "-p",
            &ai_port.to_string(),
            "-t",
            Transport::Udp.sipp_mode(),
            "-m",
            &CALLS.to_string(),
            "-timeout",
            "30s",
        ],
        ai_port,
        Transport::Udp,
    );
    let mut handoff = Handoff::start(&config(ai_port), &dir);
    let mut uac = run_uac(&dir, &handoff, "trunk_auth_uac.xml", PASSWORD);
    let uac_status = uac.wait(Duration::from_secs(30));
    let ai_status = ai.wait(Duration::from_secs(20));
    let (uac_stats, ai_stats) = (uac.final_stats(), ai.final_stats());
    let m = handoff.metrics().expect("metrics");
    let ok = Sipp::all_succeeded(uac_status, &uac_stats, "OutgoingCall(C)", CALLS)
        && Sipp::all_succeeded(ai_status, &ai_stats, "IncomingCall(C)", CALLS);
    if !ok {
        panic!(
            "authenticated calls did not all succeed\n{}\n{}\n{}\nfiles kept in {}",
            uac.report(uac_status, &uac_stats),
            ai.report(ai_status, &ai_stats),
            handoff.report(),
            dir.keep().display()
        );
    }
    assert_eq!(
        m.value("trunk_auth_challenges_total{trunk=\"agent\"}"),
        f64::from(CALLS),
        "{}",
        m.nonzero()
    );
    assert_eq!(m.value("trunk_auth_failures_total{trunk=\"agent\"}"), 0.0);
    assert_eq!(
        m.value("trunk_calls_started_total{trunk=\"agent\"}"),
        f64::from(CALLS)
    );
    assert!(
        !handoff.log_text().contains(PASSWORD),
        "the password is never logged"
    );
}

#[test]
fn a_wrong_password_gets_403_and_nothing_is_dialled() {
    require_sipp();
    let dir = TestDir::new();
    // The route's AI agent: a bound UDP socket nobody answers on; nothing may reach it.
    let ai = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    ai.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let ai_port = ai.local_addr().expect("addr").port();
    let mut handoff = Handoff::start(&config(ai_port), &dir);
    let mut uac = run_uac(
        &dir,
        &handoff,
        "trunk_auth_wrong_uac.xml",
        "wrong-password!",
    );
    let status = uac.wait(Duration::from_secs(30));
    let stats = uac.final_stats();
    if !Sipp::all_succeeded(status, &stats, "OutgoingCall(C)", CALLS) {
        panic!(
            "the wrong-password runs did not each end in 403\n{}\n{}\nfiles kept in {}",
            uac.report(status, &stats),
            handoff.report(),
            dir.keep().display()
        );
    }
    let mut buf = [0u8; 2048];
    assert!(ai.recv_from(&mut buf).is_err(), "nothing was dialled");
    let m = handoff.metrics().expect("metrics");
    assert_eq!(
        m.value("trunk_auth_failures_total{trunk=\"agent\"}"),
        f64::from(CALLS),
        "{}",
        m.nonzero()
    );
    assert_eq!(m.value("trunk_calls_started_total{trunk=\"agent\"}"), 0.0);
}
