//! What the crash and cluster tests share: calls left up (answered, ringing) or
//! made whole through a running handoff, outbound calls left up the same way
//! (an AI agent on 127.0.0.2 through a carrier UA on 127.0.0.3, as
//! `outbound.rs` lays them out), the ends a subscriber got, the live calls a
//! store file records, and a stop by SIGTERM.

use crate::common::build::{Dialog, AI_SDP};
use crate::common::capture::{Capture, Captured};
use crate::common::cli::Running;
use crate::common::outbound::{dial, CALLEE, CALLER_ID, CARRIER_SDP};
use crate::common::{InviteOpts, TestUa, WAIT};
use handoff::sip::message::Method;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a stopped handoff may take to exit.
const SOON: Duration = Duration::from_secs(10);

fn hmac_hex(secret: &str, ts: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The README's signature scheme, computed here independently of handoff's code.
pub fn assert_signed(c: &Captured, secret: &str) {
    let ts = c.header("x-handoff-timestamp").expect("timestamp header");
    let secs: u64 = ts.parse().expect("Unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(now.abs_diff(secs) < 300, "timestamp {secs} is now");
    let sig = c.header("x-handoff-signature").expect("signature header");
    assert_eq!(sig, format!("v1={}", hmac_hex(secret, ts, &c.body)));
    assert_ne!(sig, format!("v1={}", hmac_hex("wrong-secret", ts, &c.body)));
    assert_eq!(c.header("x-handoff-event-id"), c.json()["id"].as_str());
    assert_eq!(c.header("content-type"), Some("application/json"));
}

/// Delivered events of one type, by session.
pub fn delivered_of(capture: &Capture, kind: &str, sid: &str) -> Vec<Captured> {
    capture
        .delivered()
        .into_iter()
        .filter(|c| c.json()["type"] == kind && c.json()["session_id"] == sid)
        .collect()
}

/// A call's end event: `phone_call.ended` or `phone_call.failed`.
fn is_end(c: &Captured) -> bool {
    matches!(
        c.json()["type"].as_str(),
        Some("phone_call.ended" | "phone_call.failed")
    )
}

pub fn ends(capture: &Capture) -> Vec<Captured> {
    capture.delivered().into_iter().filter(is_end).collect()
}

/// Until at least `n` end events have been delivered (10 s at most).
pub async fn wait_ends(capture: &Capture, n: usize) {
    capture
        .wait_for(&format!("{n} end events"), Duration::from_secs(10), |s| {
            s.iter().filter(|c| c.delivered() && is_end(c)).count() >= n
        })
        .await;
}

/// A call the AI agent answers and nobody hangs up; returns its session id and
/// the caller's dialog.
pub async fn answered_call(caller: &mut TestUa, agent: &mut TestUa) -> (String, Dialog) {
    let invite = caller.invite(&InviteOpts::default());
    caller.send(&invite).await;
    let ai_invite = agent.expect_request(Method::Invite, WAIT).await;
    let sid = ai_invite
        .msg
        .header("X-OPENCX-SESSION-ID")
        .unwrap()
        .to_owned();
    agent.respond(&ai_invite, 200, &[], Some(AI_SDP)).await;
    let ok = caller
        .expect_response_to(Method::Invite, 200, WAIT)
        .await
        .msg;
    let dlg = Dialog::as_uac(&invite, &ok);
    caller.send(&caller.ack(&dlg, None)).await;
    agent.expect_request(Method::Ack, WAIT).await;
    agent.clear_backlog();
    caller.clear_backlog();
    (sid, dlg)
}

/// A call the AI agent leaves ringing (180, no answer); returns its session id.
pub async fn ringing_call(caller: &mut TestUa, agent: &mut TestUa) -> String {
    let invite = caller.invite(&InviteOpts::default());
    caller.send(&invite).await;
    let ai_invite = agent.expect_request(Method::Invite, WAIT).await;
    let sid = ai_invite
        .msg
        .header("X-OPENCX-SESSION-ID")
        .unwrap()
        .to_owned();
    agent.respond(&ai_invite, 180, &[], None).await;
    caller.expect_response_to(Method::Invite, 180, WAIT).await;
    agent.clear_backlog();
    caller.clear_backlog();
    sid
}

/// A call answered and hung up by the caller: it ends normally.
pub async fn whole_call(caller: &mut TestUa, agent: &mut TestUa) -> String {
    let (sid, mut dlg) = answered_call(caller, agent).await;
    caller.send(&caller.bye(&mut dlg)).await;
    caller.expect_response_to(Method::Bye, 200, WAIT).await;
    let bye = agent.expect_request(Method::Bye, WAIT).await;
    agent.respond(&bye, 200, &[], None).await;
    agent.clear_backlog();
    caller.clear_backlog();
    sid
}

/// The config tables (after any dotted keys, for `config_text`) for outbound
/// calls: AI agents on 127.0.0.2 place calls of `org-test` to `+1415…` through
/// the carrier trunk at `carrier` (on 127.0.0.3, no credentials); the inbound
/// default route to `{ai}` stays.
pub fn outbound_tables(carrier: SocketAddr) -> String {
    format!(
        "\n[[trunk]]\nname = \"carrier\"\nsources = [\"127.0.0.3\"]\n\
         [trunk.outbound]\nuri = \"sip:{carrier}\"\n\
         \n[[trunk]]\nname = \"agents\"\nkind = \"ai_agent\"\nsources = [\"127.0.0.2\"]\n\
         org_id = \"org-test\"\nagent_ids = [\"agent-test\"]\n\
         \n[[outbound]]\norg_id = \"org-test\"\ntrunk = \"carrier\"\nallowed_prefixes = [\"+1415\"]\n\
         caller_ids = [\"{CALLER_ID}\"]\n\
         \n[[route]]\ndefault = true\norg_id = \"org-test\"\nagent_id = \"agent-test\"\n\
         ai_agent_uri = \"{{ai}}\"\n"
    )
}

/// The two UAs of outbound calls: the AI agent on 127.0.0.2 (its peer, handoff,
/// set per run with `set_peer`) and the carrier on 127.0.0.3.
pub async fn outbound_uas() -> (TestUa, TestUa) {
    let agent = TestUa::udp_bound(SocketAddr::from(([127, 0, 0, 2], 0))).await;
    let carrier = TestUa::udp_bound(SocketAddr::from(([127, 0, 0, 3], 0))).await;
    (agent, carrier)
}

/// An outbound call the AI agent places to the callee through the carrier, left
/// up: answered by the callee (and ACKed) when `answer`, else ringing (180).
/// Returns its session id, read from its delivered `phone_call.started` (the
/// agent placed the call and was told none); `known`: the sessions seen before.
pub async fn outbound_call(
    agent: &mut TestUa,
    carrier: &mut TestUa,
    capture: &Capture,
    known: &[String],
    answer: bool,
) -> String {
    let invite = agent.invite(&dial(CALLEE));
    agent.send(&invite).await;
    agent.expect_response_to(Method::Invite, 100, WAIT).await;
    let carrier_invite = carrier.expect_request(Method::Invite, WAIT).await;
    if answer {
        carrier
            .respond(&carrier_invite, 200, &[], Some(CARRIER_SDP))
            .await;
        let ok = agent.expect_response_to(Method::Invite, 200, WAIT).await;
        let dlg = Dialog::as_uac(&invite, &ok.msg);
        agent.send(&agent.ack(&dlg, None)).await;
        carrier.expect_request(Method::Ack, WAIT).await;
    } else {
        carrier.respond(&carrier_invite, 180, &[], None).await;
        agent.expect_response_to(Method::Invite, 180, WAIT).await;
    }
    agent.clear_backlog();
    carrier.clear_backlog();
    let new = |c: &Captured| {
        let v = c.json();
        c.delivered()
            && v["type"] == "phone_call.started"
            && v["session_id"]
                .as_str()
                .is_some_and(|s| !known.iter().any(|k| k == s))
    };
    let seen = capture
        .wait_for("the outbound call's phone_call.started", WAIT, |s| {
            s.iter().any(new)
        })
        .await;
    let started = seen.iter().find(|c| new(c)).expect("a new start").json();
    assert_eq!(started["data"]["direction"], "outbound", "{started}");
    started["session_id"]
        .as_str()
        .expect("a session id")
        .to_owned()
}

/// The one end each of `sid` got (`phone_call.ended` when `answered`, else
/// `phone_call.failed`), checked outbound and by the system for `reason`.
pub fn assert_outbound_end(capture: &Capture, sid: &str, answered: bool, reason: &str) {
    let (kind, other) = if answered {
        ("phone_call.ended", "phone_call.failed")
    } else {
        ("phone_call.failed", "phone_call.ended")
    };
    let got = delivered_of(capture, kind, sid);
    assert_eq!(got.len(), 1, "{sid}: one {kind}");
    assert!(
        delivered_of(capture, other, sid).is_empty(),
        "{sid}: no {other}"
    );
    let d = got[0].json()["data"].clone();
    assert_eq!(d["direction"], "outbound", "{sid}: {d}");
    assert_eq!(d["custom_data"]["is_outbound"], true, "{sid}: {d}");
    assert_eq!(d["from"], CALLER_ID, "{d}");
    assert_eq!(d["to"], CALLEE, "{d}");
    assert_eq!(d["agent_id"], "agent-test", "{d}");
    assert_eq!(d["call_ended_by"], "system", "{d}");
    if answered {
        assert_eq!(d["custom_data"]["call_status"], reason, "{d}");
        assert!(d["answered_at"].is_string(), "{d}");
    } else {
        assert_eq!(d["failure_reason"], reason, "{d}");
        assert_eq!(d["sip_status"], serde_json::Value::Null, "{d}");
    }
}

/// Live calls recorded in the store file.
pub fn live_rows(db: &Path) -> Vec<(String, Option<i64>)> {
    let conn = rusqlite::Connection::open(db).expect("open the store");
    let mut st = conn
        .prepare("SELECT session_id, answered_ms FROM live_calls ORDER BY session_id")
        .expect("the live_calls table");
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// SIGTERM by PID, then wait for the exit (a clean stop).
pub fn stop_cleanly(mut run: Running) {
    let pid = run.0.id() as libc::pid_t;
    // SAFETY: a plain signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let until = Instant::now() + SOON;
    while run.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < until, "handoff did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "handoff-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
