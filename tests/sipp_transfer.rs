//! Transfers through the real `handoff` binary, with SIPp playing all three
//! parties (issue 4):
//!
//! - the carrier (`sipp-scenarios/carrier_uac_transfer.xml`) calls in as
//!   "Jane Doe" <+14155551212> and hangs up after a few seconds;
//! - the AI agent (`ai_agent_refer_uas.xml`) answers, sends REFER to the
//!   Zendesk target, checks the 202 and every NOTIFY, answers them, and takes
//!   handoff's BYE once the final one is answered;
//! - Zendesk (`zendesk_uas.xml`) checks the transfer INVITE's From, X-OPENCX
//!   headers (and the absence of ticket headers) and SDP, answers, and takes
//!   the BYE handoff passes on from the caller.
//!
//! A run passes when all three SIPp instances count every call successful,
//! the Zendesk leg of each call carries the session id of its AI leg, and
//! handoff ends with no call, relay or error left and exits 0 on SIGTERM.
//! 20 calls go over UDP and 20 over TCP; one more call over UDP gets a
//! ticket stamped through the voice-prefetch webhook before the REFER, and
//! Zendesk (`zendesk_ticket_uas.xml`) then wants both ticket headers.
//!
//! The scenarios are also checked without handoff, against SIPp stand-ins
//! that play handoff's side of the contract (`sipp-scenarios/standin/`):
//! the conforming stand-in must pass, and each broken variant of it (a
//! missing or wrong header, a bad NOTIFY) must make the scenario fail. That
//! keeps the scenarios' checks honest independently of handoff.
//!
//! Needs `sipp` on PATH (Debian package `sip-tester`); see `common/sipp.rs`
//! for how processes, ports and logs are handled.

#[path = "common/sipp.rs"]
mod sipp;
#[path = "common/sipp_standin.rs"]
mod standin;

use sipp::{
    base_config, path_str, require_sipp, scenarios_dir, session_ids, spawn_bound, Handoff, Sipp,
    TestDir, Transport, CALLED,
};
use standin::{run_cases, Case};
use std::time::Duration;

/// The route's AI agent id: on both legs' X-OPENCX-AGENT-ID.
const AGENT_ID: &str = "agent-transfer";

/// The ticket id the ticket run stamps through the webhook.
const TICKET_ID: &str = "4242";
/// The signing key of the webhook URL in the ticket run.
const SIGNING_SECRET: &str = "sipp-transfer-test-signing-key-0001";

/// One run: how many calls, how fast, and whether a ticket is stamped.
struct TransferRun {
    transport: Transport,
    calls: u32,
    rate: u32,
    /// Stamp `TICKET_ID` on the (single) call's session through the
    /// voice-prefetch webhook before the REFER, and expect both ticket
    /// headers on the transfer INVITE (`zendesk_ticket_uas.xml`).
    ticket: bool,
}

#[test]
fn udp_20_calls_are_transferred_to_zendesk() {
    run_transfers(TransferRun {
        transport: Transport::Udp,
        calls: 20,
        rate: 5,
        ticket: false,
    });
}

#[test]
fn tcp_20_calls_are_transferred_to_zendesk() {
    run_transfers(TransferRun {
        transport: Transport::Tcp,
        calls: 20,
        rate: 5,
        ticket: false,
    });
}

#[test]
fn a_ticket_stamped_by_the_webhook_goes_to_zendesk_in_both_headers() {
    run_transfers(TransferRun {
        transport: Transport::Udp,
        calls: 1,
        rate: 1,
        ticket: true,
    });
}

fn run_transfers(run: TransferRun) {
    let TransferRun {
        transport,
        calls,
        rate,
        ticket,
    } = run;
    require_sipp();
    let dir = TestDir::new();
    let scenarios = scenarios_dir();
    let mode = transport.sipp_mode();
    let n = calls.to_string();
    // The AI agent waits this long before the REFER (-d), and the caller
    // stays this long: with a ticket, time to stamp it in between.
    let (refer_after_ms, call_ms) = if ticket { (2500, 6000) } else { (500, 4000) };

    // Zendesk SIP-IN: the transfer target.
    let zendesk_port = sipp::free_port();
    let zendesk_uri = format!("sip:support@127.0.0.1:{zendesk_port}");
    let zendesk_scenario = scenarios.join(if ticket {
        "zendesk_ticket_uas.xml"
    } else {
        "zendesk_uas.xml"
    });
    let zendesk_port_s = zendesk_port.to_string();
    let mut zendesk_args = vec![
        "-sf",
        path_str(&zendesk_scenario),
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-p",
        &zendesk_port_s,
        "-t",
        mode,
        "-m",
        &n,
        "-set",
        "agent_id",
        AGENT_ID,
        "-timeout",
        "60s",
    ];
    if ticket {
        // SIPp refuses -set for a variable the scenario does not declare.
        zendesk_args.extend(["-set", "ticket_id", TICKET_ID]);
    }
    let mut zendesk = spawn_bound(
        "zendesk UAS",
        &dir,
        "zendesk",
        &zendesk_args,
        zendesk_port,
        transport,
    );

    // The AI agent: answers, then REFERs the caller to Zendesk.
    let ai_port = sipp::free_port();
    let mut ai = spawn_bound(
        "ai-agent UAS",
        &dir,
        "ai",
        &[
            "-sf",
            path_str(&scenarios.join("ai_agent_refer_uas.xml")),
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &ai_port.to_string(),
            "-t",
            mode,
            "-m",
            &n,
            "-key",
            "refer_to",
            &zendesk_uri,
            "-d",
            &refer_after_ms.to_string(),
            "-timeout",
            "60s",
        ],
        ai_port,
        transport,
    );

    let transport_key = match transport {
        Transport::Udp => "",
        Transport::Tcp => "transport = \"tcp\"\n",
    };
    let config = format!(
        r#"{base}
[transfer]
# The IP-literal target is allowed only as a named destination.
allow = ["*.zendesk.sip.twilio.com"]

[[transfer.destination]]
name = "zendesk"
uri = "{zendesk_uri}"
{transport_key}
[[http.signing_keys]]
kid = "sipp"
secret = "{SIGNING_SECRET}"
issuer = "handoff-sipp-test"

[[route]]
prefix = ""
org_id = "org-test"
agent_id = "{AGENT_ID}"
ai_agent_uri = "sip:ai@127.0.0.1:{ai_port}{param}"
"#,
        base = base_config("info"),
        param = transport.uri_param(),
    );
    let mut handoff = Handoff::start(&config, &dir);

    // The carrier: each call lasts long enough for the REFER, the transfer
    // INVITE, the NOTIFYs and the AI leg's BYE.
    let mut carrier = Sipp::spawn(
        "carrier UAC",
        &dir,
        "carrier",
        &[
            &handoff.sip_addr(transport).to_string(),
            "-sf",
            path_str(&scenarios.join("carrier_uac_transfer.xml")),
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
            &rate.to_string(),
            "-m",
            &n,
            "-d",
            &call_ms.to_string(),
            "-recv_timeout",
            "10000",
            "-timeout",
            "45s",
            "-timeout_error",
        ],
    );

    let mut problems = Vec::new();
    if ticket {
        // Once the AI agent has answered, and before its REFER.
        if let Err(e) = stamp_ticket(&handoff, &dir) {
            problems.push(format!("stamping the ticket: {e}"));
        }
    }

    let carrier_status = carrier.wait(Duration::from_secs(60));
    // Each UAS keeps a call 4 s after its end (timewait) before it exits.
    let ai_status = ai.wait(Duration::from_secs(20));
    let zendesk_status = zendesk.wait(Duration::from_secs(20));
    let (carrier_stats, ai_stats, zendesk_stats) = (
        carrier.final_stats(),
        ai.final_stats(),
        zendesk.final_stats(),
    );

    if !Sipp::all_succeeded(carrier_status, &carrier_stats, "OutgoingCall(C)", calls) {
        problems.push("the carrier's calls did not all succeed".to_string());
    }
    if !Sipp::all_succeeded(ai_status, &ai_stats, "IncomingCall(C)", calls) {
        problems.push("the AI agent's calls (REFER, NOTIFYs, BYE) did not all succeed".into());
    }
    if !Sipp::all_succeeded(zendesk_status, &zendesk_stats, "IncomingCall(C)", calls) {
        problems.push("the Zendesk leg's calls (headers, BYE) did not all succeed".into());
    }

    // Each transfer INVITE carries the session id of the call's AI leg.
    let ai_ids = session_ids(&dir.file("ai_messages.log"));
    let zendesk_ids = session_ids(&dir.file("zendesk_messages.log"));
    if ai_ids.len() != calls as usize {
        problems.push(format!(
            "{} distinct session ids on the AI leg for {calls} calls",
            ai_ids.len()
        ));
    }
    if zendesk_ids != ai_ids {
        problems.push(format!(
            "the Zendesk INVITEs' session ids are not the AI legs' ones: only on the AI leg {:?}, \
             only on the Zendesk leg {:?}",
            ai_ids.difference(&zendesk_ids).collect::<Vec<_>>(),
            zendesk_ids.difference(&ai_ids).collect::<Vec<_>>()
        ));
    }

    // handoff is left with nothing running and nothing gone wrong.
    let idle = |m: &sipp::Metrics| {
        m.get("calls_active") == Some(0.0) && m.get("media_relays_active") == Some(0.0)
    };
    match handoff.metrics_when(Duration::from_secs(10), idle) {
        Ok(m) => {
            for (name, want) in [
                ("calls_started_total", f64::from(calls)),
                ("calls_answered_total", f64::from(calls)),
                ("calls_failed_total", 0.0),
                ("calls_active", 0.0),
                ("media_relays_active", 0.0),
                ("sip_parse_errors_total", 0.0),
                ("sip_send_errors_total", 0.0),
                ("transaction_timeouts_total", 0.0),
            ] {
                let got = m.get(name);
                if got != Some(want) {
                    problems.push(format!("metric {name} is {got:?}, want {want}"));
                }
            }
            if !problems.is_empty() {
                problems.push(format!("metrics (non-zero):\n{}", m.nonzero()));
            }
        }
        Err(e) => problems.push(format!("cannot read handoff's metrics: {e}")),
    }
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

    if !problems.is_empty() {
        panic!(
            "{calls} transfers over {transport:?} through handoff:\n- {}\n{}\n{}\n{}\n{}\nfiles kept in {}",
            problems.join("\n- "),
            carrier.report(carrier_status, &carrier_stats),
            ai.report(ai_status, &ai_stats),
            zendesk.report(zendesk_status, &zendesk_stats),
            handoff.report(),
            dir.path.display()
        );
    }
}

/// Waits for the call to be answered, then stamps `TICKET_ID` on its
/// session through the voice-prefetch webhook, with the URL
/// `handoff webhook-url` prints for the org (its path, on the sidecar's
/// real address).
fn stamp_ticket(handoff: &Handoff, dir: &TestDir) -> Result<(), String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args(["webhook-url", "--org", "org-test", "--config"])
        .arg(dir.file("handoff.toml"))
        .output()
        .map_err(|e| format!("run handoff webhook-url: {e}"))?;
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        return Err(format!(
            "handoff webhook-url: {}: {url} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let path = url
        .find("/backend/")
        .map(|i| &url[i..])
        .ok_or_else(|| format!("odd webhook URL {url:?}"))?;
    handoff.metrics_when(Duration::from_secs(10), |m| {
        m.get("calls_answered_total").unwrap_or(0.0) >= 1.0
    })?;
    let body = format!(
        r#"{{"ticket_id": {TICKET_ID}, "caller_phone": "+14155551212", "requester_phone": ""}}"#
    );
    let (status, resp) = sipp::http_request(
        handoff.http,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        &body,
    )?;
    let json: serde_json::Value = serde_json::from_str(&resp)
        .map_err(|e| format!("webhook answered {status} with no JSON ({e}): {resp}"))?;
    if status != 200 || json["success"] != serde_json::Value::Bool(true) {
        return Err(format!("webhook answered {status}: {resp}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The scenarios against stand-ins for handoff, without handoff.

const AI: &str = "ai_agent_refer_uas.xml";
const AI_ARGS: &[&str] = &["-key", "refer_to", "sip:support@127.0.0.1:9"];
const AI_STANDIN: &str = "handoff_refer_uac.xml";
const ZENDESK: &str = "zendesk_uas.xml";
const ZENDESK_TICKET: &str = "zendesk_ticket_uas.xml";
const ZENDESK_ARGS: &[&str] = &["-set", "agent_id", "agent-test"];
const ZENDESK_TICKET_ARGS: &[&str] = &[
    "-set",
    "agent_id",
    "agent-test",
    "-set",
    "ticket_id",
    "4242",
];
const ZENDESK_STANDIN: &str = "handoff_transfer_uac.xml";
/// The transfer INVITE after a ticket was stamped.
const WITH_TICKET: &[(&str, &str)] = &[(
    "X-OPENCX-TRANSFER: true",
    "X-OPENCX-TRANSFER: true\n      X-OPENCX-ZENDESK-TICKET-ID: 4242\n      X-Zendesk-Ticket-Id: 4242",
)];

/// A stand-in case of the shared runner (`common/sipp_standin.rs`) from this
/// file's static parts.
fn case(
    what: &str,
    scenario: &'static str,
    uas_args: &'static [&'static str],
    standin: &'static str,
    base: &[(&str, &str)],
    change: Option<(&str, &str)>,
) -> Case {
    let own = |(a, b): &(&str, &str)| (a.to_string(), b.to_string());
    Case {
        what: what.to_owned(),
        scenario,
        uas_args,
        standin,
        base: base.iter().map(own).collect(),
        change: change.map(|c| vec![own(&c)]),
    }
}

fn ai_case(what: &'static str, change: Option<(&'static str, &'static str)>) -> Case {
    case(what, AI, AI_ARGS, AI_STANDIN, &[], change)
}

fn zendesk_case(what: &'static str, change: Option<(&'static str, &'static str)>) -> Case {
    case(what, ZENDESK, ZENDESK_ARGS, ZENDESK_STANDIN, &[], change)
}

fn ticket_case(what: &'static str, change: Option<(&'static str, &'static str)>) -> Case {
    case(
        what,
        ZENDESK_TICKET,
        ZENDESK_TICKET_ARGS,
        ZENDESK_STANDIN,
        WITH_TICKET,
        change,
    )
}

#[test]
fn ai_agent_scenario_takes_a_conforming_transfer_and_fails_broken_notifies() {
    run_cases(vec![
        ai_case("as the contract says", None),
        ai_case(
            "sipfrag without the SIP/2.0 prefix",
            Some(("      SIP/2.0 100 Trying", "      100 Trying")),
        ),
        ai_case(
            "final NOTIFY reporting a failure",
            Some((
                "      SIP/2.0 200 OK\n    ]]>",
                "      SIP/2.0 503 Service Unavailable\n    ]]>",
            )),
        ),
        ai_case(
            "final NOTIFY still active",
            Some(("terminated;reason=noresource", "active;expires=60")),
        ),
        ai_case(
            "Event id not the REFER's CSeq",
            Some(("Event: refer;id=[$refer_cseq]", "Event: refer;id=1")),
        ),
        ai_case(
            "Content-Type not message/sipfrag",
            Some((
                "Content-Type: message/sipfrag;version=2.0",
                "Content-Type: text/plain",
            )),
        ),
        ai_case(
            "a second session id on the AI leg",
            Some((
                "X-OPENCX-AGENT-ID: agent-test",
                "X-OPENCX-AGENT-ID: agent-test\n      x-opencx-session-id: 00000000000000000000000000000000",
            )),
        ),
        ai_case(
            "no X-OPENCX-AGENT-ID on the AI leg",
            Some(("      X-OPENCX-AGENT-ID: agent-test\n", "")),
        ),
    ]);
}

#[test]
fn zendesk_scenario_takes_a_conforming_transfer_invite_and_fails_broken_ones() {
    run_cases(vec![
        zendesk_case("as the contract says", None),
        zendesk_case(
            "X-OPENCX-TRANSFER missing",
            Some(("      X-OPENCX-TRANSFER: true\n", "")),
        ),
        zendesk_case(
            "X-OPENCX-TRANSFER false",
            Some(("X-OPENCX-TRANSFER: true", "X-OPENCX-TRANSFER: false")),
        ),
        zendesk_case(
            "another agent id",
            Some(("X-OPENCX-AGENT-ID: agent-test", "X-OPENCX-AGENT-ID: agent-other")),
        ),
        zendesk_case(
            "X-OPENCX-AGENT-ID missing",
            Some(("      X-OPENCX-AGENT-ID: agent-test\n", "")),
        ),
        zendesk_case(
            "session id in upper case",
            Some((
                "0123456789abcdef0123456789abcdef",
                "0123456789ABCDEF0123456789ABCDEF",
            )),
        ),
        zendesk_case(
            "session id twice",
            Some((
                "X-OPENCX-TRANSFER: true",
                "X-OPENCX-TRANSFER: true\n      X-OPENCX-SESSION-ID: 00000000000000000000000000000000",
            )),
        ),
        zendesk_case(
            "X-OPENCX-TRANSFER twice",
            Some((
                "X-OPENCX-TRANSFER: true",
                "X-OPENCX-TRANSFER: true\n      X-OPENCX-TRANSFER: true",
            )),
        ),
        zendesk_case(
            "a ticket header with no ticket stamped",
            Some((
                "X-OPENCX-TRANSFER: true",
                "X-OPENCX-TRANSFER: true\n      X-Zendesk-Ticket-Id: 999",
            )),
        ),
        zendesk_case(
            "a ticket header in lower case",
            Some((
                "X-OPENCX-TRANSFER: true",
                "X-OPENCX-TRANSFER: true\n      x-zendesk-ticket-id: 999",
            )),
        ),
        zendesk_case(
            "X-OPENCX-ZENDESK-TICKET-ID with no ticket stamped",
            Some((
                "X-OPENCX-TRANSFER: true",
                "X-OPENCX-TRANSFER: true\n      X-OPENCX-ZENDESK-TICKET-ID: 999",
            )),
        ),
        zendesk_case(
            "From number not in E.164",
            Some(("<sip:+14155551212@", "<sip:4155551212@")),
        ),
        zendesk_case(
            "From without the display name",
            Some(("From: \"Jane Doe\" <sip:", "From: <sip:")),
        ),
        zendesk_case(
            "Opus offered first",
            Some(("RTP/AVP 0 101", "RTP/AVP 111 0 101")),
        ),
        zendesk_case(
            "G.722 offered too",
            Some((
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:0 PCMU/8000\n      a=rtpmap:9 G722/8000",
            )),
        ),
        zendesk_case(
            "SDP not on handoff's relay address",
            Some(("c=IN IP4 127.0.0.1", "c=IN IP4 10.0.0.1")),
        ),
    ]);
}

#[test]
fn zendesk_ticket_scenario_takes_both_ticket_headers_and_fails_broken_ones() {
    run_cases(vec![
        ticket_case("as the contract says", None),
        ticket_case(
            "X-Zendesk-Ticket-Id missing",
            Some(("\n      X-Zendesk-Ticket-Id: 4242", "")),
        ),
        ticket_case(
            "X-OPENCX-ZENDESK-TICKET-ID missing",
            Some(("      X-OPENCX-ZENDESK-TICKET-ID: 4242\n", "")),
        ),
        ticket_case(
            "another ticket id",
            Some(("X-Zendesk-Ticket-Id: 4242", "X-Zendesk-Ticket-Id: 4243")),
        ),
        ticket_case(
            "the carrier's ticket header too",
            Some((
                "X-Zendesk-Ticket-Id: 4242",
                "X-Zendesk-Ticket-Id: 4242\n      x-zendesk-ticket-id: 999",
            )),
        ),
        ticket_case(
            "X-OPENCX-TRANSFER missing",
            Some(("      X-OPENCX-TRANSFER: true\n", "")),
        ),
    ]);
}
