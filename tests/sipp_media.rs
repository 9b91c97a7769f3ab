//! RTP through handoff's media relay, with SIPp playing audio on both legs.
//!
//! Carrier (SIPp UAC, `sipp-scenarios/carrier_uac_rtp.xml`) -> handoff -> AI
//! agent (SIPp UAS, `sipp-scenarios/ai_agent_rtp_uas.xml`). Each side plays a
//! 2 s PCMU tone (100 packets of 20 ms) with SIPp's `rtp_stream` to the
//! address the other side's SDP gave it, which is handoff's relay when handoff
//! rewrites the SDP. The test then reads handoff's `/metrics` and its per-call
//! `media stats` log lines and checks that the relay carried what SIPp sent in
//! both directions (at least 80% of it, never more, nothing lost) and that
//! every relay was released.
//!
//! The same checks are run on two broken setups and must fail there: an AI
//! agent that sends no RTP, and handoff in `passthrough` mode (SDP not
//! rewritten, media bypasses the relay). That keeps the checks honest.
//!
//! Needs `sipp` on PATH (Debian package `sip-tester`); see `sipp_burst.rs`
//! and `common/sipp.rs` for how processes, ports and logs are handled.

#[path = "common/sipp.rs"]
mod sipp;
#[path = "common/tone.rs"]
mod tone;

use sipp::{
    base_config, path_str, require_sipp, scenarios_dir, spawn_bound, Handoff, Metrics, Sipp,
    TestDir, Transport, CALLED,
};
use std::time::Duration;
use tone::write_tone;

/// The audio file both scenarios play, in SIPp's working directory.
const AUDIO_FILE: &str = "pcmu_tone.ulaw";
/// Packets in it: 2 s of 20 ms PCMU packets (160 bytes each).
const TONE_PACKETS: u32 = 100;
/// How long the carrier keeps each call up (`-d`): longer than the tone, so
/// both streams end before the BYE tears the relay down.
const CALL_MS: u32 = 3000;
/// The share of what SIPp sent that must have gone through the relay.
const MIN_SHARE: f64 = 0.8;

#[derive(Clone, Copy)]
struct MediaRun {
    transport: Transport,
    uas_scenario: &'static str,
    /// `[media] mode`.
    mode: &'static str,
    calls: u32,
    rate: u32,
}

#[test]
fn udp_calls_carry_rtp_both_ways_through_the_relay() {
    let run = MediaRun {
        transport: Transport::Udp,
        uas_scenario: "ai_agent_rtp_uas.xml",
        mode: "relay",
        calls: 6,
        rate: 3,
    };
    let mut outcome = run_calls(run);
    if let Err(problems) = check_media(&run, &outcome) {
        outcome.fail(&format!("RTP through the relay: {problems}"));
    }
    outcome.expect_clean_exit();
}

#[test]
fn tcp_calls_carry_rtp_both_ways_through_the_relay() {
    let run = MediaRun {
        transport: Transport::Tcp,
        uas_scenario: "ai_agent_rtp_uas.xml",
        mode: "relay",
        calls: 4,
        rate: 2,
    };
    let mut outcome = run_calls(run);
    if let Err(problems) = check_media(&run, &outcome) {
        outcome.fail(&format!("RTP through the relay: {problems}"));
    }
    outcome.expect_clean_exit();
}

/// The checks notice an AI agent that sends nothing: the relay then carries
/// only the caller's half.
#[test]
fn the_checks_fail_when_the_ai_agent_sends_no_rtp() {
    let run = MediaRun {
        transport: Transport::Udp,
        // Answers with SDP but never plays anything.
        uas_scenario: "ai_agent_uas.xml",
        mode: "relay",
        calls: 3,
        rate: 3,
    };
    let mut outcome = run_calls(run);
    match check_media(&run, &outcome) {
        Ok(()) => outcome.fail("the media checks passed although the AI agent sent no RTP"),
        Err(problems) if !problems.contains("AI agent -> caller") => outcome.fail(&format!(
            "the media checks failed, but not on the AI agent's direction: {problems}"
        )),
        Err(problems) => eprintln!("the checks failed, as they must: {problems}"),
    }
}

/// The checks notice media that bypasses handoff: in passthrough mode the
/// SDP is not rewritten and SIPp streams straight to SIPp.
#[test]
fn the_checks_fail_when_the_sdp_is_not_rewritten() {
    let run = MediaRun {
        transport: Transport::Udp,
        uas_scenario: "ai_agent_rtp_uas.xml",
        mode: "passthrough",
        calls: 3,
        rate: 3,
    };
    let mut outcome = run_calls(run);
    match check_media(&run, &outcome) {
        Ok(()) => outcome.fail("the media checks passed although handoff did not relay the media"),
        Err(problems) => eprintln!("the checks failed, as they must: {problems}"),
    }
}

/// What one run left to check.
struct Outcome {
    dir: TestDir,
    handoff: Handoff,
    /// Highest `media_relays_active` seen while the calls were up.
    peak_relays: f64,
    /// `/metrics` once every call was over (or the wait for that ran out).
    metrics: Metrics,
}

impl Outcome {
    fn fail(&mut self, what: &str) -> ! {
        panic!(
            "{what}\nmetrics (non-zero):\n{}\n{}\nfiles kept in {}",
            self.metrics.nonzero(),
            self.handoff.report(),
            self.dir.path.display()
        )
    }

    /// SIGTERM: handoff, idle by now, exits 0 and logged no panic.
    fn expect_clean_exit(&mut self) {
        let status = self.handoff.terminate(Duration::from_secs(10));
        if !status.is_some_and(|s| s.success()) {
            self.fail(&format!(
                "handoff did not exit cleanly on SIGTERM: {status:?}"
            ));
        }
        if self.handoff.log_text().contains("panicked") {
            self.fail("handoff logged a panic");
        }
    }
}

/// Places `run.calls` calls with audio through a fresh handoff. Panics (with
/// every log) when the calls themselves fail: the media checks come after.
fn run_calls(run: MediaRun) -> Outcome {
    require_sipp();
    let dir = TestDir::new();
    write_tone(&dir.file(AUDIO_FILE), TONE_PACKETS);
    let scenarios = scenarios_dir();
    let mode = run.transport.sipp_mode();
    let calls = run.calls.to_string();

    let uas_port = sipp::free_port();
    let mut uas = spawn_bound(
        "ai-agent UAS",
        &dir,
        "uas",
        &[
            "-sf",
            path_str(&scenarios.join(run.uas_scenario)),
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &uas_port.to_string(),
            "-t",
            mode,
            "-m",
            &calls,
            "-timeout",
            "40s",
        ],
        uas_port,
        run.transport,
    );

    let config = format!(
        r#"{}mode = "{}"

[[route]]
prefix = ""
org_id = "org-test"
agent_id = "agent-test"
ai_agent_uri = "sip:ai@127.0.0.1:{uas_port}{}"
"#,
        base_config("info"),
        run.mode,
        run.transport.uri_param()
    );
    let mut handoff = Handoff::start(&config, &dir);
    let target = handoff.sip_addr(run.transport);

    let mut uac = Sipp::spawn(
        "carrier UAC",
        &dir,
        "uac",
        &[
            &target.to_string(),
            "-sf",
            path_str(&scenarios.join("carrier_uac_rtp.xml")),
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &sipp::free_port().to_string(),
            "-t",
            mode,
            "-s",
            CALLED,
            "-r",
            &run.rate.to_string(),
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

    // While the calls are up, the relays are counted as active.
    let peak_relays = handoff
        .metrics_when(Duration::from_secs(8), |m| {
            m.get("media_relays_active").unwrap_or(0.0) >= 1.0
        })
        .ok()
        .and_then(|m| m.get("media_relays_active"))
        .unwrap_or(0.0);

    let uac_status = uac.wait(Duration::from_secs(45));
    // The UAS keeps each call 4 s after its BYE (timewait) before it exits.
    let uas_status = uas.wait(Duration::from_secs(20));
    let (uac_stats, uas_stats) = (uac.final_stats(), uas.final_stats());
    let uac_ok = Sipp::all_succeeded(uac_status, &uac_stats, "OutgoingCall(C)", run.calls);
    let uas_ok = Sipp::all_succeeded(uas_status, &uas_stats, "IncomingCall(C)", run.calls);
    if !(uac_ok && uas_ok) {
        panic!(
            "{} calls with RTP over {:?} through handoff did not all succeed\n{}\n{}\n{}\nfiles kept in {}",
            run.calls,
            run.transport,
            uac.report(uac_status, &uac_stats),
            uas.report(uas_status, &uas_stats),
            handoff.report(),
            dir.path.display()
        );
    }

    // Stats are added when each call ends; wait for the last one to end.
    let metrics = handoff
        .metrics_when(Duration::from_secs(10), |m| {
            m.get("calls_active") == Some(0.0) && m.get("media_relays_active") == Some(0.0)
        })
        .unwrap_or_else(|e| panic!("cannot read handoff's metrics: {e}\n{}", handoff.report()));
    Outcome {
        dir,
        handoff,
        peak_relays,
        metrics,
    }
}

/// The media checks; every problem found, or `Ok`.
fn check_media(run: &MediaRun, outcome: &Outcome) -> Result<(), String> {
    let m = &outcome.metrics;
    let mut problems = Vec::new();
    let per_direction = f64::from(TONE_PACKETS * run.calls);
    let sent = 2.0 * per_direction;
    let relayed = m.value("rtp_packets_relayed_total");
    if relayed < MIN_SHARE * sent || relayed > sent {
        problems.push(format!(
            "rtp_packets_relayed_total is {relayed}; each side plays {per_direction} packets, \
             so at least {} of {sent} must have been relayed",
            MIN_SHARE * sent
        ));
    }
    let lost = m.value("rtp_packets_lost_total");
    if lost != 0.0 {
        problems.push(format!("rtp_packets_lost_total is {lost}, not 0"));
    }
    let bytes = m.value("rtp_bytes_relayed_total");
    if bytes != relayed * 172.0 {
        problems.push(format!(
            "rtp_bytes_relayed_total is {bytes}, not 172 bytes (RTP header and 160 bytes of \
             PCMU) per relayed packet"
        ));
    }
    if outcome.peak_relays < 1.0 {
        problems.push("media_relays_active never rose above 0 during the calls".into());
    }
    let active = m.value("media_relays_active");
    if active != 0.0 {
        problems.push(format!(
            "media_relays_active is {active} after every call ended"
        ));
    }

    // Each call's own figures, per direction, from its `media stats` line.
    let stats = outcome.handoff.log_events("media stats");
    if stats.len() != run.calls as usize {
        problems.push(format!(
            "{} `media stats` log lines for {} calls",
            stats.len(),
            run.calls
        ));
    }
    let min = MIN_SHARE * f64::from(TONE_PACKETS);
    for (i, s) in stats.iter().enumerate() {
        for (side, what) in [
            ("caller", "caller -> AI agent"),
            ("far", "AI agent -> caller"),
        ] {
            let packets = s[format!("{side}_packets")].as_f64().unwrap_or(-1.0);
            let lost = s[format!("{side}_lost")].as_f64().unwrap_or(-1.0);
            if packets < min || packets > f64::from(TONE_PACKETS) {
                problems.push(format!(
                    "call {i}, {what}: {packets} packets relayed, SIPp plays {TONE_PACKETS}"
                ));
            }
            if lost != 0.0 {
                problems.push(format!("call {i}, {what}: {lost} packets lost"));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
