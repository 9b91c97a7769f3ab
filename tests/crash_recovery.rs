//! Calls that die with their node get an end: handoff (the real binary) is
//! SIGKILLed with calls up (two answered, one ringing) and restarted on the same
//! store; the subscriber then gets exactly one `phone_call.ended` for each
//! answered call and one `phone_call.failed` for the ringing one, by the
//! `system`, signed. A clean stop and restart after that sends nothing more.

mod common;

use common::build::{Dialog, AI_SDP};
use common::capture::{Capture, Captured, Reply};
use common::cli::{metric, spawn_run, wait_metric, Running};
use common::{bounded, config_text, InviteOpts, TestUa, Transport, WAIT};
use handoff::sip::message::Method;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SECRET: &str = "crash-recovery-secret-0123456789";
const LIMIT: Duration = Duration::from_secs(60);
const SOON: Duration = Duration::from_secs(10);

/// Config keys: the capture server as the one subscriber, a store file, and an
/// AI answer timeout long enough that the ringing call still rings at the kill.
fn keys(capture: &Capture, db: &Path) -> String {
    format!(
        "store.path = \"{}\"\n\
         webhooks = [{{ url = \"{}\", secret = \"{SECRET}\" }}]\n\
         events.retry_base_ms = 50\nevents.retry_max_ms = 200\n\
         sip.ai_answer_timeout_secs = 30\n",
        db.display(),
        capture.url()
    )
}

fn hmac_hex(ts: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
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
fn assert_signed(c: &Captured) {
    let ts = c.header("x-handoff-timestamp").expect("timestamp header");
    let sig = c.header("x-handoff-signature").expect("signature header");
    assert_eq!(sig, format!("v1={}", hmac_hex(ts, &c.body)));
    assert_eq!(c.header("x-handoff-event-id"), c.json()["id"].as_str());
}

/// Delivered events of one type, by session.
fn delivered_of(capture: &Capture, kind: &str, sid: &str) -> Vec<Captured> {
    capture
        .delivered()
        .into_iter()
        .filter(|c| c.json()["type"] == kind && c.json()["session_id"] == sid)
        .collect()
}

fn ends(capture: &Capture) -> Vec<Captured> {
    capture
        .delivered()
        .into_iter()
        .filter(|c| {
            matches!(
                c.json()["type"].as_str(),
                Some("phone_call.ended" | "phone_call.failed")
            )
        })
        .collect()
}

/// A call the AI agent answers and nobody hangs up; returns its session id.
async fn answered_call(caller: &mut TestUa, agent: &mut TestUa) -> String {
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
    sid
}

/// A call the AI agent leaves ringing (180, no answer); returns its session id.
async fn ringing_call(caller: &mut TestUa, agent: &mut TestUa) -> String {
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
async fn whole_call(caller: &mut TestUa, agent: &mut TestUa) -> String {
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
    let mut dlg = Dialog::as_uac(&invite, &ok);
    caller.send(&caller.ack(&dlg, None)).await;
    agent.expect_request(Method::Ack, WAIT).await;
    caller.send(&caller.bye(&mut dlg)).await;
    caller.expect_response_to(Method::Bye, 200, WAIT).await;
    let bye = agent.expect_request(Method::Bye, WAIT).await;
    agent.respond(&bye, 200, &[], None).await;
    agent.clear_backlog();
    caller.clear_backlog();
    sid
}

/// Live calls recorded in the store file.
fn live_rows(db: &Path) -> Vec<(String, Option<i64>)> {
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
fn stop_cleanly(mut run: Running) {
    let pid = run.0.id() as libc::pid_t;
    // SAFETY: a plain signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let until = Instant::now() + SOON;
    while run.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < until, "handoff did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "handoff-crash-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_live_at_a_sigkill_each_get_one_end_by_the_system_after_the_restart() {
    bounded(LIMIT, async {
        let dir = temp_dir();
        let db = dir.join("handoff.db");
        let capture = Capture::start().await;
        capture.set_default(Reply::Status(200));
        let mut agent = TestUa::agent(Transport::Udp).await;
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            config_text(
                Transport::Udp,
                agent.local_addr().port(),
                &keys(&capture, &db),
            ),
        )
        .unwrap();

        // First run: two answered calls and one ringing, none ended.
        let (mut first, udp, _http) = spawn_run(config.clone(), dir.join("first.err")).await;
        let mut caller = TestUa::carrier(Transport::Udp, udp).await;
        let a1 = answered_call(&mut caller, &mut agent).await;
        let a2 = answered_call(&mut caller, &mut agent).await;
        let ringing = ringing_call(&mut caller, &mut agent).await;
        // Their started and answered events are delivered: committed with the
        // live records.
        capture
            .wait_for("started and answered events", SOON, |s| {
                let n = |t: &str| {
                    s.iter()
                        .filter(|c| c.delivered() && c.json()["type"] == t)
                        .count()
                };
                n("phone_call.started") == 3 && n("phone_call.answered") == 2
            })
            .await;
        first.0.kill().expect("SIGKILL");
        first.0.wait().expect("reaped");
        assert!(ends(&capture).is_empty(), "no end before the restart");
        let mut live = live_rows(&db);
        live.sort();
        let mut want = vec![a1.clone(), a2.clone(), ringing.clone()];
        want.sort();
        assert_eq!(
            live.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>(),
            want,
            "the three calls are recorded live"
        );
        for (sid, answered) in &live {
            assert_eq!(
                answered.is_some(),
                *sid != ringing,
                "{sid}: answered as recorded"
            );
        }

        // Second run on the same store: each call gets its end, once.
        let (second, udp, http) = spawn_run(config.clone(), dir.join("second.err")).await;
        capture
            .wait_for("three end events", SOON, |s| {
                s.iter()
                    .filter(|c| {
                        c.delivered()
                            && matches!(
                                c.json()["type"].as_str(),
                                Some("phone_call.ended" | "phone_call.failed")
                            )
                    })
                    .count()
                    >= 3
            })
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(ends(&capture).len(), 3, "exactly three ends, no duplicate");
        for sid in [&a1, &a2] {
            let got = delivered_of(&capture, "phone_call.ended", sid);
            assert_eq!(got.len(), 1, "{sid}: one phone_call.ended");
            assert!(delivered_of(&capture, "phone_call.failed", sid).is_empty());
            let v = got[0].json();
            assert_eq!(v["org_id"], "org-test");
            let d = &v["data"];
            assert_eq!(d["call_ended_by"], "system");
            assert_eq!(d["custom_data"]["call_status"], "node_restarted");
            assert_eq!(d["from"], "+14155551212");
            assert!(d["answered_at"].is_string(), "{d}");
            assert_signed(&got[0]);
        }
        let got = delivered_of(&capture, "phone_call.failed", &ringing);
        assert_eq!(got.len(), 1, "the ringing call: one phone_call.failed");
        assert!(delivered_of(&capture, "phone_call.ended", &ringing).is_empty());
        let d = got[0].json()["data"].clone();
        assert_eq!(d["call_ended_by"], "system");
        assert_eq!(d["failure_category"], "failed");
        assert_eq!(d["failure_reason"], "node_restarted");
        assert_eq!(d["sip_status"], Value::Null);
        assert_signed(&got[0]);
        wait_metric(http, "handoff_calls_recovered_total", 3).await;
        assert!(live_rows(&db).is_empty(), "no live record left");

        // A call that ends normally in the second run, then a clean stop and a
        // third start: nothing more is sent.
        let mut caller = TestUa::carrier(Transport::Udp, udp).await;
        let whole = whole_call(&mut caller, &mut agent).await;
        capture
            .wait_for("the whole call's end", SOON, |s| {
                s.iter().any(|c| {
                    c.delivered()
                        && c.json()["type"] == "phone_call.ended"
                        && c.json()["session_id"] == whole.as_str()
                })
            })
            .await;
        assert_eq!(
            delivered_of(&capture, "phone_call.ended", &whole)[0].json()["data"]["call_ended_by"],
            "user"
        );
        stop_cleanly(second);
        let before = capture.delivered().len();
        assert!(
            live_rows(&db).is_empty(),
            "a call that ended leaves no record"
        );
        let (_third, _udp, http) = spawn_run(config, dir.join("third.err")).await;
        wait_metric(http, "handoff_events_outbox_depth", 0).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            capture.delivered().len(),
            before,
            "a clean restart sends nothing"
        );
        assert_eq!(metric(http, "handoff_calls_recovered_total").await, Some(0));
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
