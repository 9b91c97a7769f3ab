//! The transfer of an outbound call's callee, with SIPp playing all three
//! parties against the real `handoff` binary (issue 15):
//!
//! - the AI agent (`sipp-scenarios/ai_agent_outbound_refer_uac.xml`, on
//!   127.0.0.2, an `ai_agent` trunk) calls +14155550123; once the callee has
//!   answered it REFERs the callee to the Zendesk destination, checks the 202
//!   and every NOTIFY, answers them, and takes handoff's BYE after the final
//!   `SIP/2.0 200 OK` one;
//! - the carrier (`carrier_outbound_uas_transfer.xml`) challenges handoff's
//!   INVITE with 401 and checks the credentials, answers, sees no re-INVITE
//!   or UPDATE through the transfer (one would fail its call), plays a 2 s
//!   PCMU tone once Zendesk has answered and hangs up;
//! - Zendesk (`zendesk_outbound_uas.xml`, run with `-rtp_echo`) checks the
//!   transfer INVITE's From (the callee's number), X-OPENCX headers and SDP
//!   with `check_it`, answers, sends the callee's audio back, and takes the
//!   BYE handoff passes on from the callee.
//!
//! A run passes when all three SIPps count every call successful; each
//! Zendesk INVITE carries the session id of one of the calls; the webhook
//! subscriber (a capture server in this process) got, per session,
//! `phone_call.started` (outbound, from the caller id to the callee),
//! `conversation.started`, `phone_call.answered`, `phone_call.transferred`
//! (completed) and `phone_call.ended` (by the `user`); handoff's per-call
//! `media stats` show the callee's tone relayed and Zendesk's echo of it
//! coming back on the far side (the side the agent had before); and handoff
//! ends idle, with no ERROR line, and exits 0 on SIGTERM. A second test has
//! Zendesk expect another number in From: its check must fail the call,
//! and the transfer with it.
//!
//! Needs `sipp` on PATH (Debian package `sip-tester`); see `common/sipp.rs`.

#[path = "common/capture.rs"]
#[allow(dead_code)]
mod capture;
#[path = "common/sipp.rs"]
mod sipp;
#[path = "common/sipp_outbound.rs"]
mod sipp_outbound;
#[path = "common/tone.rs"]
mod tone;

use capture::Capture;
use serde_json::Value;
use sipp::{
    base_config, path_str, require_sipp, scenarios_dir, session_ids, spawn_bound, Handoff, Sipp,
    TestDir, Transport,
};
use sipp_outbound::{
    outbound_trunks, relay_with_events, AGENT, CALLEE, CALLER_ID, PASSWORD, USERNAME,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tone::write_tone;

const WEBHOOK_SECRET: &str = "outbound-sipp-transfer-secret-0123";
/// The callee's tone: 2 s (the carrier scenario hangs up 2.5 s after it
/// starts).
const TONE_PACKETS: u32 = 100;
/// The agent REFERs this long after its ACK (`-d`).
const REFER_AFTER_MS: u32 = 300;
/// The callee starts its tone this long after the ACK (`-d`): well after
/// Zendesk answered, so every packet of it goes to Zendesk.
const TONE_AFTER_MS: u32 = 1500;

/// What one run through handoff left behind, for the tests to judge.
struct Run {
    dir: TestDir,
    calls: u32,
    agent: Outcome,
    carrier: Outcome,
    zendesk: Outcome,
    /// Problems found in handoff's metrics, logs and exit.
    problems: Vec<String>,
    /// handoff's metrics once it was idle.
    metrics: Option<sipp::Metrics>,
    /// The events the subscriber took (2xx), in arrival order.
    events: Vec<Value>,
    /// handoff's `media stats` log lines.
    media_stats: Vec<Value>,
    handoff_report: String,
}

/// One SIPp's end: whether every call succeeded, its report, and why calls
/// failed.
struct Outcome {
    ok: bool,
    report: String,
    reasons: Vec<String>,
}

impl Outcome {
    fn of(sipp: &mut Sipp, limit: Duration, created: &str, calls: u32) -> Outcome {
        let status = sipp.wait(limit);
        let stats = sipp.final_stats();
        Outcome {
            ok: Sipp::all_succeeded(status, &stats, created, calls),
            report: sipp.report(status, &stats),
            reasons: sipp.failure_reasons(),
        }
    }
}

impl Run {
    /// Everything, for a failure message; keeps the files.
    fn report(self, problems: &[String]) -> String {
        format!(
            "{} outbound transfers:\n- {}\n{}\n{}\n{}\n{}\nfiles kept in {}",
            self.calls,
            problems.join("\n- "),
            self.agent.report,
            self.carrier.report,
            self.zendesk.report,
            self.handoff_report,
            self.dir.keep().display()
        )
    }
}

#[test]
fn the_agents_refer_moves_each_callee_to_zendesk_with_the_session_headers() {
    const CALLS: u32 = 3;
    let run = run_transfers(CALLS, CALLEE);
    let mut problems = run.problems.clone();
    for (who, o) in [
        ("AI agent (REFER, NOTIFYs, BYE)", &run.agent),
        ("carrier (digest, callee's tone, BYE)", &run.carrier),
        ("Zendesk (From, X-OPENCX headers, SDP, BYE)", &run.zendesk),
    ] {
        if !o.ok {
            problems.push(format!(
                "the {who} calls did not all succeed: {:?}",
                o.reasons
            ));
        }
    }

    check_transfer_counts(&run, &mut problems, CALLS, 0);

    // Each session's lifecycle, as the subscriber got it.
    let sessions = by_session(&run.events);
    if sessions.len() != CALLS as usize {
        problems.push(format!(
            "events of {} sessions for {CALLS} calls",
            sessions.len()
        ));
    }
    for (sid, evs) in &sessions {
        if let Err(e) = check_lifecycle(evs) {
            problems.push(format!("session {sid}: {e}"));
        }
    }
    // Each Zendesk INVITE is one of those sessions', each once.
    let zendesk_ids = session_ids(&run.dir.file("zendesk_messages.log"));
    let event_ids: BTreeSet<String> = sessions.keys().cloned().collect();
    if zendesk_ids != event_ids {
        problems.push(format!(
            "the Zendesk INVITEs' session ids {zendesk_ids:?} are not the sessions' {event_ids:?}"
        ));
    }

    // The callee's tone went to Zendesk, and Zendesk's echo of it came back
    // on the far side, which held the agent before the transfer.
    if run.media_stats.len() != CALLS as usize {
        problems.push(format!(
            "{} `media stats` lines for {CALLS} calls",
            run.media_stats.len()
        ));
    }
    let tone = f64::from(TONE_PACKETS);
    for s in &run.media_stats {
        let packets = |side: &str| s[format!("{side}_packets")].as_f64().unwrap_or(-1.0);
        let (callee, zendesk) = (packets("caller"), packets("far"));
        if !(callee >= 0.8 * tone && callee <= tone) {
            problems.push(format!(
                "{callee} packets from the callee relayed, of {TONE_PACKETS}: {s}"
            ));
        }
        if !(zendesk >= 0.8 * callee && zendesk <= callee) {
            problems.push(format!(
                "{zendesk} packets from Zendesk (its echo of the callee's {callee}): {s}"
            ));
        }
    }

    if !problems.is_empty() {
        panic!("{}", run.report(&problems));
    }
}

/// The Zendesk scenario's From check can fail: told to expect another
/// number, it refuses the transfer INVITE (500), its call fails by that
/// check, and so does the agent's (the final NOTIFY reports the 500); the
/// callee stays with the agent until it hangs up.
#[test]
fn zendesk_expecting_another_number_in_from_fails_the_transfer() {
    let run = run_transfers(1, "+14155550999");
    let mut problems = Vec::new();
    if run.zendesk.ok {
        problems.push("Zendesk's call succeeded with the wrong number expected".into());
    }
    // SIPp names the failed test by its variable: the comparison of the
    // From number with the expected one.
    if !run.zendesk.reasons.iter().any(|r| r.contains("callee_cmp")) {
        problems.push(format!(
            "Zendesk's call did not fail by its From check: {:?}",
            run.zendesk.reasons
        ));
    }
    if run.agent.ok {
        problems.push("the agent's call succeeded although Zendesk refused".into());
    }
    // The NOTIFY check failed, on the final NOTIFY reporting Zendesk's 500.
    let notify_check_failed = run
        .agent
        .reasons
        .iter()
        .any(|r| r.starts_with("Failed regexp match") && r.contains("terminated;reason"));
    let agent_log = std::fs::read_to_string(run.dir.file("agent_messages.log")).unwrap_or_default();
    if !notify_check_failed || !agent_log.contains("\nSIP/2.0 500 Transfer header check failed") {
        problems.push(format!(
            "the agent's call did not fail by its final NOTIFY check on Zendesk's 500: {:?}",
            run.agent.reasons
        ));
    }
    if !run.carrier.ok {
        problems.push(format!(
            "the callee's call failed (it should stay with the agent): {:?}",
            run.carrier.reasons
        ));
    }
    check_transfer_counts(&run, &mut problems, 0, 1);
    // One transfer, failed by Zendesk's 500; the callee hung up on the agent.
    let of_type = |t: &str| -> Vec<&Value> {
        run.events
            .iter()
            .filter(|e| e["type"] == t)
            .map(|e| &e["data"])
            .collect()
    };
    let transferred = of_type("phone_call.transferred");
    if transferred.len() != 1
        || transferred[0]["outcome"] != "failed"
        || transferred[0]["sip_status"] != 500
    {
        problems.push(format!(
            "want one transfer failed with 500: {transferred:?}"
        ));
    }
    let ended = of_type("phone_call.ended");
    if ended.len() != 1 || ended[0]["call_ended_by"] != "user" {
        problems.push(format!(
            "want the call ended by the callee (`user`): {ended:?}"
        ));
    }
    if !problems.is_empty() {
        panic!("{}", run.report(&problems));
    }
}

/// handoff counted `succeeded` transfers completed and `failed` failed, of
/// as many REFERs.
fn check_transfer_counts(run: &Run, problems: &mut Vec<String>, succeeded: u32, failed: u32) {
    let Some(m) = &run.metrics else { return };
    for (name, want) in [
        ("transfers_total", succeeded + failed),
        ("transfers_succeeded_total", succeeded),
        ("transfers_failed_total", failed),
    ] {
        let got = m.get(name);
        if got != Some(f64::from(want)) {
            problems.push(format!("metric {name} is {got:?}, want {want}"));
        }
    }
}

/// `calls` outbound calls through handoff, each transferred to Zendesk,
/// whose scenario expects `zendesk_callee` in From.
fn run_transfers(calls: u32, zendesk_callee: &str) -> Run {
    require_sipp();
    let dir = TestDir::new();
    write_tone(&dir.file("pcmu_tone.ulaw"), TONE_PACKETS);
    let scenarios = scenarios_dir();
    let n = calls.to_string();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let capture = rt.block_on(Capture::start());

    let zendesk_port = sipp::free_port();
    let zendesk_uri = format!("sip:support@127.0.0.1:{zendesk_port}");
    let mut zendesk = spawn_bound(
        "zendesk UAS",
        &dir,
        "zendesk",
        &[
            "-sf",
            path_str(&scenarios.join("zendesk_outbound_uas.xml")),
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &zendesk_port.to_string(),
            "-t",
            "u1",
            "-m",
            &n,
            "-set",
            "agent_id",
            AGENT,
            "-set",
            "callee",
            zendesk_callee,
            "-rtp_echo",
            "-timeout",
            "60s",
        ],
        zendesk_port,
        Transport::Udp,
    );

    let carrier_port = sipp::free_port();
    let mut carrier = spawn_bound(
        "carrier UAS",
        &dir,
        "carrier",
        &[
            "-sf",
            path_str(&scenarios.join("carrier_outbound_uas_transfer.xml")),
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &carrier_port.to_string(),
            "-t",
            "u1",
            "-m",
            &n,
            "-key",
            "username",
            USERNAME,
            "-key",
            "password",
            PASSWORD,
            "-d",
            &TONE_AFTER_MS.to_string(),
            "-timeout",
            "60s",
        ],
        carrier_port,
        Transport::Udp,
    );

    let config = format!(
        r#"{base}{events}
[transfer]
# The IP-literal target is allowed only as a named destination.
allow = ["*.zendesk.sip.twilio.com"]

[[transfer.destination]]
name = "zendesk"
uri = "{zendesk_uri}"
{trunks}"#,
        base = base_config("info"),
        events = relay_with_events(&capture.url(), WEBHOOK_SECRET),
        trunks = outbound_trunks(&format!("sip:127.0.0.1:{carrier_port}"), 60),
    );
    let mut handoff = Handoff::start(&config, &dir);

    let mut agent = Sipp::spawn(
        "AI agent UAC",
        &dir,
        "agent",
        &[
            &handoff.sip_addr(Transport::Udp).to_string(),
            "-sf",
            path_str(&scenarios.join("ai_agent_outbound_refer_uac.xml")),
            "-i",
            "127.0.0.2",
            "-mi",
            "127.0.0.2",
            "-p",
            &sipp::free_port().to_string(),
            "-t",
            "u1",
            "-s",
            CALLEE,
            "-key",
            "agent_id",
            AGENT,
            "-key",
            "refer_to",
            &zendesk_uri,
            "-r",
            "1",
            "-m",
            &n,
            "-d",
            &REFER_AFTER_MS.to_string(),
            "-recv_timeout",
            "10000",
            "-timeout",
            "45s",
            "-timeout_error",
        ],
    );

    // Each side keeps its calls 4 s in timewait before it exits.
    let agent = Outcome::of(
        &mut agent,
        Duration::from_secs(50),
        "OutgoingCall(C)",
        calls,
    );
    let carrier = Outcome::of(
        &mut carrier,
        Duration::from_secs(20),
        "IncomingCall(C)",
        calls,
    );
    let zendesk = Outcome::of(
        &mut zendesk,
        Duration::from_secs(20),
        "IncomingCall(C)",
        calls,
    );

    let mut problems = Vec::new();
    let idle = |m: &sipp::Metrics| {
        m.get("calls_active") == Some(0.0) && m.get("media_relays_active") == Some(0.0)
    };
    let metrics = match handoff.metrics_when(Duration::from_secs(10), idle) {
        Ok(m) => {
            for (name, want) in [
                ("outbound_calls_started_total", f64::from(calls)),
                ("calls_active", 0.0),
                ("media_relays_active", 0.0),
                ("sip_parse_errors_total", 0.0),
                ("transaction_timeouts_total", 0.0),
            ] {
                let got = m.get(name);
                if got != Some(want) {
                    problems.push(format!("metric {name} is {got:?}, want {want}"));
                }
            }
            Some(m)
        }
        Err(e) => {
            problems.push(format!("cannot read handoff's metrics: {e}"));
            None
        }
    };
    // The last events (`phone_call.ended`) may still be on their way.
    let events = delivered_events(&capture, 5 * calls as usize, Duration::from_secs(10));
    let media_stats = handoff.log_events("media stats");
    let status = handoff.terminate(Duration::from_secs(10));
    if !status.is_some_and(|s| s.success()) {
        problems.push(format!("handoff did not exit 0 on SIGTERM: {status:?}"));
    }
    let log = handoff.log_text();
    if log.contains("panicked") {
        problems.push("handoff logged a panic".into());
    }
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .take(5)
        .collect();
    if !errors.is_empty() {
        problems.push(format!("handoff logged errors:\n{}", errors.join("\n")));
    }
    let handoff_report = handoff.report();
    drop(capture);
    Run {
        dir,
        calls,
        agent,
        carrier,
        zendesk,
        problems,
        metrics,
        events,
        media_stats,
        handoff_report,
    }
}

/// The events the capture server took (answered 2xx), once `n` have come or
/// `limit` has passed.
fn delivered_events(capture: &Capture, n: usize, limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let got = capture.delivered();
        if got.len() >= n || Instant::now() >= deadline {
            return got
                .iter()
                .filter_map(|c| serde_json::from_slice(&c.body).ok())
                .collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Events by their session id, each session's in arrival order.
fn by_session(events: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in events {
        let sid = e["session_id"].as_str().unwrap_or("<none>").to_owned();
        out.entry(sid).or_default().push(e.clone());
    }
    out
}

/// One transferred outbound call's events, in order, with their parties.
fn check_lifecycle(evs: &[Value]) -> Result<(), String> {
    let types: Vec<&str> = evs.iter().filter_map(|e| e["type"].as_str()).collect();
    let want = [
        "phone_call.started",
        "conversation.started",
        "phone_call.answered",
        "phone_call.transferred",
        "phone_call.ended",
    ];
    if types != want {
        return Err(format!("events {types:?}, want {want:?}"));
    }
    let data = |t: &str| {
        evs.iter()
            .find(|e| e["type"] == t)
            .map(|e| &e["data"])
            .unwrap_or(&Value::Null)
    };
    for t in ["phone_call.started", "phone_call.transferred"] {
        let d = data(t);
        if d["direction"] != "outbound"
            || d["from"] != CALLER_ID
            || d["to"] != CALLEE
            || d["agent_id"] != AGENT
        {
            return Err(format!(
                "{t}: not outbound from {CALLER_ID} to {CALLEE}: {d}"
            ));
        }
    }
    let transferred = data("phone_call.transferred");
    if transferred["outcome"] != "completed" {
        return Err(format!("transfer not completed: {transferred}"));
    }
    let ended = data("phone_call.ended");
    if ended["call_ended_by"] != "user" {
        return Err(format!("not ended by the callee (`user`): {ended}"));
    }
    Ok(())
}
