//! Checking a SIPp UAS scenario without handoff: a stand-in scenario plays
//! handoff's side (`sipp-scenarios/standin/`), once as the contract says
//! (the scenario must pass it) and once per broken variant (the scenario
//! must fail it, by one of its own checks, not by a timeout). Each case runs
//! its own pair of SIPp processes on free ports, all cases side by side.
//!
//! Used as `#[path = "common/sipp_standin.rs"] mod standin;` next to
//! `#[path = "common/sipp.rs"] mod sipp;` (`tests/sipp_transfer.rs`,
//! `tests/sipp_headers.rs`).

use crate::sipp::{self, path_str, require_sipp, scenarios_dir, spawn_bound, Sipp, TestDir};
use std::fs;
use std::thread;
use std::time::Duration;

/// One stand-in run: `scenario` (a UAS in sipp-scenarios/, with `uas_args`)
/// called by `standin` (in sipp-scenarios/standin/) after the `base`
/// replacements in the stand-in's text, then `change` (`None`: the stand-in
/// conforms, and the scenario must pass it; otherwise it must fail it by one
/// of its checks). Each replacement is made once and must find its text.
pub struct Case {
    pub what: String,
    pub scenario: &'static str,
    pub uas_args: &'static [&'static str],
    pub standin: &'static str,
    pub base: Vec<(String, String)>,
    pub change: Option<Vec<(String, String)>>,
}

/// Runs every case side by side (each has its own ports and dir); panics
/// listing every case whose outcome was not the expected one.
pub fn run_cases(cases: Vec<Case>) {
    require_sipp();
    let results: Vec<Result<(), String>> = thread::scope(|s| {
        let handles: Vec<_> = cases.iter().map(|c| s.spawn(|| run_case(c))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("the case panicked".into())))
            .collect()
    });
    let failures: Vec<String> = cases
        .iter()
        .zip(results)
        .filter_map(|(c, r)| r.err().map(|e| format!("{} ({}): {e}", c.scenario, c.what)))
        .collect();
    assert!(
        failures.is_empty(),
        "scenario self-checks went wrong:\n{}",
        failures.join("\n")
    );
}

/// One stand-in run, tried again (up to three times in all) when a SIPp lost
/// a port to another process between the port pick and its start.
fn run_case(case: &Case) -> Result<(), String> {
    let mut attempt = 1;
    loop {
        match run_case_once(case) {
            Err(CaseError::PortRace(e)) if attempt < 3 => {
                eprintln!("{} ({}): port race, again: {e}", case.scenario, case.what);
                attempt += 1;
            }
            Err(CaseError::PortRace(e)) | Err(CaseError::Wrong(e)) => return Err(e),
            Ok(()) => return Ok(()),
        }
    }
}

enum CaseError {
    /// A SIPp could not bind a port it was given.
    PortRace(String),
    /// The scenario's verdict was not the expected one.
    Wrong(String),
}

/// The stand-in's text with the case's replacements made.
fn standin_text(case: &Case) -> Result<String, String> {
    let path = scenarios_dir().join("standin").join(case.standin);
    let mut text = fs::read_to_string(&path).map_err(|e| format!("read the stand-in: {e}"))?;
    for (from, to) in case.base.iter().chain(case.change.iter().flatten()) {
        if !text.contains(from.as_str()) {
            return Err(format!("the stand-in has no {from:?} to change"));
        }
        text = text.replacen(from.as_str(), to, 1);
    }
    Ok(text)
}

/// One stand-in run: the scenario must count its call successful when the
/// stand-in is unchanged, and failed, by one of its checks, when it is
/// changed. Keeps its dir (and says where) when the outcome is not the
/// expected one.
fn run_case_once(case: &Case) -> Result<(), CaseError> {
    let wrong = CaseError::Wrong;
    let dir = TestDir::new();
    let standin_path = dir.file("standin.xml");
    fs::write(&standin_path, standin_text(case).map_err(wrong)?)
        .map_err(|e| CaseError::Wrong(format!("write the stand-in: {e}")))?;

    let port = sipp::free_port();
    let scenario = scenarios_dir().join(case.scenario);
    let port_s = port.to_string();
    let mut args = vec![
        "-sf",
        path_str(&scenario),
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-t",
        "u1",
        "-m",
        "1",
        "-timeout",
        "20s",
        "-p",
        &port_s,
    ];
    args.extend(case.uas_args);
    let mut uas = spawn_bound(
        "scenario under check (UAS)",
        &dir,
        "uas",
        &args,
        port,
        sipp::Transport::Udp,
    );
    let target = format!("127.0.0.1:{port}");
    let mut uac = Sipp::spawn(
        "handoff stand-in (UAC)",
        &dir,
        "standin",
        &[
            &target,
            "-sf",
            path_str(&standin_path),
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &sipp::free_port().to_string(),
            "-t",
            "u1",
            "-m",
            "1",
            "-d",
            "200",
            "-recv_timeout",
            "3000",
            "-timeout",
            "15s",
        ],
    );
    let uac_status = uac.wait(Duration::from_secs(25));
    if uac.lost_a_port_race() {
        // The UAS would wait out its -timeout for a call that never comes:
        // stop it now (a zero wait kills it) and try again.
        uas.wait(Duration::ZERO);
        return Err(CaseError::PortRace(uac.stderr_text()));
    }
    let uas_status = uas.wait(Duration::from_secs(25));
    let uas_stats = uas.final_stats();
    if uas.lost_a_port_race() || uac.lost_a_port_race() {
        return Err(CaseError::PortRace(format!(
            "{}\n{}",
            uas.stderr_text(),
            uac.stderr_text()
        )));
    }
    let passed = Sipp::all_succeeded(uas_status, &uas_stats, "IncomingCall(C)", 1);
    let want_pass = case.change.is_none();
    let reasons = uas.failure_reasons();
    // A broken stand-in must fail a check, not time out or crash.
    let by_a_check = reasons
        .iter()
        .any(|r| r.contains("regexp") || r.contains("Regexp") || r.contains("check_it"));
    let outcome = match (want_pass, passed) {
        (true, true) => return Ok(()),
        (false, false) if by_a_check => {
            eprintln!(
                "{} ({}): failed, as it must: {}",
                case.scenario,
                case.what,
                reasons.join(" | ")
            );
            return Ok(());
        }
        (false, false) => "the scenario failed the broken stand-in, but by no check of its own",
        (false, true) => "the scenario passed the broken stand-in",
        (true, false) => "the scenario failed the conforming stand-in",
    };
    let report = format!(
        "{outcome}\n{}\n{}",
        uas.report(uas_status, &uas_stats),
        uac.report(uac_status, &uac.final_stats())
    );
    Err(wrong(format!(
        "{report}\nfiles kept in {}",
        dir.keep().display()
    )))
}
