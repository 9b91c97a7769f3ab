//! The header contract of a transfer destination (issue 16, item 4) through
//! the real `handoff` binary, with SIPp playing all three parties:
//!
//! - the carrier (`sipp-scenarios/carrier_uac_transfer.xml`) calls in as
//!   "Jane Doe" <+14155551212>;
//! - the AI agent (`ai_agent_refer_headers_uas.xml`) answers and REFERs the
//!   caller to Zendesk with a REFER carrying `Referred-By`, `X-Acme-Case:
//!   case-N`, `User-to-User`, `X-Twilio-Foo`, a forged `X-OPENCX-AGENT-ID`
//!   and a 1,107-byte `X-Big` line;
//! - Zendesk SIP-IN over Twilio (`zendesk_twilio_headers_uas.xml`), declared
//!   `{ profile = "twilio", refer_headers = ["X-*", "User-to-User"],
//!   header_placement = "both" }`, checks that the transfer INVITE carries
//!   `X-Acme-Case` and `User-to-User` as header lines and as URI headers,
//!   `Referred-By`, the route's agent id, and none of the other three.
//!
//! A run passes when all three SIPp instances count every call successful,
//! each REFER's `X-Acme-Case` reached Zendesk, and handoff counts exactly
//! three headers left out per call in `handoff_transfer_headers_dropped_total`
//! (see `DROPPED_PER_CALL`), logging each by name, and ends idle and clean.
//!
//! The scenarios are also checked without handoff against the stand-ins in
//! `sipp-scenarios/standin/`: as handoff's contract has it they must pass;
//! each broken variant (a header missing from the URI or the header lines,
//! escaped wrongly, a refused or oversized header let through, the forged
//! agent id...) must fail the Zendesk scenario by one of its checks.
//!
//! Needs `sipp` on PATH (Debian package `sip-tester`).

#[path = "common/sipp.rs"]
mod sipp;
#[path = "common/sipp_standin.rs"]
mod standin;

use sipp::{
    base_config, path_str, require_sipp, scenarios_dir, spawn_bound, Handoff, Sipp, TestDir,
    Transport, CALLED,
};
use standin::{run_cases, Case};
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

/// The route's AI agent id: what Zendesk must see, not the REFER's "forged".
const AGENT_ID: &str = "agent-headers";

/// Calls in the run through handoff.
const CALLS: u32 = 5;

/// Headers handoff leaves out of each transfer INVITE, each counted once in
/// `handoff_transfer_headers_dropped_total` (src/b2bua/call/transfer_target.rs
/// counts `Contract::plan`'s omissions; src/b2bua/transfer/contract.rs decides):
/// - `X-Twilio-Foo`: matched by `X-*`, refused by the twilio profile
///   (`RefusedByTarget`);
/// - `X-OPENCX-AGENT-ID`: matched by `X-*`, set only by handoff (`Reserved`);
/// - `X-Big`: its line is 5 + 2 + 1100 = 1107 bytes, not under 1000 (`TooLong`),
///   so it is placed nowhere and not counted again for the URI.
///
/// `X-Acme-Case` and `User-to-User` fit (their URI part is about 70 characters),
/// the valid `Referred-By` is carried, and the session's own headers all pass.
///
/// Each as (name, the reason handoff logs).
const LEFT_OUT: [(&str, &str); 3] = [
    (
        "X-Twilio-Foo",
        "the destination's profile does not take this header",
    ),
    (
        "X-OPENCX-AGENT-ID",
        "header is set only by handoff from the session",
    ),
    (
        "X-Big",
        "header line would be 1107 bytes, over the 1000 byte limit",
    ),
];
const DROPPED_PER_CALL: u32 = LEFT_OUT.len() as u32;

/// The trio through handoff, run to its end: `calls` calls over UDP, the
/// destination's contract with `placement` as its `header_placement`.
struct Trio {
    dir: TestDir,
    handoff: Handoff,
    carrier: Sipp,
    ai: Sipp,
    zendesk: Sipp,
    statuses: [Option<ExitStatus>; 3],
    stats: [HashMap<String, String>; 3],
}

fn run_trio(calls: u32, placement: &str) -> Trio {
    require_sipp();
    let dir = TestDir::new();
    let scenarios = scenarios_dir();
    let mode = Transport::Udp.sipp_mode();
    let n = calls.to_string();

    // Zendesk SIP-IN over Twilio: the transfer target.
    let zendesk_port = sipp::free_port();
    let zendesk_uri = format!("sip:support@127.0.0.1:{zendesk_port}");
    let mut zendesk = spawn_bound(
        "zendesk UAS",
        &dir,
        "zendesk",
        &[
            "-sf",
            path_str(&scenarios.join("zendesk_twilio_headers_uas.xml")),
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &zendesk_port.to_string(),
            "-t",
            mode,
            "-m",
            &n,
            "-set",
            "agent_id",
            AGENT_ID,
            "-timeout",
            "40s",
        ],
        zendesk_port,
        Transport::Udp,
    );

    // The AI agent: answers, then REFERs the caller with the headers.
    let ai_port = sipp::free_port();
    let mut ai = spawn_bound(
        "ai-agent UAS",
        &dir,
        "ai",
        &[
            "-sf",
            path_str(&scenarios.join("ai_agent_refer_headers_uas.xml")),
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
            "500",
            "-timeout",
            "40s",
        ],
        ai_port,
        Transport::Udp,
    );

    let config = format!(
        r#"{base}
[transfer]
allow = ["*.zendesk.sip.twilio.com"]

[[transfer.destination]]
name = "zendesk"
uri = "{zendesk_uri}"
profile = "twilio"
refer_headers = ["X-*", "User-to-User"]
header_placement = "{placement}"

[[route]]
prefix = ""
org_id = "org-test"
agent_id = "{AGENT_ID}"
ai_agent_uri = "sip:ai@127.0.0.1:{ai_port}"
"#,
        base = base_config("info"),
    );
    let handoff = Handoff::start(&config, &dir);

    let mut carrier = Sipp::spawn(
        "carrier UAC",
        &dir,
        "carrier",
        &[
            &handoff.sip_addr(Transport::Udp).to_string(),
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
            "5",
            "-m",
            &n,
            "-d",
            "3000",
            "-recv_timeout",
            "10000",
            "-timeout",
            "30s",
            "-timeout_error",
        ],
    );

    let carrier_status = carrier.wait(Duration::from_secs(40));
    // Each UAS keeps a call 4 s after its end (timewait) before it exits.
    let ai_status = ai.wait(Duration::from_secs(20));
    let zendesk_status = zendesk.wait(Duration::from_secs(20));
    let stats = [
        carrier.final_stats(),
        ai.final_stats(),
        zendesk.final_stats(),
    ];
    Trio {
        dir,
        handoff,
        carrier,
        ai,
        zendesk,
        statuses: [carrier_status, ai_status, zendesk_status],
        stats,
    }
}

impl Trio {
    /// The three SIPp reports, handoff's, and where the files are kept.
    fn report(mut self) -> String {
        format!(
            "{}\n{}\n{}\n{}\nfiles kept in {}",
            self.carrier.report(self.statuses[0], &self.stats[0]),
            self.ai.report(self.statuses[1], &self.stats[1]),
            self.zendesk.report(self.statuses[2], &self.stats[2]),
            self.handoff.report(),
            self.dir.keep().display()
        )
    }
}

#[test]
fn udp_refer_headers_reach_a_twilio_destination_as_lines_and_uri_headers() {
    let mut trio = run_trio(CALLS, "both");

    let mut problems = Vec::new();
    let sides = [
        ("the carrier's", "OutgoingCall(C)"),
        ("the AI agent's", "IncomingCall(C)"),
        ("the Zendesk leg's", "IncomingCall(C)"),
    ];
    for (i, (name, counter)) in sides.into_iter().enumerate() {
        if !Sipp::all_succeeded(trio.statuses[i], &trio.stats[i], counter, CALLS) {
            problems.push(format!("{name} calls did not all succeed"));
        }
    }
    for (who, reasons) in [
        ("AI agent", trio.ai.failure_reasons()),
        ("Zendesk", trio.zendesk.failure_reasons()),
    ] {
        if !reasons.is_empty() {
            problems.push(format!("{who} failed checks: {}", reasons.join(" | ")));
        }
    }

    // Each REFER's case id reached Zendesk, on the header line (the scenario
    // checks the URI header equals it).
    let sent = header_values(&trio.dir.file("ai_messages.log"), "REFER ", "X-Acme-Case");
    let got = header_values(
        &trio.dir.file("zendesk_messages.log"),
        "INVITE ",
        "X-Acme-Case",
    );
    if sent.len() != CALLS as usize || got != sent {
        problems.push(format!(
            "X-Acme-Case values: the AI agent sent {sent:?}, Zendesk got {got:?}"
        ));
    }

    check_metrics(
        &trio.handoff,
        &[
            ("transfer_headers_dropped_total", CALLS * DROPPED_PER_CALL),
            ("transfers_total", CALLS),
            ("transfers_succeeded_total", CALLS),
            ("transfers_failed_total", 0),
            ("calls_started_total", CALLS),
            ("calls_failed_total", 0),
            ("sip_parse_errors_total", 0),
            ("sip_send_errors_total", 0),
            ("transaction_timeouts_total", 0),
        ],
        &mut problems,
    );

    // Each left-out header is logged by name and reason once per call, and
    // nothing else is.
    let left_out: Vec<(String, String)> = trio
        .handoff
        .log_events("transfer header left out")
        .iter()
        .map(|f| {
            let field = |k: &str| f[k].as_str().unwrap_or("?").to_string();
            (field("header"), field("problem"))
        })
        .collect();
    for (name, problem) in LEFT_OUT {
        let n = left_out
            .iter()
            .filter(|(h, p)| h == name && p == problem)
            .count();
        if n != CALLS as usize {
            problems.push(format!(
                "{name} logged as left out ({problem}) {n} times, want {CALLS}"
            ));
        }
    }
    if left_out.len() != (CALLS * DROPPED_PER_CALL) as usize {
        problems.push(format!("headers logged as left out: {left_out:?}"));
    }

    let status = trio.handoff.terminate(Duration::from_secs(10));
    if !status.is_some_and(|s| s.success()) {
        problems.push(format!("handoff did not exit 0 on SIGTERM: {status:?}"));
    }
    let log = trio.handoff.log_text();
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
            "{CALLS} transfers with REFER headers through handoff:\n- {}\n{}",
            problems.join("\n- "),
            trio.report()
        );
    }
}

/// The Zendesk scenario sees what handoff really sends: with header lines
/// only (`header_placement = "header"`), every call fails its URI header
/// check, and handoff reports each transfer failed.
#[test]
fn udp_without_uri_headers_the_twilio_scenario_fails_every_call() {
    const N: u32 = 2;
    let trio = run_trio(N, "header");
    let mut problems = Vec::new();
    if trio.stats[2].get("FailedCall(C)") != Some(&N.to_string()) {
        problems.push("the Zendesk leg did not fail every call".to_string());
    }
    let reasons = trio.zendesk.failure_reasons();
    if !reasons.iter().any(|r| r.contains("X-Acme-Case=(case-")) {
        problems.push(format!(
            "the Zendesk leg failed, but not by its URI header check: {reasons:?}"
        ));
    }
    check_metrics(
        &trio.handoff,
        &[
            ("transfer_headers_dropped_total", N * DROPPED_PER_CALL),
            ("transfers_total", N),
            ("transfers_failed_total", N),
        ],
        &mut problems,
    );
    if !problems.is_empty() {
        panic!(
            "header lines only:\n- {}\n{}",
            problems.join("\n- "),
            trio.report()
        );
    }
}

/// Waits (up to 10 s) for handoff to be idle, then checks `want` (each
/// `handoff_<name>` value) and that no call or relay is left.
fn check_metrics(handoff: &Handoff, want: &[(&str, u32)], problems: &mut Vec<String>) {
    let idle = |m: &sipp::Metrics| {
        m.get("calls_active") == Some(0.0) && m.get("media_relays_active") == Some(0.0)
    };
    match handoff.metrics_when(Duration::from_secs(10), idle) {
        Ok(m) => {
            let mut wrong = false;
            for &(name, want) in want
                .iter()
                .chain(&[("calls_active", 0), ("media_relays_active", 0)])
            {
                let got = m.get(name);
                if got != Some(f64::from(want)) {
                    problems.push(format!("metric {name} is {got:?}, want {want}"));
                    wrong = true;
                }
            }
            if wrong {
                problems.push(format!("metrics (non-zero):\n{}", m.nonzero()));
            }
        }
        Err(e) => problems.push(format!("cannot read handoff's metrics: {e}")),
    }
}

/// The values of header `name` in the messages of a SIPp message log
/// (`-trace_msg`) whose first line starts with `start` (sent or received);
/// retransmissions count once.
fn header_values(log: &Path, start: &str, name: &str) -> BTreeSet<String> {
    let text = fs::read_to_string(log).unwrap_or_default();
    let mut values = BTreeSet::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with(start) {
            inside = true;
        } else if line.trim().is_empty() {
            inside = false;
        } else if inside {
            if let Some((n, v)) = line.split_once(':') {
                if n.trim().eq_ignore_ascii_case(name) {
                    values.insert(v.trim().to_string());
                }
            }
        }
    }
    values
}

// ---------------------------------------------------------------------------
// The scenarios against stand-ins for handoff, without handoff.

const ZENDESK: &str = "zendesk_twilio_headers_uas.xml";
const ZENDESK_ARGS: &[&str] = &["-set", "agent_id", "agent-test"];
const ZENDESK_STANDIN: &str = "handoff_transfer_uac.xml";

/// The stand-in's request line, and with the URI headers the contract adds.
const PLAIN_RURI: &str = "INVITE sip:support@[remote_ip]:[remote_port] SIP/2.0";
const URI_HEADERS: &str = "X-Acme-Case=case-7&User-to-User=56a390f3d2b7310023a2%3Bencoding%3Dhex";
/// The header lines the contract adds after handoff's own.
const LINES_AFTER: &str = "X-OPENCX-TRANSFER: true";
const LINES: &str = "X-OPENCX-TRANSFER: true
      X-Acme-Case: case-7
      User-to-User: 56a390f3d2b7310023a2;encoding=hex
      Referred-By: <sip:ai-agent@127.0.0.1:5090>";

/// `handoff_transfer_uac.xml` turned into the transfer INVITE of a
/// destination with `header_placement = "both"`.
fn with_contract() -> Vec<(String, String)> {
    vec![
        (
            PLAIN_RURI.into(),
            PLAIN_RURI.replace(" SIP/2.0", &format!("?{URI_HEADERS} SIP/2.0")),
        ),
        (LINES_AFTER.into(), LINES.into()),
    ]
}

fn zendesk_case(what: &str, change: Option<Vec<(&str, String)>>) -> Case {
    Case {
        what: what.into(),
        scenario: ZENDESK,
        uas_args: ZENDESK_ARGS,
        standin: ZENDESK_STANDIN,
        base: with_contract(),
        change: change.map(|c| c.into_iter().map(|(a, b)| (a.to_string(), b)).collect()),
    }
}

/// A broken variant: `from` replaced by `to` in the conforming stand-in.
fn broken(what: &str, from: &str, to: &str) -> Case {
    zendesk_case(what, Some(vec![(from, to.to_string())]))
}

/// A broken variant: one more header line after the contract's.
fn extra_line(what: &str, line: &str) -> Case {
    let uui = "User-to-User: 56a390f3d2b7310023a2;encoding=hex";
    broken(what, uui, &format!("{uui}\n      {line}"))
}

/// A broken variant: one more URI header after the contract's.
fn extra_uri_header(what: &str, header: &str) -> Case {
    broken(what, "%3Dhex SIP/2.0", &format!("%3Dhex&{header} SIP/2.0"))
}

#[test]
fn zendesk_twilio_scenario_takes_the_contract_and_fails_broken_invites() {
    let big = "b".repeat(1100);
    let long_other = format!("X-Other: {}", "c".repeat(1000));
    run_cases(vec![
        zendesk_case("as the contract says", None),
        broken(
            "X-Acme-Case missing from the URI",
            "?X-Acme-Case=case-7&",
            "?",
        ),
        broken(
            "User-to-User missing from the URI",
            "&User-to-User=56a390f3d2b7310023a2%3Bencoding%3Dhex",
            "",
        ),
        broken(
            "no URI headers at all",
            &format!("?{URI_HEADERS} SIP/2.0"),
            " SIP/2.0",
        ),
        broken(
            "User-to-User in the URI not escaped",
            "56a390f3d2b7310023a2%3Bencoding%3Dhex",
            "56a390f3d2b7310023a2;encoding=hex",
        ),
        broken(
            "X-Acme-Case in the URI not the header line's",
            "X-Acme-Case=case-7",
            "X-Acme-Case=case-8",
        ),
        broken(
            "X-Acme-Case header line missing",
            "      X-Acme-Case: case-7\n",
            "",
        ),
        broken(
            "User-to-User header line missing",
            "      User-to-User: 56a390f3d2b7310023a2;encoding=hex\n",
            "",
        ),
        broken(
            "User-to-User header line escaped",
            "User-to-User: 56a390f3d2b7310023a2;encoding=hex",
            "User-to-User: 56a390f3d2b7310023a2%3Bencoding%3Dhex",
        ),
        extra_line("X-Acme-Case twice", "X-Acme-Case: case-7"),
        extra_line("User-to-User twice", "user-to-user: 00"),
        broken(
            "Referred-By missing",
            "\n      Referred-By: <sip:ai-agent@127.0.0.1:5090>",
            "",
        ),
        extra_line("X-Twilio-Foo as a header line", "X-Twilio-Foo: refused"),
        extra_uri_header("X-Twilio-Foo as a URI header", "X-Twilio-Foo=refused"),
        extra_line("x-twilio-foo in lower case", "x-twilio-foo: refused"),
        extra_line("X-Big as a header line", &format!("X-Big: {big}")),
        extra_uri_header("X-Big as a URI header", "X-Big=bbbb"),
        extra_line(
            "X-Big's value under another name",
            &format!("X-Huge: {big}"),
        ),
        extra_line("a line of 1000 bytes or more", &long_other),
        extra_line(
            "the REFER's X-OPENCX-AGENT-ID too",
            "X-OPENCX-AGENT-ID: forged",
        ),
        broken(
            "the REFER's X-OPENCX-AGENT-ID instead of the route's",
            "X-OPENCX-AGENT-ID: agent-test",
            "X-OPENCX-AGENT-ID: forged",
        ),
        extra_uri_header(
            "an X-OPENCX header in the URI",
            "X-OPENCX-AGENT-ID=agent-test",
        ),
        broken(
            "To with URI headers",
            "To: <sip:support@[remote_ip]:[remote_port]>\n      Call-ID",
            "To: <sip:support@[remote_ip]:[remote_port]?X-Acme-Case=case-7>\n      Call-ID",
        ),
    ]);
}

#[test]
fn ai_agent_headers_scenario_takes_a_conforming_transfer() {
    run_cases(vec![Case {
        what: "as the contract says".into(),
        scenario: "ai_agent_refer_headers_uas.xml",
        uas_args: &["-key", "refer_to", "sip:support@127.0.0.1:9"],
        standin: "handoff_refer_uac.xml",
        base: Vec::new(),
        change: None,
    }]);
}
