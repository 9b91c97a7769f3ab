//! Outbound calls that fail, with SIPp on both sides: the AI agent
//! (`sipp-scenarios/ai_agent_outbound_fail_uac.xml`, 127.0.0.2, an `ai_agent`
//! trunk of `org-test`) calls a number and must get the final status given with
//! `-set expected`; where a carrier is dialled it is
//! `sipp-scenarios/carrier_outbound_uas_fail.xml`, which challenges handoff's
//! INVITE with 401, checks the credentials, rings, and then answers with the
//! failure `-set status` names, or only rings and waits for handoff's CANCEL.
//! One test per case of issue 15: busy (486), rejected (603), no answer (ring
//! timeout: 480 to the agent, CANCEL to the carrier), an unreachable carrier
//! (503), a number outside the org's prefixes (403, nothing dialled) and an
//! agent of another org (403, nothing dialled). The lifecycle events go to a
//! capture subscriber (`common/capture.rs`): `phone_call.started`,
//! `conversation.started` and `phone_call.failed` with the category and
//! `call_ended_by: null` for a call that was dialled, none at all for a refusal.
//!
//! Needs `sipp` on PATH (Debian package `sip-tester`); see `common/sipp.rs`.

#[path = "common/capture.rs"]
#[allow(dead_code)]
mod capture;
#[path = "common/sipp.rs"]
mod sipp;
#[path = "common/sipp_outbound.rs"]
mod sipp_outbound;

use capture::Capture;
use serde_json::Value;
use sipp::{
    base_config, path_str, require_sipp, scenarios_dir, spawn_bound, stat, Handoff, Metrics, Sipp,
    TestDir, Transport,
};
use sipp_outbound::{outbound_trunks, relay_with_events, AGENT, CALLEE, CALLER_ID, PASSWORD};
use std::time::Duration;

/// org-other's agent (its route names it): not one of org-test's.
const OTHER_ORG_AGENT: &str = "agent-other";
const SECRET: &str = "outbound-sipp-test-secret-0123456789";

/// The carrier side of a case.
#[derive(Clone, Copy)]
enum Carrier {
    /// A carrier SIPp answering with `-set status` (180: rings, never answers).
    Plays(&'static str),
    /// A carrier SIPp that must receive nothing (the call is refused first).
    NotDialled,
    /// The carrier's URI is a closed TCP port on loopback; no SIPp.
    Closed,
}

/// What one case found, every SIPp having done its part.
struct Outcome {
    events: Vec<Value>,
    metrics: Metrics,
    handoff: Handoff,
    dir: TestDir,
}

/// handoff in relay mode with the capture subscriber, a carrier trunk at
/// `carrier_uri` with credentials, org-test's agent trunk on 127.0.0.2 (its
/// agents from its routes: `agent-test`) and org-other's on 127.0.0.4
/// (`agent-other`); org-test may call `+1415...` and rings for `ring_secs`.
fn config(carrier_uri: &str, hook: &str, ring_secs: u64) -> String {
    format!(
        r#"{base}{events}{trunks}
[[trunk]]
name = "others"
kind = "ai_agent"
sources = ["127.0.0.4"]
org_id = "org-other"

[[outbound]]
org_id = "org-other"
trunk = "carrier"
allowed_prefixes = ["+1"]
caller_ids = ["+18005550199"]

[[route]]
number = "+18005550999"
org_id = "org-other"
agent_id = "{OTHER_ORG_AGENT}"
ai_agent_uri = "sip:ai@127.0.0.1:9"
"#,
        base = base_config("info"),
        events = relay_with_events(hook, SECRET),
        trunks = outbound_trunks(carrier_uri, ring_secs),
    )
}

/// The capture subscriber runs on this runtime's worker while the test thread
/// waits for the processes.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A loopback TCP port nothing listens on: bound by the OS, then closed.
fn closed_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// The carrier SIPp (UDP, one call at most) playing `status`; it stops by
/// itself after `timeout`.
fn start_carrier(dir: &TestDir, port: u16, status: &str, timeout: &str) -> Sipp {
    let scenario = scenarios_dir().join("carrier_outbound_uas_fail.xml");
    spawn_bound(
        "carrier UAS",
        dir,
        "carrier",
        &[
            "-sf",
            path_str(&scenario),
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "u1",
            "-m",
            "1",
            "-key",
            "username",
            "handoff",
            "-key",
            "password",
            PASSWORD,
            "-set",
            "status",
            status,
            "-timeout",
            timeout,
        ],
        port,
        Transport::Udp,
    )
}

/// One outbound call to `number` by `agent_id`, which must end with `expected`
/// at the agent, against `carrier`; handoff rings for `ring_secs`. Panics, with
/// every log, unless each SIPp did its part: the agent got `expected` and
/// ACKed it, the carrier played its scenario or received nothing at all.
fn run(carrier: Carrier, number: &str, agent_id: &str, expected: u16, ring_secs: u64) -> Outcome {
    require_sipp();
    let rt = runtime();
    let capture = rt.block_on(Capture::start());
    let dir = TestDir::new();

    let carrier_port = sipp::free_port();
    let (carrier_uri, mut carrier_sipp) = match carrier {
        Carrier::Plays(status) => (
            format!("sip:127.0.0.1:{carrier_port}"),
            Some(start_carrier(&dir, carrier_port, status, "30s")),
        ),
        // Stops by itself (a clean exit with its final counts) well after the
        // agent's call was refused.
        Carrier::NotDialled => (
            format!("sip:127.0.0.1:{carrier_port}"),
            Some(start_carrier(&dir, carrier_port, "486", "4s")),
        ),
        Carrier::Closed => (
            format!("sip:127.0.0.1:{};transport=tcp", closed_tcp_port()),
            None,
        ),
    };
    let mut handoff = Handoff::start(&config(&carrier_uri, &capture.url(), ring_secs), &dir);
    let target = handoff.sip_addr(Transport::Udp);

    let expected_text = expected.to_string();
    let mut agent = Sipp::spawn(
        "AI agent UAC",
        &dir,
        "agent",
        &[
            &target.to_string(),
            "-sf",
            path_str(&scenarios_dir().join("ai_agent_outbound_fail_uac.xml")),
            "-i",
            "127.0.0.2",
            "-mi",
            "127.0.0.2",
            "-p",
            &sipp::free_port().to_string(),
            "-t",
            "u1",
            "-s",
            number,
            "-key",
            "agent_id",
            agent_id,
            "-set",
            "expected",
            &expected_text,
            "-m",
            "1",
            "-recv_timeout",
            "15000",
            "-timeout",
            "30s",
            "-timeout_error",
        ],
    );
    let agent_status = agent.wait(Duration::from_secs(40));
    let agent_stats = agent.final_stats();
    let mut failures = Vec::new();
    if !Sipp::all_succeeded(agent_status, &agent_stats, "OutgoingCall(C)", 1) {
        failures.push(format!(
            "the agent did not get {expected}: {:?}\n{}",
            agent.failure_reasons(),
            agent.report(agent_status, &agent_stats)
        ));
    }
    if let Some(c) = carrier_sipp.as_mut() {
        let status = c.wait(Duration::from_secs(20));
        let stats = c.final_stats();
        let ok = match carrier {
            Carrier::NotDialled => {
                let messages =
                    std::fs::read_to_string(dir.file("carrier_messages.log")).unwrap_or_default();
                status.is_some()
                    && stat(&stats, "IncomingCall(C)") == "0"
                    && !messages.contains("INVITE")
            }
            _ => Sipp::all_succeeded(status, &stats, "IncomingCall(C)", 1),
        };
        if !ok {
            failures.push(format!(
                "the carrier did not play its part: {:?}\n{}",
                c.failure_reasons(),
                c.report(status, &stats)
            ));
        }
    }
    if !failures.is_empty() {
        panic!(
            "{}\n{}\nfiles kept in {}",
            failures.join("\n"),
            handoff.report(),
            dir.keep().display()
        );
    }

    // Refused calls send no event: wait as long for nothing as for three.
    let types: &[&str] = match carrier {
        Carrier::NotDialled => &[],
        _ => &[
            "phone_call.started",
            "conversation.started",
            "phone_call.failed",
        ],
    };
    let events =
        rt.block_on(capture.exactly(types, Duration::from_secs(10), Duration::from_millis(700)));
    let metrics = handoff
        .metrics_when(Duration::from_secs(10), |m| {
            m.get("calls_active") == Some(0.0) && m.get("media_relays_active") == Some(0.0)
        })
        .unwrap_or_else(|e| panic!("metrics: {e}\n{}", handoff.report()));
    assert_eq!(metrics.value("calls_active"), 0.0, "{}", metrics.nonzero());
    Outcome {
        events,
        metrics,
        handoff,
        dir,
    }
}

/// started (outbound), conversation.started, failed with `category`, nobody
/// having hung up: the one session, its parties, `custom_data.is_outbound` on
/// the failure.
fn assert_failed(o: &Outcome, category: &str) {
    let [started, _conversation, failed] = o.events.as_slice() else {
        panic!("three events: {:?}", o.events);
    };
    for e in [started, failed] {
        let d = &e["data"];
        assert_eq!(d["direction"], "outbound", "{e}");
        assert_eq!(d["from"], CALLER_ID, "{e}");
        assert_eq!(d["to"], CALLEE, "{e}");
        assert_eq!(d["agent_id"], AGENT, "{e}");
        assert_eq!(e["org_id"], "org-test", "{e}");
    }
    assert!(
        o.events
            .iter()
            .all(|e| e["session_id"] == started["session_id"]),
        "one session: {:?}",
        o.events
    );
    let d = &failed["data"];
    // custom_data is on the final events only (`phone_call.started` has none).
    assert_eq!(d["custom_data"]["is_outbound"], true, "{failed}");
    assert_eq!(d["failure_category"], category, "{failed}");
    assert_eq!(d["call_ended_by"], Value::Null, "never connected: {failed}");
    assert_eq!(o.metrics.value("outbound_calls_started_total"), 1.0);
}

/// A refused call: no call started, the refusal counted under `counter`, and
/// the agent's INVITE never went anywhere (`run` checked the carrier SIPp).
fn assert_refused(o: &Outcome, counter: &str) {
    assert!(o.events.is_empty(), "no event: {:?}", o.events);
    assert_eq!(o.metrics.value("outbound_calls_started_total"), 0.0);
    assert_eq!(o.metrics.value(counter), 1.0, "{}", o.metrics.nonzero());
    assert_eq!(
        o.handoff
            .log_events("outbound call refused with 403, nothing dialled")
            .len(),
        1
    );
}

/// Ends handoff cleanly: exit 0 on SIGTERM.
fn finish(mut o: Outcome) {
    let status = o.handoff.terminate(Duration::from_secs(10));
    if !status.is_some_and(|s| s.success()) {
        panic!(
            "handoff did not exit 0 on SIGTERM: {status:?}\n{}\nfiles kept in {}",
            o.handoff.report(),
            o.dir.keep().display()
        );
    }
}

#[test]
fn a_busy_callee_is_486_to_the_agent_and_failed_busy() {
    let o = run(Carrier::Plays("486"), CALLEE, AGENT, 486, 30);
    assert_failed(&o, "busy");
    finish(o);
}

#[test]
fn a_rejecting_callee_is_603_to_the_agent_and_failed_rejected() {
    let o = run(Carrier::Plays("603"), CALLEE, AGENT, 603, 30);
    assert_failed(&o, "rejected");
    finish(o);
}

/// The carrier rings and never answers: after the ring timeout (1 s) handoff
/// CANCELs the carrier's INVITE (the carrier scenario requires the CANCEL and
/// answers 200 and 487) and answers the agent 480.
#[test]
fn no_answer_within_the_ring_timeout_is_480_and_a_cancel_to_the_carrier() {
    let o = run(Carrier::Plays("180"), CALLEE, AGENT, 480, 1);
    assert_failed(&o, "no_answer");
    finish(o);
}

#[test]
fn an_unreachable_carrier_is_503_to_the_agent_and_a_trunk_error() {
    let o = run(Carrier::Closed, CALLEE, AGENT, 503, 30);
    assert_failed(&o, "trunk_error");
    finish(o);
}

#[test]
fn a_number_outside_the_allowed_prefixes_is_403_and_nothing_is_dialled() {
    let o = run(Carrier::NotDialled, "+19005550123", AGENT, 403, 30);
    assert_refused(&o, "outbound_refused_destination_total");
    finish(o);
}

#[test]
fn an_agent_claiming_another_org_is_403_and_nothing_is_dialled() {
    let o = run(Carrier::NotDialled, CALLEE, OTHER_ORG_AGENT, 403, 30);
    assert_refused(&o, "outbound_refused_identity_total");
    finish(o);
}
