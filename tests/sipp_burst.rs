//! Bursts of SIPp calls through the real `handoff` binary on loopback.
//!
//! Carrier (SIPp UAC, `sipp-scenarios/carrier_uac*.xml`) -> handoff -> AI agent
//! (SIPp UAS, `sipp-scenarios/ai_agent*_uas.xml`). The UAS checks every INVITE
//! handoff sends (session id added, carrier's spoofed one stripped, agent id
//! added) and refuses the call if a check fails, so a passing run means every
//! call was bridged, relayed and torn down on both legs.
//!
//! Needs `sipp` on PATH (Debian package `sip-tester`). Every port is a random
//! free one, every process is killed by PID when the test ends (also on panic),
//! and every wait has a deadline. On failure the temp dir with SIPp's error,
//! message and statistics files is kept and its path printed.

#[path = "common/sipp.rs"]
mod sipp;

use sipp::{
    base_config, path_str, require_sipp, scenarios_dir, spawn_bound, Handoff, Sipp, TestDir,
    Transport, CALLED,
};
use std::time::Duration;

/// One burst: which scenario pair, how many calls, how fast.
struct Burst {
    transport: Transport,
    uac_scenario: &'static str,
    uas_scenario: &'static str,
    calls: u32,
    rate: u32,
}

#[test]
fn udp_burst_of_200_calls_is_bridged_without_failures() {
    run_burst(Burst {
        transport: Transport::Udp,
        uac_scenario: "carrier_uac.xml",
        uas_scenario: "ai_agent_uas.xml",
        calls: 200,
        rate: 50,
    });
}

#[test]
fn tcp_burst_of_200_calls_is_bridged_without_failures() {
    run_burst(Burst {
        transport: Transport::Tcp,
        uac_scenario: "carrier_uac.xml",
        uas_scenario: "ai_agent_uas.xml",
        calls: 200,
        rate: 50,
    });
}

#[test]
fn agent_hangup_ends_both_legs_for_100_calls() {
    run_burst(Burst {
        transport: Transport::Udp,
        uac_scenario: "carrier_uac_agent_hangup.xml",
        uas_scenario: "ai_agent_hangup_uas.xml",
        calls: 100,
        rate: 50,
    });
}

fn run_burst(burst: Burst) {
    require_sipp();
    let dir = TestDir::new();
    let scenarios = scenarios_dir();
    let mode = burst.transport.sipp_mode();

    // The AI agent: exits by itself after `calls` calls (-m), 0 if all passed.
    let uas_port = sipp::free_port();
    let mut uas = spawn_bound(
        "ai-agent UAS",
        &dir,
        "uas",
        &[
            "-sf",
            path_str(&scenarios.join(burst.uas_scenario)),
            "-i",
            "127.0.0.1",
            "-p",
            &uas_port.to_string(),
            "-t",
            mode,
            "-m",
            &burst.calls.to_string(),
            // Bounds the UAS even if calls never arrive.
            "-timeout",
            "40s",
        ],
        uas_port,
        burst.transport,
    );

    let config = format!(
        r#"{}
[[route]]
prefix = ""
org_id = "org-test"
agent_id = "agent-test"
ai_agent_uri = "sip:ai@127.0.0.1:{uas_port}{}"
"#,
        base_config("warn"),
        burst.transport.uri_param()
    );
    let mut handoff = Handoff::start(&config, &dir);
    let target = handoff.sip_addr(burst.transport);

    // The carrier: places `calls` calls at `rate` per second, then exits.
    let mut uac = Sipp::spawn(
        "carrier UAC",
        &dir,
        "uac",
        &[
            &target.to_string(),
            "-sf",
            path_str(&scenarios.join(burst.uac_scenario)),
            "-i",
            "127.0.0.1",
            "-p",
            &sipp::free_port().to_string(),
            "-t",
            mode,
            "-s",
            CALLED,
            "-r",
            &burst.rate.to_string(),
            "-m",
            &burst.calls.to_string(),
            // A call waiting more than 5 s for any message fails ...
            "-recv_timeout",
            "5000",
            // ... and the whole run fails after 30 s.
            "-timeout",
            "30s",
            "-timeout_error",
        ],
    );
    let uac_status = uac.wait(Duration::from_secs(45));
    // The UAS keeps each call 4 s after its BYE (timewait) before it exits.
    let uas_status = uas.wait(Duration::from_secs(20));

    let uac_stats = uac.final_stats();
    let uas_stats = uas.final_stats();
    let uac_ok = Sipp::all_succeeded(uac_status, &uac_stats, "OutgoingCall(C)", burst.calls);
    let uas_ok = Sipp::all_succeeded(uas_status, &uas_stats, "IncomingCall(C)", burst.calls);
    if !(uac_ok && uas_ok) {
        panic!(
            "{} calls over {:?} through handoff did not all succeed\n{}\n{}\n{}\nfiles kept in {}",
            burst.calls,
            burst.transport,
            uac.report(uac_status, &uac_stats),
            uas.report(uas_status, &uas_stats),
            handoff.report(),
            dir.path.display()
        );
    }
}
