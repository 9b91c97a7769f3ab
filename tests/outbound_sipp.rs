//! Outbound calls with SIPp on both sides and audio both ways through the relay:
//! the AI agent (`sipp-scenarios/ai_agent_outbound_uac.xml`, 127.0.0.2, an
//! `ai_agent` trunk) calls a number; the carrier
//! (`sipp-scenarios/carrier_outbound_uas_auth.xml`) challenges handoff's INVITE
//! with 401, checks the credentials with `<verifyauth>`, answers, and each side
//! plays a 2 s PCMU tone; the agent hangs up. The test checks that every call
//! succeeded on both SIPps and that the relay carried the audio both ways.
//!
//! Needs `sipp` on PATH (Debian package `sip-tester`); see `common/sipp.rs`.

#[path = "common/sipp.rs"]
mod sipp;
#[path = "common/sipp_outbound.rs"]
mod sipp_outbound;
#[path = "common/tone.rs"]
mod tone;

use sipp::{
    base_config, path_str, require_sipp, scenarios_dir, spawn_bound, Handoff, Sipp, TestDir,
    Transport,
};
use sipp_outbound::{outbound_trunks, PASSWORD, USERNAME};
use std::time::Duration;
use tone::write_tone;

const TONE_PACKETS: u32 = 100;
const CALL_MS: u32 = 3000;
const CALLS: u32 = 3;

#[test]
fn outbound_calls_answer_the_carriers_challenge_and_carry_rtp_both_ways() {
    require_sipp();
    let dir = TestDir::new();
    write_tone(&dir.file("pcmu_tone.ulaw"), TONE_PACKETS);
    let scenarios = scenarios_dir();
    let calls = CALLS.to_string();

    let carrier_port = sipp::free_port();
    let mut carrier = spawn_bound(
        "carrier UAS",
        &dir,
        "carrier",
        &[
            "-sf",
            path_str(&scenarios.join("carrier_outbound_uas_auth.xml")),
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &carrier_port.to_string(),
            "-t",
            "u1",
            "-m",
            &calls,
            "-key",
            "username",
            USERNAME,
            "-key",
            "password",
            PASSWORD,
            "-timeout",
            "40s",
        ],
        carrier_port,
        Transport::Udp,
    );

    let config = format!(
        "{}mode = \"relay\"\n{}",
        base_config("info"),
        outbound_trunks(&format!("sip:127.0.0.1:{carrier_port}"), 60),
    );
    let mut handoff = Handoff::start(&config, &dir);
    let target = handoff.sip_addr(Transport::Udp);

    let mut agent = Sipp::spawn(
        "AI agent UAC",
        &dir,
        "agent",
        &[
            &target.to_string(),
            "-sf",
            path_str(&scenarios.join("ai_agent_outbound_uac.xml")),
            "-i",
            "127.0.0.2",
            "-mi",
            "127.0.0.2",
            "-p",
            &sipp::free_port().to_string(),
            "-t",
            "u1",
            "-s",
            "+14155550123",
            "-key",
            "agent_id",
            "agent-test",
            "-r",
            "3",
            "-m",
            &calls,
            "-d",
            &CALL_MS.to_string(),
            "-recv_timeout",
            "5000",
            "-timeout",
            "30s",
            "-timeout_error",
        ],
    );

    let agent_status = agent.wait(Duration::from_secs(45));
    let carrier_status = carrier.wait(Duration::from_secs(20));
    let (agent_stats, carrier_stats) = (agent.final_stats(), carrier.final_stats());
    let agent_ok = Sipp::all_succeeded(agent_status, &agent_stats, "OutgoingCall(C)", CALLS);
    let carrier_ok = Sipp::all_succeeded(carrier_status, &carrier_stats, "IncomingCall(C)", CALLS);
    if !(agent_ok && carrier_ok) {
        panic!(
            "{CALLS} outbound calls did not all succeed\n{}\n{}\n{}\nfiles kept in {}",
            agent.report(agent_status, &agent_stats),
            carrier.report(carrier_status, &carrier_stats),
            handoff.report(),
            dir.keep().display()
        );
    }
    let m = handoff
        .metrics_when(Duration::from_secs(10), |m| {
            m.get("calls_active") == Some(0.0) && m.get("media_relays_active") == Some(0.0)
        })
        .unwrap_or_else(|e| panic!("metrics: {e}\n{}", handoff.report()));
    assert_eq!(m.value("outbound_calls_started_total"), f64::from(CALLS));
    // Each call's own figures, per direction.
    let stats = handoff.log_events("media stats");
    assert_eq!(stats.len(), CALLS as usize, "{}", handoff.report());
    for s in &stats {
        for side in ["caller", "far"] {
            let packets = s[format!("{side}_packets")].as_f64().unwrap_or(-1.0);
            assert!(
                packets >= 0.8 * f64::from(TONE_PACKETS) && packets <= f64::from(TONE_PACKETS),
                "{side}: {packets} packets relayed of {TONE_PACKETS}: {s}"
            );
        }
    }
    let status = handoff.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit: {status:?}"
    );
}
